"""The ``supercl`` command: pre-train, fine-tune, evaluate, look at superpixels, run the demo.

::

    supercl superpixels [--data PATH] [--case NAME] --out DIR   # SLIC overlays of one volume
    supercl superpixels --3d [--data PATH] --out DIR            # supervoxels: NIfTI + 3-view PNG
    supercl pretrain    [--data PATH] --out DIR                 # SuperCL pre-training
    supercl finetune    [--data PATH] --pretrained RUN --out DIR
    supercl evaluate    RUN_OR_CHECKPOINT [--data PATH] [--out DIR]
    supercl demo        [--out DIR]                             # the whole job on the phantom
    supercl ablate      [--out DIR] [--dataset phantom-v2|mni152] # seeded ablations with CIs
    supercl export      RUN --nnunet OUT.pth                    # nnU-Net v2 pre-trained weights

Without ``--data`` every command uses the embedded phantom CT dataset (written into the run
folder). ``torchrun --nproc_per_node=N -m supercl pretrain ...`` pre-trains with
DistributedDataParallel. Every option has a default that works on the embedded data.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from supercl.demo import add_demo_options, at_least

__all__ = ["main", "build_parser"]


# --------------------------------------------------------------------------- options
def _data_options(p: argparse.ArgumentParser, run_defaults: bool = False,
                  recipe: bool = False) -> None:
    """The data options. ``run_defaults`` (evaluate): every default is None, meaning "the
    setting of the run being scored", so that a value given equal to the usual default still
    counts as given."""
    g = p.add_argument_group("data" + (" (each defaults to the run's own setting, from its "
                                        "checkpoint)" if run_defaults else ""))
    patch_size = 128  # one default for every command (superpixels included)

    def default(value):
        return None if run_defaults else value

    def shown(text):
        return "the run's" if run_defaults else text

    g.add_argument("--data", default=None, metavar="PATH",
                   help="a Medical Segmentation Decathlon folder (dataset.json, imagesTr/, "
                   "labelsTr/) or a folder of .nii/.nii.gz images (default: "
                   + ("the run's data" if run_defaults else "the embedded phantom CT dataset, "
                      "written to OUT/phantom") + ")")
    g.add_argument("--labels", default=None, metavar="PATH",
                   help="for a plain image folder: the folder of label maps, matched to the "
                   "images by file name (default: " + shown("none, images unlabeled") + ")")
    g.add_argument("--modality", default=None, metavar="NAME",
                   help="CT (windowed to --window) or MRI (per-volume z-score) (default: "
                   + shown("dataset.json's modality, CT for plain folders") + ")")
    g.add_argument("--window", type=float, nargs=2, default=default((-200.0, 300.0)),
                   metavar=("LOW", "HIGH"), help="CT intensity window in Hounsfield units, "
                   "scaled to [0, 1] (default: " + shown("-200 300") + ")")
    g.add_argument("--patch-size", type=int, default=None if recipe else default(patch_size),
                   metavar="P", help="slices become P x P, a multiple of 2**depth (default: "
                   + shown(str(patch_size)) + ("; 512 with --recipe reference" if recipe else "")
                   + ")")
    g.add_argument("--resize", choices=("pad", "resize", "crop"), default=default("pad"),
                   help="pad: scale each slice so that its longer side is P, keeping its aspect "
                   "ratio, and pad the shorter side; resize: stretch it to P x P; crop: "
                   "centre-crop/pad it without scaling (default: " + shown("pad") + ")")
    g.add_argument("--label-fraction", type=float, default=default(0.1), metavar="F",
                   help="fraction of the labeled training volumes used for fine-tuning, e.g. "
                   "0.1, 0.25, 1.0 (default: " + shown("0.1") + ")")
    g.add_argument("--val-fraction", type=float, default=default(0.2), metavar="F",
                   help="fraction of the labeled volumes held out for model selection "
                   "(default: " + shown("0.2") + ")")
    g.add_argument("--test-fraction", type=float, default=default(0.2), metavar="F",
                   help="fraction of the labeled volumes held out for the test (default: "
                   + shown("0.2") + ")")
    g.add_argument("--split-seed", type=int, default=default(0),
                   help="seed of the split by volume; use the same for pre-training and "
                   "fine-tuning (default: " + shown("0") + ")")
    g.add_argument("--label-seed", type=int, default=None,
                   help="seed of which training volumes are labeled, apart from the split's "
                   "test and validation volumes (default: " + shown("drawn from --split-seed")
                   + ")")


def _run_options(p: argparse.ArgumentParser, out: str, epochs: int, batch: int, lr: float,
                 recipe: dict | None = None) -> None:
    """``recipe``: the reference recipe's values of --epochs and --lr; these options then
    default to None, resolved by the recipe (see _pretrain_config)."""
    g = p.add_argument_group("run")
    ref = (lambda name: f"; {recipe[name]:g} with --recipe reference") if recipe else (lambda name: "")
    g.add_argument("--out", default=out, metavar="DIR", help=f"run folder (default: {out})")
    g.add_argument("--epochs", type=int, default=None if recipe else epochs,
                   help=f"epochs (default: {epochs}{ref('epochs')})")
    g.add_argument("--batch-size", type=int, default=batch,
                   help=f"slices per step (per process) (default: {batch})")
    g.add_argument("--lr", type=float, default=None if recipe else lr,
                   help=f"base learning rate (default: {lr:g}{ref('lr')})")
    g.add_argument("--weight-decay", type=float, default=None,
                   help="weight decay (default: 1e-4 for pre-training, 0 for fine-tuning)")
    g.add_argument("--base-channels", type=int, default=32,
                   help="U-Net channels at full resolution, doubled per level (default: 32, "
                   "the reference 32 -> 512)")
    g.add_argument("--depth", type=int, default=4, help="U-Net down-samplings (default: 4)")
    _backbone_options(g)
    g.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="auto",
                   help="mixed precision: auto = bf16 autocast on a GPU, off on the CPU "
                   "(default: auto)")
    g.add_argument("--device", default="auto",
                   help="auto, cpu, cuda or cuda:N (default: auto = cuda if available)")
    g.add_argument("--seed", type=int, default=0, help="seed of weights, batches and views (default: 0)")
    g.add_argument("--threads", type=int, default=0,
                   help="CPU threads, 0 for torch's default (default: 0)")
    g.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                   help="also write the checkpoint every STEPS steps; it is always written "
                   "after every epoch and on Ctrl-C/SIGTERM (default: 0)")
    g.add_argument("--max-steps", type=int, default=0,
                   help="stop after this many optimizer steps; the schedule spans them "
                   "(default: 0 = all epochs)")
    g.add_argument("--crop-size", type=int, default=0, metavar="C",
                   help="train on random C x C crops of the --patch-size slices, which keeps "
                   "small structures at their native size (fine-tuning validates and tests on "
                   "whole slices) (default: 0 = whole slices)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint.pt")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars")
    g.add_argument("--tensorboard", action="store_true",
                   help="also log to OUT/tensorboard (needs the tensorboard package)")
    g.add_argument("--no-figures", dest="figures", action="store_false", help="write no PNGs")


def _backbone_options(g) -> None:
    """--backbone and its settings (supercl.models.backbones)."""
    g.add_argument("--backbone", choices=("supercl", "nnunet", "monai"), default="supercl",
                   help="the network whose encoder is trained: supercl's U-Net (--base-channels, "
                   "--depth), the 2-D network nnU-Net v2 planned (--plans; needs "
                   "supercl[nnunet]) or MONAI's BasicUNet (features b, b, 2b, 4b, 8b, b for "
                   "--base-channels b; needs supercl[monai]) (default: supercl)")
    g.add_argument("--plans", default=None, metavar="FILE",
                   help="--backbone nnunet: the nnUNetPlans.json of nnUNetv2_plan_and_preprocess "
                   "(or its nnUNet_preprocessed/DatasetXXX folder)")
    g.add_argument("--plans-configuration", default="2d", metavar="NAME",
                   help="--backbone nnunet: the plans' configuration (default: 2d)")


def _export(args) -> int:
    from supercl.train.export import export_nnunet

    done = export_nnunet(args.source, args.nnunet, plans=args.plans,
                         configuration=args.plans_configuration, seed=args.seed)
    print(f"wrote {done['file']}: the encoder pre-trained in {done['source']} "
          f"({done['pretrained_tensors']} tensors); the decoder ({done['initialised_tensors']} "
          "tensors) holds nnU-Net's own initialisation, not pre-trained. Train with: "
          f"nnUNetv2_train DATASET 2d FOLD -pretrained_weights {done['file']}")
    return 0


_EXPORT_HELP = "write a pre-trained encoder as nnU-Net v2 pre-trained weights"
_EXPORT_DESCRIPTION = (
    "Writes the encoder of a pre-training run made with --backbone nnunet into the whole "
    "network nnU-Net builds from the plans, as a checkpoint that nnUNetv2_train ... "
    "-pretrained_weights FILE loads. The encoder carries the pre-trained weights; the decoder "
    "carries nnU-Net's own initialisation (it is not pre-trained). See docs/nnunet.md.")


def _export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="RUN", help="pre-training run folder (or its encoder.pt)")
    p.add_argument("--nnunet", required=True, metavar="OUT.pth", help="the file to write")
    p.add_argument("--plans", default=None, metavar="FILE",
                   help="nnUNetPlans.json to build the network from (default: the run's)")
    p.add_argument("--plans-configuration", default=None, metavar="NAME",
                   help="the plans' configuration (default: the run's, 2d)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the decoder's initialisation (default: 0)")


def _pretrain_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SuperCL")
    g.add_argument("--recipe", choices=("default", "reference"), default="default",
                   help="preset of the settings marked 'reference' below: 'reference' is the "
                   "published code's (512 x 512 slices, ILCP at the bottleneck on every 16th "
                   "pixel, ASP by area with a SLIC map per view, threshold PCL, terms scaled by "
                   "t/0.07, L_inter's view-pair edge without merging, the reference views, SGD "
                   "lr 0.01 for 100 epochs); options given explicitly override it (default: "
                   "default)")
    g.add_argument("--optimizer", choices=("sgd", "adamw"), default=None,
                   help="SGD with momentum 0.9, or AdamW; cosine schedule either way (default: sgd)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    g.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps (default: 0)")
    g.add_argument("--embed-dim", type=int, default=512,
                   help="projection head width and output (default: 512, the reference MLP 512-512)")
    g.add_argument("--n-segments", type=int, default=100,
                   help="SLIC superpixels per slice (default: 100, the reference)")
    g.add_argument("--compactness", type=float, default=0.1,
                   help="SLIC compactness on [0, 1]-scaled intensities; 0.1 is the reference's "
                   "10 on 0..100 (default: 0.1)")
    g.add_argument("--slic-iters", type=int, default=10, help="SLIC iterations (default: 10)")
    g.add_argument("--ilcp-level", type=int, default=None, metavar="L",
                   help="encoder level whose pixels ILCP contrasts: 0 = full resolution, -1 = "
                   "the bottleneck (default: the deepest level where a superpixel covers at "
                   "least 4 feature pixels, (P / 2**L)**2 / n_segments >= 4; reference: -1)")
    g.add_argument("--l-ins", type=float, default=1.0, help="weight of L_ins (default: 1)")
    g.add_argument("--l-intra", type=float, default=1.0, help="weight of L_intra, ILCP (default: 1)")
    g.add_argument("--l-inter", type=float, default=0.5, help="weight of L_inter, IGCP (default: 0.5)")
    g.add_argument("--temperature", type=float, default=0.1, help="contrastive temperature (default: 0.1)")
    g.add_argument("--base-temperature", type=float, default=None,
                   help="every term is scaled by temperature / base temperature (default: the "
                   "temperature, scale 1; reference: 0.07)")
    g.add_argument("--pixel-stride", type=int, default=None,
                   help="ILCP keeps every N-th pixel (default: 1 = all; reference: 16)")
    g.add_argument("--asp-normalize", choices=("mean", "area"), default=None,
                   help="ASP divides superpixel sums by their size (mean) or by h*w as the "
                   "reference code does (area) (default: mean)")
    g.add_argument("--asp-segments", choices=("shared", "own"), default=None,
                   help="ASP of v2 with v1's SLIC map (shared; the views are pixel-aligned) or "
                   "its own (own, the reference) (default: shared)")
    g.add_argument("--inter-positives", choices=("components", "pair_edge"), default=None,
                   help="L_inter's positives: the components of the k-NN graph with the "
                   "view-pair edges, or those of the k-NN graph plus the partner view without "
                   "merging (pair_edge, the reference) (default: components)")
    g.add_argument("--inter-graph", choices=("images", "views"), default=None,
                   help="nodes of IGCP's k-NN graph: the images (the mean of each image's two "
                   "ASP vectors; every edge joins two images, as in WCL), or the 2B views (the "
                   "reference, where a view's nearest neighbour is mostly its own partner) "
                   "(default: images; reference: views)")
    g.add_argument("--knn-k", type=int, default=1, help="neighbours of IGCP's k-NN graph (default: 1)")
    g.add_argument("--pcl-threshold", type=float, default=0.1,
                   help="PCL: slices closer than this in relative position are positives "
                   "(default: 0.1)")
    g.add_argument("--pcl-relation", choices=("bins", "threshold"), default=None,
                   help="PCL's positives: 'threshold' is the published |p_i - p_j| < "
                   "threshold; 'bins' the positions binned into bins of that width, pairs "
                   "across a bin edge being negatives (default: bins; reference: threshold)")
    g.add_argument("--no-positions", dest="use_positions", action="store_false",
                   help="L_ins as SimCLR NT-Xent instead of PCL")
    g.add_argument("--views", choices=("default", "reference"), default=None,
                   help="augmentations of the four views: supercl's (flip, +-15 degrees, scale "
                   "0.85-1.15, weak elastic) or the reference code's (both mirrors, any "
                   "rotation, scale 0.7-1.3, strong elastic, blur always on) (default: default)")


def _finetune_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--pretrained", default=None, metavar="RUN",
                   help="pre-training run folder (or its encoder.pt); only the encoder is "
                   "loaded (default: none, train from scratch)")
    g.add_argument("--dice-weight", type=float, default=1.0,
                   help="loss = cross-entropy + W * soft Dice (default: 1)")
    g.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no flip/rotation/scale augmentation of the labeled slices")
    g.add_argument("--no-evaluate", dest="evaluate", action="store_false",
                   help="do not evaluate the best model on the test volumes at the end")
    g.add_argument("--oversample-foreground", type=float, default=0.0, metavar="P",
                   help="replace each slice of a batch with probability P by a foreground draw "
                   "(a class uniformly, then one of its pixels; the crop is centred on it), as "
                   "nnU-Net does (default: 0)")
    g.add_argument("--val-every", type=int, default=1, metavar="N",
                   help="validate every N epochs and after the last (default: 1)")
    g.add_argument("--patience", type=int, default=0, metavar="N",
                   help="stop when N validations in a row found no better validation DSC, "
                   "counted only once the validation DSC has been above 0: a run still at 0 is "
                   "never stopped early (default: 0 = train every epoch)")


def _fill(cls, args: argparse.Namespace, **overrides):
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif hasattr(args, f.name):
            v = getattr(args, f.name)
            values[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**values)


#: The options of each part of a pre-training config, as LossConfig / ViewConfig fields.
_LOSS_OPTIONS = ("l_ins", "l_intra", "l_inter", "temperature", "base_temperature",
                 "pixel_stride", "asp_normalize", "asp_segments", "inter_positives",
                 "inter_graph", "knn_k",
                 "pcl_threshold", "use_positions", "pcl_relation")


def _pretrain_config(args):
    """The recipe (--recipe) with every option that was given on top; options whose default
    is None take the recipe's value."""
    from supercl.train import PretrainConfig, recipe_config

    def given(name):
        return getattr(args, name, None) is not None

    loss = {k: getattr(args, k) for k in _LOSS_OPTIONS if given(k)}
    views = {"recipe": args.views} if given("views") else {}
    top = {}
    for f in dataclasses.fields(PretrainConfig):
        if f.name in ("loss", "views", "recipe") or not given(f.name):
            continue
        v = getattr(args, f.name)
        top[f.name] = tuple(v) if isinstance(v, list) else v
    if args.weight_decay is None:
        top["weight_decay"] = 1e-4
    return recipe_config(args.recipe, loss=loss, views=views, **top)


def _finetune_config(args):
    from supercl.train import FinetuneConfig

    wd = 0.0 if args.weight_decay is None else args.weight_decay
    return _fill(FinetuneConfig, args, weight_decay=wd)


# --------------------------------------------------------------------------- commands
def _pretrain(args) -> int:
    from supercl.train import pretrain

    summary = pretrain(_pretrain_config(args))
    return 0 if summary["status"] == "finished" else 130


def _finetune(args) -> int:
    from supercl.train import finetune

    summary = finetune(_finetune_config(args))
    return 0 if summary["status"] == "finished" else 130


def _evaluate(args) -> int:
    from supercl.train import evaluate
    from supercl.train.dataset import DataConfig

    # Data options not given (None) take the run's own settings (patch size, window, split),
    # so that `supercl evaluate RUN` scores RUN as it was trained; a given one always counts,
    # even when it equals the usual default.
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(DataConfig)}
    evaluate(args.target, given, out=args.out, device=args.device, threads=args.threads,
             figures=args.figures, progress=args.progress)
    return 0


def _supervoxels(args, case, info, out: Path, device) -> int:
    """``superpixels --3d``: SLIC supervoxels of the whole volume at its own resolution, with
    the voxel spacing of its header; writes ``supervoxels_<case>.nii.gz`` (int32 labels, the
    image's affine and header) and ``supervoxels_<case>.png`` (the three orthogonal slices
    through the volume's centre with the supervoxel boundaries)."""
    import nibabel as nib
    import numpy as np
    import torch

    from supercl.ops import slic
    from supercl.viz import BOUNDARY, overlay, plot_image_grid

    image = nib.load(str(case.image))
    volume = np.asarray(image.dataobj, dtype=np.float32)
    if volume.ndim == 4 and volume.shape[3] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise ValueError(f"{case.image} holds a {volume.ndim}-D image; --3d needs a 3-D volume")
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

    lo, hi = np.percentile(volume, [1, 99])
    grey = (np.clip((volume - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
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


def _superpixels(args) -> int:
    import numpy as np
    import torch

    from supercl.data.nifti import load_case, scan_dataset
    from supercl.ops import slic
    from supercl.train.dataset import DataConfig, resolve_data
    from supercl._runtime import resolve_device
    from supercl.viz import BOUNDARY, grey_levels, overlay, plot_image_grid

    data = _fill(DataConfig, args)  # checks the data options
    device = resolve_device(args.device)
    out = Path(args.out)
    if args.data is None:  # the phantom is written into OUT; with --data, OUT waits for the checks
        out.mkdir(parents=True, exist_ok=True)
    info = scan_dataset(resolve_data(args.data, out), labels=args.labels, modality=args.modality)
    names = [c.name for c in info.cases]
    case = info.cases[0] if args.case is None else next((c for c in info.cases if c.name == args.case), None)
    if case is None:
        raise ValueError(f"--case {args.case!r} is not in {info.root} (cases: {', '.join(names[:8])}"
                         f"{' ...' if len(names) > 8 else ''})")
    if args.three_d:
        out.mkdir(parents=True, exist_ok=True)
        return _supervoxels(args, case, info, out, device)
    if args.n_segments is None:
        args.n_segments = 100
    images, _, _ = load_case(case, modality=info.modality, window=data.window,
                             patch_size=data.patch_size, resize=data.resize,
                             class_names=info.class_names)
    out.mkdir(parents=True, exist_ok=True)
    x = torch.from_numpy(images).to(device)
    slic(x[:1], n_segments=args.n_segments, compactness=args.compactness)  # warm-up
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    labels = slic(x, n_segments=args.n_segments, compactness=args.compactness)
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
        title=f"SLIC superpixels of {case.name} ({info.root}), n_segments={args.n_segments}, "
              f"compactness={args.compactness:g}")
    print(f"{case.name}: {x.shape[0]} slices of {args.patch_size}x{args.patch_size}, "
          f"{np.mean(counts):.0f} superpixels per slice, SLIC {1e3 * seconds / x.shape[0]:.2f} "
          f"ms/slice on {x.device.type}; wrote {path} (slices {', '.join(map(str, picks))})")
    return 0


def _demo(args) -> int:
    from supercl.demo import run_demo

    return run_demo(args)


def _ablate(args) -> int:
    from supercl.ablate import run_ablate

    return run_ablate(args)


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supercl",
        description="SuperCL: superpixel-guided contrastive pre-training for medical image "
        "segmentation. Pre-train a U-Net encoder on unlabeled CT/MRI slices, fine-tune on a "
        "few labeled volumes, evaluate DSC/JC. Without --data, the embedded phantom CT "
        "dataset is used.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = {}  # the parser of each subcommand, by name

    p = parser.commands["superpixels"] = sub.add_parser("superpixels", help="SLIC overlays (PNG) of the slices of one volume",
                       description="Runs supercl.ops.slic on every slice of one volume (on the "
                       "GPU if there is one) and writes a PNG montage of superpixel boundaries; "
                       "with --3d, supervoxels of the whole volume as NIfTI plus a PNG.")
    _data_options(p)
    p.add_argument("--case", default=None, help="case name (default: the first case)")
    p.add_argument("--out", default="runs/superpixels", metavar="DIR",
                   help="output folder (default: runs/superpixels)")
    p.add_argument("--slices", type=at_least(1), default=8, help="slices shown (default: 8)")
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
    p.set_defaults(run=_superpixels)

    p = parser.commands["pretrain"] = sub.add_parser("pretrain", help="SuperCL pre-training of a U-Net encoder",
                       description="Pre-trains a U-Net encoder with L = l1 L_ins + l2 L_intra + "
                       "l3 L_inter on the pre-training volumes of the split (labels unused). "
                       "Writes config.json, split.json, metrics.jsonl, checkpoint.pt, "
                       "encoder.pt, superpixels.png and loss_curves.png to --out. Ctrl-C "
                       "writes a checkpoint; --resume continues.")
    _data_options(p, recipe=True)
    _run_options(p, "runs/pretrain", epochs=20, batch=16, lr=0.05,
                 recipe={"epochs": 100, "lr": 0.01})
    _pretrain_options(p)
    p.set_defaults(run=_pretrain)

    p = parser.commands["finetune"] = sub.add_parser("finetune", help="fine-tune a U-Net on the labeled volumes, then evaluate",
                       description="Fine-tunes the whole U-Net (encoder from --pretrained, or "
                       "from scratch) with cross-entropy + Dice and Adam on a cosine schedule, "
                       "selects the epoch by validation DSC (best.pt) and evaluates it on the "
                       "test volumes (evaluation.json, predictions.png, dsc.png).")
    _data_options(p)
    _run_options(p, "runs/finetune", epochs=50, batch=8, lr=1e-3)
    _finetune_options(p)
    p.set_defaults(run=_finetune)

    p = parser.commands["evaluate"] = sub.add_parser("evaluate", help="DSC, JC and HD95 of a fine-tuned model on the test volumes",
                       description="Scores a fine-tuning run's best.pt (or a given checkpoint) "
                       "on the test volumes of the split: DSC and JC per class over the whole "
                       "test set, per-volume DSC and HD95. The data options default to the "
                       "run's own (from its checkpoint); give one only to score the run on "
                       "other settings.")
    p.add_argument("target", metavar="RUN", help="fine-tuning run folder or checkpoint file")
    _data_options(p, run_defaults=True)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write evaluation.json and figures (default: the run folder)")
    p.add_argument("--device", default="auto",
                   help="auto, cpu, cuda or cuda:N (default: auto = cuda if available)")
    p.add_argument("--threads", type=at_least(0), default=0,
                   help="CPU threads, 0 for torch's default (default: 0)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="write no PNGs")
    p.set_defaults(run=_evaluate)

    p = parser.commands["demo"] = sub.add_parser("demo", help="the whole job on the embedded phantom, in minutes on a CPU",
                       description="Writes the phantom MSD dataset, pre-trains with SuperCL, "
                       "fine-tunes on 10% of the labeled volumes from scratch and from the "
                       "pre-trained encoder, evaluates both on the test volumes, prints a DSC/JC "
                       "table and writes results.json and report.md with figures.")

    add_demo_options(p)
    p.set_defaults(run=_demo)

    p = parser.commands["ablate"] = sub.add_parser(
                       "ablate", help="seeded ablations of SuperCL's terms, with 95%% CIs",
                       description="Pre-trains each arm (scratch, PCL, PCL + ILCP, PCL + IGCP, "
                       "SuperCL with supercl's and with the reference views) with several "
                       "seeds, fine-tunes each on several label draws per label fraction, "
                       "scores the test volumes once per run and writes results.json, "
                       "report.md (mean DSC with 95 % CIs, paired differences to scratch) and "
                       "ablation.png.")
    from supercl.ablate import add_ablate_options

    add_ablate_options(p)
    p.set_defaults(run=_ablate)
    p = parser.commands["export"] = sub.add_parser("export", help=_EXPORT_HELP,
                                                   description=_EXPORT_DESCRIPTION)
    _export_options(p)
    p.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, recorded by the demo in results.json
    from supercl._validate import SettingError
    from supercl._runtime import check_device
    from supercl.train.loop import NonFiniteLossError

    if hasattr(args, "device"):  # once, up front, before any folder is made: one line
        try:
            check_device(args.device)
        except ValueError as err:
            print(f"supercl {args.command}: error: --device: {err}", file=sys.stderr)
            return 2

    try:
        return args.run(args)
    except SettingError as err:
        # The settings are validated once, by the config dataclasses, before a run writes
        # anything; the subcommand's parser reports them with its usage line.
        parser.commands[args.command].error(f"{err.option} {err.detail}")
    except NonFiniteLossError as err:
        print(f"supercl {args.command}: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"supercl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # A second Ctrl-C (the first one asks for a checkpoint at the end of the step).
        # Checkpoints are written through a temporary file and a rename, so the last one
        # written is intact; one line instead of a traceback.
        again = ("run the same command again" if args.command == "demo"
                 else "add --resume to the same command")
        print(f"\nsupercl {args.command}: aborted by a second Ctrl-C; the last checkpoint "
              f"written is intact, {again} to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
