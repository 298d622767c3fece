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

The augmentations are kornia's modules, but not run through ``AugmentationSequential``: each
module draws its parameters (``forward_parameters``, in the container's order) and is applied
with its own ``apply_transform`` (:func:`_apply_sequence`). On the CPU that is the same
functions on the same draws, so the views are the former ones bit for bit for a given seed
(tests/test_views.py compares them with a frozen copy of the container path). On a GPU:

- the gates, brightness/contrast factors and affine matrices (computed on the host) go to the
  device in one pinned, asynchronous copy per chain (4 per call) instead of one pageable copy
  each (drawing all four chains' parameters first would need the reference recipe's blur and
  elastic draws moved too; not done), and the
  container's bookkeeping (the flips' matrices, the composed matrix, per-module snapshots) is
  gone: 514 instead of 632 compute ops per call of the default recipe on the CPU profiler
  (496 instead of 604 for the reference one), most of the difference device work on a GPU;
- the default recipe's elastic noise, (B, 2, H, W) uniform, is drawn by the CUDA generator on
  the device. kornia drew it on the host (about 10 ms of host time and an 8 MB pageable copy
  per view at batch 16 of 256^2: most of the views' 47 ms host time and 5.3 ms of copies
  measured on an H200). So on a GPU the noise, and every host draw after it, come from other
  streams than on the CPU (the same distributions); the reference recipe's noise was already
  drawn on the device.

Expected on the H200 (batch 16 of 256^2; not measured yet): the host time per call down by
the two noise draws (about 20 ms of the 47 ms) and by the container's work (about a fifth of
the rest, as measured by an earlier trial on one seed), the two 8 MB pageable copies gone and
the small ones down to about one per photometric view (the blur's sigma: kornia checks it on
the host, so it stays there).
Intensities are not clipped: CT slices are windowed to [0, 1] but z-scored MRI slices are
not bounded, and clipping would change them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from supercl._runtime import to_device_async
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
        scale = to_device_async(alpha * apply, dev)
        field = field * scale[:, None, None, None]  # pixels; 0 where not applied
        ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=x.dtype),
                                torch.arange(w, device=dev, dtype=x.dtype), indexing="ij")
        gx = (xs + field[:, 0]) * (2 / max(w - 1, 1)) - 1
        gy = (ys + field[:, 1]) * (2 / max(h - 1, 1)) - 1
        grid = torch.stack([gx, gy], dim=-1).to(x.dtype)
        return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                               align_corners=True)



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

    def _photometric(self, x: torch.Tensor) -> torch.Tensor:
        """``self.photometric(x)`` without the container (see :func:`_apply_sequence`)."""
        params = [m.forward_parameters(x.shape) for m in self.photometric]
        return _apply_sequence(self.photometric, params, x)

    def _spatial(self, v: torch.Tensor) -> torch.Tensor:
        """``self.spatial(v)`` without the container (see :func:`_apply_sequence`); the
        elastic deformation's noise is drawn on ``v``'s device (see the module docstring)."""
        from kornia.augmentation import RandomElasticTransform

        params = []
        for m in self.spatial:
            if isinstance(m, RandomElasticTransform) and not m.same_on_batch:
                # kornia's draws in kornia's order (the gate, then the noise in the module's
                # dtype), but the noise on the device: on the CPU the same draws; on a GPU no
                # ~10 ms of host draws and no 8 MB pageable copy per view
                gate = m.__batch_prob_generator__(v.shape, m.p, m.p_batch, m.same_on_batch)
                noise = torch.rand(v.shape[0], 2, *v.shape[2:], device=v.device, dtype=m.dtype)
                params.append({"batch_prob": gate, "noise": noise * 2 - 1})
            else:
                params.append(m.forward_parameters(v.shape))
        return _apply_sequence(self.spatial, params, v)

    def invariance_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.recipe == "reference":
            return self._blur(self._photometric(x)), self._blur(self._photometric(x))
        return self._photometric(x), self._photometric(x)

    def spatial_view(self, v: torch.Tensor) -> torch.Tensor:
        if self.recipe == "reference":
            return self.elastic(self._spatial(v))
        return self._spatial(v)

    def forward(self, x: torch.Tensor):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ValueError("x must be a float tensor of shape (B, C, H, W), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        v1, v2 = self.invariance_pair(x)
        return v1, v2, self.spatial_view(v1), self.spatial_view(v2)


#: the per-image parameters that kornia's apply_transform reads as tensors on the image's device
#: (the blur's sigma stays on the host: kornia checks sigma > 0 there)
_DEVICE_PARAMS = ("brightness_factor", "contrast_factor")


def _apply_sequence(mods, params: list[dict], x: torch.Tensor) -> torch.Tensor:
    """Apply kornia augmentations ``mods`` in order with their drawn ``params``, as
    ``AugmentationSequential`` does for an image (``forward`` -> ``transform_inputs``): each
    module's ``apply_transform`` on the whole batch, an affine one's matrix from its
    ``generate_transformation_matrix``, and for ``p < 1`` a ``torch.where`` between the
    transformed and the unchanged image by the gate ``batch_prob > 0.5``. The same functions on
    the same values, so the same result on the CPU, bit for bit (tests/test_views.py checks it);
    without the container's per-module bookkeeping (parameter snapshots, the flips'
    matrices, the composed matrix), and with the small parameters (gates, factors, the affine
    matrices, computed on the host) sent to the device in one pinned copy.
    """
    from kornia.augmentation import RandomAffine
    from kornia.core.utils import is_autocast_enabled

    small = []  # (module index, key, host tensor) to send
    for i, (m, p) in enumerate(zip(mods, params)):
        if isinstance(m, RandomAffine):
            # only the input's shape, dtype and device are read: a host stand-in, a host matrix
            meta = torch.empty((), dtype=x.dtype).expand(x.shape)
            small.append((i, "matrix", m.generate_transformation_matrix(meta, p, m.flags)))
        if not (m.p == 1.0 and m.p_batch == 1.0):
            small.append((i, "gate", p["batch_prob"] > 0.5))
        small += [(i, k, p[k]) for k in _DEVICE_PARAMS if k in p]
    sent = _to_device_all([t for _, _, t in small], x.device)
    params = [dict(p) for p in params]
    for (i, k, _), t in zip(small, sent):
        params[i][k] = t
    for m, p in zip(mods, params):
        out = m.apply_transform(x, p, m.flags, transform=p.get("matrix"))
        if "gate" in p:
            out = torch.where(p["gate"].view(-1, *([1] * (x.dim() - 1))), out, x)
        if is_autocast_enabled():  # as transform_inputs does
            out = out.type(x.dtype)
        x = out
    return x


def _to_device_all(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Small host tensors on ``device`` in one pinned, asynchronous copy (a pageable copy makes
    the host wait); on another device, each tensor ``.to(device)``."""
    if device.type != "cuda" or not tensors:
        return [t.to(device) for t in tensors]
    return _unpack(to_device_async(_pack(tensors), device), tensors)


def _pack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One flat float64 tensor of ``tensors``' values: float64 holds bool and float16/32/64
    values exactly."""
    return torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])


def _unpack(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Split :func:`_pack`'s ``flat`` (on any device) back into tensors shaped and typed as
    ``like``."""
    out, i = [], 0
    for t in like:
        out.append(flat[i:i + t.numel()].view(t.shape).to(t.dtype))
        i += t.numel()
    return out
