"""Minimum class confusion (MCC).

Jin, Wang, Long & Wang, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020.

On a target batch of logits ``[B, C]``, with temperature T (2.5, the paper's):

    Y = softmax(logits / T)                                            (eq. 1)
    W = diag(B * w / sum(w)),  w_i = 1 + exp(-H(Y_i))   (detached)     (eq. 3-4)
    C = Y^T W Y                                  [C, C] class confusion (eq. 5)
    C~_jk = C_jk / sum_j' C_j'k                  category normalisation  (eq. 6)
    L_MCC = 1/C * sum_j sum_{k != j} C~_jk                             (eq. 7)

It is 0 when every prediction is one-hot (C diagonal) and grows as classes are
confused; no discriminator. The run minimises CE + weight * L_MCC.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import register
from .base import Objective, Step, TermOutput, entropy, skipped

TEMPERATURE = 2.5


def minimum_class_confusion(logits: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """``L_MCC`` (0-dim) of target logits ``[B, C]``, ``B >= 1``, ``C >= 2``."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"minimum_class_confusion expects logits [B, C] with C >= 2; got {tuple(logits.shape)}")
    y = torch.softmax(logits.float() / temperature, dim=1)
    w = (1.0 + torch.exp(-entropy(y))).detach()
    w = len(y) * w / w.sum()
    conf = (y * w.unsqueeze(1)).t() @ y
    conf = conf / conf.sum(dim=0, keepdim=True).clamp_min(1e-12)
    c = conf.shape[0]
    return (conf.sum() - conf.trace()) / c


@register
class MCC(Objective):
    name = "mcc"
    paper = "Jin et al., Minimum Class Confusion for Versatile Domain Adaptation, ECCV 2020"
    description = "minimum class confusion on target predictions (no discriminator)"
    tags = ("domain-adaptation", "mcc")
    needs_target = True
    lp_ft_head = True
    needs_target_logits = True
    frozen_adapter_dim = 256
    options = ("da_weight",)

    def forward(self, step: Step) -> TermOutput:
        if step.n_target < 1:
            return skipped(step.labels, "an empty target batch")
        mcc = minimum_class_confusion(step.target_logits)
        return TermOutput(self.weight * mcc, {"confusion": mcc})
