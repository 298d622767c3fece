"""``supercl ablate``: the summary's statistics against scipy, and a tiny end-to-end ablation
(its files, pairing, continuing, refusing other settings)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from supercl import ablate


def _args(**kw):
    base = dict(out=None, scale="default", dataset="phantom-v2", arms=None,
                label_fractions=[0.1], pretrain_seeds=2, split_seeds=2, workers=1,
                device="cpu", overwrite=False, argv=None, finetune_steps=None,
                reuse_pretraining=None)
    return argparse.Namespace(**(base | kw))


def test_summary_statistics_match_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    args = _args(arms=["scratch", "pcl", "supercl"], pretrain_seeds=3, split_seeds=3)
    records = []
    for arm, shift in (("scratch", 0.0), ("pcl", 0.02), ("supercl", 0.04)):
        for p in range(3):
            for s in range(3):
                dsc = 0.5 + 0.01 * p - 0.02 * s + shift + 0.01 * rng.standard_normal()
                records.append({"kind": "finetune", "arm": arm, "seed": p, "split_seed": s,
                                "label_fraction": 0.1, "val_dsc": 0.5, "test_mean_dsc": dsc,
                                "test_dsc": {"a": dsc, "b": None}, "best_epoch": 10 - s,
                                "epochs": 10, "steps": 100, "stopped_early": s == 2,
                                "labeled": [f"case{s}"]})
    summary = ablate.summarize(records, args)
    out = summary["summary"]["10%"]
    assert summary["draws"]["10%"] == {"split_seeds": 3, "distinct_labeled_sets": 3,
                                       "labeled_slices": [], "pool_slices": None}
    a = np.array([r["test_mean_dsc"] for r in records if r["arm"] == "supercl"]) * 100
    b = np.array([r["test_mean_dsc"] for r in records if r["arm"] == "scratch"]) * 100
    ci = stats.ttest_1samp(a - b, 0).confidence_interval(0.95)
    d = out["supercl"]["vs_scratch"]
    assert d["n"] == 9
    assert d["mean"] == pytest.approx((a - b).mean())
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert d["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert out["scratch"]["test_dsc"]["mean"] == pytest.approx(b.mean())
    assert "vs_scratch" not in out["scratch"]
    c = np.array([r["test_mean_dsc"] for r in records if r["arm"] == "pcl"]) * 100
    assert out["supercl"]["vs_pcl"]["mean"] == pytest.approx((a - c).mean())
    assert out["supercl"]["vs_pcl"]["p_value"] == pytest.approx(stats.ttest_rel(a, c).pvalue)
    assert "vs_pcl" not in out["pcl"] and "vs_pcl" not in out["scratch"]
    assert "vs_supercl" not in out["supercl"]  # only its variants are compared with it
    assert out["supercl"]["sd"] == pytest.approx(a.std(ddof=1))
    # best epochs 10, 9, 8 of 10: only 10 is in the last 10 %; split seed 2 stopped early
    assert out["supercl"]["selected_in_last_10pct"] == pytest.approx(1 / 3)
    assert out["supercl"]["stopped_early"] == pytest.approx(1 / 3)
    assert out["supercl"]["per_class"]["a"] == pytest.approx(a.mean())


def test_bad_options_are_refused(tmp_path):
    for bad, match in ((dict(label_fractions=[0.0]), "label-fractions"),
                       (dict(label_fractions=[0.1, 0.1]), "duplicates"),
                       (dict(pretrain_seeds=0), "pretrain-seeds"),
                       (dict(workers=-1), "workers"),
                       (dict(finetune_steps=0), "finetune-steps")):
        with pytest.raises(ValueError, match=match):
            ablate.run_ablate(_args(out=str(tmp_path / "x"), **bad))
    assert not (tmp_path / "x").exists()


def test_mni152_without_nilearn_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nilearn" else real(name, *a))
    with pytest.raises(ValueError, match="mni152.*nilearn"):
        ablate.run_ablate(_args(out=str(tmp_path / "m"), dataset="mni152"))
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_tiny_ablation_end_to_end(tmp_path, monkeypatch):
    tiny = {"phantom": dict(n_volumes=10, shape=(4, 32, 32), n_organs=2),
            "data": dict(patch_size=32), "model": dict(base_channels=4, depth=2),
            "recipe": "default",
            "pretrain": dict(epochs=1, batch_size=4, optimizer="adamw", lr=1e-3, n_segments=9),
            "finetune": dict(steps=3, batch_size=2, lr=1e-3, val_steps=2, patience=1,
                             oversample_foreground=0.5)}
    monkeypatch.setitem(ablate.SCALES, "default", tiny)
    out = tmp_path / "abl"
    args = _args(out=str(out), arms=["scratch", "pcl", "supercl"])
    assert ablate.run_ablate(args) == 0
    results = json.loads((out / "results.json").read_text())
    runs = [r for r in results["runs"] if r["kind"] == "finetune"]
    assert len(runs) == 3 * 2 * 2 and all(r["steps"] == 3 for r in runs)
    assert {r["name"] for r in results["runs"] if r["kind"] == "pretrain"} == {
        "pre-pcl-p0", "pre-pcl-p1", "pre-supercl-p0", "pre-supercl-p1"}
    # every fine-tuning run of an arm has its scratch twin on the same seeds and label draw
    for arm in ("pcl", "supercl"):
        assert results["summary"]["10%"][arm]["vs_scratch"]["n"] == 4
    # the label draws differ, the test and validation volumes do not
    splits = [json.loads((out / "runs" / r["name"] / "split.json").read_text()) for r in runs]
    assert len({tuple(s["test"]) for s in splits}) == 1
    assert len({tuple(s["val"]) for s in splits}) == 1
    # pcl alone: L_intra and L_inter off; its diagnostics are logged
    pcl = results["pretrain_final"]["pcl"]
    assert pcl["l_intra"] == 0 and pcl["l_inter"] == 0 and pcl["ilcp_pos_per_anchor"] >= 1
    report = (out / "report.md").read_text()
    assert "| supercl |" in report and "minus scratch" in report
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    # run again: everything is done, nothing is re-run, the results are the same
    before = {r["name"]: r["seconds"] for r in results["runs"]}
    assert ablate.run_ablate(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert {r["name"]: r["seconds"] for r in again["runs"]} == before
    # other settings on the same folder are refused, --overwrite starts again
    with pytest.raises(ValueError, match="other settings"):
        ablate.run_ablate(_args(out=str(out), arms=["scratch", "supercl"]))
    assert ablate.run_ablate(_args(out=str(out), arms=["scratch", "supercl"], pretrain_seeds=1,
                                   split_seeds=1, overwrite=True)) == 0
    assert not (out / "runs" / "pre-pcl-p0").exists()
    # a second ablation reuses those pre-training runs and fine-tunes with another budget
    out2 = tmp_path / "abl2"
    assert ablate.run_ablate(_args(out=str(out2), arms=["scratch", "supercl"], pretrain_seeds=1,
                                   split_seeds=1, finetune_steps=2,
                                   reuse_pretraining=str(out))) == 0
    first = json.loads((out / "runs" / "pre-supercl-p0" / "ablate_record.json").read_text())
    reused = json.loads((out2 / "runs" / "pre-supercl-p0" / "ablate_record.json").read_text())
    assert reused == first  # copied, not run again
    second = json.loads((out2 / "results.json").read_text())
    assert all(r["steps"] == 2 for r in second["runs"] if r["kind"] == "finetune")
    assert second["settings"]["finetune_steps"] == 2
    with pytest.raises(ValueError, match="reuse-pretraining.*no ablate.json"):
        ablate.run_ablate(_args(out=str(tmp_path / "abl3"), reuse_pretraining=str(tmp_path)))
    with pytest.raises(ValueError, match="reuse-pretraining.*dataset"):
        ablate.run_ablate(_args(out=str(tmp_path / "abl3"), reuse_pretraining=str(out),
                                dataset="mni152"))
    assert not (tmp_path / "abl3").exists()


def test_variants_are_paired_with_supercl_and_reported(tmp_path):
    args = _args(arms=["scratch", "supercl", "supercl_viewgraph"], pretrain_seeds=1,
                 split_seeds=3)
    records = [{"kind": "finetune", "arm": arm, "seed": 0, "split_seed": s,
                "label_fraction": 0.1, "val_dsc": 0.5, "test_mean_dsc": 0.5 + shift + 0.01 * s * s,
                "test_dsc": {"a": 0.5}, "best_epoch": 5, "epochs": 10, "steps": 50,
                "stopped_early": True, "labeled": [f"c{s}"]}
               for arm, shift in (("scratch", 0.0), ("supercl", 0.03), ("supercl_viewgraph", 0.01))
               for s in range(3)]
    results = ablate.summarize(records, args)
    versus = results["summary"]["10%"]["supercl_viewgraph"]["vs_supercl"]
    assert versus["mean"] == pytest.approx(-2.0) and versus["n"] == 3
    assert "vs_pcl" not in results["summary"]["10%"]["supercl_viewgraph"]  # no pcl arm here
    results |= {"settings": {"scale": "default", "pretrain_seeds": 1, "split_seeds": 3,
                             "workers": 1, "threads": 1, "device": "cpu"},
                "dataset": "test", "seconds": 60.0, "command": None}
    table = ablate._report(results, tmp_path)
    assert "| supercl_viewgraph minus supercl | -2.00 [" in table
    assert "3 distinct labeled sets from 3 label draws" in table
    assert (tmp_path / "report.md").is_file()


def test_patience_counts_only_once_the_validation_dsc_has_left_zero():
    from supercl.train.finetuning import _patience_exhausted, _record_validation

    def stops(sequence, patience):
        """The 1-based validation after which the run stops, or None."""
        best = {"val_dsc": -1.0, "epoch": 0}
        for i, dsc in enumerate(sequence, 1):
            _record_validation(best, dsc, epoch=10 * i)
            if _patience_exhausted(best, patience):
                return i
        return None

    # four validations at 0 would have ended the run with patience 3 before it learned anything
    assert stops([0, 0, 0, 0, 0.2, 0.1, 0.1, 0.1, 0.5], 3) == 8  # 3 after the 0.2, the best
    assert stops([0, 0, 0, 0, 0, 0, 0, 0], 3) is None  # never left zero: trains to the budget
    assert stops([0, 0.3, 0.4, 0.1, 0.1], 2) == 5
    assert stops([0.5, 0.1, 0.1], 2) == 3  # above zero at once: the count starts at once
    assert stops([float("nan")] * 5 + [0.1] + [0.0] * 3, 3) == 9  # NaN is no DSC above 0
    assert stops([0, 0.2, 0.1, 0.1, 0.1], 0) is None  # patience 0: never
    best = {"val_dsc": -1.0, "epoch": 0}
    assert _record_validation(best, 0.0, 3) and best == {"val_dsc": 0.0, "epoch": 3,
                                                          "validation": 1, "validations": 1}
    assert not _record_validation(best, 0.0, 6) and best["validations"] == 2


def test_a_real_finetuning_run_at_zero_is_not_stopped_early(tmp_path, monkeypatch):
    """Through finetune() itself (the validation scores faked): with patience 2, validations
    at 0, 0, 0 do not stop the run; after 0.2 two worse ones do."""
    from supercl.data import write_msd
    from supercl.train import FinetuneConfig, finetune
    from supercl.train import finetuning as ft_mod

    data = write_msd(tmp_path / "msd", n_volumes=7, shape=(3, 32, 32), n_organs=2, seed=3)
    scores = iter([0.0, 0.0, 0.0, 0.2, 0.1, 0.1] + [0.0] * 20)
    monkeypatch.setattr(ft_mod, "_validate", lambda *a: {"mean_dsc": next(scores),
                                                         "mean_jc": 0.0})
    summary = finetune(FinetuneConfig(data=str(data), out=str(tmp_path / "ft"), epochs=20,
                                      patience=2, batch_size=2, patch_size=32, base_channels=4,
                                      depth=2, progress=False, figures=False, evaluate=False,
                                      device="cpu", threads=1))
    validated = [r["epoch"] for r in summary["history"] if "val_dsc" in r]
    assert validated == [1, 2, 3, 4, 5, 6] and summary["stopped_early"]
    assert summary["best"]["epoch"] == 4 and summary["best"]["val_dsc"] == 0.2


def test_workers_share_one_gpu_and_split_the_cores(monkeypatch):
    import torch

    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device object needs no GPU
    for cores, on_cuda, on_cpu in ((16, (8, 2), (8, 2)), (2, (1, 2), (2, 1)), (1, (1, 1), (2, 1)),
                                   (6, (3, 2), (3, 2)), (64, (8, 8), (32, 2))):
        monkeypatch.setattr(ablate, "_cores", lambda n=cores: n)
        assert ablate._workers(_args(workers=0), cuda) == on_cuda, cores
        assert ablate._workers(_args(workers=0), cpu) == on_cpu, cores
    monkeypatch.setattr(ablate, "_cores", lambda: 16)
    assert ablate._workers(_args(workers=3), cuda) == (3, 5)  # --workers wins
    assert ablate._workers(_args(workers=32), cpu) == (32, 1)


def test_every_job_gets_the_resolved_device(tmp_path, monkeypatch):
    monkeypatch.setattr(ablate, "label_seeds", lambda data, modality, fraction, n: list(range(n)))
    args = _args(out=str(tmp_path), device="auto")
    jobs = ablate._jobs(args, tmp_path, tmp_path / "data", None, "cuda:0")
    assert {j["config"]["device"] for j in jobs} == {"cuda:0"}
    assert len(jobs) == 2 * 2 + 3 * 2 * 2  # pcl, supercl x 2 seeds; 3 arms x 2 x 2 draws
    assert {j["config"]["device"] for j in ablate._jobs(args, tmp_path, tmp_path, None)} == {"auto"}


def test_the_report_states_the_labeled_slices_per_draw(tmp_path):
    args = _args(arms=["scratch", "supercl"], pretrain_seeds=1, split_seeds=2)
    records = [{"kind": "finetune", "arm": arm, "seed": 0, "split_seed": s, "label_fraction": 0.1,
                "val_dsc": 0.5, "test_mean_dsc": 0.5 + 0.01 * s, "test_dsc": {"a": 0.5},
                "best_epoch": 5, "epochs": 10, "steps": 50, "stopped_early": False,
                "labeled": [f"c{s}"], "labeled_slices": 8 + s, "pool_slices": 75}
               for arm in ("scratch", "supercl") for s in range(2)]
    results = ablate.summarize(records, args)
    assert results["draws"]["10%"] == {"split_seeds": 2, "distinct_labeled_sets": 2,
                                       "labeled_slices": [8, 9], "pool_slices": 75}
    results |= {"settings": {"scale": "default", "pretrain_seeds": 1, "split_seeds": 2,
                             "workers": 1, "threads": 1, "device": "cpu"},
                "dataset": "test", "seconds": 60.0, "command": None}
    table = ablate._report(results, tmp_path)
    assert "8-9 labeled slices per draw of 75 in the pool (10.7-12.0 %)" in table
    results["draws"]["10%"] |= {"labeled_slices": [48], "pool_slices": None}
    assert "2 label draws; 48 labeled slices per draw)" in ablate._report(results, tmp_path)
