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


def batch_text(training: Dict[str, Any]) -> str:
    """How results.json ``training`` batched the optimizer steps, for the summary and the card:
    the objective's own sampler (``batch_sampler``: the global batch is then a mean over steps)
    or ``--per_device_train_batch_size`` x processes x ``--gradient_accumulation_steps``."""
    tr = training
    if tr.get("batch_sampler"):
        return (f"global batch {tr.get('global_batch_size')} on average over {tr.get('num_processes')} process(es), "
                f"from the objective's batch sampler ({tr['batch_sampler']}; --per_device_train_batch_size does not "
                f"apply), {tr.get('optimizer_steps')} optimizer steps")
    return (f"global batch {tr.get('global_batch_size')} (per device {tr.get('per_device_train_batch_size')} x "
            f"{tr.get('num_processes')} process(es) x accumulation {tr.get('gradient_accumulation_steps')}), "
            f"{tr.get('optimizer_steps')} optimizer steps")


def wise_ft_text(training: Dict[str, Any]) -> Optional[str]:
    """The WiSE-FT line of the summary and the card (None where WiSE-FT does not apply)."""
    a = training.get("wise_ft_alpha")
    if a is None:
        return None
    if a == 1.0:
        return ("WiSE-FT (Wortsman et al. 2022): off; the head was fitted on the fine-tuned encoder's features "
                "(--wise_ft_alpha 0.5 would interpolate halfway back to the pretrained weights first)")
    return (f"WiSE-FT (Wortsman et al. 2022): the encoder's weights are {1 - a:g} x pretrained + {a:g} x "
            "fine-tuned; the head was fitted on the interpolated features")
