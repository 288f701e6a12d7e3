"""JPEG XL decoding (core.codecs.jxl): the pixels the file holds, as libjxl's reference decoder djxl writes them.

libjxl's own 8-bit output adds an ordered dither; decoded that way, an 8-bit CR at 10:1 differed from djxl on 7.6 %
of its pixels and its PSNR by 0.89 dB.  These tests compare every pixel with djxl (Debian's libjxl 0.7, which rounds).
"""

import numpy as np
import pytest
from pydicom.encaps import generate_frames

from core.compress import compress
from core.errors import CodecError
from core.codecs.jxl import decode, reconstruct
from core.metrics import compare
from core.pixels import PixelSpec, decode_all, pixel_spec
from tests.checkers import read_pnm, require, run
from tests.synthetic import KINDS, make_dataset

REAL = {"JPGLosslessP14SV1_1s_1f_8b": 10, "US1_UNCR": 10}  # pydicom-data: 8-bit CR (the image that differed), RGB US


def _djxl(codestream: bytes, samples: int, tmp_path) -> np.ndarray:
    source, out = tmp_path / "frame.jxl", tmp_path / ("frame.ppm" if samples == 3 else "frame.pgm")
    source.write_bytes(codestream)
    run(require("djxl"), source, out, "--quiet")
    return read_pnm(out)


@pytest.mark.parametrize("source, ratio", [*REAL.items(), ("u8_odd", 5), ("u8_odd", 20), ("rgb", 10), ("ybr_full", 20)])
def test_8_bit_lossy_decodes_to_the_pixels_djxl_writes(source, ratio, load, tmp_path):
    ds = load(source) if source in REAL else make_dataset(**KINDS[source])
    result = compress(ds, "jxl", "lossy", ratio)
    spec = pixel_spec(result.dataset)
    assert spec.bits_allocated == 8 and result.codec.name == "jxl" and result.codec.lossy
    original = decode_all(ds).reshape((spec.frames, *spec.shape))
    for index, codestream in enumerate(generate_frames(result.dataset.PixelData, number_of_frames=spec.frames)):
        ours = result.codec.decode(codestream, spec)
        theirs = _djxl(codestream, spec.samples, tmp_path).reshape(spec.shape)
        assert np.array_equal(ours, theirs), f"frame {index + 1}: {np.count_nonzero(ours != theirs)} pixels differ from djxl"
        assert compare(original[index:index + 1], ours[None], 8).psnr == compare(original[index:index + 1], theirs[None], 8).psnr


@pytest.mark.parametrize("kind", ["u8_odd", "u10", "u12_odd", "u16", "rgb"])
def test_lossless_is_bit_exact_at_every_depth(kind):
    ds = make_dataset(**KINDS[kind])
    result = compress(ds, "jxl", "lossless")
    spec = pixel_spec(result.dataset)
    frames = [reconstruct(cs) for cs in generate_frames(result.dataset.PixelData, number_of_frames=spec.frames)]
    assert all(f.dtype == spec.dtype for f in frames)
    assert np.array_equal(np.stack(frames).reshape(decode_all(ds).shape), decode_all(ds))


def test_a_damaged_codestream_is_refused_with_a_message():
    codestream = next(generate_frames(compress(make_dataset(**KINDS["u8_odd"]), "jxl", "lossy", 10).dataset.PixelData,
                                      number_of_frames=1))
    for damaged in (codestream[: len(codestream) // 2], b"\xff\x0a" + b"\0" * 40, b"not JPEG XL at all"):
        with pytest.raises(CodecError, match="JPEG XL"):
            reconstruct(damaged)


def test_a_codestream_that_contradicts_the_dicom_header_is_refused(tmp_path):
    """A JPEG XL original whose codestream is not the image its header describes (Rows and Columns swapped: the same
    pixel count; a 16-bit codestream under Bits Allocated 8) was drawn scrambled or wrapped and copied "losslessly"
    that way; it is refused with a message, at upload too."""
    from dataclasses import replace

    from core.ingest import ingest
    from core.store import Store
    from tests.synthetic import write

    ds = make_dataset(rows=40, columns=30, bits_allocated=8, bits_stored=8, modality="OT")
    copy = compress(ds, "jxl", "lossless").dataset
    codestream, spec = next(generate_frames(copy.PixelData, number_of_frames=1)), pixel_spec(copy)
    assert np.array_equal(decode(codestream, spec), decode_all(ds)[0])
    for wrong in (replace(spec, rows=30, columns=40), replace(spec, samples=3, photometric="RGB")):
        with pytest.raises(CodecError, match="JPEG XL codestream holds a 40 × 30 image"):
            decode(codestream, wrong)
    wide = compress(make_dataset(**KINDS["u16"]), "jxl", "lossless").dataset
    with pytest.raises(CodecError, match="of 16-bit samples"):
        decode(next(generate_frames(wide.PixelData, number_of_frames=1)), replace(pixel_spec(wide), bits_allocated=8, bits_stored=8))

    copy.Rows, copy.Columns = 30, 40
    wide.BitsAllocated = wide.BitsStored = 8
    wide.HighBit = 7
    store = Store(tmp_path / "data")
    results = list(ingest(store, [write(copy, tmp_path / "in" / "swapped.dcm"), write(wide, tmp_path / "in" / "wide.dcm")]))
    assert [r.status for r in results] == ["rejected", "rejected"], results
    assert all("JPEG XL codestream" in r.reason for r in results) and store.query("SELECT * FROM instances") == []


def _header_only(columns: int, rows: int) -> bytes:
    """A JPEG XL codestream's first bytes: signature, a SizeHeader of 30-bit sizes, default image metadata."""
    bits: list[int] = []
    for value, width in ((0, 1), (3, 2), (rows - 1, 30), (0, 3), (3, 2), (columns - 1, 30), (1, 1)):
        bits += [(value >> i) & 1 for i in range(width)]
    bits += [0] * (-len(bits) % 8)
    return b"\xff\x0a" + bytes(sum(b << i for i, b in enumerate(bits[k:k + 8])) for k in range(0, len(bits), 8)) + bytes(64)


def test_a_codestream_declaring_a_huge_image_is_refused_before_anything_is_allocated():
    """A few bytes declaring 100,000 x 100,000 colour pixels under a 16 x 16 header: refused from the codestream's
    header (it was a MemoryError for 112 GiB of floats: a 500 at upload); the sizes it declares are named."""
    spec = PixelSpec(rows=16, columns=16, samples=1, bits_allocated=8, bits_stored=8, signed=False, photometric="MONOCHROME2")
    with pytest.raises(CodecError, match="holds a 100000 × 100000 × 3 image"):
        decode(_header_only(100_000, 100_000), spec)
