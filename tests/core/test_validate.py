import struct

import pytest

from core.errors import InvalidHeaderError, RadPressError, TruncatedError
from core.ingest import ingest
from core.store import Store
from core.validate import check_uid, read_checked
from tests.synthetic import KINDS, make_dataset, write, write_kind

VALID_UIDS = ["0.0", "1.2.840.10008.1.2.1", "2.25.329800735698586629295641978511506172918", "1.0.3", "9" * 62 + ".9"]
INVALID_UIDS = {
    "traversal": "../57/1.2.3",
    "absolute": "/etc/passwd",
    "dot-dot": "1..2",
    "leading zero": "1.02.3",
    "leading dot": ".1.2",
    "trailing dot": "1.2.",
    "NUL inside": "1.2\x00.3",
    "letters": "1.2.abc",
    "65 characters": "1" * 65,
    "300 characters": "1" + ".1" * 149,
    "backslash": "1.2\\3",
    "space": "1.2 3",
    "empty": "",
    "one component": "987654321",  # <org root>.<suffix>; a dotless one also escaped the callback gate's UID search
    "zero alone": "0",
}


@pytest.mark.parametrize("uid", VALID_UIDS)
def test_valid_uids_pass(uid):
    assert check_uid(uid, "SOP Instance UID") == uid


@pytest.mark.parametrize("case", INVALID_UIDS, ids=str)
def test_invalid_uids_name_the_rule(case):
    with pytest.raises(InvalidHeaderError) as err:
        check_uid(INVALID_UIDS[case], "SOP Instance UID (0008,0018)")
    assert "SOP Instance UID (0008,0018)" in str(err.value) and err.value.http_status == 422


def test_several_values_are_not_one_uid():
    with pytest.raises(InvalidHeaderError, match="not one UID"):
        check_uid(["1.2", "1.3"], "Study Instance UID")


@pytest.mark.parametrize("kind", KINDS)
def test_every_synthetic_kind_passes(kind, tmp_path):
    ds = read_checked(write_kind(kind, tmp_path))
    assert ds.SOPInstanceUID


def _mutated(tmp_path, **changes):
    ds = make_dataset(rows=16, columns=16)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return write(ds, tmp_path / "bad.dcm")


# keyword changes -> a word the reason must contain
ABSURD_HEADERS = {
    "rows 0": (dict(Rows=0), "Rows 0"),
    "rows 65535": (dict(Rows=65535), "Rows 65535"),
    "columns 0": (dict(Columns=0), "Columns 0"),
    "columns 65535": (dict(Columns=65535), "Columns 65535"),
    "bits allocated 0": (dict(BitsAllocated=0), "Bits Allocated"),
    "bits allocated 7": (dict(BitsAllocated=7, BitsStored=7, HighBit=6), "Bits Allocated (0028,0100) 7"),
    "bits allocated 12": (dict(BitsAllocated=12), "Bits Allocated (0028,0100) 12"),
    "bits allocated 1 with colour": (dict(BitsAllocated=1, BitsStored=1, HighBit=0, SamplesPerPixel=3,
                                          PhotometricInterpretation="RGB"), "Bits Allocated (0028,0100) 1"),
    "frames 0": (dict(NumberOfFrames=0), "Number of Frames (0028,0008) 0"),
    "frames -1": (dict(NumberOfFrames=-1), "Number of Frames (0028,0008) -1"),
    "frames 10^9": (dict(NumberOfFrames=10 ** 9), "1000000000 frame(s)"),
    "samples 0": (dict(SamplesPerPixel=0), "Samples per Pixel (0028,0002) 0"),
    "samples 2": (dict(SamplesPerPixel=2), "Samples per Pixel (0028,0002) 2"),
    "samples 4": (dict(SamplesPerPixel=4), "Samples per Pixel (0028,0002) 4"),
    "samples 3 for monochrome": (dict(SamplesPerPixel=3), "does not fit"),
    "high bit beyond bits stored": (dict(HighBit=14), "High Bit (0028,0102) 14"),
    "bits stored beyond allocated": (dict(BitsStored=17, HighBit=16), "Bits Stored (0028,0101) 17"),
    "pixel data too short": (dict(Rows=64), "cut short"),
    "no study uid": (dict(StudyInstanceUID=None), "Study Instance UID (0020,000D) is missing"),
    "sop uid with traversal": (dict(SOPInstanceUID="../57/1.2.3"), "not a valid UID"),
    "series uid too long": (dict(SeriesInstanceUID="1." * 40 + "1"), "at most 64"),
    "sop class with letters": (dict(SOPClassUID="1.2.x"), "SOP Class UID (0008,0016)"),
    "unknown photometric": (dict(PhotometricInterpretation="FOO"), "Photometric Interpretation (0028,0004) 'FOO'"),
    "planar configuration 5": (dict(SamplesPerPixel=3, PhotometricInterpretation="RGB", BitsAllocated=8, BitsStored=8,
                                    HighBit=7, PlanarConfiguration=5, Rows=8), "Planar Configuration (0028,0006) 5"),
    "lossy flag 99": (dict(LossyImageCompression="99"), "must be 00 or 01"),
    "palette colour without its tables": (dict(PhotometricInterpretation="PALETTE COLOR"),
                                          "Red Palette Color Lookup Table Descriptor (0028,1101)"),
}


@pytest.mark.parametrize("case", ABSURD_HEADERS, ids=str)
def test_absurd_headers_are_rejected_at_ingest_with_a_reason(case, tmp_path):
    changes, words = ABSURD_HEADERS[case]
    path = _mutated(tmp_path, **changes)
    with pytest.raises(RadPressError) as err:
        read_checked(path)
    assert words in str(err.value)
    store = Store(tmp_path / "data")
    [result] = ingest(store, [path])
    assert result.status == "rejected" and words in result.reason
    assert not list((store.root / "originals").rglob("*")) and not list((store.root / "tmp").iterdir())
    assert not store.studies()


def test_compressed_frames_beyond_the_fragments_are_refused(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    ds = make_dataset(rows=16, columns=16)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 60])  # one frame's fragment
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.NumberOfFrames = 10 ** 9
    with pytest.raises(InvalidHeaderError, match="only 1 fragment"):
        read_checked(write(ds, tmp_path / "c.dcm"))


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"SQ", b"UN"):
        return struct.pack("<HH2sHL", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


# raw bytes appended after a valid file's pixel data (a private group sorts last) -> the error type
BROKEN_ELEMENTS = {
    "unknown VR": (_element(0x7FE1, 0x0010, b"ZZ", b"ab"), InvalidHeaderError),
    "value shorter than its length": (struct.pack("<HH2sH", 0x7FE1, 0x0010, b"LO", 200) + b"ab", TruncatedError),
    "huge length past the end": (struct.pack("<HH2sHL", 0x7FE1, 0x1000, b"OB", 0, 0x7FFFFFF0) + b"ab", TruncatedError),
    "sequence without delimiter": (struct.pack("<HH2sHL", 0x7FE1, 0x1001, b"SQ", 0, 0xFFFFFFFF)
                                   + struct.pack("<HHL", 0xFFFE, 0xE000, 20) + b"\x10\x00\x10\x00PN\x20\x00abc",
                                   TruncatedError),
    "sequence of garbage": (_element(0x7FE1, 0x1001, b"SQ", b"garbage garbage!"), TruncatedError),
    "US of 3 bytes": (_element(0x7FE1, 0x0010, b"LO", b"x ") + _element(0x7FE1, 0x1002, b"US", b"abc"),
                      InvalidHeaderError),
}


@pytest.mark.parametrize("case", BROKEN_ELEMENTS, ids=str)
def test_parse_errors_are_rejections(case, tmp_path):
    tail, error = BROKEN_ELEMENTS[case]
    good = write(make_dataset(rows=8, columns=8), tmp_path / "good.dcm")
    path = tmp_path / "broken.dcm"
    path.write_bytes(good.read_bytes() + tail)
    with pytest.raises(error):
        read_checked(path)
    store = Store(tmp_path / "data")
    [result] = ingest(store, [path, ])
    assert result.status == "rejected" and result.reason
    assert not store.studies() and not list((store.root / "tmp").iterdir())


def _raw(ds, keyword, text: bytes):
    from pydicom.datadict import dictionary_VR
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(text), text, 0, False, True)


@pytest.mark.parametrize("keyword", ["RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth",
                                     "LossyImageCompressionRatio"])
def test_values_the_archive_computes_with_must_be_numbers(keyword, tmp_path):
    ds = make_dataset(rows=16, columns=16, modality="CT")
    _raw(ds, keyword, b"abc ")
    [result] = ingest(Store(tmp_path / "data"), [write(ds, tmp_path / "x.dcm")])
    assert result.status == "rejected" and f"{keyword} (0028," in result.reason and "'abc' is not a number" in result.reason


def test_an_instance_number_beyond_sqlite_is_stored_without_it(tmp_path):
    ds = make_dataset(rows=16, columns=16)
    _raw(ds, "InstanceNumber", b"99999999999999999999")
    store = Store(tmp_path / "data")
    [result] = ingest(store, [write(ds, tmp_path / "x.dcm")])
    assert result.status == "stored" and store.instance(result.sop_uid)["number"] is None


def test_a_palette_colour_image_with_its_tables_is_stored_and_shown(tmp_path):
    """The tables make it showable: it passes, and the display path turns its indices into colours."""
    import numpy as np

    from core.render import to_display

    ds = make_dataset(rows=16, columns=16, bits_allocated=8, bits_stored=8, modality="OT")
    ds.PhotometricInterpretation = "PALETTE COLOR"
    for colour, scale in (("Red", 1), ("Green", 0), ("Blue", 0)):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", (np.arange(256, dtype="<u2") * 257 * scale).tobytes())
    path = write(ds, tmp_path / "palette.dcm")
    checked = read_checked(path)
    shown = to_display(checked.pixel_array, checked)
    assert shown.shape == (16, 16, 3) and shown[..., 1].max() == 0 and shown[..., 0].max() > 0
    assert [r.status for r in ingest(Store(tmp_path / "data"), [path])] == ["stored"]


@pytest.mark.parametrize("syntax", ["JPEG2000Lossless", "JPEGBaseline8Bit", "RLELossless", "JPEGLSLossless"])
def test_compressed_pixel_data_that_does_not_decode_is_refused_at_ingest(syntax, tmp_path):
    """Damaged compressed frames used to be stored, then every view and job of the image failed."""
    import pydicom.uid
    from pydicom.encaps import encapsulate

    ds = make_dataset(**{**KINDS["multiframe"], "bits_allocated": 8, "bits_stored": 8})
    ds.file_meta.TransferSyntaxUID = getattr(pydicom.uid, syntax)
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(range(200)) * 5] * ds.NumberOfFrames)
    ds["PixelData"].VR = "OB"
    path = write(ds, tmp_path / "damaged.dcm")
    with pytest.raises(RadPressError, match="could not be decoded"):
        read_checked(path)
    store = Store(tmp_path / "data")
    [result] = ingest(store, [path])
    assert result.status == "rejected" and "could not be decoded" in result.reason
    assert not store.studies() and not list((store.root / "tmp").iterdir())


def test_elements_seen_before_are_not_converted_again_yet_a_broken_one_is_still_refused(tmp_path, monkeypatch):
    """The next slices of a series repeat most elements byte for byte: those are not converted a second time; a
    value that differs (even in one byte, under a tag seen before) is converted, and refused when it does not."""
    from pydicom.dataset import Dataset

    import core.validate

    monkeypatch.setattr(core.validate, "_CONVERTED", {})
    good = write(make_dataset(rows=8, columns=8), tmp_path / "good.dcm").read_bytes()
    paths = {}
    for name, tail in {"a": _element(0x7FE1, 0x0010, b"LO", b"x ") + _element(0x7FE1, 0x1002, b"US", b"ab"),
                       "b": _element(0x7FE1, 0x0010, b"LO", b"x ") + _element(0x7FE1, 0x1002, b"US", b"ab"),
                       "broken": _element(0x7FE1, 0x0010, b"LO", b"x ") + _element(0x7FE1, 0x1002, b"US", b"abc")}.items():
        paths[name] = tmp_path / f"{name}.dcm"
        paths[name].write_bytes(good + tail)
    converted, getitem = [], Dataset.__getitem__
    monkeypatch.setattr(Dataset, "__getitem__", lambda ds, key: (converted.append(key), getitem(ds, key))[1])
    read_checked(paths["a"])
    first, converted[:] = len(converted), []
    read_checked(paths["b"])
    assert len(converted) < first / 2  # the same header again: the UIDs and such are read, not every element
    with pytest.raises(InvalidHeaderError, match="cannot be read"):
        read_checked(paths["broken"])
