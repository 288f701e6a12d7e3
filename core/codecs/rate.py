"""Reaching a target compression ratio with encoders that take another knob.

OpenJPH takes a quantisation step, libjxl a perceptual distance, CharLS a
NEAR value, and OpenJPEG's own rate control misses by the header size: one
bisection over the knob serves them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

__all__ = ["RATIO_TOLERANCE", "Knob", "encode_to_ratio", "pick"]

# A lossy copy whose achieved ratio is within this fraction of the target
# counts as having reached it (issue 9 §3); outside it, callers say so.
RATIO_TOLERANCE = 0.10


@dataclass(frozen=True)
class Knob:
    """The encoder parameter searched: its range, and whether bigger means smaller output."""

    low: float
    high: float
    shrinks: bool = True
    log: bool = True
    integer: bool = False
    guess: Callable[[float], float] | None = None


def pick(sizes: list[int], target: float, tolerance: float = RATIO_TOLERANCE) -> int:
    """Index of the size to keep for a *target* size (bytes).

    Within *tolerance* of the target: the closest.  Otherwise the target was
    not reached and the side that loses less wins: the smallest file still
    larger than the target (a lower ratio), or, when every file is smaller,
    the largest of them (the finest quality the codec gives).
    """
    errors = [abs(target / size - 1) for size in sizes]  # relative error of the ratio
    inside = [i for i, e in enumerate(errors) if e <= tolerance]
    if inside:
        return min(inside, key=errors.__getitem__)
    larger = [i for i, size in enumerate(sizes) if size > target]
    if larger:
        return min(larger, key=sizes.__getitem__)
    return max(range(len(sizes)), key=sizes.__getitem__)


def encode_to_ratio(
    encode: Callable[[float], bytes],
    knob: Knob,
    uncompressed: int,
    ratio: float,
    *,
    tolerance: float = 0.04,
    max_steps: int = 16,
) -> tuple[bytes, float]:
    """Return the encoding (and its knob value) to keep for *ratio*, as :func:`pick` chooses.

    The search stops as soon as the achieved ratio is within *tolerance*
    (relative) of the target, tighter than :data:`RATIO_TOLERANCE` so that
    rounding never decides.  When the codec cannot get within
    RATIO_TOLERANCE (integer knob, headers of a tiny image, a range the knob
    cannot span) the lower ratio nearest the target is returned and the
    caller, which computes the achieved ratio, reports it.
    """
    target = uncompressed / ratio
    lo, hi = knob.low, knob.high
    results: list[tuple[bytes, float]] = []

    def midpoint(a: float, b: float) -> float:
        m = math.sqrt(a * b) if knob.log else (a + b) / 2
        return round(m) if knob.integer else m

    value = knob.guess(ratio) if knob.guess else midpoint(lo, hi)
    tried: set[float] = set()
    for _ in range(max_steps):
        tried.add(value)
        data = encode(value)
        results.append((data, value))
        if abs(target / len(data) - 1) <= tolerance:
            break
        if (len(data) > target) == knob.shrinks:
            lo = value
        else:
            hi = value
        value = midpoint(lo, hi)
        if value in tried:
            break
    return results[pick([len(d) for d, _ in results], target)]
