"""JPEG 2000 Part 1: reversible 5/3 for lossless, irreversible 9/7 at a target ratio.

glymur (OpenJPEG) writes unsigned data with RPCL progression and native rate
control.  glymur cannot write signed samples, so signed frames go through
imagecodecs' OpenJPEG binding, which stores them as signed (Ssiz sign bit);
that binding has no progression option and its lossy knob is a PSNR, so the
single-layer result is declared RPCL (same packet order) and the ratio is
reached by searching the PSNR.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from ..pixels import PixelSpec
from .codestream import declare_rpcl
from .rate import Knob, encode_to_ratio

DEPENDENCIES = "glymur with the OpenJPEG library (libopenjp2), imagecodecs"


def is_available() -> bool:
    try:
        import glymur
        import imagecodecs
    except ImportError:
        return False
    return glymur.version.openjpeg_version >= "2.3.0" and imagecodecs.JPEG2K.available


def decompositions(spec: PixelSpec) -> int:
    """Enough levels for a base resolution of at most 64 px, as many as the smaller side allows."""
    big, small = max(spec.rows, spec.columns), min(spec.rows, spec.columns)
    wanted = max(1, (max(big, 1) - 1).bit_length() - 6)
    return max(0, min(wanted, small.bit_length() - 1, 32))


def _mct(spec: PixelSpec) -> bool:
    return spec.samples == 3 and spec.photometric == "RGB"


def photometric(spec: PixelSpec, lossy: bool) -> str:
    if _mct(spec):
        return "YBR_ICT" if lossy else "YBR_RCT"
    return spec.photometric


def encode(frame: np.ndarray, spec: PixelSpec, ratio: float | None) -> bytes:
    if spec.signed:
        return _encode_signed(frame, spec, ratio)
    return _encode_glymur(frame, spec, ratio)


def _encode_glymur(frame: np.ndarray, spec: PixelSpec, ratio: float | None) -> bytes:
    import glymur

    def write(cratio: float | None) -> bytes:
        with tempfile.TemporaryDirectory(prefix="radpress-j2k-") as tmp:
            path = os.path.join(tmp, "frame.j2k")
            options = {"prog": "RPCL", "numres": decompositions(spec) + 1, "mct": _mct(spec)}
            if cratio is not None:
                options.update(cratios=[cratio], irreversible=True)
            glymur.Jp2k(path, data=np.ascontiguousarray(frame), **options)
            with open(path, "rb") as fh:
                return fh.read()

    if ratio is None:
        return write(None)
    # glymur declares 8 or 16 bits precision, i.e. Bits Allocated, so its
    # rate already counts stored bytes; the search only trims header overhead.
    knob = Knob(low=1.0, high=max(4000.0, ratio * 4), guess=lambda r: r)
    return encode_to_ratio(write, knob, spec.frame_bytes, ratio)[0]


def _encode_signed(frame: np.ndarray, spec: PixelSpec, ratio: float | None) -> bytes:
    import imagecodecs

    def write(psnr: float | None) -> bytes:
        data = imagecodecs.jpeg2k_encode(
            np.ascontiguousarray(frame),
            level=psnr,
            codecformat="J2K",
            reversible=psnr is None,
            bitspersample=spec.bits_stored,
            resolutions=decompositions(spec) + 1,
            mct=_mct(spec),
        )
        return declare_rpcl(bytes(data))

    if ratio is None:
        return write(None)
    knob = Knob(low=10.0, high=160.0, shrinks=False, log=False)
    return encode_to_ratio(write, knob, spec.frame_bytes, ratio)[0]


def decode(data: bytes, spec: PixelSpec) -> np.ndarray:
    import imagecodecs

    return np.asarray(imagecodecs.jpeg2k_decode(data)).astype(spec.dtype, copy=False)
