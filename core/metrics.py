"""Image quality numbers for an original and a decoded variant.

PSNR uses the peak the data could reach (2^BitsStored - 1), as the issue and
the radiology literature do; SSIM uses the original's actual dynamic range,
because a 12-bit MR that only reaches 600 would otherwise score near 1 for
any distortion.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["FrameMetrics", "Metrics", "psnr", "max_error", "rmse", "ssim", "compare"]


def _diff(original: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    if original.shape != decoded.shape:
        raise ValueError(f"shapes differ: {original.shape} vs {decoded.shape}")
    return original.astype(np.float64) - decoded.astype(np.float64)


def psnr(original: np.ndarray, decoded: np.ndarray, peak: float) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical images."""
    mse = float(np.mean(_diff(original, decoded) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def rmse(original: np.ndarray, decoded: np.ndarray) -> float:
    return math.sqrt(float(np.mean(_diff(original, decoded) ** 2)))


def max_error(original: np.ndarray, decoded: np.ndarray) -> int:
    return int(np.max(np.abs(_diff(original, decoded)))) if original.size else 0


def ssim(original: np.ndarray, decoded: np.ndarray) -> float:
    """Structural similarity of one frame (colour frames: mean over channels)."""
    from skimage.metrics import structural_similarity

    if np.array_equal(original, decoded):
        return 1.0
    data_range = float(original.max()) - float(original.min()) or 1.0
    side = min(original.shape[:2])
    window = min(7, side if side % 2 else side - 1)
    if window < 3:
        return float("nan")
    channel_axis = -1 if original.ndim == 3 else None
    return float(
        structural_similarity(
            original.astype(np.float64),
            decoded.astype(np.float64),
            data_range=data_range,
            win_size=window,
            channel_axis=channel_axis,
        )
    )


@dataclass(frozen=True)
class FrameMetrics:
    psnr: float
    ssim: float
    max_error: int
    rmse: float


@dataclass(frozen=True)
class Metrics:
    """Per-frame numbers and the aggregate over all frames."""

    frames: tuple[FrameMetrics, ...]
    psnr: float
    ssim: float
    max_error: int
    rmse: float
    ratio: float | None
    bpp: float | None

    @property
    def identical(self) -> bool:
        return self.max_error == 0

    def to_dict(self) -> dict:
        """JSON-safe: ``inf`` PSNR becomes None next to ``identical: true``."""

        def clean(value):
            return None if isinstance(value, float) and not math.isfinite(value) else value

        data = {k: clean(v) for k, v in asdict(self).items() if k != "frames"}
        data["identical"] = self.identical
        data["frames"] = [{k: clean(v) for k, v in asdict(f).items()} for f in self.frames]
        return data


def compare(
    original: np.ndarray,
    decoded: np.ndarray,
    bits_stored: int,
    *,
    compressed_bytes: int | None = None,
    uncompressed_bytes: int | None = None,
) -> Metrics:
    """Compare stacks of frames shaped (frames, rows, columns[, samples])."""
    peak = float((1 << bits_stored) - 1)
    per_frame = tuple(
        FrameMetrics(psnr(o, d, peak), ssim(o, d), max_error(o, d), rmse(o, d)) for o, d in zip(original, decoded)
    )
    total_rmse = rmse(original, decoded)
    pixels = original.shape[0] * original.shape[1] * original.shape[2]
    return Metrics(
        frames=per_frame,
        psnr=psnr(original, decoded, peak),
        ssim=float(np.nanmean([f.ssim for f in per_frame])) if per_frame else float("nan"),
        max_error=max((f.max_error for f in per_frame), default=0),
        rmse=total_rmse,
        ratio=uncompressed_bytes / compressed_bytes if compressed_bytes and uncompressed_bytes else None,
        bpp=compressed_bytes * 8 / pixels if compressed_bytes else None,
    )
