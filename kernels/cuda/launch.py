"""CUDA backend of the image ops: the kernels beside this file (``kernels/cuda/*.cu``, installed
as ``supercl.kernels.cuda``) compiled at first use by NVRTC through CuPy, launched on torch's
current stream. The public ops (``supercl.ops.slic``, ``supercl.ops.connected_components``)
validate their input and call :func:`slic` and :func:`connected_components` here.

- Compilation: ``cupy.RawModule`` with the package's shared headers on the include path,
  memoised per kernel file and device (and keyed on the headers' digest in CuPy's disk
  cache); no nvcc is needed at install time. ``--fmad=false``
  backs up the explicit ``__dadd_rn``-style arithmetic of the headers (bit-identical results
  with the CPU backend depend on no fused multiply-add anywhere).
- Tensors: torch and CuPy share memory through DLPack (zero copy). Kernels take raw strides,
  so inputs of any stride are used in place.
- Streams: every launch goes to ``torch.cuda.current_stream()``; nothing here synchronises
  with the host.  SLIC with a ``mask`` takes its plan (grids from the masks' bounding boxes) as
  device tensors and sizes its arrays by a bound known on the host (``k_max``), so it does not
  wait for the device either.

CuPy and the CUDA toolchain are imported only here, only when a CUDA op runs.
"""

from __future__ import annotations

import contextlib
import functools
import math

import numpy as np
import torch

from supercl import kernels
from supercl._runtime import to_device_async

__all__ = ["available", "require", "connected_components", "slic"]

_THREADS = 256
# Pixels of a row per thread in SLIC's centre accumulation (slic.cu): one set of atomics per
# run of equal labels in the chunk.
_ACCUMULATE_CHUNK = 16
# Sums per slot of the accumulate kernels' shared-memory table (SUPERCL_SLIC_SLOT_FIELDS,
# supercl/slic_block_sums.h): with more channels they add straight to global memory.
_SLOT_FIELDS = 8
# Grid-stride kernels: enough blocks to fill any current GPU, no more.
_MAX_BLOCKS = 65535
_NVRTC_OPTIONS = ("-std=c++17", "--fmad=false")
# kernel suffix and numpy scalar type of each label dtype (supercl.kernels.CC_DTYPES)
_CC_SUFFIX = {getattr(torch, name): (suffix, np.dtype(name).type)
              for name, suffix in kernels.CC_DTYPES}


def available() -> tuple[bool, str]:
    """Whether the CUDA backend can run here, and if not, why."""
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False, "CuPy is not installed"
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA device"
    return True, ""


def cupy_extra() -> str:
    """The extra whose CuPy wheel matches this torch's CUDA major version: ``cuda12`` or
    ``cuda13`` (``cuda12`` for a CPU-only torch, which names no CUDA version)."""
    version = torch.version.cuda or "12"
    return f"cuda{version.split('.')[0]}"


def require(op: str) -> None:
    ok, why = available()
    if not ok:
        extra = cupy_extra()
        raise RuntimeError(
            f"supercl.ops.{op}: the CUDA backend is unavailable ({why}). It needs an NVIDIA GPU "
            f"and CuPy for torch's CUDA version: `pip install 'supercl[{extra}]'` "
            f"(cupy-{extra}x). Pass backend='cpu' to compute on the host; the result is "
            "returned on the input's device."
        )


@functools.lru_cache(maxsize=None)
def _headers_digest() -> str:
    """A digest of the shared headers.  CuPy caches compiled modules on disk by source text
    and options, not by the contents of included files: passing the digest as a define makes
    a changed header (a supercl upgrade) recompile instead of loading a stale binary."""
    import hashlib

    digest = hashlib.sha256()
    for header in sorted((kernels.include_dir() / "supercl").glob("*.h")):
        digest.update(header.name.encode())
        digest.update(header.read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _module(name: str, device_index: int):
    import cupy

    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(
            code=kernels.cuda_source(name),
            options=_NVRTC_OPTIONS + (f"-I{kernels.include_dir()}",
                                      f"-DSUPERCL_HEADERS_DIGEST=0x{_headers_digest()}"),
        )
        module.compile()
    return module


@contextlib.contextmanager
def _torch_stream(device: torch.device):
    import cupy

    stream = torch.cuda.current_stream(device)
    with cupy.cuda.Device(device.index), cupy.cuda.ExternalStream(stream.cuda_stream, device.index):
        yield


def _launch(module, name: str, n: int, *args) -> None:
    if n <= 0:
        return
    blocks = min(-(-n // _THREADS), _MAX_BLOCKS)
    module.get_function(name)((blocks,), (_THREADS,), args)


def _cp(tensor: torch.Tensor):
    import cupy

    return cupy.from_dlpack(tensor)


def _plan_on(plan, device: torch.device) -> torch.Tensor:
    """A SLIC plan array on the device: numpy or a host tensor (planned on the host) copied
    without synchronising, a tensor planned on the device (with a mask) as it is."""
    if not isinstance(plan, torch.Tensor):
        plan = torch.from_numpy(plan)
    return to_device_async(plan.contiguous(), device)


def _i64(v) -> np.int64:
    return np.int64(v)


# Tile shapes of the block-based labeling, mirrored from supercl/connected_components_block.h
# (kCcTileH x kCcTileW, kCc3TileD x kCc3TileH x kCc3TileW; tests/test_cuda_emulated.py checks that
# they agree): the launcher only needs them to size the grids of the tile kernels.
_CC_TILE = (32, 64)
_CC3_TILE = (8, 8, 32)
# Nodes per block iteration of the roots and gather kernels (kCcSegment).
_CC_SEGMENT = 2048
# Threads per tile block: 8 blocks of 256 fill an SM's 2048 threads (the header's occupancy
# arithmetic); the kernels are correct for any value (block-stride loops).
_TILE_THREADS = 256
# The root flags are numbered by 1-D int32 scans (torch.cumsum over a 1-D tensor is one CUB
# device scan; over (B, H*W) along dim 1 torch runs one block per row, 32 blocks for 32 images)
# of at most this many elements: chunks of whole images, so that no running count can reach
# 2**31 however large the batch.  Each image's numbers are its chunk's running count minus the
# count at the end of the previous image of the chunk (cc_gather_kernel).
_SCAN_LIMIT = 2**30

# The labeling's launch path is host-bound for the batches of training (a 32 x 512^2 batch
# measured 0.84 ms on an H200 of which ~0.24 ms was a fixed cost per call, against ~70 us of
# memory traffic), so it keeps the work per call small:
# - pointers, not CuPy arrays: a CUDA kernel's pointer parameter is its 8 bytes, which CuPy
#   packs from a numpy int64 exactly as it packs the int64 sizes beside it, so _ptr hands over
#   tensor.data_ptr() (the first element's address, storage offset included) instead of a
#   cupy.from_dlpack per tensor (a DLPack capsule, a CuPy array and its memory object, ~5-10 us
#   each, 7 per call before).  The tensors stay referenced until the launches are queued and
#   all work runs on torch's current stream, so the caching allocator cannot hand their memory
#   to anything that runs earlier.
# - the kernels' function handles are memoised per module (_function) rather than fetched by
#   name (cuModuleGetFunction and a new Function object) at each launch;
# - one allocation holds both int32 scratch arrays (forest and prefix sums);
# - the scan is one torch.cumsum straight into the scratch when one chunk holds the batch.
# Per call: 3 allocations, 4 kernel launches, 1 cumsum, 1 stream context (was 4, 4, 1 + slices,
# 1, and 7 from_dlpack).
_FUNCTIONS: dict[int, tuple[object, dict]] = {}


def _ptr(tensor: torch.Tensor) -> np.int64:
    return np.int64(tensor.data_ptr())


def _function(module, name: str):
    """``module.get_function(name)``, memoised.  Keyed by the module's id; the entry holds the
    module, so that id cannot be reused while the entry exists."""
    entry = _FUNCTIONS.get(id(module))
    if entry is None or entry[0] is not module:
        entry = _FUNCTIONS[id(module)] = (module, {})
    functions = entry[1]
    function = functions.get(name)
    if function is None:
        function = functions[name] = module.get_function(name)
    return function


def _tile_count(shape: tuple[int, ...], tile: tuple[int, ...]) -> int:
    """The number of tiles of a (B, H, W) or (B, D, H, W) batch cut into ``tile``-shaped tiles
    (clipped at the far edges): the range of the tile kernels' 64-bit grid-stride loop."""
    batch, *spatial = shape
    return batch * math.prod(-(-extent // t) for extent, t in zip(spatial, tile))


def _launch_tiles(module, name: str, tiles: int, *args) -> None:
    """One block per tile (each block loops over tiles with a grid stride when there are more
    than _MAX_BLOCKS), _TILE_THREADS threads striding over the tile's pixels."""
    if tiles <= 0:
        return
    _function(module, name)((min(tiles, _MAX_BLOCKS),), (_TILE_THREADS,), args)


def _launch_segments(module, name: str, batch: int, size: int, *args) -> None:
    """The roots and gather kernels: one block per segment of _CC_SEGMENT nodes of one image
    (grid stride over segments beyond _MAX_BLOCKS), _TILE_THREADS threads striding over it."""
    segments = batch * -(-size // _CC_SEGMENT)
    if segments <= 0:
        return
    _function(module, name)((min(segments, _MAX_BLOCKS),), (_TILE_THREADS,), args)


def _scan_step(size: int, limit: int | None = None) -> int:
    """Images per scan chunk: as many as fit in ``limit`` (default _SCAN_LIMIT) elements, at
    least one (one image holds < 2**31 elements, checked by the public op)."""
    limit = _SCAN_LIMIT if limit is None else limit
    return max(1, limit // max(size, 1))


def _scan_chunks(batch: int, size: int, limit: int | None = None) -> list[tuple[int, int]]:
    """Consecutive image ranges [b0, b1) covering the batch, _scan_step images each (the last
    may hold fewer)."""
    step = _scan_step(size, limit)
    return [(b0, min(b0 + step, batch)) for b0 in range(0, batch, step)]


def _label(module, tiles_module, suffix: str, x: torch.Tensor, connectivity: int,
           has_background: bool, background, tile: tuple[int, ...]) -> tuple[torch.Tensor,
                                                                               torch.Tensor]:
    """The launch sequence shared by the 2-D and 3-D labeling: tiles, borders (``tiles_module``,
    kernels ``cc_tiles_<suffix>``/``cc_borders_<suffix>`` or their cc3_ forms, which take the
    input, the batch and spatial sizes, its element strides, then the options and the forest),
    then _number_roots over each image's flat forest."""
    batch, *spatial = x.shape
    size = math.prod(spatial)
    n = batch * size
    scratch = torch.empty(2 * n, dtype=torch.int32, device=x.device)
    parent, rank = scratch[:n], scratch[n:]
    out = torch.empty(x.shape, dtype=torch.int32, device=x.device)
    counts = torch.empty(batch, dtype=torch.int64, device=x.device)
    prefix = "cc3" if len(spatial) == 3 else "cc"
    tiles = _tile_count(tuple(x.shape), tile)
    with _torch_stream(x.device):
        args = (_ptr(x), _i64(batch), *(_i64(s) for s in spatial),
                *(_i64(s) for s in x.stride()), np.int32(connectivity),
                np.int32(has_background), background, _ptr(parent))
        _launch_tiles(tiles_module, f"{prefix}_tiles_{suffix}", tiles, *args)
        _launch_tiles(tiles_module, f"{prefix}_borders_{suffix}", tiles, *args)
        _number_roots(module, parent, out, rank, counts, batch, size)
    return out, counts


def connected_components(
    x: torch.Tensor, connectivity: int, has_background: bool, background: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels int32 of the shape of ``x`` and counts (B,) int64 of a validated CUDA tensor
    (B, H, W) or (B, D, H, W) of dtype uint8, int32 or int64, any strides: the block-based
    labeling (tiles in shared memory, then the tile borders) of connected_components.cu, or of
    connected_components_3d.cu for volumes, then _number_roots (connected_components.cu's roots
    and gather over each image's or volume's flat forest)."""
    suffix, scalar = _CC_SUFFIX[x.dtype]
    module = _module("connected_components", x.device.index)
    if x.dim() == 3:
        tiles_module, tile = module, _CC_TILE
    else:
        tiles_module, tile = _module("connected_components_3d", x.device.index), _CC3_TILE
    return _label(module, tiles_module, suffix, x, connectivity, has_background,
                  scalar(background), tile)


def _number_roots(module, parent: torch.Tensor, out: torch.Tensor, rank: torch.Tensor,
                  counts: torch.Tensor, batch: int, size: int) -> None:
    """The tail of both CCLs, over each image's (or volume's) flat forest ``parent`` (1-D, int32)
    of ``size`` nodes whose merges are done: compress to the roots and flag them (into ``out``),
    number them by 1-D inclusive int32 prefix sums into ``rank`` (1-D, on the current stream, in
    chunks of _scan_step whole images) and gather each image's numbers, less the count of the
    images before it in its chunk, into ``out``; the gather writes the (B,) int64 ``counts``."""
    p, o = _ptr(parent), _ptr(out)
    _launch_segments(module, "cc_roots", batch, size, p, _i64(batch), _i64(size), o)
    flags = out.view(-1)
    step = _scan_step(size)
    if batch <= step:
        torch.cumsum(flags, 0, dtype=torch.int32, out=rank)
    else:
        for b0, b1 in _scan_chunks(batch, size):
            torch.cumsum(flags[b0 * size:b1 * size], 0, dtype=torch.int32,
                         out=rank[b0 * size:b1 * size])
    _launch_segments(module, "cc_gather_kernel", batch, size, p, _ptr(rank), _i64(batch),
                     _i64(size), _i64(step), o, _ptr(counts))


# Threads per SLIC update launch, about: enough to cover every centre of a typical batch
# (256 x 100) at once, few enough that a k_max bound of H * W per image (a mask) costs nothing.
_CENTRE_THREADS = 2**20


def _launch_centres(module, name: str, batch: int, k_max: int, *args) -> None:
    """A SLIC centre kernel (update) over ``parts`` blocks per image, each image's blocks
    striding over its own live centres (slic.cu): the work follows the centres planned, and the
    launch's size does not grow with the k_max bound.  The last argument (the output) follows
    ``parts``."""
    parts = max(1, min(-(-k_max // _THREADS), -(-_CENTRE_THREADS // (batch * _THREADS))))
    blocks = min(batch * parts, _MAX_BLOCKS)
    module.get_function(name)((blocks,), (_THREADS,), (*args[:-1], _i64(parts), args[-1]))


def slic(
    image: torch.Tensor,
    mask: torch.Tensor | None,
    grid: np.ndarray | torch.Tensor,
    params: np.ndarray | torch.Tensor,
    max_num_iter: int,
    enforce_connectivity: bool,
    min_size: np.ndarray | torch.Tensor,
    start_label: int,
    k_max: int | None = None,
) -> torch.Tensor:
    """SLIC labels (B, H, W) int32 of a validated, [0, 1]-rescaled, contiguous (B, C, H, W)
    float32 CUDA tensor, or (B, D, H, W) of a (B, C, D, H, W) one; grid ((B, 6) or (B, 9)),
    params (B, 5) and min_size (B,) as planned by supercl.ops.slic (_plan): host arrays (no
    mask; k_max is then read from the grid), or device tensors (a mask) with ``k_max`` a
    host-known bound of the centres per image (kernels skip the centres beyond the grid's).

    One launch sequence for both: the assignment, accumulation, update, init and merge-target
    kernels are slic.cu's for images and slic3_* of slic_3d.cu for volumes (they take the
    spatial sizes as arguments in the same place); every other kernel sees an image or volume
    as a flat array of ``size`` pixels and is slic.cu's."""
    device = image.device
    batch, channels, *spatial = image.shape
    dims = len(spatial)
    size = math.prod(spatial)
    n = batch * size
    if k_max is None:  # a plan on the host: numpy, or a CPU tensor
        k_max = int(grid[:, dims:2 * dims].prod(1).max())
    module = _module("slic", device.index)
    # the kernels whose form depends on the dimension
    shaped, prefix = (module, "slic") if dims == 2 else (_module("slic_3d", device.index), "slic3")
    grid_t, params_t, min_size_t = (_plan_on(a, device) for a in (grid, params, min_size))
    quant = torch.empty(image.shape, dtype=torch.int32, device=device)
    # a centre holds its coordinates and channels; its sums also the pixel count
    centres = torch.empty((batch, k_max, dims + channels), dtype=torch.float64, device=device)
    # zeroed once; the update kernel zeroes what it read, ready for the next accumulation
    sums = torch.zeros((batch, k_max, dims + 1 + channels), dtype=torch.int64, device=device)
    labels = torch.full((batch, *spatial), -1, dtype=torch.int32, device=device)
    has_mask = mask is not None
    mask_t = mask if has_mask else torch.zeros(1, dtype=torch.uint8, device=device)
    chunks = -(-spatial[-1] // _ACCUMULATE_CHUNK)
    rows = batch * size // spatial[-1]
    B, C, K, N = (_i64(v) for v in (batch, channels, k_max, size))
    S = tuple(_i64(v) for v in spatial)  # (H, W) or (D, H, W)
    with _torch_stream(device):
        g, prm, c, s, lab = _cp(grid_t), _cp(params_t), _cp(centres), _cp(sums), _cp(labels)
        q = _cp(quant)
        _launch(module, "slic_quantize_kernel", image.numel(), _cp(image), _i64(image.numel()), q)
        _launch(shaped, f"{prefix}_init_kernel", batch * k_max, g, B, K, C, c)
        phases = 2 if has_mask else 1
        for phase in range(phases):
            last_phase = phase == phases - 1
            for it in range(max_num_iter):
                _launch(shaped, f"{prefix}_assign_kernel", n, q, _cp(mask_t), np.int32(has_mask),
                        g, prm, np.int32(last_phase), c, B, C, *S, K, lab)
                if last_phase and it + 1 == max_num_iter:
                    break  # the update after the final assignment would not be used
                _launch(shaped, f"{prefix}_accumulate_kernel", rows * chunks, q, lab, B, C, *S, K,
                        _i64(_ACCUMULATE_CHUNK),
                        np.int32(dims + 1 + channels <= _SLOT_FIELDS), s)
                _launch_centres(shaped, f"{prefix}_update_kernel", batch, k_max, s, g, B, K, C, c)
        out = torch.empty_like(labels)
        if enforce_connectivity:
            cc, count = connected_components(labels, 1, has_mask, -1)
            per_component = (batch, size + 1)
            sizes = torch.zeros(per_component, dtype=torch.int64, device=device)
            first = torch.full(per_component, 2**31 - 1, dtype=torch.int32, device=device)
            target = torch.zeros(per_component, dtype=torch.int32, device=device)
            parent = torch.empty(per_component, dtype=torch.int32, device=device)
            kept = torch.empty(per_component, dtype=torch.int32, device=device)
            m = batch * (size + 1)
            _launch(module, "slic_component_stats", n, _cp(cc), B, N, _cp(sizes), _cp(first))
            # a small piece's merge target (slic_merge_target / slic3_merge_target) needs the
            # spatial sizes but the first
            _launch(shaped, f"{prefix}_merge_parents", m, _cp(cc), _cp(sizes), _cp(first),
                    _cp(count), _cp(min_size_t), B, *S[1:], N, _cp(target), _cp(parent))
            for _ in range(math.ceil(math.log2(size + 1)) + 1):
                _launch(module, "slic_jump", m, B, N, _cp(parent))
            _launch(module, "slic_kept_flags", m, _cp(parent), _cp(count), B, N, _cp(kept))
            rank = kept.cumsum(1, dtype=torch.int32)
            _launch(module, "slic_relabel", n, _cp(cc), _cp(parent), _cp(rank), B, N,
                    np.int32(start_label), _cp(out))
        else:
            used = torch.zeros((batch, k_max), dtype=torch.int32, device=device)
            _launch(module, "slic_mark_used", n, lab, B, N, K, _cp(used))
            rank = used.cumsum(1, dtype=torch.int32)
            _launch(module, "slic_compact", n, lab, _cp(rank), B, N, K, np.int32(start_label),
                    _cp(out))
    return out
