"""Contrastive fine-tuning of the encoder, then a head fitted on the tuned embeddings.

Two losses on the pooled embeddings ``f`` (``--contrastive_loss``):

``supcon`` -- supervised contrastive loss, Khosla et al., "Supervised Contrastive
Learning", NeurIPS 2020, eq. 2 (L^sup_out). With ``z_i = f_i/||f_i||`` and
temperature tau, over a batch I, A(i) = I \\ {i}, P(i) = {p in A(i): y_p = y_i}:

    L = sum_{i: |P(i)|>0} -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p/tau) / sum_{a in A(i)} exp(z_i.z_a/tau) )

(averaged over the anchors that have a positive). Batches are class-balanced
(``ClassBalancedBatchSampler``: 4 examples per class, 16 classes per batch).

``pairs`` -- SetFit's body fine-tuning (Tunstall et al., "Efficient Few-Shot Learning
Without Prompts", 2022): pairs of texts with target 1 (same class) or 0 (different
class) and the sentence-transformers CosineSimilarityLoss,

    L = mean_pairs (cos(f_a, f_b) - t_ab)^2,

on pairs generated as ``setfit.sampler.ContrastiveDataset`` does
(``PairBatchSampler``).

The loss replaces the cross-entropy; after training (and before each validation)
the linear head is fitted on the tuned training features (``--contrastive_head``):
``logreg`` (scikit-learn LogisticRegression, lbfgs, C=1, as SetFit's default head)
or ``prototype`` (cosine nearest centroid). Either is a plain linear layer, so the
exported model loads with ``AutoModelForSequenceClassification``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Sampler

from . import register
from .base import Objective, ObjectiveSetup, Step, TermOutput, skipped
from .prototypes import cosine_prototype_head

LOSSES = ("supcon", "pairs")
HEADS = ("logreg", "prototype")
DEFAULT_ITERATIONS = {"pairs": 20, "supcon": 1}  # pairs: SetFit's num_iterations; supcon: passes per epoch (dev rows, below)
DEFAULT_BATCH = {"pairs": 32, "supcon": 64}  # texts per step (pairs: SetFit's 16 pairs)
PER_CLASS = 4  # supcon: examples of one class per batch
MAX_EXACT_PAIRS = 5_000_000  # above this many index pairs, partners are drawn per anchor instead


def supcon_loss(features: Tensor, labels: Tensor, temperature: float = 0.1) -> Optional[Tensor]:
    """Khosla et al. 2020 eq. 2 (L^sup_out) of ``features [B, D]`` (normalised here) and
    ``labels [B]``; a 0-dim tensor, or None when no example has a positive in the batch."""
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"supcon_loss: expected features [B, D] and labels [B]; got {tuple(features.shape)} and {tuple(labels.shape)}")
    z = F.normalize(features.float(), dim=-1)
    sim = (z @ z.t()) / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(1)
    has = n_pos > 0
    if not bool(has.any()):
        return None
    per_anchor = log_prob.masked_fill(~pos, 0.0).sum(1)[has] / n_pos[has]
    return -per_anchor.mean()


def cosine_pair_loss(features: Tensor, labels: Tensor) -> Tensor:
    """SetFit / sentence-transformers CosineSimilarityLoss: rows ``(2i, 2i+1)`` of
    ``features [2P, D]`` are a pair with target 1 if their ``labels`` match, else 0;
    returns ``mean_i (cos(f_2i, f_2i+1) - t_i)^2``."""
    if features.dim() != 2 or len(features) % 2 or len(features) == 0:
        raise ValueError(f"cosine_pair_loss: expected an even number of rows [2P, D]; got {tuple(features.shape)}")
    f = features.float()
    cos = F.cosine_similarity(f[0::2], f[1::2], dim=-1)
    target = (labels[0::2] == labels[1::2]).float()
    return F.mse_loss(cos, target)


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) % 2**63, int(epoch) % 2**63])


class _EpochSampler(Sampler[List[int]]):
    def __init__(self, seed: int):
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


class ClassBalancedBatchSampler(_EpochSampler):
    """Batches of dataset indices for SupCon: each pass shuffles every class's examples
    and cuts them into chunks of ``per_class`` (a leftover single example joins the
    previous chunk), then packs the shuffled chunks into batches of about
    ``batch_size`` (so ~batch_size/per_class classes, each with >= 2 examples when it
    has them). An epoch is ``passes`` passes over every example; reproducible per
    ``(seed, epoch)``."""

    def __init__(self, labels: Sequence[int], batch_size: int, per_class: int = PER_CLASS, passes: int = 1, seed: int = 0):
        super().__init__(seed)
        if batch_size < 2 or per_class < 2 or passes < 1:
            raise ValueError(f"ClassBalancedBatchSampler: need batch_size >= 2, per_class >= 2, passes >= 1; "
                             f"got {batch_size}, {per_class}, {passes}")
        y = np.asarray(list(labels), dtype=np.int64)
        self.pools = [np.flatnonzero(y == c) for c in np.unique(y)]
        self.batch_size, self.per_class, self.passes, self.n = int(batch_size), int(per_class), int(passes), len(y)

    @property
    def description(self) -> str:
        """One line for the summary and the card (results.json ``training.batch_sampler``)."""
        return (f"class-balanced batches of up to {self.batch_size} examples in chunks of {self.per_class} of one "
                f"class (a class's leftover single example joins its last chunk), {self.passes} pass(es) over the "
                "training set per epoch")

    def _batches(self, rng: np.random.Generator) -> List[List[int]]:
        chunks: List[List[int]] = []
        for pool in self.pools:
            p = rng.permutation(pool).tolist()
            cut = [p[i:i + self.per_class] for i in range(0, len(p), self.per_class)]
            if len(cut) > 1 and len(cut[-1]) == 1:
                last = cut.pop()
                cut[-1] = cut[-1] + last
            chunks += cut
        batches, cur = [], []
        for j in rng.permutation(len(chunks)):
            if cur and len(cur) + len(chunks[j]) > self.batch_size:
                batches.append(cur)
                cur = []
            cur = cur + chunks[j]
        return batches + ([cur] if cur else [])

    def __iter__(self) -> Iterator[List[int]]:
        rng = _epoch_rng(self.seed, self.epoch)
        for _ in range(self.passes):
            yield from self._batches(rng)

    def __len__(self) -> int:
        return sum(1 for _ in self)  # batches per pass vary slightly with the shuffle


class PairBatchSampler(_EpochSampler):
    """SetFit's pair recipe over dataset indices (``setfit.sampler.ContrastiveDataset``,
    sampling with ``num_iterations=R``): all index pairs ``(i, j), i <= j`` in a shuffled
    order split into positives (same label) and negatives; the first ``R * N`` of each
    (cycling when there are fewer) interleaved positive, negative, ... An epoch is those
    ``2 R N`` pairs, ``pairs_per_batch`` per batch, each batch ``[a1, b1, a2, b2, ...]``.
    SetFit shuffles with a fixed seed (42) once; here the order depends on
    ``(seed, epoch)``. Above ``MAX_EXACT_PAIRS`` index pairs, each example is instead
    an anchor R times with a random same-class and a random other-class partner."""

    def __init__(self, labels: Sequence[int], iterations: int = 20, pairs_per_batch: int = 16, seed: int = 0):
        super().__init__(seed)
        y = np.asarray(list(labels), dtype=np.int64)
        if iterations < 1 or pairs_per_batch < 1:
            raise ValueError(f"PairBatchSampler: need iterations >= 1 and pairs_per_batch >= 1; got {iterations}, {pairs_per_batch}")
        if len(np.unique(y)) < 2:
            raise ValueError("PairBatchSampler: negative pairs need at least 2 classes")
        self.y, self.R, self.per_batch = y, int(iterations), int(pairs_per_batch)

    @property
    def description(self) -> str:
        """One line for the summary and the card (results.json ``training.batch_sampler``)."""
        return (f"{self.per_batch} pairs ({2 * self.per_batch} examples) per batch, {self.R} positive and {self.R} "
                "negative pairs per example per epoch (SetFit's pair sampling)")

    def pairs(self) -> np.ndarray:
        """``[2 R N, 2]`` index pairs of this epoch, positive and negative alternating."""
        rng, n, y = _epoch_rng(self.seed, self.epoch), len(self.y), self.y
        want = self.R * n
        if n * (n + 1) // 2 <= MAX_EXACT_PAIRS:
            i, j = np.triu_indices(n, 0)
            order = rng.permutation(len(i))
            i, j = i[order], j[order]
            same = y[i] == y[j]
            pos, neg = np.stack([i[same], j[same]], 1), np.stack([i[~same], j[~same]], 1)
            pos, neg = np.resize(pos, (want, 2)), np.resize(neg, (want, 2))  # cycle, as SetFit does
        else:
            anchors = np.tile(np.arange(n), self.R)
            by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}
            pos = np.stack([anchors, [rng.choice(by_class[y[a]]) for a in anchors]], 1)
            partner = rng.integers(0, n, size=want)
            while bool((bad := y[partner] == y[anchors]).any()):
                partner[bad] = rng.integers(0, n, size=int(bad.sum()))
            neg = np.stack([anchors, partner], 1)
        out = np.empty((2 * want, 2), dtype=np.int64)
        out[0::2], out[1::2] = pos, neg
        return out

    def __iter__(self) -> Iterator[List[int]]:
        p = self.pairs()
        for s in range(0, len(p), self.per_batch):
            yield p[s:s + self.per_batch].reshape(-1).tolist()

    def __len__(self) -> int:
        return math.ceil(2 * self.R * len(self.y) / self.per_batch)


def _choice(value: str, allowed: Tuple[str, ...], flag: str) -> str:
    if value not in allowed:
        raise ValueError(f"{flag} must be one of {', '.join(allowed)}; got {value!r}")
    return value


@register
class Contrastive(Objective):
    """Contrastive encoder fine-tuning (``supcon``: Khosla et al. 2020; ``pairs``:
    SetFit, Tunstall et al. 2022) replacing the cross-entropy, then a linear head
    fitted on the tuned training features (``logreg`` or ``prototype``). Needs a
    trainable encoder (``--tuning partial`` or ``full``). Options:
    ``--contrastive_loss``, ``--contrastive_temperature`` (supcon tau),
    ``--contrastive_iterations`` (per epoch: pairs R per example / supcon passes),
    ``--contrastive_batch_size`` (texts per step), ``--contrastive_head``.

    Defaults chosen on 20 held-out BANKING77 *train* rows per intent (K = 10, seeds 1-3; never on
    the test split; benchmarks/results/contrastive_iterations{1,2,3}.md and
    contrastive_iterations1_epochs2.md): ``supcon`` makes 1 pass
    over the training set per epoch (3 epochs: 3 passes) and the head is fitted on the tuned
    encoder itself. Dev accuracy (mean of seeds 1-3) for passes per epoch 1 / 2 / 3: 86.39 / 86.13 /
    85.61 without WiSE-FT, 85.74 / 86.00 / 86.02 with WiSE-FT at 0.5 (Wortsman et al., CVPR 2022:
    encoder = 0.5 pretrained + 0.5 tuned; ``--wise_ft_alpha 0.5``, the default from 5 to 3 passes).
    1 pass for 2 epochs: 86.17. WiSE-FT pays only when the encoder is tuned longer. 1 pass takes a
    third of the steps of 3 (39 against 117 at K = 10) and about 45 % of the CPU time of a run."""

    name = "contrastive"
    paper = ("Khosla et al., Supervised Contrastive Learning, NeurIPS 2020; Tunstall et al., "
             "Efficient Few-Shot Learning Without Prompts (SetFit), 2022")
    description = "contrastive encoder tuning (SupCon or SetFit pairs), then a head fitted on the tuned embeddings"
    tags = ("few-shot", "contrastive-learning", "setfit")
    needs_token_inputs = True
    replaces_cross_entropy = True
    trains_classifier = False
    options = ("contrastive_loss", "contrastive_temperature", "contrastive_iterations", "contrastive_batch_size",
               "contrastive_head")

    def __init__(self, setup: ObjectiveSetup):
        super().__init__(setup)
        a = setup.args
        self.loss_name = _choice(getattr(a, "contrastive_loss", "supcon"), LOSSES, "--contrastive_loss")
        self.head = _choice(getattr(a, "contrastive_head", "logreg"), HEADS, "--contrastive_head")
        self.temperature = float(getattr(a, "contrastive_temperature", 0.1))
        if not self.temperature > 0:
            raise ValueError(f"--contrastive_temperature must be > 0; got {self.temperature}")
        it = getattr(a, "contrastive_iterations", None)
        bs = getattr(a, "contrastive_batch_size", None)
        self.iterations = int(it) if it is not None else DEFAULT_ITERATIONS[self.loss_name]
        self.batch_size = int(bs) if bs is not None else DEFAULT_BATCH[self.loss_name]
        if self.iterations < 1:
            raise ValueError(f"--contrastive_iterations must be >= 1; got {self.iterations}")
        if self.batch_size < 2 or (self.loss_name == "pairs" and self.batch_size % 2):
            raise ValueError(f"--contrastive_batch_size must be >= 2 (even for pairs); got {self.batch_size}")
        self.seed = 0

    def batch_sampler(self, labels: Sequence[int], seed: int):
        self.seed = int(seed)
        if self.loss_name == "pairs":
            return PairBatchSampler(labels, self.iterations, self.batch_size // 2, seed=seed)
        return ClassBalancedBatchSampler(labels, self.batch_size, PER_CLASS, self.iterations, seed=seed)

    def settings(self) -> Dict[str, Any]:
        return {"contrastive_iterations": self.iterations, "contrastive_batch_size": self.batch_size}

    def forward(self, step: Step) -> TermOutput:
        f, y = step.source_features, step.labels[: step.n_source]
        if self.loss_name == "pairs":
            loss = cosine_pair_loss(f, y)
            return TermOutput(self.weight * loss, {"pair_mse": loss.detach()})
        loss = supcon_loss(f, y, self.temperature)
        if loss is None:
            return skipped(f, "no two examples of one class in the batch")
        return TermOutput(self.weight * loss, {"supcon": loss.detach()})

    def head_description(self) -> str:
        if self.head == "prototype":
            return ("cosine nearest-centroid head (--contrastive_head prototype): the mean of each class's unit-normalised "
                    "tuned training features, computed after training; nothing in it was trained")
        return ("scikit-learn LogisticRegression (lbfgs, L2, C=1, no cross-validation) fitted after training on the "
                "tuned encoder's features of all training examples (--contrastive_head logreg); "
                "the head itself takes no gradient steps")

    def head_from_features(self, features: Tensor, labels: Tensor, num_classes: int):
        if self.head == "prototype":
            return cosine_prototype_head(features, labels, num_classes)
        from ..training.probe import fit_linear_probe

        # C = 1, no cross-validation: the encoder was tuned on these very rows, so their held-out
        # folds would not be held out from the features (the BANKING77 defaults were chosen so)
        probe = fit_linear_probe(features.float(), labels.tolist(), num_classes, seed=self.seed, cv_folds=0)
        return probe.weight, probe.bias
