"""Does a compressed file hold what its source held, and does it say so honestly?"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from .derive import LOSSLESS_SYNTAXES, LossyHistory, lossy_history
from .errors import UnsupportedError
from .metrics import Metrics, compare
from .pixels import decode_all, pixel_spec
from .present import dimensions

__all__ = ["Verification", "verify", "claims_lossless", "encapsulated_bytes"]


def claims_lossless(ds: Dataset) -> bool:
    """By transfer syntax, or by Lossy Image Compression (0028,2110) = "00"."""
    flag = str(ds.get("LossyImageCompression", "") or "").strip()
    return ds.file_meta.TransferSyntaxUID in LOSSLESS_SYNTAXES or flag == "00"


def encapsulated_bytes(ds: Dataset) -> int:
    """Bytes of pixel data as stored: the denominator of the achieved ratio."""
    return len(ds.PixelData)


@dataclass(frozen=True)
class Verification:
    claims_lossless: bool
    metrics: Metrics
    history: LossyHistory = LossyHistory()  # the compressed file's: a lossless copy of a lossy image says so

    @property
    def ok(self) -> bool:
        """False only for the worst bug: a lossless claim with different pixels."""
        return self.metrics.identical or not self.claims_lossless

    def to_dict(self) -> dict:
        return {"ok": self.ok, "claims_lossless": self.claims_lossless, **self.metrics.to_dict(), **self.history.to_dict()}


def verify(original: Dataset, compressed: Dataset) -> Verification:
    a, b = pixel_spec(original), pixel_spec(compressed)
    if (a.rows, a.columns, a.samples, a.frames) != (b.rows, b.columns, b.samples, b.frames):
        raise UnsupportedError(
            f"The images do not match: {a.frames} frame(s) of {dimensions(a.columns, a.rows)} × {a.samples} sample(s) "
            f"vs {b.frames} frame(s) of {dimensions(b.columns, b.rows)} × {b.samples} sample(s).",
            hint="Pass the original first and the file made from it second.",
        )
    metrics = compare(
        decode_all(original),
        decode_all(compressed),
        a.bits_stored,
        compressed_bytes=encapsulated_bytes(compressed),
        uncompressed_bytes=a.frame_bytes * a.frames,
    )
    return Verification(claims_lossless(compressed), metrics, lossy_history(compressed))
