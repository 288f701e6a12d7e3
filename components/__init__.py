"""Reusable UI pieces: pure ``make_*()`` factories with their ID constants."""

from .codec_table import make_codec_table
from .shell import make_shell

__all__ = ["make_codec_table", "make_shell"]
