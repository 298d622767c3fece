"""What a new user meets first.

The scripted newcomer pass of issue 11 (`test_newcomer_pass`): from a fresh copy of the
repository, through `make` and the installed `supercl` command (items 1-5, 7, 12 and 13).
Everything is sized to take about a minute: the demo and the runs use 32 x 32 slices, a U-Net
of base width 4 and one epoch. The copy holds the files git tracks (and new, unignored ones)
of this checkout, that is, what a clone of it would hold.

The command-line items of issue 26, in process and fast (the other tests): --version, a
NIfTI file for `superpixels`, run folders named, one-line option errors, --out checked first;
and the ops and figure items that a newcomer tripped on.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from supercl.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
SUPERCL = Path(sys.executable).parent / "supercl"  # the console script: no cwd on sys.path
VENV = Path(sys.executable).parent.parent
TINY = ["--patch-size", "32", "--base-channels", "4", "--depth", "2", "--no-progress",
        "--threads", "1"]
DEMO = ("--volumes 7 --depth-slices 5 --patch-size 32 --base-channels 4 --pretrain-epochs 1 "
        "--finetune-epochs 1 --n-segments 9 --threads 1 --no-progress")


def strict_json(text):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    dest = tmp_path_factory.mktemp("newcomer") / "supercl"
    for name in filter(None, files):
        src, target = ROOT / os.fsdecode(name), dest / os.fsdecode(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():  # kernels/include, a link to csrc/include, as git keeps it
            target.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, target)
    return dest


def sh(args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "SUPERCL_BACKEND"}
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def cli(clone, *args, timeout=300):
    return sh([SUPERCL, *args], clone, timeout)


def make(clone, *targets):
    # the test environment stands in for the clone's .venv; -o: do not reinstall it
    return sh(["make", "-o", f"{VENV}/.installed", f"VENV={VENV}", f"DEMO_ARGS={DEMO}", *targets],
              clone, timeout=600)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs a git checkout to copy")
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.skipif(not SUPERCL.exists(), reason="needs the installed supercl command")
def test_newcomer_pass(clone):
    # 1. make demo, twice; an interrupted demo continues; make clean-runs, make clean
    first = make(clone, "demo")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "| **mean** |" in first.stdout
    second = make(clone, "demo")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "--overwrite" in second.stdout  # the command make ran
    demo = clone / "runs" / "demo"

    env = {k: v for k, v in os.environ.items() if k != "SUPERCL_BACKEND"}
    proc = subprocess.Popen([str(SUPERCL), "demo", "--out", "runs/cut", *DEMO.split()], cwd=clone,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if "fine-tuning on" in line:  # the second stage has begun
                proc.send_signal(signal.SIGINT)
                break
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert not (clone / "runs" / "cut" / "results.json").exists()
    again = cli(clone, "demo", "--out", "runs/cut", *DEMO.split())
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing the interrupted demo" in again.stdout
    finished = cli(clone, "demo", "--out", "runs/cut", *DEMO.split())
    assert finished.returncode == 2 and "--overwrite" in finished.stderr

    # 7. every JSON file the runs wrote is strict JSON
    files = [p for p in (clone / "runs").rglob("*.json*") if p.suffix in (".json", ".jsonl")]
    assert len(files) > 10
    for path in files:
        for text in path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]:
            strict_json(text)
    results = strict_json((demo / "results.json").read_text())
    assert results["command"].startswith("supercl demo")

    phantom = demo / "phantom"
    # 2. --resume with other settings is refused before anything is written
    assert cli(clone, "pretrain", "--data", phantom, "--out", "runs/pre", *TINY,
               "--n-segments", "9", "--embed-dim", "16", "--max-steps", "2").returncode == 0
    config = (clone / "runs" / "pre" / "config.json").read_bytes()
    changed = cli(clone, "pretrain", "--data", phantom, "--out", "runs/pre", *TINY,
                  "--n-segments", "9", "--embed-dim", "16", "--max-steps", "2", "--resume",
                  "--patch-size", "64", "--base-channels", "8")
    assert changed.returncode == 2
    assert "--patch-size 32 -> 64" in changed.stderr and "--base-channels 4 -> 8" in changed.stderr
    assert "Traceback" not in changed.stderr
    assert (clone / "runs" / "pre" / "config.json").read_bytes() == config

    # 3. an unknown device: one line, no folder
    for command in ("pretrain", "finetune", "superpixels"):
        bad = cli(clone, command, "--data", phantom, "--out", "runs/tpu", "--device", "tpu")
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert not (clone / "runs" / "tpu").exists()

    # 4. evaluate with a given --patch-size equal to the usual default
    run = demo / "scratch"
    ev = cli(clone, "evaluate", run, "--out", "runs/ev128", "--patch-size", "128", "--no-progress",
             "--no-figures")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert strict_json((clone / "runs" / "ev128" / "evaluation.json").read_text())["data"]["patch_size"] == 128

    # 5. divergence: a message with the step, the epoch and the checkpoint
    lr = cli(clone, "pretrain", "--data", phantom, "--out", "runs/lr", *TINY, "--n-segments", "9",
             "--embed-dim", "16", "--batch-size", "6", "--lr", "1e8", "--epochs", "3")
    assert lr.returncode == 1
    assert "features contains" not in lr.stderr and "Traceback" not in lr.stderr
    assert "epoch" in lr.stderr and "step" in lr.stderr and "checkpoint" in lr.stderr

    # 12. a plain folder of images without --labels
    images = clone / "runs" / "images"
    images.mkdir()
    for path in sorted((phantom / "imagesTr").iterdir())[:4]:
        shutil.copy(path, images / path.name)
    plain = cli(clone, "finetune", "--data", images, "--out", "runs/plain", *TINY)
    assert plain.returncode == 2 and "--labels" in plain.stderr

    # 13. a label map of the wrong shape stops pre-training, naming the file
    bad = clone / "runs" / "bad"
    shutil.copytree(phantom, bad)
    victim = sorted((bad / "labelsTr").iterdir())[0]
    img = nib.load(str(victim))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-3], img.affine), str(victim))
    mismatch = cli(clone, "pretrain", "--data", bad, "--out", "runs/badpre", *TINY)
    assert mismatch.returncode == 2 and victim.name in mismatch.stderr

    # make clean-runs removes runs/ only; make clean keeps the environment
    assert "rm -rf runs" in make(clone, "-n", "clean-runs").stdout
    assert str(VENV) not in make(clone, "-n", "clean").stdout
    assert make(clone, "clean-runs").returncode == 0 and not (clone / "runs").exists()


# ---- issue 26: the command line, in process -----------------------------------------------------


@pytest.fixture(scope="module")
def msd(tmp_path_factory):
    from supercl.data import write_msd

    return write_msd(tmp_path_factory.mktemp("data") / "msd", n_volumes=4, shape=(5, 37, 41),
                     n_organs=2, seed=3)


def one_line_error(capsys, code, *options):
    """The stderr of a refused command: one line, exit status 2, naming every option given."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "usage:" not in err and "Traceback" not in err
    for option in options:
        assert option in err, err
    return err


def test_version(capsys):
    from supercl import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"supercl {__version__}"


def test_every_command_comes_from_the_command_table():
    parser = build_parser()
    assert list(parser.commands) == list(COMMANDS)
    for name, command in COMMANDS.items():
        assert parser.commands[name].get_default("run") is command.run


@pytest.mark.parametrize("args, option", [
    (["finetune", "--label-fraction", "2"], "--label-fraction"),
    (["pretrain", "--batch-size", "0"], "--batch-size"),
    (["pretrain", "--lr", "-1"], "--lr"),
    (["finetune", "--patch-size", "100"], "--patch-size"),
    (["pretrain", "--epochs", "abc"], "--epochs"),
    (["superpixels", "--slices", "0"], "--slices"),
    (["demo", "--volumes", "0"], "--volumes"),
])
def test_a_bad_option_value_is_one_line_naming_it(args, option, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = one_line_error(capsys, exit_.value.code, option, "see supercl", "--help")
    assert err.startswith(f"supercl {args[0]}: error:")
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("command", ["pretrain", "finetune", "demo", "superpixels", "ablate"])
@pytest.mark.parametrize("with_data", [False, True])
def test_out_pointing_at_a_file_is_refused_first_and_nothing_is_written(command, with_data, msd,
                                                                       tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("a file of the user's")
    data = ["--data", str(msd)] if with_data and command not in ("demo", "ablate") else []
    code = main([command, *data, "--out", str(target), "--device", "cpu"])
    one_line_error(capsys, code, f"--out {target}", "not a folder")
    assert target.read_text() == "a file of the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_superpixels_takes_one_nifti_file(msd, tmp_path, capsys):
    from supercl.ops import slic

    image = sorted((msd / "imagesTr").glob("*.nii.gz"))[1]
    out = tmp_path / "sp"
    assert main(["superpixels", "--data", str(image), "--out", str(out), "--patch-size", "32",
                 "--n-segments", "9", "--device", "cpu"]) == 0
    case = image.name[: -len(".nii.gz")]
    assert (out / f"superpixels_{case}.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.iterdir()) == [f"superpixels_{case}.png"]  # no phantom
    # the same superpixels as the op on the case's slices, as a folder's case gives them
    from supercl.data.nifti import load_case, scan_dataset

    info = scan_dataset(msd)
    images, _, _ = load_case(next(c for c in info.cases if c.name == case), patch_size=32)
    counts = [int(s.max()) + 1 for s in slic(images, n_segments=9, compactness=0.1)]
    assert f"{np.mean(counts):.0f} superpixels per slice" in capsys.readouterr().out
    # --3d on the file: the NIfTI of supervoxels beside the PNG
    assert main(["superpixels", "--3d", "--data", str(image), "--out", str(out),
                 "--n-segments", "12", "--device", "cpu"]) == 0
    assert nib.load(str(out / f"supervoxels_{case}.nii.gz")).shape == nib.load(str(image)).shape


def test_superpixels_refuses_what_is_not_a_nifti_file_or_a_case_of_a_file(msd, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("x")
    one_line_error(capsys, main(["superpixels", "--data", str(text), "--out", str(tmp_path / "o")]),
                   "not a NIfTI file")
    image = sorted((msd / "imagesTr").glob("*.nii.gz"))[0]
    one_line_error(capsys, main(["superpixels", "--data", str(image), "--case", "x", "--out",
                                 str(tmp_path / "o")]), "--case")
    assert not (tmp_path / "o").exists()


def test_superpixels_help_lists_only_options_that_apply(capsys):
    with pytest.raises(SystemExit):
        main(["superpixels", "--help"])
    text = capsys.readouterr().out
    for absent in ("--label-fraction", "--split-seed", "--val-fraction", "--test-fraction",
                   "--label-seed", "--labels"):
        assert absent not in text
    assert "NIfTI file" in " ".join(text.split())


def _fake_runs(root, files):
    for name, held in files.items():
        (root / name).mkdir(parents=True)
        for f in held:
            (root / name / f).write_bytes(b"")


def test_evaluate_on_a_folder_of_runs_names_them(tmp_path, capsys):
    demo = tmp_path / "demo"
    _fake_runs(demo, {"pretrain": ["encoder.pt", "checkpoint.pt"],
                      "scratch": ["best.pt", "checkpoint.pt"],
                      "supercl": ["best.pt", "checkpoint.pt"]})
    err = one_line_error(capsys, main(["evaluate", str(demo), "--device", "cpu"]),
                         str(demo / "scratch"), str(demo / "supercl"))
    assert str(demo / "pretrain") not in err  # not a fine-tuning run
    assert sorted(p.name for p in demo.iterdir()) == ["pretrain", "scratch", "supercl"]


def test_evaluate_on_a_pretraining_run_says_to_fine_tune_first(tmp_path, capsys):
    _fake_runs(tmp_path, {"pre": ["encoder.pt", "checkpoint.pt"]})
    pre = tmp_path / "pre"
    err = one_line_error(capsys, main(["evaluate", str(pre), "--device", "cpu"]),
                         "pre-training run", f"supercl finetune --pretrained {pre}")
    assert "no checkpoint there" not in err
    assert sorted(p.name for p in pre.iterdir()) == ["checkpoint.pt", "encoder.pt"]


def test_finetune_pretrained_on_a_folder_of_runs_names_the_pretraining_runs(msd, tmp_path,
                                                                            capsys):
    demo = tmp_path / "demo"
    _fake_runs(demo, {"pretrain": ["encoder.pt", "checkpoint.pt"],
                      "scratch": ["best.pt", "checkpoint.pt"]})
    err = one_line_error(capsys, main(["finetune", "--data", str(msd), "--pretrained", str(demo),
                                       "--out", str(tmp_path / "ft"), "--device", "cpu"]),
                         "--pretrained", str(demo / "pretrain"))
    assert str(demo / "scratch") not in err
    assert not (tmp_path / "ft").exists()


def test_without_a_terminal_the_progress_bars_are_off(monkeypatch):
    import dataclasses
    import io

    from supercl import cli

    seen = {}

    def record(args):
        seen["progress"] = args.progress
        return 0

    monkeypatch.setitem(cli.COMMANDS, "demo", dataclasses.replace(cli.COMMANDS["demo"], run=record))
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a log file, not a terminal
    assert main(["demo", "--device", "cpu"]) == 0
    assert seen["progress"] is False

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", Terminal())
    assert main(["demo", "--device", "cpu"]) == 0
    assert seen["progress"] is True


# ---- issue 26: the ops, the figures and the files ----------------------------------------------


def test_connected_components_count_of_one_numpy_image_is_an_int_like_scikit_image():
    from skimage.measure import label

    from supercl.ops import connected_components

    image = np.random.default_rng(1).integers(0, 3, (17, 23))
    _, n = connected_components(image, return_num=True)
    _, expected = label(image, return_num=True, connectivity=2)
    assert type(n) is int and type(expected) is int and n == expected
    _, n3 = connected_components(image[None].repeat(3, 0), return_num=True, spatial_dims=3)
    assert type(n3) is int


def test_masked_slic_counts_stay_in_the_documented_range():
    """slic's docstring: with a mask, between about n_segments and n_segments * box / mask."""
    from supercl.ops import slic

    h = w = 128
    yy, xx = np.mgrid[:h, :w]
    rng = np.random.default_rng(0)
    image = (np.sin(yy / 5.0) + np.cos(xx / 7.0) + 0.3 * rng.standard_normal((h, w))).astype(np.float32)
    for ry, rx in ((50, 60), (30, 30), (40, 55)):
        mask = ((yy - 64) / ry) ** 2 + ((xx - 64) / rx) ** 2 <= 1
        rows, cols = np.nonzero(mask)
        box = (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        n = len(np.unique(slic(image, n_segments=50, compactness=0.1, mask=mask)[mask]))
        assert 0.9 * 50 <= n <= 1.1 * 50 * box / mask.sum(), (ry, rx, n)


def test_spleen_and_gallbladder_get_distinct_colours(msd):
    import json as json_

    from supercl.data import write_msd
    from supercl.viz import PALETTE

    # the demo's phantom: class c is drawn in PALETTE[c - 1]
    root = write_msd(msd.parent / "five", n_volumes=1, shape=(2, 24, 24), n_organs=5, seed=0)
    labels = {v: int(k) for k, v in json_.loads((root / "dataset.json").read_text())["labels"].items()}
    spleen, gallbladder = (PALETTE[labels[c] - 1] for c in ("spleen", "gallbladder"))
    # RGB distance: sky blue against blue was 104; against reddish purple it is 140
    assert np.linalg.norm(np.subtract(spleen, gallbladder)) > 120
    assert len(set(PALETTE[:5])) == 5


def test_chart_legends_use_human_names_and_a_zero_share_shows(tmp_path):
    from supercl import viz

    rows = [{"epoch": e, "ilcp_pos_per_anchor": 2.0, "pcl_pos_per_anchor": 4.0,
             "inter_edge_position_agreement": 0.5, "inter_edge_position_chance": 0.2,
             "inter_partner_edge_share": 0.0} for e in (1, 2, 3)]
    captured = {}
    real = viz._save

    def keep(fig, path):
        captured["fig"] = fig
        return real(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(viz, "_save", keep)
        viz.plot_diagnostics(rows, tmp_path / "d.png")
        fig = captured["fig"]
        labels = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
        assert not any("_" in label for label in labels), labels
        share = next(line for line in fig.axes[1].lines
                     if line.get_label() == viz.display_name("inter_partner_edge_share"))
        assert not share.get_clip_on() and fig.axes[1].get_ylim()[0] < 0  # above the x-axis
        viz.plot_loss_curves([{"epoch": 1, "ce": 1.0, "val_dsc": 0.5}], tmp_path / "l.png")
        labels = [t.get_text() for ax in captured["fig"].axes
                  for t in ax.get_legend().get_texts()]
        assert labels == ["cross-entropy", "validation mean DSC"]


def test_arm_comparison_shows_the_slices_where_the_arms_differ_most(tmp_path, monkeypatch):
    from supercl import viz

    labels = np.zeros((5, 8, 8), np.int64)
    labels[:, 2:6, 2:6] = 1
    a = labels.copy()
    b = labels.copy()
    b[3, :4] = 2       # 32 pixels differ on slice 3
    b[1, 0, :3] = 2    # 3 on slice 1
    assert viz.disagreement_slices([a, b], shown=4) == [1, 3]
    assert viz.disagreement_slices([a, a]) == [0]
    seen = {}

    def grid(tiles, titles, path, **kwargs):
        seen.update(titles=titles, columns=kwargs["columns"], legend=kwargs["legend"])
        return path

    monkeypatch.setattr(viz, "plot_image_grid", grid)
    viz.plot_arm_comparison(np.zeros((5, 1, 8, 8), np.float32), labels,
                            {"from scratch": a, "SuperCL encoder": b},
                            [f"v, slice {i}" for i in range(5)], 3, tmp_path / "c.png",
                            class_names={0: "background", 1: "liver", 2: "spleen"})
    assert seen["columns"] == 3 and list(seen["legend"]) == ["liver", "spleen"]
    assert seen["titles"] == ["v, slice 1: ground truth", "v, slice 1: from scratch",
                              "v, slice 1: SuperCL encoder", "v, slice 3: ground truth",
                              "v, slice 3: from scratch", "v, slice 3: SuperCL encoder"]


def test_license_citation_changelog_and_py_typed_ship():
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    citation = (ROOT / "CITATION.cff").read_text()
    assert "2504.14737" in citation and "cff-version" in citation
    assert (ROOT / "CHANGELOG.md").is_file()
    assert (ROOT / "supercl" / "py.typed").is_file()
    import supercl

    assert (Path(supercl.__file__).parent / "py.typed").is_file()  # in the installed package
