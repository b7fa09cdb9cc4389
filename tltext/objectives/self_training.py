"""Self-training on confident, class-balanced pseudo-labels of the target.

Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep
Neural Networks", ICML 2013 Workshop on Challenges in Representation Learning
(pseudo-labels = the model's own argmax, weight ramped up from 0, eq. 15-16);
confidence threshold as in Sohn et al., "FixMatch", NeurIPS 2020 (eq. 4, tau = 0.95
there, 0.9 here); class balance as in Zou et al., "Unsupervised Domain Adaptation
for Semantic Segmentation via Class-Balanced Self-Training", ECCV 2018.

On a target batch of logits ``z`` ``[B, C]``:

    p_i = softmax(z_i) (detached),  y^_i = argmax_c p_ic,  kept: K = {i : max_c p_ic > tau}
    n_c = |{i in K : y^_i = c}|,  classes present: P = {c : n_c > 0}
    L_ST = 1/|P| * sum_{c in P} 1/n_c * sum_{i in K, y^_i = c} CE(z_i, y^_i)
    term = w(p) * L_ST,  w(p) = weight * min(1, p / warmup)   (p: training progress)

so each pseudo-class present in the batch counts equally, whatever its count (a
per-sample weight inversely proportional to n_c). ``tau`` is
``--self_training_threshold`` (0.9; 1.0 keeps nothing), ``warmup``
``--self_training_warmup`` (0.3 of training). A step that keeps no pseudo-label
adds 0 and logs ``kept = 0``; the engine averages the logged ``self_training/kept``
(pseudo-labels kept per step) over each epoch, so an epoch mean of 0 flags a run
whose threshold never fired. The objective also warns once (``warnings.warn``) when
no pseudo-label has been kept by the end of the warm-up (or half of training, if
later): from then on the term would add nothing.
"""
from __future__ import annotations

import warnings
from typing import Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

from . import register
from .base import Objective, ObjectiveSetup, Step, TermOutput, skipped

THRESHOLD = 0.9
WARMUP = 0.3


def pseudo_labels(logits: Tensor, threshold: float) -> Tuple[Tensor, Tensor]:
    """``(labels [B], kept [B] bool)``: the argmax of ``softmax(logits)`` (no gradient)
    and whether its probability is strictly above ``threshold``."""
    with torch.no_grad():
        conf, labels = torch.softmax(logits.detach().float(), dim=-1).max(dim=-1)
    return labels, conf > threshold


def class_balanced_weights(labels: Tensor, num_classes: int) -> Tensor:
    """Per-sample weights ``[N]`` ``1 / (|P| * n_{y_i})``, summing to 1: each class
    present among ``labels`` ``[N]`` gets total weight ``1/|P|``. Empty in, empty out."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    present = (counts > 0).sum().clamp_min(1)
    return 1.0 / (present * counts[labels])


def self_training_loss(logits: Tensor, threshold: float = THRESHOLD) -> Tuple[Tensor, int]:
    """``(L_ST (0-dim), number kept)`` for target logits ``[B, C]`` (module docstring).
    ``L_ST`` is 0 (with a zero gradient) when nothing is kept."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"self_training_loss expects logits [B, C] with C >= 2; got {tuple(logits.shape)}")
    labels, kept = pseudo_labels(logits, threshold)
    n = int(kept.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    y = labels[kept]
    ce = F.cross_entropy(logits[kept].float(), y, reduction="none")
    return (class_balanced_weights(y, logits.shape[1]) * ce).sum(), n


def _option(args, name: str, default: float, low: float, high: float) -> float:
    v = getattr(args, name, None) if args is not None else None
    v = default if v is None else float(v)
    if not low <= v <= high:
        raise ValueError(f"--{name} {v}: expected a value in [{low}, {high}]")
    return v


@register
class SelfTraining(Objective):
    """CE + w(p) * L_ST on the target batch (module docstring). Logs ``kept``
    (pseudo-labels kept in the batch), ``kept_fraction`` and ``pseudo_loss``
    (L_ST before its weight)."""

    name = "self_training"
    paper = ("Lee, Pseudo-Label, ICML 2013 WREPL; class balance: Zou et al., Class-Balanced Self-Training, "
             "ECCV 2018")
    description = "cross-entropy on confident, class-balanced pseudo-labels of the target (weight ramped up)"
    tags = ("domain-adaptation", "self-training", "pseudo-labels")
    needs_target = True
    needs_target_logits = True
    frozen_adapter_dim = 256
    options = ("da_weight", "self_training_threshold", "self_training_warmup")

    def __init__(self, setup: ObjectiveSetup):
        super().__init__(setup)
        self.threshold = _option(setup.args, "self_training_threshold", THRESHOLD, 0.0, 1.0)
        self.warmup = _option(setup.args, "self_training_warmup", WARMUP, 0.0, 1.0)
        self.kept_total, self._warned = 0, False

    def coefficient(self, progress: float) -> float:
        """``weight * min(1, p / warmup)`` (``weight`` from the start when warmup = 0)."""
        p = min(max(float(progress), 0.0), 1.0)
        return self.weight if self.warmup == 0.0 else self.weight * min(1.0, p / self.warmup)

    def forward(self, step: Step) -> TermOutput:
        if step.n_target < 1:
            return skipped(step.labels, "an empty target batch")
        logits = step.target_logits
        loss, kept = self_training_loss(logits, self.threshold)
        self.kept_total += kept
        if not self._warned and self.kept_total == 0 and step.progress >= max(self.warmup, 0.5):
            self._warned = True
            warnings.warn(f"self_training: no target pseudo-label above --self_training_threshold {self.threshold} "
                          f"in the first {step.progress:.0%} of training; the term adds nothing (lower the threshold)")
        logs = {"kept": float(kept), "kept_fraction": kept / step.n_target, "pseudo_loss": loss.detach()}
        return TermOutput(self.coefficient(step.progress) * loss, logs)
