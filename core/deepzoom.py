"""DeepZoom tiles and patches read from a JPEG 2000 codestream's resolution levels and regions.

A tile or a patch decodes only its region at the resolution level it needs
(glymur slicing: ``jp2[y0:y1:step, x0:x1:step]``); the full image is never
decoded to cut a small piece out of it.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .codecs.openjpeg import load_glymur
from .errors import InvalidOptionError

__all__ = ["Codestream", "CodestreamTiles", "DeepZoom", "Patch", "iter_patches", "map_patches"]


class Codestream:
    """A J2K/HTJ2K codestream file opened once; regions at any resolution level."""

    def __init__(self, path: str | Path):
        glymur = load_glymur()

        self.path = Path(path)
        self.jp2 = glymur.Jp2k(str(path))
        self.height, self.width = self.jp2.shape[:2]
        cod = next(s for s in self.jp2.codestream.segment if s.marker_id == "COD")
        self.levels = int(cod.num_res)  # number of decompositions

    def region(self, level: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Full-resolution bounds, decoded at *level* (1/2^level of the full size)."""
        if not 0 <= level <= self.levels:
            raise InvalidOptionError(f"Resolution level {level} does not exist (0–{self.levels}).")
        step = 1 << level
        return np.asarray(self.jp2[y0:y1:step, x0:x1:step])


class CodestreamTiles:
    """A codestream as a tile source (full-resolution regions), to re-encode it tile by tile."""

    def __init__(self, source: Codestream):
        self.source = source
        self.height, self.width = source.height, source.width
        shape = source.jp2.shape
        self.samples = shape[2] if len(shape) == 3 else 1
        self.bits_stored = source.jp2.codestream.segment[1].bitdepth[0]
        self.dtype = np.dtype(np.uint16 if self.bits_stored > 8 else np.uint8)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.source.region(0, y0, y1, x0, x1)


@dataclass(frozen=True)
class DeepZoom:
    width: int
    height: int
    tile_size: int = 254
    overlap: int = 1
    # PNG, not JPEG: the viewer must show the decoded pixels, not a lossy re-encoding of them (.jpeg stays on request).
    format: str = "png"

    @property
    def max_level(self) -> int:
        return max(0, math.ceil(math.log2(max(self.width, self.height))))

    def scale(self, level: int) -> int:
        return 1 << (self.max_level - level)

    def level_size(self, level: int) -> tuple[int, int]:
        s = self.scale(level)
        return max(1, -(-self.width // s)), max(1, -(-self.height // s))

    def tiles(self, level: int) -> tuple[int, int]:
        w, h = self.level_size(level)
        return -(-w // self.tile_size), -(-h // self.tile_size)

    def bounds(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of a tile at *level*, overlap included."""
        if not 0 <= level <= self.max_level:
            raise InvalidOptionError(f"DeepZoom level {level} does not exist (0–{self.max_level}).")
        cols, rows = self.tiles(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise InvalidOptionError(f"Tile {col}_{row} is outside level {level} ({cols}x{rows} tiles).")
        w, h = self.level_size(level)
        x0 = max(0, col * self.tile_size - self.overlap)
        y0 = max(0, row * self.tile_size - self.overlap)
        x1 = min(w, (col + 1) * self.tile_size + self.overlap)
        y1 = min(h, (row + 1) * self.tile_size + self.overlap)
        return x0, y0, x1, y1

    def dzi(self) -> str:
        return ('<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" TileSize="{self.tile_size}" '
                f'Overlap="{self.overlap}" Format="{"jpg" if self.format == "jpeg" else self.format}">'
                f'<Size Width="{self.width}" Height="{self.height}"/></Image>')

    def read(self, source: Codestream, level: int, col: int, row: int) -> np.ndarray:
        """Stored values of one tile, from the codestream level nearest below the tile's scale."""
        x0, y0, x1, y1 = self.bounds(level, col, row)
        scale = self.scale(level)
        j2k_level = min(int(math.log2(scale)), source.levels)
        pixels = source.region(j2k_level, y0 * scale, min(self.height, y1 * scale), x0 * scale, min(self.width, x1 * scale))
        rest = scale >> j2k_level
        if rest > 1:  # coarser than the codestream's lowest level (<= 64 px): a small block average
            pixels = _shrink(pixels, rest)
        return pixels[: y1 - y0, : x1 - x0]


def _shrink(pixels: np.ndarray, factor: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    hh, ww = -(-h // factor) * factor, -(-w // factor) * factor
    pad = [(0, hh - h), (0, ww - w)] + [(0, 0)] * (pixels.ndim - 2)
    padded = np.pad(pixels.astype(np.float64), pad, mode="edge")
    shape = (hh // factor, factor, ww // factor, factor) + pixels.shape[2:]
    return padded.reshape(shape).mean(axis=(1, 3)).astype(pixels.dtype)


@dataclass(frozen=True)
class Patch:
    row: int
    col: int
    y0: int
    x0: int
    pixels: np.ndarray


def iter_patches(source: Codestream, size: int, overlap: int = 0, level: int = 0) -> Iterator[Patch]:
    """Patches of *size* (at *level*) with *overlap* pixels shared with their neighbours."""
    if size <= 0 or not 0 <= overlap < size:
        raise InvalidOptionError(f"Patch size {size} with overlap {overlap}: need size > 0 and 0 <= overlap < size.")
    step = 1 << level
    height, width = -(-source.height // step), -(-source.width // step)
    stride = size - overlap
    for row, y0 in enumerate(range(0, height, stride)):
        for col, x0 in enumerate(range(0, width, stride)):
            y1, x1 = min(height, y0 + size), min(width, x0 + size)
            pixels = source.region(level, y0 * step, min(source.height, y1 * step), x0 * step, min(source.width, x1 * step))
            yield Patch(row, col, y0, x0, pixels[: y1 - y0, : x1 - x0])
            if x1 == width:
                break
        if y1 == height:
            break


def map_patches(path: str | Path, fn: Callable[[np.ndarray], np.ndarray | float], size: int, overlap: int = 0,
                level: int = 0, workers: int = 2) -> np.ndarray:
    """Run *fn* on every patch in parallel and stitch the results into a map at *level*.

    *fn* returns either a scalar (one value per patch: a coarse map of
    rows x cols) or an array of the patch's shape (a full-size map; overlaps
    are averaged).
    """
    source = Codestream(path)
    patches = list(iter_patches(source, size, overlap, level))
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda p: fn(p.pixels), patches))
    if np.isscalar(results[0]) or np.ndim(results[0]) == 0:
        grid = np.zeros((patches[-1].row + 1, patches[-1].col + 1))
        for p, value in zip(patches, results):
            grid[p.row, p.col] = value
        return grid
    step = 1 << level
    height, width = -(-source.height // step), -(-source.width // step)
    total = np.zeros((height, width) + np.shape(results[0])[2:], np.float64)
    weight = np.zeros((height, width), np.float64)
    for p, value in zip(patches, results):
        h, w = p.pixels.shape[:2]
        total[p.y0 : p.y0 + h, p.x0 : p.x0 + w] += value
        weight[p.y0 : p.y0 + h, p.x0 : p.x0 + w] += 1
    return total / (weight if total.ndim == 2 else weight[..., None])
