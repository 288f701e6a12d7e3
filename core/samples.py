"""The real DICOM files that ship in PyPI packages: pydicom-data and pydicom's own tests.

Tests, the benchmark and the demo studies all draw from here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["BENCH_SAMPLES", "sample", "sample_files", "write_series"]

# The benchmark images named by the core issue: CT signed, MR, two CR, US RGB.
BENCH_SAMPLES = ("693_UNCR", "MR2_UNCR", "RG1_UNCR", "RG3_UNCR", "US1_UNCR")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def pydicom_data_dir() -> Path:
    root = _package_dir("data_store")
    if root is None:
        raise FileNotFoundError("pydicom-data is not installed (pip install pydicom-data)")
    return root / "data"


def pydicom_test_dir() -> Path:
    return _package_dir("pydicom") / "data" / "test_files"


def sample(name: str) -> Path:
    """Path of a pydicom-data file by stem, e.g. ``sample("MR2_UNCR")``."""
    path = pydicom_data_dir() / f"{name}.dcm"
    if not path.exists():
        raise FileNotFoundError(f"{name}.dcm is not in pydicom-data")
    return path


def sample_files() -> list[Path]:
    """Every file of both packages (DICOM or not), sorted."""
    files = [p for p in pydicom_data_dir().iterdir() if p.is_file()]
    files += [p for p in pydicom_test_dir().rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    return sorted(files)


def write_series(name: str, count: int, folder: Path, *, study_uid: str | None = None) -> list[Path]:
    """*count* copies of a sample as one new series (new UIDs per copy), e.g. a CT series from one slice."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    ds = dcmread(sample(name))
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    paths = []
    for number in range(1, count + 1):
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = number
        path = folder / f"{name}-{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
