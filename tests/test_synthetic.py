"""The generated inputs are what they claim: pydicom reads back the values and attributes asked for."""

import numpy as np
import pytest
from pydicom import dcmread

from tests.synthetic import KINDS, make_dataset, make_pixels, write


@pytest.mark.parametrize("name", KINDS)
def test_kind_round_trips_through_pydicom(name, tmp_path):
    kind = KINDS[name]
    ds = make_dataset(**kind)
    back = dcmread(write(ds, tmp_path / f"{name}.dcm"))
    pixels = back.pixel_array
    bits_stored = kind.get("bits_stored", 12)
    assert back.BitsStored == bits_stored
    assert back.Rows == kind["rows"] and back.Columns == kind["columns"]
    assert pixels.dtype.kind == ("i" if kind.get("signed") else "u")
    low = -(1 << (bits_stored - 1)) if kind.get("signed") else 0
    assert low <= pixels.min() and pixels.max() < low + (1 << bits_stored)
    assert int(pixels.max()) - int(pixels.min()) > (1 << bits_stored) // 2, "content should span the range"
    if kind.get("frames", 1) > 1:
        assert pixels.shape[0] == kind["frames"]
    if kind.get("lossy_history"):
        assert back.LossyImageCompression == "01"


def test_dirty_high_bits_are_in_the_stored_words_only():
    ds = make_dataset(**KINDS["u12_dirty"])
    raw = np.frombuffer(ds.PixelData, "<u2")
    assert (raw >> 12).any()
    clean = make_pixels(64, 70, bits_stored=12)
    assert np.array_equal(raw & 0x0FFF, clean.ravel())
