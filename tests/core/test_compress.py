"""Honest ratios: every lossy result says whether it reached its target, and why not."""

import json

import numpy as np
import pytest
from pydicom.encaps import generate_frames

from core.cli import main
from core.codecs import get_codec
from core.codecs.rate import RATIO_TOLERANCE
from core.compress import artifact_warning, compress, ratio_outcome
from core.errors import InvalidOptionError
from core.pixels import pixel_spec, read_dataset
from tests.synthetic import KINDS, make_dataset, write

J2K = get_codec("j2k", True)


def blank(**overrides):
    """A uniform image: every lossy codec compresses it far beyond any target, even at its finest setting."""
    ds = make_dataset(**{**KINDS["u12_odd"], "modality": "OT", **overrides})
    spec = pixel_spec(ds)
    ds.PixelData = np.full(spec.shape, 1000, dtype=spec.dtype).tobytes()
    return ds


def file_ratio(path) -> float:
    """The achieved ratio measured from the written file alone: uncompressed bytes over the encapsulated frames."""
    ds = read_dataset(path)
    spec = pixel_spec(ds)
    sizes = [len(f) for f in generate_frames(ds.PixelData, number_of_frames=spec.frames)]
    return spec.frame_bytes * spec.frames / sum(sizes)


def test_outcome_within_tolerance_is_reached_without_warning():
    for achieved in (9.0, 10.0, 11.0):
        outcome = ratio_outcome(10, achieved, J2K, 512, 512, frame_bytes=512 * 512 * 2)
        assert outcome.reached and outcome.reason is None and outcome.warning is None
    assert RATIO_TOLERANCE == pytest.approx(0.10)


def test_outcome_below_the_target_names_the_cause():
    outcome = ratio_outcome(50, 31.0, J2K, 64, 64, frame_bytes=64 * 64 * 2)
    assert not outcome.reached and "headers" in outcome.reason and "64 × 64" in outcome.reason
    assert "lower ratio" in outcome.reason
    assert outcome.warning.startswith("target 50:1 not reached: achieved 31.00:1")
    large = ratio_outcome(50, 31.0, J2K, 2000, 2000, frame_bytes=8_000_000)
    assert "strongest setting" in large.reason
    near = ratio_outcome(50, 20.0, get_codec("jpegls", True), 2000, 2000, frame_bytes=8_000_000)
    assert "NEAR" in near.reason


def test_outcome_above_the_target_is_not_silent():
    outcome = ratio_outcome(5, 80.0, J2K, 64, 64, frame_bytes=8192)
    assert not outcome.reached and "finest" in outcome.reason and "80.00:1" in outcome.warning


def test_outcome_above_the_upper_bound_is_reported_even_when_reached():
    outcome = ratio_outcome(24, 25.5, J2K, 512, 512, frame_bytes=512 * 512 * 2, bound=24)
    assert outcome.reached and outcome.above_bound and "upper bound of 24:1" in outcome.warning
    assert not ratio_outcome(24, 23.5, J2K, 512, 512, bound=24).above_bound


@pytest.mark.parametrize("codec", ["j2k", "htj2k", "jpegls", "jxl"])
def test_a_blank_image_is_judged_by_what_was_achieved(codec):
    result = compress(blank(), codec, "lossy", 5)
    outcome = result.outcome
    within = abs(result.ratio / 5 - 1) <= RATIO_TOLERANCE
    assert outcome.reached is within and outcome.achieved == pytest.approx(result.ratio)
    assert bool(result.warnings) is not within


@pytest.mark.parametrize("size, side", [(100, "finest"), (4000, "lower ratio")])
def test_an_encoder_that_misses_is_reported_on_either_side(monkeypatch, size, side):
    from core.codecs import j2k

    monkeypatch.setattr(j2k, "encode", lambda frame, spec, ratio: bytes(size))
    ds = make_dataset(**KINDS["multiframe"])  # 5 frames of 64×64×2 bytes: 8192 bytes each
    result = compress(ds, "j2k", "lossy", 10)
    assert result.ratio == pytest.approx(8192 / size)
    assert result.outcome.reached is False and side in result.outcome.reason
    assert len(result.warnings) == 1


def test_lossless_has_no_target():
    result = compress(blank(), "j2k", "lossless")
    assert result.outcome is None and result.warnings == ()


def test_over_bound_refuse_cap_and_allow():
    mr = make_dataset(**KINDS["u10"])  # MR: CAR upper bound 24:1
    with pytest.raises(InvalidOptionError, match="upper bound of 24:1"):
        compress(mr, "j2k", "lossy", 30, over_bound="refuse")
    capped = compress(mr, "j2k", "lossy", 30, over_bound="cap")
    assert capped.target_ratio == 24 and capped.requested_ratio == 30 and capped.upper_bound == 24
    assert "capped at 24:1" in capped.warnings[0]
    allowed = compress(mr, "j2k", "lossy", 30)
    assert allowed.target_ratio == 30 and allowed.cap_note is None
    ot = make_dataset(**KINDS["u8_odd"])  # no CAR bound for OT
    assert compress(ot, "j2k", "lossy", 50, over_bound="refuse").upper_bound is None
    with pytest.raises(InvalidOptionError, match="over_bound"):
        compress(ot, "j2k", "lossy", 5, over_bound="maybe")


def test_brain_ct_has_the_lower_bound():
    ct = make_dataset(**KINDS["s12"])
    ct.BodyPartExamined = "HEAD"
    with pytest.raises(InvalidOptionError, match="12:1 for CT brain"):
        compress(ct, "j2k", "lossy", 13, over_bound="refuse")
    assert compress(ct, "j2k", "lossy", 13, over_bound="cap").target_ratio == 12


def test_artifact_warning_for_a_stored_copy():
    from pathlib import Path

    from core.store import Artifact

    row = {"modality": "MR", "body_part": "", "study_description": "", "rows": 64, "columns": 64, "frames": 5,
           "uncompressed_bytes": 5 * 64 * 64 * 2}
    missed = Artifact("1.2", "lossy", 50, "htj2k", "", 10, "", Path("x"), 30.0)
    assert "target 50:1 not reached" in artifact_warning(row, missed)
    reached = Artifact("1.2", "lossy", 10, "htj2k", "", 10, "", Path("x"), 10.4)
    assert artifact_warning(row, reached) is None
    lossless = Artifact("1.2", "lossless", 0, "htj2k", "", 10, "", Path("x"), 3.0)
    assert artifact_warning(row, lossless) is None


# -- the command line --------------------------------------------------------
def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("kind", ["u8_odd", "u10", "u12_odd", "s12", "rgb", "multiframe"])
@pytest.mark.parametrize("codec", ["j2k", "htj2k", "jpegls", "jxl"])
def test_compress_json_never_silently_misses(kind, codec, capsys, tmp_path):
    """target_reached agrees with the ratio measured from the written file; a miss has a reason and one stderr line."""
    source = write(make_dataset(**{**KINDS[kind], "modality": "OT"}), tmp_path / f"{kind}.dcm")
    for ratio in (10, 50):
        code, out, err = run_cli(capsys, "compress", source, "--codec", codec, "--mode", "lossy", "--ratio", ratio,
                                 "--out", tmp_path / f"out{ratio}", "--json")
        if code == 2:  # refused before any work (signed data in JPEG XL / JPEG-LS near-lossless)
            assert "signed" in err and not list((tmp_path / f"out{ratio}").iterdir())
            continue
        assert code == 0, err
        [row] = json.loads(out)
        assert row["achieved_ratio"] == pytest.approx(file_ratio(row["output"]), rel=0.01)  # fragments are padded to even
        within = abs(row["achieved_ratio"] / ratio - 1) <= RATIO_TOLERANCE
        assert row["target_ratio"] == ratio and row["target_reached"] is within
        if within:
            assert row["reason"] is None and err == ""
        else:
            assert row["reason"] and len(err.strip().splitlines()) == 1 and "not reached" in err


def test_compress_json_for_a_blank_image(capsys, tmp_path):
    source = write(blank(), tmp_path / "blank.dcm")
    code, out, err = run_cli(capsys, "compress", source, "--codec", "j2k", "--mode", "lossy", "--ratio", 5, "--out", tmp_path / "o", "--json")
    assert code == 0
    [row] = json.loads(out)
    assert row["target_reached"] is False and row["achieved_ratio"] > 5.5 and "finest" in row["reason"]
    assert err.startswith("warning: ") and "target 5:1 not reached" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "compress", source, "--codec", "j2k", "--mode", "lossy", "--ratio", 5, "--out", tmp_path / "t")
    assert "NOT reached" in out


def test_compress_refuses_a_ratio_above_the_upper_bound(tmp_path):
    import subprocess
    import sys

    source = write(make_dataset(**KINDS["u10"]), tmp_path / "mr.dcm")
    proc = subprocess.run([sys.executable, "-m", "core", "compress", str(source), "--codec", "j2k", "--mode", "lossy",
                           "--ratio", "30", "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "upper bound of 24:1" in proc.stderr and "at most 24:1" in proc.stderr
    assert not any((tmp_path / "o").iterdir())


# -- end to end: jobs, the API and the pages show what was achieved ----------
def test_a_missed_target_travels_from_the_job_to_the_api_and_pages(live_app, tmp_path):
    import time

    import requests

    from tests.conftest import ADMIN

    base, app = live_app()
    from components.job_progress import make_job_table  # pages register themselves once the app exists
    from core.studylist import _achieved, study_page
    from pages.study import _artifact_text

    http = requests.Session()
    http.auth = ADMIN
    # 16×16 OT (no CAR bound) at 50:1 needs 10-byte codestreams: no codec's headers fit, so every copy misses
    assert http.put(f"{base}/api/policy", json={"strategy": 3, "default_ratio": 50}).ok
    tiny = write(make_dataset(rows=16, columns=16, bits_stored=12, modality="OT"), tmp_path / "tiny.dcm")
    normal = write(make_dataset(**{**KINDS["u12_odd"], "modality": "OT"}), tmp_path / "normal.dcm")
    job_ids = set()
    for path in (tiny, normal):
        up = http.post(f"{base}/api/upload", params={"name": path.name}, data=path.read_bytes())
        assert up.ok, up.text
        job_ids |= set(up.json()["jobs"])
    deadline = time.time() + 120
    while time.time() < deadline:
        jobs = [http.get(f"{base}/api/jobs/{j}").json() for j in job_ids]
        if all(j["state"] in ("done", "failed") for j in jobs):
            break
        time.sleep(0.3)
    warnings = [w for j in jobs for w in j["warnings"]]
    study_uid = jobs[0]["study_uid"]
    detail = http.get(f"{base}/api/studies/{study_uid}").json()
    by_sop = {i["sop_uid"]: i for i in detail["instances"]}
    tiny_sop = next(s for s, i in by_sop.items() if i["rows"] == 16)
    [lossy] = [a for a in by_sop[tiny_sop]["artifacts"] if a["variant"] == "lossy"]
    assert lossy["ratio"] == 50 and lossy["achieved_ratio"] < 45 and lossy["target_reached"] is False
    assert "target 50:1 not reached" in lossy["warning"] and "headers" in lossy["warning"]
    assert [w["sop_uid"] for w in warnings if w["sop_uid"] == tiny_sop] == [tiny_sop]
    assert next(w for w in warnings if w["sop_uid"] == tiny_sop)["warning"] == lossy["warning"]

    listed = next(s for s in http.get(f"{base}/api/studies").json() if s["study_uid"] == study_uid)
    achieved = [a["achieved_ratio"] for i in detail["instances"] for a in i["artifacts"] if a["variant"] == "lossy"]
    assert listed["lossy_ratio_min"] == pytest.approx(min(achieved)) and listed["lossy_ratio_max"] == pytest.approx(max(achieved))

    store = app.server.extensions["radpress"]["store"]
    art = store.artifact(tiny_sop, "lossy", 50)
    assert _artifact_text(art).startswith(f"lossy {art.achieved_ratio:.1f}:1 achieved") and "target 50:1" in _artifact_text(art)
    assert "missed the target" in _achieved([{"achieved_ratio": art.achieved_ratio, "ratio": art.ratio}])
    from flask import g

    from core.users import Users
    from pages.study import layout as study_layout

    admin = Users(store).authenticate(*ADMIN)
    with app.server.test_request_context("/study"):
        g.user = admin
        page = str(study_layout(uid=study_uid))
        listed_row = next(r for r in study_page(store, admin).rows if r["uid"] == study_uid)
    assert f"lossy {art.achieved_ratio:.1f}:1 achieved" in page and "lossy-warning" in page and lossy["warning"] in page
    assert "study-lossy-setting" in page and "at 50:1" in page
    assert listed_row["lossy_ratio"].startswith(f"{min(achieved):.1f}") and "missed the target" in listed_row["lossy_ratio"]
    table = str(make_job_table(jobs, False))
    assert "job-warnings" in table and "target 50:1 not reached" in table

    # a per-study ratio set over the API keeps the codec it was chosen for, and the next job uses both
    put = http.put(f"{base}/api/studies/{study_uid}/ratio", json={"ratio": 8, "codec": "htj2k"})
    assert put.ok and put.json()["codec"] == "htj2k"
    assert http.put(f"{base}/api/studies/{study_uid}/ratio", json={"ratio": 8, "codec": 5}).status_code == 400
    assert http.put(f"{base}/api/studies/{study_uid}/ratio", json={"ratio": 8, "codec": "webp"}).status_code == 400
    from core.archive import wanted_for

    wanted = {(w.codec, w.ratio) for row in store.instances(study_uid) for w in wanted_for(store.policy(), 3, row)
              if w.variant == "lossy"}
    assert wanted == {("htj2k", 8)}
    assert (store.study(study_uid)["lossy_codec"], store.study(study_uid)["ratio"]) == ("htj2k", 8)


def test_on_demand_lossy_copies_never_exceed_the_upper_bound(tmp_path):
    """Downloads, DIMS and previews asked for 50:1 of an MR get at most the CAR bound of 24:1."""
    from core.archive import codestream_path, variant_file
    from core.ingest import ingest
    from core.store import Store

    store = Store(tmp_path / "data")
    mr = make_dataset(**{**KINDS["u10"], "rows": 256, "columns": 256})
    [result] = list(ingest(store, [write(mr, tmp_path / "mr.dcm")]))
    vf = variant_file(store, result.sop_uid, "lossy", 50)
    vf.close()
    assert vf.lossy_ratio <= 24 * (1 + RATIO_TOLERANCE)
    _, achieved = codestream_path(store, result.sop_uid, 0, "lossy", 50)
    assert achieved <= 24 * (1 + RATIO_TOLERANCE)


def test_an_achieved_ratio_above_the_upper_bound_is_reported(monkeypatch, capsys, tmp_path):
    from core.codecs import j2k

    source = write(make_dataset(**KINDS["u10"]), tmp_path / "mr.dcm")  # MR, 96×80×2 = 15360 bytes, bound 24:1
    monkeypatch.setattr(j2k, "encode", lambda frame, spec, ratio: bytes(600))  # 25.6:1: within 10 % of 24, above the bound
    code, out, err = run_cli(capsys, "compress", source, "--codec", "j2k", "--mode", "lossy", "--ratio", 24, "--out", tmp_path / "o", "--json")
    [row] = json.loads(out)
    assert code == 0 and row["target_reached"] is True and row["above_upper_bound"] is True and row["upper_bound"] == 24
    assert len(err.strip().splitlines()) == 1 and "above the CAR upper bound of 24:1" in err


def test_ingest_cli_says_which_lossy_copies_missed_their_target(capsys, tmp_path):
    from core.policy import Policy
    from core.store import Store

    Store(tmp_path / "data").set_policy(Policy(strategy=3, default_ratio=50))
    tiny = write(make_dataset(rows=16, columns=16, bits_stored=12, modality="OT"), tmp_path / "tiny.dcm")
    code, out, err = run_cli(capsys, "ingest", tiny, "--data", tmp_path / "data", "--json", "--workers", 1)
    assert code == 0
    [job] = json.loads(out)["jobs"]
    [item] = job["warnings"]
    assert f"warning: {item['sop_uid']}: target 50:1 not reached" in err
