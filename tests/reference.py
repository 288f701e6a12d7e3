"""Reference table of real sample files (pydicom-data), in the manner of pydicom's
``pixels_reference.py``: each entry knows what the decoded frames look like."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from core.samples import sample


@dataclass(frozen=True)
class Ref:
    name: str
    shape: tuple[int, ...]
    dtype: str
    frames: int
    photometric: str
    same_pixels_as: str | None = None  # an uncompressed twin that must decode identically

    @property
    def path(self):
        return sample(self.name)


REFERENCE = (
    Ref("693_UNCR", (512, 512), "int16", 1, "MONOCHROME2"),
    Ref("693_J2KR", (512, 512), "int16", 1, "MONOCHROME2", "693_UNCR"),
    Ref("MR2_UNCR", (1024, 1024), "uint16", 1, "MONOCHROME2"),
    Ref("MR2_J2KR", (1024, 1024), "uint16", 1, "MONOCHROME2", "MR2_UNCR"),
    Ref("RG1_UNCR", (1955, 1841), "uint16", 1, "MONOCHROME1"),
    Ref("RG1_J2KR", (1955, 1841), "uint16", 1, "MONOCHROME1", "RG1_UNCR"),
    Ref("RG3_UNCR", (1760, 1760), "uint16", 1, "MONOCHROME1"),
    Ref("RG3_J2KR", (1760, 1760), "uint16", 1, "MONOCHROME1", "RG3_UNCR"),
    Ref("US1_UNCR", (480, 640, 3), "uint8", 1, "RGB"),
    Ref("US1_J2KR", (480, 640, 3), "uint8", 1, "RGB", "US1_UNCR"),
    Ref("emri_small", (64, 64), "uint16", 10, "MONOCHROME2"),
    Ref("emri_small_RLE", (64, 64), "uint16", 10, "MONOCHROME2", "emri_small"),
    Ref("emri_small_big_endian", (64, 64), "uint16", 10, "MONOCHROME2", "emri_small"),
    Ref("emri_small_jpeg_ls_lossless", (64, 64), "uint16", 10, "MONOCHROME2", "emri_small"),
    Ref("emri_small_jpeg_2k_lossless", (64, 64), "uint16", 10, "MONOCHROME2", "emri_small"),
    Ref("OBXXXX1A", (600, 800), "uint8", 1, "PALETTE COLOR"),
    Ref("OBXXXX1A_rle_2frame", (600, 800), "uint8", 2, "PALETTE COLOR", "OBXXXX1A_2frame"),
    Ref("OBXXXX1A_expb_2frame", (600, 800), "uint8", 2, "PALETTE COLOR", "OBXXXX1A_2frame"),
    Ref("SC_rgb_16bit_2frame", (100, 100, 3), "uint16", 2, "RGB"),
    Ref("SC_rgb_expb_16bit_2frame", (100, 100, 3), "uint16", 2, "RGB", "SC_rgb_16bit_2frame"),
    Ref("SC_ybr_full_uncompressed", (100, 100, 3), "uint8", 1, "YBR_FULL"),
    Ref("color3d_jpeg_baseline", (480, 640, 3), "uint8", 120, "YBR_FULL"),
    Ref("JPGLosslessP14SV1_1s_1f_8b", (768, 1024), "uint8", 1, "MONOCHROME2"),
    Ref("gdcm-US-ALOKA-16", (480, 640), "uint16", 1, "PALETTE COLOR"),
    Ref("gdcm-US-ALOKA-16_big", (480, 640), "uint16", 1, "PALETTE COLOR", "gdcm-US-ALOKA-16"),
    Ref("liver", (512, 512), "uint8", 3, "MONOCHROME2"),
)


def params(refs=REFERENCE):
    return [pytest.param(r, id=r.name) for r in refs]


# Images the codecs are exercised on: CT signed, MR, CR, US RGB, multi-frame,
# palette, 16-bit RGB, YBR_FULL.
CODEC_SAMPLES = ("693_UNCR", "MR2_UNCR", "RG3_UNCR", "US1_UNCR", "emri_small", "OBXXXX1A", "SC_rgb_16bit_2frame", "SC_ybr_full_uncompressed")
