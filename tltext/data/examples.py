"""The common container handed from the data layer to the engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional


class DataError(ValueError):
    """Bad input data; the message names the file/column/value and what was expected."""


@dataclass
class Examples:
    """Raw model inputs with raw labels.

    ``inputs``: texts (str), waveforms (1-D float32 numpy at the model's rate) or
    images (PIL). ``labels``: raw label values (str/int) or None when unlabelled.
    ``source``: the file or dataset name, for messages.
    """

    inputs: List[Any]
    labels: Optional[List[Any]]
    source: str
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices) -> "Examples":
        idx = list(indices)
        return Examples(
            [self.inputs[i] for i in idx],
            None if self.labels is None else [self.labels[i] for i in idx],
            self.source,
            dict(self.extra),
        )
