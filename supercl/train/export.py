"""Pre-trained weights for other tools: :func:`export_nnunet` (``supercl export --nnunet``)
writes the encoder of a pre-training run as a checkpoint that nnU-Net v2's
``load_pretrained_weights`` (``nnUNetv2_train ... -pretrained_weights FILE``) accepts. See
docs/nnunet.md for the whole workflow.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from supercl.data.nnunet import read_nnunet_dataset_json
from supercl.models.backbones import NNUNetBackbone, NNUNetEncoder

from .finetuning import _load_encoder  # the one reader of pre-training runs

__all__ = ["export_nnunet"]


def export_nnunet(run: str | Path, out: str | Path, plans: str | Path | None = None,
                  configuration: str | None = None, num_classes: int | None = None,
                  seed: int = 0) -> dict:
    """Write the pre-trained encoder of a supercl run as nnU-Net v2 pre-trained weights.

    ``run``: a pre-training run with backbone nnunet (its folder, ``encoder.pt`` or
    ``checkpoint.pt``). ``plans``/``configuration``: the plans the network is built from
    (default: the run's). ``out`` gets ``{"network_weights": state_dict, "supercl": {...}}``,
    the state of the whole network that nnU-Net builds from those plans, so that
    ``nnUNetv2_train DATASET 2d FOLD -pretrained_weights OUT`` (nnU-Net's
    ``load_pretrained_weights``: every key but ``.seg_layers.`` present with its shape) loads
    it.

    What the file carries: the **encoder** (``encoder.*``, and its alias
    ``decoder.encoder.*`` that nnU-Net's decoder keeps) holds the pre-trained weights; the
    **decoder** (transposed convolutions, decoder stages, segmentation layers) holds nnU-Net's
    own initialisation of a new network (``InitWeights_He(1e-2)``, seeded by ``seed``), i.e.
    it is not pre-trained, exactly as if nnU-Net had initialised it. ``num_classes`` only
    sizes the segmentation layers, which nnU-Net does not load (default: from the
    ``dataset.json`` next to the plans, else 2). A ``dataset.json`` there with more than one
    channel is refused (the pre-trained first convolution has one input channel).

    Returns a summary: the file, the counts of pre-trained and initialised tensors.
    """
    saved = _run_config(run)
    if saved.get("backbone", "supercl") != "nnunet":
        raise ValueError(f"{run}: pre-trained with backbone "
                         f"{saved.get('backbone', 'supercl')!r}; export --nnunet needs a "
                         "run pre-trained with --backbone nnunet (its encoder is the network "
                         "nnU-Net builds)")
    backbone = NNUNetBackbone(str(plans or saved.get("plans")),
                              configuration or saved.get("plans_configuration", "2d"))
    meta = Path(backbone.arch["file"]).parent / "dataset.json"  # nnU-Net copies it there
    if meta.is_file():
        from supercl.data.nnunet import read_nnunet_dataset_json

        dataset = read_nnunet_dataset_json(meta)
        if len(dataset["channel_names"]) != 1:
            # the first convolution would not match: nnU-Net's load refuses it, less plainly
            raise ValueError(f'{meta}: "channel_names" has {len(dataset["channel_names"])} '
                             "channels; supercl pre-trains one-channel encoders, so its "
                             "weights fit only a one-channel nnU-Net dataset")
        if num_classes is None:
            num_classes = max(dataset["labels"].values()) + 1
    num_classes = num_classes or 2
    torch.manual_seed(seed)
    # nnU-Net trains with deep supervision on; the keys are the same either way.
    network = backbone.network(num_classes, deep_supervision=True)
    encoder = NNUNetEncoder(network.encoder, backbone.reductions)
    source, _ = _load_encoder(str(run), encoder)
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    pretrained = sum(k.startswith("encoder.") for k in state)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": state,
                "supercl": {"source": str(source), "plans": backbone.arch["file"],
                            "configuration": backbone.configuration,
                            "pretrained": "encoder", "decoder": "nnU-Net initialisation"}}, out)
    return {"file": str(out), "source": str(source), "pretrained_tensors": pretrained,
            "initialised_tensors": sum(not k.startswith(("encoder.", "decoder.encoder."))
                                       for k in state)}


def _run_config(run: str | Path) -> dict:
    """The saved settings of a pre-training run (``config.json`` or the checkpoint's)."""
    p = Path(run)
    folder = p if p.is_dir() else p.parent
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text())
    if p.is_file():
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
        if isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict):
            return ckpt["config"]
    raise FileNotFoundError(f"{run}: no config.json or supercl checkpoint there")
