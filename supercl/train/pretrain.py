"""SuperCL pre-training: a plain PyTorch loop over the ops.

Per step, for a batch of B slices on the device: the four views (:mod:`.views`), SLIC on v1
with :func:`supercl.ops.slic` (on the device; the data loader never runs it), one encoder +
projection-head pass over the 4B views, the objective of :mod:`supercl.losses`, an optimizer
step. The encoder alone is saved for fine-tuning (``encoder.pt``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from supercl._validate import check_choice, check_float, check_int, check_setting
from supercl.losses import LossConfig, SuperCLLoss
from supercl.models import SuperCLModel, UNetEncoder
from supercl.data.nifti import slice_names
from supercl.ops import slic
from supercl.viz import plot_superpixels

from . import distributed
from .checkpoint import save_atomic
from .dataset import prepare_split, slices_of
from .loop import RunConfig, Task, TrainingLoop
from .views import SuperCLViews, ViewConfig

__all__ = ["PretrainConfig", "pretrain"]

TERMS = ("loss", "l_ins", "l_intra", "l_inter")
# Logged with the terms every epoch (SuperCLLoss(..., diagnostics=True)): whether each term has
# something to learn from. pcl_pos_per_anchor is NaN (null in metrics.jsonl) without positions.
DIAGNOSTICS = ("ilcp_pos_per_anchor", "pcl_pos_per_anchor", "inter_multi_member_share",
               "inter_partner_only_share")


@dataclass
class PretrainConfig(RunConfig):
    """Every setting of a pre-training run; ``config.json`` in the run folder holds it.
    The options of ``supercl pretrain --help`` have the same names."""

    out: str = "runs/pretrain"
    epochs: int = 20
    batch_size: int = 16
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    embed_dim: int = 512
    n_segments: int = 100
    compactness: float = 0.1
    slic_iters: int = 10
    loss: LossConfig = field(default_factory=LossConfig)
    views: ViewConfig = field(default_factory=ViewConfig)

    def __post_init__(self):
        super().__post_init__()
        self._check_schedule()
        check_setting(self, "optimizer", check_choice, ("sgd", "adamw"))
        check_setting(self, "momentum", check_float, nonnegative=True)
        check_setting(self, "warmup_steps", check_int, 0)
        check_setting(self, "embed_dim", check_int, 1)
        check_setting(self, "n_segments", check_int, 1)
        check_setting(self, "compactness", check_float, positive=True)
        check_setting(self, "slic_iters", check_int, 1)
        if not isinstance(self.loss, LossConfig) or not isinstance(self.views, ViewConfig):
            raise TypeError("loss must be a LossConfig and views a ViewConfig")


def _optimizer(cfg, params):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise AssertionError(cfg.optimizer)  # PretrainConfig checked it


def pretrain(cfg: PretrainConfig) -> dict:
    """Run (or, with ``cfg.resume``, continue) a pre-training run; returns a summary dict.

    Writes to ``cfg.out``: ``config.json``, ``split.json``, ``metrics.jsonl`` (per epoch: the
    loss terms and the :data:`DIAGNOSTICS`), ``checkpoint.pt`` (everything, to resume),
    ``encoder.pt`` (the encoder for fine-tuning), ``superpixels.png``, ``loss_curves.png`` and
    ``diagnostics.png``.

    Raises :class:`~supercl.train.loop.NonFiniteLossError` when a loss is NaN or inf (the
    last good checkpoint stays), ``ValueError`` for bad settings.
    """
    loop = TrainingLoop(cfg, "pretrain", "pre-training", distributed=True)
    dist, main, device, out = loop.dist, loop.main, loop.device, loop.out
    info, split = prepare_split(cfg, out, main, pretrain_only=True, previous=loop.previous)
    loop.write_config(world_size=dist.world_size)
    slices = slices_of(info, split["pretrain"], cfg, require_labels=False,
                       progress=main and cfg.progress)
    images, positions = slices.images, slices.positions
    names = slice_names(slices)
    if device.type == "cuda":
        images, positions = images.pin_memory(), positions.pin_memory()

    torch.manual_seed(cfg.seed)  # same initial weights on every process
    model = SuperCLModel(UNetEncoder(1, cfg.base_channels, cfg.depth), cfg.embed_dim,
                         cfg.embed_dim).to(device)
    net = model
    if dist.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    torch.manual_seed(cfg.seed + 7919 * dist.rank)  # different views on every process
    views = SuperCLViews(cfg.views)
    loss_fn = SuperCLLoss(cfg.loss, gather=distributed.gather_with_grad)

    def step(idx: torch.Tensor, global_step: int) -> dict:
        x = images[idx].to(device, non_blocking=True)
        pos = positions[idx].to(device, non_blocking=True)
        first = main and cfg.figures and global_step == 0
        return _train_step(net, views, loss_fn, x, pos, cfg, loop.autocast,
                           figure=out if first else None,
                           captions=[names[j] for j in idx.tolist()] if first else None)

    def describe(record: dict) -> str:
        return ("  ".join(f"{k} {record[k]:.4f}" for k in TERMS)
                + f"  {record['slices_per_s']:.1f} slices/s")

    summary = loop.run(Task(model=model, optimizer=_optimizer(cfg, model.parameters()),
                            n_items=len(slices), step=step, terms=TERMS, logged=DIAGNOSTICS,
                            describe=describe, state=lambda: {"split": split},
                            warmup_steps=cfg.warmup_steps))
    if main and cfg.figures and summary["history"]:
        _loss_figure(summary["history"], out)
    if main and summary["status"] == "finished":
        save_atomic({"kind": "encoder", "config": asdict(cfg), "encoder": model.encoder.state_dict(),
                     "split": split}, out / "encoder.pt")
        print(f"pre-training done: encoder weights in {out / 'encoder.pt'}")
    distributed.teardown()
    return summary


def _train_step(net, views, loss_fn, x, pos, cfg, autocast, figure=None, captions=None):
    """The forward pass of one pre-training step: the views, SLIC on v1, the network on the
    4B views, the objective. ``figure``: the run folder, to draw the superpixels there."""
    batch = x.shape[0]
    v1, v2, v3, v4 = views(x)
    with torch.no_grad():
        segments = slic(v1[:, 0], n_segments=cfg.n_segments, compactness=cfg.compactness,
                        max_num_iter=cfg.slic_iters)
    if figure is not None:
        plot_superpixels(v1[:, 0].float(), segments, captions, figure / "superpixels.png",
                         title="SLIC superpixels of the first pre-training batch (view v1)")
    with autocast():
        f, e = net(torch.cat([v1, v2, v3, v4]))
    if not bool(torch.isfinite(f).all() & torch.isfinite(e).all()):
        # The weights have diverged. The ops refuse non-finite features with a message that
        # knows nothing of the run; report it as a non-finite loss, with its step and epoch.
        nan = torch.full((), float("nan"), device=x.device)
        return {k: nan for k in TERMS + DIAGNOSTICS} | {
            "note": "the encoder's features (the input of every loss term) were already "
                    "non-finite, so the weights diverged at an earlier step"}
    return loss_fn(f[:batch], f[batch:2 * batch], e[2 * batch:3 * batch], e[3 * batch:],
                   segments.long(), pos if cfg.loss.use_positions else None, diagnostics=True)


def _loss_figure(records, out) -> None:
    from supercl.viz import plot_diagnostics, plot_loss_curves

    plot_loss_curves(records, out / "loss_curves.png", keys=list(TERMS),
                     title="SuperCL pre-training")
    plot_diagnostics(records, out / "diagnostics.png",
                     title="What the terms learn from (pre-training diagnostics)")
