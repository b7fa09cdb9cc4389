"""Text examples from a table: ``--text_column`` and ``--label_column``."""
from __future__ import annotations

from typing import Optional

from .examples import DataError, Examples
from .tables import load_table


def load_text_examples(path: str, text_column: str = "text", label_column: Optional[str] = "label",
                       require_labels: bool = True, split: Optional[str] = None,
                       encoding: Optional[str] = None) -> Examples:
    return examples_from_table(load_table(path, split=split, encoding=encoding), path, text_column, label_column, require_labels)


def examples_from_table(ds, path: str, text_column: str = "text", label_column: Optional[str] = "label",
                        require_labels: bool = True) -> Examples:
    if len(ds) == 0:
        raise DataError(f"{path}: no rows")
    if text_column not in ds.column_names:
        raise DataError(f"{path}: no text column {text_column!r}; columns are {ds.column_names} (set --text_column: one column name for every file)")
    texts = ds[text_column]
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise DataError(f"{path}: row {i} has {'no' if t is None else 'empty' if isinstance(t, str) else type(t).__name__} text in column {text_column!r}; expected a non-empty string")
    labels = None
    if label_column and label_column in ds.column_names:
        labels = ds[label_column]
    elif require_labels:
        raise DataError(f"{path}: no label column {label_column!r}; columns are {ds.column_names} (set --label_column: one column name for every file)")
    return Examples(list(texts), None if labels is None else list(labels), path)
