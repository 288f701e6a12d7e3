"""JPEG 2000 Part 1: reversible 5/3 for lossless, irreversible 9/7 at a target ratio.

glymur (OpenJPEG) writes RPCL with native rate control, but only as 8- or
16-bit unsigned samples; signed and 10/12-bit data are written through
:func:`~.codestream.container_samples` and the codestream then declares Bits
Stored and the sign (:func:`~.codestream.declare_precision`).

Lossy frames are encoded at Bits Stored itself (:class:`_StoredPrecision`):
samples scaled up to 16 bits cost OpenJPEG 2-4 more bit-planes to code for the
same file (a third more time on 12/14-bit CT and MR).  Its rate target then
counts Bits Stored, so the first guess converts RadPress's ratio (Bits
Allocated) to it and the search trims the header.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from ..pixels import PixelSpec, stored_values
from .codestream import container_samples, declare_precision
from .openjpeg import load_glymur
from .rate import Knob, encode_to_ratio

DEPENDENCIES = "glymur with the OpenJPEG library (libopenjp2 >= 2.5), imagecodecs"


def is_available() -> bool:
    try:
        glymur = load_glymur()
        import imagecodecs
    except ImportError:
        return False
    return glymur.version.openjpeg_version >= "2.3.0" and imagecodecs.JPEG2K.available


def decompositions(spec: PixelSpec) -> int:
    """Enough levels for a base resolution of at most 64 px, as many as the smaller side allows."""
    big, small = max(spec.rows, spec.columns), min(spec.rows, spec.columns)
    wanted = max(1, (max(big, 1) - 1).bit_length() - 6)
    return max(0, min(wanted, small.bit_length() - 1, 32))


def codeblock(spec: PixelSpec, lossy: bool) -> int:
    """Code-block side: 64; for lossy frames halved (down to 16) until 4 blocks span the smaller side.

    Rate control can only cut a code-block's passes; a tiny frame of a few
    64 x 64 blocks has so few cut points that whole ratio ranges are skipped
    (a 77 x 101 frame jumps from 45:1 to 75:1).  Lossless keeps 64: smaller
    blocks cost 2-5 % there.
    """
    side = 64
    while lossy and side > 16 and min(spec.rows, spec.columns) < 4 * side:
        side //= 2
    return side


def _mct(spec: PixelSpec) -> bool:
    return spec.samples == 3 and spec.photometric == "RGB"


def photometric(spec: PixelSpec, lossy: bool) -> str:
    if _mct(spec):
        return "YBR_ICT" if lossy else "YBR_RCT"
    return spec.photometric


def samples_for(frame: np.ndarray, spec: PixelSpec, lossy: bool) -> np.ndarray:
    """What the 8/16-bit unsigned encoders are given for a frame of *spec* (see :mod:`.codestream`)."""
    return container_samples(stored_values(frame, spec), spec.bits_stored, spec.signed, lossy)


def knob(spec: PixelSpec) -> Knob:
    """OpenJPEG's own ratio, which counts Bits Stored (the precision lossy frames are encoded at) and
    leaves out the headers: the first guess converts the target from Bits Allocated, the search trims."""
    return Knob(low=1.0, high=4000.0, guess=lambda r: max(1.0, r * spec.bits_stored / spec.bits_allocated))


def stored_samples(frame: np.ndarray, spec: PixelSpec) -> np.ndarray:
    """Unsigned Bits Stored wide samples whose wavelet coefficients are those of the (signed) stored values.

    OpenJPEG shifts unsigned samples down by 2^(B-1); signed values are offset
    up by as much here and the codestream is declared signed afterwards.
    """
    words = stored_values(frame, spec).astype(spec.dtype, copy=False)
    values = words.view(f"u{words.dtype.itemsize}")  # unsigned words wrap: -v + 2^(B-1) lands in [0, 2^B)
    if spec.signed:
        values = values + (1 << (spec.bits_stored - 1))
    return values.astype(np.uint8 if spec.bits_allocated == 8 else np.uint16, copy=False)


def _writer():
    glymur = load_glymur()

    class _StoredPrecision(glymur.Jp2k):
        """glymur's writer declaring Bits Stored as the precision (glymur itself declares 8 or 16 bits)."""

        def __init__(self, path: str, data: np.ndarray, bits: int, **options):
            self._bits = bits
            super().__init__(path, data=data, **options)

        def _populate_comptparms(self, img_array):
            super()._populate_comptparms(img_array)
            for component in self._comptparms:
                component.prec = component.bpp = self._bits

    return _StoredPrecision


def encode_at(frame: np.ndarray, spec: PixelSpec, cratio: float | None) -> bytes:
    """One encoding: reversible when *cratio* is None, else irreversible at OpenJPEG's rate *cratio* (Bits Stored)."""
    glymur = load_glymur()

    lossy = cratio is not None
    with tempfile.TemporaryDirectory(prefix="radpress-j2k-") as tmp:
        path = os.path.join(tmp, "frame.j2k")
        options = {"prog": "RPCL", "numres": decompositions(spec) + 1, "mct": _mct(spec),
                   "cbsize": (codeblock(spec, lossy),) * 2}
        if lossy:
            _writer()(path, stored_samples(frame, spec), spec.bits_stored, cratios=[cratio], irreversible=True, **options)
        else:
            glymur.Jp2k(path, data=samples_for(frame, spec, lossy), **options)
        with open(path, "rb") as fh:
            return declare_precision(fh.read(), spec.bits_stored, spec.signed)


def encode(frame: np.ndarray, spec: PixelSpec, ratio: float | None) -> bytes:
    if ratio is None:
        return encode_at(frame, spec, None)
    return encode_to_ratio(lambda c: encode_at(frame, spec, c), knob(spec), spec.frame_bytes, ratio)[0]


def decode(data: bytes, spec: PixelSpec) -> np.ndarray:
    import imagecodecs

    return np.asarray(imagecodecs.jpeg2k_decode(data)).astype(spec.dtype, copy=False)
