"""supercl.ops.slic with spatial_dims=3 (supervoxels) against skimage.segmentation.slic on
volumes: scikit-image's own 3D test cases with their expected outputs, quality on a phantom CT
volume and on the MNI152 T1 (where nilearn is installed), anisotropic spacing, connectivity,
determinism, odd sizes and errors."""

from itertools import product

import numpy as np
import pytest
import torch

from phantom_v1 import phantom_volume
from supercl.ops import connected_components, slic
from supercl.testing import slic_reference

skimage_segmentation = pytest.importorskip("skimage.segmentation")
ndimage = pytest.importorskip("scipy.ndimage")


def slic3(volumes, **kwargs):
    return slic(volumes, spatial_dims=3, **kwargs)


def reference3(volumes, **kwargs):
    """scikit-image on a (B, D, H, W) or (B, C, D, H, W) array (start_label 0 unless given)."""
    kwargs.setdefault("start_label", 0)
    return slic_reference(volumes, spatial_dims=3, **kwargs)


# --------------------------------------------------------------------------------------------
# scikit-image's 3D tests (skimage/segmentation/tests/test_slic.py): the same inputs and
# expected outputs.  Its colour test converts to Lab by default; supercl never converts
# (documented), and the expected octants hold without Lab too.
# --------------------------------------------------------------------------------------------


def octants(shape=(20, 21, 22)):
    slices = []
    for dim_size in shape:
        midpoint = dim_size // 2
        slices.append((slice(None, midpoint), slice(midpoint, None)))
    return list(product(*slices))


def grey_octant_volume():
    rng = np.random.RandomState(0)
    img = np.zeros((20, 21, 22))
    shades = np.arange(0, 1.000001, 1.0 / 7)
    for s, sh in zip(octants(), shades):
        img[s] = sh
    img += 0.001 * rng.normal(size=img.shape)
    return np.clip(img, 0, 1)


def colour_octant_volume():
    """(C, D, H, W): scikit-image's (D, H, W, 3) test volume, channels first."""
    rng = np.random.RandomState(0)
    img = np.zeros((20, 21, 22, 3))
    for s, c in zip(octants(), product(*(([0, 1],) * 3))):
        img[s] = c
    img += 0.01 * rng.normal(size=img.shape)
    return np.moveaxis(np.clip(img, 0, 1), -1, 0)


def octant_mask():
    msk = np.zeros((20, 21, 22))
    msk[2:-2, 2:-2, 2:-2] = 1
    return msk.astype(bool)


def test_gray_3d():
    seg = slic3(grey_octant_volume(), n_segments=8, compactness=1)
    assert seg.shape == (20, 21, 22)
    assert len(np.unique(seg)) == 8
    for s, c in zip(octants(), range(8)):
        np.testing.assert_array_equal(seg[s], c)


def shifted_octants():
    """scikit-image's expected colour octants hold in Lab; without Lab (supercl, or skimage
    with convert2lab=False) the colour differences are too small against compactness 10 to move
    the spatial boundary: row 10 of 21 is equidistant from the upper and lower centres and goes
    to the upper one, which wins the tie by its lower index, as in scikit-image (the 2D colour
    test has the same shift, test_slic.py)."""
    return list(product((slice(None, 10), slice(10, None)), (slice(None, 11), slice(11, None)),
                        (slice(None, 11), slice(11, None))))


def test_color_3d():
    seg = slic3(colour_octant_volume()[None], n_segments=8)[0]
    assert len(np.unique(seg)) == 8
    for s, c in zip(shifted_octants(), range(8)):
        np.testing.assert_array_equal(seg[s], c)
    reference = reference3(colour_octant_volume()[None], n_segments=8)
    np.testing.assert_array_equal(seg, reference[0])


def test_gray_3d_mask():
    seg = slic3(grey_octant_volume(), n_segments=8, compactness=1, mask=octant_mask())
    assert len(np.unique(seg)) == 9
    for s, c in zip(octants(), range(1, 9)):
        np.testing.assert_array_equal(seg[s][2:-2, 2:-2, 2:-2], c)
    assert (seg[~octant_mask()] == 0).all()


def test_color_3d_mask():
    seg = slic3(colour_octant_volume()[None], n_segments=8, spacing=[2, 1, 1],
                mask=octant_mask()[None])[0]
    assert len(np.unique(seg)) == 9
    for s, c in zip(octants(), range(1, 9)):
        np.testing.assert_array_equal(seg[s][2:-2, 2:-2, 2:-2], c)


def test_more_segments_than_voxels():
    volume = np.random.default_rng(0).random((3, 4, 5))
    seg = slic3(volume, n_segments=500, compactness=1)
    np.testing.assert_array_equal(seg.ravel(), np.arange(seg.size))
    np.testing.assert_array_equal(seg, reference3(volume[None], n_segments=500, compactness=1)[0])


def test_spacing_3d():
    """scikit-image's spacing test, one dimension up: two slabs along x that differ in
    intensity along z; a large z spacing makes the z distance dominate and splits along z."""
    rng = np.random.RandomState(0)
    img = np.zeros((2, 2, 5))
    img[:, :, :3] = 1
    img[1, :, 2] = 0
    img += 0.1 * rng.normal(size=img.shape)
    kwargs = dict(n_segments=2, compactness=1.0)
    non_spaced = slic3(img, **kwargs)
    spaced = slic3(img, spacing=[500, 1, 1], **kwargs)
    np.testing.assert_array_equal(non_spaced, reference3(img[None], **kwargs)[0])
    np.testing.assert_array_equal(spaced, reference3(img[None], spacing=[500, 1, 1], **kwargs)[0])
    np.testing.assert_array_equal(spaced, np.broadcast_to([[[0]], [[1]]], img.shape))
    assert (non_spaced[:, :, 0] == non_spaced[0, 0, 0]).all()
    assert (non_spaced[:, :, -1] != non_spaced[0, 0, 0]).all()


# --------------------------------------------------------------------------------------------
# Quality against scikit-image on the same volume
# --------------------------------------------------------------------------------------------


def boundaries3(labels):
    """Voxels whose next neighbour along z, y or x carries another label."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, :, :-1] |= labels[:, :, :-1] != labels[:, :, 1:]
    return edge


def boundary_recall(supervoxels, truth, tolerance=2):
    """Fraction of ground-truth boundary voxels with a supervoxel boundary within `tolerance`
    voxels (chessboard distance)."""
    truth_edges = boundaries3(truth)
    size = 2 * tolerance + 1
    near = ndimage.binary_dilation(boundaries3(supervoxels), structure=np.ones((size,) * 3))
    return (truth_edges & near).sum() / max(truth_edges.sum(), 1)


def undersegmentation_error(supervoxels, truth):
    """Neubert & Protzel's corrected undersegmentation error (see test_slic.py)."""
    s = np.asarray(supervoxels).ravel().astype(np.int64)
    t = np.asarray(truth).ravel().astype(np.int64)
    pairs, overlap = np.unique(s * (t.max() + 1) + t, return_counts=True)
    size = np.bincount(s)[pairs // (t.max() + 1)]
    return np.minimum(overlap, size - overlap).sum() / s.size


def quality(supervoxels, truth, tolerance=2):
    return (len(np.unique(supervoxels)), boundary_recall(supervoxels, truth, tolerance),
            undersegmentation_error(supervoxels, truth))


@pytest.fixture(scope="module")
def phantom():
    return phantom_volume(40, 96, 112, seed=3)


def assert_quality_matches_skimage(ours, theirs, truth, slack=0.02, tolerance=2):
    n_ours, recall_ours, ue_ours = quality(ours, truth, tolerance)
    n_theirs, recall_theirs, ue_theirs = quality(theirs, truth, tolerance)
    assert abs(n_ours - n_theirs) <= 0.25 * n_theirs, (n_ours, n_theirs)
    assert recall_ours >= recall_theirs - slack, (recall_ours, recall_theirs)
    assert ue_ours <= ue_theirs + slack, (ue_ours, ue_theirs)
    return (n_ours, recall_ours, ue_ours), (n_theirs, recall_theirs, ue_theirs)


@pytest.mark.parametrize("spacing", [None, (2.5, 0.7, 0.7)], ids=["isotropic", "ct-spacing"])
def test_phantom_quality_matches_skimage(phantom, spacing):
    image, organs = phantom
    kwargs = dict(n_segments=300, compactness=0.1, spacing=spacing)
    ours = slic3(image, **kwargs)
    theirs = reference3(image[None], **kwargs)[0]
    assert_quality_matches_skimage(ours, theirs, organs)


def test_quality_metrics_are_sensitive(phantom):
    """The metrics above can fail: a blocky grid ignores organ boundaries."""
    _, organs = phantom
    grid = np.add.outer(np.add.outer(np.arange(40) // 20 * 100, np.arange(96) // 32 * 10),
                        np.arange(112) // 32)
    assert boundary_recall(grid, organs) < 0.5
    assert undersegmentation_error(grid, organs) > 0.05
    assert boundary_recall(organs, organs) == 1.0
    assert undersegmentation_error(organs, organs) == 0.0


def test_anisotropic_spacing_shapes_supervoxels(phantom):
    """With 5 mm slices and 1 mm pixels, supervoxels span fewer slices than with isotropic
    voxels (the z distance weighs 25x more), as in scikit-image."""
    image, _ = phantom

    def mean_depth(labels):
        ids = labels.ravel()
        z = np.broadcast_to(np.arange(labels.shape[0])[:, None, None], labels.shape).ravel()
        counts = np.bincount(ids)
        zmin = np.full(counts.size, labels.shape[0])
        zmax = np.zeros(counts.size, dtype=int)
        np.minimum.at(zmin, ids, z)
        np.maximum.at(zmax, ids, z)
        return float(np.mean(zmax - zmin + 1))

    iso = slic3(image, n_segments=300, compactness=0.5)
    aniso = slic3(image, n_segments=300, compactness=0.5, spacing=(5.0, 1.0, 1.0))
    ref = reference3(image[None], n_segments=300, compactness=0.5, spacing=(5.0, 1.0, 1.0))[0]
    assert mean_depth(aniso) < 0.75 * mean_depth(iso)
    assert abs(mean_depth(aniso) - mean_depth(ref)) <= 0.25 * mean_depth(ref)


def test_mni152_quality_next_to_skimage(capsys):
    """The MNI152 T1 shipped in nilearn's wheel, at half resolution (1 M voxels), against its
    grey/white-matter map: supercl's boundary recall and undersegmentation error next to
    scikit-image's on the same volume."""
    from supercl.data.mni152 import mni152_task, template_paths

    try:
        template_paths()
    except (ImportError, FileNotFoundError) as error:
        pytest.skip(str(error))
    t1, labels, _, _ = mni152_task()
    t1, labels = t1[::2, ::2, ::2], labels[::2, ::2, ::2]
    kwargs = dict(n_segments=1000, compactness=0.05, spacing=(2.0, 2.0, 2.0))
    ours = slic3(t1, **kwargs)
    theirs = reference3(t1[None], **kwargs)[0]
    # Tolerance 1 voxel (2 mm): at 2 voxels nearly every GM/WM boundary voxel is "recalled".
    (n_o, br_o, ue_o), (n_t, br_t, ue_t) = assert_quality_matches_skimage(ours, theirs, labels,
                                                                          tolerance=1)
    with capsys.disabled():
        print(f"\nMNI152 T1 {t1.shape}: supercl {n_o} supervoxels, boundary recall {br_o:.3f}, "
              f"undersegmentation error {ue_o:.4f}; scikit-image {n_t}, {br_t:.3f}, {ue_t:.4f}")


# --------------------------------------------------------------------------------------------
# Invariants
# --------------------------------------------------------------------------------------------


def assert_each_label_one_region(labels, first=0):
    """Every supervoxel is exactly one 6-connected region; labels consecutive from `first`."""
    labels = np.asarray(labels)
    for volume in labels.reshape(-1, *labels.shape[-3:]):
        values = np.unique(volume[volume >= first])
        np.testing.assert_array_equal(values, np.arange(first, first + len(values)))
        regions = connected_components(volume.astype(np.int64), connectivity=1, background=-1,
                                       spatial_dims=3)
        assert int(regions.max()) == len(np.unique(volume))


def test_every_supervoxel_is_connected(phantom):
    image, _ = phantom
    for n_segments, compactness in [(300, 0.1), (1000, 0.01), (50, 1.0), (300, 1e-4)]:
        assert_each_label_one_region(slic3(image, n_segments=n_segments,
                                           compactness=compactness))


@pytest.mark.parametrize("start_label", [0, 1, 5])
def test_labels_consecutive_from_start_label(phantom, start_label):
    image, organs = phantom
    for enforce in (True, False):
        for mask in (None, organs > 0):
            labels = slic3(image[:16], n_segments=100, compactness=0.1, start_label=start_label,
                           enforce_connectivity=enforce,
                           mask=None if mask is None else mask[:16])
            first = max(start_label, 1) if mask is not None else start_label
            values = np.unique(labels[labels > 0] if mask is not None else labels)
            np.testing.assert_array_equal(values, np.arange(first, first + len(values)))
            if mask is not None:
                assert (labels[~mask[:16]] == 0).all()


def test_deterministic_across_calls_threads_and_batching(phantom, threads):
    image, _ = phantom
    volumes = np.stack([image[:20], image[20:]])
    kwargs = dict(n_segments=150, compactness=0.1)
    threads(1)
    one = slic3(volumes, **kwargs)
    again = slic3(volumes, **kwargs)
    threads(2)
    two = slic3(volumes, **kwargs)
    single = np.stack([slic3(v, **kwargs) for v in volumes])  # one volume, rows split
    np.testing.assert_array_equal(one, again)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, single)


def test_volume_is_not_a_batch_of_slices(phantom):
    image, _ = phantom
    volume = image[:12]
    labels = slic3(volume, n_segments=40, compactness=0.1)
    assert labels.shape == volume.shape
    spans = [len(np.unique(np.nonzero(labels == v)[0])) for v in np.unique(labels)]
    assert max(spans) > 1  # supervoxels cross slices
    assert slic(volume, n_segments=40, compactness=0.1).shape == volume.shape


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 37), (37, 1, 1), (5, 1, 9), (3, 17, 19),
                                   (2, 3, 7, 11)])
@pytest.mark.parametrize("n_segments", [1, 7, 400])
def test_odd_sizes_against_skimage_partition_size(shape, n_segments):
    """Odd sizes (channels first for the 4-D shape): valid, connected labels and, without
    enforcement, as many supervoxels as scikit-image."""
    volume = np.random.default_rng(sum(shape)).random(shape)
    batch = volume[None]
    labels = slic3(batch, n_segments=n_segments, compactness=0.3, max_num_iter=4)
    assert labels.shape == (1,) + shape[-3:] and labels.dtype == np.int32
    assert_each_label_one_region(labels)
    free = slic3(batch, n_segments=n_segments, compactness=0.3, max_num_iter=4,
                 enforce_connectivity=False)
    ref = reference3(batch, n_segments=n_segments, compactness=0.3, max_num_iter=4,
                     enforce_connectivity=False)
    assert len(np.unique(free)) <= len(np.unique(ref)) * 1.25 + 2


def test_constant_volume_and_integer_input():
    """A constant volume is cut by the grid alone, into scikit-image's partition."""
    volume = np.full((6, 7, 8), 5, dtype=np.int16)
    labels = slic3(volume, n_segments=8, compactness=1)
    np.testing.assert_array_equal(labels, reference3(volume[None].astype(float), n_segments=8,
                                                     compactness=1)[0])
    assert len(np.unique(labels)) == 12  # regular_grid's steps for this shape


def test_empty_mask_gives_zeros():
    volume = np.random.default_rng(0).random((2, 5, 6, 7))
    mask = np.zeros((2, 5, 6, 7), dtype=bool)
    mask[1, 1:4, 2:5, 3:6] = True
    labels = slic3(volume, n_segments=4, compactness=0.1, mask=mask)
    assert (labels[0] == 0).all() and labels[1].max() >= 1 and (labels[1][~mask[1]] == 0).all()


def test_torch_input_output_and_non_contiguous(phantom):
    image, _ = phantom
    t = torch.from_numpy(np.ascontiguousarray(image[:10])).permute(0, 2, 1)
    out = slic3(t, n_segments=50, compactness=0.1)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int32
    np.testing.assert_array_equal(out.numpy(), slic3(t.contiguous().numpy(), n_segments=50,
                                                     compactness=0.1))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(images=np.zeros((4, 5))), ValueError, "images"),
        (dict(images=np.zeros((1, 1, 2, 3, 4, 5))), ValueError, "images"),
        (dict(images=np.zeros((0, 3, 4, 5))), ValueError, "images"),
        (dict(images=np.zeros((2, 0, 4, 5))), ValueError, "images"),
        (dict(images=np.zeros((3, 4, 5), dtype=bool)), TypeError, "images"),
        (dict(spacing=(1.0, 1.0)), ValueError, "spacing"),
        (dict(spacing=(1.0, -1.0, 1.0)), ValueError, "spacing"),
        (dict(spacing="abc"), TypeError, "spacing"),
        (dict(mask=np.ones((3, 4), dtype=bool)), ValueError, "mask"),
        (dict(mask=np.ones((3, 4, 5), dtype=np.float32)), TypeError, "mask"),
        (dict(n_segments=0), ValueError, "n_segments"),
        (dict(compactness=0.0), ValueError, "compactness"),
        (dict(max_num_iter=0), ValueError, "max_num_iter"),
        (dict(min_size_factor=-1.0), ValueError, "min_size_factor"),
        (dict(spatial_dims=1), ValueError, "spatial_dims"),
        (dict(images=np.array([[[np.nan, 0.0]]])), ValueError, "NaN"),
    ],
)
def test_bad_input_raises_clearly(kwargs, error, match):
    kwargs = {"images": np.zeros((3, 4, 5)), "spatial_dims": 3, **kwargs}
    with pytest.raises(error, match=match):
        slic(**kwargs)


def test_baseline_scans_match_avx2(tmp_path, phantom):
    """SUPERCL_SIMD=baseline runs the SSE2 versions of the 3-D scans (in a fresh process: the
    level is read once); the labels equal this process's (AVX2 where the CPU has it)."""
    import os
    import subprocess
    import sys

    image, organs = phantom
    x = np.ascontiguousarray(image[:12, :60, :70])
    mask = organs[:12, :60, :70] > 0
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "mask.npy", mask)
    script = (
        "import numpy as np, sys\n"
        "from supercl import _C\n"
        "from supercl.ops import slic\n"
        "assert _C.simd_level() == 'baseline', _C.simd_level()\n"
        "d = sys.argv[1]\n"
        "x = np.load(d + '/x.npy'); m = np.load(d + '/mask.npy')\n"
        "kw = dict(n_segments=60, compactness=0.1, spatial_dims=3)\n"
        "np.save(d + '/grey.npy', slic(x, **kw))\n"
        "np.save(d + '/masked.npy', slic(x, mask=m, **kw))\n"
        "np.save(d + '/two.npy', slic(np.stack([x, x[:, ::-1]])[None], **kw))\n"
    )
    env = {**os.environ, "SUPERCL_SIMD": "baseline"}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    kw = dict(n_segments=60, compactness=0.1)
    np.testing.assert_array_equal(np.load(tmp_path / "grey.npy"), slic3(x, **kw))
    np.testing.assert_array_equal(np.load(tmp_path / "masked.npy"), slic3(x, mask=mask, **kw))
    np.testing.assert_array_equal(np.load(tmp_path / "two.npy"),
                                  slic3(np.stack([x, x[:, ::-1]])[None], **kw))


def test_volumes_go_through_the_custom_op():
    """3-D SLIC is the same torch.library op as 2-D (supercl::slic): torch.compile traces a
    masked call into one graph with eager's labels, FakeTensor gives the shape without
    computing, and torch.library.opcheck accepts the op on volumes."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    rng = np.random.default_rng(4)
    volumes = torch.from_numpy(rng.random((2, 6, 11, 13), dtype=np.float32))
    mask = torch.from_numpy(rng.random((2, 6, 11, 13)) < 0.8)
    kwargs = dict(n_segments=8, compactness=0.1, spatial_dims=3)
    eager = slic(volumes, mask=mask, **kwargs)
    torch._dynamo.reset()
    compiled = torch.compile(lambda v, m: slic(v, mask=m, **kwargs), fullgraph=True,
                             backend="aot_eager")
    np.testing.assert_array_equal(compiled(volumes, mask).numpy(), eager.numpy())
    torch._dynamo.reset()
    with FakeTensorMode() as mode:
        fake = slic(mode.from_tensor(volumes), **kwargs)
    assert isinstance(fake, FakeTensor) and fake.shape == volumes.shape
    assert fake.dtype == torch.int32
    torch.library.opcheck(torch.ops.supercl.slic.default,
                          (volumes[:, None], mask, 8, 0.1, 10, [2.5, 1.0, 1.0], True, 0.5, 0,
                           "cpu"))
