"""What trains: frozen (probe), partial (top-k groups, LLRD, gradual), full.

Layer-wise LR decay (Howard & Ruder 2018; Clark et al. 2020): with layer groups
ordered bottom -> top, group i from the top (i = 0 is the top) gets lr * g^i.
Gradual unfreezing (ULMFiT): epoch e trains the head and the top e + 1 groups
(capped at k for ``partial``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from torch import nn

from ..backbones import Backbone, LayerGroup

_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight", "ln.weight", "bn", "class_token", "pos_embedding")


def _split_decay(named: Sequence[tuple]) -> tuple:
    decay, no_decay = [], []
    for n, p in named:
        (no_decay if any(k in n for k in _NO_DECAY) or p.ndim <= 1 else decay).append(p)
    return decay, no_decay


@dataclass
class TuningPlan:
    """Which backbone groups train (per epoch) and the optimizer's parameter groups."""

    tuning: str
    groups: List[LayerGroup]
    trainable_top: int  # groups from the top that eventually train
    gradual: bool
    param_groups: List[Dict] = field(default_factory=list)
    always_frozen: set = field(default_factory=set)

    @property
    def encoder_trains(self) -> bool:
        return self.trainable_top > 0

    def active_top(self, epoch: int) -> int:
        if not self.gradual:
            return self.trainable_top
        return min(self.trainable_top, epoch + 1)

    def apply_epoch(self, epoch: int) -> bool:
        """Set ``requires_grad`` for ``epoch``; True if the trainable set changed."""
        k = self.active_top(epoch)
        n = len(self.groups)
        changed = False
        for i, g in enumerate(self.groups):
            on = i >= n - k
            for p in g.params:
                want = on and id(p) not in self.always_frozen
                if p.requires_grad != want:
                    p.requires_grad_(want)
                    changed = True
        return changed


def plan_tuning(backbone: Backbone, head_modules: Sequence[nn.Module], tuning: str, lr: float, head_lr: float,
                weight_decay: float, unfreeze_top_k: int = 2, layerwise_lr_decay: float = 1.0,
                gradual_unfreeze: bool = False, objective_modules: Sequence[nn.Module] = (),
                objective_lr: Optional[float] = None) -> TuningPlan:
    """Freeze the backbone as asked and build AdamW parameter groups: the trained layer
    groups (``lr``, times ``layerwise_lr_decay`` per group below the top), ``head_modules``
    (``head_lr``, group "head") and ``objective_modules``, the objective's own randomly
    initialised parts such as DANN's discriminator (``objective_lr``, default ``head_lr``,
    group "objective")."""
    groups = backbone.layer_groups()
    n = len(groups)
    if tuning == "frozen":
        k = 0
    elif tuning == "full":
        k = n
    elif tuning == "partial":
        if not 1 <= unfreeze_top_k <= n:
            names = ", ".join(g.name for g in groups)
            raise ValueError(f"--unfreeze_top_k {unfreeze_top_k} is out of range: this backbone has {n} layer groups ({names})")
        k = unfreeze_top_k
    else:
        raise ValueError(f"--tuning must be one of frozen, partial, full; got {tuning!r}")
    if not 0 < layerwise_lr_decay <= 1:
        raise ValueError(f"--layerwise_lr_decay must be in (0, 1], got {layerwise_lr_decay}")

    always_frozen = {id(p) for p in getattr(backbone, "always_frozen", lambda: [])()}
    plan = TuningPlan(tuning, groups, k, gradual_unfreeze and k > 0, always_frozen=always_frozen)
    for p in backbone.parameters():
        p.requires_grad_(False)
    plan.apply_epoch(0)

    names = {id(p): name for name, p in backbone.named_parameters()}
    param_groups: List[Dict] = []
    for depth, g in enumerate(reversed(groups)):  # depth 0 = top group
        if depth >= k:
            break
        params = [(names.get(id(p), ""), p) for p in g.params if id(p) not in always_frozen]
        decay, no_decay = _split_decay(params)
        glr = lr * layerwise_lr_decay ** depth
        for ps, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if ps:
                param_groups.append({"params": ps, "lr": glr, "weight_decay": wd, "name": g.name})
    for name, modules, glr in (("head", head_modules, head_lr),
                               ("objective", objective_modules, head_lr if objective_lr is None else objective_lr)):
        named = [(n_, p) for m in modules for n_, p in m.named_parameters() if p.requires_grad]
        decay, no_decay = _split_decay(named)
        for ps, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if ps:
                param_groups.append({"params": ps, "lr": glr, "weight_decay": wd, "name": name})
    plan.param_groups = param_groups
    return plan
