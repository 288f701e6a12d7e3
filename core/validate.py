"""The checks a DICOM file passes before the archive uses any of it.

Everything in a file is untrusted text: UIDs name index rows (and, hashed,
files), image headers size buffers, and pydicom parses elements lazily, so a
broken element would otherwise fail in a job long after the upload was
acknowledged.  Every way in (upload, ``python -m core ingest``, a network
receiver) reaches :func:`read_checked` through :func:`core.ingest.ingest_file`.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import warnings

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from .errors import InvalidHeaderError, RadPressError, TruncatedError

__all__ = ["UID_KEYWORDS", "check_uid", "check_identifiers", "check_image_header", "check_decodes", "parse_all", "read_checked"]

# The UIDs the archive keys rows on or reads back, with their tags for messages.
UID_KEYWORDS = {
    "SOPInstanceUID": "SOP Instance UID (0008,0018)",
    "StudyInstanceUID": "Study Instance UID (0020,000D)",
    "SeriesInstanceUID": "Series Instance UID (0020,000E)",
    "SOPClassUID": "SOP Class UID (0008,0016)",
}
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_UID_MAX = 64
_PIXEL_TAGS = {Tag("PixelData"), Tag("FloatPixelData"), Tag("DoubleFloatPixelData")}
_SAMPLES = {"MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1, "RGB": 3, "YBR_FULL": 3, "YBR_FULL_422": 3,
            "YBR_ICT": 3, "YBR_RCT": 3, "YBR_PARTIAL_420": 3}
_RETIRED_PHOTOMETRIC = {"HSV", "ARGB", "CMYK", "YBR_PARTIAL_422"}
_NUMBERS = {"RescaleSlope": "(0028,1053)", "RescaleIntercept": "(0028,1052)", "WindowCenter": "(0028,1050)",
            "WindowWidth": "(0028,1051)", "LossyImageCompressionRatio": "(0028,2112)"}
# What pydicom raises while converting a malformed element (bad lengths, unknown VRs, broken sequences).
_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError, OverflowError,
                 LookupError, struct.error, EOFError, OSError, BytesLengthException)


def check_uid(value, what: str) -> str:
    """*value* as a UID of PS3.5 §9.1, or :class:`InvalidHeaderError` naming the rule it breaks.

    Digits and dots only, at least two components, no empty component, no
    leading zero in a component other than "0", at most 64 characters.
    """
    if not isinstance(value, str):
        kind = "several values" if isinstance(value, (list, tuple)) or hasattr(value, "__len__") else type(value).__name__
        raise InvalidHeaderError(f"{what} is not one UID ({kind}).", hint="A UID is one value of digits and dots.")
    shown = value[:80].encode("unicode_escape").decode("ascii") + ("…" if len(value) > 80 else "")
    if not value:
        raise InvalidHeaderError(f"{what} is empty.")
    if not _UID.fullmatch(value):
        raise InvalidHeaderError(
            f"{what} '{shown}' is not a valid UID: only digits and dots, no empty component and no leading "
            "zero in a component (PS3.5 §9.1).",
            hint="Ask the sender to fix the export; the archive never uses such text.")
    if len(value) > _UID_MAX:
        raise InvalidHeaderError(f"{what} '{shown}' has {len(value)} characters; a UID has at most {_UID_MAX} (PS3.5 §9.1).")
    if "." not in value:  # also what lets core.auth find every UID a callback request carries
        raise InvalidHeaderError(f"{what} '{shown}' is not a valid UID: it has one component, and a UID is "
                                 "<org root>.<suffix> (PS3.5 §9.1).")
    return value


def check_identifiers(ds: Dataset) -> None:
    """The SOP, Study, Series and SOP Class UIDs and the Transfer Syntax UID: present and valid."""
    for keyword, what in UID_KEYWORDS.items():
        if keyword not in ds or ds[keyword].value in (None, ""):
            raise InvalidHeaderError(f"{what} is missing: the archive cannot file the instance.")
        check_uid(ds[keyword].value, what)
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None:
        raise InvalidHeaderError("Transfer Syntax UID (0002,0010) is missing.")
    check_uid(str(syntax), "Transfer Syntax UID (0002,0010)")


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise InvalidHeaderError(f"{keyword} is missing: the image cannot be read.")
        return default
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, str)):
        raise InvalidHeaderError(f"{keyword} has several values {list(value)}; it must have one.")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidHeaderError(f"{keyword} {value!r} is not a number.") from None


def check_image_header(ds: Dataset) -> None:
    """Refuse image headers no image can have, before anything sizes a buffer from them."""
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    for keyword, value in (("Rows", rows), ("Columns", columns)):
        if not 1 <= value < 65535:
            raise InvalidHeaderError(f"{keyword} {value} is not an image size (allowed 1-65534).")
    samples = _int(ds, "SamplesPerPixel", 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if samples not in (1, 3):
        raise InvalidHeaderError(f"Samples per Pixel (0028,0002) {samples} is not allowed: images have 1 or 3.")
    if photometric in _SAMPLES and _SAMPLES[photometric] != samples:
        raise InvalidHeaderError(f"Samples per Pixel (0028,0002) {samples} does not fit Photometric Interpretation "
                                 f"{photometric}, which has {_SAMPLES[photometric]}.")
    allocated = _int(ds, "BitsAllocated")
    syntax = ds.file_meta.TransferSyntaxUID
    if allocated == 1:
        if syntax.is_compressed or samples != 1:
            raise InvalidHeaderError(f"Bits Allocated (0028,0100) 1 is only allowed for uncompressed single-sample "
                                     f"images, not {syntax.name} with {samples} sample(s).")
    elif allocated <= 0 or allocated % 8 or allocated > 64:
        raise InvalidHeaderError(f"Bits Allocated (0028,0100) {allocated} is not allowed: 1 or a multiple of 8 up to 64.")
    stored = _int(ds, "BitsStored", allocated)
    if not 1 <= stored <= allocated:
        raise InvalidHeaderError(f"Bits Stored (0028,0101) {stored} must be 1 to Bits Allocated ({allocated}).")
    high = _int(ds, "HighBit", stored - 1)
    if high != stored - 1:
        raise InvalidHeaderError(f"High Bit (0028,0102) {high} must be one less than Bits Stored ({stored}) "
                                 "(PS3.3 C.7.6.3.1.1).")
    if _int(ds, "PixelRepresentation", 0) not in (0, 1):
        raise InvalidHeaderError(f"Pixel Representation (0028,0103) {ds.PixelRepresentation} is not 0 or 1.")
    frames = _int(ds, "NumberOfFrames", 1)
    if frames < 1:
        raise InvalidHeaderError(f"Number of Frames (0028,0008) {frames} is not allowed: an image has at least 1.")
    if photometric not in _SAMPLES and photometric not in _RETIRED_PHOTOMETRIC:
        raise InvalidHeaderError(f"Photometric Interpretation (0028,0004) {photometric!r} is not a defined term "
                                 f"({', '.join(_SAMPLES)}).")
    if samples == 3 and _int(ds, "PlanarConfiguration", 0) not in (0, 1):
        raise InvalidHeaderError(f"Planar Configuration (0028,0006) {ds.PlanarConfiguration} is not 0 or 1.")
    if photometric == "PALETTE COLOR":
        _check_palette(ds)
    _check_used_values(ds)
    if syntax.is_compressed and "PixelData" in ds:
        _check_fragments(ds, frames)


def _check_palette(ds: Dataset) -> None:
    """PALETTE COLOR pixels are indices: without the three colour tables no one can show the image (PS3.3 C.7.6.3.1.5)."""
    for colour, tag in (("Red", "1101"), ("Green", "1102"), ("Blue", "1103")):
        descriptor = ds.get(f"{colour}PaletteColorLookupTableDescriptor")
        if descriptor is None or len(descriptor) != 3:
            raise InvalidHeaderError(f"PALETTE COLOR needs {colour} Palette Color Lookup Table Descriptor (0028,{tag}) "
                                     "with 3 values; without the colour tables the image cannot be shown.")
        if f"{colour}PaletteColorLookupTableData" not in ds and f"Segmented{colour}PaletteColorLookupTableData" not in ds:
            raise InvalidHeaderError(f"PALETTE COLOR needs {colour} Palette Color Lookup Table Data (0028,{int(tag) + 100}) "
                                     "or its segmented form; without the colour tables the image cannot be shown.")


def _check_used_values(ds: Dataset) -> None:
    """Values the archive computes with (rescale, windows, the lossy marking) must be what their VR says."""
    for keyword, tag in _NUMBERS.items():
        value = ds.get(keyword)
        values = [] if value is None or value == "" else list(value) if hasattr(value, "__iter__") and not isinstance(value, str) else [value]
        for item in values:
            try:
                number = float(item)
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number):
                raise InvalidHeaderError(f"{keyword} {tag} {str(item)[:40]!r} is not a number.")
    flag = ds.get("LossyImageCompression")
    if flag not in (None, "", "00", "01"):
        raise InvalidHeaderError(f"Lossy Image Compression (0028,2110) {str(flag)[:20]!r} must be 00 or 01: "
                                 "the archive cannot tell whether the image was compressed lossily.")


def _check_fragments(ds: Dataset, frames: int) -> None:
    """Every compressed frame takes one fragment or more, so fewer fragments than frames cannot hold them."""
    element = ds.get_item("PixelData", keep_deferred=True)
    value = getattr(element, "value", None)
    if not isinstance(value, (bytes, bytearray)):
        return  # deferred (above 64 MB): its frames are checked when tiled
    tag, length = struct.unpack("<LL", value[:8]) if len(value) >= 8 else (0, 0)
    if tag != 0xE000FFFE:
        raise InvalidHeaderError("Encapsulated Pixel Data (7FE0,0010) does not start with an item: it is damaged.")
    from pydicom.encaps import parse_fragments

    try:
        count, _ = parse_fragments(value[8 + length:])
    except (ValueError, struct.error) as exc:
        raise TruncatedError(f"Encapsulated Pixel Data (7FE0,0010) is damaged ({exc}).") from None
    if count < frames:
        raise InvalidHeaderError(f"Number of Frames (0028,0008) is {frames} but the Pixel Data holds only {count} "
                                 "fragment(s): the declared size cannot be there.")


def check_decodes(ds: Dataset) -> None:
    """Compressed pixel data no decoder can read would be stored only to fail in every job and view: its first
    and last frames are decoded now (a very large image is checked tile by tile when it is tiled)."""
    from .bigimage import is_large
    from .pixels import decode_frame, pixel_spec

    spec = pixel_spec(ds)
    if not ds.file_meta.TransferSyntaxUID.is_compressed or is_large(spec.rows, spec.columns):
        return
    for index in sorted({0, spec.frames - 1}):
        decode_frame(ds, index)


def parse_all(ds: Dataset, file_size: int | None = None) -> None:
    """Convert every element now (pixel data excepted), so a broken one is refused at ingest, not in a job.

    An element whose declared length runs past the end of its data (pydicom
    silently reads fewer bytes) is a cut-short file.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _walk(ds, file_size, depth=0)


def _walk(ds: Dataset, file_size: int | None, depth: int) -> None:
    if depth > 32:
        raise InvalidHeaderError("Sequences are nested more than 32 deep.")
    charset = _charset_key(ds) if depth == 0 else None
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF:
            have = len(raw.value) if raw.value is not None else \
                file_size - raw.value_tell if file_size is not None and raw.value_tell is not None else raw.length
            if have < raw.length:
                raise TruncatedError(f"Element {tag} declares {raw.length} bytes but only {have} follow: "
                                     "the file is cut short or the length is wrong.")
        if tag in _PIXEL_TAGS:
            continue
        key = _converted_key(tag, raw, charset) if depth == 0 else None
        if key is not None and key in _CONVERTED:
            continue  # these very bytes converted before: they convert again (when the archive reads them)
        value = ds[tag].value
        if key is not None:
            if len(_CONVERTED) >= _CONVERTED_MAX:
                _CONVERTED.clear()
            _CONVERTED[key] = None
        if isinstance(value, Sequence):
            for item in value:
                _walk(item, file_size, depth + 1)


# Top-level elements that converted in this process, by everything their conversion depends on: the next slices of
# a series repeat most of them byte for byte (patient, study, equipment, geometry), and converting is most of the
# cost of reading a header.  Sequences, ambiguous and unknown VRs, and private elements without a VR are always
# converted (their reading depends on other elements); large values too.
_CONVERTED: dict[tuple, None] = {}
_CONVERTED_MAX = 8192
_CONVERTED_VALUE_BYTES = 1024


def _charset_key(ds: Dataset):
    raw = ds.get_item(0x00080005, keep_deferred=True)
    return None if raw is None else bytes(raw.value or b"") if isinstance(raw, RawDataElement) else repr(raw.value)


def _converted_key(tag, raw, charset) -> tuple | None:
    if not isinstance(raw, RawDataElement) or raw.value is None or len(raw.value) > _CONVERTED_VALUE_BYTES:
        return None
    vr = raw.VR
    if vr is None:  # implicit VR: the dictionary's, for a public element
        if tag.is_private:
            return None
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return None
    if vr in ("SQ", "UN") or " or " in vr:
        return None
    return int(tag), vr, raw.is_implicit_VR, raw.is_little_endian, charset, bytes(raw.value)


def is_image(ds: Dataset) -> bool:
    """Whether *ds* holds pixels; an object without them (SR, RT plan, PDF ...) is archived as its original only."""
    return any(tag in ds for tag in _PIXEL_TAGS)


def read_checked(path: str | os.PathLike, data: bytes | None = None) -> Dataset:
    """Read a file and apply every check above; each failure is a :class:`RadPressError` with a reason.

    *data*: the file's bytes when the caller still holds them (an upload just staged at *path*): parsed from
    memory, without reading the file again.
    """
    from .pixels import pixel_spec, read_dataset

    def source():
        if data is None:
            return path
        buffer = io.BytesIO(data)
        buffer.name = os.path.basename(path)  # messages name the file as they would when it is read from disk
        return buffer

    try:
        try:
            ds = read_dataset(source())
        except TruncatedError:
            header = read_dataset(source(), pixels=False)
            if "Rows" in header:  # a header no image can have is the better reason than the size it implies
                check_image_header(header)
            raise
        parse_all(ds.file_meta)
        parse_all(ds, os.path.getsize(path) if data is None else len(data))
        if is_image(ds) or "Rows" in ds:
            pixel_spec(ds)  # an image header without pixel data: refused with that reason first
            check_identifiers(ds)
            check_image_header(ds)
            check_decodes(ds)
        else:  # a report, RT plan, PDF, key object, presentation state: kept as it came, never decoded
            check_identifiers(ds)
    except RadPressError:
        raise
    except _PARSE_ERRORS as exc:
        text = str(exc).split("\n")[0][:160] or type(exc).__name__
        raise InvalidHeaderError(f"An element cannot be read: {text}.") from None
    return ds
