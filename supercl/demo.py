"""``supercl demo``: the whole SuperCL job on the embedded phantom, sized for a 2-core CPU.

1. writes the phantom MSD dataset (``OUT/phantom``);
2. pre-trains with SuperCL (``OUT/pretrain``);
3. fine-tunes on 10 % of the labeled training volumes twice, from scratch
   (``OUT/scratch``) and from the pre-trained encoder (``OUT/supercl``);
4. evaluates both on the test volumes;
5. prints a DSC / JC table per class and writes ``OUT/results.json`` and ``OUT/report.md``
   with the figures (``OUT/compare.png``: the two arms side by side).

Running it again: an interrupted demo (Ctrl-C, a killed process) continues where it stopped
when the same command is run again: finished stages are kept, the interrupted one resumes
from its checkpoint (``OUT/demo.json`` holds the settings, and other settings are refused). A
finished demo (``OUT/results.json``) is not overwritten unless ``--overwrite`` is given, which
first removes the demo's own files in ``OUT`` (``make demo`` passes it when the demo in
``runs/demo`` has finished).

The defaults are the ablation's recipe at its default scale (``supercl.ablate.SCALES``): the
phantom's native 128 x 128 slices, 64 x 64 crops for both stages, a U-Net of base width 16,
fine-tuning with half of every batch drawn on foreground, validation every 8 epochs and early
stopping after 4 validations without a better validation DSC; everything runs in a few
minutes on two CPU cores. It is one run with one seed: the table shows that the pipeline
works end to end, and ``supercl ablate`` is how the method is judged (the console and
``report.md`` say so). ``OUT/compare.png`` shows both arms' predictions side by side on the
test slices where they differ most.
"""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import time
from dataclasses import replace
from pathlib import Path

__all__ = ["add_demo_options", "run_demo"]


def at_least(minimum: int):
    """An argparse ``type``: an int >= ``minimum`` (for the options that no config holds)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = "int"  # argparse's "invalid int value" message
    return parse


def add_demo_options(p: argparse.ArgumentParser) -> None:
    """The demo's options. Those that reach the runs' configs are checked by them, before
    anything is written; the demo's own sizes here."""
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="output folder (default: runs/demo)")
    p.add_argument("--volumes", type=at_least(1), default=30,
                   help="phantom volumes to generate: 6 test, 6 validation, 18 for training, "
                   "of which 10 %% (2) are used labeled (default: 30)")
    p.add_argument("--depth-slices", type=at_least(1), default=24, dest="depth_slices",
                   help="slices per phantom volume (default: 24)")
    p.add_argument("--patch-size", type=int, default=128,
                   help="slice side (default: 128, the phantom's native size)")
    p.add_argument("--crop-size", type=int, default=None, metavar="C",
                   help="both stages train on random C x C crops (fine-tuning validates and "
                   "tests on whole slices), as the ablation does (default: half the patch "
                   "size, 64)")
    p.add_argument("--base-channels", type=int, default=16,
                   help="U-Net base width (default: 16; the reference is 32)")
    p.add_argument("--pretrain-epochs", type=int, default=8, help="pre-training epochs (default: 8)")
    p.add_argument("--finetune-epochs", type=int, default=84,
                   help="fine-tuning epochs at most, validated every 8 and stopped after 4 "
                   "validations without a better validation DSC (default: 84, about the "
                   "ablation's 1000 steps on the 2 labeled volumes)")
    p.add_argument("--label-fraction", type=float, nargs="+", default=[0.1], metavar="F",
                   help="fraction(s) of the labeled training volumes for fine-tuning; several "
                   "(e.g. 0.1 0.25) fine-tune scratch and SuperCL for each, from one "
                   "pre-training (default: 0.1)")
    p.add_argument("--n-segments", type=int, default=25,
                   help="SLIC superpixels per slice (default: 25 on 64 x 64 crops, the "
                   "density of the reference's 100 on 128 x 128)")
    p.add_argument("--phantom", choices=("v2",), default="v2",
                   help="the phantom generator, recorded with the run: v2, an abdominal CT whose "
                   "classes differ by shape, position and texture with overlapping intensities "
                   "(supercl.data.phantom_v2), the package's one phantom (default: v2)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, split and training (default: 0)")
    p.add_argument("--threads", type=at_least(0), default=0, help="CPU threads, 0 for torch's default (default: 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--overwrite", action="store_true",
                   help="remove the files of an earlier demo in --out (finished or not) and start "
                   "again; without it an interrupted demo continues and a finished one is kept "
                   "(default: off)")


#: Fine-tuning validates every VAL_EVERY epochs: about the ablation's 100 steps with the 2
#: labeled volumes of the default demo (48 slices, 12 steps of 4 per epoch).
VAL_EVERY = 8


def _crop_size(args: argparse.Namespace) -> int:
    """--crop-size, by default half the patch size rounded down to a multiple of 2**4 (the
    U-Net's down-samplings); 0 (whole slices) where that leaves nothing."""
    if args.crop_size is not None:
        return args.crop_size
    return args.patch_size // 2 // 16 * 16


#: Settings of a demo that may change when an interrupted one is continued.
_FREE = ("out", "progress", "threads", "device", "overwrite", "run", "argv", "command")
#: What a demo writes into its folder (the fine-tuning runs are scratch*/supercl*).
_OWN = ("demo.json", "phantom", "pretrain", "results.json", "report.md", "dsc.png")
_OWN_PREFIXES = ("compare",)  # compare.png, compare-10pct.png


def _settings(args: argparse.Namespace) -> dict:
    return {k: v for k, v in sorted(vars(args).items()) if k not in _FREE}


def _demo_files(out: Path) -> list[Path]:
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.name in _OWN or p.name.startswith(_OWN_PREFIXES) or (
        p.is_dir() and p.name.startswith(("scratch", "supercl")) and (p / "config.json").exists()))


def _prepare_folder(out: Path, args: argparse.Namespace) -> bool:
    """Decide what to do with ``out`` before anything is written; returns True when an
    interrupted demo is continued."""
    from supercl._runfolder import prepare_run_folder

    # demos from before --phantom existed used v1
    return prepare_run_folder(out, what="a demo", record="demo.json", settings=_settings(args),
                              files=_demo_files(out), overwrite=args.overwrite,
                              finished="results.json", old_defaults={"phantom": "v1"})


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from supercl import __version__
    from supercl.data import write_msd
    from supercl.losses import LossConfig
    from supercl.train import FinetuneConfig, PretrainConfig, finetune, pretrain
    from supercl._runtime import check_device, write_json
    from supercl.ablate import SCALES
    from supercl.viz import plot_dsc_bars

    started = time.perf_counter()
    out = Path(args.out)
    fractions = list(args.label_fraction)
    check_device(args.device)
    # Every setting of every stage, checked by the configs before anything is written.
    # The recipe is the ablation's default scale (supercl.ablate.SCALES): native 128 x 128
    # slices, 64 x 64 crops for both stages, half of every fine-tuning batch drawn on
    # foreground, validation and early stopping. Fine-tuned for a fixed 30 epochs on whole
    # 64 x 64 slices, the two arms' classes switched on and off between machines (spleen,
    # kidneys: 0 % in one run, 75-89 % in another).
    data = out / "phantom"
    recipe, ft = SCALES["default"]["pretrain"], SCALES["default"]["finetune"]
    common = dict(data=str(data), patch_size=args.patch_size, crop_size=_crop_size(args),
                  split_seed=args.seed, base_channels=args.base_channels, seed=args.seed,
                  device=args.device, progress=args.progress)
    pre_cfg = PretrainConfig(
        out=str(out / "pretrain"), epochs=args.pretrain_epochs, batch_size=recipe["batch_size"],
        optimizer=recipe["optimizer"], lr=recipe["lr"], weight_decay=recipe["weight_decay"],
        n_segments=args.n_segments, loss=LossConfig(), **common)
    jobs = [(f"{kind}{'' if len(fractions) == 1 else f'-{100 * f:g}pct'}", f, pretrained)
            for f in fractions for kind, pretrained in (("scratch", None), ("supercl", out / "pretrain"))]
    ft_cfgs = {name: FinetuneConfig(
        out=str(out / name), pretrained=str(pretrained) if pretrained else None,
        label_fraction=fraction, epochs=args.finetune_epochs, batch_size=ft["batch_size"],
        lr=ft["lr"], oversample_foreground=ft["oversample_foreground"], val_every=VAL_EVERY,
        patience=ft["patience"], **common)
        for name, fraction, pretrained in jobs}
    argv = getattr(args, "argv", None)
    command = "supercl " + shlex.join(argv) if argv is not None else None
    resuming = _prepare_folder(out, args)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"supercl {__version__} demo: {args.volumes} phantom CT volumes of {args.depth_slices} "
          f"slices, {args.patch_size}x{args.patch_size}, {torch.get_num_threads()} CPU threads"
          + (f"; continuing the interrupted demo in {out}" if resuming else ""))
    if not resuming:
        write_json(out / "demo.json", {"command": command, "settings": _settings(args)})
    if not (resuming and (data / "dataset.json").is_file()):
        write_msd(data, n_volumes=args.volumes, shape=(args.depth_slices, 128, 128), n_organs=5,
                  seed=args.seed, overwrite=True)
    timings = {}
    t = time.perf_counter()
    print(f"\n[1/{len(jobs) + 1}] SuperCL pre-training", flush=True)
    pre = pretrain(replace(pre_cfg, resume=(out / "pretrain" / "checkpoint.pt").is_file()))
    timings["pretrain_s"] = time.perf_counter() - t
    if pre["status"] != "finished":
        return _interrupted(out)

    runs = {}
    for step, (name, fraction, pretrained) in enumerate(jobs, 2):
        t = time.perf_counter()
        print(f"\n[{step}/{len(jobs) + 1}] fine-tuning on {100 * fraction:g} % of the labeled "
              "volumes, " + ("from scratch" if pretrained is None else "from the SuperCL encoder"), flush=True)
        runs[name] = finetune(replace(ft_cfgs[name],
                                      resume=(out / name / "checkpoint.pt").is_file()))
        if runs[name]["status"] != "finished":
            return _interrupted(out)
        runs[name]["label_fraction"] = fraction
        timings[f"finetune_{name}_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started

    classes = list(next(iter(runs.values()))["evaluation"]["dsc"])
    table = _table(runs, classes)
    print("\n" + table + "\n\n" + ONE_RUN)
    results = {
        "command": command, "machine": _machine(),
        "settings": _settings(args) | {"out": str(out), "threads": args.threads,
                                       "device": args.device},
        "timings": timings,
        "pretrain": {"history": pre["history"]},
        **{name: {k: run["evaluation"][k] for k in ("dsc", "jc", "mean_dsc", "mean_jc",
                                                    "volume_summary", "test_volumes")}
           | {"best_epoch": run["best"]["epoch"], "val_dsc": run["best"]["val_dsc"],
              "label_fraction": run["label_fraction"]}
           for name, run in runs.items()},
    }
    if resuming:
        results["note"] = ("continued after an interruption: the timings cover the last "
                           "invocation only")
    write_json(out / "results.json", results)  # strict JSON: an undefined score is null
    plot_dsc_bars({name: run["evaluation"]["dsc"] for name, run in runs.items()}, out / "dsc.png",
                  title="test DSC, " + ", ".join(f"{100 * f:g}" for f in fractions) + " % labels")
    _compare_arms(out, jobs, ft_cfgs, fractions)
    _report(out, table, results, args)
    print(f"\ndemo done in {timings['total_s'] / 60:.1f} min: {out / 'report.md'} (figures inside), "
          f"{out / 'results.json'}")
    return 0


#: What one demo can show, said in the console and in report.md.
ONE_RUN = ("This is one run with one seed. Between seeds (and between CPU types) a class can "
           "be found by one arm and missed by the other, so the table shows that the pipeline "
           "works end to end, not whether SuperCL pre-training helps: `supercl ablate` (several "
           "pre-training seeds x label draws per arm, paired 95 % CIs) is how the method is "
           "judged.")


def _compare_arms(out: Path, jobs: list, ft_cfgs: dict, fractions: list) -> None:
    """``compare.png`` (``compare-<F>pct.png`` with several label fractions): the scratch and
    SuperCL predictions side by side with the truth, on the test slices where they differ
    most."""
    from supercl._runtime import resolve_device
    from supercl.data.nifti import slice_names
    from supercl.eval import predict
    from supercl.models import UNet
    from supercl.train.checkpoint import load_checkpoint
    from supercl.train.dataset import prepare_split, slices_of
    from supercl.viz import plot_arm_comparison

    for fraction in fractions:
        names = [name for name, f, _ in jobs if f == fraction]
        cfg = ft_cfgs[names[0]]
        device = resolve_device(cfg.device)
        info, split = prepare_split(cfg, out / names[0], main=False, write=False)
        test = slices_of(info, split["test"], cfg, require_labels=True, progress=False)
        num_classes = max(info.class_names) + 1
        preds = {}
        for name in names:
            ckpt = load_checkpoint(out / name / "best.pt")
            model = UNet(1, cfg.base_channels, num_classes, cfg.depth)
            model.load_state_dict(ckpt["model"])
            preds["SuperCL encoder" if name.startswith("supercl") else "from scratch"] = \
                predict(model.to(device), test.images, device=device)
        suffix = "" if len(fractions) == 1 else f"-{100 * fraction:g}pct"
        plot_arm_comparison(test.images, test.labels, preds, slice_names(test), num_classes,
                            out / f"compare{suffix}.png", class_names=info.class_names,
                            title=f"fine-tuned on {100 * fraction:g} % of the labels: the test "
                                  "slices where the two arms differ most")


def _interrupted(out: Path) -> int:
    print(f"\ndemo interrupted: run the same command again (supercl demo --out {out}, or make "
          "demo) to continue it", flush=True)
    return 130


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _table(runs: dict, classes: list[str]) -> str:
    head = "| class | " + " | ".join(f"{n} DSC (%) | {n} JC (%)" for n in runs) + " |"
    rule = "|---|" + "---:|---:|" * len(runs)
    rows = [f"| {c} | " + " | ".join(f"{_pct(r['evaluation']['dsc'][c])} | {_pct(r['evaluation']['jc'][c])}"
                                      for r in runs.values()) + " |" for c in classes]
    rows.append("| **mean** | " + " | ".join(
        f"**{_pct(r['evaluation']['mean_dsc'])}** | **{_pct(r['evaluation']['mean_jc'])}**"
        for r in runs.values()) + " |")
    return "\n".join([head, rule, *rows])


def _machine() -> dict:
    import os

    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "processor": platform.processor()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _report(out: Path, table: str, results: dict, args) -> None:
    m = results["machine"]
    t = results["timings"]
    fractions = ", ".join(f"{100 * f:g}" for f in args.label_fraction)
    finetune_s = " + ".join(f"{v:.0f} s" for k, v in t.items() if k.startswith("finetune_"))
    runs = [k for k in results if k.startswith(("scratch", "supercl"))]
    lines = [
        "# supercl demo report", "",
        f"Phantom CT, {args.volumes} volumes x {args.depth_slices} slices, "
        f"{args.patch_size}x{args.patch_size}, U-Net base width {args.base_channels}; fine-tuning "
        f"on {fractions} % of the labeled training volumes; test DSC / JC (%) per class, "
        "accumulated over all test volumes.", "", table, "",
        f"Machine: {m.get('cpu', m['processor'])}, {m['threads']} threads, torch {m['torch']}"
        + (f", {m['gpu']}" if "gpu" in m else "") + ".",
        f"Time: pre-training {t['pretrain_s']:.0f} s, fine-tuning {finetune_s}, total "
        f"{t['total_s']:.0f} s.", "", "**" + ONE_RUN + "**", "", "## Figures", "",
        "- Where the two arms differ most, side by side with the ground truth: "
        + ", ".join(f"![comparison]({p.name})" for p in sorted(out.glob("compare*.png"))),
        "- Test DSC per class: ![DSC](dsc.png)",
        "- Superpixels (SLIC on the first pre-training batch, view v1): "
        "![superpixels](pretrain/superpixels.png)",
        "- Pre-training loss terms: ![pre-training losses](pretrain/loss_curves.png)",
        "- What the terms learn from (ILCP and PCL positives per anchor; L_inter's weak-label "
        "graph: edges joining slices close in position or sharing organs, against chance): "
        "![diagnostics](pretrain/diagnostics.png)",
    ]
    for run in runs:
        lines.append(f"- `{run}`: fine-tuning curves ![{run} curves]({run}/loss_curves.png), test "
                     f"slices, ground truth and prediction side by side "
                     f"![{run} predictions]({run}/predictions.png)")
    lines += ["", "Per-volume DSC and HD95 (mm) are in each run's `evaluation.json` (`null` "
              "where a score is undefined, e.g. the HD95 of a class that is empty in the "
              "prediction or the truth of a volume).", ""]
    (out / "report.md").write_text("\n".join(lines))
