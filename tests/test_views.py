"""SuperCLViews against a frozen copy of the views as they were before they bypassed kornia's
AugmentationSequential (supercl 9f4d319): on the CPU the same seed must give the same views bit
for bit, since the README's demo and ablation numbers were made with them, and must leave the
global generator in the same state (the same draws, in the same order)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from supercl.train.views import (REFERENCE_VIEWS, SuperCLViews, ViewConfig, _pack,
                                 _to_device_all, _unpack)

pytest.importorskip("kornia")


# ---- frozen: supercl/train/views.py at 9f4d319 (the old code path, kept verbatim) ----------

class _ReferenceElasticBefore(nn.Module):
    """ReferenceElastic as it was (frozen)."""

    def __init__(self, alpha=(100.0, 350.0), sigma=(14.0, 17.0), p=0.67, side=512):
        super().__init__()
        self.alpha, self.sigma, self.p, self.side = alpha, sigma, p, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from kornia.filters import gaussian_blur2d

        b, _, h, w = x.shape
        s = max(h, w) / self.side
        dev = x.device
        apply = torch.rand(b) < self.p
        sigma = (torch.empty(b).uniform_(*self.sigma) * s).clamp_min(0.5)
        alpha = torch.empty(b).uniform_(*self.alpha) * s * s
        noise = torch.rand(b, 2, h, w, device=dev) * 2 - 1
        k = int(2 * math.ceil(3 * float(sigma.max())) + 1)
        k = min(k, 2 * ((min(h, w) - 1) // 2) + 1)
        field = gaussian_blur2d(noise, (k, k), torch.stack([sigma, sigma], 1),
                                border_type="reflect")
        scale = (alpha * apply).to(dev)
        field = field * scale[:, None, None, None]  # pixels; 0 where not applied
        ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=x.dtype),
                                torch.arange(w, device=dev, dtype=x.dtype), indexing="ij")
        gx = (xs + field[:, 0]) * (2 / max(w - 1, 1)) - 1
        gy = (ys + field[:, 1]) * (2 / max(h - 1, 1)) - 1
        grid = torch.stack([gx, gy], dim=-1).to(x.dtype)
        return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                               align_corners=True)




class _ViewsBefore(nn.Module):
    """SuperCLViews as it was before the views bypassed kornia's containers (frozen)."""

    def __init__(self, config: ViewConfig | None = None):
        super().__init__()
        import kornia.augmentation as K

        c = config or ViewConfig()
        if c.recipe not in ("default", "reference"):
            raise ValueError(f"views recipe must be 'default' or 'reference', got {c.recipe!r}")
        self.recipe = c.recipe
        if c.recipe == "reference":
            r = REFERENCE_VIEWS
            self.photometric = K.AugmentationSequential(
                K.RandomBrightness(brightness=c.brightness, clip_output=False, p=1.0),
                K.RandomContrast(contrast=c.contrast, clip_output=False, p=1.0))
            self.blur_sigma = r["blur_sigma"]
            self.spatial = K.AugmentationSequential(
                K.RandomHorizontalFlip(p=0.5), K.RandomVerticalFlip(p=0.5),
                K.RandomAffine(degrees=r["rotation"], scale=r["scale"], p=1.0,
                               padding_mode="border"))
            self.elastic = _ReferenceElasticBefore(r["elastic_alpha"], r["elastic_sigma"],
                                            r["elastic_p"], r["side"])
            return
        self.photometric = K.AugmentationSequential(
            K.RandomBrightness(brightness=c.brightness, clip_output=False, p=1.0),
            K.RandomContrast(contrast=c.contrast, clip_output=False, p=1.0),
            K.RandomGaussianBlur(kernel_size=(7, 7), sigma=c.blur_sigma, p=c.blur_p),
        )
        self.spatial = K.AugmentationSequential(
            K.RandomHorizontalFlip(p=c.flip_p),
            K.RandomAffine(degrees=c.rotation, scale=c.scale, p=1.0, padding_mode="border"),
            K.RandomElasticTransform(kernel_size=(31, 31), sigma=(6.0, 6.0), alpha=(0.5, 0.5),
                                     padding_mode="border", p=c.elastic_p),
        )

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        """The reference's always-on Gaussian blur, sigma U(1, 3) pixels at 512 (scaled)."""
        from kornia.filters import gaussian_blur2d

        b, _, h, w = x.shape
        s = max(h, w) / REFERENCE_VIEWS["side"]
        sigma = torch.empty(b).uniform_(*self.blur_sigma) * s
        k = int(2 * math.ceil(3 * float(sigma.max())) + 1)
        return gaussian_blur2d(x, (k, k), torch.stack([sigma, sigma], 1), border_type="reflect")

    def invariance_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.recipe == "reference":
            return self._blur(self.photometric(x)), self._blur(self.photometric(x))
        return self.photometric(x), self.photometric(x)

    def spatial_view(self, v: torch.Tensor) -> torch.Tensor:
        if self.recipe == "reference":
            return self.elastic(self.spatial(v))
        return self.spatial(v)

    def forward(self, x: torch.Tensor):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ValueError("x must be a float tensor of shape (B, C, H, W), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        v1, v2 = self.invariance_pair(x)
        return v1, v2, self.spatial_view(v1), self.spatial_view(v2)


# ---- tests -------------------------------------------------------------------------------

def _views_and_state(views, x, seed):
    torch.manual_seed(seed)
    out = views(x)
    return out, torch.get_rng_state()


def _assert_same(new, old, x, seeds=(0, 1, 7)):
    for seed in seeds:
        got, got_state = _views_and_state(new, x, seed)
        want, want_state = _views_and_state(old, x, seed)
        for i, (a, b) in enumerate(zip(got, want)):
            assert a.dtype == b.dtype and a.shape == b.shape, f"v{i + 1}"
            assert torch.equal(a, b), f"v{i + 1} differs for seed {seed}"
        assert torch.equal(got_state, want_state), "a different number of draws"


@pytest.mark.parametrize("recipe", ["default", "reference"])
@pytest.mark.parametrize("shape", [(4, 1, 32, 32), (1, 1, 17, 23), (5, 2, 33, 47)])
def test_views_match_the_former_views_bit_for_bit_on_cpu(recipe, shape):
    cfg = ViewConfig(recipe=recipe)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    _assert_same(SuperCLViews(cfg), _ViewsBefore(cfg), x)


@pytest.mark.parametrize("probs", [dict(blur_p=0.0, flip_p=0.0, elastic_p=0.0),
                                   dict(blur_p=1.0, flip_p=1.0, elastic_p=1.0),
                                   dict(blur_p=0.3, flip_p=0.9, elastic_p=0.2)])
def test_views_match_the_former_views_at_the_edge_probabilities(probs):
    """p = 0 and p = 1 draw no gate at all in kornia (and p = 1 blends nothing)."""
    cfg = ViewConfig(rotation=0.0, scale=(1.0, 1.0), **probs)
    x = torch.rand(3, 1, 24, 20, generator=torch.Generator().manual_seed(5))
    _assert_same(SuperCLViews(cfg), _ViewsBefore(cfg), x)


def test_views_match_the_former_views_in_float64_with_wide_ranges():
    cfg = ViewConfig(blur_sigma=(0.5, 3.0), rotation=40.0, scale=(0.5, 2.0))
    x = torch.rand(3, 1, 29, 31, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    _assert_same(SuperCLViews(cfg), _ViewsBefore(cfg), x, seeds=(2,))


@pytest.mark.parametrize("recipe", ["default", "reference"])
def test_views_match_the_former_views_under_cpu_autocast(recipe):
    """Under autocast too (kornia casts each augmentation's output back to its input's dtype
    there, and so does _apply_sequence; on the CPU these ops keep float32 anyway)."""
    cfg = ViewConfig(recipe=recipe)
    x = torch.rand(3, 1, 24, 28, generator=torch.Generator().manual_seed(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _assert_same(SuperCLViews(cfg), _ViewsBefore(cfg), x, seeds=(1,))


def test_views_keep_the_containers_for_callers_that_use_them():
    """The containers stay (tests/test_step_syncs.py's oracle calls them); the views use the
    same modules, so calling a container gives the same image as the views' own path."""
    views = SuperCLViews()
    x = torch.rand(2, 1, 16, 16)
    torch.manual_seed(0)
    a = views.photometric(x)
    torch.manual_seed(0)
    b = views._photometric(x)
    assert torch.equal(a, b)


def test_to_device_all_on_cpu_returns_the_same_values():
    ts = [torch.tensor([True, False]), torch.rand(3, 3, 3), torch.rand(2, dtype=torch.float64)]
    for a, b in zip(_to_device_all(ts, torch.device("cpu")), ts):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert _to_device_all([], torch.device("cpu")) == []


def test_pack_and_unpack_keep_every_value_shape_and_dtype():
    """The one copy to the GPU sends _pack's flat float64 tensor and splits it with _unpack."""
    g = torch.Generator().manual_seed(0)
    ts = [torch.tensor([True, False, True]), torch.rand(2, 3, 3, generator=g) * 1e-30,
          torch.rand(4, dtype=torch.float64, generator=g) / 3, torch.rand(5, generator=g).half(),
          torch.empty(0), torch.tensor(7.25), torch.rand(3, generator=g).bfloat16()]
    flat = _pack(ts)
    assert flat.dtype == torch.float64 and flat.numel() == sum(t.numel() for t in ts)
    for a, b in zip(_unpack(flat, ts), ts):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


@pytest.mark.cuda
def test_to_device_all_packs_every_dtype_exactly():
    ts = [torch.tensor([True, False, True]), torch.rand(2, 3, 3),
          torch.rand(4, dtype=torch.float64) / 3, torch.rand(5).half(), torch.empty(0)]
    got = _to_device_all(ts, torch.device("cuda"))
    torch.cuda.synchronize()
    for a, b in zip(got, ts):
        assert a.is_cuda and a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a.cpu(), b)


@pytest.mark.cuda
@pytest.mark.parametrize("recipe", ["default", "reference"])
def test_views_on_cuda_use_the_same_host_draws_as_on_cpu(recipe):
    """On a GPU the host draws are the CPU's except for the default recipe's elastic noise,
    which comes from the CUDA generator (as the reference recipe's always did): v1, v2 and, for
    the default recipe with the deformation off, v3 (its flip and affine are drawn before that
    noise) match the CPU views to float tolerance."""
    cfg = ViewConfig(recipe=recipe, elastic_p=0.0)
    views = SuperCLViews(cfg)
    x = torch.rand(4, 1, 40, 36, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    want = views(x)
    torch.manual_seed(0)
    got = [v.cpu() for v in views(x.cuda())]
    n = 2 if recipe == "reference" else 3  # the reference elastic noise was always on the device
    for i in range(n):
        torch.testing.assert_close(got[i], want[i], atol=1e-4, rtol=1e-4, msg=f"v{i + 1}")
