"""Very large images, exercised with the size limit lowered so the real CR files count as large."""

import numpy as np
import pytest
import tifffile
from pydicom import dcmread

from core.archive import Wanted, codestream_path, make_artifact
from core.bigimage import DicomTiles, TiffTiles, is_large
from core.deepzoom import Codestream, DeepZoom
from core.errors import UnsupportedError
from core.ingest import ingest
from core.pixels import decode_frame, read_dataset
from core.samples import sample, write_series
from core.store import Store


@pytest.fixture(autouse=True)
def large_limit(monkeypatch):
    monkeypatch.setenv("RADPRESS_LARGE_PIXELS", "1000000")


def test_threshold():
    assert is_large(1760, 1760) and not is_large(512, 512)


def test_large_dicom_is_tiled_without_whole_decoding(tmp_path):
    store = Store(tmp_path / "data")
    [result] = list(ingest(store, write_series("RG3_UNCR", 1, tmp_path / "in")))
    assert result.status == "stored"
    original = read_dataset(store.artifact(result.sop_uid, "original").path)
    with pytest.raises(UnsupportedError, match="too large to decode whole"):
        decode_frame(original, 0)
    tiles = DicomTiles(store.artifact(result.sop_uid, "original").path, original)
    truth = dcmread(sample("RG3_UNCR")).pixel_array  # pydicom itself, outside our size guard
    assert np.array_equal(tiles.read(100, 300, 50, 400), truth[100:300, 50:400])
    lossless = make_artifact(store, Wanted(result.sop_uid, "lossless", 0, "j2k"))
    assert read_dataset(lossless.path).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    path, _ = codestream_path(store, result.sop_uid)
    source = Codestream(path)
    assert np.array_equal(source.region(0, 0, 1760, 0, 1760), truth)  # bit-exact, read back through OpenJPEG
    assert source.jp2.codestream.segment[1].xtsiz == 1024  # tiled
    lossy = make_artifact(store, Wanted(result.sop_uid, "lossy", 10, "j2k"))
    lossy_ds = read_dataset(lossy.path)
    assert lossy_ds.LossyImageCompression == "01" and lossy_ds.SOPInstanceUID != result.sop_uid
    assert 7 < lossy.achieved_ratio < 13
    thumb = make_artifact(store, Wanted(result.sop_uid, "thumbnail", 0, "png"))
    assert thumb.path.read_bytes().startswith(b"\x89PNG")
    tile = DeepZoom(1760, 1760).read(source, 5, 0, 0)
    assert tile.shape == (28, 28)  # level 5 of 11: 1/64 of 1760 px


@pytest.mark.parametrize("tiled", [True, False])
def test_tiff_is_ingested_tile_by_tile(tmp_path, tiled):
    truth = dcmread(sample("RG3_UNCR")).pixel_array  # pydicom itself, outside our size guard
    tif = tmp_path / "slide.tif"
    tifffile.imwrite(tif, truth, tile=(256, 256) if tiled else None, compression="zlib" if tiled else None)
    source = TiffTiles(tif)
    assert np.array_equal(source.read(300, 700, 250, 900), truth[300:700, 250:900])
    source.close()
    store = Store(tmp_path / "data")
    [result] = list(ingest(store, [tif]))
    assert result.status == "stored"
    row = store.instance(result.sop_uid)
    assert (row["rows"], row["columns"], row["modality"]) == (1760, 1760, "OT")
    path, _ = codestream_path(store, result.sop_uid)
    assert np.array_equal(Codestream(path).region(0, 0, 1760, 0, 1760), truth)
    lossy = make_artifact(store, Wanted(result.sop_uid, "lossy", 20, "j2k"))
    assert read_dataset(lossy.path).LossyImageCompression == "01"


def test_bad_tiff_is_rejected(tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    [result] = list(ingest(Store(tmp_path / "data"), [bad]))
    assert result.status == "rejected" and result.reason.startswith("unsupported")


def _checker_tiles(size: int, tile: int):
    """Tiles of a size x size 8-bit image of large squares: structure that compresses to almost nothing."""
    for y in range(0, size, tile):
        for x in range(0, size, tile):
            yy, xx = np.mgrid[y : y + tile, x : x + tile]
            yield (((yy // 1000) + (xx // 1000)) % 2 * 200 + 20).astype(np.uint8)


def test_image_over_pillows_real_limit(tmp_path, monkeypatch):
    """13 500 x 13 500 = 182 megapixels, more than Pillow opens, as a small deflated tiled TIFF."""
    from PIL import Image

    monkeypatch.delenv("RADPRESS_LARGE_PIXELS")
    size = 13_500
    assert size * size > Image.MAX_IMAGE_PIXELS
    tif = tmp_path / "huge.tif"
    tifffile.imwrite(tif, _checker_tiles(size, 512), shape=(size, size), dtype=np.uint8, tile=(512, 512), compression="zlib")
    assert tif.stat().st_size < 20_000_000
    store = Store(tmp_path / "data")
    [result] = list(ingest(store, [tif]))
    assert result.status == "stored"
    original = read_dataset(store.artifact(result.sop_uid, "original").path)
    with pytest.raises(UnsupportedError, match="too large to decode whole"):
        decode_frame(original, 0)
    path, _ = codestream_path(store, result.sop_uid)
    source = Codestream(path)
    assert (source.width, source.height) == (size, size)
    region = source.region(0, 990, 1010, 990, 1010)
    assert region[0, 0] == 20 and region[-1, 0] == 220 and region[-1, -1] == 20  # square corners, bit-exact
    zoom = DeepZoom(size, size)
    assert zoom.read(source, zoom.max_level - 6, 0, 0).shape == (211, 211)
    thumb = make_artifact(store, Wanted(result.sop_uid, "thumbnail", 0, "png"))
    assert Image.open(thumb.path).size == (256, 256)


@pytest.mark.parametrize("ratio", [None, 10], ids=["lossless", "lossy"])
def test_pyramid_declares_bits_stored_and_drops_garbage_high_bits(tmp_path, ratio):
    """12-bit data in 16-bit words with overlay bits above bit 11: the pyramid holds the 12-bit values only."""
    from core.bigimage import encode_pyramid
    from core.codecs.codestream import parse_main_header
    from tests.synthetic import make_dataset, write

    path = write(make_dataset(rows=1100, columns=1000, bits_stored=12, dirty_high_bits=True, modality="CR"),
                 tmp_path / "dirty.dcm")
    ds = read_dataset(path)
    raw = np.frombuffer(ds.PixelData, "<u2").reshape(1100, 1000)
    assert raw.max() > 4095  # the garbage is really there
    truth = raw & 0x0FFF
    out = encode_pyramid(DicomTiles(path, ds), tmp_path / "pyramid.j2k", ratio, tile=512)
    info = parse_main_header(out.read_bytes()[:4096])
    assert (info.precision, info.signed, info.tiles) == (12, False, 6)
    decoded = Codestream(out).region(0, 0, 1100, 0, 1000)
    if ratio is None:
        assert np.array_equal(decoded, truth)
    else:
        assert decoded.max() <= 4095
        assert np.abs(decoded.astype(np.int64) - truth).mean() < 40  # close to the 12-bit values, not the garbage
        assert 9 <= 1100 * 1000 * 2 / out.stat().st_size <= 11  # the ratio counts Bits Allocated


def test_twelve_bit_tiff_keeps_its_bits_stored(tmp_path):
    """A packed 12-bit TIFF: the pyramid declares 12 bits, the header says Bits Stored 12, the values come back exact."""
    from core.bigimage import encode_pyramid, tiff_header
    from core.codecs.codestream import parse_main_header

    values = (np.arange(300 * 220).reshape(300, 220) * 7 % 4096).astype(np.uint16)
    tif = tmp_path / "twelve.tif"
    tifffile.imwrite(tif, values, bitspersample=12)
    source = TiffTiles(tif)
    out = encode_pyramid(source, tmp_path / "twelve.j2k", tile=128)
    header = tiff_header(source, "twelve")
    source.close()
    assert parse_main_header(out.read_bytes()[:4096]).precision == 12
    assert (header.BitsAllocated, header.BitsStored, header.HighBit) == (16, 12, 11)
    assert np.array_equal(Codestream(out).region(0, 0, 300, 0, 220), values)
