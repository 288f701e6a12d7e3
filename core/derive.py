"""Building the compressed DICOM dataset from a source dataset and encoded frames.

Lossy outputs follow PS3.3 C.7.6.1.1.5 (Lossy Image Compression), C.7.6.1.1.2
(Image Type DERIVED) and C.7.6.1.1.3 (Derivation Description, Source Image
Sequence with purpose "Uncompressed predecessor").
"""

from __future__ import annotations

import copy

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

from .codecs import Codec, JPEGXLLossless
from .pixels import PixelSpec

__all__ = ["LOSSLESS_SYNTAXES", "is_marked_lossy", "compressed_dataset", "derived_header", "format_ratio"]

# Transfer syntaxes that can only hold exact pixels; a file in one of them
# whose pixels differ from its source is lying.
LOSSLESS_SYNTAXES = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        JPEGLossless,
        JPEGLosslessSV1,
        UID("1.2.840.10008.1.2.4.80"),
        UID("1.2.840.10008.1.2.4.90"),
        UID("1.2.840.10008.1.2.4.201"),
        UID("1.2.840.10008.1.2.4.202"),
        JPEGXLLossless,
    }
)
_LOSSY_SYNTAXES = frozenset(
    UID(u) for u in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.4.111")
)
# Syntaxes that may hold either: the Lossy Image Compression flag decides, lossy when absent.
_EITHER_SYNTAXES = frozenset(UID(u) for u in ("1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.112"))
# Basic Offset Table offsets are 32-bit: beyond this the Extended Offset Table is needed.
BOT_LIMIT = 2**32 - 1


def format_ratio(ratio: float) -> str:
    """A Decimal String (at most 16 characters) for a ratio."""
    return f"{ratio:.2f}".rstrip("0").rstrip(".")


def is_marked_lossy(ds: Dataset) -> bool:
    """True when the dataset says, or its transfer syntax implies, that it went through lossy compression."""
    flag = str(ds.get("LossyImageCompression", "") or "").strip()
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return flag == "01" or uid in _LOSSY_SYNTAXES or (uid in _EITHER_SYNTAXES and flag != "00")


def compressed_dataset(
    source: Dataset,
    frames: list[bytes],
    codec: Codec,
    spec: PixelSpec,
    achieved_ratio: float,
    *,
    bot_limit: int = BOT_LIMIT,
) -> Dataset:
    """A new dataset holding *frames* encapsulated, every other attribute of *source* kept."""
    out = derived_header(source, codec, spec, achieved_ratio)
    if sum(len(f) + (len(f) & 1) + 8 for f in frames) > bot_limit:
        pixel_data, table, lengths = encapsulate_extended(frames)
        out.ExtendedOffsetTable = table
        out.ExtendedOffsetTableLengths = lengths
    else:
        pixel_data = encapsulate(frames, has_bot=True)
    out.PixelData = pixel_data
    out["PixelData"].VR = "OB"
    out["PixelData"].is_undefined_length = True
    return out


def derived_header(source: Dataset, codec: Codec, spec: PixelSpec, achieved_ratio: float) -> Dataset:
    """Every attribute of the compressed copy but its Pixel Data (very large images stream that in)."""
    out = Dataset()
    skip = {0x7FE00010, 0x7FE00001, 0x7FE00002}  # Pixel Data (never loaded here) and its offset tables
    for tag in source.keys():
        if tag not in skip:
            out.add(copy.deepcopy(source[tag]))  # never share elements: the source must stay untouched
    out.file_meta = copy.deepcopy(source.file_meta) if hasattr(source, "file_meta") else FileMetaDataset()
    out.file_meta.TransferSyntaxUID = codec.transfer_syntax
    out.PhotometricInterpretation = codec.photometric(spec)
    if spec.samples > 1:
        out.PlanarConfiguration = 0
    if codec.lossy:
        _mark_lossy(out, source, codec, achieved_ratio)
    elif is_marked_lossy(source):
        # Once lossy, always lossy: a lossless re-encoding keeps the flag (C.7.6.1.1.5).
        out.LossyImageCompression = "01"
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    out.file_meta.MediaStorageSOPClassUID = out.SOPClassUID
    return out


def _append(ds: Dataset, keyword: str, value: str) -> None:
    if keyword in ds and ds[keyword].value not in (None, ""):
        current = ds[keyword].value
        values = list(current) if ds[keyword].VM > 1 else [current]
        setattr(ds, keyword, [*values, value])
    else:
        setattr(ds, keyword, value)


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def _mark_lossy(out: Dataset, source: Dataset, codec: Codec, ratio: float) -> None:
    text = format_ratio(ratio)
    out.LossyImageCompression = "01"
    _append(out, "LossyImageCompressionRatio", text)
    _append(out, "LossyImageCompressionMethod", codec.method)

    image_type = list(source.get("ImageType", []) or []) or ["DERIVED", "SECONDARY"]
    image_type[0] = "DERIVED"
    out.ImageType = image_type

    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    reference.PurposeOfReferenceCodeSequence = Sequence([_code("121320", "Uncompressed predecessor")])
    out.SourceImageSequence = Sequence([reference])
    out.DerivationCodeSequence = Sequence([_code("113040", "Lossy Compression")])

    description = f"Lossy compression {codec.label} ({codec.method}), ratio {text}:1"
    previous = str(source.get("DerivationDescription", "") or "").strip()
    out.DerivationDescription = f"{previous}; {description}"[-1024:] if previous else description
    out.SOPInstanceUID = generate_uid()
