"""Images larger than ordinary libraries open (Pillow stops at ~179 megapixels).

They are never decoded whole: the pixels are read tile by tile — memory-mapped
from native DICOM pixel data, or decoded TIFF tile by TIFF tile — and encoded
into a tiled, multi-resolution JPEG 2000 whose levels and regions DeepZoom and
the previews read back.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Protocol

import numpy as np
from pydicom.dataset import Dataset

from .codecs.openjpeg import load_glymur
from .errors import UnsupportedError

__all__ = ["LARGE_PIXELS", "is_large", "TileSource", "DicomTiles", "TiffTiles", "encode_pyramid", "write_encapsulated",
           "tiff_header"]

LARGE_PIXELS = 178_956_970  # Pillow's Image.MAX_IMAGE_PIXELS
TILE = 1024


def is_large(rows: int, columns: int) -> bool:
    """Above Pillow's limit (or RADPRESS_LARGE_PIXELS): tiled, never decoded whole."""
    return rows * columns > int(os.environ.get("RADPRESS_LARGE_PIXELS") or LARGE_PIXELS)


class TileSource(Protocol):
    height: int
    width: int
    samples: int
    dtype: np.dtype
    bits_stored: int  # the precision the codestream declares; bits above it are masked off

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray: ...


class DicomTiles:
    """Native (uncompressed, little-endian) single-frame pixel data, read from the file one band of rows at a time.

    Tiles are asked for row by row, so the band of the current tile row
    (tile height x full width) is the only pixel data in memory.
    """

    def __init__(self, path: Path, ds: Dataset):
        from .pixels import pixel_spec

        spec = pixel_spec(ds)
        syntax = ds.file_meta.TransferSyntaxUID
        if syntax.is_compressed or not syntax.is_little_endian or spec.frames != 1 or spec.bits_allocated not in (8, 16):
            raise UnsupportedError(
                f"Very large images must be single-frame, uncompressed little-endian 8/16-bit to be tiled; this one is {syntax.name}, "
                f"{spec.frames} frame(s), {spec.bits_allocated} bits.")
        if spec.signed:
            raise UnsupportedError("Very large signed images are not supported: the tiled JPEG 2000 writer takes unsigned samples.")
        self.path, self.offset = Path(path), pixel_data_offset(Path(path), not syntax.is_implicit_VR)
        self.height, self.width, self.samples, self.dtype = spec.rows, spec.columns, spec.samples, spec.dtype
        self.bits_stored = spec.bits_stored
        self.row_bytes = spec.columns * spec.samples * spec.dtype.itemsize
        self._band: tuple[int, int, np.ndarray] | None = None

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self._band is None or not (self._band[0] <= y0 and y1 <= self._band[1]):
            with open(self.path, "rb") as fh:
                fh.seek(self.offset + y0 * self.row_bytes)
                data = fh.read((y1 - y0) * self.row_bytes)
            shape = (y1 - y0, self.width) + ((self.samples,) if self.samples > 1 else ())
            self._band = (y0, y1, np.frombuffer(data, dtype=self.dtype.newbyteorder("<")).reshape(shape))
        top, _bottom, band = self._band
        return np.ascontiguousarray(band[y0 - top : y1 - top, x0:x1])


def pixel_data_offset(path: Path, explicit_vr: bool) -> int:
    """File offset of the Pixel Data value, found without reading the value."""
    import pydicom

    with open(path, "rb") as fh:
        pydicom.dcmread(fh, stop_before_pixels=True)
        start = fh.tell()
        group, element = struct.unpack("<HH", fh.read(4))
    if (group, element) != (0x7FE0, 0x0010):
        raise UnsupportedError("Pixel Data (7FE0,0010) is not where the header ends; the file cannot be tiled.")
    return start + (12 if explicit_vr else 8)


class TiffTiles:
    """One TIFF page read by its own tiles or strips (whatever its compression), never whole."""

    def __init__(self, path: Path):
        import tifffile

        self.tiff = tifffile.TiffFile(path)
        if not len(self.tiff.pages):
            self.tiff.close()
            raise UnsupportedError(f"{path.name} holds no image.")
        page = self.tiff.pages[0]
        self.page = page
        if page.dtype not in (np.uint8, np.uint16) or page.samplesperpixel not in (1, 3):
            raise UnsupportedError(f"TIFF with {page.dtype} samples x{page.samplesperpixel} is not supported (8/16-bit grey or RGB).")
        self.height, self.width = page.imagelength, page.imagewidth
        self.samples, self.dtype = page.samplesperpixel, np.dtype(page.dtype)
        self.bits_stored = min(int(page.bitspersample or 0) or self.dtype.itemsize * 8, self.dtype.itemsize * 8)
        self.tile_h = page.tilelength or page.rowsperstrip or self.height
        self.tile_w = page.tilewidth or self.width
        self.decode = page.decode
        self.fh = self.tiff.filehandle

    def _segment(self, index: int) -> np.ndarray:
        self.fh.seek(self.page.dataoffsets[index])
        data = self.fh.read(self.page.databytecounts[index])
        segment, _indices, _shape = self.decode(data, index)
        segment = np.asarray(segment).reshape(segment.shape[-3:])  # (rows, cols, samples)
        return segment

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        out = np.empty((y1 - y0, x1 - x0, self.samples), self.dtype)
        across = -(-self.width // self.tile_w)
        for ty in range(y0 // self.tile_h, -(-y1 // self.tile_h)):
            for tx in range(x0 // self.tile_w, -(-x1 // self.tile_w)):
                seg = self._segment(ty * across + tx)
                sy0, sx0 = ty * self.tile_h, tx * self.tile_w
                a, b = max(y0, sy0), min(y1, sy0 + seg.shape[0])
                c, d = max(x0, sx0), min(x1, sx0 + seg.shape[1])
                if a < b and c < d:
                    out[a - y0 : b - y0, c - x0 : d - x0] = seg[a - sy0 : b - sy0, c - sx0 : d - sx0]
        return out[..., 0] if self.samples == 1 else out

    def close(self) -> None:
        self.tiff.close()


def encode_pyramid(source: TileSource, out: Path, ratio: float | None = None, tile: int = TILE) -> Path:
    """Tile-by-tile JPEG 2000 (reversible, or irreversible at *ratio*) with levels down to <= 64 px.

    The codestream declares the source's Bits Stored (unsigned); samples go
    through the same container transform as :mod:`core.codecs.j2k`, after the
    bits above Bits Stored are masked off.
    """
    glymur = load_glymur()

    from .codecs.codestream import container_samples, declare_precision_file

    levels = max(1, min(math.ceil(math.log2(max(source.height, source.width) / 64)), int(math.log2(tile))))
    shape = (source.height, source.width) if source.samples == 1 else (source.height, source.width, source.samples)
    # No colour transform: the samples keep the photometric interpretation they came with.
    options = {"shape": shape, "tilesize": (tile, tile), "numres": levels + 1, "prog": "RPCL", "mct": False}
    if ratio:
        options.update(irreversible=True, cratios=[ratio])
    tmp = out.with_name(f"{out.name}.{os.getpid()}-{os.urandom(6).hex()}.part")  # one per writer: never shared
    try:
        writer = glymur.Jp2k(str(tmp), **options)
        across = -(-source.width // tile)
        for tw in writer.get_tilewriters():
            row, col = divmod(tw.tile_index, across)
            block = source.read(row * tile, min(source.height, (row + 1) * tile), col * tile, min(source.width, (col + 1) * tile))
            block = block.astype(np.uint16 if source.dtype.itemsize == 2 else np.uint8, copy=False)
            tw[:] = container_samples(block & ((1 << source.bits_stored) - 1), source.bits_stored, False, bool(ratio))
        declare_precision_file(tmp, source.bits_stored, False)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def write_encapsulated(ds: Dataset, codestream: Path, out: Path) -> None:
    """A DICOM file whose single frame is *codestream*, streamed in (never read into memory)."""
    from .files import atomic_writer

    with atomic_writer(out) as fh:
        ds.save_as(fh, enforce_file_format=True)
        size = codestream.stat().st_size
        fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF))
        fh.write(struct.pack("<HHI", 0xFFFE, 0xE000, 0))  # empty Basic Offset Table: one frame
        limit = 0xFFFFFFF0  # an item holds < 4 GiB: a larger frame continues in further fragments
        with open(codestream, "rb") as src:
            remaining = size
            while remaining:
                chunk = min(remaining, limit)
                padded = chunk + (chunk & 1)
                fh.write(struct.pack("<HHI", 0xFFFE, 0xE000, padded))
                left = chunk
                while left:
                    data = src.read(min(left, 1 << 22))
                    fh.write(data)
                    left -= len(data)
                if padded != chunk:
                    fh.write(b"\0")
                remaining -= chunk
        fh.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))


def tiff_header(source: TileSource, name: str) -> Dataset:
    """A Secondary Capture header for pixels that came from a TIFF file (JPEG 2000 lossless, one frame)."""
    import datetime

    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import JPEG2000Lossless, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID = f"TIFF^{name}"[:64], name[:64]
    ds.StudyDate = datetime.date.today().strftime("%Y%m%d")
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.SeriesDescription = f"converted from {name}.tif"[:64]
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns, ds.SamplesPerPixel = source.height, source.width, source.samples
    ds.PhotometricInterpretation = "RGB" if source.samples == 3 else "MONOCHROME2"
    if source.samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8 * source.dtype.itemsize
    ds.BitsStored = source.bits_stored  # as the codestream declares
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    return ds
