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
    if spec.bits_stored < 2:
        raise UnsupportedError(
            f"Bits Stored (0028,0101) = {spec.bits_stored}: JPEG-LS samples have at least 2 bits (ISO 14495-1 C.2.2).",
            hint="Use --codec j2k or htj2k for this image.",
        )
    if lossy and spec.signed:
        raise UnsupportedError(
            "JPEG-LS near-lossless cannot encode signed pixel data (Pixel Representation (0028,0103) = 1) "
            "without errors wrapping around zero.",
            hint="Use --codec j2k or htj2k for lossy compression of this image.",
        )


def _unsigned(frame: np.ndarray, spec: PixelSpec) -> np.ndarray:
    """Bits Stored wide patterns (two's complement for signed data), little-endian, colour by pixel."""
    words = stored_values(frame, spec).astype(spec.dtype, copy=False)
    patterns = words.view(f"u{words.dtype.itemsize}") & spec.peak  # two's complement of a signed word, as is
    return np.ascontiguousarray(patterns.astype("<u1" if spec.bits_allocated == 8 else "<u2", copy=False))


def knob(spec: PixelSpec) -> Knob:
    """NEAR, the largest error allowed: an integer of at most min(255, MAXVAL / 2) (ISO 14495-1 C.2.4.1.1).

    NEAR = 0 is a candidate too: when NEAR = 1 already overshoots the target
    (10-bit CR: 4:1 lossless, 12:1 at NEAR = 1), the lower ratio loses less.
    """
    return Knob(low=0, high=max(1, min(255, spec.peak // 2)), integer=True, log=False)


def encode_at(frame: np.ndarray, spec: PixelSpec, near: float | None) -> bytes:
    """One encoding: lossless when *near* is None (or 0), else near-lossless with error bound *near*."""
    import jpeg_ls

    patterns = _unsigned(frame, spec)
    try:
        return bytes(jpeg_ls.encode_buffer(
            patterns.tobytes(), spec.rows, spec.columns, spec.samples, spec.bits_stored,
            lossy_error=int(near or 0),
            interleave_mode=2 if spec.samples == 3 else None,
        ))
    except RuntimeError as exc:
        if "buffer is too small" not in str(exc):
            raise
        return _encode_expanding(patterns, spec, int(near or 0))


def _encode_expanding(patterns: np.ndarray, spec: PixelSpec, near: int) -> bytes:
    """A stream larger than the raw pixels (tiny, noisy frames): pyjpegls's output buffer is the raw size.

    imagecodecs has no such limit but declares the array's width as the precision, which is
    right only when Bits Stored fills the word; its SPIFF header (APP8) is dropped for DICOM.
    """
    import imagecodecs

    if spec.bits_stored != patterns.dtype.itemsize * 8:
        raise UnsupportedError(
            f"JPEG-LS cannot encode this {spec.columns} × {spec.rows} frame of {spec.bits_stored}-bit data: "
            "its stream would be larger than the pixels themselves.",
            hint="Use --codec j2k or htj2k for this image.",
        )
    data = bytes(imagecodecs.jpegls_encode(patterns, level=near or None))
    at = 2
    while data[at:at + 2] == b"\xff\xe8":
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return data[:2] + data[at:]


def encode(frame: np.ndarray, spec: PixelSpec, ratio: float | None) -> bytes:
    if ratio is None:
        return encode_at(frame, spec, None)
    return encode_to_ratio(lambda n: encode_at(frame, spec, n), knob(spec), spec.frame_bytes, ratio)[0]


def decode(data: bytes, spec: PixelSpec) -> np.ndarray:
    import imagecodecs

    patterns = np.asarray(imagecodecs.jpegls_decode(data)).astype(np.dtype(spec.dtype).str.replace("i", "u"))
    return stored_values(patterns.view(spec.dtype), spec)
