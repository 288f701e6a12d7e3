"""Quality-lab sweeps as jobs: single flight, caps, cancel, the same result as the lab itself, never inside a request."""

import statistics
import threading
import time

import pytest
import requests

from core import labjobs, users
from core.errors import InvalidOptionError
from core.ingest import ingest
from core.jobs import Jobs
from core.lab import LabConfig, run_lab
from core.labjobs import LabNotReady, TooManySweeps, cancel_lab, lab_result, lab_state, start_lab
from core.pixels import read_dataset
from core.policy import lossy_setting
from core.store import Store
from core.users import User, Users
from tests.conftest import ADMIN
from tests.synthetic import KINDS, make_dataset, write

ADMIN_USER = User("admin", "admin")
RAD = User("rad", "radiologist")
SMALL = LabConfig(codecs=("j2k", "htj2k"), ratios=(5, 10))


@pytest.fixture
def study(tmp_path):
    store = Store(tmp_path / "data")
    stack = [write(make_dataset(**KINDS["s12"], study_uid="1.2.826.0.1.3680043.8.498.77", seed=i), tmp_path / f"{i}.dcm")
             for i in range(2)]
    results = list(ingest(store, stack))
    return store, Jobs(store, workers=1), results[0].study_uid


def _metrics(result):
    """Everything a sweep measures except wall-clock times."""
    return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in result["sweep"]]


def test_a_sweep_runs_as_a_job_and_equals_the_direct_lab_result(study):
    store, jobs, uid = study
    state = start_lab(store, jobs, RAD, uid, SMALL)
    assert state.state == "queued" and state.job["kind"] == "lab"
    with pytest.raises(LabNotReady) as refused:
        lab_result(store, jobs, RAD, uid, SMALL)
    assert refused.value.http_status == 409 and "queued" in str(refused.value)
    [finished] = jobs.run_pending()
    assert finished["state"] == "done" and finished["done"] == finished["total"] == 16, finished  # 2 codecs x (lossless, 5, 8, 10) x 2
    result = lab_result(store, jobs, RAD, uid, SMALL)
    rows = store.instances(uid)
    setting = lossy_setting(store.policy(), rows[0])
    direct = run_lab([read_dataset(store.artifact(r["sop_uid"], "original").path) for r in rows], SMALL,
                     current_ratio=setting.ratio, current_codec=setting.codec)
    assert _metrics(result) == _metrics(direct)
    assert result["recommendation"] == direct["recommendation"] and result["study_uid"] == uid
    again = start_lab(store, jobs, RAD, uid, SMALL)
    assert again.state == "done" and again.result == result  # cached: no second job
    assert len(store.query("SELECT id FROM jobs WHERE kind='lab'")) == 1


def test_concurrent_requests_start_one_sweep(study):
    store, jobs, uid = study
    ids, barrier = [], threading.Barrier(8)

    def ask(user):
        barrier.wait()
        ids.append(start_lab(store, jobs, user, uid, SMALL).job["id"])

    threads = [threading.Thread(target=ask, args=(RAD if i % 2 else ADMIN_USER,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 8 and len(set(ids)) == 1
    assert len(store.query("SELECT id FROM jobs WHERE kind='lab'")) == 1
    other = start_lab(store, jobs, RAD, uid, LabConfig(codecs=("j2k",), ratios=(8,)))
    assert other.job["id"] != ids[0]  # other settings, another sweep


def test_a_sweep_too_large_for_the_role_is_refused_before_any_work(study, monkeypatch):
    store, jobs, uid = study
    monkeypatch.setitem(users.LAB_MAX_ENCODINGS, "radiologist", 20)
    with pytest.raises(InvalidOptionError) as refused:
        start_lab(store, jobs, RAD, uid, LabConfig(codecs=("j2k", "htj2k", "jxl"), ratios=(5, 10)))
    assert refused.value.http_status == 400
    assert "24 encodings (3 codec(s) x 4 settings x 2 frame(s)); a radiologist may run at most 20" in str(refused.value)
    assert start_lab(store, jobs, ADMIN_USER, uid, LabConfig(codecs=("j2k", "htj2k", "jxl"), ratios=(5, 10))).state == "queued"
    assert not store.query("SELECT id FROM jobs WHERE kind='lab' AND json_extract(params, '$.user')='rad'")


def test_a_user_has_at_most_two_sweeps_queued_or_running(study):
    store, jobs, uid = study
    first = start_lab(store, jobs, RAD, uid, LabConfig(codecs=("j2k",), ratios=(5,)))
    start_lab(store, jobs, RAD, uid, LabConfig(codecs=("j2k",), ratios=(6,)))
    assert start_lab(store, jobs, RAD, uid, LabConfig(codecs=("j2k",), ratios=(5,))).job["id"] == first.job["id"]  # joining is free
    with pytest.raises(TooManySweeps) as refused:
        start_lab(store, jobs, RAD, uid, LabConfig(codecs=("j2k",), ratios=(7,)))
    assert refused.value.http_status == 429 and "at most 2" in str(refused.value)
    assert start_lab(store, jobs, ADMIN_USER, uid, LabConfig(codecs=("j2k",), ratios=(7,))).state == "queued"  # per user


def test_cancel_by_its_user_or_an_administrator_and_run_again_only_when_asked(study):
    store, jobs, uid = study
    start_lab(store, jobs, RAD, uid, SMALL)
    assert cancel_lab(store, jobs, User("bob", "radiologist"), uid, SMALL).state == "queued"  # not bob's
    assert cancel_lab(store, jobs, RAD, uid, SMALL).state == "cancelled"
    assert start_lab(store, jobs, RAD, uid, SMALL).state == "cancelled"  # a GET does not restart it
    assert lab_state(store, jobs, RAD, uid, SMALL).job["message"] == "cancelled before it started"
    restarted = start_lab(store, jobs, RAD, uid, SMALL, again=True)
    assert restarted.state == "queued"
    assert cancel_lab(store, jobs, ADMIN_USER, uid, SMALL).state == "cancelled"


def test_a_running_sweep_stops_when_cancelled(study):
    store, jobs, uid = study
    config = LabConfig(codecs=("j2k", "htj2k"), ratios=tuple(range(5, 40)))
    job_id = start_lab(store, jobs, RAD, uid, config).job["id"]
    threading.Thread(target=jobs.run_pending, daemon=True).start()
    deadline = time.monotonic() + 60
    while jobs.get(job_id)["done"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jobs.get(job_id)["state"] == "running"
    cancel_lab(store, jobs, RAD, uid, config)
    while jobs.get(job_id)["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    job = jobs.get(job_id)
    assert job["state"] == "cancelled" and job["done"] < job["total"], job
    assert lab_state(store, jobs, RAD, uid, config).result is None


def test_over_http_the_api_answers_at_once_while_a_sweep_runs(live_app, monkeypatch):
    """A 512x512 CT sweep of 60+ encodings runs in the lab's worker; the lab, job and study routes answer meanwhile."""
    base, _app = live_app(demo=False)
    admin = requests.Session()
    admin.auth = ADMIN
    ct = make_dataset(rows=512, columns=512, bits_stored=12, signed=True, modality="CT")
    import io

    buffer = io.BytesIO()
    ct.save_as(buffer, enforce_file_format=True)
    study = admin.post(f"{base}/api/upload", files={"file": ("ct.dcm", buffer.getvalue())}).json()["studies"][0]
    url = f"{base}/api/studies/{study}/lab"
    params = {"codecs": "j2k,htj2k", "ratios": ",".join(str(r) for r in range(5, 35))}
    answers = []
    barrier = threading.Barrier(2)

    def start():
        barrier.wait()
        answers.append(admin.post(url, params=params))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
    assert answers[0].json()["job"] == answers[1].json()["job"]  # two requests, one sweep
    job = answers[0].json()["job"]
    assert answers[0].headers["Location"] == f"/api/jobs/{job}"
    timings, states = [], []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        for path, query in ((url, params), (f"{base}/api/jobs/{job}", None), (f"{base}/api/studies/{study}", None)):
            started = time.perf_counter()
            r = admin.get(path, params=query)
            timings.append(time.perf_counter() - started)
            assert r.status_code in (200, 202), r.text
        states.append(admin.get(f"{base}/api/jobs/{job}").json()["state"])
        if states[-1] not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert states[-1] == "done" and "running" in states, states
    print(f"lab API while a sweep runs: {len(timings)} requests, median {statistics.median(timings) * 1000:.0f} ms, "
          f"max {max(timings) * 1000:.0f} ms")
    assert statistics.median(timings) < 0.2 and max(timings) < 1.5
    r = admin.get(url, params=params)
    assert r.status_code == 200 and r.json()["study_uid"] == study
    assert {row["target_ratio"] for row in r.json()["sweep"]} >= set(range(5, 35))
    assert len([j for j in admin.get(f"{base}/api/jobs").json() if j["kind"] == "lab"]) == 1
    Users(_app.server.extensions["radpress"]["store"]).add("rad", "radiologist-pw", "radiologist")
    rad = requests.Session()
    rad.auth = ("rad", "radiologist-pw")
    other = {"codecs": "j2k,htj2k", "ratios": ",".join(str(r) for r in range(36, 66))}
    job = admin.post(url, params=other).json()["job"]
    cancelled = admin.delete(url, params=other)
    assert cancelled.status_code == 200 and cancelled.json()["job"] == job
    while admin.get(f"{base}/api/jobs/{job}").json()["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped = admin.get(url, params=other)
    assert stopped.status_code == 409 and "cancelled" in stopped.json()["error"] and "POST" in stopped.json()["hint"]
    assert admin.post(url, params=other).status_code == 202  # POST runs it again
    admin.delete(url, params=other)
    monkeypatch.setitem(users.LAB_MAX_ENCODINGS, "radiologist", 40)
    too_big = rad.get(url, params={"codecs": "j2k,htj2k,jxl", "ratios": "5,6,7,8,9,10,11,12,13,14,15,16"})
    assert too_big.status_code == 400 and "42 encodings" in too_big.json()["error"], too_big.text
    assert "a radiologist may run at most 40" in too_big.json()["error"]


def test_a_sweep_has_a_runner_of_its_own_and_never_holds_up_a_studys_copies(study):
    store, jobs, uid = study
    lab = start_lab(store, jobs, RAD, uid, LabConfig(codecs=("j2k", "htj2k"), ratios=tuple(range(5, 60)))).job["id"]
    copies = jobs.submit(uid)  # asked for after the sweep, on the same study
    jobs.start()
    try:
        deadline = time.monotonic() + 120
        while jobs.get(lab)["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        jobs.stop()
    lab_job, copies_job = jobs.get(lab), jobs.get(copies)
    assert lab_job["state"] == "done" and copies_job["state"] == "done", (lab_job, copies_job)
    assert copies_job["finished"] < lab_job["finished"]
