"""The ``supercl`` command: pre-train, fine-tune, evaluate, look at superpixels, run the demo.

::

    supercl superpixels [--data FILE_OR_FOLDER] --out DIR      # SLIC overlays of one volume
    supercl superpixels --3d [--data FILE_OR_FOLDER] --out DIR # supervoxels: NIfTI + 3-view PNG
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
from pathlib import Path
from typing import Callable

from supercl.demo import add_demo_options, at_least

__all__ = ["main", "build_parser", "Command", "COMMANDS"]


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


def _superpixels(args) -> int:
    from supercl.superpixels import run_superpixels

    return run_superpixels(args)


def _demo(args) -> int:
    from supercl.demo import run_demo

    return run_demo(args)


def _ablate(args) -> int:
    from supercl.ablate import run_ablate

    return run_ablate(args)


# --------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, naming the option and pointing at
    ``--help``: the 20-30 lines of usage before the one that matters hid it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _pretrain_parser(p: argparse.ArgumentParser) -> None:
    _data_options(p, recipe=True)
    _run_options(p, "runs/pretrain", epochs=20, batch=16, lr=0.05,
                 recipe={"epochs": 100, "lr": 0.01})
    _pretrain_options(p)


def _finetune_parser(p: argparse.ArgumentParser) -> None:
    _data_options(p)
    _run_options(p, "runs/finetune", epochs=50, batch=8, lr=1e-3)
    _finetune_options(p)


def _evaluate_parser(p: argparse.ArgumentParser) -> None:
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


def _superpixels_parser(p: argparse.ArgumentParser) -> None:
    from supercl.superpixels import add_superpixels_options

    add_superpixels_options(p, at_least)


def _ablate_parser(p: argparse.ArgumentParser) -> None:
    from supercl.ablate import add_ablate_options

    add_ablate_options(p)


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand: its one-line ``help`` (in ``supercl --help``), its ``description``
    (in ``supercl NAME --help``), the function that adds its options and the one that runs
    it (``run(args) -> exit status``). A new command is one more entry of :data:`COMMANDS`."""

    help: str
    description: str
    options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: The subcommands, in the order ``supercl --help`` lists them.
COMMANDS: dict[str, Command] = {
    "superpixels": Command(
        "SLIC overlays (PNG) of the slices of one volume",
        "Runs supercl.ops.slic on every slice of one volume (a NIfTI file, or a case of a "
        "dataset folder; on the GPU if there is one) and writes a PNG montage of superpixel "
        "boundaries; with --3d, supervoxels of the whole volume as NIfTI plus a PNG.",
        _superpixels_parser, _superpixels),
    "pretrain": Command(
        "SuperCL pre-training of a U-Net encoder",
        "Pre-trains a U-Net encoder with L = l1 L_ins + l2 L_intra + l3 L_inter on the "
        "pre-training volumes of the split (labels unused). Writes config.json, split.json, "
        "metrics.jsonl, checkpoint.pt, encoder.pt, superpixels.png and loss_curves.png to "
        "--out. Ctrl-C writes a checkpoint; --resume continues.",
        _pretrain_parser, _pretrain),
    "finetune": Command(
        "fine-tune a U-Net on the labeled volumes, then evaluate",
        "Fine-tunes the whole U-Net (encoder from --pretrained, or from scratch) with "
        "cross-entropy + Dice and Adam on a cosine schedule, selects the epoch by validation "
        "DSC (best.pt) and evaluates it on the test volumes (evaluation.json, predictions.png, "
        "dsc.png).",
        _finetune_parser, _finetune),
    "evaluate": Command(
        "DSC, JC and HD95 of a fine-tuned model on the test volumes",
        "Scores a fine-tuning run's best.pt (or a given checkpoint) on the test volumes of the "
        "split: DSC and JC per class over the whole test set, per-volume DSC and HD95. The data "
        "options default to the run's own (from its checkpoint); give one only to score the "
        "run on other settings.",
        _evaluate_parser, _evaluate),
    "demo": Command(
        "the whole job on the embedded phantom, in minutes on a CPU",
        "Writes the phantom MSD dataset, pre-trains with SuperCL, fine-tunes on 10% of the "
        "labeled volumes from scratch and from the pre-trained encoder, evaluates both on the "
        "test volumes, prints a DSC/JC table and writes results.json and report.md with "
        "figures. It is one run with one seed: `supercl ablate` is how the method is judged.",
        add_demo_options, _demo),
    "ablate": Command(
        "seeded ablations of SuperCL's terms, with 95%% CIs",
        "Pre-trains each arm (scratch, PCL, PCL + ILCP, PCL + IGCP, SuperCL with supercl's and "
        "with the reference views) with several seeds, fine-tunes each on several label draws "
        "per label fraction, scores the test volumes once per run and writes results.json, "
        "report.md (mean DSC with 95 % CIs, paired differences to scratch) and ablation.png.",
        _ablate_parser, _ablate),
    "export": Command(_EXPORT_HELP, _EXPORT_DESCRIPTION, _export_options, _export),
}


def build_parser() -> argparse.ArgumentParser:
    from supercl import __version__

    parser = _Parser(
        prog="supercl",
        description="SuperCL: superpixel-guided contrastive pre-training for medical image "
        "segmentation. Pre-train a U-Net encoder on unlabeled CT/MRI slices, fine-tune on a "
        "few labeled volumes, evaluate DSC/JC. Without --data, the embedded phantom CT "
        "dataset is used.",
    )
    parser.add_argument("--version", action="version", version=f"supercl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = {}  # the parser of each subcommand, by name
    for name, command in COMMANDS.items():
        p = parser.commands[name] = sub.add_parser(name, help=command.help,
                                                   description=command.description)
        command.options(p)
        p.set_defaults(run=command.run)
    return parser


def _runs_inside(folder: Path, files: tuple[str, ...]) -> list[Path]:
    """The run folders one or two levels below ``folder`` that hold one of ``files`` (the
    demo's runs/demo/supercl, the ablation's runs/ablate/runs/NAME)."""
    found = [p.parent for f in files for pattern in (f"*/{f}", f"*/*/{f}")
             for p in folder.glob(pattern)]
    return sorted(set(found))


def _check_run_folder(path: str, files: tuple[str, ...], option: str, what: str) -> None:
    """A folder given where a run is expected, that holds none of the run's ``files`` but
    holds runs: name them (``supercl evaluate runs/demo`` -> runs/demo/scratch, ...)."""
    folder = Path(path)
    if not folder.is_dir() or any((folder / f).is_file() for f in files):
        return
    runs = _runs_inside(folder, files[:1]) or _runs_inside(folder, files)
    if runs:
        shown = ", ".join(map(str, runs[:6])) + (" ..." if len(runs) > 6 else "")
        raise FileNotFoundError(f"{option}{folder} is not {what} (no {' or '.join(files)}) "
                                f"but holds runs: {shown}; give one of them")


def _check_paths(args: argparse.Namespace) -> None:
    """Paths checked before anything is loaded or written (each message names its option)."""
    out = getattr(args, "out", None)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder: choose a folder "
                              "(nothing was written)")
    if args.command == "evaluate":
        _check_run_folder(args.target, ("best.pt",), "", "a fine-tuning run")
        target = Path(args.target)
        if (target.is_dir() and not (target / "best.pt").is_file()
                and (target / "encoder.pt").is_file()):
            raise FileNotFoundError(
                f"{target} is a pre-training run (encoder.pt, no best.pt): evaluate scores a "
                f"fine-tuned model; fine-tune first: supercl finetune --pretrained {target} ...")
    if getattr(args, "pretrained", None) is not None:
        _check_run_folder(args.pretrained, ("encoder.pt", "checkpoint.pt"), "--pretrained ",
                          "a pre-training run")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, recorded by the demo in results.json
    from supercl._validate import SettingError
    from supercl._runtime import check_device
    from supercl.train.loop import NonFiniteLossError

    if getattr(args, "progress", False) and not sys.stderr.isatty():
        # Progress bars redrawn into a log file made a 207 KB demo log; without a terminal
        # the runs print their one line per epoch and no bar.
        args.progress = False
    if hasattr(args, "device"):  # once, up front, before any folder is made: one line
        try:
            check_device(args.device)
        except ValueError as err:
            print(f"supercl {args.command}: error: --device: {err}", file=sys.stderr)
            return 2

    try:
        _check_paths(args)
        return args.run(args)
    except SettingError as err:
        # The settings are validated once, by the config dataclasses, before a run writes
        # anything; one line naming the option, as for argparse's own errors.
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
