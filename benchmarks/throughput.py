#!/usr/bin/env python
"""Full fine-tuning throughput: tltext's engine vs the transformers ``Trainer``.

Same model (all-MiniLM-L6-v2), same SST-2 sentences, batch size, max length and
number of optimizer steps; each side runs in its own child process (peak RSS is
per process). tltext: dynamic padding + length-grouped batches + one forward per
step. Trainer: its defaults (dynamic padding through the tokenizer's collator),
no evaluation, no saving, no logging integrations. The two sides run
``--repeats`` times, interleaved; the fastest run of each side gives the
throughput ratio and the highest peak RSS of each side the memory ratio
(every run is stored).

    python benchmarks/throughput.py [--steps 60] [--batch_size 32] [--max_length 64] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import DATA, peak_rss_mb, record  # noqa: E402


def _rows(n):
    src = os.path.join(DATA, "sst2", "train.jsonl")
    return [json.loads(l) for _, l in zip(range(n), open(src))]


def child_tltext(a) -> dict:
    from tltext.experiment import parse_and_run

    with tempfile.TemporaryDirectory() as tmp:
        train = os.path.join(tmp, "train.jsonl")
        with open(train, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in _rows(a.steps * a.batch_size))
        res = parse_and_run("text", ["--train_file", train, "--validation_split_percentage", "0", "--tuning", "full",
                                     "--max_train_steps", str(a.steps), "--per_device_train_batch_size", str(a.batch_size),
                                     "--max_seq_length", str(a.max_length), "--learning_rate", "5e-5",
                                     "--output_dir", os.path.join(tmp, "o"), "--disable_tqdm", "--report", "False",
                                     "--save_model", "False", "--seed", "0"])
    return {"samples_per_second": res["timing"]["train_samples_per_second"], "seconds": res["timing"]["train_seconds"],
            "heap_trims": res["timing"]["heap_trims"], "peak_rss_mb": peak_rss_mb()}


def child_trainer(a) -> dict:
    import datasets
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from tltext.experiment import default_model

    path = default_model("text")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    rows = _rows(a.steps * a.batch_size)
    ds = datasets.Dataset.from_list([{"text": r["text"], "label": int(r["label"] == "positive")} for r in rows])
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=a.max_length), batched=True, remove_columns=["text"])
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=a.batch_size, max_steps=a.steps,
                                 learning_rate=5e-5, report_to=[], save_strategy="no", logging_strategy="no",
                                 disable_tqdm=True, seed=0, use_cpu=True, dataloader_num_workers=0)
        tr = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok))
        t0 = time.perf_counter()
        out = tr.train()
        secs = time.perf_counter() - t0
    return {"samples_per_second": a.steps * a.batch_size / secs, "seconds": secs,
            "trainer_reported_samples_per_second": out.metrics.get("train_samples_per_second"), "peak_rss_mb": peak_rss_mb()}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", choices=["tltext", "trainer"])
    a = p.parse_args()
    if a.child:
        print(json.dumps(child_tltext(a) if a.child == "tltext" else child_trainer(a)))
        return 0
    import subprocess

    every = {"trainer": [], "tltext": []}
    for who in ("trainer", "tltext") * a.repeats:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", who, "--steps", str(a.steps),
               "--batch_size", str(a.batch_size), "--max_length", str(a.max_length)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        every[who].append(json.loads(out.stdout.strip().splitlines()[-1]))
    res = {who: {"samples_per_second": max(r["samples_per_second"] for r in runs),
                 "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)} for who, runs in every.items()}
    ratio = res["tltext"]["samples_per_second"] / res["trainer"]["samples_per_second"]
    rss = res["tltext"]["peak_rss_mb"] / res["trainer"]["peak_rss_mb"]
    res.update({"every_run": every, "steps": a.steps, "batch_size": a.batch_size, "max_length": a.max_length,
                "repeats": a.repeats, "throughput_ratio": round(ratio, 3), "peak_rss_ratio": round(rss, 3)})
    record("throughput", f"python benchmarks/throughput.py --steps {a.steps} --batch_size {a.batch_size} "
           f"--max_length {a.max_length} --repeats {a.repeats}",
           res, [("throughput_vs_trainer", ratio, ">=1.2"), ("peak_rss_vs_trainer", rss, "<=1.0")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
