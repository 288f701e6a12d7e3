"""Reduced-resolution previews (core.preview, and the codestream reader behind /preview and DeepZoom)
show what the codestream decodes to: level 0 is the codec registry's frame, level 1 OpenJPEG's reduced decode."""

import numpy as np
import pytest
from pydicom.encaps import generate_frames

from core.codecs import codec_for_uid, get_codec
from core.compress import compress
from core.deepzoom import Codestream
from core.errors import InvalidOptionError, UnsupportedError
from core.pixels import decode_frame, pixel_spec
from core.preview import decode_level, supports_levels
from tests.checkers import read_pnm, require, run
from tests.synthetic import KINDS, make_dataset


@pytest.mark.parametrize("codec", ["j2k", "htj2k"])
@pytest.mark.parametrize("kind", ["u12_odd", "s12", "u16", "rgb", "multiframe"])
def test_previews_show_what_the_codestream_decodes_to(kind, codec, tmp_path):
    """Level 0 of the preview/DeepZoom reader is the registry's frame; level 1 is OpenJPEG's reduced decode."""
    ds = compress(make_dataset(**KINDS[kind]), codec, "lossy", 10).dataset
    spec = pixel_spec(ds)
    cs = next(generate_frames(ds.PixelData, number_of_frames=spec.frames))
    app = codec_for_uid(ds.file_meta.TransferSyntaxUID).decode(cs, spec)
    file = tmp_path / "frame.j2k"
    file.write_bytes(cs)
    reader = Codestream(file)
    assert np.array_equal(reader.region(0, 0, spec.rows, 0, spec.columns).reshape(spec.shape), app)
    assert np.array_equal(decode_level(codec, cs, spec, 0), app)
    half = decode_level(codec, cs, spec, 1)
    assert half.shape[:2] == (-(-spec.rows // 2), -(-spec.columns // 2))
    assert np.array_equal(reader.region(1, 0, spec.rows, 0, spec.columns).reshape(half.shape), half)
    if not spec.signed:
        out = tmp_path / ("half.ppm" if spec.samples == 3 else "half.pgm")
        run(require("opj_decompress"), "-i", file, "-o", out, "-r", "1", "-quiet")
        assert np.abs(read_pnm(out).astype(np.int64) - half).max() <= 1


def test_levels_are_validated():
    ds = make_dataset(**KINDS["u12_odd"])
    spec = pixel_spec(ds)
    frame = decode_frame(ds, 0)
    with pytest.raises(InvalidOptionError, match="negative"):
        decode_level("j2k", get_codec("j2k", False).encode(frame, spec), spec, -1)
    assert not supports_levels("jpegls")
    with pytest.raises(UnsupportedError, match="no resolution levels"):
        decode_level("jpegls", get_codec("jpegls", False).encode(frame, spec), spec, 1)



# -- what /preview shows: display_pixels and the route --------------------------------------------------------------
GREY_KINDS = [k for k, v in KINDS.items() if v.get("samples", 1) == 1]


def _voi_lut_dataset():
    """A CR whose own display is a VOI LUT (no Window Center/Width): mapped per value through the table."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = make_dataset(**KINDS["u12_odd"])
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.LUTData = [int(v) for v in (np.sqrt(np.arange(4096) / 4095) * 4095)]
    ds.VOILUTSequence = Sequence([item])
    return ds


@pytest.mark.parametrize("kind", GREY_KINDS)
def test_display_pixels_equal_to_display_value_for_value(kind):
    """The lookup table gives the very picture of core.render.to_display: own window, percentiles, rescale,
    MONOCHROME1, Enhanced functional groups, every frame, and an explicit window."""
    from core.preview import display_pixels
    from core.render import to_display

    ds = make_dataset(**KINDS[kind])
    for index in range(pixel_spec(ds).frames):
        frame = decode_frame(ds, index)
        assert np.array_equal(display_pixels(frame, ds, index), to_display(frame, ds, None, index))
        assert np.array_equal(display_pixels(frame, ds, index, (300.0, 900.0)), to_display(frame, ds, (300.0, 900.0), index))
    ds.WindowCenter, ds.WindowWidth = 1000, 1500
    frame = decode_frame(ds, 0)
    assert np.array_equal(display_pixels(frame, ds), to_display(frame, ds))


@pytest.mark.parametrize("name", ["693_UNCR", "MR2_UNCR", "RG1_UNCR", "JPEG-LL", "emri_small"])
def test_display_pixels_on_real_images_and_a_voi_lut(name, load):
    from core.preview import display_pixels
    from core.render import to_display

    for ds in (load(name), _voi_lut_dataset()):
        frame = decode_frame(ds, 0)
        shown = display_pixels(frame, ds)
        assert shown.dtype == np.uint8 and np.array_equal(shown, to_display(frame, ds))
        assert len(np.unique(shown)) > 10  # a real picture, not a flat one


def test_display_pixels_fall_back_for_colour_and_wide_ranges():
    from core.preview import display_pixels
    from core.render import to_display

    ds = make_dataset(**KINDS["rgb"])
    frame = decode_frame(ds, 0)
    assert np.array_equal(display_pixels(frame, ds), to_display(frame, ds))
    wide = make_dataset(**KINDS["u16"])
    frame = decode_frame(wide, 0).astype(np.uint16)
    frame[0, 0], frame[0, 1] = 0, 65535  # 65536 values: to_display itself
    assert np.array_equal(display_pixels(frame, wide), to_display(frame, wide))


def _png(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    assert data.startswith(b"\x89PNG")
    return np.asarray(Image.open(io.BytesIO(data)))


def test_preview_route_shows_what_the_file_decodes_to(live_app, tmp_path):
    """Full size, original and lossless: the original's decoded frame in its window, without a codestream made
    first; a lower level and the lossy copy still come from the codestream; bad input is a 400."""
    import requests

    from core.pixels import read_dataset
    from core.render import to_display
    from tests.conftest import ADMIN
    from tests.synthetic import write

    base, app = live_app()
    store = app.server.extensions["radpress"]["store"]
    http = requests.Session()
    http.auth = ADMIN
    for kind in ("s12", "mono1", "enhanced_ct", "big_endian", "rgb"):
        path = write(make_dataset(**KINDS[kind]), tmp_path / f"{kind}.dcm")
        with open(path, "rb") as fh:
            [result] = http.post(f"{base}/api/upload", files={"file": (path.name, fh)}).json()["results"]
        sop = result["sop_uid"]
        ds = read_dataset(path)
        spec = pixel_spec(ds)
        for frame in range(spec.frames):
            for variant in ("original", "lossless"):
                response = http.get(f"{base}/preview/{sop}", params={"variant": variant, "frame": frame + 1})
                assert response.status_code == 200 and "X-Lossy-Compression" not in response.headers
                assert np.array_equal(_png(response.content), to_display(decode_frame(ds, frame), ds, None, frame)), kind
        checksum = store.artifact(sop, "original").checksum
        assert not list((store.root / "cache" / "codestreams").glob(f"{checksum}-*"))  # no codestream made for these
        half = http.get(f"{base}/preview/{sop}", params={"level": 1})
        assert half.status_code == 200 and _png(half.content).shape[:2] == (-(-spec.rows // 2), -(-spec.columns // 2))
        for bad in ({"frame": spec.frames + 1}, {"frame": 0}, {"variant": "sharpened"}, {"level": -1}, {"level": "x"}):
            answer = http.get(f"{base}/preview/{sop}", params=bad)
            assert answer.status_code == 400 and answer.json()["error"], (kind, bad)
    lossy = http.get(f"{base}/preview/{sop}", params={"variant": "lossy"})
    assert lossy.status_code == 200 and "X-Lossy-Compression" in lossy.headers
    assert lossy.headers["ETag"] != http.get(f"{base}/preview/{sop}").headers["ETag"]
