"""Checkpoints that survive interruption.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then
renamed over the old one (``os.replace`` is atomic on POSIX), so a run killed while saving
keeps the previous checkpoint intact. It holds everything needed to continue bit for bit on
the CPU: model, optimizer, scheduler, gradient scaler, the RNG states (torch CPU and CUDA,
numpy, Python) and the position in the run (epoch, step within the epoch, global step).
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_atomic", "file_mode", "load_checkpoint", "open_run", "training_state",
           "restore_training", "rng_state", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the mode every other file of the run gets
        os.chmod(tmp, file_mode())
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the process's umask."""
    mask = os.umask(0o022)  # reading the umask means setting it; restored at once
    os.umask(mask)
    return 0o666 & ~mask


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic`, with a clear error if it is missing
    or is not a supercl checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there")
    try:
        # RNG states hold numpy arrays and Python tuples: not loadable with weights_only.
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a corrupt file
        raise ValueError(f"{path}: cannot read the checkpoint ({err})") from err
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: not a supercl checkpoint (no 'model' entry)")
    return ckpt


def open_run(path: Path, kind: str, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume (``resume``), or None for a new run; a new run refuses to
    overwrite an existing checkpoint, a resumed one must be of ``kind``."""
    if resume:
        ckpt = load_checkpoint(path)
        if ckpt.get("kind") != kind:
            raise ValueError(f"{path}: a {ckpt.get('kind')} checkpoint, not a {kind} one")
        return ckpt
    if path.exists():
        raise FileExistsError(f"{path} exists: pass --resume to continue that run, or "
                              "choose another --out")
    return None


def training_state(model, optimizer, scheduler, scaler) -> dict[str, Any]:
    """The state dicts a resumable checkpoint holds."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}


def restore_training(ckpt: dict[str, Any], model, optimizer, scheduler, scaler) -> tuple:
    """Load :func:`training_state` back; returns ``(epoch, step, global_step, history,
    sums)``, the position in the run and the logged records. RNG states are the caller's."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    return ckpt["epoch"], ckpt["step"], ckpt["global_step"], ckpt["history"], ckpt["sums"]
