"""Scoring a fine-tuned run on the test volumes of its split: :func:`evaluate` (the
``supercl evaluate`` command and the end of ``supercl finetune``).

It lives with the trainer because it needs the trainer's data side (the split, the slices)
and its checkpoints; the metrics and :func:`~supercl.eval.predict` it uses are in
:mod:`supercl.eval`, below.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch

from supercl._runtime import resolve_device, write_json
from supercl._validate import check_int
from supercl.data.nifti import slice_names, slice_spacing, write_split
from supercl.eval.metrics import SegmentationMetrics, summarize_volumes, volume_metrics
from supercl.eval.inference import predict
from supercl.models.backbones import backbone_of
from supercl.viz import plot_dsc_bars, plot_predictions

from .checkpoint import load_checkpoint
from .dataset import DataConfig, prepare_split, slices_of

__all__ = ["evaluate", "run_data_config", "run_name"]


def run_data_config(saved: dict, given: dict | None = None, run_dir: Path | None = None
                    ) -> DataConfig:
    """The data settings of a run from its saved config (a checkpoint's ``"config"``), with
    the settings in ``given`` (a dict of :class:`DataConfig` fields; None values are "not
    given") on top. A run trained on the embedded phantom (``data`` None) is scored on the
    phantom in its own folder ``run_dir/phantom`` when that is there, rather than on a copy
    written next to the evaluation."""
    values = {f.name: saved[f.name] for f in fields(DataConfig) if f.name in saved}
    unknown = sorted(set(given or {}) - {f.name for f in fields(DataConfig)})
    if unknown:
        raise TypeError(f"cfg: unknown data settings {unknown}; the fields of DataConfig are "
                        + ", ".join(f.name for f in fields(DataConfig)))
    values |= {k: v for k, v in (given or {}).items() if v is not None}
    if values.get("data") is None and run_dir is not None \
            and (run_dir / "phantom" / "dataset.json").is_file():
        values["data"] = str(run_dir / "phantom")
    return DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def evaluate(run: str | Path, cfg: DataConfig | dict | None = None, *,
             out: str | Path | None = None, info=None, split=None, device: str = "auto",
             threads: int = 0, figures: bool = True, progress: bool = True) -> dict:
    """Score a fine-tuned model on the test volumes of its split.

    ``run``: a fine-tuning run folder (its ``best.pt`` is scored) or a checkpoint file
    (``best.pt`` or ``checkpoint.pt``). ``cfg``: the data settings; None (the default) takes
    the run's own, from its checkpoint (the data it was trained on, its patch size, window
    and split), as ``supercl evaluate RUN`` does; a dict changes some of them (e.g.
    ``{"patch_size": 64}``); a :class:`DataConfig` is used as it is. ``threads``: CPU threads
    (0: torch's default).

    DSC and JC per foreground class with intersection and union summed over the whole test
    set (the reference metric), their mean over classes, and per-volume DSC and HD95 (mm,
    3-D, on the slices at the model's resolution), with the data settings used (``"data"``).
    Scores are fractions in [0, 1]; the line printed gives them in percent.
    ``evaluation.json`` is strict JSON: an undefined score is ``null`` (the HD95 of a class
    that is empty in a volume's prediction or truth; DSC/JC of a class absent from both).
    Writes ``split.json``, ``evaluation.json``, ``predictions.png`` (ground truth and
    prediction side by side, on test slices that show every class) and ``dsc.png`` to
    ``out`` (default: the run folder), once the test volumes are loaded.

    Raises ``FileNotFoundError`` for a missing checkpoint, ``ValueError`` for one that is not
    a supercl model or for bad data, ``TypeError`` for a ``cfg`` of another type.
    """
    path = Path(run)
    checkpoint = path / "best.pt" if path.is_dir() else path
    if check_int(threads, "threads", minimum=0):
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kind") not in (None, "model", "finetune"):
        raise ValueError(f"{checkpoint}: a {ckpt['kind']} checkpoint, not a fine-tuned model; "
                         "evaluate a fine-tuning run (its best.pt)")
    saved = ckpt.get("config", {})
    if cfg is None or isinstance(cfg, dict):
        cfg = run_data_config(saved, cfg, checkpoint.parent)
    elif not isinstance(cfg, DataConfig):
        raise TypeError(f"cfg must be a DataConfig, a dict of its fields or None, got "
                        f"{type(cfg).__name__}")
    out = Path(out) if out is not None else checkpoint.parent
    write = info is None
    if info is None:
        info, split = prepare_split(cfg, out, write=False)
    num_classes = ckpt.get("num_classes") or max(info.class_names) + 1
    model = backbone_of(saved).segmenter(num_classes)  # the run's network (default: U-Net)
    model.load_state_dict(ckpt["model"])
    model.to(dev)
    test = slices_of(info, split["test"], cfg, require_labels=True, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    if write:
        write_split(split, out / "split.json")
    pred = predict(model, test.images, device=dev)
    metrics = SegmentationMetrics(num_classes, info.class_names)
    metrics.update(pred, test.labels)
    overall = metrics.compute()
    by_name = {c.name: c for c in info.cases}
    per_volume = {}
    for v, name in enumerate(test.names):
        sel = test.volume == v
        per_volume[name] = volume_metrics(pred[sel].numpy(), test.labels[sel].numpy(), num_classes,
                                          spacing=slice_spacing(by_name[name], cfg.patch_size, cfg.resize),
                                          class_names=info.class_names)
    result = {"checkpoint": str(checkpoint), "epoch": ckpt.get("epoch"),
              "data": {f.name: getattr(cfg, f.name) for f in fields(DataConfig)},
              "test_volumes": list(test.names), "dsc": overall["dsc"], "jc": overall["jc"],
              "mean_dsc": overall["mean_dsc"], "mean_jc": overall["mean_jc"],
              "per_volume": per_volume, "volume_summary": summarize_volumes(list(per_volume.values()))}
    write_json(out / "evaluation.json", result)
    name = run_name(checkpoint)
    if figures:
        plot_predictions(test.images, test.labels, pred, test.volume, slice_names(test),
                         num_classes, out / "predictions.png", class_names=info.class_names,
                         run=name)
        plot_dsc_bars({name: overall["dsc"]}, out / "dsc.png", title=f"{name}: test DSC per class")
    print(f"{name}: test DSC {100 * overall['mean_dsc']:.2f}%  JC {100 * overall['mean_jc']:.2f}% "
          f"over {len(test.names)} volumes; details in {out / 'evaluation.json'}")
    return result


def run_name(checkpoint: Path) -> str:
    """How figures and messages name a run: the name of the folder of its checkpoint (the arm
    of a demo: ``scratch``, ``supercl``)."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.resolve().name or checkpoint.stem
