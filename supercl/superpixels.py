"""``supercl superpixels``: SLIC superpixels of one volume, as a PNG of overlays (or, with
``--3d``, supervoxels as NIfTI plus a PNG of three orthogonal slices).

The volume is a single NIfTI file, or one case (``--case``) of a dataset folder (MSD, or a
folder of .nii/.nii.gz images); without ``--data``, the first volume of the embedded phantom
CT dataset, written to ``OUT/phantom``. Labels, splits and training settings play no part
here, so the command has none of those options.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["add_superpixels_options", "run_superpixels"]


def add_superpixels_options(p: argparse.ArgumentParser, at_least) -> None:
    """The options of ``supercl superpixels``; ``at_least(n)`` is the CLI's int >= n type."""
    p.add_argument("--data", default=None, metavar="PATH",
                   help="a NIfTI file (.nii/.nii.gz), a Medical Segmentation Decathlon folder or a "
                   "folder of .nii/.nii.gz images (default: the embedded phantom CT dataset, "
                   "written to OUT/phantom)")
    p.add_argument("--case", default=None,
                   help="for a folder: the case name (default: the first case)")
    p.add_argument("--modality", default=None, metavar="NAME",
                   help="CT (windowed to --window) or MRI (per-volume z-score) (default: "
                   "dataset.json's modality, CT for a file or a plain folder)")
    p.add_argument("--window", type=float, nargs=2, default=(-200.0, 300.0),
                   metavar=("LOW", "HIGH"), help="CT intensity window in Hounsfield units "
                   "(default: -200 300)")
    p.add_argument("--patch-size", type=int, default=128, metavar="P",
                   help="2-D: slices become P x P, as the other commands see them (default: 128)")
    p.add_argument("--resize", choices=("pad", "resize", "crop"), default="pad",
                   help="2-D: how a slice becomes P x P (pad: keep its aspect ratio; resize: "
                   "stretch; crop: centre-crop/pad without scaling) (default: pad)")
    p.add_argument("--out", default="runs/superpixels", metavar="DIR",
                   help="output folder (default: runs/superpixels)")
    p.add_argument("--slices", type=at_least(1), default=8, help="2-D: slices shown (default: 8)")
    p.add_argument("--n-segments", type=at_least(1), default=None,
                   help="superpixels per slice (default: 100), or supervoxels per volume with "
                   "--3d (default: 2000)")
    p.add_argument("--3d", dest="three_d", action="store_true",
                   help="supervoxels of the whole volume (its own resolution and voxel "
                   "spacing): writes supervoxels_<case>.nii.gz with the image's affine and a "
                   "PNG of three orthogonal slices with the boundaries")
    p.add_argument("--compactness", type=float, default=0.1,
                   help="SLIC compactness on [0, 1]-scaled intensities (default: 0.1)")
    p.add_argument("--device", default="auto",
                   help="auto, cpu, cuda or cuda:N (default: auto = cuda if available)")


def _find_case(args, out: Path):
    """The case to show and the dataset it belongs to: a NIfTI file is a dataset of one."""
    from supercl.data.scanning import Case, DatasetInfo, _nifti_stem, _normalise_modality
    from supercl.data.nifti import scan_dataset
    from supercl.train.dataset import resolve_data

    path = Path(args.data) if args.data is not None else None
    if path is not None and path.is_file() and path.name != "dataset.json":
        name = _nifti_stem(path.name)
        if name is None:
            raise ValueError(f"--data {path}: not a NIfTI file (.nii or .nii.gz)")
        if args.case is not None:
            raise ValueError(f"--case is for a dataset folder; --data {path} is one file")
        modality = "CT" if args.modality is None else _normalise_modality(args.modality)
        case = Case(name, path)
        return case, DatasetInfo(path.parent, (case,), modality, {0: "background"}, "file")
    if path is None:  # the phantom is written into OUT; with --data, OUT waits for the checks
        out.mkdir(parents=True, exist_ok=True)
    info = scan_dataset(resolve_data(args.data, out), modality=args.modality)
    if args.case is None:
        return info.cases[0], info
    case = next((c for c in info.cases if c.name == args.case), None)
    if case is None:
        names = [c.name for c in info.cases]
        raise ValueError(f"--case {args.case!r} is not in {info.root} (cases: {', '.join(names[:8])}"
                         f"{' ...' if len(names) > 8 else ''})")
    return case, info


def run_superpixels(args: argparse.Namespace) -> int:
    from supercl._runtime import resolve_device
    from supercl.train.dataset import DataConfig

    # The data options, checked by the config before anything is read or written.
    data = DataConfig(window=tuple(args.window), patch_size=args.patch_size, resize=args.resize)
    device = resolve_device(args.device)
    out = Path(args.out)
    case, info = _find_case(args, out)
    if args.three_d:
        return _supervoxels(args, case, info, out, device)
    return _superpixels_2d(args, data, case, info, out, device)


def _superpixels_2d(args, data, case, info, out: Path, device) -> int:
    import numpy as np
    import torch

    from supercl.data.nifti import load_case
    from supercl.ops import slic
    from supercl.viz import BOUNDARY, grey_levels, overlay, plot_image_grid

    n_segments = 100 if args.n_segments is None else args.n_segments
    images, _, _ = load_case(case, modality=info.modality, window=data.window,
                             patch_size=data.patch_size, resize=data.resize)
    out.mkdir(parents=True, exist_ok=True)
    x = torch.from_numpy(images).to(device)
    slic(x[:1], n_segments=n_segments, compactness=args.compactness)  # warm-up
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    labels = slic(x, n_segments=n_segments, compactness=args.compactness)
    if x.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    picks = np.linspace(0, x.shape[0] - 1, min(args.slices, x.shape[0])).round().astype(int)
    grey = grey_levels(images)
    tiles = [overlay(grey[i], labels[i].cpu().numpy(), colour=BOUNDARY) for i in picks]
    counts = [int(labels[i].max()) + 1 for i in range(labels.shape[0])]
    path = plot_image_grid(
        tiles, [f"{case.name}, slice {i} of {x.shape[0]}: {counts[i]} superpixels" for i in picks],
        out / f"superpixels_{case.name}.png", columns=4,
        title=f"SLIC superpixels of {case.name} ({info.root}), n_segments={n_segments}, "
              f"compactness={args.compactness:g}")
    print(f"{case.name}: {x.shape[0]} slices of {data.patch_size}x{data.patch_size}, "
          f"{np.mean(counts):.0f} superpixels per slice, SLIC {1e3 * seconds / x.shape[0]:.2f} "
          f"ms/slice on {x.device.type}; wrote {path} (slices {', '.join(map(str, picks))})")
    return 0


def _supervoxels(args, case, info, out: Path, device) -> int:
    """``--3d``: SLIC supervoxels of the whole volume at its own resolution, with the voxel
    spacing of its header; writes ``supervoxels_<case>.nii.gz`` (int32 labels, the image's
    affine and header) and ``supervoxels_<case>.png`` (the three orthogonal slices through the
    volume's centre with the supervoxel boundaries)."""
    import nibabel as nib
    import numpy as np
    import torch

    from supercl.ops import slic
    from supercl.viz import BOUNDARY, grey_levels, overlay, plot_image_grid

    image = nib.load(str(case.image))
    volume = np.asarray(image.dataobj, dtype=np.float32)
    if volume.ndim == 4 and volume.shape[3] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise ValueError(f"{case.image} holds a {volume.ndim}-D image; --3d needs a 3-D volume")
    out.mkdir(parents=True, exist_ok=True)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    if info.modality == "CT":  # the CT window, as the 2-D slices see it; MRI as it is
        volume = np.clip(volume, *args.window)
    n_segments = args.n_segments if args.n_segments is not None else 2000
    # The volume in its stored axis order: the labels then share the image's affine unchanged.
    x = torch.from_numpy(volume).to(device)
    start = time.perf_counter()
    labels = slic(x, n_segments=n_segments, compactness=args.compactness, spacing=spacing,
                  spatial_dims=3)
    if x.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    labels = labels.cpu().numpy()
    header = image.header.copy()
    header.set_data_dtype(np.int32)
    nifti_path = out / f"supervoxels_{case.name}.nii.gz"
    nib.save(nib.Nifti1Image(labels, image.affine, header), str(nifti_path))

    grey = grey_levels(volume)
    centre = [s // 2 for s in volume.shape]
    tiles, titles = [], []
    planes = {"L": "sagittal", "R": "sagittal", "A": "coronal", "P": "coronal", "S": "axial",
              "I": "axial"}
    for axis, code in enumerate(nib.aff2axcodes(image.affine)):
        name = planes.get(code, f"axis {axis}")
        index = [slice(None)] * 3
        index[axis] = centre[axis]
        plane = tuple(index)
        # Each plane shown with its first remaining axis down (transposed: NIfTI x runs
        # left-right), and resampled to square voxels so that anisotropic volumes look right.
        g, lab = grey[plane].T, labels[plane].T
        rows, cols = [a for a in range(3) if a != axis][::-1]
        ry = max(1, round(spacing[rows] / min(spacing[rows], spacing[cols])))
        rx = max(1, round(spacing[cols] / min(spacing[rows], spacing[cols])))
        g, lab = (np.repeat(np.repeat(a, ry, 0), rx, 1) for a in (g, lab))
        tiles.append(overlay(g[::-1], lab[::-1], colour=BOUNDARY))
        titles.append(f"{name} {centre[axis]}: {len(np.unique(labels[plane]))} supervoxels")
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, width - t.shape[1]), (0, 0)),
                    constant_values=255) for t in tiles]
    png_path = plot_image_grid(
        tiles, titles, out / f"supervoxels_{case.name}.png", columns=3,
        title=f"SLIC supervoxels of {case.name}, n_segments={n_segments}, "
              f"compactness={args.compactness:g}, spacing {' x '.join(f'{v:.3g}' for v in spacing)}")
    print(f"{case.name}: volume {volume.shape}, spacing {spacing}, {int(labels.max()) + 1} "
          f"supervoxels, SLIC {seconds:.2f} s on {x.device.type}; wrote {nifti_path} and "
          f"{png_path}")
    return 0
