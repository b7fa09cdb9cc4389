"""Self-training on confident, class-balanced pseudo-labels of the target.

Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep
Neural Networks", ICML 2013 Workshop on Challenges in Representation Learning
(pseudo-labels = the model's own argmax, weight ramped up from 0, eq. 15-16);
confidence threshold as in Sohn et al., "FixMatch", NeurIPS 2020 (eq. 4, tau = 0.95
there, 0.9 here); class balance as in Zou et al., "Unsupervised Domain Adaptation
for Semantic Segmentation via Class-Balanced Self-Training", ECCV 2018; the mean
teacher (``--self_training_teacher ema``): Tarvainen & Valpola, "Mean teachers are
better role models", NeurIPS 2017 (eq. 1, the EMA of the student's weights), used for
domain adaptation by French et al., "Self-ensembling for visual domain adaptation",
ICLR 2018 (teacher without dropout, confidence threshold, class balance).

On a target batch of student logits ``z`` ``[B, C]`` (the training forward, with
dropout) and teacher logits ``z'`` from ``--self_training_teacher``:

- ``student`` (default): ``z' = z`` detached (Lee 2013: the model's own training logits);
- ``clean``: the same model without dropout, no gradient (Xie et al., "Self-training
  with Noisy Student", CVPR 2020: the teacher labels un-noised, the student learns
  under noise; dropout is the noise);
- ``ema``: a mean teacher, a copy of the model whose weights follow
  ``theta' <- d * theta' + (1 - d) * theta`` after every step
  (``d`` = ``--self_training_ema_decay``), without dropout, no gradient;

    p_i = softmax(z'_i),  y^_i = argmax_c p_ic,  kept: K = {i : max_c p_ic > tau}
    n_c = |{i in K : y^_i = c}|,  classes present: P = {c : n_c > 0}
    L_ST = 1/|P| * sum_{c in P} 1/n_c * sum_{i in K, y^_i = c} CE(z_i, y^_i)
    term = w(p) * L_ST,  w(p) = weight * min(1, p / warmup)   (p: training progress)

so each pseudo-class present in the batch counts equally, whatever its count (a
per-sample weight inversely proportional to n_c). ``tau`` is
``--self_training_threshold`` (0.9; 1.0 keeps nothing), ``warmup``
``--self_training_warmup`` (0.3 of training). A step that keeps no pseudo-label
adds 0 and logs ``kept = 0``; the engine averages the logged ``self_training/kept``
(pseudo-labels kept per step) over each epoch, so an epoch mean of 0 flags a run
whose threshold never fired.

``clean`` costs one extra no-gradient forward of the target batch per step (Amazon,
full tuning, length 128, on a shared 2-core CPU: roughly +30 % training time over
``student``). The EMA teacher is a copy of the model made at the first target step
(after the head's initialisation), kept outside the module tree (not trained, not in
the optimizer or DDP, not saved in checkpoints: a resumed run starts it again from
the student); it costs the same extra forward and one copy of the model's weights.
The objective also warns once (``warnings.warn``) when no pseudo-label has been kept
by the end of the warm-up (or half of training, if later): from then on the term
would add nothing.
"""
from __future__ import annotations

import copy
import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

from . import register
from .base import Objective, ObjectiveSetup, Step, TermOutput, skipped

THRESHOLD = 0.9
WARMUP = 0.3
TEACHERS = ("student", "clean", "ema")
EMA_DECAY = 0.99


def pseudo_labels(logits: Tensor, threshold: float) -> Tuple[Tensor, Tensor]:
    """``(labels [B], kept [B] bool)``: the argmax of ``softmax(logits)`` (no gradient)
    and whether its probability is strictly above ``threshold``."""
    with torch.no_grad():
        conf, labels = torch.softmax(logits.detach().float(), dim=-1).max(dim=-1)
    return labels, conf > threshold


def class_balanced_weights(labels: Tensor, num_classes: int) -> Tensor:
    """Per-sample weights ``[N]`` ``1 / (|P| * n_{y_i})``, summing to 1: each class
    present among ``labels`` ``[N]`` gets total weight ``1/|P|``. Empty in, empty out."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    present = (counts > 0).sum().clamp_min(1)
    return 1.0 / (present * counts[labels])


def self_training_loss(logits: Tensor, threshold: float = THRESHOLD,
                       teacher_logits: Optional[Tensor] = None) -> Tuple[Tensor, int]:
    """``(L_ST (0-dim), number kept)`` for student target logits ``[B, C]`` (module
    docstring), pseudo-labelled by ``teacher_logits`` ``[B, C]`` (default: ``logits``
    themselves). ``L_ST`` is 0 (with a zero gradient) when nothing is kept. Raises
    ValueError on logits that are not ``[B, C >= 2]`` or teacher logits of another shape."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"self_training_loss expects logits [B, C] with C >= 2; got {tuple(logits.shape)}")
    if teacher_logits is not None and teacher_logits.shape != logits.shape:
        raise ValueError(f"self_training_loss: teacher logits {tuple(teacher_logits.shape)} do not match the "
                         f"student's {tuple(logits.shape)}")
    labels, kept = pseudo_labels(logits if teacher_logits is None else teacher_logits, threshold)
    n = int(kept.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    y = labels[kept]
    ce = F.cross_entropy(logits[kept].float(), y, reduction="none")
    return (class_balanced_weights(y, logits.shape[1]) * ce).sum(), n


def _option(args, name: str, default: float, low: float, high: float) -> float:
    v = getattr(args, name, None) if args is not None else None
    v = default if v is None else float(v)
    if not low <= v <= high:
        raise ValueError(f"--{name} {v}: expected a value in [{low}, {high}]")
    return v


class MeanTeacher:
    """An exponential moving average of a model's weights (Tarvainen & Valpola 2017,
    eq. 1): ``theta' <- d * theta' + (1 - d) * theta`` per :meth:`update`, buffers
    copied. A plain attribute of the objective, not a submodule, so it is not trained,
    not wrapped by DDP and not saved; every process holds the same copy because the
    student's weights are synchronised."""

    def __init__(self, student: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.model = copy.deepcopy(student).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, student: torch.nn.Module) -> None:
        for t, s in zip(self.model.parameters(), student.parameters()):
            if s.requires_grad:
                t.lerp_(s.detach().to(t.dtype), 1.0 - self.decay)
        for t, s in zip(self.model.buffers(), student.buffers()):
            t.copy_(s)

    def target_logits(self, step: Step) -> Tensor:
        """``[n_t, C]``: the teacher's logits on the step's target rows (no dropout)."""
        return clean_target_logits(self.model, step)


@torch.no_grad()
def clean_target_logits(model: torch.nn.Module, step: Step) -> Tensor:
    """``[n_t, C]`` float32: ``model``'s logits on the step's target rows in eval mode
    (no dropout) and without gradient; the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        inp = step.inputs
        if "parts" in inp:
            feats = model.features(model.encode(**inp["parts"][1]))
        elif "embeddings" in inp:
            feats = model.features(inp["embeddings"][step.n_source:])
        else:  # source and target collated together
            feats = model.features(model.encode(**inp))[step.n_source:]
        return model.classify(feats).float()
    finally:
        model.train(was_training)


@register
class SelfTraining(Objective):
    """CE + w(p) * L_ST on the target batch (module docstring). Logs ``kept``
    (pseudo-labels kept in the batch), ``kept_fraction`` and ``pseudo_loss``
    (L_ST before its weight)."""

    name = "self_training"
    paper = ("Lee, Pseudo-Label, ICML 2013 WREPL; class balance: Zou et al., Class-Balanced Self-Training, "
             "ECCV 2018")
    description = "cross-entropy on confident, class-balanced pseudo-labels of the target (weight ramped up)"
    tags = ("domain-adaptation", "self-training", "pseudo-labels")
    needs_target = True
    lp_ft_head = True
    needs_target_logits = True
    frozen_adapter_dim = 256
    options = ("da_weight", "self_training_threshold", "self_training_warmup", "self_training_teacher",
               "self_training_ema_decay")

    def __init__(self, setup: ObjectiveSetup):
        super().__init__(setup)
        self.threshold = _option(setup.args, "self_training_threshold", THRESHOLD, 0.0, 1.0)
        self.warmup = _option(setup.args, "self_training_warmup", WARMUP, 0.0, 1.0)
        self.ema_decay = _option(setup.args, "self_training_ema_decay", EMA_DECAY, 0.0, 1.0)
        self.teacher_kind = getattr(setup.args, "self_training_teacher", None) or TEACHERS[0]
        if self.teacher_kind not in TEACHERS:
            raise ValueError(f"--self_training_teacher {self.teacher_kind!r}: expected one of {', '.join(TEACHERS)}")
        self.__dict__["teacher"] = None  # a MeanTeacher, made at the first target step; not a submodule
        self.kept_total, self._warned = 0, False

    @classmethod
    def applied_options(cls, args) -> Tuple[str, ...]:
        """``--self_training_ema_decay`` only with the ``ema`` teacher."""
        teacher = getattr(args, "self_training_teacher", None) or TEACHERS[0]
        return tuple(o for o in cls.options if o != "self_training_ema_decay" or teacher == "ema")

    def _teacher_logits(self, step: Step) -> Optional[Tensor]:
        if self.teacher_kind == "student":
            return None
        if self.teacher_kind == "clean":
            return clean_target_logits(step.model, step)
        if self.teacher is None:
            self.__dict__["teacher"] = MeanTeacher(step.model, self.ema_decay)
            if step.progress > 0:  # a resumed run: the teacher is not in the checkpoint
                warnings.warn(f"self_training: the EMA teacher starts again from the model at {step.progress:.0%} of "
                              "training (it is not saved in checkpoints), so this resumed run is not bit for bit "
                              "the uninterrupted one")
        else:
            self.teacher.update(step.model)
        return self.teacher.target_logits(step)

    def coefficient(self, progress: float) -> float:
        """``weight * min(1, p / warmup)`` (``weight`` from the start when warmup = 0)."""
        p = min(max(float(progress), 0.0), 1.0)
        return self.weight if self.warmup == 0.0 else self.weight * min(1.0, p / self.warmup)

    def forward(self, step: Step) -> TermOutput:
        if step.n_target < 1:
            return skipped(step.labels, "an empty target batch")
        logits = step.target_logits
        loss, kept = self_training_loss(logits, self.threshold, self._teacher_logits(step))
        self.kept_total += kept
        if not self._warned and self.kept_total == 0 and step.progress >= max(self.warmup, 0.5):
            self._warned = True
            warnings.warn(f"self_training: no target pseudo-label above --self_training_threshold {self.threshold} "
                          f"in the first {step.progress:.0%} of training; the term adds nothing (lower the threshold)")
        logs = {"kept": float(kept), "kept_fraction": kept / step.n_target, "pseudo_loss": loss.detach()}
        return TermOutput(self.coefficient(step.progress) * loss, logs)
