"""nnU-Net v2: its raw datasets (supercl.data.nnunet) and, where nnunetv2 is installed, the whole
workflow: nnU-Net plans a tiny raw dataset, supercl pre-trains the planned network's encoder and
exports it, and nnU-Net's own load_pretrained_weights loads the file into the network nnU-Net
builds from those plans."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from supercl.data.nifti import DatasetFileNotFoundError, load_case, scan_dataset
from supercl.data.nnunet import write_nnunet_raw


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return write_nnunet_raw(tmp_path_factory.mktemp("raw") / "Dataset001_Phantom", n_volumes=5,
                            shape=(4, 32, 32), n_organs=2)


@pytest.fixture
def raw_copy(raw, tmp_path):
    import shutil

    return shutil.copytree(raw, tmp_path / raw.name)


def edit(root, **changes):
    meta = json.loads((root / "dataset.json").read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    (root / "dataset.json").write_text(json.dumps(meta))


def test_scan_nnunet_raw_dataset(raw, tmp_path):
    import shutil

    from supercl.data import write_msd

    info = scan_dataset(raw)
    assert info.layout == "nnunet" and info.modality == "CT"
    assert [c.name for c in info.cases] == [f"phantom_{i:03d}" for i in range(5)]
    assert all(c.image.name == f"{c.name}_0000.nii.gz" and c.label.name == f"{c.name}.nii.gz"
               for c in info.cases)
    # the same volumes and classes as the MSD phantom they were written from
    msd = scan_dataset(write_msd(tmp_path / "msd", n_volumes=5, shape=(4, 32, 32), n_organs=2))
    assert info.class_names == msd.class_names and len(info.class_names) == 3
    labels = json.loads((raw / "dataset.json").read_text())["labels"]
    assert labels == {name: value for value, name in msd.class_names.items()}
    for a, b in zip(info.cases, msd.cases):
        x, y, _ = load_case(a, patch_size=32, class_names=info.class_names)
        u, v, _ = load_case(b, patch_size=32, class_names=msd.class_names)
        assert np.array_equal(x, u) and np.array_equal(y, v)
    # imagesTs: unlabeled cases (pre-training only)
    copy = shutil.copytree(raw, tmp_path / "withts")
    (copy / "imagesTs").mkdir()
    shutil.copyfile(copy / "imagesTr" / "phantom_000_0000.nii.gz",
                    copy / "imagesTs" / "extra_0000.nii.gz")
    info = scan_dataset(copy)
    assert {c.name: c.label for c in info.cases}["extra"] is None and len(info.cases) == 6


def test_scan_nnunet_channels_dataset_key_and_modality(raw_copy, capsys):
    import shutil

    src = raw_copy / "imagesTr" / "phantom_000_0000.nii.gz"
    for case in ("phantom_000", "phantom_001", "phantom_002", "phantom_003", "phantom_004"):
        shutil.copyfile(raw_copy / "imagesTr" / f"{case}_0000.nii.gz",
                        raw_copy / "imagesTr" / f"{case}_0001.nii.gz")
    edit(raw_copy, channel_names={"0": "T2", "1": "ADC"})
    info = scan_dataset(raw_copy)
    assert info.modality == "MRI" and len(info.cases) == 5
    assert "channel 0 (T2) only" in capsys.readouterr().err
    # nnU-Net's explicit case list
    edit(raw_copy, dataset={"a": {"images": ["imagesTr/phantom_000_0000.nii.gz"],
                                  "label": "labelsTr/phantom_000.nii.gz"},
                            "b": {"images": ["imagesTr/phantom_001_0000.nii.gz"]}})
    info = scan_dataset(raw_copy)
    assert [(c.name, c.image, c.label is None) for c in info.cases] == \
        [("a", src, False), ("b", raw_copy / "imagesTr" / "phantom_001_0000.nii.gz", True)]


@pytest.mark.parametrize("change, match", [
    ({"file_ending": None}, r'"file_ending": missing'),
    ({"file_ending": ".nrrd"}, r'"file_ending": \'\.nrrd\'.*NIfTI'),
    ({"labels": {"background": 0, "liver": [1, 2]}}, r'"labels\.liver": region-based'),
    ({"labels": {"background": 0, "liver": "1"}}, r'"labels\.liver": must be a non-negative'),
    ({"labels": {"liver": 1}}, r'"labels": needs the background at 0'),
    ({"labels": {"background": 0, "a": 1, "b": 1}}, r'"labels": two names share a value'),
    ({"channel_names": {"1": "CT"}}, r'"channel_names": keys must be 0'),
    ({"channel_names": []}, r'"channel_names": must map'),
    ({"numTraining": 7}, r'"numTraining" is 7, but .*imagesTr has 5 cases'),
    ({"dataset": {"a": {"images": "x"}}}, r'"dataset\.a\.images" must list'),
    ({"dataset": {"a": {"images": ["imagesTr/none_0000.nii.gz"]}}},
     r"none_0000\.nii\.gz: listed in .*dataset\.json \(\"dataset\.a\.images\[0\]\"\).*not exist"),
])
def test_scan_nnunet_refuses_naming_file_and_key(raw_copy, change, match):
    edit(raw_copy, **change)
    with pytest.raises(ValueError, match=r"dataset\.json.*" + match if "listed" not in match
                       else match):
        scan_dataset(raw_copy)


def test_scan_nnunet_missing_label_file(raw_copy):
    (raw_copy / "labelsTr" / "phantom_002.nii.gz").unlink()
    with pytest.raises(DatasetFileNotFoundError,
                       match=r"labelsTr.phantom_002\.nii\.gz: the label map of "
                             r"phantom_002_0000\.nii\.gz does not exist"):
        scan_dataset(raw_copy)


def test_msd_dataset_json_still_msd(raw, tmp_path):
    """A dataset.json with a "training" list stays MSD, channel_names or not."""
    from supercl.data import write_msd

    root = write_msd(tmp_path / "msd", n_volumes=3, shape=(4, 24, 20), n_organs=2)
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT"}
    (root / "dataset.json").write_text(json.dumps(meta))
    assert scan_dataset(root).layout == "msd"


# --------------------------------------------------------------------------- with nnunetv2
def _plan_with_nnunet(raw_root, preprocessed):
    """nnU-Net's own fingerprint and planner (nnUNetv2_plan_and_preprocess without the
    preprocessing), in a child process: nnunetv2 reads nnUNet_raw at import."""
    env = dict(os.environ, nnUNet_raw=str(raw_root.parent), nnUNet_preprocessed=str(preprocessed),
               nnUNet_results=str(preprocessed.parent / "results"))
    code = ("from nnunetv2.experiment_planning.plan_and_preprocess_api import "
            "extract_fingerprints, plan_experiments\n"
            "extract_fingerprints([1], check_dataset_integrity=True, num_processes=1)\n"
            "plan_experiments([1])\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return preprocessed / raw_root.name / "nnUNetPlans.json"


def test_nnunet_workflow_plan_pretrain_export_load(tmp_path, capsys):
    pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (optional extra: pip "
                        "install 'supercl[nnunet]' and nnunetv2)")
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from supercl.cli import main
    from supercl.models.backbones import NNUNetBackbone

    raw = write_nnunet_raw(tmp_path / "raw" / "Dataset001_Phantom", n_volumes=4,
                           shape=(6, 32, 32), n_organs=2)
    plans = _plan_with_nnunet(raw, tmp_path / "preprocessed")
    conf = PlansManager(str(plans)).get_configuration("2d")

    def nnunet_network():  # as nnUNetTrainer builds it: 1 channel, 3 classes, deep supervision
        return get_network_from_plans(conf.network_arch_class_name, conf.network_arch_init_kwargs,
                                      conf.network_arch_init_kwargs_req_import, 1, 3,
                                      allow_init=True, deep_supervision=True)

    # supercl builds the network nnU-Net builds: the same parameters, names and shapes
    ours = NNUNetBackbone(str(plans)).network(3, deep_supervision=True)
    theirs = nnunet_network()
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}

    run = tmp_path / "pre"
    assert main(["pretrain", "--data", str(raw), "--backbone", "nnunet", "--plans", str(plans),
                 "--patch-size", "32", "--epochs", "1", "--max-steps", "2", "--batch-size", "4",
                 "--n-segments", "16", "--embed-dim", "16", "--out", str(run), "--device", "cpu",
                 "--no-progress", "--no-figures"]) == 0
    out = tmp_path / "supercl_pretrained.pth"
    assert main(["export", str(run), "--nnunet", str(out)]) == 0
    assert "decoder" in capsys.readouterr().out

    network = nnunet_network()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    load_pretrained_weights(network, str(out))  # nnU-Net's own check: every key and shape
    after = network.state_dict()
    encoder = torch.load(run / "encoder.pt", weights_only=False)["encoder"]
    for k, v in encoder.items():  # body.<name> is nnU-Net's encoder.<name>
        assert torch.equal(after["encoder." + k[len("body."):]], v)
        assert torch.equal(after["decoder.encoder." + k[len("body."):]], v)
    params = [k for k in encoder if encoder[k].is_floating_point()]
    assert any(not torch.equal(before["encoder." + k[5:]], encoder[k]) for k in params)
    seg = [k for k in after if ".seg_layers." in k]
    assert seg and all(torch.equal(after[k], before[k]) for k in seg)  # not loaded by nnU-Net
