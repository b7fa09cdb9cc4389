"""K-shot training subsets: K examples per class, stratified and seeded."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .examples import DataError


def _sort_key(v: Any):
    return (type(v).__name__, v)


def sample_k_shot(labels: Sequence[Any], k: int, seed: int, allow_fewer: bool = False, source: str = "train",
                  names: Optional[Sequence[str]] = None) -> List[int]:
    """Sorted row indices with ``k`` examples of every class, chosen at random by ``seed``.

    Each class's rows are permuted once (classes in sorted order, one seeded
    generator) and the first ``k`` kept, so for a fixed seed the K-shot sets are
    nested (the 4-shot set is inside the 8-shot set). A class with fewer than
    ``k`` rows is a ``DataError`` unless ``allow_fewer``, which keeps all its rows.
    """
    if int(k) < 1:
        raise DataError(f"{source}: k-shot must be >= 1; got {k}")
    if hasattr(labels, "tolist"):
        labels = labels.tolist()
    by_class: Dict[Any, List[int]] = {}
    for i, v in enumerate(labels):
        if v is None:
            raise DataError(f"{source}: row {i} has an empty label; k-shot sampling needs a label on every row")
        by_class.setdefault(v, []).append(i)
    if not by_class:
        raise DataError(f"{source}: no labelled rows to sample {k} per class from")
    classes = sorted(by_class, key=_sort_key)
    short = [c for c in classes if len(by_class[c]) < k]
    if short and not allow_fewer:
        shown = (lambda c: repr(names[c])) if names is not None else repr  # label ids -> their names
        detail = ", ".join(f"class {shown(c)} has only {len(by_class[c])}" for c in short[:10])
        more = f" (and {len(short) - 10} more classes)" if len(short) > 10 else ""
        raise DataError(
            f"{source}: k={k} examples per class requested, but {detail}{more}; "
            "lower k or pass --allow_fewer_shots to use all of a short class"
        )
    rng = np.random.default_rng(int(seed) % 2**63)
    out: List[int] = []
    for c in classes:
        rows = np.asarray(by_class[c], dtype=np.int64)
        out.extend(int(i) for i in rows[rng.permutation(rows.size)][:k])
    return sorted(out)
