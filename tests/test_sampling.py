"""Random crops and foreground oversampling (supercl.train.sampling), against plain slicing
and counting."""

import pytest
import torch

from supercl.train.sampling import ForegroundSampler, crop_batch, step_generator


def test_crop_batch_equals_slicing_at_its_offsets():
    x = torch.randn(5, 2, 13, 11)
    y = torch.randint(0, 4, (5, 13, 11))
    xc, yc = crop_batch(x, 7, step_generator(3, 0), y)
    assert xc.shape == (5, 2, 7, 7) and yc.shape == (5, 7, 7)
    for i in range(5):  # find the crop in its slice: it must be one exact window of it
        hits = [(t, l) for t in range(13 - 6) for l in range(11 - 6)
                if torch.equal(x[i, :, t:t + 7, l:l + 7], xc[i])]
        assert len(hits) == 1
        t, l = hits[0]
        assert torch.equal(y[i, t:t + 7, l:l + 7], yc[i])
    assert crop_batch(x, 7, step_generator(3, 0))[1] is None


def test_crop_batch_centres_and_clamps():
    x = torch.arange(2 * 9 * 9, dtype=torch.float32).reshape(2, 1, 9, 9)
    centers = torch.tensor([[4, 4], [0, 8]])
    xc, _ = crop_batch(x, 3, step_generator(0, 0), centers=centers)
    assert torch.equal(xc[0], x[0, :, 3:6, 3:6])  # centred on (4, 4)
    assert torch.equal(xc[1], x[1, :, 0:3, 6:9])  # shifted inside at the corner
    whole, _ = crop_batch(x, 9, step_generator(0, 0))
    assert torch.equal(whole, x)


def test_crop_batch_is_deterministic_per_step():
    x = torch.randn(8, 1, 32, 32)
    a, _ = crop_batch(x, 16, step_generator(1, 5))
    b, _ = crop_batch(x, 16, step_generator(1, 5))
    c, _ = crop_batch(x, 16, step_generator(1, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("size", [0, 10])
def test_crop_batch_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match="size"):
        crop_batch(torch.zeros(1, 1, 9, 9), size, step_generator(0, 0))


def test_foreground_sampler_balances_classes():
    labels = torch.zeros(20, 16, 16, dtype=torch.long)
    labels[:, 2:14, 2:14] = 1  # a large class in every slice
    labels[7, 5, 5] = 2  # one pixel of a small class in one slice
    sampler = ForegroundSampler(labels)
    assert sampler.classes == [1, 2]
    idx, centers = sampler.draw(torch.arange(20).repeat(50), torch.Generator().manual_seed(0), 1.0)
    cls = labels[idx, centers[:, 0], centers[:, 1]]
    assert bool((cls > 0).all())  # every draw is on foreground
    share = (cls == 2).double().mean().item()
    assert 0.4 < share < 0.6  # about half the draws are the one-pixel class
    assert bool((idx[cls == 2] == 7).all()) and bool((centers[cls == 2] == 5).all())


def test_foreground_sampler_keeps_items_with_probability_one_minus_p():
    labels = torch.zeros(4, 8, 8, dtype=torch.long)
    labels[3, 1, 1] = 1
    sampler = ForegroundSampler(labels)
    idx = torch.zeros(4000, dtype=torch.long)
    drawn, centers = sampler.draw(idx, torch.Generator().manual_seed(1), 0.25)
    replaced = centers[:, 0] >= 0
    assert 0.22 < replaced.double().mean().item() < 0.28
    assert bool((drawn[replaced] == 3).all()) and bool((drawn[~replaced] == 0).all())
    none, c0 = sampler.draw(idx[:5], torch.Generator(), 0.0)
    assert torch.equal(none, idx[:5]) and bool((c0 == -1).all())
    empty = ForegroundSampler(torch.zeros(2, 4, 4, dtype=torch.long))
    same, c1 = empty.draw(torch.tensor([0, 1]), torch.Generator(), 1.0)
    assert same.tolist() == [0, 1] and bool((c1 == -1).all())
    with pytest.raises(ValueError, match="labels"):
        ForegroundSampler(torch.zeros(4, 4, dtype=torch.long))
