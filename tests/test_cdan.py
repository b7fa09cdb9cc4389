"""CDAN+E (Long et al. 2018): one file, tltext/objectives/cdan.py, plus this test."""
import pytest
import torch

from synthetic_da import train
from tltext.objectives.cdan import ConditionalDomainAdversarialLoss, MultilinearMap
from tltext.objectives.dann import grad_reverse

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cdan_beats_source_only_on_the_synthetic_shift(seed):
    src, _ = train(seed, "erm")
    cdan, logs = train(seed, "cdan")
    assert src < 0.87, f"the shift should hurt a source-only model, got {src:.3f}"
    assert cdan > src + 0.08, (src, cdan)
    assert all("cdan/disc_acc" in log and "cdan" in log for log in logs)


def test_gradient_reverses_into_the_features():
    torch.manual_seed(0)
    loss_fn = ConditionalDomainAdversarialLoss(feature_dim=6, num_classes=3, hidden_dim=8).eval()
    f = torch.randn(10, 6, requires_grad=True)
    g = torch.randn(10, 3, requires_grad=True)
    lam = 0.37
    loss = loss_fn(f[:4], g[:4], f[4:], g[4:], coeff=lam)
    (grad_rev,) = torch.autograd.grad(loss, f, retain_graph=True)
    disc_grads_rev = torch.autograd.grad(loss, list(loss_fn.discriminator.parameters()))

    # the same loss without reversal: replace grad_reverse by the identity
    import tltext.objectives.cdan as cdan_mod
    orig = cdan_mod.grad_reverse
    cdan_mod.grad_reverse = lambda x, c: x
    try:
        plain = loss_fn(f[:4], g[:4], f[4:], g[4:], coeff=lam)
        (grad_plain,) = torch.autograd.grad(plain, f, retain_graph=True)
        disc_grads_plain = torch.autograd.grad(plain, list(loss_fn.discriminator.parameters()))
    finally:
        cdan_mod.grad_reverse = orig
    assert torch.allclose(loss, plain)
    assert grad_plain.abs().sum() > 0
    assert torch.allclose(grad_rev, -lam * grad_plain, atol=1e-7)  # reversed and scaled into the features
    for a, b in zip(disc_grads_rev, disc_grads_plain):  # the discriminator itself learns normally
        assert torch.allclose(a, b)
    # predictions are conditioning only: no gradient flows into the logits
    assert torch.autograd.grad(loss_fn(f[:4], g[:4], f[4:], g[4:], lam), g, allow_unused=True)[0] is None


def test_multilinear_map_shapes():
    f, g = torch.randn(5, 4), torch.softmax(torch.randn(5, 3), 1)
    m = MultilinearMap(4, 3)
    assert not m.randomized and m(f, g).shape == (5, 12)
    assert torch.allclose(m(f, g)[0].view(3, 4), torch.outer(g[0], f[0]))
    big = MultilinearMap(256, 77)  # 256 * 77 > 4096: randomised, fixed projections
    assert big.randomized and big(torch.randn(5, 256), torch.softmax(torch.randn(5, 77), 1)).shape == (5, 1024)
    assert torch.equal(MultilinearMap(256, 77).r_f, big.r_f)


def test_entropy_weights_favour_confident_examples():
    torch.manual_seed(0)
    loss_fn = ConditionalDomainAdversarialLoss(4, 2, 8)
    f = torch.randn(4, 4)
    confident = torch.tensor([[9.0, -9.0]] * 2)
    unsure = torch.zeros(2, 2)
    # a batch whose wrongly-classified domain example is confident costs more with CDAN+E
    with_e = loss_fn(f[:2], torch.cat([confident[:1], unsure[:1]]), f[2:], torch.cat([confident[:1], unsure[:1]]))
    loss_fn.entropy_conditioning = False
    without_e = loss_fn(f[:2], torch.cat([confident[:1], unsure[:1]]), f[2:], torch.cat([confident[:1], unsure[:1]]))
    assert torch.isfinite(with_e) and torch.isfinite(without_e) and not torch.allclose(with_e, without_e)
