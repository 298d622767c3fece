"""The one training loop of supercl, and what it needs: device choice, seeded batching, the
cosine schedule, interruption handling, non-finite loss detection and the run folder's logs.

:class:`TrainingLoop` owns everything that pre-training and fine-tuning have in common: the
checks before a run writes anything, the resume of an interrupted run, epochs and steps, AMP
and the gradient scaler, the finite check, checkpoints and signals, ``metrics.jsonl`` and the
progress bars. A kind of run supplies a :class:`Task`: its model and optimizer, its step (the
forward pass and the loss terms) and its evaluation after each epoch.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from supercl._runtime import json_text, resolve_device, write_json
from supercl._validate import (SettingError, check_bool, check_choice, check_float, check_int,
                               check_setting)
from supercl.models.backbones import BACKBONES, backbone_of

from .dataset import DataConfig

__all__ = ["TrainingLoop", "Task", "RunConfig", "NonFiniteLossError", "amp_dtype",
           "check_resume", "RESUMABLE", "epoch_batches", "total_steps",
           "optimizer_step", "cosine_lambda", "host_values", "check_finite", "StopFlag", "RunLog"]


@dataclass
class RunConfig(DataConfig):
    """The settings pre-training and fine-tuning share (their options have the same names)."""

    base_channels: int = 32
    depth: int = 4
    #: The network whose encoder is trained (supercl.models.backbones): "supercl" (the U-Net
    #: of base_channels and depth), "nnunet" (the 2-D network of the nnU-Net v2 plans file
    #: ``plans``, configuration ``plans_configuration``) or "monai" (BasicUNet, base_channels).
    backbone: str = "supercl"
    plans: str | None = None
    plans_configuration: str = "2d"
    amp: str = "auto"
    device: str = "auto"
    seed: int = 0
    threads: int = 0
    checkpoint_every: int = 0
    max_steps: int = 0
    #: Train on random crop_size x crop_size crops of the patch_size slices (0: whole slices).
    #: Keeps the native resolution, where small structures exist, at the cost of a
    #: down-scaled slice.
    crop_size: int = 0
    resume: bool = False
    progress: bool = True
    tensorboard: bool = False
    figures: bool = True

    def __post_init__(self):
        super().__post_init__()
        check_setting(self, "base_channels", check_int, 1)
        check_setting(self, "depth", check_int, 1)
        check_setting(self, "backbone", check_choice, BACKBONES)
        check_setting(self, "amp", check_choice, ("auto", "off", "bf16", "fp16"))
        check_setting(self, "seed", check_int)
        for name in ("threads", "checkpoint_every", "max_steps", "crop_size"):
            check_setting(self, name, check_int, 0)
        for name in ("resume", "progress", "tensorboard", "figures"):
            check_setting(self, name, check_bool)
        multiple, what = 2**self.depth, "2**depth"
        if self.backbone != "supercl":  # the backbone's own down-sampling (plans are read here)
            try:
                multiple, what = max(backbone_of(self).multiple), f"the {self.backbone} network's"
            except (ValueError, FileNotFoundError) as err:
                raise SettingError("plans" if self.backbone == "nnunet" else "depth",
                                   str(err)) from err
        if self.patch_size % multiple:
            raise SettingError("patch_size", f"must be a multiple of {what} = {multiple}, "
                                             f"got {self.patch_size}")
        if self.crop_size and (self.crop_size > self.patch_size or self.crop_size % multiple):
            raise SettingError("crop_size", f"must be 0 or a multiple of {what} = "
                                            f"{multiple} no larger than patch_size = "
                                            f"{self.patch_size}, got {self.crop_size}")

    def _check_schedule(self) -> None:
        """The settings every kind of run has, under its own defaults."""
        check_setting(self, "epochs", check_int, 1)
        check_setting(self, "batch_size", check_int, 1)
        check_setting(self, "lr", check_float, positive=True)
        check_setting(self, "weight_decay", check_float, nonnegative=True)


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; the run stops and the last good checkpoint is kept."""


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """"auto": bfloat16 autocast on CUDA, full precision on the CPU."""
    if amp not in ("auto", "off", "bf16", "fp16"):
        raise ValueError(f"amp must be one of auto, off, bf16, fp16, got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if amp == "fp16" else torch.bfloat16


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
        old, new = before.get(key, _ADDED.get(key, "<unset>")), given.get(key, "<unset>")
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


#: Settings added after runs were written: a checkpoint without one ran with this value.
_ADDED = {"backbone": "supercl", "plans": None, "plans_configuration": "2d"}


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
    backward(scaler, loss)
    optimizer_update(optimizer, scaler)


def backward(scaler, loss: torch.Tensor) -> None:
    """The first half of :func:`optimizer_step`: the (scaled) backward pass."""
    scaler.scale(loss).backward()


def optimizer_update(optimizer, scaler) -> None:
    """The second half of :func:`optimizer_step`: the step through the gradient scaler (with
    fp16 the scaler reads its inf check back to the host; bf16 and fp32 do not)."""
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


@dataclass
class Task:
    """What a kind of run (pre-training, fine-tuning) gives :class:`TrainingLoop`.

    ``step(indices, global_step)`` runs the forward pass of one batch (``indices`` into the
    training set of ``n_items`` slices, under :meth:`TrainingLoop.autocast` where it wants
    mixed precision) and returns 0-d tensors: ``"loss"`` (backpropagated), the other ``terms``
    and the ``logged`` values, and optionally ``"note"``, a text (or a function returning
    one, called only when a term is not finite) that explains a non-finite
    loss. ``terms`` must be finite (the run stops otherwise) and are shown while training;
    all of them and ``logged`` are averaged per epoch in ``metrics.jsonl``.
    ``evaluate(epoch)`` (1-based, after each epoch) returns further fields of the epoch's
    record; ``state()`` further entries of the checkpoint; ``describe(record)`` the line
    printed after each epoch.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    n_items: int
    step: Callable[[torch.Tensor, int], dict[str, Any]]
    terms: tuple[str, ...]
    describe: Callable[[dict], str]
    logged: tuple[str, ...] = ()
    evaluate: Callable[[int], dict] | None = None
    state: Callable[[], dict] = dict
    warmup_steps: int = 0
    #: Called after each epoch's evaluation and checkpoint (and once before the first epoch of
    #: a resumed run): True ends the run there as finished (early stopping).
    should_stop: Callable[[], bool] | None = None


class TrainingLoop:
    """One run: its checks, its folder, its checkpoints and its epochs.

    Construct it first: it checks the settings, the device and the checkpoint to resume
    (and that checkpoint's settings) and joins the process group of a distributed run
    (``distributed=True``); it writes nothing. Then check and load the data and build the
    model; once everything that can be checked has passed, :meth:`write_run_files` makes the
    run folder (a run that fails before then leaves no file behind); then call :meth:`run`
    with a :class:`Task`.

    Writes ``split.json`` and ``config.json`` (:meth:`write_run_files`), ``metrics.jsonl``
    (one record per epoch: ``epoch``, ``global_step``, the epoch means of the task's values,
    its evaluation, ``lr``, ``slices_per_s``) and ``checkpoint.pt`` (after every epoch, every ``checkpoint_every``
    steps and on SIGINT/SIGTERM).
    """

    def __init__(self, cfg: RunConfig, kind: str, what: str, *, distributed: bool = False):
        from . import distributed as dist_mod
        from .checkpoint import open_run

        if not distributed and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(f"{what} runs in one process; launch `supercl {kind}` without "
                             "torchrun (only `pretrain` is distributed)")
        self.cfg, self.kind, self.what = cfg, kind, what
        self.device = resolve_device(cfg.device)
        self.amp = amp_dtype(cfg.amp, self.device)
        self.out = Path(cfg.out)
        self.checkpoint = self.out / "checkpoint.pt"
        self.resumed = open_run(self.checkpoint, kind, cfg.resume)  # every process checks
        if self.resumed is not None:
            check_resume(cfg, self.resumed.get("config", {}), self.checkpoint,
                         done_epochs=self.resumed["epoch"])
        self.dist = dist_mod.setup(cfg.device) if distributed else dist_mod.DistInfo()
        self.main = self.dist.main
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.device.type == "cuda" and self.dist.world_size > 1:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.epoch = self.step = self.global_step = 0
        self.sums: dict[str, float] = {}
        self.stop = StopFlag()

    @property
    def previous(self) -> tuple[Path, dict] | None:
        """``(checkpoint, split)`` of the run being resumed, None for a new run."""
        return None if self.resumed is None else (self.checkpoint, self.resumed["split"])

    def write_run_files(self, split: dict, **extra) -> None:
        """The run's first files, once the data and the model have passed every check: the
        run folder, ``split.json`` (``split``) and ``config.json`` (the settings, ``extra``
        and the device)."""
        from supercl.data.nifti import write_split

        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_split(split, self.out / "split.json")
            write_json(self.out / "config.json", asdict(self.cfg) | extra
                       | {"device": str(self.device)})

    def autocast(self):
        """The step's mixed-precision context (``--amp``): bf16 or fp16 autocast, or none."""
        return torch.autocast(self.device.type, dtype=self.amp or torch.float32,
                              enabled=self.amp is not None)

    def save(self) -> None:
        """Write ``checkpoint.pt``: everything to continue the run where it is now."""
        from .checkpoint import rng_state, save_atomic, training_state

        rngs = _gather_objects(rng_state())
        if not self.main:
            return
        task = self.task
        save_atomic({"kind": self.kind, "config": asdict(self.cfg),
                     **training_state(task.model, task.optimizer, self.scheduler, self.scaler),
                     "rng": rngs, "epoch": self.epoch, "step": self.step,
                     "global_step": self.global_step, "history": self.log.records,
                     "sums": self.sums, **task.state()}, self.checkpoint)

    def end_step(self) -> None:
        """After every optimizer step: the periodic checkpoint (``--checkpoint-every``)."""
        every = self.cfg.checkpoint_every
        if every and self.global_step % every == 0:
            self.save()

    def run(self, task: Task) -> dict:
        """Train ``task`` until its epochs or ``max_steps`` are done, or a signal stops it.
        Returns ``{"status": "finished" | "interrupted", "out", "epochs", "global_step",
        "history"}``; raises :class:`NonFiniteLossError` for a NaN or inf term."""
        from tqdm import tqdm

        from .checkpoint import restore_training, set_rng_state

        cfg, dist, main = self.cfg, self.dist, self.main
        self.task = task
        rank, world = dist.rank, dist.world_size
        steps_per_epoch = len(epoch_batches(task.n_items, cfg.batch_size, cfg.seed, 0, rank, world))
        total = total_steps(cfg.epochs, steps_per_epoch, cfg.max_steps)
        optimizer = task.optimizer
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, cosine_lambda(total, task.warmup_steps))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        history: list[dict] = []
        if self.resumed is not None:
            ckpt = self.resumed
            self.epoch, self.step, self.global_step, history, self.sums = restore_training(
                ckpt, task.model, optimizer, self.scheduler, self.scaler)
            states = ckpt["rng"]
            states = [states] if isinstance(states, dict) else states  # one-process runs of 0.1
            if len(states) != world:
                raise ValueError(f"{self.checkpoint} was written by {len(states)} processes; "
                                 f"resume it with the same number, not {world}")
            set_rng_state(states[rank])
            if main:
                print(f"resuming {self.out} at epoch {self.epoch + 1}, step {self.step} "
                      f"(global step {self.global_step})")
        self.log = RunLog(self.out, history, cfg.tensorboard, enabled=main)
        values_of = task.terms + task.logged
        status = "finished"
        stopped_early = task.should_stop is not None and task.should_stop()
        with self.stop.installed():
            while self.epoch < cfg.epochs and self.global_step < total and not stopped_early:
                batches = epoch_batches(task.n_items, cfg.batch_size, cfg.seed, self.epoch, rank,
                                        world)
                if self.step == 0:
                    self.sums = {k: 0.0 for k in values_of} | {"steps": 0, "seconds": 0.0,
                                                               "slices": 0}
                bar = tqdm(total=len(batches), initial=self.step,
                           desc=f"{self.kind} {self.epoch + 1}/{cfg.epochs}",
                           disable=not (main and cfg.progress), unit="step", leave=False)
                speed = Throughput()
                task.model.train()
                while self.step < len(batches) and self.global_step < total:
                    started = time.perf_counter()
                    idx = batches[self.step]
                    optimizer.zero_grad(set_to_none=True)
                    terms = task.step(idx, self.global_step)
                    note = terms.pop("note", "")
                    # The backward is queued before the step's one read-back of its values,
                    # so that the GPU computes it while the host waits (reading first would
                    # leave the GPU idle while the host launches the backward). A non-finite
                    # loss still stops the run before the optimizer changes any weight.
                    # (A loss without a graph goes through the check first, so that it stops
                    # the run as non-finite rather than failing in backward.)
                    early = terms["loss"].requires_grad
                    if early:
                        backward(self.scaler, terms["loss"])
                    everything = host_values(terms, values_of)  # one device-to-host copy
                    values = {k: everything[k] for k in task.terms}
                    self._check_finite(values, note() if callable(note) else note)
                    if not early:
                        backward(self.scaler, terms["loss"])
                    optimizer_update(optimizer, self.scaler)
                    self.scheduler.step()
                    self.step += 1
                    self.global_step += 1
                    for k, v in everything.items():
                        self.sums[k] += v
                    self.sums["steps"] += 1
                    self.sums["slices"] += len(idx) * world
                    self.sums["seconds"] += time.perf_counter() - started
                    rate = speed.add(len(idx) * world)
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}
                                    | {"slices/s": f"{rate:.1f}"})
                    self.end_step()
                    if self.stop.requested:
                        break
                bar.close()
                if self.stop.requested and self.step < len(batches) and self.global_step < total:
                    self.save()
                    status = "interrupted"
                    if main:
                        print(f"{self.stop.reason}: checkpoint written to {self.checkpoint} "
                              f"(epoch {self.epoch + 1}, step {self.step}); continue with the "
                              "same command and --resume", file=sys.stderr)
                    break
                n = max(self.sums["steps"], 1)
                record = {"epoch": self.epoch + 1, "global_step": self.global_step}
                record |= {k: self.sums[k] / n for k in values_of}
                if task.evaluate is not None:
                    record |= task.evaluate(self.epoch + 1)
                record |= {"lr": optimizer.param_groups[0]["lr"],
                           "slices_per_s": self.sums["slices"] / max(self.sums["seconds"], 1e-9)}
                self.log.append(record)
                self.epoch, self.step = self.epoch + 1, 0
                self.save()
                if main:
                    print(f"{self.kind} epoch {self.epoch}/{cfg.epochs}: {task.describe(record)}",
                          flush=True)
                if self.stop.requested:
                    status = "interrupted"
                    break
                stopped_early = task.should_stop is not None and task.should_stop()
                if stopped_early and main:
                    print(f"{self.kind}: stopped early after epoch {self.epoch}", flush=True)
        self.log.close()
        return {"status": status, "out": str(self.out), "epochs": self.epoch,
                "global_step": self.global_step, "history": self.log.records,
                "stopped_early": bool(stopped_early), "planned_steps": total}

    def _check_finite(self, values: dict[str, float], note: str) -> None:
        from . import distributed as dist_mod

        elsewhere = False
        if dist_mod.is_distributed():  # every process must stop together
            flag = torch.tensor([float(not all(map(math.isfinite, values.values())))],
                                device=self.device)
            torch.distributed.all_reduce(flag)
            elsewhere = bool(flag.item())
        check_finite(values, what=self.what, epoch=self.epoch, step=self.step,
                     global_step=self.global_step, checkpoint=self.checkpoint,
                     elsewhere=elsewhere, note=note)


def _gather_objects(obj) -> list:
    """``obj`` of every process, in rank order (``[obj]`` in a one-process run)."""
    from . import distributed as dist_mod

    if not dist_mod.is_distributed():
        return [obj]
    parts = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, obj)
    return parts
