"""Reduced-resolution decoding straight from a JPEG 2000 / HTJ2K codestream.

Level K is 1/2^K of the full size; only the codestream's lower resolution
levels are decoded, never the full image followed by a downscale.  Both
syntaxes go through OpenJPEG (glymur), the decoder of :mod:`core.codecs`, so a
preview shows what the file decodes to.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from .errors import InvalidOptionError, UnsupportedError
from .pixels import PixelSpec, clip_to_stored

__all__ = ["decode_level", "supports_levels"]


def supports_levels(codec_name: str) -> bool:
    return codec_name in ("j2k", "htj2k")


def decode_level(codec_name: str, codestream: bytes, spec: PixelSpec, level: int) -> np.ndarray:
    if level < 0:
        raise InvalidOptionError(f"Resolution level {level} is negative.", hint="Use 0 for full size, 1 for half, ...")
    if level == 0:
        from .codecs import get_codec

        return get_codec(codec_name, False).decode(codestream, spec)
    if not supports_levels(codec_name):
        raise UnsupportedError(f"{codec_name} codestreams have no resolution levels to decode from.")
    import glymur

    with tempfile.TemporaryDirectory(prefix="radpress-level-") as tmp:
        path = os.path.join(tmp, "frame.j2k")
        with open(path, "wb") as fh:
            fh.write(codestream)
        step = 1 << level
        return clip_to_stored(np.asarray(glymur.Jp2k(path)[::step, ::step]), spec)
