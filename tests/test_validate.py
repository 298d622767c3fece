"""supercl._validate: the one spacing check and the one seed check (issue 19: they were
written five times over, with different errors for the same mistake), and the one tensor check
(issue 25: 32 hand-written copies of one pattern)."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from supercl._validate import check_seed, check_spacing, check_tensor

ROOT = Path(__file__).parents[1]


def test_check_spacing_accepts_sequences_arrays_and_tensors():
    assert check_spacing((2.5, 1, 1)) == (2.5, 1.0, 1.0)
    assert check_spacing(np.array([1.0, 0.5]), ndim=2) == (1.0, 0.5)
    assert check_spacing(torch.tensor([3.0, 0.9, 0.9])) == pytest.approx((3.0, 0.9, 0.9))
    assert all(type(v) is float for v in check_spacing([np.float32(2), 1, 1]))


@pytest.mark.parametrize("value, error, text", [
    (None, TypeError, "spacing must be a sequence of 3 numbers"),
    (3.0, TypeError, "spacing must be a sequence"),
    ("abc", TypeError, "spacing must be a sequence"),
    ((1.0, "a", 1.0), TypeError, "spacing"),
    ((1.0, True, 1.0), TypeError, "spacing"),
    ((1.0, 1.0), ValueError, "spacing must have 3 entries"),
    ((1.0, 0.0, 1.0), ValueError, "finite and > 0"),
    ((1.0, -1.0, 1.0), ValueError, "finite and > 0"),
    ((1.0, float("nan"), 1.0), ValueError, "finite and > 0"),
    ((1.0, float("inf"), 1.0), ValueError, "finite and > 0"),
])
def test_check_spacing_errors_name_the_argument(value, error, text):
    with pytest.raises(error, match=re.escape(text)):
        check_spacing(value)
    with pytest.raises(error, match="voxel_size"):
        check_spacing(value, "voxel_size")


def test_check_seed():
    assert check_seed(3).entropy == 3 and check_seed(np.int64(4)).entropy == 4
    sequence = np.random.SeedSequence(7)
    assert check_seed(sequence) is sequence
    for bad in (1.5, "1", True, None):
        with pytest.raises(TypeError, match="seed must be a non-negative integer"):
            check_seed(bad)
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        check_seed(-1)


def test_every_caller_uses_the_one_check():
    """No module of supercl writes its own spacing or seed check any more."""
    own = re.compile(r"^def (_check_spacing\w*|_seed_sequence|_check_seed)\(", re.M)
    copies = [f"{p.relative_to(ROOT)}: {m.group(1)}" for p in sorted((ROOT / "supercl").rglob("*.py"))
              for m in own.finditer(p.read_text())]
    assert not copies


def _callers(tmp_path):
    from supercl.data import phantom_v2_volume, write_msd
    from supercl.eval import hd95
    from supercl.ops import slic

    mask = np.ones((3, 3), bool)
    return {
        "slic 2-D": lambda: slic(torch.rand(6, 6), n_segments=4, spacing=(1.0, 0.0)),
        "slic 3-D": lambda: slic(torch.rand(4, 6, 6), n_segments=4, spacing=(1.0, 1.0, 0.0),
                                 spatial_dims=3),
        "write_msd": lambda: write_msd(tmp_path / "msd", n_volumes=1, shape=(2, 8, 8),
                                       spacing=(1.0, 0.0, 1.0)),
        "phantom_v2_volume": lambda: phantom_v2_volume(4, 16, 16, spacing=(1.0, 0.0, 1.0)),
        "hd95": lambda: hd95(mask, mask, spacing=(1.0, 0.0)),
    }


@pytest.mark.parametrize("caller", ["slic 2-D", "slic 3-D", "write_msd", "phantom_v2_volume",
                                    "hd95"])
def test_the_ops_the_phantoms_and_the_metrics_give_the_same_spacing_errors(caller, tmp_path):
    call = _callers(tmp_path)[caller]
    with pytest.raises(ValueError, match=r"spacing entries must be finite and > 0"):
        call()
    assert not (tmp_path / "msd").exists()


def test_check_tensor_returns_a_valid_tensor():
    x = torch.zeros(2, 3, 4, 5)
    assert check_tensor(x, "x", dtype="floating", dims="(B, C, H, W)", nonempty="BCHW",
                        device=torch.device("cpu"), device_of="y") is x
    ids = torch.zeros(4, dtype=torch.int16)
    assert check_tensor(ids, "ids", dtype="integer", dims="(4,) like x", shape=(4,)) is ids


@pytest.mark.parametrize("value, kwargs, error, text", [
    ([1.0], {}, TypeError, "x must be a torch.Tensor or a numpy.ndarray, got list"),
    (np.zeros(2), dict(arrays=False), TypeError, "x must be a torch.Tensor, got ndarray"),
    (torch.zeros(2), dict(dtype=(torch.int32, torch.int64)), TypeError,
     "x must have dtype int32 or int64, got torch.float32 (convert with .long() if the values "
     "are whole numbers)"),
    (torch.zeros(2, dtype=torch.bool), dict(dtype="integer"), TypeError,
     "x must have an integer dtype, got torch.bool"),
    (torch.zeros(2, dtype=torch.int64), dict(dtype="floating"), TypeError,
     "x must be a float tensor, got torch.int64"),
    (torch.zeros(2, dtype=torch.int8), dict(dtype=(torch.int32,), dtype_text="hold int32 ids"),
     TypeError, "x must hold int32 ids, got torch.int8"),
    (torch.zeros(2, 3), dict(dims="(B, C, H, W)"), ValueError,
     "x must have shape (B, C, H, W), got (2, 3)"),
    (torch.zeros(2, 3), dict(dims="(2, 4) like y", shape=(2, 4)), ValueError,
     "x must have shape (2, 4) like y, got (2, 3)"),
    (torch.zeros(0, 3), dict(dims="(N, D)", nonempty="ND"), ValueError,
     "x is an empty batch (N = 0)"),
    (torch.zeros(2, 0), dict(dims="(N, D)", nonempty="ND"), ValueError,
     "x has no features (D = 0; D >= 1 needed)"),
    (torch.zeros(1, 2, 0, 3), dict(dims="(B, C, H, W)", nonempty="BCHW"), ValueError,
     "x has an empty image of shape (0, 3)"),
    (torch.zeros(1, 0, 2, 3), dict(dims="(B, C, H, W)", nonempty="B"), None, None),
    (torch.zeros(2), dict(device=torch.device("meta"), device_of="y"), ValueError,
     "x is on cpu but y on meta"),
])
def test_check_tensor_errors_name_the_argument(value, kwargs, error, text):
    if error is None:
        check_tensor(value, "x", **kwargs)
        return
    with pytest.raises(error) as caught:
        check_tensor(value, "x", **kwargs)
    assert str(caught.value) == text
