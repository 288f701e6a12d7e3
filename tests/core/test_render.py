"""Display defaults: the image's own window or VOI LUT, else central percentiles; named presets per modality."""

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi

from core.errors import InvalidOptionError
from core.pixels import decode_frame, read_dataset
from core.render import (
    FULL_RANGE,
    IMAGE_DEFAULT,
    modality_values,
    own_window,
    preset_window,
    to_display,
    window_of,
    window_presets,
)
from core.samples import sample_files
from tests.synthetic import KINDS, make_dataset


def _windowed(values, center, width, invert=False):
    scaled = np.clip((values - (center - width / 2)) / width, 0, 1) * 255
    return ((255 - scaled) if invert else scaled).astype(np.uint8)


def test_an_mr_without_a_window_opens_on_its_central_percentiles():
    ds = make_dataset(**KINDS["u10"])
    assert "WindowCenter" not in ds and own_window(ds) is None
    values = decode_frame(ds, 0).astype(np.float64)
    lo, hi = np.percentile(values, [0.5, 99.5])
    assert window_of(ds, values) == pytest.approx(((lo + hi) / 2, hi - lo))
    shown = to_display(decode_frame(ds, 0), ds)
    assert np.array_equal(shown, _windowed(values, (lo + hi) / 2, hi - lo))
    # not black, not white: about 0.5 % clipped at each end, the body in between
    assert (shown == 0).mean() < 0.02 and (shown == 255).mean() < 0.02 and 60 < shown.mean() < 200


def test_an_mr_with_a_window_opens_on_its_first_pair():
    ds = make_dataset(**KINDS["u10"])
    ds.WindowCenter, ds.WindowWidth = [300, 500], [600, 900]
    assert own_window(ds) == (300, 600)
    values = decode_frame(ds, 0).astype(np.float64)
    assert np.array_equal(to_display(decode_frame(ds, 0), ds), _windowed(values, 300, 600))
    assert preset_window(IMAGE_DEFAULT, ds, values) == (300, 600)


def test_enhanced_ct_window_and_rescale_come_from_its_functional_groups():
    ds = make_dataset(**KINDS["enhanced_ct"])
    ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleIntercept = -1024
    own = Dataset()
    own.WindowCenter, own.WindowWidth = 700, 400
    ds.PerFrameFunctionalGroupsSequence[2].FrameVOILUTSequence = [own]
    stored = decode_frame(ds, 0)
    assert np.array_equal(modality_values(stored, ds), stored.astype(np.float64) - 1024)
    assert own_window(ds, 0) == (40, 400) and own_window(ds, 2) == (700, 400)
    assert np.array_equal(to_display(stored, ds), _windowed(stored.astype(np.float64) - 1024, 40, 400))


def test_a_voi_lut_is_applied_as_it_is():
    path = next(p for p in sample_files() if p.name == "vlut_04.dcm")
    ds = read_dataset(path)
    assert "VOILUTSequence" in ds and own_window(ds) is None
    frame = decode_frame(ds, 0)
    lut = ds.VOILUTSequence[0]
    expected = np.clip(apply_voi(modality_values(frame, ds), ds) / ((1 << lut.LUTDescriptor[2]) - 1), 0, 1) * 255
    assert np.array_equal(to_display(frame, ds), expected.astype(np.uint8))
    assert preset_window(IMAGE_DEFAULT, ds, frame) is None  # the LUT itself, not a window standing in for it


def test_monochrome1_is_inverted():
    ds = make_dataset(**KINDS["mono1"])
    values = decode_frame(ds, 0).astype(np.float64)
    center, width = window_of(ds, values)
    assert np.array_equal(to_display(decode_frame(ds, 0), ds), _windowed(values, center, width, invert=True))


def test_presets_per_modality():
    assert window_presets("CT") == [IMAGE_DEFAULT, "brain", "soft tissue", "lung", "bone", FULL_RANGE]
    assert window_presets("MR") == window_presets("CR") == [IMAGE_DEFAULT, FULL_RANGE]
    ct = make_dataset(**KINDS["s12"])
    values = modality_values(decode_frame(ct, 0), ct)
    assert preset_window("lung", ct, values) == (-600, 1500)
    lo, hi = float(values.min()), float(values.max())
    assert preset_window(FULL_RANGE, ct, values) == ((lo + hi) / 2, hi - lo)
    with pytest.raises(InvalidOptionError, match="lung"):
        preset_window("lung", make_dataset(**KINDS["u10"]), values)


def test_deepzoom_tiles_follow_the_viewers_preset(live_app, tmp_path):
    """The viewer's presets reach the tiles through the .dzi query; an unknown preset is a 400."""
    import io

    import requests
    from PIL import Image

    from tests.conftest import ADMIN
    from tests.synthetic import write

    base, _app = live_app()
    http = requests.Session()
    http.auth = ADMIN
    ct = make_dataset(**{**KINDS["s12"], "rows": 300, "columns": 260})
    with open(write(ct, tmp_path / "ct.dcm"), "rb") as fh:
        assert http.post(f"{base}/api/upload", files={"file": ("ct.dcm", fh)}).status_code == 200
    sop = ct.SOPInstanceUID
    # tile 0_0 of the full-size level: 254 px and 1 px of overlap
    values = modality_values(decode_frame(ct, 0), ct).astype(np.float64)
    corner = values[:255, :255]
    tiles = {}
    for preset in (None, IMAGE_DEFAULT, "lung", "soft tissue", FULL_RANGE):
        query = "" if preset is None else "?" + requests.compat.urlencode({"preset": preset})
        r = http.get(f"{base}/deepzoom/{sop}_files/9/0_0.png{query}")
        assert r.status_code == 200, r.text
        tiles[preset] = np.asarray(Image.open(io.BytesIO(r.content)))
    assert np.array_equal(tiles[None], tiles[IMAGE_DEFAULT])
    assert np.array_equal(tiles["lung"], _windowed(corner, -600, 1500))  # level 9 of a 300-px image is full size
    # full range over the image's coarsest level (a very large image is never read whole): hardly anything clips
    full = tiles[FULL_RANGE]
    assert (full == 0).mean() < 0.01 and (full == 255).mean() < 0.01 and not np.array_equal(full, tiles["lung"])
    assert not np.array_equal(tiles["lung"], tiles["soft tissue"])
    bad = http.get(f"{base}/deepzoom/{sop}_files/9/0_0.png?preset=lung%20of%20an%20MR")
    assert bad.status_code == 400 and "lung of an MR" in bad.json()["error"]


@pytest.mark.parametrize("name", ["693_UNCR", "MR2_UNCR", "US1_UNCR", "RG1_UNCR"])
def test_a_thumbnail_averages_the_values_down_once_and_looks_like_the_full_size_rendering(name):
    """Windowed at thumbnail size from values averaged f x f: the same picture within a few grey levels."""
    import io

    from PIL import Image

    from core.pixels import pixel_spec
    from core.render import display_frame, reduce_values, shrink_png, thumbnail_png
    from core.samples import sample

    ds = read_dataset(sample(name))
    spec, middle = pixel_spec(ds), pixel_spec(ds).frames // 2
    frame = decode_frame(ds, middle)
    reduced = reduce_values(frame, ds, 256)
    factor = max(spec.rows, spec.columns) // 256
    assert reduced.dtype == frame.dtype and reduced.shape[:2] == (spec.rows // factor, spec.columns // factor)
    assert reduced[0, 0].tolist() == np.rint(frame[:factor, :factor].mean(axis=(0, 1))).astype(frame.dtype).tolist()
    data = thumbnail_png(ds, 256, frame)
    assert data == thumbnail_png(ds, 256)  # the frame given is the one it would decode
    ours = np.asarray(Image.open(io.BytesIO(data))).astype(int)
    full = np.asarray(Image.open(io.BytesIO(shrink_png(display_frame(ds, middle), 256)))).astype(int)
    assert ours.shape == full.shape and max(ours.shape[:2]) == 256
    assert np.abs(ours - full).mean() < 3


def test_palette_indices_are_never_averaged_for_a_thumbnail():
    from core.render import reduce_values

    ds = make_dataset(**KINDS["u12_odd"])
    ds.Rows, ds.Columns, ds.PhotometricInterpretation = 600, 600, "PALETTE COLOR"
    values = np.zeros((600, 600), np.uint16)
    values[::2] = 7  # averaging would invent index 3 or 4, another colour
    assert reduce_values(values, ds, 256) is values


@pytest.mark.parametrize("shape", [(1, 1), (61, 47), (512, 512), (3, 5, 3), (67, 93, 3)])
def test_png_made_per_request_decodes_to_its_pixels(shape):
    """The numpy-filtered PNG: Pillow (libpng's rules) reads back every byte, odd sizes and colour included."""
    import io

    from PIL import Image

    from core.render import encode_image

    pixels = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
    pixels[: shape[0] // 2] //= 16  # runs and noise: both kinds of rows
    data = encode_image(pixels, "png")
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
