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

from . import register
from .base import Objective, ObjectiveSetup, Step, TermOutput, skipped
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


@register
class MMD(Objective):
    """CE + w(p) * MK-MMD^2_u(f_s, f_t) (Long et al. 2015, eq. 8; unbiased estimator,
    Gretton et al. 2012, eq. 3). ``w(p)``: ``weight``, ramped linearly over
    ``--da_warmup_ratio`` of training. A step whose source or target batch has fewer
    than 2 rows (the estimator's minimum) skips the term and logs ``mmd/skipped``.
    ``weight``: 1 over a frozen encoder's cached embeddings, 0.1 when the encoder trains
    (``--tuning partial`` / ``full``). On Amazon books -> kitchen / kitchen -> books, seeds 1-3,
    against source-only with the same recipe: partial +0.6 / +0.4 at 0.1 (weight 1, seed 1:
    -0.5 / -1.65), full +0.7 / +3.2 (benchmarks/results/pilots_partial_dann_sorecipe.md,
    pilots_full_alignment.md)."""

    name = "mmd"
    paper = "Long et al., Learning Transferable Features with Deep Adaptation Networks, ICML 2015"
    description = "multi-kernel maximum mean discrepancy between source and target features (DAN)"
    tags = ("domain-adaptation", "mmd")
    needs_target = True
    frozen_adapter_dim = 256
    tuning_weights = {"partial": 0.1, "full": 0.1}
    options = ("da_weight", "da_warmup_ratio", "mmd_kernels")

    def __init__(self, setup: ObjectiveSetup):
        super().__init__(setup)
        a = setup.args
        self.kernels = MultipleKernelMMD(num_kernels=getattr(a, "mmd_kernels", 5) if a is not None else 5)
        self.warmup = float(getattr(a, "da_warmup_ratio", 0.0) or 0.0) if a is not None else 0.0

    def coefficient(self, progress: float) -> float:
        return mmd_warmup_weight(progress, self.weight, self.warmup)

    def forward(self, step: Step) -> TermOutput:
        if step.n_source < 2 or step.n_target < 2:
            return skipped(step.labels, "fewer than 2 rows in a domain")
        f = step.features.float()
        mmd = self.kernels(f[: step.n_source], f[step.n_source:])
        return TermOutput(self.coefficient(step.progress) * mmd, {"mmd2": mmd})
