"""The thin SuperCL trainer: pre-training, fine-tuning, evaluation.

>>> from supercl.train import PretrainConfig, pretrain, FinetuneConfig, finetune, evaluate

Each function takes a config dataclass whose fields are the options of the matching
``supercl`` subcommand, and writes everything into the run folder ``config.out``. The modules
that hold them are named for the activity (:mod:`.pretraining`, :mod:`.finetuning`,
:mod:`.evaluation`), so that each name in this package means one thing: ``supercl.train.pretrain``
is the function, ``supercl.train.pretraining`` its module.
"""

from .evaluation import evaluate
from .finetuning import FinetuneConfig, finetune
from .loop import NonFiniteLossError
from .pretraining import PretrainConfig, pretrain, recipe_config

__all__ = ["PretrainConfig", "pretrain", "recipe_config", "FinetuneConfig", "finetune", "evaluate",
           "NonFiniteLossError"]
