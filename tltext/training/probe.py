"""The linear probe: a frozen encoder's head fitted to convergence.

Over cached embeddings a linear head is a convex problem, so tltext solves it the
way scikit-learn does instead of running SGD epochs: an L2-regularised multinomial
logistic regression (``sklearn.linear_model.LogisticRegression``, lbfgs, to
convergence), with C chosen from ``C_GRID`` on the labelled source validation split
(no target labels). The result does not depend on the batch size or the number of
processes (every process fits the same data deterministically)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass
class ProbeFit:
    """``weight`` ``[C, H]`` and ``bias`` ``[C]`` of the head; the chosen ``C`` and the
    validation score of each C tried (``grid``)."""

    weight: torch.Tensor
    bias: torch.Tensor
    C: float
    grid: Dict[str, float] = field(default_factory=dict)
    max_iter_reached: bool = False
    refit: bool = False


def _fit(x: np.ndarray, y: np.ndarray, C: float, num_classes: int, class_weight, seed: int):
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=5000, class_weight=class_weight, random_state=seed)
    clf.fit(x, y)
    w = np.zeros((num_classes, x.shape[1]), dtype=np.float64)
    b = np.zeros(num_classes, dtype=np.float64)
    if len(clf.classes_) == 2 and clf.coef_.shape[0] == 1:  # binary: softmax([0, z]) = sigmoid(z)
        w[clf.classes_[1]], b[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
    else:
        w[clf.classes_], b[clf.classes_] = clf.coef_, clf.intercept_
        missing = np.setdiff1d(np.arange(num_classes), clf.classes_)
        b[missing] = -1e4  # a class absent from training is never predicted
    return w, b, bool(np.any(clf.n_iter_ >= clf.max_iter))


def fit_linear_probe(x: torch.Tensor, y: Sequence[int], num_classes: int, val_x: Optional[torch.Tensor] = None,
                     val_y: Optional[Sequence[int]] = None, score=None, class_weight: Optional[str] = None,
                     seed: int = 0, grid: Sequence[float] = C_GRID, refit: bool = False) -> ProbeFit:
    """Fit the head on ``x`` ``[N, H]`` / ``y`` ``[N]``; with a validation split, C is the
    grid value whose head scores best by ``score(logits [M, C], val_y) -> float`` (ties:
    the smaller C), else C = 1 (scikit-learn's default). ``refit``: once C is chosen, fit
    again on the training and validation examples together (as ``LogisticRegressionCV``
    refits on all folds), so no labelled example is left unused."""
    xn, yn = x.double().numpy(), np.asarray(y)
    cw = "balanced" if class_weight == "balanced" else None
    results: List = []
    if val_x is None or val_y is None:
        grid = (1.0,)
    for C in grid:
        w, b, capped = _fit(xn, yn, C, num_classes, cw, seed)
        s = None
        if val_x is not None and val_y is not None:
            logits = torch.from_numpy(val_x.double().numpy() @ w.T + b)
            s = float(score(logits, val_y))
        results.append((C, w, b, s, capped))
    best = max(results, key=lambda r: (r[3] if r[3] is not None else 0.0, -r[0]))
    C, w, b, _, capped = best
    if refit and val_x is not None and val_y is not None:  # C chosen: fit on every labelled example
        xa = np.concatenate([xn, val_x.double().numpy()])
        w, b, capped = _fit(xa, np.concatenate([yn, np.asarray(val_y)]), C, num_classes, cw, seed)
    return ProbeFit(torch.tensor(w, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), C,
                    {f"{r[0]:g}": r[3] for r in results if r[3] is not None}, capped,
                    bool(refit and val_x is not None and val_y is not None))
