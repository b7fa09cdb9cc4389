"""The objective plug-in interface: what one training step minimises.

An objective is a small ``nn.Module`` (parts injected, as in TLlib's loss modules)
in its own file under ``tltext/objectives/``, named after its paper, that registers
itself with ``@register``. It declares what it needs (``needs_target``,
``needs_token_inputs``, ...) and computes its term from a :class:`Step`:

    loss = ce_weight * CE(head(f_s), y_s)  +  sum_i term_i(step)

where CE is left out when a term ``replaces_cross_entropy`` (prototypes,
contrastive). Each term applies its own weight and schedule (so DANN can put its
coefficient into the gradient reversal instead of scaling the loss) and returns the
values it wants logged. The engine, the experiment, the model card and the CLI only
ask the registry (``tltext.objectives``); none of them compares objective names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass
class ObjectiveSetup:
    """What an objective is built from.

    ``feature_dim``: width of the adapter-space features ``f`` it sees;
    ``num_classes``: label count; ``weight``: the term's weight (``name:w`` in
    ``--objective``, else ``--da_weight``, else the objective's ``default_weight``);
    ``args``: the run's ``ModelArguments`` (options an objective reads are listed in
    its ``options``); ``model``: the ``TltextModel`` being trained (for objectives that
    need its backbone, e.g. a tokenizer or an encoder-tied head)."""

    feature_dim: int
    num_classes: int
    weight: float = 1.0
    tuning: str = "full"
    modality: str = "text"
    args: Any = None
    model: Any = None


class Step:
    """The parts of one training step, computed on first use (inside the one DDP forward).

    ``labels``: ``[n_s]`` source labels; ``progress`` in ``[0, 1]`` (step / total
    steps, survives resume); ``source_features`` ``[n_s, D]`` and ``target_features``
    ``[n_t, D]``: adapter outputs ``f = adapter(backbone(x))``; ``source_logits`` /
    ``target_logits``: ``head(f)`` ``[n, C]``. ``source_inputs`` / ``target_inputs``:
    the collated backbone inputs (token ids, waveforms) or None when the encoder is
    frozen and embeddings are cached."""

    def __init__(self, model: nn.Module, inputs: Dict[str, Any], labels: Tensor, n_source: int, n_target: int,
                 progress: float):
        self.model, self.inputs, self.labels = model, inputs, labels
        self.n_source, self.n_target, self.progress = int(n_source), int(n_target), float(progress)
        self._feats: Optional[Tensor] = None
        self._part_feats: Dict[int, Tensor] = {}
        self._logits: Dict[str, Tensor] = {}

    @property
    def cached(self) -> bool:
        return "embeddings" in self.inputs

    @property
    def source_inputs(self) -> Optional[Dict[str, Tensor]]:
        if "parts" in self.inputs:
            return self.inputs["parts"][0]
        return None if self.cached or self.has_target else self.inputs

    @property
    def target_inputs(self) -> Optional[Dict[str, Tensor]]:
        if "parts" in self.inputs and len(self.inputs["parts"]) > 1:
            return self.inputs["parts"][1]
        return None

    @property
    def has_target(self) -> bool:
        return self.n_target > 0

    def _part_features(self, i: int) -> Tensor:
        """Features of collated part ``i`` (0 source, 1 target), encoded on first use, so a
        step that needs only the source features never runs the target pass."""
        if i not in self._part_feats:
            m = self.model
            self._part_feats[i] = m.features(m.encode(**self.inputs["parts"][i]))
        return self._part_feats[i]

    @property
    def features(self) -> Tensor:
        """``[n_s + n_t, D]``: source rows first."""
        if self._feats is None:
            m, inp = self.model, self.inputs
            if "parts" in inp:  # each domain collated apart (padding-invariant backbones)
                self._feats = torch.cat([self._part_features(i) for i in range(len(inp["parts"]))])
            else:
                self._feats = m.features(inp["embeddings"] if "embeddings" in inp else m.encode(**inp))
        return self._feats

    @property
    def source_features(self) -> Tensor:
        if self._feats is None and "parts" in self.inputs:
            return self._part_features(0)
        return self.features[: self.n_source]

    @property
    def target_features(self) -> Tensor:
        if self._feats is None and len(self.inputs.get("parts", ())) > 1:
            return self._part_features(1)
        return self.features[self.n_source:]

    def logits(self, domain: str) -> Tensor:
        if domain not in self._logits:
            f = self.source_features if domain == "source" else self.target_features
            self._logits[domain] = self.model.classify(f)
        return self._logits[domain]

    @property
    def source_logits(self) -> Tensor:
        return self.logits("source")

    @property
    def target_logits(self) -> Tensor:
        return self.logits("target")


@dataclass
class TermOutput:
    """``loss``: the weighted term to add (0-dim); ``logs``: detached values to log
    (keys are prefixed with the objective's name in the history)."""

    loss: Tensor
    logs: Dict[str, Any] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class of every objective (see the module docstring).

    Class attributes an objective sets:

    - ``name`` (the ``--objective`` value), ``paper`` (citation), ``description``
      (one line for the model card and ``--help``), ``tags`` (Hub tags);
    - ``needs_target``: trains on unlabelled target batches (``--target_file``);
    - ``needs_target_logits``: uses the head on target features (CDAN, MCC);
    - ``needs_token_inputs``: needs raw backbone inputs, so a trainable encoder
      (not ``--tuning frozen``, whose embeddings are cached);
    - ``replaces_cross_entropy``: the source CE is not added (prototypes,
      contrastive); ``trains_classifier``: whether the linear head is trained;
    - ``frozen_adapter_dim``: default adapter width under ``--tuning frozen``;
    - ``default_weight``; ``tuning_weights``: ``{tuning: weight}``, the default under those
      ``--tuning`` values where it differs from ``default_weight`` (a ``"modality/tuning"`` key,
      e.g. ``"text/full"``, applies to that modality only and wins); ``options``: the
      ``ModelArguments`` fields it reads;
    - ``lp_ft_head``: on a trainable encoder the run starts its head from the linear probe
      (LP-FT) at the encoder's rate, and partial tuning keeps 5e-5 with no adapter: for terms
      that read the head's predictions on target batches from the first step (self-training,
      CDAN, MCC) or that were measured that way (MLM, SimCSE). False: the run takes
      source-only's recipe for the tuning (the adapter and random head of partial tuning, the
      random head of full fine-tuning, their learning rates);
    - ``adds_term``: False only for plain cross-entropy (ERM), which lets a frozen
      encoder's head be fitted to convergence as a linear probe;
    - ``modalities``: the backbones it applies to (masked-token objectives: text only);
    - ``pretraining_recipe``: set by label-free pretraining objectives that train no
      classifier: the recipe to run them with (the classification recipes refuse them);
    - ``target_batches``: False for a ``needs_target`` term that reads the target only after
      training (``adapt_head``): the engine then draws no target batches.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    description: ClassVar[str] = ""
    tags: ClassVar[Tuple[str, ...]] = ()
    needs_target: ClassVar[bool] = False
    needs_target_logits: ClassVar[bool] = False
    needs_token_inputs: ClassVar[bool] = False
    replaces_cross_entropy: ClassVar[bool] = False
    trains_classifier: ClassVar[bool] = True
    frozen_adapter_dim: ClassVar[int] = 0
    default_weight: ClassVar[float] = 1.0
    tuning_weights: ClassVar[Dict[str, float]] = {}
    lp_ft_head: ClassVar[bool] = False
    options: ClassVar[Tuple[str, ...]] = ()
    adds_term: ClassVar[bool] = True
    modalities: ClassVar[Tuple[str, ...]] = ("text", "speech", "image")
    pretraining_recipe: ClassVar[Optional[str]] = None
    target_batches: ClassVar[bool] = True

    def __init__(self, setup: ObjectiveSetup):
        super().__init__()
        self.setup = setup
        self.weight = float(setup.weight)

    def coefficient(self, progress: float) -> float:
        """The term's weight at training progress ``p`` in [0, 1] (constant by default)."""
        return self.weight

    def forward(self, step: Step) -> TermOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    # optional hooks ------------------------------------------------------------
    def batch_sampler(self, labels: Sequence[int], seed: int):
        """A ``batch_sampler`` for the source loader (episodes), or None for the default."""
        return None

    def settings(self) -> Dict[str, Any]:
        """``{option: value}``: the values this term ran with for those of its ``options`` whose
        flag was left unset (None) and that it resolved itself (results.json ``objective_terms``,
        the card and the summary show them instead of the unset flag). Default: none."""
        return {}

    def head_from_features(self, features: Tensor, labels: Tensor, num_classes: int) -> Optional[Tuple[Tensor, Tensor]]:
        """A linear head ``(W [C, D], b [C])`` computed from all training features after
        training (and before each validation), or None to keep the trained head."""
        return None

    def adapt_head(self, weight: Tensor, bias: Tensor, source: Tensor, target: Tensor) -> Optional[Tuple[Tensor, Tensor]]:
        """After training (and after any ``head_from_features``): the linear head ``(W [C, D],
        b [C])`` re-expressed for the target domain from the features it reads on the source
        training set ``[N_s, D]`` and on the unlabelled target set ``[N_t, D]``, or None to keep it."""
        return None

    def adaptation_description(self, n_source: int, n_target: int) -> str:
        """One line saying how ``adapt_head`` changed the head (results.json ``training.head_adaptation``)."""
        return f"the head re-expressed for the target domain ({self.name})"

    def head_description(self) -> str:
        """One line saying how ``head_from_features`` computes the head (results.json
        ``training.head``, the summary and the card); for objectives that define it."""
        return f"computed from the training features after training ({self.name})"

    @classmethod
    def applied_options(cls, args: Any) -> Tuple[str, ...]:
        """The ``options`` that change a run with these ``ModelArguments`` (default: all
        of them; an objective drops those its other settings make irrelevant)."""
        return cls.options

    @classmethod
    def check(cls, tuning: str, has_target: bool, modality: Optional[str] = None) -> Optional[str]:
        """A one-line error for flags this objective cannot run with, else None."""
        if modality is not None and modality not in cls.modalities:
            return (f"--objective {cls.name} is for {'/'.join(cls.modalities)} models; this is a {modality} run "
                    f"(see --help for the objectives of each modality)")
        if cls.needs_target and not has_target:
            return f"--objective {cls.name} needs --target_file (unlabelled target-domain data)"
        if cls.needs_token_inputs and tuning == "frozen":
            return f"--objective {cls.name} trains the encoder on raw inputs; use --tuning partial or full"
        return None


def zero_like(t: Tensor) -> Tensor:
    return t.new_zeros(()).float()


def skipped(t: Tensor, reason: str) -> TermOutput:
    """A term skipped for this step (a degenerate batch); logged as ``skipped = 1``."""
    return TermOutput(zero_like(t), {"skipped": 1.0})


def cross_entropy(logits: Tensor, labels: Tensor, class_weights: Optional[Tensor] = None) -> Tensor:
    return F.cross_entropy(logits.float(), labels, weight=class_weights)


def as_float(v: Any) -> float:
    return float(v.detach()) if torch.is_tensor(v) else float(v)


def entropy(p: Tensor) -> Tensor:
    """Row entropies ``H(p_i) = -sum_c p_ic log p_ic`` of ``[N, C]`` probabilities -> ``[N]``."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


__all__ = ["ObjectiveSetup", "Step", "TermOutput", "Objective", "skipped", "cross_entropy", "entropy", "as_float", "List"]
