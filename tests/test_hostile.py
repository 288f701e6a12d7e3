"""Hostile DICOM, damaged and malicious archives, upload races and repair, against the real app over HTTP."""

import io
import os
import subprocess
import sys
import time
import zipfile

import pytest
import requests

from core.cli import main
from core.probe import OUTSIDE, hostile_cases, race_trial, try_hostile, zeros_tar_gz
from core.store import QUIET_SECONDS
from tests.conftest import ADMIN
from tests.synthetic import make_dataset, write


def session():
    http = requests.Session()
    http.auth = ADMIN
    return http


def upload(base, name, body):
    return session().post(f"{base}/api/upload", params={"name": name}, data=body,
                          headers={"Content-Type": "application/octet-stream"}, timeout=120)


def dicom_bytes(tmp_path, **changes):
    ds = make_dataset(rows=32, columns=32)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return write(ds, tmp_path / "f.dcm").read_bytes()


@pytest.fixture
def app_and_victim(live_app, tmp_path):
    base, app = live_app(run_jobs=False)
    store = app.server.extensions["radpress"]["store"]
    r = upload(base, "victim.dcm", dicom_bytes(tmp_path))
    assert r.status_code == 200
    return base, store, r.json()["results"][0]["sop_uid"]


@pytest.mark.parametrize("uid, words", [
    ("../{v2}/{victim}", "not a valid UID"),
    ("/tmp/radpress-probe-outside", "not a valid UID"),
    ("../../../../../../../../tmp/radpress-probe-outside", "not a valid UID"),
    ("1.2\x00.3", "not a valid UID"),
    ("1" + ".1" * 149, "at most 64"),
    ("1.02.3", "not a valid UID"),
])
def test_a_uid_is_never_a_path(app_and_victim, tmp_path, uid, words):
    base, store, victim = app_and_victim
    before = store.artifact(victim, "original").path.read_bytes()
    r = upload(base, "evil.dcm", dicom_bytes(tmp_path, SOPInstanceUID=uid.format(victim=victim, v2=victim[-2:])))
    assert r.status_code == 422
    [result] = r.json()["results"]
    assert result["status"] == "rejected" and "SOP Instance UID (0008,0018)" in result["reason"] and words in result["reason"]
    assert store.artifact(victim, "original").path.read_bytes() == before
    assert not OUTSIDE.exists() and not list((store.root / "tmp").iterdir())
    assert len(store.query("SELECT * FROM instances")) == 1


def test_every_hostile_input_is_refused_cleanly(app_and_victim):
    base, store, victim = app_and_victim
    report = try_hostile(session(), base, store.root, victim)
    assert report.failures == []
    assert report.tried == report.clean == len(hostile_cases(victim)) >= 40
    assert len(store.query("SELECT * FROM instances")) == 1


def test_a_bomb_upload_is_refused_within_seconds(app_and_victim):
    base, store, _ = app_and_victim
    started = time.monotonic()
    r = upload(base, "zeros.tar.gz", zeros_tar_gz(5 << 30))
    assert time.monotonic() - started < 10
    assert r.status_code == 422 and "decompression bomb" in r.json()["results"][-1]["reason"]
    assert not list((store.root / "tmp").iterdir())


def test_a_bad_member_never_stops_the_good_ones(app_and_victim, tmp_path):
    base, store, _ = app_and_victim
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("good.dcm", dicom_bytes(tmp_path))
        z.writestr("evil.dcm", dicom_bytes(tmp_path, SOPInstanceUID="../../x"))
        z.writestr("cut.dcm", dicom_bytes(tmp_path)[:1000])
        z.writestr("other.dcm", dicom_bytes(tmp_path))
    r = upload(base, "mixed.zip", buffer.getvalue())
    assert r.status_code == 200
    statuses = {x["name"].split("/")[-1]: x["status"] for x in r.json()["results"]}
    assert statuses == {"good.dcm": "stored", "evil.dcm": "rejected", "cut.dcm": "rejected", "other.dcm": "stored"}
    assert not list((store.root / "tmp").iterdir())


def test_eight_concurrent_uploads_of_one_uid(live_app):
    base, app = live_app()
    store = app.server.extensions["radpress"]["store"]
    for trial in range(3):
        assert race_trial(session, base, concurrency=8) is None, f"trial {trial + 1}"
    assert len(store.query("SELECT * FROM conflicts")) == 3 * 7 and not list((store.root / "tmp").iterdir())


def test_start_up_repair_spares_another_process_in_flight_files(live_app, tmp_path):
    data = tmp_path / "shared"
    live_app(data_dir=data, run_jobs=False)
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        old = time.time() - QUIET_SECONDS - 60
        in_flight = [data / "tmp" / f"{time.time_ns()}-{writer.pid}-7.dcm-upload",
                     data / "artifacts" / "ab" / "cd" / f".lossless.j2k.dcm.{writer.pid}-abc123.part"]
        for path in in_flight:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"being written")
            os.utime(path, (old, old))
        base, _ = live_app(data_dir=data, run_jobs=False)  # a second process starting on the same archive
        assert session().get(f"{base}/api/health").status_code == 200
        assert all(p.read_bytes() == b"being written" for p in in_flight)
    finally:
        writer.kill()
        writer.wait()


def test_cli_ingest_refuses_a_hostile_uid_with_exit_2(tmp_path, capsys):
    path = tmp_path / "evil.dcm"
    path.write_bytes(dicom_bytes(tmp_path, SOPInstanceUID="../../../etc/x"))
    good = tmp_path / "good.dcm"
    good.write_bytes(dicom_bytes(tmp_path))
    assert main(["ingest", str(path), str(good), "--data", str(tmp_path / "data"), "--no-jobs"]) == 2
    err = capsys.readouterr().err
    assert "rejected" in err and "not a valid UID" in err
    originals = list((tmp_path / "data" / "originals").rglob("*.dcm"))
    assert len(originals) == 1 and originals[0].read_bytes() == good.read_bytes()

