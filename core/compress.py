"""Compress one instance with one codec: the operation behind the CLI, ingest and on-demand variants."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pydicom.dataset import Dataset

from .codecs import AutoRule, Codec, check_ratio, choose_codec
from .derive import compressed_dataset
from .errors import CodecError, InvalidOptionError
from .pixels import PixelSpec, decode_frame, pixel_spec

__all__ = ["MODES", "Compressed", "compress", "parse_mode"]

MODES = ("lossless", "lossy")


@dataclass(frozen=True)
class Compressed:
    dataset: Dataset
    codec: Codec
    spec: PixelSpec
    target_ratio: float | None
    frame_sizes: tuple[int, ...]
    encode_seconds: float

    @property
    def compressed_bytes(self) -> int:
        return sum(self.frame_sizes)

    @property
    def uncompressed_bytes(self) -> int:
        return self.spec.frame_bytes * self.spec.frames

    @property
    def ratio(self) -> float:
        return self.uncompressed_bytes / self.compressed_bytes


def parse_mode(mode: str) -> bool:
    """True for lossy; refuses anything but the two modes."""
    if mode not in MODES:
        raise InvalidOptionError(f"Unknown mode {mode!r}.", hint="Use 'lossless' or 'lossy'.")
    return mode == "lossy"


def compress(
    ds: Dataset,
    codec: str,
    mode: str = "lossless",
    ratio: float | None = None,
    *,
    rule: AutoRule = AutoRule(),
) -> Compressed:
    """Encode every frame of *ds* and return the new dataset; *ds* is not modified."""
    lossy = parse_mode(mode)
    ratio = check_ratio(ratio, lossy)
    spec = pixel_spec(ds)
    chosen = choose_codec(codec, lossy, spec, rule)
    frames = []
    seconds = 0.0
    for index in range(spec.frames):
        pixels = decode_frame(ds, index)
        start = time.perf_counter()
        try:
            frames.append(chosen.encode(pixels, spec, ratio))
        except (ValueError, RuntimeError) as exc:
            raise CodecError(f"The {chosen.label} encoder failed on frame {index + 1}: {exc}") from None
        seconds += time.perf_counter() - start
    achieved = spec.frame_bytes * spec.frames / sum(len(f) for f in frames)
    out = compressed_dataset(ds, frames, chosen, spec, achieved)
    return Compressed(out, chosen, spec, ratio, tuple(len(f) for f in frames), seconds)
