"""The model card (``OUT/model/README.md``) of a tltext run: YAML metadata that
the Hugging Face Hub reads (``library_name``, ``pipeline_tag``, ``base_model``,
``datasets``, ``tags`` and a ``model-index`` whose values are the numbers of
``results.json``) followed by a Markdown body: results, domain gap, training
set-up, how to load the model, limitations.

``base_model`` / ``datasets`` hold Hub ids only; local paths are described in
the body instead (they are not valid metadata values).
"""
from __future__ import annotations

import math
import os
import re
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from . import objectives
from .args import BACKBONE_OPTIONS
from .results import batch_text, fitted_in_closed_form, wise_ft_text

PIPELINE_TAGS = {"text": "text-classification", "speech": "audio-classification", "image": "image-classification"}
MODALITY_TAGS = {"text": ["text"], "speech": ["audio", "speech"], "image": ["image"]}
AUTO_CLASSES = {"text": "AutoModelForSequenceClassification", "speech": "AutoModelForAudioClassification",
                "image": "AutoModelForImageClassification"}
TUNING_TAGS = {"frozen": "frozen-backbone", "partial": "partial-fine-tuning", "full": "full-fine-tuning"}
TUNING_TEXT = {"frozen": "frozen backbone (cached embeddings), trained head", "partial": "top layer groups unfrozen",
               "full": "full fine-tuning"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?")
_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".arrow", ".txt", ".wav", ".flac", ".png", ".jpg",
                  ".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# run settings shown in the card (never the raw argument dict: no tokens, no local paths)
_HYPERPARAMETERS = (
    "tuning", "unfreeze_top_k", "layerwise_lr_decay", "gradual_unfreeze", "objective", "da_weight", "da_warmup_ratio",
    "mmd_kernels", "discriminator_hidden_dim", "n_way", "k_shot", "n_query", "episodes_per_epoch", "adapter_dim",
    "head_dropout", "pooling", "layer_weighting", "freeze_feature_encoder", "speed_perturbation", "noise_snr_db",
    "mask_time_prob", "image_size", "max_seq_length",
    "max_duration_seconds", "shots_per_class", "max_train_samples", "learning_rate", "head_learning_rate",
    "num_train_epochs", "max_train_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "weight_decay", "warmup_ratio", "lr_scheduler_type", "max_grad_norm", "class_weights", "mixed_precision",
    "early_stopping_patience", "group_by_length", "selection", "metric_for_best_model", "seed",
)
# optimiser/loop settings that do not apply to a head fitted in closed form (the linear probe)
_ENGINE_ONLY = ("learning_rate", "head_learning_rate", "num_train_epochs", "max_train_steps", "per_device_train_batch_size",
                "gradient_accumulation_steps", "weight_decay", "warmup_ratio", "lr_scheduler_type", "max_grad_norm",
                "head_dropout", "early_stopping_patience", "mixed_precision", "group_by_length")
_ONLY_FOR = {"unfreeze_top_k": ("tuning", ("partial",)), "layerwise_lr_decay": ("tuning", ("partial", "full")),
             "gradual_unfreeze": ("tuning", ("partial", "full")), "layer_weighting": ("modality", ("speech",)),
             "speed_perturbation": ("modality", ("speech",)), "noise_snr_db": ("modality", ("speech",)),
             "mask_time_prob": ("modality", ("speech",)),
             "freeze_feature_encoder": ("modality", ("speech",)), "max_duration_seconds": ("modality", ("speech",)),
             "image_size": ("modality", ("image",)), "max_seq_length": ("modality", ("text",))}


def _terms(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The objective's terms as results.json lists them (older results: from the registry)."""
    if res.get("objective_terms"):
        return list(res["objective_terms"])
    try:
        return objectives.describe(res.get("objective", "erm"))
    except ValueError:
        return [{"name": res.get("objective", "?"), "weight": None, "paper": "", "description": res.get("objective", "?")}]


def objective_options(res: Dict[str, Any]) -> set:
    """The ``ModelArguments`` fields the run's objective terms read with its flags (shown in the card)."""
    out: set = set()
    args = SimpleNamespace(**res.get("args", {}))
    for t in _terms(res):
        try:
            out |= set(objectives.get(t["name"]).applied_options(args))
        except ValueError:
            pass
    return out


def objective_text(res: Dict[str, Any]) -> str:
    parts = []
    for t in _terms(res):
        w = f" (weight {t['weight']:g})" if isinstance(t.get("weight"), (int, float)) else ""
        cite = f" ({t['paper']})" if t.get("paper") else ""
        parts.append(f"{t['description']}{cite}{w}")
    return " + ".join(parts)


def objective_tags(res: Dict[str, Any]) -> List[str]:
    tags: List[str] = []
    for t in _terms(res):
        try:
            tags += list(objectives.get(t["name"]).tags) or [t["name"]]
        except ValueError:
            tags.append(t["name"])
    return tags


def uses_target(res: Dict[str, Any]) -> bool:
    try:
        return objectives.needs_target(res.get("objective", "erm"))
    except ValueError:
        return False


def is_hub_id(name: Optional[str]) -> bool:
    """``owner/name`` (or a legacy one-part id) that is not a local path or file name."""
    if not name or not isinstance(name, str) or os.path.exists(name) or name.startswith((".", "/", "~")):
        return False
    return bool(_HUB_ID.fullmatch(name)) and not name.lower().endswith(_FILE_SUFFIXES) and "--" not in name \
        and ".." not in name


def short_path(path: Optional[str]) -> str:
    """The last two components of a local path (no home or work directories in a public card)."""
    if not path:
        return ""
    parts = [p for p in str(path).replace("\\", "/").rstrip("/").split("/") if p]
    return "/".join(parts[-2:])


def base_model_id(res: Dict[str, Any]) -> Optional[str]:
    """The Hub id of the pretrained backbone, or None (local folder, torchvision name, built from a config)."""
    a = res.get("args", {})
    name = a.get("model_name_or_path")
    if res.get("modality") == "image" or a.get("model_config") or not is_hub_id(name):
        return None
    return name


def dataset_ids(res: Dict[str, Any]) -> List[str]:
    a = res.get("args", {})
    names = [a.get(k) for k in ("train_file", "target_file", "validation_file", "test_file")]
    return list(dict.fromkeys(n for n in names if is_hub_id(n)))


IN_MEMORY = "in memory (Python API)"


def _describe_data(name: Optional[str], filt: Optional[str] = None) -> str:
    if not name:
        return ""
    text = f"[`{name}`](https://huggingface.co/datasets/{name})" if is_hub_id(name) else f"local `{short_path(name)}`"
    return text + (f" (rows where {filt})" if filt else "")


def _scalars(metrics: Optional[Dict[str, Any]]) -> Dict[str, float]:
    """The finite scalar metrics (accuracy, f1, ...) of one split, in their order."""
    out: Dict[str, float] = {}
    for k, v in (metrics or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = v
    return out


def eval_split_title(res: Dict[str, Any]) -> str:
    a = res.get("args", {})
    return "target test" if (a.get("target_file") or uses_target(res)) else "test"


def validation_description(res: Dict[str, Any]) -> str:
    a = res.get("args", {})
    if a.get("validation_file"):
        return _describe_data(a["validation_file"], a.get("validation_filter"))
    vs = res.get("validation_split") or {}
    pct = vs.get("percentage", a.get("validation_split_percentage") if "stratified" in vs else None)
    if not pct and res.get("num_examples", {}).get("validation"):
        return f"`eval_dataset` ({IN_MEMORY})"
    how = "stratified" if vs.get("stratified", True) else f"not stratified: {vs.get('reason', '?')}"
    train = _describe_data(a.get("train_file"), a.get("train_filter")) or IN_MEMORY
    return f"{train}, {pct:g}% held out ({how})" if pct else train


def cross_validated(res: Dict[str, Any]) -> bool:
    """True when the reported validation score is the frozen probe's cross-validated one (over
    training + the pooled held-out split, or over the training split when there was no
    validation data), not a score on held-out examples."""
    return bool((res.get("validation") or {}).get("cross_validated"))


def _validation_title(res: Dict[str, Any]) -> str:
    if not cross_validated(res):
        return "source validation"
    pooled = res.get("num_examples", {}).get("fitted_on")
    return f"source cross-validation ({'training + held-out validation' if pooled else 'training split'})"


def eval_results(res: Dict[str, Any]) -> List[EvalResult]:
    """model-index entries: source validation and (target) test, values as in results.json."""
    a = res.get("args", {})
    task = PIPELINE_TAGS.get(res.get("modality", ""), "text-classification")
    oracle = " (ORACLE selection on these labels)" if res.get("oracle") else ""
    entries = [("validation", _validation_title(res), a.get("validation_file") or a.get("train_file"), ""),
               ("test", eval_split_title(res), a.get("test_file"), oracle)]
    out: List[EvalResult] = []
    cv_split = "train" if not res.get("num_examples", {}).get("fitted_on") else "train+validation"
    for split, title, data, note in entries:
        shown_split = cv_split if split == "validation" and cross_validated(res) else split
        for metric, value in _scalars(res.get(split)).items():
            hub = is_hub_id(data)
            dtype = data if hub else "local:" + (os.path.basename(str(data or "").rstrip("/")) or "data")
            shown = data if hub else short_path(data) or "local data"
            out.append(EvalResult(
                task_type=task, dataset_type=dtype, dataset_name=f"{title}: {shown}{note}", dataset_split=shown_split,
                metric_type=metric, metric_value=value, metric_name=f"{title} {metric}",
            ))
    return out


def card_data(res: Dict[str, Any], model_name: str) -> ModelCardData:
    modality = res.get("modality", "text")
    objective, tuning = res.get("objective", "erm"), res.get("tuning", "frozen")
    a = res.get("args", {})
    tags = ["tltext", "transfer-learning"] + MODALITY_TAGS.get(modality, [modality])
    tags += objective_tags(res)
    tags += [TUNING_TAGS[tuning]] if tuning in TUNING_TAGS else []
    if a.get("shots_per_class") and "few-shot" not in tags:
        tags.append("few-shot")
    if res.get("oracle"):
        tags.append("oracle-selection")
    results = eval_results(res)
    metrics = list(dict.fromkeys(r.metric_type for r in results))
    return ModelCardData(
        library_name="tltext", pipeline_tag=PIPELINE_TAGS.get(modality), base_model=base_model_id(res),
        datasets=dataset_ids(res) or None, tags=list(dict.fromkeys(tags)), metrics=metrics or None,
        model_name=model_name, eval_results=results or None,
    )


# --------------------------------------------------------------------------- body
def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3g}"
    return str(v)


def _results_table(res: Dict[str, Any]) -> List[str]:
    a = res.get("args", {})
    n = res.get("num_examples", {})
    train = _describe_data(a.get("train_file"), a.get("train_filter")) or IN_MEMORY
    pooled = n.get("fitted_on")
    val = ((_validation_title(res), f"{train}, " + ("all labelled examples, pooled" if pooled else "training split"),
            pooled or n.get("train"), res.get("validation")) if cross_validated(res) else
           ("source validation", validation_description(res), n.get("validation"), res.get("validation")))
    rows = [val,
            (eval_split_title(res), _describe_data(a.get("test_file"), a.get("test_filter")) or IN_MEMORY, n.get("test"),
             res.get("test"))]
    if res.get("source_only", {}).get("test"):
        rows.append((f"{eval_split_title(res)}, source-only (ERM) baseline", "same data, same seed and tuning",
                     n.get("test"), res["source_only"]["test"]))
    rows = [r for r in rows if _scalars(r[3])]
    if not rows:
        return ["No labelled validation or test split was evaluated."]
    keys = list(dict.fromkeys(k for r in rows for k in _scalars(r[3])))
    lines = ["| split | data | examples | " + " | ".join(keys) + " |", "| --- | --- | --- |" + " --- |" * len(keys)]
    for title, data, count, m in rows:
        s = _scalars(m)
        lines.append(f"| {title} | {data} | {'' if count is None else count} | "
                     + " | ".join(_fmt(s.get(k, "")) if k in s else "" for k in keys) + " |")
    return lines


def _domain_gap(gap: Dict[str, Any]) -> List[str]:
    lines = ["## Domain gap (source vs target)", ""]
    stages = [k[: -len("_before")] for k in gap if k.endswith("_before") and f"{k[:-7]}_after" in gap
              and isinstance(gap[k], (int, float))]
    names = {"a_distance": "proxy A-distance (0 = same, 2 = separable)", "mmd2": "MK-MMD^2 (in each space's own scale)"}
    if stages:
        lines += [f"| | before: {gap.get('space_before', 'backbone')} | after: {gap.get('space_after', 'adapter')} |",
                  "| --- | --- | --- |"]
        lines += [f"| {names.get(s, s)} | {_fmt(gap[s + '_before'])} | {_fmt(gap[s + '_after'])} |" for s in stages]
    rest = {k: v for k, v in gap.items() if not any(k in (f"{s}_before", f"{s}_after") for s in stages)
            and k not in ("space_before", "space_after") and isinstance(v, (int, float, str))}
    lines += [""] + [f"- {k}: {_fmt(v)}" for k, v in rest.items()]
    lines += ["", "Before = backbone embeddings, after = the trained model's features (Ben-David et al. 2010: "
              "a smaller gap with a low source error bounds the target error)."]
    return lines


def _before_head_adaptation(res: Dict[str, Any]) -> List[str]:
    """One line per split scored before an objective adapted the head to the target (AdaBN),
    with the score after it (a cross-validated probe score predates the fold: not shown as after)."""
    out = []
    for split, before in (res.get("before_head_adaptation") or {}).items():
        after = {} if (res.get(split) or {}).get("cross_validated") else (res.get(split) or {})
        keys = [k for k in ("accuracy", "f1") if isinstance(before.get(k), (int, float))]
        text = ", ".join(f"{k} {before[k]:.4f}" for k in keys)
        later = ", ".join(f"{k} {after[k]:.4f}" for k in keys if isinstance(after.get(k), (int, float)))
        if keys:
            out.append(f"- {split} before the head adaptation: {text}" + (f" (after: {later})" if later else ""))
    return out


def _what_ran(res: Dict[str, Any]) -> List[str]:
    """What actually ran (results.json ``training``): device, precision, global batch,
    optimizer steps, how the head was fitted or initialised, the guard's decision."""
    tr = res.get("training") or {}
    out = []
    if tr:
        steps = tr.get("fit") or batch_text(tr)
        out.append(f"- ran on {tr.get('device')} x {tr.get('num_processes')}, precision {tr.get('precision')}; {steps}")
    for key, label in (("head", "head"), ("head_init", "head initialised from"),
                       ("head_adaptation", "head adapted to the target after training")):
        if tr.get(key):
            out.append(f"- {label}: {tr[key]}")
    if (wise := wise_ft_text(tr)):
        out.append(f"- {wise}")
    out += _before_head_adaptation(res)
    g = res.get("negative_transfer_guard")
    if g:
        out.append(f"- {g['note']}")
    vs = res.get("validation_split") or {}
    if "stratified" in vs:
        out.append(f"- validation split: {vs['size']} examples held out, "
                   + ("stratified" if vs["stratified"] else f"not stratified ({vs.get('reason')})"))
    return out + ([""] if out else [])


def _hyperparameters(res: Dict[str, Any], config: Dict[str, Any]) -> List[str]:
    a = dict(res.get("args", {}))
    ctx = {"tuning": res.get("tuning", a.get("tuning")), "objective": res.get("objective", a.get("objective")),
           "modality": res.get("modality")}
    if config.get("adapter_dim") is not None:
        a["adapter_dim"] = config["adapter_dim"]
    for term in _terms(res):  # values an objective resolved for its unset flags (Objective.settings)
        a.update({k: v for k, v in (term.get("settings") or {}).items() if a.get(k) is None})
    tr = res.get("training") or {}
    if "head_dropout" in tr:  # the dropout that acted in training (None: no head or adapter trained)
        a["head_dropout"] = tr["head_dropout"]
    if tr.get("batch_sampler"):  # the objective's sampler made the batches
        for k in ("per_device_train_batch_size", "group_by_length"):
            a.pop(k, None)
    probe = fitted_in_closed_form(tr) or str(tr.get("fit", "")).startswith("nothing trained")
    if "learning_rate" in a and tr.get("learning_rate"):  # the rates that ran, head and objective parts included
        objective_lr = (f", objective's own parts {tr['objective_learning_rate']:g}"
                        if tr.get("objective_learning_rate") is not None else "")
        default = "default for this tuning; " if a.get("learning_rate") is None else ""
        head_lr = (f"head {tr['head_learning_rate']:g}" if tr.get("head_learning_rate") is not None
                   else "no head trained")  # a head computed from the features takes no steps
        a["learning_rate"] = f"{tr['learning_rate']:g} ({default}{head_lr}{objective_lr})"
        a.pop("head_learning_rate", None)
    elif a.get("learning_rate") is None and "learning_rate" in a:
        a["learning_rate"] = "tltext default for this tuning"
    if res.get("selection"):
        a["selection"] = res["selection"]  # what ran, not the flag's value
    if probe:  # no engine steps: the optimiser settings played no part
        for k in _ENGINE_ONLY:
            a.pop(k, None)
    lines = ["| setting | value |", "| --- | --- |"]
    objective_keys = objectives.all_options()
    opts = objective_options(res)
    for k in _HYPERPARAMETERS + tuple(sorted(opts - set(_HYPERPARAMETERS))):
        if k == "pooling" and ctx["modality"] == "image":
            continue
        if k not in a or (k in _ONLY_FOR and ctx.get(_ONLY_FOR[k][0]) not in _ONLY_FOR[k][1]):
            continue
        if k in objective_keys and k not in opts and k not in BACKBONE_OPTIONS.get(ctx["modality"], ()):
            continue
        if a[k] is None or (k == "gradual_unfreeze" and not a[k]) or (k == "layerwise_lr_decay" and a[k] == 1.0) \
                or (k == "da_warmup_ratio" and not a[k]):
            continue
        v = a[k]
        lines.append(f"| {k} | {v:g} |" if isinstance(v, float) else f"| {k} | {v} |")
    if res.get("num_processes"):
        lines.append(f"| processes | {res['num_processes']} |")
    timing = res.get("timing", {})
    if timing.get("train_steps") is not None:
        lines.append(f"| optimisation steps | {timing['train_steps']} |")
    if res.get("best_epoch") is not None and res["best_epoch"] >= 0 and not probe:
        lines.append(f"| selected epoch | {res['best_epoch']} |")
    return lines


def _usage(modality: str, model_id: str, config: Dict[str, Any]) -> List[str]:
    auto = AUTO_CLASSES.get(modality, "AutoModelForSequenceClassification")
    task = PIPELINE_TAGS.get(modality, "text-classification")
    imports = {"speech": ["import soundfile as sf"], "image": ["from PIL import Image"]}.get(modality, [])
    code = imports + ["import tltext  # registers the tltext model type with transformers (no remote code)",
                      "from transformers import pipeline", "", f'clf = pipeline("{task}", model="{model_id}")']
    if modality == "speech":
        sr = (config.get("backbone", {}).get("feature_extractor") or {}).get("sampling_rate", 16000)
        code += ['wave, sr = sf.read("clip.wav", dtype="float32")  # mono',
                 'print(clf({"raw": wave, "sampling_rate": sr}))  # resampled to ' + f"{sr} Hz"]
    elif modality == "image":
        code += ['print(clf(Image.open("photo.png").convert("RGB")))']
    else:
        max_len = config.get("backbone", {}).get("max_length", 128)
        code += [f'print(clf("an example sentence", truncation=True, max_length={max_len}))  # as in training']
    return (["```python"] + code + ["```", "", "or with the Auto class (weights in safetensors, no `trust_remote_code`):", "",
             "```python", "import tltext", f"from transformers import {auto}", "",
             f'model = {auto}.from_pretrained("{model_id}")', "```"])


def _limitations(res: Dict[str, Any], config: Dict[str, Any]) -> List[str]:
    a = res.get("args", {})
    modality = res.get("modality")
    out: List[str] = []
    if res.get("oracle"):
        out.append("**Oracle run**: the checkpoint was selected with the labels of the test set, so the test "
                   "numbers are an optimistic upper bound, not an unsupervised domain-adaptation result.")
    else:
        which = "target" if eval_split_title(res) == "target test" else "test"
        out.append(f"Model selected without {which} labels ({res.get('selection', 'see results.json')})"
                   + (f"; the {eval_split_title(res)} numbers are a held-out estimate for that data only."
                      if res.get("test") else "; no test set was scored, so there is no held-out estimate."))
        if a.get("selection") == "source_validation" and uses_target(res):
            out.append("Source-validation accuracy can be a weak proxy for target accuracy under domain shift.")
    for w in res.get("warnings", []):
        out.append(f"Warning from the run: {w}")
    n = res.get("num_examples", {})
    if n.get("train") is not None:
        fitted = n.get("fitted_on")
        trained = (f"Trained on {fitted} labelled examples (the {n['train']} training examples and the "
                   f"{fitted - n['train']} held out for validation, pooled into the probe's final fit)"
                   if fitted and fitted != n["train"] else f"Trained on {n['train']} labelled examples")
        out.append(f"{trained}; it only predicts the {len(res.get('label_names', []))} labels listed below.")
    if modality == "speech":
        sr = (config.get("backbone", {}).get("feature_extractor") or {}).get("sampling_rate", 16000)
        crop = config.get("backbone", {}).get("max_duration_seconds")
        out.append(f"Expects mono audio at {sr} Hz" + (f"; tltext crops clips to {crop:g} s (centred) at evaluation, "
                   "the pipeline does not" if crop else "") + ".")
    if modality == "image":
        bb = config.get("backbone", {})
        if bb.get("image_size"):
            out.append(f"Images are resized (shorter side {bb.get('resize_size')} px, bilinear) and centre-cropped to "
                       f"{bb['image_size']}x{bb['image_size']}, then normalised with mean {bb.get('mean')} and std "
                       f"{bb.get('std')} (the pipeline's image processor does the same).")
    if modality == "text":
        out.append("Inputs longer than max_seq_length tokens are truncated in training; pass the same "
                   "`truncation=True, max_length=...` to the pipeline.")
    base = a.get("model_name_or_path")
    if base and not base_model_id(res) and modality != "image" and not a.get("model_config"):
        out.append(f"The backbone came from a local checkpoint (`{short_path(base)}`), not a Hub id, so the card has "
                   "no `base_model` link.")
    return [f"- {x}" for x in out]


def _as_source_only(res: Dict[str, Any]) -> Dict[str, Any]:
    """``res`` describing the model the negative-transfer guard kept: source-only ERM
    (the adaptation that lost is named by the guard's note)."""
    return {**res, "objective": "erm", "objective_terms": objectives.describe("erm"),
            "args": {**res.get("args", {}), "objective": "erm"}}


def render_card(res: Dict[str, Any], config: Optional[Dict[str, Any]] = None, repo_id: Optional[str] = None,
                plots: Sequence[str] = (), extra_files: Sequence[str] = (), link_prefix: str = "") -> str:
    """README.md text: YAML metadata + body. ``res`` is the results dict of the run
    (as in results.json), ``config`` the saved model's config.json dict. ``plots`` and
    ``extra_files`` are linked as ``link_prefix + name``: "" in a Hub repo (uploaded beside
    the card), "../" for the local OUT/model/README.md (they stay in OUT/)."""
    config = config or {}
    modality = res.get("modality") or config.get("backbone", {}).get("type", "text")
    res = {**res, "modality": modality}
    if (res.get("negative_transfer_guard") or {}).get("kept") == "source_only":
        res = _as_source_only(res)  # the guard published source-only: name, tags and text say so
    model_name = (repo_id.split("/")[-1] if repo_id else
                  f"tltext-{modality}-{res.get('objective', 'erm')}-{res.get('tuning', 'frozen')}")
    data = card_data(res, model_name)
    a = res.get("args", {})
    objective, tuning = res.get("objective", "erm"), res.get("tuning", "frozen")
    body: List[str] = [f"# {model_name}", ""]
    if res.get("oracle"):
        body += ["> [!WARNING]", "> **ORACLE RUN: NOT A VALID TRANSFER RESULT.** The checkpoint was selected on the "
                 "labels of the target test set (`--oracle_selection`). The target test numbers below are optimistically "
                 "biased; do not report them as domain-adaptation results.", ""]
    base = base_model_id(res)
    if base:
        backbone = f"[`{base}`](https://huggingface.co/{base})"
    elif modality == "image":
        w = a.get("weights_path")
        weights = (f"weights `{w.split(':', 1)[1]}` from torchvision" if w and w.startswith("torchvision:") else
                   f"weights from local `{short_path(w)}`" if w else "randomly initialised, no pretrained weights")
        backbone = (f"torchvision `{a.get('model_name_or_path') or config.get('backbone', {}).get('arch', '?')}` "
                    f"({weights})")
    elif a.get("model_config"):
        backbone = f"a randomly initialised `{short_path(a['model_config'])}` encoder (no pretrained weights)"
    else:
        backbone = f"local checkpoint `{short_path(a.get('model_name_or_path') or res.get('base_model'))}`"
    article = "An" if modality[:1] in "aeiou" else "A"
    body += [f"{article} {modality} classifier trained with tltext on {backbone}: "
             f"{objective_text(res)}; {TUNING_TEXT.get(tuning, tuning)}.", ""]
    body += ["## Results", ""] + _results_table(res)
    body += ["", f"Model selection: {res.get('selection', '?')}" + (f" (epoch {res['best_epoch']})."
             if res.get("best_epoch") is not None and res["best_epoch"] >= 0
             and not fitted_in_closed_form(res.get("training")) else ".")]
    ep = res.get("test_episodic")
    if ep:
        body += ["", f"Episodic test accuracy: {ep['accuracy']:.4f} +- {ep['ci95']:.4f} (95% CI, {ep['episodes']} "
                 f"{ep['n_way']}-way {ep['k_shot']}-shot episodes)."]
    if res.get("domain_gap"):
        body += [""] + _domain_gap(res["domain_gap"])
    body += ["", "## Data", ""]
    for label, key, filt, api in (("labelled source (train)", "train_file", "train_filter", "train_dataset"),
                                  ("unlabelled target", "target_file", "target_filter", "target_dataset"),
                                  ("validation", "validation_file", "validation_filter", "eval_dataset"),
                                  (eval_split_title(res), "test_file", "test_filter", None)):
        split = {"train_file": "train", "target_file": "target", "validation_file": "validation",
                 "test_file": "test"}[key]
        count = res.get("num_examples", {}).get(split)
        if a.get(key):
            pooled = (f" (the probe was fitted on {res['num_examples']['fitted_on']}: these and the held-out "
                      "validation split)" if split == "train" and res.get("num_examples", {}).get("fitted_on") else "")
            body.append(f"- {label}: {_describe_data(a[key], a.get(filt))}" + (f", {count} examples" if count else "")
                        + pooled)
        elif count and api and not (split == "validation" and (res.get("validation_split") or {}).get("percentage")):
            body.append(f"- {label}: `{api}` passed to `tltext.Trainer` ({IN_MEMORY}), {count} examples")
    body += ["", "## Training procedure", ""] + _what_ran(res) + _hyperparameters(res, config)
    body += ["", "## How to use", ""] + _usage(modality, repo_id or "path/to/OUT/model", config)
    body += ["", "## Limitations", ""] + _limitations(res, config)
    labels = res.get("label_names") or [v for _, v in sorted((int(k), v) for k, v in config.get("id2label", {}).items())]
    if labels:
        body += ["", "## Labels", "", ", ".join(f"`{l}`" for l in labels)]
    if plots:
        body += ["", "## Plots", ""] + [f"![{os.path.splitext(p)[0]}]({link_prefix}{p})" for p in plots]
    if extra_files:
        where = "this repository" if not link_prefix else "the run's folder"
        body += ["", f"Also in {where}: " + ", ".join(f"[{f}]({link_prefix}{f})" for f in extra_files) + "."]
    text = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n"
    ModelCard(text)  # parses the metadata back: raises on an invalid card
    return text
