"""How far apart are two domains in a feature space?

Proxy A-distance (Ben-David et al., "Analysis of Representations for Domain
Adaptation", NIPS 2007; "A theory of learning from different domains", MLJ 2010;
used as in Ganin et al., JMLR 2016): train a linear classifier to tell source
features (label 1) from target features (label 0); with err its cross-validated
error on balanced domains,

    d_A = 2 (1 - 2 err),   clipped to [0, 2].

0: the domains cannot be told apart (err = 1/2); 2: perfectly separable (err = 0).

MMD^2: the unbiased multi-kernel estimator of :mod:`tltext.objectives.mmd`
(Gretton et al. 2012; Long et al. 2015), on a subsample of each domain.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch


def _as_numpy(x) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array [n, dim]; got shape {x.shape}")
    return x


def _subsample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, k, replace=False)) if k < n else np.arange(n)


def domain_classifier_error(source, target, folds: int = 5, seed: int = 0,
                            max_per_domain: Optional[int] = 2000, C: float = 1.0) -> Dict[str, float]:
    """Cross-validated error of a linear domain classifier (standardised features,
    L2 logistic regression, stratified ``folds``-fold CV), on ``n`` examples per
    domain with n = min(|S|, |T|, max_per_domain) (balanced by subsampling)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    xs, xt = _as_numpy(source), _as_numpy(target)
    if xs.shape[1] != xt.shape[1]:
        raise ValueError(f"source and target features differ in width: {xs.shape[1]} vs {xt.shape[1]}")
    n = min(len(xs), len(xt), max_per_domain or max(len(xs), len(xt)))
    if n < folds:
        raise ValueError(f"the A-distance needs at least {folds} examples per domain ({folds}-fold CV); got {min(len(xs), len(xt))}")
    rng = np.random.default_rng(seed)
    x = np.concatenate([xs[_subsample(len(xs), n, rng)], xt[_subsample(len(xt), n, rng)]])
    y = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    with threadpool_limits(limits=1):  # small problems: extra BLAS threads only contend (10x slower on a busy host)
        acc = cross_val_score(clf, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), scoring="accuracy")
    return {"error": float(1.0 - acc.mean()), "n_per_domain": int(n), "folds": int(folds)}


def proxy_a_distance(source, target, folds: int = 5, seed: int = 0, max_per_domain: Optional[int] = 2000,
                     C: float = 1.0) -> float:
    """d_A = 2 (1 - 2 err) in [0, 2] (see the module docstring)."""
    err = domain_classifier_error(source, target, folds, seed, max_per_domain, C)["error"]
    return a_distance_from_error(err)


def a_distance_from_error(err: float) -> float:
    return float(np.clip(2.0 * (1.0 - 2.0 * err), 0.0, 2.0))


def mmd2(source, target, max_per_domain: Optional[int] = 1000, seed: int = 0, num_kernels: int = 5) -> float:
    """Unbiased MK-MMD^2 (median-heuristic bandwidths) on at most ``max_per_domain``
    examples of each domain; about 0 for one distribution, > 0 otherwise."""
    from ..objectives.mmd import mk_mmd2

    xs, xt = _as_numpy(source), _as_numpy(target)
    rng = np.random.default_rng(seed)
    if max_per_domain:
        xs = xs[_subsample(len(xs), min(len(xs), max_per_domain), rng)]
        xt = xt[_subsample(len(xt), min(len(xt), max_per_domain), rng)]
    return float(mk_mmd2(torch.from_numpy(xs), torch.from_numpy(xt), num_kernels=num_kernels))


def domain_gap(source, target, seed: int = 0, max_per_domain: int = 2000, mmd_max_per_domain: int = 1000) -> Dict[str, float]:
    """Both measures at once: ``{"a_distance", "domain_classifier_error", "n_per_domain", "mmd2"}``."""
    e = domain_classifier_error(source, target, seed=seed, max_per_domain=max_per_domain)
    return {"a_distance": a_distance_from_error(e["error"]), "domain_classifier_error": e["error"],
            "n_per_domain": e["n_per_domain"], "mmd2": mmd2(source, target, mmd_max_per_domain, seed)}
