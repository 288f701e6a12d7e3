"""Bench section "codecrule": which lossless codec the archive's copies use, the OHIF rule against "smallest file".

Per image kind (CT 512², MR 1024², CR radiographs, colour ultrasound from pydicom-data) and per choice of
:data:`core.codecs.LOSSLESS_RULES` ("ohif": JPEG-LS below 1000 px, HTJ2K RPCL above, JPEG XL for colour;
"smallest": JPEG XL above 1000 px), the codec the rule picks is run as the archive runs it
(``Codec.encode`` / ``Codec.decode``, one thread): lossless ratio, encode and decode MB/s (best of *repeat*),
bit-exactness, and the time to a first picture.  That is the decode of the lowest resolution level still at
least 256 px on its long side (the app's ``decode_level``, OpenJPEG reading only those levels) where the
codestream has levels (JPEG 2000, HTJ2K), else a full decode: JPEG-LS has no levels, and the JPEG XL decoder
as wrapped here (imagecodecs) has no reduced-resolution decode of a lossless (modular) codestream.  Transfer
time is not counted: a viewer fetching an HTJ2K RPCL codestream can stop after that level's bytes.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .codecs import LOSSLESS_RULES, choose_codec
from .codecs.codestream import parse_main_header
from .pixels import decode_frame, pixel_spec, read_dataset
from .preview import decode_level, supports_levels
from .samples import sample

__all__ = ["measure", "IMAGES", "CHOICES"]

IMAGES = {"CT 512²": "693_UNCR", "MR 1024²": "MR2_UNCR", "CR 1955×1841": "RG1_UNCR", "CR 1760²": "RG3_UNCR",
          "US colour 640×480": "US1_UNCR"}
CHOICES = ("ohif", "smallest")
PREVIEW_SIDE = 256  # a first picture at least this large on its long side (a thumbnail's size)


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _row(label: str, choice: str, frame: np.ndarray, spec, repeat: int) -> dict:
    rule = next(r for r in LOSSLESS_RULES if r.name == choice)
    codec = choose_codec("auto", False, spec, rule)
    encode_s, data = _best(lambda: codec.encode(frame, spec, None), repeat)
    decode_s, decoded = _best(lambda: codec.decode(data, spec), repeat)
    row = {"image": label, "choice": choice, "codec": codec.name, "ratio": spec.frame_bytes / len(data),
           "encode_mb_s": spec.frame_bytes / encode_s / 1e6, "decode_mb_s": spec.frame_bytes / decode_s / 1e6,
           "bit_exact": bool(np.array_equal(decoded, frame)), "bytes": len(data), "uncompressed": spec.frame_bytes}
    level = 0
    if supports_levels(codec.name):
        info = parse_main_header(data)
        row["progression"] = info.progression
        level = max(0, min(info.decompositions, int(math.log2(max(spec.rows, spec.columns) / PREVIEW_SIDE))))
    preview_s, picture = _best(lambda: decode_level(codec.name, data, spec, level) if level else codec.decode(data, spec), repeat)
    row.update(preview_ms=preview_s * 1000, preview_level=level, preview_size=f"{picture.shape[1]}×{picture.shape[0]}")
    return row


def measure(images: dict | None = None, repeat: int = 3) -> dict:
    """*images*: label -> pydicom-data sample name or a Dataset (tests pass small synthetic ones)."""
    rows = []
    for label, source in (images or IMAGES).items():
        ds = read_dataset(sample(source)) if isinstance(source, str) else source
        spec = pixel_spec(ds)
        frame = decode_frame(ds, 0)
        rows += [_row(label, choice, frame, spec, repeat) for choice in CHOICES]
    totals = {}
    for choice in CHOICES:
        mine = [r for r in rows if r["choice"] == choice]
        totals[choice] = {"ratio": sum(r["uncompressed"] for r in mine) / sum(r["bytes"] for r in mine),
                          "encode_s": sum(r["uncompressed"] / r["encode_mb_s"] / 1e6 for r in mine),
                          "decode_s": sum(r["uncompressed"] / r["decode_mb_s"] / 1e6 for r in mine),
                          "preview_ms": sum(r["preview_ms"] for r in mine)}
    ohif, smallest = totals["ohif"], totals["smallest"]
    differ = [r["image"] for r in rows if r["choice"] == "ohif"
              and r["codec"] != next(s["codec"] for s in rows if s["choice"] == "smallest" and s["image"] == r["image"])]
    speed = {choice: {k: sum(r["uncompressed"] / r[f"{k}_mb_s"] / 1e6 for r in rows if r["choice"] == choice and r["image"] in differ)
                      for k in ("encode", "decode")} for choice in CHOICES}
    checks = [
        {"target": "every copy either rule makes is bit-exact", "measured": f"{sum(r['bit_exact'] for r in rows)} of {len(rows)}",
         "ok": all(r["bit_exact"] for r in rows)},
        {"target": "HTJ2K copies are resolution-progressive (COD progression order read back: RPCL)",
         "measured": ", ".join(f"{r['image']} {r['progression']}" for r in rows if r["codec"] == "htj2k") or "no HTJ2K copy",
         "ok": all(r.get("progression") == "RPCL" for r in rows if r["codec"] == "htj2k")},
        {"target": "OHIF rule costs at most 10 % of the smallest file's lossless ratio (all images)",
         "measured": f"{ohif['ratio']:.3f}:1 vs {smallest['ratio']:.3f}:1 ({(ohif['ratio'] / smallest['ratio'] - 1) * 100:+.1f} %)",
         "ok": ohif["ratio"] >= 0.9 * smallest["ratio"], "informative": True},
        {"target": "OHIF rule encodes and decodes faster where the rules differ",
         "measured": (f"encode {speed['smallest']['encode'] / speed['ohif']['encode']:.1f}×, decode "
                      f"{speed['smallest']['decode'] / speed['ohif']['decode']:.1f}× ({', '.join(differ)})") if differ else "same codecs",
         "ok": all(speed["ohif"][k] <= speed["smallest"][k] for k in ("encode", "decode")), "informative": True},
        {"target": "OHIF rule shows a first picture sooner (sum over the images)",
         "measured": f"{ohif['preview_ms']:.0f} ms vs {smallest['preview_ms']:.0f} ms",
         "ok": ohif["preview_ms"] <= smallest["preview_ms"], "informative": True},
    ]
    return {"rows": rows, "totals": totals, "repeat": repeat, "table": _table(rows, totals), "checks": checks}


def _table(rows: list[dict], totals: dict) -> str:
    lines = [f"{'image':<18} {'choice':<9} {'codec':<7} {'ratio':>7} {'enc MB/s':>9} {'dec MB/s':>9} "
             f"{'1st picture':>12} {'(level, size)':<18} exact"]
    for r in rows:
        lines.append(f"{r['image']:<18} {r['choice']:<9} {r['codec']:<7} {r['ratio']:>7.3f} {r['encode_mb_s']:>9.1f} "
                     f"{r['decode_mb_s']:>9.1f} {r['preview_ms']:>9.1f} ms  L{r['preview_level']} {r['preview_size']:<14} "
                     f"{'yes' if r['bit_exact'] else 'NO'}")
    for choice, t in totals.items():
        lines.append(f"{'all images':<18} {choice:<9} {'':<7} {t['ratio']:>7.3f}   encode {t['encode_s']:.2f} s, decode "
                     f"{t['decode_s']:.2f} s, first pictures {t['preview_ms']:.0f} ms")
    lines.append("1st picture: lowest level >= 256 px decoded alone where the codestream has levels (J2K/HTJ2K), "
                 "else the full decode (JPEG-LS, JPEG XL lossless)")
    return "\n".join(lines)
