"""High-Throughput JPEG 2000 (Part 15): encoded by OpenJPH, decoded by OpenJPEG.

OpenJPH writes RPCL by default; TLM markers are asked for, and there are at
least as many decompositions as JPEG 2000's base-resolution rule asks, so
that PS3.5 §10.18 (HTJ2K Lossless RPCL) holds.  OpenJPH declares the array's
width as precision, so frames go through the same container samples and SIZ
relabelling as JPEG 2000 (:mod:`.codestream`).  OpenJPH has no rate control:
the target ratio is reached by searching the quantisation step (a fraction of
the full range, so the same step means the same at every bit depth).

Without rate control nothing can drop the lowest band's low bit-planes, so
frames get at least 5 decompositions (:func:`levels`): with the rule's single
level a 64 x 64 MR kept a 32 x 32 band that alone cost 0.8 bpp, and below
that the search zeroed it (6.8 dB at 50:1, JPEG 2000 30.6 dB; with 5 levels
33.0 dB).  Lossless gains too: 8.80 -> 7.81 bpp there, 1 % on a 512 x 512 CT.

Lossy codestreams are decoded by OpenJPEG (>= 2.5 reads HTJ2K), which clamps
overshoot to the declared precision; OpenJPH's decoder, as wrapped by
imagecodecs, casts without clamping, so an 8-bit 256 came back as 0.
Reversible codestreams cannot overshoot and keep OpenJPH, 1.5-3x faster.
"""

from __future__ import annotations

import numpy as np

from ..pixels import PixelSpec
from . import j2k
from .codestream import declare_precision, parse_main_header
from .j2k import decompositions, photometric, samples_for  # noqa: F401  (same colour rules as Part 1)
from .rate import Knob, encode_to_ratio

DEPENDENCIES = "imagecodecs built with OpenJPH and OpenJPEG >= 2.5"


def is_available() -> bool:
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(imagecodecs.HTJ2K.available) and imagecodecs.JPEG2K.available


def knob(spec: PixelSpec) -> Knob:
    """OpenJPH's quantisation step, a fraction of the full range (at 1.0 little but the mean is left)."""
    return Knob(low=1e-5, high=1.0, guess=lambda r: 1e-3 * r / 10)


def levels(spec: PixelSpec) -> int:
    """OpenJPH's default of 5 decompositions (or as many as the smaller side allows), more if the rule asks.

    A quantiser without rate control spends bits on every coefficient it
    keeps; a small lowest band is what lets a low ratio keep the picture.
    """
    return max(decompositions(spec), min(5, min(spec.rows, spec.columns).bit_length() - 1))


def encode_at(frame: np.ndarray, spec: PixelSpec, qstep: float | None) -> bytes:
    """One encoding: reversible when *qstep* is None, else irreversible with that quantisation step."""
    import imagecodecs

    data = imagecodecs.htj2k_encode(
        samples_for(frame, spec, qstep is not None),
        level=qstep,
        reversible=qstep is None,
        resolutions=levels(spec),  # OpenJPH counts decompositions
        rgb=spec.samples == 3 and spec.photometric == "RGB",
        tlm=True,
    )
    return declare_precision(bytes(data), spec.bits_stored, spec.signed)


def encode(frame: np.ndarray, spec: PixelSpec, ratio: float | None) -> bytes:
    if ratio is None:
        return encode_at(frame, spec, None)
    return encode_to_ratio(lambda q: encode_at(frame, spec, q), knob(spec), spec.frame_bytes, ratio)[0]


def decode(data: bytes, spec: PixelSpec) -> np.ndarray:
    if not parse_main_header(data).reversible:
        return j2k.decode(data, spec)
    import imagecodecs

    return np.asarray(imagecodecs.htj2k_decode(data, planar=False)).astype(spec.dtype, copy=False)
