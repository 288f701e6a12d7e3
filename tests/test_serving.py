"""Production serving: the launcher with gunicorn as `make run` starts it, nginx with HTTP/2 as `make run-https` does,
compression of text answers, the health check, and the browser-cache headers of content-addressed URLs."""

import base64
import gzip
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from app import create_app
from core.launcher import ensure_certificate, nginx_config
from core.render import render_version
from core.serving import HEARTBEAT_ENV, Background, LauncherBackground
from tests.conftest import ADMIN
from tests.synthetic import make_dataset, write

ROOT = Path(__file__).resolve().parents[1]
IMMUTABLE = "max-age=31536000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path, *args, **env) -> tuple[subprocess.Popen, Path]:
    """``python app.py [args]`` as `make run` starts it, on its own data directory; stdout (the access log) to a file."""
    log = tmp_path / "server.log"
    environment = {**os.environ, "RADPRESS_DATA": str(tmp_path / "data"), "RADPRESS_DEMO": "0", "HOST": "127.0.0.1",
                   "RADPRESS_ADMIN_USER": ADMIN[0], "RADPRESS_ADMIN_PASSWORD": ADMIN[1], **env}
    environment.pop(HEARTBEAT_ENV, None)
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "app.py", *args], cwd=ROOT, env=environment, stdout=out,
                                   stderr=subprocess.STDOUT)
    return process, log


def wait_healthy(process, url: str, log: Path, **kwargs) -> dict:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited ({process.returncode}): {log.read_text()[-2000:]}"
        try:
            answer = requests.get(url, timeout=5, **kwargs)
            if answer.status_code == 200:
                return answer.json()
        except (requests.ConnectionError, requests.Timeout):  # workers still booting
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} never answered 200: {log.read_text()[-2000:]}")


def stop(process, timeout: float = 45) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        raise


def ct_file(tmp_path, name="ct.dcm", **kind) -> Path:
    return write(make_dataset(modality="CT", rows=128, columns=96, **kind), tmp_path / name)


def test_gunicorn_as_make_run_starts_it(tmp_path):
    """Several gunicorn workers serve; one launcher runs the only DICOM node and the only job runner; SIGTERM lets
    an upload in flight finish, then everything exits cleanly."""
    port, dicom = free_port(), free_port()
    process, log = launch(tmp_path, PORT=str(port), RADPRESS_DICOM_PORT=str(dicom), RADPRESS_WEB_WORKERS="2",
                          RADPRESS_WEB_THREADS="4")
    base = f"http://127.0.0.1:{port}"
    try:
        assert "detail" not in str(wait_healthy(process, f"{base}/api/health", log))  # anonymous: no ports, no paths
        health = wait_healthy(process, f"{base}/api/health", log, auth=ADMIN)
        assert health["status"] == "ok", health
        assert {"index", "data_dir", "jobs", "dicom"} <= set(health["checks"]) and all(
            c["ok"] for c in health["checks"].values())
        assert f":{dicom} listening" in health["checks"]["dicom"]["detail"]

        launcher = psutil.Process(process.pid)
        (master,) = [p for p in launcher.children() if "gunicorn" in " ".join(p.cmdline())]
        workers = master.children()
        assert len(workers) == 2
        listening = {c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == dicom and c.status == "LISTEN"}
        assert listening == {process.pid}  # the node runs once, in the launcher, not per web worker
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", dicom, ae_title="RADPRESS")
        assert assoc.is_established and assoc.send_c_echo().Status == 0
        assoc.release()

        web = requests.Session()
        login = web.post(f"{base}/login", data={"username": ADMIN[0], "password": ADMIN[1]}, allow_redirects=False)
        assert login.status_code == 302 and "HttpOnly" in login.headers["Set-Cookie"]
        page = web.get(f"{base}/", headers={"Accept-Encoding": "gzip"})
        assert page.status_code == 200 and "<title>RadPress</title>" in page.text
        assert page.headers["Content-Encoding"] == "gzip"
        # one session key, made by the launcher before any worker: whichever worker answers accepts the cookie
        assert all(web.get(f"{base}/api/studies").status_code == 200 for _ in range(8))

        # the job of an upload is run by the launcher's runner (the only one), never by a web worker
        # (strategy 4, originals only: the job has nothing to make, it only has to be claimed and finished)
        assert requests.put(f"{base}/api/policy", json={"strategy": 4}, auth=ADMIN, timeout=30).status_code == 200
        with open(ct_file(tmp_path, "first.dcm", seed=1), "rb") as fh:
            first = requests.post(f"{base}/api/upload?name=first.dcm", data=fh, auth=ADMIN, timeout=60)
        (job_id,) = first.json()["jobs"]
        deadline = time.monotonic() + 120
        while requests.get(f"{base}/api/jobs/{job_id}", auth=ADMIN, timeout=10).json()["state"] != "done":
            assert time.monotonic() < deadline, "the upload's job did not finish"
            time.sleep(0.3)
        with sqlite3.connect(tmp_path / "data" / "index.sqlite") as db:
            (owner,) = db.execute("SELECT owner FROM jobs WHERE id=?", (job_id,)).fetchone()
        assert owner.split(":")[1] == str(process.pid)

        # an upload that is still being sent when SIGTERM comes
        sent_half, term_sent = threading.Event(), threading.Event()
        data = ct_file(tmp_path).read_bytes()
        answers = []

        def body():
            yield data[: len(data) // 2]
            sent_half.set()
            term_sent.wait(10)
            time.sleep(0.5)
            yield data[len(data) // 2:]

        def send():
            answers.append(requests.post(f"{base}/api/upload?name=ct.dcm", data=body(), auth=ADMIN, timeout=60))

        sender = threading.Thread(target=send)
        sender.start()
        assert sent_half.wait(20)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        term_sent.set()
        sender.join(60)
        assert answers and answers[0].status_code == 200, answers and answers[0].text
        assert answers[0].json()["results"][0]["status"] == "stored"
        assert process.wait(timeout=45) == 0
        assert not any(p.is_running() for p in workers) and not master.is_running()
    finally:
        stop(process)
    text = log.read_text()
    assert "POST /api/upload?name=ct.dcm HTTP/1.1\" 200" in text and "GET /api/health HTTP/1.1\" 200" in text  # access log
    assert re.search(r'^127\.0\.0\.1 - admin \[.*\] "GET /api/jobs/\d+ HTTP/1\.1" 200 .* \d+ms$', text, re.M)


def test_bad_settings_exit_2(tmp_path, monkeypatch, capsys):
    """A bad setting is one line and exit code 2, before anything is started or written."""
    import app

    umask = os.umask(0o022)
    try:
        monkeypatch.setenv("RADPRESS_DATA", str(tmp_path / "data"))
        monkeypatch.setenv("RADPRESS_WEB_WORKERS", "many")
        with pytest.raises(SystemExit) as bad:
            app.main([])
        assert bad.value.code == 2 and not (tmp_path / "data").exists()
        assert capsys.readouterr().err == "RadPress: RADPRESS_WEB_WORKERS 'many' is not a whole number from 1 to 64.\n"
        with pytest.raises(SystemExit) as bad:
            app.main(["--bogus"])
        assert bad.value.code == 2 and capsys.readouterr().err == "usage: app.py [--dev | --https]\n"
    finally:
        os.umask(umask)


def test_https_with_http2_through_nginx(tmp_path):
    """`make run-https`: nginx answers over TLS with HTTP/2 (ALPN h2), real content from gunicorn behind it;
    the session cookie is Secure (X-Forwarded-Proto from nginx); SIGTERM stops nginx too."""
    port = free_port()
    process, log = launch(tmp_path, "--https", HTTPS_PORT=str(port), RADPRESS_WEB_WORKERS="1", RADPRESS_DICOM_PORT="0")
    base = f"https://127.0.0.1:{port}"
    try:
        cert = tmp_path / "data" / "tls" / "cert.pem"  # made on first start, before nginx and gunicorn start
        deadline = time.monotonic() + 60
        while not cert.exists():
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        wait_healthy(process, f"{base}/api/health", log, verify=str(cert))  # it verifies as its own authority

        def curl(*args):
            out = subprocess.run(["curl", "-sk", "--http2", "-w", "\n%{http_version}", *args], capture_output=True,
                                 text=True, timeout=30, check=True).stdout
            text, version = out.rsplit("\n", 1)
            return text, version

        text, version = curl("-D", "-", "-H", "Accept-Encoding: gzip", "-o", str(tmp_path / "login.gz"), f"{base}/login")
        assert version == "2" and text.startswith("HTTP/2 200") and "content-encoding: gzip" in text.lower()
        assert b"RadPress" in gzip.decompress((tmp_path / "login.gz").read_bytes())
        headers, version = curl("-D", "-", "-o", os.devnull, "-d", f"username={ADMIN[0]}&password={ADMIN[1]}", f"{base}/login")
        cookie = next(line for line in headers.splitlines() if line.lower().startswith("set-cookie:"))
        assert version == "2" and "Secure" in cookie and "HttpOnly" in cookie
        body, version = curl("-u", ":".join(ADMIN), f"{base}/api/policy")
        assert version == "2" and "strategy" in json.loads(body)
        nginx = [p for p in psutil.Process(process.pid).children() if p.name() == "nginx"]
        assert len(nginx) == 1
    finally:
        assert stop(process) == 0
    assert not nginx[0].is_running()
    # the access log names the client nginx saw (X-Forwarded-For), not the socket
    assert re.search(r'^127\.0\.0\.1 - admin \[.*\] "GET /api/policy HTTP/1\.1" 200 .* \d+ms$', log.read_text(), re.M)


def test_nginx_config_and_certificate(tmp_path):
    """The certificate is made once (kept on the next start) and the config listens with TLS and HTTP/2."""
    cert, key = ensure_certificate(tmp_path)
    made = cert.read_bytes()
    assert ensure_certificate(tmp_path) == (cert, key) and cert.read_bytes() == made
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    names = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"], capture_output=True,
                           text=True, check=True).stdout
    assert "DNS:localhost" in names and "IP Address:127.0.0.1" in names
    conf = nginx_config(tmp_path, "127.0.0.1", 8443, tmp_path / "web.sock", cert, key)
    assert "listen 127.0.0.1:8443 ssl http2;" in conf and f"server unix:{tmp_path / 'web.sock'};" in conf
    (tmp_path / "nginx").mkdir()
    (tmp_path / "nginx" / "nginx.conf").write_text(conf)
    check = subprocess.run(["nginx", "-t", "-p", str(tmp_path / "nginx"), "-c", str(tmp_path / "nginx" / "nginx.conf"),
                            "-e", "stderr"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_health_reads_the_launchers_heartbeat(tmp_path, monkeypatch):
    """A web worker under the launcher is ready only while the launcher's runner is alive: 503 otherwise."""
    heartbeat = tmp_path / "launcher.json"
    monkeypatch.setenv(HEARTBEAT_ENV, str(heartbeat))
    monkeypatch.setenv("RADPRESS_ADMIN_USER", ADMIN[0])
    monkeypatch.setenv("RADPRESS_ADMIN_PASSWORD", ADMIN[1])
    app = create_app(tmp_path / "data", run_jobs=False, demo=False)
    client = app.server.test_client()
    auth = {"Authorization": "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()}
    answer = client.get("/api/health")
    assert answer.status_code == 503 and answer.get_json()["status"] == "degraded"
    assert answer.get_json()["checks"]["jobs"]["ok"] is False and "no-store" in answer.headers["Cache-Control"]
    jobs = app.server.extensions["radpress"]["jobs"]
    jobs.start()
    try:
        LauncherBackground(heartbeat).write(Background(jobs))
        assert client.get("/api/health").status_code == 200
    finally:
        jobs.stop()
    LauncherBackground(heartbeat).write(Background(jobs))  # the runner's thread has ended
    answer = client.get("/api/health", headers=auth).get_json()
    assert answer["status"] == "degraded" and "stopped" in answer["checks"]["jobs"]["detail"]
    assert client.get("/api/health").get_json()["checks"]["jobs"] == {"ok": False}  # anonymous: no detail
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    heartbeat.write_text(json.dumps({"pid": gone.pid, "time": time.time(), "checks": []}))
    assert client.get("/api/health").status_code == 503  # the launcher is gone


@pytest.fixture
def archive_client(tmp_path, monkeypatch):
    """The app (no job runner: on-demand variants) with one CT image and one already-lossy CT, as the admin."""
    monkeypatch.setenv("RADPRESS_ADMIN_USER", ADMIN[0])
    monkeypatch.setenv("RADPRESS_ADMIN_PASSWORD", ADMIN[1])
    monkeypatch.delenv(HEARTBEAT_ENV, raising=False)
    app = create_app(tmp_path / "data", run_jobs=False, demo=False)
    client = app.server.test_client()
    auth = {"Authorization": "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()}
    sops = []
    for name, kind in (("ct.dcm", {}), ("lossy.dcm", {"lossy_history": (("ISO_15444_1", 18.0),), "seed": 1})):
        answer = client.post(f"/api/upload?name={name}", data=ct_file(tmp_path, name, **kind).read_bytes(), headers=auth)
        assert answer.status_code == 200, answer.get_json()
        sops.append(answer.get_json()["results"][0]["sop_uid"])
    return app, client, auth, sops


def _thumbnail_src(app, auth, study_uid: str, sop: str) -> str:
    """The thumbnail URL the Study page links for *sop* (the page rendered as the admin)."""
    import dash

    layout = dash.page_registry["pages.study"]["layout"]
    with app.server.test_request_context("/study", headers=auth):
        page = json.dumps(layout(uid=study_uid).to_plotly_json(), default=lambda o: o.to_plotly_json())
    start = page.index(f"/thumbnail/{sop}")
    return page[start:page.index('"', start)]


def test_content_addressed_urls_are_immutable(archive_client):
    app, client, auth, (sop, lossy_sop) = archive_client
    store = app.server.extensions["radpress"]["store"]
    study_uid = store.instance(sop)["study_uid"]
    src = _thumbnail_src(app, auth, study_uid, sop)
    assert "?v=" in src
    linked = client.get(src, headers=auth)
    assert linked.status_code == 200 and linked.mimetype == "image/png"
    cc = linked.headers["Cache-Control"]
    assert "immutable" in cc and IMMUTABLE in cc and "private" in cc and "public" not in cc
    assert "Content-Encoding" not in linked.headers  # a PNG is not compressed again
    again = client.get(src, headers={**auth, "If-None-Match": linked.headers["ETag"]})
    assert again.status_code == 304 and "immutable" in again.headers["Cache-Control"]
    # the same route without a version, or naming other content, may change: never immutable
    plain = client.get(f"/thumbnail/{sop}", headers=auth)
    assert plain.data == linked.data and "immutable" not in plain.headers["Cache-Control"]
    stale = client.get(f"/thumbnail/{sop}?v=0123456789abcdef0123456789abcdef", headers=auth)
    assert "immutable" not in stale.headers["Cache-Control"] and "no-cache" in stale.headers["Cache-Control"]
    # an already-lossy original keeps its marking on the immutable answer
    lossy_src = _thumbnail_src(app, auth, store.instance(lossy_sop)["study_uid"], lossy_sop)
    lossy = client.get(lossy_src, headers=auth)
    assert "immutable" in lossy.headers["Cache-Control"] and lossy.headers["X-Lossy-Compression"]

    checksum = store.artifact(sop, "original").checksum[:32]
    drawn = render_version(checksum)  # a picture names the file it is drawn from and the renderer's version
    preview = client.get(f"/preview/{sop}?variant=lossless&level=1&v={drawn}", headers=auth)
    assert preview.status_code == 200 and "immutable" in preview.headers["Cache-Control"]
    lossy_preview = client.get(f"/preview/{sop}?variant=lossy&level=1&v={drawn}", headers=auth)  # follows the policy
    assert lossy_preview.status_code == 200 and "immutable" not in lossy_preview.headers["Cache-Control"]
    assert lossy_preview.headers["X-Lossy-Compression"]
    tile = client.get(f"/deepzoom/{sop}_files/0/0_0.png?v={drawn}", headers=auth)
    assert tile.status_code == 200 and "immutable" in tile.headers["Cache-Control"]
    for picture in (f"/preview/{sop}?variant=lossless&level=1&v={checksum}", f"/deepzoom/{sop}_files/0/0_0.png?v={checksum}"):
        assert "immutable" not in client.get(picture, headers=auth).headers["Cache-Control"]  # the file alone: not its picture
    copy = client.get(f"/download/instance/{sop}?variant=original", headers=auth)
    named = client.get(f"/download/instance/{sop}?variant=original&v={copy.headers['ETag'].strip(chr(34))}", headers=auth)
    assert "immutable" not in copy.headers.get("Cache-Control", "") and "immutable" in named.headers["Cache-Control"]
    assert named.data == copy.data and "Content-Encoding" not in named.headers


def _viewer_dzi(app, auth, sop: str) -> str:
    """The DeepZoom descriptor URL the Viewer page gives OpenSeadragon (its query is repeated on every tile)."""
    import dash

    layout = dash.page_registry["pages.viewer"]["layout"]
    with app.server.test_request_context("/viewer", headers=auth):
        page = json.dumps(layout(sop=sop).to_plotly_json(), default=lambda o: o.to_plotly_json())
    return re.search(r'"data-dzi": "([^"]+)"', page).group(1).replace("\\u0026", "&")


def test_a_new_renderer_is_fetched_again(archive_client, monkeypatch):
    """An upgrade that draws differently bumps core.render.RENDER_VERSION: every URL, ETag and cache key naming a
    drawn picture changes, so a browser that kept the old one for a year (or revalidates it) gets the new one."""
    app, client, auth, (sop, _lossy) = archive_client
    store = app.server.extensions["radpress"]["store"]
    study_uid = store.instance(sop)["study_uid"]
    preview_url, tile_path = f"/preview/{sop}?variant=lossless&level=1", f"/deepzoom/{sop}_files/0/0_0.png"

    def drawn():
        thumb, dzi = _thumbnail_src(app, auth, study_uid, sop), _viewer_dzi(app, auth, sop)
        v = dzi.split("v=")[1]
        answers = [client.get(url, headers=auth) for url in (thumb, f"{preview_url}&v={v}", dzi, f"{tile_path}?{dzi.split('?')[1]}")]
        assert all(a.status_code == 200 and "immutable" in a.headers["Cache-Control"] for a in answers), answers
        return thumb, v, answers

    thumb, v, (png, preview, _dzi, tile) = drawn()
    assert v == render_version(store.artifact(sop, "original").checksum[:32]) and v.endswith("-r1")
    monkeypatch.setattr("core.render.RENDER_VERSION", 2)
    thumb2, v2, (png2, preview2, _dzi2, tile2) = drawn()
    assert thumb2 != thumb and v2 != v and v2.endswith("-r2")  # the page links new URLs: fetched, not taken from the cache
    for old in (thumb, f"{preview_url}&v={v}", f"{tile_path}?preset=Image+default&v={v}"):  # an old link is not kept
        cc = client.get(old, headers=auth).headers["Cache-Control"]
        assert "immutable" not in cc and "no-cache" in cc, old
    for old, new, url in ((png, png2, thumb2), (preview, preview2, f"{preview_url}&v={v2}"), (tile, tile2, f"{tile_path}?v={v2}")):
        assert new.headers["ETag"] != old.headers["ETag"]  # drawn again, not the old picture from the server's caches
        assert client.get(url, headers={**auth, "If-None-Match": old.headers["ETag"]}).status_code == 200


def test_text_is_compressed_and_assets_cached(archive_client):
    app, client, auth, (sop, _lossy) = archive_client
    study_uid = app.server.extensions["radpress"]["store"].instance(sop)["study_uid"]
    answer = client.get(f"/api/studies/{study_uid}", headers={**auth, "Accept-Encoding": "gzip"})
    assert answer.status_code == 200 and answer.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(answer.data))["instances"][0]["sop_uid"] == sop
    assert "Accept-Encoding" in answer.headers["Vary"]
    whole = client.get("/assets/style.css", headers={"Accept-Encoding": "gzip"})
    assert whole.status_code == 200 and whole.headers["Content-Encoding"] == "gzip" and "no-cache" in whole.headers["Cache-Control"]
    part = client.get("/assets/style.css", headers={"Accept-Encoding": "gzip", "Range": "bytes=0-99"})
    assert part.status_code == 206 and "Content-Encoding" not in part.headers and len(part.data) == 100
    fingerprinted = client.get("/assets/style.css?m=1700000000.0")
    assert "immutable" in fingerprinted.headers["Cache-Control"] and IMMUTABLE in fingerprinted.headers["Cache-Control"]
    dicom = client.get(f"/download/instance/{sop}", headers={**auth, "Accept-Encoding": "gzip"})
    assert dicom.status_code == 200 and "Content-Encoding" not in dicom.headers
