"""Fine-tuning (scoring on the test volumes is :mod:`supercl.train.evaluation`).

Fine-tuning trains the whole U-Net on the labeled fine-tuning volumes of the split, its
encoder initialised from a pre-training run (only the encoder is transferred) or from
scratch, with cross-entropy + soft Dice and Adam on a cosine schedule. After every epoch it
scores the validation volumes; the best epoch by mean foreground DSC is kept as
``best.pt``. The test volumes are used only by :func:`~supercl.train.evaluate`.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from supercl._validate import SettingError, check_bool, check_float, check_int, check_setting
from supercl.eval.metrics import SegmentationMetrics
from supercl.eval.inference import predict
from supercl.models.backbones import backbone_of

from .checkpoint import save_atomic
from .dataset import prepare_split, slices_of
from .evaluation import evaluate
from .loop import RunConfig, Task, TrainingLoop
from .sampling import ForegroundSampler, crop_batch, step_generator

__all__ = ["FinetuneConfig", "finetune", "dice_loss"]


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
    #: The share of each batch replaced by foreground draws (:class:`~.sampling.ForegroundSampler`,
    #: nnU-Net's oversampling; 0: none).
    oversample_foreground: float = 0.0
    #: Validate every ``val_every`` epochs (and after the last one).
    val_every: int = 1
    #: Stop when the validation DSC has not improved for ``patience`` validations (0: never),
    #: counting only once the best validation DSC is above 0: a run whose validation DSC has
    #: not yet left zero (every foreground class missed, as early on a hard task) is never
    #: stopped early (:func:`_patience_exhausted`).
    patience: int = 0

    def __post_init__(self):
        super().__post_init__()
        self._check_schedule()
        check_setting(self, "dice_weight", check_float, nonnegative=True)
        check_setting(self, "oversample_foreground", check_float, nonnegative=True)
        if self.oversample_foreground > 1:
            raise SettingError("oversample_foreground",
                               f"must be in [0, 1], got {self.oversample_foreground:g}")
        check_setting(self, "val_every", check_int, 1)
        check_setting(self, "patience", check_int, 0)
        check_setting(self, "augment", check_bool)
        check_setting(self, "evaluate", check_bool)


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


def _load_encoder(path: str, encoder: torch.nn.Module) -> tuple[Path, dict]:
    """Load the encoder of a pre-training run (its folder, ``encoder.pt`` or ``checkpoint.pt``)
    into ``encoder``; returns the file and the pre-training split stored with it."""
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
        missing, unexpected = encoder.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{p}: the encoder does not match this U-Net; use the --backbone, "
                         f"--base-channels and --depth (or --plans) of the pre-training run "
                         f"({str(err).splitlines()[1].strip()})") from err
    if missing or unexpected:
        raise ValueError(f"{p}: the encoder does not match this U-Net (missing {missing[:3]}..., "
                         f"unexpected {unexpected[:3]}...); use the same --backbone, "
                         "--base-channels and --depth (or --plans)")
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


def finetune(cfg: FinetuneConfig) -> dict:
    """Fine-tune (or, with ``cfg.resume``, continue), then evaluate the best model on the test
    volumes when ``cfg.evaluate``. Writes ``config.json``, ``split.json``, ``metrics.jsonl``,
    ``checkpoint.pt``, ``best.pt``, ``loss_curves.png`` and the evaluation's files to
    ``cfg.out``; returns a summary dict."""
    loop = TrainingLoop(cfg, "finetune", "fine-tuning")
    device, out = loop.device, loop.out
    source = encoder = None
    backbone = backbone_of(cfg)
    if cfg.pretrained and loop.resumed is None:  # before the data: nothing is written yet
        encoder = backbone.encoder()
        source, pretrain_split = _load_encoder(cfg.pretrained, encoder)
    info, split = prepare_split(cfg, out, previous=loop.previous, write=False)
    if source is not None:
        _warn_overlap(source, pretrain_split, split)
    num_classes = max(info.class_names) + 1
    train = slices_of(info, split["finetune"], cfg, require_labels=True, progress=cfg.progress)
    val = slices_of(info, split["val"], cfg, require_labels=True, progress=cfg.progress)

    torch.manual_seed(cfg.seed)
    model = backbone.segmenter(num_classes)
    if encoder is not None:
        model.encoder.load_state_dict(encoder.state_dict())
    loop.write_run_files(split)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best = {"val_dsc": -1.0, "epoch": 0}
    if loop.resumed is not None:
        best = loop.resumed["best"]
    else:
        print(f"fine-tuning on {len(split['finetune'])} volumes ({len(train)} slices), "
              f"validating on {len(split['val'])}; encoder "
              + (f"from {source}" if source else "from scratch"))
    augment = _JointAugment() if cfg.augment else None
    sampler = ForegroundSampler(train.labels) if cfg.oversample_foreground else None

    def step(idx: torch.Tensor, global_step: int) -> dict:
        g = step_generator(cfg.seed, global_step)
        centers = None
        if sampler is not None:
            idx, centers = sampler.draw(idx, g, cfg.oversample_foreground)
        x, y = train.images[idx], train.labels[idx]
        if cfg.crop_size:
            x, y = crop_batch(x, cfg.crop_size, g, y, centers)
        x, y = x.to(device), y.to(device)
        if augment is not None:
            x, y = augment(x, y)
        with loop.autocast():
            logits = model(x)
        ce = F.cross_entropy(logits.float(), y)
        dl = dice_loss(logits, y)
        return {"loss": ce + cfg.dice_weight * dl, "ce": ce, "dice": dl}

    def evaluate_epoch(epoch: int) -> dict:
        nonlocal best
        if epoch % cfg.val_every and epoch < cfg.epochs:
            return {}
        scores = _validate(model, val, num_classes, info.class_names, device)
        if _record_validation(best, scores["mean_dsc"], epoch):
            save_atomic({"kind": "model", "model": model.state_dict(), "config": asdict(cfg),
                         "num_classes": num_classes, "class_names": info.class_names,
                         "epoch": epoch, "val_dsc": scores["mean_dsc"], "split": split},
                        out / "best.pt")
        return {"val_dsc": scores["mean_dsc"], "val_jc": scores["mean_jc"]}

    def describe(record: dict) -> str:
        if "val_dsc" not in record:
            return f"loss {record['loss']:.4f}"
        return (f"loss {record['loss']:.4f} val DSC {100 * record['val_dsc']:.2f}% (best "
                f"{100 * best['val_dsc']:.2f}% at epoch {best['epoch']})")

    def should_stop() -> bool:
        return _patience_exhausted(best, cfg.patience)

    summary = loop.run(Task(
        model=model, optimizer=optimizer, n_items=len(train), step=step,
        terms=("loss", "ce", "dice"), describe=describe, evaluate=evaluate_epoch,
        should_stop=should_stop,
        state=lambda: {"best": best, "split": split, "num_classes": num_classes,
                       "class_names": info.class_names}))
    if cfg.figures and summary["history"]:  # drawn once at the end: ~0.3 s, more than an epoch
        from supercl.viz import plot_loss_curves

        plot_loss_curves(summary["history"], out / "loss_curves.png",
                         keys=["loss", "ce", "dice", "val_dsc"],
                         title=f"fine-tuning {out.resolve().name}")
    summary = {k: summary[k] for k in ("status", "out", "epochs", "global_step", "stopped_early",
                                       "planned_steps")} | {
        "best": best, "history": summary["history"]}
    if summary["status"] == "finished" and cfg.evaluate:
        summary["evaluation"] = evaluate(out / "best.pt", cfg, out=out, info=info, split=split,
                                         device=cfg.device, figures=cfg.figures,
                                         progress=cfg.progress)
    return summary


def _record_validation(best: dict, dsc: float, epoch: int) -> bool:
    """Count one validation in ``best`` (``validations``) and, when ``dsc`` beats the best so
    far, make it the best (``val_dsc``, ``epoch``, ``validation``: its number); returns
    whether it did. A NaN DSC (no foreground anywhere) never beats it."""
    best["validations"] = best.get("validations", 0) + 1
    if dsc > best["val_dsc"]:
        best |= {"val_dsc": dsc, "epoch": epoch, "validation": best["validations"]}
        return True
    return False


def _patience_exhausted(best: dict, patience: int) -> bool:
    """Early stopping: ``patience`` > 0 validations in a row without a better validation DSC,
    counted only once the best validation DSC is above 0. A run whose validation DSC has not
    yet left zero keeps training to its step budget: a U-Net that still predicts only
    background for the first few hundred steps (on a hard class or a small labeled set) has
    not converged, and stopping it would score an untrained model (0 % test DSC). Since the
    first DSC above 0 is a new best, the count starts at it."""
    if not patience or not best.get("val_dsc", -1.0) > 0:
        return False
    return best.get("validations", 0) - best.get("validation", 0) >= patience


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
