"""Markdown summary of a pytest-benchmark JSON file written by ``pytest benchmarks/``.

Usage::

    python benchmarks/summarize.py results.json > benchmarks/results/cpu-<machine>.md
    python benchmarks/summarize.py results.json -o benchmarks/results/cpu-<machine>.md

One table per benchmark group (op, input kind, size): provider, threads, median time per
batch, slices/s, Mpixels/s and the speedup over the peer baseline -- scikit-image for SLIC,
cc3d for connected components, plus scipy for connected components of binary masks.  The
learning-side ops (supcon_loss, superpixel_pool) get a generic table: median time, the
throughput and peak-memory figures they record, and time and memory relative to the dense /
index_add baseline.
Speedup = baseline median / provider median (> 1: faster than the baseline).

Rows that carry a target (``extra_info["target"]``, the issue-19 cases) get a "target" column
in their table, and all of them are listed again in a closing "Targets" table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

# Baseline provider per op, and extra comparison columns per (op, input kind).
BASELINE = {"slic": "skimage", "connected_components": "cc3d", "connected_components_3d": "cc3d"}
EXTRA_COLUMNS = {("connected_components", "binary"): ["scipy"],
                 ("connected_components_3d", "binary"): ["scipy"],
                 ("connected_components_3d", "noisy_binary"): ["scipy"]}
# Columns for the other peers of the CPU targets, so that every ratio (1 thread and all
# threads) is read off one run; shown only where that peer ran in the group.
PEER_COLUMNS = {
    ("slic", "images"): ["opencv"],
    ("slic", "real_mri"): ["opencv", "fast-slic"],
    ("slic", "flat_ct"): ["opencv", "fast-slic"],
    ("slic", "phantom"): ["opencv", "fast-slic"],
    ("connected_components", "real_mri_superpixels"): ["skimage"],
    ("connected_components_3d", "noisy_binary"): ["skimage"],
    ("connected_components_3d", "real_mri_supervoxels"): ["skimage"],
    ("connected_components_3d", "phantom_supervoxels"): ["skimage"],
    ("connected_components", "binary"): ["skimage"],
    ("connected_components", "superpixels"): ["skimage"],
    ("connected_components_3d", "binary"): ["skimage"],
    ("connected_components_3d", "supervoxels"): ["skimage"],
}
# Display order; unknown providers go last, alphabetically.
ORDER = [
    "supercl-cuda", "supercl-cpu-allthreads", "supercl-cpu-1thread",
    "cupyx", "cc3d", "fast-slic", "opencv", "scipy", "skimage",
]


def _provider(bench: dict) -> str:
    return bench.get("extra_info", {}).get("provider", bench["name"])


def _op_of(bench: dict) -> str:
    group = bench.get("group") or bench["name"]
    return "slic" if group.startswith("slic") else group.split("-")[0]


def _group_key(group: str) -> tuple:
    """slic first, then connected components; within an op by kind, then size."""
    parts = group.split("-")
    op, size = parts[0], parts[-1]
    kind = "-".join(parts[1:-1])
    digits = "".join(ch for ch in size.split("x")[0] if ch.isdigit())  # 256x256, N4096
    side = int(digits) if digits else 0
    return (op != "slic", op, kind != "superpixels", kind, side)


def _provider_key(provider: str) -> tuple:
    return (ORDER.index(provider), "") if provider in ORDER else (len(ORDER), provider)


def _fmt(value: float, digits: int = 3) -> str:
    """About ``digits`` significant figures, without scientific notation."""
    if value == 0:
        return "0"
    if value >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    decimals = max(0, digits - 1 - int(f"{value:e}".split("e")[1]))
    return f"{value:.{decimals}f}"


def _ratio(baseline: float | None, median: float) -> str:
    return "n/a" if baseline is None else f"{baseline / median:.2f}x"


def _target(info: dict, medians: dict[str, float], median: float) -> str:
    """'>= 12x skimage: met (12.3x)' for a row with a target ('; '-joined for several), ''
    otherwise."""
    target = info.get("target")
    if not target:
        return ""
    texts = []
    for t in [target] if isinstance(target, dict) else target:
        text = f">= {t['speedup']:g}x {t['peer']}"
        peer = medians.get(t["peer"])
        if peer is None:
            texts.append(text + ": peer not run")
            continue
        ratio = peer / median
        texts.append(text + f": {'met' if ratio >= t['speedup'] else 'missed'} ({ratio:.2f}x)")
    return "; ".join(texts)


def header(data: dict) -> list[str]:
    mi = data.get("machine_info", {})
    sc = mi.get("supercl", {})
    cpu = mi.get("cpu", {})
    versions = sc.get("versions", {})
    lines = [
        "# supercl benchmarks",
        "",
        f"- date: {data.get('datetime', 'unknown')}",
        f"- machine: {mi.get('node', '?')}, {cpu.get('brand_raw', mi.get('processor', '?'))}, "
        f"{sc.get('cpu_count', cpu.get('count', '?'))} CPUs, {mi.get('system', '?')} "
        f"{mi.get('release', '')}",
        f"- GPU: {sc.get('cuda_device') or 'none'}",
        f"- supercl {sc.get('supercl_version', '?')}, commit {sc.get('supercl_commit', '?')}"
        + (" (uncommitted changes)" if sc.get("supercl_dirty") else "")
        + f", OpenMP: {sc.get('supercl_openmp', '?')}",
        f"- threads by default: torch {sc.get('torch_num_threads', '?')}, "
        f"OpenCV {sc.get('opencv_num_threads', '?')}",
        f"- Python {mi.get('python_version', sc.get('python', '?'))}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        "Median of the timed rounds (one call on the whole batch each, after one warm-up "
        "round); throughput from the median. Speedup = baseline median / provider median. "
        "load: 1-minute load average right after the timed rounds (the benchmark itself adds "
        "1 or 2; more means other work shared the CPUs).",
    ]
    return lines


def tables(data: dict) -> list[str]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data.get("benchmarks", []):
        groups[bench.get("group") or bench["name"]].append(bench)

    lines: list[str] = []
    for group in sorted(groups, key=_group_key):
        benches = groups[group]
        info0 = benches[0].get("extra_info", {})
        op = _op_of(benches[0])
        if op not in BASELINE:
            lines += generic_table(group, op, benches)
            continue
        kind = info0.get("input", "images")
        medians = {_provider(b): b["stats"]["median"] for b in benches}
        base = BASELINE.get(op)
        compare = ([base] if base else []) + EXTRA_COLUMNS.get((op, kind), [])
        compare += [c for c in PEER_COLUMNS.get((op, kind), []) if c in medians]

        title = f"{op}, {kind}, {info0.get('batch', '?')} x {info0.get('size', '?')}"
        if group.startswith("slic_gpu"):  # the GPU target cases: K, batch and mask in the name
            title = f"{group}: {info0.get('batch', '?')} x {info0.get('size', '?')}" + (
                ", body mask" if info0.get("masked") else "")
        if "components_per_slice" in info0:
            cps = info0["components_per_slice"]
            title += (f", {_fmt(cps, 2)} components" if op.endswith("_3d")  # one volume
                      else f", {_fmt(cps, 2)} components per slice (mean)")
        if "connectivity" in info0:
            title += f", {info0['connectivity']}-connectivity"
        if op == "slic" and ("labels_first_slice" in info0 or "labels_per_slice" in info0):
            title += f", {info0.get('n_segments', '?')} segments requested"
        lines += ["", f"## {title}", ""]
        cols = ["provider", "threads", "median ms / batch", "slices/s", "Mpixels/s", "rounds",
                "load"]
        cols += [f"vs {c}" for c in compare]
        with_target = any(b.get("extra_info", {}).get("target") for b in benches)
        if with_target:
            cols.append("target")
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")
        for bench in sorted(benches, key=lambda b: _provider_key(_provider(b))):
            info = bench.get("extra_info", {})
            median = bench["stats"]["median"]
            provider = _provider(bench)
            threads = info.get("threads")
            row = [
                provider,
                "-" if threads is None else str(threads),
                _fmt(median * 1e3),
                _fmt(info.get("slices_per_s", float("nan"))),
                _fmt(info.get("pixels_per_s", float("nan")) / 1e6),
                str(bench["stats"].get("rounds", "?")),
                f"{info['load_1min']:.1f}" if "load_1min" in info else "?",
            ]
            row += [_ratio(medians.get(c), median) for c in compare]
            if with_target:
                row.append(_target(info, medians, median))
            lines.append("| " + " | ".join(row) + " |")
    return lines


def target_table(data: dict) -> list[str]:
    """Every row with a target (the issue-19 cases), in one closing table."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data.get("benchmarks", []):
        groups[bench.get("group") or bench["name"]].append(bench)
    rows = []
    for group in sorted(groups, key=_group_key):
        medians = {_provider(b): b["stats"]["median"] for b in groups[group]}
        for bench in groups[group]:
            text = _target(bench.get("extra_info", {}), medians, bench["stats"]["median"])
            if text:
                rows.append(f"| {group} | {_provider(bench)} | {text} |")
    if not rows:
        return []
    return ["", "## Targets", "", "| group | provider | target: result (measured ratio) |",
            "|---|---|---|", *rows]


# Learning-side ops: baseline provider by name prefix, and the metrics shown when present.
GENERIC_BASELINE = {"supcon_loss": "dense", "superpixel_pool": "index_add",
                    "pretrain_step": "reference", "pretrain_overhead": "reference"}
GENERIC_METRICS = [("samples_per_s", "samples/s", 1.0), ("slices_per_s", "slices/s", 1.0),
                   ("gb_per_s", "GB/s", 1.0),
                   ("peak_memory_bytes", "peak MiB", 1.0 / 2**20)]


def generic_table(group: str, op: str, benches: list[dict]) -> list[str]:
    """provider, median, the metrics present, and time and memory relative to the baseline."""
    infos = [b.get("extra_info", {}) for b in benches]
    metrics = [m for m in GENERIC_METRICS if any(m[0] in info for info in infos)]
    prefix = GENERIC_BASELINE.get(op)
    base = next((b for b in benches if prefix and _provider(b).startswith(prefix)), None)
    cols = ["provider", "threads", "median ms"] + [label for _, label, _ in metrics] + ["rounds"]
    if base is not None:
        cols.append(f"time vs {_provider(base)}")
        if any(key == "peak_memory_bytes" for key, _, _ in metrics):
            cols.append(f"memory vs {_provider(base)}")
    lines = ["", f"## {group}", "", "| " + " | ".join(cols) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
    for bench in sorted(benches, key=lambda b: _provider(b)):
        info = bench.get("extra_info", {})
        median = bench["stats"]["median"]
        row = [_provider(bench), str(info.get("threads", "-")), _fmt(median * 1e3)]
        row += [_fmt(info[key] * factor) if key in info else "-" for key, _, factor in metrics]
        row.append(str(bench["stats"].get("rounds", "?")))
        if base is not None:
            row.append(_ratio(base["stats"]["median"], median))
            if any(key == "peak_memory_bytes" for key, _, _ in metrics):
                mine = info.get("peak_memory_bytes")
                theirs = base.get("extra_info", {}).get("peak_memory_bytes")
                row.append(f"{mine / theirs:.3f}x" if mine and theirs else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def summarize(data: dict) -> str:
    return "\n".join(header(data) + tables(data) + target_table(data)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", help="file written by pytest --benchmark-json=...")
    parser.add_argument("-o", "--output", help="write the Markdown here instead of stdout")
    args = parser.parse_args(argv)
    with open(args.json) as fh:
        text = summarize(json.load(fh))
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
