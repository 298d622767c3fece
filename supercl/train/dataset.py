"""The data side of a run: the dataset folder (the embedded phantom when none is given), the
split by volume, and the slices of one part of the split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from supercl._validate import check_choice, check_float, check_int, check_setting
from supercl.data.nifti import (DatasetInfo, SliceSet, check_pairs, load_slices, scan_dataset,
                                split_cases, write_split)

__all__ = ["DataConfig", "PHANTOM", "resolve_data", "prepare_split", "slices_of"]

# The embedded default: 20 phantom CT volumes (supercl.data.phantom_v2) of 24 x 128 x 128 with
# 5 organ classes.
PHANTOM = dict(n_volumes=20, shape=(24, 128, 128), n_organs=5, seed=0)


@dataclass
class DataConfig:
    """Where the volumes come from and how they become slices (see ``supercl --help``)."""

    data: str | None = None
    labels: str | None = None
    modality: str | None = None
    window: tuple[float, float] = (-200.0, 300.0)
    patch_size: int = 128
    resize: str = "pad"
    label_fraction: float = 0.1
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    split_seed: int = 0
    label_seed: int | None = None  # which pool volumes are labeled, apart from split_seed

    def __post_init__(self):
        check_setting(self, "window", _check_window)
        check_setting(self, "patch_size", check_int, 1)
        check_setting(self, "resize", check_choice, ("pad", "resize", "crop"))
        check_setting(self, "label_fraction", _check_fraction, False)
        check_setting(self, "val_fraction", _check_fraction, True)
        check_setting(self, "test_fraction", _check_fraction, True)
        check_setting(self, "split_seed", check_int, 0)
        if self.label_seed is not None:
            check_setting(self, "label_seed", check_int, 0)


def _check_window(value, name: str) -> None:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"{name} must be (LOW, HIGH), got {value!r}")
    low, high = (check_float(v, name) for v in value)
    if not low < high:
        raise ValueError(f"{name} LOW HIGH needs LOW < HIGH, got {value!r}")


def _check_fraction(value, name: str, zero: bool) -> None:
    """A fraction in (0, 1], or in [0, 1) with ``zero``."""
    value = check_float(value, name)
    if not (0 <= value < 1 if zero else 0 < value <= 1):
        raise ValueError(f"{name} must be in {'[0, 1)' if zero else '(0, 1]'}, got {value:g}")


def resolve_data(data: str | None, out: Path, main: bool = True) -> Path:
    """``data`` itself, or the phantom MSD folder written under ``out/phantom`` (once)."""
    if data is not None:
        return Path(data)
    from supercl.data import write_msd

    root = out / "phantom"
    if main and not (root / "dataset.json").is_file():
        print(f"no --data given: writing the embedded phantom dataset to {root}")
        write_msd(root, overwrite=True, **PHANTOM)
    return root


def prepare_split(cfg: DataConfig, out: Path, main: bool = True,
                  pretrain_only: bool = False,
                  previous: tuple[Path, dict] | None = None,
                  write: bool = True) -> tuple[DatasetInfo, dict]:
    """Scan the dataset, split it by volume, check every volume of the split (3-D images,
    label maps of the image's shape with declared values: :func:`check_pairs`) and, with
    ``write``, write ``out/split.json`` (a training run writes it later, with
    :meth:`~supercl.train.loop.TrainingLoop.write_run_files`).

    With ``pretrain_only`` (pre-training), a dataset with fewer than 3 labeled volumes (e.g. a
    folder of unlabeled images) is not an error: every volume goes to pre-training, and the
    split says so. ``previous``: ``(checkpoint, split)`` of a run being resumed; a split that
    differs from it (other volumes) raises ``ValueError`` before ``split.json`` is written."""
    root = resolve_data(cfg.data, out, main)
    _barrier()  # the other processes of a distributed run wait for rank 0's phantom
    info = scan_dataset(root, labels=cfg.labels, modality=cfg.modality)
    n_labeled = sum(c.label is not None for c in info.cases)
    if pretrain_only and n_labeled < 3:
        split = {"pretrain": sorted(c.name for c in info.cases), "finetune": [], "val": [],
                 "test": [], "label_fraction": cfg.label_fraction, "seed": cfg.split_seed,
                 "note": f"{n_labeled} labeled volumes: all volumes used for pre-training, "
                         "none held out"}
        if main:
            print(f"{root}: {n_labeled} labeled volumes, so no validation/test volumes are held "
                  "out; every volume is used for pre-training")
    else:
        split = split_cases(info, label_fraction=cfg.label_fraction, val_fraction=cfg.val_fraction,
                            test_fraction=cfg.test_fraction, seed=cfg.split_seed,
                            label_seed=cfg.label_seed)
    check_pairs(info, [n for k in ("pretrain", "finetune", "val", "test") for n in split[k]])
    if previous is not None:
        path, before = previous
        changed = [k for k in ("pretrain", "finetune", "val", "test")
                   if sorted(before.get(k, [])) != sorted(split[k])]
        if changed:
            raise ValueError(f"{path}: --resume on a dataset whose split differs from the "
                             f"checkpoint's ({', '.join(changed)} volumes differ): {root} is not "
                             "the data this run was trained on")
    if main and write:
        write_split(split, out / "split.json")
    return info, split


def slices_of(info: DatasetInfo, names: list[str], cfg: DataConfig, *, require_labels: bool,
              progress: bool = True) -> SliceSet:
    by_name = {c.name: c for c in info.cases}
    return load_slices([by_name[n] for n in names], modality=info.modality, window=tuple(cfg.window),
                       patch_size=cfg.patch_size, resize=cfg.resize, class_names=info.class_names,
                       require_labels=require_labels, progress=progress)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
