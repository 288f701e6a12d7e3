"""JPEG-LS frames whose stream is larger than their pixels (tiny, noisy): pyjpegls's buffer is too small for them."""

import numpy as np
import pytest

from core.codecs import jpegls
from core.errors import UnsupportedError
from core.pixels import pixel_spec
from tests.synthetic import make_dataset


def _noisy(bits_allocated: int, bits_stored: int, signed: bool = False, side: int = 8):
    spec = pixel_spec(make_dataset(rows=side, columns=side, bits_allocated=bits_allocated, bits_stored=bits_stored, signed=signed))
    low, high = spec.value_range
    return np.random.default_rng(1).integers(low, high + 1, (side, side)).astype(spec.dtype), spec


@pytest.mark.parametrize("bits", [(8, 8, False), (16, 16, False), (16, 16, True)])
def test_tiny_noisy_frame_is_lossless_with_precision_of_bits_stored(bits):
    frame, spec = _noisy(*bits)
    data = jpegls.encode_at(frame, spec, None)
    assert data[:2] == b"\xff\xd8" and b"\xff\xe8" not in data[:4]  # no SPIFF header in a DICOM fragment
    sof = data.index(b"\xff\xf7")
    assert data[sof + 4] == spec.bits_stored
    assert np.array_equal(jpegls.decode(data, spec), frame)
    # pydicom's own JPEG-LS decoder (pyjpegls) agrees
    import jpeg_ls

    assert np.array_equal(jpeg_ls.decode(np.frombuffer(data, np.uint8)).astype(np.int64) & spec.peak,
                          frame.astype(np.int64) & spec.peak)


def test_tiny_noisy_frame_of_12_bits_is_refused_not_mislabelled():
    frame, spec = _noisy(16, 12, side=2)
    with pytest.raises(UnsupportedError, match="larger than the pixels"):
        jpegls.encode_at(frame, spec, None)
