"""The reference recipe: its loss terms and gradients against small dense oracles written from
the definitions (explicit N x N masks and Python loops, float64), the recipe presets, the
scale-aware ILCP level and the reference views."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components

from supercl.losses import LossConfig, SuperCLLoss, supcon_masked
from supercl.train import PretrainConfig, recipe_config
from supercl.train.pretraining import RECIPES, resolve_ilcp_level


def dense_supcon(z, positive, denominator, t, bt):
    """SupCon "out" from its definition, one anchor at a time: loss_i = (t / bt) * (log sum_{a
    in A(i)} exp(s_ia) - mean_{p in P(i)} s_ip), anchors without a positive left out."""
    z = torch.nn.functional.normalize(z, dim=1)
    s = z @ z.T / t
    losses = []
    for i in range(z.shape[0]):
        a = [j for j in range(z.shape[0]) if denominator[i][j] and j != i]
        p = [j for j in a if positive[i][j]]
        if not p:
            continue
        lse = torch.logsumexp(s[i, a], 0)
        losses.append((t / bt) * (lse - s[i, p].mean()))
    return torch.stack(losses).mean()


def nearest(seg, h, w):
    """Nearest down-sampling as F.interpolate(mode="nearest") picks rows and columns."""
    H, W = seg.shape
    rows = [min(int(math.floor(i * (H / h))), H - 1) for i in range(h)]
    cols = [min(int(math.floor(j * (W / w))), W - 1) for j in range(w)]
    return seg[np.ix_(rows, cols)]


def oracle_terms(f1, f2, e3, e4, seg1, seg2, pos, c: LossConfig):
    t, bt = c.temperature, c.base_temperature or c.temperature
    B, C, h, w = f1.shape
    # L_intra: every pixel_stride-th bottleneck pixel (raster order) of v1 and v2, labelled by
    # v1's superpixel, positives and denominators within an image.
    rows, labels, image = [], [], []
    for b in range(B):
        small = nearest(seg1[b], h, w).reshape(-1)
        for f in (f1, f2):
            flat = f[b].reshape(C, -1).T
            for k in range(0, h * w, c.pixel_stride):
                rows.append(flat[k])
                labels.append(int(small[k]))
                image.append(b)
    z = torch.stack(rows)
    same_img = [[image[i] == image[j] for j in range(len(z))] for i in range(len(z))]
    pos_mask = [[same_img[i][j] and labels[i] == labels[j] for j in range(len(z))]
                for i in range(len(z))]
    l_intra = dense_supcon(z, pos_mask, same_img, t, bt)
    # L_inter: ASP of the channel mean, each view with its own map; "area": sums / (h * w).
    asp = []
    for f, seg in ((f1, seg1), (f2, seg2)):
        for b in range(B):
            m = f[b].detach().mean(0).numpy()
            small = nearest(seg[b], h, w)
            out = np.zeros_like(m)
            for s in np.unique(small):
                total = m[small == s].sum()
                out[small == s] = total / (h * w if c.asp_normalize == "area"
                                           else (small == s).sum())
            asp.append(out.reshape(-1))
    asp = np.stack(asp).astype(np.float64)
    n = 2 * B
    x = asp / np.maximum(np.linalg.norm(asp, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nn = [int(np.argmax(sim[i])) for i in range(n)]  # argmax: ties to the smaller index
    graph = coo_matrix((np.ones(n), (np.arange(n), nn)), shape=(n, n))
    _, comp = scipy_components(graph, directed=True, connection="weak")
    partner = [(i + B) % n for i in range(n)]
    ze = torch.cat([e3, e4])
    everyone = [[True] * n for _ in range(n)]
    inter_pos = [[comp[i] == comp[j] or j == partner[i] for j in range(n)] for i in range(n)]
    l_inter = dense_supcon(ze, inter_pos, everyone, t, bt)
    # L_ins: PCL's threshold relation |p_i - p_j| < threshold over the 2B views.
    p = torch.cat([pos, pos]).tolist()
    ins_pos = [[abs(p[i] - p[j]) < c.pcl_threshold for j in range(n)] for i in range(n)]
    l_ins = dense_supcon(ze, ins_pos, everyone, t, bt)
    return {"l_intra": l_intra, "l_inter": l_inter, "l_ins": l_ins,
            "loss": c.l_ins * l_ins + c.l_intra * l_intra + c.l_inter * l_inter}


def _inputs(seed=0, B=3, C=5, h=8, w=8, H=32, W=32, D=6):
    g = torch.Generator().manual_seed(seed)
    f1 = torch.randn(B, C, h, w, generator=g, dtype=torch.float64)
    f2 = f1 + 0.3 * torch.randn(B, C, h, w, generator=g, dtype=torch.float64)
    e3 = torch.randn(B, D, generator=g, dtype=torch.float64)
    e4 = e3 + 0.5 * torch.randn(B, D, generator=g, dtype=torch.float64)
    # block superpixels of odd sizes, different per view
    seg1 = (torch.arange(H)[:, None] // 7 * 10 + torch.arange(W)[None, :] // 9).expand(B, H, W)
    seg2 = (torch.arange(H)[:, None] // 5 * 10 + torch.arange(W)[None, :] // 11).expand(B, H, W)
    pos = torch.tensor([0.05, 0.12, 0.5], dtype=torch.float64)[:B]
    return f1, f2, e3, e4, seg1.contiguous(), seg2.contiguous(), pos


def test_reference_recipe_losses_match_dense_oracles():
    c = recipe_config("reference").loss
    assert (c.pixel_stride, c.asp_normalize, c.asp_segments, c.pcl_relation,
            c.base_temperature, c.inter_positives, c.inter_graph) == (
        16, "area", "own", "threshold", 0.07, "pair_edge", "views")
    assert recipe_config("default").loss.inter_graph == "images"
    f1, f2, e3, e4, seg1, seg2, pos = _inputs()
    ours = SuperCLLoss(c, backend="torch")(f1, f2, e3, e4, seg1, pos, segments2=seg2)
    want = oracle_terms(f1, f2, e3, e4, seg1.numpy(), seg2.numpy(), pos, c)
    for k in ("l_intra", "l_inter", "l_ins", "loss"):
        assert float(ours[k]) == pytest.approx(float(want[k]), rel=1e-5, abs=1e-6), k
    # the scale t / 0.07 is there: the same terms at base temperature t are 0.07 / 0.1 of these
    plain = SuperCLLoss(LossConfig(**{**c.__dict__, "base_temperature": None}), backend="torch")(
        f1, f2, e3, e4, seg1, pos, segments2=seg2)
    assert float(plain["l_ins"]) == pytest.approx(float(ours["l_ins"]) * 0.07 / 0.1, rel=1e-6)


def test_reference_recipe_gradients_match_dense_oracles():
    c = recipe_config("reference").loss
    f1, f2, e3, e4, seg1, seg2, pos = _inputs(seed=1)
    leaves = [x.clone().requires_grad_() for x in (f1, f2, e3, e4)]
    SuperCLLoss(c, backend="torch")(*leaves, seg1, pos, segments2=seg2)["loss"].backward()
    others = [x.clone().requires_grad_() for x in (f1, f2, e3, e4)]
    oracle_terms(*others, seg1.numpy(), seg2.numpy(), pos, c)["loss"].backward()
    for a, b in zip(leaves, others):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_default_recipe_with_an_ilcp_level_matches_the_oracle():
    """ILCP on a higher-resolution map (g1, g2) with v1's superpixels for both views."""
    c = LossConfig(pcl_relation="threshold")
    f1, f2, e3, e4, seg1, _, pos = _inputs(seed=2, h=2, w=2)
    g = torch.Generator().manual_seed(3)
    g1 = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    g2 = g1 + 0.2 * torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    ours = SuperCLLoss(c, backend="torch")(f1, f2, e3, e4, seg1, pos, g1=g1, g2=g2)
    want = oracle_terms(g1, g2, e3, e4, seg1.numpy(), seg1.numpy(), pos,
                        LossConfig(**{**c.__dict__, "l_inter": 0.0}))
    assert float(ours["l_intra"]) == pytest.approx(float(want["l_intra"]), rel=1e-6)
    assert float(ours["l_ins"]) == pytest.approx(float(want["l_ins"]), rel=1e-6)


def test_supcon_masked_gradcheck_and_definition():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(7, 7, generator=g) < 0.3
    mask[0] = False  # an anchor without a positive is left out
    want = dense_supcon(z, mask.tolist(), [[True] * 7] * 7, 0.1, 0.07)
    assert float(supcon_masked(z, mask, 0.1, 0.07)) == pytest.approx(float(want), rel=1e-10)
    assert torch.autograd.gradcheck(lambda x: supcon_masked(x, mask, 0.2), (z,))


def test_own_segments_are_required_and_checked():
    f1, f2, e3, e4, seg1, seg2, pos = _inputs()
    loss = SuperCLLoss(recipe_config("reference").loss)
    with pytest.raises(ValueError, match="segments2"):
        loss(f1, f2, e3, e4, seg1, pos)
    for bad in (dict(base_temperature=0.0), dict(asp_segments="mine"),
                dict(inter_positives="all")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SuperCLLoss(LossConfig(**bad))


def test_recipes_and_overrides():
    ref = recipe_config("reference", epochs=3, loss={"l_inter": 0.0}, views={"recipe": "default"})
    assert (ref.recipe, ref.lr, ref.optimizer, ref.epochs, ref.patch_size, ref.ilcp_level) == \
        ("reference", 0.01, "sgd", 3, 512, -1)
    assert ref.loss.l_inter == 0.0 and ref.loss.pixel_stride == 16
    assert ref.views.recipe == "default"
    assert recipe_config() == PretrainConfig()
    assert set(RECIPES) == {"default", "reference"}
    with pytest.raises(ValueError, match="recipe"):
        recipe_config("published")


@pytest.mark.parametrize("patch, k, depth, level", [
    (128, 100, 4, 2), (64, 25, 4, 2), (512, 100, 4, 4), (32, 400, 2, 0), (256, 100, 4, 3),
    (48, 9, 4, 3)])
def test_scale_aware_ilcp_level(patch, k, depth, level):
    cfg = PretrainConfig(patch_size=patch, n_segments=k, depth=depth)
    assert resolve_ilcp_level(cfg) == level
    side = patch / 2**level
    assert side * side / k >= 4 or level == 0
    if level < depth:  # one level deeper would give fewer than 4 pixels per superpixel
        assert (side / 2) ** 2 / k < 4


def test_explicit_ilcp_level_is_checked():
    assert resolve_ilcp_level(PretrainConfig(ilcp_level=-1)) == 4
    assert resolve_ilcp_level(PretrainConfig(ilcp_level=1)) == 1
    for bad in (5, -6, 1.5, True):
        with pytest.raises(ValueError, match="ilcp_level"):
            resolve_ilcp_level(PretrainConfig(ilcp_level=bad))


@pytest.mark.parametrize("patch, k", [(128, 100), (64, 25)])  # the CLI's and the demo's
def test_default_recipe_gives_ilcp_at_least_4_positives_per_anchor(patch, k):
    """SLIC maps of phantom CT slices (windowed as the loader does) at the default patch size
    and n_segments: the diagnostic that pre-training logs is at least 4 at the level the rule
    picks, and below 4 at the bottleneck, where ILCP used to run."""
    from supercl.data.phantom_v2 import phantom_v2_slice
    from supercl.losses import ilcp_positives_per_anchor
    from supercl.ops import downsample_segments, slic

    cfg = PretrainConfig(patch_size=patch, n_segments=k)
    hu = np.stack([phantom_v2_slice(patch, patch, position=p, seed=i)[0]
                   for i, p in enumerate((0.2, 0.45, 0.6, 0.8))])
    x = torch.from_numpy(np.clip((hu + 200) / 500, 0, 1).astype(np.float32))
    seg = slic(x, n_segments=cfg.n_segments, compactness=cfg.compactness).long()
    side = patch >> resolve_ilcp_level(cfg)
    assert float(ilcp_positives_per_anchor(downsample_segments(seg, (side, side)))) >= 4.0
    bottom = patch >> cfg.depth
    assert float(ilcp_positives_per_anchor(downsample_segments(seg, (bottom, bottom)))) < 4.0


def test_reference_views_shapes_and_randomness():
    from supercl.train.views import SuperCLViews, ViewConfig

    torch.manual_seed(0)
    views = SuperCLViews(ViewConfig(recipe="reference"))
    x = torch.rand(3, 1, 40, 48)
    v1, v2, v3, v4 = views(x)
    assert all(v.shape == x.shape for v in (v1, v2, v3, v4))
    assert not torch.equal(v1, v2) and not torch.equal(v3, v4)
    assert all(torch.isfinite(v).all() for v in (v1, v2, v3, v4))
    with pytest.raises(ValueError, match="recipe"):
        SuperCLViews(ViewConfig(recipe="published"))
