"""supercl.ops.graph_components and knn_weak_labels against scipy.sparse.csgraph (the oracle):
exact equality of the labels, numbering included, for the torch backend and the Triton kernels
(in Triton's interpreter on CPU-only machines)."""

import importlib
import importlib.util
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import TRITON_DEVICE
from supercl.ops.graph_components import graph_components, knn_weak_labels
from supercl.testing import graph_components_reference, knn_weak_labels_reference

pytest.importorskip("scipy.sparse.csgraph")
gc_module = importlib.import_module("supercl.ops.graph_components")
# The Triton backend runs on conftest's triton_device: compiled on CUDA tensors where there is
# a GPU, in Triton's interpreter on CPU tensors where TRITON_INTERPRET=1.
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.triton)]
BACKENDS_HERE = ["torch"] + (["triton"] if TRITON_DEVICE else [])  # plain names, for loops
DEVICE_OF = {"torch": "cpu", "triton": TRITON_DEVICE}


def check(neighbors, backend="torch"):
    """graph_components == scipy's labels, exactly; returns the labels as numpy.  A tensor
    ``neighbors`` is moved to the device that ``backend`` runs on here."""
    if isinstance(neighbors, torch.Tensor):
        neighbors = neighbors.to(DEVICE_OF[backend])
    got = graph_components(neighbors, backend=backend)
    expected = graph_components_reference(neighbors)
    assert isinstance(got, (torch.Tensor, np.ndarray))
    assert got.dtype in (torch.int64, np.int64)
    got = got.cpu().numpy() if isinstance(got, torch.Tensor) else got
    np.testing.assert_array_equal(got, expected)
    return got


# --- graphs -----------------------------------------------------------------------------------


def chain(n, k, rng):  # i -> i + 1, k times; the last node loops on itself
    return np.repeat(np.minimum(np.arange(n) + 1, n - 1)[:, None], k, axis=1)


def reverse_chain(n, k, rng):  # i -> i - 1: unions arrive from the far end
    return np.repeat(np.maximum(np.arange(n) - 1, 0)[:, None], k, axis=1)


def shuffled_path(n, k, rng):  # one path through a random permutation, as deep as it gets
    order = rng.permutation(n)
    table = np.empty((n, k), dtype=np.int64)
    table[order[:-1]] = order[1:, None]
    table[order[-1]] = order[-1]
    return table


def star_first(n, k, rng):
    return np.zeros((n, k), dtype=np.int64)


def star_last(n, k, rng):  # the centre is the largest node
    return np.full((n, k), n - 1, dtype=np.int64)


def self_loops(n, k, rng):
    return np.repeat(np.arange(n)[:, None], k, axis=1)


def two_cliques(n, k, rng):  # even and odd nodes, interleaved, each group a ring with chords
    m = n - n % 2
    table = np.repeat(np.arange(n)[:, None], k, axis=1)
    if m:
        table[:m] = (np.arange(m)[:, None] + 2 * np.arange(1, k + 1)[None, :]) % m
    return table


def random_graph(n, k, rng):
    return rng.integers(0, n, size=(n, k))


def local_random(n, k, rng):  # short random links: many components of various sizes
    return np.clip(np.arange(n)[:, None] + rng.integers(-3, 4, size=(n, k)), 0, n - 1)


GRAPHS = [chain, reverse_chain, shuffled_path, star_first, star_last, self_loops, two_cliques,
          random_graph, local_random]


# --- graph_components -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [1, 2, 5, 217, 1000])
@pytest.mark.parametrize("graph", GRAPHS, ids=lambda g: g.__name__)
def test_structured_graphs_match_scipy(graph, n, backend):
    rng = np.random.default_rng(n)
    for k in range(1, 5):
        table = graph(n, k, rng)
        got = check(torch.from_numpy(table), backend)
        if graph is self_loops:
            np.testing.assert_array_equal(got, np.arange(n))
        if graph in (chain, reverse_chain, shuffled_path, star_first, star_last):
            assert (got == 0).all()
        if graph is two_cliques and n >= 4:
            assert got.max() == (1 if n % 2 == 0 else 2)
            assert got[0] == 0 and got[1] == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_random_graphs_match_scipy(backend):
    rng = np.random.default_rng(7)
    for _ in range(150 if backend == "torch" else 25):
        n = int(rng.integers(1, 400))
        k = int(rng.integers(1, 5))
        # Sparse tables give many components; dense ones a few large ones.
        span = int(rng.integers(1, n + 1))
        table = (np.arange(n)[:, None] + rng.integers(0, span, size=(n, k))) % n
        check(torch.from_numpy(table), backend)


@st.composite
def neighbor_tables(draw):
    n = draw(st.integers(1, 40))
    k = draw(st.integers(0, 3))
    values = draw(st.lists(st.integers(0, n - 1), min_size=n * k, max_size=n * k))
    return np.asarray(values, dtype=np.int64).reshape(n, k)


@given(table=neighbor_tables(), backend=st.sampled_from(BACKENDS_HERE))
def test_property_matches_scipy(table, backend):
    got = check(torch.from_numpy(table), backend)
    # scipy's numbering: component ids appear in order of their smallest node.
    first_seen = np.unique(got, return_index=True)[1]
    assert (np.diff(first_seen) > 0).all() and got[0] == 0


@pytest.mark.triton
@pytest.mark.parametrize("block", [2, 16])
def test_triton_kernel_with_small_blocks(block, triton_device):
    """Few edges per program interleave the unions differently from one big block (the
    interpreter runs the programs one after the other, the lanes of one block in lock-step)."""
    from supercl.kernels.triton.graph_components import graph_components_roots

    rng = np.random.default_rng(block)
    for graph in (random_graph, shuffled_path, star_last, two_cliques, local_random):
        table = graph(31 if block < 8 else 97, 2, rng)
        labels = graph_components_reference(table)
        smallest = np.array([np.flatnonzero(labels == c).min() for c in range(labels.max() + 1)])
        roots = graph_components_roots(torch.from_numpy(table).to(triton_device), block=block)
        assert roots.dtype == torch.int32
        np.testing.assert_array_equal(roots.cpu().numpy(), smallest[labels])


def test_torch_fixed_round_count_suffices():
    """The CUDA form of the torch backend runs exactly ceil(log2 N) rounds, no convergence
    check: it must be exact on every graph (the docstring's proof), adversarial ones included.
    Exhaustive over all tables of N <= 4 nodes and K = 1 (N <= 6 was checked once, 116k
    tables, too slow for every run), then random small and structured graphs."""
    def smallest_reference(table):
        labels = graph_components_reference(table)
        first = np.full(labels.max() + 1, len(labels))
        np.minimum.at(first, labels, np.arange(len(labels)))
        return first[labels]

    tables = [np.array(flat).reshape(n, 1)
              for n in range(1, 5) for flat in itertools.product(range(n), repeat=n)]
    rng = np.random.default_rng(3)
    tables += [rng.integers(0, n, size=(n, 1)) for n in rng.integers(5, 12, size=400)]
    for table in tables:
        got = gc_module._smallest_member_torch(torch.from_numpy(table), early_exit=False)
        np.testing.assert_array_equal(got.numpy(), smallest_reference(table))
    for n in (6, 17, 64, 255, 256, 257, 1000):
        for graph in GRAPHS:
            table = graph(n, 2, rng)
            got = gc_module._smallest_member_torch(torch.from_numpy(table), early_exit=False)
            np.testing.assert_array_equal(got.numpy(), smallest_reference(table))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
def test_dtypes_and_strides(backend, dtype, backend_device):
    rng = np.random.default_rng(11)
    table = rng.integers(0, 200, size=(3, 200))
    transposed = torch.from_numpy(table).to(dtype).to(backend_device).T  # (200, 3), strided
    assert not transposed.is_contiguous()
    got = graph_components(transposed, backend=backend)
    assert got.dtype == torch.int64 and got.shape == (200,)
    np.testing.assert_array_equal(got.cpu().numpy(), graph_components_reference(table.T))
    sliced = torch.from_numpy(rng.integers(0, 50, size=(50, 6))).to(dtype)[:, ::2]
    check(sliced, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_numpy_in_numpy_out(backend, backend_device):
    if backend_device.type != "cpu":
        pytest.skip("numpy input is host memory: the Triton backend takes it only under "
                    "Triton's interpreter (on a GPU machine, pass CUDA tensors)")
    table = np.array([[3], [4], [0], [3], [1]])
    got = graph_components(table, backend=backend)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, [0, 1, 0, 0, 1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_edgeless(backend, backend_device):
    on = dict(device=backend_device)
    for shape in [(0, 3), (0, 0)]:
        got = graph_components(torch.empty(shape, dtype=torch.int64, **on), backend=backend)
        assert got.dtype == torch.int64 and got.shape == (0,)
    got = graph_components(torch.empty(7, 0, dtype=torch.int32, **on), backend=backend)
    assert torch.equal(got.cpu(), torch.arange(7))
    got = graph_components(torch.zeros(1, 1, dtype=torch.int64, **on), backend=backend)
    assert torch.equal(got.cpu(), torch.zeros(1, dtype=torch.int64))


def test_backends_agree_and_default_is_torch_on_cpu(monkeypatch):
    monkeypatch.delenv("SUPERCL_BACKEND", raising=False)
    table = torch.from_numpy(np.random.default_rng(5).integers(0, 300, size=(300, 2)))
    expected = graph_components(table, backend="torch")
    assert torch.equal(graph_components(table), expected)
    monkeypatch.setenv("SUPERCL_BACKEND", "cpu")  # maps to torch
    assert torch.equal(graph_components(table), expected)


# --- knn_weak_labels --------------------------------------------------------------------------


def check_knn(embeddings, k=1, pair_views=False, backend="torch"):
    """knn_weak_labels on the device that ``backend`` runs on here == the reference; the
    labels come back on the CPU."""
    got = knn_weak_labels(embeddings.to(DEVICE_OF[backend]), k, pair_views=pair_views,
                          backend=backend).cpu()
    assert got.dtype == torch.int64 and got.shape == (embeddings.shape[0],)
    np.testing.assert_array_equal(got.numpy(), knn_weak_labels_reference(embeddings, k, pair_views))
    return got


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pair_views", [False, True])
@pytest.mark.parametrize("n", [2, 6, 64, 218])
def test_knn_matches_reference(n, pair_views, backend):
    gen = torch.Generator().manual_seed(n)
    for k in (1, 2, 4):
        if k > n - 1:
            continue
        # Clustered embeddings, so that there are several components.
        centres = torch.randn(max(1, n // 8), 16, generator=gen, dtype=torch.float64)
        which = torch.randint(0, centres.shape[0], (n,), generator=gen)
        embeddings = centres[which] + 0.3 * torch.randn(n, 16, generator=gen, dtype=torch.float64)
        check_knn(embeddings, k, pair_views, backend)


def test_knn_float32_and_half():
    gen = torch.Generator().manual_seed(0)
    embeddings = torch.randn(100, 8, generator=gen)
    for k in (1, 3):
        check_knn(embeddings, k)
    # half types are compared in float32: exactly what the float32 input gives
    for dtype in (torch.float16, torch.bfloat16):
        low = embeddings.to(dtype)
        assert torch.equal(knn_weak_labels(low, 2), knn_weak_labels(low.float(), 2))


def test_knn_ties_go_to_the_smaller_index():
    # Rows 0, 3, 5 point the same way (5 = 4 x row 0: scaling by powers of 2 is exact), as do
    # rows 1 and 4; rows 6 and 7 are zero (similarity exactly 0 to everything).
    base = torch.tensor([[1.0, 2.0, 0.5], [-1.0, 0.25, 3.0], [0.3, -2.0, 1.0]], dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    embeddings = torch.stack([base[0], base[1], base[2], base[0], base[1], 4 * base[0], zero, zero])
    neighbors = gc_module._knn(embeddings, 2)
    assert neighbors[0].tolist() == [3, 5]
    assert neighbors[3].tolist() == [0, 5]
    assert neighbors[5].tolist() == [0, 3]
    assert neighbors[1, 0].item() == 4 and neighbors[4, 0].item() == 1
    assert neighbors[6, :1].tolist() == [0] and neighbors[7, :1].tolist() == [0]
    for k in (1, 2, 3):
        for pair_views in (False, True):
            check_knn(embeddings, k, pair_views)


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_all_equal_embeddings_form_one_component(backend):
    for dtype in (torch.float32, torch.float64):
        embeddings = torch.ones(37, 5, dtype=dtype)
        neighbors = gc_module._knn(embeddings, 3)
        assert neighbors[0].tolist() == [1, 2, 3]
        # row i > 0: the three smallest indices other than i
        first = torch.tensor([0, 1, 2])
        assert (neighbors[1:] == first + (first >= torch.arange(1, 37)[:, None])).all()
        assert (check_knn(embeddings, 1, backend=backend) == 0).all()
        assert (check_knn(torch.zeros(9, 4, dtype=dtype), 1, backend=backend) == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_pair_views_join_the_two_views(backend):
    gen = torch.Generator().manual_seed(1)
    for batch in (1, 3, 32, 100):
        # The two views are unrelated noise: without pair_views they rarely meet.
        embeddings = torch.randn(2 * batch, 32, generator=gen, dtype=torch.float64)
        labels = check_knn(embeddings, 1, pair_views=True, backend=backend)
        assert torch.equal(labels[:batch], labels[batch:])
        plain = knn_weak_labels(embeddings.to(DEVICE_OF[backend]), 1, backend=backend).cpu()
        # pair_views only adds edges: it merges components, never splits them
        for component in plain.unique():
            assert labels[plain == component].unique().numel() == 1


def test_knn_small_and_empty():
    assert torch.equal(knn_weak_labels(torch.randn(1, 4), 1), torch.zeros(1, dtype=torch.int64))
    assert torch.equal(knn_weak_labels(torch.randn(1, 4), 5), torch.zeros(1, dtype=torch.int64))
    got = knn_weak_labels(torch.empty(0, 4), 1)
    assert got.dtype == torch.int64 and got.shape == (0,)
    assert torch.equal(knn_weak_labels(torch.empty(0, 4), 1, pair_views=True), got)
    assert torch.equal(knn_weak_labels(torch.randn(2, 3), 1), torch.zeros(2, dtype=torch.int64))
    got = knn_weak_labels(np.eye(4), 3)
    assert isinstance(got, np.ndarray) and (got == 0).all()


def test_knn_does_not_need_grad():
    embeddings = torch.randn(10, 4, requires_grad=True)
    labels = knn_weak_labels(embeddings, 2)
    assert labels.dtype == torch.int64 and not labels.requires_grad


# --- torch.compile and the op registration ---------------------------------------------------


def test_torch_compile_fullgraph_equals_eager():
    def step(embeddings, neighbors):
        weak = knn_weak_labels(embeddings, 2, pair_views=True)
        components = graph_components(neighbors)
        return weak * 1000 + components[: weak.shape[0]], components.max() + 1

    # aot_eager traces with the fake implementations like inductor does, without compiling
    # C++ (which alone takes ~25 s on a small CI machine).
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    gen = torch.Generator().manual_seed(0)
    for n in (16, 40):
        embeddings = torch.randn(n, 8, generator=gen)
        neighbors = torch.randint(0, n, (n, 3), generator=gen)
        for got, expected in zip(compiled(embeddings, neighbors), step(embeddings, neighbors)):
            assert torch.equal(got, expected)


def test_custom_ops_registered():
    neighbors = torch.randint(0, 30, (30, 2))
    embeddings = torch.randn(12, 5)
    torch.library.opcheck(torch.ops.supercl.graph_components.default, (neighbors, "torch"))
    torch.library.opcheck(torch.ops.supercl.knn_weak_labels.default, (embeddings, 1, True, "torch"))


# --- errors -----------------------------------------------------------------------------------


def test_graph_components_rejects_bad_input(monkeypatch):
    with pytest.raises(TypeError, match="neighbors"):
        graph_components(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="neighbors"):
        graph_components(torch.zeros(4, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="neighbors"):
        graph_components([[0], [1]])
    with pytest.raises(ValueError, match=r"neighbors.*\[0, 4\).*\[-1, 2\]"):
        graph_components(torch.tensor([[0], [1], [-1], [2]]))
    with pytest.raises(ValueError, match=r"neighbors.*\[0, 4\)"):
        graph_components(torch.tensor([[0], [1], [4], [2]]))
    if TRITON_DEVICE == "cpu":  # on CUDA tensors the range check is a device-side assert
        with pytest.raises(ValueError, match=r"neighbors.*\[0, 4\)"):
            graph_components(torch.tensor([[0], [1], [4], [2]]), backend="triton")
    with pytest.raises(ValueError, match="neighbors must have shape"):
        graph_components(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="neighbors must have shape"):
        graph_components(torch.zeros(2, 2, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="backend"):
        graph_components(torch.zeros(2, 1, dtype=torch.int64), backend="gpu")
    if importlib.util.find_spec("triton") is not None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            graph_components(torch.zeros(2, 1, dtype=torch.int64), backend="triton")


def test_knn_weak_labels_rejects_bad_input():
    good = torch.randn(6, 3)
    with pytest.raises(TypeError, match="embeddings"):
        knn_weak_labels(torch.zeros(6, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="embeddings"):
        knn_weak_labels("embeddings")
    with pytest.raises(ValueError, match="embeddings must have shape"):
        knn_weak_labels(torch.randn(6))
    with pytest.raises(ValueError, match="D >= 1"):
        knn_weak_labels(torch.randn(6, 0))
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = good.clone()
        x[2, 1] = bad
        with pytest.raises(ValueError, match="embeddings must be finite"):
            knn_weak_labels(x)
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn_weak_labels(good, 0)
    with pytest.raises(ValueError, match=r"k must be <= N - 1 = 5"):
        knn_weak_labels(good, 6)
    with pytest.raises(TypeError, match="k must be an int"):
        knn_weak_labels(good, 1.0)
    with pytest.raises(ValueError, match="even number"):
        knn_weak_labels(torch.randn(5, 3), 1, pair_views=True)
    with pytest.raises(TypeError, match="pair_views"):
        knn_weak_labels(good, 1, pair_views="yes")
    with pytest.raises(ValueError, match="backend"):
        knn_weak_labels(good, 1, backend="gpu")


# --- CUDA -------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("backend", [None, "torch"])
def test_cuda_matches_scipy(backend):
    rng = np.random.default_rng(2)
    for graph in GRAPHS:
        for n in (1, 5, 217, 1000, 100_000):
            table = torch.from_numpy(graph(n, 3, rng)).cuda()
            got = graph_components(table, backend=backend)
            assert got.device.type == "cuda" and got.dtype == torch.int64
            np.testing.assert_array_equal(got.cpu().numpy(), graph_components_reference(table))
    gen = torch.Generator().manual_seed(0)
    embeddings = torch.randn(256, 32, generator=gen, dtype=torch.float64)
    for pair_views in (False, True):
        got = knn_weak_labels(embeddings.cuda(), 2, pair_views=pair_views, backend=backend)
        expected = knn_weak_labels_reference(embeddings, 2, pair_views)
        np.testing.assert_array_equal(got.cpu().numpy(), expected)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", [None, "torch"])
def test_cuda_no_host_synchronisation(backend):
    neighbors = torch.randint(0, 5000, (5000, 3), device="cuda")
    embeddings = torch.randn(512, 64, device="cuda")
    # Warm up: Triton compilation and cuBLAS initialisation may synchronise once.
    graph_components(neighbors, backend=backend)
    knn_weak_labels(embeddings, 1, pair_views=True, backend=backend)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        labels = graph_components(neighbors, backend=backend)
        weak = knn_weak_labels(embeddings, 1, pair_views=True, backend=backend)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    np.testing.assert_array_equal(labels.cpu().numpy(), graph_components_reference(neighbors))
    expected = knn_weak_labels_reference(embeddings, 1, True)
    np.testing.assert_array_equal(weak.cpu().numpy(), expected)
