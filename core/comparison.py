"""Lossless and lossy versions of one frame side by side, with the numbers a radiologist asks for."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from .codecs import Codec, check_ratio, choose_codec
from .derive import LossyHistory, format_ratio, lossy_history
from .errors import CodecError
from .metrics import Metrics, compare
from .pixels import PixelSpec, decode_frame, pixel_spec
from .policy import Policy

__all__ = ["Comparison", "compare_frame", "lossless_header", "lossy_banner", "difference_map"]

DEFAULT_BANNER = Policy.lossy_banner


@dataclass(frozen=True)
class Comparison:
    spec: PixelSpec
    frame: int
    original: np.ndarray
    lossless: np.ndarray
    lossy: np.ndarray
    lossless_codec: Codec
    lossy_codec: Codec
    lossless_codestream: bytes
    lossy_codestream: bytes
    lossless_metrics: Metrics
    lossy_metrics: Metrics
    target_ratio: float
    history: LossyHistory  # what the original had been through already


def compare_frame(ds: Dataset, frame: int, codec: str, ratio: float, lossless_codec: str = "j2k") -> Comparison:
    """Encode one frame losslessly and lossily and decode both back."""
    ratio = check_ratio(ratio, True)
    spec = pixel_spec(ds)
    original = decode_frame(ds, frame)
    exact = choose_codec(lossless_codec, False, spec)
    lossy = choose_codec(codec, True, spec)
    exact_data = exact.encode(original, spec)
    exact_frame = exact.decode(exact_data, spec)
    if not np.array_equal(exact_frame, original):
        raise CodecError(f"The {exact.label} round trip was not bit-exact: refusing to show it as lossless.")
    lossy_data = lossy.encode(original, spec, ratio)
    lossy_frame = lossy.decode(lossy_data, spec)

    def metrics(decoded: np.ndarray, size: int) -> Metrics:
        return compare(original[None], decoded[None], spec.bits_stored, compressed_bytes=size, uncompressed_bytes=spec.frame_bytes)

    return Comparison(spec, frame, original, exact_frame, lossy_frame, exact, lossy, exact_data, lossy_data,
                      metrics(exact_frame, len(exact_data)), metrics(lossy_frame, len(lossy_data)), ratio,
                      lossy_history(ds))


def lossless_header(history: LossyHistory, codec: Codec | None = None, ratio: float | None = None) -> str:
    """The left pane's title: lossless, unless the original itself is lossy (then never called lossless alone)."""
    step = f" ({codec.label}, {ratio:.2f}:1)" if codec is not None and ratio else ""
    if history.lossy:
        return f"Original is itself lossy ({history.label}) — lossless copy of a lossy image{step}"
    return f"LOSSLESS — identical to the original{step}"


def lossy_banner(ratio: float, codec: Codec, template: str = DEFAULT_BANNER, history: LossyHistory = LossyHistory()) -> str:
    """The disclosure every lossy image carries, in the clinic's wording, with the cumulative ratio.

    A lossy copy of an already-lossy original is compressed by both steps: the
    banner's ratio is their product, and it says the original was lossy already.
    """
    total = history.then(ratio, codec.method).cumulative_ratio if history.lossy else ratio
    text = template.format(ratio=format_ratio(total or ratio), codec=codec.label, method=codec.method)
    if "lossy" not in text.lower():  # a clinic's wording of "{ratio}:1" alone would not say what the image is
        text = f"LOSSY — {text}"
    if history.lossy:
        earlier = f"{format_ratio(ratio)}:1 on top of {history.label}" if total else f"{format_ratio(ratio)}:1 on top of an earlier lossy compression of unknown ratio"
        text += f" — original already lossy: {earlier}"
    return text


def difference_map(original: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """Absolute difference (grey frames) or its largest channel (colour)."""
    diff = np.abs(original.astype(np.int32) - decoded.astype(np.int32))
    return diff.max(axis=-1) if diff.ndim == 3 else diff
