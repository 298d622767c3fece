"""The 2D U-Net of SuperCL, its encoder, and the projection head.

Reference configuration (the SuperCL paper's U-Net): 4 down-samplings, channels 32 -> 512 (base 32,
doubled at every level), two 3x3 convolution + batch norm + ReLU blocks per level, max-pool
down, transposed-convolution up, skip connections by concatenation.

**The encoder interface.** SuperCL pre-trains only an encoder and transfers only the encoder.
Any ``torch.nn.Module`` can take the place of :class:`UNetEncoder` if it has

- ``forward(x) -> f``: (B, in_channels, H, W) -> bottleneck map (B, C, H / r, W / r), the
  feature map whose pixels are ILCP's embeddings;
- ``forward_features(x) -> list[Tensor]``: the feature maps from the highest resolution to
  the bottleneck, ``features[-1]`` being what ``forward`` returns; the U-Net decoder takes
  ``features[:-1]`` as its skip connections;
- ``out_channels: list[int]``: the channel count of every entry of ``forward_features``;
- ``reduction: int``: r, the down-sampling factor of the bottleneck (16 here); input sides
  must be multiples of it.

:class:`SuperCLModel` adds the :class:`ProjectionHead` on ``out_channels[-1]`` and
:class:`UNet` builds a decoder on ``out_channels``, so both work with any encoder that
satisfies this.
"""

from __future__ import annotations

import torch
from torch import nn

from supercl._validate import check_int, check_tensor

__all__ = ["UNetEncoder", "UNetDecoder", "UNet", "ProjectionHead", "SuperCLModel"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNetEncoder(nn.Module):
    """The contracting half of the U-Net.

    Parameters
    ----------
    in_channels : int
        Image channels (1 for CT/MRI slices).
    base_channels : int
        Channels of the first level (reference 32); level i has ``base_channels * 2**i``.
    depth : int
        Number of down-samplings (reference 4); the bottleneck has ``base_channels * 2**depth``
        channels (512 for the reference) at 1 / 2**depth of the input side.

    Shapes
    ------
    ``forward``: (B, in_channels, H, W) -> (B, base_channels * 2**depth, H / 2**depth,
    W / 2**depth); H and W must be multiples of ``2**depth``.

    Example
    -------
    >>> import torch
    >>> enc = UNetEncoder(in_channels=1, base_channels=8)
    >>> enc(torch.zeros(2, 1, 32, 48)).shape
    torch.Size([2, 128, 2, 3])
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 32, depth: int = 4):
        super().__init__()
        check_int(in_channels, "in_channels", 1)
        check_int(base_channels, "base_channels", 1)
        check_int(depth, "depth", 1)
        self.in_channels = in_channels
        self.out_channels = [base_channels * 2**i for i in range(depth + 1)]
        self.reduction = 2**depth
        chans = [in_channels] + self.out_channels
        self.blocks = nn.ModuleList(_block(chans[i], chans[i + 1]) for i in range(depth + 1))
        self.pool = nn.MaxPool2d(2)

    def _check_input(self, x: torch.Tensor) -> None:
        check_tensor(x, "x", dims=f"(B, {self.in_channels}, H, W)",
                     shape=(None, self.in_channels, None, None), arrays=False)
        if x.shape[2] % self.reduction or x.shape[3] % self.reduction:
            raise ValueError(f"x's height and width must be multiples of {self.reduction} "
                             f"(2**depth), got {tuple(x.shape[2:])}")

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._check_input(x)
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.pool(x))
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[-1]


class UNetDecoder(nn.Module):
    """The expanding half: up-sample, concatenate the skip connection, two conv blocks, down
    to a 1x1 classifier. ``channels`` is the encoder's ``out_channels``."""

    def __init__(self, channels: list[int], num_classes: int):
        super().__init__()
        check_int(num_classes, "num_classes", 1)
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for deep, skip in zip(channels[:0:-1], channels[-2::-1]):
            self.ups.append(nn.ConvTranspose2d(deep, skip, 2, stride=2))
            self.blocks.append(_block(2 * skip, skip))
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, block, skip in zip(self.ups, self.blocks, features[-2::-1]):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:  # encoders with another rounding
                x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear",
                                              align_corners=False)
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)


class UNet(nn.Module):
    """2D U-Net for segmentation: ``encoder`` (a :class:`UNetEncoder` unless given) + decoder.

    Parameters
    ----------
    in_channels, base_channels, depth : int
        As in :class:`UNetEncoder` (ignored when ``encoder`` is given).
    num_classes : int
        Output classes including background.
    encoder : nn.Module, optional
        Any module with the encoder interface of this module's docstring.

    Shapes
    ------
    (B, in_channels, H, W) -> logits (B, num_classes, H, W).

    Example
    -------
    >>> import torch
    >>> net = UNet(in_channels=1, base_channels=8, num_classes=3)
    >>> net(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 3, 32, 32])
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 32, num_classes: int = 2,
                 depth: int = 4, encoder: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else UNetEncoder(in_channels, base_channels, depth)
        for attribute in ("forward_features", "out_channels"):
            if not hasattr(self.encoder, attribute):
                raise TypeError(f"encoder must have `{attribute}` (see supercl.models.unet)")
        self.decoder = UNetDecoder(list(self.encoder.out_channels), num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder.forward_features(x))


class ProjectionHead(nn.Module):
    """Instance embedding: global average pooling, then a 2-layer MLP (reference 512-512).

    Shapes
    ------
    (B, C, h, w) -> (B, out_dim).

    Example
    -------
    >>> import torch
    >>> ProjectionHead(64)(torch.zeros(3, 64, 2, 2)).shape
    torch.Size([3, 512])
    """

    def __init__(self, in_channels: int, hidden_dim: int = 512, out_dim: int = 512):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden_dim), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, out_dim))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.mlp(f.mean(dim=(2, 3)))


class SuperCLModel(nn.Module):
    """What pre-training optimises: an encoder and the projection head.

    ``forward(x)`` returns ``(f, e)``: the bottleneck map (B, C, h, w) and the instance
    embedding (B, out_dim). Only ``encoder`` is transferred to fine-tuning.

    Example
    -------
    >>> import torch
    >>> model = SuperCLModel(UNetEncoder(1, base_channels=8))
    >>> f, e = model(torch.zeros(2, 1, 32, 32))
    >>> tuple(f.shape), tuple(e.shape)
    ((2, 128, 2, 2), (2, 512))
    """

    def __init__(self, encoder: nn.Module, hidden_dim: int = 512, out_dim: int = 512):
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.out_channels[-1], hidden_dim, out_dim)

    def forward(self, x: torch.Tensor, level: int | None = None):
        """``(f, e)``; with ``level`` (an index into ``encoder.forward_features``, e.g. 2 for
        the map at 1/4 resolution), ``(f, e, g)`` with g that level's map (B, C_l, H/2^l,
        W/2^l), which ILCP can contrast instead of the bottleneck."""
        if level is None:
            f = self.encoder(x)
            return f, self.head(f)
        features = self.encoder.forward_features(x)
        f = features[-1]
        return f, self.head(f), features[level]
