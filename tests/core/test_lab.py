import json

import pytest

from core.cli import main
from core.errors import InvalidOptionError
from core.lab import LabConfig, recommend, run_lab, to_csv, transmission
from core.samples import sample


def row(codec, ratio, passes, dice=0.99, bpp=1.0):
    return {"codec": codec, "mode": "lossy", "target_ratio": ratio, "passes": passes, "dice_min": {"body": dice},
            "bpp": bpp, "achieved_ratio": ratio}


def test_recommendation_is_the_highest_ratio_before_the_first_failure():
    sweep = [row("j2k", 5, True), row("j2k", 10, True), row("j2k", 20, False, 0.97, 0.5), row("j2k", 30, True),
             row("htj2k", 5, False, 0.9), row("htj2k", 10, False, 0.8)]
    rec = recommend(sweep)
    assert rec["j2k"]["ratio"] == 10 and rec["j2k"]["dice_drop_ratio"] == 20 and rec["j2k"]["dice_drop_bpp"] == 0.5
    assert rec["htj2k"]["ratio"] is None and rec["htj2k"]["dice_drop_ratio"] == 5


def test_transmission_table():
    sweep = [{"codec": "j2k", "mode": "lossless", "target_ratio": None, "compressed_bytes": 1_000_000, "encode_s": 0.5, "decode_s": 0.25}]
    rows = transmission(sweep, (10, 100), 4_000_000)
    first = next(r for r in rows if r["variant"] == "uncompressed" and r["link_mbit_s"] == 10)
    assert first["transmission_s"] == pytest.approx(3.2) and first["volume_mb"] == 4
    lossless = next(r for r in rows if r["variant"] == "j2k lossless" and r["link_mbit_s"] == 100)
    assert lossless["transmission_s"] == pytest.approx(0.08) and lossless["total_s"] == pytest.approx(0.83)


def test_lossless_rows_agree_perfectly(load):
    result = run_lab([load("693_UNCR")], LabConfig(codecs=("j2k",), ratios=(10,)))
    lossless = next(r for r in result["sweep"] if r["mode"] == "lossless")
    assert lossless["psnr_min"] is None and lossless["max_error"] == 0  # PSNR ∞ reported as None
    assert all(v == 1.0 for v in lossless["dice_min"].values()) and lossless["passes"]


@pytest.mark.parametrize("name, codec", [("RG3_UNCR", "j2k"), ("693_UNCR", "htj2k"), ("MR2_UNCR", "j2k")])
def test_trends_across_the_sweep_on_real_images(load, name, codec):
    result = run_lab([load(name)], LabConfig(codecs=(codec,), ratios=(5, 10, 20, 50)))
    lossy = sorted((r for r in result["sweep"] if r["mode"] == "lossy"), key=lambda r: r["target_ratio"])
    bpp = [r["bpp"] for r in lossy]
    psnr = [r["psnr_min"] for r in lossy]
    worst = [min(r["dice_min"].values()) for r in lossy]
    assert bpp == sorted(bpp, reverse=True)
    assert psnr == sorted(psnr, reverse=True)
    assert worst[0] > worst[-1] and all(b <= a + 0.01 for a, b in zip(worst, worst[1:]))


def test_current_ratio_is_judged(load):
    result = run_lab([load("MR2_UNCR")], LabConfig(codecs=("j2k",), ratios=(5,)), current_ratio=20, current_codec="j2k")
    assert result["config"]["ratios"] == [5, 20]
    assert result["current"]["ratio"] == 20 and result["current"]["passes"] is False
    assert min(result["current"]["dice_min"].values()) < 0.98


def test_config_is_validated():
    with pytest.raises(InvalidOptionError):
        LabConfig(ratios=(1000,)).validated()


def test_cli_json_schema_and_csv(capsys, tmp_path):
    csv_path = tmp_path / "lab.csv"
    code = main(["lab", str(sample("emri_small")), "--codecs", "j2k,jxl", "--ratios", "5,10", "--json", "--csv", str(csv_path)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"study", "instances", "modalities", "config", "sweep", "per_instance", "transmission",
                           "recommendation", "current", "wall_s"}
    assert len(result["sweep"]) == 6 and result["modalities"] == ["MR"]
    for r in result["sweep"]:
        assert set(r) >= {"codec", "mode", "target_ratio", "achieved_ratio", "bpp", "psnr_min", "ssim_mean", "max_error",
                          "dice_min", "iou_min", "encode_s", "decode_s", "passes"}
    assert {t["link_mbit_s"] for t in result["transmission"]} == {10, 100, 1000}
    assert set(result["recommendation"]) == {"j2k", "jxl"}
    assert csv_path.read_text().splitlines()[0].startswith("codec,mode,target_ratio")
    assert to_csv(result).count("\n") == 7


def test_cli_bad_input(capsys, tmp_path):
    assert main(["lab", str(tmp_path / "nothing-here")]) == 2
    assert main(["lab", str(sample("emri_small")), "--codecs", "webp"]) == 2
    assert "Unknown codec" in capsys.readouterr().err


def test_a_ratio_the_codec_did_not_reach_is_not_recommended_or_applied(mr_study):
    from core.lab import apply_choice

    sweep = [row("jpegls", 10, True), dict(row("jpegls", 20, True), target_reached=False, achieved_ratio=13.0)]
    assert recommend(sweep)["jpegls"]["ratio"] == 10
    store, result = mr_study
    result["sweep"] = sweep
    with pytest.raises(InvalidOptionError, match="achieved 13.0:1"):
        apply_choice(store, result, "jpegls", 20, "study", "admin")


def test_sweep_rows_say_whether_the_target_was_reached(load):
    result = run_lab([load("emri_small")], LabConfig(codecs=("jpegls",), ratios=(5, 100)))
    rows = {r["target_ratio"]: r for r in result["sweep"]}
    for ratio in (5, 100):
        assert rows[ratio]["target_reached"] is (abs(rows[ratio]["achieved_ratio"] / ratio - 1) <= 0.10)
    assert rows[None]["target_reached"] is True
    assert result["recommendation"]["jpegls"]["ratio"] != 100 or rows[100]["target_reached"]


def test_recommendation_stays_within_the_upper_bound():
    sweep = [row("j2k", 10, True), row("j2k", 20, True), row("j2k", 30, True)]
    assert recommend(sweep)["j2k"]["ratio"] == 30
    assert recommend(sweep, bound=24)["j2k"]["ratio"] == 20


def test_run_lab_reports_the_bound_and_judges_the_current_codec(load):
    result = run_lab([load("emri_small")], LabConfig(codecs=("j2k",), ratios=(5, 30)), current_ratio=10, current_codec="htj2k")
    assert result["upper_bound"] == 24  # MR
    assert {r["codec"] for r in result["sweep"]} == {"j2k", "htj2k"} and result["current"]["codec"] == "htj2k"
    assert all(rec["ratio"] is None or rec["ratio"] <= 24 for rec in result["recommendation"].values())


@pytest.fixture
def mr_study(tmp_path):
    from core.ingest import ingest
    from core.store import Store
    from tests.synthetic import KINDS, make_dataset, write

    store = Store(tmp_path / "data")
    [result] = list(ingest(store, [write(make_dataset(**KINDS["u10"]), tmp_path / "mr.dcm")]))
    sweep = [row("htj2k", 10, True), row("htj2k", 20, False), row("j2k", 12, True), row("j2k", 30, True)]
    return store, {"study_uid": result.study_uid, "modalities": ["MR"], "sweep": sweep, "upper_bound": 24}


def test_apply_stores_codec_and_ratio_together_and_the_archive_uses_them(mr_study):
    from core.archive import plan
    from core.lab import apply_choice

    store, result = mr_study
    assert "htj2k at 10:1" in apply_choice(store, result, "htj2k", 10, "study", "admin")
    study = store.study(result["study_uid"])
    assert (study["lossy_codec"], study["ratio"]) == ("htj2k", 10)
    [lossy] = [w for w in plan(store, result["study_uid"]).make if w.variant == "lossy"]
    assert (lossy.codec, lossy.ratio) == ("htj2k", 10)

    apply_choice(store, result, "j2k", 12, "clinic", "admin")
    policy = store.policy()
    assert policy.ratios["MR"] == 12 and policy.lossy_codecs["MR"] == "j2k" and policy.lossy_codec == "j2k"
    store.set_study_ratio(result["study_uid"], None)
    [lossy] = [w for w in plan(store, result["study_uid"]).make if w.variant == "lossy"]
    assert (lossy.codec, lossy.ratio) == ("j2k", 12)


@pytest.mark.parametrize("codec, ratio, message", [
    ("htj2k", 12, "measured with j2k"),  # j2k's ratio applied to htj2k
    ("j2k", 10, "measured with htj2k"),
    ("htj2k", 20, "fails the lab's criteria"),
    ("j2k", 30, "upper bound of 24:1"),
    ("jxl", 10, "did not measure 10:1 with jxl"),
    ("webp", 10, "Unknown codec"),
])
def test_apply_refuses_a_ratio_without_evidence_for_that_codec(mr_study, codec, ratio, message):
    from core.lab import apply_choice

    store, result = mr_study
    before = (store.policy(), dict(store.study(result["study_uid"])))
    with pytest.raises(InvalidOptionError, match=message):
        apply_choice(store, result, codec, ratio, "study", "admin")
    assert (store.policy(), dict(store.study(result["study_uid"]))) == before


def test_cli_table_marks_rows_that_missed_their_target(capsys):
    args = ["lab", str(sample("emri_small")), "--codecs", "jpegls", "--ratios", "5,100"]
    assert main([*args, "--json"]) == 0
    missed = [r for r in json.loads(capsys.readouterr().out)["sweep"] if not r["target_reached"]]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert ("target ratio not reached" in text) is bool(missed)
    for r in missed:
        assert f"{r['achieved_ratio']:>7.2f}!" in text
