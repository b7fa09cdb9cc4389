"""Unsupervised SimCSE on the unlabelled target text.

Gao, Yao & Chen, "SimCSE: Simple Contrastive Learning of Sentence Embeddings",
EMNLP 2021, eq. 4: each target sentence is encoded twice in train mode, so the two
views ``h_i``, ``h_i^+`` differ only by dropout noise; the other sentences of the
batch are the negatives:

    l_i = -log  exp(sim(h_i, h_i^+) / tau) / sum_{j=1..N} exp(sim(h_i, h_j^+) / tau)

with ``sim`` the cosine similarity and ``tau = 0.05`` (the paper's). The run
minimises ``CE(source) + weight * mean_i l_i``. The first view is the step's own
target pass (``Step.target_features``), the second one more pass of the same batch;
``h`` is the backbone's pooled embedding through the adapter (the features the
classifier sees; the paper's [CLS] + MLP pooling is not used).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from . import register
from .base import Objective, Step, TermOutput, skipped

TEMPERATURE = 0.05  # Gao et al. 2021, section 3 / appendix


def info_nce(z1: Tensor, z2: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """Mean InfoNCE (SimCSE eq. 4) of paired views ``z1``, ``z2`` ``[N, D]`` (row i of
    each is a positive pair; the other rows of ``z2`` are negatives). Raises ValueError
    for mismatched shapes or ``N < 2``."""
    if z1.dim() != 2 or z1.shape != z2.shape or z1.shape[0] < 2:
        raise ValueError(f"info_nce expects two [N, D] views with N >= 2; got {tuple(z1.shape)} and {tuple(z2.shape)}")
    sim = F.cosine_similarity(z1.float().unsqueeze(1), z2.float().unsqueeze(0), dim=-1) / temperature  # [N, N]
    return F.cross_entropy(sim, torch.arange(len(z1), device=z1.device))


@register
class SimCSE(Objective):
    """CE(source) + weight * InfoNCE of two dropout views of the target batch.

    Logs ``simcse/loss`` (unweighted) and ``simcse/pos_cos`` (mean cosine of the
    positive pairs). Skipped (logged ``simcse/skipped = 1``) when the target batch
    has fewer than 2 rows: there is no negative."""

    name = "simcse"
    modalities = ("text",)
    paper = "Gao et al., SimCSE: Simple Contrastive Learning of Sentence Embeddings, EMNLP 2021"
    description = "unsupervised SimCSE on the target text: two dropout views, in-batch negatives, tau = 0.05"
    tags = ("domain-adaptation", "simcse", "contrastive")
    needs_target = True
    lp_ft_head = True
    needs_token_inputs = True
    default_weight = 1.0
    options = ("da_weight",)

    def forward(self, step: Step) -> TermOutput:
        tgt = step.target_inputs
        if step.n_target < 2 or tgt is None:
            return skipped(step.labels, "fewer than 2 target rows")
        z1 = step.target_features  # the step's target pass (train mode: dropout)
        model = step.model
        z2 = model.features(model.encode(**tgt))  # a second pass: other dropout masks
        loss = info_nce(z1, z2)
        with torch.no_grad():
            pos = F.cosine_similarity(z1.float(), z2.float(), dim=-1).mean()
        return TermOutput(self.weight * loss, {"loss": loss, "pos_cos": pos})
