"""Model selection: which epoch's weights a run keeps (``--selection``).

A :class:`Selector` scores the model at the end of every epoch; the engine keeps
the best-scoring state (higher is better) and stops early on it. Criteria:

- ``source_validation``: ``--metric_for_best_model`` on the labelled source
  validation split (no target labels);
- ``information_maximisation``: IM = H(mean_x p(y|x)) - mean_x H(p(y|x)) on the
  unlabelled target (Gomes et al. 2010; SHOT, Liang et al. 2020);
- ``last``: the last epoch;
- ``--oracle_selection``: the metric on the TARGET test labels (an oracle run,
  labelled so everywhere).

Every criterion is also *recorded* each epoch when its data is there, so runs can
be compared after the fact with the oracle (``history``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from .predict import Predictor, score

CRITERIA: Dict[str, str] = {
    "source_validation": "source validation split",
    "information_maximisation": "information maximisation on unlabelled target (no target labels)",
    "last": "last epoch",
}


def information_maximisation(logits: torch.Tensor) -> float:
    """IM of ``[N, C]`` logits: diversity of the mean prediction minus mean entropy."""
    p = torch.softmax(logits.float(), dim=-1)
    ent = -(p * torch.log(p + 1e-12)).sum(-1).mean()
    pm = p.mean(0)
    div = -(pm * torch.log(pm + 1e-12)).sum()
    return float(div - ent)


def describe(criterion: str, oracle: bool) -> str:
    if oracle:
        return "ORACLE: selected on target test labels"
    return CRITERIA[criterion]


@dataclass
class SelectionData:
    """Splits a selector reads: labelled validation, unlabelled target, labelled test
    (oracle only), and the training split (for heads computed from features)."""

    train_inputs: Any = None
    train_labels: Optional[Sequence[int]] = None
    validation_inputs: Any = None
    validation_labels: Optional[Sequence[int]] = None
    target_inputs: Any = None
    test_inputs: Any = None
    test_labels: Optional[Sequence[int]] = None


class Selector:
    """``score(model, epoch) -> {"score": float|None, "val_metric": ..., "target_im": ...}``."""

    def __init__(self, criterion: str, predictor: Predictor, data: SelectionData, label_names: Sequence[str],
                 metric: str = "accuracy", metrics: Sequence[str] = ("accuracy",), oracle: bool = False,
                 install_head: Optional[Callable[[Any], None]] = None):
        if criterion not in CRITERIA:
            raise ValueError(f"--selection {criterion!r}: expected one of {', '.join(CRITERIA)}")
        self.criterion, self.predictor, self.data, self.oracle = criterion, predictor, data, oracle
        self.label_names, self.metric, self.metrics = list(label_names), metric, tuple(metrics)
        self.install_head = install_head

    @property
    def keeps_best(self) -> bool:
        return self.criterion != "last" or self.oracle

    def score(self, model, epoch: int) -> Dict[str, Any]:
        d = self.data
        if self.install_head is not None:  # e.g. prototypes: score the model the way it will predict
            self.install_head(model)
        res: Dict[str, Any] = {}
        chosen = None
        if d.validation_inputs is not None:
            vm = score(self.predictor.logits(model, d.validation_inputs, "validate"), d.validation_labels,
                       self.label_names, self.metrics)
            res["val_metric"] = float(vm[self.metric])
            if self.criterion == "source_validation":
                chosen = res["val_metric"]
        if d.target_inputs is not None and self.criterion == "information_maximisation":
            res["target_im"] = information_maximisation(self.predictor.logits(model, d.target_inputs, "target"))
            chosen = res["target_im"]
        if self.oracle and d.test_inputs is not None:
            tm = score(self.predictor.logits(model, d.test_inputs, "oracle"), d.test_labels, self.label_names, self.metrics)
            res["oracle_test_metric"] = float(tm[self.metric])
            chosen = res["oracle_test_metric"]
        if self.criterion == "last" and not self.oracle:
            chosen = None
        res["score"] = chosen
        return res
