"""The networks whose encoder SuperCL pre-trains: supercl's U-Net, the 2-D network nnU-Net v2
plans for a dataset, and MONAI's BasicUNet.

A user who trains with nnU-Net or MONAI wants the encoder of *that* network pre-trained, not
supercl's own. Each family is a :class:`Backbone`: a small object the trainer asks for

- ``encoder()``: a module with the encoder interface of :mod:`supercl.models.unet`
  (``forward`` -> the bottleneck map, ``forward_features`` -> every level from full resolution
  to the bottleneck, ``out_channels``, ``reduction``). :class:`~supercl.models.SuperCLModel`
  puts the projection head on its bottleneck, exactly where the reference puts it on its
  U-Net's: global average pooling of the deepest encoder map, then the 2-layer MLP; ILCP takes
  ``forward_features()[level]``.
- ``segmenter(num_classes)``: the whole network for fine-tuning, a module whose ``encoder``
  attribute has the same parameter names as ``encoder()``, so that a pre-trained encoder
  state loads into it unchanged, and whose ``forward`` gives logits (B, K, H, W).
- ``reductions``: the down-sampling (rows, columns) of every encoder level, for ILCP's
  scale-aware level rule (:func:`supercl.train.pretraining.resolve_ilcp_level`) and for the
  patch-size check.

:func:`backbone_of` builds the one a run's settings name (``backbone``, ``base_channels``,
``depth``, ``plans``, ``plans_configuration``). ``dynamic-network-architectures`` (what nnU-Net
builds its networks with) and ``monai`` are optional: they are imported only when such a
network is built, with an error that says how to install them.

:func:`supercl.train.export.export_nnunet` writes a pre-trained encoder as a checkpoint that
nnU-Net v2's ``load_pretrained_weights`` (``nnUNetv2_train ... -pretrained_weights FILE``)
accepts.
"""

from __future__ import annotations

import json
import pydoc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from supercl._validate import check_choice, check_int

from .unet import UNet, UNetEncoder

__all__ = ["BACKBONES", "Backbone", "SuperCLBackbone", "NNUNetBackbone", "MonaiBackbone",
           "NNUNetEncoder", "backbone_of", "read_nnunet_plans"]

BACKBONES = ("supercl", "nnunet", "monai")


class Backbone:
    """A family of networks, as the trainer sees it (see the module docstring).

    Attributes
    ----------
    name : str
        ``"supercl"``, ``"nnunet"`` or ``"monai"``.
    reductions : list of (int, int)
        Down-sampling of every encoder level, full resolution (level 0) first; the last entry
        is the bottleneck's. ``len(reductions) - 1`` is the encoder's depth.
    """

    name = ""
    reductions: list[tuple[int, int]]

    @property
    def depth(self) -> int:
        """The index of the bottleneck level."""
        return len(self.reductions) - 1

    @property
    def multiple(self) -> tuple[int, int]:
        """Input sides must be multiples of these (rows, columns)."""
        return self.reductions[-1]

    def encoder(self) -> nn.Module:
        raise NotImplementedError

    def segmenter(self, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


@dataclass
class SuperCLBackbone(Backbone):
    """supercl's U-Net (:class:`~supercl.models.UNet`): the reference network."""

    base_channels: int = 32
    levels: int = 4
    name = "supercl"

    def __post_init__(self):
        self.reductions = [(2**l, 2**l) for l in range(self.levels + 1)]

    def encoder(self) -> nn.Module:
        return UNetEncoder(1, self.base_channels, self.levels)

    def segmenter(self, num_classes: int) -> nn.Module:
        return UNet(1, self.base_channels, num_classes, self.levels)

    def describe(self) -> str:
        return f"supercl U-Net (base {self.base_channels}, depth {self.levels})"


# --------------------------------------------------------------------------- nnU-Net
def _need(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"this backbone needs `{module.split('.')[0]}`, which is not "
                          f"installed: pip install 'supercl[{extra}]' ({err})") from err


def read_nnunet_plans(path: str | Path, configuration: str = "2d") -> dict[str, Any]:
    """The ``architecture`` entry of one configuration of an nnU-Net v2 plans file.

    ``path``: ``nnUNetPlans.json`` (or the folder holding it, e.g.
    ``nnUNet_preprocessed/Dataset001_X``). Returns ``{"network_class_name": str,
    "arch_kwargs": dict, "_kw_requires_import": list}`` of ``configurations[configuration]``,
    following ``inherits_from``. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` naming the file and the key for anything else it cannot use (not JSON, no
    such configuration, no ``architecture`` entry: plans of nnU-Net < 2.4, a 3-D
    convolution).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "nnUNetPlans.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: nnU-Net plans file does not exist")
    try:
        plans = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{p}: cannot read the nnU-Net plans ({err})") from err
    configs = plans.get("configurations") if isinstance(plans, dict) else None
    if not isinstance(configs, dict):
        raise ValueError(f'{p}: no "configurations" object; not an nnU-Net v2 plans file')
    if configuration not in configs:
        raise ValueError(f'{p}: "configurations" has no {configuration!r} (it has '
                         f"{sorted(configs)})")
    conf, seen = dict(configs[configuration]), {configuration}
    while "inherits_from" in conf:  # nnU-Net's inheritance: the child's keys win
        parent = conf.pop("inherits_from")
        if parent in seen or parent not in configs:
            raise ValueError(f'{p}: configurations.{configuration}.inherits_from {parent!r} '
                             "is missing or circular")
        seen.add(parent)
        conf = {**configs[parent], **conf}
    arch = conf.get("architecture")
    where = f"configurations.{configuration}.architecture"
    if not isinstance(arch, dict):
        raise ValueError(f'{p}: no "{where}" entry (plans written by nnU-Net older than '
                         "2.4; plan the dataset again with nnUNetv2_plan_and_preprocess)")
    for key, kind in (("network_class_name", str), ("arch_kwargs", dict),
                      ("_kw_requires_import", list)):
        if not isinstance(arch.get(key), kind):
            raise ValueError(f'{p}: "{where}.{key}" must be a {kind.__name__}, got '
                             f"{arch.get(key)!r}")
    kwargs = arch["arch_kwargs"]
    conv = kwargs.get("conv_op")
    if not (isinstance(conv, str) and conv.endswith("Conv2d")):
        raise ValueError(f'{p}: "{where}.arch_kwargs.conv_op" is {conv!r}; supercl pre-trains '
                         "2-D networks: use the 2d configuration")
    for key in ("n_stages", "features_per_stage", "strides"):
        if key not in kwargs:
            raise ValueError(f'{p}: "{where}.arch_kwargs" has no "{key}"')
    return {"network_class_name": arch["network_class_name"], "arch_kwargs": dict(kwargs),
            "_kw_requires_import": list(arch["_kw_requires_import"]), "file": str(p)}


def _build_nnunet_network(arch: dict, input_channels: int, num_classes: int,
                          deep_supervision: bool = False) -> nn.Module:
    """The network nnU-Net builds from ``arch`` (nnunetv2.utilities.get_network_from_plans:
    the class and the ``_kw_requires_import`` arguments located by name, then the class's own
    ``initialize``), without importing nnunetv2."""
    _need("dynamic_network_architectures", "nnunet")
    kwargs = dict(arch["arch_kwargs"])
    for key in arch["_kw_requires_import"]:
        if kwargs.get(key) is not None:
            located = pydoc.locate(kwargs[key])
            if located is None:
                raise ValueError(f"{arch['file']}: arch_kwargs.{key} {kwargs[key]!r} cannot be "
                                 "imported")
            kwargs[key] = located
    cls = pydoc.locate(arch["network_class_name"])
    if cls is None:
        raise ValueError(f"{arch['file']}: network_class_name {arch['network_class_name']!r} "
                         "cannot be imported (is dynamic-network-architectures up to date?)")
    net = cls(input_channels=input_channels, num_classes=num_classes,
              deep_supervision=deep_supervision, **kwargs)
    if hasattr(net, "initialize"):
        net.apply(net.initialize)
    if not (hasattr(net, "encoder") and hasattr(net, "decoder")
            and hasattr(net.encoder, "output_channels")):
        raise ValueError(f"{arch['file']}: {arch['network_class_name']} is not an encoder-"
                         "decoder U-Net (no .encoder.output_channels); supercl pre-trains the "
                         "encoders of dynamic-network-architectures' U-Nets")
    return net


class NNUNetEncoder(nn.Module):
    """The encoder of an nnU-Net network (``network.encoder``, kept as ``body``, so its
    parameters are ``body.<nnU-Net name>``) with supercl's encoder interface. nnU-Net's
    first stage has stride 1, so ``forward_features()[0]`` is at full resolution and the
    last is the bottleneck, like :class:`~supercl.models.UNetEncoder`'s."""

    def __init__(self, body: nn.Module, reductions: list[tuple[int, int]]):
        super().__init__()
        self.body = body
        self.body.return_skips = True  # the U-Net's own setting; every stage's output
        self.in_channels = 1
        self.out_channels = list(body.output_channels)
        self.reductions = reductions
        self.reduction = max(reductions[-1])

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[-1]


class NNUNetSegmenter(nn.Module):
    """The whole nnU-Net network for fine-tuning inside supercl: ``encoder`` (an
    :class:`NNUNetEncoder`) and nnU-Net's own ``decoder``, without deep supervision."""

    def __init__(self, network: nn.Module, reductions: list[tuple[int, int]]):
        super().__init__()
        self.encoder = NNUNetEncoder(network.encoder, reductions)
        self.decoder = network.decoder
        self.decoder.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder.forward_features(x))


@dataclass
class NNUNetBackbone(Backbone):
    """The 2-D network that nnU-Net v2 planned: ``plans`` is its ``nnUNetPlans.json`` (or its
    folder), ``configuration`` the configuration (``"2d"``)."""

    plans: str = ""
    configuration: str = "2d"
    name = "nnunet"
    arch: dict = field(init=False, repr=False)

    def __post_init__(self):
        self.arch = read_nnunet_plans(self.plans, self.configuration)
        strides = self.arch["arch_kwargs"]["strides"]
        n = self.arch["arch_kwargs"]["n_stages"]
        if not isinstance(strides, list) or len(strides) != n:
            raise ValueError(f"{self.arch['file']}: arch_kwargs.strides must list {n} strides "
                             f"(n_stages), got {strides!r}")
        ry = rx = 1
        self.reductions = []
        for s in strides:
            sy, sx = (s, s) if isinstance(s, int) else s
            ry, rx = ry * sy, rx * sx
            self.reductions.append((ry, rx))
        if self.reductions[0] != (1, 1):
            raise ValueError(f"{self.arch['file']}: arch_kwargs.strides[0] is {strides[0]!r}; "
                             "supercl expects nnU-Net's full-resolution first stage (stride 1)")

    def network(self, num_classes: int, deep_supervision: bool = False) -> nn.Module:
        """The network as nnU-Net builds it (one input channel)."""
        return _build_nnunet_network(self.arch, 1, num_classes, deep_supervision)

    def encoder(self) -> nn.Module:
        return NNUNetEncoder(self.network(2).encoder, self.reductions)

    def segmenter(self, num_classes: int) -> nn.Module:
        return NNUNetSegmenter(self.network(num_classes), self.reductions)

    def describe(self) -> str:
        k = self.arch["arch_kwargs"]
        return (f"nnU-Net {self.configuration} {self.arch['network_class_name'].split('.')[-1]} "
                f"({k['n_stages']} stages, {k['features_per_stage'][0]} -> "
                f"{k['features_per_stage'][-1]} channels) from {self.arch['file']}")


# --------------------------------------------------------------------------- MONAI
_MONAI_ENCODER = ("conv_0", "down_1", "down_2", "down_3", "down_4")
_MONAI_DECODER = ("upcat_4", "upcat_3", "upcat_2", "upcat_1", "final_conv")


class MonaiEncoder(nn.Module):
    """The contracting half of a MONAI ``BasicUNet`` (its modules ``conv_0``, ``down_1`` ...
    ``down_4`` under their own names) with supercl's encoder interface."""

    def __init__(self, net: nn.Module, features: tuple[int, ...]):
        super().__init__()
        for name in _MONAI_ENCODER:
            setattr(self, name, getattr(net, name))
        self.in_channels = 1
        self.out_channels = list(features[:5])
        self.reduction = 16

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.conv_0(x)]
        for name in _MONAI_ENCODER[1:]:
            features.append(getattr(self, name)(features[-1]))
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[-1]


class MonaiSegmenter(nn.Module):
    """A MONAI ``BasicUNet`` split into ``encoder`` (:class:`MonaiEncoder`) and ``decoder``
    (its up-sampling path and classifier); :meth:`basic_unet` gives the BasicUNet back."""

    def __init__(self, net: nn.Module, features: tuple[int, ...]):
        super().__init__()
        self.encoder = MonaiEncoder(net, features)
        self.decoder = nn.ModuleDict({name: getattr(net, name) for name in _MONAI_DECODER})
        self._net = [net]  # not a submodule: its parameters are those of encoder and decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0, x1, x2, x3, x4 = self.encoder.forward_features(x)
        d = self.decoder
        u = d["upcat_1"](d["upcat_2"](d["upcat_3"](d["upcat_4"](x4, x3), x2), x1), x0)
        return d["final_conv"](u)

    def basic_unet(self) -> nn.Module:
        """The MONAI ``BasicUNet`` these weights belong to (shared, not copied)."""
        return self._net[0]


@dataclass
class MonaiBackbone(Backbone):
    """MONAI's 2-D ``BasicUNet`` (4 down-samplings) with features ``(b, b, 2b, 4b, 8b, b)``
    for ``base_channels`` b: MONAI's default ``(32, 32, 64, 128, 256, 32)`` at b = 32."""

    base_channels: int = 32
    name = "monai"

    def __post_init__(self):
        self.reductions = [(2**l, 2**l) for l in range(5)]
        b = self.base_channels
        self.features = (b, b, 2 * b, 4 * b, 8 * b, b)

    def _net(self, num_classes: int) -> nn.Module:
        nets = _need("monai.networks.nets", "monai")
        return nets.BasicUNet(spatial_dims=2, in_channels=1, out_channels=num_classes,
                              features=self.features)

    def encoder(self) -> nn.Module:
        return MonaiEncoder(self._net(2), self.features)

    def segmenter(self, num_classes: int) -> nn.Module:
        return MonaiSegmenter(self._net(num_classes), self.features)

    def describe(self) -> str:
        return f"MONAI BasicUNet (features {self.features})"


def _setting(cfg: Any, name: str, default: Any) -> Any:
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def backbone_of(cfg: Any) -> Backbone:
    """The :class:`Backbone` of a run's settings (a config dataclass or its saved dict):
    ``backbone`` ("supercl" by default), ``base_channels`` and ``depth`` (supercl;
    ``base_channels`` for monai, whose depth is 4), ``plans`` and ``plans_configuration``
    (nnunet). Raises ``ValueError`` naming the setting that does not fit.

    >>> backbone_of({"backbone": "supercl", "base_channels": 8, "depth": 3}).reductions[-1]
    (8, 8)
    """
    name = _setting(cfg, "backbone", "supercl")
    check_choice(name, "backbone", BACKBONES)
    base = _setting(cfg, "base_channels", 32)
    if name == "supercl":
        return SuperCLBackbone(base, _setting(cfg, "depth", 4))
    if name == "monai":
        if _setting(cfg, "depth", 4) != 4:
            raise ValueError(f"depth must be 4 with backbone monai (BasicUNet has 4 "
                             f"down-samplings), got {_setting(cfg, 'depth', 4)}")
        return MonaiBackbone(check_int(base, "base_channels", 1))
    plans = _setting(cfg, "plans", None)
    if not plans:
        raise ValueError("backbone nnunet needs plans: the nnUNetPlans.json that "
                         "nnUNetv2_plan_and_preprocess wrote (or its folder)")
    return NNUNetBackbone(str(plans), _setting(cfg, "plans_configuration", "2d"))
