"""supcon_loss forward + backward: supercl (chunked torch on the CPU, Triton on a GPU) against
the dense SupContrast form and pytorch-metric-learning's SupConLoss, D = 128, time and peak
memory for each N; on a GPU also float32 under TF32 ("high"), bfloat16, and the bfloat16
forward alone (groups in GPU_CASES).

Peak memory: on a GPU, torch.cuda.max_memory_allocated over the timed call. On the CPU,
torch has no allocator statistics, so every (provider, N) runs once in a child process that
samples its resident set (/proc/self/statm, every 0.5 ms) during one forward + backward and
reports the peak above the level after a small warm-up call (lazy imports) and building the
inputs: the memory the loss needed, to within what a 0.5 ms sampler can see. Correctness is checked before timing (against the dense
reference in float64 at the smallest N).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from supercl.ops import supcon_loss
from supercl.testing import supcon_loss_reference

D = 128
TEMPERATURE = 0.1
HAS_CUDA = torch.cuda.is_available()
CPU_SIZES = [1024, 4096, 16384]
GPU_SIZES = [1024, 4096, 16384, 65536]
# bfloat16 features on the GPU (what a bf16-autocast training step feeds the loss): the
# supercl kernels against the dense form evaluated in bfloat16.
GPU_BF16_SIZES = [16384]
PROVIDERS = ["supercl", "dense", "pml"]
# Groups on the GPU, by tag: "cuda" is float32 under torch's default "highest" matmul precision
# (supercl: 3xTF32 tensor-core products), "cuda-tf32" float32 under
# torch.set_float32_matmul_precision("high") -- supercl's TF32 kernels and the dense form's
# TF32 matmuls in the same run --, "cuda-bf16" bfloat16 features, and "cuda-bf16-fwd" the
# bfloat16 forward alone (no backward).
GPU_CASES = {"cuda": (GPU_SIZES, PROVIDERS), "cuda-tf32": ([16384], ["supercl", "dense"]),
             "cuda-bf16": (GPU_BF16_SIZES, ["supercl", "dense"]),
             "cuda-bf16-fwd": ([16384], ["supercl", "dense"])}


def inputs(n: int, device: str, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(n)
    features = torch.randn(n, D, generator=g)
    labels = torch.randint(0, max(2, n // 16), (n,), generator=g)
    return features.to(device, dtype).requires_grad_(), labels.to(device)


def loss_fn(provider: str):
    if provider == "supercl":
        return lambda f, y: supcon_loss(f, y, TEMPERATURE)
    if provider == "dense":
        return lambda f, y: supcon_loss_reference(f, y, TEMPERATURE)
    from pytorch_metric_learning.losses import SupConLoss

    pml = SupConLoss(temperature=TEMPERATURE)
    return lambda f, y: pml(f, y)


CHILD = textwrap.dedent("""
    import json, os, sys, threading, time, torch
    sys.path.insert(0, {here!r})
    from test_bench_supcon import inputs, loss_fn
    torch.set_num_threads({threads})
    page = os.sysconf("SC_PAGE_SIZE")

    def resident():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    fn = loss_fn({provider!r})
    small_features, small_labels = inputs(64, "cpu")
    fn(small_features, small_labels).backward()  # lazy imports and one-time set-up, unmeasured
    features, labels = inputs({n}, "cpu")
    base, peak, done = resident(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], resident())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    fn(features, labels).backward()
    done.set()
    sampler.join()
    print(json.dumps({{"peak_bytes": max(0, max(peak[0], resident()) - base)}}))
""")


def cpu_peak_bytes(provider: str, n: int) -> int:
    code = CHILD.format(here=os.path.dirname(os.path.abspath(__file__)), n=n, provider=provider,
                        threads=torch.get_num_threads())
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_bytes"]


def cases():
    groups = {"cpu": (CPU_SIZES, PROVIDERS), **GPU_CASES}
    for device, (sizes, providers) in groups.items():
        for n in sizes:
            for provider in providers:  # pml computes in the input dtype's matmul as dense does
                marks = []
                if device.startswith("cuda") and not HAS_CUDA:
                    marks.append(pytest.mark.skip(reason="needs a CUDA GPU"))
                if provider == "pml" and importlib.util.find_spec("pytorch_metric_learning") is None:
                    marks.append(pytest.mark.skip(reason="pytorch-metric-learning not installed"))
                yield pytest.param(device, n, provider, marks=marks, id=f"{device}-N{n}-{provider}")


def test_supcon_matches_reference_before_timing():
    features, labels = inputs(512, "cpu")
    f64 = features.detach().double().requires_grad_()
    expected = supcon_loss_reference(f64, labels, TEMPERATURE)
    got = supcon_loss(features, labels, TEMPERATURE)
    assert abs(got.item() - expected.item()) < 1e-4
    (g,) = torch.autograd.grad(got, features)
    (g_ref,) = torch.autograd.grad(expected, f64)
    assert (g.double() - g_ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("device, n, provider", list(cases()))
def test_bench_supcon(benchmark, device, n, provider):
    tag, device = device, device.split("-")[0]
    dtype = torch.bfloat16 if "bf16" in tag else torch.float32
    backward = not tag.endswith("-fwd")
    features, labels = inputs(n, device, dtype)
    fn = loss_fn(provider)
    before = torch.get_float32_matmul_precision()
    if tag.endswith("tf32"):
        torch.set_float32_matmul_precision("high")  # TF32 for supercl and dense alike
    try:
        _run(benchmark, tag, device, n, provider, dtype, backward, features, labels, fn)
    finally:
        torch.set_float32_matmul_precision(before)


def _run(benchmark, tag, device, n, provider, dtype, backward, features, labels, fn):
    def step():
        features.grad = None
        loss = fn(features, labels)
        if backward:
            loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()

    extra = {}
    if device == "cpu":
        extra["peak_memory_bytes"] = cpu_peak_bytes(provider, n)
    else:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    benchmark.group = f"supcon_loss-{tag}-N{n}"
    rounds = (1 if n >= 16384 else 3) if device == "cpu" else 10
    try:
        benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=0 if rounds == 1 else 1)
    except torch.OutOfMemoryError:
        pytest.skip(f"{provider} ran out of GPU memory at N={n}")
    if device == "cuda":
        extra["peak_memory_bytes"] = torch.cuda.max_memory_allocated() - base
    median = benchmark.stats.stats.median
    # 6 N^2 D FLOPs forward + backward, 2 N^2 D forward alone (the score products, supercl's
    # one-pass form; the dense form does the same products)
    flops = (6 if backward else 2) * n * n * D
    benchmark.extra_info.update(provider=f"{provider}-{tag}", n=n, d=D, dtype=str(dtype)[6:],
                                matmul_precision=torch.get_float32_matmul_precision(),
                                backward=backward, tflops_per_s=flops / median / 1e12,
                                median_s=median,
                                samples_per_s=n / median, threads=torch.get_num_threads(),
                                load_1min=round(os.getloadavg()[0], 2), **extra)
