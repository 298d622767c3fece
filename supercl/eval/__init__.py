"""Evaluation: scoring a fine-tuned model on the test volumes (:func:`evaluate`,
:func:`predict`), the segmentation metrics (:mod:`.metrics`: DSC, Jaccard, HD95) and
statistics over repeated runs (:mod:`.stats`)."""

from .evaluate import evaluate, predict
from .metrics import (SegmentationMetrics, dice_score, hd95, jaccard_score, summarize_volumes,
                      volume_metrics)
from .stats import mean_ci, paired_difference

__all__ = ["evaluate", "predict", "SegmentationMetrics", "dice_score", "jaccard_score", "hd95",
           "volume_metrics", "summarize_volumes", "mean_ci", "paired_difference"]
