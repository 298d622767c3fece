"""The ``supercl`` command.

Subcommands available now:

- ``supercl demo``: superpixels and connected components on embedded phantom CT slices; writes
  overlay pictures and a timing summary, and times scikit-image on the same slices when it is
  installed.

The trainer subcommands (``pretrain``, ``finetune``, ``evaluate``, ``superpixels``) are not
built yet; they are tracked as the trainer issue.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from supercl import __version__
    from supercl.data import phantom_batch
    from supercl.ops import connected_components, slic
    from supercl.viz import montage, overlay, window, write_png

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"supercl {__version__}: demo on {args.slices} phantom CT slices of "
          f"{args.size}x{args.size} (seed {args.seed}), {torch.get_num_threads()} CPU threads")

    images, organs = phantom_batch(args.slices, args.size, args.size, seed=args.seed)
    body = images > -500.0  # keep superpixels inside the body, off the air
    kwargs = dict(n_segments=args.n_segments, compactness=args.compactness)

    slic(images[:1], mask=body[:1], **kwargs)  # load the extension, warm the caches
    start = time.perf_counter()
    superpixels = slic(images, mask=body, **kwargs)
    slic_s = time.perf_counter() - start

    start = time.perf_counter()
    components, counts = connected_components(organs, connectivity=2, return_num=True)
    cc_s = time.perf_counter() - start

    n_superpixels = [int(s.max()) for s in superpixels]
    summary = {
        "slices": args.slices,
        "size": args.size,
        "threads": torch.get_num_threads(),
        "slic_s": slic_s,
        "slic_slices_per_s": args.slices / slic_s,
        "superpixels_per_slice": n_superpixels,
        "connected_components_s": cc_s,
        "organ_components_per_slice": counts.tolist(),
    }
    print(f"supercl slic:                 {1e3 * slic_s / args.slices:8.2f} ms/slice "
          f"({args.slices / slic_s:7.1f} slices/s), {np.mean(n_superpixels):.0f} superpixels/slice")
    print(f"supercl connected_components: {1e3 * cc_s / args.slices:8.2f} ms/slice")

    try:
        from skimage.measure import label as sk_label
        from skimage.segmentation import slic as sk_slic
    except ImportError:
        print("scikit-image is not installed: no comparison (pip install 'supercl[test]')")
    else:
        start = time.perf_counter()
        for b in tqdm(range(args.slices), desc="scikit-image slic", unit="slice", leave=False):
            sk_slic(images[b], channel_axis=None, mask=body[b], **kwargs)
        sk_slic_s = time.perf_counter() - start
        start = time.perf_counter()
        for b in range(args.slices):
            sk_label(organs[b], connectivity=2)
        sk_cc_s = time.perf_counter() - start
        summary.update(skimage_slic_s=sk_slic_s, skimage_label_s=sk_cc_s,
                       slic_speedup=sk_slic_s / slic_s, cc_speedup=sk_cc_s / cc_s)
        print(f"scikit-image slic:            {1e3 * sk_slic_s / args.slices:8.2f} ms/slice "
              f"-> supercl is {sk_slic_s / slic_s:.1f}x faster")
        print(f"scikit-image label:           {1e3 * sk_cc_s / args.slices:8.2f} ms/slice "
              f"-> supercl is {sk_cc_s / cc_s:.1f}x faster")

    shown = min(args.slices, 8)
    grey = [window(images[b]) for b in range(shown)]
    tiles = [overlay(grey[b], superpixels[b]) for b in range(shown)]
    palette = np.random.default_rng(0).integers(60, 256, size=(int(components.max()) + 1, 3))
    palette[0] = 0
    coloured = [
        np.where(components[b, ..., None] > 0, palette[components[b]], grey[b][..., None]).astype(np.uint8)
        for b in range(shown)
    ]
    write_png(out / "superpixels.png", montage(tiles, columns=4))
    write_png(out / "components.png", montage(coloured, columns=4))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out / 'superpixels.png'} (superpixel boundaries in red), "
          f"{out / 'components.png'} (organ components), {out / 'summary.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supercl",
        description="SuperCL: superpixel-guided contrastive pre-training for medical image "
        "segmentation. Kernels for superpixels and connected components, on CPU and GPU.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="superpixels and connected components on embedded phantom CT slices",
        description="Runs supercl.ops.slic and supercl.ops.connected_components on synthetic "
        "CT slices (supercl.data.phantom), writes overlay PNGs and a JSON summary to --out, and "
        "times scikit-image on the same slices when it is installed.",
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--slices", type=int, default=32, help="number of slices (default: 32)")
    demo.add_argument("--size", type=int, default=256, help="slice side in pixels (default: 256)")
    demo.add_argument("--n-segments", type=int, default=100,
                      help="superpixels per slice, SuperCL's setting (default: 100)")
    demo.add_argument("--compactness", type=float, default=0.1,
                      help="SLIC compactness on [0, 1]-scaled intensities; 0.1 is SuperCL's "
                      "compactness 10 on Lab lightness (default: 0.1)")
    demo.add_argument("--seed", type=int, default=0, help="phantom seed (default: 0)")
    demo.add_argument("--threads", type=int, default=0,
                      help="CPU threads, 0 for torch's default (default: 0)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("slices", "size", "n_segments"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if getattr(args, "compactness", 1.0) <= 0:
        parser.error("--compactness must be > 0")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
