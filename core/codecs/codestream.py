"""Just enough of the JPEG 2000 codestream syntax (ISO 15444-1 Annex A) to read
encoder settings back and to state the progression order PS3.5 asks for."""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["CodestreamInfo", "parse_main_header", "declare_rpcl", "PROGRESSIONS"]

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
            scod, prog, layers, mct, ndecomp, _cbw, _cbh, cbstyle, transform = struct.unpack(">BBHBBBBBB", body[:10])
            info.update(
                progression=PROGRESSIONS[prog],
                layers=layers,
                mct=bool(mct),
                decompositions=ndecomp,
                reversible=transform == 1,
                precincts=bool(scod & 1),
                htj2k=info["htj2k"] or bool(cbstyle & 0x40),
            )
        elif marker == TLM:
            info["tlm"] = True
        elif marker == CAP:
            info["htj2k"] = True
    return CodestreamInfo(**info)


def declare_rpcl(cs: bytes) -> bytes:
    """Mark a single-tile, single-layer codestream without precinct partition as RPCL.

    With one layer and one precinct per resolution, LRCP, RLCP and RPCL emit
    the packets in exactly the same order (resolution, then component), so
    only the COD byte differs.  Anything else is refused rather than mislabelled.
    """
    info = parse_main_header(cs)
    if info.progression == "RPCL":
        return cs
    if info.layers != 1 or info.precincts or info.tiles != 1 or info.progression not in ("LRCP", "RLCP"):
        raise ValueError(f"cannot relabel a {info.progression} codestream with {info.layers} layers as RPCL")
    for marker, pos, _body in _segments(cs):
        if marker == COD:
            out = bytearray(cs)
            out[pos + 5] = PROGRESSIONS.index("RPCL")
            return bytes(out)
    raise ValueError("codestream has no COD marker")
