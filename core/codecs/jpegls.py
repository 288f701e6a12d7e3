"""JPEG-LS (CharLS): lossless, and near-lossless with a bounded error NEAR.

The JPEG-LS header's precision P is Bits Stored (pyjpegls takes it; the
imagecodecs binding declares the array's width): with P = 16 for 12-bit data a
near-lossless decoder may return up to 4095 + NEAR, which a viewer masking to
Bits Stored shows as black.  JPEG-LS has no signed mode: signed samples are
encoded as their two's complement bit pattern at precision P, and decoders
(pydicom, GDCM) sign-extend from Bits Stored.  That is exact for lossless but a
NEAR error would wrap around zero, so signed near-lossless is refused.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError
from ..pixels import PixelSpec, stored_values
from .rate import Knob, encode_to_ratio

DEPENDENCIES = "pyjpegls (CharLS) to encode, imagecodecs built with CharLS to decode"


def is_available() -> bool:
    try:
        import imagecodecs
        import jpeg_ls  # noqa: F401
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
    """Bits Stored wide patterns (two's complement for signed data), little-endian, colour by pixel."""
    values = stored_values(frame, spec).astype(np.int64) & spec.peak
    return np.ascontiguousarray(values.astype("<u1" if spec.bits_allocated == 8 else "<u2"))


def encode(frame: np.ndarray, spec: PixelSpec, ratio: float | None) -> bytes:
    import jpeg_ls

    pixels = _unsigned(frame, spec).tobytes()

    def write(near: float | None) -> bytes:
        return bytes(jpeg_ls.encode_buffer(
            pixels, spec.rows, spec.columns, spec.samples, spec.bits_stored,
            lossy_error=0 if near is None else int(near),
            interleave_mode=2 if spec.samples == 3 else None,
        ))

    if ratio is None:
        return write(None)
    knob = Knob(low=1, high=max(2, min(255, spec.peak // 2)), integer=True)
    return encode_to_ratio(write, knob, spec.frame_bytes, ratio)[0]


def decode(data: bytes, spec: PixelSpec) -> np.ndarray:
    import imagecodecs

    patterns = np.asarray(imagecodecs.jpegls_decode(data)).astype(np.dtype(spec.dtype).str.replace("i", "u"))
    return stored_values(patterns.view(spec.dtype), spec)
