"""Compare: what the two panes say about the image they show."""

import numpy as np
import pytest

from core.codecs import get_codec
from core.comparison import compare_frame, lossless_header, lossy_banner
from core.derive import LossyHistory
from core.policy import Policy
from tests.synthetic import KINDS, make_dataset


def test_a_plain_original_is_shown_as_lossless():
    result = compare_frame(make_dataset(**KINDS["u12_odd"]), 0, "j2k", 10)
    assert not result.history.lossy
    assert np.array_equal(result.lossless, result.original)
    header = lossless_header(result.history, result.lossless_codec, result.lossless_metrics.ratio)
    assert header.startswith("LOSSLESS — identical to the original (JPEG 2000 lossless, ")
    banner = lossy_banner(result.lossy_metrics.ratio, result.lossy_codec, Policy.lossy_banner, result.history)
    assert f"compressed {result.lossy_metrics.ratio:.2f}".rstrip("0").rstrip(".") in banner
    assert "already lossy" not in banner


def test_an_already_lossy_original_is_never_called_lossless():
    result = compare_frame(make_dataset(**KINDS["already_lossy"]), 0, "htj2k", 5)
    assert result.history.label == "JPEG 2000, 18:1"
    header = lossless_header(result.history, result.lossless_codec, result.lossless_metrics.ratio)
    assert header.startswith("Original is itself lossy (JPEG 2000, 18:1) — lossless copy of a lossy image")
    assert "identical to the original" not in header
    assert lossless_header(result.history) == "Original is itself lossy (JPEG 2000, 18:1) — lossless copy of a lossy image"
    banner = lossy_banner(result.lossy_metrics.ratio, result.lossy_codec, Policy.lossy_banner, result.history)
    total = 18 * result.lossy_metrics.ratio
    assert banner.startswith(f"LOSSY — compressed {total:.2f}".rstrip("0").rstrip("."))
    assert "original already lossy" in banner and "JPEG 2000, 18:1" in banner


def test_an_unknown_earlier_ratio_is_said_so():
    history = LossyHistory(True, ("ISO_10918_1",), (), None)
    banner = lossy_banner(10, get_codec("j2k", True), "LOSSY {ratio}:1", history)
    assert banner == "LOSSY 10:1 — original already lossy: 10:1 on top of an earlier lossy compression of unknown ratio"
    assert lossless_header(history).startswith("Original is itself lossy (JPEG, ratio unknown)")


@pytest.mark.parametrize("kind", ["s12", "enhanced_ct", "mono1"])
def test_lossless_pane_is_bit_exact_on_other_kinds(kind):
    result = compare_frame(make_dataset(**KINDS[kind]), 0, "j2k", 8)
    assert np.array_equal(result.lossless, result.original) and result.lossless_metrics.identical
