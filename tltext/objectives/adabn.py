"""AdaBN on the features the head reads: after training, the linear head is re-expressed for the
target domain's feature statistics, computed from its unlabelled examples.

Li, Wang, Shi, Hou and Liu, "Revisiting Batch Normalization For Practical Domain Adaptation"
(ICLR 2017 workshop; Pattern Recognition 80, 2018), Algorithm 1: a network whose normalisation
layers use the source statistics in training uses the target's statistics at test time. Here the
layer is a per-dimension standardisation of the features ``u`` the linear head reads (the adapter
output, unit-normalised first when the model's ``feature_norm`` is ``l2``):

    u' = (u - mu_t) / sigma_t * sigma_s + mu_s

with ``mu, sigma`` the per-dimension mean and standard deviation over the source training set
(``s``) and the unlabelled target set (``t``). It is linear, so it folds into the head
(``W [C, D]``, ``b [C]``; ``r = sigma_s / sigma_t``):

    W' = W diag(r),   b' = b + W (mu_s - r * mu_t)

and the exported model is the same architecture, now for the target domain (its scores on
source data are no longer what the source validation measured during training). Nothing else
changes in training: the run minimises the source cross-entropy, so ``--objective adabn`` is
source-only training + the re-expressed head, and it composes with any objective that trains a
linear head (``--objective dann+adabn``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import register
from .base import Objective, Step, TermOutput, zero_like

MIN_STD = 1e-6  # a target dimension with no spread keeps its source scale (r = 1)


def adabn_head(weight: Tensor, bias: Tensor, source: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
    """The head ``(W [C, D], b [C])`` folded with ``u -> (u - mu_t) / sigma_t * sigma_s + mu_s``;
    ``source [N_s, D]`` and ``target [N_t, D]`` are the features the head reads.

    Raises ``ValueError`` for mismatched shapes or fewer than 2 rows in either set."""
    if source.dim() != 2 or target.dim() != 2 or source.shape[1] != target.shape[1] or weight.shape[1] != source.shape[1]:
        raise ValueError(f"adabn_head: expected features [N, D] matching the head [C, D]; got source {tuple(source.shape)}, "
                         f"target {tuple(target.shape)}, head {tuple(weight.shape)}")
    if len(source) < 2 or len(target) < 2:
        raise ValueError(f"adabn: needs at least 2 source and 2 target examples for their statistics; got "
                         f"{len(source)} and {len(target)}")
    s, t, w = source.double(), target.double(), weight.double()
    mu_s, mu_t = s.mean(0), t.mean(0)
    sd_s, sd_t = s.std(0, unbiased=False), t.std(0, unbiased=False)
    r = torch.where(sd_t > MIN_STD, sd_s / sd_t.clamp_min(MIN_STD), torch.ones_like(sd_t))
    new_w = w * r[None, :]
    new_b = bias.double() + w @ (mu_s - r * mu_t)
    return new_w.to(weight.dtype), new_b.to(bias.dtype)


@register
class AdaBN(Objective):
    """AdaBN (Li et al. 2017) on the head's input features: train on the source (cross-entropy),
    then re-express the linear head for the target's feature mean and standard deviation
    (``adabn_head``), from ``--target_file``'s unlabelled examples. No hyperparameters; no target
    batches during training.

    Measured (benchmarks/results/speech_stage1_adabn.md): FSDD leave-one-speaker-out, stage 1 from
    the wav2vec 2.0 stage-0 model, seeds 0-2: 84.8 +- 0.8 % on the four target speakers against
    78.8 +- 1.6 for the same training without the fold. MiniLM, Amazon books <-> kitchen, seeds 1-3:
    frozen probe +0.2 (B->K) / +0.75 (K->B) (adabn_frozen_amazon.md); full fine-tuning +0.48 / +2.17
    (pilots_full_adabn.md)."""

    name = "adabn"
    paper = "Li et al., Revisiting Batch Normalization For Practical Domain Adaptation (AdaBN), ICLR workshop 2017"
    description = ("source cross-entropy, then the linear head re-expressed for the target's feature statistics "
                   "(AdaBN: per-dimension mean and standard deviation of unlabelled target examples)")
    tags = ("domain-adaptation", "adabn", "test-time-adaptation")
    needs_target = True
    target_batches = False
    adds_term = False

    def forward(self, step: Step) -> TermOutput:
        return TermOutput(zero_like(step.source_logits))

    def adapt_head(self, weight: Tensor, bias: Tensor, source: Tensor, target: Tensor) -> Optional[Tuple[Tensor, Tensor]]:
        return adabn_head(weight, bias, source, target)

    def adaptation_description(self, n_source: int, n_target: int) -> str:
        return (f"AdaBN (Li et al. 2017): the linear head re-expressed for the target's feature statistics, "
                f"u -> (u - mean_t) / std_t * std_s + mean_s per dimension, from {n_source} source training and "
                f"{n_target} unlabelled target examples (no target labels)")
