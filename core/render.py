"""Turning stored values into something a screen shows: windowing, inversion, colour.

Used for thumbnails here and by the image routes; never used for anything
diagnostic that is written back to DICOM.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from pydicom.dataset import Dataset

from .errors import InvalidOptionError
from .pixels import decode_frame, pixel_spec

__all__ = [
    "display_frame", "to_display", "modality_values", "own_window", "window_of", "window_presets", "preset_window",
    "thumbnail_png", "shrink_png", "encode_image", "IMAGE_TYPES", "WINDOW_PRESETS", "IMAGE_DEFAULT", "FULL_RANGE",
    "RENDER_VERSION", "render_version", "picture_codec",
]

# What this module draws, as a number.  It is part of every URL ``?v=`` and cache key naming a picture drawn here
# (previews, DeepZoom tiles, thumbnails made on demand), which browsers keep for a year as immutable
# (core.serving.versioned): BUMP IT in any change that alters a drawn pixel or byte — windowing, LUTs, inversion,
# colour, downsampling, the thumbnail size, the PNG/JPEG writers — so browsers and the server's caches fetch and
# draw again after the upgrade instead of showing the old picture.  Stored thumbnails record it too
# (picture_codec): one drawn by another version is not served, and the study's next job draws it again.
RENDER_VERSION = 1

IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif", "jp2": "image/jp2"}

# Named window (center, width) presets per modality, in Hounsfield units for CT; every
# modality also has IMAGE_DEFAULT (the image's own window or VOI LUT, else percentiles) and FULL_RANGE.
WINDOW_PRESETS: dict[str, dict[str, tuple[float, float]]] = {
    "CT": {"brain": (40, 80), "soft tissue": (50, 400), "lung": (-600, 1500), "bone": (400, 1800)},
}
IMAGE_DEFAULT = "Image default"
FULL_RANGE = "Full range"
# Without a window of its own an image opens on this central range of its values (robust to a few outliers).
PERCENTILES = (0.5, 99.5)


def render_version(source: str) -> str:
    """The name of a picture drawn by this renderer from *source* (a file's checksum, an ETag): the ``v`` of its URL,
    its ETag or cache key, e.g. ``<32 hex digits>-r1``."""
    return f"{source}-r{RENDER_VERSION}"


def picture_codec(fmt: str) -> str:
    """The codec a stored picture (a thumbnail) is recorded with: its format and :data:`RENDER_VERSION`, e.g.
    ``png1`` (letters and digits, as job messages carry codec names)."""
    return f"{fmt}{RENDER_VERSION}"


def _first(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value[0] if hasattr(value, "__len__") and not isinstance(value, str) else value)
    except (TypeError, ValueError, IndexError):
        return None


def _frame_item(ds: Dataset, index: int, sequence: str) -> Dataset | None:
    """The item of a functional group macro for frame *index*: its per-frame one, else the shared one."""
    for groups, position in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups) or []
        if position < len(items) and items[position].get(sequence):
            return items[position].get(sequence)[0]
    return None


def modality_values(frame: np.ndarray, ds: Dataset, index: int = 0) -> np.ndarray:
    """Stored values to modality values (e.g. HU): the Modality LUT or rescale, also from Enhanced functional groups."""
    from pydicom.pixels import apply_modality_lut

    transform = _frame_item(ds, index, "PixelValueTransformationSequence")
    if "RescaleSlope" not in ds and "ModalityLUTSequence" not in ds and transform is not None:
        slope, intercept = _first(transform.get("RescaleSlope")), _first(transform.get("RescaleIntercept"))
        return frame * (1.0 if slope is None else slope) + (intercept or 0.0)
    return apply_modality_lut(frame, ds)


def own_window(ds: Dataset, index: int = 0) -> tuple[float, float] | None:
    """The image's own first Window Center/Width pair (top level, else the frame's Frame VOI LUT), or None."""
    sources = [ds, _frame_item(ds, index, "FrameVOILUTSequence")]
    for source in sources:
        if source is None:
            continue
        center, width = _first(source.get("WindowCenter")), _first(source.get("WindowWidth"))
        if center is not None and width and width > 0:
            return center, width
    return None


def _voi_lut(ds: Dataset):
    items = ds.get("VOILUTSequence") or []
    return items[0] if items and "LUTDescriptor" in items[0] and "LUTData" in items[0] else None


def window_of(ds: Dataset, values: np.ndarray, index: int = 0) -> tuple[float, float]:
    """Where a display starts: the image's own window, else its VOI LUT's input range, else percentiles."""
    own = own_window(ds, index)
    if own is not None:
        return own
    lut = _voi_lut(ds)
    if lut is not None:
        entries, first = int(lut.LUTDescriptor[0]) or 65536, float(lut.LUTDescriptor[1])
        return first + entries / 2, float(entries)
    lo, hi = np.percentile(values, PERCENTILES)
    return float(lo + hi) / 2, max(float(hi - lo), 1.0)


def window_presets(modality: str) -> list[str]:
    """The preset names a viewer offers for *modality*, the image's default first."""
    return [IMAGE_DEFAULT, *WINDOW_PRESETS.get(modality, {}), FULL_RANGE]


def preset_window(name: str, ds: Dataset, values: np.ndarray, index: int = 0) -> tuple[float, float] | None:
    """(center, width) of a named preset; None for IMAGE_DEFAULT when the image's VOI LUT itself applies."""
    if name == IMAGE_DEFAULT:
        return None if own_window(ds, index) is None and _voi_lut(ds) is not None else window_of(ds, values, index)
    if name == FULL_RANGE:
        lo, hi = float(np.min(values)), float(np.max(values))
        return (lo + hi) / 2, max(hi - lo, 1.0)
    modality = str(ds.get("Modality", "") or "")
    if name in WINDOW_PRESETS.get(modality, {}):
        return WINDOW_PRESETS[modality][name]
    raise InvalidOptionError(f"No window preset {name!r} for modality {modality or '(none)'}.",
                             hint=f"Use one of: {', '.join(window_presets(modality))}.")


def display_frame(ds: Dataset, index: int = 0, window: tuple[float, float] | None = None) -> np.ndarray:
    """An 8-bit frame as a viewer shows it: (rows, cols) grey or (rows, cols, 3) RGB."""
    return to_display(decode_frame(ds, index), ds, window, index)


def to_display(frame: np.ndarray, ds: Dataset, window: tuple[float, float] | None = None, index: int = 0) -> np.ndarray:
    """Stored values of frame *index* of *ds* (original or decoded variant) to 8-bit display values.

    Without a *window*: the image's own window, else its VOI LUT, else the central percentiles.
    """
    from pydicom.pixels import apply_color_lut, apply_voi, convert_color_space

    spec = pixel_spec(ds)
    if spec.photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        return (rgb / (rgb.max() or 1) * 255).astype(np.uint8) if rgb.dtype != np.uint8 else rgb
    if spec.samples == 3:
        if spec.photometric.startswith("YBR"):
            frame = convert_color_space(frame, "YBR_FULL", "RGB")
        return (frame >> (spec.bits_stored - 8)).astype(np.uint8) if spec.bits_stored > 8 else frame.astype(np.uint8)
    values = modality_values(frame, ds, index).astype(np.float64)
    lut = _voi_lut(ds) if window is None and own_window(ds, index) is None else None
    if lut is not None:
        mapped = apply_voi(values, ds).astype(np.float64)
        out = np.clip(mapped / ((1 << int(lut.LUTDescriptor[2])) - 1), 0, 1) * 255
    else:
        center, width = window or window_of(ds, values, index)
        low = center - width / 2
        out = np.clip((values - low) / width, 0, 1) * 255
    if spec.photometric == "MONOCHROME1":
        out = 255 - out
    return out.astype(np.uint8)


def thumbnail_png(ds: Dataset, size: int = 256, frame: np.ndarray | None = None) -> bytes:
    """PNG thumbnail of the middle frame (*frame*, when it is already decoded), at most *size* pixels on its
    longer side.  The stored values are averaged down once to about *size* (:func:`reduce_values`) and then
    windowed: a quarter of the work for a 512² slice, a sixteenth for 1024²."""
    index = pixel_spec(ds).frames // 2
    values = decode_frame(ds, index) if frame is None else frame
    return shrink_png(to_display(reduce_values(values, ds, size), ds, None, index), size)


def reduce_values(values: np.ndarray, ds: Dataset, size: int) -> np.ndarray:
    """Stored values averaged over f × f blocks, f the largest whole factor leaving the longer side at least *size*
    (the last rows and columns short of a block are left out); palette indices, which are colours, never."""
    spec = pixel_spec(ds)
    factor = max(spec.rows, spec.columns) // size
    if factor < 2 or spec.photometric == "PALETTE COLOR":
        return values
    rows, columns, more = spec.rows // factor, spec.columns // factor, values.shape[2:]
    exact = np.int64 if np.issubdtype(values.dtype, np.integer) else np.float64
    # summed down each block's rows, then along them: numpy adds whole rows at a time, 3x faster than mean((1, 3))
    sums = values[: rows * factor, : columns * factor].reshape(rows, factor, columns * factor, *more).sum(axis=1, dtype=exact)
    sums = sums.reshape(rows, columns, factor, *more).sum(axis=2)
    return np.rint(sums / (factor * factor)).astype(values.dtype)


def shrink_png(pixels: np.ndarray, size: int) -> bytes:
    """8-bit display pixels scaled to at most *size* on the longer side, as PNG (zlib's fast setting: a 256²
    thumbnail of a CT or MR slice is 3-6 % larger than with optimize=True and made 5-10 times faster)."""
    from PIL import Image

    image = Image.fromarray(pixels)
    image.thumbnail((size, size), Image.LANCZOS)
    return encode_image(np.asarray(image), "png")


def _fast_png(pixels: np.ndarray) -> bytes:
    """A PNG made per request: every row "Up"-filtered at once in numpy, then zlib level 1 matching runs — 2-3x
    faster than Pillow's adaptive filtering at level 6, and as small on windowed medical images."""
    rows = pixels.reshape(pixels.shape[0], -1)
    filtered = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2  # filter type Up: each byte minus the byte above it (the first row: minus zero)
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 8, 0 if pixels.ndim == 2 else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + b"".join(_png_chunk(kind, body) for kind, body in (
        (b"IHDR", header), (b"IDAT", packer.compress(filtered.tobytes()) + packer.flush()), (b"IEND", b"")))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode_image(pixels: np.ndarray, fmt: str, quality: int = 90, optimize: bool = False) -> bytes:
    """8-bit grey or RGB pixels as PNG, JPEG, WebP, GIF or JPEG 2000 (JP2) bytes."""
    from PIL import Image

    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if fmt == "png" and optimize:
        image.save(buffer, format="PNG", optimize=True)
    elif fmt == "png" and pixels.dtype == np.uint8 and (pixels.ndim == 2 or pixels.shape[2:] == (3,)):
        return _fast_png(pixels)
    elif fmt == "png":
        image.save(buffer, format="PNG")
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=quality, optimize=optimize)
    elif fmt == "webp":
        image.save(buffer, format="WEBP", quality=quality, lossless=optimize and quality >= 100)
    elif fmt == "gif":
        image.save(buffer, format="GIF", optimize=optimize)
    elif fmt == "jp2":
        image.save(buffer, format="JPEG2000", irreversible=quality < 100, quality_mode="rates",
                   quality_layers=[max(1.0, (100 - quality) / 2)] if quality < 100 else None)
    else:
        raise ValueError(fmt)
    return buffer.getvalue()
