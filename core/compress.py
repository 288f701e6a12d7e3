"""Compress one instance with one codec: the operation behind the CLI, ingest and on-demand variants.

A lossy result always says how close it came to its target ratio
(:class:`RatioOutcome`): reached within :data:`RATIO_TOLERANCE`, or not and
why, and whether it stayed within the modality's CAR upper bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pydicom.dataset import Dataset

from .codecs import AutoRule, Codec, check_ratio, choose_codec, get_codec
from .codecs.rate import RATIO_TOLERANCE
from .derive import compressed_dataset
from .errors import CodecError, InvalidOptionError
from .pixels import PixelSpec, decode_frame, pixel_spec
from .policy import check_bound, upper_bound
from .present import dimensions

__all__ = ["MODES", "OVER_BOUND", "Compressed", "RatioOutcome", "compress", "parse_mode", "ratio_outcome", "artifact_outcome",
           "artifact_warning"]

MODES = ("lossless", "lossy")
# What compress() does with a lossy target above the modality's CAR upper bound.
OVER_BOUND = ("refuse", "cap", "allow")
# Below this many bytes per frame, codestream headers are a visible share of the file.
SMALL_FRAME_BYTES = 32 * 1024


@dataclass(frozen=True)
class RatioOutcome:
    """How a lossy copy's achieved ratio compares with its target and the CAR upper bound."""

    target: float
    achieved: float
    reached: bool
    reason: str | None  # why the target was not reached
    bound: float | None = None

    @property
    def above_bound(self) -> bool:
        return self.bound is not None and self.achieved > self.bound * (1 + 1e-9)

    @property
    def warning(self) -> str | None:
        """One line for stderr, a job item or a study card; None when there is nothing to say."""
        parts = []
        if not self.reached:
            parts.append(f"target {self.target:g}:1 not reached: achieved {self.achieved:.2f}:1 ({self.reason})")
        if self.above_bound:
            parts.append(f"achieved {self.achieved:.2f}:1 is above the CAR upper bound of {self.bound:g}:1 for this modality")
        return "; ".join(parts) or None


def ratio_outcome(target: float, achieved: float, codec: Codec, rows: int, columns: int, *,
                  frame_bytes: int | None = None, bound: float | None = None) -> RatioOutcome:
    """Judge an achieved ratio against its target (±:data:`RATIO_TOLERANCE`) and name the likely cause of a miss."""
    reached = abs(achieved / target - 1) <= RATIO_TOLERANCE + 1e-9
    reason = None
    if not reached and achieved < target:
        if codec.name == "jpegls":
            cause = "JPEG-LS near-lossless moves in whole NEAR steps: the next one overshoots the target or is beyond the largest NEAR allowed"
        elif frame_bytes is not None and frame_bytes < SMALL_FRAME_BYTES:
            cause = f"codestream headers are a large share of a {dimensions(columns, rows)} frame"
        else:
            cause = "its strongest setting compresses this image no further"
        reason = f"{codec.label} cannot compress this image to {target:g}:1; kept the closest lower ratio, which loses less — {cause}"
    elif not reached:
        reason = (f"{codec.label} compresses this image beyond {target:g}:1 even at its finest lossy setting "
                  "(little detail to keep)")
    return RatioOutcome(target, achieved, reached, reason, bound)


def artifact_outcome(row, artifact) -> RatioOutcome | None:
    """Target against achieved for a stored lossy copy (an index instance *row* and its artifact); None otherwise."""
    if artifact.variant != "lossy" or not artifact.achieved_ratio or not artifact.ratio:
        return None
    codec = get_codec(artifact.codec, True)
    bound = upper_bound(row["modality"] or "", row["body_part"] or "", row["study_description"] or "")
    frame_bytes = row["uncompressed_bytes"] // max(row["frames"] or 1, 1)
    return ratio_outcome(artifact.ratio, artifact.achieved_ratio, codec, row["rows"], row["columns"],
                         frame_bytes=frame_bytes, bound=bound)


def artifact_warning(row, artifact) -> str | None:
    """The warning for a stored lossy copy, or None when it reached its target within the bound."""
    outcome = artifact_outcome(row, artifact)
    return outcome.warning if outcome else None


@dataclass(frozen=True)
class Compressed:
    dataset: Dataset
    codec: Codec
    spec: PixelSpec
    target_ratio: float | None  # the ratio aimed at (after a cap at the CAR bound)
    frame_sizes: tuple[int, ...]
    encode_seconds: float
    requested_ratio: float | None = None
    upper_bound: float | None = None
    cap_note: str | None = None  # set when the requested ratio was lowered to the bound

    @property
    def compressed_bytes(self) -> int:
        return sum(self.frame_sizes)

    @property
    def uncompressed_bytes(self) -> int:
        return self.spec.frame_bytes * self.spec.frames

    @property
    def ratio(self) -> float:
        """The achieved ratio: uncompressed bytes (Bits Allocated) over the codestream bytes."""
        return self.uncompressed_bytes / self.compressed_bytes

    @property
    def outcome(self) -> RatioOutcome | None:
        """Target against achieved for a lossy copy; None for lossless."""
        if self.target_ratio is None:
            return None
        return ratio_outcome(self.target_ratio, self.ratio, self.codec, self.spec.rows, self.spec.columns,
                             frame_bytes=self.spec.frame_bytes, bound=self.upper_bound)

    @property
    def warnings(self) -> tuple[str, ...]:
        outcome = self.outcome
        return tuple(w for w in (self.cap_note, outcome.warning if outcome else None) if w)


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
    over_bound: str = "allow",
    decoded=None,
) -> Compressed:
    """Encode every frame of *ds* and return the new dataset; *ds* is not modified.

    *over_bound* says what a lossy target above the CAR upper bound of the
    image's modality does: ``refuse`` (an :class:`InvalidOptionError`),
    ``cap`` (lowered to the bound, noted in the result) or ``allow``
    (measurements such as the lab and the benchmark); an achieved ratio above
    the bound is reported in every case.  *decoded*, when given, holds the
    frames of *ds* already decoded (indexable by frame number), so that one
    decode serves every copy made of an instance.
    """
    lossy = parse_mode(mode)
    ratio = check_ratio(ratio, lossy)
    if over_bound not in OVER_BOUND:
        raise InvalidOptionError(f"over_bound={over_bound!r} is not one of {', '.join(OVER_BOUND)}.")
    requested, bound, cap_note = ratio, None, None
    if lossy:
        kind = (str(ds.get("Modality", "") or ""), str(ds.get("BodyPartExamined", "") or ""), str(ds.get("StudyDescription", "") or ""))
        bound = upper_bound(*kind)
        if over_bound != "allow":
            ratio, cap_note = check_bound(ratio, *kind, cap=over_bound == "cap")
    spec = pixel_spec(ds)
    chosen = choose_codec(codec, lossy, spec, rule)
    frames = []
    seconds = 0.0
    for index in range(spec.frames):
        pixels = decoded[index] if decoded is not None else decode_frame(ds, index)
        start = time.perf_counter()
        try:
            frames.append(chosen.encode(pixels, spec, ratio))
        except (ValueError, RuntimeError) as exc:
            raise CodecError(f"The {chosen.label} encoder failed on frame {index + 1}: {exc}") from None
        seconds += time.perf_counter() - start
    achieved = spec.frame_bytes * spec.frames / sum(len(f) for f in frames)
    out = compressed_dataset(ds, frames, chosen, spec, achieved)
    return Compressed(out, chosen, spec, ratio, tuple(len(f) for f in frames), seconds, requested, bound, cap_note)
