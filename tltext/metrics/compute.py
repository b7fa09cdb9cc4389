"""Classification metrics through ``evaluate``, with the common ones bundled so they work offline.

``evaluate.load("accuracy")`` downloads the metric script from the Hugging Face Hub; the bundled
names load the same kind of module from ``modules/<name>/<name>.py`` instead (no network). Any
other name is handed to ``evaluate.load`` unchanged.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence

import numpy as np

MODULE_DIR = Path(__file__).resolve().parent / "modules"
BUNDLED = ("accuracy", "f1", "precision", "recall", "roc_auc", "matthews_correlation", "confusion_matrix")


def load_metric(name: str, config_name: Optional[str] = None):
    """A fresh ``evaluate`` module: bundled names from the local module folder, others from the Hub.

    ``config_name`` picks a configuration (bundled ``roc_auc``: "binary", "multiclass", "multilabel").
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"metric name must be a non-empty string, got {name!r}")
    import evaluate

    if name in BUNDLED:
        return evaluate.load(str(MODULE_DIR / name), config_name, keep_in_memory=True)
    try:
        return evaluate.load(name, config_name, keep_in_memory=True)
    except Exception as e:  # evaluate raises FileNotFoundError, ConnectionError, HTTP errors, ...
        why = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"metric {name!r} is not bundled (bundled: {', '.join(BUNDLED)}) and evaluate.load could "
                         f"not load it from the Hugging Face Hub: {type(e).__name__}: {why}") from e


def check_metric(name: str, flag: str = "--metric") -> None:
    """Raise a one-line ValueError naming ``flag`` when ``name`` is neither bundled nor
    loadable by ``evaluate.load`` (a typo, or a Hub metric offline), before any training."""
    if name in BUNDLED:
        return
    try:
        _module(name)
    except ValueError as e:
        raise ValueError(f"{flag} {name}: {e}") from None


@functools.lru_cache(maxsize=None)
def _module(name: str, config_name: Optional[str] = None):
    """One loaded module per (name, config) per process: ``evaluate.load`` costs far more than ``compute``."""
    return load_metric(name, config_name)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    return v


def _labels(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-D array of class ids, got shape {a.shape}")
    if a.dtype.kind not in "iub":
        raise ValueError(f"{what}: expected integer class ids, got dtype {a.dtype}")
    if a.min() < 0:
        raise ValueError(f"{what}: class id {int(a.min())} is negative; expected ids in 0..C-1")
    return a.astype(np.int64)


def _roc_auc(refs: np.ndarray, probs: np.ndarray) -> Optional[float]:
    """ROC AUC. Binary (C=2): AUC of P(class 1). Multiclass: one-vs-rest macro over the classes present
    in ``refs`` -- mean over present k of AUC([refs == k], probs[:, k]); absent classes are skipped
    (their AUC is undefined), and with all classes present this equals sklearn's ``multi_class="ovr"``.
    None when ``refs`` holds a single class.
    """
    present = np.unique(refs)
    if present.size < 2:
        return None
    if probs.shape[1] == 2:
        return _module("roc_auc", "binary").compute(references=refs, prediction_scores=probs[:, 1])["roc_auc"]
    onehot = (refs[:, None] == present[None, :]).astype(np.int64)
    out = _module("roc_auc", "multilabel").compute(references=onehot, prediction_scores=probs[:, present],
                                                    average="macro")
    return out["roc_auc"]


def compute_metrics(predictions: Sequence[int], references: Sequence[int],
                    probabilities: Optional[Any] = None, label_names: Optional[Sequence[str]] = None,
                    metrics: Iterable[str] = ("accuracy", "f1")) -> Dict[str, Any]:
    """A flat JSON-able dict of classification metrics.

    ``C`` (number of classes) = ``len(label_names)``, else ``probabilities.shape[1]``, else max id + 1.
    "accuracy"; "f1" (macro) + "f1_per_class" ({label name: F1}, None for a class neither true nor
    predicted); "precision"/"recall" (macro); macro averages run over the classes seen in predictions
    or references (sklearn's default) and count 0/0 as 0; "roc_auc" (needs ``probabilities`` [N, C],
    see ``_roc_auc``); "matthews_correlation"; "confusion_matrix" ([C][C], rows = true class, over all
    classes 0..C-1). Any other name is loaded with ``load_metric`` and its result merged in.
    """
    names = [metrics] if isinstance(metrics, str) else list(dict.fromkeys(metrics))
    preds = _labels(predictions, "predictions")
    refs = _labels(references, "references")
    if preds.shape != refs.shape:
        raise ValueError(f"predictions has {preds.size} items but references has {refs.size}; expected the same")
    probs = None
    if probabilities is not None:
        p = probabilities.detach().cpu() if hasattr(probabilities, "detach") else probabilities
        probs = np.asarray(p, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[0] != refs.size or probs.shape[1] < 2:
            raise ValueError(f"probabilities: expected shape [{refs.size}, C>=2], got {probs.shape}")
        if not np.isfinite(probs).all():
            raise ValueError("probabilities: found NaN or inf; expected finite class probabilities")
    if label_names is not None:
        label_names = [str(n) for n in label_names]
        num_classes = len(label_names)
        if probs is not None and probs.shape[1] != num_classes:
            raise ValueError(f"probabilities has {probs.shape[1]} columns but label_names has {num_classes} "
                             "names; expected one column per class")
    else:
        num_classes = probs.shape[1] if probs is not None else int(max(preds.max(), refs.max())) + 1
        label_names = [str(i) for i in range(num_classes)]
    top = int(max(preds.max(), refs.max()))
    if top >= num_classes:
        raise ValueError(f"class id {top} is out of range for {num_classes} classes; expected ids in 0..{num_classes - 1}")

    out: Dict[str, Any] = {}
    seen = np.union1d(preds, refs)
    for name in names:
        if name == "accuracy":
            out.update(_module("accuracy").compute(predictions=preds, references=refs))
        elif name in ("f1", "precision", "recall"):
            m = _module(name)
            out.update(m.compute(predictions=preds, references=refs, average="macro", zero_division=0))
            if name == "f1":
                per = m.compute(predictions=preds, references=refs, labels=list(range(num_classes)),
                                average=None, zero_division=0)["f1"]
                out["f1_per_class"] = {label_names[k]: (float(per[k]) if k in seen else None)
                                       for k in range(num_classes)}
        elif name == "matthews_correlation":
            out.update(_module(name).compute(predictions=preds, references=refs))
        elif name == "confusion_matrix":
            cm = _module(name).compute(predictions=preds, references=refs, labels=list(range(num_classes)))
            out["confusion_matrix"] = cm["confusion_matrix"].tolist()
        elif name == "roc_auc":
            if probs is None:
                raise ValueError("metric 'roc_auc' needs probabilities [N, C]; got probabilities=None")
            out["roc_auc"] = _roc_auc(refs, probs)
        else:
            out.update(_module(name).compute(predictions=preds.tolist(), references=refs.tolist()))
    return _jsonable(out)
