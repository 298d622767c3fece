"""Fine-tuning and evaluation.

Fine-tuning trains the whole U-Net on the labeled fine-tuning volumes of the split, its
encoder initialised from a pre-training run (only the encoder is transferred) or from
scratch, with cross-entropy + soft Dice and Adam on a cosine schedule. After every epoch it
scores the validation volumes; the best epoch by mean foreground DSC is kept as
``best.pt``. The test volumes are used only by :func:`evaluate`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from supercl.models import UNet

from .checkpoint import (load_checkpoint, open_run, restore_training, rng_state, save_atomic,
                         set_rng_state, training_state)
from .dataset import DataConfig, prepare_split, slices_of
from .loop import (RunConfig, RunLog, StopFlag, Throughput, amp_dtype, check_config,
                   check_finite, check_resume, cosine_lambda, epoch_batches, host_values,
                   optimizer_step, resolve_device, total_steps, write_json)
from .metrics import SegmentationMetrics, summarize_volumes, volume_metrics

__all__ = ["FinetuneConfig", "finetune", "evaluate", "dice_loss", "predict"]


@dataclass
class FinetuneConfig(RunConfig):
    """Every setting of a fine-tuning run (``supercl finetune --help``)."""

    out: str = "runs/finetune"
    pretrained: str | None = None
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    dice_weight: float = 1.0
    augment: bool = True
    evaluate: bool = True


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Soft Dice loss over the foreground classes: ``1 - mean_c (2 sum p_c g_c + eps) /
    (sum p_c + sum g_c + eps)`` with sums over the whole batch.

    logits (B, K, H, W) float, target (B, H, W) int64 in [0, K) -> 0-d tensor.
    """
    probs = logits.float().softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)[1:]
    denom = (probs.sum(dims) + onehot.sum(dims))[1:]
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def _load_encoder(path: str, model: UNet) -> tuple[Path, dict]:
    """Load the encoder of a pre-training run (its folder, ``encoder.pt`` or ``checkpoint.pt``);
    returns the file and the pre-training split stored with it."""
    p = Path(path)
    if p.is_dir():
        p = p / "encoder.pt" if (p / "encoder.pt").exists() else p / "checkpoint.pt"
    if not p.is_file():
        raise FileNotFoundError(f"--pretrained {path}: no encoder.pt or checkpoint.pt there")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{p}: cannot read the checkpoint ({err})") from err
    if isinstance(ckpt, dict) and "encoder" in ckpt:
        state = ckpt["encoder"]
    elif isinstance(ckpt, dict) and ckpt.get("kind") == "pretrain":
        state = {k[len("encoder."):]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    else:
        raise ValueError(f"{p}: not a supercl pre-training checkpoint")
    try:
        missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{p}: the encoder does not match this U-Net; use the --base-channels "
                         f"and --depth of the pre-training run ({str(err).splitlines()[1].strip()})") from err
    if missing or unexpected:
        raise ValueError(f"{p}: the encoder does not match this U-Net (missing {missing[:3]}..., "
                         f"unexpected {unexpected[:3]}...); use the same --base-channels and --depth")
    return p, ckpt.get("split", {})


class _JointAugment:
    """Flip, rotation and scale applied jointly to slices and label maps (kornia); built once
    per run."""

    def __init__(self):
        import kornia.augmentation as K

        self.aug = K.AugmentationSequential(K.RandomHorizontalFlip(p=0.5),
                                            K.RandomAffine(degrees=15.0, scale=(0.9, 1.1), p=0.5),
                                            data_keys=["input", "mask"])

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        xa, ya = self.aug(x, y[:, None].float())
        return xa, ya[:, 0].round().long()


@torch.no_grad()
def predict(model: UNet, images: torch.Tensor, batch_size: int = 32,
            device: torch.device | None = None) -> torch.Tensor:
    """Argmax class maps of (N, 1, P, P) slices -> (N, P, P) int64 on the CPU, in eval mode."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [model(images[i:i + batch_size].to(device)).argmax(1).cpu()
           for i in range(0, images.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, *images.shape[2:], dtype=torch.long)


def after_step(global_step: int) -> None:
    """Called after every optimizer step (a hook for tests; does nothing)."""


def finetune(cfg: FinetuneConfig) -> dict:
    """Fine-tune (or, with ``cfg.resume``, continue), then evaluate the best model on the test
    volumes when ``cfg.evaluate``. Writes ``config.json``, ``split.json``, ``metrics.jsonl``,
    ``checkpoint.pt``, ``best.pt``, ``loss_curves.png`` and the evaluation's files to
    ``cfg.out``; returns a summary dict."""
    check_config(cfg)
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("fine-tuning runs in one process; launch `supercl finetune` without "
                         "torchrun (only `pretrain` is distributed)")
    # Everything is checked before anything is written (see pretrain).
    device = resolve_device(cfg.device)
    dtype = amp_dtype(cfg.amp, device)
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    ckpt = open_run(ckpt_path, "finetune", cfg.resume)
    if ckpt is not None:
        check_resume(cfg, ckpt.get("config", {}), ckpt_path, done_epochs=ckpt["epoch"])
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info, split = prepare_split(cfg, out,
                                previous=None if ckpt is None else (ckpt_path, ckpt["split"]))
    write_json(out / "config.json", asdict(cfg) | {"device": str(device)})
    num_classes = max(info.class_names) + 1
    train = slices_of(info, split["finetune"], cfg, require_labels=True, progress=cfg.progress)
    val = slices_of(info, split["val"], cfg, require_labels=True, progress=cfg.progress)

    torch.manual_seed(cfg.seed)
    model = UNet(1, cfg.base_channels, num_classes, cfg.depth)
    source = None
    if cfg.pretrained and ckpt is None:
        source, pretrain_split = _load_encoder(cfg.pretrained, model)
        _warn_overlap(source, pretrain_split, split)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(epoch_batches(len(train), cfg.batch_size, cfg.seed, 0))
    total = total_steps(cfg.epochs, steps_per_epoch, cfg.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lambda(total))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    epoch, step, global_step, history, sums, best = 0, 0, 0, [], {}, {"val_dsc": -1.0, "epoch": 0}
    if ckpt is not None:
        epoch, step, global_step, history, sums = restore_training(ckpt, model, optimizer,
                                                                   scheduler, scaler)
        best = ckpt["best"]
        set_rng_state(ckpt["rng"])
        print(f"resuming {out} at epoch {epoch + 1}, step {step} (global step {global_step})")
    else:
        print(f"fine-tuning on {len(split['finetune'])} volumes ({len(train)} slices), "
              f"validating on {len(split['val'])}; encoder "
              + (f"from {source}" if source else "from scratch"))
    log = RunLog(out, history, cfg.tensorboard)
    augment = _JointAugment() if cfg.augment else None

    def save(epoch_: int, step_: int) -> None:
        save_atomic({"kind": "finetune", "config": asdict(cfg),
                     **training_state(model, optimizer, scheduler, scaler),
                     "rng": rng_state(), "epoch": epoch_,
                     "step": step_, "global_step": global_step, "history": log.records,
                     "sums": sums, "best": best, "split": split, "num_classes": num_classes,
                     "class_names": info.class_names}, ckpt_path)

    from tqdm import tqdm

    stop = StopFlag()
    status = "finished"
    with stop.installed():
        while epoch < cfg.epochs and global_step < total:
            batches = epoch_batches(len(train), cfg.batch_size, cfg.seed, epoch)
            if step == 0:
                sums = {"loss": 0.0, "ce": 0.0, "dice": 0.0, "steps": 0, "seconds": 0.0, "slices": 0}
            bar = tqdm(total=len(batches), initial=step, desc=f"finetune {epoch + 1}/{cfg.epochs}",
                       disable=not cfg.progress, unit="step", leave=False)
            speed = Throughput()
            model.train()
            while step < len(batches) and global_step < total:
                started = time.perf_counter()
                idx = batches[step]
                x = train.images[idx].to(device)
                y = train.labels[idx].to(device)
                if cfg.augment:
                    x, y = augment(x, y)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    logits = model(x)
                ce = F.cross_entropy(logits.float(), y)
                dl = dice_loss(logits, y)
                loss = ce + cfg.dice_weight * dl
                values = host_values({"loss": loss, "ce": ce, "dice": dl}, ("loss", "ce", "dice"))
                check_finite(values, what="fine-tuning", epoch=epoch, step=step,
                             global_step=global_step, checkpoint=ckpt_path)
                optimizer_step(optimizer, scaler, loss)
                scheduler.step()
                step += 1
                global_step += 1
                for k, v in values.items():
                    sums[k] += v
                sums["steps"] += 1
                sums["slices"] += x.shape[0]
                sums["seconds"] += time.perf_counter() - started
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}
                                | {"slices/s": f"{speed.add(x.shape[0]):.1f}"})
                after_step(global_step)
                if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0:
                    save(epoch, step)
                if stop.requested:
                    break
            bar.close()
            if stop.requested and step < len(batches) and global_step < total:
                save(epoch, step)
                status = "interrupted"
                print(f"{stop.reason}: checkpoint written to {ckpt_path}; continue with the same "
                      "command and --resume", file=sys.stderr)
                break
            scores = _validate(model, val, num_classes, info.class_names, device)
            n = max(sums["steps"], 1)
            record = {"epoch": epoch + 1, "global_step": global_step,
                      "loss": sums["loss"] / n, "ce": sums["ce"] / n, "dice": sums["dice"] / n,
                      "val_dsc": scores["mean_dsc"], "val_jc": scores["mean_jc"],
                      "lr": optimizer.param_groups[0]["lr"],
                      "slices_per_s": sums["slices"] / max(sums["seconds"], 1e-9)}
            if scores["mean_dsc"] > best["val_dsc"]:
                best = {"val_dsc": scores["mean_dsc"], "epoch": epoch + 1}
                save_atomic({"kind": "model", "model": model.state_dict(), "config": asdict(cfg),
                             "num_classes": num_classes, "class_names": info.class_names,
                             "epoch": epoch + 1, "val_dsc": scores["mean_dsc"], "split": split},
                            out / "best.pt")
            log.append(record)
            epoch, step = epoch + 1, 0
            save(epoch, step)
            print(f"finetune epoch {epoch}/{cfg.epochs}: loss {record['loss']:.4f} "
                  f"val DSC {100 * record['val_dsc']:.2f} (best {100 * best['val_dsc']:.2f} at "
                  f"epoch {best['epoch']})", flush=True)
            if stop.requested:
                status = "interrupted"
                break
    log.close()
    if cfg.figures and log.records:  # drawn once at the end: ~0.3 s, more than an epoch here
        from supercl.viz import plot_loss_curves

        plot_loss_curves(log.records, out / "loss_curves.png",
                         keys=["loss", "ce", "dice", "val_dsc"], title="fine-tuning")
    summary = {"status": status, "out": str(out), "epochs": epoch, "global_step": global_step,
               "best": best, "history": log.records}
    if status == "finished" and cfg.evaluate:
        summary["evaluation"] = evaluate(out / "best.pt", cfg, out=out, info=info, split=split,
                                         device=cfg.device, figures=cfg.figures,
                                         progress=cfg.progress)
    return summary


def _validate(model, val, num_classes, class_names, device) -> dict:
    metrics = SegmentationMetrics(num_classes, class_names)
    metrics.update(predict(model, val.images, device=device), val.labels)
    return metrics.compute()


def _warn_overlap(source: Path, pretrain_split: dict, split: dict) -> None:
    seen = set(pretrain_split.get("pretrain", []))
    leaked = seen & (set(split["val"]) | set(split["test"]))
    if leaked:
        print(f"warning: {len(leaked)} validation/test volumes of this split were in the "
              f"pre-training set of {source} (e.g. {sorted(leaked)[:3]}); use the same data "
              "and --split-seed for both", file=sys.stderr)


def _spacing(case, cfg) -> tuple[float, float, float]:
    """Voxel size (z, y, x) in mm of the slices as the model sees them."""
    import nibabel as nib

    img = nib.load(str(case.image))
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    sx, sy, sz = (zooms + [1.0, 1.0, 1.0])[:3]
    width, height = img.shape[0], img.shape[1]
    if cfg.resize == "resize":
        sy, sx = sy * height / cfg.patch_size, sx * width / cfg.patch_size
    elif cfg.resize == "pad":  # one scale for both axes, the one that fits the longer side
        scale = min(cfg.patch_size / height, cfg.patch_size / width)
        sy, sx = sy / scale, sx / scale
    return sz, sy, sx


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
    from supercl.viz import plot_dsc_bars

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
                                          spacing=_spacing(by_name[name], cfg),
                                          class_names=info.class_names)
    result = {"checkpoint": str(checkpoint), "epoch": ckpt.get("epoch"),
              "data": {f.name: getattr(cfg, f.name) for f in fields(DataConfig)},
              "test_volumes": list(test.names), "dsc": overall["dsc"], "jc": overall["jc"],
              "mean_dsc": overall["mean_dsc"], "mean_jc": overall["mean_jc"],
              "per_volume": per_volume, "volume_summary": summarize_volumes(list(per_volume.values()))}
    write_json(out / "evaluation.json", result)
    if figures:
        _prediction_figure(test, pred, num_classes, out / "predictions.png", info.class_names)
        plot_dsc_bars({Path(out).name: overall["dsc"]}, out / "dsc.png", title="test DSC per class")
    print(f"test DSC {100 * overall['mean_dsc']:.2f}  JC {100 * overall['mean_jc']:.2f} over "
          f"{len(test.names)} volumes; details in {out / 'evaluation.json'}")
    return result


def slice_names(slices) -> list[str]:
    """A caption per slice of a :class:`~supercl.data.nifti.SliceSet`: "case, slice k of D"
    (k counted from 0 along the volume's last axis, as in the NIfTI file)."""
    volume = slices.volume.tolist()
    first, depth = {}, {}
    for i, v in enumerate(volume):
        first.setdefault(v, i)
        depth[v] = depth.get(v, 0) + 1
    return [f"{slices.names[v]}, slice {i - first[v]} of {depth[v]}" for i, v in enumerate(volume)]


def _prediction_figure(test, pred, num_classes, path, class_names=None, shown: int = 6) -> None:
    from supercl.viz import PALETTE, plot_image_grid, segmentation_tile

    labels = test.labels
    # the slice with the most foreground of each volume first, then the next ones
    area = (labels > 0).flatten(1).sum(1)
    order = torch.argsort(area, descending=True, stable=True).tolist()
    seen, firsts, rest = set(), [], []
    for i in order:
        v = int(test.volume[i])
        (rest if v in seen else firsts).append(i)
        seen.add(v)
    picks = sorted((firsts + rest)[:shown])
    names = slice_names(test)
    tiles, titles = [], []
    for i in picks:
        img = test.images[i, 0].numpy()
        lo, hi = np.percentile(img, [1, 99])
        grey = (np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
        k = _zoom(grey.shape)
        tiles += [segmentation_tile(_up(grey, k), _up(labels[i].numpy(), k), num_classes),
                  segmentation_tile(_up(grey, k), _up(pred[i].numpy(), k), num_classes)]
        titles += [f"{names[i]}: truth", f"{names[i]}: prediction"]
    class_names = class_names or {c: f"class {c}" for c in range(num_classes)}
    legend = {class_names.get(c, f"class {c}"): PALETTE[(c - 1) % len(PALETTE)]
              for c in range(1, num_classes)}
    plot_image_grid(tiles, titles, path, columns=4, legend=legend,
                    title="test slices with the most foreground (per volume first): ground "
                          "truth (left of each pair) and prediction (right)")


def _zoom(shape, target: int = 192) -> int:
    """Integer zoom that brings small slices to about ``target`` pixels for the figures."""
    return max(1, -(-target // max(shape)))


def _up(a: np.ndarray, k: int) -> np.ndarray:
    return a if k == 1 else a.repeat(k, 0).repeat(k, 1)
