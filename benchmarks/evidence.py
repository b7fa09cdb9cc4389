#!/usr/bin/env python
"""Regenerate ``tltext/diagnostics/evidence.json`` (what ``tltext diagnose`` recommends from)
from the measured results files, so the recommendation and the numbers it prints are
exactly those of the benchmark runs.

* ``rows``: label-free domain adaptation, from ``benchmarks/results/quality_amazon.json``:
  every (tuning, objective) measured on BOTH books->kitchen and kitchen->books (rows whose
  name carries a ``[...]`` qualifier, e.g. superseded settings, are left out, and so are rows with
  fewer than ``MIN_SEEDS`` seeds in a direction, e.g. a one-seed pilot); accuracy =
  the mean of the two directions' seed means; ``source_only`` = the same tuning's erm row.
* ``few_shot_rows``: from ``benchmarks/results/fewshot.json`` (BANKING77): each tltext
  strategy's mean over seeds at each K.

    python benchmarks/evidence.py [--check]   # --check: exit 1 if the file is out of date
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
EVIDENCE = os.path.join(ROOT, "tltext", "diagnostics", "evidence.json")
PAIRS = ("B->K", "K->B")
# labels per class the configuration needs (the diagnose rule-of-thumb thresholds): frozen runs
# are recommended from 50 per class, trainable encoders from 200
MIN_LABELS = {"frozen": 50, "partial": 200, "full": 200}
MIN_SEEDS = 3  # a configuration is recommended from only when each direction has this many seeds
FEW_SHOT_FLAGS = {"contrastive_full": "--tuning full --objective contrastive",
                  "probe_frozen": "--tuning frozen --objective erm",
                  "prototypes_frozen": "--tuning frozen --objective prototypes"}
DOC = ("Measured results that `tltext diagnose` recommends from, written by benchmarks/evidence.py from the files named "
       "in `measurement` (do not edit by hand). `rows`: label-free domain adaptation, mean target-test accuracy (%) over "
       "seeds and both Amazon directions (books->kitchen, kitchen->books), all-MiniLM-L6-v2, 2,000 labelled source "
       "reviews, selection on the source validation split; `source_only` is the same tuning with --objective erm. "
       "`few_shot_rows`: mean test accuracy (%) over seeds at `shots` labelled examples per class on `task`, recommended "
       "from when the rarest class has <= 10 labels.")


def _r2(x: float) -> float:
    return round(x, 2)


def da_rows(quality: Dict[str, Any]) -> List[Dict[str, Any]]:
    by = {r["name"]: r for r in quality["rows"] if "[" not in r["name"]}
    configs = []
    for name in by:
        pair, tuning, obj = name.split(" ", 2)
        if pair == PAIRS[0] and all(f"{p} {tuning} {obj}" in by and len(by[f"{p} {tuning} {obj}"]["runs"]) >= MIN_SEEDS
                                    for p in PAIRS):
            configs.append((tuning, obj))
    rows = []
    for tuning, obj in configs:
        means = {p: by[f"{p} {tuning} {obj}"]["mean"] for p in PAIRS}
        so = {p: by[f"{p} {tuning} source-only"]["mean"] for p in PAIRS} if all(
            f"{p} {tuning} source-only" in by for p in PAIRS) else means
        n = {p: len(by[f"{p} {tuning} {obj}"]["runs"]) for p in PAIRS}
        rows.append({"modality": "text", "flags": f"--tuning {tuning} --objective {'erm' if obj == 'source-only' else obj}",
                     "accuracy": _r2(statistics.mean(means.values())), "source_only": _r2(statistics.mean(so.values())),
                     "min_labels_per_class": MIN_LABELS[tuning],
                     "measurement": f"benchmarks/results/quality_amazon.json ({tuning} {obj}: "
                                    + ", ".join(f"{p} {means[p]:.1f} (n={n[p]})" for p in PAIRS) + ")"})
    return rows


def few_shot_rows(fewshot: Dict[str, Any]) -> List[Dict[str, Any]]:
    acc: Dict[tuple, List[float]] = {}
    for r in fewshot["runs"]:
        if r["strategy"] in FEW_SHOT_FLAGS:
            acc.setdefault((r["strategy"], r["k"]), []).append(100 * r["accuracy"])
    rows = []
    for (strategy, k), xs in sorted(acc.items(), key=lambda kv: (-kv[0][1], -statistics.mean(kv[1]))):
        rows.append({"modality": "text", "flags": FEW_SHOT_FLAGS[strategy], "accuracy": _r2(statistics.mean(xs)),
                     "shots": k, "task": "BANKING77 (77 intents)",
                     "measurement": f"benchmarks/results/fewshot.json ({strategy}, K={k}, n={len(xs)}; full 3,080-row "
                                    "test split)"})
    return rows


def build() -> str:
    quality = json.load(open(os.path.join(RESULTS, "quality_amazon.json")))
    fewshot = json.load(open(os.path.join(RESULTS, "fewshot.json")))
    lines = ",\n".join("    " + json.dumps(r) for r in da_rows(quality))
    fs = ",\n".join("    " + json.dumps(r) for r in few_shot_rows(fewshot))
    return ('{\n  "doc": ' + json.dumps(DOC) + ',\n  "rows": [\n' + lines + '\n  ],\n  "few_shot_rows": [\n' + fs
            + "\n  ]\n}\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 when evidence.json differs from the results files")
    a = p.parse_args(argv)
    text = build()
    current = open(EVIDENCE).read() if os.path.exists(EVIDENCE) else ""
    if a.check:
        if text != current:
            print(f"{EVIDENCE} is out of date: run python benchmarks/evidence.py", file=sys.stderr)
            return 1
        return 0
    tmp = EVIDENCE + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, EVIDENCE)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
