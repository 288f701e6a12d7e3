"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from pydicom.dataset import Dataset

__all__ = ["atomic_writer", "fsync_dir", "write_dataset"]


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Write to a temporary file beside *path*, fsync, then rename into place.

    On any error the temporary file is removed and *path* is untouched.
    """
    target = Path(path)
    # the writer's pid in the name: a repair in another process leaves a live writer's file alone
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}-", suffix=".part", dir=target.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        fsync_dir(target.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or link in *folder* durable (the directory entry itself is on disk)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_dataset(ds: Dataset, path: str | os.PathLike) -> int:
    """Write *ds* as a DICOM Part 10 file atomically; returns the file size."""
    with atomic_writer(path) as fh:
        ds.save_as(fh, enforce_file_format=True)
        size = fh.tell()
    return size
