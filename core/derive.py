"""Building the compressed DICOM dataset from a source dataset and encoded frames.

Lossy outputs follow PS3.3 C.7.6.1.1.5 (Lossy Image Compression), C.7.6.1.1.2
(Image Type DERIVED) and C.7.6.1.1.3 (Derivation Description, Source Image
Sequence with purpose "Uncompressed predecessor", or "Lossy compressed
predecessor" when the source was itself lossy).  Enhanced multi-frame objects
carry the same in their functional groups: Frame Type DERIVED and a Derivation
Image Sequence (C.7.6.16.2.6).  :func:`lossy_history` is the one reading of
what lossy compression an image has already been through.
"""

from __future__ import annotations

import copy
import math
import struct
from dataclasses import dataclass

import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
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
from .errors import RadPressError
from .pixels import PixelSpec, pixel_spec

__all__ = [
    "LOSSLESS_SYNTAXES",
    "LossyHistory",
    "is_marked_lossy",
    "lossy_history",
    "compressed_dataset",
    "derived_header",
    "format_ratio",
]

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
# Lossy Image Compression Method (0028,2114) defined terms, as people name them.
METHOD_NAMES = {
    "ISO_10918_1": "JPEG",
    "ISO_14495_1": "JPEG-LS",
    "ISO_15444_1": "JPEG 2000",
    "ISO_15444_15": "HTJ2K",
    "ISO_18181_1": "JPEG XL",
    "ISO_13818_2": "MPEG-2",
    "ISO_14496_10": "H.264",
    "ISO_23008_2": "HEVC",
}
# The method a lossy (or lossy-capable) transfer syntax implies when the attribute is missing.
_SYNTAX_METHODS = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
    "1.2.840.10008.1.2.4.111": "ISO_18181_1",
    "1.2.840.10008.1.2.4.112": "ISO_18181_1",
}
# Purpose of Reference codes, CID 7202 (Source Image Purposes of Reference), and CID 7203.
UNCOMPRESSED_PREDECESSOR = ("121320", "Uncompressed predecessor")
LOSSY_COMPRESSED_PREDECESSOR = ("121330", "Lossy compressed predecessor")
LOSSY_COMPRESSION = ("113040", "Lossy Compression")
# Type 1C attributes whose condition is Image Type Value 1 ORIGINAL or MIXED and
# that may not be present otherwise (as dciodvfy reads PS3.3): a DERIVED copy drops them.
_ORIGINAL_ONLY = {
    # Enhanced MR Image and Enhanced MR Color Image: MR Pulse Sequence (C.8.13.4) and Bulk Motion Synchronization.
    sop: (
        "PulseSequenceName", "MRAcquisitionType", "EchoPulseSequence", "MultiPlanarExcitation", "PhaseContrast",
        "TimeOfFlightContrast", "SteadyStatePulseSequence", "EchoPlanarPulseSequence", "SaturationRecovery",
        "SpectrallySelectedSuppression", "OversamplingPhase", "GeometryOfKSpaceTraversal",
        "RectilinearPhaseEncodeReordering", "SegmentedKSpaceTraversal", "CoverageOfKSpace",
        "NumberOfKSpaceTrajectories", "BulkMotionCompensationTechnique",
    )
    for sop in ("1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.3")
}
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
    # the flag missing, a lossy ratio or method named all the same (they are required when the flag is 01)
    named = not flag and (any(r > 1 for r in _floats(ds.get("LossyImageCompressionRatio")))
                          or bool(_strings(ds.get("LossyImageCompressionMethod"))))
    return (flag == "01" or named or uid in _LOSSY_SYNTAXES or (uid in _EITHER_SYNTAXES and flag != "00")
            or _irreversible_j2k(ds, uid) is not None or _near_lossless_jls(ds, uid) is not None
            or _xyb_jxl(ds, uid) is not None or _dct_jpeg(ds, uid) is not None)


def _first_fragment(value):
    """Encapsulated pixel data from its first fragment on (1 MB of it): its first frame's headers, however long the
    Basic Offset Table before it (1,100 frames: 4.4 KB); *value* as it is when it is not encapsulated items."""
    if not isinstance(value, (bytes, bytearray)) or value[:4] != b"\xfe\xff\x00\xe0" or len(value) < 8:
        return value
    start = 8 + int.from_bytes(value[4:8], "little")
    return bytes(value[start + 8:start + 8 + (1 << 20)]) if value[start:start + 4] == b"\xfe\xff\x00\xe0" else value


_J2K_SYNTAXES = frozenset(UID(f"1.2.840.10008.1.2.4.{n}") for n in (90, 91, 201, 202, 203))


def _irreversible_j2k(ds: Dataset, uid) -> str | None:
    """The method of a JPEG 2000 first frame coded with the irreversible 9-7 wavelet (lossy whatever the syntax
    or the flag claims: "Lossless Only", or "00"), else None."""
    from .codecs.codestream import parse_main_header

    value = _first_fragment(getattr(ds.get_item("PixelData", keep_deferred=True), "value", None) if uid in _J2K_SYNTAXES and "PixelData" in ds else None)
    start = value.find(b"\xff\x4f\xff\x51", 0, 4096) if isinstance(value, (bytes, bytearray)) else -1
    try:
        info = parse_main_header(memoryview(value)[start:]) if start >= 0 else None
    except (ValueError, struct.error, IndexError, TypeError, KeyError):
        return None
    if info is None or info.reversible:
        return None
    return "ISO_15444_15" if info.htj2k else "ISO_15444_1"


_JLS_SYNTAXES = frozenset(UID(f"1.2.840.10008.1.2.4.{n}") for n in (80, 81))


def _near_lossless_jls(ds: Dataset, uid) -> str | None:
    """"ISO_14495_1" when a first frame under a JPEG-LS syntax (.80 lossless only; .81 flagged 00) is coded with
    NEAR > 0."""
    value = _first_fragment(getattr(ds.get_item("PixelData", keep_deferred=True), "value", None) if uid in _JLS_SYNTAXES and "PixelData" in ds else None)
    pos = value.find(b"\xff\xd8", 0, 4096) + 2 if isinstance(value, (bytes, bytearray)) else 0
    while 1 < pos < min(len(value), 1 << 20) - 4:  # marker segments up to the first scan header (SOS)
        marker, length = struct.unpack(">HH", value[pos:pos + 4])
        if marker == 0xFFDA:
            near = pos + 5 + 2 * value[pos + 4]
            return "ISO_14495_1" if near < len(value) and value[near] > 0 else None
        pos += 2 + length
    return None


_LOSSLESS_JPEG_SYNTAXES = frozenset(UID(f"1.2.840.10008.1.2.4.{n}") for n in (57, 70))
_DCT_FRAMES = frozenset({0xFFC0, 0xFFC1, 0xFFC2, 0xFFC5, 0xFFC6, 0xFFC9, 0xFFCA, 0xFFCD, 0xFFCE})  # SOF3/7/11/15: lossless


def _dct_jpeg(ds: Dataset, uid) -> str | None:
    """"ISO_10918_1" when a first frame under a JPEG Lossless syntax (.57, .70) has a DCT frame header (baseline,
    extended, progressive: lossy, and any JPEG decoder reads it), or a lossless one whose first scan has a point
    transform (Pt > 0: the low bits are dropped before coding), else None."""
    value = _first_fragment(getattr(ds.get_item("PixelData", keep_deferred=True), "value", None) if uid in _LOSSLESS_JPEG_SYNTAXES and "PixelData" in ds else None)
    pos = value.find(b"\xff\xd8", 0, 4096) + 2 if isinstance(value, (bytes, bytearray)) else 0
    lossless = False
    while 1 < pos < min(len(value), 1 << 20) - 4:  # marker segments up to the first scan header (SOS)
        marker, length = struct.unpack(">HH", value[pos:pos + 4])
        if marker in _DCT_FRAMES:
            return "ISO_10918_1"
        if marker in (0xFFC3, 0xFFC7, 0xFFCB, 0xFFCF):
            lossless = True
        elif marker == 0xFFDA:
            point_transform = pos + 4 + 1 + 2 * value[pos + 4] + 2  # after Ns, the components, Ss and Se: Ah|Al
            return "ISO_10918_1" if lossless and point_transform < len(value) and value[point_transform] & 0x0F else None
        pos += 2 + length
    return None


_JXL_SYNTAXES = frozenset(UID(f"1.2.840.10008.1.2.4.{n}") for n in (110, 112))


def _xyb_jxl(ds: Dataset, uid) -> str | None:
    """"ISO_18181_1" when a JPEG XL first frame is coded in XYB, libjxl's lossy mode (lossy whatever the syntax or
    the flag claims: "JPEG XL Lossless", or "00"), else None."""
    from pydicom.encaps import generate_fragmented_frames

    from .codecs.jxl import coded_in_xyb

    value = getattr(ds.get_item("PixelData", keep_deferred=True), "value", None) if uid in _JXL_SYNTAXES and "PixelData" in ds else None
    if not isinstance(value, (bytes, bytearray)):
        return None
    try:
        first = b"".join(next(generate_fragmented_frames(value, number_of_frames=int(ds.get("NumberOfFrames") or 1))))
        return "ISO_18181_1" if coded_in_xyb(first) else None
    except (ValueError, TypeError, KeyError, StopIteration, struct.error, RadPressError):
        return None


@dataclass(frozen=True)
class LossyHistory:
    """The lossy compression an image has been through before (empty when none).

    *cumulative_ratio* is the product of the ratios in Lossy Image Compression
    Ratio (0028,2112), or, when the file names none but is held in a lossy
    transfer syntax, its uncompressed size over its pixel data; None when unknown.
    """

    lossy: bool = False
    methods: tuple[str, ...] = ()
    ratios: tuple[float, ...] = ()
    cumulative_ratio: float | None = None

    @property
    def method_names(self) -> str:
        names = [METHOD_NAMES.get(m, m) for m in self.methods]
        return " then ".join(dict.fromkeys(names)) or "method unknown"

    @property
    def label(self) -> str:
        """E.g. "JPEG 2000, 18:1" (empty when not lossy)."""
        if not self.lossy:
            return ""
        ratio = f"{format_ratio(self.cumulative_ratio)}:1" if self.cumulative_ratio else "ratio unknown"
        return f"{self.method_names}, {ratio}"

    @property
    def compressed(self) -> str:
        """What the UI shows: "compressed 18:1" (or that the ratio is unknown)."""
        return f"compressed {format_ratio(self.cumulative_ratio)}:1" if self.cumulative_ratio else "compressed, ratio unknown"

    def header(self) -> str | None:
        """The X-Lossy-Compression value for anything made from this image, None when never lossy."""
        if not self.lossy:
            return None
        ratio = format_ratio(self.cumulative_ratio) if self.cumulative_ratio else "unknown"
        methods = "\\".join(self.methods) or "unknown"
        return f"ratio={ratio}; method={methods}"

    def then(self, ratio: float | None, method: str) -> "LossyHistory":
        """This history followed by one more lossy compression at *ratio*."""
        cumulative = self.cumulative_ratio if self.lossy else 1.0
        total = cumulative * ratio if cumulative and ratio else None
        return LossyHistory(True, (*self.methods, method), (*self.ratios, *(() if ratio is None else (ratio,))), total)

    def to_dict(self) -> dict:
        return {"lossy": self.lossy, "lossy_methods": list(self.methods), "lossy_ratios": list(self.ratios),
                "lossy_ratio": self.cumulative_ratio, "lossy_label": self.label}

    def to_index(self) -> tuple[int, float | None, str]:
        """(lossy, cumulative ratio, methods) as the index's instances row keeps them."""
        return int(self.lossy), self.cumulative_ratio, "\\".join(self.methods)

    @classmethod
    def from_index(cls, row) -> "LossyHistory":
        """Read back what :meth:`to_index` stored (rows indexed before the columns existed have only the flag)."""
        keys = row.keys()
        if not row["lossy"]:
            return cls()
        methods = tuple(m for m in ((row["lossy_methods"] if "lossy_methods" in keys else "") or "").split("\\") if m)
        ratio = row["lossy_ratio"] if "lossy_ratio" in keys else None
        return cls(True, methods, (), ratio)


def _floats(value) -> tuple[float, ...]:
    if value in (None, ""):
        return ()
    values = [value] if isinstance(value, (str, int, float)) else list(value)
    out = []
    for v in values:
        try:
            number = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number) and number > 0:
            out.append(number)
    return tuple(out)


def _strings(value) -> tuple[str, ...]:
    if value in (None, ""):
        return ()
    values = [value] if isinstance(value, str) else list(value)
    return tuple(str(v).strip() for v in values if str(v).strip())


def lossy_history(ds: Dataset) -> LossyHistory:
    """What lossy compression *ds* says (or its transfer syntax implies) it went through."""
    if not is_marked_lossy(ds):
        return LossyHistory()
    methods = _strings(ds.get("LossyImageCompressionMethod"))
    ratios = _floats(ds.get("LossyImageCompressionRatio"))
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not methods and syntax in _SYNTAX_METHODS:
        methods = (_SYNTAX_METHODS[syntax],)
    elif not methods and (irreversible := _irreversible_j2k(ds, syntax) or _near_lossless_jls(ds, syntax)
                          or _xyb_jxl(ds, syntax) or _dct_jpeg(ds, syntax)):
        methods = (irreversible,)
    cumulative = math.prod(ratios) if ratios else _stored_ratio(ds, syntax)
    return LossyHistory(True, methods, ratios, cumulative)


def _stored_ratio(ds: Dataset, syntax: str) -> float | None:
    """Uncompressed size over the encapsulated pixel data of a file in a lossy syntax."""
    if syntax not in _LOSSY_SYNTAXES | _EITHER_SYNTAXES or "PixelData" not in ds:
        return None
    value = getattr(ds.get_item("PixelData", keep_deferred=True), "value", None)  # never load deferred pixel data
    if not value:
        return None
    try:
        spec = pixel_spec(ds)
    except RadPressError:  # an unusable image header leaves the ratio unknown, never the flag
        return None
    return spec.frame_bytes * spec.frames / len(value)


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
            out[tag] = _detached(source.get_item(tag))
    out.file_meta = copy.deepcopy(source.file_meta) if hasattr(source, "file_meta") else FileMetaDataset()
    if source.original_encoding == (False, True):
        # The copy is explicit VR little endian, as the source's elements not read yet are encoded: pydicom then
        # writes them as they are instead of parsing every one again (a third of the time of writing a copy).
        out.set_original_encoding(False, True, source.original_character_set)
    if out.file_meta.get("TransferSyntaxUID") == ExplicitVRBigEndian:
        _swap_words(out)  # pydicom writes binary words as read: the copy is little endian
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


def _detached(element: DataElement | RawDataElement) -> DataElement | RawDataElement:
    """An element of the source for the copy, which may change it while the source stays untouched: one not
    read yet is shared as it is (immutable; the copy reads its own), a sequence copied deeply (its items are
    marked), any other copied shallowly (attributes are given new values, never changed in place)."""
    if isinstance(element, RawDataElement):
        return element
    return copy.deepcopy(element) if element.VR == "SQ" else copy.copy(element)


# Binary VRs pydicom keeps as raw bytes in the byte order they were read in, by word size.
_WORD_SIZES = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _swap_words(ds: Dataset) -> None:
    """Big-endian binary words (palette LUT data, overlays, ...) in little-endian order, in every item too."""
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _swap_words(item)
        elif element.VR in _WORD_SIZES and isinstance(element.value, bytes) and len(element.value) % _WORD_SIZES[element.VR] == 0:
            size = _WORD_SIZES[element.VR]
            element.value = np.frombuffer(element.value, f">u{size}").astype(f"<u{size}").tobytes()


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


def _derived(values) -> list[str]:
    """Image Type / Frame Type with Value 1 DERIVED, the other values kept."""
    values = list(_strings(values)) or ["DERIVED", "SECONDARY"]
    return ["DERIVED", *values[1:]] if len(values) > 1 else ["DERIVED", "SECONDARY"]


def _extended(sequence, item: Dataset) -> Sequence:
    """An existing sequence with one more item: earlier references are kept, never replaced."""
    return Sequence([*(sequence or []), item])


def _reference(source: Dataset, purpose: tuple[str, str], frame: int | None = None) -> Dataset:
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if frame is not None:
        reference.ReferencedFrameNumber = frame
    reference.PurposeOfReferenceCodeSequence = Sequence([_code(*purpose)])
    return reference


def _evidence(source: Dataset) -> Dataset:
    """The source as a Hierarchical SOP Instance Reference (Source Image Evidence of an Enhanced image)."""
    instance = Dataset()
    instance.ReferencedSOPClassUID = source.SOPClassUID
    instance.ReferencedSOPInstanceUID = source.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ReferencedSOPSequence = Sequence([instance])
    study = Dataset()
    study.StudyInstanceUID = source.StudyInstanceUID
    study.ReferencedSeriesSequence = Sequence([series])
    return study


def _mark_lossy(out: Dataset, source: Dataset, codec: Codec, ratio: float) -> None:
    text = format_ratio(ratio)
    out.LossyImageCompression = "01"
    _append(out, "LossyImageCompressionRatio", text)
    _append(out, "LossyImageCompressionMethod", codec.method)
    out.ImageType = _derived(source.get("ImageType"))

    purpose = LOSSY_COMPRESSED_PREDECESSOR if is_marked_lossy(source) else UNCOMPRESSED_PREDECESSOR
    description = f"Lossy compression {codec.label} ({codec.method}), ratio {text}:1"
    shared = list(out.get("SharedFunctionalGroupsSequence") or [])
    per_frame = list(out.get("PerFrameFunctionalGroupsSequence") or [])
    if shared or per_frame:
        _mark_functional_groups(shared, per_frame, source, purpose, description)
        out.SourceImageEvidenceSequence = _extended(out.get("SourceImageEvidenceSequence"), _evidence(source))
    else:
        out.SourceImageSequence = _extended(out.get("SourceImageSequence"), _reference(source, purpose))
        out.DerivationCodeSequence = _extended(out.get("DerivationCodeSequence"), _code(*LOSSY_COMPRESSION))
        previous = str(source.get("DerivationDescription", "") or "").strip()
        out.DerivationDescription = f"{previous}; {description}"[-1024:] if previous else description
    for keyword in _ORIGINAL_ONLY.get(str(source.get("SOPClassUID", "")), ()):
        out.pop(keyword, None)
    out.SOPInstanceUID = generate_uid()


def _mark_functional_groups(shared: list, per_frame: list, source: Dataset, purpose, description: str) -> None:
    """Frame Type DERIVED in every functional group; one more Derivation Image Sequence item.

    The derivation goes where the source keeps it (Shared, referring to all
    frames), else in each frame's group, referring to the same frame of the source.
    """
    for group in shared + per_frame:
        for element in group:
            if element.VR == "SQ":
                for item in element.value:
                    if "FrameType" in item:
                        item.FrameType = _derived(item.FrameType)
    in_shared = not per_frame or (shared and "DerivationImageSequence" in shared[0])
    targets = [(shared[0], None)] if in_shared else [(group, index + 1) for index, group in enumerate(per_frame)]
    for group, frame in targets:
        derivation = Dataset()
        derivation.DerivationDescription = description
        derivation.DerivationCodeSequence = Sequence([_code(*LOSSY_COMPRESSION)])
        derivation.SourceImageSequence = Sequence([_reference(source, purpose, frame)])
        group.DerivationImageSequence = _extended(group.get("DerivationImageSequence"), derivation)
