"""The linear probe: a frozen encoder's head fitted to convergence.

Over cached embeddings a linear head is a convex problem, so tltext solves it the
way scikit-learn does instead of running SGD epochs: an L2-regularised multinomial
logistic regression (``sklearn.linear_model.LogisticRegression``, lbfgs, to
convergence), with C chosen from ``C_GRID`` on a labelled source validation file (no
target labels), or otherwise by stratified k-fold cross-validation on the training
examples, as ``LogisticRegressionCV`` does (the engine pools a validation split it held
out of the training data back into them first, so no labelled example is unused). The result
does not depend on the batch size or the number of processes (every process fits the
same data deterministically)."""
from __future__ import annotations

import warnings
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
    pooled_validation: bool = False  # set by the engine: fitted on training + the held-out validation split
    cv_folds: int = 0  # > 0: C was chosen by stratified cross-validation on the training examples

    @property
    def cv_data(self) -> str:
        """The examples the probe was cross-validated on, and fitted on, in words."""
        return "training + held-out validation" if self.pooled_validation else "the training split"


def _fit(x: np.ndarray, y: np.ndarray, C: float, num_classes: int, class_weight, seed: int):
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) == 1:  # a cross-validation fold of a tiny set may hold one class: predict it
        b = np.full(num_classes, -1e4)
        b[int(y[0])] = 0.0
        return np.zeros((num_classes, x.shape[1])), b, False
    clf = LogisticRegression(C=C, max_iter=5000, class_weight=class_weight, random_state=seed)
    with warnings.catch_warnings():  # y are class ids; on a 1-2-shot fold "more classes than half the samples" is expected
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
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
                     seed: int = 0, grid: Sequence[float] = C_GRID, cv_folds: int = 5) -> ProbeFit:
    """Fit the head on ``x`` ``[N, H]`` / ``y`` ``[N]``; with a validation split, C is the
    grid value whose head scores best by ``score(logits [M, C], val_y) -> float`` (ties:
    the smaller C). Without one, C is chosen by stratified ``min(cv_folds, rarest class
    count)``-fold cross-validation on the training examples (mean ``score``, accuracy when
    ``score`` is None; shuffled by ``seed``) and the head is fitted on all of them, as
    ``sklearn.linear_model.LogisticRegressionCV`` does (the rarest count is taken over the classes
    with at least 2 examples); C = 1 (scikit-learn's default) when ``cv_folds`` < 2 or no class
    has 2 examples."""
    xn, yn = x.double().numpy(), np.asarray(y)
    cw = "balanced" if class_weight == "balanced" else None
    if score is None:
        score = _accuracy
    if val_x is None or val_y is None:
        folds = _cv_folds(yn, cv_folds)
        if folds < 2 or len(grid) < 2:
            w, b, capped = _fit(xn, yn, 1.0, num_classes, cw, seed)
            return ProbeFit(torch.tensor(w, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), 1.0, {}, capped)
        cv = {C: _cv_score(xn, yn, C, num_classes, cw, seed, folds, score) for C in grid}
        C = max(grid, key=lambda c: (cv[c], -c))
        w, b, capped = _fit(xn, yn, C, num_classes, cw, seed)
        return ProbeFit(torch.tensor(w, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), C,
                        {f"{c:g}": v for c, v in cv.items()}, capped, cv_folds=folds)
    results: List = []
    for C in grid:
        w, b, capped = _fit(xn, yn, C, num_classes, cw, seed)
        logits = torch.from_numpy(val_x.double().numpy() @ w.T + b)
        results.append((C, w, b, float(score(logits, val_y)), capped))
    C, w, b, _, capped = max(results, key=lambda r: (r[3], -r[0]))
    return ProbeFit(torch.tensor(w, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), C,
                    {f"{r[0]:g}": r[3] for r in results}, capped)


def _accuracy(logits: torch.Tensor, labels: Sequence[int]) -> float:
    return float((logits.argmax(-1).numpy() == np.asarray(labels)).mean())


def _cv_folds(y: np.ndarray, cv_folds: int) -> int:
    """Folds of the stratified cross-validation: ``min(cv_folds, rarest count among the classes
    with at least 2 examples)``; 0 when no class has 2. A class with a single example stays
    in: in the fold that holds it out the head cannot predict it, the same for every C."""
    counts = np.bincount(y) if len(y) else np.zeros(0, dtype=int)
    several = counts[counts >= 2]
    return int(min(cv_folds, several.min())) if len(several) else 0


def _cv_score(x: np.ndarray, y: np.ndarray, C: float, num_classes: int, class_weight, seed: int, folds: int,
              score) -> float:
    """Mean held-out ``score`` of the C-regularised head over stratified ``folds``-fold CV."""
    from sklearn.model_selection import StratifiedKFold

    scores = []
    with warnings.catch_warnings():  # singleton classes: "The least populated class in y has only 1 members"
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y))
    for tr, va in splits:
        w, b, _ = _fit(x[tr], y[tr], C, num_classes, class_weight, seed)
        scores.append(float(score(torch.from_numpy(x[va] @ w.T + b), y[va].tolist())))
    return float(np.mean(scores))
