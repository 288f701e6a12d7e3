"""Just enough of the JPEG 2000 codestream syntax (ISO 15444-1 Annex A) to read
encoder settings back and to declare the precision DICOM's Bits Stored asks for.

The encoders RadPress uses declare the width of the array they are given (8 or
16 bits), not Bits Stored.  :func:`container_samples` turns B-bit values into
P-bit samples from which such an encoder computes exactly the wavelet
coefficients a B-bit encoder would, and :func:`declare_precision` then writes
B (and the sign) into SIZ.  Decoders derive two things from that precision:
the DC level shift 2^(B-1) (lossless: the samples are offset so the encoder's
shift 2^(P-1) leaves v - 2^(B-1)) and the quantisation step sizes
2^(R_b - eps_b) (lossy: the samples are scaled by 2^(P-B), so steps that come
out 2^(P-B) times finer are the same steps in B-bit units).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CodestreamInfo", "parse_main_header", "container_samples", "declare_precision", "declare_precision_file",
           "PROGRESSIONS"]

SOC, SIZ, COD, TLM, SOT, CAP = 0xFF4F, 0xFF51, 0xFF52, 0xFF55, 0xFF90, 0xFF50
PROGRESSIONS = ("LRCP", "RLCP", "RPCL", "PCRL", "CPRL")


@dataclass(frozen=True)
class CodestreamInfo:
    width: int
    height: int
    components: int
    precision: int
    signed: bool
    progression: str
    layers: int
    mct: bool
    decompositions: int
    reversible: bool
    precincts: bool
    tlm: bool
    htj2k: bool
    tiles: int
    codeblock: tuple[int, int]  # width, height

    @property
    def base_resolution(self) -> tuple[int, int]:
        """Size of the lowest resolution level, which every decoder can show first."""
        d = 1 << self.decompositions
        return -(-self.height // d), -(-self.width // d)


def _segments(cs: bytes):
    if struct.unpack(">H", cs[:2])[0] != SOC:
        raise ValueError("not a JPEG 2000 codestream (no SOC marker)")
    pos = 2
    while pos + 4 <= len(cs):
        marker, length = struct.unpack(">HH", cs[pos : pos + 4])
        if marker == SOT:
            return
        yield marker, pos, cs[pos + 4 : pos + 2 + length]
        pos += 2 + length


def parse_main_header(cs: bytes) -> CodestreamInfo:
    info: dict = {"tlm": False, "htj2k": False}
    for marker, _pos, body in _segments(cs):
        if marker == SIZ:
            _rsiz, xs, ys, xo, yo, xt, yt, xto, yto, ncomp = struct.unpack(">HIIIIIIIIH", body[:36])
            ssiz = body[36]
            info.update(
                width=xs - xo,
                height=ys - yo,
                components=ncomp,
                precision=(ssiz & 0x7F) + 1,
                signed=bool(ssiz & 0x80),
                tiles=-(-(xs - xto) // xt) * -(-(ys - yto) // yt),
            )
        elif marker == COD:
            scod, prog, layers, mct, ndecomp, cbw, cbh, cbstyle, transform = struct.unpack(">BBHBBBBBB", body[:10])
            info.update(
                progression=PROGRESSIONS[prog],
                layers=layers,
                mct=bool(mct),
                decompositions=ndecomp,
                reversible=transform == 1,
                precincts=bool(scod & 1),
                codeblock=(1 << (cbw + 2), 1 << (cbh + 2)),
                htj2k=info["htj2k"] or bool(cbstyle & 0x40),
            )
        elif marker == TLM:
            info["tlm"] = True
        elif marker == CAP:
            info["htj2k"] = True
    return CodestreamInfo(**info)


def container_samples(values: np.ndarray, bits: int, signed: bool, lossy: bool) -> np.ndarray:
    """Unsigned samples as wide as *values* that encode to a *bits*-bit codestream once relabelled.

    *values* must already lie in the range *bits* allows (see
    :func:`core.pixels.stored_values`).  Encode the result as unsigned
    P-bit data, then call :func:`declare_precision` with the same *bits*
    and *signed*.
    """
    width = values.dtype.itemsize * 8
    shift = width - bits if lossy else 0
    dc = 0 if signed else 1 << (bits - 1)
    wide = ((values.astype(np.int64) - dc) << shift) + (1 << (width - 1))
    return wide.astype(np.uint8 if width == 8 else np.uint16)


def declare_precision(cs: bytes, bits: int, signed: bool) -> bytes:
    """The codestream with every component's Ssiz in SIZ set to *bits* and *signed*."""
    for marker, pos, body in _segments(cs):
        if marker == SIZ:
            out = bytearray(cs)
            ssiz = (0x80 if signed else 0) | (bits - 1)
            for component in range(struct.unpack(">H", body[34:36])[0]):
                out[pos + 4 + 36 + 3 * component] = ssiz
            return bytes(out)
    raise ValueError("codestream has no SIZ marker")


def declare_precision_file(path: Path, bits: int, signed: bool) -> None:
    """:func:`declare_precision` in place on a raw codestream file (the main header only is rewritten)."""
    with open(path, "r+b") as fh:
        head = fh.read(4096)
        patched = declare_precision(head, bits, signed)
        fh.seek(0)
        fh.write(patched)
