"""One SuperCL pre-training step (batch 16 of 256 x 256 slices, the reference U-Net 32 -> 512):
supercl against the reference design, in the same run.

- ``supercl``: SLIC on the device on the whole batch (``supercl.ops.slic``), ILCP over *all*
  bottleneck pixels with the fused ``supcon_loss``, ASP with ``superpixel_mean_map``, weak
  labels with ``knn_weak_labels``; everything of :class:`supercl.losses.SuperCLLoss`.
- ``reference``: the published pipeline's design: scikit-image SLIC per sample in the loader,
  on both photometric views (two slices per sample), on the host; ILCP on every 16th pixel
  with a dense N x N SupCon; ASP, the 1-NN graph and its components with plain torch / numpy /
  scipy (the oracles of the ops).

A third group, ``pretrain_breakdown-<device>``, times supercl's step part by part, with a
synchronisation around every part (see :class:`StepParts`): one record per part (provider =
the part's name; the earlier parts run untimed before every round) and one for the whole step
(``provider="step"``, every part's median and its share of the synchronised step in
``extra_info["parts_ms"]`` and ``extra_info["shares"]``). The synchronisations remove the overlap of host and GPU that the
real step has, so the parts add up to more than ``pretrain_step``; the shares say where the
GPU time goes, ``pretrain_step`` and ``pretrain_overhead`` what the step costs.

Both include the views (kornia), the forward and backward of the U-Net encoder and head, and
an SGD step; only what differs between the designs differs. A second group, ``overhead``,
times the same step without the network (fixed feature tensors of the U-Net's shapes): the
views, the superpixels and the objective, where the designs differ. Correctness before timing: on the
same views and superpixels, supercl's objective with ``pixel_stride=16`` equals the reference
objective. Reported: seconds per step (median), slices/s and iterations/s.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pytest
import torch

from supercl.losses import LossConfig, SuperCLLoss, asp_vectors, position_labels
from supercl.models import SuperCLModel, UNetEncoder
from supercl.ops import downsample_segments, knn_weak_labels, slic
from supercl.testing import (knn_weak_labels_reference, superpixel_mean_map_reference,
                             supcon_loss_reference)
from supercl.train.views import SuperCLViews

BATCH = 16
SIZE = 256
N_SEGMENTS = 100
COMPACTNESS = 0.1
HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])


def batch_of_slices(device: str):
    from phantom_v1 import phantom_batch

    images, _ = phantom_batch(BATCH, SIZE, SIZE, seed=0)
    x = (np.clip(images, -200, 300) + 200) / 500
    positions = torch.linspace(0, 1, BATCH)
    return torch.from_numpy(x).float()[:, None].to(device), positions.to(device)


def skimage_superpixels(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """The reference loader: scikit-image SLIC per sample, on both views (v2's map is computed
    as the reference does, though ILCP labels come from v1's)."""
    from skimage.segmentation import slic as sk_slic

    maps = []
    for a, b in zip(v1[:, 0].cpu().numpy(), v2[:, 0].cpu().numpy()):
        maps.append(sk_slic(a, n_segments=N_SEGMENTS, compactness=COMPACTNESS, channel_axis=None,
                            start_label=0))
        sk_slic(b, n_segments=N_SEGMENTS, compactness=COMPACTNESS, channel_axis=None, start_label=0)
    return torch.from_numpy(np.stack(maps)).long().to(v1.device)


def reference_objective(f1, f2, e3, e4, segments, positions, cfg: LossConfig) -> torch.Tensor:
    """The objective as the reference code computes it: dense SupCon per image on every 16th
    bottleneck pixel, ASP by index_add, 1-NN components with numpy/scipy, dense SupCon."""
    b, c, h, w = f1.shape
    small = downsample_segments(segments, (h, w))
    intra = []
    for i in range(b):
        pix = torch.cat([f1[i].flatten(1).T[::cfg.pixel_stride], f2[i].flatten(1).T[::cfg.pixel_stride]])
        lab = small[i].flatten()[::cfg.pixel_stride]
        intra.append(supcon_loss_reference(pix, torch.cat([lab, lab]), cfg.temperature,
                                           reduction="none"))
    l_intra = torch.cat(intra).mean()  # every pixel has a positive: itself in the other view
    with torch.no_grad():
        asp = superpixel_mean_map_reference(torch.cat([f1, f2]).mean(1, keepdim=True),
                                            torch.cat([small, small])).flatten(1)
        weak = torch.as_tensor(knn_weak_labels_reference(asp.double().cpu().numpy(), 1, True),
                               device=f1.device)
    z = torch.cat([e3, e4])
    l_inter = supcon_loss_reference(z, weak, cfg.temperature)
    lab = position_labels(positions, cfg.pcl_threshold)
    l_ins = supcon_loss_reference(z, torch.cat([lab, lab]), cfg.temperature)
    return cfg.l_ins * l_ins + cfg.l_intra * l_intra + cfg.l_inter * l_inter


def make_step(provider: str, device: str):
    torch.manual_seed(0)
    model = SuperCLModel(UNetEncoder(1, 32, 4)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    views = SuperCLViews()
    x, positions = batch_of_slices(device)
    cfg = LossConfig(pixel_stride=1 if provider == "supercl" else 16)
    loss_fn = SuperCLLoss(cfg)

    def step():
        v1, v2, v3, v4 = views(x)
        if provider == "supercl":
            segments = slic(v1[:, 0], n_segments=N_SEGMENTS, compactness=COMPACTNESS).long()
        else:
            segments = skimage_superpixels(v1, v2)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            f, e = model(torch.cat([v1, v2, v3, v4]))
        f, e = f.float(), e.float()
        parts = (f[:BATCH], f[BATCH:2 * BATCH], e[2 * BATCH:3 * BATCH], e[3 * BATCH:])
        if provider == "supercl":
            loss = loss_fn(*parts, segments, positions)["loss"]
        else:
            loss = reference_objective(*parts, segments, positions, cfg)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return float(loss)

    return step


def make_overhead(provider: str, device: str):
    """Everything of the step except the network: views, superpixels, the objective and its
    backward to the features (the bottleneck maps and embeddings are fixed random tensors of
    the reference U-Net's shapes). This is the part where the two designs differ."""
    x, positions = batch_of_slices(device)
    views = SuperCLViews()
    g = torch.Generator().manual_seed(0)
    f = torch.randn(4 * BATCH, 512, SIZE // 16, SIZE // 16, generator=g).to(device).requires_grad_()
    e = torch.randn(4 * BATCH, 512, generator=g).to(device).requires_grad_()
    cfg = LossConfig(pixel_stride=1 if provider == "supercl" else 16)
    loss_fn = SuperCLLoss(cfg)

    def step():
        v1, v2, _, _ = views(x)
        parts = (f[:BATCH], f[BATCH:2 * BATCH], e[2 * BATCH:3 * BATCH], e[3 * BATCH:])
        if provider.startswith("supercl"):
            segments = slic(v1[:, 0], n_segments=N_SEGMENTS, compactness=COMPACTNESS).long()
            loss = loss_fn(*parts, segments, positions)["loss"]
        else:
            segments = skimage_superpixels(v1, v2)
            loss = reference_objective(*parts, segments, positions, cfg)
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return float(loss)

    return step


def test_objectives_agree_at_stride_16():
    """supercl's objective with the reference's pixel stride equals the reference objective."""
    g = torch.Generator().manual_seed(0)
    f1, f2 = torch.randn(4, 8, 8, 8, generator=g), torch.randn(4, 8, 8, 8, generator=g)
    e3, e4 = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    segments = torch.randint(0, 12, (4, 32, 32), generator=g)
    positions = torch.rand(4, generator=g)
    cfg = LossConfig(pixel_stride=16)
    ours = SuperCLLoss(cfg)(f1, f2, e3, e4, segments, positions)["loss"]
    theirs = reference_objective(f1, f2, e3, e4, segments, positions, cfg)
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("part", ["step", "overhead"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("provider", ["supercl", "supercl-stride16", "reference"])
def test_pretrain_step(benchmark, provider, device, part):
    """part="step": the whole step; part="overhead": without the U-Net (see make_overhead).
    "supercl-stride16" samples ILCP pixels as the reference does (same work, other design);
    timed for the overhead only."""
    if provider == "supercl-stride16" and part == "step":
        pytest.skip("the stride-16 variant is timed for the overhead only")
    if provider == "reference":
        pytest.importorskip("skimage")
    step = (make_step if part == "step" else make_overhead)(provider, device)
    rounds = (3 if part == "step" else 5) if device == "cpu" else 10
    benchmark.group = f"pretrain_{part}-{device}"
    value = benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1)
    assert np.isfinite(value)
    if benchmark.disabled:  # --benchmark-disable: one untimed run, nothing to record
        return
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(provider=provider, device=device, part=part, batch=BATCH,
                                size=f"{SIZE}x{SIZE}", threads=torch.get_num_threads(),
                                median_s=median, slices_per_s=BATCH / median,
                                iterations_per_s=1 / median,
                                peak_gpu_memory_bytes=torch.cuda.max_memory_allocated()
                                if device == "cuda" else None)


# ---- the step part by part ------------------------------------------------------------------

#: The parts of supercl's step, in order; their times add up to the synchronised step.
PARTS = ("views", "slic", "network_fwd", "objective_fwd", "backward", "optimizer")
#: Parts of objective_fwd, timed again on their own on the same inputs (not in the sum):
#: the superpixel maps down-sampled to the bottleneck, ASP, and the k-NN weak labels.
SUBPARTS = ("downsample", "asp", "weak_labels")


class StepParts:
    """supercl's pre-training step of :func:`make_step`, as a list of parts run one after the
    other on a ``state`` dict; :meth:`run` synchronises the device around every part and
    records its time. ``backward`` is the backward of the objective and of the network
    together (autograd runs them as one pass); the optimizer part includes ``zero_grad``."""

    def __init__(self, device: str):
        torch.manual_seed(0)
        self.device = device
        self.model = SuperCLModel(UNetEncoder(1, 32, 4)).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.views = SuperCLViews()
        self.x, self.positions = batch_of_slices(device)
        self.loss_fn = SuperCLLoss(LossConfig())

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def part(self, name: str, state: dict) -> None:
        """Run part ``name`` on ``state`` (which holds what the earlier parts made)."""
        if name == "views":
            state["views"] = self.views(self.x)
        elif name == "slic":
            state["segments"] = slic(state["views"][0][:, 0], n_segments=N_SEGMENTS,
                                     compactness=COMPACTNESS).long()
        elif name == "network_fwd":
            with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.device == "cuda"):
                f, e = self.model(torch.cat(state["views"]))
            state["f"], state["e"] = f.float(), e.float()
        elif name == "objective_fwd":
            f, e = state["f"], state["e"]
            state["loss"] = self.loss_fn(f[:BATCH], f[BATCH:2 * BATCH], e[2 * BATCH:3 * BATCH],
                                         e[3 * BATCH:], state["segments"], self.positions)["loss"]
        elif name == "backward":
            state["loss"].backward()
        elif name == "optimizer":
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        elif name == "downsample":
            state["small"] = downsample_segments(state["segments"], tuple(state["f"].shape[-2:]))
        elif name == "asp":
            with torch.no_grad():
                f, small = state["f"], state["small"]
                asp = asp_vectors(torch.cat([f[:BATCH], f[BATCH:2 * BATCH]]),
                                  torch.cat([small, small]))
                state["nodes"] = 0.5 * (asp[:BATCH] + asp[BATCH:])
        elif name == "weak_labels":
            state["weak"] = knn_weak_labels(state["nodes"], k=1)
        else:
            raise ValueError(name)

    def prefix(self, name: str) -> dict:
        """The state just before part ``name``: the parts before it (for a sub-part, the
        parts before objective_fwd and the sub-parts before it), from zeroed gradients."""
        self.optimizer.zero_grad(set_to_none=True)
        state: dict = {}
        order = PARTS[:PARTS.index("objective_fwd")] + SUBPARTS if name in SUBPARTS else PARTS
        for earlier in order[:order.index(name)]:
            self.part(earlier, state)
        self.sync()
        return state

    def run(self, times: dict | None = None) -> float:
        """One whole step, the sub-parts after objective_fwd; appends each part's seconds to
        ``times[part]``. Returns the loss."""
        state: dict = {}
        for name in PARTS[:PARTS.index("backward")] + SUBPARTS + PARTS[PARTS.index("backward"):]:
            self.sync()
            start = time.perf_counter()
            self.part(name, state)
            self.sync()
            if times is not None:
                times[name].append(time.perf_counter() - start)
        return float(state["loss"].detach())


def _shares(medians: dict[str, float]) -> dict[str, float]:
    total = sum(medians[p] for p in PARTS)
    return {name: value / total for name, value in medians.items()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("part", ("step",) + PARTS + SUBPARTS)
def test_pretrain_step_breakdown(benchmark, part, device):
    """One record per part of supercl's step (the earlier parts run untimed before every
    round), and ``part="step"``: the whole step synchronised around every part, with every
    part's median and share in extra_info."""
    parts = StepParts(device)
    rounds = 3 if device == "cpu" else 10
    benchmark.group = f"pretrain_breakdown-{device}"
    info = dict(provider=part, device=device, part=part, batch=BATCH, size=f"{SIZE}x{SIZE}",
                threads=torch.get_num_threads())
    if part == "step":
        times: dict[str, list[float]] = defaultdict(list)
        parts.run()  # warm-up: compiles and caches, not recorded
        value = benchmark.pedantic(parts.run, args=(times,), rounds=rounds, iterations=1)
        assert np.isfinite(value)
        if benchmark.disabled:  # --benchmark-disable: one untimed run, nothing to record
            return
        medians = {name: float(np.median(t)) for name, t in times.items()}
        shares = _shares(medians)
        info.update(parts_ms={k: v * 1e3 for k, v in medians.items()}, shares=shares,
                    outside_network_share=1 - shares["network_fwd"] - shares["backward"],
                    outside_network_note="network_fwd and backward count as the network's; "
                    "the backward includes the objective's, so this share is a lower bound")
    else:
        def setup():
            return (parts.prefix(part),), {}

        def target(state):
            parts.part(part, state)
            parts.sync()

        parts.run()  # warm-up
        benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1)
        if benchmark.disabled:
            return
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(info, median_s=median, slices_per_s=BATCH / median)
