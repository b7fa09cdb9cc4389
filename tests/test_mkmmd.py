"""MK-MMD: agreement with an independent numpy estimator, behaviour, gradients, schedule."""
import math

import numpy as np
import pytest
import torch

from tltext.objectives.dann import dann_coefficient
from tltext.objectives.mmd import MultipleKernelMMD, mk_mmd2, mmd_warmup_weight


def numpy_mk_mmd2(x, y, num_kernels=5, kernel_mul=2.0, bandwidth=None):
    """Unbiased MMD^2 with loops over the kernel family, written straight from the formula."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    m, n = len(x), len(y)
    z = np.concatenate([x, y])
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    if bandwidth is None:
        pairs = np.sort(d2[np.triu_indices(m + n, k=1)])
        bandwidth = pairs[(len(pairs) - 1) // 2]  # lower median
    sigmas2 = [bandwidth * kernel_mul ** (u - (num_kernels - 1) / 2) for u in range(num_kernels)]
    k = sum(np.exp(-d2 / (2 * s2)) for s2 in sigmas2) / num_kernels
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return xx + yy - 2 * kxy.sum() / (m * n)


@pytest.mark.parametrize("m,n,bandwidth,num_kernels,kernel_mul", [
    (9, 9, None, 5, 2.0), (7, 13, None, 5, 2.0), (12, 5, 3.0, 3, 1.5), (2, 2, None, 1, 2.0), (20, 31, 0.5, 4, 3.0),
])
def test_matches_numpy_estimator(m, n, bandwidth, num_kernels, kernel_mul):
    rng = np.random.default_rng(m * 100 + n)
    x = rng.normal(size=(m, 6))
    y = rng.normal(loc=0.7, size=(n, 6))
    got = mk_mmd2(torch.from_numpy(x), torch.from_numpy(y), num_kernels, kernel_mul, bandwidth)
    want = numpy_mk_mmd2(x, y, num_kernels, kernel_mul, bandwidth)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(want, rel=1e-8, abs=1e-10)
    got32 = MultipleKernelMMD(num_kernels, kernel_mul, bandwidth)(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    assert got32.item() == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_near_zero_for_same_distribution_positive_for_shift():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
    same = mk_mmd2(x, y).item()
    shifted = mk_mmd2(x, y + 1.0).item()
    assert abs(same) < 0.01
    assert shifted > 0.1 and shifted > 20 * abs(same)
    # a larger shift gives a larger discrepancy
    assert mk_mmd2(x, y + 2.0).item() > shifted


def test_gradients_flow_and_bandwidth_is_detached():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = (torch.randn(14, 4, generator=g, dtype=torch.float64) + 1.0).requires_grad_(True)
    mk_mmd2(x, y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0

    # the median heuristic carries no gradient: same gradients as with that value passed in
    z = torch.cat([x, y]).detach().numpy()
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    pairs = np.sort(d2[np.triu_indices(len(z), k=1)])
    fixed = float(pairs[(len(pairs) - 1) // 2])
    x2, y2 = x.detach().clone().requires_grad_(True), y.detach().clone().requires_grad_(True)
    mk_mmd2(x2, y2, bandwidth=fixed).backward()
    assert torch.allclose(x.grad, x2.grad) and torch.allclose(y.grad, y2.grad)




def test_gradient_descent_reduces_mmd(one_thread):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 3, generator=g)
    y = (torch.randn(40, 3, generator=g) + 1.5).requires_grad_(True)
    opt = torch.optim.Adam([y], lr=0.05)
    start = mk_mmd2(x, y).item()
    for _ in range(60):
        loss = mk_mmd2(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert mk_mmd2(x, y).item() < 0.1 * start


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="at least 2 samples per domain.*m=1, n=5"):
        mk_mmd2(torch.randn(1, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        MultipleKernelMMD()(torch.randn(4, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"\[m, H\]"):
        mk_mmd2(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        mk_mmd2(torch.randn(4, 3), torch.randn(4, 3), bandwidth=0.0)


def test_identical_points_do_not_divide_by_zero():
    x = torch.zeros(4, 3)
    assert torch.isfinite(mk_mmd2(x, x.clone()))


def test_warmup_weight():
    assert mmd_warmup_weight(0.0, 2.0, warmup=0.2) == 0.0
    assert mmd_warmup_weight(0.1, 2.0, warmup=0.2) == pytest.approx(1.0)
    assert mmd_warmup_weight(0.2, 2.0, warmup=0.2) == pytest.approx(2.0)
    assert mmd_warmup_weight(0.9, 2.0, warmup=0.2) == pytest.approx(2.0)
    assert mmd_warmup_weight(0.0, 0.5) == 0.5
    assert mmd_warmup_weight(0.5, 0.3, schedule="dann") == pytest.approx(0.3 * dann_coefficient(0.5))
    assert mmd_warmup_weight(0.5, 1.0, schedule="dann") == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    with pytest.raises(ValueError, match="schedule"):
        mmd_warmup_weight(0.5, 1.0, schedule="cosine")
    with pytest.raises(ValueError, match="warmup"):
        mmd_warmup_weight(0.5, 1.0, warmup=1.5)
