"""Prototypical networks (Snell, Swersky & Zemel, NeurIPS 2017), cosine variant.

Each class k of an episode is represented by the mean of its embedded support
examples (eq. 1); tltext embeds on the unit sphere and scores by scaled cosine,

    c_k = 1/|S_k| sum_{x in S_k} f(x)/||f(x)||,    logit_k(q) = s * cos(f(q), c_k)

with a learnable scale (inverse temperature) s = exp(log_s) (Oreshkin et al.,
TADAM, NeurIPS 2018; Chen et al., A Closer Look at Few-shot Classification, ICLR
2019), trained with cross-entropy over the episode's classes (eq. 2). Because
cos(q, c_k) = (c_k/||c_k||).q / ||q|| and ||q|| is shared by all classes, the
prototypes define a linear classifier ``W_k = s c_k/||c_k||, b = 0``
(``cosine_prototype_head``) whose argmax is the cosine nearest centroid. Snell's
squared euclidean form (``prototype_linear_head``: ``W_k = 2 c_k``,
``b_k = -||c_k||^2``) is kept for ``PrototypicalLoss(distance="sqeuclidean")``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Hashable, Iterator, List, Optional, Sequence, Tuple

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


DISTANCES = ("cosine", "sqeuclidean")


def unit(z: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm, ``[N, D] -> [N, D]`` (float32; zero rows stay zero)."""
    return F.normalize(z.float(), dim=-1)


def prototype_logits(query_z: Tensor, prototypes: Tensor, distance: str = "cosine", scale: Any = 1.0) -> Tensor:
    """``[Nq, D]`` x ``[C, D]`` -> ``[Nq, C]``: ``scale * cos(q, c_k)`` (``cosine``) or
    ``-||q - c_k||^2`` (``sqeuclidean``, Snell et al. eq. 2); ValueError on other distances."""
    if distance == "cosine":
        return scale * unit(query_z) @ unit(prototypes).t()
    if distance == "sqeuclidean":
        return -squared_euclidean(query_z, prototypes)
    raise ValueError(f"prototype distance must be one of {', '.join(DISTANCES)}; got {distance!r}")


class PrototypicalLoss(nn.Module):
    """Episode loss: CE over the prototype logits with the episode's classes relabelled 0..N-1.

    ``distance="sqeuclidean"`` (Snell et al. 2017: logits ``-||q - c_k||^2``, prototypes
    the mean support embedding) or ``"cosine"`` (logits ``scale * cos(q, c_k)``,
    prototypes the mean of unit support embeddings). ``forward(support_z, support_y,
    query_z, query_y, scale=1.0) -> (loss, accuracy)``; labels may be any class ids
    (the sorted distinct support labels become 0..N-1); ``accuracy`` is a detached
    0-dim tensor (fraction of queries whose nearest prototype is their class).
    """

    def __init__(self, distance: str = "sqeuclidean"):
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"prototype distance must be one of {', '.join(DISTANCES)}; got {distance!r}")
        self.distance = distance

    def forward(self, support_z: Tensor, support_y: Tensor, query_z: Tensor, query_y: Tensor,
                scale: Any = 1.0) -> Tuple[Tensor, Tensor]:
        classes = torch.unique(support_y)  # sorted
        s_rel = torch.searchsorted(classes, support_y)
        q_pos = torch.searchsorted(classes, query_y).clamp_max(classes.numel() - 1)
        unknown = classes[q_pos] != query_y
        if bool(unknown.any()):
            bad = sorted(set(query_y[unknown].tolist()))
            raise ValueError(f"PrototypicalLoss: query label(s) {bad} have no support example; support classes are {classes.tolist()}")
        sz = unit(support_z) if self.distance == "cosine" else support_z
        protos = class_prototypes(sz, s_rel, classes.numel())
        logits = prototype_logits(query_z, protos, self.distance, scale)
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


def cosine_prototype_head(features: Tensor, labels: Tensor, num_classes: int, scale: float = 1.0) -> Tuple[Tensor, Tensor]:
    """The cosine nearest-centroid classifier as a linear layer.

    ``features [N, D]``, ``labels [N]`` in ``[0, num_classes)`` -> ``(W [C, D], b [C])``
    with ``c_k`` the mean of class k's unit feature vectors, ``W_k = scale * c_k/||c_k||``
    and ``b = 0``: ``W f = scale * ||f|| cos(f, c_k)``, so ``argmax_k`` is the class of
    the most cosine-similar centroid. Raises ValueError for a class without examples.
    """
    protos = class_prototypes(unit(features), labels, num_classes)
    return float(scale) * unit(protos), torch.zeros(num_classes)


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

    @property
    def description(self) -> str:
        """One line for the summary and the card (results.json ``training.batch_sampler``)."""
        return (f"{self.n_way}-way {self.k_shot}-shot episodes with {self.n_query} queries per class, "
                f"{self.episodes} per epoch")

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


MAX_WAY = 64  # default N-way: every class with >= 2 examples, at most this many per episode
MAX_PER_CLASS = 10  # default items (support + query) per class and episode, at most this many
EVAL_SHAPE = (5, 5, 5)  # --eval_episodes default: 5-way 5-shot, 5 queries per class
FROZEN_EPISODES = 100  # default episodes per epoch for an adapter over cached embeddings (cheap steps)


def episode_shape(labels: Sequence[int], n_way: Optional[int] = None, k_shot: Optional[int] = None,
                  n_query: Optional[int] = None) -> Tuple[int, int, int]:
    """``(n_way, k_shot, n_query)`` of training episodes that match the labelled data.

    Values given are kept; missing ones are derived from the per-class counts of
    ``labels``: with ``m = min(MAX_PER_CLASS, smallest count among classes with >= 2
    examples)`` (``m = K`` for ``--shots_per_class K <= 10``), ``k_shot = ceil(m/2)``,
    ``n_query = m - k_shot`` (K=10 -> 5 + 5, K=5 -> 3 + 2) and ``n_way`` = the number of
    classes with at least ``k_shot + n_query`` examples, at most ``MAX_WAY``. Raises a
    one-line ValueError when no episode can be formed (fewer than 2 such classes).
    """
    if hasattr(labels, "tolist"):
        labels = labels.tolist()
    counts = np.bincount(np.asarray(labels, dtype=np.int64)) if len(labels) else np.zeros(0, dtype=np.int64)
    usable = counts[counts >= 2]
    if usable.size < 2:
        raise ValueError(f"prototypes: episodes need >= 2 classes with >= 2 training examples each; got {usable.size} "
                         f"(class counts {sorted(counts[counts > 0].tolist())[:10]})")
    m = int(min(MAX_PER_CLASS, usable.min()))
    k = int(k_shot) if k_shot is not None else math.ceil(m / 2)
    q = int(n_query) if n_query is not None else max(1, m - k)
    if k < 1 or q < 1:
        raise ValueError(f"prototypes: --k_shot and --n_query must be >= 1; got {k} and {q}")
    have = int((counts >= k + q).sum())
    n = int(n_way) if n_way is not None else min(MAX_WAY, have)
    if n < 2 or n > have:
        raise ValueError(f"prototypes: episodes of --k_shot {k} + --n_query {q} need {k + q} training examples per class "
                         f"in {'--n_way ' + str(n) if n_way is not None else 'at least 2'} classes; {have} of "
                         f"{int((counts > 0).sum())} classes have them (smallest class: {int(counts[counts > 0].min())})")
    return n, k, q


def episodes_per_epoch(num_examples: int, n_way: int, k_shot: int, n_query: int, trains_encoder: bool) -> int:
    """The default ``--episodes_per_epoch``: ``FROZEN_EPISODES`` for an adapter over cached
    embeddings; on a trainable encoder, one pass over the training set,
    ``ceil(num_examples / (n_way * (k_shot + n_query)))`` (every episode runs the encoder on all
    its texts, so 100 episodes of 64 x 5 texts would take hours on a CPU)."""
    if not trains_encoder:
        return FROZEN_EPISODES
    return max(1, math.ceil(num_examples / (n_way * (k_shot + n_query))))


def episodic_evaluation(features: Tensor, labels: Sequence[int], episodes: int, seed: int, n_way: Optional[int] = None,
                        k_shot: Optional[int] = None, n_query: Optional[int] = None) -> Dict[str, Any]:
    """Mean accuracy and 95 % CI over ``episodes`` test episodes (``--eval_episodes``).

    Protocol: ``n_way``-way ``k_shot``-shot episodes with ``n_query`` queries per class
    (default 5/5/5 for any value not given) drawn by ``EpisodeSampler(seed)`` from the
    labelled test split; each query takes the class of the most cosine-similar
    prototype (mean of the unit support features). ``features [N, D]``, ``labels [N]``.
    """
    n, k, q = (v if v is not None else d for v, d in zip((n_way, k_shot, n_query), EVAL_SHAPE))
    y = torch.as_tensor(list(labels))
    loss = PrototypicalLoss("cosine")
    accs = []
    for ep in EpisodeSampler(y.tolist(), n, k, q, episodes, seed=seed):
        ep = torch.tensor(ep)
        _, a = loss(features[ep[: n * k]], y[ep[: n * k]], features[ep[n * k:]], y[ep[n * k:]])
        accs.append(float(a))
    mean, ci = episodic_accuracy_ci(accs)
    return {"accuracy": mean, "ci95": ci, "episodes": len(accs), "n_way": n, "k_shot": k, "n_query": q,
            "protocol": f"{n}-way {k}-shot, {q} queries per class, {len(accs)} episodes from the test split "
                        f"(seed {seed}); nearest prototype by cosine on the model's features; 95% CI = 1.96 s/sqrt(n)"}


@register
class Prototypes(Objective):
    """Episodic prototypical training with cosine distance (Snell et al. 2017, eq. 1-2;
    learnable scale as in Oreshkin et al. 2018). Each batch is an N-way K-shot episode
    (``episode_shape``: by default every class (at most 64) with the K of
    ``--shots_per_class`` split into ceil(K/2) support + the rest query; ``--n_way``,
    ``--k_shot``, ``--n_query`` override; ``--episodes_per_epoch`` episodes an epoch, by default one
    pass over the training set on a trainable encoder and 100 for a frozen encoder's adapter:
    ``episodes_per_epoch``);
    the loss is CE over ``s * cos(f(q), c_k)``, replacing the source CE. After training
    (and before each validation) the head becomes the cosine nearest-centroid linear
    head of ALL training examples (``cosine_prototype_head``, scaled by ``s``).

    Under ``--tuning frozen`` with no adapter (the default, ``frozen_adapter_dim = 0``)
    nothing trains: the model is the cosine nearest-centroid classifier on the frozen
    embeddings. ``--adapter_dim D`` trains a D-wide adapter episodically instead."""

    name = "prototypes"
    paper = "Snell et al., Prototypical Networks for Few-shot Learning, NeurIPS 2017"
    description = ("prototypical networks: cosine episodes over every class (at most 64), nearest class-mean head "
                   "(frozen: no training)")
    tags = ("few-shot", "prototypical-networks")
    replaces_cross_entropy = True
    trains_classifier = False
    frozen_adapter_dim = 0
    options = ("n_way", "k_shot", "n_query", "episodes_per_epoch")
    INIT_SCALE = 10.0

    def __init__(self, setup: ObjectiveSetup):
        super().__init__(setup)
        a = setup.args
        self.n_way, self.k_shot = getattr(a, "n_way", None), getattr(a, "k_shot", None)
        self.n_query, self.episodes = getattr(a, "n_query", None), getattr(a, "episodes_per_epoch", None)
        if self.episodes is not None and int(self.episodes) < 1:
            raise ValueError(f"--episodes_per_epoch must be >= 1; got {self.episodes}")
        self.trains_encoder = setup.tuning != "frozen"
        model = setup.model
        self.trains = not (setup.tuning == "frozen" and model is not None
                           and not any(p.numel() for p in model.adapter.parameters()))
        log_s = torch.tensor(math.log(self.INIT_SCALE))
        if self.trains:
            self.log_scale = nn.Parameter(log_s)
        else:  # nothing to learn: the head is the nearest centroid
            self.register_buffer("log_scale", log_s)
        self.loss = PrototypicalLoss("cosine")

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp()

    def batch_sampler(self, labels: Sequence[int], seed: int):
        if not self.trains:
            return None
        self.n_way, self.k_shot, self.n_query = episode_shape(labels, self.n_way, self.k_shot, self.n_query)
        if self.episodes is None:
            self.episodes = episodes_per_epoch(len(labels), self.n_way, self.k_shot, self.n_query, self.trains_encoder)
        return EpisodeSampler(labels, self.n_way, self.k_shot, self.n_query, self.episodes, seed=seed)

    def settings(self) -> Dict[str, Any]:
        """The episode shape it trained with (set once ``batch_sampler`` resolved it; nothing
        when nothing trains)."""
        if not self.trains or self.k_shot is None:
            return {}
        return {"n_way": self.n_way, "k_shot": self.k_shot, "n_query": self.n_query, "episodes_per_epoch": self.episodes}

    def forward(self, step: Step) -> TermOutput:
        feats = step.source_features.float()
        classes, rel = torch.unique(step.labels, return_inverse=True)
        n_sup = len(classes) * self.k_shot
        loss, acc = self.loss(feats[:n_sup], rel[:n_sup], feats[n_sup:], rel[n_sup:], scale=self.scale)
        return TermOutput(self.weight * loss, {"episode_acc": acc, "scale": self.scale.detach()})

    def head_description(self) -> str:
        return (f"cosine nearest-centroid head: the mean of each class's unit-normalised training features (normalised), scaled by "
                f"s = {float(self.scale.detach()):.3g}{' (learned)' if self.trains else ''}, computed after training")

    def head_from_features(self, features: Tensor, labels: Tensor, num_classes: int):
        return cosine_prototype_head(features, labels, num_classes, scale=float(self.scale.detach()))
