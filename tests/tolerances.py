"""The one table of numerical tolerances, by dtype, and the low-precision rule.

- ``TOLERANCES[dtype]``: rtol/atol for comparing an op with its reference computed in the same
  dtype (float64 and float32), or with an fp32 reference for half types on the CPU paths.
- :func:`assert_close_lowp`: flash-attention's rule for fp16/bf16 kernels: the kernel's error
  against an fp32 reference is at most twice that of plain PyTorch at the same dtype.
"""

import torch

TOLERANCES = {
    torch.float64: dict(rtol=1e-9, atol=1e-11),
    torch.float32: dict(rtol=2e-5, atol=2e-6),
    torch.float16: dict(rtol=5e-3, atol=5e-3),
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
}


def assert_close(actual, expected, dtype=None, **overrides):
    """torch.testing.assert_close with the table's tolerances for ``dtype`` (default: the
    dtype of ``actual``); ``expected`` is cast to ``actual``'s dtype and moved to its device
    (a reference computed on the CPU checks a kernel's output on the GPU)."""
    dtype = dtype or actual.dtype
    tolerance = {**TOLERANCES[dtype], **overrides}
    torch.testing.assert_close(actual, expected.to(device=actual.device, dtype=actual.dtype),
                               **tolerance)


def assert_close_lowp(actual, torch_lowp, reference_fp32, slack=2.0, floor=1e-6):
    """Kernel error <= slack * PyTorch's own error at the same low precision, both measured
    against an fp32 reference (flash-attention's test rule)."""
    kernel_error = (actual.float() - reference_fp32.float()).abs().max().item()
    torch_error = (torch_lowp.float() - reference_fp32.float()).abs().max().item()
    assert kernel_error <= slack * torch_error + floor, (kernel_error, torch_error)
