import numpy as np
import pytest

from core.codecs import get_codec
from core.compress import compress
from core.errors import CodecError, NoPixelDataError, NotDicomError, RadPressError, TruncatedError, UnsupportedError
from core.pixels import PixelSpec, clip_to_stored, decode_all, decode_frame, pixel_spec, read_dataset, stored_values
from core.samples import pydicom_test_dir, sample, sample_files
from tests.reference import params


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_every_sample_file_decodes_or_raises_a_typed_error(path):
    try:
        ds = read_dataset(path)
        spec = pixel_spec(ds)
        last = decode_frame(ds, spec.frames - 1)
    except RadPressError as exc:
        assert str(exc).strip(), "typed errors carry a message"
        return
    if spec.bits_allocated != 1:
        assert last.shape == spec.shape
    assert last.dtype.isnative


@pytest.mark.parametrize("ref", params())
def test_reference_files_decode_as_expected(ref, load):
    ds = load(ref.name)
    spec = pixel_spec(ds)
    assert spec.frames == ref.frames
    assert spec.photometric == ref.photometric
    frame = decode_frame(ds, ref.frames - 1)
    assert frame.shape == ref.shape and frame.dtype == np.dtype(ref.dtype)
    if ref.same_pixels_as:
        assert np.array_equal(decode_all(ds), decode_all(load(ref.same_pixels_as)))


def test_a_frame_decodes_without_decoding_the_others(load, tmp_path):
    """Corrupting frame 1's codestream leaves frame 10 readable: frames are decoded one by one."""
    result = compress(load("emri_small"), "htj2k", "lossless")
    ds = result.dataset
    from pydicom.encaps import encapsulate, generate_frames

    frames = list(generate_frames(ds.PixelData, number_of_frames=10))
    frames[0] = b"\xff\x4f" + b"\x00" * 40
    ds.PixelData = encapsulate(frames, has_bot=True)
    assert np.array_equal(decode_frame(ds, 9), decode_frame(load("emri_small"), 9))
    with pytest.raises(CodecError):
        decode_frame(ds, 0)


def test_jpeg_xl_frames_decode_through_the_registry(load):
    ds = compress(load("US1_UNCR"), "jxl", "lossless").dataset
    assert not get_codec("jxl", False).decodable_by_pydicom
    assert np.array_equal(decode_frame(ds, 0), decode_frame(load("US1_UNCR"), 0))


def test_frame_index_out_of_range(load):
    with pytest.raises(UnsupportedError, match="has 10 frame"):
        decode_frame(load("emri_small"), 10)


def test_truncated_native_pixel_data():
    with pytest.raises(TruncatedError, match="cut short"):
        read_dataset(pydicom_test_dir() / "MR_truncated.dcm")


def test_file_cut_in_the_middle(tmp_path):
    data = sample("MR2_UNCR").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedError):
        read_dataset(cut)


def test_not_dicom(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    with pytest.raises(NotDicomError, match="not a DICOM file"):
        read_dataset(bogus)


def test_no_pixel_data():
    with pytest.raises(NoPixelDataError, match="Pixel Data"):
        pixel_spec(read_dataset(pydicom_test_dir() / "rtplan.dcm"))


def test_missing_transfer_syntax_is_inferred():
    ds = read_dataset(pydicom_test_dir() / "no_meta_group_length.dcm", pixels=False)
    assert "TransferSyntaxUID" in ds.file_meta


def test_stored_values_drop_bits_above_bits_stored():
    """12 of 16 bits: overlay garbage above bit 11 goes; signed values are sign-extended from bit 11."""
    unsigned = PixelSpec(1, 3, 1, 16, 12, False, "MONOCHROME2")
    raw = np.array([[0xF123, 0x0FFF, 0x1000]], np.uint16)
    assert stored_values(raw, unsigned).tolist() == [[0x123, 0xFFF, 0]]
    signed = PixelSpec(1, 3, 1, 16, 12, True, "MONOCHROME2")
    patterns = np.array([[0x0800, 0x07FF, 0xFFFF]], np.uint16).view(np.int16)
    assert stored_values(patterns, signed).tolist() == [[-2048, 2047, -1]]
    full = PixelSpec(1, 3, 1, 16, 16, True, "MONOCHROME2")
    assert stored_values(patterns, full) is patterns  # nothing above Bits Stored: untouched


def test_decoded_values_are_clamped_to_bits_stored():
    spec = PixelSpec(1, 4, 1, 16, 10, True, "MONOCHROME2")
    assert spec.value_range == (-512, 511)
    overshoot = np.array([[-600, -512, 511, 700]], np.int32)
    clipped = clip_to_stored(overshoot, spec)
    assert clipped.tolist() == [[-512, -512, 511, 511]] and clipped.dtype == np.int16



@pytest.mark.parametrize("codec", ["j2k", "htj2k", "jpegls"])
def test_a_frame_that_is_not_the_image_the_header_describes_is_refused(codec, tmp_path):
    """A compressed original whose frame is another image than Rows, Columns, Samples per Pixel and Bits Allocated
    say (Rows and Columns swapped keep the pixel count; a 16-bit codestream under Bits Allocated 8 was wrapped):
    decoded it was drawn scrambled and copied "losslessly" so; refused with a message, at upload too."""
    from core.ingest import ingest
    from core.store import Store
    from tests.synthetic import KINDS, make_dataset, write

    source = make_dataset(rows=40, columns=30, bits_allocated=8, bits_stored=8, modality="OT")
    swapped = compress(source, codec, "lossless").dataset
    assert np.array_equal(decode_frame(swapped, 0), decode_all(source)[0])
    swapped.Rows, swapped.Columns = 30, 40
    with pytest.raises(CodecError, match=r"holds a 40 × 30 image of 1 sample\(s\) of 8 bits"):
        decode_frame(swapped, 0)
    wide = compress(make_dataset(**KINDS["u16"]), codec, "lossless").dataset
    wide.BitsAllocated, wide.BitsStored, wide.HighBit = 8, 8, 7
    with pytest.raises(CodecError, match="of 16 bits"):
        decode_frame(wide, 0)
    store = Store(tmp_path / "data")
    results = list(ingest(store, [write(swapped, tmp_path / "in" / "swapped.dcm"), write(wide, tmp_path / "in" / "wide.dcm")]))
    assert [r.status for r in results] == ["rejected", "rejected"] and all("one of them is wrong" in r.reason for r in results)


def test_a_frame_header_that_cannot_be_read_is_left_to_the_decoder():
    """A JPEG 2000 COD naming progression order 9 (there are 5): the header check does not fail with IndexError
    (an upload was refused as "An element cannot be read: tuple index out of range"); the decoder says what it can."""
    from pydicom.encaps import encapsulate, generate_frames

    from tests.synthetic import make_dataset

    ds = compress(make_dataset(rows=40, columns=30, bits_allocated=8, bits_stored=8, modality="OT"), "j2k", "lossless").dataset
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    frame[frame.find(b"\xff\x52") + 5] = 9
    ds.PixelData = encapsulate([bytes(frame)])
    try:
        decoded = decode_frame(ds, 0)
    except RadPressError:
        return
    assert decoded.shape == (40, 30)


def test_a_jp2_wrapped_frame_is_checked_too(tmp_path):
    """A JPEG 2000 frame in a JP2 file's boxes (not what DICOM asks for, but its decoders read it), 40 x 30 under
    Rows 30, Columns 40: refused like a bare codestream, not drawn scrambled."""
    from pydicom.encaps import encapsulate

    from core.codecs.openjpeg import load_glymur
    from tests.synthetic import make_dataset

    image = (np.arange(40 * 30) % 251).astype(np.uint8).reshape(40, 30)
    load_glymur().Jp2k(str(tmp_path / "frame.jp2"), data=image, numres=3)
    ds = make_dataset(rows=40, columns=30, bits_allocated=8, bits_stored=8, modality="OT")
    ds.PixelData = encapsulate([(tmp_path / "frame.jp2").read_bytes()])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
    assert np.array_equal(decode_frame(ds, 0), image)
    ds.Rows, ds.Columns = 30, 40
    with pytest.raises(CodecError, match="holds a 40 × 30 image"):
        decode_frame(ds, 0)
