"""The codec-rule bench section on small synthetic images: each rule's codec, bit-exact, levels read back."""

from core.bench_codecrule import measure
from tests.synthetic import KINDS, make_dataset


def test_each_rule_is_measured_per_image_kind():
    images = {"MR 1024²": make_dataset(rows=1024, columns=1024, bits_stored=12, modality="MR"),
              "CT signed": make_dataset(**KINDS["s12"]), "colour": make_dataset(**KINDS["rgb"])}
    result = measure(images, repeat=1)
    codecs = {(r["image"], r["choice"]): r["codec"] for r in result["rows"]}
    assert codecs == {("MR 1024²", "ohif"): "htj2k", ("MR 1024²", "smallest"): "jxl", ("CT signed", "ohif"): "jpegls",
                      ("CT signed", "smallest"): "jpegls", ("colour", "ohif"): "jxl", ("colour", "smallest"): "jxl"}
    assert all(r["bit_exact"] and r["ratio"] > 1 and r["encode_mb_s"] > 0 for r in result["rows"])
    htj2k = next(r for r in result["rows"] if r["codec"] == "htj2k")
    assert htj2k["progression"] == "RPCL" and htj2k["preview_level"] == 2 and htj2k["preview_size"] == "256×256"
    jxl = next(r for r in result["rows"] if r["image"] == "MR 1024²" and r["codec"] == "jxl")
    assert jxl["preview_level"] == 0 and jxl["preview_size"] == "1024×1024"  # no levels: the full decode
    assert [c["ok"] for c in result["checks"][:2]] == [True, True]
    assert "MR 1024²" in result["table"] and "L2 256×256" in result["table"]
