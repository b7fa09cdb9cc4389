"""One experiment from the command line = check flags -> load files -> ``tltext.Trainer``.

Every recipe (text, audio, image) calls ``run_experiment``; nothing here is
modality-specific beyond choosing the loader and the backbone, and nothing here
knows any objective by name (``tltext.objectives`` is asked)."""
from __future__ import annotations

import json
import os
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from . import objectives
from .args import TUNINGS, DataArguments, ModelArguments, TrainArguments
from .atomic import atomic_write_json
from .data import DataError, build_label_maps, encode_labels
from .data.load import load_examples
from .results import batch_text, fitted_in_closed_form, wise_ft_text
from .trainer import Split, Trainer, default_model, make_accelerator, public_args, quiet_progress_bars


# --------------------------------------------------------------------------- checks
def check_args(m: ModelArguments, d: DataArguments, t: TrainArguments, modality: Optional[str] = None) -> None:
    if not t.output_dir:
        raise ValueError("--output_dir is required")
    if m.tuning not in TUNINGS:
        raise ValueError(f"--tuning must be one of {', '.join(TUNINGS)}; got {m.tuning!r}")
    if t.eval_only and not (d.test_file or d.validation_file):
        raise ValueError("--eval_only: nothing to evaluate; pass --test_file and/or --validation_file")
    if not t.eval_only:
        objectives.check(m.objective, m.tuning, bool(d.target_file), modality)
    flag = next((f for f in ("speed_perturbation", "noise_snr_db", "mask_time_prob") if getattr(m, f, None) is not None), None)
    if flag and modality is not None and modality != "speech":
        raise ValueError(f"--{flag} is a speech augmentation; this is a {modality} run")
    if flag and modality == "speech" and m.tuning == "frozen":
        raise ValueError(f"--{flag} has no effect under --tuning frozen (each clip is encoded once, without "
                         "augmentation); use --tuning partial or full")
    check_ranges(m, d, t)
    if d.shots_per_class and d.validation_split_percentage not in (0, 10):  # 10: the default, not asked for
        raise ValueError(f"--validation_split_percentage {d.validation_split_percentage:g} does not apply with "
                         "--shots_per_class: the K-shot support set is not split (a probe chooses C by cross-validation "
                         "on it); pass --validation_file for a separate validation set")
    check_head_flags(m, t)
    if t.class_weights not in (None, "balanced"):
        raise ValueError(f"--class_weights must be 'balanced' (or unset); got {t.class_weights!r}")
    from .training.selection import CRITERIA, NEEDS_TARGET

    if t.selection not in CRITERIA:
        raise ValueError(f"--selection must be one of {', '.join(CRITERIA)}; got {t.selection!r}")
    if t.selection in NEEDS_TARGET and not d.target_file:
        raise ValueError(f"--selection {t.selection} needs --target_file (unlabelled target data)")
    if t.selection == "dev" and not (d.validation_file or d.validation_split_percentage > 0):
        raise ValueError("--selection dev needs a labelled source validation split (--validation_file or "
                         "--validation_split_percentage > 0)")
    if t.record_oracle and not d.test_file:
        raise ValueError("--record_oracle needs a labelled --test_file (the target domain's)")
    if t.oracle_selection and not d.test_file:
        raise ValueError("--oracle_selection needs a labelled --test_file (the target domain's)")
    if t.compare_source_only and not objectives.needs_target(m.objective):
        raise ValueError(f"--compare_source_only compares an adaptation objective with source-only erm; "
                         f"--objective {m.objective} uses no target data")
    if d.shots_per_class is not None and d.shots_per_class <= 0:
        raise ValueError(f"--shots_per_class must be positive; got {d.shots_per_class}")
    bad = [f"--{k} {v}" for k, v in (("n_way", m.n_way), ("k_shot", m.k_shot), ("n_query", m.n_query)) if v is not None and v <= 0]
    if bad:
        raise ValueError(f"{', '.join(bad)}: must be positive (or left unset to derive it from the training labels)")
    if t.push_to_hub and t.eval_only:
        raise ValueError("--push_to_hub does not apply to --eval_only (nothing is trained); push a trained run with "
                         "`tltext push OUT --hub_model_id ID`")
    if t.push_to_hub and not t.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id")
    if t.eval_only and not m.model_name_or_path:
        raise ValueError("--eval_only needs --model_name_or_path pointing at a trained tltext model (OUT/model)")
    from .training.engine import check_checkpoint_args

    check_checkpoint_args(t)
    check_outputs(t)


def check_head_flags(m: ModelArguments, t: TrainArguments) -> None:
    """``--head_init`` and ``--adapter_dim`` together (recipes and the Python ``Trainer``).
    Raises ValueError naming the flag."""
    if t.head_init not in (None, "probe", "random"):
        raise ValueError(f"--head_init must be probe or random; got {t.head_init!r}")
    if t.head_init == "probe" and m.adapter_dim:
        raise ValueError(f"--head_init probe starts a linear head on the pooled embedding from the linear probe; it "
                         f"cannot start the head behind --adapter_dim {m.adapter_dim}: drop one of the two flags")


def check_ranges(m: ModelArguments, d: DataArguments, t: TrainArguments) -> None:
    """Numeric flags outside the range where they mean something: a one-line error naming the flag
    (the recipes and the Python ``Trainer`` both make these checks)."""
    if t.per_device_train_batch_size <= 0 or t.per_device_eval_batch_size <= 0:
        raise ValueError(f"batch sizes must be positive; got --per_device_train_batch_size {t.per_device_train_batch_size}, --per_device_eval_batch_size {t.per_device_eval_batch_size}")
    for flag in ("learning_rate", "head_learning_rate"):
        if getattr(t, flag) is not None and getattr(t, flag) <= 0:
            raise ValueError(f"--{flag} must be positive; got {getattr(t, flag)}")
    if m.adapter_dim is not None and m.adapter_dim < 0:
        raise ValueError(f"--adapter_dim must be >= 0 (0: no adapter); got {m.adapter_dim}")
    if t.wise_ft_alpha is not None and not 0 < t.wise_ft_alpha <= 1:
        raise ValueError(f"--wise_ft_alpha must be in (0, 1] (1: no interpolation); got {t.wise_ft_alpha}")
    if t.num_train_epochs <= 0 and not t.max_train_steps and not t.eval_only:
        raise ValueError(f"--num_train_epochs must be positive; got {t.num_train_epochs}")
    if not 0 <= d.validation_split_percentage < 100:
        raise ValueError(f"--validation_split_percentage must be in [0, 100); got {d.validation_split_percentage}")
    if d.max_train_samples is not None and d.max_train_samples <= 0:
        raise ValueError(f"--max_train_samples must be a positive number of rows (or unset for all); got {d.max_train_samples}")
    if d.max_eval_samples is not None and d.max_eval_samples <= 0:
        raise ValueError(f"--max_eval_samples must be a positive number of rows (or unset for all); got {d.max_eval_samples}")
    if t.gradient_accumulation_steps < 1:
        raise ValueError(f"--gradient_accumulation_steps must be >= 1; got {t.gradient_accumulation_steps}")
    if m.da_weight is not None and m.da_weight < 0:
        raise ValueError(f"--da_weight must be >= 0 (a negative weight reverses the objective); got {m.da_weight}")
    if not 0 <= m.head_dropout < 1:
        raise ValueError(f"--head_dropout is a probability in [0, 1); got {m.head_dropout}")
    for flag, value in (("warmup_ratio", t.warmup_ratio), ("da_warmup_ratio", m.da_warmup_ratio),
                        ("self_training_warmup", m.self_training_warmup),
                        ("self_training_threshold", m.self_training_threshold),
                        ("self_training_ema_decay", m.self_training_ema_decay)):
        if not 0 <= value <= 1:
            raise ValueError(f"--{flag} is a fraction in [0, 1]; got {value}")
    if t.weight_decay < 0:
        raise ValueError(f"--weight_decay must be >= 0; got {t.weight_decay}")


def check_outputs(t: TrainArguments) -> None:
    """What the run writes to or reports through exists and works, before any training:
    the output folder, the metric names, the trackers of ``--report_to``, the Hub token."""
    if os.path.exists(t.output_dir) and not os.path.isdir(t.output_dir):
        raise ValueError(f"--output_dir {t.output_dir}: is a file; expected a folder (new or empty, or "
                         "--overwrite_output_dir)")
    check_metric_names(t)
    check_report_to(t.report_to)
    if t.push_to_hub:
        from .hub import resolve_token

        try:
            resolve_token(t.hub_token)
        except ValueError as e:
            raise ValueError(f"--push_to_hub: {e}") from None


def check_metric_names(t: TrainArguments) -> None:
    """``--metric`` and ``--metric_for_best_model`` load (bundled, or through ``evaluate.load``)."""
    from .metrics import check_metric

    for name in ([t.metric] if isinstance(t.metric, str) else t.metric):
        check_metric(name, "--metric")
    check_metric(t.metric_for_best_model, "--metric_for_best_model")


def check_report_to(value: Optional[str]) -> None:
    """``--report_to``: accelerate tracker names (comma-separated), ``all`` or ``none``;
    each named tracker's package must be installed (accelerate would only warn and log nothing)."""
    if not value or value == "none":
        return
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    known = [str(x.value) for x in LoggerType]
    available = [str(getattr(x, "value", x)) for x in get_available_trackers()]
    names = [n.strip() for n in value.split(",") if n.strip()]
    for n in names:
        if n not in known:
            raise ValueError(f"--report_to {value}: unknown tracker {n!r}; expected none or one of {', '.join(known)}")
        if n == "all" and not available:
            raise ValueError("--report_to all: no tracker package is installed (e.g. pip install tensorboard); "
                             "use --report_to none")
        if n != "all" and n not in available:
            raise ValueError(f"--report_to {n}: the {n} package is not installed (pip install {n}), "
                             "so nothing would be logged; install it or use --report_to none")


def check_pretrained(backbone, m: ModelArguments) -> None:
    """Refuse to freeze random features: ``--tuning frozen/partial`` on a backbone that
    loaded no pretrained weights is an error unless ``--allow_random_weights``."""
    if m.tuning in ("frozen", "partial") and not getattr(backbone, "pretrained_weights_loaded", True) \
            and not m.allow_random_weights:
        what = m.model_config and f"--model_config {m.model_config}" or f"--model_name_or_path {m.model_name_or_path}"
        where = ("--weights_path (a local state dict)" if getattr(backbone, "modality", "") == "image" else
                 "a pretrained checkpoint as --model_name_or_path (a folder, or an earlier run's OUT/model)")
        raise ValueError(f"{what}: no pretrained weights were loaded (random initialisation), so --tuning {m.tuning} "
                         f"would train on random features; use --tuning full, give {where}, "
                         "or pass --allow_random_weights")


def prepare_output_dir(t: TrainArguments, is_main: bool) -> None:
    out = t.output_dir
    if os.path.isdir(out) and os.listdir(out) and not t.overwrite_output_dir and not t.resume_from_checkpoint:
        raise ValueError(f"output directory {out} exists and is not empty; use --overwrite_output_dir to replace it")
    if is_main:
        os.makedirs(out, exist_ok=True)


# --------------------------------------------------------------------------- data
def stratified_split(labels: List[int], pct: float, seed: int, names: Optional[Sequence[str]] = None):
    """``(train_idx, val_idx, info)``: ``pct`` % held out, stratified by label when every
    class has >= 2 examples and the split can hold one of each; ``info`` says whether
    it was stratified and, if not, which classes (``names[id]``, else ids) prevented it."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    n_val = max(1, int(round(len(labels) * pct / 100)))
    counts = np.bincount(labels)
    present = counts[counts > 0]
    too_few = [int(c) for c in np.nonzero((counts > 0) & (counts < 2))[0]]
    stratified = not too_few and n_val >= len(present)
    tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=labels if stratified else None)
    info = {"percentage": pct, "seed": seed, "stratified": bool(stratified), "size": int(n_val)}
    if not stratified:
        single = f"class(es) {[names[c] for c in too_few]}" if names is not None else f"class id(s) {too_few}"
        info["reason"] = (f"{single} have a single example" if too_few else
                          f"{n_val} held-out example{'s' if n_val != 1 else ''} cannot hold all {len(present)} classes")
    return sorted(tr.tolist()), sorted(va.tolist()), info


def held_out_validation(labels: List[int], pct: float, seed: int, source: str, names: Optional[Sequence[str]] = None):
    """``(train_idx, val_idx, info, description)``: :func:`stratified_split` plus the held-out
    split's description for the summary ("FILE (10% held out, stratified, seed 42)", or
    "NOT stratified: REASON", classes named by ``names[id]`` when given)."""
    tr, va, info = stratified_split(labels, pct, seed, names)
    how = "stratified" if info["stratified"] else f"NOT stratified: {info['reason']}"
    return tr, va, info, f"{source} ({pct:g}% held out, {how}, seed {seed})"


def _validation_file(modality: str, d: DataArguments, label2id: Dict[str, int], sr) -> Split:
    val = load_examples(modality, d.validation_file, d, True, d.validation_filter, sr)
    return Split(val.inputs, encode_labels(val.labels, label2id, d.validation_file, d.label_column),
                 d.validation_file, info={"file": d.validation_file})


def load_splits(modality: str, m: ModelArguments, d: DataArguments, t: TrainArguments, backbone,
                label2id: Optional[Dict[str, int]] = None):
    """Train / validation / test / target ``Split``s as label ids over ``label2id``."""
    sr = getattr(backbone, "sampling_rate", None)
    splits: Dict[str, Split] = {}
    if label2id is None:
        if not d.train_file:
            raise ValueError("--train_file is required (labelled source data)")
        train = load_examples(modality, d.train_file, d, True, d.train_filter, sr)
        label2id = build_label_maps(train.labels, d.train_file, d.label_column)
        y = encode_labels(train.labels, label2id, d.train_file, d.label_column)
        names = [n for n, _ in sorted(label2id.items(), key=lambda kv: kv[1])]  # label id -> name
        idx = list(range(len(y)))
        if d.shots_per_class:
            from .data.fewshot import sample_k_shot

            idx = sample_k_shot(y, d.shots_per_class, t.seed, allow_fewer=d.allow_fewer_shots, source=d.train_file,
                                names=names)
        elif d.max_train_samples and d.max_train_samples < len(idx):
            rng = np.random.default_rng(t.seed)
            idx = sorted(rng.choice(len(idx), d.max_train_samples, replace=False).tolist())
        val_idx: List[int] = []
        # share one cached encoding of the whole file only when the run uses most of it
        whole = None if (d.shots_per_class or d.max_train_samples) else train.inputs
        if d.validation_file:
            splits["validation"] = _validation_file(modality, d, label2id, sr)
        elif d.validation_split_percentage > 0 and not d.shots_per_class:
            sub = [y[i] for i in idx]
            tr, va, info, source = held_out_validation(sub, d.validation_split_percentage, t.seed, d.train_file,
                                                       names=names)
            val_idx = [idx[i] for i in va]
            idx = [idx[i] for i in tr]
            splits["validation"] = Split([train.inputs[i] for i in val_idx], [y[i] for i in val_idx], source,
                                         pool=None if whole is None else (whole, val_idx), info=info)
        splits["train"] = Split([train.inputs[i] for i in idx], [y[i] for i in idx], d.train_file,
                                pool=None if whole is None else (whole, idx))
        if len(set(splits["train"].labels)) < 2:
            raise DataError(f"{d.train_file}: the training split has a single class; classification needs at least 2")
    elif d.validation_file:  # a trained model's label set (evaluation only)
        splits["validation"] = _validation_file(modality, d, label2id, sr)
    if d.test_file:
        test = load_examples(modality, d.test_file, d, True, d.test_filter, sr)
        ys = encode_labels(test.labels, label2id, d.test_file, d.label_column)
        if d.max_eval_samples and d.max_eval_samples < len(ys):
            kept, every = len(set(ys[: d.max_eval_samples])), len(set(ys))
            if kept < every:  # the first N rows of a file sorted by label
                warnings.warn(f"--max_eval_samples {d.max_eval_samples} keeps the first {d.max_eval_samples} rows of "
                              f"{d.test_file}: {kept} of its {every} classes; macro scores average over those and over any "
                              "other class predicted on them (each scoring 0) "
                              "(shuffle the file for a representative subset)")
            test = test.subset(range(d.max_eval_samples))
            ys = ys[: d.max_eval_samples]
        splits["test"] = Split(test.inputs, ys, d.test_file)
    if d.target_file:
        tgt = load_examples(modality, d.target_file, d, False, d.target_filter, sr)
        if len(tgt) == 0:
            raise DataError(f"{d.target_file}: target file has no rows")
        splits["target"] = Split(tgt.inputs, None, d.target_file)
        if not objectives.needs_target(m.objective) and not t.eval_only:
            from .training.selection import NEEDS_TARGET

            uses = "--selection " + t.selection if t.selection in NEEDS_TARGET else "the report's domain-gap plots"
            warnings.warn(f"--target_file {d.target_file}: no term of --objective {m.objective} trains on target data; "
                          f"the file is used only for {uses}", UserWarning, stacklevel=2)
    return splits, label2id


# --------------------------------------------------------------------------- model
def build_backbone(modality: str, m: ModelArguments, d: DataArguments):
    from .backbones import load_backbone

    path = m.model_name_or_path or (None if m.model_config else default_model(modality))
    if path and not os.path.exists(path) and (os.path.isabs(path) or path.startswith(".") or path.count("/") > 1):
        raise ValueError(f"--model_name_or_path {path}: no such directory; expected a local model folder or a Hub id (name or namespace/name)")
    if path and os.path.isfile(os.path.join(path, "config.json")):
        with open(os.path.join(path, "config.json")) as f:
            model_type = json.load(f).get("model_type")
        if model_type == "tltext":  # a trained tltext model: adapt its backbone (two-stage recipes)
            from .modeling import TltextModel

            backbone = TltextModel.from_pretrained(path).backbone
            if backbone.modality != modality:
                raise ValueError(f"--model_name_or_path {path}: a {backbone.modality} model, but this recipe is for {modality}")
            if m.freeze_feature_encoder and hasattr(backbone, "freeze_feature_encoder"):  # stage-2 flags
                backbone.freeze_feature_encoder()
            if d.max_duration_seconds is not None and hasattr(backbone, "max_duration_seconds"):
                backbone.max_duration_seconds = d.max_duration_seconds
            if hasattr(backbone, "set_augmentation"):  # this stage's training augmentation
                backbone.set_augmentation(m.speed_perturbation, m.noise_snr_db)
            if m.mask_time_prob is not None and hasattr(backbone, "set_mask_time_prob"):
                backbone.set_mask_time_prob(m.mask_time_prob)
            return backbone
    if path and os.path.isdir(path) and not any(
        os.path.exists(os.path.join(path, f)) for f in ("config.json", "model.safetensors", "pytorch_model.bin")
    ):
        raise ValueError(f"--model_name_or_path {path}: not a model directory (no config.json or weights found)")
    try:
        return load_backbone(
            modality, path, pooling=m.pooling, max_length=d.max_seq_length, model_config=m.model_config,
            layer_weighting=m.layer_weighting, freeze_feature_encoder=m.freeze_feature_encoder,
            max_duration_seconds=d.max_duration_seconds, weights_path=m.weights_path, image_size=m.image_size,
            speed_perturbation=m.speed_perturbation, noise_snr_db=m.noise_snr_db, mask_time_prob=m.mask_time_prob,
            hflip=m.image_hflip, min_crop_scale=m.image_min_crop_scale,
        )
    except (OSError, EnvironmentError) as e:
        raise ValueError(f"--model_name_or_path {path}: cannot load a model ({str(e).splitlines()[0][:200]})") from None




# --------------------------------------------------------------------------- run
def _data(a: Dict[str, Any], split: str) -> str:
    """``--{split}_file`` with its ``--{split}_filter`` when one was given."""
    f = a.get(f"{split}_filter")
    return f"{a.get(f'{split}_file')}" + (f" [{f}]" if f else "")


def _metric_line(d: Optional[Dict[str, Any]], keys=("accuracy", "f1")) -> str:
    if not d:
        return "-"
    return "  ".join(f"{k} {d[k]:.4f}" for k in keys if isinstance(d.get(k), (int, float))
                     and not isinstance(d.get(k), bool))


def print_summary(res: Dict[str, Any]) -> None:
    """One screen: what ran (objective terms, tuning, precision, global batch, optimizer
    steps, selection), the scores, the timing, warnings, where the results are."""
    a = res["args"]
    tr = res.get("training", {})
    keys = tuple(a.get("metric") or ("accuracy", "f1"))
    lines = [
        "=" * 72,
        f"tltext {res['modality']}: tuning={a['tuning']} objective={a['objective']}"
        + ("" if a.get("eval_only") else f" seed={a['seed']}"),  # eval-only: the seed flag played no part
        f"model: {res['base_model']}",
    ]
    if a.get("eval_only"):
        lines.append(f"evaluation only: nothing trained  |  classes: {len(res['label_names'])}")
    else:
        fitted = res["num_examples"].get("fitted_on")
        pooled = f" (the saved probe was fitted on all {fitted}: training + held-out validation)" if fitted else ""
        lines.append(f"train: {res['num_examples'].get('train')} examples from {_data(a, 'train')}{pooled}  |  "
                     f"classes: {len(res['label_names'])}")
        if a.get("target_file"):
            lines.append(f"target (unlabelled): {res['num_examples'].get('target')} examples from {_data(a, 'target')}")
    resolved = [f"--{k} {v}" for term in res.get("objective_terms") or [] for k, v in (term.get("settings") or {}).items()]
    if resolved:
        lines.append("objective defaults as resolved for this run: " + ", ".join(resolved))
    if tr.get("fit"):
        lines.append(f"ran: {tr.get('device')} x {tr.get('num_processes')} process(es), precision {tr.get('precision')}, "
                     f"{tr['fit']}")
    elif tr:
        lines.append(f"ran: {tr.get('device')} x {tr.get('num_processes')} process(es), precision {tr.get('precision')}, "
                     + batch_text(tr) + (f" in {len(res['history'])} epoch(s)" if res.get("history") else "")
                     + (f", {tr['skipped_fp16_steps']} fp16 overflow steps skipped" if tr.get("skipped_fp16_steps") else ""))
        if tr.get("learning_rate") is not None:
            lines.append(f"learning rate: {tr['learning_rate']:g}"
                         + (" (default for this tuning)" if a.get("learning_rate") is None else "")
                         + (f", head {tr['head_learning_rate']:g}" if tr.get("head_learning_rate") is not None else "")
                         + (f", objective's own parts {tr['objective_learning_rate']:g}"
                            if tr.get("objective_learning_rate") is not None else ""))
    if tr.get("head"):
        lines.append(f"head: {tr['head']}")
    if tr.get("head_init"):
        lines.append(f"head initialised from: {tr['head_init']}")
    if tr.get("head_adaptation"):
        lines.append(f"head adapted to the target after training: {tr['head_adaptation']}")
        before = res.get("before_head_adaptation") or {}
        if before:
            lines.append("  before that: " + "; ".join(f"{k} {_metric_line(v, keys)}" for k, v in before.items()))
    if (wise := wise_ft_text(tr)):
        lines.append(wise)
    vs = res.get("validation_split") or {}
    val_note = ""
    best = (f" (best epoch {res['best_epoch']})" if isinstance(res.get("best_epoch"), int) and res["best_epoch"] >= 0
            and not fitted_in_closed_form(tr) else "")
    if "stratified" in vs:
        val_note = f"  [validation: {vs['size']} held out, " + ("stratified]" if vs["stratified"] else f"NOT stratified: {vs.get('reason')}]")
    lines += [
        f"selection: {res['selection']}{best}{val_note}",
        f"validation: {_metric_line(res.get('validation'), keys)}"
        + (f"   ({res['validation']['note']})" if (res.get("validation") or {}).get("note") else ""),
        f"test:       {_metric_line(res.get('test'), keys)}" + (f"   ({_data(a, 'test')})" if a.get("test_file") else ""),
    ]
    if res.get("source_only"):
        lines.append(f"source-only test: {_metric_line(res['source_only'].get('test'))}")
    if res.get("test_episodic"):
        e = res["test_episodic"]
        lines.append(f"episodic test: {e['accuracy']:.4f} +- {e['ci95']:.4f} (95% CI, {e['episodes']} episodes)")
    tm = res["timing"]
    if a.get("eval_only"):
        lines.append(f"time: evaluation {tm.get('eval_seconds', 0):.1f}s")
    else:
        lines.append(f"time: train {tm['train_seconds']:.1f}s ({tm['train_samples_per_second']:.1f} samples/s), "
                     f"encode {tm.get('encode_seconds', 0):.1f}s, cache hits {tm.get('cache_hits', 0)}")
    for w in res.get("warnings", []):
        lines.append(f"WARNING: {w}")
    for e in res.get("errors", []):
        lines.append(f"ERROR: {e}")
    if res.get("paths", {}).get("report"):
        lines.append(f"report: {res['paths']['report']}")
    lines.append(f"results: {os.path.join(a['output_dir'], 'results.json')}")
    lines.append("=" * 72)
    print("\n".join(lines), flush=True)


def run_experiment(m: ModelArguments, d: DataArguments, t: TrainArguments, modality: str = "text") -> Dict[str, Any]:
    """Train (or evaluate) as the flags say; writes OUT/results.json and OUT/model.
    Returns the results as written (a dict; ``tltext.Trainer`` holds the typed one)."""
    check_args(m, d, t, modality)
    recipe = objectives.pretraining_recipe(m.objective)
    if recipe and not t.eval_only:
        raise ValueError(f"--objective {m.objective} learns representations without labels and trains no classifier; "
                         f"run it with {recipe}, then this recipe with --model_name_or_path OUT/model")
    if t.disable_tqdm:
        quiet_progress_bars()
    acc = make_accelerator(t)
    created = not os.path.exists(t.output_dir)
    prepare_output_dir(t, acc.is_main_process)
    acc.wait_for_everyone()
    try:
        return _run(acc, m, d, t, modality)
    except BaseException:
        if created and acc.is_main_process and os.path.isdir(t.output_dir) and not os.listdir(t.output_dir):
            os.rmdir(t.output_dir)  # a failed run leaves no (empty) output dir behind
        raise


def _run(acc, m: ModelArguments, d: DataArguments, t: TrainArguments, modality: str) -> Dict[str, Any]:
    if t.report_to and t.report_to != "none":
        acc.init_trackers("tltext", config={k: v for k, v in public_args(m, d, t).items() if isinstance(v, (int, float, str, bool))})
    if t.eval_only:
        res = evaluate_only(acc, m, d, t)
        if acc.is_main_process:
            atomic_write_json(os.path.join(t.output_dir, "results.json"), res)
    else:
        from accelerate.utils import set_seed

        set_seed(t.seed)  # --model_config builds random weights: --seed decides them
        with warnings.catch_warnings(record=True) as caught:  # e.g. a length flag clamped to the model's limit
            warnings.simplefilter("always", UserWarning)
            backbone = build_backbone(modality, m, d)
            check_pretrained(backbone, m)
            splits, label2id = load_splits(modality, m, d, t, backbone)  # e.g. a class-skewed --max_eval_samples
        trainer = Trainer(model=backbone, args=t, model_args=m, data_args=d, accelerator=acc, label2id=label2id,
                          train_dataset=splits["train"], eval_dataset=splits.get("validation"),
                          test_dataset=splits.get("test"), target_dataset=splits.get("target"),
                          fresh_backbone=lambda: build_backbone(modality, m, d))
        trainer._record_warnings(caught)
        trainer.train()
        res = trainer.result.as_dict()
    if acc.is_main_process:
        print_summary(res)
    acc.wait_for_everyone()
    for tracker in acc.trackers:  # not end_training(): the process group stays up for further runs in this process
        tracker.finish()
    return res


def evaluate_only(acc, m: ModelArguments, d: DataArguments, t: TrainArguments) -> Dict[str, Any]:
    """Score a trained tltext model (``--model_name_or_path OUT/model``) on the given files."""
    from .modeling import TltextModel
    from .training.predict import Predictor, score

    path = m.model_name_or_path
    if not os.path.exists(os.path.join(path, "config.json")):
        raise ValueError(f"--model_name_or_path {path}: not a trained tltext model (no config.json)")
    with open(os.path.join(path, "config.json")) as f:
        model_type = json.load(f).get("model_type")
    if model_type != "tltext":
        raise ValueError(f"--model_name_or_path {path}: a {model_type!r} model, not a trained tltext model "
                         "(expected the OUT/model folder of a tltext run)")
    model = TltextModel.from_pretrained(path).to(acc.device)
    label2id = {str(k): int(v) for k, v in model.config.label2id.items()}
    label_names = [l for l, _ in sorted(label2id.items(), key=lambda kv: kv[1])]
    modality = model.backbone.modality
    splits, _ = load_splits(modality, m, d, t, model.backbone, label2id=label2id)
    predictor = Predictor(acc, t.per_device_eval_batch_size, t.disable_tqdm)
    res: Dict[str, Any] = {"modality": modality, "eval_only": True, "base_model": path, "label_names": label_names,
                           "num_examples": {}, "args": public_args(m, d, t), "selection": "n/a (evaluation only)",
                           "num_processes": acc.num_processes}
    t0 = time.perf_counter()
    for name in ("validation", "test"):
        if name in splits:
            logits = predictor.logits(model, splits[name].inputs, name)
            res[name] = score(logits, splits[name].labels, label_names, t.metric)
            res["num_examples"][name] = len(splits[name].inputs)
    res["timing"] = {"train_seconds": 0.0, "train_samples_per_second": 0.0, "eval_seconds": time.perf_counter() - t0}
    length = getattr(model.backbone, "max_length", None)
    if length is not None:  # the saved model's text length is what ran
        if d.max_seq_length is not None and d.max_seq_length != length:
            res["warnings"] = [f"--max_seq_length {d.max_seq_length} ignored: --eval_only scores with the saved "
                               f"model's length, {length} tokens"]
        res["args"]["max_seq_length"] = length
    res["args"]["tuning"] = model.config.tltext.get("tuning", "?")
    res["args"]["objective"] = model.config.tltext.get("objective", "?")
    return res


def parse_and_run(modality: str, argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Entry point of the recipes: ``HfArgumentParser`` over the three dataclasses."""
    from transformers import HfArgumentParser

    from .args import ARGUMENT_CLASSES

    parser = HfArgumentParser(ARGUMENT_CLASSES, description=(
        f"tltext {modality} recipe. The flags are shared by the text, speech and image recipes; a help text that "
        "starts with 'Text:', 'Speech:' or 'Image:' applies to that modality only."))
    def one_line_error(message: str):  # argparse prints its whole usage block (about 100 lines) first
        parser.exit(2, f"error: {message} (see --help)\n")

    parser.error = one_line_error
    if modality == "image":  # image-folder aliases of the file flags
        for alias, dest in (("--train_dir", "train_file"), ("--test_dir", "test_file"),
                            ("--target_dir", "target_file"), ("--validation_dir", "validation_file")):
            parser.add_argument(alias, dest=dest, default=None)
    m, d, t = parser.parse_args_into_dataclasses(args=argv)
    return run_experiment(m, d, t, modality=modality)


def main(modality: str, argv: Optional[List[str]] = None) -> int:
    import sys

    try:
        res = parse_and_run(modality, argv)
    except (ValueError, DataError, FileNotFoundError, FloatingPointError) as e:  # FloatingPointError: NonFiniteLossError
        print(f"error: {e}", file=sys.stderr)
        return 2
    from accelerate import PartialState

    pushed_here = PartialState().is_main_process  # only the main process pushes
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if pushed_here and res.get("args", {}).get("push_to_hub") and "hub" not in res:  # the run is saved; the push is what failed
        print(f"error: --push_to_hub: the push failed (WARNING above); the run is saved in {res['args']['output_dir']}",
              file=sys.stderr)
        return 1
    return 0
