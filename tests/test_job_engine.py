"""One job engine: with REDIS_URL the archive's per-instance work runs on Celery workers (real redis-server, two
worker processes, one SIGKILLed mid-job); without it, in local worker processes."""

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from core.archive import plan
from core.engine import CeleryPool, celery_app, pool_factory, worker_lost
from core.ingest import ingest
from core.jobs import Jobs, _make_for_instance
from core.pixels import read_dataset
from core.samples import write_series
from core.store import Store
from core.workers import WorkerPool
from tests.checkers import require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strategy_1_study(tmp_path, count: int) -> tuple[Store, str]:
    store = Store(tmp_path / "data")
    study = list(ingest(store, write_series("693_UNCR", count, tmp_path / "series")))[0].study_uid  # CT 512 × 512, signed
    store.set_study_strategy(study, 1)
    return store, study


def assert_artifacts_correct(store: Store, study: str) -> None:
    """Every instance has its lossless copy (same SOP Instance UID, pixels bit-exact), a lossy copy marked lossy, a thumbnail."""
    for row in store.instances(study):
        original = read_dataset(store.artifact(row["sop_uid"], "original").path)
        kinds = {a.variant: a for a in store.artifacts(row["sop_uid"])}
        assert {"lossless", "lossy", "thumbnail"} <= kinds.keys(), (row["sop_uid"], sorted(kinds))
        lossless = read_dataset(kinds["lossless"].path)
        assert lossless.SOPInstanceUID == original.SOPInstanceUID
        assert np.array_equal(lossless.pixel_array, original.pixel_array)
        lossy = read_dataset(kinds["lossy"].path)
        assert lossy.LossyImageCompression == "01" and lossy.SOPInstanceUID != original.SOPInstanceUID
        assert lossy.file_meta.TransferSyntaxUID.is_compressed and lossy.pixel_array.shape == original.pixel_array.shape
        assert kinds["thumbnail"].path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def redis_url():
    port = free_port()
    redis = subprocess.Popen([require("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield url
    finally:
        redis.terminate()
        redis.wait(timeout=30)


def start_worker(name: str, url: str, data) -> subprocess.Popen:
    """``celery -A app:celery_app worker`` as deployed (the same command serves Dash's background callbacks), own session."""
    env = {**os.environ, "REDIS_URL": url, "RADPRESS_DATA": str(data)}
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "app:celery_app", "worker", "-n", f"{name}@%h",
                             "--pool", "prefork", "--concurrency", "1", "--without-mingle", "--without-gossip",
                             "--loglevel", "warning"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _busy_worker(app, among: set[str], deadline: float) -> tuple[str, int]:
    """A worker of *among* executing a task now, and the pid of the pool process running it."""
    while True:
        assert time.monotonic() < deadline, "no worker was seen holding an instance"
        for node, tasks in (app.control.inspect(destination=[f"{n}@{socket.gethostname()}" for n in among], timeout=0.5).active()
                            or {}).items():
            if tasks:
                return node.split("@")[0], tasks[0]["worker_pid"]


def test_killed_celery_workers_lose_no_instance(tmp_path, redis_url):
    """Two workers share a strategy-1 job. One's pool process is SIGKILLed while it makes an instance (the worker puts the
    task back), then the other worker is SIGKILLed whole while it holds one (the runner sends it again): the job still
    ends done with every artifact correct, made by the one worker left."""
    count = 32  # enough work that each worker is still busy when the test looks (8 were done before it looked, unloaded)
    store, study = strategy_1_study(tmp_path, count)
    app = celery_app(redis_url)
    workers = {name: start_worker(name, redis_url, store.root) for name in ("w1", "w2")}
    try:
        host = socket.gethostname()
        deadline = time.monotonic() + 40
        while {f"w1@{host}", f"w2@{host}"} - {n for reply in app.control.ping(timeout=0.5) for n in reply}:
            assert time.monotonic() < deadline, "the Celery workers did not start"
        jobs = Jobs(store, workers=4, pool=pool_factory(redis_url))
        job_id = jobs.submit(study)
        finished = []
        runner = threading.Thread(target=lambda: finished.extend(jobs.run_pending()), daemon=True)
        runner.start()

        deadline = time.monotonic() + 40
        first, child = _busy_worker(app, {"w1", "w2"}, deadline)
        os.kill(child, signal.SIGKILL)  # the pool process alone, mid-instance (as the OOM killer would)
        second, _ = _busy_worker(app, {"w1", "w2"} - {first}, deadline)
        held = store.query("SELECT done FROM jobs WHERE id=?", (job_id,))[0]["done"]
        os.killpg(workers[second].pid, signal.SIGKILL)  # a whole worker and its pool process, mid-instance
        workers[second].wait()

        runner.join(timeout=60)
        assert not runner.is_alive(), "the job did not finish after its workers were killed"
        [job] = finished
        assert held < count  # it was killed mid-job
        assert job["id"] == job_id and job["state"] == "done" and job["done"] == count and job["failed"] == 0, job
        assert_artifacts_correct(store, study)
        assert workers[first].poll() is None  # the worker whose pool process was killed lives on
    finally:
        for proc in workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_without_redis_url_jobs_run_in_local_worker_processes(tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert pool_factory() is WorkerPool
    store, study = strategy_1_study(tmp_path, 2)
    jobs = Jobs(store, workers=2, pool=pool_factory())
    jobs.submit(study)
    [job] = jobs.run_pending()
    assert job["state"] == "done" and job["done"] == 2 and job["failed"] == 0
    assert_artifacts_correct(store, study)


def test_the_app_picks_the_engine_from_redis_url(tmp_path, monkeypatch):
    from app import create_app

    monkeypatch.delenv("REDIS_URL", raising=False)
    local = create_app(tmp_path / "a", run_jobs=False, demo=False)
    assert local.server.extensions["radpress"]["jobs"].pool is WorkerPool
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never contacted: building the app connects to nothing
    celery = create_app(tmp_path / "b", run_jobs=False, demo=False)
    pool = celery.server.extensions["radpress"]["jobs"].pool(3)
    assert isinstance(pool, CeleryPool) and pool.size == 3
    assert celery._background_manager.handle is celery_app("redis://127.0.0.1:1/0")  # one Celery app for both


def test_a_started_task_is_lost_only_when_its_worker_is_gone():
    host, now = socket.gethostname(), time.time()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not worker_lost({"host": host, "pid": os.getpid(), "worker": os.getpid(), "beat": now}, now)
    assert not worker_lost({"host": host, "pid": dead.pid, "worker": os.getpid(), "beat": now}, now)  # its worker requeues it
    assert worker_lost({"host": host, "pid": dead.pid, "worker": dead.pid, "beat": now}, now)
    assert not worker_lost({"host": "elsewhere", "pid": dead.pid, "worker": dead.pid, "beat": now}, now)  # not our pids
    assert worker_lost({"host": "elsewhere", "pid": 1, "worker": 1, "beat": now - 31}, now)  # no heartbeat
    assert not worker_lost({"pid": 12}, now) and not worker_lost(None, now)  # not started by our task


def test_a_task_delivered_twice_makes_nothing_twice(tmp_path):
    from core.engine import _make_missing

    store, study = strategy_1_study(tmp_path, 1)
    sop = store.instances(study)[0]["sop_uid"]
    wanted = [w for w in plan(store, study).make if w.variant in ("lossless", "thumbnail")]
    assert len(wanted) == 2 and {w.sop_uid for w in wanted} == {sop}
    written, error, _rss, _warning = _make_for_instance(str(store.root), wanted)
    assert error is None and written > 0
    before = {a.variant: (a.checksum, a.path.stat().st_mtime_ns) for a in store.artifacts(sop)}
    again = _make_missing(str(store.root), [dataclasses.asdict(w) for w in wanted])
    assert again[:2] == (0, None)
    assert {a.variant: (a.checksum, a.path.stat().st_mtime_ns) for a in store.artifacts(sop)} == before


def test_instances_waiting_for_no_worker_are_said_in_the_log(tmp_path, redis_url, monkeypatch, caplog):
    import core.engine

    monkeypatch.setattr(core.engine, "QUIET_SECONDS", 0.3)
    store, study = strategy_1_study(tmp_path, 1)
    [item] = [w for w in plan(store, study).make if w.variant == "thumbnail"]
    with CeleryPool(2, url=redis_url) as pool, caplog.at_level("WARNING", logger="core.engine"):
        pool.submit(item.sop_uid, _make_for_instance, str(store.root), [item])
        assert pool.wait(timeout=2.5) == [] and pool.busy == 1
    assert "1 instance(s) wait for a Celery worker and none answers" in caplog.text


def test_a_runner_stopping_does_not_wait_for_celery_tasks(tmp_path, redis_url):
    """No worker runs the instances handed to Celery: stopping the runner is prompt and the job goes back to the queue."""
    store, study = strategy_1_study(tmp_path, 3)
    jobs = Jobs(store, workers=2, pool=pool_factory(redis_url))
    job_id = jobs.submit(study)
    jobs.start()
    deadline = time.monotonic() + 30
    while jobs.get(job_id)["state"] != "running":
        assert time.monotonic() < deadline, "the runner did not take the job"
        time.sleep(0.05)
    time.sleep(0.5)  # its instances are in flight
    started = time.monotonic()
    jobs.stop()
    assert time.monotonic() - started < 10 and not jobs.alive()
    assert jobs.get(job_id)["state"] == "queued"


def test_a_task_message_never_names_a_path(tmp_path, monkeypatch):
    """What a Celery message carries is checked before use: the worker's own data directory only (Store(root) made
    folders wherever a message said), known variants and codec names (parts of a file name), real UIDs."""
    from core.engine import _checked
    from core.errors import RadPressError

    data = tmp_path / "data"
    monkeypatch.setenv("RADPRESS_DATA", str(data))
    item = {"sop_uid": "1.2.826.0.1.3680043.8.498.1", "variant": "lossless", "ratio": 0, "codec": "jpegls"}
    assert _checked("instance", [str(tmp_path / "x" / ".." / "data"), [item]]) == [str(data.resolve()), [item]]
    assert _checked("lab", [str(data), 7, "admin"]) == [str(data.resolve()), 7, "admin"]
    assert _checked("policy", [str(data), 8, "host:1:ab"]) == [str(data.resolve()), 8, "host:1:ab"]  # a saved policy's comparison
    bad = [("instance", [str(tmp_path / "elsewhere"), [item]]), ("instance", ["/etc", [item]]), ("lab", ["\x00", 7, "admin"]),
           ("instance", [str(data), [{**item, "variant": "../../../tmp/x"}]]), ("instance", [str(data), [{**item, "codec": "j2k/../../x"}]]),
           ("instance", [str(data), [{**item, "sop_uid": "../1.2"}]]), ("instance", [str(data), [{**item, "ratio": "10"}]]),
           ("instance", [str(data), [{**item, "path": "/tmp"}]]), ("instance", [str(data), []]), ("lab", [str(data), "7", "admin"]),
           ("instance", [5, [item]]), ("instance", "not a list"), ("policy", ["/etc", 8, "x"]), ("policy", [str(data), True, "x"]),
           ("policy", [str(data), 8])]
    for name, args in bad:
        with pytest.raises(RadPressError):
            _checked(name, args)
    assert not (tmp_path / "elsewhere").exists()


def test_a_broker_that_does_not_answer_holds_no_request_longer_than_the_ping(tmp_path, live_app, monkeypatch):
    """Redis down (nothing listens on its port): kombu retries its connection for ~6 s, but /api/health and the Jobs
    page wait no longer than the ping's own timeout (a liveness probe that times out restarts a serving process)
    and say no worker answers; asking again within PING_EVERY_S does not wait at all."""
    import requests

    import core.engine
    from core.engine import workers_answer

    monkeypatch.setattr(core.engine, "_pinged", {})
    dead = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    assert workers_answer(dead, timeout=0.5) is False
    assert time.monotonic() - started < 1.5
    started = time.monotonic()
    assert workers_answer(dead, timeout=0.5) is False  # the answer of the ping still under way
    assert time.monotonic() - started < 0.2

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    base, app = live_app(demo=False, run_jobs=False)  # (a runner would retry sending to the broker until it stops)
    store = app.server.extensions["radpress"]["store"]
    with store.connect() as db:  # a job that has waited a minute (Redis is down: no worker takes it)
        db.execute("INSERT INTO jobs (kind, study_uid, state, params, created) VALUES ('policy', NULL, 'queued', '{}', ?)",
                   (time.time() - 60,))
    started = time.monotonic()
    health = requests.get(f"{base}/api/health", timeout=30)
    assert time.monotonic() - started < 2.0, "the health check waited on the broker's connection retries"
    assert health.json()["warnings"] == ["No job worker is running: start one with `make worker`."]
