"""What the README promises of every op (issue 11, items 19 and 20): numpy in, numpy out; one
backend vocabulary (``cpu``/``cuda`` as device-kind aliases, ``torch``/``triton`` as the
implementation names), in ``backend=`` and in ``SUPERCL_BACKEND`` alike."""

import numpy as np
import pytest
import torch

from supercl.ops import (connected_components, downsample_segments, graph_components,
                         knn_weak_labels, slic, supcon_loss, superpixel_mean_map, superpixel_pool,
                         superpixel_unpool)


def _pool_inputs():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    segments = rng.integers(0, 4, size=(2, 5, 7)).astype(np.int64)
    return features, segments


def _loss_inputs():
    rng = np.random.default_rng(1)
    return (rng.standard_normal((12, 4)).astype(np.float32),
            np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2]))


# ---- item 19: numpy in, numpy out -----------------------------------------------------------


def test_pooling_ops_take_numpy_and_give_numpy_back():
    features, segments = _pool_inputs()
    means, counts = superpixel_pool(features, segments, 4)
    assert isinstance(means, np.ndarray) and isinstance(counts, np.ndarray)
    expected_means, expected_counts = superpixel_pool(torch.from_numpy(features),
                                                      torch.from_numpy(segments), 4)
    np.testing.assert_array_equal(means, expected_means.numpy())
    np.testing.assert_array_equal(counts, expected_counts.numpy())
    painted = superpixel_unpool(means, segments)
    assert isinstance(painted, np.ndarray) and painted.shape == features.shape
    mean_map = superpixel_mean_map(features, segments, "area")
    assert isinstance(mean_map, np.ndarray) and mean_map.shape == features.shape
    # the primary input decides the kind: a tensor stays a tensor with numpy ids
    means_t, _ = superpixel_pool(torch.from_numpy(features), segments, 4)
    assert isinstance(means_t, torch.Tensor)


def test_supcon_loss_gives_numpy_for_numpy():
    features, labels = _loss_inputs()
    loss = supcon_loss(features, labels)
    assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == np.float32
    expected = supcon_loss(torch.from_numpy(features), torch.from_numpy(labels))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    per_anchor = supcon_loss(features, labels, reduction="none")
    assert isinstance(per_anchor, np.ndarray) and per_anchor.shape == (12,)
    assert isinstance(supcon_loss(torch.from_numpy(features), labels), torch.Tensor)


def test_every_op_returns_the_kind_it_was_given():
    rng = np.random.default_rng(2)
    image = rng.random((2, 16, 16)).astype(np.float32)
    assert isinstance(slic(image, n_segments=4), np.ndarray)
    assert isinstance(connected_components(image > 0.5), np.ndarray)
    assert isinstance(graph_components(rng.integers(0, 6, size=(6, 1))), np.ndarray)
    assert isinstance(knn_weak_labels(rng.standard_normal((6, 3)).astype(np.float32)), np.ndarray)
    assert isinstance(downsample_segments(image.astype(np.int32), 4), np.ndarray)


# ---- item 20: one backend vocabulary --------------------------------------------------------


def _calls():
    features, segments = (torch.from_numpy(a) for a in _pool_inputs())
    z, y = (torch.from_numpy(a) for a in _loss_inputs())
    image = torch.from_numpy(np.random.default_rng(3).random((1, 12, 12)).astype(np.float32))
    return {
        "slic": lambda b: slic(image, n_segments=4, backend=b),
        "connected_components": lambda b: connected_components(image > 0.5, backend=b),
        "superpixel_pool": lambda b: superpixel_pool(features, segments, 4, backend=b)[0],
        "superpixel_unpool": lambda b: superpixel_unpool(features[:, 0, :4, :1].contiguous(), segments, backend=b),
        "superpixel_mean_map": lambda b: superpixel_mean_map(features, segments, backend=b),
        "supcon_loss": lambda b: supcon_loss(z, y, backend=b),
        "graph_components": lambda b: graph_components(y[:, None] % 12, backend=b),
        "knn_weak_labels": lambda b: knn_weak_labels(z, backend=b),
    }


@pytest.mark.parametrize("op", list(_calls()))
def test_cpu_and_torch_name_the_cpu_path_of_every_op(op, monkeypatch):
    monkeypatch.delenv("SUPERCL_BACKEND", raising=False)
    call = _calls()[op]
    expected = call(None)
    for name in ("cpu", "torch"):
        assert torch.equal(call(name), expected), name
        monkeypatch.setenv("SUPERCL_BACKEND", name)
        assert torch.equal(call(None), expected), f"SUPERCL_BACKEND={name}"
        monkeypatch.delenv("SUPERCL_BACKEND")


@pytest.mark.parametrize("op", list(_calls()))
def test_an_unknown_backend_lists_the_whole_vocabulary(op, monkeypatch):
    monkeypatch.delenv("SUPERCL_BACKEND", raising=False)
    with pytest.raises(ValueError, match=r"'cpu', 'cuda', 'torch', 'triton'"):
        _calls()[op]("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine's errors")
@pytest.mark.parametrize("op", ["slic", "connected_components"])
def test_triton_names_the_cuda_backend_of_the_image_ops(op, monkeypatch):
    monkeypatch.delenv("SUPERCL_BACKEND", raising=False)
    for name in ("cuda", "triton"):  # both mean the CUDA backend: unavailable here, and said so
        with pytest.raises(RuntimeError, match="backend='cpu'"):
            _calls()[op](name)


# ---- the public API and the test oracles ------------------------------------------------------


def test_ops_export_ops_only_and_every_op_has_an_oracle_in_supercl_testing():
    import supercl.ops
    import supercl.testing

    assert not [name for name in supercl.ops.__all__ if name.endswith("_reference")]
    oracles = set(supercl.testing.__all__)
    for name in ("slic", "connected_components", "graph_components", "knn_weak_labels",
                 "supcon_loss", "superpixel_pool", "superpixel_unpool", "superpixel_mean_map",
                 "downsample_segments"):
        assert name in supercl.ops.__all__ and f"{name}_reference" in oracles, name
    # an oracle agrees with its op (the op's own tests go much further)
    labels = np.array([[1, 1, 0], [0, 2, 2]])
    np.testing.assert_array_equal(connected_components(labels, connectivity=1),
                                  supercl.testing.connected_components_reference(labels, 1))


# ---- torch.compile ------------------------------------------------------------------------------


def test_a_step_of_the_four_ops_compiles_into_one_graph():
    """slic, connected_components, superpixel_mean_map (without num_segments: its output's
    shape does not depend on it) and supcon_loss are torch.library ops with fake kernels, so
    torch.compile(fullgraph=True) traces a step through all four, forward and backward, and
    gets eager's results."""
    torch._dynamo.reset()
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.random((4, 16, 20), dtype=np.float32))
    features = torch.randn(4, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    embeddings = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))

    def step(images, features, embeddings):
        segments = slic(images, n_segments=6, compactness=0.1)
        pieces = connected_components(segments, connectivity=1)
        asp = superpixel_mean_map(features, pieces.long())
        labels = pieces[:, 0, 0].long() % 2  # one label per image
        return asp, supcon_loss(embeddings, labels, 0.5)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (step, compiled):
        f = features.clone().requires_grad_()
        e = embeddings.clone().requires_grad_()
        asp, loss = fn(images, f, e)
        (asp.square().sum() + loss).backward()
        results.append((asp.detach(), loss.detach(), f.grad, e.grad))
    for eager, traced in zip(*results):
        torch.testing.assert_close(traced, eager)
    torch._dynamo.reset()


# ---- issue 19: the CPU drivers write each helper once -------------------------------------------


def _functions(text: str) -> dict[str, str]:
    """The functions defined at the start of a line of a C++ file: name -> text, from the
    signature to the closing brace at the start of a line, comments and blank lines dropped."""
    import re

    lines = [re.sub(r"\s*//.*", "", line) for line in text.splitlines()]
    head = re.compile(r"^(?:inline\s+|static\s+)*[A-Za-z_][\w:<>,]*[\s*&]+\**(\w+)\s*\(")
    found, i = {}, 0
    while i < len(lines):
        m = head.match(lines[i])
        if m and not lines[i].rstrip().endswith(";") and not lines[i].startswith("return"):
            j = i
            while j < len(lines) and lines[j] != "}":
                j += 1
            found[m.group(1)] = "\n".join(line for line in lines[i:j + 1] if line.strip())
            i = j
        i += 1
    return found


def test_no_function_of_the_cpu_drivers_is_written_twice():
    from pathlib import Path

    seen: dict[str, str] = {}
    for path in sorted((Path(__file__).parents[1] / "csrc" / "cpu").glob("*.cpp")):
        for name, body in _functions(path.read_text()).items():
            twin = seen.get(body)
            assert twin is None, f"{name} of {path.name} is a copy of {twin}"
            seen[body] = f"{name} of {path.name}"
