"""supercl.viz: overlays on hand-made labels and the matplotlib charts of the run folder."""


import numpy as np
import pytest
import torch
from conftest import python_isolated
from matplotlib.image import imread

from supercl.viz import (
    PALETTE,
    boundary_mask,
    overlay,
    plot_dsc_bars,
    plot_loss_curves,
    segmentation_tile,
)


def read_chart(path):
    """A chart PNG as written by matplotlib: (H, W, 4) floats, decoded by matplotlib."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image


# ------------------------------------------------------------------------- boundaries


def test_boundary_mask_hand_made():
    labels = np.array([
        [0, 0, 0, 0],
        [0, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
    ])
    # marked: a pixel whose right or lower neighbour differs
    expected = np.array([
        [0, 1, 1, 0],
        [1, 0, 1, 0],
        [1, 1, 1, 0],
        [0, 0, 0, 0],
    ], bool)
    np.testing.assert_array_equal(boundary_mask(labels), expected)
    assert not boundary_mask(np.full((3, 5), 7)).any()


def test_overlay_colours_the_boundary_only():
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    labels = np.zeros((4, 4), np.int64)
    labels[:, 2:] = 1
    rgb = overlay(grey, labels, colour=(1, 2, 3))
    edge = boundary_mask(labels)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert edge.sum() == 4 and edge[:, 1].all()
    assert (rgb[edge] == (1, 2, 3)).all()
    for ch in range(3):
        np.testing.assert_array_equal(rgb[..., ch][~edge], grey[~edge])


def test_segmentation_tile_fills_outlines_and_cycles_the_palette():
    # what prediction_overlay's tests checked, for the tile that the figures use
    grey = np.full((6, 7), 80, np.uint8)
    labels = np.zeros((6, 7), np.int64)
    labels[1:5, 1:5] = 1
    labels[5, 6] = len(PALETTE) + 1  # cycles back to the first colour
    rgb = segmentation_tile(grey, labels, len(PALETTE) + 2, alpha=0.35)
    assert rgb.shape == (6, 7, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [80, 80, 80]  # background: the grey slice
    assert rgb[1, 1].tolist() == list(PALETTE[0])  # the outline, opaque
    expected = np.rint(0.65 * 80 + 0.35 * np.array(PALETTE[0], float)).astype(int)
    assert rgb[2, 2].tolist() == expected.tolist()  # inside: filled at alpha
    assert rgb[5, 6].tolist() == list(PALETTE[0])
    np.testing.assert_array_equal(
        segmentation_tile(torch.from_numpy(grey), torch.from_numpy(labels), len(PALETTE) + 2),
        segmentation_tile(grey, labels, len(PALETTE) + 2))
    with pytest.raises(TypeError):
        segmentation_tile(grey.astype(np.float32), labels, 9)
    with pytest.raises(ValueError):
        segmentation_tile(grey, labels[:5], 9)
    with pytest.raises(ValueError):
        segmentation_tile(grey, labels, 2)  # a value outside [0, num_classes)


# ----------------------------------------------------------------------------- charts


def _records(n=6):
    return [
        {"epoch": e, "loss": 2.0 / (e + 1), "l_ins": 1.0 / (e + 1), "l_intra": 0.6, "l_inter": None,
         "val_dsc": 0.5 + 0.05 * e, "time": 12.5, "lr": 1e-3, "phase": "pretrain", "flag": True}
        for e in range(n)
    ]


def test_plot_loss_curves_two_panels(tmp_path):
    records = _records()
    records.append({"test_dsc": 0.8})  # no epoch: skipped
    records[2]["loss"] = float("nan")  # not finite: skipped
    path = plot_loss_curves(records, tmp_path / "run" / "loss.png", title="pretrain")
    assert path == tmp_path / "run" / "loss.png"
    image = read_chart(path)
    assert image.shape[:2] == (460, 1200)  # two 6 x 4.6 inch panels at 100 dpi (legends below)
    assert image[..., :3].std() > 0.01  # something was drawn


def test_plot_loss_curves_panels_follow_keys(tmp_path):
    records = _records(3)
    # losses only -> one panel; only val_ keys -> one panel
    assert read_chart(plot_loss_curves(records, tmp_path / "a.png", keys=["loss", "l_ins"])).shape[:2] == (460, 600)
    assert read_chart(plot_loss_curves(records, tmp_path / "b.png", keys=["val_dsc", "nope"])).shape[:2] == (460, 600)
    # the default keys leave out epoch, time, lr, strings and bools: only val_ keys left here
    only_val = [{"epoch": r["epoch"], "val_dsc": r["val_dsc"], "time": 1.0, "lr": 0.1, "step_s": 0.2}
                for r in records]
    assert read_chart(plot_loss_curves(only_val, tmp_path / "c.png")).shape[:2] == (460, 600)


def test_plot_loss_curves_without_epochs_uses_position(tmp_path):
    records = [{"loss": 1.0}, {"loss": 0.5}, {"loss": 0.25}]
    assert read_chart(plot_loss_curves(records, tmp_path / "x.png")).shape[:2] == (460, 600)


def test_the_charts_do_not_use_pyplot(tmp_path):
    """In a fresh interpreter (this one may have imported pyplot for another test): drawing
    every chart imports neither pyplot nor a GUI backend."""
    code = (
        "import sys; from supercl.viz import plot_dsc_bars, plot_loss_curves, plot_diagnostics; "
        f"plot_loss_curves([{{'epoch': 1, 'loss': 1.0}}, {{'epoch': 2, 'loss': 0.5}}], {str(tmp_path / 'x.png')!r}); "
        f"plot_dsc_bars({{'a': {{'x': 0.5}}}}, {str(tmp_path / 'y.png')!r}); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; print('ok')")
    result = python_isolated(code, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    assert (tmp_path / "x.png").is_file() and (tmp_path / "y.png").is_file()


def test_plot_loss_curves_errors(tmp_path):
    with pytest.raises(ValueError, match="at least one record"):
        plot_loss_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no numeric values"):
        plot_loss_curves([{"epoch": 0, "time": 3.0, "phase": "x"}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no numeric values"):
        plot_loss_curves(_records(), tmp_path / "x.png", keys=["l_inter", "phase"])
    with pytest.raises(TypeError, match="dict"):
        plot_loss_curves([{"epoch": 0, "loss": 1.0}, [1, 2]], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_dsc_bars(tmp_path):
    results = {
        "scratch": {"liver": 0.71, "spleen": 0.64, "kidney": 0.5},
        "supercl": {"liver": 0.78, "spleen": float("nan"), "kidney": None},
        "full": {"liver": 0.9, "spleen": 1.0},  # kidney missing
    }
    path = plot_dsc_bars(results, tmp_path / "figs" / "dsc.png", metric="JC", title="10 %")
    image = read_chart(path)
    assert image.shape[0] == 450 and image.shape[1] >= 500
    assert image[..., :3].std() > 0.01
    # many classes and runs: wider figure, still a valid picture
    many = {f"run{r}": {f"organ{c}": (r + c) % 10 / 10 for c in range(12)} for r in range(5)}
    assert read_chart(plot_dsc_bars(many, tmp_path / "many.png")).shape[1] > image.shape[1]


def test_plot_dsc_bars_errors(tmp_path):
    with pytest.raises(ValueError):
        plot_dsc_bars({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="class"):
        plot_dsc_bars({"a": {}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        plot_dsc_bars({"a": {"liver": 71.0}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        plot_dsc_bars({"a": {"liver": -0.1}}, tmp_path / "x.png")
    with pytest.raises(TypeError, match="number"):
        plot_dsc_bars({"a": {"liver": "0.7"}}, tmp_path / "x.png")
    with pytest.raises(TypeError, match="dict"):
        plot_dsc_bars({"a": [0.7]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_diagnostics(tmp_path):
    from supercl.viz import plot_diagnostics

    rows = [{"epoch": e, "ilcp_pos_per_anchor": 1.8, "pcl_pos_per_anchor": None,
             "inter_edge_position_agreement": 0.3 * e / 3, "inter_edge_position_chance": 0.2,
             "inter_partner_edge_share": 0.0}
            for e in (1, 2, 3)]
    path = plot_diagnostics(rows, tmp_path / "sub" / "d.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(path).shape[:2]
    assert width > height  # two panels side by side
    with pytest.raises(ValueError, match="no record"):
        plot_diagnostics([{"epoch": 1, "loss": 2.0}], tmp_path / "e.png")
