"""Conditional domain adversarial network, CDAN+E.

Long, Cao, Wang & Jordan, "Conditional Adversarial Domain Adaptation", NeurIPS 2018.

The domain discriminator D sees the multilinear map of the features f ``[B, D]``
and the (detached) class predictions g = softmax(head(f)) ``[B, C]``:

    T(f, g) = f (x) g                       (outer product, flattened: D * C)      (eq. 5)
    T(f, g) = (R_f f) * (R_g g) / sqrt(d)   (randomised, when D * C > 4096; d = 1024)

behind a gradient reversal layer with DANN's coefficient lambda(p). CDAN+E weighs
each example by w = 1 + exp(-H(g)) (confident examples count more), normalised to
mean 1 within each domain (eq. 8):

    L_d = 1/2 [ mean_S w BCE(D(R(T)), 1) + mean_T w BCE(D(R(T)), 0) ]
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import register
from .base import Objective, ObjectiveSetup, Step, TermOutput, entropy, skipped
from .dann import DomainDiscriminator, dann_coefficient, grad_reverse

MAX_MULTILINEAR_DIM = 4096
RANDOMIZED_DIM = 1024


class MultilinearMap(nn.Module):
    """``T(f, g)``: ``[B, D]``, ``[B, C]`` -> ``[B, D*C]``, or ``[B, d]`` randomised
    (fixed Gaussian projections, saved as buffers so every process uses the same)."""

    def __init__(self, feature_dim: int, num_classes: int, randomized_dim: int = RANDOMIZED_DIM,
                 max_dim: int = MAX_MULTILINEAR_DIM, seed: int = 0):
        super().__init__()
        self.randomized = feature_dim * num_classes > max_dim
        self.out_dim = randomized_dim if self.randomized else feature_dim * num_classes
        if self.randomized:
            gen = torch.Generator().manual_seed(seed)
            self.register_buffer("r_f", torch.randn(feature_dim, randomized_dim, generator=gen))
            self.register_buffer("r_g", torch.randn(num_classes, randomized_dim, generator=gen))

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        if self.randomized:
            return (f @ self.r_f) * (g @ self.r_g) / math.sqrt(self.out_dim)
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


class ConditionalDomainAdversarialLoss(nn.Module):
    """``forward(f_s, g_s, f_t, g_t, coeff) -> L_d`` (0-dim) for features ``[m, D]`` /
    ``[n, D]`` and logits ``[m, C]`` / ``[n, C]``; ``last_accuracy``: the discriminator's
    balanced accuracy. ``entropy_conditioning`` turns CDAN into CDAN+E."""

    def __init__(self, feature_dim: int, num_classes: int, hidden_dim: int = 256, entropy_conditioning: bool = True):
        super().__init__()
        self.map = MultilinearMap(feature_dim, num_classes)
        self.discriminator = DomainDiscriminator(self.map.out_dim, hidden_dim)
        self.entropy_conditioning = entropy_conditioning
        self.last_accuracy = torch.tensor(float("nan"))

    def forward(self, f_s: Tensor, g_s: Tensor, f_t: Tensor, g_t: Tensor, coeff: float = 1.0) -> Tensor:
        m = f_s.shape[0]
        f = torch.cat([f_s, f_t]).float()
        g = F.softmax(torch.cat([g_s, g_t]).float(), dim=1).detach()
        d = self.discriminator(grad_reverse(self.map(f, g), coeff))
        label = torch.cat([torch.ones(m, device=d.device), torch.zeros(len(d) - m, device=d.device)])
        w = torch.ones_like(d)
        if self.entropy_conditioning:
            w = 1.0 + torch.exp(-entropy(g))
            w = torch.cat([w[:m] / w[:m].mean(), w[m:] / w[m:].mean()])
        bce = F.binary_cross_entropy_with_logits(d, label, weight=w, reduction="none")
        loss = 0.5 * (bce[:m].mean() + bce[m:].mean())
        with torch.no_grad():
            self.last_accuracy = 0.5 * ((d[:m] > 0).float().mean() + (d[m:] <= 0).float().mean())
        return loss


@register
class CDAN(Objective):
    """CE + L_d of CDAN+E; ``weight`` is lambda_max of the gradient reversal schedule."""

    name = "cdan"
    paper = "Long et al., Conditional Adversarial Domain Adaptation, NeurIPS 2018"
    description = "conditional domain-adversarial training (CDAN+E): discriminator on features x predictions"
    tags = ("domain-adaptation", "cdan")
    needs_target = True
    lp_ft_head = True
    needs_target_logits = True
    frozen_adapter_dim = 256
    options = ("da_weight", "discriminator_hidden_dim")

    def __init__(self, setup: ObjectiveSetup):
        super().__init__(setup)
        hidden = getattr(setup.args, "discriminator_hidden_dim", 256) if setup.args is not None else 256
        self.loss = ConditionalDomainAdversarialLoss(setup.feature_dim, setup.num_classes, hidden)

    def coefficient(self, progress: float) -> float:
        return dann_coefficient(progress, lambda_max=self.weight)

    def forward(self, step: Step) -> TermOutput:
        if step.n_source < 1 or step.n_target < 1:
            return skipped(step.labels, "an empty domain batch")
        loss = self.loss(step.source_features, step.source_logits, step.target_features, step.target_logits,
                         self.coefficient(step.progress))
        return TermOutput(loss, {"disc_acc": self.loss.last_accuracy})
