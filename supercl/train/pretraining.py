"""SuperCL pre-training: a plain PyTorch loop over the ops.

Per step, for a batch of B slices on the device: the four views (:mod:`.views`), SLIC on v1
(and on v2 with ``asp_segments="own"``) with :func:`supercl.ops.slic` (on the device; the data
loader never runs it), one encoder + projection-head pass over the 4B views, the objective of
:mod:`supercl.losses` with ILCP at the encoder level of :func:`resolve_ilcp_level`, an
optimizer step. The encoder alone is saved for fine-tuning (``encoder.pt``).

:func:`recipe_config` builds the settings of a recipe: "default" (the dataclass defaults) or
"reference" (the published code's choices, :data:`RECIPES`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from supercl._runtime import to_device_async
from supercl._validate import check_choice, check_float, check_int, check_setting
from supercl.losses import LossConfig, SuperCLLoss
from supercl.models import SuperCLModel
from supercl.models.backbones import backbone_of
from supercl.data.nifti import slice_names
from supercl.ops import slic
from supercl.viz import plot_superpixels

from . import distributed
from .checkpoint import save_atomic
from .dataset import prepare_split, slices_of
from .loop import RunConfig, Task, TrainingLoop
from .sampling import crop_batch, step_generator
from .views import SuperCLViews, ViewConfig

__all__ = ["PretrainConfig", "pretrain", "RECIPES", "recipe_config", "resolve_ilcp_level",
           "ILCP_MIN_PIXELS"]

TERMS = ("loss", "l_ins", "l_intra", "l_inter")
# Logged with the terms every epoch (SuperCLLoss(..., diagnostics=True)): whether each term has
# something to learn from. pcl_pos_per_anchor is NaN (null in metrics.jsonl) without positions.
DIAGNOSTICS = ("ilcp_pos_per_anchor", "pcl_pos_per_anchor", "inter_partner_edge_share",
               "inter_images_per_component", "inter_edge_position_agreement",
               "inter_edge_position_chance", "inter_edge_organ_agreement",
               "inter_edge_organ_chance")


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
    #: The encoder level whose pixels ILCP contrasts: an index into the encoder's feature maps
    #: (0 = full resolution, -1 or depth = the bottleneck), or None for the scale-aware rule
    #: of :func:`resolve_ilcp_level`.
    ilcp_level: int | None = None
    #: The preset these settings started from ("default" or "reference", see RECIPES);
    #: recorded in config.json.
    recipe: str = "default"
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
        check_setting(self, "recipe", check_choice, tuple(RECIPES))
        check_setting(self, "ilcp_level", lambda value, name: resolve_ilcp_level(self))


#: Settings of each recipe that differ from the dataclass defaults. "reference" reproduces the
#: published SuperCL code's choices:
#:
#: - 512 x 512 slices (pass the data's own size with patch_size when it is smaller);
#: - ILCP at the bottleneck on every 16th pixel in raster order (pixel_stride 16);
#: - ASP divided by the map's area (asp_normalize "area"), each view with its own SLIC map;
#: - PCL's published threshold relation |p_i - p_j| < 0.1 (pcl_relation "threshold");
#: - every term scaled by temperature / 0.07 (SupContrast's base temperature);
#: - L_inter's positives: the k-NN graph's components, plus the partner view without merging
#:   their components (inter_positives "pair_edge");
#: - the reference views (ViewConfig(recipe="reference"));
#: - SGD, momentum 0.9, lr 0.01, cosine schedule, 100 epochs.
RECIPES = {
    "default": {},
    "reference": {
        "patch_size": 512, "epochs": 100, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
        "n_segments": 100, "ilcp_level": -1,
        "loss": {"pixel_stride": 16, "asp_normalize": "area", "asp_segments": "own",
                 "pcl_relation": "threshold", "base_temperature": 0.07,
                 "inter_positives": "pair_edge", "inter_graph": "views"},
        "views": {"recipe": "reference"},
    },
}


def recipe_config(recipe: str = "default", **overrides) -> PretrainConfig:
    """A :class:`PretrainConfig` from a recipe of :data:`RECIPES`, with ``overrides`` on top
    (``loss`` and ``views`` may be dicts of the fields to change).

    >>> cfg = recipe_config("reference", epochs=2, loss={"l_inter": 0.0})
    >>> cfg.lr, cfg.epochs, cfg.loss.pixel_stride, cfg.loss.l_inter, cfg.views.recipe
    (0.01, 2, 16, 0.0, 'reference')
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
    preset = dict(RECIPES[recipe])
    loss = dict(preset.pop("loss", {}))
    views = dict(preset.pop("views", {}))
    for name, part in (("loss", loss), ("views", views)):
        given = overrides.pop(name, None)
        if isinstance(given, (LossConfig, ViewConfig)):
            part.clear()
            part.update(asdict(given))
        elif given is not None:
            part.update(given)
    return PretrainConfig(**(preset | overrides), recipe=recipe, loss=LossConfig(**loss),
                          views=ViewConfig(**views))


#: The scale-aware rule's target: feature pixels per superpixel at the ILCP level.
ILCP_MIN_PIXELS = 4.0


def resolve_ilcp_level(cfg) -> int:
    """The encoder level ILCP contrasts, as a non-negative index (``depth`` = bottleneck).

    ``cfg.ilcp_level`` when set; otherwise the deepest level l at which a superpixel covers at
    least :data:`ILCP_MIN_PIXELS` feature pixels on average, ``(side / 2**l)**2 /
    n_segments >= 4``, with ``side`` the side of the encoder's input (``crop_size``, else
    ``patch_size``), and ``2**l`` the down-sampling of level l (the backbone's own,
    :attr:`~supercl.models.backbones.Backbone.reductions`, for nnU-Net and MONAI networks;
    ``depth`` is then theirs). A superpixel of m pixels gives each of its 2m pixel embeddings
    (two views) 2m - 1 positives, so m >= 4 means at least 7 on average, and ILCP contrasts
    regions rather than only matching each location across the views. At the reference scale
    (512 x 512, 100 superpixels) the rule picks the bottleneck (1024 pixels, 10.2 per
    superpixel); at 128 x 128 with 100, and 64 x 64 with 25, level 2 (1/4 resolution, the same
    10.2).

    >>> resolve_ilcp_level(PretrainConfig(patch_size=128, n_segments=100, depth=4))
    2
    >>> resolve_ilcp_level(PretrainConfig(patch_size=512, n_segments=100, depth=4))
    4
    """
    reductions = backbone_of(cfg).reductions
    depth = len(reductions) - 1
    side = getattr(cfg, "crop_size", 0) or cfg.patch_size  # the side of what the encoder sees
    if cfg.ilcp_level is not None:
        level = cfg.ilcp_level
        if isinstance(level, bool) or not isinstance(level, int) or not -depth - 1 <= level <= depth:
            raise ValueError(f"ilcp_level must be an int in [{-depth - 1}, {depth}] or None, "
                             f"got {level!r}")
        return level % (depth + 1)
    for level in range(depth, -1, -1):
        ry, rx = reductions[level]
        if (side / ry) * (side / rx) / cfg.n_segments >= ILCP_MIN_PIXELS:
            return level
    return 0


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
    info, split = prepare_split(cfg, out, main, pretrain_only=True, previous=loop.previous,
                                write=False)
    slices = slices_of(info, split["pretrain"], cfg, require_labels=False,
                       progress=main and cfg.progress)
    loop.write_run_files(split, world_size=dist.world_size)
    images, positions = slices.images, slices.positions
    names = slice_names(slices)
    if device.type == "cuda":
        images, positions = images.pin_memory(), positions.pin_memory()

    torch.manual_seed(cfg.seed)  # same initial weights on every process
    backbone = backbone_of(cfg)
    model = SuperCLModel(backbone.encoder(), cfg.embed_dim, cfg.embed_dim).to(device)
    net = model
    if dist.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    torch.manual_seed(cfg.seed + 7919 * dist.rank)  # different views on every process
    views = SuperCLViews(cfg.views)
    loss_fn = SuperCLLoss(cfg.loss, gather=distributed.gather_with_grad)
    level = resolve_ilcp_level(cfg)
    if main:
        side = cfg.crop_size or cfg.patch_size
        h, w = (side // r for r in backbone.reductions[level])
        print(f"{backbone.describe()}: ILCP at encoder level {level} of {backbone.depth} "
              f"({h}x{w} pixels, {h * w / cfg.n_segments:.1f} per superpixel)")

    # Label maps, where the pool has them (the phantom), only for the weak-label diagnostics:
    # which classes each slice shows.
    labels = slices.labels if slices.labels is not None and bool((slices.labels >= 0).all()) else None
    classes = range(1, max(info.class_names) + 1)

    def step(idx: torch.Tensor, global_step: int) -> dict:
        x, y = images[idx], None if labels is None else labels[idx]
        if cfg.crop_size:
            x, y = crop_batch(x, cfg.crop_size, step_generator(cfg.seed + 7919 * dist.rank,
                                                               global_step), y)
        organs = None if y is None else torch.stack([(y == c).flatten(1).any(1) for c in classes], 1)
        if organs is not None:  # on the device from pinned memory: a plain copy would wait
            organs = to_device_async(organs, device)
        x = x.to(device, non_blocking=True)
        pos = positions[idx].to(device, non_blocking=True)
        first = main and cfg.figures and global_step == 0
        return _train_step(net, views, loss_fn, x, pos, cfg, loop.autocast, level, organs,
                           depth=backbone.depth,
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


def _train_step(net, views, loss_fn, x, pos, cfg, autocast, level, organs=None, figure=None,
                captions=None, depth=None):
    """The forward pass of one pre-training step: the views, SLIC on v1 (and v2 with
    ``asp_segments="own"``), the network on the 4B views, the objective with ILCP at encoder
    ``level`` (``depth``: the bottleneck's index, default ``cfg.depth``). ``organs``: (B, K)
    bool classes per slice, for the diagnostics; ``figure``: the run folder, to draw the
    superpixels there."""
    batch = x.shape[0]
    v1, v2, v3, v4 = views(x)
    own = cfg.loss.asp_segments == "own"
    with torch.no_grad():
        segments = slic((torch.cat([v1, v2]) if own else v1)[:, 0], n_segments=cfg.n_segments,
                        compactness=cfg.compactness, max_num_iter=cfg.slic_iters)
    segments, segments2 = (segments[:batch], segments[batch:]) if own else (segments, None)
    if figure is not None:
        plot_superpixels(v1[:, 0].float(), segments, captions, figure / "superpixels.png",
                         title="SLIC superpixels of the first pre-training batch (view v1)")
    bottleneck = level == (cfg.depth if depth is None else depth)
    with autocast():
        if bottleneck:
            f, e = net(torch.cat([v1, v2, v3, v4]))
            g = f
        else:
            f, e, g = net(torch.cat([v1, v2, v3, v4]), level)
    finite = torch.isfinite(f).all() & torch.isfinite(e).all()
    if g is not f:
        finite &= torch.isfinite(g).all()
    # Diverged weights give non-finite features, which the ops refuse with a message that
    # knows nothing of the run. Deciding that here with bool(finite) would wait for the GPU
    # every step; instead the terms are computed on zeros in that case and set to NaN on the
    # device, and the loop's one read-back of the terms (supercl.train.loop) reports them as a
    # non-finite loss, with its step, its epoch and the note below (read only then). Where
    # the features are finite, torch.where passes them (and their gradient) through unchanged.
    f, e = _zero_unless(finite, f), _zero_unless(finite, e)
    g = f if bottleneck else _zero_unless(finite, g)
    ilcp = {} if bottleneck else {"g1": g[:batch], "g2": g[batch:2 * batch]}
    terms = loss_fn(f[:batch], f[batch:2 * batch], e[2 * batch:3 * batch], e[3 * batch:],
                    segments.long(), pos, diagnostics=True,
                    segments2=None if segments2 is None else segments2.long(), organs=organs,
                    **ilcp)
    nan = torch.full((), float("nan"), device=x.device)
    out = terms | {k: torch.where(finite, terms[k], nan) for k in TERMS + DIAGNOSTICS}

    def note() -> str:
        return "" if bool(finite) else (
            "the encoder's features (the input of every loss term) were already non-finite, "
            "so the weights diverged at an earlier step")

    return out | {"note": note}


def _zero_unless(finite: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x`` where the 0-d bool ``finite`` holds, zeros of its shape otherwise (no host sync)."""
    return torch.where(finite, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _loss_figure(records, out) -> None:
    from supercl.viz import plot_diagnostics, plot_loss_curves

    plot_loss_curves(records, out / "loss_curves.png", keys=list(TERMS),
                     title="SuperCL pre-training")
    plot_diagnostics(records, out / "diagnostics.png",
                     title="What the terms learn from (pre-training diagnostics)")
