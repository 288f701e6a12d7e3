import io
import os
import stat
import tarfile
import zipfile

import pytest

from core.ingest import Limits, ingest, ingest_stream
from core.samples import pydicom_test_dir, sample, write_series
from core.store import Store

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
        (pydicom_test_dir() / "rtplan.dcm", "no pixel data"),
        (pydicom_test_dir() / "MR_truncated.dcm", "truncated"),
        (pydicom_test_dir() / "README.txt", "not DICOM"),
    ],
)
def test_rejections_carry_a_reason(store, path, reason):
    result = list(ingest(store, [path]))[0]
    assert result.status == "rejected" and result.reason.startswith(reason)
    assert not list((store.root / "originals").rglob("*.dcm"))
    assert not list((store.root / "tmp").iterdir())


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
