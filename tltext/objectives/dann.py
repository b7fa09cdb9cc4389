"""Domain-adversarial training (DANN).

Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016.

A domain discriminator D tells source features (label 1) from target features
(label 0); the feature extractor F is trained through a gradient reversal layer

    R(x) = x,        dR/dx = -lambda * I

so one backward pass minimises the discriminator loss for D and maximises it for F:

    L_d = 1/2 * [ mean_{x in S} BCE(D(R(F(x))), 1) + mean_{x in T} BCE(D(R(F(x))), 0) ]

The coefficient is ramped up during training, p = progress in [0, 1]:

    lambda(p) = lambda_max * (2 / (1 + exp(-gamma * p)) - 1)        (gamma = 10)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import register
from .base import Objective, ObjectiveSetup, Step, TermOutput, skipped


class GradientReverseFunction(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``-coeff``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = float(coeff)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output.neg() * ctx.coeff, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """R(x) = x with dR/dx = -coeff * I."""
    return GradientReverseFunction.apply(x, coeff)


class GradientReverseLayer(nn.Module):
    """Module form of :func:`grad_reverse` with a fixed or later-updated ``coeff``."""

    def __init__(self, coeff: float = 1.0):
        super().__init__()
        self.coeff = float(coeff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.coeff)

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}"


def dann_coefficient(progress: float, lambda_max: float = 1.0, gamma: float = 10.0) -> float:
    """lambda(p) = lambda_max * (2 / (1 + exp(-gamma p)) - 1), p clipped to [0, 1]."""
    p = min(max(float(progress), 0.0), 1.0)
    return float(lambda_max) * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


class DomainDiscriminator(nn.Module):
    """MLP in_dim -> hidden -> ReLU -> Dropout -> hidden -> ReLU -> 1 logit.

    ``batch_norm`` (off by default) adds BatchNorm1d after each hidden linear layer;
    without it the module works for a batch of one and needs no SyncBatchNorm under DDP.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 256, dropout: float = 0.5, batch_norm: bool = False):
        super().__init__()
        if in_dim < 1 or hidden_dim < 1:
            raise ValueError(f"DomainDiscriminator needs in_dim >= 1 and hidden_dim >= 1, got {in_dim}, {hidden_dim}")

        def norm() -> nn.Module:
            return nn.BatchNorm1d(hidden_dim) if batch_norm else nn.Identity()

        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), norm(), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), norm(), nn.ReLU(),
            nn.Linear(hidden_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Domain logits ``[B]`` (positive = source)."""
        return self.net(x).squeeze(-1)


class DomainAdversarialLoss(nn.Module):
    """DANN objective L_d on source / target features ``[m, H]`` / ``[n, H]``.

    Each domain's BCE is averaged over its own batch and the two halves weigh 1/2
    each, so ``m != n`` does not tilt the loss. ``last_accuracy`` holds the
    discriminator's balanced accuracy on the last call (1/2 * (acc_S + acc_T)).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 256, dropout: float = 0.5, batch_norm: bool = False):
        super().__init__()
        self.discriminator = DomainDiscriminator(in_dim, hidden_dim, dropout=dropout, batch_norm=batch_norm)
        self.last_accuracy = torch.tensor(float("nan"))

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
        if f_s.dim() != 2 or f_t.dim() != 2 or f_s.shape[1] != f_t.shape[1]:
            raise ValueError(f"DomainAdversarialLoss expects features [m, H] and [n, H], got {tuple(f_s.shape)} and {tuple(f_t.shape)}")
        m, n = f_s.shape[0], f_t.shape[0]
        if m < 1 or n < 1:
            raise ValueError(f"DomainAdversarialLoss needs at least 1 sample per domain, got m={m}, n={n}")
        f = grad_reverse(torch.cat([f_s, f_t], dim=0), coeff)
        logits = self.discriminator(f).float()
        d_s, d_t = logits[:m], logits[m:]
        loss = 0.5 * (
            F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s))
            + F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t))
        )
        with torch.no_grad():
            self.last_accuracy = 0.5 * ((d_s > 0).float().mean() + (d_t <= 0).float().mean())
        return loss


@register
class DANN(Objective):
    """CE + L_d with the features' gradient reversed with coefficient lambda(p)
    (Ganin et al. 2016, eq. 9-10; the schedule of ``dann_coefficient``). The
    discriminator itself learns at full strength; ``weight`` is lambda_max: 1 over a frozen
    encoder's cached embeddings, 0.1 under ``--tuning partial`` and 0.03 under ``full`` for text
    (0.1 for speech and images, where it was not measured at 0.03), where the reversed gradient
    reaches every transformer layer. On Amazon books <-> kitchen (3 seeds,
    paired with source-only of the same recipe): partial at lambda_max 1 lost 5.4 / 11.0 points
    (random head at 1e-4, benchmarks/results/quality_amazon.json "[before LP-FT ...]" rows) and
    0.1 gains +0.3 / +0.8 (pilots_partial_dann_sorecipe.md); full at 0.1 lost 2.0 on books ->
    kitchen while gaining 3.6 on kitchen -> books, and full at 0.03 ties on books -> kitchen
    (-0.02; seeds -0.50 to +0.65) and gains +1.15 on kitchen -> books (quality_amazon.json "full
    dann" rows; pilots_full_dann_weight003.md)."""

    name = "dann"
    paper = "Ganin et al., Domain-Adversarial Training of Neural Networks, JMLR 2016"
    description = "domain-adversarial training: a domain discriminator behind a gradient reversal layer"
    tags = ("domain-adaptation", "dann")
    needs_target = True
    frozen_adapter_dim = 256
    # 0.03 measured on text (a pretrained encoder fully fine-tuned); a from-scratch ResNet-18 on the
    # digits shift of tests/test_e2e_image.py scored 30.0 % at 0.03 against 38.0 % at 0.1, so images
    # and speech keep 0.1 under full tuning
    tuning_weights = {"partial": 0.1, "full": 0.1, "text/full": 0.03}
    options = ("da_weight", "discriminator_hidden_dim")

    def __init__(self, setup: ObjectiveSetup):
        super().__init__(setup)
        hidden = getattr(setup.args, "discriminator_hidden_dim", 256) if setup.args is not None else 256
        self.loss = DomainAdversarialLoss(setup.feature_dim, hidden_dim=hidden)

    def coefficient(self, progress: float) -> float:
        return dann_coefficient(progress, lambda_max=self.weight)

    def forward(self, step: Step) -> TermOutput:
        if step.n_source < 1 or step.n_target < 1:
            return skipped(step.labels, "an empty domain batch")
        f = step.features.float()
        loss = self.loss(f[: step.n_source], f[step.n_source:], self.coefficient(step.progress))
        return TermOutput(loss, {"disc_acc": self.loss.last_accuracy})
