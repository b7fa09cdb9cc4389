"""Multi-kernel maximum mean discrepancy (MK-MMD).

Long et al., "Learning Transferable Features with Deep Adaptation Networks", ICML 2015;
unbiased estimator of Gretton et al., "A Kernel Two-Sample Test", JMLR 2012.

Kernel: an equal-weight convex combination (beta_u = 1/K) of K Gaussians,

    k(a, b) = 1/K * sum_u exp(-||a - b||^2 / (2 sigma_u^2)),
    sigma_u^2 = s * kernel_mul^(u - (K - 1)/2),   u = 0 .. K-1,

with base s = ``bandwidth`` or, by default, the (lower) median of the pairwise squared
distances ||z_i - z_j||^2, i < j, of the pooled sample z = [x; y] (detached: no
gradient flows through s). For x of m rows and y of n rows (m, n >= 2):

    MMD_u^2 = 1/(m(m-1)) sum_{i!=j} k(x_i, x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i, y_j)
              - 2/(mn) sum_{i,j} k(x_i, y_j)

It is unbiased, so it can be slightly negative when x and y share a distribution.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from .dann import dann_coefficient


def _sq_dists(z: torch.Tensor) -> torch.Tensor:
    sq = z.pow(2).sum(dim=1)
    return (sq[:, None] + sq[None, :] - 2.0 * z @ z.t()).clamp_min(0.0)


def mk_mmd2(
    x: torch.Tensor,
    y: torch.Tensor,
    num_kernels: int = 5,
    kernel_mul: float = 2.0,
    bandwidth: Optional[Union[float, torch.Tensor]] = None,
) -> torch.Tensor:
    """Unbiased MK-MMD^2 between samples ``x`` ``[m, H]`` and ``y`` ``[n, H]`` (scalar tensor)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mk_mmd2 expects features [m, H] and [n, H], got {tuple(x.shape)} and {tuple(y.shape)}")
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"mk_mmd2 needs at least 2 samples per domain for the unbiased estimator, got m={m}, n={n}")
    if num_kernels < 1 or kernel_mul <= 0:
        raise ValueError(f"mk_mmd2 needs num_kernels >= 1 and kernel_mul > 0, got {num_kernels}, {kernel_mul}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        z = torch.cat([x, y], dim=0)
        if z.dtype in (torch.float16, torch.bfloat16):
            z = z.float()
        d2 = _sq_dists(z)
        if bandwidth is None:
            iu = torch.triu_indices(m + n, m + n, offset=1, device=z.device)
            s = d2.detach()[iu[0], iu[1]].median().clamp_min(1e-12)
        else:
            s = torch.as_tensor(bandwidth, dtype=z.dtype, device=z.device).detach()
            if not bool(s > 0):
                raise ValueError(f"mk_mmd2 bandwidth must be > 0, got {float(s)}")
        exps = torch.arange(num_kernels, dtype=z.dtype, device=z.device) - (num_kernels - 1) / 2.0
        sigma2 = s * float(kernel_mul) ** exps
        k = torch.exp(-d2[None] / (2.0 * sigma2[:, None, None])).mean(dim=0)
        k_xx, k_yy, k_xy = k[:m, :m], k[m:, m:], k[:m, m:]
        # the diagonal of each within-domain block is exactly 1 (k(a, a) = 1 for every kernel)
        xx = (k_xx.sum() - m) / (m * (m - 1))
        yy = (k_yy.sum() - n) / (n * (n - 1))
        return xx + yy - 2.0 * k_xy.mean()


class MultipleKernelMMD(nn.Module):
    """Module form of :func:`mk_mmd2`: ``forward(f_s, f_t)`` -> MMD_u^2 (no parameters)."""

    def __init__(self, num_kernels: int = 5, kernel_mul: float = 2.0, bandwidth: Optional[float] = None):
        super().__init__()
        self.num_kernels = num_kernels
        self.kernel_mul = kernel_mul
        self.bandwidth = bandwidth

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        return mk_mmd2(f_s, f_t, self.num_kernels, self.kernel_mul, self.bandwidth)

    def extra_repr(self) -> str:
        return f"num_kernels={self.num_kernels}, kernel_mul={self.kernel_mul}, bandwidth={self.bandwidth}"


def mmd_warmup_weight(progress: float, weight: float, warmup: float = 0.0, schedule: str = "linear") -> float:
    """Weight of the MMD term at training progress p in [0, 1].

    linear: weight * min(1, p / warmup)  (weight from the start when warmup = 0)
    dann:   weight * (2 / (1 + exp(-10 p)) - 1)  (Ganin et al. 2016 schedule; warmup unused)
    """
    if not 0.0 <= warmup <= 1.0:
        raise ValueError(f"mmd warmup must be a fraction of training in [0, 1], got {warmup}")
    p = min(max(float(progress), 0.0), 1.0)
    if schedule == "dann":
        return dann_coefficient(p, lambda_max=weight)
    if schedule != "linear":
        raise ValueError(f"mmd schedule must be 'linear' or 'dann', got {schedule!r}")
    if warmup == 0.0:
        return float(weight)
    return float(weight) * min(1.0, p / warmup)
