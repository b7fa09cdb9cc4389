"""DANN pieces: gradient reversal, the lambda schedule, the discriminator loss."""
import math

import pytest
import torch
import torch.nn.functional as F

from tltext.objectives.dann import (DomainAdversarialLoss, DomainDiscriminator, GradientReverseLayer,
                               dann_coefficient, grad_reverse)


def test_grl_forward_is_identity():
    x = torch.randn(4, 6)
    assert torch.equal(grad_reverse(x, 0.7), x)
    assert torch.equal(GradientReverseLayer(3.0)(x), x)


@pytest.mark.parametrize("coeff", [0.0, 0.3, 1.0, 2.5])
def test_grl_backward_scales_by_minus_coeff(coeff):
    x = torch.randn(5, 3, requires_grad=True)
    upstream = torch.randn(5, 3)
    grad_reverse(x, coeff).backward(upstream)
    assert torch.allclose(x.grad, -coeff * upstream)

    x2 = x.detach().clone().requires_grad_(True)
    (GradientReverseLayer(coeff)(x2) * upstream).sum().backward()
    assert torch.allclose(x2.grad, -coeff * upstream)


def test_dann_coefficient_values():
    assert dann_coefficient(0.0) == 0.0
    assert dann_coefficient(0.5) == pytest.approx(2.0 / (1.0 + math.exp(-5.0)) - 1.0)
    assert dann_coefficient(1.0) == pytest.approx(2.0 / (1.0 + math.exp(-10.0)) - 1.0)
    assert dann_coefficient(1.0, lambda_max=0.1) == pytest.approx(0.1 * (2.0 / (1.0 + math.exp(-10.0)) - 1.0))
    assert dann_coefficient(0.2, gamma=5.0) == pytest.approx(2.0 / (1.0 + math.exp(-1.0)) - 1.0)
    values = [dann_coefficient(p / 10) for p in range(11)]
    assert values == sorted(values) and values[-1] < 1.0


def test_loss_weighs_domains_equally_and_reports_accuracy():
    torch.manual_seed(0)
    loss_fn = DomainAdversarialLoss(8, hidden_dim=16).eval()  # eval: no dropout, deterministic
    f_s, f_t = torch.randn(3, 8), torch.randn(11, 8) + 0.5
    loss = loss_fn(f_s, f_t, 1.0)
    with torch.no_grad():
        d_s = loss_fn.discriminator(f_s)
        d_t = loss_fn.discriminator(f_t)
    expected = 0.5 * (F.softplus(-d_s).mean() + F.softplus(d_t).mean())  # BCE(.,1) and BCE(.,0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    acc = loss_fn.last_accuracy
    assert isinstance(acc, torch.Tensor) and acc.dtype.is_floating_point and not acc.requires_grad
    expected_acc = 0.5 * ((d_s > 0).float().mean() + (d_t <= 0).float().mean())
    assert acc.item() == pytest.approx(expected_acc.item())


def test_features_get_reversed_gradient_discriminator_does_not():
    torch.manual_seed(0)
    loss_fn = DomainAdversarialLoss(4, hidden_dim=8).eval()
    f_s = torch.randn(6, 4, requires_grad=True)
    f_t = torch.randn(6, 4, requires_grad=True)
    loss_fn(f_s, f_t, 0.5).backward()
    g_s, g_t = f_s.grad.clone(), f_t.grad.clone()
    g_w = loss_fn.discriminator.net[0].weight.grad.clone()

    # same loss computed without reversal: feature gradients flip sign and scale by 1/coeff
    loss_fn.zero_grad()
    f_s2, f_t2 = f_s.detach().requires_grad_(True), f_t.detach().requires_grad_(True)
    d_s, d_t = loss_fn.discriminator(f_s2), loss_fn.discriminator(f_t2)
    plain = 0.5 * (F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s))
                   + F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t)))
    plain.backward()
    assert torch.allclose(g_s, -0.5 * f_s2.grad, atol=1e-6)
    assert torch.allclose(g_t, -0.5 * f_t2.grad, atol=1e-6)
    assert torch.allclose(g_w, loss_fn.discriminator.net[0].weight.grad, atol=1e-6)
    assert g_s.abs().sum() > 0


def test_batch_of_one_and_batch_norm_option():
    loss_fn = DomainAdversarialLoss(5)
    loss = loss_fn(torch.randn(1, 5), torch.randn(1, 5), 1.0)
    assert torch.isfinite(loss)
    assert loss_fn.last_accuracy.item() in (0.0, 0.5, 1.0)
    disc = DomainDiscriminator(5, hidden_dim=7, batch_norm=True)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in disc.modules())
    assert disc(torch.randn(4, 5)).shape == (4,)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in DomainDiscriminator(5).modules())


def test_bad_inputs_raise():
    loss_fn = DomainAdversarialLoss(4)
    with pytest.raises(ValueError, match=r"\[m, H\]"):
        loss_fn(torch.randn(3, 4), torch.randn(3, 5), 1.0)
    with pytest.raises(ValueError, match="at least 1 sample"):
        loss_fn(torch.randn(0, 4), torch.randn(3, 4), 1.0)
