"""Strategy 5, the lossless master: bit-exact by another project's decoder, or the original stays."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests

import core.master as master_module
from core.archive import plan, storage_report, variant_file
from core.ingest import ingest
from core.jobs import Jobs
from core.master import CHECKER, MasterCheckFailed, make_master, master_of
from core.pixels import decode_all, read_dataset
from core.samples import write_series
from core.store import Store, sha256_file
from tests.checkers import gdcm_pixels
from tests.conftest import ADMIN
from tests.synthetic import write_kind

MASTERED = ["u8_odd", "u10", "u12_odd", "u16", "s12", "s16", "mono1", "rgb", "ybr_full", "multiframe", "enhanced_ct",
            "big_endian", "already_lossy"]


def _stored(tmp_path, kind: str, **overrides):
    """A store holding one synthetic instance; returns the store, its SOP Instance UID and the source file."""
    source = write_kind(kind, tmp_path / "in", **overrides)
    store = Store(tmp_path / "data")
    [result] = list(ingest(store, [source]))
    assert result.status == "stored", result
    return store, str(read_dataset(source).SOPInstanceUID), source


def _audit(store: Store) -> list[str]:
    return [r["what"] for r in store.query("SELECT what FROM audit ORDER BY id")]


@pytest.mark.parametrize("kind", MASTERED)
def test_master_replaces_the_original_bit_exact(tmp_path, kind):
    store, sop, source = _stored(tmp_path, kind)
    original = store.artifact(sop, "original")
    after = make_master(store, sop)
    record = master_of(store, sop)
    assert record.mastered and record.checked_by == CHECKER
    assert not original.path.exists() and after.path.exists()  # the original's file is gone, the master is the original row
    assert (record.original_checksum, record.original_bytes) == (original.checksum, original.bytes)
    assert after.transfer_syntax == "1.2.840.10008.1.2.4.80" and after.bytes < original.bytes
    expected = decode_all(read_dataset(source))
    master = read_dataset(after.path)
    assert str(master.SOPInstanceUID) == sop  # lossless and bit-exact: the same instance
    # two decoders of other projects than the encoder (CharLS): libjpeg (pylibjpeg) and GDCM's command line
    assert np.array_equal(master_module.independent_pixels(after.path), expected)
    assert np.array_equal(gdcm_pixels(after.path, tmp_path), expected)
    assert master_module._changed_attributes(read_dataset(source), master) == []
    assert any("replaced by its lossless master" in what for what in _audit(store))


def test_an_already_lossy_original_keeps_its_lossy_marking(tmp_path):
    store, sop, source = _stored(tmp_path, "already_lossy")
    make_master(store, sop)
    master = read_dataset(store.artifact(sop, "original").path)
    assert master.LossyImageCompression == "01"
    assert list(master.LossyImageCompressionMethod) == list(read_dataset(source).LossyImageCompressionMethod)
    assert store.instance(sop)["lossy"]  # still reported as lossy everywhere


def test_a_lossy_compressed_original_is_kept_as_it_came(tmp_path):
    from core.compress import compress

    lossy = compress(read_dataset(write_kind("u12_odd", tmp_path / "src")), "j2k", "lossy", 8).dataset
    path = tmp_path / "in" / "lossy.dcm"
    path.parent.mkdir()
    lossy.save_as(path, enforce_file_format=True)
    store = Store(tmp_path / "data")
    list(ingest(store, [path]))
    sop = str(lossy.SOPInstanceUID)
    before = store.artifact(sop, "original")
    assert make_master(store, sop) == before and before.path.exists()
    record = master_of(store, sop)
    assert record.state == "kept" and "already lossy-compressed" in record.reason


@pytest.mark.parametrize("kind,overrides", [("u12_dirty", {}), ("s12", {"dirty_high_bits": True})], ids=["unsigned", "signed"])
def test_data_above_bits_stored_keeps_the_original(tmp_path, kind, overrides):
    store, sop, source = _stored(tmp_path, kind, **overrides)
    before = store.artifact(sop, "original")
    assert make_master(store, sop) == before and sha256_file(before.path) == sha256_file(source)
    assert "above Bits Stored" in master_of(store, sop).reason


def test_a_failing_independent_check_keeps_the_original_and_reports(tmp_path, monkeypatch):
    """An encoder that changes one sample (simulated): libjpeg sees it, the original stays, the refusal is audited."""
    store, sop, source = _stored(tmp_path, "s12")
    real = master_module.compress

    def corrupting(ds, *args, **kwargs):
        damaged = ds.copy()
        pixels = decode_all(ds)[0]
        pixels[3, 5] += 1
        damaged.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
        return real(damaged, *args, **kwargs)

    monkeypatch.setattr(master_module, "compress", corrupting)
    before = store.artifact(sop, "original")
    with pytest.raises(MasterCheckFailed, match="1 sample"):
        make_master(store, sop)
    assert store.artifact(sop, "original") == before and sha256_file(before.path) == before.checksum
    failed = master_of(store, sop)  # recorded for this original: the Study page shows why it is kept
    assert failed.state == "failed" and not failed.mastered and failed.original_checksum == before.checksum and "1 sample" in failed.reason
    assert not master_module.master_path(store, sop).exists()
    assert sum("refused" in what for what in _audit(store)) == 1
    assert not list((store.root / "tmp").iterdir())


def test_a_failed_check_is_not_repeated_by_later_jobs_until_asked(tmp_path, monkeypatch):
    """Every later job of the study used to check (and audit) the refused master again: now neither, until the
    original changes or `check --verify` asks; then a job makes it, with a correct encoder this time."""
    from core.cli import main

    store, sop, source = _stored(tmp_path, "u12_odd")
    study = store.instance(sop)["study_uid"]
    store.set_study_strategy(study, 5)
    real, encodes = master_module.compress, []

    def corrupting(ds, *args, **kwargs):
        encodes.append(1)
        result = real(ds, *args, **kwargs)
        result.dataset.PatientName = "Changed^By^Encoder"
        return result

    monkeypatch.setattr(master_module, "compress", corrupting)
    with pytest.raises(MasterCheckFailed, match="attributes changed: PatientName"):
        make_master(store, sop)
    audited = _audit(store)
    assert "master" not in {w.variant for w in plan(store, study).make}  # later jobs: decided
    with pytest.raises(MasterCheckFailed, match="attributes changed: PatientName"):  # asked directly: the record answers
        make_master(store, sop)
    assert encodes == [1] and _audit(store) == audited  # not encoded, checked nor audited again
    with store.connect() as db:  # another original under this UID (as a resolved conflict leaves): tried again
        db.execute("UPDATE artifacts SET checksum='other' WHERE sop_uid=? AND variant='original'", (sop,))
    assert master_of(store, sop) is None and "master" in {w.variant for w in plan(store, study).make}
    with store.connect() as db:
        db.execute("UPDATE artifacts SET checksum=? WHERE sop_uid=? AND variant='original'", (sha256_file(source), sop))
    assert master_of(store, sop).state == "failed"
    monkeypatch.setattr(master_module, "compress", real)  # the encoder fixed
    assert main(["check", "--verify", "--data", str(store.root)]) == 0
    assert master_of(store, sop) is None and _audit(store)[-1] == f"lossless master of {sop}: to be checked again"
    assert [(j["kind"], j["study_uid"], j["state"]) for j in Jobs(store).list()] == [("materialize", study, "queued")]
    Jobs(store, workers=1).run_pending()
    assert master_of(store, sop).mastered
    assert np.array_equal(decode_all(read_dataset(store.artifact(sop, "original").path)), decode_all(read_dataset(source)))


def _with_sequences(ds):
    """*ds* with a Referenced Image Sequence and an icon (16-bit words in a sequence item)."""
    from pydicom.dataset import Dataset

    reference, icon = Dataset(), Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", "1.2.3.4.5"
    icon.Rows, icon.Columns, icon.SamplesPerPixel, icon.PhotometricInterpretation = 2, 3, 1, "MONOCHROME2"
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 16, 16, 15, 0
    icon.add_new(0x7FE00010, "OW", np.arange(1, 7, dtype=">u2").tobytes())  # as a big-endian file holds them
    ds.ReferencedImageSequence, ds.IconImageSequence = [reference], [icon]
    return ds


@pytest.mark.parametrize("change, named", [
    (lambda item: setattr(item, "ReferencedSOPInstanceUID", "1.2.3.4.6"), "ReferencedImageSequence[0].ReferencedSOPInstanceUID"),
    (lambda item: setattr(item, "PixelData", item.PixelData[:-2] + b"\x00\x07"), "IconImageSequence[0].PixelData"),
], ids=["uid-in-item", "words-in-item"])
def test_the_attribute_check_looks_inside_sequences_of_big_endian_originals(tmp_path, monkeypatch, change, named):
    """Sequence items of a big-endian original are compared too (their binary words swapped back): an item the
    master changed is refused; one copied faithfully (words now little endian) is mastered."""
    from tests.synthetic import KINDS, make_dataset, write

    source = write(_with_sequences(make_dataset(**KINDS["big_endian"])), tmp_path / "in" / "be.dcm")
    store = Store(tmp_path / "data")
    [result] = list(ingest(store, [source]))
    sop = str(read_dataset(source).SOPInstanceUID)
    real = master_module.compress

    def changing(ds, *args, **kwargs):
        result = real(ds, *args, **kwargs)
        sequence = "ReferencedImageSequence" if named.startswith("Referenced") else "IconImageSequence"
        change(result.dataset[sequence][0])
        return result

    monkeypatch.setattr(master_module, "compress", changing)
    with pytest.raises(MasterCheckFailed, match=re.escape(f"attributes changed: {named}")):
        make_master(store, sop)
    monkeypatch.setattr(master_module, "compress", real)
    store2 = Store(tmp_path / "data2")
    list(ingest(store2, [source]))
    assert make_master(store2, sop).codec == "jpegls" and master_of(store2, sop).mastered
    master = read_dataset(store2.artifact(sop, "original").path)
    assert master.IconImageSequence[0].PixelData == np.arange(1, 7, dtype="<u2").tobytes()  # little endian now, same words
    assert master.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4.5"


def test_a_crash_before_the_switch_leaves_the_original(tmp_path, monkeypatch):
    store, sop, source = _stored(tmp_path, "u12_odd")
    before = store.artifact(sop, "original")

    def killed(*_args):
        raise KeyboardInterrupt("killed between the check and the switch")

    monkeypatch.setattr(master_module, "_switch", killed)
    with pytest.raises(KeyboardInterrupt):
        make_master(store, sop)
    monkeypatch.undo()
    stray = master_module.master_path(store, sop)
    assert stray.exists() and store.artifact(sop, "original") == before  # two copies, the index names the original
    assert np.array_equal(decode_all(read_dataset(variant_file(store, sop, "original").stream)), decode_all(read_dataset(source)))
    old = stray.stat().st_mtime - 3600
    os.utime(stray, (old, old))
    assert str(stray) in store.check()["orphan_files"]
    assert make_master(store, sop).path == stray and master_of(store, sop).mastered


def test_a_crash_after_the_switch_is_finished_by_check(tmp_path, monkeypatch):
    store, sop, source = _stored(tmp_path, "mono1")
    before = store.artifact(sop, "original")
    monkeypatch.setattr(master_module, "_remove_original", lambda path: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        make_master(store, sop)
    monkeypatch.undo()
    assert before.path.exists() and master_of(store, sop).mastered  # two copies; the index names the master
    with variant_file(store, sop, "original").stream as fh:
        assert np.array_equal(decode_all(read_dataset(fh)), decode_all(read_dataset(source)))
    report = store.check(verify=True)
    assert report["mastered_originals_removed"] == [str(before.path)] and not before.path.exists()
    assert report["unindexed_originals"] == [] and report["master_mismatches"] == []


def test_check_verify_decodes_every_master_again(tmp_path):
    store, sop, _source = _stored(tmp_path, "u10")
    make_master(store, sop)
    assert store.check(verify=True)["master_mismatches"] == []
    with store.connect() as db:  # as if the master's pixels had changed since: the digest no longer matches
        db.execute("UPDATE masters SET pixel_digest='0' WHERE sop_uid=?", (sop,))
    assert store.check(verify=True)["master_mismatches"] == [f"{sop}: the master no longer decodes to the original's pixels"]
    cli = subprocess.run([sys.executable, "-m", "core", "check", "--verify", "--data", str(store.root)],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert cli.returncode == 1 and "master mismatches" in cli.stdout, cli.stdout + cli.stderr


def test_strategy_5_by_job_and_its_storage_projection(tmp_path):
    store = Store(tmp_path / "data")
    files = [write_kind(kind, tmp_path / "in", study_uid="1.2.826.0.1.3680043.8.498.5") for kind in ("s12", "u12_dirty", "rgb")]
    list(ingest(store, files))
    study = "1.2.826.0.1.3680043.8.498.5"
    projected = {s["strategy"]: s for s in storage_report(store, study)["strategies"]}[5]
    assert projected["estimated"]
    store.set_study_strategy(study, 5)
    assert {w.variant for w in plan(store, study).make} == {"master"}
    jobs = Jobs(store, workers=1)
    jobs.submit(study)
    [job] = jobs.run_pending()
    assert job["state"] == "done", job
    assert plan(store, study).make == ()  # mastered or kept: nothing left to do
    report = storage_report(store, study)
    now = {s["strategy"]: s for s in report["strategies"]}[5]
    assert not now["estimated"] and now["bytes"] == sum(a.bytes for a in store.artifacts(study_uid=study) if a.variant == "original")
    assert now["bytes"] < sum(f.stat().st_size for f in files) and report["bytes_now"]["master"] > 0
    assert abs(projected["bytes"] - now["bytes"]) < 0.25 * now["bytes"]


def test_download_of_a_mastered_original_and_deflated_zips(tmp_path, live_app):
    base, app = live_app(demo=False)
    store = app.server.extensions["radpress"]["store"]
    files = write_series("693_UNCR", 3, tmp_path / "ct")
    list(ingest(store, files))
    study = str(read_dataset(files[0]).StudyInstanceUID)
    http = requests.Session()
    http.auth = ADMIN
    stored = http.get(f"{base}/download/study/{study}.zip")
    deflated = http.get(f"{base}/download/study/{study}.zip", params={"deflate": 1})
    assert stored.ok and deflated.ok
    with zipfile.ZipFile(io.BytesIO(stored.content)) as a, zipfile.ZipFile(io.BytesIO(deflated.content)) as b:
        assert a.testzip() is None and b.testzip() is None
        assert {i.compress_type for i in b.infolist()} == {zipfile.ZIP_DEFLATED}
        assert {n: a.read(n) for n in a.namelist()} == {n: b.read(n) for n in b.namelist()}
    assert len(deflated.content) < 0.6 * len(stored.content)
    assert http.get(f"{base}/download/study/{study}.zip", params={"deflate": "yes"}).status_code == 400
    assert http.get(f"{base}/download/study/{study}.tar", params={"deflate": 1}).status_code == 400

    sop = str(read_dataset(files[0]).SOPInstanceUID)
    make_master(store, sop)
    answer = http.get(f"{base}/download/instance/{sop}", params={"variant": "original"})
    assert answer.ok and answer.headers["X-RadPress-Original"].startswith("lossless-master; codec=jpegls")
    assert answer.headers["X-Transfer-Syntax"] == "1.2.840.10008.1.2.4.80"
    got = read_dataset(io.BytesIO(answer.content))
    assert str(got.SOPInstanceUID) == sop
    assert np.array_equal(decode_all(got), decode_all(read_dataset(files[0])))
    listed = {i["sop_uid"]: i["master"] for i in http.get(f"{base}/api/studies/{study}").json()["instances"]}
    assert listed[sop]["state"] == "master" and listed[sop]["original_bytes"] == files[0].stat().st_size
    assert sum(m is None for m in listed.values()) == 2
    lossless = http.get(f"{base}/download/instance/{sop}", params={"variant": "lossless"})
    assert lossless.content == answer.content  # the master is the lossless copy
    lossy = http.get(f"{base}/download/instance/{sop}", params={"variant": "lossy"})  # made from the master on demand
    assert lossy.ok and lossy.headers["X-Lossy-Compression"].startswith("ratio=") and "X-RadPress-Original" not in lossy.headers
    assert read_dataset(io.BytesIO(lossy.content)).LossyImageCompression == "01"
    bundle = http.get(f"{base}/download/study/{study}.zip", params={"deflate": 1})
    assert bundle.headers["X-RadPress-Original"] == "lossless-master instances=1/3"
    with zipfile.ZipFile(io.BytesIO(bundle.content)) as z:  # the master is stored, the uncompressed ones deflated
        assert sorted(i.compress_type for i in z.infolist()) == [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_DEFLATED]


def test_the_original_sent_again_after_mastering_is_a_duplicate(tmp_path):
    store, sop, source = _stored(tmp_path, "u12_odd")
    make_master(store, sop)
    master = store.artifact(sop, "original")
    [again] = list(ingest(store, [source]))
    assert again.status == "duplicate" and store.artifact(sop, "original") == master
    assert not store.original_path(sop).exists() and store.check()["unindexed_originals"] == []


def test_the_study_page_says_which_originals_are_masters(tmp_path, live_app):
    import dash
    from flask import g

    from core.users import Users

    _base, app = live_app(demo=False)
    study_layout = dash.page_registry["pages.study"]["layout"]  # registered by the app just made
    store = app.server.extensions["radpress"]["store"]
    files = [write_kind(kind, tmp_path / "in", study_uid="1.2.826.0.1.3680043.8.498.55")
             for kind in ("u10", "u12_dirty", "already_lossy")]
    list(ingest(store, files))
    for path in files:
        make_master(store, str(read_dataset(path).SOPInstanceUID))
    with app.server.test_request_context("/study"):
        g.user = Users(store).authenticate(*ADMIN)
        page = str(study_layout(uid="1.2.826.0.1.3680043.8.498.55"))
    assert "2 of 3 originals are lossless masters" in page and "X-RadPress-Original" in page
    assert page.count("Original = lossless master (jpegls, bit-exact to the file received, checked by pylibjpeg)") == 1
    # the master of an already-lossy image is never called lossless
    assert "Original = master of a LOSSY image, recompressed without further loss (jpegls" in page
    assert "Original kept as it came: the bits above Bits Stored" in page
    assert "variant=original&amp;deflate=1" in page or "variant=original&deflate=1" in page
    with app.server.test_request_context("/policy"):  # the Policy page shows strategy 5's cost beside 1-4
        g.user = Users(store).authenticate(*ADMIN)
        policy_page = str(dash.page_registry["pages.policy"]["layout"]())
    assert all(f"strategy-cost-{n}" in policy_page for n in range(1, 6)) and "Lossless master" in policy_page


KILL = """
import os, sys
import core.master as master
from core.store import Store

setattr(master, sys.argv[3], lambda *args, **kwargs: os._exit(9))  # the process dies there: no finally, no cleanup
master.make_master(Store(sys.argv[1]), sys.argv[2])
"""


@pytest.mark.parametrize("step", ["_rename", "_switch", "_remove_original"])
def test_a_process_killed_at_any_step_leaves_a_readable_instance(tmp_path, step):
    store, sop, source = _stored(tmp_path, "s16")
    killed = subprocess.run([sys.executable, "-c", KILL, str(store.root), sop, step], capture_output=True, text=True,
                            timeout=120, cwd=Path(__file__).parents[2])
    assert killed.returncode == 9, killed.stderr
    expected = decode_all(read_dataset(source))
    with variant_file(store, sop, "original").stream as fh:  # at least one copy, and the index names one that exists
        assert np.array_equal(decode_all(read_dataset(fh)), expected)
    for stray in (store.root / "artifacts").rglob("master.*"):  # a master nobody names yet: quiet long enough
        os.utime(stray, (stray.stat().st_mtime - 3600,) * 2)
    report = store.check()
    assert report["missing_originals"] == [] and report["unindexed_originals"] == []
    make_master(store, sop)  # done now, or finished before
    assert master_of(store, sop).mastered and not store.original_path(sop).exists()
    assert store.check(verify=True)["master_mismatches"] == [] and not list((store.root / "tmp").iterdir())
    with variant_file(store, sop, "original").stream as fh:
        assert np.array_equal(decode_all(read_dataset(fh)), expected)


def test_a_kept_record_is_not_written_for_an_instance_deleted_meanwhile(tmp_path):
    """A delete (core.housekeeping) landing while strategy 5 looks at the instance leaves no masters row behind."""
    from core.housekeeping import delete_study
    from core.users import Users

    store, sop, _ = _stored(tmp_path, "u12_dirty")
    original = store.artifact(sop, "original")
    [study] = [r["study_uid"] for r in store.query("SELECT study_uid FROM series")]
    delete_study(store, Users(store).add("boss", "correct-horse-battery", "admin"), study)
    master_module._keep(store, original, "looked at before the delete")
    assert store.query("SELECT count(*) FROM masters")[0][0] == 0


@pytest.mark.parametrize("kind,overrides,mastered", [("u12_dirty", {}, False), ("s12", {"dirty_high_bits": True}, False),
                                                     ("s12", {}, True), ("u12_odd", {}, True)],
                         ids=["unsigned-dirty", "signed-dirty", "signed", "unsigned"])
def test_an_rle_original_with_data_above_bits_stored_is_kept(tmp_path, kind, overrides, mastered):
    """Decoders mask to Bits Stored, so an RLE original's high bits (overlays, noise) were mastered away unseen and its
    file unlinked; its words are now read unmasked as an uncompressed file's are."""
    from pydicom.uid import RLELossless

    from tests.synthetic import KINDS, make_dataset, write

    ds = make_dataset(**{**KINDS[kind], **overrides})
    ds.compress(RLELossless)
    source = write(ds, tmp_path / "in" / "rle.dcm")
    store = Store(tmp_path / "data")
    assert [r.status for r in ingest(store, [source])] == ["stored"]
    sop = str(ds.SOPInstanceUID)
    before = store.artifact(sop, "original")
    after = make_master(store, sop)
    assert master_of(store, sop).mastered is mastered
    if not mastered:
        assert after == before and sha256_file(before.path) == sha256_file(source)
        assert "above Bits Stored" in master_of(store, sop).reason
    else:
        assert np.array_equal(gdcm_pixels(after.path, tmp_path), decode_all(read_dataset(source)))


def test_a_compressed_original_only_one_decoder_reads_is_kept(tmp_path):
    """A JPEG 2000 lossless original: its pixels are what OpenJPEG reads (Pillow's decoder is OpenJPEG too), and for
    JPEG lossless the checker itself (libjpeg); a master of a misreading would pass and the only correct copy go."""
    from core.compress import compress

    ds = compress(read_dataset(write_kind("u12_odd", tmp_path / "src")), "j2k", "lossless").dataset
    path = tmp_path / "in" / "j2k.dcm"
    path.parent.mkdir()
    ds.save_as(path, enforce_file_format=True)
    store = Store(tmp_path / "data")
    assert [r.status for r in ingest(store, [path])] == ["stored"]
    sop = str(ds.SOPInstanceUID)
    before = store.artifact(sop, "original")
    assert make_master(store, sop) == before and sha256_file(before.path) == sha256_file(path)
    record = master_of(store, sop)
    assert record.state == "kept" and "only one decoder here reads it" in record.reason


def test_an_administrator_asks_for_a_refused_master_to_be_checked_again(tmp_path, live_app):
    """POST /api/studies/<uid>/masters/retry: administrators only; the record goes (audited as theirs) and a job is queued."""
    from core.users import Users

    base, app = live_app(demo=False)
    store = app.server.extensions["radpress"]["store"]
    [result] = list(ingest(store, [write_kind("u12_odd", tmp_path / "in")]))
    sop = store.instances(result.study_uid)[0]["sop_uid"]
    master_module._keep(store, store.artifact(sop, "original"), "the check refused it (simulated)", "failed")
    Users(store).add("rad", "radiologist-pw", "radiologist")
    url = f"{base}/api/studies/{result.study_uid}/masters/retry"
    assert requests.post(url, auth=("rad", "radiologist-pw"), timeout=30).status_code == 403
    assert master_of(store, sop).state == "failed"
    answer = requests.post(url, auth=ADMIN, timeout=30)
    assert answer.status_code == 200 and isinstance(answer.json()["job"], int) and master_of(store, sop) is None
    assert store.query("SELECT user FROM audit ORDER BY id DESC LIMIT 1")[0]["user"] == ADMIN[0]
    assert requests.post(url, auth=ADMIN, timeout=30).json() == {"job": None}  # nothing left to check again
    assert requests.post(f"{base}/api/studies/1.2.3.999/masters/retry", auth=ADMIN, timeout=30).status_code == 404
