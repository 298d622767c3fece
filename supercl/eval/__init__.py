"""Scoring: the segmentation metrics (:mod:`.metrics`: DSC, Jaccard, HD95), inference on
slices (:func:`predict`) and statistics over repeated runs (:mod:`.stats`). Scoring a run on
its test volumes, which needs the trainer's split and checkpoints, is
:func:`supercl.train.evaluate`."""

from .metrics import (SegmentationMetrics, dice_score, hd95, jaccard_score, summarize_volumes,
                      volume_metrics)
from .inference import predict
from .stats import mean_ci, paired_difference

__all__ = ["predict", "SegmentationMetrics", "dice_score", "jaccard_score", "hd95",
           "volume_metrics", "summarize_volumes", "mean_ci", "paired_difference"]
