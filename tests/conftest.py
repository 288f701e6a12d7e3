import warnings

import pytest

from core.pixels import read_dataset
from core.samples import sample

warnings.filterwarnings("ignore", module="pydicom")


@pytest.fixture(scope="session")
def load():
    """Read a pydicom-data sample once per session (tests must not modify it)."""
    cache = {}

    def _load(name: str):
        if name not in cache:
            cache[name] = read_dataset(sample(name))
        return cache[name]

    return _load
