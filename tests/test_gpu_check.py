"""benchmarks/gpu_check.py, the one-call GPU check, without a GPU: it exits 0 with one line
where torch sees no GPU, names the failures of a (possibly killed) verbose pytest log, computes
the targets from benchmark records, and its committed results page is what it renders."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, on any machine
    out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines() == [
        "gpu-check: no CUDA GPU here (torch sees none); nothing to check."]
    assert list(tmp_path.iterdir()) == []  # and writes nothing


def test_failures_are_named_from_a_killed_verbose_log(gpu_check):
    log = "\n".join([
        "[gw0] [ 10%] PASSED tests/test_a.py::test_ok",
        "[gw1] [ 11%] FAILED tests/test_a.py::test_bad[1-x]",
        "tests/test_b.py::test_plain FAILED                  [ 12%]",
        "tests/test_b.py::test_setup ERROR                   [ 13%]",
        "FAILED tests/test_a.py::test_bad[1-x] - AssertionError: 1 != 2",
    ])
    assert gpu_check._failed(log) == ["tests/test_a.py::test_bad[1-x]",
                                      "tests/test_b.py::test_plain", "tests/test_b.py::test_setup"]
    assert gpu_check._failed("[gw0] [ 99%] PASSED tests/test_a.py::test_ok") == []


def _record(group, provider, median, **extra):
    return {"group": group, "name": provider, "stats": {"median": median},
            "extra_info": {"provider": provider, **extra}}


def test_targets_from_benchmark_records(gpu_check):
    data = {"benchmarks": [
        _record("supcon_loss-cuda-N16384", "supercl-cuda", 0.004),
        _record("connected_components-binary-512x512", "supercl-cuda", 0.001),
        _record("connected_components-binary-512x512", "cupyx", 0.002),
        _record("superpixel_pool-cuda-32x64x256x256", "supercl-triton", 0.001,
                bytes_moved=2.4e9),
        _record("slic_gpu-512x512-K400-B64", "supercl-cuda", 0.02, slices_per_s=3200.0),
        _record("pretrain_overhead-cuda", "supercl", 0.02),
        _record("pretrain_step-cuda", "supercl", 0.1),
    ]}
    rows = {row["target"]: row for row in gpu_check._targets(data, "NVIDIA H200")}
    supcon = rows["supcon_loss fwd+bwd N=16384 D=128 fp32"]
    assert supcon["value"] == pytest.approx(4.0) and supcon["met"] is True
    ccl = rows["CCL 32 x 512^2 binary vs cupyx"]
    assert ccl["value"] == pytest.approx(2.0) and ccl["met"] is False
    pool = next(r for name, r in rows.items() if name.startswith("superpixel_pool"))
    assert pool["value"] == pytest.approx(2.4e9 / 0.001 / 4.8e12) and pool["met"] is False
    assert rows["SLIC 512^2 K=400"]["met"] is True
    share = next(r for name, r in rows.items() if name.startswith("pre-training step"))
    assert share["value"] == pytest.approx(0.2) and share["met"] is True
    missing = rows["SLIC 256 x 256^2 K=100, masked: share of the unmasked rate"]
    assert missing["value"] is None and missing["met"] is None


def test_rate_targets_compare_two_groups_of_one_provider(gpu_check):
    """The masked SLIC target: its rate as a share of the unmasked rate, from the medians."""
    data = {"benchmarks": [
        _record("slic_gpu-256x256-K100-B256", "supercl-cuda", 0.010, slices_per_s=25600.0),
        _record("slic_gpu-256x256-K100-B256-masked", "supercl-cuda", 0.0125),
    ]}
    rows = {row["target"]: row for row in gpu_check._targets(data, "NVIDIA H200")}
    masked = rows["SLIC 256 x 256^2 K=100, masked: share of the unmasked rate"]
    assert masked["value"] == pytest.approx(0.8) and masked["met"] is False
    assert rows["SLIC 256 x 256^2 K=100"]["met"] is True


def test_children_get_the_wheels_and_a_share_of_the_cores(gpu_check, tmp_path, monkeypatch):
    """Wheels carried for what the image lacks land in a folder on the children's PYTHONPATH
    (after the build under test), and each xdist worker gets cores / workers threads."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    # the smallest valid wheel: one module and its metadata
    import zipfile

    name = "gpucheckprobe-1.0"
    with zipfile.ZipFile(wheels / "gpucheckprobe-1.0-py3-none-any.whl", "w") as z:
        z.writestr("gpucheckprobe.py", "VALUE = 42\n")
        z.writestr(f"{name}.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: gpucheckprobe\nVersion: 1.0\n")
        z.writestr(f"{name}.dist-info/WHEEL",
                   "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{name}.dist-info/RECORD", "")
    target = tmp_path / "site"
    assert gpu_check._install_wheels(wheels, target) == ["gpucheckprobe-1.0-py3-none-any.whl"]
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(gpu_check.os, "cpu_count", lambda: 16)
    env = gpu_check._env([tmp_path / "build", target], workers=12)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path / "build"), str(target),
                                                    "/elsewhere"]
    assert env["OMP_NUM_THREADS"] == "1" and "TRITON_INTERPRET" not in env
    assert "OMP_NUM_THREADS" not in gpu_check._env([target])  # one process: torch's default
    out = subprocess.run([sys.executable, "-c", "import gpucheckprobe; print(gpucheckprobe.VALUE)"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "42", out.stderr


def test_committed_results_page_is_what_the_script_renders(tmp_path):
    """The Markdown next to a committed gpu-<device>.json is the script's own rendering of it
    (so neither was edited by hand apart from the JSON's marked notes)."""
    results = sorted((ROOT / "benchmarks" / "results").glob("gpu-*.json"))
    if not results:
        pytest.skip("no committed GPU results")
    for saved in results:
        copy = tmp_path / saved.name
        shutil.copy(saved, copy)
        out = subprocess.run([sys.executable, str(SCRIPT), "--render", str(copy)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert copy.with_suffix(".md").read_text() == saved.with_suffix(".md").read_text()
        assert json.loads(copy.read_text()) == json.loads(saved.read_text())
