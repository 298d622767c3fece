"""Pictures without a plotting dependency: PNG encoding and superpixel boundary overlays.

``write_png`` encodes an (H, W) grey or (H, W, 3) RGB uint8 array with zlib; ``overlay`` draws
label boundaries over CT-like slices; ``montage`` tiles several pictures into one.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["write_png", "window", "boundary_mask", "overlay", "montage"]


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an (H, W) grey or (H, W, 3) RGB uint8 image as a PNG file.

    Example
    -------
    >>> import numpy as np, tempfile, os
    >>> p = write_png(os.path.join(tempfile.mkdtemp(), "x.png"), np.zeros((4, 5), np.uint8))
    >>> p.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        colour_type = 0
    elif image.ndim == 3 and image.shape[2] == 3:
        colour_type = 2
    else:
        raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {image.shape}")
    height, width = image.shape[:2]
    raw = np.ascontiguousarray(image).reshape(height, -1)
    rows = b"".join(b"\x00" + row.tobytes() for row in raw)  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    payload = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6))
    payload += chunk(b"IEND", b"")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def window(image: np.ndarray, low: float = -200.0, high: float = 300.0) -> np.ndarray:
    """CT intensity window: ``low .. high`` (Hounsfield units) to 0 .. 255 uint8."""
    scaled = (np.asarray(image, dtype=np.float64) - low) / (high - low)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose right or lower neighbour carries another label."""
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def overlay(grey: np.ndarray, labels: np.ndarray, colour=(255, 40, 40)) -> np.ndarray:
    """(H, W, 3) uint8: the grey uint8 image with the boundaries of ``labels`` in ``colour``."""
    rgb = np.repeat(np.asarray(grey, dtype=np.uint8)[..., None], 3, axis=2)
    rgb[boundary_mask(labels)] = colour
    return rgb


def montage(tiles: list[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """Tile equally sized (H, W, 3) uint8 pictures in rows of ``columns``, white gaps."""
    if not tiles:
        raise ValueError("montage needs at least one tile")
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    out = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return out
