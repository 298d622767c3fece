"""The pre-training step does not wait for the GPU (issue 23).

Every ``.item()``, ``bool(tensor)``, ``tolist()``, ``nonzero`` or ``unique`` on a CUDA tensor
makes the host wait until the GPU has run everything queued, and the GPU then idles while the
host launches the next kernels. The step is launch-bound at batch 16 of 256 x 256, so each
such wait costs a share of the step.

- ``test_pretrain_step_does_not_sync`` (``cuda``): one step (views, SLIC, network, objective,
  backward, the read-back of the terms, SGD) under ``torch.cuda.set_sync_debug_mode("warn")``;
  every synchronising call is located by its Python stack and must be in :data:`ALLOWED`.
- The CPU tests check that what replaced a synchronising construct computes the same thing
  as the construct it replaced, written out here as the oracle.
"""

from __future__ import annotations

import math
import traceback
import warnings

import pytest
import torch

from supercl.losses import (LossConfig, SuperCLLoss, _dense_ids, asp_vectors,
                            ilcp_positives_per_anchor)
from supercl.testing import superpixel_mean_map_reference

#: The synchronisations that one pre-training step may still make, by the innermost supercl
#: function on the stack (path suffix, function; None = any function of that file), and why.
#: Unavoidable, by design:
UNAVOIDABLE = {
    # The loop must know that the terms are finite before the optimizer changes the weights,
    # and it logs them: one read-back per step. It comes after the backward has been queued
    # (supercl.train.loop.TrainingLoop.run), so the GPU computes while the host waits.
    ("supercl/train/loop.py", "host_values"):
        "the step's one read-back of its terms (finite check before the update, logging)",
}
#: Not removed yet: the ops' own input checks (a NaN feature must raise a ValueError naming the
#: argument, which needs the host to know) and SLIC. Each is a wait that could go; delete its
#: entry here when it has gone, so that it cannot come back.
NOT_YET_REMOVED = {
    ("supercl/ops/slic.py", None):
        "SLIC's input check bool(isfinite(images).all()) in _rescale_batch, and its launcher",
    ("supercl/kernels/cuda/launch.py", None): "SLIC's CUDA launcher",
    ("supercl/ops/supcon_loss.py", "_warn_if_no_positive"):
        "supcon_loss's bool(valid.any()) for its no-positive warning: on CUDA at the first "
        "call of the process only",
    ("supercl/ops/supcon_loss.py", "_check_positions"):
        "supcon_loss's bool(isfinite(positions).all()) (PCL's threshold relation)",
}
ALLOWED = UNAVOIDABLE | NOT_YET_REMOVED


def _site(stack: list[traceback.FrameSummary]) -> tuple[str, str, str]:
    """(path suffix, function, where) of the innermost supercl frame of ``stack``; ``where``
    also names the innermost frame overall (e.g. inside kornia or torch)."""
    stack = [f for f in stack if not f.filename.endswith("warnings.py")]  # the hook's callers
    inner = stack[-1]
    for frame in reversed(stack):
        path = frame.filename.replace("\\", "/")
        if "/supercl/" in path and "/tests/" not in path:
            suffix = "supercl/" + path.rsplit("/supercl/", 1)[1]
            where = f"{suffix}:{frame.lineno} {frame.name}"
            if frame is not inner:
                where += f" (innermost: {inner.filename}:{inner.lineno} {inner.name})"
            return suffix, frame.name, where
    return "", inner.name, f"{inner.filename}:{inner.lineno} {inner.name}"


def _allowed(suffix: str, function: str) -> bool:
    return (suffix, function) in ALLOWED or (suffix, None) in ALLOWED


def _capture_sync_warnings(fn) -> list[tuple[str, str, str]]:
    """Run ``fn()``; the site (:func:`_site`) of every "synchronizing" warning it emits.
    Warnings from C++ reach Python when the op returns, so the Python stack at that moment is
    the caller's."""
    sites = []

    def show(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message):
            sites.append(_site(traceback.extract_stack()[:-1]))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        fn()
    return sites


def _record_syncs(fn) -> list[tuple[str, str, str]]:
    """Run ``fn()`` with torch's CUDA sync debug mode on "warn" (every synchronising call
    warns "called a synchronizing CUDA operation"); the site of every such call."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        return _capture_sync_warnings(fn)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _step_config(recipe: str):
    from supercl.train import recipe_config

    return recipe_config(recipe, patch_size=64, n_segments=25, slic_iters=3, base_channels=8,
                         depth=3, embed_dim=32, batch_size=4, device="cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("recipe", ["default", "reference"])
def test_pretrain_step_does_not_sync(recipe):
    """One whole pre-training step on the GPU: no synchronisation outside :data:`ALLOWED`.
    A first step outside the check compiles and caches what is done once (CuPy and Triton
    kernels, cuDNN plans); the second is the one checked."""
    pytest.importorskip("kornia")
    pytest.importorskip("cupy")
    from supercl.models import SuperCLModel, UNetEncoder
    from supercl.train.loop import host_values
    from supercl.train.pretraining import DIAGNOSTICS, TERMS, _train_step, resolve_ilcp_level
    from supercl._runtime import to_device_async
    from supercl.train.views import SuperCLViews

    cfg = _step_config(recipe)
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = SuperCLModel(UNetEncoder(1, cfg.base_channels, cfg.depth), cfg.embed_dim,
                         cfg.embed_dim).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    views, loss_fn = SuperCLViews(cfg.views), SuperCLLoss(cfg.loss)
    level = resolve_ilcp_level(cfg)
    # The batch comes from the host as in pretrain()'s step: pinned pools, indexed (which gives
    # pageable tensors), sent without waiting; the organ flags through _runtime.to_device_async.
    images = torch.rand(2 * cfg.batch_size, 1, cfg.patch_size, cfg.patch_size).pin_memory()
    positions = torch.linspace(0, 1, 2 * cfg.batch_size).pin_memory()
    idx = torch.arange(1, 2 * cfg.batch_size, 2)
    organs_host = torch.rand(cfg.batch_size, 3) > 0.5

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16)

    def step():
        x = images[idx].to(device, non_blocking=True)
        pos = positions[idx].to(device, non_blocking=True)
        organs = to_device_async(organs_host, device)
        optimizer.zero_grad(set_to_none=True)
        terms = _train_step(model, views, loss_fn, x, pos, cfg, autocast, level, organs)
        terms["loss"].backward()
        values = host_values(terms, TERMS + DIAGNOSTICS)
        optimizer.step()
        return values

    first = step()
    assert math.isfinite(first["loss"])
    torch.cuda.synchronize()
    sites = _record_syncs(step)
    torch.cuda.synchronize()
    assert any(s == "supercl/train/loop.py" for s, _, _ in sites), \
        "the check saw no synchronisation at all, not even the read-back of the terms"
    bad = [where for suffix, function, where in sites if not _allowed(suffix, function)]
    assert not bad, "synchronising calls in the pre-training step:\n" + "\n".join(bad)


# ---- CPU: what replaced a synchronising construct computes the same ------------------------


def test_sync_sites_are_attributed_to_the_innermost_supercl_function():
    """The check's own machinery, without a GPU: a warning raised in a function compiled as if
    from supercl/ops/fake.py, called through a non-supercl helper, is attributed to it."""
    namespace = {}
    code = ("import warnings\n"
            "def inner():\n"
            "    warnings.warn('called a synchronizing CUDA operation')\n"
            "def allowed():\n"
            "    helper()\n")
    exec(compile(code, "/somewhere/supercl/ops/fake.py", "exec"), namespace)
    namespace["helper"] = lambda: namespace["inner"]()
    sites = _capture_sync_warnings(lambda: (namespace["inner"](), namespace["allowed"](),
                                            warnings.warn("unrelated")))
    assert [(s, f) for s, f, _ in sites] == [("supercl/ops/fake.py", "inner")] * 2
    assert sites[0][2].startswith("supercl/ops/fake.py:3 inner")
    assert _allowed("supercl/ops/slic.py", "anything")
    assert _allowed("supercl/train/loop.py", "host_values")
    assert not _allowed("supercl/train/loop.py", "run")
    assert not _allowed("supercl/losses.py", "weak_label_quality")


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (2, 16, 16)])
def test_dense_ids_keep_the_partition(shape):
    """_dense_ids numbers every image's distinct ids 0, 1, ... in increasing order: the
    inverse of a per-image torch.unique, whatever the ids (negative, large, gaps)."""
    g = torch.Generator().manual_seed(sum(shape))
    seg = torch.randint(-3, 4, shape, generator=g) * 1000 + 2**40
    got = _dense_ids(seg)
    assert got.shape == seg.shape and got.dtype == torch.int64
    for image, ids in zip(seg, got):
        _, want = torch.unique(image, return_inverse=True)
        assert torch.equal(ids, want)
        assert int(ids.max()) < image.numel()


def test_asp_vectors_without_a_bound_equal_the_reference():
    """asp_vectors sizes its table with h*w (dense ids) instead of max id + 1: the same ASP,
    for ids that are sparse, larger than h*w, or start above 0."""
    g = torch.Generator().manual_seed(3)
    f = torch.randn(3, 4, 5, 7, generator=g)
    seg = torch.randint(0, 6, (3, 5, 7), generator=g) * 97 + 11
    for normalize in ("mean", "area"):
        want = superpixel_mean_map_reference(f.mean(1, keepdim=True), seg, normalize).flatten(1)
        torch.testing.assert_close(asp_vectors(f, seg, normalize), want, rtol=1e-6, atol=1e-6)


def _ilcp_positives_with_unique(segments_small, pixel_stride=1):
    """The former ilcp_positives_per_anchor (torch.unique, sized from the data)."""
    labels = segments_small.flatten(1)[:, ::pixel_stride].to(torch.int64)
    batch = labels.shape[0]
    _, counts = torch.unique(labels + (labels.max() + 1) * torch.arange(batch)[:, None],
                             return_counts=True)
    m = 2 * counts.to(torch.float64)
    return (m * (m - 1)).sum() / m.sum()


@pytest.mark.parametrize("stride", [1, 3, 16])
def test_ilcp_positives_per_anchor_equals_the_unique_count(stride):
    g = torch.Generator().manual_seed(stride)
    for shape, ids in (((4, 9, 11), 7), ((1, 1, 1), 1), ((2, 16, 16), 300)):
        seg = torch.randint(0, ids, shape, generator=g)
        got = ilcp_positives_per_anchor(seg, stride)
        assert got.dtype == torch.float64
        assert got.item() == _ilcp_positives_with_unique(seg, stride).item()  # exact


class _Net(torch.nn.Module):
    """Stands in for SuperCLModel: (4B, 1, H, W) -> bottleneck (4B, 4, H/4, W/4) and
    embeddings (4B, 8); ``poison`` makes the features NaN, as diverged weights would."""

    def __init__(self, poison=False):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 4, stride=4)
        self.head = torch.nn.Linear(4, 8)
        self.poison = poison

    def forward(self, x):
        f = self.conv(x)
        if self.poison:
            f = f * float("nan")
        return f, self.head(f.mean((2, 3)))


@pytest.mark.parametrize("poison", [False, True])
def test_train_step_reports_non_finite_features_without_a_sync(poison):
    """_train_step decides on the device: with finite features the terms are the objective's
    (and the loss has its gradient); with NaN features every term is NaN and the note, read
    only when the loop reports it, names the cause."""
    from contextlib import nullcontext

    from supercl.ops import slic
    from supercl.train import recipe_config
    from supercl.train.pretraining import DIAGNOSTICS, TERMS, _train_step
    from supercl.train.views import SuperCLViews

    cfg = recipe_config("default", patch_size=32, n_segments=9, slic_iters=2, depth=2)
    torch.manual_seed(0)
    net, views, loss_fn = _Net(poison), SuperCLViews(cfg.views), SuperCLLoss(cfg.loss)
    x, pos = torch.rand(3, 1, 32, 32), torch.tensor([0.1, 0.5, 0.9])
    torch.manual_seed(1)
    terms = _train_step(net, views, loss_fn, x, pos, cfg, nullcontext, cfg.depth)
    assert callable(terms["note"])
    if poison:
        assert all(math.isnan(terms[k].item()) for k in TERMS + DIAGNOSTICS)
        assert "non-finite" in terms["note"]()
        return
    assert terms["note"]() == ""
    torch.manual_seed(1)  # the same views, then the objective directly
    v1, v2, v3, v4 = views(x)
    seg = slic(v1[:, 0], n_segments=cfg.n_segments, compactness=cfg.compactness,
               max_num_iter=cfg.slic_iters).long()
    f, e = net(torch.cat([v1, v2, v3, v4]))
    want = loss_fn(f[:3], f[3:6], e[6:9], e[9:], seg, pos, diagnostics=True)
    for k in TERMS + DIAGNOSTICS:
        torch.testing.assert_close(terms[k], want[k], equal_nan=True, msg=k)
    terms["loss"].backward()
    assert net.conv.weight.grad is not None and torch.isfinite(net.conv.weight.grad).all()


def _reference_views_before(views, x):
    """The reference recipe's blur and elastic deformation as they were before issue 23
    (parameters drawn on the device, max(sigma) read back): the oracle on CPU tensors, where
    the host draws are the same draws."""
    from kornia.filters import gaussian_blur2d

    def blur(v):
        b, _, h, w = v.shape
        s = max(h, w) / 512
        sigma = torch.empty(b, device=v.device).uniform_(*views.blur_sigma) * s
        k = int(2 * math.ceil(3 * float(sigma.max())) + 1)
        return gaussian_blur2d(v, (k, k), torch.stack([sigma, sigma], 1), border_type="reflect")

    def elastic(v):
        el = views.elastic
        b, _, h, w = v.shape
        s = max(h, w) / el.side
        dev = v.device
        apply = torch.rand(b, device=dev) < el.p
        sigma = (torch.empty(b, device=dev).uniform_(*el.sigma) * s).clamp_min(0.5)
        alpha = torch.empty(b, device=dev).uniform_(*el.alpha) * s * s
        noise = torch.rand(b, 2, h, w, device=dev) * 2 - 1
        k = int(2 * math.ceil(3 * float(sigma.max())) + 1)
        k = min(k, 2 * ((min(h, w) - 1) // 2) + 1)
        field = gaussian_blur2d(noise, (k, k), torch.stack([sigma, sigma], 1),
                                border_type="reflect")
        field = field * (alpha * apply)[:, None, None, None]
        ys, xs = torch.meshgrid(torch.arange(h, dtype=v.dtype), torch.arange(w, dtype=v.dtype),
                                indexing="ij")
        gx = (xs + field[:, 0]) * (2 / max(w - 1, 1)) - 1
        gy = (ys + field[:, 1]) * (2 / max(h - 1, 1)) - 1
        return torch.nn.functional.grid_sample(v, torch.stack([gx, gy], -1), mode="bilinear",
                                               padding_mode="border", align_corners=True)

    v1, v2 = blur(views.photometric(x)), blur(views.photometric(x))
    return v1, v2, elastic(views.spatial(v1)), elastic(views.spatial(v2))


def test_reference_views_draw_on_the_host_with_the_same_stream_on_cpu():
    """The reference views draw their blur and elastic parameters on the host now (so that
    the kernel size and kornia's sigma check read no device value); on CPU tensors the random
    stream and the views are exactly the former ones. (On a GPU the parameters now come from
    the CPU generator instead of the CUDA one: other draws, the same distributions.)"""
    pytest.importorskip("kornia")
    from supercl.train.views import SuperCLViews, ViewConfig

    views = SuperCLViews(ViewConfig(recipe="reference"))
    x = torch.rand(5, 1, 33, 47)
    torch.manual_seed(4)
    got = views(x)
    torch.manual_seed(4)
    want = _reference_views_before(views, x)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
