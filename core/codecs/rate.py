"""Reaching a target compression ratio with encoders that take another knob.

OpenJPH takes a quantisation step, libjxl a perceptual distance, CharLS a
NEAR value, and OpenJPEG's own rate control misses by the header size: one
bisection over the knob serves them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

__all__ = ["RATIO_TOLERANCE", "Knob", "encode_to_ratio"]

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


def encode_to_ratio(
    encode: Callable[[float], bytes],
    knob: Knob,
    uncompressed: int,
    ratio: float,
    *,
    tolerance: float = 0.04,
    max_steps: int = 16,
) -> tuple[bytes, float]:
    """Return the encoding (and its knob value) whose ratio lands closest to *ratio*.

    The search stops as soon as the achieved ratio is within *tolerance*
    (relative) of the target; when the codec cannot get that close (integer
    knob, an almost blank image) the closest result is returned and the
    caller reports the achieved ratio.
    """
    target = uncompressed / ratio
    lo, hi = knob.low, knob.high
    best: tuple[float, bytes, float] | None = None

    def attempt(value: float) -> float:
        nonlocal best
        data = encode(value)
        error = abs(len(data) - target) / target
        if best is None or error < best[0]:
            best = (error, data, value)
        return len(data)

    def midpoint(a: float, b: float) -> float:
        m = math.sqrt(a * b) if knob.log else (a + b) / 2
        return round(m) if knob.integer else m

    value = knob.guess(ratio) if knob.guess else midpoint(lo, hi)
    tried: set[float] = set()
    for _ in range(max_steps):
        tried.add(value)
        size = attempt(value)
        if best[0] <= tolerance:
            break
        if (size > target) == knob.shrinks:
            lo = value
        else:
            hi = value
        value = midpoint(lo, hi)
        if value in tried:
            break
    return best[1], best[2]
