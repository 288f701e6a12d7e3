"""Quality lab: rate–distortion and task-agreement sweeps, transmission times, a recommended ratio.

For each codec and ratio, every instance is encoded, decoded and measured
(PSNR, SSIM, max error, bpp, time), and a classical segmentation is run on
the original and on the decoded image: their Dice/IoU per label says whether
the downstream task still gives the same answer.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from pydicom.dataset import Dataset

from .codecs import Codec, check_ratio, choose_codec, get_codec
from .codecs.rate import RATIO_TOLERANCE
from .errors import InvalidOptionError, RadPressError
from .metrics import compare
from .pixels import PixelSpec, decode_frame, pixel_spec
from .policy import check_bound, upper_bound
from .segment import dice, iou, segmenter_for

__all__ = ["LabConfig", "run_lab", "recommend", "transmission", "to_csv", "encode_decode", "apply_choice", "PSNR_THRESHOLDS"]

PSNR_THRESHOLDS = {"CT": 50.0, "MR": 45.0, "CR": 45.0, "DX": 45.0, "MG": 50.0, "US": 35.0, "": 40.0}


@dataclass(frozen=True)
class LabConfig:
    codecs: tuple[str, ...] = ("j2k", "htj2k", "jxl")
    ratios: tuple[float, ...] = (5, 8, 10, 15, 20, 30, 50, 80, 100)  # lossless is always measured too
    links_mbit_s: tuple[float, ...] = (10, 100, 1000)
    psnr_thresholds: dict[str, float] = field(default_factory=lambda: dict(PSNR_THRESHOLDS))
    dice_threshold: float = 0.98
    max_frames: int = 3

    def validated(self) -> "LabConfig":
        for ratio in self.ratios:
            check_ratio(float(ratio), True)
        if not self.codecs:
            raise InvalidOptionError("The lab needs at least one codec.")
        if any(s <= 0 for s in self.links_mbit_s):
            raise InvalidOptionError("Link speeds must be positive (Mbit/s).")
        return self

    @classmethod
    def from_text(cls, codecs: str | None = None, ratios: str | None = None) -> "LabConfig":
        """From comma-separated lists as typed on a command line or in a URL; checked before any work."""
        from .codecs import get_codec

        options: dict = {}
        if codecs:
            options["codecs"] = tuple(c.strip() for c in codecs.split(",") if c.strip())
            for codec in options["codecs"]:
                get_codec(codec, True)
        if ratios:
            try:
                options["ratios"] = tuple(float(r) for r in ratios.split(","))
            except ValueError:
                raise InvalidOptionError(f"Ratios {ratios!r}: use numbers separated by commas, e.g. 5,10,20.") from None
        return cls(**options).validated()

    def psnr_threshold(self, modality: str) -> float:
        return float(self.psnr_thresholds.get(modality, self.psnr_thresholds.get("", 40.0)))


def _frames(spec, limit: int) -> list[int]:
    if spec.frames <= limit:
        return list(range(spec.frames))
    return sorted({round(i * (spec.frames - 1) / (limit - 1)) for i in range(limit)})


def _finite(value: float) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def encode_decode(codec: Codec, frames: list[np.ndarray], spec: PixelSpec, ratio: float | None):
    """Encode and decode *frames* exactly as the lab measures them: (codestreams, decoded, encode s, decode s).

    The benchmark decodes the same codestreams with other projects' decoders
    to show the lab's PSNR is the file's PSNR.
    """
    encode_s = decode_s = 0.0
    codestreams, decoded = [], []
    for frame in frames:
        start = time.perf_counter()
        data = codec.encode(frame, spec, ratio)
        encode_s += time.perf_counter() - start
        start = time.perf_counter()
        decoded.append(codec.decode(data, spec))
        decode_s += time.perf_counter() - start
        codestreams.append(data)
    return codestreams, decoded, encode_s, decode_s


def _measure(ds: Dataset, originals, masks, codec_name: str, ratio: float | None) -> dict:
    spec = pixel_spec(ds)
    codec = choose_codec(codec_name, ratio is not None, spec)
    modality = str(ds.get("Modality", ""))
    segment = segmenter_for(modality, spec.samples)
    codestreams, decoded, encode_s, decode_s = encode_decode(codec, originals, spec, ratio)
    size = sum(len(c) for c in codestreams)
    uncompressed = spec.frame_bytes * len(originals)
    m = compare(np.stack(originals), np.stack(decoded), spec.bits_stored, compressed_bytes=size, uncompressed_bytes=uncompressed)
    dices: dict[str, float] = {}
    ious: dict[str, float] = {}
    for reference, frame in zip(masks, decoded):
        for label, mask in segment(frame, ds).items():
            if label in reference:
                dices[label] = min(dices.get(label, 1.0), dice(reference[label], mask))
                ious[label] = min(ious.get(label, 1.0), iou(reference[label], mask))
    return {
        "sop_uid": str(ds.get("SOPInstanceUID", "")), "modality": modality, "codec": codec.name,
        "mode": codec.mode, "target_ratio": ratio, "achieved_ratio": m.ratio, "bpp": m.bpp,
        "psnr": _finite(m.psnr), "ssim": m.ssim, "max_error": m.max_error, "rmse": m.rmse,
        "dice": dices, "iou": ious, "encode_s": encode_s, "decode_s": decode_s,
        "compressed_bytes": size, "uncompressed_bytes": uncompressed,
    }


def _aggregate(rows: list[dict], config: LabConfig) -> dict:
    first = rows[0]
    labels = sorted({label for r in rows for label in r["dice"]})
    psnrs = [r["psnr"] for r in rows]
    finite = [p for p in psnrs if p is not None]
    compressed = sum(r["compressed_bytes"] for r in rows)
    uncompressed = sum(r["uncompressed_bytes"] for r in rows)
    pixels = sum(r["compressed_bytes"] * 8 / r["bpp"] for r in rows if r["bpp"])
    dice_min = {label: min(r["dice"].get(label, 1.0) for r in rows) for label in labels}
    psnr_ok = all(p is None or p >= config.psnr_threshold(r["modality"]) for p, r in zip(psnrs, rows))
    return {
        "codec": first["codec"], "mode": first["mode"], "target_ratio": first["target_ratio"],
        "achieved_ratio": uncompressed / compressed, "bpp": compressed * 8 / pixels if pixels else None,
        "psnr_min": min(finite) if finite else None, "psnr_mean": float(np.mean(finite)) if finite else None,
        "ssim_mean": float(np.mean([r["ssim"] for r in rows])), "max_error": max(r["max_error"] for r in rows),
        "dice_min": dice_min, "iou_min": {label: min(r["iou"].get(label, 1.0) for r in rows) for label in labels},
        "encode_s": sum(r["encode_s"] for r in rows), "decode_s": sum(r["decode_s"] for r in rows),
        "compressed_bytes": compressed, "uncompressed_bytes": uncompressed,
        "passes": psnr_ok and all(v >= config.dice_threshold for v in dice_min.values()),
        # measured at another ratio than the one named: never recommended under that name
        "target_reached": first["target_ratio"] is None or abs(uncompressed / compressed / first["target_ratio"] - 1) <= RATIO_TOLERANCE,
    }


def recommend(sweep: list[dict], bound: float | None = None) -> dict[str, dict]:
    """Per codec, the highest ratio that passes with every lower ratio passing too (the first failure ends it).

    Nothing above *bound* (the CAR upper bound of the images' modalities) is recommended, nor a
    ratio the codec did not reach within ±10 % (its numbers belong to another ratio).
    """
    out: dict[str, dict] = {}
    for codec in dict.fromkeys(r["codec"] for r in sweep):
        best = None
        for row in sorted((r for r in sweep if r["codec"] == codec and r["mode"] == "lossy"), key=lambda r: r["target_ratio"]):
            if not row["passes"] or (bound is not None and row["target_ratio"] > bound):
                break
            if not row.get("target_reached", True):
                continue
            best = row
        first_drop = next((r for r in sorted((r for r in sweep if r["codec"] == codec and r["mode"] == "lossy"),
                                             key=lambda r: r["target_ratio"]) if min(r["dice_min"].values(), default=1) < 0.98), None)
        out[codec] = {"ratio": best["target_ratio"] if best else None, "achieved_ratio": best["achieved_ratio"] if best else None,
                      "bpp": best["bpp"] if best else None,
                      "dice_drop_bpp": first_drop["bpp"] if first_drop else None,
                      "dice_drop_ratio": first_drop["target_ratio"] if first_drop else None}
    return out


def transmission(sweep: list[dict], links_mbit_s, uncompressed_bytes: int) -> list[dict]:
    """The latency breakdown: volume, transmission, compression, decompression, total — per variant and link."""
    variants = [{"variant": "uncompressed", "bytes": uncompressed_bytes, "encode_s": 0.0, "decode_s": 0.0}]
    variants += [{"variant": f"{r['codec']} {'lossless' if r['mode'] == 'lossless' else format(r['target_ratio'], 'g') + ':1'}",
                  "bytes": r["compressed_bytes"], "encode_s": r["encode_s"], "decode_s": r["decode_s"]} for r in sweep]
    rows = []
    for link in links_mbit_s:
        for v in variants:
            seconds = v["bytes"] * 8 / (link * 1e6)
            rows.append({"variant": v["variant"], "link_mbit_s": link, "volume_mb": v["bytes"] / 1e6, "transmission_s": seconds,
                         "compression_s": v["encode_s"], "decompression_s": v["decode_s"],
                         "total_s": seconds + v["encode_s"] + v["decode_s"]})
    return rows


def run_lab(datasets: list[Dataset], config: LabConfig = LabConfig(), *, current_ratio: float | None = None,
            current_codec: str = "j2k", label: str = "", progress: Callable[[int, int], None] | None = None) -> dict:
    """The whole sweep over *datasets*; returns a JSON-ready dict."""
    config = config.validated()
    if not datasets:
        raise InvalidOptionError("The lab needs at least one image.")
    ratios = sorted(set(config.ratios) | ({float(current_ratio)} if current_ratio else set()))
    prepared = []
    for ds in datasets:
        spec = pixel_spec(ds)
        frames = [decode_frame(ds, i) for i in _frames(spec, config.max_frames)]
        segment = segmenter_for(str(ds.get("Modality", "")), spec.samples)
        prepared.append((ds, frames, [segment(f, ds) for f in frames]))
    codecs = tuple(dict.fromkeys((*config.codecs, *([current_codec] if current_ratio else []))))  # the current pair is judged too
    steps = [(codec, ratio) for codec in codecs for ratio in [None, *ratios]]
    total, done = len(steps) * len(prepared), 0
    per_instance, sweep, skipped = [], [], []
    started = time.perf_counter()
    for codec, ratio in steps:
        rows = []
        for ds, frames, masks in prepared:
            try:
                rows.append(_measure(ds, frames, masks, codec, ratio))
            except RadPressError as exc:
                skipped.append({"sop_uid": str(ds.get("SOPInstanceUID", "")), "codec": codec, "target_ratio": ratio, "reason": str(exc)})
            done += 1
            if progress:
                progress(done, total)
        if rows:
            per_instance += rows
            sweep.append(_aggregate(rows, config))
    wall = time.perf_counter() - started
    uncompressed = sum(pixel_spec(ds).frame_bytes * len(frames) for ds, frames, _ in prepared)
    bounds = [b for ds, _, _ in prepared if (b := upper_bound(*_kind(ds))) is not None]
    bound = min(bounds) if bounds else None
    current = None
    if current_ratio:
        row = next((r for r in sweep if r["codec"] == current_codec and r["target_ratio"] == float(current_ratio)), None)
        current = {"codec": current_codec, "ratio": float(current_ratio), "passes": bool(row and row["passes"]),
                   "dice_min": row["dice_min"] if row else None, "psnr_min": row["psnr_min"] if row else None}
    return {
        "study": label,
        "instances": len(prepared),
        "modalities": sorted({str(ds.get("Modality", "")) for ds, _, _ in prepared}),
        "config": {**asdict(config), "ratios": ratios},
        "sweep": sweep,
        "per_instance": per_instance,
        "skipped": skipped,
        "transmission": transmission(sweep, config.links_mbit_s, uncompressed),
        "upper_bound": bound,
        "recommendation": recommend(sweep, bound),
        "current": current,
        "wall_s": wall,
    }


def _kind(ds: Dataset) -> tuple[str, str, str]:
    return str(ds.get("Modality", "") or ""), str(ds.get("BodyPartExamined", "") or ""), str(ds.get("StudyDescription", "") or "")


def apply_choice(store, result: dict, codec: str, ratio: float, scope: str, user: str) -> str:
    """Store a codec and the ratio the lab measured *for that codec*, for the study or the clinic's modalities.

    A ratio is refused when the sweep did not pass it with this codec (one
    codec's ratio is no evidence for another's) or when it exceeds the CAR
    upper bound.  Returns what was set, in words.
    """
    from dataclasses import replace

    get_codec(codec, True)
    ratio = float(ratio)
    rows = {r["target_ratio"]: r for r in result["sweep"] if r["codec"] == codec and r["mode"] == "lossy"}
    row = rows.get(ratio)
    if row is None:
        others = sorted({r["codec"] for r in result["sweep"] if r["mode"] == "lossy" and r["target_ratio"] == ratio} - {codec})
        measured = f" It was measured with {', '.join(others)}: a ratio holds only for the codec it was measured with." if others else ""
        raise InvalidOptionError(f"The lab did not measure {ratio:g}:1 with {codec}.{measured}",
                                 hint=f"Run the sweep with {codec}, or apply a ratio recommended for {codec}.")
    if not row["passes"]:
        raise InvalidOptionError(f"{codec} at {ratio:g}:1 fails the lab's criteria on this study.", hint="Apply the recommended ratio.")
    if not row.get("target_reached", True):
        raise InvalidOptionError(f"{codec} did not reach {ratio:g}:1 on this study (it achieved {row['achieved_ratio']:.1f}:1).",
                                 hint="Apply the recommended ratio.")
    for modality in result["modalities"]:
        check_bound(ratio, modality, cap=False)
    if result.get("upper_bound") is not None and ratio > result["upper_bound"]:
        raise InvalidOptionError(f"{ratio:g}:1 exceeds the CAR upper bound of {result['upper_bound']:g}:1 for these images.",
                                 hint=f"Choose at most {result['upper_bound']:g}:1.")
    if scope == "study":
        store.set_study_ratio(result["study_uid"], ratio, user=user, codec=codec)
        return f"This study now uses {codec} at {ratio:g}:1."
    if scope != "clinic":
        raise InvalidOptionError(f"Unknown scope {scope!r}.", hint="Use 'study' or 'clinic'.")
    policy = store.policy()
    modalities = result["modalities"]
    store.set_policy(replace(policy, ratios={**policy.ratios, **{m: ratio for m in modalities}},
                             lossy_codecs={**policy.lossy_codecs, **{m: codec for m in modalities}}), user=user)
    return f"The clinic's {', '.join(modalities)} images now use {codec} at {ratio:g}:1."


def to_csv(result: dict) -> str:
    """The sweep table as CSV (one row per codec and ratio; Dice per label as columns)."""
    labels = sorted({label for r in result["sweep"] for label in r["dice_min"]})
    out = io.StringIO()
    writer = csv.writer(out)
    columns = ["codec", "mode", "target_ratio", "achieved_ratio", "bpp", "psnr_min", "psnr_mean", "ssim_mean", "max_error",
               "encode_s", "decode_s", "compressed_bytes", "passes"]
    writer.writerow(columns + [f"dice_min {label}" for label in labels])
    for row in result["sweep"]:
        writer.writerow([row[c] for c in columns] + [row["dice_min"].get(label) for label in labels])
    return out.getvalue()
