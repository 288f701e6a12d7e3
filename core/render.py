"""Turning stored values into something a screen shows: windowing, inversion, colour.

Used for thumbnails here and by the image routes; never used for anything
diagnostic that is written back to DICOM.
"""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset

from .pixels import decode_frame, pixel_spec

__all__ = ["display_frame", "to_display", "window_of", "thumbnail_png", "shrink_png", "encode_image", "IMAGE_TYPES", "WINDOW_PRESETS"]

IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif", "jp2": "image/jp2"}

# Window (center, width) presets a radiologist expects, in Hounsfield units for CT.
WINDOW_PRESETS: dict[str, dict[str, tuple[float, float]]] = {
    "CT": {"brain": (40, 80), "lung": (-600, 1500), "bone": (400, 1800), "soft tissue": (50, 400), "abdomen": (40, 350)},
    "MR": {},
    "CR": {},
    "DX": {},
}


def _first(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value[0] if hasattr(value, "__len__") and not isinstance(value, str) else value)
    except (TypeError, ValueError, IndexError):
        return None


def window_of(ds: Dataset, values: np.ndarray) -> tuple[float, float]:
    """The instance's own window (center, width), or a robust 1–99 percentile window."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width and width > 0:
        return center, width
    lo, hi = np.percentile(values, [1, 99])
    return (lo + hi) / 2, max(hi - lo, 1.0)


def display_frame(ds: Dataset, index: int = 0, window: tuple[float, float] | None = None) -> np.ndarray:
    """An 8-bit frame as a viewer shows it: (rows, cols) grey or (rows, cols, 3) RGB."""
    return to_display(decode_frame(ds, index), ds, window)


def to_display(frame: np.ndarray, ds: Dataset, window: tuple[float, float] | None = None) -> np.ndarray:
    """Stored values of one frame of *ds* (original or decoded variant) to 8-bit display values."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, convert_color_space

    spec = pixel_spec(ds)
    if spec.photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        return (rgb / (rgb.max() or 1) * 255).astype(np.uint8) if rgb.dtype != np.uint8 else rgb
    if spec.samples == 3:
        if spec.photometric.startswith("YBR"):
            frame = convert_color_space(frame, "YBR_FULL", "RGB")
        return (frame >> (spec.bits_stored - 8)).astype(np.uint8) if spec.bits_stored > 8 else frame.astype(np.uint8)
    values = apply_modality_lut(frame, ds).astype(np.float64)
    center, width = window or window_of(ds, values)
    low = center - width / 2
    out = np.clip((values - low) / width, 0, 1) * 255
    if spec.photometric == "MONOCHROME1":
        out = 255 - out
    return out.astype(np.uint8)


def thumbnail_png(ds: Dataset, size: int = 256) -> bytes:
    """PNG thumbnail of the middle frame, at most *size* pixels on its longer side."""
    return shrink_png(display_frame(ds, pixel_spec(ds).frames // 2), size)


def shrink_png(pixels: np.ndarray, size: int) -> bytes:
    """8-bit display pixels scaled to at most *size* on the longer side, as PNG."""
    from PIL import Image

    image = Image.fromarray(pixels)
    image.thumbnail((size, size), Image.LANCZOS)
    return encode_image(np.asarray(image), "png", optimize=True)


def encode_image(pixels: np.ndarray, fmt: str, quality: int = 90, optimize: bool = False) -> bytes:
    """8-bit grey or RGB pixels as PNG, JPEG, WebP, GIF or JPEG 2000 (JP2) bytes."""
    from PIL import Image

    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", optimize=optimize)
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
