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
    assert run_bench(json_path=str(tmp_path / "bench.json"), archive_instances=4, big=0) == 0
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["codecs"] and written["archive"]["instances"] == 4 and written["archive"]["job_state"] == "done"
    assert written["archive"]["zip_mb_s"] > 0
    assert {r["codec"] for r in written["lab"]["rows"]} == {"j2k", "htj2k", "jxl"}
    assert "PASS" in capsys.readouterr().out


def test_delivery_benchmark_on_a_small_large_image(monkeypatch):
    from core.bench import _delivery_table, measure_delivery

    monkeypatch.setenv("RADPRESS_LARGE_PIXELS", "1000000")
    d = measure_delivery(2000, tiles=4)
    assert d["job_state"] == "done" and d["source_mb"] > 7.9
    assert d["preview_level3_bytes"] < d["preview_level0_bytes"] / 10
    assert d["tile_cold_median_ms"] > 0 and d["dims_cached_ms"] > 0
    assert "DeepZoom tile" in _delivery_table(d)
