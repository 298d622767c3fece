#!/usr/bin/env python3
"""Where the time goes in the GPU target cases that miss: one short script for one GPU call.

For each case (the same inputs as its benchmark in this folder), after two warm-up calls:

- ``host ms``: the host's time to issue one call without waiting for the GPU (Python, torch
  dispatch, kernel launches). When it is close to ``wall ms`` the case is launch-bound: the
  GPU waits for the host, and faster kernels change nothing.
- ``wall ms``: one call, synchronised (median of 10, CUDA events around it).
- ``gpu ms``: the sum of the kernels' own times in one call (torch.profiler over 3 calls,
  divided by 3), and the top kernels and ops by GPU and by host time.

Usage (on a GPU machine; prints a summary and writes the tables to --out)::

    python benchmarks/profile_gpu.py [--out DIR] [CASE ...]

Cases: supcon-bf16, supcon-tf32, supcon-fp32, pool, views, step, ccl-binary. ``--device cpu``
runs them once each on the CPU instead (a dry run of the script itself, no timings).
Written for issue 23's and 22's misses; the results are committed under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent / "tests"))  # phantom_v1, the benchmarks' inputs (conftest.py)
DEVICE = "cuda"


def _supcon(dtype, precision):
    from test_bench_supcon import D, TEMPERATURE, inputs

    from supercl.ops import supcon_loss

    torch.set_float32_matmul_precision(precision)
    features, labels = inputs(16384 if DEVICE == "cuda" else 256, DEVICE, dtype)
    assert features.shape[1] == D

    def call():
        features.grad = None
        supcon_loss(features, labels, TEMPERATURE).backward()

    return call


def _pool():
    from test_bench_superpixel_pool import BATCH, CHANNELS, SIZE, _segments

    from phantom_v1 import phantom_batch
    from supercl.ops import superpixel_pool

    batch = BATCH[DEVICE]
    segments, k = _segments(lambda s: phantom_batch(batch, s, s, seed=0), batch)
    segments = segments.to(DEVICE)
    features = torch.randn(batch, CHANNELS, SIZE, SIZE, device=DEVICE, requires_grad=True)

    def call():
        features.grad = None
        superpixel_pool(features, segments, k)[0].square().sum().backward()

    return call


def _step_parts():
    from test_bench_pretrain_step import StepParts

    return StepParts(DEVICE)


def _views():
    parts = _step_parts()
    return lambda: parts.part("views", {})


def _step():
    parts = _step_parts()
    return lambda: parts.run()


def _ccl_binary():
    from phantom_v1 import phantom_batch
    from supercl.ops import connected_components

    _, labels = phantom_batch(32, 512, 512, seed=0)
    mask = torch.from_numpy(labels > 0).to(torch.uint8).to(DEVICE)
    return lambda: connected_components(mask, connectivity=2)


CASES = {
    "supcon-bf16": lambda: _supcon(torch.bfloat16, "highest"),
    "supcon-tf32": lambda: _supcon(torch.float32, "high"),
    "supcon-fp32": lambda: _supcon(torch.float32, "highest"),
    "pool": _pool,
    "views": _views,
    "step": _step,
    "ccl-binary": _ccl_binary,
}


def _profile(name: str, call, out) -> dict:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        call()
    torch.cuda.synchronize()
    host = []
    for _ in range(5):
        torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        host.append(time.perf_counter() - start)
    torch.cuda.synchronize()
    wall = []
    for _ in range(10):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        begin.record()
        call()
        end.record()
        torch.cuda.synchronize()
        wall.append(begin.elapsed_time(end))
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            call()
        torch.cuda.synchronize()
    events = prof.key_averages()
    attr = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else \
        "self_cuda_time_total"
    # Device-side events only (kernels, copies, memsets): an operator's self device time is
    # the time of the kernels it launched, which are events of their own too.
    from torch.autograd import DeviceType

    device_events = [e for e in events if e.device_type == DeviceType.CUDA]
    gpu_ms = sum(getattr(e, attr) for e in device_events) / 3 / 1e3
    kernels = sum(e.count for e in device_events) / 3
    row = dict(case=name, host_ms=statistics.median(host) * 1e3,
               wall_ms=statistics.median(wall), gpu_ms=gpu_ms, kernels=kernels)
    sort = "self_device_time_total" if attr == "self_device_time_total" else "self_cuda_time_total"
    out.write(f"\n## {name}: host {row['host_ms']:.3f} ms, wall {row['wall_ms']:.3f} ms, "
              f"kernels {gpu_ms:.3f} ms ({kernels:.0f} per call)\n\n")
    out.write("### by GPU time (3 calls)\n\n```\n")
    out.write(events.table(sort_by=sort, row_limit=14, max_name_column_width=70))
    out.write("```\n\n### by host time (3 calls)\n\n```\n")
    out.write(events.table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=70))
    out.write("```\n")
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", default=list(CASES),
                        help=f"any of {', '.join(CASES)} (default: all)")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args(argv)
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cpu":  # dry run: each case built and called once
        for name in args.cases:
            CASES[name]()()
            print(f"{name}: ran once on the CPU")
        return 0
    if not torch.cuda.is_available():
        print("profile_gpu: no CUDA GPU here; nothing to profile.")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    path = args.out / "profile-gpu.md"
    with open(path, "w") as out:
        from gpu_check import _git_commit

        out.write(f"# Profiles on {torch.cuda.get_device_name(0)} (torch {torch.__version__}, "
                  f"commit {_git_commit()})\n")
        for name in args.cases:
            try:
                rows.append(_profile(name, CASES[name](), out))
            except Exception as exc:  # noqa: BLE001  (one broken case must not lose the rest)
                out.write(f"\n## {name}: failed: {exc!r}\n")
                print(f"{name}: failed: {exc!r}", flush=True)
                continue
            r = rows[-1]
            print(f"{name:12s} host {r['host_ms']:8.3f} ms  wall {r['wall_ms']:8.3f} ms  "
                  f"kernels {r['gpu_ms']:8.3f} ms  ({r['kernels']:.0f} kernels)", flush=True)
            out.flush()
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
