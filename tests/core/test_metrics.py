import math

import numpy as np
import pytest

from core.metrics import compare, max_error, psnr, rmse, ssim
from core.pixels import decode_all


def test_identical_images():
    a = np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64) % 4096
    m = compare(a, a.copy(), 12, compressed_bytes=2048, uncompressed_bytes=8192)
    assert m.identical and math.isinf(m.psnr) and m.ssim == 1.0 and m.max_error == 0 and m.rmse == 0
    assert m.ratio == 4 and m.bpp == pytest.approx(2048 * 8 / 4096)
    data = m.to_dict()
    assert data["psnr"] is None and data["identical"] is True  # JSON has no Infinity


def test_known_shift_gives_known_psnr():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4000, size=(2, 32, 32), dtype=np.uint16)
    b = a + 1
    assert psnr(a, b, 4095) == pytest.approx(20 * math.log10(4095))
    assert max_error(a, b) == 1 and rmse(a, b) == 1
    m = compare(a, b, 12)
    assert m.psnr == pytest.approx(72.2453, abs=1e-3)
    assert len(m.frames) == 2 and all(f.max_error == 1 for f in m.frames)


def test_signed_values_do_not_wrap():
    a = np.array([[-2000, 0], [100, 2000]], dtype=np.int16)
    b = np.array([[2000, 0], [100, -2000]], dtype=np.int16)
    assert max_error(a, b) == 4000


def test_aggregate_uses_worst_frame_error():
    a = np.zeros((3, 16, 16), np.uint8)
    b = a.copy()
    b[2, 0, 0] = 9
    m = compare(a, b, 8)
    assert [f.max_error for f in m.frames] == [0, 0, 9] and m.max_error == 9


def test_ssim_drops_with_noise_on_a_real_image(load):
    mr = decode_all(load("MR2_UNCR"))[0].astype(np.int32)
    rng = np.random.default_rng(1)
    light = mr + rng.integers(-2, 3, mr.shape)
    heavy = mr + rng.integers(-60, 61, mr.shape)
    assert 1 > ssim(mr, light) > ssim(mr, heavy)


def test_colour_frames():
    a = np.zeros((1, 32, 32, 3), np.uint8)
    b = a.copy()
    b[..., 1] = 4
    m = compare(a, b, 8)
    assert m.max_error == 4 and m.psnr == pytest.approx(10 * math.log10(255**2 / (16 / 3)))
