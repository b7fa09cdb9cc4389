#!/usr/bin/env python
"""tltext with default flags vs the plain tool for each tuning, same data, same run.

    python benchmarks/defaults.py [--tasks sst2_1k sst2_5k amazon_b2k] [--tunings frozen partial full]
                                  [--seeds 1 2 3] [--sides tltext peer tltext_bf16]

Rows (all-MiniLM-L6-v2, the offline package):

* frozen: ``--tuning frozen`` (no other flag) vs scikit-learn ``LogisticRegression`` on the
  same mean-pooled embeddings, given its best settings: C chosen by 5-fold
  cross-validation on the whole training set (``LogisticRegressionCV``, Cs 0.01..100),
  fitted both on the raw pooled embeddings and on the unit-normalised ones (what
  ``SentenceTransformer.encode`` returns for this checkpoint); the row takes the better
  of the two on the test set (both are recorded), so the peer is never the weaker variant.
* full: ``--tuning full`` vs the transformers ``Trainer`` with its defaults
  (``AutoModelForSequenceClassification``, lr 5e-5, 3 epochs, batch 8, linear decay,
  no warmup, dynamic padding) on the same training examples.
* partial: ``--tuning partial`` (top 2 layer groups) vs the same ``Trainer`` with the
  same layers frozen (embeddings and all but the top 2 transformer layers).

The ``tltext_bf16`` side is the ``tltext`` run plus ``--mixed_precision bf16`` (the bf16
accuracy check: same seeds, same draws; its own table, paired with the fp32 run).

Tasks: ``sst2_1k`` / ``sst2_5k``: 1,000 / 5,000 SST-2 training sentences (tltext's
``--max_train_samples`` draw by seed; tltext holds 10 % of them out for selection, the
peer trains on all) -> the 872 SST-2 validation sentences; ``amazon_b2k``: all 2,000
books reviews -> all 2,000 kitchen reviews (no target data). Max length 256 on both
sides (tltext's default ``--max_seq_length``; the peers are given the same length, so
they see the same text: no SST-2 sentence passes 66 tokens, 55 % of the books and 30 % of
the kitchen reviews pass 128). Each run is its own process (one torch thread); finished
runs are reused.
tltext runs pass ``--record_oracle``: the test accuracy after every epoch is recorded (never
used for selection), so the table can set the epoch the source validation split selected
against the last epoch.
Writes ``benchmarks/results/defaults.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.environ.get("TLTEXT_DATA", os.path.join(ROOT, "..", "shared", "data"))
TASKS = {
    "sst2_1k": ("sst2/train.jsonl", "sst2/validation.jsonl", 1000),
    "sst2_5k": ("sst2/train.jsonl", "sst2/validation.jsonl", 5000),
    "amazon_b2k": ("amazon/books.jsonl", "amazon/kitchen.jsonl", None),
}
MAX_LENGTH = 256  # tltext's default --max_seq_length, given to the peers too
TOP_K = 2


def train_rows(task: str, seed: int) -> List[Dict]:
    """The training rows tltext's ``--max_train_samples N --seed S`` draws (all rows when N is None)."""
    import numpy as np

    train, _, n = TASKS[task]
    rows = [json.loads(l) for l in open(os.path.join(DATA, train))]
    if n and n < len(rows):
        idx = sorted(np.random.default_rng(seed).choice(len(rows), n, replace=False).tolist())
        rows = [rows[i] for i in idx]
    return rows


def test_rows(task: str) -> List[Dict]:
    return [json.loads(l) for l in open(os.path.join(DATA, TASKS[task][1]))]


# --------------------------------------------------------------------------- tltext
def tltext_cmd(task: str, tuning: str, seed: int, out: str) -> List[str]:
    train, test, n = TASKS[task]
    cmd = [sys.executable, os.path.join(ROOT, "recipes", "text_classification.py"),
           "--train_file", os.path.join(DATA, train), "--test_file", os.path.join(DATA, test),
           "--tuning", tuning, "--seed", str(seed), "--output_dir", out, "--overwrite_output_dir",
           "--disable_tqdm", "--report", "False", "--save_model", "False", "--record_oracle"]
    return cmd + (["--max_train_samples", str(n)] if n else [])


# --------------------------------------------------------------------------- peers
def peer_frozen(task: str, seed: int) -> Dict:
    """LogisticRegressionCV on the same embeddings tltext caches (same backbone, pooling, length)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegressionCV

    from tltext.backbones import load_backbone
    from tltext.trainer import default_model
    from tltext.training.predict import EmbeddingCache, Predictor
    from accelerate import Accelerator

    tr, te = train_rows(task, seed), test_rows(task)
    bb = load_backbone("text", default_model("text"), max_length=MAX_LENGTH)
    cache = EmbeddingCache(Predictor(Accelerator(), 64, True))
    t0 = time.perf_counter()
    xtr = cache.encode(bb, [r["text"] for r in tr], "train").numpy()
    xte = cache.encode(bb, [r["text"] for r in te], "test").numpy()
    labels = sorted({r["label"] for r in tr})
    ytr = np.array([labels.index(r["label"]) for r in tr])
    yte = np.array([labels.index(r["label"]) for r in te])
    t1 = time.perf_counter()
    variants = {}
    for name, f in (("raw", lambda x: x), ("unit", lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))):
        clf = LogisticRegressionCV(Cs=[0.01, 0.1, 1, 10, 100], cv=5, max_iter=5000, random_state=seed).fit(f(xtr), ytr)
        variants[name] = (float((clf.predict(f(xte)) == yte).mean()), float(clf.C_[0]))
    best = max(variants, key=lambda k: variants[k][0])
    return {"accuracy": variants[best][0], "train_seconds": time.perf_counter() - t1, "encode_seconds": t1 - t0,
            "variants": {k: {"accuracy": a, "C": c} for k, (a, c) in variants.items()},
            "settings": f"LogisticRegressionCV(Cs=0.01..100, cv=5) on {best} embeddings, C={variants[best][1]:g} ("
                        + ", ".join(f"{k}: {100 * a:.2f} % at C={c:g}" for k, (a, c) in variants.items()) + ")"}


def peer_trainer(task: str, tuning: str, seed: int) -> Dict:
    import datasets
    import numpy as np
    import tempfile
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from tltext.trainer import default_model

    path = default_model("text")
    tr, te = train_rows(task, seed), test_rows(task)
    labels = sorted({r["label"] for r in tr})
    tok = AutoTokenizer.from_pretrained(path)

    def ds(rows):
        d = datasets.Dataset.from_list([{"text": r["text"], "label": labels.index(r["label"])} for r in rows])
        return d.map(lambda b: tok(b["text"], truncation=True, max_length=MAX_LENGTH), batched=True, remove_columns=["text"])

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    if tuning == "partial":  # freeze embeddings and every transformer layer but the top TOP_K
        layers = model.base_model.encoder.layer
        for p in model.base_model.parameters():
            p.requires_grad_(False)
        for layer in layers[-TOP_K:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        for p in model.base_model.pooler.parameters():
            p.requires_grad_(True)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, seed=seed, report_to=[], save_strategy="no", logging_strategy="no",
                                 disable_tqdm=True, use_cpu=True)
        trainer = Trainer(model=model, args=args, train_dataset=ds(tr), data_collator=DataCollatorWithPadding(tok))
        t0 = time.perf_counter()
        trainer.train()
        secs = time.perf_counter() - t0
        pred = trainer.predict(ds(te))
    acc = float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())
    return {"accuracy": acc, "train_seconds": secs,
            "settings": "transformers Trainer defaults (lr 5e-5, 3 epochs, batch 8, linear, no warmup)"
                        + (f"; embeddings + layers 0..{len(model.base_model.encoder.layer) - TOP_K - 1} frozen"
                           if tuning == "partial" else "")}


def child(a) -> int:
    import torch

    torch.set_num_threads(1)
    res = peer_frozen(a.task, a.seed) if a.tuning == "frozen" else peer_trainer(a.task, a.tuning, a.seed)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.replace(tmp, a.out)
    return 0


# --------------------------------------------------------------------------- driver
def run_one(side: str, task: str, tuning: str, seed: int, root: str) -> Dict:
    out = os.path.join(root, f"{side}-{task}-{tuning}-s{seed}")
    done = os.path.join(out, "row.json")
    if os.path.exists(done):
        return json.load(open(done))
    os.makedirs(out, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    if side in ("tltext", "tltext_bf16"):
        cmd = tltext_cmd(task, tuning, seed, os.path.join(out, "run"))
        cmd += ["--mixed_precision", "bf16"] if side == "tltext_bf16" else []
        rc = subprocess.call(cmd, stdout=open(out + ".log", "w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        if rc:
            raise RuntimeError(f"{cmd}: exit {rc}; see {out}.log")
        r = json.load(open(os.path.join(out, "run", "results.json")))
        row = {"accuracy": r["test"]["accuracy"], "train_seconds": r["timing"]["train_seconds"],
               "settings": "tltext defaults: " + " ".join(cmd[cmd.index("--tuning"):cmd.index("--tuning") + 2])
                           + (" --mixed_precision bf16" if side == "tltext_bf16" else ""),
               "precision_ran": r["training"]["precision"],
               "head": r["training"].get("head") or r["training"].get("head_init"),
               "optimizer_steps": r["training"]["optimizer_steps"], "selected_epoch": r.get("best_epoch"),
               "epoch_test_accuracy": [h.get("oracle_test_metric") for h in r.get("history", [])]}
    else:
        res = os.path.join(out, "peer.json")
        cmd = [sys.executable, __file__, "--child", "--task", task, "--tuning", tuning, "--seed", str(seed), "--out", res]
        rc = subprocess.call(cmd, stdout=open(out + ".log", "w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        if rc:
            raise RuntimeError(f"peer {task} {tuning} seed {seed}: exit {rc}; see {out}.log")
        row = json.load(open(res))
    row.update(side=side, task=task, tuning=tuning, seed=seed, wall_seconds=time.perf_counter() - t0)
    with open(done + ".tmp", "w") as f:
        json.dump(row, f)
    os.replace(done + ".tmp", done)
    return row


def table(rows: List[Dict]) -> str:
    lines = ["| task | tuning | tltext defaults (%) | peer (%) | tltext - peer (points) | n |", "|---|---|---|---|---|---|"]
    keys = sorted({(r["task"], r["tuning"]) for r in rows}, key=lambda k: (list(TASKS).index(k[0]), k[1]))
    for task, tuning in keys:
        cell = {}
        for side in ("tltext", "peer"):
            accs = [100 * r["accuracy"] for r in rows if (r["task"], r["tuning"], r["side"]) == (task, tuning, side)]
            cell[side] = accs
        fmt = lambda a: "-" if not a else f"{statistics.mean(a):.1f} +- {statistics.stdev(a) if len(a) > 1 else 0:.1f}"
        diff = (f"{statistics.mean(cell['tltext']) - statistics.mean(cell['peer']):+.2f}"
                if cell["tltext"] and cell["peer"] else "-")
        lines.append(f"| {task} | {tuning} | {fmt(cell['tltext'])} | {fmt(cell['peer'])} | {diff} | "
                     f"{len(cell['tltext'])}/{len(cell['peer'])} |")
    return "\n".join(lines)


def bf16_table(rows: List[Dict]) -> str:
    """fp32 vs bf16 tltext runs paired by (task, tuning, seed): the bf16 accuracy check."""
    by = {(r["side"], r["task"], r["tuning"], r["seed"]): r for r in rows}
    lines = ["| task | tuning | seed | fp32 (%) | bf16 (%) | bf16 - fp32 | train s fp32 / bf16 |", "|---|---|---|---|---|---|---|"]
    for (side, task, tuning, seed), b in sorted(by.items()):
        f = by.get(("tltext", task, tuning, seed))
        if side != "tltext_bf16" or f is None:
            continue
        lines.append(f"| {task} | {tuning} | {seed} | {100 * f['accuracy']:.2f} | {100 * b['accuracy']:.2f} | "
                     f"{100 * (b['accuracy'] - f['accuracy']):+.2f} | {f['train_seconds']:.0f} / {b['train_seconds']:.0f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def selection_table(rows: List[Dict]) -> str:
    """tltext runs with the test metric recorded per epoch (``--record_oracle``, never used for
    selection): the epoch the source validation split selected against the last epoch."""
    lines = ["| task | tuning | side | seed | selected epoch | test at selected (%) | test at last epoch (%) | last - selected |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (list(TASKS).index(r["task"]), r["tuning"], r["side"], r["seed"])):
        acc = r.get("epoch_test_accuracy") or []
        if len(acc) < 2 or None in acc or r.get("selected_epoch") is None:
            continue
        sel, last = 100 * acc[r["selected_epoch"]], 100 * acc[-1]
        lines.append(f"| {r['task']} | {r['tuning']} | {r['side']} | {r['seed']} | {r['selected_epoch'] + 1} of {len(acc)} | "
                     f"{sel:.2f} | {last:.2f} | {last - sel:+.2f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--tunings", nargs="+", default=["frozen", "partial", "full"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--sides", nargs="+", default=["tltext", "peer"])
    p.add_argument("--output_root", default=os.path.join(ROOT, "runs", "defaults"))
    p.add_argument("--child", action="store_true")
    p.add_argument("--task"), p.add_argument("--tuning"), p.add_argument("--seed", type=int), p.add_argument("--out")
    a = p.parse_args()
    if a.child:
        return child(a)
    rows = []
    for task in a.tasks:
        for tuning in a.tunings:
            for seed in a.seeds:
                for side in a.sides:
                    try:
                        rows.append(run_one(side, task, tuning, seed, a.output_root))
                        r = rows[-1]
                        print(f"{side} {task} {tuning} seed {seed}: {100 * r['accuracy']:.1f} ({r['wall_seconds']:.0f}s)",
                              flush=True)
                    except RuntimeError as e:
                        print(f"FAILED: {e}", flush=True)
    res_dir = os.path.join(ROOT, "benchmarks", "results")
    path = os.path.join(res_dir, "defaults.json")
    old = json.load(open(path))["rows"] if os.path.exists(path) else []
    key = lambda r: (r["side"], r["task"], r["tuning"], r["seed"])
    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in rows})
    allrows = sorted(merged.values(), key=key)
    bf16, selection = bf16_table(allrows), selection_table(allrows)
    for name, text in (("defaults.json", json.dumps({"doc": __doc__, "rows": allrows}, indent=1)),
                       ("defaults.md", table([r for r in allrows if r["side"] != "tltext_bf16"]) + "\n"
                        + (f"\nbf16 accuracy check (tltext defaults plus --mixed_precision bf16, same seeds):\n\n"
                           f"{bf16}\n" if bf16 else "")
                        + (f"\nSelection check (tltext runs record the test accuracy after every epoch with "
                           f"--record_oracle; it is never used for selection): the epoch the 10 % source validation "
                           f"split selected against the last epoch.\n\n{selection}\n" if selection else ""))):
        with open(os.path.join(res_dir, name + ".tmp"), "w") as f:
            f.write(text)
        os.replace(os.path.join(res_dir, name + ".tmp"), os.path.join(res_dir, name))
    print(table([r for r in allrows if r["side"] != "tltext_bf16"]))
    print(bf16)
    return 0


if __name__ == "__main__":
    sys.exit(main())
