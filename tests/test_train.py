"""The trainer through the ``supercl`` command: short pre-training and fine-tuning runs on a
tiny phantom MSD folder, interruption and --resume, NaN handling, evaluation, errors, and a
two-process gloo DistributedDataParallel step."""

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from supercl.cli import main
from phantom_v1 import write_msd  # the v1 phantom's datasets: class names organ1, ... pinned
from supercl.models import SuperCLModel, UNet
from supercl.train.loop import TrainingLoop
from supercl.train.views import SuperCLViews

# --device cpu: these tests compare runs bit for bit (resume, evaluate again), which holds on
# the CPU; on a GPU machine "auto" would train on CUDA with bf16 autocast and atomics.  The
# CUDA path has its own test below.
TINY = ["--patch-size", "32", "--base-channels", "4", "--depth", "2", "--no-progress",
        "--threads", "1", "--device", "cpu"]
PRE = ["--n-segments", "9", "--embed-dim", "16", "--batch-size", "6"]


@pytest.fixture(scope="module")
def msd(tmp_path_factory):
    # 7 volumes: 1 test, 1 val, 5 in the training pool (10 % -> 1 volume for fine-tuning)
    return write_msd(tmp_path_factory.mktemp("data") / "msd", n_volumes=7, shape=(5, 37, 41),
                     n_organs=2, seed=3)


def run(args):
    return main([str(a) for a in args])


def pretrain_args(msd, out, *extra):
    return ["pretrain", "--data", msd, "--out", out, *TINY, *PRE, *extra]


def finetune_args(msd, out, *extra):
    return ["finetune", "--data", msd, "--out", out, *TINY, "--batch-size", "2", *extra]


def encoder_state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_step_pretrain_and_finetune_through_the_cli(msd, tmp_path):
    pre = tmp_path / "pre"
    assert run(pretrain_args(msd, pre, "--epochs", "1", "--max-steps", "2")) == 0
    for name in ("config.json", "split.json", "metrics.jsonl", "checkpoint.pt", "encoder.pt",
                 "superpixels.png", "loss_curves.png", "diagnostics.png"):
        assert (pre / name).is_file(), name
    records = [json.loads(line) for line in (pre / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["global_step"] == 2
    for term in ("loss", "l_ins", "l_intra", "l_inter"):
        assert term in records[0] and records[0][term] == records[0][term]  # logged, not NaN
    # the diagnostics: positives per anchor >= 1 (the other view), shares in [0, 1]
    assert records[0]["ilcp_pos_per_anchor"] >= 1.0 and records[0]["pcl_pos_per_anchor"] >= 1.0
    for share in ("inter_partner_edge_share", "inter_edge_position_agreement",
                  "inter_edge_position_chance", "inter_edge_organ_agreement",
                  "inter_edge_organ_chance"):
        assert 0.0 <= records[0][share] <= 1.0, share
    assert records[0]["inter_partner_edge_share"] == 0.0  # the image graph
    assert records[0]["inter_images_per_component"] >= 2.0  # 1-NN: every image has a neighbour
    config = json.loads((pre / "config.json").read_text())
    assert config["patch_size"] == 32 and config["loss"]["l_inter"] == 0.5
    split = json.loads((pre / "split.json").read_text())
    assert not set(split["pretrain"]) & (set(split["test"]) | set(split["val"]))

    ft = tmp_path / "ft"
    assert run(finetune_args(msd, ft, "--pretrained", pre, "--epochs", "1", "--max-steps", "2")) == 0
    best = torch.load(ft / "best.pt", map_location="cpu", weights_only=False)
    encoder = torch.load(pre / "encoder.pt", map_location="cpu", weights_only=False)["encoder"]
    model = UNet(1, 4, 3, depth=2)
    model.load_state_dict(best["model"])
    # the encoder was loaded (then fine-tuned for 2 Adam steps: close, not equal, to pre-training)
    w_pre = encoder["blocks.0.0.weight"]
    w_ft = model.encoder.blocks[0][0].weight.detach()
    assert (w_ft - w_pre).abs().max() < 0.05
    assert (w_ft - UNet(1, 4, 3, depth=2).encoder.blocks[0][0].weight.detach()).abs().max() > 0.05
    result = json.loads((ft / "evaluation.json").read_text())
    assert set(result["dsc"]) == {"organ1", "organ2"}
    assert result["test_volumes"] == json.loads((ft / "split.json").read_text())["test"]
    for name in ("predictions.png", "dsc.png", "loss_curves.png"):
        assert (ft / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # evaluate again through its own subcommand, which takes the data settings from the run
    again = tmp_path / "eval"
    assert run(["evaluate", ft, "--out", again, "--no-progress", "--device", "cpu"]) == 0
    assert json.loads((again / "evaluation.json").read_text())["dsc"] == result["dsc"]


def interrupt_at(monkeypatch, step):
    """SIGINT, as from Ctrl-C, at the end of the given global step of the next run, through
    the loop's own end-of-step hook (which then writes no periodic checkpoint: none asked)."""
    end_step = TrainingLoop.end_step

    def hook(loop):
        if loop.global_step == step:
            signal.raise_signal(signal.SIGINT)
        end_step(loop)
    monkeypatch.setattr(TrainingLoop, "end_step", hook)


def test_pretrain_interrupt_and_resume_give_the_uninterrupted_weights(msd, tmp_path, monkeypatch):
    common = ["--epochs", "2", "--optimizer", "sgd"]  # 25 slices, batch 6: 4 steps per epoch
    assert run(pretrain_args(msd, tmp_path / "full", *common)) == 0
    with monkeypatch.context() as patch:
        interrupt_at(patch, 3)  # in the middle of the first epoch
        assert run(pretrain_args(msd, tmp_path / "cut", *common)) == 130
    cut = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert (cut["epoch"], cut["step"], cut["global_step"]) == (0, 3, 3)
    assert not (tmp_path / "cut" / "encoder.pt").exists()
    assert run(pretrain_args(msd, tmp_path / "cut", *common, "--resume")) == 0
    assert_same_state(encoder_state(tmp_path / "full" / "checkpoint.pt"),
                      encoder_state(tmp_path / "cut" / "checkpoint.pt"))
    full = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    resumed = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(r).items() if k != "slices_per_s"} for r in full]
    assert strip == [{k: v for k, v in json.loads(r).items() if k != "slices_per_s"} for r in resumed]


def test_finetune_interrupt_and_resume_give_the_uninterrupted_weights(msd, tmp_path, monkeypatch):
    common = ["--epochs", "2", "--no-evaluate"]  # 5 labeled slices, batch 2: 2 steps per epoch
    assert run(finetune_args(msd, tmp_path / "full", *common)) == 0
    with monkeypatch.context() as patch:
        interrupt_at(patch, 3)
        assert run(finetune_args(msd, tmp_path / "cut", *common)) == 130
    assert run(finetune_args(msd, tmp_path / "cut", *common, "--resume")) == 0
    assert_same_state(encoder_state(tmp_path / "full" / "checkpoint.pt"),
                      encoder_state(tmp_path / "cut" / "checkpoint.pt"))
    assert_same_state(encoder_state(tmp_path / "full" / "best.pt"),
                      encoder_state(tmp_path / "cut" / "best.pt"))


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(msd, tmp_path, monkeypatch, capsys):
    from supercl.losses import SuperCLLoss

    forward = SuperCLLoss.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        terms = forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            terms["l_intra"] = terms["l_intra"] * float("nan")
            terms["loss"] = terms["loss"] + terms["l_intra"]
        return terms

    monkeypatch.setattr(SuperCLLoss, "forward", poisoned)
    out = tmp_path / "nan"
    assert run(pretrain_args(msd, out, "--epochs", "3", "--checkpoint-every", "1")) == 1
    err = capsys.readouterr().err
    assert "non-finite loss, l_intra" in err and "step 3" in err and str(out / "checkpoint.pt") in err
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (out / "encoder.pt").exists()


def test_cli_errors_are_clear(msd, tmp_path, capsys):
    assert run(pretrain_args(msd, tmp_path / "r", "--resume")) == 2
    assert "no checkpoint there" in capsys.readouterr().err
    assert run(pretrain_args(tmp_path / "nowhere", tmp_path / "r2")) == 2
    assert "nowhere" in capsys.readouterr().err
    assert run(finetune_args(msd, tmp_path / "f", "--pretrained", tmp_path / "missing")) == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", "--patch-size", "30"])
    assert exit_.value.code == 2 and "multiple of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["finetune", "--label-fraction", "0"])
    assert "--label-fraction" in capsys.readouterr().err


def test_existing_run_is_not_overwritten(msd, tmp_path, capsys):
    out = tmp_path / "once"
    assert run(pretrain_args(msd, out, "--max-steps", "1")) == 0
    assert run(pretrain_args(msd, out, "--max-steps", "1")) == 2
    assert "--resume" in capsys.readouterr().err


def test_pretrained_encoder_must_match_the_unet(msd, tmp_path, capsys):
    pre = tmp_path / "pre"
    assert run(pretrain_args(msd, pre, "--max-steps", "1")) == 0
    args = finetune_args(msd, tmp_path / "ft", "--pretrained", pre, "--max-steps", "1")
    args[args.index("--base-channels") + 1] = "8"
    assert run(args) == 2
    assert "does not match" in capsys.readouterr().err


def test_pretrain_on_a_folder_of_unlabeled_mri_volumes(msd, tmp_path, monkeypatch, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((msd / "imagesTr").iterdir())[:2]:
        (images / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "pre"
    assert run(["pretrain", "--data", images, "--modality", "MRI", "--out", out, *TINY, *PRE,
                "--max-steps", "1"]) == 0
    assert "every volume is used for pre-training" in capsys.readouterr().out
    split = json.loads((out / "split.json").read_text())
    assert len(split["pretrain"]) == 2 and split["test"] == []
    assert run(finetune_args(images, tmp_path / "ft")) == 2  # nothing labeled to fine-tune on
    assert "labeled" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run(finetune_args(msd, tmp_path / "ft2")) == 2
    assert "torchrun" in capsys.readouterr().err


def test_superpixels_command(msd, tmp_path):
    assert run(["superpixels", "--data", msd, "--out", tmp_path, "--patch-size", "48",
                "--n-segments", "12", "--case", "phantom_002"]) == 0
    assert (tmp_path / "superpixels_phantom_002.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run(["superpixels", "--data", msd, "--out", tmp_path, "--case", "nope"]) == 2


@pytest.mark.parametrize("command", ["superpixels", "pretrain", "finetune", "evaluate", "demo"])
def test_help_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text or command == "evaluate"
    assert "(default" in text


def test_models_and_encoder_interface():
    x = torch.rand(2, 1, 48, 80)
    net = UNet(1, base_channels=4, num_classes=3, depth=4)
    assert net(x).shape == (2, 3, 48, 80)
    assert net.encoder(x).shape == (2, 64, 3, 5)
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.rand(1, 1, 40, 40))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.rand(1, 2, 32, 32))

    class Tiny(torch.nn.Module):  # another encoder with the documented interface
        out_channels = [3, 5]
        reduction = 2

        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(1, 3, 3, padding=1)
            self.b = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1)

        def forward_features(self, x):
            y = self.a(x)
            return [y, self.b(y)]

        def forward(self, x):
            return self.forward_features(x)[-1]

    assert UNet(num_classes=2, encoder=Tiny())(torch.rand(1, 1, 8, 8)).shape == (1, 2, 8, 8)
    f, e = SuperCLModel(Tiny(), hidden_dim=7, out_dim=6)(torch.rand(3, 1, 8, 8))
    assert f.shape == (3, 5, 4, 4) and e.shape == (3, 6)
    with pytest.raises(TypeError, match="forward_features"):
        UNet(encoder=torch.nn.Conv2d(1, 1, 1))


def test_views_are_seeded_and_the_invariance_pair_is_pixel_aligned():
    x = torch.zeros(3, 1, 32, 32)
    x[:, :, 8:24, 10:20] = 1.0
    views = SuperCLViews()
    torch.manual_seed(0)
    a = views(x)
    torch.manual_seed(0)
    b = views(x)
    for va, vb in zip(a, b):
        torch.testing.assert_close(va, vb)
    v1, v2, v3, v4 = a
    # photometric: the square's edges stay where they are (a monotone intensity map + blur)
    inside, outside = v1[:, :, 12:20, 13:17].mean((1, 2, 3)), v1[:, :, :4, :4].mean((1, 2, 3))
    assert (inside > outside + 0.3).all()
    assert not torch.equal(v1, v2)
    with pytest.raises(ValueError, match="x must be"):
        views(torch.zeros(1, 32, 32))


@pytest.mark.slow
def test_two_process_gloo_ddp_step(msd, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "supercl", *pretrain_args(msd, out, "--max-steps", "2", "--batch-size", "3",
                                         "--device", "cpu")],
        # cwd: not the checkout, whose source folder would shadow the installed package
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["global_step"] == 2 and len(ckpt["rng"]) == 2
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert (out / "encoder.pt").is_file()


def _gather_worker(rank, world, init, x_all, queue):
    import torch.distributed as dist

    from supercl.losses import instance_loss
    from supercl.train.distributed import gather_with_grad

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    n = x_all.shape[1] // world
    e3 = x_all[0, rank * n:(rank + 1) * n].clone().requires_grad_()
    e4 = x_all[1, rank * n:(rank + 1) * n].clone().requires_grad_()
    loss = instance_loss(e3, e4, gather=gather_with_grad)
    loss.backward()
    queue.put((rank, loss.item(), e3.grad.numpy(), e4.grad.numpy()))  # numpy: no shared memory
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_gather_with_grad_spans_the_global_batch(tmp_path):
    """Each process's loss over the gathered embeddings equals the one-process loss over the
    global batch, and after DDP's averaging its gradient is the one-process gradient."""
    import torch.multiprocessing as mp

    from supercl.losses import instance_loss

    world = 2
    x_all = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(0))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_gather_worker, args=(r, world, init, x_all, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in range(world))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    e3, e4 = x_all[0].clone().requires_grad_(), x_all[1].clone().requires_grad_()
    loss = instance_loss(e3, e4)
    loss.backward()
    n = 6 // world
    for rank, value, g3, g4 in results:
        assert abs(value - float(loss)) < 1e-5
        # all_gather's backward sums the gradients of every process; DDP then divides by world
        torch.testing.assert_close(torch.from_numpy(g3) / world, e3.grad[rank * n:(rank + 1) * n])
        torch.testing.assert_close(torch.from_numpy(g4) / world, e4.grad[rank * n:(rank + 1) * n])


@pytest.mark.slow
def test_demo_end_to_end_on_a_tiny_configuration(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "supercl", "demo", "--out", str(out), "--volumes", "7",
         "--depth-slices", "5", "--patch-size", "32", "--base-channels", "4",
         "--pretrain-epochs", "1", "--finetune-epochs", "1", "--n-segments", "9",
         "--threads", "1", "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| **mean** |" in result.stdout and "report.md" in result.stdout
    results = json.loads((out / "results.json").read_text())
    dataset = json.loads((out / "phantom" / "dataset.json").read_text())
    names = {dataset["labels"][str(i)] for i in range(1, 6)}  # phantom v2, the default
    assert "liver" in names
    for run_name in ("scratch", "supercl"):
        assert set(results[run_name]["dsc"]) == names
        assert (out / run_name / "evaluation.json").is_file()
    report = (out / "report.md").read_text()
    for figure in ("dsc.png", "pretrain/superpixels.png", "pretrain/loss_curves.png",
                   "supercl/predictions.png"):
        assert f"({figure})" in report and (out / figure).is_file(), figure


@pytest.mark.cuda
def test_pretrain_and_finetune_on_cuda(msd, tmp_path):
    """The trainer on a GPU: bf16 autocast (--amp auto), SLIC through CuPy and the Triton
    losses inside the loop; finite losses, the run's files, an evaluation."""
    cuda = [a if a != "cpu" else "cuda" for a in TINY]
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    assert run(["pretrain", "--data", msd, "--out", pre, *cuda, *PRE, "--epochs", "1",
                "--max-steps", "2"]) == 0
    record = json.loads((pre / "metrics.jsonl").read_text().splitlines()[-1])
    for term in ("loss", "l_ins", "l_intra", "l_inter"):
        assert math.isfinite(record[term]), term
    assert run(["finetune", "--data", msd, "--out", ft, *cuda, "--batch-size", "2",
                "--pretrained", pre, "--epochs", "1", "--max-steps", "2"]) == 0
    result = json.loads((ft / "evaluation.json").read_text())
    assert set(result["dsc"]) == {"organ1", "organ2"}


@pytest.mark.slow
def test_demo_on_phantom_v2(tmp_path):
    """--phantom v2 (the default): the demo writes the v2 phantom (organ names from its classes) and runs the
    whole job on it; the setting is recorded. v1 left the package (issue 25): no longer a choice."""
    out = tmp_path / "demo"
    args = [sys.executable, "-m", "supercl", "demo", "--out", str(out), "--volumes", "7",
            "--depth-slices", "5", "--patch-size", "32", "--base-channels", "4",
            "--pretrain-epochs", "1", "--finetune-epochs", "1", "--n-segments", "9",
            "--threads", "1", "--no-progress", "--device", "cpu"]
    result = subprocess.run(args + ["--phantom", "v2"], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    dataset = json.loads((out / "phantom" / "dataset.json").read_text())
    names = [dataset["labels"][str(i)] for i in range(1, 6)]
    results = json.loads((out / "results.json").read_text())
    assert set(results["supercl"]["dsc"]) == set(names) and "liver" in names
    assert json.loads((out / "demo.json").read_text())["settings"]["phantom"] == "v2"
    again = subprocess.run(args + ["--phantom", "v1"], capture_output=True, text=True,
                           timeout=600, cwd=tmp_path)
    assert again.returncode != 0 and "invalid choice: 'v1'" in again.stderr


def test_pcl_relation_option_reaches_the_objective(msd, tmp_path):
    out = tmp_path / "pre"
    assert run(pretrain_args(msd, out, "--epochs", "1", "--max-steps", "1",
                             "--pcl-relation", "threshold", "--no-figures")) == 0
    assert json.loads((out / "config.json").read_text())["loss"]["pcl_relation"] == "threshold"
    with pytest.raises(SystemExit):
        main(["pretrain", "--pcl-relation", "exact"])


def test_every_setting_is_checked_once_by_its_config():
    """The config dataclasses validate their fields when made; the CLI only reports it."""
    from supercl._validate import SettingError
    from supercl.losses import LossConfig
    from supercl.train import FinetuneConfig, PretrainConfig
    from supercl.train.dataset import DataConfig
    from supercl.train.views import ViewConfig

    for make, name in ((lambda: LossConfig(temperature=0.0), "temperature"),
                       (lambda: LossConfig(asp_normalize="max"), "asp_normalize"),
                       (lambda: ViewConfig(flip_p=1.5), "flip_p"),
                       (lambda: DataConfig(label_fraction=0.0), "label_fraction"),
                       (lambda: DataConfig(window=(300.0, -200.0)), "window"),
                       (lambda: PretrainConfig(patch_size=30), "patch_size"),
                       (lambda: PretrainConfig(compactness=-1.0), "compactness"),
                       (lambda: PretrainConfig(epochs=0), "epochs"),
                       (lambda: FinetuneConfig(lr=float("nan")), "lr"),
                       (lambda: FinetuneConfig(batch_size=2.5), "batch_size")):
        with pytest.raises(SettingError) as err:
            make()
        assert err.value.name == name and err.value.option == "--" + name.replace("_", "-")
    assert PretrainConfig(patch_size=64, depth=4).patch_size == 64
    with pytest.raises(SystemExit):  # reported by the subcommand's parser, with its usage
        main(["pretrain", "--temperature", "0"])


def test_finetune_crops_oversamples_and_stops_early(msd, tmp_path, monkeypatch):
    from supercl.train import finetuning as ft_mod

    seen = []
    real = ft_mod.crop_batch

    def spy(x, size, generator, y=None, centers=None):
        out = real(x, size, generator, y, centers)
        seen.append((out[0].shape, None if centers is None else (centers[:, 0] >= 0).sum().item()))
        return out

    monkeypatch.setattr(ft_mod, "crop_batch", spy)
    # validation DSC never improves after the first validation: patience 2 ends the run
    scores = iter([0.5] + [0.1] * 100)
    monkeypatch.setattr(ft_mod, "_validate",
                        lambda *a: {"mean_dsc": next(scores), "mean_jc": 0.0})
    out = tmp_path / "ft"
    assert run(finetune_args(msd, out, "--epochs", "20", "--crop-size", "16",
                             "--oversample-foreground", "1", "--patience", "2",
                             "--val-every", "2", "--no-evaluate")) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    validated = [r["epoch"] for r in records if "val_dsc" in r]
    assert validated == [2, 4, 6] and records[-1]["epoch"] == 6  # stopped, not 20 epochs
    assert all(shape[-2:] == (16, 16) for shape, _ in seen)
    assert all(n == shape[0] for shape, n in seen)  # p = 1: every item a foreground draw
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    assert best["epoch"] == 2


def test_crop_size_is_checked(msd, tmp_path, capsys):
    for bad in ("14", "64"):  # not a multiple of 2**depth = 4; larger than the patch (32)
        with pytest.raises(SystemExit) as exit_:
            run(finetune_args(msd, tmp_path / "c", "--crop-size", bad))
        assert exit_.value.code == 2 and "crop" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
