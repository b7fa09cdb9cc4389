#!/usr/bin/env python
"""Full fine-tuning throughput: tltext's engine vs the transformers ``Trainer``.

Same model (all-MiniLM-L6-v2), same SST-2 sentences, batch size, max length and
number of optimizer steps; each side runs in its own child process (peak RSS is
per process). tltext: its defaults for ``--tuning full`` (dynamic padding,
length-grouped batches, one forward per step), ``--mixed_precision bf16`` in the
bf16 rows. Trainer, with dynamic padding through the tokenizer's collator, no
evaluation, no saving, no logging integrations, in two configurations: its
defaults (``train_sampling_strategy="random"``) and length grouping
(``train_sampling_strategy="group_by_length"``, the old ``group_by_length=True``),
each in fp32 and with ``bf16=True``. Every configuration runs ``--repeats``
times, interleaved; the fastest run of each gives its throughput and the highest
peak RSS its memory (every run is stored). The goal is stated against the
best-configured Trainer of each precision.

    python benchmarks/throughput.py [--steps 60] [--batch_size 32] [--max_length 64] [--repeats 3]
        [--precisions fp32 bf16]
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
                                     "--save_model", "False", "--seed", "0",
                                     "--mixed_precision", "bf16" if a.precision == "bf16" else "no"])
    return {"samples_per_second": res["timing"]["train_samples_per_second"], "seconds": res["timing"]["train_seconds"],
            "heap_trims": res["timing"]["heap_trims"], "precision_ran": res["training"]["precision"],
            "peak_rss_mb": peak_rss_mb()}


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
                                 disable_tqdm=True, seed=0, use_cpu=True, dataloader_num_workers=0,
                                 train_sampling_strategy=a.trainer_sampling, bf16=a.precision == "bf16")
        tr = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok))
        t0 = time.perf_counter()
        out = tr.train()
        secs = time.perf_counter() - t0
    return {"samples_per_second": a.steps * a.batch_size / secs, "seconds": secs,
            "trainer_reported_samples_per_second": out.metrics.get("train_samples_per_second"), "peak_rss_mb": peak_rss_mb()}


CONFIGS = {  # name -> (child, Trainer sampling)
    "trainer": ("trainer", "random"),
    "trainer_group_by_length": ("trainer", "group_by_length"),
    "tltext": ("tltext", None),
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--child", choices=["tltext", "trainer"])
    p.add_argument("--trainer_sampling", default="random", choices=["random", "group_by_length"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = p.parse_args()
    if a.child:
        print(json.dumps(child_tltext(a) if a.child == "tltext" else child_trainer(a)))
        return 0
    import subprocess

    every = {f"{name} {prec}": [] for prec in a.precisions for name in CONFIGS}
    for _ in range(a.repeats):
        for key in every:
            name, prec = key.split()
            child, sampling = CONFIGS[name]
            cmd = [sys.executable, os.path.abspath(__file__), "--child", child, "--steps", str(a.steps),
                   "--batch_size", str(a.batch_size), "--max_length", str(a.max_length), "--precision", prec,
                   "--trainer_sampling", sampling or "random"]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            every[key].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(key, f"{every[key][-1]['samples_per_second']:.1f} samples/s", flush=True)
    best = {key: {"samples_per_second": max(r["samples_per_second"] for r in runs),
                  "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)} for key, runs in every.items()}
    checks, ratios = [], {}
    for prec in a.precisions:
        ours = best[f"tltext {prec}"]
        for name in ("trainer", "trainer_group_by_length"):
            peer = best[f"{name} {prec}"]
            ratios[f"{prec} vs {name}"] = {
                "throughput_ratio": round(ours["samples_per_second"] / peer["samples_per_second"], 3),
                "peak_rss_ratio": round(ours["peak_rss_mb"] / peer["peak_rss_mb"], 3)}
        peer_name = max(("trainer", "trainer_group_by_length"), key=lambda n: best[f"{n} {prec}"]["samples_per_second"])
        r = ratios[f"{prec} vs {peer_name}"]
        checks += [(f"throughput_vs_best_trainer_{prec}", r["throughput_ratio"], ">=1.2"),
                   (f"peak_rss_vs_best_trainer_{prec}", r["peak_rss_ratio"], "<=1.0")]
    res = {"configurations": {
               "tltext": "recipes' defaults for --tuning full (length-grouped batches, dynamic padding); "
                         "--mixed_precision bf16 in the bf16 rows",
               "trainer": "transformers Trainer, train_sampling_strategy='random' (its default), DataCollatorWithPadding; "
                          "bf16=True in the bf16 rows",
               "trainer_group_by_length": "transformers Trainer, train_sampling_strategy='group_by_length', "
                                          "DataCollatorWithPadding; bf16=True in the bf16 rows"},
           "best": best, "ratios": ratios, "every_run": every, "steps": a.steps, "batch_size": a.batch_size,
           "max_length": a.max_length, "repeats": a.repeats, "precisions": a.precisions}
    record("throughput", f"python benchmarks/throughput.py --steps {a.steps} --batch_size {a.batch_size} "
           f"--max_length {a.max_length} --repeats {a.repeats} --precisions {' '.join(a.precisions)}", res, checks)
    return 0

if __name__ == "__main__":
    sys.exit(main())
