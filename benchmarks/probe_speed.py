#!/usr/bin/env python
"""Frozen probe, 10 epochs: tltext's cached path vs re-encoding every epoch.

The baseline is the usual feature-extractor loop: every epoch, every batch is
tokenised and encoded (no grad) and the linear head takes a step. tltext encodes
each example once (sorted by length) and trains the head on cached embeddings.
Both: all-MiniLM-L6-v2, the same N SST-2 sentences, batch 32, max length 64,
lr 1e-3, 10 epochs; tltext starts from an empty cache.

    python benchmarks/probe_speed.py [--n 2000]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import DATA, record  # noqa: E402


def reencode_loop(texts, labels, epochs, bs, max_len, lr, seed):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tltext.backbones.pooling import pool
    from tltext.experiment import default_model

    torch.manual_seed(seed)
    path = default_model("text")
    tok, enc = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    head = torch.nn.Linear(enc.config.hidden_size, 2)
    opt = torch.optim.AdamW(head.parameters(), lr=lr)
    y = torch.tensor(labels)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(texts))
        for s in range(0, len(texts), bs):
            idx = perm[s:s + bs]
            batch = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            with torch.no_grad():
                z = pool(enc(**batch).last_hidden_state, batch["attention_mask"], "mean")
            loss = torch.nn.functional.cross_entropy(head(z), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=10)
    a = p.parse_args()
    src = os.path.join(DATA, "sst2", "train.jsonl")
    rows = [json.loads(l) for _, l in zip(range(a.n), open(src))]
    texts = [r["text"] for r in rows]
    labels = [int(r["label"] == "positive") for r in rows]
    from tltext.experiment import parse_and_run

    with tempfile.TemporaryDirectory() as tmp:
        train = os.path.join(tmp, "train.jsonl")
        with open(train, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        t0 = time.perf_counter()
        res = parse_and_run("text", ["--train_file", train, "--validation_split_percentage", "0", "--tuning", "frozen",
                                     "--num_train_epochs", str(a.epochs), "--per_device_train_batch_size", "32",
                                     "--max_seq_length", "64", "--learning_rate", "1e-3", "--output_dir",
                                     os.path.join(tmp, "out"), "--cache_dir", os.path.join(tmp, "cache"),
                                     "--disable_tqdm", "--report", "False", "--save_model", "False"])
        tl = time.perf_counter() - t0
    base = reencode_loop(texts, labels, a.epochs, 32, 64, 1e-3, 0)
    ratio = base / tl
    rows_out = {"examples": a.n, "epochs": a.epochs, "tltext_seconds_total": round(tl, 2),
                "tltext_encode_seconds": round(res["timing"]["encode_seconds"], 2),
                "tltext_head_train_seconds": round(res["timing"]["train_seconds"], 2),
                "reencode_every_epoch_seconds": round(base, 2), "speedup": round(ratio, 2)}
    record("probe_speed", f"python benchmarks/probe_speed.py --n {a.n} --epochs {a.epochs}", rows_out,
           [("probe_cached_vs_reencode", ratio, ">=8")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
