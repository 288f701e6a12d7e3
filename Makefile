# Two commands set everything up on a fresh Debian/Ubuntu machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
HOST ?= 127.0.0.1
PORT ?= 8050
export HOST PORT

# glymur needs the OpenJPEG shared library; the tests use other projects' tools as independent checkers.
RUN_DEBS := libopenjp2-7
# `make run-https`: nginx terminates TLS with HTTP/2 in front of gunicorn (core/launcher.py).
HTTPS_DEBS := nginx openssl
TEST_DEBS := $(RUN_DEBS) $(HTTPS_DEBS) curl libopenjp2-tools openjph-tools libgdcm-tools dcmtk dicom3tools libjxl-tools chromium chromium-driver redis-server ffmpeg orthanc orthanc-gdcm
# The bench measures side by side with Orthanc (orthanc, orthanc-gdcm: in TEST_DEBS, its harness is tested too).
BENCH_DEBS := $(TEST_DEBS)

.PHONY: run run-https worker test bench venv sysdeps-run sysdeps-https sysdeps-test sysdeps-bench ohif clean

# Install the Debian packages in $(1) that are missing (as root, or through sudo).
define apt_ensure
if command -v dpkg >/dev/null 2>&1; then \
	  missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "Installing system packages:$$missing"; \
	    SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else echo "warning: not a Debian/Ubuntu system; install the equivalents of: $(1)"; fi
endef

$(STAMP): requirements.txt
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { $(call apt_ensure,python3-venv); $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

venv: $(STAMP)

sysdeps-run:
	@$(call apt_ensure,$(RUN_DEBS))

sysdeps-https:
	@$(call apt_ensure,$(RUN_DEBS) $(HTTPS_DEBS))

sysdeps-test:
	@$(call apt_ensure,$(TEST_DEBS))

sysdeps-bench:
	@$(call apt_ensure,$(BENCH_DEBS))

# OHIF (the diagnostic viewer at /ohif/): the prebuilt @ohif/app from npm, version pinned in core/ohif.py
# (OHIF_VERSION), prepared into the git-ignored .ohif/dist; a no-op once that version is there.
ohif: venv
	@command -v npm >/dev/null 2>&1 || { $(call apt_ensure,npm); }
	$(PY) -m core.ohif install

# gunicorn (RADPRESS_WEB_WORKERS x RADPRESS_WEB_THREADS) on HOST:PORT; `.venv/bin/python app.py --dev` is Werkzeug's.
run: sysdeps-run venv ohif
	$(PY) app.py

# With REDIS_URL set: a Celery worker for the archive's jobs and Dash's background callbacks (as many on other hosts as wanted).
worker: sysdeps-run venv
	$(PY) -m celery -A app:celery_app worker --loglevel info

# https://HOST:HTTPS_PORT (default 8443) with HTTP/2: nginx in front of gunicorn, self-signed certificate on first start.
run-https: sysdeps-https venv ohif
	$(PY) app.py --https

test: sysdeps-test venv ohif
	$(PY) -m pytest -q tests

bench: sysdeps-bench venv ohif
	$(PY) -m core bench --json-out bench-results.json

clean:
	rm -rf $(VENV) .pytest_cache bench-results.json .ohif
