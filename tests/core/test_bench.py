import json

from core.bench import _table, measure, run_bench


def test_bench_measures_every_codec_and_tool_on_a_real_image():
    results = measure(names=("emri_small",), repeat=1)
    codecs = {r["codec"]: r for r in results["codecs"]}
    assert set(codecs) == {"j2k", "htj2k", "jpegls", "jxl"}
    for row in codecs.values():
        assert row["ratio"] > 1 and row["encode_mb_s"] > 0 and row["decode_mb_s_2threads"] > 0
    assert {r["codec"] for r in results["tools"]} == {"opj_compress", "ojph_compress"}
    assert all("ratio" in r for r in results["tools"]), results["tools"]
    assert any(c["target"].startswith("auto lossless") for c in results["checks"])
    assert "emri_small" in _table(results)


def test_bench_writes_json(tmp_path, monkeypatch, capsys):
    import core.bench as bench

    monkeypatch.setattr(bench, "measure", lambda repeat: measure(names=("emri_small",), repeat=1))
    monkeypatch.setattr(bench, "LAB_SAMPLES", {"MR": "emri_small"})
    assert run_bench(json_path=str(tmp_path / "bench.json"), archive_instances=4) == 0
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["codecs"] and written["archive"]["instances"] == 4 and written["archive"]["job_state"] == "done"
    assert written["archive"]["zip_mb_s"] > 0
    assert {r["codec"] for r in written["lab"]["rows"]} == {"j2k", "htj2k", "jxl"}
    assert "PASS" in capsys.readouterr().out
