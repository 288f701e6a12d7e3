import os
import signal
import subprocess
import sys
import time

import pytest

from core.ingest import ingest
from core.jobs import Jobs
from core.pixels import read_dataset
from core.samples import write_series
from core.store import Store


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
    """SIGKILL the ingest while its job runs; a restart repairs the store and finishes the job."""
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
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
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
