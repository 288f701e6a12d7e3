"""The OpenJPEG library glymur calls: the newest one installed.

glymur loads the system's libopenjp2 (Debian bookworm: 2.5.0).  Pillow, a
pinned dependency, ships OpenJPEG 2.5.4, which encodes a 512 x 512 CT frame
~15 % faster to the same codestream.  Both are OpenJPEG; the newer is used.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from types import ModuleType

__all__ = ["load_glymur"]


def _version(library: ctypes.CDLL) -> tuple[int, ...]:
    library.opj_version.restype = ctypes.c_char_p
    return tuple(int(part) for part in library.opj_version().decode().split(".")[:3] if part.isdigit())


def _candidates() -> list[Path]:
    """Pillow's bundled copy (its wheels put it in ``pillow.libs``), when there is one."""
    import PIL

    return sorted((Path(PIL.__file__).parent.parent / "pillow.libs").glob("libopenjp2*.so*"))


@functools.cache
def load_glymur() -> ModuleType:
    """glymur, calling the newest libopenjp2 found (its version in ``glymur.version.openjpeg_version``)."""
    import glymur as module
    from glymur.lib import openjp2

    best = openjp2.OPENJP2
    best_version = _version(best) if best is not None else ()
    for path in _candidates():
        try:
            library = ctypes.CDLL(str(path))
            version = _version(library)
        except (OSError, AttributeError, ValueError):
            continue
        if version > best_version:
            best, best_version = library, version
    if best is not openjp2.OPENJP2:
        openjp2.OPENJP2 = best  # glymur's wrappers look the library up at each call
        module.version.openjpeg_version = ".".join(map(str, best_version))
    return module
