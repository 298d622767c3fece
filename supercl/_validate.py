"""Argument checks shared by the whole package: the ops' boundaries, the models, the phantom
generators and the config dataclasses of the trainer (which validate in ``__post_init__``)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["SettingError", "check_int", "check_float", "check_bool", "check_choice",
           "check_setting"]


class SettingError(ValueError):
    """A setting of a config dataclass is invalid. ``name`` is the field (the command-line
    option ``--name`` with dashes), ``detail`` what is wrong with it."""

    def __init__(self, name: str, detail: str):
        super().__init__(f"{name} {detail}")
        self.name, self.detail = name, detail

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


def check_int(value: Any, name: str, minimum: int | None = None) -> int:
    """``value`` as an int; ``TypeError`` for a non-integer (bools included), ``ValueError``
    below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_float(value: Any, name: str, positive: bool = False, nonnegative: bool = False,
                maximum: float | None = None) -> float:
    """``value`` as a finite float; ``TypeError`` for a non-number, ``ValueError`` outside the
    asked range (``maximum`` included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum:g}, got {value}")
    return value


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def check_choice(value: Any, name: str, choices: tuple) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def check_setting(config: Any, name: str, check=check_int, *args, **kwargs) -> None:
    """Run ``check(getattr(config, name), name, ...)`` for a config dataclass's field and raise
    its failure as :class:`SettingError`, naming the field."""
    try:
        check(getattr(config, name), name, *args, **kwargs)
    except (TypeError, ValueError) as err:
        text = str(err)
        raise SettingError(name, text[len(name):].strip() if text.startswith(name) else text) \
            from None
