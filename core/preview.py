"""Previews: what ``/preview/<sop>`` shows, and reduced-resolution decoding from a codestream.

Level K is 1/2^K of the full size; only the codestream's lower resolution
levels are decoded, never the full image followed by a downscale.  Both
syntaxes go through OpenJPEG (glymur), the decoder of :mod:`core.codecs`, so a
preview shows what the file decodes to.  A full-size preview of the original
(or of its lossless copy: the same pixels) is the original's frame decoded
once, without encoding a codestream first; grey values go to the screen
through a lookup table over the frame's stored values, so each value is
windowed once, with the very arithmetic of :func:`core.render.to_display`.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from .codecs.openjpeg import load_glymur
from .errors import InvalidOptionError, UnsupportedError
from .pixels import PixelSpec, clip_to_stored

__all__ = ["decode_level", "supports_levels", "preview_pixels", "display_pixels", "LUT_MAX_ENTRIES"]

# A grey frame whose stored values span at most this many is windowed through a lookup table.
LUT_MAX_ENTRIES = 1 << 16


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
    glymur = load_glymur()

    with tempfile.TemporaryDirectory(prefix="radpress-level-") as tmp:
        path = os.path.join(tmp, "frame.j2k")
        with open(path, "wb") as fh:
            fh.write(codestream)
        step = 1 << level
        return clip_to_stored(np.asarray(glymur.Jp2k(path)[::step, ::step]), spec)


def display_pixels(frame: np.ndarray, ds, index: int = 0, window: tuple[float, float] | None = None) -> np.ndarray:
    """:func:`core.render.to_display` of *frame*, value for value, computed once per stored value.

    Windowing, rescale, Modality/VOI LUTs and MONOCHROME1 inversion map each
    value alone; only the default window without one of the image's own (its
    percentiles) looks at the whole frame, so it is taken from the frame first.
    """
    from .pixels import pixel_spec
    from .render import _voi_lut, modality_values, own_window, to_display, window_of

    spec = pixel_spec(ds)
    if spec.samples != 1 or spec.photometric == "PALETTE COLOR" or frame.dtype.kind not in "iu" or not frame.size:
        return to_display(frame, ds, window, index)
    low, high = int(frame.min()), int(frame.max())
    if high - low >= LUT_MAX_ENTRIES:
        return to_display(frame, ds, window, index)
    if window is None and own_window(ds, index) is None and _voi_lut(ds) is None:
        window = window_of(ds, modality_values(frame, ds, index).astype(np.float64), index)
    values = np.arange(low, high + 1, dtype=frame.dtype).reshape(1, -1)
    lut = to_display(values, ds, window, index).reshape(-1)
    return lut[np.subtract(frame, low, dtype=np.int32)]


def preview_pixels(store, sop_uid: str, frame: int, level: int, variant: str, ratio: float | None
                   ) -> tuple[np.ndarray, str, float | None]:
    """The 8-bit picture of a preview, an ETag naming what it shows, and a lossy copy's achieved ratio.

    Full size, original or lossless: the original's frame (decoded once).  A
    lossy copy, a lower level, or an image too large to decode whole: read from
    the codestream (made once and cached by :func:`core.archive.codestream_path`).
    """
    from .archive import codestream_path
    from .bigimage import is_large
    from .deepzoom import Codestream
    from .pixels import decode_frame, read_dataset

    row = store.instance(sop_uid)
    original = store.artifact(sop_uid, "original")
    if level == 0 and variant in ("original", "lossless") and not is_large(row["rows"], row["columns"]):
        if not 0 <= frame < row["frames"]:
            raise InvalidOptionError(f"Frame {frame + 1} requested but the image has {row['frames']} frame(s).")
        ds = read_dataset(original.path)
        return display_pixels(decode_frame(ds, frame), ds, frame), f"{original.checksum[:40]}-{frame}-0", None
    path, achieved = codestream_path(store, sop_uid, frame, variant, ratio)
    source = Codestream(path)
    pixels = source.region(level, 0, source.height, 0, source.width)
    return display_pixels(pixels, read_dataset(original.path), frame), f"{path.stem}-{level}", achieved
