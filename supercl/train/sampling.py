"""What a training step sees of its slices: random crops and foreground oversampling.

- :func:`crop_batch` cuts one ``size x size`` crop from every slice of a batch, at random or
  around given centres. Training on crops of slices kept at their native resolution keeps
  small structures (on phantom v2 at 128 x 128 the aorta covers about 21 pixels of a slice;
  resized to 64 x 64 it covers 5) at the cost of a down-scaled whole slice.
- :class:`ForegroundSampler` replaces each item of a batch, with probability ``p``, by a
  foreground draw, as nnU-Net oversamples foreground patches: a class drawn uniformly among
  the foreground classes the set contains, then one of that class's pixels drawn uniformly
  over the whole set; the crop is centred on it. Small classes then appear in about
  ``p / n_classes`` of the items whatever their area.

Every draw comes from :func:`step_generator`, seeded by the run's seed and the global step,
so an interrupted run that resumes sees the same crops.
"""

from __future__ import annotations

import torch

from supercl._validate import check_tensor

__all__ = ["step_generator", "crop_batch", "ForegroundSampler"]


def step_generator(seed: int, global_step: int) -> torch.Generator:
    """The CPU generator of one optimizer step's draws (apart from the epoch's permutation,
    which :func:`~supercl.train.loop.epoch_batches` seeds with ``seed * 1_000_003 + epoch``)."""
    return torch.Generator().manual_seed((seed + 1) * 2_147_483_647 + 2 * global_step + 1)


def crop_batch(x: torch.Tensor, size: int, generator: torch.Generator,
               y: torch.Tensor | None = None,
               centers: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One ``size x size`` crop of every slice.

    Parameters
    ----------
    x : (B, C, H, W) slices, H and W >= size; y : optional (B, H, W) label maps, cropped alike.
    centers : optional (B, 2) int64 (row, col) per slice, or -1 for a random crop; a crop is
        centred on its point and shifted to lie inside the slice.

    Returns ``(x_crop (B, C, size, size), y_crop (B, size, size) or None)``.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> crop_batch(x, 2, g, centers=torch.tensor([[3, 3]]))[0][0, 0]
    tensor([[10., 11.],
            [14., 15.]])
    """
    b, _, h, w = x.shape
    if not 1 <= size <= min(h, w):
        raise ValueError(f"size must be in [1, {min(h, w)}] for slices of {h}x{w}, got {size}")
    top = torch.randint(0, h - size + 1, (b,), generator=generator)
    left = torch.randint(0, w - size + 1, (b,), generator=generator)
    if centers is not None:
        given = centers[:, 0] >= 0
        top = torch.where(given, (centers[:, 0] - size // 2).clamp(0, h - size), top)
        left = torch.where(given, (centers[:, 1] - size // 2).clamp(0, w - size), left)
    xs, ys = [], []
    for i, (t, l) in enumerate(zip(top.tolist(), left.tolist())):
        xs.append(x[i, :, t:t + size, l:l + size])
        if y is not None:
            ys.append(y[i, t:t + size, l:l + size])
    return torch.stack(xs), (torch.stack(ys) if y is not None else None)


class ForegroundSampler:
    """Foreground oversampling over a set of label maps.

    ``ForegroundSampler(labels)`` with (N, H, W) int64 labels (0 = background);
    ``draw(idx, generator, p)`` -> ``(idx, centers)``: each item of the (B,) index batch is
    kept with probability ``1 - p`` (centre -1: a random crop) or replaced by a foreground
    draw (a class uniformly among those present, then a pixel of it uniformly over the set:
    its slice and its (row, col)). With no foreground in the set, ``idx`` is returned as it is.

    >>> labels = torch.zeros(3, 4, 4, dtype=torch.long); labels[2, 1, 2] = 1
    >>> idx, centers = ForegroundSampler(labels).draw(torch.tensor([0, 1]),
    ...                                               torch.Generator().manual_seed(0), p=1.0)
    >>> idx.tolist(), centers.tolist()
    ([2, 2], [[1, 2], [1, 2]])
    """

    def __init__(self, labels: torch.Tensor):
        check_tensor(labels, "labels", dims="(N, H, W)", arrays=False)
        self.shape = labels.shape
        flat = labels.reshape(-1)
        self.classes = [int(c) for c in torch.unique(flat).tolist() if c > 0]
        #: per present class, the flat indices (slice * H * W + row * W + col) of its pixels
        self.pixels = [torch.nonzero(flat == c).flatten() for c in self.classes]

    def draw(self, idx: torch.Tensor, generator: torch.Generator,
             p: float) -> tuple[torch.Tensor, torch.Tensor]:
        b = idx.shape[0]
        centers = torch.full((b, 2), -1, dtype=torch.long)
        if not self.classes or p <= 0:
            return idx, centers
        replace = torch.rand(b, generator=generator) < p
        cls = torch.randint(0, len(self.classes), (b,), generator=generator)
        pick = torch.rand(b, generator=generator)
        idx = idx.clone()
        _, h, w = self.shape
        for i in torch.nonzero(replace).flatten().tolist():
            pixels = self.pixels[int(cls[i])]
            flat = int(pixels[min(int(pick[i] * len(pixels)), len(pixels) - 1)])
            idx[i], rest = divmod(flat, h * w)
            centers[i, 0], centers[i, 1] = divmod(rest, w)
        return idx, centers
