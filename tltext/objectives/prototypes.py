"""Prototypical networks (Snell, Swersky & Zemel, NeurIPS 2017).

Each class k of an episode is represented by the mean of its embedded support
examples, c_k = 1/|S_k| sum_{x in S_k} f(x); a query q is scored by
logit_k(q) = -||f(q) - c_k||^2 and trained with cross-entropy over the episode's
classes. Because -||q - c_k||^2 = 2 c_k.q - ||c_k||^2 - ||q||^2 and the last
term is shared by all classes, the prototypes define a linear classifier
W_k = 2 c_k, b_k = -||c_k||^2 (``prototype_linear_head``).
"""
from __future__ import annotations

import math
from typing import Dict, Hashable, Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Sampler

from . import register
from .base import Objective, ObjectiveSetup, Step, TermOutput


def class_prototypes(z: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Per-class mean embedding: ``[N, D]`` + labels in ``[0, num_classes)`` -> ``[C, D]``."""
    if z.dim() != 2 or y.dim() != 1 or z.shape[0] != y.shape[0]:
        raise ValueError(f"class_prototypes: expected z [N, D] and y [N]; got {tuple(z.shape)} and {tuple(y.shape)}")
    y = y.long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"class_prototypes: labels must lie in [0, {num_classes}); got range [{int(y.min())}, {int(y.max())}]")
    counts = torch.bincount(y, minlength=num_classes)
    missing = torch.nonzero(counts == 0).flatten().tolist()
    if missing:
        raise ValueError(f"class_prototypes: no example for class id(s) {missing} (of {num_classes} classes)")
    sums = torch.zeros(num_classes, z.shape[1], dtype=z.dtype, device=z.device).index_add(0, y, z)
    return sums / counts.to(z.dtype).unsqueeze(1)


def squared_euclidean(a: Tensor, b: Tensor) -> Tensor:
    """``||a_i - b_j||^2`` for ``a [Na, D]``, ``b [Nb, D]`` -> ``[Na, Nb]`` (clamped at 0)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"squared_euclidean: expected [Na, D] and [Nb, D]; got {tuple(a.shape)} and {tuple(b.shape)}")
    d = a.pow(2).sum(1, keepdim=True) - 2.0 * a @ b.t() + b.pow(2).sum(1).unsqueeze(0)
    return d.clamp_min(0.0)


class PrototypicalLoss(nn.Module):
    """Episode loss: CE over ``-||q - c_k||^2`` with the episode's classes relabelled 0..N-1.

    ``forward(support_z, support_y, query_z, query_y) -> (loss, accuracy)``; labels
    may be any class ids (the sorted distinct support labels become 0..N-1);
    ``accuracy`` is a detached 0-dim tensor (fraction of queries whose nearest
    prototype is their class).
    """

    def forward(self, support_z: Tensor, support_y: Tensor, query_z: Tensor, query_y: Tensor) -> Tuple[Tensor, Tensor]:
        classes = torch.unique(support_y)  # sorted
        s_rel = torch.searchsorted(classes, support_y)
        q_pos = torch.searchsorted(classes, query_y).clamp_max(classes.numel() - 1)
        unknown = classes[q_pos] != query_y
        if bool(unknown.any()):
            bad = sorted(set(query_y[unknown].tolist()))
            raise ValueError(f"PrototypicalLoss: query label(s) {bad} have no support example; support classes are {classes.tolist()}")
        protos = class_prototypes(support_z, s_rel, classes.numel())
        logits = -squared_euclidean(query_z, protos)
        loss = F.cross_entropy(logits, q_pos)
        acc = (logits.argmax(1) == q_pos).float().mean().detach()
        return loss, acc


def prototype_linear_head(prototypes: Tensor) -> Tuple[Tensor, Tensor]:
    """Linear classifier equal (up to the class-shared ``-||q||^2``) to nearest prototype.

    ``W_k = 2 c_k``, ``b_k = -||c_k||^2`` so ``W q + b = -||q - c_k||^2 + ||q||^2``.
    """
    if prototypes.dim() != 2:
        raise ValueError(f"prototype_linear_head: expected prototypes [C, D]; got {tuple(prototypes.shape)}")
    return 2.0 * prototypes, -prototypes.pow(2).sum(1)


def episodic_accuracy_ci(accs: Sequence[float]) -> Tuple[float, float]:
    """Mean episode accuracy and its 95% half-width ``1.96 * s / sqrt(n)``.

    ``s`` is the sample standard deviation (ddof=1); with one episode the
    interval is undefined and returned as NaN.
    """
    a = np.asarray(list(accs), dtype=np.float64)
    if a.size == 0:
        raise ValueError("episodic_accuracy_ci: no episode accuracies given")
    if a.size == 1:
        return float(a[0]), float("nan")
    return float(a.mean()), float(1.96 * a.std(ddof=1) / math.sqrt(a.size))


def episode_targets(n_way: int, k_shot: int, n_query: int) -> Tuple[Tensor, Tensor]:
    """Episode-relative labels matching ``EpisodeSampler``'s order:
    ``support_y = [0]*k + [1]*k + ...`` (``n_way*k_shot``), ``query_y`` likewise with ``n_query``."""
    ways = torch.arange(n_way, dtype=torch.long)
    return ways.repeat_interleave(k_shot), ways.repeat_interleave(n_query)


def split_episode(batch: Tensor, n_way: int, k_shot: int) -> Tuple[Tensor, Tensor]:
    """Split a collated episode (first dim ordered as the sampler yields) into support and query."""
    n_s = n_way * k_shot
    return batch[:n_s], batch[n_s:]


def _sort_key(v: Hashable):
    return (type(v).__name__, v)


class EpisodeSampler(Sampler[List[int]]):
    """N-way K-shot episodes of dataset indices, for ``DataLoader(batch_sampler=...)``.

    Each episode is ``n_way*k_shot`` support indices grouped by class (in the
    episode's class order) followed by ``n_way*n_query`` query indices grouped the
    same way; support and query never overlap. Classes with fewer than
    ``k_shot + n_query`` items are left out (``excluded``). Episodes depend only on
    ``(seed, epoch)``; call ``set_epoch`` for fresh, reproducible episodes.
    Labels for the episode come from ``episode_targets(n_way, k_shot, n_query)``.
    """

    def __init__(self, labels: Sequence[int], n_way: int, k_shot: int, n_query: int, episodes: int, seed: int = 0):
        for name, v in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query), ("episodes", episodes)):
            if int(v) < 1:
                raise ValueError(f"EpisodeSampler: {name} must be >= 1; got {v}")
        if hasattr(labels, "tolist"):
            labels = labels.tolist()
        self.n_way, self.k_shot, self.n_query, self.episodes = int(n_way), int(k_shot), int(n_query), int(episodes)
        self.seed, self.epoch = int(seed), 0
        by_class: Dict[Hashable, List[int]] = {}
        for i, v in enumerate(labels):
            by_class.setdefault(v, []).append(i)
        need = self.k_shot + self.n_query
        keys = sorted(by_class, key=_sort_key)
        self.classes = [c for c in keys if len(by_class[c]) >= need]
        self.excluded = [c for c in keys if len(by_class[c]) < need]
        if len(self.classes) < self.n_way:
            raise ValueError(
                f"EpisodeSampler: only {len(self.classes)} of {len(keys)} classes have at least k_shot+n_query="
                f"{self.k_shot}+{self.n_query}={need} items; n_way={self.n_way} needs {self.n_way}"
            )
        self._pools = [np.asarray(by_class[c], dtype=np.int64) for c in self.classes]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.episodes

    def __iter__(self) -> Iterator[List[int]]:
        rng = np.random.default_rng([self.seed % 2**63, self.epoch % 2**63])
        need = self.k_shot + self.n_query
        for _ in range(self.episodes):
            ways = rng.choice(len(self.classes), size=self.n_way, replace=False)
            picks = [rng.choice(self._pools[w], size=need, replace=False) for w in ways]
            support = [int(i) for p in picks for i in p[: self.k_shot]]
            query = [int(i) for p in picks for i in p[self.k_shot:]]
            yield support + query


@register
class Prototypes(Objective):
    """Episodic prototypical training (Snell et al. 2017, eq. 1-2): each batch is an
    N-way K-shot episode (``--n_way``, ``--k_shot``, ``--n_query``,
    ``--episodes_per_epoch``); the loss is CE over ``-||f(q) - c_k||^2``, replacing the
    source CE. After training (and before each validation) the head becomes the
    nearest-prototype linear head of ALL training examples (``prototype_linear_head``)."""

    name = "prototypes"
    paper = "Snell et al., Prototypical Networks for Few-shot Learning, NeurIPS 2017"
    description = "prototypical networks: episodic training, nearest class-mean head"
    tags = ("few-shot", "prototypical-networks")
    replaces_cross_entropy = True
    trains_classifier = False
    frozen_adapter_dim = 256
    options = ("n_way", "k_shot", "n_query", "episodes_per_epoch")

    def __init__(self, setup: ObjectiveSetup):
        super().__init__(setup)
        a = setup.args
        self.n_way, self.k_shot = getattr(a, "n_way", 5), getattr(a, "k_shot", 5)
        self.n_query, self.episodes = getattr(a, "n_query", 5), getattr(a, "episodes_per_epoch", 100)
        self.loss = PrototypicalLoss()

    def batch_sampler(self, labels: Sequence[int], seed: int):
        return EpisodeSampler(labels, self.n_way, self.k_shot, self.n_query, self.episodes, seed=seed)

    def forward(self, step: Step) -> TermOutput:
        feats = step.source_features.float()
        classes, rel = torch.unique(step.labels, return_inverse=True)
        n_sup = len(classes) * self.k_shot
        loss, acc = self.loss(feats[:n_sup], rel[:n_sup], feats[n_sup:], rel[n_sup:])
        return TermOutput(self.weight * loss, {"episode_acc": acc})

    def head_from_features(self, features: Tensor, labels: Tensor, num_classes: int):
        return prototype_linear_head(class_prototypes(features.float(), labels, num_classes))
