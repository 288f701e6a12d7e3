"""How the web app answers over HTTP: compression, browser caching, and the health check.

- Text (HTML, JSON, JavaScript, CSS, XML) is compressed; images, DICOM, video and archives are not (they are
  compressed already), nor are partial (206) or streamed answers.
- A URL that names its content with ``?v=<version>`` (a thumbnail's checksum, a copy's ETag; for pictures drawn
  on request — previews, tiles, thumbnails made on demand — the original's checksum and the renderer's version,
  :func:`core.render.render_version`, bumped by any upgrade that draws differently) is kept by the browser for a
  year (``private, max-age=31536000, immutable``): a study opened twice is not fetched twice.  A URL whose content
  can change never is: without ``v`` the route's own short ``max-age`` stands, and a ``v`` naming other content is
  answered with ``no-cache``.
- ``/api/health`` (no login) says whether this process can serve: the index opens, the data directory is
  writable, the job runner is alive and the DICOM node listens (where this setup runs them).  Under
  :mod:`core.launcher` those two run in the launcher, which writes a heartbeat the web workers read.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from flask import Flask, Response, request

from .store import Store

__all__ = ["Check", "Background", "LauncherBackground", "IMMUTABLE_SECONDS", "init_serving", "versioned", "health",
           "HEARTBEAT_ENV", "HEARTBEAT_STALE_S"]

IMMUTABLE_SECONDS = 31536000  # one year: the longest max-age caches honour
BUFFER_TEXT_FILES = 16 << 20  # a text file sent from disk up to this size is compressed whole; larger ones go as they are
HEARTBEAT_ENV = "RADPRESS_LAUNCHER_STATE"  # set by the launcher for its web workers: where its heartbeat is
HEARTBEAT_STALE_S = 15.0
COMPRESSED_TYPES = ("text/html", "text/css", "text/plain", "text/javascript", "application/javascript", "application/json",
                    "application/dicom+json", "application/xml", "text/xml", "image/svg+xml", "application/vnd.apple.mpegurl")


def init_serving(server: Flask) -> None:
    """Compression of text answers and cache headers of the static assets, on the app's Flask server."""
    from flask_compress import Compress

    server.config.update(COMPRESS_MIMETYPES=list(COMPRESSED_TYPES), COMPRESS_REGISTER=False, COMPRESS_STREAMS=False,
                         COMPRESS_MIN_SIZE=500)
    compress = Compress(server)

    @server.after_request
    def _compress(response: Response) -> Response:
        # A partial answer (206) compressed would be a fragment of a different encoding: only whole 200s.
        if response.status_code != 200 or "Range" in request.headers:
            return response
        if (response.is_streamed and response.mimetype in COMPRESSED_TYPES
                and 0 < (response.content_length or 0) <= BUFFER_TEXT_FILES):  # a static script or style sheet
            response.direct_passthrough = False
            response.set_data(response.get_data())  # read whole: compressed with its length and a 304-able ETag
        return compress.after_request(response)

    server.after_request(_asset_cache)


def _asset_cache(response: Response) -> Response:
    """/assets: a URL with Dash's fingerprint (``?m=<mtime>``) changes when the file does, so it is immutable;
    without it the browser asks again (304 when unchanged).  Dash's component suites set their own."""
    if request.path.startswith("/assets/") and response.status_code in (200, 304):
        cc = response.cache_control
        if request.args.get("m"):
            cc.public, cc.max_age, cc.immutable, cc.no_cache = True, IMMUTABLE_SECONDS, True, None
        else:
            cc.public, cc.no_cache, cc.max_age = True, True, None
    return response


def versioned(response: Response, version: str | None) -> Response:
    """Immutable when the URL's ``v`` names *version* (the content this answer is); ``no-cache`` when it names other
    content (the link is stale); unchanged without ``v``.  *version* None: this answer's content can change."""
    asked = request.args.get("v")
    if asked is None:
        return response
    cc = response.cache_control
    if version and asked == version:
        cc.private, cc.max_age, cc.immutable, cc.no_cache = True, IMMUTABLE_SECONDS, True, None
    else:
        cc.max_age, cc.immutable, cc.no_cache = None, False, True
    return response


@dataclass(frozen=True)
class Check:
    """One readiness check: its name, whether it passed, and what was found."""

    name: str
    ok: bool
    detail: str


class Background:
    """The job runner and DICOM node of this process (``None``: not run here) and how they are doing."""

    def __init__(self, jobs=None, node=None, runner_elsewhere: str = "not run by this process"):
        self.jobs, self.node, self.runner_elsewhere = jobs, node, runner_elsewhere

    def checks(self) -> list[Check]:
        if self.jobs is None:
            out = [Check("jobs", True, self.runner_elsewhere)]
        else:
            alive = self.jobs.alive()
            out = [Check("jobs", alive, "job runner alive" if alive else "the job runner thread has stopped")]
        if self.node is not None:
            listening = self.node.listening
            where = f"{self.node.config.ae_title} on {self.node.config.host}:{self.node.port}"
            out.append(Check("dicom", listening, f"DICOM node {where} " + ("listening" if listening else "not listening")))
        return out


class LauncherBackground:
    """In a web worker under :mod:`core.launcher`: the launcher's heartbeat file says how its runner and node are."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def checks(self) -> list[Check]:
        try:
            beat = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return [Check("jobs", False, f"no heartbeat from the launcher ({self.path.name})")]
        age = time.time() - float(beat.get("time", 0))
        if age > HEARTBEAT_STALE_S or not _alive(int(beat.get("pid", 0))):
            return [Check("jobs", False, f"the launcher (pid {beat.get('pid')}) has not answered for {age:.0f} s")]
        return [Check(**c) for c in beat.get("checks", [])]

    def write(self, background: Background) -> None:
        """The launcher's side: its checks now, written atomically (temp file + rename)."""
        body = json.dumps({"pid": os.getpid(), "time": time.time(), "checks": [asdict(c) for c in background.checks()]})
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".heartbeat-")
        with os.fdopen(fd, "w") as fh:
            fh.write(body)
        os.replace(tmp, self.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def health(store: Store, background) -> tuple[dict, int]:
    """Liveness and readiness: 200 with ``status: ok`` when every check passes, else 503 with ``degraded``.

    Jobs waiting for a Celery worker that does not run are a warning, not a failed check: this process
    serves, and a 503 would take every web worker out of a load balancer's rotation (core.joblist.missing_worker)."""
    from .joblist import missing_worker

    checks = [_index(store), _writable(store.root), *background.checks()]
    ok = all(c.ok for c in checks)
    body = {"status": "ok" if ok else "degraded", "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}}
    try:
        body["warnings"] = [warning] if (warning := missing_worker(store, detail=False)) else []
    except Exception as exc:  # noqa: BLE001 - an index that does not open is the index check's to report
        body["warnings"] = [f"jobs not checked: {type(exc).__name__}"]
    return body, 200 if ok else 503


def _index(store: Store) -> Check:
    try:
        version = store.query("PRAGMA user_version")[0][0]
    except Exception as exc:  # noqa: BLE001 - any failure to read the index is what this check reports
        return Check("index", False, f"the index does not open: {type(exc).__name__}: {exc}")
    return Check("index", True, f"index opens (schema version {version})")


def _writable(root: Path) -> Check:
    try:
        with tempfile.NamedTemporaryFile(dir=root, prefix=".health-"):
            pass
    except OSError as exc:
        return Check("data_dir", False, f"the data directory is not writable ({exc.strerror})")
    return Check("data_dir", True, "data directory writable")
