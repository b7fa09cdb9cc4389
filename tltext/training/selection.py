"""Model selection: which epoch's weights a run keeps (``--selection``).

A :class:`Selector` scores the model at the end of every epoch; the engine keeps
the best-scoring state (higher is better) and stops early on it. Criteria (none
reads a target label):

- ``source_validation``: ``--metric_for_best_model`` on the labelled source
  validation split;
- ``information_maximisation``: IM = H(mean_x p(y|x)) - mean_x H(p(y|x)) on the
  unlabelled target (Gomes et al. 2010; SHOT, Liang et al. 2020);
- ``snd``: soft neighborhood density of the target predictions (Saito et al.,
  "Tune it the Right Way", ICCV 2021);
- ``dev``: deep embedded validation, the importance-weighted source validation
  loss with a control variate (You et al., "Towards Accurate Model Selection in
  Deep Unsupervised Domain Adaptation", ICML 2019); the score is ``-risk``;
- ``last``: the last epoch;
- ``--oracle_selection``: the metric on the TARGET test labels (an oracle run,
  labelled so everywhere).

Every criterion is also *recorded* each epoch when its data is there (history keys
in :data:`HISTORY_KEYS`), so runs can be compared after the fact with the oracle.
``record_oracle`` records the target test metric per epoch (``oracle_test_metric``)
WITHOUT selecting on it: the kept epoch is the same as without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn import functional as F

from .predict import Predictor, score

#: criteria computed on the unlabelled target split
NEEDS_TARGET = ("information_maximisation", "snd", "dev")
CRITERIA: Dict[str, str] = {
    "source_validation": "source validation split",
    "information_maximisation": "information maximisation on unlabelled target (no target labels)",
    "snd": "soft neighborhood density of target predictions (Saito et al. 2021; no target labels)",
    "dev": "deep embedded validation: importance-weighted source validation loss (You et al. 2019; no target labels)",
    "last": "last epoch",
}
# criterion -> (history key, sign): the criterion's score of an epoch is sign * history[key]
HISTORY_KEYS: Dict[str, Tuple[str, float]] = {
    "source_validation": ("val_metric", 1.0),
    "information_maximisation": ("target_im", 1.0),
    "snd": ("target_snd", 1.0),
    "dev": ("dev_risk", -1.0),
}
NEEDS_TARGET = ("information_maximisation", "snd", "dev")
SND_TEMPERATURE = 0.05


def information_maximisation(logits: torch.Tensor) -> float:
    """IM of ``[N, C]`` logits: diversity of the mean prediction minus mean entropy (nats)."""
    p = torch.softmax(logits.float(), dim=-1)
    ent = -(p * torch.log(p + 1e-12)).sum(-1).mean()
    pm = p.mean(0)
    div = -(pm * torch.log(pm + 1e-12)).sum()
    return float(div - ent)


def soft_neighborhood_density(logits: torch.Tensor, temperature: float = SND_TEMPERATURE, chunk: int = 1024) -> float:
    """SND of target logits ``[N, C]`` (N >= 2), in nats; higher is better (Saito et al.
    2021, eq. 1-3): ``p_i = softmax(z_i)`` L2-normalised, ``M_ij = <p_i, p_j> / T``
    (``j != i``), ``P_i = softmax_j(M_ij)``, SND = mean_i H(P_i). Dense, confident
    clusters give high entropy over many near neighbours; raises ValueError for N < 2."""
    if logits.dim() != 2 or len(logits) < 2:
        raise ValueError(f"soft_neighborhood_density expects logits [N, C] with N >= 2; got {tuple(logits.shape)}")
    p = F.normalize(torch.softmax(logits.float(), dim=-1), dim=-1)
    total = 0.0
    for s in range(0, len(p), chunk):
        m = p[s:s + chunk] @ p.t() / temperature
        rows = torch.arange(s, min(s + chunk, len(p)))
        m[rows - s, rows] = float("-inf")  # no self-similarity
        logp = torch.log_softmax(m, dim=-1)
        total += float(-(logp.exp() * logp.nan_to_num(neginf=0.0)).sum())
    return total / len(p)


def density_ratios(source: np.ndarray, target: np.ndarray, validation: np.ndarray, seed: int = 0,
                   grid: Sequence[float] = (0.01, 0.1, 1.0, 10.0)) -> np.ndarray:
    """``w(x) = p_t(x) / p_s(x)`` ``[N_v]`` at the validation features (You et al. 2019, eq. 4):
    a domain classifier on source ``[N_s, D]`` vs target ``[N_t, D]`` features,
    ``w = P(t|x) / P(s|x) * N_s / N_t``. The classifier is a scikit-learn logistic
    regression on standardised features, C picked on a stratified 20 % hold-out by
    accuracy (the paper uses an MLP, weight decay picked the same way)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([source, target])
    d = np.r_[np.zeros(len(source)), np.ones(len(target))]
    xa, xb, da, db = train_test_split(x, d, test_size=0.2, stratify=d, random_state=seed)
    fits = [make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(xa, da) for c in grid]
    best = max(fits, key=lambda f: f.score(xb, db))
    pt = np.clip(best.predict_proba(validation)[:, 1], 1e-6, 1 - 1e-6)
    return pt / (1 - pt) * len(source) / len(target)


def deep_embedded_validation(weights: np.ndarray, losses: np.ndarray) -> float:
    """DEV risk (You et al. 2019, Algorithm 1; lower is better) from density ratios
    ``w`` ``[N]`` and per-example validation losses ``l`` ``[N]``:
    ``L = w * l``, ``eta = -Cov(L, w) / Var(w)``, risk = mean(L) + eta * mean(w) - eta
    (eta = 0 when every w is equal)."""
    w, l = np.asarray(weights, float), np.asarray(losses, float)
    if w.shape != l.shape or w.ndim != 1 or len(w) < 2:
        raise ValueError(f"deep_embedded_validation expects weights and losses [N], N >= 2; got {w.shape}, {l.shape}")
    wl = w * l
    var = np.var(w, ddof=1)
    eta = 0.0 if var <= 0 else -np.cov(wl, w, ddof=1)[0, 1] / var
    return float(wl.mean() + eta * w.mean() - eta)


def describe(criterion: str, oracle: bool, record_oracle: bool = False) -> str:
    if oracle:
        return "ORACLE: selected on target test labels"
    note = " (target test metric recorded per epoch, not used for selection)" if record_oracle else ""
    return CRITERIA[criterion] + note


@dataclass
class SelectionData:
    """Splits a selector reads: labelled validation, unlabelled target, labelled test
    (oracle / record_oracle only), and the training split (DEV's source features,
    heads computed from features)."""

    train_inputs: Any = None
    train_labels: Optional[Sequence[int]] = None
    validation_inputs: Any = None
    validation_labels: Optional[Sequence[int]] = None
    target_inputs: Any = None
    test_inputs: Any = None
    test_labels: Optional[Sequence[int]] = None


class Selector:
    """``score(model, epoch) -> {"score": float|None, "val_metric", "target_im", "target_snd",
    "dev_risk", "oracle_test_metric"}`` (each recorded when its data is there; ``dev_risk``,
    which costs a pass over the training split, only under ``--selection dev`` or
    ``record_oracle``, the criterion study).

    ``oracle``: select on the target test metric; ``record_oracle``: only record it.
    Raises ValueError for an unknown ``criterion``."""

    def __init__(self, criterion: str, predictor: Predictor, data: SelectionData, label_names: Sequence[str],
                 metric: str = "accuracy", metrics: Sequence[str] = ("accuracy",), oracle: bool = False,
                 install_head: Optional[Callable[[Any], None]] = None, record_oracle: bool = False, seed: int = 0):
        if criterion not in CRITERIA:
            raise ValueError(f"--selection {criterion!r}: expected one of {', '.join(CRITERIA)}")
        self.criterion, self.predictor, self.data, self.oracle = criterion, predictor, data, oracle
        self.record_oracle, self.seed = record_oracle, seed
        self.label_names, self.metric, self.metrics = list(label_names), metric, tuple(metrics)
        self.install_head = install_head

    @property
    def keeps_best(self) -> bool:
        return self.criterion != "last" or self.oracle

    def _outputs(self, model, inputs, desc: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(features [N, D], logits [N, C])`` in one pass."""
        f = self.predictor.features(model, inputs, desc)
        dev = next(model.parameters()).device
        with torch.no_grad():
            logits = torch.cat([model.classify(f[i:i + 4096].to(dev)).float().cpu() for i in range(0, len(f), 4096)])
        return f, logits

    def score(self, model, epoch: int) -> Dict[str, Any]:
        d = self.data
        scores_test = (self.oracle or self.record_oracle) and d.test_inputs is not None
        if self.install_head is not None and (d.validation_inputs is not None or d.target_inputs is not None
                                              or scores_test):
            self.install_head(model)  # e.g. prototypes: score the model the way it will predict (when anything is scored)
        res: Dict[str, Any] = {}
        val = tgt = None
        if d.validation_inputs is not None:
            val = self._outputs(model, d.validation_inputs, "validate")
            res["val_metric"] = float(score(val[1], d.validation_labels, self.label_names, self.metrics)[self.metric])
        if d.target_inputs is not None:
            tgt = self._outputs(model, d.target_inputs, "target")
            res["target_im"] = information_maximisation(tgt[1])
            if len(tgt[1]) >= 2:
                res["target_snd"] = soft_neighborhood_density(tgt[1])
        wants_dev = self.criterion == "dev" or self.record_oracle  # an extra pass over the training split
        if wants_dev and val is not None and tgt is not None and d.train_inputs is not None and len(val[1]) >= 2 \
                and min(len(d.train_inputs), len(tgt[0])) >= 5:
            src = self.predictor.features(model, d.train_inputs, "dev source")
            w = density_ratios(src.numpy(), tgt[0].numpy(), val[0].numpy(), self.seed)
            losses = F.cross_entropy(val[1], torch.as_tensor(list(d.validation_labels)), reduction="none").numpy()
            res["dev_risk"] = deep_embedded_validation(w, losses)
        if scores_test:
            tm = score(self.predictor.logits(model, d.test_inputs, "oracle"), d.test_labels, self.label_names, self.metrics)
            res["oracle_test_metric"] = float(tm[self.metric])
        res["score"] = self._chosen(res)
        return res

    def _chosen(self, res: Dict[str, Any]) -> Optional[float]:
        if self.oracle and res.get("oracle_test_metric") is not None:
            return res["oracle_test_metric"]
        if self.criterion == "last":
            return None
        key, sign = HISTORY_KEYS[self.criterion]
        return None if res.get(key) is None else sign * res[key]
