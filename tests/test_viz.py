"""supercl.viz: PNG writing (decoded back with matplotlib), overlays on
hand-made labels, montage layout, and the matplotlib charts of the run folder."""


import numpy as np
import pytest
import torch
from conftest import python_isolated
from matplotlib.image import imread

from supercl.viz import (
    PALETTE,
    boundary_mask,
    montage,
    overlay,
    plot_dsc_bars,
    plot_loss_curves,
    prediction_overlay,
    window,
    write_png,
)


def read_chart(path):
    """A chart PNG as written by matplotlib: (H, W, 4) floats, decoded by matplotlib."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image


# ------------------------------------------------------------------------- write_png


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (5, 9, 3), (16, 3, 3)])
def test_write_png_round_trip(tmp_path, shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    path = write_png(tmp_path / "sub" / "dir" / "x.png", image)
    assert path == tmp_path / "sub" / "dir" / "x.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = np.rint(imread(path) * 255).astype(np.uint8)  # matplotlib's decoder
    np.testing.assert_array_equal(decoded.reshape(image.shape), image)


def test_write_png_non_contiguous(tmp_path):
    image = np.arange(60, dtype=np.uint8).reshape(6, 10)[:, ::2]
    decoded = np.rint(imread(write_png(tmp_path / "x.png", image)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(decoded, image)


def test_write_png_errors(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        write_png(tmp_path / "x.png", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        write_png(tmp_path / "x.png", np.zeros((2, 2, 4), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        write_png(tmp_path / "x.png", np.zeros(4, np.uint8))


# ------------------------------------------------------------------ window, boundaries


def test_window():
    hu = np.array([-1000.0, -200.0, 50.0, 300.0, 2000.0])
    np.testing.assert_array_equal(window(hu), [0, 0, 128, 255, 255])  # 50 HU: 0.5 * 255 + 0.5
    assert window(np.array([0.0]), low=0, high=10).dtype == np.uint8


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


def test_montage_layout():
    tiles = [np.full((3, 5, 3), i, np.uint8) for i in range(5)]
    out = montage(tiles, columns=2, gap=1)
    assert out.shape == (3 * 3 + 2 * 1, 2 * 5 + 1, 3)
    assert (out[0:3, 0:5] == 0).all() and (out[0:3, 6:11] == 1).all()
    assert (out[4:7, 0:5] == 2).all() and (out[8:11, 6:11] == 255).all()  # missing 6th tile: white
    assert (out[3] == 255).all() and (out[:, 5] == 255).all()  # gaps
    assert montage(tiles[:1], columns=3).shape == (3, 3 * 5 + 2 * 4, 3)
    with pytest.raises(ValueError):
        montage([], columns=2)


# ---------------------------------------------------------------- prediction_overlay


def _labels():
    target = np.zeros((6, 7), np.int64)
    target[1:4, 1:4] = 1
    target[4:6, 5:7] = 2
    pred = np.zeros((6, 7), np.int64)
    pred[2:5, 2:5] = 1
    pred[0, 6] = 2
    return pred, target


def test_prediction_overlay_colours_and_contour():
    grey = np.full((6, 7), 80, np.uint8)
    grey[0, 0] = 200
    pred, target = _labels()
    rgb = prediction_overlay(grey, pred, target, 3)
    assert rgb.shape == (6, 7, 3) and rgb.dtype == np.uint8
    contour = boundary_mask(target)
    assert (rgb[contour] == 255).all()
    for c in (1, 2):
        where = (pred == c) & ~contour
        assert where.any()
        expected = np.rint(0.55 * 80 + 0.45 * np.array(PALETTE[c - 1], float))
        assert (rgb[where] == expected).all()
    background = (pred == 0) & ~contour
    np.testing.assert_array_equal(rgb[background], np.repeat(grey[background][:, None], 3, axis=1))
    assert rgb[0, 0].tolist() == [200, 200, 200]


def test_prediction_overlay_alpha_extremes_and_palette_cycle():
    grey = np.full((2, 2), 10, np.uint8)
    target = np.zeros((2, 2), np.int64)  # no contour
    pred = np.array([[0, 1], [len(PALETTE) + 1, 2]])
    rgb = prediction_overlay(grey, pred, target, len(PALETTE) + 2, alpha=1.0)
    assert rgb[0, 0].tolist() == [10, 10, 10]
    assert rgb[0, 1].tolist() == list(PALETTE[0])
    assert rgb[1, 0].tolist() == list(PALETTE[0])  # class len+1 cycles back to the first colour
    assert rgb[1, 1].tolist() == list(PALETTE[1])
    assert (prediction_overlay(grey, pred, target, len(PALETTE) + 2, alpha=0.0) == 10).all()
    assert all(c != (255, 255, 255) for c in PALETTE)


def test_prediction_overlay_accepts_tensors():
    grey = np.full((6, 7), 80, np.uint8)
    pred, target = _labels()
    np.testing.assert_array_equal(
        prediction_overlay(torch.from_numpy(grey), torch.from_numpy(pred), torch.from_numpy(target), 3),
        prediction_overlay(grey, pred, target, 3),
    )


def test_prediction_overlay_errors():
    grey = np.zeros((6, 7), np.uint8)
    pred, target = _labels()
    with pytest.raises(ValueError, match="pred"):
        prediction_overlay(grey, pred[:, :6], target, 3)
    with pytest.raises(ValueError, match="target"):
        prediction_overlay(grey, pred, target[:5], 3)
    with pytest.raises(ValueError, match="grey"):
        prediction_overlay(np.zeros((6, 7, 3), np.uint8), pred, target, 3)
    with pytest.raises(TypeError, match="grey"):
        prediction_overlay(grey.astype(np.float32), pred, target, 3)
    with pytest.raises(TypeError, match="pred"):
        prediction_overlay(grey, pred.astype(float), target, 3)
    with pytest.raises(ValueError, match="target values"):
        prediction_overlay(grey, np.minimum(pred, 1), target, 2)
    with pytest.raises(ValueError, match="pred values"):
        prediction_overlay(grey, pred - 1, target, 3)
    with pytest.raises(ValueError, match="num_classes"):
        prediction_overlay(grey, pred * 0, target * 0, 1)
    with pytest.raises(ValueError, match="alpha"):
        prediction_overlay(grey, pred, target, 3, alpha=1.5)


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
