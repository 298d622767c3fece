"""What pre-training and fine-tuning share: device choice, seeded batching, the cosine
schedule, interruption handling, non-finite loss detection and the run folder's logs."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .dataset import DataConfig

__all__ = ["RunConfig", "NonFiniteLossError", "resolve_device", "check_device", "amp_dtype",
           "check_config", "check_resume", "RESUMABLE", "epoch_batches", "total_steps",
           "optimizer_step", "cosine_lambda", "host_values", "check_finite", "StopFlag", "RunLog",
           "write_json", "json_text", "strict_json"]


@dataclass
class RunConfig(DataConfig):
    """The settings pre-training and fine-tuning share (their options have the same names)."""

    base_channels: int = 32
    depth: int = 4
    amp: str = "auto"
    device: str = "auto"
    seed: int = 0
    threads: int = 0
    checkpoint_every: int = 0
    max_steps: int = 0
    resume: bool = False
    progress: bool = True
    tensorboard: bool = False
    figures: bool = True


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; the run stops and the last good checkpoint is kept."""


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


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """"auto": bfloat16 autocast on CUDA, full precision on the CPU."""
    if amp not in ("auto", "off", "bf16", "fp16"):
        raise ValueError(f"amp must be one of auto, off, bf16, fp16, got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if amp == "fp16" else torch.bfloat16


def check_config(cfg) -> None:
    for name in ("epochs", "batch_size", "patch_size", "base_channels", "depth", "n_segments",
                 "slic_iters"):
        value = getattr(cfg, name, 1)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name in ("lr", "compactness"):
        if not getattr(cfg, name, 1.0) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)!r}")
    if cfg.patch_size % 2**cfg.depth:
        raise ValueError(f"patch_size must be a multiple of 2**depth = {2**cfg.depth}, "
                         f"got {cfg.patch_size}")


#: Settings that may differ between a run and its ``--resume``: how long it runs, where and
#: how it reports. Every other setting must equal the checkpoint's (:func:`check_resume`).
RESUMABLE = frozenset({"out", "epochs", "max_steps", "resume", "progress", "tensorboard",
                       "figures", "threads", "checkpoint_every", "device", "amp", "evaluate"})


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    """A config (dataclass or dict, nested ones too) as {"a.b": value}, tuples as lists."""
    if is_dataclass(config):
        config = asdict(config)
    flat = {}
    for k, v in config.items():
        if isinstance(v, dict):
            flat |= _flat(v, f"{prefix}{k}.")
        else:
            flat[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return flat


def check_resume(cfg: Any, saved: dict[str, Any], path: Path, done_epochs: int = 0) -> None:
    """Raise ``ValueError`` listing every setting of ``cfg`` that differs from the config
    ``saved`` in the checkpoint ``path``, except those in :data:`RESUMABLE`; ``epochs`` may
    grow but not fall below the ``done_epochs`` already run."""
    given, before = _flat(cfg), _flat(saved)
    differ = []
    for key in sorted(set(given) | set(before)):
        if key in RESUMABLE or key.split(".")[0] in RESUMABLE:
            continue
        old, new = before.get(key, "<unset>"), given.get(key, "<unset>")
        if key in ("data", "labels", "pretrained") and isinstance(old, str) and isinstance(new, str):
            old, new = os.path.normpath(old), os.path.normpath(new)
        if old != new:
            differ.append(f"{_option(key)} {_show(old)} -> {_show(new)}")
    if differ:
        raise ValueError(f"{path}: --resume with settings that differ from the checkpoint's: "
                         + "; ".join(differ) + ". Resume with the run's settings (config.json), "
                         "or start a new run in another --out")
    epochs = getattr(cfg, "epochs", None)
    if epochs is not None and epochs < done_epochs:
        raise ValueError(f"{path}: --epochs {epochs} is fewer than the {done_epochs} epochs "
                         "this run has already done")


def _option(key: str) -> str:
    return "--" + key.split(".")[-1].replace("_", "-")


def _show(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, list):
        return " ".join(map(str, v))
    return str(v)


def total_steps(epochs: int, steps_per_epoch: int, max_steps: int = 0) -> int:
    """Optimizer steps of a run (the span of its schedule): all epochs, or ``max_steps``."""
    total = epochs * steps_per_epoch
    return min(total, max_steps) if max_steps else total


def host_values(terms: dict[str, torch.Tensor], keys) -> dict[str, float]:
    """The 0-d tensors ``terms[k]`` as Python floats, in one device-to-host copy."""
    values = torch.stack([terms[k].detach().float() for k in keys]).tolist()
    return dict(zip(keys, values))


def check_finite(values: dict[str, float], *, what: str, epoch: int, step: int,
                 global_step: int, checkpoint: Path, elsewhere: bool = False,
                 note: str = "") -> None:
    """Raise :class:`NonFiniteLossError` naming the non-finite terms, the position in the run
    and the last good checkpoint. ``elsewhere``: another process saw one; ``note``: what
    caused it, if known."""
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if elsewhere and not bad:
        bad = ["loss (on another process)"]
    if not bad:
        return
    raise NonFiniteLossError(
        f"{what} stopped at epoch {epoch + 1}, step {step + 1} (global step {global_step + 1}): "
        f"non-finite {', '.join(bad)} (" + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        + ")" + (f"; {note}" if note else "")
        + ". The weights were not updated; the last good checkpoint is "
        f"{checkpoint if checkpoint.exists() else 'none (no checkpoint yet)'}. "
        "Lower --lr, or use --amp off.")


def optimizer_step(optimizer, scaler, loss: torch.Tensor) -> None:
    """Backward and step through the gradient scaler (a no-op wrapper unless fp16)."""
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1) -> list[torch.Tensor]:
    """The index batches of one epoch: a permutation seeded by (seed, epoch), so that a
    resumed run sees the same order; every process takes its own share of each global batch
    (``batch_size`` per process); incomplete batches are dropped (batch norm and the
    contrastive losses want full batches). A set smaller than one global batch gives one
    batch of everything that divides evenly."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    global_batch = batch_size * world_size
    if n < global_batch:
        per = n // world_size
        if per == 0:
            raise ValueError(f"{n} slices cannot feed {world_size} processes")
        return [perm[rank * per:(rank + 1) * per]]
    steps = n // global_batch
    return [perm[s * global_batch + rank * batch_size: s * global_batch + (rank + 1) * batch_size]
            for s in range(steps)]


def cosine_lambda(total_steps: int, warmup_steps: int = 0):
    """Multiplier of the base learning rate at a step: linear warm-up, then half a cosine
    down to 0 at ``total_steps``."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


class StopFlag:
    """SIGINT / SIGTERM ask the run to stop at the end of the current step (it then writes a
    checkpoint and exits); a second SIGINT interrupts at once."""

    def __init__(self):
        self.requested = False
        self.reason = ""

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.reason = signal.Signals(signum).name
        print(f"\n{self.reason}: stopping after this step and writing a checkpoint "
              "(press Ctrl-C again to abort without one)", file=sys.stderr, flush=True)

    @contextmanager
    def installed(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


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


class RunLog:
    """``metrics.jsonl`` (one record per epoch) and, if installed and asked for, TensorBoard.

    The records are also kept in the checkpoint; on resume the file is rewritten from them,
    so it never holds an epoch twice or one that the checkpoint has not seen.
    """

    def __init__(self, out: Path, records: list[dict] | None = None, tensorboard: bool = False,
                 enabled: bool = True):
        self.path = out / "metrics.jsonl"
        self.records = list(records or [])
        self.enabled = enabled
        self.writer = None
        if enabled:
            self.path.write_text("".join(json_text(r) + "\n" for r in self.records))
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    print("tensorboard is not installed; logging to metrics.jsonl only",
                          file=sys.stderr)
                else:
                    self.writer = SummaryWriter(str(out / "tensorboard"))

    def append(self, record: dict) -> None:
        self.records.append(record)
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json_text(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.writer.add_scalar(k, v, record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Throughput:
    """Slices per second over a run segment."""

    def __init__(self):
        self.start = time.perf_counter()
        self.count = 0

    def add(self, n: int) -> float:
        self.count += n
        return self.count / max(time.perf_counter() - self.start, 1e-9)
