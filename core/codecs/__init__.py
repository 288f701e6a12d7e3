"""The codec registry: every compressed form RadPress writes or reads itself.

One :class:`Codec` per (name, lossy) pair and transfer syntax, in the manner of
pydicom's pixel encoders/decoders.  The CLI, the routes and the UI list codecs
from :data:`CODECS`; nothing else keeps its own list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

import numpy as np
from pydicom.uid import (
    HTJ2K,
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from pydicom._uid_dict import UID_dictionary

from ..errors import InvalidOptionError, UnsupportedError
from ..pixels import PixelSpec, clip_to_stored
from . import htj2k, j2k, jpegls, jxl

__all__ = [
    "Codec",
    "AutoRule",
    "OHIF_RULE",
    "SMALLEST_RULE",
    "LOSSLESS_RULES",
    "get_rule",
    "CODECS",
    "CODEC_NAMES",
    "MIN_RATIO",
    "MAX_RATIO",
    "JPEGXLLossless",
    "JPEGXLJPEGRecompression",
    "JPEGXL",
    "get_codec",
    "codec_for_uid",
    "choose_codec",
    "check_ratio",
]

# PS3.5 Table A-1; pydicom 3.0 does not know these yet, and writes only
# transfer syntaxes it knows, so they are registered with it here.
JPEGXLLossless = UID("1.2.840.10008.1.2.4.110")
JPEGXLJPEGRecompression = UID("1.2.840.10008.1.2.4.111")
JPEGXL = UID("1.2.840.10008.1.2.4.112")
for _uid, _name, _keyword in (
    (JPEGXLLossless, "JPEG XL Lossless", "JPEGXLLossless"),
    (JPEGXLJPEGRecompression, "JPEG XL JPEG Recompression", "JPEGXLJPEGRecompression"),
    (JPEGXL, "JPEG XL", "JPEGXL"),
):
    UID_dictionary.setdefault(_uid, (_name, "Transfer Syntax", "", "", _keyword))

MIN_RATIO = 2.0
MAX_RATIO = 200.0


@dataclass(frozen=True)
class Codec:
    """One way of compressing a frame, tied to the transfer syntax that announces it."""

    name: str
    lossy: bool
    transfer_syntax: UID
    label: str
    method: str  # Lossy Image Compression Method (0028,2114) defined term, PS3.3 C.7.6.1.1.5.1
    backend: ModuleType = field(repr=False)
    writes: bool = True
    decodable_by_pydicom: bool = True

    @property
    def mode(self) -> str:
        return "lossy" if self.lossy else "lossless"

    @property
    def is_available(self) -> bool:
        return self.backend.is_available()

    def check(self, spec: PixelSpec) -> None:
        """Raise :class:`UnsupportedError` naming the attribute when *spec* cannot be encoded."""
        if not self.writes:
            raise UnsupportedError(f"RadPress reads but does not write {self.transfer_syntax.name}.")
        if spec.bits_allocated not in (8, 16):
            raise UnsupportedError(
                f"Bits Allocated (0028,0100) = {spec.bits_allocated}: {self.label} compression handles 8 and 16 bits only.",
                hint="Keep this image uncompressed (strategy 4, original only).",
            )
        if spec.samples not in (1, 3):
            raise UnsupportedError(f"Samples per Pixel (0028,0002) = {spec.samples} is not 1 or 3.")
        if self.lossy and spec.photometric == "PALETTE COLOR":
            raise UnsupportedError(
                "Lossy compression of a PALETTE COLOR image would change palette indices, i.e. colours.",
                hint="Use --mode lossless for this image.",
            )
        if not self.is_available:
            raise UnsupportedError(f"The {self.name} codec is not installed: needs {self.backend.DEPENDENCIES}.")
        if hasattr(self.backend, "check"):
            self.backend.check(spec, self.lossy)

    def encode(self, frame: np.ndarray, spec: PixelSpec, ratio: float | None = None) -> bytes:
        """Encode one frame; *ratio* is the lossy target (uncompressed as stored / compressed)."""
        return self.backend.encode(frame, spec, ratio if self.lossy else None)

    def decode(self, data: bytes, spec: PixelSpec) -> np.ndarray:
        """Stored values of one frame, clamped to the Bits Stored range (what pydicom and viewers show)."""
        return clip_to_stored(self.backend.decode(data, spec).reshape(spec.shape), spec)

    def photometric(self, spec: PixelSpec) -> str:
        """Photometric Interpretation the standard requires for the encoded frames."""
        return self.backend.photometric(spec, self.lossy)


CODECS: tuple[Codec, ...] = (
    Codec("j2k", False, JPEG2000Lossless, "JPEG 2000 lossless", "ISO_15444_1", j2k),
    Codec("j2k", True, JPEG2000, "JPEG 2000", "ISO_15444_1", j2k),
    Codec("htj2k", False, HTJ2KLosslessRPCL, "HTJ2K lossless (RPCL)", "ISO_15444_15", htj2k),
    Codec("htj2k", False, HTJ2KLossless, "HTJ2K lossless", "ISO_15444_15", htj2k, writes=False),
    Codec("htj2k", True, HTJ2K, "HTJ2K", "ISO_15444_15", htj2k),
    Codec("jpegls", False, JPEGLSLossless, "JPEG-LS lossless", "ISO_14495_1", jpegls),
    Codec("jpegls", True, JPEGLSNearLossless, "JPEG-LS near-lossless", "ISO_14495_1", jpegls),
    Codec("jxl", False, JPEGXLLossless, "JPEG XL lossless", "ISO_18181_1", jxl, decodable_by_pydicom=False),
    Codec("jxl", True, JPEGXL, "JPEG XL", "ISO_18181_1", jxl, decodable_by_pydicom=False),
    Codec("jxl", False, JPEGXLJPEGRecompression, "JPEG XL JPEG recompression", "ISO_18181_1", jxl,
          writes=False, decodable_by_pydicom=False),
)

CODEC_NAMES: tuple[str, ...] = tuple(dict.fromkeys(c.name for c in CODECS)) + ("auto",)


def get_codec(name: str, lossy: bool) -> Codec:
    for codec in CODECS:
        if codec.name == name and codec.lossy == lossy and codec.writes:
            return codec
    known = ", ".join(CODEC_NAMES)
    raise InvalidOptionError(f"Unknown codec {name!r}.", hint=f"Choose one of: {known}.")


def codec_for_uid(uid: str) -> Codec | None:
    """The registry entry for a transfer syntax, or None for syntaxes pydicom handles alone."""
    for codec in CODECS:
        if codec.transfer_syntax == uid:
            return codec
    return None


@dataclass(frozen=True)
class AutoRule:
    """Which codec a rule means, by image kind: (small grayscale, large grayscale, colour).

    ``auto`` means :data:`SMALLEST_RULE`: lossy copies follow the OHIF team's
    web-delivery rule (small grayscale → JPEG-LS, large grayscale → HTJ2K,
    colour → JPEG XL), where decode speed matters; lossless goes to the
    smallest file, JPEG XL for large grayscale (HTJ2K is 6–9 % larger on the
    CR/MR images, but encodes and decodes several times slower and has no
    resolution levels).  The archive's copies follow :data:`OHIF_RULE` unless
    the policy says otherwise.  When the preferred codec cannot take an image
    (signed data in JPEG XL, say), the fallbacks are tried in order.
    """

    small_side: int = 1000
    lossy: tuple[str, str, str] = ("jpegls", "htj2k", "jxl")
    lossless: tuple[str, str, str] = ("jpegls", "jxl", "jxl")
    fallbacks: tuple[str, ...] = ("jpegls", "htj2k", "j2k")
    name: str = "smallest"
    label: str = "Smallest file (JPEG-LS < 1000 px, else JPEG XL)"

    def preferred(self, spec: PixelSpec, lossy: bool) -> str:
        small, large, colour = self.lossy if lossy else self.lossless
        if spec.samples == 3:
            return colour
        return small if max(spec.rows, spec.columns) < self.small_side else large


SMALLEST_RULE = AutoRule()
# OHIF's web-delivery rule for both modes: HTJ2K (RPCL) lets a viewer show a low resolution level first.
OHIF_RULE = AutoRule(lossless=AutoRule.lossy, name="ohif",
                     label="Web delivery, OHIF rule (JPEG-LS < 1000 px, else HTJ2K RPCL; colour JPEG XL)")


def _fixed(codec: str, label: str) -> AutoRule:
    return AutoRule(lossy=(codec,) * 3, lossless=(codec,) * 3, name=codec, label=f"{label} for every image")


# The choices a policy has for lossless copies (per modality too): the two rules, then one codec for everything.
LOSSLESS_RULES: tuple[AutoRule, ...] = (OHIF_RULE, SMALLEST_RULE) + tuple(
    _fixed(c.name, c.label) for c in CODECS if not c.lossy and c.writes)


def get_rule(name: str) -> AutoRule:
    """The lossless choice called *name* (``auto`` is :data:`SMALLEST_RULE`)."""
    for rule in LOSSLESS_RULES:
        if rule.name == ("smallest" if name == "auto" else name):
            return rule
    known = ", ".join(r.name for r in LOSSLESS_RULES)
    raise InvalidOptionError(f"Unknown lossless codec choice {name!r}.", hint=f"Choose one of: {known}.")


def choose_codec(name: str, lossy: bool, spec: PixelSpec, rule: AutoRule = SMALLEST_RULE) -> Codec:
    """Resolve *name* (``auto``, or a rule's name such as ``ohif``) to a codec that accepts *spec*, or raise why not.

    A codec named outright must take the image; a rule falls back to the next codec that does.
    """
    if name in (OHIF_RULE.name, SMALLEST_RULE.name):
        name, rule = "auto", get_rule(name)
    if name != "auto":
        codec = get_codec(name, lossy)
        codec.check(spec)
        return codec
    reasons = []
    for candidate in dict.fromkeys((rule.preferred(spec, lossy), *rule.fallbacks)):
        codec = get_codec(candidate, lossy)
        try:
            codec.check(spec)
        except UnsupportedError as exc:
            reasons.append(f"{candidate}: {exc.message}")
            continue
        return codec
    raise UnsupportedError("No codec accepts this image. " + " ".join(reasons))


def check_ratio(ratio: float | None, lossy: bool) -> float | None:
    """Validate the lossy target once, before any work."""
    if not lossy:
        if ratio is not None:
            raise InvalidOptionError("--ratio was given with --mode lossless.", hint="Drop --ratio, or use --mode lossy.")
        return None
    if ratio is None:
        raise InvalidOptionError("--mode lossy needs --ratio.", hint=f"For example --ratio 10 (allowed {MIN_RATIO:g}–{MAX_RATIO:g}).")
    if not MIN_RATIO <= ratio <= MAX_RATIO:
        raise InvalidOptionError(
            f"Compression ratio {ratio:g}:1 is out of range.",
            hint=f"Choose between {MIN_RATIO:g}:1 and {MAX_RATIO:g}:1.",
        )
    return float(ratio)
