"""The backbones of supercl.models.backbones: each one's encoder interface, the projection head
and ILCP's level on it, and a pre-training step whose encoder transfers into fine-tuning.

The nnunet backbone needs dynamic-network-architectures and the monai one monai (optional
extras); their tests are skipped, with the reason, where those are missing. The plans file here
is written by hand in the format nnU-Net v2 writes (the "2d" configuration's "architecture"
entry, as nnUNetv2_plan_and_preprocess wrote it for a 64 x 64 dataset, with narrower stages);
tests/test_nnunet.py plans with nnU-Net itself where nnunetv2 is installed.
"""

from __future__ import annotations

import json

import pytest
import torch

from supercl._validate import SettingError
from supercl.models import SuperCLModel
from supercl.models.backbones import NNUNetBackbone, backbone_of, read_nnunet_plans


def nnunet_plans(path, features=(8, 16, 32, 64), strides=None, configuration="2d",
                 conv="torch.nn.modules.conv.Conv2d", cls="PlainConvUNet"):
    """An nnUNetPlans.json with one configuration (what nnU-Net 2.8 writes, narrower)."""
    n = len(features)
    strides = strides or [[1, 1]] + [[2, 2]] * (n - 1)
    kwargs = {"n_stages": n, "features_per_stage": list(features), "conv_op": conv,
              "kernel_sizes": [[3, 3]] * n, "strides": strides,
              "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1),
              "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
              "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
              "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
              "nonlin_kwargs": {"inplace": True}}
    if cls == "ResidualEncoderUNet":
        kwargs["n_blocks_per_stage"] = kwargs.pop("n_conv_per_stage")
    plans = {"dataset_name": "Dataset001_Phantom", "plans_name": "nnUNetPlans",
             "configurations": {configuration: {
                 "data_identifier": "nnUNetPlans_2d", "patch_size": [64, 64],
                 "architecture": {
                     "network_class_name": f"dynamic_network_architectures.architectures.unet.{cls}",
                     "arch_kwargs": kwargs,
                     "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}}
    path.write_text(json.dumps(plans))
    return path


def _needs(name):
    return pytest.importorskip(name, reason=f"{name} is not installed (optional extra: "
                               f"pip install 'supercl[{'nnunet' if 'dynamic' in name else 'monai'}]')")


@pytest.fixture(params=["supercl", "nnunet", "nnunet-residual", "monai"])
def settings(request, tmp_path):
    """Run settings of a small network of each backbone."""
    kind = request.param
    if kind == "supercl":
        return {"backbone": "supercl", "base_channels": 4, "depth": 3}
    if kind == "monai":
        _needs("monai")
        return {"backbone": "monai", "base_channels": 4, "depth": 4}
    _needs("dynamic_network_architectures")
    cls = "ResidualEncoderUNet" if kind == "nnunet-residual" else "PlainConvUNet"
    return {"backbone": "nnunet", "plans": str(nnunet_plans(tmp_path / "nnUNetPlans.json",
                                                            cls=cls))}


def test_encoder_interface_and_head(settings):
    """forward_features: full resolution first, the bottleneck last, at the backbone's
    reductions; the head on the bottleneck; the segmenter's encoder has the encoder's keys."""
    backbone = backbone_of(settings)
    torch.manual_seed(0)
    encoder = backbone.encoder()
    x = torch.randn(2, 1, 48, 32)
    features = encoder.forward_features(x)
    assert len(features) == len(backbone.reductions) == len(encoder.out_channels)
    for f, (ry, rx), c in zip(features, backbone.reductions, encoder.out_channels):
        assert tuple(f.shape) == (2, c, 48 // ry, 32 // rx)
    assert torch.equal(encoder(x), features[-1])
    model = SuperCLModel(encoder, hidden_dim=16, out_dim=8)
    f, e, g = model(x, level=1)
    assert torch.equal(f, features[-1]) and torch.equal(g, features[1])
    assert tuple(e.shape) == (2, 8)
    # the head is the reference's: global average pooling of the bottleneck, then the MLP
    torch.testing.assert_close(e, model.head.mlp(features[-1].mean(dim=(2, 3))))
    seg = backbone.segmenter(3)
    assert tuple(seg(x).shape) == (2, 3, 48, 32)
    assert {k: v.shape for k, v in seg.encoder.state_dict().items()} == \
        {k: v.shape for k, v in encoder.state_dict().items()}


def test_ilcp_level_rule_on_backbones(settings):
    """The scale-aware rule: the deepest level whose map gives a superpixel >= 4 pixels, on the
    backbone's own down-sampling."""
    from supercl.train.pretraining import PretrainConfig, resolve_ilcp_level

    backbone = backbone_of(settings)
    for side, k in ((32, 16), (64, 16), (64, 100), (32, 64)):
        cfg = PretrainConfig(**settings, patch_size=side, n_segments=k)
        level = resolve_ilcp_level(cfg)
        area = [side * side / (ry * rx) / k for ry, rx in backbone.reductions]
        expected = max([l for l, a in enumerate(area) if a >= 4], default=0)
        assert level == expected
    cfg = PretrainConfig(**settings, patch_size=32, ilcp_level=-1)
    assert resolve_ilcp_level(cfg) == backbone.depth


def test_pretrain_step_changes_encoder_and_finetune_transfers_it(settings, tmp_path):
    """One pre-training step changes the encoder; fine-tuning from it starts from exactly those
    weights (lr 1e-12: the step moves them by ~1e-12), and evaluate rebuilds the network."""
    from supercl.data import write_msd
    from supercl.train import FinetuneConfig, PretrainConfig, finetune, pretrain

    data = write_msd(tmp_path / "data", n_volumes=5, shape=(4, 32, 32), n_organs=2)
    common = dict(data=str(data), patch_size=32, device="cpu", progress=False, figures=False,
                  label_fraction=1.0, val_fraction=0.2, test_fraction=0.2, **settings)
    pre = PretrainConfig(out=str(tmp_path / "pre"), epochs=1, max_steps=1, batch_size=4,
                         n_segments=16, embed_dim=16, **common)
    summary = pretrain(pre)
    assert summary["status"] == "finished"
    trained = torch.load(tmp_path / "pre" / "encoder.pt", weights_only=False)["encoder"]
    torch.manual_seed(pre.seed)  # the initial weights pretrain() drew
    initial = backbone_of(settings).encoder().state_dict()
    assert trained.keys() == initial.keys()
    params = [k for k, v in trained.items() if v.is_floating_point() and "running" not in k]
    assert any(not torch.equal(trained[k], initial[k]) for k in params)

    ft = FinetuneConfig(out=str(tmp_path / "ft"), pretrained=str(tmp_path / "pre"), epochs=1,
                        max_steps=1, batch_size=2, lr=1e-12, augment=False, **common)
    result = finetune(ft)
    assert result["status"] == "finished"
    model = torch.load(tmp_path / "ft" / "best.pt", weights_only=False)["model"]
    for k in params:
        torch.testing.assert_close(model["encoder." + k], trained[k], rtol=0, atol=1e-9)
    assert 0.0 <= result["evaluation"]["mean_dsc"] <= 1.0


def test_backbone_settings_are_checked(tmp_path):
    from supercl.train import PretrainConfig

    with pytest.raises(SettingError, match="plans.*nnUNetPlans.json"):
        PretrainConfig(backbone="nnunet")
    with pytest.raises(SettingError, match="backbone must be one of"):
        PretrainConfig(backbone="resnet")
    with pytest.raises(SettingError, match="depth.*must be 4 with backbone monai"):
        PretrainConfig(backbone="monai", depth=3)
    plans = nnunet_plans(tmp_path / "p.json", features=(8, 16, 32, 64, 64, 64))  # /32
    with pytest.raises(SettingError, match="patch_size must be a multiple of the nnunet "
                                           "network's = 32, got 48"):
        PretrainConfig(backbone="nnunet", plans=str(plans), patch_size=48)


def test_read_nnunet_plans_refuses_what_it_cannot_use(tmp_path):
    good = nnunet_plans(tmp_path / "nnUNetPlans.json")
    arch = read_nnunet_plans(tmp_path)  # the folder works too
    assert arch["arch_kwargs"]["n_stages"] == 4 and arch["file"] == str(good)
    with pytest.raises(ValueError, match=r"p\.json.*configurations.*no '2d'"):
        read_nnunet_plans(nnunet_plans(tmp_path / "p.json", configuration="3d_fullres"))
    with pytest.raises(ValueError, match=r"c\.json.*arch_kwargs\.conv_op.*Conv3d"):
        read_nnunet_plans(nnunet_plans(tmp_path / "c.json", conv="torch.nn.modules.conv.Conv3d"))
    old = json.loads(good.read_text())
    del old["configurations"]["2d"]["architecture"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"old\.json.*configurations\.2d\.architecture.*2\.4"):
        read_nnunet_plans(tmp_path / "old.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json: cannot read"):
        read_nnunet_plans(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_nnunet_plans(tmp_path / "missing.json")
    # anisotropic strides: each axis keeps its own reduction
    aniso = NNUNetBackbone(str(nnunet_plans(tmp_path / "a.json",
                                            strides=[[1, 1], [2, 2], [2, 1], [2, 2]])))
    assert aniso.reductions == [(1, 1), (2, 2), (4, 2), (8, 4)]


def test_cli_backbone_options(tmp_path, capsys):
    from supercl.cli import build_parser, main

    args = build_parser().parse_args(["pretrain", "--backbone", "nnunet", "--plans", "x.json"])
    assert (args.backbone, args.plans, args.plans_configuration) == ("nnunet", "x.json", "2d")
    with pytest.raises(SystemExit) as err:
        main(["pretrain", "--backbone", "nnunet", "--out", str(tmp_path / "r")])
    assert err.value.code == 2
    assert "--plans" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_monai_encoder_keys_are_basic_unets_own():
    """The monai encoder's state (encoder.pt) loads into a plain MONAI BasicUNet as it is: its
    keys are BasicUNet's conv_0 / down_* and only the up-sampling path is left missing."""
    nets = _needs("monai").networks.nets
    backbone = backbone_of({"backbone": "monai", "base_channels": 4})
    state = backbone.encoder().state_dict()
    net = nets.BasicUNet(spatial_dims=2, in_channels=1, out_channels=3, features=backbone.features)
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and missing
    assert all(k.startswith(("upcat_", "final_conv")) for k in missing)
    seg = backbone.segmenter(3)
    assert seg.basic_unet().state_dict().keys() == net.state_dict().keys()
    x = torch.randn(1, 1, 32, 32)
    seg.eval()
    torch.testing.assert_close(seg(x), seg.basic_unet()(x))


def test_export_nnunet_writes_the_planned_network(tmp_path):
    """export_nnunet: network_weights has every key of the network nnU-Net builds from the
    plans, the encoder's (and the decoder's alias of it) are the pre-trained ones, the rest a
    seeded nnU-Net initialisation; runs of another backbone and multi-channel datasets are
    refused."""
    _needs("dynamic_network_architectures")
    from supercl.train.export import export_nnunet

    plans = nnunet_plans(tmp_path / "nnUNetPlans.json")
    backbone = NNUNetBackbone(str(plans))
    torch.manual_seed(3)
    state = backbone.encoder().state_dict()
    run = tmp_path / "encoder.pt"
    torch.save({"kind": "encoder", "encoder": state,
                "config": {"backbone": "nnunet", "plans": str(plans)}}, run)
    from supercl.cli import main

    assert main(["export", str(run), "--nnunet", str(tmp_path / "a.pth")]) == 0
    export_nnunet(run, tmp_path / "b.pth")
    a = torch.load(tmp_path / "a.pth", weights_only=False)["network_weights"]
    b = torch.load(tmp_path / "b.pth", weights_only=False)["network_weights"]
    network = backbone.network(5, deep_supervision=True).state_dict()
    assert {k: v.shape for k, v in a.items() if ".seg_layers." not in k} == \
        {k: v.shape for k, v in network.items() if ".seg_layers." not in k}
    for k, v in state.items():
        assert torch.equal(a["encoder." + k[5:]], v) and torch.equal(a["decoder.encoder." + k[5:]], v)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the decoder's initialisation is seeded
    decoder = [k for k in a if k.startswith("decoder.") and not k.startswith("decoder.encoder.")]
    assert decoder and any(not torch.equal(a[k], network[k]) for k in decoder
                           if a[k].is_floating_point() and a[k].numel() > 1)

    (tmp_path / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "a": 1},
         "file_ending": ".nii.gz"}))
    with pytest.raises(ValueError, match=r'dataset\.json: "channel_names" has 2 channels'):
        export_nnunet(run, tmp_path / "d.pth")
    assert not (tmp_path / "d.pth").exists()


def test_export_refuses_runs_of_other_backbones(tmp_path, capsys):
    """(Needs no optional package, so that the export module's imports are checked
    everywhere.)"""
    from supercl.cli import main
    from supercl.train.export import export_nnunet

    torch.save({"kind": "encoder", "encoder": {}, "config": {"backbone": "supercl"}},
               tmp_path / "other.pt")
    with pytest.raises(ValueError, match="pre-trained with backbone 'supercl'"):
        export_nnunet(tmp_path / "other.pt", tmp_path / "c.pth")
    assert main(["export", str(tmp_path / "other.pt"), "--nnunet", str(tmp_path / "c.pth")]) == 2
    assert "export --nnunet needs a run pre-trained with --backbone nnunet" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no config.json or supercl checkpoint"):
        export_nnunet(tmp_path / "nothing", tmp_path / "c.pth")
    assert not (tmp_path / "c.pth").exists()


def test_docstring_examples_run():
    import doctest

    import supercl.models.backbones as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_runs_written_before_backbones_resume(tmp_path):
    """A checkpoint's config without the backbone settings ran supercl's U-Net: resuming it
    with the defaults is allowed, with another backbone it is not."""
    from dataclasses import asdict

    from supercl.train import PretrainConfig
    from supercl.train.loop import check_resume

    saved = asdict(PretrainConfig())
    for key in ("backbone", "plans", "plans_configuration"):
        del saved[key]
    check_resume(PretrainConfig(), saved, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="--backbone supercl -> monai"):
        check_resume(PretrainConfig(backbone="monai"), saved, tmp_path / "checkpoint.pt")
