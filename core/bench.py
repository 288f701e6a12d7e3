"""``python -m core bench``: lossless ratios and codec throughput on real images.

Throughput is measured on the pixels already decoded (codec work only).
"Two threads" runs two encodes (or decodes) of the frame at once, as two
jobs of a batch would; the reference command-line tools are timed end to
end (process start and file I/O included), so their MB/s is a lower bound.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .codecs import OHIF_RULE, AutoRule, choose_codec, get_codec
from .codecs.j2k import decompositions
from .compress import compress
from .errors import UnsupportedError
from .files import atomic_writer
from .pixels import PixelSpec, decode_frame, pixel_spec, read_dataset
from .probe import measure_probes
from .samples import BENCH_SAMPLES, sample

__all__ = ["run_bench", "measure", "measure_accuracy", "measure_psnr_truth", "measure_dicomweb", "measure_cine", "read_pnm"]

CODECS = ("j2k", "htj2k", "jpegls", "jxl")
LOSSY_TARGETS = (10, 20, 50)


def _timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _parallel(fn, repeat: int, threads: int = 2) -> float:
    with ThreadPoolExecutor(threads) as pool:
        return _timed(lambda: list(pool.map(lambda _: fn(), range(threads))), repeat)


def _codec_row(name: str, codec_name: str, frame: np.ndarray, spec: PixelSpec, repeat: int) -> dict:
    codec = get_codec(codec_name, lossy=False)
    try:
        codec.check(spec)
    except UnsupportedError as exc:
        return {"image": name, "codec": codec_name, "skipped": exc.message}
    data = codec.encode(frame, spec)
    assert np.array_equal(codec.decode(data, spec), frame), f"{codec_name} lossless is not bit-exact on {name}"
    mb = spec.frame_bytes / 1e6
    return {
        "image": name,
        "codec": codec_name,
        "ratio": spec.frame_bytes / len(data),
        "encode_mb_s": mb / _timed(lambda: codec.encode(frame, spec), repeat),
        "encode_mb_s_2threads": 2 * mb / _parallel(lambda: codec.encode(frame, spec), repeat),
        "decode_mb_s": mb / _timed(lambda: codec.decode(data, spec), repeat),
        "decode_mb_s_2threads": 2 * mb / _parallel(lambda: codec.decode(data, spec), repeat),
    }


def _write_input(frame: np.ndarray, spec: PixelSpec, tmp: Path) -> tuple[Path, Path]:
    """The frame as PNM (unsigned) and as planar little-endian raw (any)."""
    pnm = tmp / ("in.ppm" if spec.samples == 3 else "in.pgm")
    maxval = 255 if spec.bits_allocated == 8 else (1 << spec.bits_stored) - 1
    header = f"{'P6' if spec.samples == 3 else 'P5'}\n{spec.columns} {spec.rows}\n{maxval}\n".encode()
    if not spec.signed:
        pnm.write_bytes(header + frame.astype(">u2" if spec.bits_allocated == 16 else np.uint8).tobytes())
    raw = tmp / "in.rawl"  # opj_compress reads .raw as big-endian, .rawl as little-endian
    planar = np.moveaxis(frame, -1, 0) if spec.samples == 3 else frame
    raw.write_bytes(planar.astype(frame.dtype.newbyteorder("<")).tobytes())
    return pnm, raw


def _tool_rows(name: str, frame: np.ndarray, spec: PixelSpec, repeat: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="radpress-bench-") as tmp_name:
        tmp = Path(tmp_name)
        pnm, raw = _write_input(frame, spec, tmp)
        sign = "s" if spec.signed else "u"
        levels = decompositions(spec)
        commands = {}
        if shutil.which("opj_compress"):
            fmt = f"{spec.columns},{spec.rows},{spec.samples},{spec.bits_stored},{sign}"
            source = ["-i", str(raw), "-F", fmt] if spec.signed or spec.samples == 3 else ["-i", str(pnm)]
            commands["opj_compress"] = (["opj_compress", *source, "-o", str(tmp / "out.j2k"), "-n", str(levels + 1), "-p", "RPCL"], tmp / "out.j2k")
        if shutil.which("ojph_compress"):
            base = ["ojph_compress", "-o", str(tmp / "out.j2c"), "-reversible", "true", "-num_decomps", str(levels)]
            if spec.signed:
                source = ["-i", str(tmp / "in.yuv"), "-dims", f"{{{spec.columns},{spec.rows}}}", "-num_comps", "1",
                          "-signed", "true", "-bit_depth", str(spec.bits_stored), "-downsamp", "{1,1}"]
                (tmp / "in.yuv").write_bytes(raw.read_bytes())
            else:
                source = ["-i", str(pnm)]
            commands["ojph_compress"] = ([*base, *source], tmp / "out.j2c")
        for tool, (cmd, out) in commands.items():
            def call():
                subprocess.run(cmd, check=True, capture_output=True, timeout=300)

            if tool == "ojph_compress" and spec.samples == 3:
                cmd = [*cmd, "-colour_trans", "true"]
            try:
                seconds = _timed(call, repeat)
            except subprocess.CalledProcessError as exc:
                rows.append({"image": name, "codec": tool, "skipped": exc.stderr.decode(errors="replace")[:120]})
                continue
            rows.append({"image": name, "codec": tool, "ratio": spec.frame_bytes / out.stat().st_size,
                         "encode_mb_s": spec.frame_bytes / 1e6 / seconds})
    return rows


def _reference_ratio(name: str) -> float | None:
    """Lossless ratio of the J2KR file pydicom-data ships, made by another encoder."""
    if not name.endswith("_UNCR"):
        return None
    try:
        ds = read_dataset(sample(name.replace("_UNCR", "_J2KR")))
    except FileNotFoundError:
        return None
    spec = pixel_spec(ds)
    from pydicom.encaps import generate_frames

    return spec.frame_bytes / sum(len(f) for f in generate_frames(ds.PixelData, number_of_frames=1))


def measure(names=BENCH_SAMPLES, repeat: int = 3) -> dict:
    codec_rows, tool_rows, lossy_rows, checks = [], [], [], []
    for name in names:
        ds = read_dataset(sample(name))
        spec = pixel_spec(ds)
        frame = decode_frame(ds, 0)
        rows = [_codec_row(name, c, frame, spec, repeat) for c in CODECS]
        codec_rows += rows
        tool_rows += _tool_rows(name, frame, spec, repeat)
        ratios = {r["codec"]: r["ratio"] for r in rows if "ratio" in r}
        best = max(ratios.values())
        for label, rule in (("auto", AutoRule()), ("OHIF rule", OHIF_RULE)):
            chosen = choose_codec("auto", False, spec, rule).name
            checks.append({"target": f"{label} lossless ratio >= 0.97 x best ({name})",
                           "measured": f"{chosen} {ratios[chosen]:.3f} vs best {best:.3f} ({ratios[chosen] / best:.3f})",
                           "ok": ratios[chosen] >= 0.97 * best, "informative": label != "auto"})
        reference = _reference_ratio(name)
        if reference:
            checks.append({"target": f"j2k lossless ratio within 1% of the reference J2KR ({name})",
                           "measured": f"{ratios['j2k']:.3f} vs {reference:.3f}", "ok": abs(ratios["j2k"] / reference - 1) <= 0.01 or ratios["j2k"] > reference})
        for target in LOSSY_TARGETS:
            result = compress(ds, "j2k", "lossy", target)
            lossy_rows.append({"image": name, "codec": "j2k", "target": target, "ratio": result.ratio, "seconds": result.encode_seconds})
            checks.append({"target": f"lossy j2k {target}:1 within 10% ({name})", "measured": f"{result.ratio:.2f}:1",
                           "ok": abs(result.ratio / target - 1) <= 0.10})
    mr = {r["codec"]: r for r in codec_rows if r["image"] == "MR2_UNCR" and "ratio" in r}
    if "htj2k" in mr:
        checks.insert(0, {"target": "HTJ2K lossless encode >= 150 MB/s on MR2", "measured": f"{mr['htj2k']['encode_mb_s']:.0f} MB/s", "ok": mr["htj2k"]["encode_mb_s"] >= 150})
        checks.insert(1, {"target": "HTJ2K lossless decode >= 250 MB/s on MR2", "measured": f"{mr['htj2k']['decode_mb_s']:.0f} MB/s", "ok": mr["htj2k"]["decode_mb_s"] >= 250})
    return {
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(), "cpus": __import__("os").cpu_count()},
        "repeat": repeat,
        "codecs": codec_rows,
        "tools": tool_rows,
        "lossy": lossy_rows,
        "checks": checks,
    }


def _table(results: dict) -> str:
    lines = [f"{'image':<10} {'codec':<14} {'ratio':>7} {'enc MB/s':>9} {'enc 2T':>8} {'dec MB/s':>9} {'dec 2T':>8}"] if "codecs" in results else []
    for r in results.get("codecs", []) + results.get("tools", []):
        if "skipped" in r:
            lines.append(f"{r['image']:<10} {r['codec']:<14} skipped: {r['skipped'][:60]}")
            continue
        cells = [f"{r.get(k, float('nan')):>{w}.{p}f}" if k in r else f"{'-':>{w}}" for k, w, p in
                 (("encode_mb_s", 9, 1), ("encode_mb_s_2threads", 8, 1), ("decode_mb_s", 9, 1), ("decode_mb_s_2threads", 8, 1))]
        lines.append(f"{r['image']:<10} {r['codec']:<14} {r['ratio']:>7.3f} " + " ".join(cells))
    lines.append("")
    if "lossy" in results:
        lines.append("lossy j2k: " + ", ".join(f"{r['image']} {r['target']}:1->{r['ratio']:.2f}" for r in results["lossy"]))
        lines.append("")
    if "accuracy" in results:
        lines += [_accuracy_table(results["accuracy"]), "", _psnr_table(results["psnr_truth"]), ""]
    if "archive" in results:
        lines += [_archive_table(results["archive"]), ""]
    if "lab" in results:
        lines += [_lab_table(results["lab"]), ""]
    if "delivery" in results:
        lines += [_delivery_table(results["delivery"]), ""]
    if "cine" in results:
        lines += [_cine_table(results["cine"]), ""]
    if "dicomweb" in results:
        lines += [_dicomweb_table(results["dicomweb"]), ""]
    if "dimse" in results:
        lines += [_dimse_table(results["dimse"]), ""]
    for name, section in results.get("sections", {}).items():
        lines += [f"== {name} ==", section["table"], ""]
    for c in results["checks"]:
        verdict = ("ok" if c["ok"] else "below") if c.get("informative") else ("PASS" if c["ok"] else "FAIL")
        lines.append(f"[{verdict}] {c['target']}: {c['measured']}")
    return "\n".join(lines)


# Side-by-side sections, one module each (``core/bench_<name>.py``): ``measure() -> dict`` with
# "table" (text) and "checks" (list of {"target", "measured", "ok"}), run in this order.
SECTIONS = ("master", "studylist", "serving", "throughput", "codecrule", "ingest")


def run_section(name: str) -> dict:
    """Run one side-by-side section by name (``python -m core bench --section NAME``)."""
    import importlib

    if name not in SECTIONS:
        raise UnsupportedError(f"No bench section {name!r}; there are: {', '.join(SECTIONS) or 'none'}.")
    return importlib.import_module(f"core.bench_{name}").measure()


def _run_sections(names, json_path: str | None, as_json: bool) -> int:
    results = {"sections": {name: run_section(name) for name in names}}
    results["checks"] = [c for section in results["sections"].values() for c in section["checks"]]
    return _report(results, json_path, as_json)


def _report(results: dict, json_path: str | None, as_json: bool) -> int:
    text = json.dumps(results, indent=2)
    if json_path:
        with atomic_writer(json_path) as fh:
            fh.write(text.encode())
    print(text if as_json else _table(results))
    return 0


def run_bench(json_path: str | None = "bench-results.json", as_json: bool = False, repeat: int = 3,
              archive_instances: int = 300, lab: bool = True, big: int = 30000, accuracy: bool = True,
              sections: list[str] | None = None) -> int:
    if sections:
        return _run_sections(sections, json_path, as_json)
    results = measure(repeat=repeat)
    if accuracy:
        results["accuracy"] = measure_accuracy()
        results["psnr_truth"] = measure_psnr_truth()
        results["checks"] += _accuracy_checks(results["accuracy"], results["psnr_truth"])
    if big:
        results["delivery"] = measure_delivery(big)
        peak = max(results["delivery"]["peak_rss_mb"], results["delivery"]["peak_worker_rss_mb"])
        results["checks"].append({"target": f"{big}x{big} ingest peak RSS < 2 GB", "measured": f"{peak:.0f} MB", "ok": peak < 2048})
    if lab:
        results["lab"] = measure_lab()
    results["cine"] = measure_cine()
    if archive_instances:
        archive = measure_archive(archive_instances)
        results["archive"] = archive
        results["checks"].append({"target": "archive peak RSS < 1 GB", "measured": f"{max(archive['peak_rss_mb'], archive['peak_worker_rss_mb']):.0f} MB",
                                  "ok": max(archive["peak_rss_mb"], archive["peak_worker_rss_mb"]) < 1024})
    if archive_instances:
        results["dicomweb"] = measure_dicomweb(min(archive_instances, 60))
        results["checks"] += results["dicomweb"]["checks"]
    if archive_instances:
        results["dimse"] = measure_dimse(archive_instances)
        results["checks"] += results["dimse"]["checks"]
    results["probe"] = measure_probes()  # hostile inputs, upload races, callbacks x roles against a live app
    results["checks"] += results["probe"]["checks"]
    results["sections"] = {name: run_section(name) for name in SECTIONS}
    results["checks"] += [c for section in results["sections"].values() for c in section["checks"]]
    return _report(results, json_path, as_json)


def _peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (job workers report their own through the job)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_archive(count: int = 300, workers: int = 2) -> dict:
    """Ingest a CT series built from the real 693 slice, materialise strategy 1, download it."""
    from .ingest import ingest
    from .jobs import Jobs
    from .samples import write_series
    from .store import Store

    with tempfile.TemporaryDirectory(prefix="radpress-bench-archive-") as tmp_name:
        tmp = Path(tmp_name)
        files = write_series("693_UNCR", count, tmp / "series")
        source_mb = sum(f.stat().st_size for f in files) / 1e6
        store = Store(tmp / "data")
        start = time.perf_counter()
        results = list(ingest(store, files))
        ingest_s = time.perf_counter() - start
        study = results[0].study_uid
        jobs = Jobs(store, workers=workers)
        jobs.submit(study)
        start = time.perf_counter()
        [job] = jobs.run_pending()
        materialise_s = time.perf_counter() - start
        worker_rss = job["peak_rss_mb"]

        httpd, base, http = _serve_archive(store, jobs)
        try:
            start = time.perf_counter()
            size = 0
            with http.get(f"{base}/download/study/{study}.zip", params={"variant": "lossless"}, stream=True) as r:
                for chunk in r.iter_content(1 << 20):
                    size += len(chunk)
            zip_s = time.perf_counter() - start
            store.set_study_strategy(study, 4)
            jobs.submit(study)
            jobs.run_pending()
            sop = store.instances(study)[0]["sop_uid"]
            timings = []
            for _ in range(2):
                start = time.perf_counter()
                http.get(f"{base}/download/instance/{sop}", params={"variant": "lossy", "ratio": 12}).raise_for_status()
                timings.append(time.perf_counter() - start)
        finally:
            httpd.shutdown()
        own, child = _peak_rss_mb(), worker_rss
        return {
            "instances": count,
            "source_mb": source_mb,
            "ingest_s": ingest_s,
            "materialise_s": materialise_s,
            "instances_per_s": count / (ingest_s + materialise_s),
            "job_state": job["state"],
            "peak_rss_mb": own,
            "peak_worker_rss_mb": child,
            "zip_mb": size / 1e6,
            "zip_mb_s": size / 1e6 / zip_s,
            "strategy4_lossy_first_ms": timings[0] * 1000,
            "strategy4_lossy_cached_ms": timings[1] * 1000,
        }


def _archive_table(a: dict) -> str:
    return "\n".join([
        f"archive: {a['instances']} CT instances ({a['source_mb']:.0f} MB): ingest {a['ingest_s']:.1f} s, "
        f"strategy-1 materialisation {a['materialise_s']:.1f} s, {a['instances_per_s']:.1f} instances/s",
        f"         peak RSS {a['peak_rss_mb']:.0f} MB (largest worker {a['peak_worker_rss_mb']:.0f} MB); "
        f"study zip {a['zip_mb']:.0f} MB at {a['zip_mb_s']:.0f} MB/s; strategy-4 lossy download "
        f"{a['strategy4_lossy_first_ms']:.0f} ms first, {a['strategy4_lossy_cached_ms']:.0f} ms cached",
    ])


LAB_SAMPLES = {"CT": "693_UNCR", "MR": "MR2_UNCR", "CR": "RG1_UNCR"}


def measure_lab() -> dict:
    """The quality-lab sweep on a real CT, MR and CR image: where task agreement first breaks, and the wall time."""
    from .lab import run_lab

    start = time.perf_counter()
    rows = []
    for modality, name in LAB_SAMPLES.items():
        result = run_lab([read_dataset(sample(name))])
        for codec, rec in result["recommendation"].items():
            lossless = next(r for r in result["sweep"] if r["codec"] == codec and r["mode"] == "lossless")
            rows.append({"modality": modality, "image": name, "codec": codec, "lossless_bpp": lossless["bpp"],
                         "dice_drop_bpp": rec["dice_drop_bpp"], "dice_drop_ratio": rec["dice_drop_ratio"],
                         "recommended_ratio": rec["ratio"], "recommended_bpp": rec["bpp"], "sweep_s": result["wall_s"]})
    return {"rows": rows, "wall_s": time.perf_counter() - start}


def _cine_dataset(rows: int, columns: int, frames: int, fps: float = 30.0):
    """An 8-bit grey ultrasound loop: a bright disc moving over speckle, Frame Time from *fps*."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:rows, 0:columns]
    speckle = rng.integers(20, 90, (rows, columns))
    pixels = np.empty((frames, rows, columns), np.uint8)
    for n in range(frames):
        cx = columns * (0.3 + 0.4 * n / frames)
        pixels[n] = np.where((x - cx) ** 2 + (y - rows / 2) ** 2 < (rows / 6) ** 2, 200, speckle)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.3.1", generate_uid(), "US"
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.FrameTime = rows, columns, frames, 1000 / fps
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def measure_cine(rows: int = 480, columns: int = 640, frames: int = 120) -> dict:
    """H.264 encode speed of a 640×480 × 120-frame ultrasound loop (MP4), and the wait for the first HLS segment
    (cold: the playlist and its segments are made in one pass, so this is the whole HLS encode)."""
    from .cine import CineConfig, CineOptions, encode_hls, encode_mp4, plan_clip

    ds = _cine_dataset(rows, columns, frames)
    options = CineOptions()
    clip = plan_clip(ds, options, CineConfig())
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        encode_mp4(ds, clip, options, Path(tmp) / "clip.mp4")
        mp4_s = time.perf_counter() - start
        size = (Path(tmp) / "clip.mp4").stat().st_size
        start = time.perf_counter()
        _playlist, segments = encode_hls(ds, clip, options, tmp)
        first_segment_s = time.perf_counter() - start
    return {"size": f"{columns}x{rows}x{frames}", "fps": clip.fps, "mp4_s": mp4_s, "encode_frames_s": frames / mp4_s,
            "mp4_bytes": size, "hls_segments": len(segments), "first_hls_segment_s": first_segment_s}


def _cine_table(c: dict) -> str:
    return "\n".join([
        f"cine (H.264 through PyAV, {c['size']} ultrasound at {c['fps']:g} frames/s, label burned in):",
        f"  MP4 encode {c['encode_frames_s']:.0f} frames/s ({c['mp4_s']:.2f} s, {c['mp4_bytes'] / 1e3:.0f} kB)",
        f"  first HLS segment after {c['first_hls_segment_s']:.2f} s ({c['hls_segments']} segments made in one pass)"])


def _lab_table(lab: dict) -> str:
    lines = [f"quality lab (sweep of j2k/htj2k/jxl x lossless + 9 ratios, whole run {lab['wall_s']:.0f} s on this machine):",
             f"{'modality':<8} {'codec':<6} {'lossless bpp':>12} {'Dice<0.98 at bpp':>17} {'(ratio)':>8} {'recommended':>12}"]
    for r in lab["rows"]:
        drop = f"{r['dice_drop_bpp']:.3f}" if r["dice_drop_bpp"] else "never"
        ratio = f"{r['dice_drop_ratio']:g}:1" if r["dice_drop_ratio"] else "-"
        rec = f"{r['recommended_ratio']:g}:1" if r["recommended_ratio"] else "none"
        lines.append(f"{r['modality']:<8} {r['codec']:<6} {r['lossless_bpp']:>12.3f} {drop:>17} {ratio:>8} {rec:>12}")
    return "\n".join(lines)


def write_large_dicom(path: Path, size: int) -> None:
    """A size x size 16-bit CR made by tiling the real RG1 radiograph: structure, not noise; written band by band."""
    import struct

    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = dcmread(sample("RG1_UNCR"))
    tile = ds.pixel_array
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows = ds.Columns = size
    with open(path, "wb") as fh:
        ds.save_as(fh, enforce_file_format=True)
        fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, size * size * 2))
        across = np.tile(tile, (1, -(-size // tile.shape[1])))[:, :size]
        for y in range(0, size, tile.shape[0]):
            fh.write(across[: min(tile.shape[0], size - y)].astype("<u2").tobytes())


def _timed_get(http, url: str, **params) -> tuple[float, int]:
    start = time.perf_counter()
    response = http.get(url, params=params)
    response.raise_for_status()
    return (time.perf_counter() - start) * 1000, len(response.content)


def measure_delivery(size: int = 30000, tiles: int = 40) -> dict:
    """Very large image ingest, DeepZoom tiles, DIMS and progressive previews, through HTTP on localhost."""
    import logging
    import random

    from .deepzoom import DeepZoom
    from .ingest import ingest
    from .jobs import Jobs
    from .policy import Policy
    from .store import Store

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    out: dict = {"size": size}
    with tempfile.TemporaryDirectory(prefix="radpress-bench-big-") as tmp_name:
        tmp = Path(tmp_name)
        big = tmp / "big.dcm"
        write_large_dicom(big, size)
        out["source_mb"] = big.stat().st_size / 1e6
        store = Store(tmp / "data")
        store.set_policy(Policy(strategy=2))  # original + lossless pyramid: what DeepZoom reads
        start = time.perf_counter()
        [result] = list(ingest(store, [big]))
        big.unlink()
        jobs = Jobs(store, workers=1)
        jobs.submit(result.study_uid)
        [job] = jobs.run_pending()
        out["ingest_s"] = time.perf_counter() - start
        out["job_state"] = job["state"]
        out["peak_rss_mb"] = _peak_rss_mb()
        out["peak_worker_rss_mb"] = job["peak_rss_mb"]
        list(ingest(store, [sample("RG1_UNCR")]))
        httpd, base, http = _serve_archive(store, jobs)
        try:
            zoom = DeepZoom(size, size)
            rng = random.Random(0)
            picks = []
            for _ in range(tiles):
                level = rng.randint(zoom.max_level - 4, zoom.max_level)
                cols, rows = zoom.tiles(level)
                picks.append((level, rng.randrange(cols), rng.randrange(rows)))
            for label in ("cold", "cached"):
                times = [_timed_get(http, f"{base}/deepzoom/{result.sop_uid}_files/{lv}/{c}_{r}.png")[0] for lv, c, r in picks]
                out[f"tile_{label}_median_ms"] = statistics.median(times)
                out[f"tile_{label}_p95_ms"] = sorted(times)[int(0.95 * (len(times) - 1))]
            rg1 = next(s["study_uid"] for s in store.studies() if s["modalities"] == "CR" and s["study_uid"] != result.study_uid)
            sop = store.instances(rg1)[0]["sop_uid"]
            dims = f"{base}/dims/{sop}/thumbnail/256x256/format/jpg"
            out["dims_cold_ms"], _ = _timed_get(http, dims)
            out["dims_cached_ms"], _ = _timed_get(http, dims)
            _timed_get(http, f"{base}/preview/{sop}", level=3)  # the codestream is made once; then time decoding
            for level in (0, 3):
                http.get(f"{base}/preview/{sop}", params={"level": level})
                out[f"preview_level{level}_ms"], out[f"preview_level{level}_bytes"] = _timed_get(
                    http, f"{base}/preview/{sop}", level=level, nocache=time.time())
        finally:
            httpd.shutdown()
    return out


def _delivery_table(d: dict) -> str:
    return "\n".join([
        f"very large image {d['size']} x {d['size']} 16-bit ({d['source_mb']:.0f} MB): ingest + tiled lossless pyramid "
        f"{d['ingest_s']:.1f} s, peak RSS {d['peak_rss_mb']:.0f} MB (worker {d['peak_worker_rss_mb']:.0f} MB)",
        f"DeepZoom tile: cold median {d['tile_cold_median_ms']:.1f} ms, p95 {d['tile_cold_p95_ms']:.1f} ms; "
        f"cached median {d['tile_cached_median_ms']:.1f} ms, p95 {d['tile_cached_p95_ms']:.1f} ms",
        f"DIMS thumbnail/256x256/format/jpg on RG1: cold {d['dims_cold_ms']:.0f} ms, cached {d['dims_cached_ms']:.1f} ms",
        f"progressive preview of RG1: level 0 {d['preview_level0_bytes'] / 1e3:.0f} kB in {d['preview_level0_ms']:.0f} ms, "
        f"level 3 {d['preview_level3_bytes'] / 1e3:.1f} kB in {d['preview_level3_ms']:.0f} ms",
    ])


# -- lossy ratio accuracy and the lab's PSNR against other decoders -----------
ACCURACY_TARGETS = (5, 10, 20, 50)
ACCURACY_FRAMES = 3  # frames per image in the accuracy run (color3d has 120; each frame is coded on its own)
# A fragment is padded to even length in the file: the independent measurement
# may read up to one byte per frame more than the encoder wrote.
_PADDING_MARGIN = 0.005
PSNR_SAMPLES = ("693_UNCR", "MR2_UNCR", "RG3_UNCR", "US1_UNCR", "emri_small", "JPGLosslessP14SV1_1s_1f_8b")
PSNR_RATIO = 10
PSNR_TOLERANCE_DB = 0.1


def accuracy_images() -> list[str]:
    """Every pydicom-data file that is an image RadPress can read, by stem."""
    from .errors import RadPressError
    from .samples import pydicom_data_dir

    names = []
    for path in sorted(pydicom_data_dir().glob("*.dcm")):
        try:
            pixel_spec(read_dataset(path))
        except RadPressError:
            continue
        names.append(path.stem)
    return names


def _first_frames(ds, count: int):
    """*ds* with its first *count* frames only, uncompressed (the others cost time and say nothing new)."""
    import copy

    from pydicom.uid import ExplicitVRLittleEndian

    spec = pixel_spec(ds)
    if spec.frames <= count:
        return ds
    frames = np.stack([decode_frame(ds, i) for i in range(count)])
    out = copy.deepcopy(ds)
    out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.NumberOfFrames = count
    out.PhotometricInterpretation = spec.photometric
    if spec.samples == 3:
        out.PlanarConfiguration = 0
    out.PixelData = frames.astype(frames.dtype.newbyteorder("<")).tobytes()
    out["PixelData"].VR = "OB" if spec.bits_allocated == 8 else "OW"
    return out


def _file_ratio(ds) -> float:
    """The achieved ratio read from the compressed dataset alone: uncompressed bytes over its encapsulated frames."""
    from pydicom.encaps import generate_frames

    spec = pixel_spec(ds)
    return spec.frame_bytes * spec.frames / sum(len(f) for f in generate_frames(ds.PixelData, number_of_frames=spec.frames))


def measure_accuracy(names: list[str] | None = None, targets=ACCURACY_TARGETS, codecs=CODECS, frames: int = ACCURACY_FRAMES) -> dict:
    """Every codec at every target on every image: within ±10 %, flagged as not reached, or silently missed (must be 0)."""
    from .codecs.rate import RATIO_TOLERANCE
    from .errors import RadPressError

    names = accuracy_images() if names is None else list(names)
    rows = []
    start = time.perf_counter()
    for name in names:
        ds = _first_frames(read_dataset(sample(name)), frames)
        for codec in codecs:
            for target in targets:
                try:
                    result = compress(ds, codec, "lossy", target)
                except RadPressError as exc:
                    rows.append({"image": name, "codec": codec, "target": target, "skipped": exc.message})
                    continue
                outcome = result.outcome
                measured = _file_ratio(result.dataset)
                off = abs(measured / target - 1)
                rows.append({
                    "image": name, "codec": codec, "target": target, "achieved": result.ratio, "measured": measured,
                    "reached": outcome.reached, "reason": outcome.reason,
                    "silent": outcome.reached and off > RATIO_TOLERANCE + _PADDING_MARGIN,
                    "false_alarm": not outcome.reached and off <= RATIO_TOLERANCE,
                    "seconds": result.encode_seconds,
                })
    summary = []
    for codec in codecs:
        mine = [r for r in rows if r["codec"] == codec]
        done = [r for r in mine if "skipped" not in r]
        summary.append({
            "codec": codec, "runs": len(done), "skipped": len(mine) - len(done),
            "within": sum(r["reached"] and not r["silent"] for r in done),
            "flagged_unreachable": sum(not r["reached"] for r in done),
            "silently_missed": sum(r["silent"] for r in done),
            "false_alarms": sum(r["false_alarm"] for r in done),
            "by_target": {str(t): {"within": sum(r["reached"] and not r["silent"] for r in done if r["target"] == t),
                                   "flagged": sum(not r["reached"] for r in done if r["target"] == t),
                                   "runs": sum(1 for r in done if r["target"] == t)} for t in targets},
        })
    return {"images": len(names), "frames_per_image": frames, "targets": list(targets), "tolerance": RATIO_TOLERANCE,
            "summary": summary, "rows": rows, "wall_s": time.perf_counter() - start}


def _accuracy_table(acc: dict) -> str:
    targets = acc["targets"]
    lines = [f"lossy ratio accuracy: {acc['images']} pydicom-data images (first {acc['frames_per_image']} frames) x "
             f"{'/'.join(f'{t}:1' for t in targets)}, ±{acc['tolerance']:.0%} ({acc['wall_s']:.0f} s)",
             f"{'codec':<7} {'runs':>5} {'within':>7} {'flagged':>8} {'silent':>7} {'skipped':>8}  " +
             " ".join(f"{f'{t}:1 in/flag':>13}" for t in targets)]
    for s in acc["summary"]:
        cells = [s["by_target"][str(t)] for t in targets]
        per = " ".join(f"{str(c['within']) + '/' + str(c['flagged']):>13}" for c in cells)
        lines.append(f"{s['codec']:<7} {s['runs']:>5} {s['within']:>7} {s['flagged_unreachable']:>8} {s['silently_missed']:>7} "
                     f"{s['skipped']:>8}  {per}")
    return "\n".join(lines)


def read_pnm(path: Path) -> np.ndarray:
    """A binary PGM/PPM as written by opj_decompress, ojph_expand and djxl."""
    data = path.read_bytes()
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos)
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    width, height, maxval = int(fields[1]), int(fields[2]), int(fields[3])
    channels = 3 if fields[0] == b"P6" else 1
    dtype = np.dtype(">u2") if maxval > 255 else np.dtype(np.uint8)
    values = np.frombuffer(data, dtype=dtype, count=width * height * channels, offset=pos + 1)
    return values.reshape((height, width, channels) if channels == 3 else (height, width)).astype(np.int64)


def _tool_frame(tool: str, codestream: bytes, spec: PixelSpec, tmp: Path) -> np.ndarray:
    """One frame decoded by another project's command-line decoder."""
    from .codecs.codestream import parse_main_header

    pnm = tmp / ("frame.ppm" if spec.samples == 3 else "frame.pgm")
    source = tmp / ("frame.jxl" if tool == "djxl" else "frame.j2c")
    source.write_bytes(codestream)
    if tool == "opj_decompress" and spec.signed:
        raw = tmp / "frame.raw"
        subprocess.run([tool, "-i", str(source), "-o", str(raw), "-quiet"], check=True, capture_output=True, timeout=300)
        precision = parse_main_header(codestream).precision
        wide = np.fromfile(raw, dtype="<u2").astype(np.int64)
        return np.where(wide >= 1 << (precision - 1), wide - (1 << precision), wide).reshape(spec.shape)
    command = {"opj_decompress": [tool, "-i", str(source), "-o", str(pnm), "-quiet"],
               "ojph_expand": [tool, "-i", str(source), "-o", str(pnm)], "djxl": [tool, str(source), str(pnm)]}[tool]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    values = read_pnm(pnm)
    if tool == "djxl" and spec.bits_allocated == 16 and spec.bits_stored < 16:
        values = np.round(values * ((1 << spec.bits_stored) - 1) / 65535).astype(np.int64)  # djxl widens to 16 bits
    return values


def _pydicom_frames(ds, codec, codestreams: list[bytes], spec: PixelSpec) -> np.ndarray:
    """The codestreams in a DICOM file, decoded by pydicom's own decoders (pylibjpeg / pyjpegls), not RadPress's."""
    from pydicom.pixels import pixel_array

    from .derive import compressed_dataset

    out = compressed_dataset(ds, codestreams, codec, spec, spec.frame_bytes * len(codestreams) / sum(map(len, codestreams)))
    out.NumberOfFrames = len(codestreams)
    buffer = __import__("io").BytesIO()
    out.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    values = pixel_array(buffer, raw=True)
    return values.reshape((len(codestreams), *spec.shape))


INDEPENDENT_DECODERS = {"j2k": ("pydicom", "opj_decompress"), "htj2k": ("pydicom", "ojph_expand"),
                        "jpegls": ("pydicom",), "jxl": ("djxl",)}


def measure_psnr_truth(names=PSNR_SAMPLES, ratio: float = PSNR_RATIO, codecs=CODECS, frames: int = ACCURACY_FRAMES) -> dict:
    """The lab's PSNR (its own encode and decode path) against the PSNR of the same codestreams decoded by other projects."""
    from .errors import RadPressError
    from .lab import encode_decode
    from .metrics import compare

    rows = []
    for name in names:
        ds = _first_frames(read_dataset(sample(name)), frames)
        spec = pixel_spec(ds)
        originals = [decode_frame(ds, i) for i in range(spec.frames)]
        for codec_name in codecs:
            codec = get_codec(codec_name, True)
            try:
                codec.check(spec)
            except RadPressError as exc:
                rows.append({"image": name, "codec": codec_name, "skipped": exc.message})
                continue
            codestreams, decoded, _, _ = encode_decode(codec, originals, spec, ratio)
            size = sum(map(len, codestreams))

            def psnr(values) -> float:
                return compare(np.stack(originals), np.stack(values).reshape((spec.frames, *spec.shape)), spec.bits_stored,
                               compressed_bytes=size, uncompressed_bytes=spec.frame_bytes * spec.frames).psnr

            lab = psnr(decoded)
            for decoder in INDEPENDENT_DECODERS[codec_name]:
                if decoder == "ojph_expand" and spec.signed:
                    decoder = "opj_decompress"  # ojph_expand writes no signed output; OpenJPEG 2.5 reads HTJ2K
                if decoder == "pydicom":
                    values = _pydicom_frames(ds, codec, codestreams, spec)
                else:
                    with tempfile.TemporaryDirectory(prefix="radpress-bench-psnr-") as tmp:
                        values = np.stack([_tool_frame(decoder, c, spec, Path(tmp)) for c in codestreams])
                other = psnr(values)
                diff = 0.0 if lab == other else abs(lab - other)
                rows.append({"image": name, "codec": codec_name, "decoder": decoder, "ratio": ratio, "lab_psnr": lab,
                             "independent_psnr": other, "diff_db": diff, "ok": diff <= PSNR_TOLERANCE_DB})
    return {"ratio": ratio, "tolerance_db": PSNR_TOLERANCE_DB, "rows": rows}


def _psnr_table(truth: dict) -> str:
    lines = [f"lab PSNR vs independent decoder at {truth['ratio']:g}:1 (must agree within {truth['tolerance_db']:g} dB):",
             f"{'image':<28} {'codec':<7} {'decoder':<15} {'lab dB':>8} {'other dB':>9} {'diff':>7}"]
    for r in truth["rows"]:
        if "skipped" in r:
            continue
        lines.append(f"{r['image']:<28} {r['codec']:<7} {r['decoder']:<15} {r['lab_psnr']:>8.2f} {r['independent_psnr']:>9.2f} "
                     f"{r['diff_db']:>7.3f}{'' if r['ok'] else '  FAIL'}")
    return "\n".join(lines)


def _accuracy_checks(acc: dict, truth: dict) -> list[dict]:
    checks = [{"target": f"lossy {s['codec']}: no target silently missed ({s['runs']} runs)",
               "measured": f"{s['within']} within ±10 %, {s['flagged_unreachable']} flagged unreachable, {s['silently_missed']} silent",
               "ok": s["silently_missed"] == 0 and s["false_alarms"] == 0} for s in acc["summary"]]
    for codec in dict.fromkeys(r["codec"] for r in truth["rows"]):
        mine = [r for r in truth["rows"] if r["codec"] == codec and "skipped" not in r]
        worst = max((r["diff_db"] for r in mine), default=0.0)
        checks.append({"target": f"lab PSNR = independent decoders' PSNR within {PSNR_TOLERANCE_DB:g} dB ({codec})",
                       "measured": f"worst difference {worst:.3f} dB over {len(mine)} decodes ({', '.join(sorted({r['decoder'] for r in mine}))})",
                       "ok": bool(mine) and all(r["ok"] for r in mine)})
    return checks


# -- DICOMweb: QIDO-RS over a large index, WADO-RS retrieval per transfer syntax --------------
WADO_SYNTAXES = {"as stored (*)": "*", "Explicit VR LE": "1.2.840.10008.1.2.1", "JPEG 2000 lossless": "1.2.840.10008.1.2.4.90",
                 "JPEG-LS lossless": "1.2.840.10008.1.2.4.80", "HTJ2K lossless RPCL": "1.2.840.10008.1.2.4.202"}
QIDO_SEARCHES = {"all (limit 101)": {}, "PatientName=name5*": {"PatientName": "name5*"},
                 "StudyDate range + ModalitiesInStudy": {"StudyDate": "20240301-20240331", "ModalitiesInStudy": "CR"},
                 "PatientID exact": {"PatientID": "P9999"}, "AccessionNumber=A12*": {"AccessionNumber": "A12*"}}


def index_studies(store, count: int) -> None:
    """*count* studies of one 3-instance series each, straight into the index (QIDO reads nothing else)."""
    with store.connect() as db:
        db.executemany("INSERT INTO patients (patient_key, patient_id, name, birth_date) VALUES (?,?,?,?)",
                       [(f"P{n}", f"P{n}", f"Name{n % 97}^Given{n}", "19700101") for n in range(count)])
        db.executemany("INSERT INTO studies (study_uid, patient_key, date, description, accession, created, demo) "
                       "VALUES (?,?,?,?,?,0,0)",
                       [(f"2.25.{n}", f"P{n}", f"2024{1 + n % 12:02d}{1 + n % 28:02d}", "", f"A{n}") for n in range(count)])
        db.executemany("INSERT INTO series (series_uid, study_uid, modality, number) VALUES (?,?,?,1)",
                       [(f"2.25.{n}.1", f"2.25.{n}", ("CT", "MR", "CR")[n % 3]) for n in range(count)])
        db.executemany("INSERT INTO instances (sop_uid, series_uid, sop_class, number, lossy) VALUES (?,?,?,1,0)",
                       [(f"2.25.{n}.1.{k}", f"2.25.{n}.1", "1.2.840.10008.5.1.4.1.1.2") for n in range(count) for k in range(3)])


def measure_dicomweb(instances: int = 60, studies: int = 10_000) -> dict:
    """QIDO-RS search time over *studies* indexed studies, and WADO-RS study retrieval MB/s per transfer syntax
    (a CT series from the real 693 slice, strategy 1; cold = first request, transcodes included)."""
    import logging

    from .ingest import ingest
    from .jobs import Jobs
    from .samples import write_series
    from .store import Store

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    out: dict = {"studies": studies, "instances": instances, "qido": [], "wado": []}
    with tempfile.TemporaryDirectory(prefix="radpress-bench-dicomweb-") as tmp_name:
        tmp = Path(tmp_name)
        store = Store(tmp / "data")
        index_studies(store, studies)
        files = write_series("693_UNCR", instances, tmp / "series")
        study = [r for r in ingest(store, files)][0].study_uid
        jobs = Jobs(store, workers=2)
        jobs.submit(study)
        jobs.run_pending()
        httpd, base, http = _serve_archive(store, jobs)
        base += "/dicom-web"
        try:
            _timed_get(http, f"{base}/studies", limit=1)  # the login is checked once (~100 ms by design), then remembered
            for label, filters in QIDO_SEARCHES.items():
                times = [_timed_get(http, f"{base}/studies", limit=101, **filters)[0] for _ in range(5)]
                out["qido"].append({"search": label, "median_ms": statistics.median(times), "max_ms": max(times)})
            for label, syntax in WADO_SYNTAXES.items():
                accept = f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'
                row = {"syntax": label, "uid": syntax}
                for run in ("cold", "cached"):
                    start = time.perf_counter()
                    size = 0
                    with http.get(f"{base}/studies/{study}", headers={"Accept": accept}, stream=True) as r:
                        r.raise_for_status()
                        for chunk in r.iter_content(1 << 20):
                            size += len(chunk)
                    row[f"{run}_mb_s"] = size / 1e6 / (time.perf_counter() - start)
                    row["mb"] = size / 1e6
                out["wado"].append(row)
        finally:
            httpd.shutdown()
            jobs.stop()
    worst = max(q["median_ms"] for q in out["qido"])
    out["checks"] = [{"target": f"QIDO-RS over {studies} studies < 300 ms", "measured": f"{worst:.0f} ms (median of the slowest search)",
                      "ok": worst < 300}]
    return out


def _dicomweb_table(d: dict) -> str:
    lines = [f"QIDO-RS /studies over {d['studies']} indexed studies: " + "; ".join(
        f"{q['search']} {q['median_ms']:.0f} ms" for q in d["qido"])]
    lines.append(f"WADO-RS study retrieval ({d['instances']} CT instances), MB/s cold / cached:")
    lines += [f"  {w['syntax']:<22} {w['mb']:>7.1f} MB  {w['cold_mb_s']:>7.1f} / {w['cached_mb_s']:.1f}" for w in d["wado"]]
    return "\n".join(lines)


def measure_dimse(count: int = 300, studies: int = 10_000) -> dict:
    """C-STORE ingest of a *count*-instance CT series (the real 693 slice) sent by DCMTK's storescu in one association,
    and a C-FIND (findscu, process start included) over *studies* indexed studies."""
    import shutil
    import subprocess

    from .dimse import DicomNode, NodeConfig
    from .jobs import Jobs
    from .samples import write_series
    from .store import Store

    out: dict = {"instances": count, "studies": studies}
    tools = {tool: shutil.which(tool) for tool in ("storescu", "findscu")}
    if not all(tools.values()):
        return {**out, "skipped": "DCMTK (storescu, findscu) is not installed: make bench installs it",
                "checks": [{"target": "C-STORE bench", "measured": "DCMTK missing", "ok": False}]}
    with tempfile.TemporaryDirectory(prefix="radpress-bench-dimse-") as tmp_name:
        tmp = Path(tmp_name)
        files = write_series("693_UNCR", count, tmp / "series")
        source_mb = sum(f.stat().st_size for f in files) / 1e6
        store = Store(tmp / "data")
        index_studies(store, studies)
        node = DicomNode(store, Jobs(store), NodeConfig(port=0))
        port = node.start()
        try:
            start = time.perf_counter()
            subprocess.run([tools["storescu"], "-aec", "RADPRESS", "127.0.0.1", str(port), *map(str, files)],
                           check=True, capture_output=True, timeout=3600)
            store_s = time.perf_counter() - start
            stored = store.query("SELECT count(*) FROM instances i JOIN series s USING (series_uid) "
                                 "WHERE s.study_uid NOT LIKE '2.25.%'")[0][0]
            time.sleep(0.5)  # the job is submitted when the association closes
            jobs = store.query("SELECT count(*) FROM jobs")[0][0]
            times = []
            for _ in range(3):
                start = time.perf_counter()
                subprocess.run([tools["findscu"], "-S", "-aec", "RADPRESS", "-k", "QueryRetrieveLevel=STUDY",
                                "-k", "PatientName=name4*", "-k", "StudyDate=20240301-20240630", "-k", "StudyInstanceUID",
                                "127.0.0.1", str(port)], check=True, capture_output=True, timeout=600)
                times.append(time.perf_counter() - start)
        finally:
            node.stop()
    out.update(store_s=store_s, stored=stored, instances_per_s=count / store_s, mb_s=source_mb / store_s, jobs=jobs,
               find_ms=statistics.median(times) * 1000)
    out["checks"] = [{"target": f"C-STORE of {count} instances: all stored, one job", "measured": f"{stored} stored, {jobs} job(s)",
                      "ok": stored == count and jobs == 1},
                     {"target": "C-STORE ingest instances/s", "measured": f"{count / store_s:.1f}/s", "ok": True,
                      "informative": True}]
    return out


def _dimse_table(d: dict) -> str:
    if "skipped" in d:
        return f"DICOM node: skipped ({d['skipped']})"
    return (f"DICOM node: storescu C-STORE of {d['instances']} CT instances in {d['store_s']:.1f} s = "
            f"{d['instances_per_s']:.1f} instances/s, {d['mb_s']:.1f} MB/s ({d['jobs']} job); findscu C-FIND over {d['studies']} studies "
            f"{d['find_ms']:.0f} ms (process start included)")


def _serve_archive(store, jobs):
    """The archive's routes on a free localhost port, with a bench admin; returns (server, base URL, session)."""
    import threading

    import requests
    from flask import Flask
    from werkzeug.serving import make_server

    from .auth import init_auth
    from .routes import init_archive
    from .users import Users

    server = Flask(__name__)
    users = Users(store)
    users.add("bench", "bench-password", "admin")
    init_auth(server, users, b"bench", demo=False)
    init_archive(server, store, jobs)
    httpd = make_server("127.0.0.1", 0, server, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    http = requests.Session()
    http.auth = ("bench", "bench-password")
    return httpd, f"http://127.0.0.1:{httpd.server_port}", http
