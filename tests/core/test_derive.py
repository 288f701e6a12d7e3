"""The written DICOM: lossy marking (PS3.3 C.7.6.1.1.5), conformance and independent decoders."""

import copy
import re
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from core.compress import compress
from core.derive import compressed_dataset, is_marked_lossy
from core.files import write_dataset
from core.pixels import decode_all, decode_frame, pixel_spec, read_dataset
from core.errors import UnsupportedError
from core.samples import sample, sample_files
from tests.checkers import dciodvfy_errors, gdcm_pixels, require, run, tool_pixels
from tests.synthetic import KINDS, make_dataset, write_kind

LOSSLESS_CASES = [
    (codec, name)
    for codec in ("j2k", "htj2k", "jpegls", "jxl")
    for name in ("693_UNCR", "MR2_UNCR", "RG1_UNCR", "US1_UNCR", "emri_small", "OBXXXX1A")
    if not (codec == "jxl" and name == "693_UNCR")
]


def test_lossy_copy_is_marked_as_lossy(load):
    source = load("MR2_UNCR")
    out = compress(source, "j2k", "lossy", 10).dataset
    assert out.LossyImageCompression == "01"
    assert float(out.LossyImageCompressionRatio) == pytest.approx(10, rel=0.1)
    assert out.LossyImageCompressionMethod == "ISO_15444_1"
    assert out.ImageType[0] == "DERIVED"
    assert out.SOPInstanceUID != source.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    ref = out.SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == source.SOPClassUID
    assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121320"
    assert f"ratio {out.LossyImageCompressionRatio}:1" in out.DerivationDescription
    assert out.DerivationCodeSequence[0].CodeValue == "113040"
    assert is_marked_lossy(out)


@pytest.mark.parametrize("codec, method", [("htj2k", "ISO_15444_15"), ("jpegls", "ISO_14495_1"), ("jxl", "ISO_18181_1")])
def test_every_lossy_codec_names_its_method(codec, method, load):
    out = compress(load("RG3_UNCR"), codec, "lossy", 20).dataset
    assert out.LossyImageCompression == "01" and out.LossyImageCompressionMethod == method


def test_recompressing_appends_ratio_and_method(load):
    first = compress(load("MR2_UNCR"), "j2k", "lossy", 10).dataset
    second = compress(first, "htj2k", "lossy", 20).dataset
    assert second.LossyImageCompression == "01"
    assert len(second.LossyImageCompressionRatio) == 2
    assert list(second.LossyImageCompressionMethod) == ["ISO_15444_1", "ISO_15444_15"]
    assert second.DerivationDescription.count("Lossy compression") == 2
    # the earlier reference is kept and the new one added: its source was lossy already
    refs = second.SourceImageSequence
    assert [r.ReferencedSOPInstanceUID for r in refs] == [load("MR2_UNCR").SOPInstanceUID, first.SOPInstanceUID]
    assert [r.PurposeOfReferenceCodeSequence[0].CodeValue for r in refs] == ["121320", "121330"]
    assert [c.CodeValue for c in second.DerivationCodeSequence] == ["113040", "113040"]


def test_purpose_codes_are_the_dicom_ones():
    """CID 7202 codes as pydicom's code dictionary has them."""
    from pydicom.sr.codedict import codes

    from core.derive import LOSSY_COMPRESSED_PREDECESSOR, LOSSY_COMPRESSION, UNCOMPRESSED_PREDECESSOR

    for (value, meaning), code in ((UNCOMPRESSED_PREDECESSOR, codes.DCM.UncompressedPredecessor),
                                   (LOSSY_COMPRESSED_PREDECESSOR, codes.DCM.LossyCompressedPredecessor),
                                   (LOSSY_COMPRESSION, codes.DCM.LossyCompression)):
        assert (value, meaning) == (code.value, code.meaning)


def test_already_lossy_original_is_a_lossy_compressed_predecessor():
    source = make_dataset(**KINDS["already_lossy"])
    out = compress(source, "htj2k", "lossy", 5).dataset
    assert out.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "121330"
    assert list(out.LossyImageCompressionMethod) == ["ISO_15444_1", "ISO_15444_15"]
    assert float(out.LossyImageCompressionRatio[0]) == 18


def test_enhanced_multi_frame_is_marked_in_its_functional_groups():
    source = make_dataset(**KINDS["enhanced_ct"])
    before = copy.deepcopy(source)
    out = compress(source, "j2k", "lossy", 8).dataset
    assert source == before
    assert out.ImageType[0] == "DERIVED" and list(out.ImageType[1:]) == list(source.ImageType[1:])
    shared = out.SharedFunctionalGroupsSequence[0]
    assert shared.CTImageFrameTypeSequence[0].FrameType[0] == "DERIVED"
    assert "DerivationImageSequence" not in shared
    for number, group in enumerate(out.PerFrameFunctionalGroupsSequence, start=1):
        derivation = group.DerivationImageSequence[-1]
        assert derivation.DerivationCodeSequence[0].CodeValue == "113040"
        assert "ratio" in derivation.DerivationDescription
        ref = derivation.SourceImageSequence[0]
        assert (ref.ReferencedSOPInstanceUID, ref.ReferencedFrameNumber) == (source.SOPInstanceUID, number)
        assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121320"
    evidence = out.SourceImageEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == source.SOPInstanceUID
    # lossy again: the earlier derivation item stays, a new one follows
    again = compress(out, "htj2k", "lossy", 4).dataset
    items = again.PerFrameFunctionalGroupsSequence[1].DerivationImageSequence
    assert [i.SourceImageSequence[0].ReferencedSOPInstanceUID for i in items] == [source.SOPInstanceUID, out.SOPInstanceUID]
    assert items[1].SourceImageSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "121330"
    assert len(again.SourceImageEvidenceSequence) == 2


def test_shared_derivation_is_extended_where_it_is(load):
    source = make_dataset(**KINDS["enhanced_ct"])
    first = Dataset()
    first.DerivationDescription = "earlier processing"
    source.SharedFunctionalGroupsSequence[0].DerivationImageSequence = [first]
    out = compress(source, "j2k", "lossy", 8).dataset
    items = out.SharedFunctionalGroupsSequence[0].DerivationImageSequence
    assert items[0].DerivationDescription == "earlier processing" and len(items) == 2
    assert "ReferencedFrameNumber" not in items[1].SourceImageSequence[0]  # all frames
    assert all("DerivationImageSequence" not in g for g in out.PerFrameFunctionalGroupsSequence)


def test_original_only_attributes_leave_a_derived_enhanced_mr(load):
    source = load("emri_small")
    assert "PulseSequenceName" in source and source.ImageType[0] == "ORIGINAL"
    out = compress(source, "j2k", "lossy", 10).dataset
    assert "PulseSequenceName" not in out and "MRAcquisitionType" not in out
    assert "PulseSequenceName" in compress(source, "j2k", "lossless").dataset  # a lossless copy stays as it was


def test_lossless_copy_of_a_lossy_image_stays_marked_lossy(load):
    lossy = compress(load("MR2_UNCR"), "j2k", "lossy", 10).dataset
    again = compress(lossy, "j2k", "lossless").dataset
    assert again.LossyImageCompression == "01"
    assert again.SOPInstanceUID == lossy.SOPInstanceUID
    # a lossy transfer syntax without the attribute counts as lossy too
    baseline = compress(load("color3d_jpeg_baseline"), "jpegls", "lossless").dataset
    assert baseline.LossyImageCompression == "01"


def test_lossless_copy_keeps_identity(load):
    source = load("MR2_UNCR")
    out = compress(source, "htj2k", "lossless").dataset
    assert out.SOPInstanceUID == source.SOPInstanceUID
    assert out.get("LossyImageCompression", "00") == "00"
    assert "SourceImageSequence" not in out
    assert out.PatientName == source.PatientName and out.StudyInstanceUID == source.StudyInstanceUID


def test_source_dataset_is_not_modified():
    source = read_dataset(sample("US1_UNCR"))
    before = copy.deepcopy(source)
    compress(source, "j2k", "lossy", 10)
    assert source == before
    assert source.file_meta == before.file_meta


def test_the_copy_shares_no_element_the_source_could_see_change():
    """Headers are copied without deep-copying every element: elements read before (copied shallowly), unread
    ones (shared raw) and sequences (copied deeply) all stay the source's own when the copy is changed."""
    source = read_dataset(sample("693_UNCR"))
    image_type = list(source.ImageType)  # read: a DataElement now; the rest stays raw until read
    source.ReferencedImageSequence = [Dataset()]
    source.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3"
    before = copy.deepcopy(source)
    out = compress(source, "j2k", "lossy", 10).dataset
    out.ImageType[1] = "CHANGED"
    out.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "9.9.9"
    out.PatientName = "Changed^Name"
    assert out.ImageType[0] == "DERIVED" and source.ImageType[0] != "DERIVED"
    assert list(source.ImageType) == image_type and source.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3"
    assert source == before and "SourceImageSequence" not in source


@pytest.mark.parametrize("codec", ["j2k", "jpegls"])
def test_a_big_endian_palette_keeps_its_colours(codec, load, tmp_path):
    """Palette LUT data read from a big-endian file is written little endian with the copy, not byte-swapped garbage."""
    from pydicom import dcmread
    from pydicom.pixels import apply_color_lut

    path = tmp_path / "out.dcm"
    write_dataset(compress(load("OBXXXX1A_expb"), codec, "lossless").dataset, path)
    back, twin = dcmread(path), load("OBXXXX1A")
    assert back.RedPaletteColorLookupTableData == twin.RedPaletteColorLookupTableData
    assert np.array_equal(apply_color_lut(back.pixel_array, back), apply_color_lut(twin.pixel_array, twin))
    assert load("OBXXXX1A_expb").RedPaletteColorLookupTableData != twin.RedPaletteColorLookupTableData  # source untouched


def test_extended_offset_table_for_large_multi_frame(load):
    source = load("emri_small")
    spec = pixel_spec(source)
    result = compress(source, "htj2k", "lossless")
    frames = list(generate_frames(result.dataset.PixelData, number_of_frames=spec.frames))
    out = compressed_dataset(source, frames, result.codec, spec, result.ratio, bot_limit=1000)
    assert len(out.ExtendedOffsetTableLengths) == 8 * spec.frames
    assert np.array_equal(decode_frame(out, 7), decode_frame(source, 7))


def test_basic_offset_table_is_written(load):
    out = compress(load("emri_small"), "j2k", "lossless").dataset
    bot_length = int.from_bytes(out.PixelData[4:8], "little")
    assert bot_length == 4 * 10


@pytest.mark.parametrize("codec, name", LOSSLESS_CASES)
def test_lossless_output_decodes_exactly_with_another_decoder(codec, name, load, tmp_path):
    source = load(name)
    result = compress(source, codec, "lossless")
    path = tmp_path / "out.dcm"
    write_dataset(result.dataset, path)
    original = decode_all(source)
    if codec in ("j2k", "jpegls"):
        assert np.array_equal(gdcm_pixels(path, tmp_path), original), "GDCM decodes other pixels"
    if codec in ("j2k", "htj2k", "jxl") and pixel_spec(source).photometric != "PALETTE COLOR" or codec == "htj2k":
        spec = pixel_spec(source)
        for index, frame in enumerate(generate_frames(result.dataset.PixelData, number_of_frames=spec.frames)):
            assert np.array_equal(tool_pixels(codec, frame, spec, tmp_path), original[index]), f"frame {index + 1}"


def _normalised(errors: set[str]) -> set[str]:
    """dciodvfy messages without frame numbers and values, so the same defect compares equal."""
    return {re.sub(r"\bframe \d+|\d+", "N", e) for e in errors}


_BASELINE: dict[str, set[str]] = {}
# CT, MR, US RGB; Enhanced MR (no functional groups) and Enhanced CT; 16-bit RGB 2 frames; a lossy JPEG 2000
# original; big-endian palette; synthetic Enhanced CT (functional groups, ORIGINAL), multi-frame, already lossy,
# MONOCHROME1, big endian.
DCIODVFY_FILES = ("MR2_UNCR", "US1_UNCR", "emri_small", "eCT_Supplemental", "SC_rgb_16bit_2frame", "JPEG2000",
                  "OBXXXX1A_expb", "enhanced_ct", "multiframe", "already_lossy", "mono1", "big_endian")


def _dciodvfy_source(name: str, folder) -> Path:
    if name in KINDS:
        return write_kind(name, folder)
    return next(p for p in sample_files() if p.stem == name and p.suffix == ".dcm")


@pytest.mark.parametrize("codec", ["j2k", "htj2k", "jpegls", "jxl"])
@pytest.mark.parametrize("mode", ["lossless", "lossy"])
@pytest.mark.parametrize("name", DCIODVFY_FILES)
def test_dciodvfy_reports_no_new_errors(codec, mode, name, tmp_path):
    source = _dciodvfy_source(name, tmp_path)
    try:
        result = compress(read_dataset(source), codec, mode, 10 if mode == "lossy" else None)
    except UnsupportedError as exc:  # a refusal says what to do instead, and nothing is written
        assert "Use " in str(exc) and not (tmp_path / "out.dcm").exists()
        return
    path = tmp_path / "out.dcm"
    write_dataset(result.dataset, path)
    if name not in _BASELINE:
        _BASELINE[name] = _normalised(dciodvfy_errors(source))
    assert _normalised(dciodvfy_errors(path)) - _BASELINE[name] == set()


@pytest.mark.parametrize("codec", ["j2k", "htj2k", "jpegls", "jxl"])
def test_dcmdump_reads_the_output(codec, load, tmp_path):
    result = compress(load("RG3_UNCR"), codec, "lossy", 10)
    path = tmp_path / "out.dcm"
    write_dataset(result.dataset, path)
    dump = run(require("dcmdump"), "-Un", "+P", "0002,0010", "+P", "0028,2110", path).stdout
    assert result.codec.transfer_syntax in dump
    assert "[01]" in dump


def test_write_is_atomic(load, tmp_path):
    result = compress(load("MR2_UNCR"), "htj2k", "lossless")
    target = tmp_path / "out.dcm"
    target.write_bytes(b"previous content")

    class Boom(Exception):
        pass

    def exploding_save(*args, **kwargs):
        raise Boom

    result.dataset.save_as = exploding_save
    with pytest.raises(Boom):
        write_dataset(result.dataset, target)
    assert target.read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.dcm"]
