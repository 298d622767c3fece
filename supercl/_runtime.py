"""What every layer that runs something needs, below all of them: the device a run asks for
(:func:`resolve_device`, :func:`check_device`) and strict JSON for the files a run writes
(:func:`write_json`, :func:`json_text`, :func:`strict_json`). Used by the trainer
(:mod:`supercl.train`), the scoring of a run and the commands."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["resolve_device", "check_device", "write_json", "json_text", "strict_json"]


def check_device(device: Any) -> None:
    """Raise ``ValueError`` unless ``device`` is "auto", "cpu", "cuda" or "cuda:N" with a GPU
    N that torch sees. Called before a run writes anything."""
    resolve_device(device)


def resolve_device(device: Any) -> torch.device:
    """"auto" -> cuda if available else cpu; "cpu", "cuda", "cuda:N". Anything else, and
    "cuda" without a GPU (or with fewer than N + 1), raises ``ValueError``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    expected = "expected auto, cpu, cuda or cuda:N"
    if not isinstance(device, str):
        raise ValueError(f"device must be a string ({expected}), got {device!r}")
    try:
        dev = torch.device(device)
    except RuntimeError:  # torch's own message is a long list of every device type it knows
        raise ValueError(f"unknown device {device!r}: {expected}") from None
    if dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise ValueError(f"unsupported device {device!r}: {expected}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but torch sees no CUDA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but torch sees "
                             f"{torch.cuda.device_count()} CUDA GPU(s)")
    return dev


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on ``device`` without making the host wait: to a CUDA device from
    pinned memory, asynchronously (a copy from pageable memory waits for the stream); to any
    other device a plain ``.to``. The one place the ops and the trainer do this."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def write_json(path: Path, obj: Any) -> Path:
    """Strict JSON (see :func:`json_text`), written atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json_text(obj, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def json_text(obj: Any, indent: int | None = None) -> str:
    """``obj`` as strict JSON: a float that is not finite (an undefined score such as the HD95
    of an empty prediction, NaN) becomes ``null``, so ``JSON.parse`` and ``jq`` read every
    file a run writes. Dataclasses, paths, tensors and numpy values are converted."""
    return json.dumps(_finite(obj), indent=indent, default=_jsonable, allow_nan=False)


def strict_json(text: str) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON)."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if is_dataclass(x) and not isinstance(x, type):
        return _finite(asdict(x))
    if isinstance(x, (np.floating, np.integer, np.bool_, np.ndarray, torch.Tensor)):
        return _finite(x.tolist() if hasattr(x, "tolist") else x.item())
    return x


def _jsonable(x):
    return str(x)  # paths, and anything else json cannot write, as text
