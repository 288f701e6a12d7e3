"""core.codecs.openjpeg: glymur calls the newest OpenJPEG installed, and what it writes stays exact."""

import ctypes
import ctypes.util

import imagecodecs
import numpy as np
from PIL import features

from core.codecs import j2k
from core.codecs.openjpeg import load_glymur
from core.pixels import PixelSpec


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


def test_newest_library_is_used():
    system = ctypes.CDLL(ctypes.util.find_library("openjp2"))
    system.opj_version.restype = ctypes.c_char_p
    installed = [_release(system.opj_version().decode()), _release(features.version_codec("jpg_2000"))]
    glymur = load_glymur()
    assert _release(glymur.version.openjpeg_version) == max(installed)
    from glymur.lib import openjp2

    assert _release(openjp2.version()) == max(installed)  # the library glymur's wrappers call, asked directly


def test_lossless_through_the_chosen_library_is_exact():
    rng = np.random.default_rng(7)
    frame = rng.integers(-2048, 2047, size=(67, 93), dtype=np.int16)
    spec = PixelSpec(rows=67, columns=93, samples=1, bits_allocated=16, bits_stored=12, signed=True,
                     photometric="MONOCHROME2", frames=1)
    decoded = np.asarray(imagecodecs.jpeg2k_decode(j2k.encode_at(frame, spec, None)))
    assert np.array_equal(decoded.astype(np.int16), frame)
