"""The Jobs page's data: paged in SQL, newest first, the study's patient and description, only studies the user may open."""

import os
import signal
import time

from core.ingest import ingest
from core.joblist import job_page
from core.jobs import Jobs
from core.store import Store
from core.users import User, Users, set_readers
from tests.synthetic import make_dataset, write
from tests.test_job_engine import redis_url  # noqa: F401  (fixture: a real redis-server)


def _study(store, tmp_path, name: str, description: str, seed: int) -> str:
    ds = make_dataset(rows=16, columns=16, modality="CR", seed=seed)
    ds.PatientName, ds.StudyDescription, ds.StudyDate = name, description, "20240131"
    [result] = ingest(store, [write(ds, tmp_path / f"{seed}.dcm")])
    return result.study_uid


def _finished_jobs(store, study: str, count: int) -> list[int]:
    """Job history rows as the runner leaves them: 10 instances, 4 MB, in 2 s."""
    with store.connect() as db:
        return [db.execute("INSERT INTO jobs (kind, study_uid, state, total, done, failed, bytes, params, created, started, finished) "
                           "VALUES ('materialize', ?, 'done', 10, 9, 1, 4000000, '{}', ?, ?, ?)",
                           (study, time.time(), 100.0, 102.0)).lastrowid for _ in range(count)]


def test_pages_hold_50_newest_first_with_patient_and_description(tmp_path):
    store = Store(tmp_path / "data")
    jane = _study(store, tmp_path, "Doe^Jane", "CHEST PA", 1)
    ids = _finished_jobs(store, jane, 120)
    jobs = Jobs(store)
    admin = User("admin", "admin")
    first = job_page(jobs, admin, 1)
    assert (first.page, first.pages, first.total) == (1, 3, 120)
    assert [j["id"] for j in first.jobs] == ids[::-1][:50]
    job = first.jobs[0]
    assert (job["patient_name"], job["study_description"], job["study_date"], job["study_indexed"]) == ("Doe^Jane", "CHEST PA", "20240131", 1)
    assert job["duration_s"] == 2.0 and job["instances_per_s"] == 5.0 and job["mb_per_s"] == 2.0
    last = job_page(jobs, admin, 3)
    assert [j["id"] for j in last.jobs] == ids[::-1][100:]
    assert job_page(jobs, admin, 99).page == 3 and job_page(jobs, admin, -4).page == 1 and job_page(jobs, admin, "2").page == 1


def test_a_reader_pages_through_the_jobs_of_studies_they_may_open_only(tmp_path):
    store = Store(tmp_path / "data")
    open_study = _study(store, tmp_path, "Open^Olga", "", 2)
    closed = _study(store, tmp_path, "Closed^Carl", "", 3)
    Users(store).add("rita", "a-long-password-1", "radiologist")
    Users(store).add("other", "a-long-password-2", "radiologist")
    set_readers(store, closed, ["other"], "admin")
    mine = _finished_jobs(store, open_study, 3)
    _finished_jobs(store, closed, 60)
    shown = job_page(Jobs(store), User("rita", "radiologist"), 1)
    assert (shown.total, shown.pages) == (3, 1) and [j["id"] for j in shown.jobs] == mine[::-1]
    assert job_page(Jobs(store), User("other", "radiologist"), 2).total == 63


def test_a_job_of_a_study_no_longer_indexed_is_still_listed(tmp_path):
    store = Store(tmp_path / "data")
    _finished_jobs(store, "1.2.3.4", 1)
    [job] = job_page(Jobs(store), User("admin", "admin")).jobs
    assert job["study_uid"] == "1.2.3.4" and not job["study_indexed"] and job["patient_name"] is None


def test_a_demo_login_pages_through_the_sample_studies_jobs_only(tmp_path):
    store = Store(tmp_path / "data")
    sample = _study(store, tmp_path, "Sample^Sam", "", 4)
    clinic = _study(store, tmp_path, "Clinic^Clara", "", 5)
    with store.connect() as db:
        db.execute("INSERT INTO demo_instances (sop_uid) VALUES (?)", (store.instances(sample)[0]["sop_uid"],))
    mine = _finished_jobs(store, sample, 2)
    _finished_jobs(store, clinic, 2)
    _finished_jobs(store, "1.2.3.4", 1)  # a deleted study's job: an administrator's only
    shown = job_page(Jobs(store), User("demo", "demo"))
    assert shown.total == 2 and [j["id"] for j in shown.jobs] == mine[::-1]
    assert job_page(Jobs(store), User("rita", "radiologist")).total == 4
    assert job_page(Jobs(store), User("admin", "admin")).total == 5


def _waiting_job(store, study: str, waited: float) -> int:
    with store.connect() as db:
        return db.execute("INSERT INTO jobs (kind, study_uid, state, params, created) VALUES ('materialize', ?, 'queued', '{}', ?)",
                          (study, time.time() - waited)).lastrowid


def test_no_celery_worker_is_said_plainly_once_jobs_wait(tmp_path, redis_url, live_app, monkeypatch):
    """A real redis-server: jobs waiting a minute and no worker answers -> the message, on the Jobs page and in
    /api/health (a warning: the web process still serves, 200); a worker started -> no message."""
    import requests

    import core.engine
    from core.joblist import missing_worker
    from tests.conftest import ADMIN
    from tests.test_job_engine import start_worker

    store = Store(tmp_path / "data")
    study = _study(store, tmp_path, "Wait^Walter", "", 5)
    monkeypatch.delenv("REDIS_URL", raising=False)
    _waiting_job(store, study, 60)
    assert missing_worker(store) is None  # no broker: the jobs run in this host's processes
    assert missing_worker(store, redis_url, grace=120) is None  # not waited long enough (the broker is not asked)
    said = missing_worker(store, redis_url)
    assert said.startswith("No job worker is running: start one with `make worker`.") and "1 job waiting, the oldest for 1 min 0" in said

    monkeypatch.setenv("REDIS_URL", redis_url)
    base, app = live_app(demo=False)
    served = app.server.extensions["radpress"]["store"]
    _waiting_job(served, _study(served, tmp_path, "Wait^Wilma", "", 6), 90)
    health = requests.get(f"{base}/api/health", timeout=30)
    assert health.status_code == 200 and health.json()["warnings"] == ["No job worker is running: start one with `make worker`."]
    from pages.jobs import worker_warning

    with app.server.app_context():
        alert = worker_warning(1)
    assert alert.id == "jobs-no-worker" and alert.children.children.startswith("No job worker is running: start one with `make worker`")

    worker = start_worker("w1", redis_url, served.root)
    try:
        deadline = time.monotonic() + 60
        while not celery_app_pings(redis_url):
            assert time.monotonic() < deadline, "the Celery worker did not start"
        while True:  # the other archive's job still waits, but a worker answers (within the ping's second, when loaded)
            monkeypatch.setattr(core.engine, "_pinged", {})  # asked again now, not after PING_EVERY_S
            if missing_worker(store, redis_url) is None:
                break
            assert time.monotonic() < deadline, "a running worker was reported missing"
        saved = requests.put(f"{base}/api/policy", json={"strategies": {"CR": 4}}, auth=ADMIN, timeout=30).json()
        while (job := requests.get(f"{base}{saved['progress']}", auth=ADMIN, timeout=30).json())["state"] != "done":
            assert time.monotonic() < deadline and job["state"] in ("queued", "running"), job
            time.sleep(0.1)
        assert "1 study gets new copies" in job["message"]  # the policy's comparison, as a Celery task of that worker
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def celery_app_pings(url: str) -> bool:
    from core.engine import celery_app

    return bool(celery_app(url).control.ping(timeout=0.5))


def test_a_saved_policys_job_is_listed_for_administrators_only(tmp_path):
    """The comparison a saved policy starts is about every study: an administrator's page lists it (no study to link),
    a radiologist's does not."""
    from components.job_progress import make_job_table
    from core.jobs import submit_archive_job

    store = Store(tmp_path / "data")
    study = _study(store, tmp_path, "Open^Olga", "", 7)
    Users(store).add("rita", "a-long-password-1", "radiologist")
    jobs = Jobs(store)
    policy_job = submit_archive_job(jobs, "policy", {"user": "admin"})
    assert submit_archive_job(jobs, "policy") == policy_job  # joined while it is queued
    _finished_jobs(store, study, 1)
    shown = job_page(jobs, User("admin", "admin"))
    assert shown.total == 2 and shown.jobs[1]["id"] == policy_job and shown.jobs[1]["study_uid"] is None
    assert "All studies (policy saved)" in str(make_job_table(shown.jobs, True))
    assert [j["study_uid"] for j in job_page(jobs, User("rita", "radiologist")).jobs] == [study]
