"""Typed results of one training run, and what the post-run steps receive.

``RunResult`` is what ``results.json``, the summary, the report and the model card
state; ``as_dict()`` is exactly the JSON written. ``RunArtifacts`` holds the live
objects (model, inputs, logits, predictor) that the report and Hub steps need."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional


@dataclass
class RunResult:
    modality: str
    objective: str
    tuning: str
    base_model: str
    selection: str
    oracle: bool = False
    objective_terms: List[Dict[str, Any]] = field(default_factory=list)
    best_epoch: Optional[int] = None
    label_names: List[str] = field(default_factory=list)
    num_examples: Dict[str, int] = field(default_factory=dict)
    validation: Dict[str, Any] = field(default_factory=dict)
    test: Dict[str, Any] = field(default_factory=dict)
    validation_split: Dict[str, Any] = field(default_factory=dict)
    training: Dict[str, Any] = field(default_factory=dict)  # precision, device, global batch, optimizer steps
    timing: Dict[str, Any] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)
    args: Dict[str, Any] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    num_processes: int = 1
    paths: Dict[str, str] = field(default_factory=dict)
    source_only: Optional[Dict[str, Any]] = None
    test_episodic: Optional[Dict[str, Any]] = None
    errors: List[str] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)  # domain_gap, hub, ... added by post-run steps

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        for k in ("source_only", "test_episodic"):
            if d[k] is None:
                d.pop(k)
        if not d["errors"]:
            d.pop("errors")
        d.update(extra)
        return d


@dataclass
class RunArtifacts:
    """Live objects of a finished run: ``model`` (the trained ``TltextModel``),
    ``inputs`` / ``labels`` per split name (raw items or cached ``[N, H]``
    embeddings; ``raw_inputs``: always the raw items), ``logits`` per scored split, the ``predictor``, the run's argument
    dataclasses, and ``fresh_backbone()`` (the untrained backbone, for 'before'
    pictures)."""

    model: Any
    inputs: Dict[str, Any]
    labels: Dict[str, Any]
    label_names: List[str]
    logits: Dict[str, Any]
    predictor: Any
    model_args: Any
    data_args: Any
    train_args: Any
    is_main_process: bool = True
    raw_inputs: Dict[str, Any] = field(default_factory=dict)
    fresh_backbone: Optional[Callable[[], Any]] = None


CLOSED_FORM_FIT = "full batch (scikit-learn lbfgs); no engine steps"


def fitted_in_closed_form(training: Optional[Dict[str, Any]]) -> bool:
    """Whether results.json ``training`` describes a head fitted in closed form (the linear
    probe): no epochs, no optimiser steps, so no "selected epoch" either."""
    return (training or {}).get("fit") == CLOSED_FORM_FIT

