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

