"""Whether a multi-run command (``supercl demo``, ``supercl ablate``) starts in its folder,
continues an interrupted run there, or refuses: decided once, here, before anything is
written."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

__all__ = ["prepare_run_folder", "settings_differ"]


def settings_differ(before: dict, now: dict) -> list[str]:
    """``--name before -> now`` for every setting that differs (tuples compared as the lists
    JSON reads them back as)."""
    now = json.loads(json.dumps(now))
    return [f"--{k.replace('_', '-')} {before.get(k)} -> {now.get(k)}"
            for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]


def prepare_run_folder(out: Path, *, what: str, record: str, settings: dict,
                       files: Iterable[Path], overwrite: bool, finished: str | None = None,
                       old_defaults: dict | None = None) -> bool:
    """Decide what to do with the run folder ``out``; returns True when an interrupted run is
    continued, False when one starts (with ``overwrite``, after removing ``files``).

    ``what``: the run's name in messages ("a demo"); ``record``: the file in ``out`` that
    holds ``{"settings": ...}`` of the run that wrote it; ``files``: what counts as an earlier
    run's files (removed by ``overwrite``; a folder holding some of them but no ``record`` is
    refused); ``finished``: a file that marks a finished run, which is refused rather than
    continued; ``old_defaults``: settings that older records lack, with the value they had.

    Raises ``FileExistsError`` (files of another run, a finished run) and ``ValueError`` (a
    run with other settings), each naming what to do instead."""
    from supercl._runtime import strict_json

    files = list(files)
    if overwrite:
        for path in files:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return False
    if not files:
        return False
    if not (out / record).is_file():
        names = ", ".join(p.name for p in files[:8]) + (" ..." if len(files) > 8 else "")
        raise FileExistsError(f"{out} holds files of another run ({names}) but no {record}: "
                              "pass --overwrite to replace them, or choose another --out")
    before = (old_defaults or {}) | strict_json((out / record).read_text())["settings"]
    differ = settings_differ(before, settings)
    if differ:
        raise ValueError(f"{out} holds {what} with other settings ({'; '.join(differ)}): run it "
                         "with its own settings to continue it, pass --overwrite to start "
                         "again, or choose another --out")
    if finished is not None and (out / finished).is_file():
        raise FileExistsError(f"{out} holds a finished {what.split(' ', 1)[-1]} ({finished}): "
                              "pass --overwrite to run it again (make demo does), or choose "
                              "another --out")
    return True
