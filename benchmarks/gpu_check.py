#!/usr/bin/env python3
"""The one-call GPU check: build, the GPU tests, the GPU benchmarks with their peers, results.

GPU time for this project comes in minutes, one command at a time, so everything a GPU must
show runs from this one script (``make gpu-check``), in about 5 minutes on one H100/H200:

1. builds supercl from this checkout into a temporary folder (``pip install --no-deps
   --no-build-isolation --target``; no network, nothing installed into the environment);
2. runs the ``cuda``- and ``triton``-marked tests (``--full``: the whole suite) against that
   build, on the GPU;
3. runs the GPU benchmarks -- supercl against cupyx.scipy.ndimage.label, ``index_add_``,
   the dense SupCon form, torch_scatter and pytorch-metric-learning where installed (a missing
   optional peer skips with its reason) and the CPU baselines (scikit-image, cc3d) -- in one
   pytest process;
4. writes ``gpu-<device>.md`` and ``gpu-<device>.json`` (default folder: benchmarks/results):
   device, versions, commit, the test summary, every benchmark table and the targets of the
   GPU round with the measured figure next to each.

It needs only what a GPU image has: torch, Triton, CuPy, scikit-image, pytest and
pytest-benchmark, plus supercl's own runtime dependencies (nibabel, kornia; the test suite
imports them). What the image lacks travels as wheels: ``make gpu-wheels`` downloads them
here into ``.whl/`` (supercl's runtime dependencies and the peers: cc3d, bkeccl, cuCIM,
pytorch-metric-learning, nilearn), and the check installs every wheel of ``--wheels`` (default
``.whl/`` where it exists) into a temporary folder on the children's PYTHONPATH, without
network and without touching the environment. On a machine without a CUDA GPU it says so in
one line and exits 0.

Usage::

    python benchmarks/gpu_check.py [--full] [--workers N] [--out DIR] [--skip-build] [--wheels DIR]
    python benchmarks/gpu_check.py --render benchmarks/results/gpu-h200.json   # Markdown again
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What the GPU benchmarks select (pytest -k): every GPU provider and, in the same process,
# the CPU baselines that the ratios are taken against -- not the CPU-only issue-19/24 cases on real
# and hard inputs (real_mri*, flat_ct, noisy_binary, phantom), whose ids also hold "512x512".
BENCH_SELECT = (
    "(cuda or cupyx or cucim or (connected_components and 512x512 and (cc3d or scipy)) "
    "or (slic and 512x512 and skimage)) and not (real_mri or flat_ct or noisy_binary or phantom)"
)

# The targets of the GPU round (issue 12), as (label, benchmark group, provider, how to read
# the figure, target).  "ms": median milliseconds per call, lower is better; "slices/s" and
# "ratio" (peer median / supercl median): higher is better; "bw": fraction of HBM bandwidth;
# "share:<group>": this median over the same provider's median in <group>, lower is better;
# "rate:<group>": the same provider's median in <group> over this median (this case's rate as a
# fraction of that one's), higher is better.
TARGETS = [
    ("supcon_loss fwd+bwd N=16384 D=128 fp32", "supcon_loss-cuda-N16384", "supercl-cuda",
     "ms", 8.0),
    ("supcon_loss fwd+bwd N=16384 D=128 fp32 TF32 (\"high\")", "supcon_loss-cuda-tf32-N16384",
     "supercl-cuda-tf32", "ms", 3.0),
    ("supcon_loss fwd+bwd N=16384 D=128 TF32 vs dense TF32", "supcon_loss-cuda-tf32-N16384",
     "supercl-cuda-tf32", "ratio:dense-cuda-tf32", 1.0),
    ("supcon_loss fwd+bwd N=16384 D=128 bf16", "supcon_loss-cuda-bf16-N16384",
     "supercl-cuda-bf16", "ms", 1.5),
    ("CCL 32 x 512^2 binary vs cupyx", "connected_components-binary-512x512", "supercl-cuda",
     "ratio:cupyx", 3.0),
    # issue 22: cupyx cannot label multi-label maps (its row is skipped), so the superpixel
    # target is relative to supercl's own binary time.
    ("CCL 32 x 512^2 superpixel maps, time over binary", "connected_components-superpixels-512x512",
     "supercl-cuda", "share:connected_components-binary-512x512", 1.5),
    ("CCL 32 x 512^2 binary vs bkeccl", "connected_components-binary-512x512", "supercl-cuda",
     "ratio:bkeccl", 1.0),
    ("superpixel_pool fwd+bwd B=32 C=64 256^2 K=100, share of HBM", "superpixel_pool-cuda-32x64x256x256",
     "supercl-triton", "bw", 0.60),
    # issue 22: 25,000 slices/s unmasked, and a body mask costs under 10 % of that rate.
    ("SLIC 256 x 256^2 K=100", "slic_gpu-256x256-K100-B256", "supercl-cuda", "slices/s",
     25000.0),
    ("SLIC 256 x 256^2 K=100, masked: share of the unmasked rate",
     "slic_gpu-256x256-K100-B256-masked", "supercl-cuda", "rate:slic_gpu-256x256-K100-B256",
     0.90),
    ("SLIC 512^2 K=400", "slic_gpu-512x512-K400-B64", "supercl-cuda", "slices/s", 3000.0),
    ("pre-training step B=16 256^2 bf16: share outside the U-Net", "pretrain_overhead-cuda",
     "supercl", "share:pretrain_step-cuda", 0.25),
    # issue 14: the 3-D ops
    ("3-D CCL 256^3 binary vs cupyx", "connected_components_3d-binary-256x256x256",
     "supercl-cuda", "ratio:cupyx", 3.0),
    ("3-D CCL 256^3 binary vs bkeccl", "connected_components_3d-binary-256x256x256",
     "supercl-cuda", "ratio:bkeccl", 1.0),
    ("3-D CCL 256^3 smoothed noise vs cupyx", "connected_components_3d-smoothed_noise-256x256x256",
     "supercl-cuda", "ratio:cupyx", 3.0),
    ("3-D SLIC 300 x 512^2 CT volume, K=20000", "slic_3d_gpu-300x512x512", "supercl-cuda", "ms",
     100.0),
]

# Peak HBM bandwidth (bytes/s) by device name, for the bandwidth target.
HBM_PEAK = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}


def _say(msg: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _gpu() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _slug(name: str) -> str:
    short = re.sub(r"^NVIDIA\s+", "", name)
    return re.sub(r"[^A-Za-z0-9]+", "-", short).strip("-").lower()


def _build(site: Path) -> float:
    start = time.time()
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
           "--no-cache-dir", "--target", str(site), str(ROOT)]
    subprocess.run(cmd, check=True, env={**os.environ, "MAX_JOBS": str(os.cpu_count() or 4)})
    return time.time() - start


def _install_wheels(wheels: Path, target: Path) -> list[str]:
    """Every wheel in ``wheels`` installed into ``target`` (no index, no dependencies: the
    folder holds what the image lacks, one version each). Returns their file names."""
    files = sorted(wheels.glob("*.whl"))
    if files:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
               "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(target),
               *map(str, files)]
        subprocess.run(cmd, check=True)
    return [f.name for f in files]


def _env(paths: list[Path], workers: int = 0) -> dict:
    """The children's environment: compiled Triton (no interpreter), ``paths`` first on
    PYTHONPATH, and with pytest-xdist workers each worker's share of the cores as its thread
    count: 12 workers of torch's default 16 threads each on 16 cores made CPU-bound tests 10x
    slower than alone (the tiny ablation: 49 s alone, killed at 120 s among 12 workers)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiled Triton
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*map(str, paths), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    if workers:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    return env


def _pytest(args: list[str], env: dict, log: Path, timeout: int) -> tuple[int, str]:
    """pytest in a child whose sys.path does not start with the checkout (-P): ``supercl``
    is the build under test, not the sources.  Returns (exit code, closing summary line)."""
    cmd = [sys.executable, "-P", "-m", "pytest", "-p", "no:cacheprovider", *args]
    _say(" ".join(cmd[3:]))
    with open(log, "w") as out:
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = 124
    text = log.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    summary = lines[-1].strip("= ") if lines else f"no summary (exit {code})"
    if code == 124:  # killed: say how far it got, from the verbose progress lines
        progress = re.findall(r"\[\s*(\d+)%\]", text)
        done = len(re.findall(r" (?:PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", text))
        summary = (f"timed out after {timeout} s at {progress[-1] if progress else '?'} % "
                   f"({done} results, {len(_failed(text))} failed or errors so far)")
    for ln in _failed(text)[:40]:
        print("    FAILED", ln)
    return code, summary


def _failed(text: str) -> list[str]:
    """Node ids of failed or erroring tests in a verbose pytest log (with or without xdist),
    each once, in order."""
    found = re.findall(r"(?:(?:FAILED|ERROR) (tests/\S+)|(tests/\S+::\S+) (?:FAILED|ERROR))",
                       text)
    ids = [a or b for a, b in found]
    return list(dict.fromkeys(ids))


def _records(bench_json: dict) -> dict:
    """{(group, provider): benchmark record}."""
    out = {}
    for bench in bench_json.get("benchmarks", []):
        provider = bench.get("extra_info", {}).get("provider", bench["name"])
        out[(bench.get("group"), provider)] = bench
    return out


def _targets(bench_json: dict, device: str) -> list[dict]:
    records = _records(bench_json)
    peak = next((v for k, v in HBM_PEAK.items() if k in device), None)
    rows = []
    for label, group, provider, kind, target in TARGETS:
        rec = records.get((group, provider))
        value, unit, met = None, kind, None
        if rec is not None:
            median = rec["stats"]["median"]
            extra = rec.get("extra_info", {})
            if kind == "ms":
                value, unit = median * 1e3, "ms"
                met = value <= target
            elif kind == "slices/s":
                value = extra.get("slices_per_s", extra.get("batch", 0) / median)
                met = value >= target
            elif kind.startswith("ratio:"):
                peer = records.get((group, kind.split(":", 1)[1]))
                if peer is not None:
                    value, unit = peer["stats"]["median"] / median, "x " + kind.split(":")[1]
                    met = value >= target
            elif kind.startswith("share:"):
                other = kind.split(":", 1)[1]
                whole = records.get((other, provider))
                if whole is not None:
                    value = median / whole["stats"]["median"]
                    unit = "of the step" if other.startswith("pretrain") else f"x the time of {other}"
                    met = value <= target
            elif kind.startswith("rate:"):
                other = records.get((kind.split(":", 1)[1], provider))
                if other is not None:
                    value, unit = other["stats"]["median"] / median, "of its rate"
                    met = value >= target
            elif kind == "bw" and peak:
                moved = extra.get("bytes_moved")
                if moved:
                    value, unit = moved / median / peak, "of peak HBM"
                    met = value >= target
        rows.append(dict(target=label, group=group, provider=provider, value=value, unit=unit,
                         kind=kind, goal=target, met=met))
    return rows


def _fmt(v) -> str:
    if v is None:
        return "not measured"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="run the whole test suite on the GPU")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="folder for gpu-<device>.md/.json (default: benchmarks/results)")
    parser.add_argument("--skip-build", action="store_true",
                        help="test the supercl already importable instead of building one")
    parser.add_argument("--skip-bench", action="store_true", help="tests only")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="recompute the targets of an earlier run's gpu-<device>.json and "
                             "write its Markdown again (next to it), then exit; needs no GPU")
    parser.add_argument("--workers", type=int, default=0,
                        help="pytest-xdist workers for the tests (0: none; needs pytest-xdist)")
    parser.add_argument("--test-timeout", type=int, default=None,
                        help="seconds for the tests (default 150; 420 with --full)")
    parser.add_argument("--bench-timeout", type=int, default=240,
                        help="seconds for the benchmarks")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl",
                        help="folder of wheels to install for the children, for what the image "
                             "lacks (default: .whl, filled by `make gpu-wheels`; skipped when "
                             "missing)")
    args = parser.parse_args(argv)

    if args.render is not None:
        saved = json.loads(args.render.read_text())
        info = {k: v for k, v in saved.items() if k != "raw"}
        info["targets"] = _targets(saved["raw"], info["device"]) if saved["raw"] else []
        saved["targets"] = info["targets"]  # derived from the raw timings: recomputed too
        args.render.write_text(json.dumps(saved, indent=1, allow_nan=False) + "\n")
        path = args.render.with_suffix(".md")
        path.write_text(_markdown(info, saved["raw"]))
        _say(f"wrote {path}")
        return 0

    device = _gpu()
    if device is None:
        print("gpu-check: no CUDA GPU here (torch sees none); nothing to check.")
        return 0
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="supercl-gpu-check-"))
    site = None if args.skip_build else work / "site"
    build_s = None
    if site is not None:
        _say(f"building supercl into {site}")
        build_s = _build(site)
        _say(f"built in {build_s:.0f} s")
    paths = [site] if site is not None else []
    wheels = []
    if args.wheels.is_dir():
        wheels = _install_wheels(args.wheels, work / "wheels")
        paths.append(work / "wheels")
        _say(f"installed {len(wheels)} wheels from {args.wheels}: {', '.join(wheels)}")

    test_args = ["tests", "-v", "-rfE"]  # verbose: a killed run still names its failures
    if not args.full:
        test_args += ["-m", "cuda or triton"]
    workers = 0
    if args.workers:
        import importlib.util

        if importlib.util.find_spec("xdist") is None:
            _say("pytest-xdist is not installed: the tests run in one process")
        else:
            workers = args.workers
            test_args += ["-n", str(workers)]
    env = _env(paths, workers)
    timeout = args.test_timeout or (420 if args.full else 150)
    test_code, test_summary = _pytest(test_args, env, work / "tests.log", timeout)
    _say(f"tests: {test_summary}")
    failed = _failed((work / "tests.log").read_text(errors="replace"))

    bench_json, bench_code, bench_summary = {}, None, "skipped"
    if not args.skip_bench:
        raw = work / "bench.json"
        bench_code, bench_summary = _pytest(
            ["benchmarks", "-q", "-k", BENCH_SELECT, f"--benchmark-json={raw}",
             "--benchmark-columns=median,iqr,rounds"],
            _env(paths), work / "bench.log", args.bench_timeout)
        _say(f"benchmarks: {bench_summary}")
        if raw.exists():
            bench_json = json.loads(raw.read_text())

    targets = _targets(bench_json, device) if bench_json else []
    import torch

    meta = bench_json.get("machine_info", {}).get("supercl", {})
    info = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "commit": meta.get("supercl_commit") or _git_commit(),
        "dirty": meta.get("supercl_dirty"),
        "versions": meta.get("versions", {}),
        "build_s": build_s,
        "wheels": wheels,
        "wall_s": round(time.time() - started, 1),
        "tests": {"selection": "all" if args.full else "cuda or triton", "exit": test_code,
                  "summary": test_summary, "failed": failed},
        "benchmarks": {"exit": bench_code, "summary": bench_summary},
        "targets": targets,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"gpu-{_slug(device)}"
    Path(f"{stem}.json").write_text(json.dumps({**info, "raw": bench_json}, indent=1,
                                               allow_nan=False, default=str) + "\n")
    Path(f"{stem}.md").write_text(_markdown(info, bench_json))
    _say(f"wrote {stem}.md and .json in {time.time() - started:.0f} s")
    return 0 if test_code == 0 and bench_code in (0, None) else 1


def _markdown(info: dict, bench_json: dict) -> str:
    """The results page: header, tests, the targets table and the benchmark tables."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from summarize import summarize  # noqa: E402  (the benchmarks' own Markdown tables)

    device, build_s, targets = info["device"], info.get("build_s"), info.get("targets", [])
    test_summary = info["tests"]["summary"]
    bench_summary = info["benchmarks"]["summary"]
    failed = info["tests"].get("failed", [])
    lines = [
        f"# GPU check on {device}",
        "",
        f"`make gpu-check` (benchmarks/gpu_check.py) at commit {info['commit']}"
        f"{' (dirty tree)' if info['dirty'] else ''}; torch {info['torch']} (CUDA {info['cuda']}),"
        f" Triton {info['triton']}, CuPy {info['versions'].get('cupy', '?')}; "
        f"wall {info['wall_s']} s (build {_fmt(build_s)} s).",
        "",
        f"- Tests ({info['tests']['selection']}): {test_summary}",
        f"- Benchmarks: {bench_summary}",
        "",
    ]
    if failed:
        lines += ["Failed tests:", ""] + [f"- `{ln}`" for ln in failed[:50]] + [""]
    if info.get("notes"):  # added by hand to the JSON after the run, and marked as such
        lines += ["Notes (written by hand after the run):", ""]
        lines += [f"- {note}" for note in info["notes"]] + [""]
    if targets:
        lines += ["## Targets of the GPU round", "", "| target | measured | goal | met |",
                  "|---|---:|---:|---|"]
        for row in targets:
            goal = (f"<= {row['goal']:g} ms" if row["unit"] == "ms"
                    else f"<= {row['goal']:g}" if str(row.get("kind", "")).startswith("share:")
                    else f">= {row['goal']:g}" + (" x" if str(row["unit"]).startswith("x")
                                                   else ""))
            met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
            measured = ("not measured" if row["value"] is None
                        else f"{_fmt(row['value'])} {row['unit']}")
            lines.append(f"| {row['target']} | {measured} | {goal} | {met} |")
        lines.append("")
    if bench_json:
        lines += ["## Benchmarks", "", summarize(bench_json).replace("# supercl benchmarks",
                                                                      "### Run", 1)]
    return "\n".join(lines) + "\n"


def _git_commit() -> str:
    if os.environ.get("SUPERCL_COMMIT"):  # a copied tree: the commit the caller names
        return os.environ["SUPERCL_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or os.environ.get("SUPERCL_COMMIT", "unknown")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("SUPERCL_COMMIT", "unknown")


if __name__ == "__main__":
    sys.exit(main())
