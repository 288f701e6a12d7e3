from core import bench_throughput
from core.bench import SECTIONS
from core.workers import JOB_NICE


def test_the_throughput_section_times_strategy_1_beside_gdcmconv_on_the_same_files():
    """A one-slice CT study through both sides: GDCM's copy, RadPress's three artifacts, figures and checks."""
    result = bench_throughput.measure({"tiny": (("693_UNCR", 1),)})
    [row] = result["rows"]
    assert row["instances"] == 1 and row["gdcm_p2"]["parallel"] == 2 and row["gdcm_p1"]["parallel"] == 1
    ours = row["radpress"]
    assert (ours["state"], ours["done"], ours["failed"], ours["artifacts"]) == ("done", 1, 0, 3)
    assert ours["variants"] == ["lossless", "lossy", "thumbnail"]
    for side in (ours, row["gdcm_p2"], row["gdcm_p1"]):
        assert side["wall_s"] > 0 and side["cpu_s"] > 0 and side["mb"] > 0
    assert [c["ok"] for c in result["checks"]][1] is True  # every artifact made
    assert "gdcmconv --j2k lossless only, xargs -P2" in result["table"] and "RadPress strategy 1" in result["table"]
    assert f"both at nice {JOB_NICE}" in result["table"]  # the same priority on both sides
    assert "throughput" in SECTIONS
