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
    assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-6)
    assert_close(grad, expected_grad, atol=1e-6)


def _awkward(n, d, n_labels, n_groups, seed, contiguous):
    """Float32 features, labels and groups with every kind of anchor: anchor 0 alone in its
    group (LSE = -inf, no positive), anchor 5 with a label of its own (a denominator but no
    positive), large label values; the groups stay sorted when ``contiguous``."""
    features, labels, groups = make(n, d, n_labels, n_groups, dtype=torch.float32, seed=seed,
                                    contiguous_groups=contiguous)
    groups[0] = -1
    labels = labels * 10**12
    labels[5] = 7
    return features, labels, groups


@pytest.mark.triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("contiguous", [True, False])
def test_fused_forward_counts_lse_and_anchor_losses(dtype, contiguous, triton_device):
    """The forward kernel's three outputs against independent oracles on the same (rounded)
    z: CNT_i = |P(i)| as _positive_sums counts it, LSE_i as the chunked torch path computes
    it (-inf for the anchor alone), LOSS_i as the dense reference's per-anchor loss (0 where
    there is no positive).  float16 runs the 128-row forward tile (four table rows a
    program), float32 the 64-row one."""
    from supercl.kernels.triton import supcon_loss as kernels

    features, labels, groups = _awkward(300, 24, 12, 7, seed=30, contiguous=contiguous)
    z = torch.nn.functional.normalize(features, dim=1).to(dtype)
    x, y, g = on(triton_device, z, labels, groups)
    lse, loss, count = kernels.supcon_forward(x, y, g, kernels._table(g, 300, x.device), 5.0,
                                              0.7, 5.0)
    z64 = z.double()
    _, want_count = supcon_module._positive_sums(z64, labels, groups)
    assert count.dtype == torch.int32 and torch.equal(count.cpu().long(), want_count)
    assert want_count[0] == 0 and want_count[5] == 0 and (want_count > 0).sum() > 250
    want_lse = supcon_module._lse_torch(z64, groups, 5.0)
    assert lse[0].item() == float("-inf")
    assert_close(lse.cpu(), want_lse.float(), rtol=2e-6, atol=1e-5)
    want = supcon_loss_reference(z64, labels, 0.2, base_temperature=0.2 / 0.7, groups=groups,
                                 normalize=False, reduction="none")
    assert_close(loss.cpu(), want.float(), rtol=1e-5, atol=1e-6)
    assert loss[0].item() == 0.0 and loss[5].item() == 0.0


@pytest.mark.triton
@pytest.mark.parametrize("contiguous", [True, False])
def test_fused_backward_matches_float64_autograd(contiguous, triton_device, monkeypatch):
    """One custom op, one kernel each way: the gradient of a weighted sum of the per-anchor
    losses (every anchor's upstream gradient different) and of the mean (a stride-0
    upstream gradient) against float64 autograd through the dense form; the Triton path no
    longer goes through _positive_sums."""
    def not_on_this_path(*args):
        raise AssertionError("_positive_sums on the fused Triton path")

    monkeypatch.setattr(supcon_module, "_positive_sums", not_on_this_path)
    features, labels, groups = _awkward(260, 40, 9, 5, seed=31, contiguous=contiguous)
    weights = torch.rand(260, generator=torch.Generator().manual_seed(32), dtype=torch.float64)
    f64 = features.double().requires_grad_()
    for reduction in ("none", "mean"):
        leaf = features.clone().requires_grad_()
        x, y, g, w = on(triton_device, leaf, labels, groups, weights)
        got = supcon_loss(x, y, 0.15, base_temperature=0.1, groups=g, reduction=reduction,
                          backend="triton")
        want = supcon_loss_reference(f64, labels, 0.15, base_temperature=0.1, groups=groups,
                                     reduction=reduction)
        if reduction == "none":
            assert got[0].item() == 0.0 and got[5].item() == 0.0
            got, want = (got * w.float()).sum(), (want * weights).sum()
        assert_close(got.detach().cpu(), want, rtol=1e-5, atol=1e-6)
        (grad,) = torch.autograd.grad(got, leaf)
        (want_grad,) = torch.autograd.grad(want, f64)
        assert torch.isfinite(grad).all()
        assert_close(grad, want_grad, atol=5e-6 * want_grad.abs().max().item())


@pytest.mark.triton
def test_fused_path_takes_any_integer_dtype_and_strides(triton_device):
    """Labels and groups reach the kernels as they are: int32 / uint8 and strided views give
    the loss and gradient of contiguous int64 ones (no conversion kernels on the way)."""
    features, labels, groups = make(150, 16, 5, 3, dtype=torch.float32, seed=37)
    x, y, g = on(triton_device, features, labels, groups)
    expected = supcon_loss(x, y, 0.2, groups=g, reduction="none", backend="triton")
    wide_y = torch.zeros(300, dtype=torch.int32, device=x.device)
    wide_g = torch.zeros(300, dtype=torch.uint8, device=x.device)
    wide_y[::2], wide_g[1::2] = y, g
    for y2, g2 in ((y.int(), g.to(torch.uint8)), (wide_y[::2], wide_g[1::2])):
        leaf = x.clone().requires_grad_()
        got = supcon_loss(leaf, y2, 0.2, groups=g2, reduction="none", backend="triton")
        assert torch.equal(got, expected)
        (grad,) = torch.autograd.grad(got.sum(), leaf)
        leaf64 = x.clone().requires_grad_()
        (want,) = torch.autograd.grad(
            supcon_loss(leaf64, y, 0.2, groups=g, reduction="none", backend="triton").sum(),
            leaf64)
        assert torch.equal(grad, want)


@pytest.mark.triton
@pytest.mark.parametrize("with_groups", [True, False])
def test_fused_custom_op_registered_for_torch_library(with_groups, triton_device):
    """supercl::supcon_anchor_loss passes torch.library.opcheck (schema, fake kernel,
    autograd registration, AOT dispatch) on the kernels themselves."""
    from supercl.kernels.triton import supcon_loss as kernels

    features, labels, groups = make(40, 8, 3, 2, dtype=torch.float32, seed=33)
    z = torch.nn.functional.normalize(features, dim=1).requires_grad_()
    x, y, g = on(triton_device, z, labels, groups)
    x = x.detach().requires_grad_()
    if not with_groups:
        g = y.new_empty(0)
    tiles = kernels._table(g if with_groups else None, 40, x.device)
    torch.library.opcheck(torch.ops.supercl.supcon_anchor_loss, (x, y, g, tiles, 5.0, 1.0, 5.0))


@pytest.mark.triton
def test_fused_path_torch_compile_fullgraph(triton_device):
    """The Triton path (tile table, custom op, reductions) traces whole under torch.compile
    and gives eager's value and gradient."""
    features, labels, groups = make(70, 8, 3, 2, dtype=torch.float32, seed=34)
    x, y, g = on(triton_device, features, labels, groups)

    def objective(f):
        return (supcon_loss(f, y, 0.2, groups=g, backend="triton")
                + supcon_loss(f, y, 0.5, backend="triton"))

    compiled = torch.compile(objective, fullgraph=True, backend="aot_eager")
    f1 = x.clone().requires_grad_()
    f2 = x.clone().requires_grad_()
    eager, compiled_value = objective(f1), compiled(f2)
    assert_close(compiled_value, eager)
    assert_close(torch.autograd.grad(compiled_value, f2)[0], torch.autograd.grad(eager, f1)[0])


@pytest.mark.triton
@pytest.mark.parametrize("n, d, n_groups, normalize, temperature", [
    (1, 100, None, True, 0.2),
    (2, 3, None, False, 0.5),
    (63, 3, None, True, 0.1),
    (65, 100, 3, False, 0.3),
    (217, 100, 5, True, 0.02),  # scale 50: past the fixed-maximum limit, the online one
    (130, 256, 2, True, 0.1),   # BLOCK_D = 256, still one pass over D
])
def test_triton_odd_sizes_and_widths(n, d, n_groups, normalize, temperature, triton_device):
    """N around the 64/128 tile edges, D not a power of two: float32 within 1e-5 relative of
    the dense form in float64, gradients to within float32's own error of it."""
    features, labels, groups = make(n, d, 4, n_groups, dtype=torch.float32, seed=n + d)
    features = (features * 0.2).requires_grad_()
    x, y, g = on(triton_device, features, labels, groups)
    kwargs = dict(groups=g, normalize=normalize, reduction="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = supcon_loss(x, y, temperature, backend="triton", **kwargs).cpu()
    expected = supcon_loss_reference(features.double(), labels, temperature, groups=groups,
                                     normalize=normalize, reduction="none")
    assert_close(got, expected, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(got.sum(), features)
    (expected_grad,) = torch.autograd.grad(expected.sum(), features)
    # Gradients of a sum over anchors reach ~50 here, and the dense form in float32 is itself
    # off by ~1e-6 of the largest (measured: 4e-5 at N=63, D=3): relative to that scale.
    assert_close(grad, expected_grad, atol=5e-6 * expected_grad.abs().max().item())


@pytest.mark.triton
def test_triton_non_contiguous_features(triton_device):
    """Strided z reaches the kernels as it is (normalize=False: no copy on the way): a
    column-strided view and a transposed one give the contiguous values and gradients."""
    features, labels, groups = make(70, 40, 3, 2, dtype=torch.float32, seed=14)
    features = features * 0.2
    x, y, g = on(triton_device, features, labels, groups)
    wide = torch.zeros(70, 80, device=x.device)
    wide[:, ::2] = x
    views = [wide[:, ::2], x.T.contiguous().T]
    expected = supcon_loss(x, y, 0.2, groups=g, normalize=False, backend="triton")
    x_leaf = x.clone().requires_grad_()
    (expected_grad,) = torch.autograd.grad(
        supcon_loss(x_leaf, y, 0.2, groups=g, normalize=False, backend="triton"), x_leaf)
    for view in views:
        assert not view.is_contiguous()
        leaf = view.detach().requires_grad_()
        got = supcon_loss(leaf, y, 0.2, groups=g, normalize=False, backend="triton")
        (grad,) = torch.autograd.grad(got, leaf)
        assert_close(got, expected)
        assert_close(grad, expected_grad)


@pytest.mark.triton
@pytest.mark.parametrize("scale", [10.0, 25.0, 40.0])
def test_fixed_maximum_is_exact_up_to_its_limit(scale, triton_device):
    """With unit-norm z the forward takes m = scale instead of the online maximum: the same
    LSE as the online kernel and as float64, down to the smallest possible score (-scale:
    antipodal partners, exp(-2 scale) still a normal float32 at the limit 40)."""
    from supercl.kernels.triton import supcon_loss as kernels

    assert kernels._FIXED_MAX_LIMIT == 40.0
    g = torch.Generator().manual_seed(15)
    z = torch.nn.functional.normalize(torch.randn(150, 24, generator=g), dim=1)
    z[1] = -z[0]  # anchors 0 and 1 in a group of their own: LSE = -scale exactly
    groups = torch.cat([torch.zeros(2), torch.ones(148)]).long()
    z, groups = on(triton_device, z, groups)
    fixed = kernels.supcon_lse(z, groups, scale, bound=scale).cpu()
    online = kernels.supcon_lse(z, groups, scale, bound=0.0).cpu()
    expected = supcon_module._lse_torch(z.cpu().double(), groups.cpu(), scale)
    assert torch.isfinite(fixed).all()
    # rtol 2e-6: float32 on the interpreter; on a GPU 3xTF32 scores (<= 3 * 2^-22 * scale off)
    # and the approximate ex2/lg2 of the MUFU.
    assert_close(fixed, expected.float(), rtol=2e-6, atol=1e-5)
    assert_close(fixed, online, rtol=2e-6, atol=1e-5)
    assert_close(fixed[:2], torch.full((2,), -scale), rtol=2e-6, atol=0)


@pytest.mark.triton
def test_anchor_alone_gives_minus_infinity_both_ways(triton_device):
    """The LSE convention: -inf for an anchor alone in its group, with the fixed maximum
    and with the online one."""
    from supercl.kernels.triton import supcon_loss as kernels

    g = torch.Generator().manual_seed(16)
    z = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    groups = torch.tensor([0, 1, 1, 2, 2])
    z, groups = on(triton_device, z, groups)
    for bound in (10.0, 0.0):
        lse = kernels.supcon_lse(z, groups, 10.0, bound=bound).cpu()
        assert lse[0] == float("-inf") and torch.isfinite(lse[1:]).all()


@pytest.mark.parametrize("n, block_m, block_n", [(1, 128, 64), (217, 64, 64), (1000, 128, 64),
                                                 (999, 64, 32), (1, 32, 32), (1000, 32, 32)])
@pytest.mark.parametrize("contiguous", [True, False])
def test_tile_ranges_cover_every_shared_group_tile(n, block_m, block_n, contiguous):
    """Every (row block, column tile) pair that holds two samples of one group lies inside
    the row block's [first, end); with contiguous groups the range is exactly the span of
    such tiles (nothing wasted)."""
    pytest.importorskip("triton")
    from supercl.kernels.triton.supcon_loss import tile_ranges

    _, _, groups = make(n, 1, 1, max(1, n // 90), contiguous_groups=contiguous, seed=n)
    ranges = tile_ranges(groups, n, block_m, block_n, torch.device("cpu"))
    rows = torch.arange(n) // block_m
    cols = torch.arange(n) // block_n
    shares = torch.zeros(ranges.shape[0], -(-n // block_n), dtype=torch.bool)
    same = groups[:, None] == groups[None, :]
    shares[rows[:, None].expand(n, n)[same], cols[None, :].expand(n, n)[same]] = True
    for r in range(ranges.shape[0]):
        hit = shares[r].nonzero().flatten()
        first, end = ranges[r].tolist()
        assert first <= hit.min() and hit.max() < end
        if contiguous:
            assert (first, end) == (hit.min().item(), hit.max().item() + 1)
    assert tile_ranges(None, n, block_m, block_n, torch.device("cpu")).tolist() == \
        [[0, -(-n // block_n)]] * -(-n // block_m)


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
        (torch.randn(9, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.int64), 2.0, 2.0,
         "torch"),
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
def test_float32_products_follow_torch_matmul_precision(triton_device, monkeypatch):
    """float32 features take 3xTF32 products (fp32 accuracy class) under "highest" (torch's
    default) and TF32 only under "high"/"medium", as torch's own matmuls do; float64 is IEEE,
    half types go to the tensor cores in their dtype.  The precision the kernels are LAUNCHED
    with is recorded, not only what the config function says."""
    from supercl.kernels.triton import supcon_loss as kernels

    launched = []

    class Spy:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launched.append(kwargs["PRECISION"])
                return self.kernel[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(kernels, "_lse_forward_kernel", Spy(kernels._lse_forward_kernel))
    monkeypatch.setattr(kernels, "_lse_backward_kernel", Spy(kernels._lse_backward_kernel))
    before = torch.get_float32_matmul_precision()
    features, labels, groups = make(150, 32, 6, 3, dtype=torch.float32, seed=12)
    x, y, g = on(triton_device, features, labels, groups)
    reference = supcon_loss_reference(features.double(), labels, 0.1, groups=groups)
    try:
        for setting, precision in (("highest", "tf32x3"), ("high", "tf32"), ("medium", "tf32")):
            torch.set_float32_matmul_precision(setting)
            assert kernels.dot_precision(torch.float32) == precision
            assert kernels.dot_precision(torch.float64) == "ieee"
            for half in (torch.float16, torch.bfloat16):
                assert kernels.dot_precision(half) == "tf32"  # ignored by tl.dot for 16-bit
            for direction in ("fwd", "bwd"):
                assert kernels.config(torch.float32, 32, direction)[-1] == precision
            launched.clear()
            leaf = x.clone().requires_grad_()
            got = supcon_loss(leaf, y, 0.1, groups=g, backend="triton")
            got.backward()
            assert launched == [precision, precision], setting
            # The interpreter multiplies in fp32 whatever the precision; on a GPU TF32 keeps 10
            # mantissa bits (the loss moves by ~1e-3 at most at this size).
            exact = precision != "tf32" or not x.is_cuda
            assert_close(got.detach().cpu(), reference, rtol=1e-5 if exact else 1e-3,
                         atol=1e-6 if exact else 5e-3)
    finally:
        torch.set_float32_matmul_precision(before)
    assert torch.get_float32_matmul_precision() == before


def _round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 -> the nearest TF32 value (10 explicit mantissa bits, ties away from zero as
    cvt.rna.tf32.f32 does), kept in float32."""
    bits = x.view(torch.int32)
    bits = (bits + 0x1000) & ~0x1FFF
    return bits.view(torch.float32)


def test_3xtf32_split_keeps_float32_accuracy():
    """The argument for 3xTF32 under "highest" (the interpreter ignores tl.dot's precision, so
    this emulates it): with z = hi + lo split into TF32 parts, hi.hi + hi.lo + lo.hi
    accumulated in float32 gives scores within 3 * 2^-22 |z_i||z_j| * scale (+ fp32 rounding)
    of float64, an LSE within 1e-5 relative, and an error no larger than a few times that of
    IEEE float32 products -- while plain TF32 is ~1000x worse."""
    g = torch.Generator().manual_seed(17)
    z = torch.nn.functional.normalize(torch.randn(512, 128, generator=g), dim=1)
    scale = 10.0
    hi = _round_to_tf32(z)
    lo = _round_to_tf32(z - hi)
    assert ((z - hi).abs() <= 2.0**-11 * z.abs()).all()
    assert ((z - hi - lo).abs() <= 2.0**-22 * z.abs()).all()
    x3 = (hi @ hi.T + hi @ lo.T + lo @ hi.T) * scale
    tf32 = (hi @ hi.T) * scale
    ieee = (z @ z.T) * scale
    exact = (z.double() @ z.double().T) * scale
    err3 = (x3.double() - exact).abs().max().item()
    assert err3 <= (3 * 2.0**-22 + 128 * 2.0**-24) * scale
    assert err3 <= 4 * (ieee.double() - exact).abs().max().item() + 1e-7
    assert (tf32.double() - exact).abs().max().item() > 100 * err3
    mask = ~torch.eye(512, dtype=torch.bool)
    lse3 = torch.logsumexp(x3.masked_fill(~mask, float("-inf")).double(), 1)
    lse = torch.logsumexp(exact.masked_fill(~mask, float("-inf")), 1)
    assert ((lse3 - lse).abs() <= 1e-5 * lse.abs()).all()


_COMPILE_SUPCON_FOR_GPU = r"""
import re
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from supercl.kernels.triton import supcon_loss as k

target = GPUTarget("cuda", 90, 128)
pointers = {"Z": "*{z}", "Y": "*i64", "G": "*i64", "TILES": "*i32", "LSE": "*fp32",
            "LOSS": "*fp32", "CNT": "*i32", "GRAD": "*fp32", "DZ": "*{z}"}
floats = {"scale", "scale2", "bound2", "ratio"}
dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
before = torch.get_float32_matmul_precision()
seen = set()
try:
    for z, matmul in (("fp32", "highest"), ("fp32", "high"), ("bf16", "highest"),
                      ("fp16", "highest"), ("fp32", "ieee")):
        # "ieee": the CUDA-core alternative for "highest" (k._HIGHEST_PRECISION)
        k._HIGHEST_PRECISION = "ieee" if matmul == "ieee" else "tf32x3"
        torch.set_float32_matmul_precision("highest" if matmul == "ieee" else matmul)
        for d in (128, 256, 300):
            for kernel, direction in ((k._lse_forward_kernel, "fwd"), (k._lse_backward_kernel, "bwd")):
                bm, bn, bd, one_d, warps, stages, precision = k.config(dtypes[z], d, direction)
                # D = 128 as benchmarked (labels, no groups, unit-norm: the fixed maximum);
                # the other widths with groups and the online maximum, D = 300 without labels
                # (the positions path's LSE alone)
                consts = dict(HAS_GROUPS=d != 128, HAS_LABELS=d != 300, PRECISION=precision,
                              ONE_D=one_d, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, TILE=k.TABLE_TILE)
                if direction == "fwd":
                    consts["FIXED_MAX"] = d == 128
                names = kernel.arg_names
                signature = {n: pointers[n].format(z=z) if n in pointers
                             else "constexpr" if n in consts else "fp32" if n in floats else "i32"
                             for n in names}
                src = ASTSource(kernel, signature, {(names.index(n),): v for n, v in consts.items()})
                compiled = triton.compile(src, target=target,
                                          options=dict(num_warps=warps, num_stages=stages))
                ptx = compiled.asm["ptx"]
                assert "cubin" in compiled.asm
                if precision != "ieee":
                    assert "mma" in ptx, (kernel.__name__, z, d)  # tensor cores
                atomics = set(re.findall(r"\b(?:red|atom)\.[\w.]*", ptx))
                assert not atomics, (kernel.__name__, atomics)  # deterministic
                # an H100/H200 block may take at most 227 KB of shared memory
                assert compiled.metadata.shared <= 227 * 1024, (kernel.__name__, z, d,
                                                                compiled.metadata.shared)
                seen.add((z, precision))
finally:
    torch.set_float32_matmul_precision(before)
    k._HIGHEST_PRECISION = "tf32x3"
assert {("fp32", "tf32x3"), ("fp32", "tf32"), ("bf16", "tf32"), ("fp16", "tf32"),
        ("fp32", "ieee")} <= seen, seen
print("ok")
"""


@pytest.mark.slow
def test_kernels_compile_for_a_gpu():
    """Without a GPU, Triton still compiles the SupCon kernels for sm_90 with the launchers'
    own configurations (supcon_loss.config) for bf16, fp16, fp32 under TF32 and fp32 under
    "highest" (3xTF32), at D = 128, 256 (one pass over D) and 300 (the D loop): types and
    layouts that the interpreter does not check, tensor-core products, shared memory within
    an H100/H200 block's 227 KB, and no atomics anywhere (the backward is one deterministic
    pass)."""
    triton_compile_for_gpu(_COMPILE_SUPCON_FOR_GPU)


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_triton_gradient_against_float64(dtype):
    """On the GPU: the one-pass backward's gradient against float64 autograd through the
    dense form -- float32 (3xTF32 under "highest") within 1e-6, bf16 within twice torch's
    own bf16 error."""
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


def test_normalize_rows_matches_functional_normalize():
    """supcon_loss's row normalisation (a hand-written backward of 6 kernels): float64
    gradcheck on ordinary rows, and the same value and gradient as autograd through
    torch.nn.functional.normalize on every kind of row, a zero row and one shorter than its
    eps (divided by the constant eps, no projection) included."""
    g = torch.Generator().manual_seed(35)
    x = torch.randn(9, 5, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(supcon_module._normalize_rows, (x.requires_grad_(),))
    x = x.detach().clone()
    x[2] = 0.0
    x[4] *= 1e-14
    upstream = torch.randn(9, 5, generator=g, dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        a = x.to(dtype).requires_grad_()
        b = x.to(dtype).requires_grad_()
        got = supcon_module._normalize_rows(a)
        want = torch.nn.functional.normalize(b, dim=1, eps=1e-12)
        assert_close(got, want)
        (ga,) = torch.autograd.grad(got, a, upstream.to(dtype))
        (gb,) = torch.autograd.grad(want, b, upstream.to(dtype))
        assert_close(ga, gb, rtol=1e-12 if dtype == torch.float64 else 1e-5, atol=0)
        assert torch.equal(ga[2], upstream[2].to(dtype) / 1e-12)


@cuda
@pytest.mark.parametrize("with_groups", [True, False])
def test_cuda_call_does_not_synchronise(with_groups, monkeypatch):
    """After the first call (whose check for a batch without positives synchronises once), a
    forward + backward on the fused Triton path makes no synchronising torch call (torch
    raises in sync-debug mode "error"): no isfinite check on GPU tensors, tile table and
    reductions on the device.  Non-finite GPU features give a NaN loss, as documented."""
    features, labels, groups = make(1000, 64, 20, 4, dtype=torch.float32, seed=36)
    x, y, g = on(torch.device("cuda"), features, labels, groups if with_groups else None)
    x.requires_grad_()
    supcon_loss(x, y, 0.1, groups=g).backward()  # compiles the kernels, warns-check once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = supcon_loss(x, y, 0.1, groups=g)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert_close(loss.detach().cpu(), supcon_loss(features, labels, 0.1, groups=groups
                                                  if with_groups else None), atol=1e-5)
    bad = x.detach().clone()
    bad[3, 0] = float("nan")
    assert torch.isnan(supcon_loss(bad, y, 0.1, groups=g)).item()


def test_torch_path_normalises_like_autograd_to_the_last_bit():
    """The CPU (torch) path keeps F.normalize and its autograd backward: the loss and the
    gradient equal those of normalising first and calling with normalize=False, bit for bit
    (CPU training runs, and the README's figures made with them, do not move)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(67, 9, generator=g, dtype=torch.float64).float()
    labels = torch.randint(0, 5, (67,), generator=g)
    a = x.clone().requires_grad_()
    loss_a = supcon_loss(a, labels, 0.1, backend="torch")
    loss_a.backward()
    b = x.clone().requires_grad_()
    loss_b = supcon_loss(torch.nn.functional.normalize(b, dim=1, eps=1e-12), labels, 0.1,
                         normalize=False, backend="torch")
    loss_b.backward()
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(a.grad, b.grad)
