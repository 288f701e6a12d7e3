"""Environment variables set for the length of a block, as they were afterwards (``os.environ`` is the process's:
keep such blocks short)."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

__all__ = ["environment"]


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
