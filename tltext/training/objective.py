"""One ``nn.Module`` per training step: the model + the run's objective.

Source and target go through the model inside ONE forward (one DDP call); the
objective (``tltext.objectives.ObjectiveSet``) reads the parts it needs from a
lazily computed :class:`tltext.objectives.Step` (features, logits, raw inputs):

    f = adapter(backbone([x_s; x_t]))        f_s = f[:n_s], f_t = f[n_s:]
    L = CE(head(f_s), y_s) + sum_i term_i(f_s, f_t, head, p)

For padding-invariant backbones (text) the backbone runs once per domain, so neither
batch is padded to the other's length.
"""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from ..modeling import TltextModel
from ..objectives import ObjectiveSet, Step


class TrainingModule(nn.Module):
    """``forward(inputs, labels, n_source, n_target, progress) -> {"loss": 0-dim, "logs": {name: float}}``."""

    def __init__(self, model: TltextModel, objective: ObjectiveSet):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, inputs: Dict[str, Any], labels: torch.Tensor, n_source: int, n_target: int,
                progress: float) -> Dict[str, Any]:
        loss, logs = self.objective(Step(self.model, inputs, labels, n_source, n_target, progress))
        return {"loss": loss, "logs": logs}
