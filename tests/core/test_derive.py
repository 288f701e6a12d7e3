"""The written DICOM: lossy marking (PS3.3 C.7.6.1.1.5), conformance and independent decoders."""

import copy

import numpy as np
import pytest
from pydicom.encaps import generate_frames

from core.compress import compress
from core.derive import compressed_dataset, is_marked_lossy
from core.files import write_dataset
from core.pixels import decode_all, decode_frame, pixel_spec, read_dataset
from core.samples import sample
from tests.checkers import dciodvfy_errors, gdcm_pixels, require, run, tool_pixels

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
    assert second.SourceImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID


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


@pytest.mark.parametrize("codec", ["j2k", "htj2k", "jpegls", "jxl"])
@pytest.mark.parametrize("mode", ["lossless", "lossy"])
@pytest.mark.parametrize("name", ["MR2_UNCR", "US1_UNCR"])
def test_dciodvfy_reports_no_new_errors(codec, mode, name, tmp_path):
    source = sample(name)
    result = compress(read_dataset(source), codec, mode, 10 if mode == "lossy" else None)
    path = tmp_path / "out.dcm"
    write_dataset(result.dataset, path)
    assert dciodvfy_errors(path) <= dciodvfy_errors(source)


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
