"""Evaluation helpers that do not train: statistics over repeated runs (:mod:`.stats`)."""

from .stats import mean_ci, paired_difference

__all__ = ["mean_ci", "paired_difference"]
