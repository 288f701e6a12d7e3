import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from core.ingest import ingest
from core.jobs import Jobs
from core.pixels import read_dataset
from core.samples import write_series
from core.store import Store
from core.workers import WORKER_NAME
from tests.core.test_workers import ROOT, alive, descendants


def ingest_series(store, tmp_path, name="RG3_UNCR", count=6):
    results = list(ingest(store, write_series(name, count, tmp_path / "series")))
    return results[0].study_uid


def test_job_reports_progress_and_counts(tmp_path):
    store = Store(tmp_path / "data")
    study = ingest_series(store, tmp_path, "emri_small", 4)
    jobs = Jobs(store, workers=2)
    seen = []
    job_id = jobs.submit(study)
    [job] = jobs.run_pending(progress=seen.append)
    assert job["id"] == job_id and job["state"] == "done" and job["done"] == 4 and job["total"] == 4
    assert job["bytes"] > 0 and job["mb_per_s"] > 0
    assert [j["done"] for j in seen] == [1, 2, 3, 4]


def test_errors_are_recorded_per_instance_without_stopping_the_rest(tmp_path):
    store = Store(tmp_path / "data")
    study = ingest_series(store, tmp_path, "emri_small", 3)
    broken = store.instances(study)[1]
    store.artifact(broken["sop_uid"], "original").path.write_bytes(b"not dicom any more")
    jobs = Jobs(store, workers=1)
    jobs.submit(study)
    [job] = jobs.run_pending()
    assert job["done"] == 2 and job["failed"] == 1
    assert job["errors"][0]["sop_uid"] == broken["sop_uid"] and "not a DICOM file" in job["errors"][0]["error"]


def test_cancel_a_queued_job(tmp_path):
    store = Store(tmp_path / "data")
    study = ingest_series(store, tmp_path, "emri_small", 1)
    jobs = Jobs(store)
    job_id = jobs.submit(study)
    assert jobs.cancel(job_id)["state"] == "cancelled"
    assert jobs.run_pending() == []


def test_cancel_a_running_job(tmp_path):
    store = Store(tmp_path / "data")
    study = ingest_series(store, tmp_path, "RG3_UNCR", 8)
    jobs = Jobs(store, workers=1)
    job_id = jobs.submit(study)

    def cancel_after_first(job):
        if job["done"] == 1:
            jobs.cancel(job_id)

    [job] = jobs.run_pending(progress=cancel_after_first)
    assert job["state"] == "cancelled" and job["done"] < 8


def test_killed_mid_job_resumes_after_restart(tmp_path):
    """SIGKILL the ingest while its job runs: its workers go with it; a restart repairs the store and finishes the job."""
    data = tmp_path / "data"
    files = write_series("RG3_UNCR", 8, tmp_path / "series")
    proc = subprocess.Popen([sys.executable, "-m", "core", "ingest", *map(str, files), "--data", str(data), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    store = Store(data)
    deadline = time.time() + 120
    while time.time() < deadline:
        rows = store.query("SELECT done FROM jobs WHERE state='running'")
        if rows and rows[0]["done"] >= 2:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the job never got going")
    family = descendants(proc.pid)
    assert worker_pids() and set(worker_pids()) <= family
    os.kill(proc.pid, signal.SIGKILL)  # the process alone, as the OS or an operator would
    proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(pid) for pid in family):
        time.sleep(0.05)
    orphans = [pid for pid in family if alive(pid)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # a failed run leaves nothing behind
    assert orphans == []  # no worker outlives the process that started it
    assert store.query("SELECT state FROM jobs")[0]["state"] == "running"  # interrupted, not finished

    restarted = Store(data)
    restarted.check()
    for row in restarted.query("SELECT path FROM artifacts"):
        assert os.path.exists(row["path"])
    assert not [p for p in data.rglob("*.part")]
    jobs = Jobs(restarted, workers=2)
    assert jobs.resume() == 1
    [job] = jobs.run_pending()
    assert job["state"] == "done"
    study = job["study_uid"]
    for row in restarted.instances(study):
        lossy = restarted.artifact(row["sop_uid"], "lossy", 10)
        assert lossy is not None and read_dataset(lossy.path).LossyImageCompression == "01"
        assert restarted.artifact(row["sop_uid"], "lossless") is not None


CLAIMER = """
import json, sys, time
from core.jobs import Jobs
from core.store import Store
jobs = Jobs(Store(sys.argv[1]))
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
got = []
while (job := jobs.claim()) is not None:
    got.append(job["id"])
print(json.dumps(got), flush=True)
sys.stdin.read()  # stay alive (a live runner's jobs are not released) until the test has every answer
"""


def test_claims_are_atomic_across_processes(tmp_path):
    """Three processes claim 40 queued jobs at the same moment: every job is claimed exactly once."""
    store = Store(tmp_path / "data")
    with store.connect() as db:
        ids = [db.execute("INSERT INTO jobs (kind, study_uid, state, params, created) VALUES ('materialize', ?, 'queued', '{}', 0)",
                          (f"1.2.3.{n}",)).lastrowid for n in range(40)]
    start = time.time() + 4
    runners = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(store.root), str(start)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(3)]
    try:
        claimed = [json.loads(r.stdout.readline()) for r in runners]
    finally:
        for r in runners:
            r.stdin.close()
            r.wait(30)
    everything = [job for got in claimed for job in got]
    assert sorted(everything) == sorted(ids)  # none twice, none missed
    owners = {row["owner"] for row in store.query("SELECT owner FROM jobs")}
    assert len(owners) == sum(1 for got in claimed if got)


def test_an_expired_lease_is_taken_over(tmp_path):
    """A runner that stops renewing (hung, or on a dead host) loses its job once the lease expires; the job then completes."""
    store = Store(tmp_path / "data")
    study = ingest_series(store, tmp_path, "emri_small", 2)
    stuck, other = Jobs(store, workers=1), Jobs(store, workers=1)
    job_id = stuck.submit(study)
    assert stuck.claim()["id"] == job_id
    assert other.claim() is None  # the lease holds and its process is alive
    with store.connect() as db:  # the lease runs out: the stuck runner did not renew it in time
        db.execute("UPDATE jobs SET lease=? WHERE id=?", (time.time() - 1, job_id))
    [job] = other.run_pending()
    assert job["id"] == job_id and job["state"] == "done" and job["done"] == 2
    assert not stuck.renew(job_id)  # the old runner learns it lost the job


def test_a_runner_renews_its_lease_while_it_works(tmp_path):
    """A job that outlasts its lease stays with its runner: another runner polling all along never gets it."""
    store = Store(tmp_path / "data")
    study = ingest_series(store, tmp_path, "RG3_UNCR", 10)  # 2 took under one lease once the copies got faster
    runner, thief = Jobs(store, workers=1, lease=2), Jobs(Store(store.root), workers=1, lease=2)
    runner.submit(study)
    stolen, done = [], threading.Event()

    def poll():  # once the runner has the job (the thief polling first would simply take it)
        while not done.is_set():
            if store.query("SELECT 1 FROM jobs WHERE state='running'") and (job := thief.claim()) is not None:
                stolen.append(job["id"])
            time.sleep(0.1)

    watcher = threading.Thread(target=poll)
    watcher.start()
    started = time.monotonic()
    try:
        [job] = runner.run_pending()
    finally:
        done.set()
        watcher.join()
    assert time.monotonic() - started > 2  # longer than one lease
    assert stolen == [] and job["state"] == "done" and job["done"] == 10


def test_a_dead_runner_on_this_host_is_released_at_once(tmp_path):
    store = Store(tmp_path / "data")
    study = ingest_series(store, tmp_path, "emri_small", 1)
    jobs = Jobs(store, workers=1, lease=3600)
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()
    first, second = jobs.submit(study), None
    jobs.claim()
    with store.connect() as db:  # as if a process of this host had claimed it and died
        db.execute("UPDATE jobs SET owner=? WHERE id=?", (f"{host}:{gone.pid}:dead", first))
    assert jobs.resume() == 1 and jobs.get(first)["state"] == "queued"
    jobs.claim()
    with store.connect() as db:  # a runner on another host keeps its job until the lease expires
        db.execute("UPDATE jobs SET owner=? WHERE id=?", ("another-host:1:x", first))
    assert jobs.resume() == 0 and jobs.get(first)["state"] == "running"
    with store.connect() as db:  # a cancel asked for while the runner was dying is honoured
        db.execute("UPDATE jobs SET owner=?, cancel=1 WHERE id=?", (f"{host}:{gone.pid}:dead", first))
    assert jobs.resume() == 0 and jobs.get(first)["state"] == "cancelled"
    second = jobs.submit(study)
    [job] = jobs.run_pending()
    assert job["id"] == second and job["state"] == "done" and job["done"] == 1


def test_one_study_is_worked_on_by_one_runner_at_a_time(tmp_path):
    """A job submitted while the study's job runs is queued apart, and no other runner starts it meanwhile."""
    store = Store(tmp_path / "data")
    study = ingest_series(store, tmp_path, "emri_small", 1)
    a, b = Jobs(store, workers=1), Jobs(store, workers=1)
    running = a.submit(study)
    assert a.claim()["id"] == running
    queued = b.submit(study)
    assert queued != running and b.claim() is None
    with store.connect() as db:
        db.execute("UPDATE jobs SET state='done' WHERE id=?", (running,))
    assert b.claim()["id"] == queued


def worker_pids() -> list[int]:
    return [pid for pid in descendants(os.getpid()) if _comm(pid) == WORKER_NAME and alive(pid)]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def test_a_worker_killed_by_the_os_fails_only_its_instance(tmp_path):
    """SIGKILL the worker making the second instance: that instance fails with the signal, the job goes on and ends."""
    store = Store(tmp_path / "data")
    study = ingest_series(store, tmp_path, "RG3_UNCR", 3)
    jobs = Jobs(store, workers=1)
    jobs.submit(study)
    killed = []

    def kill_during_second(job):
        if job["done"] == 1 and not killed:
            def later():
                time.sleep(0.3)  # the worker has taken the second instance (each takes over a second)
                killed.extend(worker_pids())
                os.kill(killed[0], signal.SIGKILL)
            threading.Thread(target=later).start()

    [job] = jobs.run_pending(progress=kill_during_second)
    assert len(killed) == 1
    assert job["state"] == "done" and job["done"] == 2 and job["failed"] == 1 and job["total"] == 3
    [error] = job["errors"]
    assert "killed by SIGKILL" in error["error"]
    every = {"original", "lossless", "lossy", "thumbnail"}
    for row in store.instances(study):
        if row["sop_uid"] != error["sop_uid"]:
            assert {a.variant for a in store.artifacts(row["sop_uid"])} == every
    assert not alive(killed[0]) and worker_pids() == []  # the pool was ended with the job
    jobs.submit(study)  # asked again, the failed instance is made
    [again] = jobs.run_pending()
    assert again["state"] == "done" and again["failed"] == 0
    assert {a.variant for a in store.artifacts(error["sop_uid"])} == every


def test_an_instance_stored_while_the_job_runs_gets_its_copies(tmp_path):
    """The job re-plans after its last item: an instance that arrives mid-job is not left without copies."""
    from pydicom.uid import generate_uid

    store = Store(tmp_path / "data")
    study = ingest_series(store, tmp_path, "emri_small", 3)
    jobs = Jobs(store, workers=1)
    jobs.submit(study)
    late = []

    def store_one_more(job):
        if job["done"] == 1 and not late:
            ds = read_dataset(store.artifact(store.instances(study)[0]["sop_uid"], "original").path)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            path = tmp_path / "late.dcm"
            ds.save_as(path, enforce_file_format=True)
            [result] = list(ingest(store, [path]))
            assert result.status == "stored" and result.study_uid == study
            late.append(result.sop_uid)

    [job] = jobs.run_pending(progress=store_one_more)
    assert late and job["state"] == "done" and job["done"] == 4 and job["total"] == 4
    for row in store.instances(study):
        assert store.artifact(row["sop_uid"], "lossless") is not None, row["sop_uid"]
    assert jobs.run_pending() == []


APP = """
import sys
from werkzeug.serving import make_server
from app import create_app
app = create_app(sys.argv[1], demo=False)
httpd = make_server("127.0.0.1", 0, app.server, threaded=True)
print(httpd.server_port, flush=True)
httpd.serve_forever()
"""


def test_a_second_app_process_takes_over_the_job_of_one_killed_mid_job(live_app, tmp_path, monkeypatch):
    """Two app processes on one archive: kill -9 the one running a job; its workers go, the other finishes the job once."""
    import requests

    from tests.conftest import ADMIN

    data = tmp_path / "shared"
    count = 16  # workers start in milliseconds: enough instances that the first app is still at it when killed
    monkeypatch.setenv("RADPRESS_ADMIN_USER", ADMIN[0])
    monkeypatch.setenv("RADPRESS_ADMIN_PASSWORD", ADMIN[1])
    monkeypatch.setenv("RADPRESS_WORKERS", "1")
    first = subprocess.Popen([sys.executable, "-c", APP, str(data)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                             start_new_session=True)
    try:
        base = f"http://127.0.0.1:{first.stdout.readline().strip()}"
        http = requests.Session()
        http.auth = ADMIN
        bundle = tmp_path / "series.zip"
        with zipfile.ZipFile(bundle, "w") as zf:  # one upload, one job
            for path in write_series("RG3_UNCR", count, tmp_path / "series"):
                zf.write(path, path.name)
        with open(bundle, "rb") as fh:
            assert http.post(f"{base}/api/upload", files={"file": (bundle.name, fh)}).status_code == 200
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(j["done"] >= 1 for j in http.get(f"{base}/api/jobs").json()):
            time.sleep(0.1)
        [job] = http.get(f"{base}/api/jobs").json()
        assert job["state"] == "running" and job["done"] < count, job
        second, app = live_app(data_dir=data)  # started while the first holds the job: it must not run it too
        time.sleep(0.5)
        assert Store(data).query("SELECT owner FROM jobs")[0]["owner"].split(":")[1] == str(first.pid)
        family = descendants(first.pid)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(pid) for pid in family):
            time.sleep(0.05)
        assert [pid for pid in family if alive(pid)] == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and http.get(f"{second}/api/jobs").json()[0]["state"] in ("queued", "running"):  # released, then claimed
        time.sleep(0.2)
    [job] = http.get(f"{second}/api/jobs").json()
    assert job["state"] == "done" and job["done"] == count and job["failed"] == 0 and job["total"] == count, (job["failed"], job["total"], job.get("errors"))
    store = app.server.extensions["radpress"]["store"]
    assert store.query("SELECT owner FROM jobs")[0]["owner"] == app.server.extensions["radpress"]["jobs"].owner
    for row in store.instances(job["study_uid"]):
        assert {a.variant for a in store.artifacts(row["sop_uid"])} == {"original", "lossless", "lossy", "thumbnail"}


def test_stopping_a_runner_mid_instance_waits_for_no_worker(tmp_path):
    """Shutting down kills the worker busy with a long instance (120 colour frames) and queues the job again
    (the next runner makes what is missing, as after a kill: test_killed_mid_job_resumes_after_restart)."""
    from core.samples import sample

    store = Store(tmp_path / "data")
    [result] = ingest(store, [sample("color3d_jpeg_baseline")])
    jobs = Jobs(store, workers=1)
    job_id = jobs.submit(result.study_uid)
    jobs.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not worker_pids():
        time.sleep(0.05)
    busy = worker_pids()
    assert busy
    started = time.monotonic()
    jobs.stop()
    assert time.monotonic() - started < 15  # the instance alone takes about a minute here
    assert not [pid for pid in busy if alive(pid)]
    assert jobs.get(job_id)["state"] == "queued"


def test_a_study_still_arriving_waits_for_its_copies(tmp_path):
    """With a settle time, a study that received an instance within it is not claimed; other studies are, and it
    is once quiet (the app's runner: RADPRESS_STUDY_SETTLE_S, 2 s by default)."""
    store = Store(tmp_path / "data")
    quiet = ingest_series(store, tmp_path / "a", "emri_small", 1)
    arriving = ingest_series(store, tmp_path / "b", "emri_small", 1)
    with store.connect() as db:  # the first study's instances arrived a minute ago
        db.execute("UPDATE instances SET created=created-60 WHERE series_uid IN (SELECT series_uid FROM series WHERE study_uid=?)",
                   (quiet,))
    jobs = Jobs(store, workers=1, settle=1.0)
    waiting, ready = jobs.submit(arriving), jobs.submit(quiet)
    assert jobs.claim()["id"] == ready  # the older job waits: its study is still arriving
    assert jobs.claim() is None
    time.sleep(1.1)
    assert jobs.claim()["id"] == waiting


def test_the_apps_runner_waits_two_seconds_for_a_study_to_settle(monkeypatch, tmp_path):
    from app import make_jobs

    monkeypatch.delenv("RADPRESS_STUDY_SETTLE_S")
    assert make_jobs(Store(tmp_path / "data")).settle == 2.0
