from core import bench_throughput
from core.bench import SECTIONS


def test_the_throughput_section_times_strategy_1_beside_gdcmconv_on_the_same_files():
    """A two-slice CT study through both sides: GDCM's copies, RadPress's three artifacts each, figures and checks."""
    result = bench_throughput.measure({"tiny": (("693_UNCR", 2),)})
    [row] = result["rows"]
    assert row["instances"] == 2 and row["gdcm_p2"]["parallel"] == 2 and row["gdcm_p1"]["parallel"] == 1
    ours = row["radpress"]
    assert (ours["state"], ours["done"], ours["failed"], ours["artifacts"]) == ("done", 2, 0, 6)
    assert ours["variants"] == ["lossless", "lossy", "thumbnail"]
    for side in (ours, row["gdcm_p2"], row["gdcm_p1"]):
        assert side["wall_s"] > 0 and side["cpu_s"] > 0 and side["mb"] > 0
    assert [c["ok"] for c in result["checks"]][1] is True  # every artifact made
    assert "gdcmconv --j2k lossless only, xargs -P2" in result["table"] and "RadPress strategy 1" in result["table"]
    assert "throughput" in SECTIONS
