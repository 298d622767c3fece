"""The SuperCL objective (supercl.losses) against dense references written here in plain torch
and the peer oracles (scikit-style k-NN graph in numpy/scipy), on tiny batches; gradients
(float64 gradcheck, and flow into the encoder)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from supercl.losses import (LossConfig, SuperCLLoss, igcp_loss, ilcp_loss,
                            ilcp_positives_per_anchor, instance_loss, pcl_positives_per_anchor,
                            position_labels, weak_label_quality)
from supercl.losses import _weak_labels, asp_vectors
from supercl.models import SuperCLModel, UNetEncoder
from supercl.testing import knn_weak_labels_reference


def dense_supcon(z, labels, groups=None, t=0.1, related=None):
    """Khosla et al. eq. 2 with an N x N matrix: mean over anchors that have a positive.
    ``related`` (N x N bool) replaces the same-label relation when given."""
    z = F.normalize(z.double(), dim=1)
    n = z.shape[0]
    groups = torch.zeros(n, dtype=torch.long) if groups is None else groups
    same_group = groups[:, None] == groups[None, :]
    eye = torch.eye(n, dtype=torch.bool)
    denom_mask = same_group & ~eye
    related = labels[:, None] == labels[None, :] if related is None else related
    pos = denom_mask & related
    s = z @ z.T / t
    lse = torch.logsumexp(s.masked_fill(~denom_mask, -math.inf), dim=1)
    mean_pos = (s * pos).sum(1) / pos.sum(1).clamp_min(1)
    has = pos.any(1)
    return (lse - mean_pos)[has].mean()


def blocks(batch, h, w, cell, offset=0):
    """Superpixel maps of square cells, numbered in raster order."""
    r = torch.arange(h)[:, None] // cell
    c = torch.arange(w)[None, :] // cell
    seg = r * ((w + cell - 1) // cell) + c
    return seg.expand(batch, h, w).clone() + offset


def test_ilcp_matches_dense_per_image():
    g = torch.Generator().manual_seed(0)
    f1, f2 = torch.randn(3, 5, 3, 5, generator=g), torch.randn(3, 5, 3, 5, generator=g)
    seg = torch.randint(0, 4, (3, 12, 20), generator=g)
    small = seg[:, ::4, ::4]  # nearest down-sampling by an integer factor picks every 4th pixel
    got = ilcp_loss(f1, f2, seg, temperature=0.2)
    feats, labels, groups = [], [], []
    for b in range(3):
        for f in (f1, f2):
            feats.append(f[b].flatten(1).T)
            labels.append(small[b].flatten())
            groups.append(torch.full((15,), b))
    want = dense_supcon(torch.cat(feats), torch.cat(labels), torch.cat(groups), t=0.2)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_ilcp_pixel_stride_keeps_every_nth_pixel():
    g = torch.Generator().manual_seed(1)
    f1, f2 = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    seg = blocks(2, 4, 4, 2)
    got = ilcp_loss(f1, f2, seg, pixel_stride=3)
    keep = torch.arange(0, 16, 3)
    feats, labels, groups = [], [], []
    for b in range(2):
        for f in (f1, f2):
            feats.append(f[b].flatten(1).T[keep])
            labels.append(seg[b].flatten()[keep])
            groups.append(torch.full((len(keep),), b))
    want = dense_supcon(torch.cat(feats), torch.cat(labels), torch.cat(groups))
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_ilcp_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    f1 = torch.randn(2, 3, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    f2 = torch.randn(2, 3, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    seg = blocks(2, 2, 3, 1) % 3
    assert torch.autograd.gradcheck(lambda a, b: ilcp_loss(a, b, seg, temperature=0.5), (f1, f2))


def asp_reference(f, seg):
    """Channel mean, then every pixel replaced by its superpixel's mean, by Python loops."""
    m = f.double().mean(1)
    out = torch.empty_like(m)
    for b in range(f.shape[0]):
        for s in seg[b].unique():
            where = seg[b] == s
            out[b][where] = m[b][where].mean()
    return out.flatten(1)


@pytest.mark.parametrize("graph", ["images", "views"])
@pytest.mark.parametrize("batch", [1, 3, 5])
def test_igcp_matches_references(batch, graph):
    g = torch.Generator().manual_seed(batch)
    f1, f2 = torch.randn(batch, 6, 4, 4, generator=g), torch.randn(batch, 6, 4, 4, generator=g)
    e3, e4 = torch.randn(batch, 7, generator=g), torch.randn(batch, 7, generator=g)
    seg = torch.randint(0, 5, (batch, 8, 8), generator=g)
    got, weak = igcp_loss(f1, f2, seg, e3, e4, temperature=0.3, graph=graph)
    small = seg[:, ::2, ::2]
    a1, a2 = asp_reference(f1, small), asp_reference(f2, small)
    if graph == "views":
        want_weak = knn_weak_labels_reference(torch.cat([a1, a2]).numpy(), k=1, pair_views=True)
    else:  # one node per image, the mean of its views; its label goes to both views
        per_image = knn_weak_labels_reference((0.5 * (a1 + a2)).numpy(), k=1)
        want_weak = np.concatenate([per_image, per_image])
    np.testing.assert_array_equal(weak.numpy(), want_weak)
    # both views of an image always share a weak label
    assert torch.equal(weak[:batch], weak[batch:])
    want = dense_supcon(torch.cat([e3, e4]), torch.as_tensor(want_weak), t=0.3)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_igcp_area_normalisation_changes_only_the_weak_labels_input():
    g = torch.Generator().manual_seed(3)
    f1, f2 = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g)
    e3, e4 = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    seg = torch.randint(0, 3, (4, 4, 4), generator=g)
    _, weak = igcp_loss(f1, f2, seg, e3, e4, asp_normalize="area", graph="views")
    small = seg[:, ::2, ::2]
    counts = torch.stack([torch.bincount(s.flatten(), minlength=3)[s] for s in small]).flatten(1)
    asp = torch.cat([asp_reference(f1, small) * counts / 4, asp_reference(f2, small) * counts / 4])
    np.testing.assert_array_equal(weak.numpy(), knn_weak_labels_reference(asp.numpy(), 1, True))


def nt_xent(e3, e4, t):
    """SimCLR's NT-Xent as cross-entropy over the 2B - 1 other views."""
    z = F.normalize(torch.cat([e3, e4]).double(), dim=1)
    n = e3.shape[0]
    s = (z @ z.T / t).fill_diagonal_(-math.inf)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(s, target)


def test_instance_loss_without_positions_is_nt_xent():
    g = torch.Generator().manual_seed(4)
    e3, e4 = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    torch.testing.assert_close(instance_loss(e3, e4, temperature=0.2).double(), nt_xent(e3, e4, 0.2),
                               rtol=1e-5, atol=1e-6)


def test_pcl_positives_are_within_the_threshold_and_views_always_positive():
    positions = torch.tensor([0.0, 0.04, 0.099, 0.1, 0.35, 0.41, 0.999, 1.0])
    labels = position_labels(positions, 0.1)
    assert labels.tolist() == [0, 0, 0, 1, 3, 4, 9, 9]
    same = labels[:, None] == labels[None, :]
    assert ((positions[:, None] - positions[None, :]).abs()[same] < 0.1).all()
    g = torch.Generator().manual_seed(5)
    e3, e4 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    want = dense_supcon(torch.cat([e3, e4]), torch.cat([labels, labels]))
    torch.testing.assert_close(instance_loss(e3, e4, positions).double(), want, rtol=1e-5, atol=1e-6)


def test_pcl_threshold_relation_is_the_published_one():
    """relation="threshold": positives are exactly |p_i - p_j| < threshold over the 2B views
    (PCL as published), including pairs that straddle a bin edge, which "bins" calls
    negatives; gradients agree with the dense form too."""
    positions = torch.tensor([0.0, 0.04, 0.099, 0.1, 0.35, 0.41, 0.999, 1.0, 0.55])
    g = torch.Generator().manual_seed(6)
    e3 = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    e4 = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.cat([positions, positions]).double()
    related = (p[:, None] - p[None, :]).abs() < 0.1
    want = dense_supcon(torch.cat([e3, e4]), None, related=related)
    got = instance_loss(e3, e4, positions, relation="threshold")
    torch.testing.assert_close(got, want)
    grads = torch.autograd.grad(got, (e3, e4))
    want_grads = torch.autograd.grad(want, (e3, e4))
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b)
    # 0.099 and 0.1 are PCL positives in different bins: the two forms differ
    assert not torch.allclose(got, instance_loss(e3, e4, positions, relation="bins"))
    cfg = LossConfig(pcl_relation="threshold")
    f = torch.randn(9, 3, 2, 2, generator=g, dtype=torch.float64)
    seg = blocks(9, 4, 4, 2)
    terms = SuperCLLoss(cfg)(f, f, e3, e4, seg, positions)
    torch.testing.assert_close(terms["l_ins"].double(), want)


def test_total_is_the_weighted_sum_and_gradients_reach_the_encoder():
    torch.manual_seed(0)
    model = SuperCLModel(UNetEncoder(1, base_channels=4, depth=2), hidden_dim=16, out_dim=8)
    x = torch.rand(8, 1, 16, 16)
    f, e = model(x)
    seg = blocks(2, 16, 16, 4)
    cfg = LossConfig(l_ins=1.0, l_intra=0.7, l_inter=0.5)
    terms = SuperCLLoss(cfg)(f[:2], f[2:4], e[4:6], e[6:], seg, torch.tensor([0.1, 0.8]))
    total = terms["l_ins"] + 0.7 * terms["l_intra"] + 0.5 * terms["l_inter"]
    torch.testing.assert_close(terms["loss"], total)
    terms["loss"].backward()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    first_conv = model.encoder.blocks[0][0].weight.grad
    assert first_conv.abs().sum() > 0


def test_loss_rejects_bad_input():
    f = torch.randn(2, 3, 2, 2)
    seg = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="f1 and f2"):
        ilcp_loss(f, f[:, :2], seg)
    with pytest.raises(ValueError, match="segments"):
        ilcp_loss(f, f, seg[:1])
    with pytest.raises(ValueError, match="pixel_stride"):
        ilcp_loss(f, f, seg, pixel_stride=0)
    with pytest.raises(ValueError, match="e3 and e4"):
        igcp_loss(f, f, seg, torch.randn(2, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match="positions"):
        instance_loss(torch.randn(2, 4), torch.randn(2, 4), torch.rand(3))
    with pytest.raises(ValueError, match="asp_normalize"):
        SuperCLLoss(LossConfig(asp_normalize="sum"))
    with pytest.raises(ValueError, match="temperature"):
        SuperCLLoss(LossConfig(temperature=0.0))
    with pytest.raises(ValueError, match="pcl_relation"):
        SuperCLLoss(LossConfig(pcl_relation="window"))
    with pytest.raises(ValueError, match="relation"):
        instance_loss(torch.randn(2, 4), torch.randn(2, 4), torch.rand(2), relation="exact")


# ---- diagnostics ------------------------------------------------------------------------------


def test_ilcp_positives_per_anchor_counts_both_views():
    assert ilcp_positives_per_anchor(blocks(2, 4, 4, 2)).item() == 7.0  # 4 px x 2 views - 1
    each = torch.arange(16).view(1, 4, 4)  # every bottleneck pixel its own superpixel
    assert ilcp_positives_per_anchor(each).item() == 1.0  # only itself in the other view
    g = torch.Generator().manual_seed(7)
    seg = torch.randint(0, 5, (3, 5, 7), generator=g)
    for stride in (1, 3):
        brute = []
        for image in seg.flatten(1)[:, ::stride]:
            both = torch.cat([image, image])
            brute += [(both == v).sum().item() - 1 for v in both]
        got = ilcp_positives_per_anchor(seg, stride).item()
        assert got == pytest.approx(sum(brute) / len(brute))


def test_pcl_positives_per_anchor_matches_a_count():
    positions = torch.tensor([0.0, 0.05, 0.099, 0.1, 0.5])
    # threshold: views of the same slice, and 0 ~ 0.05 ~ 0.099 ~ 0.1 (not 0 ~ 0.1)
    p = torch.cat([positions, positions]).double()
    want = (((p[:, None] - p[None, :]).abs() < 0.1).sum(1) - 1).double().mean().item()
    assert pcl_positives_per_anchor(positions, 0.1, "threshold").item() == pytest.approx(want)
    bins = position_labels(p, 0.1)
    want_bins = ((bins[:, None] == bins[None, :]).sum(1) - 1).double().mean().item()
    assert pcl_positives_per_anchor(positions, 0.1, "bins").item() == pytest.approx(want_bins)
    assert pcl_positives_per_anchor(torch.tensor([0.0, 0.5, 1.0]), 0.1).item() == 1.0


def _quality_oracle(nodes, b, k, positions, organs, threshold=0.1):
    """weak_label_quality by loops over the k-NN edges (numpy oracle for the neighbours)."""
    import numpy as np

    x = nodes.double().numpy()
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nbr = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    edges = [(i % b, int(j) % b) for i in range(len(x)) for j in nbr[i]]
    cross = [(a, c) for a, c in edges if a != c]
    jac = lambda a, c: (len(organs[a] & organs[c]) / len(organs[a] | organs[c])
                        if organs[a] | organs[c] else 1.0)
    pairs = [(a, c) for a in range(b) for c in range(b) if a != c]
    return {"inter_partner_edge_share": 1 - len(cross) / len(edges),
            "inter_edge_position_agreement":  # NaN without edges between different images
                np.mean([abs(positions[a] - positions[c]) < threshold for a, c in cross])
                if cross else math.nan,
            "inter_edge_position_chance":
                np.mean([abs(positions[a] - positions[c]) < threshold for a, c in pairs]),
            "inter_edge_organ_agreement": np.mean([jac(a, c) for a, c in cross]) if cross else math.nan,
            "inter_edge_organ_chance": np.mean([jac(a, c) for a, c in pairs])}


@pytest.mark.parametrize("graph", ["images", "views"])
@pytest.mark.parametrize("k", [1, 2])
def test_weak_label_quality_against_loops(graph, k):
    torch.manual_seed(k)
    b = 7
    f1 = torch.randn(b, 3, 4, 4)
    f2 = f1 + 0.05 * torch.randn_like(f1)
    seg = blocks(b, 4, 4, 2)
    nodes, weak = _weak_labels(f1, f2, seg, "mean", k, lambda t: t, graph=graph)
    assert nodes.shape == (b if graph == "images" else 2 * b, 16) and weak.shape == (2 * b,)
    positions = torch.tensor([0.0, 0.05, 0.3, 0.33, 0.6, 0.95, 1.0])
    present = torch.rand(b, 4) > 0.5
    present[0] = False  # an empty organ set
    got = weak_label_quality(nodes, weak, k, positions, present)
    want = _quality_oracle(nodes, b, k, positions.tolist(),
                           [set(torch.nonzero(r).flatten().tolist()) for r in present])
    for key, value in want.items():
        assert got[key].item() == pytest.approx(value, nan_ok=True), key
    members = {(int(w), i % b) for i, w in enumerate(weak)}
    comps = {c for c, _ in members}
    assert got["inter_images_per_component"].item() == pytest.approx(len(members) / len(comps))
    missing = weak_label_quality(nodes, weak, k)
    assert math.isnan(missing["inter_edge_position_agreement"].item())
    assert math.isnan(missing["inter_edge_organ_chance"].item())


def test_image_graph_joins_different_images_and_labels_both_views():
    torch.manual_seed(0)
    b = 9
    f1 = torch.randn(b, 4, 4, 4)
    f2 = f1 + 0.01 * torch.randn_like(f1)  # photometric twins: the view graph pairs them
    seg = blocks(b, 4, 4, 2)
    nodes, weak = _weak_labels(f1, f2, seg, "mean", 1, lambda t: t, graph="images")
    v = asp_vectors(torch.cat([f1, f2]), torch.cat([seg, seg]))
    torch.testing.assert_close(nodes, 0.5 * (v[:b] + v[b:]))
    want = knn_weak_labels_reference(nodes)
    assert weak[:b].tolist() == want.tolist() and weak[b:].tolist() == want.tolist()
    assert weak_label_quality(nodes, weak)["inter_partner_edge_share"].item() == 0.0
    # the reference graph over the 2B views: every view's nearest neighbour is its partner
    vnodes, vweak = _weak_labels(f1, f2, seg, "mean", 1, lambda t: t, graph="views")
    assert weak_label_quality(vnodes, vweak)["inter_partner_edge_share"].item() == 1.0
    assert vweak[:b].tolist() == vweak[b:].tolist() == list(range(b))
    with pytest.raises(ValueError, match="inter_graph"):
        LossConfig(inter_graph="pixels")


def test_objective_reports_its_diagnostics():
    torch.manual_seed(1)
    f = torch.randn(4, 3, 4, 4)
    e = torch.randn(8, 6)
    seg = blocks(4, 8, 8, 4)  # 4 superpixels of 2x2 bottleneck pixels per image
    positions = torch.tensor([0.0, 0.05, 0.5, 0.9])
    terms = SuperCLLoss(LossConfig())(f, f + 0.01, e[:4], e[4:], seg, positions,
                                      diagnostics=True)
    assert terms["ilcp_pos_per_anchor"].item() == 7.0
    assert terms["pcl_pos_per_anchor"].item() == pytest.approx(
        pcl_positives_per_anchor(torch.tensor([0.0, 0.05, 0.5, 0.9])).item())
    for key in ("inter_partner_edge_share", "inter_edge_position_agreement",
                "inter_edge_position_chance"):
        assert 0.0 <= terms[key].item() <= 1.0 and not terms[key].requires_grad
    assert terms["inter_partner_edge_share"].item() == 0.0  # the default graph is over images
    assert math.isnan(terms["inter_edge_organ_agreement"].item())  # no organs given
    organs = torch.tensor([[True, False], [True, True], [False, False], [False, True]])
    with_organs = SuperCLLoss(LossConfig())(f, f + 0.01, e[:4], e[4:], seg, positions,
                                            diagnostics=True, organs=organs)
    assert 0.0 <= with_organs["inter_edge_organ_chance"].item() <= 1.0
    plain = SuperCLLoss(LossConfig())(f, f + 0.01, e[:4], e[4:], seg, positions)
    assert "ilcp_pos_per_anchor" not in plain
    torch.testing.assert_close(plain["loss"], terms["loss"])
    no_positions = SuperCLLoss(LossConfig())(f, f, e[:4], e[4:], seg, diagnostics=True)
    assert math.isnan(no_positions["pcl_pos_per_anchor"].item())
