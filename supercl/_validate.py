"""Argument checks shared by the whole package: the ops' boundaries, the models, the phantom
generators and the config dataclasses of the trainer (which validate in ``__post_init__``).

Every check names the argument in its message and raises ``TypeError`` for the wrong kind of
value (or dtype) and ``ValueError`` for a wrong value (or shape, or device)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["SettingError", "check_int", "check_float", "check_bool", "check_choice",
           "check_spacing", "check_seed", "child_seed", "check_setting", "check_tensor"]


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


def check_spacing(value: Any, name: str = "spacing", ndim: int = 3,
                  axes: str = "") -> tuple[float, ...]:
    """``value`` as ``ndim`` voxel or pixel sizes (a sequence, array or tensor of finite
    numbers > 0), as a tuple of floats. ``axes`` names them in the messages, e.g. "(dz, dy,
    dx)". ``TypeError`` for something that is not a sequence of real numbers (None included:
    callers with a default handle None first); ``ValueError`` for another number of entries or
    an entry that is not finite and > 0."""
    what = f"{ndim} numbers" + (f" {axes}" if axes else "")
    values = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        try:
            values = list(values)
        except TypeError:
            raise TypeError(f"{name} must be a sequence of {what}, got "
                            f"{type(value).__name__}") from None
    if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) for v in values):
        raise TypeError(f"{name} must be a sequence of {what}, got {value!r}")
    if len(values) != ndim:
        raise ValueError(f"{name} must have {ndim} entries{' ' + axes if axes else ''}, got "
                         f"{len(values)}")
    floats = tuple(float(v) for v in values)
    if not all(math.isfinite(v) and v > 0 for v in floats):
        raise ValueError(f"{name} entries must be finite and > 0, got {list(floats)}")
    return floats


def check_seed(value: Any, name: str = "seed") -> np.random.SeedSequence:
    """A non-negative integer seed (or a numpy ``SeedSequence``, returned as it is) as a
    ``SeedSequence``; ``TypeError`` for anything else (bools and floats included),
    ``ValueError`` for a negative integer."""
    if isinstance(value, np.random.SeedSequence):
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative integer or a numpy SeedSequence, got "
                        f"{value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value}")
    return np.random.SeedSequence(int(value))


def child_seed(seed: Any, index: int) -> np.random.SeedSequence:
    """The seed of item ``index`` of a batch or a dataset drawn with ``seed`` (checked by
    :func:`check_seed`): its ``SeedSequence`` with ``index`` appended to the spawn key, so
    item i is the same whatever the number of items."""
    parent = check_seed(seed)
    return np.random.SeedSequence(
        parent.entropy, spawn_key=tuple(parent.spawn_key) + (index,),
        pool_size=parent.pool_size)


def check_setting(config: Any, name: str, check=check_int, *args, **kwargs) -> None:
    """Run ``check(getattr(config, name), name, ...)`` for a config dataclass's field and raise
    its failure as :class:`SettingError`, naming the field."""
    try:
        check(getattr(config, name), name, *args, **kwargs)
    except (TypeError, ValueError) as err:
        text = str(err)
        raise SettingError(name, text[len(name):].strip() if text.startswith(name) else text) \
            from None


# What an empty dimension of a tensor is called in check_tensor's messages, by its letter in
# ``dims``; H and W are reported together as an empty image.
_EMPTY_DIM = {
    "B": "is an empty batch (B = 0)",
    "N": "is an empty batch (N = 0)",
    "C": "has no channels (C = 0)",
    "K": "has no segments (K = 0)",
    "D": "has no features (D = 0; D >= 1 needed)",
}


def _dtype_names(dtypes: tuple) -> str:
    names = [str(d).replace("torch.", "") for d in dtypes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def check_tensor(value: Any, name: str, *, dtype: Any = None, dims: str | None = None,
                 shape: tuple | None = None, nonempty: str = "", device: Any = None,
                 device_of: str = "", dtype_text: str | None = None,
                 arrays: bool = True) -> Any:
    """Check a tensor argument once, at the boundary, and return it.

    - ``dtype``: None (any), ``"floating"``, ``"integer"`` (any integer dtype, bool excluded)
      or a tuple of torch dtypes. ``dtype_text`` replaces the default wording of the message
      after "{name} must ...", e.g. "hold integer ids of dtype int32 or int64". An integer-only
      tuple given a floating tensor adds a hint to convert with ``.long()``.
    - ``dims``: the expected shape as the user reads it, e.g. ``"(B, C, H, W)"``; its entries
      give the number of dimensions. ``shape`` pins sizes (None for a free entry) and then
      ``dims`` should spell them, e.g. ``"(4,) like features"``.
    - ``nonempty``: the letters of ``dims`` that must be >= 1, e.g. ``"BC"``; ``"HW"`` is
      reported as an empty image.
    - ``device``: the device the tensor must be on, that of the argument named ``device_of``.

    ``TypeError`` for a value that is not a tensor (``arrays``: the message says that numpy
    arrays are accepted too, the caller having converted them) or of the wrong dtype;
    ``ValueError`` for a wrong shape, an empty dimension or another device.
    """
    import torch

    if not isinstance(value, torch.Tensor):
        kinds = "a torch.Tensor or a numpy.ndarray" if arrays else "a torch.Tensor"
        raise TypeError(f"{name} must be {kinds}, got {type(value).__name__}")
    if dtype is not None:
        if dtype == "floating":
            ok, text = value.dtype.is_floating_point, "be a float tensor"
        elif dtype == "integer":
            ok = not (value.dtype.is_floating_point or value.dtype.is_complex
                      or value.dtype == torch.bool)
            text = "have an integer dtype"
        else:
            ok, text = value.dtype in dtype, f"have dtype {_dtype_names(dtype)}"
        if not ok:
            integers_only = not isinstance(dtype, str) and not any(
                d.is_floating_point for d in dtype)
            hint = (" (convert with .long() if the values are whole numbers)"
                    if integers_only and value.dtype.is_floating_point else "")
            raise TypeError(f"{name} must {dtype_text or text}, got {value.dtype}{hint}")
    if dims is not None:
        letters = [d.strip() for d in dims[dims.index("(") + 1:dims.index(")")].split(",")
                   if d.strip()]
        wrong = value.ndim != len(letters) or (shape is not None and any(
            want is not None and got != want for got, want in zip(value.shape, shape)))
        if wrong:
            raise ValueError(f"{name} must have shape {dims}, got {tuple(value.shape)}")
        sizes = dict(zip(letters, value.shape))
        for letter in letters:
            if letter in nonempty and sizes[letter] == 0:
                if letter in "HW":
                    raise ValueError(f"{name} has an empty image of shape "
                                     f"{tuple(value.shape[-2:])}")
                raise ValueError(f"{name} {_EMPTY_DIM[letter]}")
    if device is not None and value.device != device:
        raise ValueError(f"{name} is on {value.device} but {device_of} on {device}")
    return value
