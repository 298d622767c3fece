"""The thin SuperCL trainer: pre-training, fine-tuning, evaluation.

>>> from supercl.train import PretrainConfig, pretrain, FinetuneConfig, finetune, evaluate

Each function takes a config dataclass whose fields are the options of the matching
``supercl`` subcommand, and writes everything into the run folder ``config.out``.
"""

from .evaluate import evaluate
from .finetune import FinetuneConfig, finetune
from .loop import NonFiniteLossError
from .pretrain import PretrainConfig, pretrain, recipe_config

__all__ = ["PretrainConfig", "pretrain", "recipe_config", "FinetuneConfig", "finetune", "evaluate",
           "NonFiniteLossError"]
