"""Reusable UI pieces: pure ``make_*()`` factories with their ID constants."""

from .banner import make_lossy_banner
from .cine_player import make_cine_player
from .job_progress import make_job_table
from .metrics_card import make_metrics_card
from .shell import make_shell
from .strategy_card import make_strategy_card
from .viewer import make_difference_figure, make_image_figure

__all__ = [
    "make_cine_player",
    "make_difference_figure",
    "make_image_figure",
    "make_job_table",
    "make_lossy_banner",
    "make_metrics_card",
    "make_shell",
    "make_strategy_card",
]
