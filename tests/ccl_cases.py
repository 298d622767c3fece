"""Edge cases for the block-based connected-component kernels (kernels/cuda/connected_components*.cu,
tiles of 32 x 64 pixels and 8 x 8 x 32 voxels): sizes that are not multiples of a tile, single
rows and columns, all foreground and all background, checkerboards (4- and 8-connectivity
differ), one-pixel diagonal lines (joined only through the corners of tiles), long snakes that
cross many tiles, random multi-label maps and blobs.  Used by test_cuda_emulated.py (the kernels
on the host) and test_cuda.py (the kernels on a GPU), each against the CPU backend and
scikit-image."""

import numpy as np

import supercl.kernels

# The label dtypes the kernels are compiled for (supercl.kernels.CC_DTYPES), as numpy types:
# the tests that run the kernels once per dtype follow the one list.
KERNEL_DTYPES = tuple(np.dtype(name).type for name, _ in supercl.kernels.CC_DTYPES)


def spiral(n):
    """A one-pixel-wide spiral wall: one long, winding component crossing every tile."""
    grid = np.zeros((n, n), dtype=np.int64)
    top, left, bottom, right = 0, 0, n - 1, n - 1
    while top <= bottom and left <= right:
        grid[top, left : right + 1] = 1
        grid[top : bottom + 1, right] = 1
        if top + 2 <= bottom:
            grid[bottom, left : right + 1] = 1
        if left + 2 <= right:
            grid[top + 2 : bottom + 1, left] = 1
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    return grid


def _blobs(rng, shape, cell, values):
    """Piecewise-constant maps: a coarse random grid of ``values`` labels blown up by ``cell``
    (regions larger than a tile, with borders inside and across tiles)."""
    coarse = rng.integers(0, values, size=tuple(-(-s // cell) for s in shape))
    for axis in range(len(shape)):
        coarse = np.repeat(coarse, cell, axis=axis)
    return coarse[tuple(slice(0, s) for s in shape)]


def cases_2d(seed=0):
    """(name, (B, H, W) int64 array) pairs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((97, 203))
    out = [
        ("1x1", rng.integers(0, 2, size=(3, 1, 1))),
        ("1xN", rng.integers(0, 2, size=(2, 1, 150))),
        ("Nx1", rng.integers(0, 2, size=(2, 150, 1))),
        ("33x65", rng.integers(0, 3, size=(2, 33, 65))),
        ("5x123", rng.integers(0, 3, size=(2, 5, 123))),
        ("tile multiple 64x128", rng.integers(0, 2, size=(1, 64, 128))),
        ("all foreground", np.ones((2, 70, 150), np.int64)),
        ("all background", np.zeros((2, 70, 150), np.int64)),
        ("checkerboard", ((yy + xx) % 2)[None]),
        ("inverse checkerboard", (1 - (yy + xx) % 2)[None]),
        ("diagonals", ((yy - xx) % 7 == 0).astype(np.int64)[None]),
        ("anti-diagonals", ((yy + xx) % 5 == 0).astype(np.int64)[None]),
        ("spiral", spiral(151)[None]),
        ("spiral, transposed", spiral(151).T[None]),
        ("random multi-label", rng.integers(0, 5, size=(3, 80, 130))),
        ("blobs", np.stack([_blobs(rng, (99, 143), 11, 4) for _ in range(2)])),
        ("sparse noise", (rng.random((2, 90, 140)) < 0.4).astype(np.int64)),
    ]
    return out


def _noise_3d(rng, shape, sigma=1.5, quantile=0.6):
    """Thresholded smoothed noise: many small components, as in the GPU benchmark."""
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(rng.standard_normal(shape), sigma)
    return (noise > np.quantile(noise, quantile)).astype(np.int64)


def cases_3d(seed=0):
    """(name, (B, D, H, W) int64 array) pairs."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices((11, 13, 67))
    snake = np.zeros((9, 41, 41), np.int64)
    snake[::2] = spiral(41)  # spirals on even slices, joined at one corner through odd slices
    snake[1::2, 0, 0] = 1
    out = [
        ("1x1x1", rng.integers(0, 2, size=(2, 1, 1, 1))),
        ("1x1xN", rng.integers(0, 2, size=(1, 1, 1, 70))),
        ("Nx1x1", rng.integers(0, 2, size=(1, 30, 1, 1))),
        ("odd", rng.integers(0, 3, size=(2, 9, 17, 33))),
        ("tile multiple", rng.integers(0, 2, size=(1, 16, 16, 64))),
        ("all foreground", np.ones((1, 17, 19, 70), np.int64)),
        ("all background", np.zeros((1, 17, 19, 70), np.int64)),
        ("checkerboard", ((zz + yy + xx) % 2)[None]),
        ("diagonal lines", ((xx - zz) % 5 == 0) & ((yy - zz) % 4 == 0)),
        ("anti-diagonal planes", ((zz + yy + xx) % 6 == 0)),
        ("snake", snake[None]),
        ("random multi-label", rng.integers(0, 4, size=(2, 10, 20, 40))),
        ("blobs", _blobs(rng, (19, 21, 75), 5, 3)[None]),
        ("smoothed noise", _noise_3d(rng, (1, 20, 40, 70))),
    ]
    return [(name, np.asarray(a, np.int64).reshape((-1,) + np.shape(a)[-3:])) for name, a in out]
