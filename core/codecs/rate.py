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
    # Bracket ends: (knob value, ratio achieved there, or None before it is tried).
    lo: tuple[float, float | None] = (knob.low, None)
    hi: tuple[float, float | None] = (knob.high, None)
    results: list[tuple[bytes, float]] = []
    points: list[tuple[float, float]] = []
    value = knob.guess(ratio) if knob.guess else _next(lo, hi, ratio, knob, points)
    tried: set[float] = set()
    for _ in range(max_steps):
        tried.add(value)
        data = encode(value)
        results.append((data, value))
        achieved = uncompressed / len(data)
        points.append((value, achieved))
        if abs(achieved / ratio - 1) <= tolerance:
            break
        if (achieved < ratio) == knob.shrinks:
            lo = (value, achieved)
        else:
            hi = (value, achieved)
        value = _next(lo, hi, ratio, knob, points)
        if value in tried:
            break
    return results[pick([len(d) for d, _ in results], target)]


def _next(lo: tuple[float, float | None], hi: tuple[float, float | None], ratio: float, knob: Knob,
          points: list[tuple[float, float]]) -> float:
    """Next knob value inside the bracket [lo, hi].

    Both ends measured: interpolated on log(ratio), kept 10 % away from
    either end so that the bracket always shrinks.  One end measured: the
    secant through the last two points (log-log), or from a single point a
    ratio proportional to the knob.  Nothing measured, or a step that would
    leave the bracket: the midpoint.
    """
    warp, unwarp = (math.log, math.exp) if knob.log and min(lo[0], hi[0]) > 0 else (float, float)
    (a, ra), (b, rb) = lo, hi
    value = unwarp((warp(a) + warp(b)) / 2)
    if ra is not None and rb is not None and ra != rb:
        t = min(max((math.log(ratio) - math.log(ra)) / (math.log(rb) - math.log(ra)), 0.1), 0.9)
        value = unwarp(warp(a) + t * (warp(b) - warp(a)))
    elif points and points[-1][0] > 0:
        (v1, r1) = points[-1]
        slope = 1.0 if knob.shrinks else -1.0  # d log(ratio) / d log(knob)
        if len(points) > 1 and points[-2][0] > 0 and points[-2][0] != v1:
            (v0, r0) = points[-2]
            secant = (math.log(r1) - math.log(r0)) / (math.log(v1) - math.log(v0))
            if abs(secant) >= 0.1:  # a flat stretch would send the guess out of range
                slope = secant
        guess = v1 * (ratio / r1) ** (1 / slope)
        if min(a, b) < guess < max(a, b):
            value = guess
    if not knob.integer:
        return value
    value = round(value)
    if not min(a, b) < value < max(a, b):  # neighbouring integers: an end never tried is the last candidate
        value = next((end for end, measured in ((a, ra), (b, rb)) if measured is None), value)
    return value
