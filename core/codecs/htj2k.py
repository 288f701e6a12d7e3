"""High-Throughput JPEG 2000 (Part 15) through OpenJPH.

OpenJPH writes RPCL by default; TLM markers are asked for, and the number of
decompositions follows the same base-resolution rule as JPEG 2000 so that
PS3.5 §10.18 (HTJ2K Lossless RPCL) holds.  OpenJPH has no rate control: the
target ratio is reached by searching the quantisation step.
"""

from __future__ import annotations

import numpy as np

from ..pixels import PixelSpec
from .j2k import decompositions, photometric  # noqa: F401  (same colour rules as Part 1)
from .rate import Knob, encode_to_ratio

DEPENDENCIES = "imagecodecs built with OpenJPH"


def is_available() -> bool:
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(imagecodecs.HTJ2K.available)


def encode(frame: np.ndarray, spec: PixelSpec, ratio: float | None) -> bytes:
    import imagecodecs

    def write(qstep: float | None) -> bytes:
        return bytes(
            imagecodecs.htj2k_encode(
                np.ascontiguousarray(frame),
                level=qstep,
                reversible=qstep is None,
                resolutions=decompositions(spec),  # OpenJPH counts decompositions
                rgb=spec.samples == 3 and spec.photometric == "RGB",
                tlm=True,
            )
        )

    if ratio is None:
        return write(None)
    # Beyond a step of ~0.01 OpenJPH flattens the image: a ratio that needs
    # more (tiny frames dominated by headers) is reported as not reached.
    knob = Knob(low=1e-7, high=0.01, guess=lambda r: 1e-4 * r / 10)
    return encode_to_ratio(write, knob, spec.frame_bytes, ratio)[0]


def decode(data: bytes, spec: PixelSpec) -> np.ndarray:
    import imagecodecs

    return np.asarray(imagecodecs.htj2k_decode(data, planar=False)).astype(spec.dtype, copy=False)
