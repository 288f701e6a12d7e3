"""Per-item locks that hold across processes and threads, so expensive things are made once.

Several processes (the web server's, job workers, network receivers) share
one archive.  When eight viewers ask for the same very large image at once,
one of them builds its pyramid and the others wait for it, instead of eight
encoders writing one file.  A lock is ``flock`` on a small file under
``<data>/locks``: each acquisition opens the file anew, so two threads of one
process exclude each other as two processes do, and the kernel releases the
lock when its holder dies (even by SIGKILL).  Lock files are never deleted:
removing one while another process waits on it would let a third take a
different lock under the same name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from pathlib import Path
from typing import Iterator

from .errors import RadPressError

__all__ = ["BusyError", "item_lock", "LOCK_TIMEOUT"]

LOCK_TIMEOUT = 300.0


class BusyError(RadPressError):
    """Another request or process is still making this item; ask again shortly."""

    http_status = 503


def _lock_path(root: Path, key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return root / "locks" / digest[:2] / f"{digest}.lock"


@contextlib.contextmanager
def item_lock(root: str | os.PathLike, key: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the exclusive lock named *key* in the archive at *root*; wait at most *timeout* (default :data:`LOCK_TIMEOUT`) s.

    Raises :class:`BusyError` when the holder has not finished in time.
    Callers check for the item again once they hold the lock: whoever held
    it before may have made it.
    """
    path = _lock_path(Path(root), key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        timeout = LOCK_TIMEOUT if timeout is None else timeout
        deadline, pause = time.monotonic() + timeout, 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BusyError(f"This image is still being prepared by another request (waited {timeout:g} s).",
                                    hint="Try again in a minute.") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.2)
        yield
    finally:
        os.close(fd)  # closing the only descriptor of this open file releases the lock
