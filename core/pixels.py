"""Reading DICOM files and decoding their frames, one frame at a time.

pydicom (with the pylibjpeg / pyjpegls plugins) decodes every transfer syntax it
knows, because it already handles the quirks of real files (sign correction,
Bits Stored masking, YBR upsampling).  Transfer syntaxes it does not know yet
(JPEG XL) are decoded through the codec registry.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .errors import CodecError, NoPixelDataError, NotDicomError, TruncatedError, UnsupportedError
from .present import dimensions

__all__ = ["PixelSpec", "read_dataset", "pixel_spec", "decode_frame", "iter_frames", "decode_all", "stored_values",
           "clip_to_stored"]

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Photometric interpretation of the *decoded* array: decoders undo the colour
# transforms of JPEG 2000 and upsample 4:2:2 chroma.
_DECODED_PHOTOMETRIC = {"YBR_RCT": "RGB", "YBR_ICT": "RGB", "YBR_FULL_422": "YBR_FULL", "YBR_PARTIAL_420": "YBR_FULL"}


@dataclass(frozen=True)
class PixelSpec:
    """What one decoded frame looks like, independent of how it is stored."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    frames: int = 1

    @property
    def dtype(self) -> np.dtype:
        if self.bits_allocated <= 8:
            return np.dtype(np.int8 if self.signed else np.uint8)
        if self.bits_allocated <= 16:
            return np.dtype(np.int16 if self.signed else np.uint16)
        return np.dtype(np.int32 if self.signed else np.uint32)

    @property
    def frame_bytes(self) -> int:
        """Uncompressed size of one frame as stored: the denominator of every ratio."""
        return self.rows * self.columns * self.samples * self.bits_allocated // 8

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows, self.columns) if self.samples == 1 else (self.rows, self.columns, self.samples)

    @property
    def peak(self) -> int:
        return (1 << self.bits_stored) - 1

    @property
    def value_range(self) -> tuple[int, int]:
        """Smallest and largest value Bits Stored (and Pixel Representation) allow."""
        if self.signed:
            return -(1 << (self.bits_stored - 1)), (1 << (self.bits_stored - 1)) - 1
        return 0, self.peak


def stored_values(frame: np.ndarray, spec: PixelSpec) -> np.ndarray:
    """The Bits Stored low bits of each sample, sign-extended when signed (PS3.5 §8.1.1).

    Bits above Bits Stored (overlays, garbage from the modality) are not
    pixel values; an encoder told the precision is Bits Stored must not see them.
    """
    if spec.bits_stored >= spec.bits_allocated:
        return frame
    words = frame.astype(spec.dtype, copy=False)  # wraps: the low Bits Allocated bits are kept as they are
    if spec.signed:  # shifted up and back: numpy shifts signed words arithmetically, so the sign bit spreads
        shift = spec.bits_allocated - spec.bits_stored
        return (words << shift) >> shift
    return words & spec.peak


def clip_to_stored(frame: np.ndarray, spec: PixelSpec) -> np.ndarray:
    """Decoded lossy values clamped to what Bits Stored allows (ringing overshoots the range)."""
    low, high = spec.value_range
    return np.clip(frame, low, high).astype(spec.dtype, copy=False)


def read_dataset(source: str | os.PathLike | BinaryIO, *, pixels: bool = True) -> Dataset:
    """Read a DICOM Part 10 file, turning pydicom's errors into typed ones."""
    name = getattr(source, "name", source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Pixel data above 64 MB stays on disk until decoded (very large images are tiled from the file).
            ds = pydicom.dcmread(source, stop_before_pixels=not pixels, defer_size="64 MB")
            _fill_transfer_syntax(ds)
            if pixels:
                _check_complete(ds)
    except FileNotFoundError:
        raise NotDicomError(f"{name}: no such file.") from None
    except IsADirectoryError:
        raise NotDicomError(f"{name}: is a folder, not a DICOM file.") from None
    except InvalidDicomError:
        raise NotDicomError(
            f"{name}: not a DICOM file (no 'DICM' marker after the 128-byte preamble).",
            hint="Upload .dcm files exported by the modality or PACS.",
        ) from None
    except (EOFError, OSError, ValueError, KeyError, struct.error) as exc:
        raise TruncatedError(f"{name}: the file is damaged or cut short ({_short(exc)}).") from None
    return ds


def _short(exc: BaseException) -> str:
    text = str(exc).split("\n")[0]
    return text[:160] or type(exc).__name__


def _fill_transfer_syntax(ds: Dataset) -> None:
    """Some writers omit (0002,0010); the encoding pydicom detected while reading tells it."""
    meta = ds.file_meta
    if "TransferSyntaxUID" in meta or ds.original_encoding is None:
        return
    implicit, little = ds.original_encoding
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def _check_complete(ds: Dataset) -> None:
    """Native pixel data shorter than Rows x Columns x ... means a truncated file."""
    if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    spec = pixel_spec(ds)
    needed = _expected_bytes(ds, spec)
    element = ds.get_item("PixelData", keep_deferred=True)  # a deferred value stays on disk: its length only
    have = element.length if getattr(element, "value", None) is None else len(element.value)
    if have < needed:
        raise TruncatedError(
            f"Pixel Data (7FE0,0010) holds {have} bytes but {needed} are needed "
            f"for {ds.get('NumberOfFrames', 1)} frame(s) of {dimensions(ds.Columns, ds.Rows)}: the file is cut short."
        )


def _expected_bytes(ds: Dataset, spec: PixelSpec) -> int:
    """Native Pixel Data length, computed from the header (pydicom's helper would read the value)."""
    pixels = spec.rows * spec.columns * spec.frames
    if spec.bits_allocated == 1:
        return (pixels + 7) // 8
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        return pixels * 2 * spec.bits_allocated // 8  # 4:2:2: two samples per pixel on average
    return pixels * spec.samples * spec.bits_allocated // 8


def pixel_spec(ds: Dataset) -> PixelSpec:
    """Describe the frames of *ds*; refuses datasets without an image."""
    if not any(tag in ds for tag in _PIXEL_TAGS):
        raise NoPixelDataError(
            "The dataset has no Pixel Data (7FE0,0010): it is not an image "
            f"(SOP Class {getattr(ds.get('SOPClassUID'), 'name', ds.get('SOPClassUID', 'unknown'))})."
        )
    missing = [k for k in ("Rows", "Columns", "BitsAllocated") if k not in ds]
    if missing:
        raise UnsupportedError(f"The image lacks the required attribute(s) {', '.join(missing)}.")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    return PixelSpec(
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples=int(ds.get("SamplesPerPixel", 1) or 1),
        bits_allocated=int(ds.BitsAllocated),
        bits_stored=int(ds.get("BitsStored", ds.BitsAllocated) or ds.BitsAllocated),
        signed=int(ds.get("PixelRepresentation", 0) or 0) == 1,
        photometric=_DECODED_PHOTOMETRIC.get(photometric, photometric),
        frames=int(ds.get("NumberOfFrames", 1) or 1),
    )


def decode_frame(ds: Dataset, index: int = 0) -> np.ndarray:
    """Decode frame *index* only (other frames are not decoded).

    Returns stored values (no modality or VOI LUT); colour frames come back
    (rows, columns, samples) in the photometric interpretation of
    :func:`pixel_spec`.
    """
    spec = pixel_spec(ds)
    if not 0 <= index < spec.frames:
        raise UnsupportedError(f"Frame {index + 1} requested but the image has {spec.frames} frame(s).")
    from .bigimage import is_large

    if is_large(spec.rows, spec.columns):
        raise UnsupportedError(
            f"The image is {dimensions(spec.columns, spec.rows)} pixels, too large to decode whole.",
            hint="It is served tile by tile: open it in the Viewer (DeepZoom) or use /preview with a level.",
        )
    uid = ds.file_meta.TransferSyntaxUID
    from .codecs import codec_for_uid

    codec = codec_for_uid(uid)
    if codec is not None and not codec.decodable_by_pydicom:
        from pydicom.encaps import get_frame

        frame = get_frame(ds.PixelData, index, number_of_frames=spec.frames)
        return codec.decode(frame, spec)
    if uid.is_compressed and uid.is_encapsulated:
        from pydicom.encaps import get_frame

        try:
            frame = get_frame(ds.PixelData, index, number_of_frames=spec.frames)
        except (ValueError, KeyError, EOFError, struct.error):
            frame = b""  # the decoder reports it
        _check_geometry(frame, spec, index, uid)
    return _pydicom_frame(ds, index, spec)


_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})  # and JPEG-LS


def _frame_geometry(frame: bytes) -> tuple[int, int, int, int] | None:
    """(rows, columns, components, precision) as a JPEG 2000 / HTJ2K, JPEG or JPEG-LS frame's own header says
    (None: another format, or a header not read here, left to the decoder)."""
    if frame[4:8] == b"jP  ":  # a JP2 file (not what DICOM asks for, but its decoders read it): its codestream
        start = frame.find(b"\xff\x4f\xff\x51", 0, 4096)
        frame = frame[start:] if start > 0 else b""
    if frame[:4] == b"\xff\x4f\xff\x51":  # SOC, then SIZ
        from .codecs.codestream import parse_main_header

        try:
            info = parse_main_header(frame)
        except (ValueError, TypeError, IndexError, KeyError, struct.error):
            return None
        return info.height, info.width, info.components, info.precision
    pos = 2 if frame[:2] == b"\xff\xd8" else len(frame)
    while pos + 10 <= len(frame) and frame[pos] == 0xFF:
        marker = frame[pos + 1]
        if marker == 0xFF:  # a fill byte
            pos += 1
        elif marker in _JPEG_SOF:
            rows, columns = struct.unpack(">HH", frame[pos + 5:pos + 9])
            return (rows or None), columns, frame[pos + 9], frame[pos + 4]  # rows 0: defined later (DNL)
        elif marker == 0xDA:  # start of scan: no frame header before it
            return None
        else:
            pos += 2 + struct.unpack(">H", frame[pos + 2:pos + 4])[0]
    return None


def _check_geometry(frame: bytes, spec: PixelSpec, index: int, uid) -> None:
    """A frame that is another image than the header describes is refused: reshaped to Rows × Columns (the decoders
    do) it would be drawn scrambled, cast to Bits Allocated wrapped, and copied "losslessly" that way."""
    held = _frame_geometry(frame)
    if held is None:
        return
    rows, columns, components, precision = held
    if (rows or spec.rows, columns, components) != (spec.rows, spec.columns, spec.samples) or precision > spec.bits_allocated:
        raise CodecError(
            f"Frame {index + 1} ({uid.name}) holds a {rows or '?'} × {columns} image of {components} sample(s) of "
            f"{precision} bits, but the DICOM header describes {spec.rows} × {spec.columns}, {spec.samples} sample(s) of "
            f"{spec.bits_allocated} bits: one of them is wrong.", hint="Ask the sender for an uncompressed export.")


def _pydicom_frame(ds: Dataset, index: int, spec: PixelSpec) -> np.ndarray:
    from pydicom.pixels import get_decoder

    uid = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise UnsupportedError(
            f"Transfer Syntax {uid} ({uid.name}) is not supported for decoding.",
            hint="Ask the sender to export uncompressed, JPEG, JPEG-LS, JPEG 2000 or RLE.",
        ) from None
    if not decoder.is_available:
        raise UnsupportedError(
            f"No decoder installed for {uid.name}: " + "; ".join(decoder.missing_dependencies),
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr, _meta = decoder.as_array(ds, index=index, as_rgb=False)
    except (ValueError, RuntimeError, EOFError, KeyError, AttributeError, TypeError) as exc:
        raise CodecError(
            f"Frame {index + 1} could not be decoded from {uid.name}: the compressed data is damaged "
            f"or uses a variant no installed decoder handles ({_short(exc)})."
        ) from None
    arr = np.asarray(arr)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr.reshape(spec.shape) if spec.bits_allocated != 1 else arr


def iter_frames(ds: Dataset) -> Iterator[np.ndarray]:
    for index in range(pixel_spec(ds).frames):
        yield decode_frame(ds, index)


def decode_all(ds: Dataset) -> np.ndarray:
    """All frames stacked on a leading axis (frames, rows, columns[, samples])."""
    return np.stack(list(iter_frames(ds)))
