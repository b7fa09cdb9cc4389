#!/usr/bin/env python
"""Leave-one-speaker-out table of the speech pipeline: for each FSDD target speaker, the
MFCC + logistic-regression baseline against stage 1 (supervised on the three other speakers)
from random weights and from the shared wav2vec 2.0 stage-0 model, over the stage-1 seeds run.

Reads the files ``benchmarks/speech_pretraining.py --name speech_pretraining_long[_TARGET[_sS]]``
wrote (one per target and seed; the MFCC row comes with each) and writes
``benchmarks/results/speech_loso.{json,md}``. No target labels are used by any row except to
score the target test clips.

    python benchmarks/speech_loso.py [--prefix speech_pretraining_long]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
ROWS = (("stage 1 from random weights (no stage 0)", "random"), ("stage 0 (wav2vec 2.0) + stage 1", "pretrained"))


def collect(prefix: str) -> Dict[str, Dict[str, Any]]:
    per: Dict[str, Dict[str, Any]] = {}
    for path in sorted(glob.glob(os.path.join(RESULTS, f"{prefix}*.json"))):
        p = json.load(open(path))
        if p.get("benchmark") != "speech_pretraining":
            continue
        s = p["settings"]
        t = per.setdefault(s["target"], {"runs": {k: [] for _, k in ROWS}, "mfcc": None, "stage0_wall_s": None,
                                          "stage1_wall_s": []})
        seed = s.get("seed", 0)
        for row in p["summary"]["stage1"]:
            key = dict(ROWS)[row["setting"]]
            if all(r["seed"] != seed for r in t["runs"][key]):
                t["runs"][key].append({"seed": seed, "accuracy": 100 * row["target_test_accuracy"],
                                       "source_val_accuracy": 100 * row["source_val_accuracy"], "file": os.path.basename(path)})
                t["stage1_wall_s"].append(row["stage1_wall_seconds"])
        m = p["summary"].get("mfcc")
        if m:
            t["mfcc"] = 100 * m["cross_speaker_accuracy"]
        t["stage0_wall_s"] = p["summary"]["stage0"]["wall_seconds"]
    return per


def _cell(runs: List[Dict[str, Any]]) -> str:
    xs = [r["accuracy"] for r in sorted(runs, key=lambda r: r["seed"])]
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.1f} +- {sd:.1f} (n={len(xs)}: {' / '.join(f'{x:.0f}' for x in xs)})"


def markdown(per: Dict[str, Dict[str, Any]]) -> str:
    lines = ["# FSDD leave-one-speaker-out: wav2vec 2.0 pretraining + supervised stage 1 vs MFCC + LR", "",
             "Three speakers' labelled train takes -> the fourth speaker's 50 test clips (one clip = 2 points). "
             "Stage 0: one `tiny` wav2vec 2.0 model pretrained on all 2,000 FSDD clips without labels (20 epochs, "
             "benchmarks/results/speech_pretraining_long.md), shared by every target. Stage 1: `--tuning full "
             "--objective erm`, 8 epochs, lr 2e-3, selection on 10 % of the source takes; seeds are stage-1 seeds. "
             "MFCC + LR: benchmarks/speech_mfcc.py (40 MFCC mean/std, C by CV, same speakers and takes). "
             "No target labels in training or selection. `python benchmarks/speech_loso.py`.", "",
             "| target | MFCC + LR | stage 1 from random weights | stage 0 + stage 1 | stage 0 + 1 - MFCC |",
             "|---|---|---|---|---|"]
    means = {"random": [], "pretrained": [], "mfcc": []}
    for target in sorted(per):
        t = per[target]
        pre = [r["accuracy"] for r in t["runs"]["pretrained"]]
        gain = f"{statistics.mean(pre) - t['mfcc']:+.1f}" if pre and t["mfcc"] is not None else "-"
        lines.append(f"| {target} | {t['mfcc']:.1f} | {_cell(t['runs']['random'])} | {_cell(t['runs']['pretrained'])} "
                     f"| {gain} |")
        for k in ("random", "pretrained"):
            if t["runs"][k]:
                means[k].append(statistics.mean(r["accuracy"] for r in t["runs"][k]))
        means["mfcc"].append(t["mfcc"])
    if per:
        avg = lambda xs: f"{statistics.mean(xs):.1f}" if xs else "-"
        lines.append(f"| **mean of targets** | {avg(means['mfcc'])} | {avg(means['random'])} | "
                     f"{avg(means['pretrained'])} | |")
        walls = [w for t in per.values() for w in t["stage1_wall_s"]]
        s0 = next(t["stage0_wall_s"] for t in per.values() if t["stage0_wall_s"])
        lines += ["", f"Wall time on this 2-core CPU (shared with other jobs): stage 0 {s0 / 60:.1f} min once; "
                      f"stage 1 {min(walls):.0f}-{max(walls):.0f} s a run."]
    return "\n".join(lines) + "\n"


STAGE2 = (("speech_da_random", "stage 1 from random weights"), ("speech_da_stage0", "stage 0 (20 epochs) + stage 1"),
          ("speech_da_stage0_speed", "stage 0 (20 epochs) + stage 1, speed perturbation 0.9 / 1.0 / 1.1 in stages 1 and 2"),
          ("speech_da_stage0_160ep_speed", "stage 0 (160 epochs) + stage 1, speed perturbation 0.9 / 1.0 / 1.1 in stages 1 "
                                           "and 2"))


def stage2_section() -> List[str]:
    """Stage 2 (adaptation to the target speaker) after each stage 1, from
    ``benchmarks/speech_da.py --name speech_da_random`` / ``--stage0_model ... --name speech_da_stage0``:
    per target, the stage-1 model alone (seed 0) and stage 2 with each objective over the stage-2 seeds."""
    lines: List[str] = []
    for stem, label in STAGE2:
        path = os.path.join(RESULTS, f"{stem}.json")
        if not os.path.exists(path):
            continue
        p = json.load(open(path))
        rows = p["summary"]
        settings = list(dict.fromkeys(r["setting"] for r in rows))
        targets = sorted({r["task"].split(" -> ")[1] for r in rows})
        cell = {(r["task"].split(" -> ")[1], r["setting"]): r for r in rows}
        lines += ["", f"## Stage 2 after {label} (`python benchmarks/speech_da.py --name {stem}`)", "",
                  f"Stage 1: seed 0, once per target. Stage 2: {p['settings']['stage2_epochs']:g} epochs, partial "
                  f"(top {p['settings']['stage2_unfreeze_top_k']} groups), lr {p['settings']['stage2_lr']:g}, "
                  f"{p['settings']['stage2_max_train_samples']} seeded source clips, the target speaker's train "
                  f"takes unlabelled, seeds {', '.join(map(str, p['settings']['seeds']))}; in brackets the "
                  "difference to source-only (erm) paired by seed. Target accuracy (%), mean +- std.", "",
                  "| target | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
        means: Dict[str, List[float]] = {st: [] for st in settings}
        for t in targets:
            cells = []
            for st in settings:
                r = cell.get((t, st))
                if r is None:
                    cells.append("-")
                    continue
                means[st].append(100 * r["mean"])
                d = r.get("delta_vs_source_only")
                txt = f"{100 * r['mean']:.1f}" + (f" +- {100 * r['std']:.1f}" if r.get("std") is not None else "")
                cells.append(txt + (f" ({100 * d['mean']:+.1f})" if d else ""))
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        lines.append("| **mean of targets** | " + " | ".join(
            f"{statistics.mean(v):.1f}" if len(v) == len(targets) else "-" for v in means.values()) + " |")
        walls = [r["wall_seconds"] for r in p["runs"] if r.get("stage") == 2]
        if walls:
            lines += ["", f"Stage-2 wall time: {min(walls):.0f}-{max(walls):.0f} s a run "
                          f"(total of every run {p['total_wall_minutes_of_runs']:.1f} min, one torch thread)."]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prefix", default="speech_pretraining_long",
                   help="stem of the speech_pretraining.py results (PREFIX*.json) under benchmarks/results")
    a = p.parse_args(argv)
    per = collect(a.prefix)
    if not per:
        print(f"no {a.prefix}*.json in {RESULTS}", file=sys.stderr)
        return 1
    md = markdown(per) + "\n".join(stage2_section()) + "\n"
    for name, text in (("speech_loso.json", json.dumps(per, indent=1)), ("speech_loso.md", md)):
        tmp = os.path.join(RESULTS, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(RESULTS, name))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
