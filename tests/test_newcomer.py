"""The scripted newcomer pass of issue 11: what a new user does first, from a fresh copy of the
repository, through `make` and the installed `supercl` command (items 1-5, 7, 12 and 13).

Everything is sized to take about a minute: the demo and the runs use 32 x 32 slices, a U-Net
of base width 4 and one epoch. The copy holds the files git tracks (and new, unignored ones)
of this checkout, that is, what a clone of it would hold.
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

ROOT = Path(__file__).resolve().parents[1]
SUPERCL = Path(sys.executable).parent / "supercl"  # the console script: no cwd on sys.path
VENV = Path(sys.executable).parent.parent
TINY = ["--patch-size", "32", "--base-channels", "4", "--depth", "2", "--no-progress",
        "--threads", "1"]
DEMO = ("--volumes 7 --depth-slices 5 --patch-size 32 --base-channels 4 --pretrain-epochs 1 "
        "--finetune-epochs 1 --n-segments 9 --threads 1 --no-progress")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                       reason="needs a git checkout to copy"),
    pytest.mark.skipif(shutil.which("make") is None, reason="needs make"),
    pytest.mark.skipif(not SUPERCL.exists(), reason="needs the installed supercl command"),
]


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
