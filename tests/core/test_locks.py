"""Per-item locks: one holder across threads and processes, released when the holder dies; used by the real app."""

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from core.locks import BusyError, item_lock
from core.samples import write_series


def test_threads_of_one_process_exclude_each_other(tmp_path):
    inside, most, entered = [0], [0], []
    guard = threading.Lock()

    def work(n):
        with item_lock(tmp_path, "pyramid:one"):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.02)
            entered.append(n)
            with guard:
                inside[0] -= 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    assert most[0] == 1 and sorted(entered) == list(range(8))


def test_other_keys_do_not_wait(tmp_path):
    with item_lock(tmp_path, "a"):
        with item_lock(tmp_path, "b", timeout=0.1):
            pass


HOLDER = """
import sys, time
from core.locks import item_lock
with item_lock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_another_process_holds_it_until_it_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "variant:x"], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(BusyError, match="still being prepared") as err:
            with item_lock(tmp_path, "variant:x", timeout=0.3):
                pass
        assert err.value.http_status == 503 and 0.3 <= time.monotonic() - started < 5
        holder.send_signal(signal.SIGKILL)  # the kernel releases a dead holder's lock
        holder.wait(5)
        with item_lock(tmp_path, "variant:x", timeout=2):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_eight_concurrent_first_requests_build_once(live_app, tmp_path, monkeypatch):
    """8 simultaneous first DeepZoom requests on a very large image, 8 on an on-demand variant: all 200, one build each."""
    from tests.conftest import ADMIN

    monkeypatch.setenv("RADPRESS_LARGE_PIXELS", "1000000")  # the 1760 x 1760 radiograph counts as very large
    base, app = live_app(run_jobs=False)  # nothing made ahead of the requests
    store = app.server.extensions["radpress"]["store"]
    http = requests.Session()
    http.auth = ADMIN
    files = write_series("RG3_UNCR", 1, tmp_path / "in") + write_series("693_UNCR", 1, tmp_path / "in2")
    for path in files:
        with open(path, "rb") as fh:
            assert http.post(f"{base}/api/upload", files={"file": (path.name, fh)}).status_code == 200
    cr, ct = (next(s for s in http.get(f"{base}/api/studies").json() if s["modalities"] == m) for m in ("CR", "CT"))
    sops = {m: http.get(f"{base}/api/studies/{s['study_uid']}").json()["instances"][0]["sop_uid"] for m, s in (("CR", cr), ("CT", ct))}

    def get(url):
        session = requests.Session()
        session.auth = ADMIN
        return session.get(url, timeout=120)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(get, [f"{base}/deepzoom/{sops['CR']}.dzi"] * 8))
    assert [r.status_code for r in answers] == [200] * 8, [r.text[:200] for r in answers]
    assert len({r.text for r in answers}) == 1 and 'Width="1760"' in answers[0].text
    codestreams = list((store.root / "cache" / "codestreams").glob("*.j2k"))
    assert len(codestreams) == 1 and not list(store.root.rglob("*.part"))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(get, [f"{base}/download/instance/{sops['CT']}?variant=lossless"] * 8))
    assert [r.status_code for r in answers] == [200] * 8
    assert len({r.content for r in answers}) == 1
    assert sorted(r.headers["X-Cache"] for r in answers).count("miss") == 1  # encoded once, seven served from the cache


def test_a_request_that_waits_too_long_gets_503_with_retry_after(live_app, tmp_path, monkeypatch):
    """While another process builds an image's codestream, a request that outwaits the lock gets a clear 503, not a 500."""
    from core import locks
    from core.archive import _codestream_cache
    from tests.conftest import ADMIN

    base, app = live_app(run_jobs=False)
    store = app.server.extensions["radpress"]["store"]
    http = requests.Session()
    http.auth = ADMIN
    [path] = write_series("693_UNCR", 1, tmp_path / "in")
    with open(path, "rb") as fh:
        assert http.post(f"{base}/api/upload", files={"file": (path.name, fh)}).status_code == 200
    [row] = store.query("SELECT sop_uid FROM instances")
    original = store.artifact(row["sop_uid"], "original")
    codestream, _ = _codestream_cache(store, original.checksum, 0, None)
    monkeypatch.setattr(locks, "LOCK_TIMEOUT", 0.5)
    with item_lock(store.root, f"codestream:{codestream.name}"):  # as if another process were building it
        busy = http.get(f"{base}/deepzoom/{row['sop_uid']}.dzi")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "30"
    assert "still being prepared" in busy.json()["error"]
    assert http.get(f"{base}/deepzoom/{row['sop_uid']}.dzi").status_code == 200  # once free, it is made
