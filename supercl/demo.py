"""``supercl demo``: the whole SuperCL job on the embedded phantom, sized for a 2-core CPU.

1. writes the phantom MSD dataset (``OUT/phantom``);
2. pre-trains with SuperCL (``OUT/pretrain``);
3. fine-tunes on 10 % of the labeled training volumes twice, from scratch
   (``OUT/scratch``) and from the pre-trained encoder (``OUT/supercl``);
4. evaluates both on the test volumes;
5. prints a DSC / JC table per class and writes ``OUT/results.json`` and ``OUT/report.md``
   with the figures.

Running it again: an interrupted demo (Ctrl-C, a killed process) continues where it stopped
when the same command is run again: finished stages are kept, the interrupted one resumes
from its checkpoint (``OUT/demo.json`` holds the settings, and other settings are refused). A
finished demo (``OUT/results.json``) is not overwritten unless ``--overwrite`` is given, which
first removes the demo's own files in ``OUT`` (``make demo`` passes it when the demo in
``runs/demo`` has finished).

The defaults are a small configuration (64 x 64 slices, a U-Net of base width 16) so that
everything runs in a few minutes on two CPU cores; the numbers it prints show that the
pipeline works end to end, not the quality SuperCL reaches with the reference settings
(see the README for the longer run).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import shutil
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
    p.add_argument("--patch-size", type=int, default=64, help="slice side after resizing (default: 64)")
    p.add_argument("--base-channels", type=int, default=16,
                   help="U-Net base width (default: 16; the reference is 32)")
    p.add_argument("--pretrain-epochs", type=int, default=8, help="pre-training epochs (default: 8)")
    p.add_argument("--finetune-epochs", type=int, default=30, help="fine-tuning epochs (default: 30)")
    p.add_argument("--label-fraction", type=float, nargs="+", default=[0.1], metavar="F",
                   help="fraction(s) of the labeled training volumes for fine-tuning; several "
                   "(e.g. 0.1 0.25) fine-tune scratch and SuperCL for each, from one "
                   "pre-training (default: 0.1)")
    p.add_argument("--n-segments", type=int, default=25,
                   help="SLIC superpixels per slice (default: 25 on 64 x 64 slices, the "
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


#: Settings of a demo that may change when an interrupted one is continued.
_FREE = ("out", "progress", "threads", "device", "overwrite", "run", "argv", "command")
#: What a demo writes into its folder (the fine-tuning runs are scratch*/supercl*).
_OWN = ("demo.json", "phantom", "pretrain", "results.json", "report.md", "dsc.png")


def _settings(args: argparse.Namespace) -> dict:
    return {k: v for k, v in sorted(vars(args).items()) if k not in _FREE}


def _demo_files(out: Path) -> list[Path]:
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.name in _OWN or (
        p.is_dir() and p.name.startswith(("scratch", "supercl")) and (p / "config.json").exists()))


def _prepare_folder(out: Path, args: argparse.Namespace) -> bool:
    """Decide what to do with ``out`` before anything is written; returns True when an
    interrupted demo is continued."""
    from supercl._runtime import strict_json

    files = _demo_files(out)
    if args.overwrite:
        for path in files:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return False
    if not files:
        return False
    record = out / "demo.json"
    if not record.is_file():
        names = ", ".join(p.name for p in files)
        raise FileExistsError(f"{out} holds files of another run ({names}) but no demo.json: "
                              "pass --overwrite to replace them, or choose another --out")
    before = strict_json(record.read_text())["settings"]
    before.setdefault("phantom", "v1")  # demos from before --phantom existed used v1
    now = json.loads(json.dumps(_settings(args)))  # tuples as lists, as read back
    differ = [f"--{k.replace('_', '-')} {before.get(k)} -> {now.get(k)}"
              for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    if differ:
        raise ValueError(f"{out} holds a demo with other settings ({'; '.join(differ)}): run it "
                         "with its own settings to continue it, pass --overwrite to start again, "
                         "or choose another --out")
    if (out / "results.json").is_file():
        raise FileExistsError(f"{out} holds a finished demo (results.json): pass --overwrite to "
                              "run it again (make demo does), or choose another --out")
    return True


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from supercl import __version__
    from supercl.data import write_msd
    from supercl.losses import LossConfig
    from supercl.train import FinetuneConfig, PretrainConfig, finetune, pretrain
    from supercl._runtime import check_device, write_json
    from supercl.viz import plot_dsc_bars

    started = time.perf_counter()
    out = Path(args.out)
    fractions = list(args.label_fraction)
    check_device(args.device)
    # Every setting of every stage, checked by the configs before anything is written.
    data = out / "phantom"
    common = dict(data=str(data), patch_size=args.patch_size, split_seed=args.seed,
                  base_channels=args.base_channels, seed=args.seed, device=args.device,
                  progress=args.progress)
    pre_cfg = PretrainConfig(
        out=str(out / "pretrain"), epochs=args.pretrain_epochs, batch_size=16, optimizer="adamw",
        lr=1e-3, weight_decay=1e-4, n_segments=args.n_segments, loss=LossConfig(), **common)
    jobs = [(f"{kind}{'' if len(fractions) == 1 else f'-{100 * f:g}pct'}", f, pretrained)
            for f in fractions for kind, pretrained in (("scratch", None), ("supercl", out / "pretrain"))]
    ft_cfgs = {name: FinetuneConfig(
        out=str(out / name), pretrained=str(pretrained) if pretrained else None,
        label_fraction=fraction, epochs=args.finetune_epochs, batch_size=4, lr=3e-3, **common)
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
    print("\n" + table)
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
    _report(out, table, results, args)
    print(f"\ndemo done in {timings['total_s'] / 60:.1f} min: {out / 'report.md'} (figures inside), "
          f"{out / 'results.json'}")
    return 0


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
        f"{t['total_s']:.0f} s.", "", "## Figures", "",
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
