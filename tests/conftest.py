import os
import warnings

import pytest

from core.pixels import read_dataset
from core.samples import sample

warnings.filterwarnings("ignore", module="pydicom")
# Apps started by the tests (and their subprocesses) make a study's copies at once; the app's default wait for a
# study to stop arriving (RADPRESS_STUDY_SETTLE_S, 2 s) has its own tests.
os.environ.setdefault("RADPRESS_STUDY_SETTLE_S", "0")


@pytest.fixture(scope="session")
def load():
    """Read a pydicom-data sample once per session (tests must not modify it)."""
    cache = {}

    def _load(name: str):
        if name not in cache:
            cache[name] = read_dataset(sample(name))
        return cache[name]

    return _load


ADMIN = ("admin", "correct-horse")


@pytest.fixture
def live_app(tmp_path, monkeypatch):
    """Factory: the real app on a free localhost port with its own data directory.

    ``base, app = live_app(demo=True)``; the administrator is :data:`ADMIN`.
    Every app started is shut down (server and job workers) after the test.
    """
    import threading

    from werkzeug.serving import make_server

    from app import create_app

    monkeypatch.setenv("RADPRESS_ADMIN_USER", ADMIN[0])
    monkeypatch.setenv("RADPRESS_ADMIN_PASSWORD", ADMIN[1])
    started = []

    def _start(*, demo: bool = False, data_dir=None, **kwargs):
        app = create_app(data_dir or tmp_path / f"data{len(started)}", demo=demo, **kwargs)
        httpd = make_server("127.0.0.1", 0, app.server, threaded=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append((httpd, app))
        return f"http://127.0.0.1:{httpd.server_port}", app

    yield _start
    for httpd, app in started:
        httpd.shutdown()
        app.server.extensions["radpress"]["jobs"].stop()
        if app.server.extensions["radpress"].get("dicom"):  # live_app(dicom_port=0): the DICOM node too
            app.server.extensions["radpress"]["dicom"].stop()
