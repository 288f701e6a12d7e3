"""JPEG-LS (CharLS): lossless, and near-lossless with a bounded error NEAR.

JPEG-LS has no signed mode: signed samples are encoded as their two's
complement bit pattern at the precision written in the JPEG-LS header, and
decoders (pydicom, GDCM) sign-extend from that precision.  That is exact for
lossless but a NEAR error would wrap around zero, so signed near-lossless is
refused.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError
from ..pixels import PixelSpec
from .rate import Knob, encode_to_ratio

DEPENDENCIES = "imagecodecs built with CharLS"


def is_available() -> bool:
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(imagecodecs.JPEGLS.available)


def photometric(spec: PixelSpec, lossy: bool) -> str:
    return spec.photometric


def check(spec: PixelSpec, lossy: bool) -> None:
    if lossy and spec.signed:
        raise UnsupportedError(
            "JPEG-LS near-lossless cannot encode signed pixel data (Pixel Representation (0028,0103) = 1) "
            "without errors wrapping around zero.",
            hint="Use --codec j2k or htj2k for lossy compression of this image.",
        )


def _unsigned(frame: np.ndarray, spec: PixelSpec) -> np.ndarray:
    if not spec.signed:
        return np.ascontiguousarray(frame)
    return np.ascontiguousarray(frame).view(np.uint16 if frame.itemsize == 2 else np.uint8)


def encode(frame: np.ndarray, spec: PixelSpec, ratio: float | None) -> bytes:
    import imagecodecs

    pixels = _unsigned(frame, spec)

    def write(near: float | None) -> bytes:
        return bytes(imagecodecs.jpegls_encode(pixels, level=None if near is None else int(near)))

    if ratio is None:
        return write(None)
    knob = Knob(low=1, high=max(2, min(255, spec.peak // 4)), integer=True)
    return encode_to_ratio(write, knob, spec.frame_bytes, ratio)[0]


def decode(data: bytes, spec: PixelSpec) -> np.ndarray:
    import imagecodecs

    values = np.asarray(imagecodecs.jpegls_decode(data))
    if spec.signed:
        return values.view(spec.dtype)
    return values.astype(spec.dtype, copy=False)
