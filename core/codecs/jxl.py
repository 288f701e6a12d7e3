"""JPEG XL (libjxl): modular lossless, and VarDCT lossy at a target ratio.

JPEG XL stores unsigned samples only; signed images are refused rather than
shifted.  The lossy knob is the Butteraugli distance, searched for the ratio.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError
from ..pixels import PixelSpec, stored_values
from .rate import Knob, encode_to_ratio

DEPENDENCIES = "imagecodecs built with libjxl"
# Modular (lossless) effort 5 runs at ~6 MB/s for < 3 % smaller files than
# effort 3 at ~40 MB/s on the pydicom-data CR/MR images; VarDCT (lossy) is
# cheap enough at 5.
LOSSLESS_EFFORT = 3
LOSSY_EFFORT = 5


def is_available() -> bool:
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(imagecodecs.JPEGXL.available)


def photometric(spec: PixelSpec, lossy: bool) -> str:
    return spec.photometric


def check(spec: PixelSpec, lossy: bool) -> None:
    if spec.signed:
        raise UnsupportedError(
            "JPEG XL cannot store signed pixel data (Pixel Representation (0028,0103) = 1).",
            hint="Use --codec j2k, htj2k or jpegls for this image.",
        )


def knob(spec: PixelSpec) -> Knob:
    """The Butteraugli distance; libjxl accepts at most 25."""
    return Knob(low=0.01, high=25.0, guess=lambda r: 1.0)


def encode_at(frame: np.ndarray, spec: PixelSpec, distance: float | None) -> bytes:
    """One encoding: modular lossless when *distance* is None, else VarDCT at that distance."""
    import imagecodecs

    return bytes(
        imagecodecs.jpegxl_encode(
            np.ascontiguousarray(stored_values(frame, spec)),
            lossless=distance is None,
            distance=distance,
            effort=LOSSLESS_EFFORT if distance is None else LOSSY_EFFORT,
            bitspersample=spec.bits_stored,
        )
    )


def encode(frame: np.ndarray, spec: PixelSpec, ratio: float | None) -> bytes:
    if ratio is None:
        return encode_at(frame, spec, None)
    return encode_to_ratio(lambda d: encode_at(frame, spec, d), knob(spec), spec.frame_bytes, ratio)[0]


def decode(data: bytes, spec: PixelSpec) -> np.ndarray:
    import imagecodecs

    return np.asarray(imagecodecs.jpegxl_decode(data)).astype(spec.dtype, copy=False)
