"""Triton kernels of supercl's learning-side ops, one module per op, each in the order
kernel -> launcher (grid, block sizes, strides).  Imported lazily by ``supercl.ops`` only when
the Triton backend runs; on CPU tensors that needs ``TRITON_INTERPRET=1``."""
