#!/usr/bin/env python
"""Batched encoding: tltext's frozen-path encoder vs sentence-transformers ``encode``.

Same model (all-MiniLM-L6-v2, mean pooling), the same N texts, batch size and
max length, one process; both sort by length. Each side runs --repeats times,
alternating, and the fastest time of each counts (this 2-core machine's run-to-run
noise is about +-10 %).

    python benchmarks/embed_speed.py [--n 2000] [--batch_size 64]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import DATA, record  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", default=os.path.join(DATA, "amazon", "books.jsonl"))
    a = p.parse_args()
    import torch
    from accelerate import Accelerator
    from sentence_transformers import SentenceTransformer

    from tltext.backbones import TextBackbone
    from tltext.experiment import default_model
    from tltext.training.engine import Engine

    texts = [json.loads(l)["text"] for _, l in zip(range(a.n), open(a.data))]
    path = default_model("text")
    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = a.max_length
    bb = TextBackbone.from_pretrained(path, max_length=a.max_length).eval()
    acc = Accelerator(cpu=True)

    class _A:  # the engine only needs these fields for inference
        per_device_eval_batch_size = a.batch_size

    eng = Engine(acc, _A(), disable_tqdm=True)

    def run_tltext():
        t0 = time.perf_counter()
        z = eng.infer(lambda b: bb(**bb.collate(b["raw"])), texts, [len(t) for t in texts], a.batch_size, "encode")
        return time.perf_counter() - t0, z

    def run_st():
        t0 = time.perf_counter()
        z = st.encode(texts, batch_size=a.batch_size, convert_to_tensor=True, normalize_embeddings=False)
        return time.perf_counter() - t0, z

    times = {"tltext": [], "sentence_transformers": []}
    for _ in range(a.repeats):
        t, z1 = run_tltext()
        times["tltext"].append(t)
        t, z2 = run_st()
        times["sentence_transformers"].append(t)
    # the sentence-transformers pipeline of this model ends in a Normalize module: compare unit vectors
    max_diff = float((torch.nn.functional.normalize(z1, dim=-1) - z2.cpu()).abs().max())
    best = {k: min(v) for k, v in times.items()}
    ratio = best["sentence_transformers"] / best["tltext"]
    rows = {"texts": a.n, "batch_size": a.batch_size, "max_length": a.max_length, "seconds": times,
            "tltext_texts_per_second": a.n / best["tltext"],
            "st_texts_per_second": a.n / best["sentence_transformers"],
            "max_abs_difference_of_unit_embeddings": max_diff, "speed_ratio": round(ratio, 3)}
    record("embed_speed", f"python benchmarks/embed_speed.py --n {a.n} --batch_size {a.batch_size} --repeats {a.repeats}", rows,
           [("embed_vs_sentence_transformers", ratio, ">=1.0")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
