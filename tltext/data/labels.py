"""Label maps taken from the training data, and their checked use elsewhere."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from .examples import DataError


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int) or (hasattr(v, "dtype") and "int" in str(getattr(v, "dtype", ""))):
        return "int"
    if isinstance(v, str):
        return "str"
    return type(v).__name__


def build_label_maps(raw: Sequence[Any], source: str, column: str = "label") -> Dict[str, int]:
    """``label2id`` from training labels (sorted; ints sort numerically)."""
    if raw is None or len(raw) == 0:
        raise DataError(f"{source}: no rows with a label in column {column!r}")
    kinds = {_kind(v) for v in raw if v is not None}
    if any(v is None for v in raw):
        i = next(i for i, v in enumerate(raw) if v is None)
        raise DataError(f"{source}: row {i} has an empty label in column {column!r}; expected a class name or id")
    if len(kinds) > 1:
        raise DataError(f"{source}: column {column!r} mixes label types {sorted(kinds)}; expected one type")
    if kinds not in ({"int"}, {"str"}, {"bool"}):
        raise DataError(f"{source}: column {column!r} holds {sorted(kinds)} values; expected class names (str) or ids (int)")
    values = sorted({int(v) if _kind(v) == "int" else v for v in raw})
    if len(values) < 2:
        raise DataError(f"{source}: column {column!r} has a single class {values[0]!r}; classification needs at least 2")
    return {str(v): i for i, v in enumerate(values)}


def encode_labels(raw: Sequence[Any], label2id: Dict[str, int], source: str, column: str = "label") -> List[int]:
    """Map raw labels to ids; a label unseen in training is an error."""
    out = []
    for i, v in enumerate(raw):
        if v is None:
            raise DataError(f"{source}: row {i} has an empty label in column {column!r}")
        key = str(int(v)) if _kind(v) == "int" else str(v)
        if key not in label2id:
            raise DataError(
                f"{source}: label {v!r} (row {i}, column {column!r}) was not seen in training; known labels: {sorted(label2id)[:20]}"
            )
        out.append(label2id[key])
    return out
