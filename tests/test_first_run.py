"""Issue 11, reliability and first-run experience: one test (at least) per defect, in process
and on tiny runs. The newcomer pass through the installed command, from a fresh copy of the
repository, is tests/test_newcomer.py."""

import importlib
import json
import os
import signal
import stat
import tomllib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from supercl.cli import build_parser, main
from phantom_v1 import write_msd  # the v1 phantom's datasets: class names organ1, ... pinned
from supercl.data.nifti import load_case, scan_dataset

TINY = ["--patch-size", "32", "--base-channels", "4", "--depth", "2", "--no-progress",
        "--threads", "1"]
PRE = ["--n-segments", "9", "--embed-dim", "16", "--batch-size", "6"]
DEMO = ["--volumes", "7", "--depth-slices", "5", "--patch-size", "32", "--base-channels", "4",
        "--pretrain-epochs", "1", "--finetune-epochs", "1", "--n-segments", "9", "--threads",
        "1", "--no-progress"]


@pytest.fixture(scope="module")
def msd(tmp_path_factory):
    return write_msd(tmp_path_factory.mktemp("data") / "msd", n_volumes=7, shape=(5, 37, 41),
                     n_organs=2, seed=3)


@pytest.fixture(scope="module")
def finetuned(msd, tmp_path_factory):
    """One tiny fine-tuning run (with its evaluation), shared by the tests that read it."""
    out = tmp_path_factory.mktemp("ft") / "ft"
    assert run(["finetune", "--data", msd, "--out", out, *TINY, "--batch-size", "2",
                "--epochs", "1", "--max-steps", "2"]) == 0
    return out


def run(args):
    return main([str(a) for a in args])


def strict_json(text):
    """json.loads that refuses NaN, Infinity and -Infinity, as JSON.parse and jq do."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def pretrain_args(msd, out, *extra):
    return ["pretrain", "--data", msd, "--out", out, *TINY, *PRE, *extra]


def strict_files(folder: Path) -> list[Path]:
    """Parse every .json and .jsonl file under ``folder`` with a parser that refuses NaN and
    Infinity; returns the files."""
    files = sorted(folder.rglob("*.json")) + sorted(folder.rglob("*.jsonl"))
    for path in files:
        text = path.read_text()
        if path.suffix == ".jsonl":
            for line in text.splitlines():
                strict_json(line)
        else:
            strict_json(text)
    return files


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- 1: the demo runs again, and continues an interrupted one --------------------------------


@pytest.mark.slow
def test_demo_continues_when_interrupted_and_runs_again_with_overwrite(tmp_path, monkeypatch, capsys):
    from supercl.train.loop import TrainingLoop

    out = tmp_path / "demo"
    args = ["demo", "--out", out, *DEMO]
    end_step = TrainingLoop.end_step

    def interrupt(loop):  # Ctrl-C during the first fine-tuning step
        if loop.kind == "finetune":
            signal.raise_signal(signal.SIGINT)
        end_step(loop)

    with monkeypatch.context() as patch:
        patch.setattr(TrainingLoop, "end_step", interrupt)
        assert run(args) == 130  # stopped in the first fine-tuning, with a checkpoint
    assert "run the same command again" in capsys.readouterr().out
    assert (out / "scratch" / "checkpoint.pt").is_file() and not (out / "results.json").exists()
    pretrained = torch.load(out / "pretrain" / "checkpoint.pt", weights_only=False)["model"]
    assert run(args) == 0  # continued: pre-training is not redone
    text = capsys.readouterr().out
    assert "continuing the interrupted demo" in text and "resuming" in text
    again = torch.load(out / "pretrain" / "checkpoint.pt", weights_only=False)
    assert again["global_step"] > 0 and all(torch.equal(again["model"][k], v)
                                            for k, v in pretrained.items())
    results = strict_json((out / "results.json").read_text())
    assert results["command"].startswith("supercl demo --out")  # item 8: not a function repr
    assert "<function" not in (out / "results.json").read_text()

    before = snapshot(out)
    assert run(args) == 2  # a finished demo is kept ...
    assert "--overwrite" in capsys.readouterr().err
    assert snapshot(out) == before
    assert run([*args, "--volumes", "8"]) == 2  # ... and so is one with other settings
    assert "--volumes 7 -> 8" in capsys.readouterr().err
    (out / "mine.txt").write_text("not the demo's")
    assert run([*args, "--overwrite"]) == 0  # ... unless asked
    assert (out / "mine.txt").read_text() == "not the demo's"
    assert strict_json((out / "results.json").read_text())["scratch"]["dsc"] == results["scratch"]["dsc"]


def test_makefile_reruns_a_finished_demo_and_cleans_runs_apart():
    text = (Path(__file__).parents[1] / "Makefile").read_text()
    demo = text[text.index("\ndemo:"):].split("\n\n")[0]
    assert "--overwrite" in demo and "results.json" in demo
    clean = text[text.index("\nclean:"):].split("\n\n")[0]
    assert "$(VENV)" not in clean and "runs" not in clean
    assert "\nclean-runs:" in text and "rm -rf runs" in text


# ---- 2: --resume checks the settings ----------------------------------------------------------


def test_resume_refuses_other_settings_before_writing_anything(msd, tmp_path, capsys):
    out = tmp_path / "pre"
    assert run(pretrain_args(msd, out, "--max-steps", "2")) == 0
    before = snapshot(out)
    for change, shown in ((["--patch-size", "64"], "--patch-size 32 -> 64"),
                          (["--base-channels", "8"], "--base-channels 4 -> 8"),
                          (["--n-segments", "12"], "--n-segments 9 -> 12")):
        args = pretrain_args(msd, out, "--max-steps", "2", "--resume")
        for i in range(0, len(change), 2):
            if change[i] in args:
                args[args.index(change[i]) + 1] = change[i + 1]
        assert run(args) == 2
        assert shown in capsys.readouterr().err
        assert snapshot(out) == before  # config.json and split.json untouched
    other = write_msd(tmp_path / "other", n_volumes=8, shape=(5, 37, 41), n_organs=2, seed=4)
    assert run(pretrain_args(other, out, "--max-steps", "2", "--resume")) == 2
    assert "--data" in capsys.readouterr().err
    assert snapshot(out) == before
    # what may change: more epochs, the reporting options
    assert run(pretrain_args(msd, out, "--epochs", "2", "--max-steps", "3", "--resume",
                             "--no-figures")) == 0


def test_resume_refuses_a_dataset_with_other_volumes_at_the_same_path(msd, tmp_path, capsys):
    data = tmp_path / "data"
    write_msd(data, n_volumes=7, shape=(5, 37, 41), n_organs=2, seed=3)
    out = tmp_path / "pre"
    assert run(pretrain_args(data, out, "--max-steps", "1")) == 0
    write_msd(data, n_volumes=9, shape=(5, 37, 41), n_organs=2, seed=3, overwrite=True)
    assert run(pretrain_args(data, out, "--max-steps", "1", "--resume")) == 2
    assert "split differs" in capsys.readouterr().err


# ---- 3: --device --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["pretrain", "finetune", "evaluate", "superpixels", "demo"])
def test_an_unknown_device_is_one_line_and_writes_nothing(command, msd, tmp_path, capsys):
    out = tmp_path / "out"
    args = {"evaluate": ["evaluate", tmp_path / "run", "--out", out],
            "demo": ["demo", "--out", out]}.get(command, [command, "--data", msd, "--out", out])
    assert run([*args, "--device", "tpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device" in err and "tpu" in err
    assert not out.exists()


# ---- 4: evaluate takes a given value even when it equals the usual default ----------------------


def test_evaluate_uses_a_given_patch_size_and_the_runs_otherwise(finetuned, tmp_path):
    assert run(["evaluate", finetuned, "--out", tmp_path / "a", "--no-progress"]) == 0
    assert strict_json((tmp_path / "a" / "evaluation.json").read_text())["data"]["patch_size"] == 32
    assert run(["evaluate", finetuned, "--out", tmp_path / "b", "--patch-size", "128",
                "--no-progress", "--no-figures"]) == 0
    assert strict_json((tmp_path / "b" / "evaluation.json").read_text())["data"]["patch_size"] == 128


def test_evaluate_help_says_the_data_options_default_to_the_runs(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "embedded phantom" not in text and "default: the run's data" in text


# ---- 5: divergence --------------------------------------------------------------------------------


def test_divergence_names_the_terms_the_step_and_the_checkpoint(msd, tmp_path, capsys):
    out = tmp_path / "lr"
    assert run(pretrain_args(msd, out, "--lr", "1e8", "--epochs", "2")) == 1
    err = capsys.readouterr().err
    assert "features contains NaN" not in err
    assert "non-finite loss" in err and "epoch" in err and "step" in err
    assert "checkpoint" in err and "Lower --lr" in err


# ---- 6: a second Ctrl-C -----------------------------------------------------------------------------


def test_a_second_ctrl_c_during_the_checkpoint_write_is_one_line(msd, tmp_path, monkeypatch, capsys):
    from supercl.train.loop import TrainingLoop

    checkpoint_module = importlib.import_module("supercl.train.checkpoint")
    out = tmp_path / "pre"
    assert run(pretrain_args(msd, out, "--epochs", "2")) == 0  # 4 steps per epoch
    good = (out / "checkpoint.pt").read_bytes()
    save = checkpoint_module.torch.save

    def interrupted_save(obj, f, *args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # the second Ctrl-C, while the checkpoint is written
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(TrainingLoop, "end_step", lambda loop: signal.raise_signal(signal.SIGINT))
    monkeypatch.setattr(checkpoint_module.torch, "save", interrupted_save)
    assert run(pretrain_args(msd, out, "--epochs", "3", "--resume")) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) <= 2  # the 1st and 2nd Ctrl-C
    assert "second Ctrl-C" in err
    assert (out / "checkpoint.pt").read_bytes() == good
    assert not list(out.glob(".checkpoint.pt.*"))


# ---- 7: strict JSON -------------------------------------------------------------------------------


def test_every_json_file_of_a_run_is_strict_json_with_null_for_undefined_scores(finetuned):
    files = strict_files(finetuned)
    assert {p.name for p in files} >= {"config.json", "split.json", "evaluation.json", "metrics.jsonl"}
    evaluation = strict_json((finetuned / "evaluation.json").read_text())
    hd95 = [c["hd95"] for v in evaluation["per_volume"].values() for c in v.values()]
    assert None in hd95  # 2 steps of training: some class is never predicted


def test_json_text_writes_null_for_nan_and_infinity(tmp_path):
    from supercl._runtime import json_text, write_json

    obj = {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32("nan"),
           "d": torch.tensor([1.5, float("-inf")])}
    assert strict_json(json_text(obj)) == {"a": None, "b": [1.0, None], "c": None, "d": [1.5, None]}
    assert strict_json(write_json(tmp_path / "x.json", obj).read_text())["a"] is None
    with pytest.raises(ValueError):
        strict_json('{"a": NaN}')


# ---- 9: file modes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoints_get_the_mode_of_every_other_file(finetuned, msd, tmp_path, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / "pre"
        assert run(pretrain_args(msd, out, "--max-steps", "1", "--no-figures")) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir() if p.is_file()}
    assert set(modes.values()) == {0o666 & ~umask}, modes


# ---- 10, 11: messages -----------------------------------------------------------------------------


def test_validation_errors_are_one_line_pointing_at_the_subcommands_help(capsys):
    # issue 26: the whole usage before the one line that mattered hid it
    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", "--epochs", "0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err == "supercl pretrain: error: --epochs must be >= 1, got 0 (see supercl pretrain --help)\n"
    with pytest.raises(SystemExit):
        main(["pretrain", "--lr", "inf"])
    assert "finite" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["superpixels", "pretrain", "finetune", "evaluate", "demo",
                                     "ablate"])
def test_help_has_no_doubled_percent_signs(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "%%" not in text
    if command == "demo":
        assert "10% of the labeled volumes" in " ".join(text.split())


def test_top_level_help_lists_every_subcommand(capsys):
    # issue 19, item 1: a bare "95 %" in a subcommand's one-line help crashed `supercl --help`
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "%%" not in text and "95% CIs" in text
    for command in build_parser().commands:
        assert command in text


# ---- 12, 13: data problems found early ----------------------------------------------------------------


def test_finetune_on_a_plain_folder_without_labels_hints_at_labels(msd, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((msd / "imagesTr").iterdir())[:4]:
        (images / path.name).write_bytes(path.read_bytes())
    assert run(["finetune", "--data", images, "--out", tmp_path / "ft", *TINY]) == 2
    err = capsys.readouterr().err
    assert "0 labeled volumes" in err and "--labels" in err


def _with_bad_label(msd, tmp_path):
    data = tmp_path / "bad"
    data.mkdir()
    for sub in ("imagesTr", "labelsTr"):
        (data / sub).mkdir()
        for path in (msd / sub).iterdir():
            (data / sub / path.name).write_bytes(path.read_bytes())
    (data / "dataset.json").write_bytes((msd / "dataset.json").read_bytes())
    victim = sorted((data / "labelsTr").iterdir())[-1]
    img = nib.load(str(victim))
    small = np.asarray(img.dataobj)[:-3]
    nib.save(nib.Nifti1Image(small, img.affine), str(victim))
    return data, victim


def test_a_label_of_the_wrong_shape_stops_pretraining(msd, tmp_path, capsys):
    data, victim = _with_bad_label(msd, tmp_path)
    out = tmp_path / "pre"
    assert run(pretrain_args(data, out, "--max-steps", "1")) == 2
    err = capsys.readouterr().err
    assert victim.name in err and "differs from image shape" in err
    assert not (out / "split.json").exists()


# ---- 14: aspect ratio ------------------------------------------------------------------------------


def test_pad_keeps_the_aspect_ratio(tmp_path):
    img = np.zeros((80, 40, 3), np.float32) + 300.0  # (x, y, z): slices of 40 x 80 (H x W)
    img[:40] = -1000.0
    lab = np.zeros((80, 40, 3), np.uint8)
    lab[60:70, 10:20] = 1
    root = tmp_path / "flat"
    (root / "labels").mkdir(parents=True)
    nib.save(nib.Nifti1Image(img, np.eye(4)), str(root / "a.nii.gz"))
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "labels" / "a.nii.gz"))
    info = scan_dataset(root, labels=root / "labels")
    images, labels, _ = load_case(info.cases[0], patch_size=32, class_names=info.class_names)
    assert images.shape == (3, 32, 32)
    # the 40 x 80 slice becomes 16 x 32, centred, padded above and below with the background
    assert (images[:, :8] == 0).all() and (images[:, 24:] == 0).all()
    rows = np.nonzero(labels[0].any(1))[0]
    cols = np.nonzero(labels[0].any(0))[0]
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (8 + 4, 8 + 8, 24, 28)
    # a square slice is resized exactly as before
    square = write_msd(tmp_path / "sq", n_volumes=1, shape=(3, 24, 24), n_organs=1)
    case = scan_dataset(square).cases[0]
    np.testing.assert_array_equal(load_case(case, patch_size=16)[0],
                                  load_case(case, patch_size=16, resize="resize")[0])


# ---- 15: one patch-size default ---------------------------------------------------------------------


def test_every_command_has_the_same_patch_size_default():
    from supercl.cli import _pretrain_config

    parser = build_parser()
    sub = parser.commands
    assert {name: sub[name].get_default("patch_size")
            for name in ("superpixels", "finetune")} == dict.fromkeys(("superpixels", "finetune"), 128)
    # pre-training takes it from its recipe: 128 by default, 512 for the reference recipe
    assert _pretrain_config(parser.parse_args(["pretrain"])).patch_size == 128
    assert _pretrain_config(parser.parse_args(["pretrain", "--recipe", "reference"])).patch_size == 512


# ---- 16, 17, 18: figures ----------------------------------------------------------------------------


def test_figures_have_captions_legends_and_percent(finetuned, msd, tmp_path, monkeypatch):
    from supercl import viz

    calls = []
    grid = viz.plot_image_grid

    def spy(images, titles, path, **kwargs):
        calls.append((Path(path).name, titles, kwargs))
        return grid(images, titles, path, **kwargs)

    monkeypatch.setattr(viz, "plot_image_grid", spy)
    assert run(["evaluate", finetuned, "--out", tmp_path / "ev", "--no-progress"]) == 0
    assert run(pretrain_args(msd, tmp_path / "pre", "--max-steps", "1")) == 0
    assert run(["superpixels", "--data", msd, "--out", tmp_path / "sp", "--n-segments", "9",
                "--patch-size", "32"]) == 0
    by_name = {name: (titles, kwargs) for name, titles, kwargs in calls}
    titles, kwargs = by_name["predictions.png"]
    assert all("phantom_" in t and "slice" in t for t in titles)
    assert any("truth" in t for t in titles) and any("prediction" in t for t in titles)
    assert list(kwargs["legend"]) == ["organ1", "organ2"]
    for name in ("superpixels.png", "superpixels_phantom_000.png"):
        assert all("phantom_" in t and "slice" in t for t in by_name[name][0]), name
    assert (tmp_path / "ev" / "predictions.png").read_bytes()[:4] == b"\x89PNG"


def test_the_palette_is_colour_blind_safe_and_not_white():
    from supercl.viz import PALETTE

    okabe_ito = {(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
                 (213, 94, 0), (204, 121, 167)}
    assert set(PALETTE) == okabe_ito


def test_loss_plot_legend_is_off_the_curves_and_validation_is_in_percent():
    from supercl import viz

    _loss_figure = getattr(viz, "_loss_figure")

    series = {"loss": ([1, 2, 3, 4], [2.0, 1.5, 1.2, 1.0]),
              "val_dsc": ([1, 2, 3, 4], [0.2, 0.5, 0.7, 0.72])}
    fig = _loss_figure(series, [("loss", ["loss"]), ("validation", ["val_dsc"])], "epoch", "t")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        area = ax.get_window_extent(renderer)
        assert legend.y1 <= area.y0  # below the plotting area: it cannot cover a curve
    values = fig.axes[1].lines[0].get_ydata()
    assert max(values) == pytest.approx(72.0) and fig.axes[1].get_ylim() == (0.0, 100.0)
    assert "%" in fig.axes[1].get_ylabel()


# ---- 22: Triton is an extra -------------------------------------------------------------------------


def test_triton_is_an_extra_and_the_cpu_path_works_without_it(tmp_path):
    import subprocess
    import sys

    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("triton") for d in meta["dependencies"])
    for extra in ("gpu", "test"):
        assert any(d.startswith("triton") for d in meta["optional-dependencies"][extra]), extra
    code = ("import sys; sys.modules['triton'] = None\n"  # import triton now fails
            "import torch, supercl, supercl.ops as ops\n"
            "x = torch.rand(2, 3, 8, 8); s = torch.randint(0, 4, (2, 8, 8))\n"
            "ops.superpixel_pool(x, s, 4); ops.supcon_loss(torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2]))\n"
            "ops.graph_components(torch.tensor([[1], [0], [2]])); ops.slic(torch.rand(1, 16, 16), n_segments=4)\n"
            "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k != "SUPERCL_BACKEND"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


# ---- issue 19, items 2 and 3: every volume of the split is checked before anything is written ---


def _copy_msd(msd, data):
    for sub in ("imagesTr", "labelsTr"):
        (data / sub).mkdir(parents=True)
        for path in (msd / sub).iterdir():
            (data / sub / path.name).write_bytes(path.read_bytes())
    (data / "dataset.json").write_bytes((msd / "dataset.json").read_bytes())
    return data


def _test_volume(data):
    """The first test volume of the default split of ``data`` (the one fine-tuning reads only
    after training)."""
    from supercl.data.nifti import split_cases

    return split_cases(scan_dataset(data), label_fraction=0.1, val_fraction=0.2,
                       test_fraction=0.2, seed=0)["test"][0]


def _with_2d_volume(msd, tmp_path):
    data = _copy_msd(msd, tmp_path / "flat")
    name = _test_volume(data)
    for sub in ("imagesTr", "labelsTr"):
        path = data / sub / f"{name}.nii.gz"
        img = nib.load(str(path))
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, 2], img.affine), str(path))
    return data, name


def _with_undeclared_label(msd, tmp_path):
    data = _copy_msd(msd, tmp_path / "undeclared")
    name = _test_volume(data)
    path = data / "labelsTr" / f"{name}.nii.gz"
    img = nib.load(str(path))
    lab = np.asarray(img.dataobj).copy()
    lab[0, 0, 0] = 7  # dataset.json declares 0, 1, 2
    nib.save(nib.Nifti1Image(lab, img.affine), str(path))
    return data, name


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_a_2d_volume_in_the_split_stops_the_run_before_anything_is_written(command, msd,
                                                                            tmp_path, capsys):
    data, name = _with_2d_volume(msd, tmp_path)
    out = tmp_path / "run"
    args = pretrain_args(data, out) if command == "pretrain" else \
        ["finetune", "--data", data, "--out", out, *TINY, "--epochs", "1"]
    assert run(args) == 2
    captured = capsys.readouterr()
    assert f"{name}.nii.gz" in captured.err and "not 3-D" in captured.err
    assert "epoch" not in captured.out  # stopped before training
    assert not out.exists()


def test_an_undeclared_label_value_stops_finetuning_before_training(msd, tmp_path, capsys):
    data, name = _with_undeclared_label(msd, tmp_path)
    out = tmp_path / "ft"
    assert run(["finetune", "--data", data, "--out", out, *TINY, "--epochs", "1"]) == 2
    captured = capsys.readouterr()
    assert f"{name}.nii.gz" in captured.err and "[7]" in captured.err
    assert "not declared in dataset.json" in captured.err
    assert "epoch" not in captured.out
    assert not out.exists()


@pytest.fixture(scope="module")
def pretrained(msd, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "pre"
    assert run(pretrain_args(msd, out, "--max-steps", "1", "--no-figures")) == 0
    return out


@pytest.mark.parametrize("failure", ["missing --pretrained", "other --base-channels",
                                     "missing --pretrained, phantom"])
def test_a_run_that_fails_before_training_leaves_no_new_files(failure, msd, pretrained, tmp_path,
                                                              capsys):
    data = [] if "phantom" in failure else ["--data", msd]
    tiny = list(TINY)
    source = tmp_path / "nowhere"
    if failure == "other --base-channels":
        source = pretrained
        tiny[tiny.index("--base-channels") + 1] = "8"
    args = ["finetune", *data, *tiny, "--pretrained", source, "--epochs", "1"]
    out = tmp_path / "new"
    assert run([*args, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "--pretrained" in err or "--base-channels" in err
    assert not out.exists()
    # a folder that exists keeps exactly what it held
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert run([*args, "--out", kept]) == 2
    assert snapshot(kept) == {Path("notes.txt"): b"mine"}


# ---- issue 19, item 4: supercl.train.evaluate takes what the command takes ---------------------


def test_evaluate_in_python_takes_a_run_folder_and_its_own_data_settings(finetuned, msd, tmp_path):
    from supercl.train import evaluate

    result = evaluate(finetuned, out=tmp_path / "py", progress=False, figures=False)
    assert result["data"]["patch_size"] == 32 and result["data"]["data"] == str(msd)
    split = strict_json((finetuned / "split.json").read_text())
    assert result["test_volumes"] == split["test"]
    assert not (tmp_path / "py" / "phantom").exists()  # the run's data, not the phantom
    assert strict_json((tmp_path / "py" / "evaluation.json").read_text())["data"]["patch_size"] == 32
    other = evaluate(finetuned, {"patch_size": 64}, out=tmp_path / "py64", progress=False,
                     figures=False)
    assert other["data"]["patch_size"] == 64 and other["data"]["data"] == str(msd)
    with pytest.raises(TypeError, match="cfg"):
        evaluate(finetuned, {"patch": 64}, out=tmp_path / "bad", progress=False)
    with pytest.raises(TypeError, match="cfg"):
        evaluate(finetuned, "patch_size=64", out=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_evaluate_scores_a_phantom_run_on_the_phantom_in_its_folder(tmp_path):
    from supercl.train import evaluate

    run_dir = tmp_path / "ph"
    assert run(["finetune", "--out", run_dir, *TINY, "--batch-size", "2", "--max-steps", "1",
                "--epochs", "1", "--no-evaluate", "--no-figures"]) == 0
    result = evaluate(run_dir, out=tmp_path / "ev", progress=False, figures=False)
    assert result["data"]["data"] == str(run_dir / "phantom")
    assert not (tmp_path / "ev" / "phantom").exists()


# ---- issue 19, item 5: percent signs and --threads -------------------------------------------------


def test_console_scores_are_percent_with_a_sign_and_evaluate_takes_threads(finetuned, msd,
                                                                            tmp_path, capsys,
                                                                            monkeypatch):
    import re

    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    assert run(["evaluate", finetuned, "--out", tmp_path / "ev", "--no-progress",
                "--no-figures", "--threads", "1"]) == 0
    assert threads == [1]
    text = capsys.readouterr().out
    assert re.search(r"test DSC \d+\.\d\d%  JC \d+\.\d\d%", text), text
    evaluation = strict_json((tmp_path / "ev" / "evaluation.json").read_text())
    assert 0 <= evaluation["mean_dsc"] <= 1  # fractions in the files
    assert run(["finetune", "--data", msd, "--out", tmp_path / "ft", *TINY, "--batch-size", "2",
                "--max-steps", "1", "--epochs", "1", "--no-evaluate", "--no-figures"]) == 0
    line = next(t for t in capsys.readouterr().out.splitlines() if "epoch 1/1" in t)
    assert re.search(r"val DSC \d+\.\d\d% \(best \d+\.\d\d% at epoch 1\)", line), line
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "--threads" in capsys.readouterr().out


# ---- issue 19, item 6: predictions.png shows every class and names its run ---------------------


def test_the_prediction_slices_cover_every_class():
    from supercl.viz import prediction_slices

    labels = np.zeros((9, 8, 8), np.int64)
    labels[:6, :6, :6] = 1  # large: liver ...
    labels[:6, 6:, 6:] = 2  # ... and spleen on the first six slices of volumes 0 and 1
    labels[7, 0, 0] = 3  # the class where the arms differ: one small slice
    volume = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    picks = prediction_slices(labels, volume, 4, shown=2)
    assert 7 in picks and len(picks) == 2
    assert {int(c) for i in picks for c in np.unique(labels[i])} == {0, 1, 2, 3}
    # more classes than slices to show: as many slices as the cover needs
    many = np.zeros((5, 4, 4), np.int64)
    for i in range(5):
        many[i, 0, 0] = i + 1
    assert prediction_slices(many, np.zeros(5), 6, shown=2) == [0, 1, 2, 3, 4]
    assert prediction_slices(np.zeros((3, 4, 4), np.int64), np.zeros(3), 1, shown=2) == [0, 1]


def test_predictions_png_is_titled_with_its_run(finetuned, tmp_path, monkeypatch):
    from supercl import viz

    calls = {}
    grid = viz.plot_image_grid

    def spy(images, titles, path, **kwargs):
        calls[Path(path).name] = kwargs.get("title", "")
        return grid(images, titles, path, **kwargs)

    monkeypatch.setattr(viz, "plot_image_grid", spy)
    from supercl.train import evaluation as module

    def bars(scores, path, **kwargs):
        calls[Path(path).name] = (list(scores), kwargs.get("title"))
        return viz.plot_dsc_bars(scores, path, **kwargs)

    monkeypatch.setattr(module, "plot_dsc_bars", bars)
    assert run(["evaluate", finetuned, "--out", tmp_path / "elsewhere", "--no-progress"]) == 0
    assert calls["predictions.png"].startswith(f"{finetuned.name}: ")
    assert "every class" in calls["predictions.png"]
    assert calls["dsc.png"] == ([finetuned.name], f"{finetuned.name}: test DSC per class")


def test_the_demo_table_says_its_scores_are_percent():
    from supercl.demo import _table

    evaluation = {"dsc": {"liver": 0.5}, "jc": {"liver": 0.25}, "mean_dsc": 0.5, "mean_jc": 0.25}
    table = _table({"scratch": {"evaluation": evaluation}}, ["liver"])
    assert table.splitlines()[0] == "| class | scratch DSC (%) | scratch JC (%) |"
    assert "| liver | 50.00 | 25.00 |" in table
