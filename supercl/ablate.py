"""``supercl ablate``: seeded ablations of SuperCL's terms with statistics.

Every arm is pre-trained with several pre-training seeds and fine-tuned on several label draws
("split seeds") at each label fraction; scratch is fine-tuned on the same draws with the same
seeds, so that every arm pairs up with scratch run for run.

- **Arms** (:data:`ARMS`): ``scratch``; ``pcl`` (L_ins alone); ``pcl_ilcp`` (L_ins + L_intra);
  ``pcl_igcp`` (L_ins + L_inter); ``supercl`` (all three, supercl's views, IGCP's graph over
  images); ``supercl_viewgraph`` (the same with the reference code's graph over the 2B views)
  and ``supercl_refviews`` (all three, the reference code's views). By default
  (:data:`DEFAULT_ARMS`) scratch, pcl and supercl: SuperCL minus PCL-only, the superpixel
  terms' own share, is the primary contrast; SuperCL minus scratch the second.
- **Seeds.** The test and validation volumes are fixed by ``split_seed`` 0; label draw s
  picks which pool volumes are labeled (the s-th label seed whose labeled set differs from
  every earlier draw's, :func:`label_seeds`), so the pre-training set (the
  pool, labels unused) is the same for every draw and one pre-training serves all of them.
  Pre-training seed p seeds the pre-training run and the fine-tuning run (weights, batches,
  augmentation); scratch with seed p is initialised as the pre-trained arms' decoders are.
- **Fine-tuning protocol** (default scale): slices at their native 128 x 128, trained on
  64 x 64 crops with half of every batch drawn on foreground (a class uniformly, then one of
  its pixels, as nnU-Net oversamples), validated on whole slices every ~100 steps, stopped
  after 4 validations without a better validation DSC (counted only once the validation
  DSC has been above 0: a run still at 0 is never stopped early) or at 1000 steps (the
  cosine schedule's span). Pre-training sees 64 x 64 crops of the same slices, so both stages work
  at one scale.
- **Selection and test.** Each fine-tuning run keeps the epoch with the best validation DSC;
  the test volumes are scored once, at its end, with that model. The endpoint, fixed in
  advance, is the mean test DSC over all foreground classes.
- **Statistics** (:mod:`supercl.eval.stats`): mean test DSC with its 95 % Student-t interval
  per arm and fraction, the run-to-run SD, the paired differences to scratch and to PCL alone
  (same pre-training seed, label draw and test volumes) with intervals and p-values, the
  share of runs whose selected epoch lies in the last 10 % of the schedule (not converged if
  high) and the share that early stopping ended.

Writes ``OUT/results.json`` (every run and the summary), ``OUT/report.md`` with the tables and
``OUT/ablation.png``. The runs live in ``OUT/runs``; an interrupted ablation continues when
the same command is run again (finished runs are kept, interrupted ones resume from their
checkpoints); ``--overwrite`` starts again.

Nothing finished is lost when an ablation is killed: every run writes its record
(``OUT/runs/NAME/ablate_record.json``, atomically) as it ends, and a run in progress
checkpoints after every epoch (12 optimizer steps for a default fine-tuning run at 10 %
labels, one epoch for a pre-training run), so the same command run again skips the finished
runs and continues the others from their last epoch. ``results.json``, ``report.md`` and
``ablation.png`` are written when every run is done.

Sizes (``--scale``): ``default`` is sized for a 2-core CPU (52 min with two workers:
``docs/results/ablate-phantom-v2``); ``reference`` uses the reference recipe's pre-training
at 256 x 256 and is meant for a GPU. ``--dataset mni152`` runs scratch against SuperCL on the
MNI152 brain-tissue task (:mod:`supercl.data.mni152`; needs nilearn): held-out whole z-blocks
and, at each label fraction, labeled 2-3-slice units drawn one per z-stratum of the training
pool, so that every draw spans the test blocks' anatomy (the report states the labeled slices
per draw: 8 or 9 of the pool's 75 at 10 %).

**On a GPU** (one H200, 16 cores), the default ablation is one command (``runs/`` holds
every run's checkpoints, 2 M parameters with Adam's state, about 1.5 GB in all, so only the
three result files are brought back)::

    python -m supercl ablate --device cuda --out runs/ablate-h200 && mkdir -p $OUT/ablate \
        && cp runs/ablate-h200/{report.md,results.json,ablation.png} $OUT/ablate/

and the three files go to ``docs/results/ablate-phantom-v2-h200/``. It runs 8 worker
processes x 2 threads sharing the GPU (:func:`_workers`; each job gets the device the parent
resolved, and the workers are spawned, never forked, so none inherits a
CUDA context). Estimate, not measured (no GPU was at hand): 51 runs, 6 pre-training runs of
8 epochs x 27 steps = 216 steps (batch 16, 64 x 64 crops) and 45 fine-tuning runs of at most
1000 steps (batch 4, 64 x 64) with 10 validations of 144 slices. On 2 CPU cores these took
137 s and 118 s per run with one thread. On the H200 a fine-tuning step of this small U-Net
(base 16) is launch- and Python-bound, about 10-20 ms, so a run takes 15-30 s with its data
loading; the 6 pre-training runs go in parallel first (about 1 min with start-up and the
phantom's writing), then 45 fine-tuning runs in waves of 8 (6 waves x 15-30 s, 2-3 min at
full overlap, up to 5 min if the GPU's time-slicing between processes halves it): about 4-7
min in all, inside one 10-minute command. If it is killed at the limit, the same command
continues it (see above) on the same machine while it still holds ``runs/ablate-h200``; a
fresh machine starts from zero.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

__all__ = ["ARMS", "SCALES", "add_ablate_options", "run_ablate", "summarize"]

#: Pre-training settings of each arm on top of the scale's recipe; None: no pre-training.
ARMS = {
    "scratch": None,
    "pcl": {"loss": {"l_intra": 0.0, "l_inter": 0.0}},
    "pcl_ilcp": {"loss": {"l_inter": 0.0}},
    "pcl_igcp": {"loss": {"l_intra": 0.0}},
    "supercl": {},
    "supercl_viewgraph": {"loss": {"inter_graph": "views"}},
    "supercl_refviews": {"views": {"recipe": "reference"}},
}

#: The paired contrasts besides scratch: each arm of a set minus the same runs of the key arm.
_VERSUS = {"pcl": ("pcl_ilcp", "pcl_igcp", "supercl", "supercl_viewgraph", "supercl_refviews"),
           "supercl": ("supercl_viewgraph", "supercl_refviews")}

#: The arms run when --arms is not given: scratch, PCL alone and SuperCL, so that SuperCL
#: minus PCL-only (the superpixel terms' own share, the primary contrast) and SuperCL minus
#: scratch both come from one default run within the hour on 2 cores.
DEFAULT_ARMS = ("scratch", "pcl", "supercl")

#: The two sizes. ``phantom``: write_msd's arguments; ``pretrain``: recipe_config's.
SCALES = {
    "default": {
        "phantom": dict(n_volumes=30, shape=(24, 128, 128), n_organs=5),
        # Slices at their native 128 x 128 (resized to 64 the aorta covers 5 pixels and the
        # gallbladder 13), trained on 64 x 64 crops; validation and test see whole slices.
        "data": dict(patch_size=128, crop_size=64),
        "model": dict(base_channels=16),
        "recipe": "default",
        "pretrain": dict(epochs=8, batch_size=16, optimizer="adamw", lr=1e-3, weight_decay=1e-4,
                         n_segments=25),
        # Fine-tuning to convergence: validation every val_steps optimizer steps, stop after
        # `patience` validations without a better validation DSC, at most `steps` steps (the
        # span of the cosine schedule); half of every batch is foreground draws (nnU-Net).
        "finetune": dict(steps=1000, batch_size=4, lr=3e-3, val_steps=100, patience=4,
                         oversample_foreground=0.5),
    },
    "reference": {
        "phantom": dict(n_volumes=40, shape=(48, 256, 256), n_organs=5),
        "data": dict(patch_size=256),
        "model": dict(base_channels=32),
        "recipe": "reference",
        "pretrain": dict(epochs=100, batch_size=16, n_segments=100),
        "finetune": dict(steps=3000, batch_size=8, lr=1e-3, val_steps=100, patience=10,
                         oversample_foreground=0.33),
    },
}

_MNI_ARMS = ("scratch", "supercl")


def add_ablate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/ablate", metavar="DIR",
                   help="output folder (default: runs/ablate)")
    p.add_argument("--scale", choices=sorted(SCALES), default="default",
                   help="default: sized for a 2-core CPU; reference: the reference recipe at "
                   "256 x 256, for a GPU (default: default)")
    p.add_argument("--dataset", choices=("phantom-v2", "mni152"), default="phantom-v2",
                   help="phantom-v2: the abdominal CT phantom (supercl.data.phantom_v2); "
                   "mni152: background / grey / white matter of the MNI152 T1 (needs nilearn) "
                   "(default: phantom-v2)")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=None, metavar="ARM",
                   help="arms to run, of " + ", ".join(ARMS) + " (default: "
                   + " ".join(DEFAULT_ARMS) + "; scratch and supercl with --dataset mni152); "
                   "scratch is always run")
    p.add_argument("--label-fractions", type=float, nargs="+", default=[0.1], metavar="F",
                   help="label fractions (default: 0.1)")
    p.add_argument("--pretrain-seeds", type=int, default=3, metavar="N",
                   help="pre-training seeds 0..N-1 (default: 3)")
    p.add_argument("--split-seeds", type=int, default=5, metavar="N",
                   help="label draws 0..N-1 per fraction (default: 5)")
    p.add_argument("--workers", type=int, default=0,
                   help="runs in parallel, each with cores / workers threads (default: 0 = "
                   "one per 2 CPU cores, at least 2, on a CPU; on a GPU min(8, cores / 2) "
                   "processes sharing the one device, 8 x 2 threads on 16 cores: the small "
                   "U-Net's steps are launch- and Python-bound, so one process leaves the GPU "
                   "mostly idle)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--finetune-steps", type=int, default=None, metavar="N",
                   help="the fine-tuning step budget, the span of its cosine schedule (default: "
                   "the scale's, 1000 for default)")
    p.add_argument("--reuse-pretraining", default=None, metavar="DIR",
                   help="copy the finished pre-training runs of the ablation in DIR (same "
                   "--scale and --dataset) instead of running them again, e.g. to study the "
                   "fine-tuning protocol (default: none)")
    p.add_argument("--overwrite", action="store_true",
                   help="remove an earlier ablation in --out and start again (default: "
                   "continue it when the settings match)")


#: The MNI152 task's slices per case (write_mni152_msd's ``unit``); recorded in the settings
#: so that an ablation on the older one-case-per-block data is neither continued nor reused.
_MNI_UNIT = 2


def _settings(args) -> dict:
    keys = ("scale", "dataset", "arms", "label_fractions", "pretrain_seeds", "split_seeds")
    settings = {k: getattr(args, k) for k in keys}
    if args.dataset == "mni152":
        settings["mni152_unit"] = _MNI_UNIT
    if getattr(args, "finetune_steps", None):  # only when given: older ablations still match
        settings["finetune_steps"] = args.finetune_steps
    return settings


def _reuse_pretraining(args, jobs: list[dict], out: Path) -> list[str]:
    """Copy the finished pre-training runs of the ablation in ``args.reuse_pretraining`` that
    this one would run with the same settings (same scale and dataset, so the same data and
    pre-training configs) into ``out/runs``; returns their names."""
    src = Path(args.reuse_pretraining)
    reused = []
    for job in jobs:
        if job["kind"] != "pretrain":
            continue
        there, here = src / "runs" / job["name"], Path(job["config"]["out"])
        if (there / "ablate_record.json").is_file() and not here.exists():
            shutil.copytree(there, here)
            reused.append(job["name"])
    return reused


def _arms(args) -> list[str]:
    arms = args.arms or list(_MNI_ARMS if args.dataset == "mni152" else DEFAULT_ARMS)
    return ["scratch"] + [a for a in arms if a != "scratch"]


def _jobs(args, out: Path, data: Path, modality: str | None,
          device: str | None = None) -> list[dict]:
    """Every run as a job dict: pre-training jobs, then fine-tuning jobs (``after``: the
    pre-training they need). ``device``: the one the parent resolved (``args.device`` when
    None), so that every worker uses the same."""
    scale = SCALES[args.scale]
    common = dict(data=str(data), modality=modality, split_seed=0, progress=False,
                  device=device or args.device, **scale["data"], **scale["model"])
    jobs = []
    for arm in _arms(args):
        if ARMS[arm] is None:
            continue
        for p in range(args.pretrain_seeds):
            overrides = json.loads(json.dumps(ARMS[arm]))
            cfg = dict(common, **scale["pretrain"], seed=p, out=str(out / "runs" / f"pre-{arm}-p{p}"),
                       recipe=scale["recipe"], **overrides)
            jobs.append({"kind": "pretrain", "name": f"pre-{arm}-p{p}", "arm": arm, "seed": p,
                         "config": cfg})
    ft = dict(scale["finetune"])
    if getattr(args, "finetune_steps", None):
        ft["steps"] = args.finetune_steps
    for fraction in args.label_fractions:
        seeds = label_seeds(data, modality, fraction, args.split_seeds)
        for p in range(args.pretrain_seeds):
            for s in range(args.split_seeds):
                for arm in _arms(args):
                    name = f"ft-{arm}-{100 * fraction:g}pct-p{p}-s{s}"
                    cfg = dict(common, out=str(out / "runs" / name), label_fraction=fraction,
                               label_seed=seeds[s], seed=p, batch_size=ft["batch_size"],
                               lr=ft["lr"],
                               pretrained=None if ARMS[arm] is None
                               else str(out / "runs" / f"pre-{arm}-p{p}"),
                               epochs=None, steps=ft["steps"], val_steps=ft["val_steps"],
                               patience=ft["patience"],
                               oversample_foreground=ft["oversample_foreground"])
                    jobs.append({"kind": "finetune", "name": name, "arm": arm, "seed": p,
                                 "split_seed": s, "label_fraction": fraction, "config": cfg,
                                 "after": None if ARMS[arm] is None else f"pre-{arm}-p{p}"})
    return jobs


def label_seeds(data: Path, modality: str | None, fraction: float, n: int) -> list[int]:
    """The first ``n`` label seeds (0, 1, ...) whose draws of labeled pool volumes at
    ``fraction`` are all different sets, so that n label draws are n distinct experiments
    (split seed 0 fixes the test and validation volumes). Raises ``ValueError`` when the pool
    has fewer than ``n`` distinct sets of that size."""
    from supercl.data import scan_dataset, split_cases

    info = scan_dataset(data, modality=modality)
    seen, seeds = set(), []
    for seed in range(1000 * n):
        drawn = tuple(split_cases(info, label_fraction=fraction, seed=0, label_seed=seed)["finetune"])
        if drawn not in seen:
            seen.add(drawn)
            seeds.append(seed)
            if len(seeds) == n:
                return seeds
    raise ValueError(f"--split-seeds {n}: the pool has only {len(seen)} distinct labeled sets "
                     f"at {100 * fraction:g} % labels; use fewer label draws or more volumes")


def _finetune_schedule(cfg: dict) -> tuple[int, int, list[str], dict]:
    """``(epochs, val_every, labeled volumes, slices)``: the epochs that give at least
    ``steps`` optimizer steps on this run's labeled slices (the schedule then spans exactly
    ``steps`` through max_steps), validation every ``val_steps`` steps rounded to whole
    epochs, the names of the labeled volumes of this draw, and ``{"labeled_slices": n,
    "pool_slices": m or None}`` (m: the training pool's slices, known for datasets that
    declare z-units such as MNI152)."""
    from supercl.train.dataset import prepare_split, slices_of
    from supercl.train import FinetuneConfig

    keys = ("steps", "epochs", "val_steps")
    probe = FinetuneConfig(**{k: v for k, v in cfg.items() if k not in keys})
    info, split = prepare_split(probe, Path(cfg["out"]), main=False)
    n = len(slices_of(info, split["finetune"], probe, require_labels=True, progress=False))
    per_epoch = max(1, n // cfg["batch_size"])
    return (math.ceil(cfg["steps"] / per_epoch), max(1, round(cfg["val_steps"] / per_epoch)),
            sorted(split["finetune"]), {"labeled_slices": n,
                                        "pool_slices": split.get("pool_slices")})


def _record_path(job: dict) -> Path:
    return Path(job["config"]["out"]) / "ablate_record.json"


def _run_job(job: dict, threads: int) -> dict:
    """Run one job in a worker process (its output goes to the run's ``log.txt``); returns
    the record that results.json keeps."""
    import torch

    from supercl.train import FinetuneConfig, finetune, pretrain, recipe_config
    from supercl._runtime import write_json

    torch.set_num_threads(threads)
    cfg = dict(job["config"])
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    resume = (out / "checkpoint.pt").is_file()
    with open(out / "log.txt", "a") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        if job["kind"] == "pretrain":
            recipe = cfg.pop("recipe")
            summary = pretrain(recipe_config(recipe, resume=resume, figures=False, **cfg))
            if summary["status"] != "finished":
                return {"status": summary["status"]}
            last = summary["history"][-1]
            record = {"final": last, "history": summary["history"]}
        else:
            steps, val_steps = cfg.pop("steps"), cfg.pop("val_steps")
            cfg["epochs"], cfg["val_every"], labeled, slices = _finetune_schedule(
                dict(cfg, steps=steps, val_steps=val_steps))
            summary = finetune(FinetuneConfig(**cfg, max_steps=steps, resume=resume,
                                              figures=False))
            if summary["status"] != "finished":
                return {"status": summary["status"]}
            ev = summary["evaluation"]
            record = {"test_mean_dsc": ev["mean_dsc"], "test_dsc": ev["dsc"],
                      "test_mean_jc": ev["mean_jc"], "val_dsc": summary["best"]["val_dsc"],
                      "best_epoch": summary["best"]["epoch"], "epochs": cfg["epochs"],
                      "steps": summary["global_step"], "planned_steps": summary["planned_steps"],
                      "stopped_early": summary["stopped_early"], "labeled": labeled,
                      **slices}
    record = {k: job[k] for k in ("kind", "name", "arm", "seed", "split_seed", "label_fraction")
              if k in job} | record | {"status": "finished",
                                       "seconds": time.perf_counter() - started}
    write_json(_record_path(job), record)
    return record


def _prepare(out: Path, args) -> bool:
    """Check ``out`` before anything is written; True when an earlier ablation continues.
    Any file in ``out`` without an ablate.json is another run's; ``--overwrite`` removes the
    ablation's own files only."""
    from supercl._runfolder import prepare_run_folder

    if args.overwrite:
        files = [out / name for name in ("ablate.json", "runs", "data", "results.json",
                                         "report.md", "ablation.png") if (out / name).exists()]
    else:
        files = sorted(out.iterdir()) if out.is_dir() else []
    return prepare_run_folder(out, what="an ablation", record="ablate.json",
                              settings=_settings(args), files=files, overwrite=args.overwrite)


def _check_args(args) -> None:
    if not all(0 < f <= 1 for f in args.label_fractions):
        raise ValueError(f"--label-fractions must be in (0, 1], got {args.label_fractions}")
    if len(set(args.label_fractions)) != len(args.label_fractions):
        raise ValueError(f"--label-fractions has duplicates: {args.label_fractions}")
    for name in ("pretrain_seeds", "split_seeds"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.workers < 0:
        raise ValueError("--workers must be >= 0")
    if getattr(args, "finetune_steps", None) is not None and args.finetune_steps < 1:
        raise ValueError("--finetune-steps must be >= 1")
    if getattr(args, "reuse_pretraining", None):
        from supercl._runtime import strict_json

        src = Path(args.reuse_pretraining)
        record = src / "ablate.json"
        if not record.is_file():
            raise ValueError(f"--reuse-pretraining {src}: no ablate.json there")
        before = strict_json(record.read_text())["settings"]
        now = _settings(args)
        for key in ("scale", "dataset", "mni152_unit"):
            if before.get(key) != now.get(key):
                raise ValueError(f"--reuse-pretraining {src}: its --{key.replace('_', '-')} is "
                                 f"{before.get(key)}, not {now.get(key)}")


def _cores() -> int:
    """The CPU cores this process may run on (its affinity, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def _workers(args, device) -> tuple[int, int]:
    """``(worker processes, threads each)``: ``--workers`` if given; else on a CPU one worker
    per 2 cores (at least 2); on a GPU ``min(8, cores // 2)`` (at least 1) processes sharing
    the device. A default fine-tuning step on a GPU is some 300 small kernels, bound by
    their launches and by Python, so one process keeps the GPU mostly idle; several
    overlap their host work. 8 caps the GPU's time-slicing between processes (one CUDA
    context each, ~0.5 GB) and gives 2 threads each on 16 cores for the host-side work
    (SLIC of the views, augmentation, data loading). Threads: cores // workers, at least 1."""
    cores = _cores()
    if args.workers:
        workers = args.workers
    elif device.type == "cuda":
        workers = max(1, min(8, cores // 2))
    else:
        workers = max(2, cores // 2)
    return workers, max(1, cores // workers)


def run_ablate(args) -> int:
    """Run (or continue) the ablation described by the parsed options; returns an exit code."""
    import concurrent.futures as cf
    import multiprocessing as mp

    from supercl._runtime import check_device, resolve_device, write_json

    _check_args(args)
    check_device(args.device)
    if args.dataset == "mni152":  # before anything is written
        from supercl.data.mni152 import template_paths

        try:
            template_paths()
        except (ImportError, FileNotFoundError) as err:
            raise ValueError(f"--dataset mni152: {err}") from None
    device = resolve_device(args.device)
    out = Path(args.out)
    resuming = _prepare(out, args)
    out.mkdir(parents=True, exist_ok=True)
    argv = getattr(args, "argv", None)
    if not resuming:
        write_json(out / "ablate.json", {"settings": _settings(args),
                                         "command": None if argv is None else ["supercl", *argv]})
    data, modality, describe = _dataset(args, out)
    jobs = _jobs(args, out, data, modality, str(device))
    if getattr(args, "reuse_pretraining", None):
        reused = _reuse_pretraining(args, jobs, out)
        print(f"reusing {len(reused)} pre-training runs of {args.reuse_pretraining}: "
              f"{', '.join(reused) or 'none'}", flush=True)
    workers, threads = _workers(args, device)
    done = {}
    for job in jobs:
        path = _record_path(job)
        if path.is_file():
            done[job["name"]] = json.loads(path.read_text())
    todo = [j for j in jobs if j["name"] not in done]
    print(f"supercl ablate: {describe}; arms {', '.join(_arms(args))}; label fractions "
          f"{', '.join(f'{100 * f:g} %' for f in args.label_fractions)}; "
          f"{args.pretrain_seeds} pre-training seeds x {args.split_seeds} label draws; "
          f"{len(jobs)} runs ({len(done)} already done), {workers} workers x {threads} threads",
          flush=True)
    started = time.perf_counter()
    finished_now = 0
    # spawn, never fork: a forked child of a process that touched CUDA cannot use it, and
    # spawned workers start clean on every platform
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        running = {}

        def ready(job):
            return job["kind"] == "pretrain" or job["after"] is None or job["after"] in done

        try:
            while todo or running:
                # Pre-training first (the fine-tuning runs wait for them), then the rest in order.
                for job in [j for j in todo if ready(j)]:
                    if len(running) >= workers:
                        break
                    running[pool.submit(_run_job, job, threads)] = job
                    todo.remove(job)
                if not running:
                    raise RuntimeError("no runnable job: a pre-training run did not finish")
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    job = running.pop(future)
                    record = future.result()
                    if record.get("status") != "finished":
                        raise KeyboardInterrupt
                    done[job["name"]] = record
                    finished_now += 1
                    elapsed = time.perf_counter() - started
                    left = len(todo) + len(running)
                    eta = elapsed / finished_now * left / 60
                    what = (f"test DSC {100 * record['test_mean_dsc']:.2f}% (val "
                            f"{100 * record['val_dsc']:.2f}%)" if job["kind"] == "finetune"
                            else f"loss {record['final']['loss']:.3f}")
                    print(f"[{len(done)}/{len(jobs)}] {job['name']}: {what}, "
                          f"{record['seconds']:.0f} s; about {eta:.0f} min left", flush=True)
        except KeyboardInterrupt:
            for future in running:
                future.cancel()
            print(f"\nablation interrupted: run the same command again to continue ({out})",
                  file=sys.stderr, flush=True)
            return 130
    results = summarize([done[j["name"]] for j in jobs], args)
    results["settings"] = _settings(args) | {"scale_config": SCALES[args.scale],
                                             "workers": workers, "threads": threads,
                                             "device": str(device)}
    results["dataset"] = describe
    results["seconds"] = time.perf_counter() - started
    results["command"] = None if argv is None else ["supercl", *argv]
    write_json(out / "results.json", results)
    report = _report(results, out)
    print("\n" + report)
    print(f"\nablation done in {results['seconds'] / 60:.1f} min: {out / 'report.md'}, "
          f"{out / 'results.json'}")
    return 0


def _dataset(args, out: Path) -> tuple[Path, str | None, str]:
    if args.dataset == "mni152":
        from supercl.data.mni152 import write_mni152_msd

        root = out / "data"
        if not (root / "dataset.json").is_file():
            write_mni152_msd(root, unit=_MNI_UNIT)
        return root, "MRI", ("MNI152 T1, background / grey matter / white matter; whole "
                             "z-blocks held out, labeled 2-3-slice units drawn one per z-stratum "
                             "of the training pool")
    from supercl.data import write_msd

    spec = SCALES[args.scale]["phantom"]
    root = out / "data"
    if not (root / "dataset.json").is_file():
        write_msd(root, **spec, seed=0, overwrite=True)
    d, h, w = spec["shape"]
    return root, None, f"phantom v2, {spec['n_volumes']} volumes of {d} x {h} x {w}"


def summarize(records: list[dict], args) -> dict:
    """Per arm and fraction: test DSC mean with its 95 % CI, and the paired difference to
    scratch; per pre-trained arm: the last epoch's loss terms and diagnostics, averaged."""
    from supercl.eval import mean_ci, paired_difference

    runs = [r for r in records if r["kind"] == "finetune"]
    summary, draws = {}, {}
    for fraction in args.label_fractions:
        key = f"{100 * fraction:g}%"
        base = {(r["seed"], r["split_seed"]): r["test_mean_dsc"] for r in runs
                if r["arm"] == "scratch" and r["label_fraction"] == fraction}
        summary[key] = {}
        for arm in _arms(args):
            mine = {(r["seed"], r["split_seed"]): r["test_mean_dsc"] for r in runs
                    if r["arm"] == arm and r["label_fraction"] == fraction}
            pairs = sorted(mine)
            values = [100 * mine[k] for k in pairs]
            mine_runs = [r for r in runs if r["arm"] == arm and r["label_fraction"] == fraction]
            entry = {"test_dsc": mean_ci(values), "runs": values,
                     "sd": _sd(values),
                     "val_dsc": mean_ci([100 * r["val_dsc"] for r in mine_runs]),
                     # converged? the share of runs whose selected epoch lies in the last 10 %
                     # of the planned schedule, and of runs that early stopping ended
                     "selected_in_last_10pct": _share([r["best_epoch"] > 0.9 * r["epochs"]
                                                       for r in mine_runs]),
                     "stopped_early": _share([r.get("stopped_early") for r in mine_runs]),
                     "mean_steps": _mean([r["steps"] for r in mine_runs]),
                     "per_class": {c: _mean([100 * r["test_dsc"][c] for r in mine_runs
                                             if r["test_dsc"].get(c) is not None])
                                   for c in (mine_runs[0]["test_dsc"] if mine_runs else {})}}
            if arm != "scratch":
                entry["vs_scratch"] = paired_difference(values, [100 * base[k] for k in pairs])
            for other in ("pcl", "supercl"):
                # PCL: the superpixel terms' own share; supercl: what the variants change
                if other in _arms(args) and arm in _VERSUS[other]:
                    theirs = {(r["seed"], r["split_seed"]): r["test_mean_dsc"] for r in runs
                              if r["arm"] == other and r["label_fraction"] == fraction}
                    entry[f"vs_{other}"] = paired_difference(values,
                                                             [100 * theirs[k] for k in pairs])
            summary[key][arm] = entry
        labeled = {tuple(r["labeled"]) for r in runs if r["label_fraction"] == fraction
                   and r["arm"] == "scratch" and r.get("labeled")}
        scratch = [r for r in runs if r["label_fraction"] == fraction and r["arm"] == "scratch"]
        draws[key] = {"split_seeds": args.split_seeds, "distinct_labeled_sets": len(labeled),
                      "labeled_slices": sorted({r["labeled_slices"] for r in scratch
                                                if r.get("labeled_slices") is not None}),
                      "pool_slices": next((r["pool_slices"] for r in scratch
                                           if r.get("pool_slices")), None)}
    diagnostics = {}
    for arm in _arms(args):
        finals = [r["final"] for r in records if r["kind"] == "pretrain" and r["arm"] == arm]
        if finals:
            diagnostics[arm] = {k: _mean([f.get(k) for f in finals]) for k in finals[0]
                                if k not in ("epoch", "global_step", "lr")}
    return {"summary": summary, "draws": draws, "pretrain_final": diagnostics, "runs": records}


def _sd(values):
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _share(flags):
    flags = [bool(f) for f in flags if f is not None]
    return sum(flags) / len(flags) if flags else None


def _mean(values):
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def _slices(draws: dict) -> str:
    """'; 8-9 labeled slices per draw of 75 in the pool (10.7-12.0 %)' or ''."""
    counts, pool = draws.get("labeled_slices") or [], draws.get("pool_slices")
    if not counts:
        return ""
    span = "-".join(str(c) for c in sorted({counts[0], counts[-1]}))
    if not pool:
        return f"; {span} labeled slices per draw"
    shares = "-".join(f"{100 * c / pool:.1f}" for c in sorted({counts[0], counts[-1]}))
    return f"; {span} labeled slices per draw of {pool} in the pool ({shares} %)"


def _fmt(ci: dict) -> str:
    if ci["n"] < 2:
        return f"{ci['mean']:.2f}"
    return f"{ci['mean']:.2f} [{ci['ci_low']:.2f}, {ci['ci_high']:.2f}]"


def _report(results: dict, out: Path) -> str:
    from supercl.viz import plot_ablation

    s = results["settings"]
    lines = []
    def diff(d):
        return f"{d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]" if d else ""

    def p(d):
        return f"{d['p_value']:.3f}" if d and d["p_value"] == d["p_value"] else ""

    def num(v, fmt="{:.2f}"):
        return "" if v is None else fmt.format(v)

    for fraction, arms in results["summary"].items():
        draws = results.get("draws", {}).get(fraction, {})
        n = next(iter(arms.values()))["test_dsc"]["n"]
        lines += [f"**{fraction} labels** (test mean DSC in % over {n} runs, 95 % CI; "
                  f"{draws.get('distinct_labeled_sets', '?')} distinct labeled sets from "
                  f"{draws.get('split_seeds', '?')} label draws{_slices(draws)})", "",
                  "| arm | test DSC | SD | minus scratch (paired) | p | minus pcl (paired) | p "
                  "| val DSC | selected in last 10 % | stopped early | steps |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        versus = []
        for arm, e in arms.items():
            d, q = e.get("vs_scratch"), e.get("vs_pcl")
            if "vs_supercl" in e:
                versus.append(f"| {arm} minus supercl | {diff(e['vs_supercl'])} | "
                              f"{p(e['vs_supercl'])} |")
            lines.append(f"| {arm} | {_fmt(e['test_dsc'])} | {num(e.get('sd'))} | {diff(d)} | "
                         f"{p(d)} | {diff(q)} | {p(q)} | {e['val_dsc']['mean']:.2f} | "
                         f"{num(e.get('selected_in_last_10pct'), '{:.0%}')} | "
                         f"{num(e.get('stopped_early'), '{:.0%}')} | "
                         f"{num(e.get('mean_steps'), '{:.0f}')} |")
        if versus:
            lines += ["", "| contrast (paired) | difference | p |", "|---|---:|---:|", *versus]
        classes = next(iter(arms.values())).get("per_class", {})
        if classes:
            lines += ["", "Per class (mean test DSC in % over the runs)", "",
                      "| arm | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
            for arm, e in arms.items():
                lines.append(f"| {arm} | " + " | ".join(num(e["per_class"].get(c))
                                                       for c in classes) + " |")
        lines.append("")
    table = "\n".join(lines)
    diag = results["pretrain_final"]
    keys = ("loss", "l_ins", "l_intra", "l_inter", "ilcp_pos_per_anchor", "pcl_pos_per_anchor",
            "inter_partner_edge_share", "inter_images_per_component",
            "inter_edge_position_agreement", "inter_edge_position_chance",
            "inter_edge_organ_agreement", "inter_edge_organ_chance")
    dlines = ["| arm | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for arm, d in diag.items():
        dlines.append(f"| {arm} | " + " | ".join("" if d.get(k) is None else f"{d[k]:.3f}"
                                                 for k in keys) + " |")
    plot_ablation(results["summary"], out / "ablation.png",
                  title=f"supercl ablate: {results['dataset']}")
    text = "\n".join([
        "# supercl ablate report", "",
        f"Data: {results['dataset']}. Scale: {s['scale']}. Seeds: {s['pretrain_seeds']} "
        f"pre-training x {s['split_seeds']} label draws per fraction; the test and validation "
        "volumes are the same for every run. Each fine-tuning run selects its epoch on the "
        "validation volumes; the test volumes are scored once, at its end. CIs are Student-t "
        "95 % intervals; the paired difference pairs each arm's run with the scratch run of "
        "the same seeds.", "",
        f"Command: `{' '.join(results['command']) if results.get('command') else 'supercl ablate'}`"
        f"; {results['seconds'] / 60:.1f} min, {s['workers']} workers x {s['threads']} threads "
        f"on {s['device']}.", "", table,
        "Pre-training, last epoch (mean over seeds): loss terms and diagnostics", "",
        *dlines, "", "![ablation](ablation.png)", ""])
    (out / "report.md").write_text(text)
    return table
