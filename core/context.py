"""The archive of the running app, for code that runs inside it (pages, callbacks).

Inside a request it is the app's own store; in a background-callback worker
process (no request) it is opened from RADPRESS_DATA, which the app sets.
"""

from __future__ import annotations

import functools
import os

from .store import Store

__all__ = ["open_store"]


@functools.lru_cache(maxsize=4)
def _store_at(root: str) -> Store:
    return Store(root)


def open_store() -> Store:
    try:
        from flask import current_app

        return current_app.extensions["radpress"]["store"]
    except (RuntimeError, KeyError):
        return _store_at(os.environ.get("RADPRESS_DATA", "var"))
