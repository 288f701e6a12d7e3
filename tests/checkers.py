"""Independent decoders from other projects (Debian packages that `make test` installs).

Lossless means *another* decoder gets back the same pixels: GDCM for whole
DICOM files, and the reference command-line tools of OpenJPEG, OpenJPH and
libjxl for bare codestreams.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from core.bench import read_pnm  # noqa: F401  (the one PGM/PPM reader, also used by the bench)
from core.codecs.codestream import parse_main_header
from core.pixels import PixelSpec, decode_all, read_dataset


def require(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is missing: `make test` installs it (see TEST_DEBS in the Makefile)"
    return path


def run(*args: str | Path, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}): {proc.stderr or proc.stdout}"
    return proc


def gdcm_pixels(path: Path, tmp: Path) -> np.ndarray:
    """Let GDCM decompress the whole file, then read its native pixels."""
    out = tmp / f"gdcm-{path.name}"
    run(require("gdcmconv"), "--raw", path, out)
    return decode_all(read_dataset(out))



def tool_pixels(codec: str, codestream: bytes, spec: PixelSpec, tmp: Path) -> np.ndarray:
    """Decode one frame's codestream with the codec's reference command-line decoder.

    OpenJPH's ojph_expand cannot write signed samples, so signed HTJ2K goes
    through OpenJPEG's opj_decompress (still not the encoder's library).
    """
    pnm = tmp / ("frame.ppm" if spec.samples == 3 else "frame.pgm")
    if codec in ("j2k", "htj2k"):
        src = tmp / "frame.j2c"
        src.write_bytes(codestream)
        if spec.signed:
            out = tmp / "frame.raw"
            run(require("opj_decompress"), "-i", src, "-o", out, "-quiet")
            return _sign_extend(np.fromfile(out, dtype="<u2"), parse_main_header(codestream).precision).reshape(spec.shape)
        if codec == "j2k":
            run(require("opj_decompress"), "-i", src, "-o", pnm, "-quiet")
        else:
            run(require("ojph_expand"), "-i", src, "-o", pnm)
        return read_pnm(pnm).astype(spec.dtype)
    if codec == "jxl":
        src = tmp / "frame.jxl"
        src.write_bytes(codestream)
        run(require("djxl"), src, pnm)
        values = read_pnm(pnm).astype(np.int64)
        if spec.bits_allocated == 16 and spec.bits_stored < 16:
            # djxl widens B-bit samples to 16 bits as v * 65535 / (2^B - 1) in
            # single precision; the steps are at least 2 wide, so rounding back
            # recovers v unambiguously (checked: the widening is off by <= 1).
            peak = (1 << spec.bits_stored) - 1
            narrow = np.round(values * peak / 65535).astype(np.int64)
            assert np.abs(np.round(narrow * 65535 / peak) - values).max() <= 1
            values = narrow
        return values.astype(spec.dtype)
    raise ValueError(codec)


def _sign_extend(values: np.ndarray, precision: int) -> np.ndarray:
    wide = values.astype(np.int32)
    return np.where(wide >= 1 << (precision - 1), wide - (1 << precision), wide).astype(np.int16)


# dicom3tools in Debian 12 (2022) predates the HTJ2K and JPEG XL transfer
# syntaxes and cannot parse their pixel data; their attributes are checked
# under the JPEG 2000 / JPEG-LS syntax that encapsulates pixel data the same way.
_DCIODVFY_STAND_IN = {
    "1.2.840.10008.1.2.4.201": "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.202": "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.203": "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.110": "1.2.840.10008.1.2.4.80",  # JPEG XL keeps RGB, as JPEG-LS does
    "1.2.840.10008.1.2.4.112": "1.2.840.10008.1.2.4.81",
}


def dciodvfy_errors(path: Path) -> set[str]:
    """The Error lines dciodvfy reports."""
    ds = read_dataset(path)
    stand_in = _DCIODVFY_STAND_IN.get(ds.file_meta.TransferSyntaxUID)
    if stand_in:
        ds.file_meta.TransferSyntaxUID = stand_in
        path = path.with_name(f"dciodvfy-{path.name}")
        ds.save_as(path, enforce_file_format=True)
    proc = run(require("dciodvfy"), path, ok=False)
    lines = (proc.stdout + proc.stderr).splitlines()
    return {line.strip() for line in lines if line.startswith("Error")}
