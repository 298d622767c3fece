"""Shared test configuration.

- Devices: CPU always; CUDA only where torch sees a GPU (tests marked ``cuda`` skip elsewhere),
  so that the whole suite collects and passes on a CPU-only machine.
- Triton: without a GPU, TRITON_INTERPRET=1 runs the Triton kernels on CPU tensors.
- Hypothesis: a bounded, deadline-free profile (CI machines are small and shared).
"""

import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Triton kernels run on CPU tensors in Triton's interpreter; the variable must be set
    # before Triton is first imported (supercl imports it lazily, in the ops that use it).
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "supercl",
    max_examples=int(os.environ.get("SUPERCL_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("supercl")

DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_cuda)


@pytest.fixture
def threads():
    """Run a test body with a given torch/OpenMP thread count and restore it afterwards."""
    before = torch.get_num_threads()

    def set_threads(n):
        torch.set_num_threads(n)

    yield set_threads
    torch.set_num_threads(before)
