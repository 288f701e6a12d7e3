import io
import os
import re
import stat
import tarfile
import threading
import time
import zipfile

import pytest

from core.ingest import Limits, ingest, ingest_stream
from core.probe import overlapping_zip, patch_zip_member, zeros_tar_gz, zeros_zip
from core.samples import pydicom_test_dir, sample, write_series
from core.store import Store
from tests.synthetic import make_dataset, write

MR2, CT = sample("MR2_UNCR"), sample("693_UNCR")


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "data")


def statuses(results):
    return [r.status for r in results]


def test_single_files_and_duplicates(store):
    first = list(ingest(store, [MR2, CT]))
    assert statuses(first) == ["stored", "stored"]
    again = list(ingest(store, [MR2]))
    assert statuses(again) == ["duplicate"]
    assert len(store.studies()) == 2
    original = store.artifact(first[0].sop_uid, "original")
    assert original.path.read_bytes() == MR2.read_bytes()  # stored byte for byte


def test_same_uid_different_content_is_a_conflict_and_both_are_kept(store, tmp_path):
    from pydicom import dcmread

    list(ingest(store, [MR2]))
    ds = dcmread(MR2)
    ds.PatientName = "Someone^Else"
    other = tmp_path / "other.dcm"
    ds.save_as(other)
    result = list(ingest(store, [other]))[0]
    assert result.status == "conflict"
    kept = store.query("SELECT path FROM conflicts")
    assert len(kept) == 1 and os.path.exists(kept[0]["path"])
    assert store.artifact(result.sop_uid, "original").path.read_bytes() == MR2.read_bytes()


def test_nested_folders_and_dicomdir_skipped(store, tmp_path):
    write_series("emri_small", 3, tmp_path / "in" / "a" / "b")
    (tmp_path / "in" / "DICOMDIR").write_bytes(b"x")
    results = list(ingest(store, [tmp_path / "in"]))
    assert sorted(statuses(results)) == ["skipped", "stored", "stored", "stored"]


@pytest.mark.parametrize(
    "path, reason",
    [
        (pydicom_test_dir() / "MR_truncated.dcm", "truncated"),
        (pydicom_test_dir() / "README.txt", "not DICOM"),
    ],
)
def test_rejections_carry_a_reason(store, path, reason):
    result = list(ingest(store, [path]))[0]
    assert result.status == "rejected" and result.reason.startswith(reason)
    assert not re.search(r"\d{12,}-\d+-\d+", result.reason), result.reason  # never the staging file's name
    assert not list((store.root / "originals").rglob("*.dcm"))
    assert not list((store.root / "tmp").iterdir())


@pytest.mark.parametrize("name", ["rtplan.dcm", "test-SR.dcm", "reportsi.dcm"])
def test_non_image_objects_are_kept_as_originals_only(store, name):
    """A clinic's studies hold reports and plans: stored as they came, never given compressed copies."""
    from core.archive import plan

    result = list(ingest(store, [pydicom_test_dir() / name]))[0]
    assert result.status == "stored", result.reason
    assert store.artifact(result.sop_uid, "original").path.read_bytes() == (pydicom_test_dir() / name).read_bytes()
    assert store.instance(result.sop_uid)["rows"] == 0 and plan(store, result.study_uid).make == ()


def test_image_header_without_pixel_data_is_refused(store, tmp_path):
    ds = make_dataset(rows=16, columns=16)
    del ds.PixelData
    result = list(ingest(store, [write(ds, tmp_path / "no-pixels.dcm")]))[0]
    assert result.status == "rejected" and result.reason.startswith("no pixel data")


def test_non_image_with_a_bad_uid_is_refused(store, tmp_path):
    import pydicom

    ds = pydicom.dcmread(pydicom_test_dir() / "rtplan.dcm")
    ds.StudyInstanceUID = "1.2.03"
    ds.save_as(tmp_path / "plan.dcm")
    result = list(ingest(store, [tmp_path / "plan.dcm"]))[0]
    assert result.status == "rejected" and "Study Instance UID" in result.reason


def _zip_lookalike(tmp_path):
    """A valid DICOM file whose preamble starts like a zip entry and whose last bytes hold a zip directory."""
    empty = io.BytesIO()
    zipfile.ZipFile(empty, "w").close()
    ds = make_dataset(rows=16, columns=16)
    ds.preamble = b"PK\x03\x04" + b"\0" * 124
    ds.add_new(0x7FE10010, "LO", "RADPRESS TEST")
    ds.add_new(0x7FE11000, "OB", empty.getvalue())
    path = write(ds, tmp_path / "lookalike.dcm")
    assert zipfile.is_zipfile(path)
    return ds, path


def test_a_dicom_file_that_looks_like_a_zip_is_still_the_instance(store, tmp_path):
    ds, path = _zip_lookalike(tmp_path)
    [result] = ingest_stream(store, io.BytesIO(path.read_bytes()), "lookalike.dcm")  # was [] (read as an empty zip)
    assert (result.status, result.sop_uid) == ("stored", ds.SOPInstanceUID)
    other, inner = _zip_lookalike(tmp_path / "b")
    archive = tmp_path / "outer.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(inner, "in/lookalike.dcm")
    assert [(r.status, r.sop_uid) for r in ingest(store, [archive])] == [("stored", other.SOPInstanceUID)]


def test_too_large(store):
    result = list(ingest(store, [MR2], Limits(max_file_bytes=1000)))[0]
    assert result.status == "rejected" and "too large" in result.reason


def test_zip_and_tar_archives(store, tmp_path):
    files = write_series("emri_small", 2, tmp_path / "s")
    zpath = tmp_path / "study.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            z.write(f, f"nested/dir/{f.name}")
        z.writestr("DICOMDIR", b"index")
    tpath = tmp_path / "study.tar.gz"
    more = write_series("emri_small", 2, tmp_path / "t")
    with tarfile.open(tpath, "w:gz") as t:
        for f in more:
            t.add(f, f"x/{f.name}")
    assert sorted(statuses(ingest(store, [zpath]))) == ["skipped", "stored", "stored"]
    assert statuses(ingest(store, [tpath])) == ["stored", "stored"]


def test_archive_path_traversal_and_links_are_refused(store, tmp_path):
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("../../etc/evil.dcm", MR2.read_bytes())
        z.writestr("/abs.dcm", MR2.read_bytes())
        link = zipfile.ZipInfo("link.dcm")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
    results = list(ingest(store, [zpath]))
    assert statuses(results) == ["rejected"] * 3
    assert "unsafe path" in results[0].reason and "symbolic link" in results[2].reason
    tpath = tmp_path / "evil.tar"
    with tarfile.open(tpath, "w") as t:
        info = tarfile.TarInfo("lnk.dcm")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(info)
        data = MR2.read_bytes()
        info = tarfile.TarInfo("../up.dcm")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    results = list(ingest(store, [tpath]))
    assert statuses(results) == ["rejected", "rejected"]
    assert not (tmp_path / "up.dcm").exists() and not store.studies()


def test_decompression_bomb_is_refused(store, tmp_path):
    zpath = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.dcm", b"\0" * (50 << 20))
    result = list(ingest(store, [zpath]))[0]
    assert result.status == "rejected" and "bomb" in result.reason
    assert not list((store.root / "tmp").iterdir())


def test_too_many_entries(store, tmp_path):
    zpath = tmp_path / "many.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for i in range(20):
            z.writestr(f"{i}.dcm", b"x")
    result = list(ingest(store, [zpath], Limits(max_entries=10)))[0]
    assert result.status == "rejected" and "entries" in result.reason


def test_stream_upload_is_spooled_to_disk(store):
    with open(MR2, "rb") as fh:
        results = ingest_stream(store, fh, "MR2.dcm")
    assert statuses(results) == ["stored"]
    assert not list((store.root / "tmp").iterdir())


# -- hostile archives -----------------------------------------------------------------------------------------
def fresh(tmp_path, count, name="s"):
    """*count* small valid files with their own UIDs."""
    return [write(make_dataset(rows=40, columns=40, seed=i), tmp_path / name / f"{i}.dcm") for i in range(count)]


def nothing_staged(store):
    return not list((store.root / "tmp").iterdir())


def test_encrypted_and_unknown_method_members_are_refused_alone(store, tmp_path):
    good, locked, odd = fresh(tmp_path, 3)
    zpath = tmp_path / "mixed.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for name, f in (("locked.dcm", locked), ("good.dcm", good), ("odd.dcm", odd)):
            z.write(f, name)
    zpath.write_bytes(patch_zip_member(zpath.read_bytes(), "locked.dcm", flags=0x1))
    zpath.write_bytes(patch_zip_member(zpath.read_bytes(), "odd.dcm", method=98))  # PPMd
    results = {r.name.split("/")[-1]: r for r in ingest(store, [zpath])}
    assert results["good.dcm"].status == "stored"
    assert results["locked.dcm"].status == "rejected" and results["locked.dcm"].reason.startswith("encrypted")
    assert results["odd.dcm"].status == "rejected" and "compression method 98" in results["odd.dcm"].reason
    assert nothing_staged(store)


def test_corrupt_deflate_data_rejects_that_member_only(store, tmp_path):
    first, second = fresh(tmp_path, 2)
    zpath = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(first, "first.dcm")
        z.write(second, "second.dcm")
    data = bytearray(zpath.read_bytes())
    with zipfile.ZipFile(zpath) as z:
        info = z.getinfo("first.dcm")
    middle = info.header_offset + 30 + len("first.dcm") + info.compress_size // 2
    data[middle:middle + 64] = bytes(range(64))
    zpath.write_bytes(bytes(data))
    results = list(ingest(store, [zpath]))
    assert [r.status for r in results] == ["rejected", "stored"]
    assert results[0].reason.startswith("truncated: damaged archive entry")
    assert nothing_staged(store)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_truncated_archives(store, tmp_path, kind):
    files = fresh(tmp_path, 4)
    path = tmp_path / f"cut.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for f in files:
                z.write(f, f.name)
    else:
        with tarfile.open(path, "w:gz") as t:
            for f in files:
                t.add(f, f.name)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    results = list(ingest(store, [path]))
    assert results[-1].status == "rejected" and results[-1].reason.startswith("truncated")
    if kind == "tar.gz":  # a stream: the members before the cut are kept
        assert [r.status for r in results[:-1]] == ["stored"] * (len(results) - 1) and len(results) >= 2
    assert nothing_staged(store)


def test_overlapping_zip_is_refused_before_inflating(store, tmp_path):
    zpath = tmp_path / "overlap.zip"
    zpath.write_bytes(overlapping_zip(200))  # 200 names x 20 MB from 20 kB
    started = time.monotonic()
    results = list(ingest(store, [zpath]))
    assert time.monotonic() - started < 5
    assert len(results) == 200 and all(r.status == "rejected" and "overlapping" in r.reason for r in results)
    assert nothing_staged(store)


def test_nested_archives_are_not_opened(store, tmp_path):
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as z:
        z.write(MR2, "mr.dcm")
    inner_tgz = tmp_path / "inner.tar.gz"
    with tarfile.open(inner_tgz, "w:gz") as t:
        t.add(MR2, "mr.dcm")
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as z:
        z.write(inner, "inner.zip")
        z.write(inner_tgz, "inner.tar.gz")
        z.write(CT, "ct.dcm")
    results = {r.name.split("/")[-1]: r for r in ingest(store, [outer])}
    assert results["ct.dcm"].status == "stored"
    for name in ("inner.zip", "inner.tar.gz"):
        assert results[name].status == "rejected" and results[name].reason.startswith("nested archive")
    assert len(store.studies()) == 1 and nothing_staged(store)


def _watch_tmp(store, stop, peak):
    while not stop.is_set():
        sizes = [p.stat().st_size for p in (store.root / "tmp").iterdir() if p.exists()] or [0]
        peak[0] = max(peak[0], max(sizes))
        time.sleep(0.005)


@pytest.mark.parametrize("declared", [5 << 30, 1 << 30], ids=["5GB-over-file-limit", "1GB-under-file-limit"])
def test_tar_gz_of_zeros_is_refused_while_streaming(store, tmp_path, declared):
    path = tmp_path / "zeros.tar.gz"
    path.write_bytes(zeros_tar_gz(declared))
    assert path.stat().st_size < 8 << 20
    stop, peak = threading.Event(), [0]
    watcher = threading.Thread(target=_watch_tmp, args=(store, stop, peak))
    watcher.start()
    started = time.monotonic()
    try:
        results = list(ingest(store, [path]))
    finally:
        stop.set()
        watcher.join()
    assert time.monotonic() - started < 10
    assert results[-1].status == "rejected" and "decompression bomb" in results[-1].reason
    assert peak[0] <= Limits().bomb_floor + (1 << 20)  # never more than the budget written
    assert nothing_staged(store) and not store.studies()


def test_many_small_bombs_share_one_budget(store, tmp_path):
    zpath = tmp_path / "many-bombs.zip"
    zpath.write_bytes(zeros_zip([f"{i}.dcm" for i in range(40)], 8 << 20))  # each 8 MB from 8 kB: under the floor alone
    started = time.monotonic()
    results = list(ingest(store, [zpath]))
    assert time.monotonic() - started < 10
    assert any("decompression bomb" in r.reason for r in results) and nothing_staged(store)
    budget = Limits().max_expansion * zpath.stat().st_size + Limits().bomb_floor
    assert sum(r.reason.startswith("not DICOM") for r in results) <= budget // (8 << 20) < 20


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_in_every_compression_is_streamed(store, tmp_path, mode):
    files = fresh(tmp_path, 2)
    path = tmp_path / "study.tar"
    with tarfile.open(path, mode) as t:
        for f in files:
            t.add(f, f"d/{f.name}")
    assert [r.status for r in ingest(store, [path])] == ["stored", "stored"] and nothing_staged(store)


def test_a_bomb_is_charged_to_what_was_being_read(store, tmp_path):
    path = tmp_path / "zeros.tar.gz"
    path.write_bytes(zeros_tar_gz(1 << 30))  # under the file limit: its own bytes blow the budget
    [result] = ingest(store, [path])
    assert result.name == f"{path}/zeros.dcm" and "decompression bomb" in result.reason
    path.write_bytes(zeros_tar_gz(5 << 30))  # over the file limit: refused, then skipping it blows the budget
    first, second = ingest(store, [path])
    assert first.name == f"{path}/zeros.dcm" and first.reason.startswith("too large")
    assert second.name == str(path) and "decompression bomb" in second.reason and "rest refused" in second.reason


def test_parallel_uploads_over_http_store_every_instance_once(live_app, tmp_path):
    """4 clients at once, as the bench sends: distinct instances of one study are each stored bit for bit, one
    instance sent by all four is stored once (three duplicates), a second version of it is a conflict; the whole
    burst queues one job for the study."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from tests.conftest import ADMIN

    base, app = live_app(run_jobs=False)
    store = app.server.extensions["radpress"]["store"]
    series = write_series("emri_small", 12, tmp_path / "series")
    same = series[0].read_bytes()
    bodies = [(p.name, p.read_bytes()) for p in series[1:]] + [("same.dcm", same)] * 4
    local = threading.local()

    def send(item):
        if not hasattr(local, "http"):
            local.http = requests.Session()
            local.http.auth = ADMIN
        response = local.http.post(f"{base}/api/upload", params={"name": item[0]}, data=item[1])
        assert response.status_code == 200, response.text
        return item, response.json()

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(send, bodies))
    statuses = sorted(body["results"][0]["status"] for (name, _), body in answers if name == "same.dcm")
    assert statuses == ["duplicate"] * 3 + ["stored"]
    for (name, data), body in answers:
        [result] = body["results"]
        assert result["status"] in ("stored", "duplicate"), result
        original = store.artifact(result["sop_uid"], "original")  # the checksum hashed on the way in is the file's
        assert hashlib.sha256(original.path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest() == original.checksum
    assert len(store.instances(answers[0][1]["results"][0]["study_uid"])) == 12
    jobs = {job for _, body in answers for job in body["jobs"]}
    assert len(jobs) == 1 and len(store.query("SELECT id FROM jobs")) == 1
    other = make_dataset(rows=32, columns=32)
    other.SOPInstanceUID = answers[0][1]["results"][0]["sop_uid"]
    response = requests.post(f"{base}/api/upload", data=write(other, tmp_path / "v2.dcm").read_bytes(), auth=ADMIN)
    assert response.json()["results"][0]["status"] == "conflict"
    assert not list((store.root / "tmp").iterdir())


def test_archive_members_are_indexed_with_the_checksum_of_their_bytes(store, tmp_path):
    """Members are hashed while they are extracted: the index holds each stored file's own SHA-256."""
    import hashlib

    files = write_series("emri_small", 3, tmp_path / "series")
    with zipfile.ZipFile(tmp_path / "a.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, path.name)
    with tarfile.open(tmp_path / "b.tar.gz", "w:gz") as archive:
        archive.add(files[0], "again/x.dcm")
    results = list(ingest(store, [tmp_path / "a.zip", tmp_path / "b.tar.gz"]))
    assert statuses(results) == ["stored"] * 3 + ["duplicate"]
    for result in results[:3]:
        original = store.artifact(result.sop_uid, "original")
        assert original.checksum == hashlib.sha256(original.path.read_bytes()).hexdigest()
    assert Store(store.root).check(verify=True)["replaced_originals"] == []


def test_an_instance_is_synced_while_it_is_validated_an_archive_upload_is_not(store, tmp_path, monkeypatch):
    """The early fsync (a latency measure) runs for what the store will place: an uploaded instance and each archive
    member, never the archive itself; the store's own fsync before it links a file still runs for every one."""
    import core.ingest
    import core.store

    early, placed = [], []
    start, fsync = core.ingest._start_sync, core.store._fsync_file
    monkeypatch.setattr(core.ingest, "_start_sync", lambda path: (early.append(path.name), start(path)))
    monkeypatch.setattr(core.store, "_fsync_file", lambda path: (placed.append(path.name), fsync(path)))
    files = fresh(tmp_path, 3)
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        for path in files[1:]:
            archive.write(path, path.name)
    with open(files[0], "rb") as fh:
        assert statuses(ingest_stream(store, fh, "one.dcm")) == ["stored"]
    with open(tmp_path / "a.zip", "rb") as fh:
        assert statuses(ingest_stream(store, fh, "a.zip")) == ["stored", "stored"]
    assert len(early) == 3 and early[0].endswith(".dcm-upload") and all(n.endswith(".dcm") for n in early[1:])
    assert placed == early  # every placed file fsynced by the store itself, the zip never
    assert nothing_staged(store)
    for path in files:  # byte-exact
        ds = core.ingest.read_checked(path)
        assert store.artifact(str(ds.SOPInstanceUID), "original").path.read_bytes() == path.read_bytes()


def test_early_sync_closes_its_descriptor_even_when_the_file_is_gone(store, tmp_path):
    """A staged file refused (and unlinked) before its early fsync ends: the descriptor is closed all the same."""
    from core.ingest import _start_sync

    before = len(os.listdir("/proc/self/fd"))
    for index in range(20):
        path = tmp_path / f"{index}.bin"
        path.write_bytes(b"x" * 4096)
        _start_sync(path)
        path.unlink()
    deadline = time.monotonic() + 10
    while len(os.listdir("/proc/self/fd")) > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(os.listdir("/proc/self/fd")) <= before


def test_a_sent_instance_is_parsed_from_memory_with_the_same_outcome_as_from_disk(store, tmp_path, monkeypatch):
    """An upload of KEEP_BYTES or less is validated from the bytes held while staging (the file is not read back);
    good and broken files get the same result and reason as from disk, a larger one is read from its staged file."""
    import core.ingest
    import core.validate

    good = fresh(tmp_path, 2)
    damaged = tmp_path / "cut.dcm"
    damaged.write_bytes(CT.read_bytes()[:300_000])
    bad_uid = make_dataset(rows=16, columns=16)
    bad_uid.SOPInstanceUID = "1.2.03"
    cases = [good[0], damaged, write(bad_uid, tmp_path / "uid.dcm"), pydicom_test_dir() / "MR_truncated.dcm",
             pydicom_test_dir() / "README.txt"]
    expected = [(r.status, r.reason) for r in ingest(Store(tmp_path / "other"), cases)]
    assert [s for s, _ in expected] == ["stored", "rejected", "rejected", "rejected", "rejected"]
    sources, read = [], core.validate.read_checked
    monkeypatch.setattr(core.ingest, "read_checked", lambda path, data=None: (sources.append(data is not None),
                                                                               read(path, data))[1])
    for path in cases:
        with open(path, "rb") as fh:
            (result,) = ingest_stream(store, fh, path.name)
        assert (result.status, result.reason) == expected[cases.index(path)]
    assert all(sources)  # every DICOM one parsed from memory (README.txt is refused before: not DICOM)
    monkeypatch.setattr(core.ingest, "KEEP_BYTES", 1000)
    with open(good[1], "rb") as fh:
        assert statuses(ingest_stream(store, fh, "big.dcm")) == ["stored"]
    assert sources[-1] is False
    assert nothing_staged(store)


def test_an_upload_is_stored_when_its_early_sync_cannot_start(store, monkeypatch):
    """Out of file descriptors for the early fsync: the upload is stored all the same (the store's fsync is the one
    that counts)."""
    import core.ingest

    real_open = os.open

    def no_descriptor(path, flags, *args):
        if flags == os.O_RDONLY and str(path).startswith(str(store.root / "tmp")):
            raise OSError(24, "Too many open files")
        return real_open(path, flags, *args)

    monkeypatch.setattr(core.ingest.os, "open", no_descriptor)
    with open(MR2, "rb") as fh:
        assert statuses(ingest_stream(store, fh, "MR2.dcm")) == ["stored"]
    assert nothing_staged(store)
