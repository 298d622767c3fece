"""SuperCL's four views of a batch of slices, made on the batch's device with kornia.

- v1, v2, the spatial-invariance pair: two independent photometric augmentations of the
  same slices (brightness, contrast, Gaussian blur); pixel-aligned with each other and with
  the input, so one superpixel map serves both.
- v3, v4, the spatial-variance pair: independent spatial augmentations of v1 and v2 (flip,
  rotation, scale, elastic deformation).

kornia draws its parameters from torch's global random generator, so a run seeded with
``torch.manual_seed`` (and resumed with the saved RNG state) makes the same views. It draws
them on the host, as the reference recipe's blur and elastic deformation below do, and makes
the whole batch in one call per augmentation (images skipped with probability 1 - p are
selected with ``torch.where``): nothing here waits for the GPU.
Intensities are not clipped: CT slices are windowed to [0, 1] but z-scored MRI slices are
not bounded, and clipping would change them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from supercl._validate import check_choice, check_float, check_setting

__all__ = ["ViewConfig", "SuperCLViews"]


@dataclass
class ViewConfig:
    """Augmentation strengths (ranges are sampled uniformly per image).

    brightness: additive shift range, as kornia's factor (1 = unchanged);
    contrast: multiplicative factor range; blur_sigma: Gaussian blur sigma range in pixels,
    applied with probability blur_p; rotation: degrees (+-); scale: zoom range;
    elastic_p: probability of an elastic deformation; flip_p: horizontal flip probability.
    """

    brightness: tuple[float, float] = (0.9, 1.1)
    contrast: tuple[float, float] = (0.8, 1.2)
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    blur_p: float = 0.5
    rotation: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    flip_p: float = 0.5
    elastic_p: float = 0.5
    #: "default": the fields above; "reference": the published code's views (the fields above
    #: are then unused), see :class:`SuperCLViews`.
    recipe: str = "default"

    def __post_init__(self):
        for name in ("brightness", "contrast", "blur_sigma", "scale"):
            check_setting(self, name, _check_range)
        for name in ("blur_p", "flip_p", "elastic_p"):
            check_setting(self, name, check_float, nonnegative=True, maximum=1.0)
        check_setting(self, "rotation", check_float, nonnegative=True)
        check_setting(self, "recipe", check_choice, ("default", "reference"))


#: The published code's views, in pixels of a 512 x 512 slice: Gaussian blur always on with
#: sigma U(1, 3) (photometric pair, with the default brightness and contrast); mirroring on both
#: axes (p = 0.5 each), rotation U(0, 360) degrees, scale U(0.7, 1.3) and, with p = 0.67, an
#: elastic deformation with alpha U(100, 350) and sigma U(14, 17) (spatial pair).
REFERENCE_VIEWS = dict(side=512, blur_sigma=(1.0, 3.0), rotation=(0.0, 360.0), scale=(0.7, 1.3),
                       elastic_alpha=(100.0, 350.0), elastic_sigma=(14.0, 17.0), elastic_p=0.67)


class ReferenceElastic(nn.Module):
    """Simard-style elastic deformation as the reference code draws it, per image: a
    displacement field of uniform noise in [-1, 1] per axis, smoothed by a Gaussian of sigma
    U(sigma) and scaled by U(alpha) pixels, applied with probability ``p``.

    The parameters are in pixels of a ``side`` x ``side`` slice. On an S x S slice sigma is
    scaled by S / side and alpha by (S / side)**2, which keeps the displacement the same
    fraction of the image (the smoothing divides the noise's amplitude by about sigma).

    (B, C, H, W) -> (B, C, H, W), border padding, bilinear.
    """

    def __init__(self, alpha=(100.0, 350.0), sigma=(14.0, 17.0), p=0.67, side=512):
        super().__init__()
        self.alpha, self.sigma, self.p, self.side = alpha, sigma, p, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from kornia.filters import gaussian_blur2d

        b, _, h, w = x.shape
        s = max(h, w) / self.side
        dev = x.device
        # The per-image parameters are drawn on the host (torch's CPU generator, as kornia's
        # augmentations do) and sent without waiting: the kernel size needs max(sigma) on the
        # host, and kornia checks sigma > 0 on the host, which on device tensors would make
        # the GPU wait every step. On CPU tensors the draws are the same as before.
        apply = torch.rand(b) < self.p
        sigma = (torch.empty(b).uniform_(*self.sigma) * s).clamp_min(0.5)
        alpha = torch.empty(b).uniform_(*self.alpha) * s * s
        noise = torch.rand(b, 2, h, w, device=dev) * 2 - 1
        k = int(2 * math.ceil(3 * float(sigma.max())) + 1)
        k = min(k, 2 * ((min(h, w) - 1) // 2) + 1)
        field = gaussian_blur2d(noise, (k, k), torch.stack([sigma, sigma], 1),
                                border_type="reflect")
        scale = _to_device(alpha * apply, dev)
        field = field * scale[:, None, None, None]  # pixels; 0 where not applied
        ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=x.dtype),
                                torch.arange(w, device=dev, dtype=x.dtype), indexing="ij")
        gx = (xs + field[:, 0]) * (2 / max(w - 1, 1)) - 1
        gy = (ys + field[:, 1]) * (2 / max(h - 1, 1)) - 1
        grid = torch.stack([gx, gy], dim=-1).to(x.dtype)
        return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                               align_corners=True)



def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on ``device`` without making the host wait: from pinned memory,
    asynchronously (as supercl.kernels.cuda.launch does)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _check_range(value, name: str) -> None:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}")
    low, high = (check_float(v, name) for v in value)
    if low > high:
        raise ValueError(f"{name} must have low <= high, got {value!r}")


class SuperCLViews(nn.Module):
    """Make (v1, v2, v3, v4) from a batch (B, C, H, W) on its device.

    ``ViewConfig(recipe="reference")`` builds the published code's views
    (:data:`REFERENCE_VIEWS`; blur sigmas given for 512 x 512 slices are scaled with the
    slice side) instead of the configured ones.

    Example
    -------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> views = SuperCLViews()
    >>> v1, v2, v3, v4 = views(torch.rand(2, 1, 32, 32))
    >>> v1.shape, v4.shape
    (torch.Size([2, 1, 32, 32]), torch.Size([2, 1, 32, 32]))
    """

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
            self.elastic = ReferenceElastic(r["elastic_alpha"], r["elastic_sigma"],
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
        # drawn on the host, see ReferenceElastic.forward
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
