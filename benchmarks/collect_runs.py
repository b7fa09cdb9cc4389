#!/usr/bin/env python
"""Tabulate finished runs (OUT/results.json) that were launched by hand, e.g. one-seed
ablations, so their numbers and the exact flags they ran with are kept in benchmarks/results.

    python benchmarks/collect_runs.py --name NAME --title "..." RUN_DIR [RUN_DIR ...]

Writes benchmarks/results/NAME.{json,md}: per run the test and validation accuracy, the
training seconds, the learning rates that ran and the recipe flags (``args`` of results.json
that differ from the recipe defaults, leaving out objective flags the run's objective does not
read), through a temp file + rename.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SHOWN = ("train_file", "test_file", "target_file", "max_train_samples", "max_seq_length", "tuning", "objective",
         "da_weight", "num_train_epochs", "learning_rate", "head_learning_rate", "head_init", "mixed_precision", "seed")
# flags that change where/how a run reports, not what it trains (the footnote states them)
NOT_SHOWN = ("output_dir", "overwrite_output_dir", "disable_tqdm", "save_model", "report")


def _defaults() -> Dict[str, Any]:
    from tltext.args import DataArguments, ModelArguments, TrainArguments

    out: Dict[str, Any] = {}
    for cls in (ModelArguments, DataArguments, TrainArguments):
        out.update({k: v.default_factory() if v.default is dataclasses.MISSING else v.default
                    for k, v in cls.__dataclass_fields__.items()})
    return out


RECIPES = {"text": "text_classification.py", "speech": "audio_classification.py", "image": "image_classification.py"}


def _value(key: str, v: Any) -> str:
    """A flag's value as typed on the command line (files by name, lists space-separated)."""
    if key.endswith("_file"):
        return os.path.basename(str(v))
    if isinstance(v, str) and v.startswith(ROOT + os.sep):  # a path inside the repository: relative to it
        return os.path.relpath(v, ROOT)
    return " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def row(path: str, defaults: Dict[str, Any]) -> Dict[str, Any]:
    r = json.load(open(os.path.join(path, "results.json")))
    a, t = r.get("args", {}), r.get("training", {})
    from types import SimpleNamespace

    from tltext import objectives
    from tltext.args import BACKBONE_OPTIONS

    # objective flags no term of the run's objective read (their defaults may have changed since); the
    # backbone's own (SpecAugment) are read whatever the objective
    unread = objectives.unread_options(a.get("objective", "erm"), SimpleNamespace(**a),
                                       read_elsewhere=BACKBONE_OPTIONS.get(r.get("modality", "text"), ()))
    keys = [k for k in SHOWN if k in a] + sorted(k for k in a if k not in SHOWN and k not in NOT_SHOWN and k not in unread)
    flags = " ".join(f"--{k} {_value(k, a[k])}" for k in keys
                     if a[k] is not None and (k.endswith("_file") or a[k] != defaults.get(k)))
    name = os.path.basename(os.path.normpath(path))
    if name == "run":  # benchmarks/defaults.py layout: SIDE-TASK-TUNING-sSEED/run
        name = os.path.basename(os.path.dirname(os.path.normpath(path)))
    return {"run": name, "path": os.path.normpath(path), "recipe": RECIPES.get(r.get("modality", "text"), "?"),
            "test_accuracy": r["test"]["accuracy"],
            "validation_accuracy": (r.get("validation") or {}).get("accuracy"),
            "train_seconds": r["timing"]["train_seconds"], "precision": t.get("precision"),
            "learning_rates": {k: t[k] for k in ("learning_rate", "head_learning_rate", "objective_learning_rate") if k in t},
            "head_init": t.get("head_init", "random" if a.get("head_init") == "random" else None), "flags": flags}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--title", required=True)
    p.add_argument("runs", nargs="+")
    a = p.parse_args(argv)
    d = _defaults()
    rows: List[Dict[str, Any]] = [row(x, d) for x in a.runs if os.path.exists(os.path.join(x, "results.json"))]
    names = [r["run"] for r in rows]
    for r in rows:  # the same folder name under different parents: name the parent too
        if names.count(r["run"]) > 1:
            r["run"] = os.path.join(os.path.basename(os.path.dirname(r["path"])), r["run"])
    md = [f"# {a.title}", "", "| run | test acc. (%) | val. acc. (%) | train s | lr / head / objective parts | flags |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        rates = r["learning_rates"]  # "-" where a part did not train (no head: a head computed from features)
        lr = " / ".join(f"{rates[k]:g}" if k in rates else "-"
                        for k in ("learning_rate", "head_learning_rate", "objective_learning_rate")
                        if k in rates or k != "objective_learning_rate")
        val = "-" if r["validation_accuracy"] is None else f"{100 * r['validation_accuracy']:.2f}"
        md.append(f"| {r['run']} | {100 * r['test_accuracy']:.2f} | {val} | {r['train_seconds']:.0f} | {lr} | "
                  f"`{r['flags']}` |")
    recipes = ", ".join(f"`python recipes/{x}`" for x in dict.fromkeys(r["recipe"] for r in rows))
    md += ["", f"Each run: {recipes} with the flags shown (files under ../shared/data; flags that only set where and how "
               "a run reports, such as --output_dir, --disable_tqdm, --report, --save_model, are left out), one torch "
               "thread, on a shared 2-core CPU. "
               f"Written by `python benchmarks/collect_runs.py --name {a.name}`."]
    out = os.path.join(ROOT, "benchmarks", "results", a.name)
    for ext, text in ((".json", json.dumps({"title": a.title, "runs": rows}, indent=1)), (".md", "\n".join(md) + "\n")):
        with open(out + ext + ".tmp", "w") as f:
            f.write(text)
        os.replace(out + ext + ".tmp", out + ext)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
