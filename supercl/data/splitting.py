"""Splitting a dataset by volume, with nested label fractions, and writing the split as
JSON. Part of :mod:`supercl.data.nifti`."""

from __future__ import annotations

import json
import math
import numbers
import os
import pathlib
import tempfile
from typing import Any, Dict, Mapping, Optional

import numpy as np

from supercl._validate import check_int

from .scanning import DatasetInfo, PathLike

__all__ = ["split_cases", "write_split"]

# ----------------------------------------------------------------------------
# splits
# ----------------------------------------------------------------------------

def _check_fraction(name: str, value: Any, *, zero_ok: bool, one_ok: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    v = float(value) if ok else float("nan")
    if not (math.isfinite(v) and (v >= 0 if zero_ok else v > 0) and (v <= 1 if one_ok else v < 1)):
        interval = ("[0" if zero_ok else "(0") + ", 1" + ("]" if one_ok else ")")
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return v


def split_cases(info: DatasetInfo, *, label_fraction: float = 0.1, val_fraction: float = 0.2,
                test_fraction: float = 0.2, seed: int = 0,
                label_seed: Optional[int] = None) -> Dict[str, Any]:
    """Split a dataset by volume into pre-training, fine-tuning, validation and test.

    The labeled cases are shuffled with ``numpy.random.default_rng(seed)``;
    the first ``max(1, round(test_fraction * n))`` are the test set, the next
    ``max(1, round(val_fraction * n))`` the validation set, the rest is the
    labeled training pool. The fine-tuning set is the first
    ``max(1, round(label_fraction * n_pool))`` of a second seeded permutation
    of the pool, so with one seed (and the same val/test fractions) the
    10 % set is contained in the 25 % set, which is contained in the 100 %
    set. The pre-training set is the whole pool (its labels unused) plus every
    unlabeled case. Validation and test volumes appear in neither.
    (``round`` is Python's, rounding halves to even.)

    Parameters
    ----------
    info : DatasetInfo
        From :func:`scan_dataset`; needs at least 3 labeled cases.
    label_fraction : float
        Share of the labeled training pool used for fine-tuning, in (0, 1].
    val_fraction, test_fraction : float
        Shares of the labeled cases held out, in [0, 1) (at least one volume
        each).
    seed : int
        Non-negative seed.
    label_seed : int, optional
        Seed of the second permutation alone (which pool volumes are labeled), so that
        several label draws share one test, validation and pre-training set (``supercl
        ablate``'s split seeds). None: the permutation continues ``seed``'s generator.

    Returns
    -------
    dict
        ``"pretrain"``, ``"finetune"``, ``"val"``, ``"test"``: sorted lists
        of case names; ``"label_fraction"`` (float) and ``"seed"`` (int).

    Raises
    ------
    ValueError
        A fraction out of range, a bad seed, or fewer than 3 labeled cases /
        fractions leaving no training volume (the message gives the numbers).

    Notes
    -----
    **Declared z-units.** An MSD ``dataset.json`` may declare its cases as thin axial units of
    larger blocks (:func:`supercl.data.mni152.write_mni152_msd` does): ``"supercl_units":
    {case: {"block": BLOCK, "z": [start, stop]}}``. Then the test, validation and pool
    fractions apply to the blocks (the same seeded permutation, over the blocks sorted by
    name), so held-out anatomy is whole blocks and the gaps between blocks stay between
    training and held-out slices; and the labeled draw is stratified over z: the pool's units,
    sorted by ``start``, are cut into ``max(1, round(label_fraction * pool units))``
    contiguous strata of as equal a number of units as possible (``numpy.array_split``) and
    ``label_seed``'s generator picks one unit in each, so that every draw spans the pool's z
    range from its lowest stratum to its highest. The split then also holds
    ``"finetune_slices"`` and ``"pool_slices"``, so the labeled share of slices is stated
    exactly. ``label_fraction`` 1 labels the whole pool.

    Examples
    --------
    >>> import tempfile
    >>> from supercl.data import scan_dataset, write_msd
    >>> info = scan_dataset(write_msd(tempfile.mkdtemp() + "/msd", n_volumes=10,
    ...                               shape=(2, 8, 8), n_organs=1))
    >>> split = split_cases(info, label_fraction=0.25, seed=0)
    >>> [len(split[k]) for k in ("pretrain", "finetune", "val", "test")]
    [6, 2, 2, 2]
    >>> set(split["finetune"]) <= set(split["pretrain"])
    True
    >>> set(split["test"]) & set(split["pretrain"] + split["val"])
    set()
    """
    lf = _check_fraction("label_fraction", label_fraction, zero_ok=False, one_ok=True)
    vf = _check_fraction("val_fraction", val_fraction, zero_ok=True, one_ok=False)
    tf = _check_fraction("test_fraction", test_fraction, zero_ok=True, one_ok=False)
    seed = check_int(seed, "seed", minimum=0)

    units = _declared_units(info)
    labeled = [c.name for c in info.cases if c.label is not None]
    if units is not None:
        return _split_units(info, units, labeled, lf, vf, tf, seed, label_seed)
    unlabeled = [c.name for c in info.cases if c.label is None]
    n = len(labeled)
    n_test = max(1, round(tf * n))
    n_val = max(1, round(vf * n))
    if n < 3 or n_test + n_val >= n:
        hint = ""
        if info.layout == "folder" and n == 0:
            hint = ("; the images of a plain folder are unlabeled unless the label maps are "
                    "given: pass --labels DIR (labels= in scan_dataset), a folder of label "
                    "maps named like the images")
        raise ValueError(
            f"split_cases: {info.root} has {n} labeled volumes; test_fraction={tf:g} "
            f"({n_test} test) and val_fraction={vf:g} ({n_val} val) leave "
            f"{max(0, n - n_test - n_val)} training volumes (need at least 1, so at least 3 "
            f"labeled volumes){hint}")
    rng = np.random.default_rng(seed)
    order = [labeled[i] for i in rng.permutation(n)]
    test = order[:n_test]
    val = order[n_test:n_test + n_val]
    pool = order[n_test + n_val:]
    if label_seed is not None:
        rng = np.random.default_rng([check_int(label_seed, "label_seed", minimum=0), 1])
    pool_order = [pool[i] for i in rng.permutation(len(pool))]
    finetune = pool_order[:max(1, round(lf * len(pool)))]
    return _split_record(pool, unlabeled, finetune, val, test, lf, seed, label_seed)


def _split_record(pool, unlabeled, finetune, val, test, lf, seed, label_seed) -> Dict[str, Any]:
    """The split as split_cases returns it: sorted case lists and the settings that drew it."""
    return {
        "pretrain": sorted(pool + unlabeled),
        "finetune": sorted(finetune),
        "val": sorted(val),
        "test": sorted(test),
        "label_fraction": lf,
        "seed": seed,
        **({} if label_seed is None else {"label_seed": int(label_seed)}),
    }


def _declared_units(info: DatasetInfo) -> Optional[Dict[str, Dict[str, Any]]]:
    """The ``"supercl_units"`` of an MSD dataset.json (see :func:`split_cases`), checked; None
    when the dataset declares none."""
    if getattr(info, "layout", None) != "msd":
        return None
    meta_path = pathlib.Path(info.root) / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # scan_dataset reported a bad dataset.json already; nothing declared here
    units = meta.get("supercl_units") if isinstance(meta, dict) else None
    if units is None:
        return None
    names = {c.name for c in info.cases}
    ok = isinstance(units, dict) and set(units) == names and all(
        isinstance(u, dict) and isinstance(u.get("block"), str) and isinstance(u.get("z"), list)
        and len(u["z"]) == 2 and all(isinstance(v, int) for v in u["z"]) and u["z"][0] < u["z"][1]
        for u in units.values())
    if not ok:
        raise ValueError(f'{meta_path}: malformed "supercl_units": expected {{case: {{"block": '
                         f'str, "z": [start, stop]}}}} for exactly the cases of the dataset')
    return units


def _split_units(info, units, labeled, lf, vf, tf, seed, label_seed) -> Dict[str, Any]:
    """split_cases for declared z-units: held-out blocks, a z-stratified labeled draw."""
    unlabeled = [c.name for c in info.cases if c.label is None]
    blocks = sorted({units[name]["block"] for name in labeled})
    n = len(blocks)
    n_test = max(1, round(tf * n))
    n_val = max(1, round(vf * n))
    if n < 3 or n_test + n_val >= n:
        raise ValueError(
            f"split_cases: {info.root} has {n} labeled blocks of z-units; test_fraction={tf:g} "
            f"({n_test} test) and val_fraction={vf:g} ({n_val} val) leave "
            f"{max(0, n - n_test - n_val)} training blocks (need at least 1, so at least 3)")
    rng = np.random.default_rng(seed)
    order = [blocks[i] for i in rng.permutation(n)]
    test_blocks, val_blocks = set(order[:n_test]), set(order[n_test:n_test + n_val])

    def start(name):
        return (units[name]["z"][0], name)

    test = [c for c in labeled if units[c]["block"] in test_blocks]
    val = [c for c in labeled if units[c]["block"] in val_blocks]
    pool = sorted((c for c in labeled if units[c]["block"] not in test_blocks | val_blocks),
                  key=start)
    if label_seed is not None:
        rng = np.random.default_rng([check_int(label_seed, "label_seed", minimum=0), 1])
    n_label = max(1, round(lf * len(pool)))
    # one unit from each of n_label z-strata of the pool: every draw reaches from the lowest
    # stratum to the highest, whichever units the seed picks
    finetune = [str(stratum[rng.integers(len(stratum))])
                for stratum in np.array_split(np.array(pool, dtype=object), n_label)]

    def slices(names):
        return sum(units[c]["z"][1] - units[c]["z"][0] for c in names)

    return {**_split_record(pool, unlabeled, finetune, val, test, lf, seed, label_seed),
            "finetune_slices": slices(finetune), "pool_slices": slices(pool)}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (np.ndarray, tuple, set, frozenset)):
        return sorted(obj) if isinstance(obj, (set, frozenset)) else list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def write_split(split: Mapping[str, Any], path: PathLike) -> pathlib.Path:
    """Write a split (from :func:`split_cases`) as JSON, atomically.

    The JSON is written to a temporary file next to ``path`` and moved over
    it with :func:`os.replace`, so a reader never sees a partial file. Parent
    folders are created.

    Parameters
    ----------
    split : mapping
        JSON-serialisable (numpy scalars and arrays are converted).
    path : str or os.PathLike
        Destination file.

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import json, tempfile
    >>> p = write_split({"val": ["a"], "seed": 0}, tempfile.mkdtemp() + "/split.json")
    >>> json.loads(p.read_text())
    {'val': ['a'], 'seed': 0}
    """
    path = pathlib.Path(path)
    if not isinstance(split, Mapping):
        raise ValueError(f"{path}: split must be a mapping, got {type(split).__name__}")
    try:
        text = json.dumps(dict(split), indent=2, default=_json_default) + "\n"
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: split is not JSON-serialisable ({err})") from err
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0o022)  # mkstemp makes 0600: follow the umask like every other file
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
