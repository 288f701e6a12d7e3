import os
import time

import numpy as np
import pytest

from core.archive import Forbidden, plan, storage_report, thumbnail_bytes, variant_file
from core.ingest import ingest
from core.jobs import Jobs
from core.pixels import decode_all, read_dataset
from core.policy import Policy, ratio_for, ratio_warning
from core.samples import sample
from core.store import QUIET_SECONDS, Store
from core.verify import verify


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "data")
    list(ingest(store, [sample("MR2_UNCR"), sample("693_UNCR")]))
    return store


def study_of(store, modality):
    return next(s["study_uid"] for s in store.studies() if s["modalities"] == modality)


def variants(store, study_uid):
    return sorted((a.variant, a.ratio) for a in store.artifacts(study_uid=study_uid))


def test_strategy_1_keeps_everything(store):
    mr = study_of(store, "MR")
    Jobs(store, workers=1).submit(mr)
    Jobs(store, workers=1).run_pending()
    assert variants(store, mr) == [("lossless", 0), ("lossy", 7), ("original", 0), ("thumbnail", 0)]
    lossy = store.artifact(store.instances(mr)[0]["sop_uid"], "lossy", 7)
    ds = read_dataset(lossy.path)
    assert ds.LossyImageCompression == "01" and abs(float(ds.LossyImageCompressionRatio) - 7) < 0.7


@pytest.mark.parametrize("strategy, expected", [
    (2, [("lossless", 0), ("original", 0)]),
    (3, [("lossy", 7), ("original", 0)]),
    (4, [("original", 0)]),
])
def test_changing_strategy_plans_the_difference(store, strategy, expected):
    mr = study_of(store, "MR")
    jobs = Jobs(store, workers=1)
    jobs.submit(mr)
    jobs.run_pending()
    original = store.artifact(store.instances(mr)[0]["sop_uid"], "original")
    before = original.path.read_bytes()
    store.set_study_strategy(mr, strategy)
    todo = plan(store, mr)
    assert all(w.variant != "original" for w in todo.make) and all(a.variant != "original" for a in todo.remove)
    jobs.submit(mr)
    jobs.run_pending()
    assert variants(store, mr) == expected
    assert original.path.read_bytes() == before  # originals untouched
    assert plan(store, mr).make == () and plan(store, mr).remove == ()


def test_lossy_off_makes_and_serves_no_lossy(store):
    mr = study_of(store, "MR")
    store.set_policy(Policy(lossy_enabled=False))
    jobs = Jobs(store, workers=1)
    jobs.submit(mr)
    jobs.run_pending()
    assert ("lossy", 7) not in variants(store, mr)
    with pytest.raises(Forbidden):
        variant_file(store, store.instances(mr)[0]["sop_uid"], "lossy")


def test_on_demand_variant_is_cached(store):
    ct = study_of(store, "CT")
    store.set_study_strategy(ct, 4)
    sop = store.instances(ct)[0]["sop_uid"]
    first = variant_file(store, sop, "lossy", 10)
    data = first.stream.read()
    first.close()
    second = variant_file(store, sop, "lossy", 10)
    assert not first.from_cache and second.from_cache and second.stream.read() == data
    second.close()
    lossless = variant_file(store, sop, "lossless")
    path = store.root / "tmp" / "x.dcm"
    path.write_bytes(lossless.stream.read())
    lossless.close()
    assert verify(read_dataset(sample("693_UNCR")), read_dataset(path)).metrics.identical


def test_storage_report_measures_and_estimates(store):
    mr = study_of(store, "MR")
    report = storage_report(store, mr)
    assert report["bytes_now"] == {"original": sample("MR2_UNCR").stat().st_size}
    by = {s["strategy"]: s for s in report["strategies"]}
    assert by[4]["bytes"] == report["bytes_total"] and not by[4]["estimated"]
    assert by[1]["estimated"] and by[1]["bytes"] > by[2]["bytes"] > by[4]["bytes"]
    jobs = Jobs(store, workers=1)
    jobs.submit(mr)
    jobs.run_pending()
    measured = {s["strategy"]: s for s in storage_report(store, mr)["strategies"]}
    assert not measured[1]["estimated"] and measured[1]["bytes"] == storage_report(store, mr)["bytes_total"]
    assert abs(measured[2]["bytes"] - by[2]["bytes"]) / by[2]["bytes"] < 0.05  # the estimate was close


def test_ratio_table_and_warnings():
    policy = Policy()
    assert ratio_for(policy, "CT", "HEAD") == 5 and ratio_for(policy, "CT", "CHEST") == 8
    assert ratio_for(policy, "CR") == 10 and ratio_for(policy, "MG") == 15 and ratio_for(policy, "MR") == 7
    assert ratio_for(policy, "XA") == 6 and ratio_for(policy, "US") == policy.default_ratio
    assert ratio_warning("CT", 13, "BRAIN") and not ratio_warning("CT", 13, "CHEST")
    assert ratio_warning("CR", 31) and not ratio_warning("CR", 30)


def test_thumbnail(store):
    sop = store.instances(study_of(store, "MR"))[0]["sop_uid"]
    data, etag = thumbnail_bytes(store, sop)
    assert data.startswith(b"\x89PNG") and etag


def test_check_repairs_after_a_crash(store):
    mr = study_of(store, "MR")
    jobs = Jobs(store, workers=1)
    jobs.submit(mr)
    jobs.run_pending()
    lossless = store.artifact(store.instances(mr)[0]["sop_uid"], "lossless")
    lossless.path.unlink()  # a row pointing at nothing
    orphan = store.root / "artifacts" / "zz" / "orphan.dcm"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half")
    part = store.root / "tmp" / ".x.part"
    part.write_bytes(b"half")
    for path in (orphan, part):  # left by a crash: nobody has written them for longer than the quiet time
        os.utime(path, (time.time() - QUIET_SECONDS - 1,) * 2)
    report = store.check()
    assert str(lossless.path) in report["missing_files"] and str(orphan) in report["orphan_files"]
    assert not orphan.exists() and not part.exists()
    assert store.artifact(lossless.sop_uid, "lossless") is None
    assert np.array_equal(decode_all(read_dataset(store.artifact(lossless.sop_uid, "original").path)),
                          decode_all(read_dataset(sample("MR2_UNCR"))))


def test_check_indexes_an_original_placed_just_before_a_crash(tmp_path):
    import shutil

    from pydicom import dcmread

    store = Store(tmp_path / "data")
    ds = dcmread(sample("MR2_UNCR"))
    target = store.original_path(ds.SOPInstanceUID)
    target.parent.mkdir(parents=True)
    shutil.copy(sample("MR2_UNCR"), target)  # file in place, row never committed
    report = store.check()
    assert report["reindexed_originals"] == [str(target)] and target.exists()
    assert store.instance(ds.SOPInstanceUID)["modality"] == "MR"


def test_an_asked_for_ratio_of_zero_is_refused_not_the_default(store):
    """ratio=0 is out of range like 0.5: it used to be read as "not given" and served the clinic's default ratio."""
    from core.archive import codestream_path
    from core.errors import InvalidOptionError

    sop = store.instances(study_of(store, "CT"))[0]["sop_uid"]
    for ratio in (0, 0.0, 1):
        with pytest.raises(InvalidOptionError, match="out of range"):
            variant_file(store, sop, "lossy", ratio)
        with pytest.raises(InvalidOptionError, match="out of range"):
            codestream_path(store, sop, 0, "lossy", ratio)


def test_asked_for_ratios_share_cached_codestreams(store):
    """Any logged-in user may ask for any ratio: near-equal asks reuse one cached codestream instead of adding files."""
    from core.archive import codestream_path

    sop = store.instances(study_of(store, "CT"))[0]["sop_uid"]
    paths = {codestream_path(store, sop, 0, "lossy", ratio)[0] for ratio in (10, 10.01, 10.2, 9.96)}
    assert len(paths) == 1
    assert len(list((store.root / "cache" / "codestreams").glob("*.j2k"))) == 1
    assert codestream_path(store, sop, 0, "lossy", 12)[0] not in paths


def test_no_lossy_copy_is_planned_for_a_palette_colour_image(tmp_path):
    """A lossy copy of palette indices is refused by every codec: planning one only made the study's job fail."""
    import numpy as np

    from tests.synthetic import make_dataset, write

    store = Store(tmp_path / "data")
    ds = make_dataset(rows=16, columns=16, bits_allocated=8, bits_stored=8, modality="OT")
    ds.PhotometricInterpretation = "PALETTE COLOR"
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", (np.arange(256, dtype="<u2") * 257).tobytes())
    [result] = ingest(store, [write(ds, tmp_path / "palette.dcm")])
    assert result.status == "stored" and Policy().lossy_enabled and Policy().strategy == 1
    todo = plan(store, result.study_uid)
    assert {w.variant for w in todo.make} == {"lossless", "thumbnail"}
    jobs = Jobs(store, workers=1)
    job_id = jobs.submit(result.study_uid)
    jobs.run_pending()
    job = jobs.get(job_id)
    assert (job["state"], job["failed"], job["errors"]) == ("done", 0, [])


def test_a_storage_projection_encodes_its_sample_once_however_many_ask(store, monkeypatch):
    """The estimated lossless ratio costs one encode (~0.1 s, more for large images): cached, single flight."""
    import threading

    from core import archive

    encodes, real = [], archive._encode
    monkeypatch.setattr(archive, "_encode", lambda *args: encodes.append(args) or real(*args))
    mr = study_of(store, "MR")
    reports = []
    threads = [threading.Thread(target=lambda: reports.append(storage_report(store, mr))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(encodes) == 1 and len(reports) == 4 and all(r == reports[0] for r in reports)
    assert storage_report(store)["studies"] == 2 and len(encodes) == 2  # the other study's sample, once
    storage_report(store)
    assert len(encodes) == 2


def test_a_studys_job_warms_its_storage_projection_so_no_request_encodes(tmp_path, monkeypatch):
    from core import archive
    from tests.synthetic import write_kind

    store = Store(tmp_path / "data")
    [result] = list(ingest(store, [write_kind("s12", tmp_path)]))
    store.set_study_strategy(result.study_uid, 4)  # original only: the lossless size is estimated from a sample
    jobs = Jobs(store, workers=1)
    jobs.submit(result.study_uid)  # as every entry point does after an ingest
    assert [j["state"] for j in jobs.run_pending()] == ["done"]
    encodes = []
    monkeypatch.setattr(archive, "_encode", lambda *args: encodes.append(args))
    report = storage_report(store, result.study_uid)
    assert encodes == [] and report["strategies"][0]["estimated"]
    assert storage_report(store)["studies"] == 1 and encodes == []


def _pixel_data(artifact):
    return read_dataset(artifact.path).PixelData


@pytest.mark.parametrize("kind", ["multiframe", "s12", "rgb", "already_lossy"])
def test_make_artifacts_decodes_each_frame_once_and_makes_what_one_by_one_makes(kind, tmp_path, monkeypatch):
    """Strategy 1 from one decode: the same codestreams and thumbnail as each variant made on its own, lossless bit-exact."""
    from core import archive
    from tests.synthetic import write_kind

    path = write_kind(kind, tmp_path)
    together, alone = Store(tmp_path / "together"), Store(tmp_path / "alone")
    [result] = list(ingest(together, [path]))
    list(ingest(alone, [path]))
    wanted = list(plan(together, result.study_uid).make)
    assert sorted(w.variant for w in wanted) == ["lossless", "lossy", "thumbnail"]
    decodes, real = [], archive.decode_frame
    monkeypatch.setattr(archive, "decode_frame", lambda ds, index: decodes.append(index) or real(ds, index))
    made = {a.variant: a for a in archive.make_artifacts(together, wanted)}
    frames = together.instance(result.sop_uid)["frames"]
    assert sorted(decodes) == list(range(frames))  # every frame once, for the three of them
    for w in wanted:
        single = archive.make_artifact(alone, w)
        if w.variant == "thumbnail":
            assert made["thumbnail"].path.read_bytes() == single.path.read_bytes()
        else:
            assert _pixel_data(made[w.variant]) == _pixel_data(single), w.variant
            assert made[w.variant].achieved_ratio == single.achieved_ratio
    assert {a.variant for a in together.artifacts(result.sop_uid)} == {"original", "lossless", "lossy", "thumbnail"}
    original = decode_all(read_dataset(together.artifact(result.sop_uid, "original").path))
    assert np.array_equal(decode_all(read_dataset(made["lossless"].path)), original)
    assert read_dataset(made["lossy"].path).LossyImageCompression == "01"


def test_make_artifacts_keeps_what_was_written_before_an_encoder_fails(tmp_path, monkeypatch):
    from core import archive
    from core.errors import CodecError
    from tests.synthetic import write_kind

    store = Store(tmp_path / "data")
    [result] = list(ingest(store, [write_kind("u12_odd", tmp_path)]))
    wanted = list(plan(store, result.study_uid).make)
    real = archive.compress

    def failing(ds, codec, mode, *args, **kwargs):
        if mode == "lossy":
            raise CodecError("the encoder failed")
        return real(ds, codec, mode, *args, **kwargs)

    monkeypatch.setattr(archive, "compress", failing)
    with pytest.raises(CodecError, match="the encoder failed"):
        archive.make_artifacts(store, wanted)
    assert sorted(a.variant for a in store.artifacts(result.sop_uid)) == ["lossless", "original", "thumbnail"]
    assert not list((store.root / "artifacts").rglob("*.part"))  # no half-written file
