"""PGD against a hand-written few-line PGD (the released settings: 20 steps of eps/10 from the clean image,
projection onto the eps-ball, no clipping), model modes, BatchNorm side effects, independent eps, recipes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snncka.attacks import pgd, pgd_options, pgd_sweep, pixel_bounds, to_normalised_eps
from snncka.recipes import Recipe


def _tiny(bn: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.BatchNorm1d(4)] if bn else []
    m = nn.Sequential(*layers, nn.Linear(4, 3)).double()
    if bn:
        with torch.no_grad():
            m[0].running_mean.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0]))
            m[0].running_var.copy_(torch.tensor([2.0, 0.5, 1.0, 1.5]))
    return m


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])


def hand_pgd(model, x, y, eps, steps=20, lo=None, hi=None):
    """x_{k+1} = x + clamp(x_k + eps/10 * sign(grad) - x, -eps, eps), from x_0 = x (optionally clipped)."""
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        xa = x + (xa.detach() + eps / 10 * g.sign() - x).clamp(-eps, eps)
        if lo is not None:
            xa = xa.clamp(lo, hi)
    return xa


@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_pgd_equals_the_hand_written_pgd(eps):
    m = _tiny()
    x, y = _data()
    got = pgd(m, x, y, eps=eps)
    want = hand_pgd(m, x, y, eps)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert (got - x).abs().max() <= eps + 1e-15
    assert (got - x).abs().max() >= eps - 1e-12  # 20 steps of eps/10 reach the boundary
    assert F.cross_entropy(m(got), y) > F.cross_entropy(m(x), y)
    assert all(p.grad is None for p in m.parameters())


def test_pgd_clip_option():
    m = _tiny()
    x, y = _data()
    got = pgd(m, x, y, eps=0.3, clip=(-0.5, 0.5))
    torch.testing.assert_close(got, hand_pgd(m, x, y, 0.3, lo=-0.5, hi=0.5), rtol=0, atol=1e-12)
    assert got.min() >= -0.5 and got.max() <= 0.5
    assert (pgd(m, x, y, eps=0.3) - got).abs().max() > 0.1  # off by default


def test_pixel_bounds_and_normalised_eps():
    lo, hi = pixel_bounds([0.5, 0.25], [0.5, 0.25])
    assert lo.flatten().tolist() == [-1.0, -1.0] and hi.flatten().tolist() == [1.0, 3.0]
    assert tuple(lo.shape) == (2, 1, 1)
    assert to_normalised_eps(0.5, [0.5, 0.25]).flatten().tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="one mean and one std > 0 per channel"):
        pixel_bounds([0.5], [0.0])


@pytest.mark.parametrize("keep", [False, True])
def test_train_mode_attack_and_bn_statistics(keep):
    m = _tiny(bn=True).eval()
    x, y = _data()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    got = pgd(m, x, y, eps=0.2, mode="train", keep_bn_updates=keep)
    assert not m.training and not m[0].training  # mode restored
    ref = _tiny(bn=True).train()
    want = hand_pgd(ref, x, y, 0.2)  # the same attack on a model in train mode (batch statistics)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert (got - pgd(m, x, y, eps=0.2, mode="eval")).abs().max() > 1e-3  # the mode matters
    if keep:  # 20 forward passes moved the running statistics, as in the released code
        torch.testing.assert_close(m[0].running_mean, ref[0].running_mean, rtol=0, atol=1e-12)
        assert int(m[0].num_batches_tracked) == 20  # (the eval-mode attack above moves nothing)
    else:
        for k, v in m.state_dict().items():
            assert torch.equal(v, before[k]), k


def test_eval_mode_switch_from_train():
    m = _tiny(bn=True).train()
    x, y = _data()
    got = pgd(m, x, y, eps=0.2, mode="eval")
    assert m.training
    torch.testing.assert_close(got, hand_pgd(_tiny(bn=True).eval(), x, y, 0.2), rtol=0, atol=1e-12)


def test_every_eps_is_attacked_from_the_clean_images():
    m = _tiny()
    x, y = _data()
    eps = [0.01, 0.1, 0.3]
    for e, got in zip(eps, pgd_sweep(m, x, y, eps), strict=True):
        torch.testing.assert_close(got, hand_pgd(m, x, y, e), rtol=0, atol=1e-12)


def test_recipe_options():
    paper, code = pgd_options("paper"), pgd_options("code")
    assert paper == code == dict(steps=20, step_frac=0.1, random_start=False, clip=None, mode="eval",
                                 keep_bn_updates=False)
    assert pgd_options("code", cka=True)["mode"] == "train" and pgd_options("code", cka=True)["keep_bn_updates"]
    assert pgd_options("paper", cka=True)["mode"] == "eval"
    m = _tiny()
    x, y = _data()
    torch.testing.assert_close(pgd(m, x, y, eps=0.1, **pgd_options("code")), hand_pgd(m, x, y, 0.1),
                               rtol=0, atol=1e-12)


def test_bad_arguments():
    m = _tiny()
    x, y = _data()
    with pytest.raises(ValueError, match="eps must be >= 0"):
        pgd(m, x, y, eps=-0.1)
    with pytest.raises(ValueError, match="mode must be"):
        pgd(m, x, y, eps=0.1, mode="test")
    with pytest.raises(ValueError, match="step_frac must be > 0"):
        pgd(m, x, y, eps=0.1, step_frac=0)
    with pytest.raises(ValueError, match="unknown recipe"):
        pgd_options("released")
    clipping = Recipe(name="clipping", pgd_clip=True)
    with pytest.raises(ValueError, match="pass bounds=pixel_bounds"):
        pgd_options(clipping)
    assert pgd_options(clipping, bounds=(0.0, 1.0))["clip"] == (0.0, 1.0)
    assert torch.equal(pgd(m, x, y, eps=0.0), x)
