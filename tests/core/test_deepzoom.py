import glymur
import numpy as np
import pytest

from core.deepzoom import Codestream, DeepZoom, iter_patches, map_patches
from core.errors import InvalidOptionError
from core.pixels import decode_frame


@pytest.fixture
def cr(load, tmp_path):
    """The RG1 radiograph as a 6-level RPCL codestream, and its pixels."""
    pixels = decode_frame(load("RG1_UNCR"), 0)
    path = tmp_path / "rg1.j2k"
    glymur.Jp2k(str(path), data=pixels, numres=6, prog="RPCL")
    return path, pixels


def test_regions_at_reduced_resolution(cr):
    path, pixels = cr
    source = Codestream(path)
    assert (source.width, source.height, source.levels) == (1841, 1955, 5)
    assert np.array_equal(source.region(0, 100, 300, 200, 400), pixels[100:300, 200:400])
    coarse = source.region(3, 0, source.height, 0, source.width)
    assert coarse.shape == (-(-1955 // 8), -(-1841 // 8))
    with pytest.raises(InvalidOptionError):
        source.region(6, 0, 8, 0, 8)


def test_deepzoom_levels_and_tiles(cr):
    path, pixels = cr
    zoom = DeepZoom(1841, 1955, tile_size=254, overlap=1)
    assert zoom.max_level == 11 and zoom.level_size(11) == (1841, 1955) and zoom.level_size(0) == (1, 1)
    assert zoom.tiles(11) == (8, 8)
    assert 'TileSize="254"' in zoom.dzi() and 'Width="1841"' in zoom.dzi()
    tile = zoom.read(Codestream(path), 11, 1, 2)
    assert np.array_equal(tile, pixels[2 * 254 - 1 : 3 * 254 + 1, 254 - 1 : 2 * 254 + 1])  # full level: exact, with overlap
    small = zoom.read(Codestream(path), 8, 0, 0)  # 1/8: straight from codestream level 3
    assert small.shape == (zoom.level_size(8)[1], zoom.level_size(8)[0])
    tiny = zoom.read(Codestream(path), 2, 0, 0)  # below the lowest codestream level
    assert tiny.shape == (4, 4)
    with pytest.raises(InvalidOptionError, match="outside"):
        zoom.read(Codestream(path), 11, 8, 0)


def test_patches_cover_the_image_and_stitch_back(cr):
    path, pixels = cr
    source = Codestream(path)
    patches = list(iter_patches(source, 100, overlap=10))
    assert patches[0].pixels.shape == (100, 100)
    covered = np.zeros(pixels.shape, bool)
    for p in patches:
        covered[p.y0 : p.y0 + p.pixels.shape[0], p.x0 : p.x0 + p.pixels.shape[1]] = True
        assert np.array_equal(p.pixels, pixels[p.y0 : p.y0 + p.pixels.shape[0], p.x0 : p.x0 + p.pixels.shape[1]])
    assert covered.all()
    means = map_patches(path, lambda a: float(a.mean()), 100, 0, level=0)
    assert means.shape == (20, 19) and means[0, 0] == pytest.approx(pixels[:100, :100].mean())
    stitched = map_patches(path, lambda a: a.astype(float) * 2, 128, overlap=16, level=1)
    assert np.allclose(stitched, source.region(1, 0, source.height, 0, source.width) * 2)
    with pytest.raises(InvalidOptionError):
        list(iter_patches(source, 10, overlap=10))


def test_viewer_tiles_show_the_decoded_pixels(cr):
    """The .dzi names PNG tiles, so what the viewer shows is exactly the rendered tile (JPEG would add its own loss)."""
    import io

    from PIL import Image

    from core.render import encode_image

    path, pixels = cr
    zoom = DeepZoom(1841, 1955)
    assert 'Format="png"' in zoom.dzi()
    tile = (zoom.read(Codestream(path), 11, 1, 2) >> 4).astype(np.uint8)  # 12-bit to 8-bit display values
    shown = np.asarray(Image.open(io.BytesIO(encode_image(tile, zoom.format))))
    assert np.array_equal(shown, tile)
