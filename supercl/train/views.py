"""SuperCL's four views of a batch of slices, made on the batch's device with kornia.

- v1, v2, the spatial-invariance pair: two independent photometric augmentations of the
  same slices (brightness, contrast, Gaussian blur); pixel-aligned with each other and with
  the input, so one superpixel map serves both.
- v3, v4, the spatial-variance pair: independent spatial augmentations of v1 and v2 (flip,
  rotation, scale, elastic deformation).

kornia draws its parameters from torch's global random generator, so a run seeded with
``torch.manual_seed`` (and resumed with the saved RNG state) makes the same views.
Intensities are not clipped: CT slices are windowed to [0, 1] but z-scored MRI slices are
not bounded, and clipping would change them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from supercl._validate import check_float, check_setting

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

    def __post_init__(self):
        for name in ("brightness", "contrast", "blur_sigma", "scale"):
            check_setting(self, name, _check_range)
        for name in ("blur_p", "flip_p", "elastic_p"):
            check_setting(self, name, check_float, nonnegative=True, maximum=1.0)
        check_setting(self, "rotation", check_float, nonnegative=True)


def _check_range(value, name: str) -> None:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}")
    low, high = (check_float(v, name) for v in value)
    if low > high:
        raise ValueError(f"{name} must have low <= high, got {value!r}")


class SuperCLViews(nn.Module):
    """Make (v1, v2, v3, v4) from a batch (B, C, H, W) on its device.

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

    def invariance_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.photometric(x), self.photometric(x)

    def forward(self, x: torch.Tensor):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ValueError("x must be a float tensor of shape (B, C, H, W), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        v1, v2 = self.invariance_pair(x)
        return v1, v2, self.spatial(v1), self.spatial(v2)
