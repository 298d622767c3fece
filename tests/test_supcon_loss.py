"""supercl.ops.supcon_loss against the dense SupContrast form (supcon_loss_reference): values,
float64 gradcheck, the Triton kernels under the interpreter, memory, compile, and errors."""

import sys
import warnings

import pytest
import torch

from supercl.ops import supcon_loss
from supercl.testing import supcon_loss_reference
from conftest import triton_compile_for_gpu
from tolerances import assert_close, assert_close_lowp

supcon_module = sys.modules["supercl.ops.supcon_loss"]


def make(n, d, n_labels=4, n_groups=None, dtype=torch.float64, seed=0, contiguous_groups=True):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, n_labels, (n,), generator=g)
    groups = None
    if n_groups is not None:
        groups = torch.randint(0, n_groups, (n,), generator=g)
        if contiguous_groups:
            groups = groups.sort().values
    return features, labels, groups


CASES = [  # (N, D, labels, groups)
    (1, 3, 2, None),
    (2, 5, 1, None),
    (2, 5, 2, None),
    (217, 16, 5, None),
    (217, 20, 30, 6),
    (300, 7, 3, 300),  # every sample alone in its group: no positive anywhere
    (1000, 24, 10, 9),
]


@pytest.mark.parametrize("n, d, n_labels, n_groups", CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_backend_matches_reference(n, d, n_labels, n_groups, reduction):
    features, labels, groups = make(n, d, n_labels, n_groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = supcon_loss(features, labels, 0.2, groups=groups, reduction=reduction,
                          backend="torch")
    expected = supcon_loss_reference(features, labels, 0.2, groups=groups, reduction=reduction)
    assert_close(got, expected)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("base_temperature", [None, 0.07])
def test_options_match_reference(normalize, base_temperature):
    features, labels, groups = make(57, 9, 4, 3, seed=1)
    features = features * 0.3
    got = supcon_loss(features, labels, 0.5, base_temperature=base_temperature, groups=groups,
                      normalize=normalize)
    expected = supcon_loss_reference(features, labels, 0.5, base_temperature=base_temperature,
                                     groups=groups, normalize=normalize)
    assert_close(got, expected)


def test_unsorted_groups_and_large_label_values():
    features, labels, groups = make(120, 12, 3, 5, contiguous_groups=False, seed=2)
    labels = labels * (2**40) - 7
    groups = groups * 1000
    assert_close(supcon_loss(features, labels, 0.1, groups=groups),
                 supcon_loss_reference(features, labels, 0.1, groups=groups))


@pytest.mark.parametrize("n, d, n_labels, n_groups", [(2, 3, 1, None), (23, 5, 3, None),
                                                      (31, 4, 4, 3), (40, 6, 2, 40)])
@pytest.mark.parametrize("normalize", [True, False])
def test_gradcheck_float64(n, d, n_labels, n_groups, normalize):
    features, labels, groups = make(n, d, n_labels, n_groups, seed=3)
    features = (features * 0.5).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert torch.autograd.gradcheck(
            lambda f: supcon_loss(f, labels, 0.3, groups=groups, normalize=normalize,
                                  backend="torch"),
            (features,),
        )
        assert torch.autograd.gradcheck(
            lambda f: supcon_loss(f, labels, 0.3, groups=groups, normalize=normalize,
                                  reduction="none", backend="torch"),
            (features,),
        )


def test_chunked_path_equals_dense(monkeypatch):
    """Force many small chunks: the streaming form gives the dense values and gradients."""
    monkeypatch.setattr(supcon_module, "_CHUNK_ELEMENTS", 100)
    features, labels, groups = make(97, 8, 4, 4, seed=4)
    features.requires_grad_()
    got = supcon_loss(features, labels, 0.2, groups=groups)
    (grad,) = torch.autograd.grad(got, features)
    expected = supcon_loss_reference(features, labels, 0.2, groups=groups)
    (expected_grad,) = torch.autograd.grad(expected, features)
    assert_close(got, expected)
    assert_close(grad, expected_grad)


@pytest.mark.parametrize("chunk_elements", [97, 300, 2**24])
def test_sorted_groups_score_only_their_own_columns(monkeypatch, chunk_elements):
    """The torch path skips other groups' columns when groups are sorted (row chunks of
    every size, including chunks that straddle group edges); unsorted groups take the full
    path. Both agree with the reference and with each other (gradients permuted)."""
    monkeypatch.setattr(supcon_module, "_CHUNK_ELEMENTS", chunk_elements)
    features, labels, groups = make(97, 5, n_labels=3, n_groups=7, seed=11)
    assert supcon_module._group_spans(groups) is not None
    perm = torch.randperm(97, generator=torch.Generator().manual_seed(1))
    assert supcon_module._group_spans(groups[perm]) is None
    f_sorted = features.clone().requires_grad_()
    f_perm = features[perm].clone().requires_grad_()
    got = supcon_loss(f_sorted, labels, 0.3, groups=groups)
    got_perm = supcon_loss(f_perm, labels[perm], 0.3, groups=groups[perm])
    (grad,) = torch.autograd.grad(got, f_sorted)
    (grad_perm,) = torch.autograd.grad(got_perm, f_perm)
    ref_in = features.clone().requires_grad_()
    expected = supcon_loss_reference(ref_in, labels, 0.3, groups=groups)
    (expected_grad,) = torch.autograd.grad(expected, ref_in)
    assert_close(got, expected)
    assert_close(grad, expected_grad)
    assert_close(got_perm, got)
    assert_close(grad_perm, grad[perm])


def test_chunk_size_bounds_memory():
    rows = list(supcon_module._chunks(16384))
    assert max(stop - start for start, stop in rows) * 16384 <= supcon_module._CHUNK_ELEMENTS
    assert rows[0][0] == 0 and rows[-1][1] == 16384


def on(device, *tensors):
    """``tensors`` on ``device`` (None stays None)."""
    return tuple(None if t is None else t.to(device) for t in tensors)


@pytest.mark.triton
@pytest.mark.parametrize("n, d, n_labels, n_groups", CASES)
def test_triton_kernels_match_reference(n, d, n_labels, n_groups, triton_device):
    features, labels, groups = make(n, d, n_labels, n_groups, dtype=torch.float32, seed=5)
    features.requires_grad_()
    x, y, g = on(triton_device, features, labels, groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = supcon_loss(x, y, 0.2, groups=g, backend="triton")
    (grad,) = torch.autograd.grad(got, features)
    expected = supcon_loss_reference(features.double(), labels, 0.2, groups=groups)
    (expected_grad,) = torch.autograd.grad(expected, features)
    assert_close(got.cpu(), expected, atol=1e-5)
    assert_close(grad, expected_grad, atol=1e-6)


@pytest.mark.triton
def test_triton_kernels_wide_features_and_none_reduction(triton_device):
    """D larger than one 128-wide block: the kernels loop over D blocks."""
    features, labels, groups = make(70, 300, 3, 2, dtype=torch.float32, seed=6)
    features.requires_grad_()
    x, y, g = on(triton_device, features, labels, groups)
    got = supcon_loss(x, y, 0.1, groups=g, reduction="none", backend="triton").cpu()
    expected = supcon_loss_reference(features.double(), labels, 0.1, groups=groups,
                                     reduction="none")
    assert_close(got, expected, atol=1e-5)
    (grad,) = torch.autograd.grad(got.sum(), features)
    (expected_grad,) = torch.autograd.grad(expected.sum(), features)
    assert_close(grad, expected_grad, atol=1e-6)


@pytest.mark.triton
def test_triton_half_within_twice_torch_error(triton_device):
    """float16 here; bfloat16 only on a GPU (test_cuda_triton_fp32_and_bf16): Triton 3.9's
    interpreter mishandles bfloat16 loads (a log-sum-exp of 5.3 came out as 1.9e11, the same
    kernel being exact in float16 and float32)."""
    features, labels, groups = make(150, 32, 4, 3, dtype=torch.float32, seed=7)
    reference = supcon_loss_reference(features, labels, 0.2, groups=groups)
    torch_lowp = supcon_loss_reference(features.half(), labels, 0.2, groups=groups)
    x, y, g = on(triton_device, features.half(), labels, groups)
    got = supcon_loss(x, y, 0.2, groups=g, backend="triton").cpu()
    assert_close_lowp(got, torch_lowp, reference)


def test_no_positive_returns_zero_with_zero_gradient_and_warns_once(monkeypatch):
    monkeypatch.setattr(supcon_module, "_warned_no_positive", False)
    features = torch.randn(6, 4, requires_grad=True)
    labels = torch.arange(6)
    with pytest.warns(RuntimeWarning, match="no anchor has a positive"):
        loss = supcon_loss(features, labels)
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, features)
    assert torch.equal(grad, torch.zeros_like(grad))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        supcon_loss(features, labels)  # once only


def test_anchors_without_positive_are_left_out():
    features, _, _ = make(5, 3, seed=8)
    labels = torch.tensor([0, 0, 1, 2, 3])  # only anchors 0 and 1 have a positive
    per_anchor = supcon_loss(features, labels, reduction="none")
    assert torch.equal(per_anchor[2:], torch.zeros(3, dtype=per_anchor.dtype))
    assert_close(supcon_loss(features, labels), per_anchor[:2].mean())
    assert torch.isfinite(per_anchor).all()


def test_half_precision_inputs_on_torch_backend():
    features, labels, groups = make(64, 16, 4, 2, dtype=torch.float32, seed=9)
    reference = supcon_loss_reference(features, labels, 0.2, groups=groups)
    got = supcon_loss(features.bfloat16(), labels, 0.2, groups=groups)
    assert got.dtype == torch.float32
    assert_close(got, reference, dtype=torch.bfloat16)


def test_torch_compile_fullgraph():
    features, labels, groups = make(40, 8, 3, 2, dtype=torch.float32, seed=10)

    def objective(f):
        return supcon_loss(f, labels, 0.2, groups=groups) + supcon_loss(f, labels, 0.5)

    compiled = torch.compile(objective, fullgraph=True, backend="aot_eager")
    f1 = features.clone().requires_grad_()
    f2 = features.clone().requires_grad_()
    eager, compiled_value = objective(f1), compiled(f2)
    assert_close(compiled_value, eager)
    (g1,) = torch.autograd.grad(eager, f1)
    (g2,) = torch.autograd.grad(compiled_value, f2)
    assert_close(g2, g1)


def test_custom_op_registered_for_torch_library():
    torch.library.opcheck(
        torch.ops.supercl.supcon_lse,
        (torch.randn(9, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.int64), 2.0, "torch"),
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(features=torch.zeros(4, 3, dtype=torch.int64), labels=torch.zeros(4, dtype=torch.int64)), TypeError, "features"),
        (dict(features=torch.zeros(4), labels=torch.zeros(4, dtype=torch.int64)), ValueError, "features"),
        (dict(features=torch.zeros(0, 3), labels=torch.zeros(0, dtype=torch.int64)), ValueError, "empty"),
        (dict(features=torch.zeros(4, 3), labels=torch.zeros(4)), TypeError, "labels"),
        (dict(features=torch.zeros(4, 3), labels=torch.zeros(5, dtype=torch.int64)), ValueError, "labels"),
        (dict(features=torch.zeros(4, 3), labels=torch.zeros(4, dtype=torch.int64), groups=torch.zeros(4)), TypeError, "groups"),
        (dict(features=torch.zeros(4, 3), labels=torch.zeros(4, dtype=torch.int64), groups=torch.zeros(3, dtype=torch.int64)), ValueError, "groups"),
        (dict(features=torch.zeros(4, 3), labels=torch.zeros(4, dtype=torch.int64), temperature=0.0), ValueError, "temperature"),
        (dict(features=torch.zeros(4, 3), labels=torch.zeros(4, dtype=torch.int64), temperature=-1.0), ValueError, "temperature"),
        (dict(features=torch.zeros(4, 3), labels=torch.zeros(4, dtype=torch.int64), base_temperature=0.0), ValueError, "base_temperature"),
        (dict(features=torch.zeros(4, 3), labels=torch.zeros(4, dtype=torch.int64), reduction="max"), ValueError, "reduction"),
        (dict(features=torch.full((4, 3), float("nan")), labels=torch.zeros(4, dtype=torch.int64)), ValueError, "NaN"),
        (dict(features=torch.zeros(4, 3), labels=torch.zeros(4, dtype=torch.int64), backend="jax"), ValueError, "backend"),
        (dict(features=torch.zeros(4, 3, dtype=torch.float64), labels=torch.zeros(4, dtype=torch.int64), backend="triton"), TypeError, "float64"),
    ],
)
def test_bad_input_raises_clearly(kwargs, error, match):
    with pytest.raises(error, match=match):
        supcon_loss(**kwargs)


def test_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        supcon_loss(torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64), backend="triton")


cuda = pytest.mark.cuda


@cuda
@pytest.mark.parametrize("n", [1000, 4096])
def test_cuda_triton_fp32_and_bf16(n):
    features, labels, groups = make(n, 128, 50, 8, dtype=torch.float32, seed=11)
    features, labels, groups = features.cuda(), labels.cuda(), groups.cuda()
    reference = supcon_loss_reference(features, labels, 0.1, groups=groups)
    got = supcon_loss(features, labels, 0.1, groups=groups)
    assert_close(got, reference, atol=1e-5)
    torch_lowp = supcon_loss_reference(features.bfloat16(), labels, 0.1, groups=groups)
    assert_close_lowp(supcon_loss(features.bfloat16(), labels, 0.1, groups=groups), torch_lowp,
                      reference)
    f32 = features.clone().requires_grad_()
    f64 = features.double().requires_grad_()
    (g,) = torch.autograd.grad(supcon_loss(f32, labels, 0.1, groups=groups), f32)
    (g_ref,) = torch.autograd.grad(supcon_loss_reference(f64, labels, 0.1, groups=groups), f64)
    assert_close(g, g_ref.float(), atol=1e-6)


@pytest.mark.triton
def test_float32_products_follow_torch_matmul_precision(triton_device):
    """float32 features use IEEE products under "highest" (torch's default) and TF32 under
    "high"/"medium", as torch's own matmuls do; float64 is always IEEE, half types never."""
    from supercl.kernels.triton.supcon_loss import ieee_products

    before = torch.get_float32_matmul_precision()
    features, labels, groups = make(300, 32, 6, 3, dtype=torch.float32, seed=12)
    x, y, g = on(triton_device, features, labels, groups)
    reference = supcon_loss_reference(features.double(), labels, 0.1, groups=groups)
    try:
        for precision, ieee in (("highest", True), ("high", False), ("medium", False)):
            torch.set_float32_matmul_precision(precision)
            assert ieee_products(torch.float32) is ieee
            assert ieee_products(torch.float64) and not ieee_products(torch.bfloat16)
            got = supcon_loss(x, y, 0.1, groups=g, backend="triton").cpu()
            # TF32 keeps 10 mantissa bits: the loss moves by ~1e-3 at most at this size
            assert_close(got, reference, atol=1e-5 if ieee else 5e-3, rtol=0 if ieee else 1e-3)
    finally:
        torch.set_float32_matmul_precision(before)


_COMPILE_SUPCON_FOR_GPU = r"""
import re
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from supercl.kernels.triton import supcon_loss as k

target = GPUTarget("cuda", 90, 32)
pointers = {"Z": "*{z}", "G": "*i64", "GMIN": "*i64", "GMAX": "*i64", "LSE": "*fp32",
            "COEF": "*fp32", "DZ": "*fp32"}
for z, ieee in (("fp32", True), ("fp32", False), ("bf16", False), ("fp16", False)):
    for kernel in (k._lse_forward_kernel, k._lse_backward_kernel):
        consts = dict(HAS_GROUPS=True, IEEE=ieee, BLOCK_M=64, BLOCK_N=64, BLOCK_D=128)
        names = kernel.arg_names
        signature = {n: pointers[n].format(z=z) if n in pointers
                     else "constexpr" if n in consts else "fp32" if n == "scale" else "i32"
                     for n in names}
        compiled = triton.compile(ASTSource(kernel, signature,
                                            {(names.index(n),): v for n, v in consts.items()}),
                                  target=target)
        ptx = compiled.asm["ptx"]
        assert "cubin" in compiled.asm
        if not ieee:
            assert "mma" in ptx, (kernel.__name__, z)  # tensor cores (TF32 for fp32)
        atomics = set(re.findall(r"\b(?:red|atom)\.[\w.]*", ptx))
        assert not atomics, (kernel.__name__, atomics)  # deterministic
print("ok")
"""


@pytest.mark.slow
def test_kernels_compile_for_a_gpu():
    """Without a GPU, Triton still compiles the SupCon kernels for sm_90: types and layouts
    that the interpreter does not check, tensor-core products where they are expected, and no
    atomics anywhere (the backward is one deterministic pass)."""
    triton_compile_for_gpu(_COMPILE_SUPCON_FOR_GPU)


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_triton_gradient_against_float64(dtype):
    """On the GPU: the one-pass backward's gradient against float64 autograd through the
    dense form -- float32 (IEEE) within 1e-6, bf16 within twice torch's own bf16 error."""
    features, labels, groups = make(2048, 128, 40, 4, dtype=torch.float32, seed=13)
    features, labels, groups = features.cuda(), labels.cuda(), groups.cuda()
    f64 = features.double().requires_grad_()
    (g_ref,) = torch.autograd.grad(supcon_loss_reference(f64, labels, 0.1, groups=groups), f64)
    x = features.to(dtype).requires_grad_()
    (g,) = torch.autograd.grad(supcon_loss(x, labels, 0.1, groups=groups), x)
    if dtype == torch.float32:
        assert_close(g, g_ref.float(), atol=1e-6)
    else:
        lowp = features.to(dtype).requires_grad_()
        (g_lowp,) = torch.autograd.grad(supcon_loss_reference(lowp, labels, 0.1, groups=groups),
                                        lowp)
        assert_close_lowp(g, g_lowp, g_ref)


# ---- positions: PCL's threshold relation |p_i - p_j| < window, without an N x N mask --------


def make_positions(n, seed, grid=None):
    """Relative slice positions in [0, 1]: on a grid of `grid` steps (ties, and differences
    that land exactly on multiples of 0.1) or uniform."""
    g = torch.Generator().manual_seed(seed)
    if grid:
        return torch.randint(0, grid + 1, (n,), generator=g).double() / grid
    return torch.rand(n, generator=g, dtype=torch.float64)


POSITION_CASES = [  # (N, D, groups, grid)
    (1, 3, None, 10),
    (2, 4, None, 10),
    (57, 9, None, 10),   # positions k / 10 with window 0.1: the boundary itself
    (217, 16, None, None),
    (300, 8, 5, 24),
    (64, 6, 64, 10),     # every sample alone in its group
]


@pytest.mark.parametrize("n, d, n_groups, grid", POSITION_CASES)
@pytest.mark.parametrize("window", [1e-9, 0.1, 0.25, 2.0])
def test_positions_match_dense_reference(n, d, n_groups, grid, window):
    features, _, groups = make(n, d, 1, n_groups, seed=n)
    positions = make_positions(n, seed=n + 1, grid=grid)
    features.requires_grad_()
    kwargs = dict(positions=positions, window=window, groups=groups, temperature=0.3,
                  reduction="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = supcon_loss(features, **kwargs)
    expected = supcon_loss_reference(features, **kwargs)
    assert_close(got, expected)
    (grad,) = torch.autograd.grad(got.sum(), features)
    (expected_grad,) = torch.autograd.grad(expected.sum(), features)
    assert_close(grad, expected_grad)


def test_positions_count_and_window_by_hand():
    """Positions 0, 0.05, 0.1, 0.3 with window 0.1: 0 ~ 0.05, 0.05 ~ 0.1, not 0 ~ 0.1 (the
    relation is not transitive), 0.3 alone."""
    features = torch.eye(4, dtype=torch.float64)
    positions = torch.tensor([0.0, 0.05, 0.1, 0.3], dtype=torch.float64)
    sums, counts = supcon_module._window_positive_sums(features, positions, 0.1, None)
    assert counts.tolist() == [1, 2, 1, 0]
    assert torch.equal(sums, torch.zeros(4, dtype=torch.float64))  # orthogonal embeddings
    ones = torch.ones(4, 2, dtype=torch.float64)
    sums, counts = supcon_module._window_positive_sums(ones, positions, 0.1, None)
    assert sums.tolist() == [2.0, 4.0, 2.0, 0.0]  # z_i . z_j = 2 per positive


@pytest.mark.parametrize("normalize", [True, False])
def test_positions_gradcheck_float64(normalize):
    features, _, groups = make(31, 5, 1, 3, seed=21)
    features = (features * 0.5).requires_grad_()
    positions = make_positions(31, seed=22, grid=12)
    assert torch.autograd.gradcheck(
        lambda f: supcon_loss(f, positions=positions, window=0.2, groups=groups,
                              temperature=0.4, normalize=normalize), (features,))


def test_positions_unsorted_non_contiguous_and_base_temperature():
    features, _, groups = make(150, 12, 1, 4, seed=23, contiguous_groups=False)
    wide = torch.stack([make_positions(150, seed=24), torch.zeros(150, dtype=torch.float64)], 1)
    positions = wide[:, 0]  # a strided view
    assert not positions.is_contiguous()
    kwargs = dict(positions=positions, window=0.1, groups=groups, base_temperature=0.07)
    assert_close(supcon_loss(features, **kwargs), supcon_loss_reference(features, **kwargs))
    perm = torch.randperm(150, generator=torch.Generator().manual_seed(1))
    permuted = dict(positions=positions[perm], window=0.1, groups=groups[perm],
                    base_temperature=0.07)
    assert_close(supcon_loss(features[perm], **permuted), supcon_loss(features, **kwargs))


@pytest.mark.triton
def test_positions_on_the_triton_backend(triton_device):
    features, _, groups = make(300, 32, 1, 3, dtype=torch.float32, seed=25)
    positions = make_positions(300, seed=26, grid=20)
    features.requires_grad_()
    x, g, p = on(triton_device, features, groups, positions)
    got = supcon_loss(x, positions=p, window=0.1, groups=g, backend="triton")
    (grad,) = torch.autograd.grad(got, features)
    expected = supcon_loss_reference(features.double(), positions=positions, window=0.1,
                                     groups=groups)
    (expected_grad,) = torch.autograd.grad(expected, features)
    assert_close(got.cpu(), expected, atol=1e-5)
    assert_close(grad, expected_grad, atol=1e-6)


def test_positions_torch_compile_fullgraph():
    features, _, groups = make(40, 8, 1, 2, dtype=torch.float32, seed=27)
    positions = make_positions(40, seed=28, grid=10).float()

    def objective(f):
        return supcon_loss(f, positions=positions, window=0.1, groups=groups)

    compiled = torch.compile(objective, fullgraph=True, backend="aot_eager")
    f1 = features.clone().requires_grad_()
    f2 = features.clone().requires_grad_()
    eager, compiled_value = objective(f1), compiled(f2)
    assert_close(compiled_value, eager)
    assert_close(torch.autograd.grad(compiled_value, f2)[0], torch.autograd.grad(eager, f1)[0])


_F, _Y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
_P = torch.tensor([0.0, 0.1, 0.2, 0.3])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(features=_F), ValueError, "exactly one of labels"),
    (dict(features=_F, labels=_Y, positions=_P, window=0.1), ValueError, "exactly one"),
    (dict(features=_F, labels=_Y, window=0.1), ValueError, "window applies to positions"),
    (dict(features=_F, positions=_P), ValueError, "window is required"),
    (dict(features=_F, positions=_P, window=0.0), ValueError, "window must be > 0"),
    (dict(features=_F, positions=_P, window=float("nan")), ValueError, "window must be finite"),
    (dict(features=_F, positions=_P, window="0.1"), TypeError, "window"),
    (dict(features=_F, positions=_Y, window=0.1), TypeError, "positions must be a float"),
    (dict(features=_F, positions=_P[:3], window=0.1), ValueError, r"positions must have shape \(4,\)"),
    (dict(features=_F, positions=_P.reshape(2, 2), window=0.1), ValueError, "positions must have shape"),
    (dict(features=_F, positions=torch.tensor([0.0, float("nan"), 0.2, 0.3]), window=0.1),
     ValueError, "positions contains NaN"),
    (dict(features=_F, positions=_P.to("meta"), window=0.1), ValueError, "positions is on meta"),
])
def test_positions_bad_input_raises_clearly(kwargs, error, match):
    with pytest.raises(error, match=match):
        supcon_loss(**kwargs)
