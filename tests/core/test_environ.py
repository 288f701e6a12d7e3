"""core.environ: variables set for a block are as they were afterwards, set or not before, error or not."""

import os

import pytest

from core.environ import environment


def test_a_variable_is_set_for_the_block_and_restored(monkeypatch):
    monkeypatch.setenv("RADPRESS_TEST_A", "before")
    monkeypatch.delenv("RADPRESS_TEST_B", raising=False)
    with pytest.raises(RuntimeError):
        with environment(RADPRESS_TEST_A="during", RADPRESS_TEST_B="new"):
            assert (os.environ["RADPRESS_TEST_A"], os.environ["RADPRESS_TEST_B"]) == ("during", "new")
            raise RuntimeError("the block fails")
    assert os.environ["RADPRESS_TEST_A"] == "before" and "RADPRESS_TEST_B" not in os.environ
