"""Deleting studies and series, and resolving conflicts: every file and row goes, only administrators, audited."""

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from core.archive import codestream_path, make_artifact, plan, thumbnail_bytes, variant_file, _cache
from core.errors import InvalidOptionError, UnsupportedError
from core.housekeeping import conflict_detail, conflict_preview, conflicts, delete_series, delete_study, resolve_conflict
from core.ingest import ingest
from core.jobs import Jobs, _make_for_instance
from core.store import Store, StoreError, sha256_file, uid_key
from core.workers import WorkerPool
from core.users import AccessDenied, LoginRequired, User, Users, mark_demo
from tests.conftest import ADMIN
from tests.synthetic import make_dataset, write

ROOT = User("boss", "admin")
RAD = User("rad", "radiologist")
DEMO = User("demo", "demo")


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "data")


def _files(store: Store) -> list[Path]:
    """Every file the archive holds outside the index, locks and caches."""
    return sorted(p for sub in ("originals", "artifacts", "conflicts", "tmp") for p in (store.root / sub).rglob("*") if p.is_file())


def _disk(store: Store) -> int:
    """Bytes in files, but SQLite databases (the index, the cache's own index: pages are reused, not returned)."""
    return sum(p.stat().st_size for p in store.root.rglob("*") if p.is_file() and ".sqlite" not in p.name
               and not p.name.startswith("cache.db") and "locks" not in p.parts)


def _study(store: Store, tmp_path: Path, series: int = 2, per_series: int = 2, kind: dict | None = None, strategy: int = 1):
    """A study with copies (strategy 1), cached renderings and a codestream: everything a delete must remove."""
    study_uid = make_dataset(rows=8, columns=8).StudyInstanceUID
    kind = kind or dict(rows=40, columns=36, bits_stored=12, modality="MR")
    paths = []
    for s in range(series):
        series_uid = make_dataset(rows=8, columns=8).SeriesInstanceUID
        for n in range(per_series):
            ds = make_dataset(**kind, study_uid=study_uid, series_uid=series_uid, seed=10 * s + n)
            ds.SeriesNumber, ds.InstanceNumber = s + 1, n + 1
            paths.append(write(ds, tmp_path / "in" / f"{s}-{n}.dcm"))
    assert all(r.status == "stored" for r in ingest(store, paths))
    store.set_study_strategy(study_uid, strategy)
    for wanted in plan(store, study_uid).make:
        make_artifact(store, wanted)
    for row in store.instances(study_uid):
        variant_file(store, row["sop_uid"], "lossy", 12).close()  # an on-demand copy in the cache
        codestream_path(store, row["sop_uid"], 0, "lossless")
        thumbnail_bytes(store, row["sop_uid"])
    return study_uid


def _cache_keys_of(store: Store, checksums: set[str]) -> list[str]:
    return [k for k in _cache(store).iterkeys() if isinstance(k, str) and any(c in k for c in checksums)]


def test_delete_study_removes_every_file_and_row_and_frees_the_space(store, tmp_path):
    keep = _study(store, tmp_path / "keep", series=1, per_series=1)
    uid = _study(store, tmp_path / "gone")
    sops = [r["sop_uid"] for r in store.instances(uid)]
    checksums = {store.artifact(s, "original").checksum for s in sops}
    mark_demo(store, sops[:1])
    Jobs(store).submit(uid)
    assert {a.variant for a in store.artifacts(study_uid=uid)} >= {"original", "lossless", "lossy", "thumbnail"}
    assert _cache_keys_of(store, checksums) and list((store.root / "cache" / "codestreams").glob(f"{min(checksums)}-*"))
    before_files, before_disk = _files(store), _disk(store)

    result = delete_study(store, ROOT, uid)

    assert (result.instances, result.study_removed, len(result.series_uids)) == (4, True, 2)
    assert result.files == 16  # 4 originals + lossless, lossy and thumbnail copies of each
    freed = before_disk - _disk(store)
    assert freed > 0 and abs(result.bytes_freed - freed) <= 0.1 * freed  # what it says it freed was freed
    left = _files(store)
    assert len(before_files) - len(left) == 16 and not any(uid_key(s) in str(p) for p in left for s in sops)
    assert not _cache_keys_of(store, checksums)
    assert not any(p.name.startswith(tuple(checksums)) for p in (store.root / "cache" / "codestreams").iterdir())
    marks = ",".join("?" * len(sops))
    for table in ("instances", "artifacts", "demo_instances", "conflicts"):
        assert not store.query(f"SELECT 1 FROM {table} WHERE sop_uid IN ({marks})", sops), table
    assert not store.query("SELECT 1 FROM series WHERE study_uid=?", (uid,))
    assert not store.query("SELECT 1 FROM jobs WHERE study_uid=?", (uid,))
    with pytest.raises(StoreError):
        store.study(uid)
    audit = store.query("SELECT * FROM audit WHERE what=?", (f"delete study {uid}",))
    assert len(audit) == 1 and audit[0]["user"] == "boss" and json.loads(audit[0]["new"])["bytes_freed"] > 0
    # the other study is untouched and the archive is consistent
    assert len(store.artifacts(study_uid=keep)) == 4 and all(a.path.exists() for a in store.artifacts(study_uid=keep))
    report = store.check(verify=True)
    assert not any(report[k] for k in ("missing_files", "missing_originals", "replaced_originals", "reindexed_originals"))


def test_delete_a_study_of_lossless_masters(store, tmp_path):
    """Strategy 5 replaced each original by its checked lossless master: deleting still leaves nothing behind."""
    uid = _study(store, tmp_path, series=1, per_series=2, strategy=5)
    assert store.query("SELECT count(*) AS n FROM masters WHERE state='master'")[0]["n"] == 2
    result = delete_study(store, ROOT, uid)
    assert result.instances == 2 and not _files(store) and not store.query("SELECT 1 FROM masters")
    assert not [p for p in (store.root / "cache" / "codestreams").iterdir()]


def test_delete_series_keeps_the_rest_and_the_last_series_takes_the_study(store, tmp_path):
    uid = _study(store, tmp_path, series=2, per_series=1)
    first, second = [r["series_uid"] for r in store.query("SELECT series_uid FROM series WHERE study_uid=? ORDER BY number", (uid,))]
    mark_demo(store, [r["sop_uid"] for r in store.instances(uid) if r["series_uid"] == first])  # a sample beside a clinic series
    with store.connect() as db:
        db.execute("UPDATE studies SET demo=1 WHERE study_uid=?", (uid,))
    result = delete_series(store, ROOT, uid, first)
    assert (result.instances, result.study_removed, result.series_uids) == (1, False, (first,))
    assert store.study(uid)["demo"] == 0  # no sample left: a start-up never marks the clinic series as demo
    assert [r["series_uid"] for r in store.instances(uid)] == [second]
    assert all(a.path.exists() for a in store.artifacts(study_uid=uid))
    result = delete_series(store, ROOT, uid, second)
    assert result.study_removed and not store.query("SELECT 1 FROM studies WHERE study_uid=?", (uid,))
    assert not _files(store)


@pytest.mark.parametrize("user, error", [(RAD, AccessDenied), (DEMO, AccessDenied), (None, LoginRequired)])
def test_only_an_administrator_may_delete_or_resolve(store, tmp_path, user, error):
    uid = _study(store, tmp_path, series=1, per_series=1, strategy=4)
    series = store.instances(uid)[0]["series_uid"]
    before = _files(store)
    for call in (lambda: delete_study(store, user, uid), lambda: delete_series(store, user, uid, series),
                 lambda: conflicts(store, user)):
        with pytest.raises(error) as caught:
            call()
        assert caught.value.http_status == (403 if user else 401)
    assert _files(store) == before and store.study(uid)


@pytest.mark.parametrize("uid", ["../../etc/passwd", "1.2.3' OR 1=1 --", "", "1.2." + "3" * 70, "1..2", "1.2.3\x00", "１.２"])
def test_hostile_uids_are_refused_before_the_index(store, tmp_path, uid):
    keep = _study(store, tmp_path, series=1, per_series=1, strategy=4)
    with pytest.raises(InvalidOptionError) as caught:
        delete_study(store, ROOT, uid)
    assert caught.value.http_status == 400 and "UID" in str(caught.value)
    with pytest.raises(InvalidOptionError):
        delete_series(store, ROOT, keep, uid)
    assert store.instances(keep) and len(_files(store)) == 1


def test_unknown_or_foreign_uids_are_404(store, tmp_path):
    one = _study(store, tmp_path / "a", series=1, per_series=1, strategy=4)
    two = _study(store, tmp_path / "b", series=1, per_series=1, strategy=4)
    with pytest.raises(StoreError) as caught:
        delete_study(store, ROOT, "1.2.3.4.5")
    assert caught.value.http_status == 404
    with pytest.raises(StoreError):  # a series of another study is not deleted through this one
        delete_series(store, ROOT, one, store.instances(two)[0]["series_uid"])
    assert len(_files(store)) == 2


def test_a_running_job_is_cancelled_and_its_late_copies_are_refused(store, tmp_path):
    uid = _study(store, tmp_path, series=1, per_series=2, strategy=4)
    store.set_study_strategy(uid, 1)
    jobs = Jobs(store)
    job_id = jobs.submit(uid)
    assert jobs.claim()["id"] == job_id  # a runner is working on it
    todo = plan(store, uid).make
    result = delete_study(store, ROOT, uid)
    assert result.jobs_cancelled == (job_id,) and jobs.get(job_id)["cancel"] == 1
    # a worker that was still encoding writes its copy now: refused, and nothing is left behind
    written, error, _rss, _warning = _make_for_instance(str(store.root), list(todo[:2]))
    assert written == 0 and ("deleted" in error or "No instance" in error)
    with pytest.raises(StoreError, match="deleted"):
        store.put_artifact(todo[0].sop_uid, "thumbnail", 0, "png", "", b"late")
    assert not _files(store) and not store.query("SELECT 1 FROM artifacts")
    with WorkerPool(1) as pool:  # the runner that holds the job ends it as cancelled, without re-creating anything
        assert jobs._run(jobs.get(job_id), pool, None)["state"] == "cancelled"
    assert not _files(store)


def _delete_then_die(root, uid):
    """A server killed right after the delete committed, before its thread unlinked the renamed files."""
    import os

    threading.Thread.start = lambda self: None  # (this forked child only) the reclaiming thread never runs
    delete_study(Store(root), ROOT, uid, background=True)
    os._exit(0)


def test_a_crash_after_the_delete_never_brings_the_study_back(store, tmp_path):
    import multiprocessing

    uid = _study(store, tmp_path, series=1, per_series=3, strategy=1)
    child = multiprocessing.get_context("fork").Process(target=_delete_then_die, args=(str(store.root), uid))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and not store.query("SELECT 1 FROM instances")
    report = store.check()  # the next start: renamed files of a dead process are removed, never indexed again
    assert len(report["orphan_files"]) == 15  # 3 originals, 9 copies and 3 codestreams, renamed away by the delete
    assert not report["reindexed_originals"] and not report["missing_originals"] and not _files(store)
    assert not store.query("SELECT 1 FROM studies")


def test_a_delete_during_an_upload_leaves_no_half_state(store, tmp_path):
    uid = make_dataset(rows=8, columns=8).StudyInstanceUID
    paths = [write(make_dataset(rows=32, columns=32, study_uid=uid, seed=n), tmp_path / f"{n}.dcm") for n in range(40)]
    done = threading.Event()
    results = []

    def upload():
        results.extend(ingest(store, paths))
        done.set()

    threading.Thread(target=upload).start()
    deletes = 0
    while not done.is_set():
        try:
            delete_study(store, ROOT, uid)
            deletes += 1
        except StoreError:
            pass  # not stored yet, or just deleted
    assert deletes and all(r.status == "stored" for r in results)
    rows = {r["sop_uid"] for r in store.query("SELECT sop_uid FROM instances")}
    originals = {a.sop_uid: a.path for a in store.artifacts() if a.variant == "original"}
    assert set(originals) == rows and all(p.exists() for p in originals.values())
    assert len(_files(store)) == len(rows)  # no file without its row, none staged and left
    report = store.check(verify=True)
    assert not any(report[k] for k in ("missing_originals", "replaced_originals", "reindexed_originals", "orphan_files"))


def _conflicting(store, tmp_path, **change):
    """A stored instance and a second file with its SOP Instance UID and other content (stored as a conflict)."""
    ds = make_dataset(rows=30, columns=28, bits_stored=12, modality="CR")
    first, study_uid = write(ds, tmp_path / "first.dcm"), ds.StudyInstanceUID
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    if "PixelData" not in change:
        pixels = bytearray(ds.PixelData)
        pixels[100:104] = b"\x07\x00\x09\x00"
        ds.PixelData = bytes(pixels)
    second = write(ds, tmp_path / "second.dcm")
    assert [r.status for r in ingest(store, [first, second])] == ["stored", "conflict"]
    store.set_study_strategy(study_uid, 1)
    for wanted in plan(store, study_uid).make:
        make_artifact(store, wanted)
    return ds, sha256_file(first), sha256_file(second)


def test_a_conflict_says_what_differs(store, tmp_path):
    ds, _, other = _conflicting(store, tmp_path, PatientName="Other^Name", StudyDescription="Re-sent")
    [listed] = conflicts(store, ROOT)
    assert listed["sop_uid"] == ds.SOPInstanceUID and listed["checksum"] == other and listed["source"].endswith("second.dcm")
    assert conflicts(store, ROOT, listed["study_uid"]) == [listed]  # one study's only
    assert conflicts(store, ROOT, _study(store, tmp_path / "quiet", series=1, per_series=1, strategy=4)) == []
    with pytest.raises(InvalidOptionError):
        conflicts(store, ROOT, "1.2.3/../4")
    with pytest.raises(StoreError):
        conflicts(store, ROOT, "1.2.3.4")
    assert "pixels differ: 2 of 840 values, by up to" in listed["reason"] and "PatientName" in listed["reason"]
    assert "StudyDescription" in listed["reason"]
    detail = conflict_detail(store, ROOT, ds.SOPInstanceUID, other)
    names = {a["keyword"]: a for a in detail["attributes"]}
    assert names["PatientName"]["stored"] == "Synthetic^Kind" and names["PatientName"]["other"] == "Other^Name"
    assert detail["pixels"]["changed"] == 2
    assert (detail["stored"]["bytes"], detail["other"]["bytes"]) == tuple(p.stat().st_size for p in (
        tmp_path / "first.dcm", tmp_path / "second.dcm")) and f"{detail['sizes'][0]:,} vs" in listed["reason"]
    # both previews in the stored original's window: the pictures differ exactly where the values do
    stored_png, other_png = (np.asarray(Image.open(io.BytesIO(conflict_preview(store, ROOT, ds.SOPInstanceUID, w))))
                             for w in ("stored", other))
    assert stored_png.shape == other_png.shape == (30, 28) and 1 <= np.count_nonzero(stored_png != other_png) <= 2
    with pytest.raises(AccessDenied):
        conflict_preview(store, RAD, ds.SOPInstanceUID, "stored")
    with pytest.raises(InvalidOptionError):
        conflict_detail(store, ROOT, ds.SOPInstanceUID, "../" + other[3:])
    with pytest.raises(StoreError):
        conflict_detail(store, ROOT, ds.SOPInstanceUID, "0" * 64)


def test_a_conflict_without_pixels_has_no_preview(store, tmp_path):
    ds = make_dataset(rows=20, columns=20, modality="CR")
    first = write(ds, tmp_path / "image.dcm")
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                    "SamplesPerPixel", "PhotometricInterpretation", "PixelSpacing"):
        delattr(ds, keyword)
    second = write(ds, tmp_path / "no-pixels.dcm")
    assert [r.status for r in ingest(store, [first, second])] == ["stored", "conflict"]
    [listed] = conflicts(store, ROOT)
    detail = conflict_detail(store, ROOT, ds.SOPInstanceUID, listed["checksum"])
    assert detail["previews"] is False and detail["pixels"]["summary"] == "only one of them has pixel data"
    with pytest.raises(UnsupportedError) as refused:
        conflict_preview(store, ROOT, ds.SOPInstanceUID, listed["checksum"])
    assert refused.value.http_status == 415


def test_a_long_list_compares_a_few_conflicts_per_request(store, tmp_path, monkeypatch):
    import core.housekeeping

    monkeypatch.setattr(core.housekeeping, "REASONS_PER_LIST", 1)
    _conflicting(store, tmp_path / "a")
    _conflicting(store, tmp_path / "b")
    first = sorted(c["reason"] for c in conflicts(store, ROOT))
    assert first[0].startswith("not compared yet") and first[1].startswith("pixels differ")
    assert all(c["reason"].startswith("pixels differ") for c in conflicts(store, ROOT))  # the next listing did the rest


def test_resolve_keeping_the_stored_original(store, tmp_path):
    ds, first, other = _conflicting(store, tmp_path)
    copies = {a.variant: a.checksum for a in store.artifacts(ds.SOPInstanceUID)}
    result = resolve_conflict(store, ROOT, ds.SOPInstanceUID, other, "stored")
    assert result["rebuild"] is None and not store.query("SELECT 1 FROM conflicts")
    assert not list((store.root / "conflicts").iterdir())
    assert sha256_file(store.artifact(ds.SOPInstanceUID, "original").path) == first
    assert {a.variant: a.checksum for a in store.artifacts(ds.SOPInstanceUID)} == copies
    assert store.query("SELECT user FROM audit WHERE what LIKE 'conflict of instance %kept the stored%'")[0]["user"] == "boss"


def test_resolve_keeping_the_other_copy_rebuilds_from_it(store, tmp_path):
    moved = make_dataset(rows=8, columns=8).StudyInstanceUID  # the re-sent file names another study
    ds, first, other = _conflicting(store, tmp_path, StudyInstanceUID=moved)
    old_study = store.instance(ds.SOPInstanceUID)["study_uid"]
    variant_file(store, ds.SOPInstanceUID, "lossy", 12).close()
    codestream, _ = codestream_path(store, ds.SOPInstanceUID, 0, "lossless")
    mark_demo(store, [ds.SOPInstanceUID])  # a demo sample's UID re-sent with other content
    result = resolve_conflict(store, ROOT, ds.SOPInstanceUID, other, "other")
    assert not codestream.exists()
    assert not store.query("SELECT 1 FROM demo_instances")  # the kept file is not the sample: a demo login never sees it
    assert result == {"kept": "other", "sop_uid": ds.SOPInstanceUID, "study_uid": moved, "rebuild": moved}
    original = store.artifact(ds.SOPInstanceUID, "original")
    assert original.checksum == other and sha256_file(original.path) == other
    assert [a.variant for a in store.artifacts(ds.SOPInstanceUID)] == ["original"]  # copies of the old one are gone
    assert store.instance(ds.SOPInstanceUID)["study_uid"] == moved
    assert not store.query("SELECT 1 FROM studies WHERE study_uid=?", (old_study,))  # left empty: gone
    assert not _cache_keys_of(store, {first}) and not store.query("SELECT 1 FROM conflicts")
    assert _files(store) == [original.path]
    for wanted in plan(store, moved).make:  # the job the route queues
        make_artifact(store, wanted)
    lossless = store.artifact(ds.SOPInstanceUID, "lossless")
    from core.pixels import decode_all, read_dataset

    assert (decode_all(read_dataset(lossless.path)) == decode_all(read_dataset(original.path))).all()
    assert store.query("SELECT 1 FROM audit WHERE what LIKE 'conflict of instance %kept the copy received%'")
    with pytest.raises(StoreError):
        resolve_conflict(store, ROOT, ds.SOPInstanceUID, other, "other")  # already resolved
    with pytest.raises(InvalidOptionError):
        resolve_conflict(store, ROOT, ds.SOPInstanceUID, other, "both")


def test_http_delete_and_resolve(live_app, tmp_path, monkeypatch):
    base, app = live_app()
    store = app.server.extensions["radpress"]["store"]
    Users(store).add("rad", "radiologist-pw", "radiologist")
    admin, rad = requests.Session(), requests.Session()
    admin.auth, rad.auth = ADMIN, ("rad", "radiologist-pw")
    uid = _study(store, tmp_path, series=1, per_series=1, strategy=4)
    keep = _study(store, tmp_path / "keep", series=1, per_series=1, strategy=4)
    assert rad.delete(f"{base}/api/studies/{uid}?confirm={uid}").status_code == 403
    answer = admin.delete(f"{base}/api/studies/{uid}")
    assert answer.status_code == 400 and "confirm" in answer.json()["error"]
    assert admin.delete(f"{base}/api/studies/1.2.3.4?confirm=1.2.3.4").status_code == 404
    assert admin.delete(f"{base}/api/studies/1.2.x?confirm=1.2.x").status_code == 400
    answer = admin.delete(f"{base}/api/studies/{uid}?confirm={uid}")
    assert answer.status_code == 200 and answer.json()["bytes_freed"] > 0 and answer.json()["study_removed"]
    assert admin.get(f"{base}/api/studies/{uid}").status_code == 404
    assert ["delete-open" in _page(s, base, f"?uid={keep}") for s in (admin, rad)] == [True, False]  # the buttons: admins only

    ds, _, _ = _conflicting(store, tmp_path / "c")
    ds.PatientName = "Third^Copy"
    upload = admin.post(f"{base}/api/upload", files={"file": ("third.dcm", write(ds, tmp_path / "third.dcm").read_bytes())})
    assert upload.json()["results"][0]["status"] == "conflict" and "Conflicts page" in upload.json()["results"][0]["reason"]
    assert rad.get(f"{base}/api/conflicts").status_code == 403
    assert "2 conflicting copies of instances in this study" in _page(admin, base, f"?uid={store.instance(ds.SOPInstanceUID)['study_uid']}")
    listed = admin.get(f"{base}/api/conflicts").json()
    assert listed[0]["source"] == "third.dcm (uploaded by admin)" and "PatientName" in listed[0]["reason"]
    other = listed[0]["checksum"]
    for which in ("stored", other):
        picture = admin.get(f"{base}/api/conflicts/{ds.SOPInstanceUID}/{which}/thumbnail")
        assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
    assert admin.post(f"{base}/api/conflicts/{ds.SOPInstanceUID}/{other}/resolve", json={"keep": "x"}).status_code == 400
    answer = admin.post(f"{base}/api/conflicts/{ds.SOPInstanceUID}/{other}/resolve", json={"keep": "other"})
    assert answer.status_code == 200 and answer.json()["job"]
    assert store.artifact(ds.SOPInstanceUID, "original").checksum == other

    # a study deleted while its upload is still being answered: the upload says what it stored, and no job is left
    gone = make_dataset(rows=16, columns=16)
    monkeypatch.setattr("core.routes.note_sender", lambda store, results, _name: delete_study(store, ROOT, results[0].study_uid))
    answer = admin.post(f"{base}/api/upload", files={"file": ("gone.dcm", write(gone, tmp_path / "gone.dcm").read_bytes())})
    assert answer.status_code == 200 and answer.json()["results"][0]["status"] == "stored" and answer.json()["jobs"] == []
    assert not store.query("SELECT 1 FROM studies WHERE study_uid=?", (gone.StudyInstanceUID,))


def _page(http, base, search: str) -> str:
    """The Study page as the browser gets it (Dash's page callback), logged in as *http*'s user."""
    answer = http.post(f"{base}/_dash-update-component", json={
        "output": ".._pages_content.children..._pages_store.data..",
        "outputs": [{"id": "_pages_content", "property": "children"}, {"id": "_pages_store", "property": "data"}],
        "inputs": [{"id": "_pages_location", "property": "pathname", "value": "/study"},
                   {"id": "_pages_location", "property": "search", "value": search}],
        "state": [], "changedPropIds": ["_pages_location.pathname"]})
    assert answer.status_code == 200 and "study-uid" in answer.text
    return answer.text


def test_cli_delete_asks_for_confirmation(store, tmp_path, capsys):
    from core.cli import main

    uid = _study(store, tmp_path, series=1, per_series=1, strategy=4)

    def run(*args):
        code = main(["delete", *args, "--data", str(store.root)])
        return code, capsys.readouterr()

    code, out = run(uid)  # not a terminal (pytest's stdin) and no --yes: refused
    assert code == 2 and "--yes" in out.err and store.study(uid)
    assert run("1.2.3.9", "--yes")[0] == 2
    code, out = run("../x", "--yes")
    assert code == 2 and "not a valid UID" in out.err
    code, out = run(uid, "--yes", "--json")
    assert code == 0, out.err
    assert json.loads(out.out)["instances"] == 1 and not _files(store)
    assert store.query("SELECT user FROM audit WHERE what=?", (f"delete study {uid}",))[0]["user"].startswith("cli:")


@pytest.mark.parametrize("first,second", [("other", "other"), ("stored", "other"), ("other", "stored"), ("stored", "stored")])
def test_a_conflict_resolved_twice_at_once_changes_nothing_the_second_time(store, tmp_path, monkeypatch, first, second):
    """Two requests that both read the conflict before either resolved it: the later one is refused (was a 500
    from a vanished file, or 'kept the stored original' audited after the other copy had replaced it)."""
    import core.housekeeping as housekeeping

    ds, first_sum, other = _conflicting(store, tmp_path)
    sop = ds.SOPInstanceUID
    seen = housekeeping._conflict(store, ROOT, sop, other)
    resolve_conflict(store, ROOT, sop, other, first)
    kept = store.artifact(sop, "original")
    audit = store.query("SELECT count(*) FROM audit")[0][0]
    monkeypatch.setattr(housekeeping, "_conflict", lambda *args: seen)  # the second request's row, read before
    with pytest.raises(StoreError, match="already resolved"):
        resolve_conflict(store, ROOT, sop, other, second)
    assert store.artifact(sop, "original") == kept and sha256_file(kept.path) == kept.checksum
    assert kept.checksum == (other if first == "other" else first_sum)
    assert store.query("SELECT count(*) FROM audit")[0][0] == audit


def test_keeping_the_other_copy_of_a_mastered_instance_purges_what_the_first_original_made(store, tmp_path):
    """Caches are keyed by the original's checksum: for a lossless master, also the file's it replaced (those leaked)."""
    from core.master import make_master, master_of

    ds, first, other = _conflicting(store, tmp_path)
    sop = ds.SOPInstanceUID
    variant_file(store, sop, "lossy", 12).close()
    codestream, _ = codestream_path(store, sop, 0, "lossless")
    assert codestream.name.startswith(first) and _cache_keys_of(store, {first})
    make_master(store, sop)
    assert master_of(store, sop).mastered
    resolve_conflict(store, ROOT, sop, other, "other")
    assert not codestream.exists() and not _cache_keys_of(store, {first})
    assert sha256_file(store.artifact(sop, "original").path) == other and not store.query("SELECT 1 FROM masters")
