"""Scoring a fine-tuned run on the test volumes of its split: :func:`evaluate` (the
``supercl evaluate`` command and the end of ``supercl finetune``).

It lives with the trainer because it needs the trainer's data side (the split, the slices)
and its checkpoints; the metrics and :func:`~supercl.eval.predict` it uses are in
:mod:`supercl.eval`, below.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from supercl._runtime import resolve_device, write_json
from supercl.data.nifti import slice_names, slice_spacing
from supercl.eval.metrics import SegmentationMetrics, summarize_volumes, volume_metrics
from supercl.eval.predict import predict
from supercl.models import UNet
from supercl.viz import plot_dsc_bars, plot_predictions

from .checkpoint import load_checkpoint
from .dataset import DataConfig, prepare_split, slices_of

__all__ = ["evaluate"]


def evaluate(checkpoint: str | Path, cfg: DataConfig, *, out: str | Path | None = None,
             info=None, split=None, device: str = "auto", figures: bool = True,
             progress: bool = True) -> dict:
    """Score a fine-tuned model (``best.pt`` or ``checkpoint.pt``) on the test volumes.

    DSC and JC per foreground class with intersection and union summed over the whole test
    set (the reference metric), their mean over classes, and per-volume DSC and HD95 (mm,
    3-D, on the slices at the model's resolution), with the data settings used (``"data"``).
    ``evaluation.json`` is strict JSON: an undefined score is ``null`` (the HD95 of a class
    that is empty in a volume's prediction or truth; DSC/JC of a class absent from both).
    Writes ``evaluation.json``,
    ``predictions.png`` (ground truth and prediction side by side) and ``dsc.png`` to ``out``.
    """
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint)
    out = Path(out) if out is not None else Path(checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    if info is None:
        info, split = prepare_split(cfg, out)
    num_classes = ckpt.get("num_classes") or max(info.class_names) + 1
    saved = ckpt.get("config", {})
    model = UNet(1, saved.get("base_channels", 32), num_classes, saved.get("depth", 4))
    model.load_state_dict(ckpt["model"])
    model.to(dev)
    test = slices_of(info, split["test"], cfg, require_labels=True, progress=progress)
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
    if figures:
        plot_predictions(test.images, test.labels, pred, test.volume, slice_names(test),
                         num_classes, out / "predictions.png", class_names=info.class_names)
        plot_dsc_bars({Path(out).name: overall["dsc"]}, out / "dsc.png", title="test DSC per class")
    print(f"test DSC {100 * overall['mean_dsc']:.2f}  JC {100 * overall['mean_jc']:.2f} over "
          f"{len(test.names)} volumes; details in {out / 'evaluation.json'}")
    return result
