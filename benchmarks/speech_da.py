#!/usr/bin/env python
"""Speech domain adaptation benchmark: FSDD speaker -> speaker and FSDD -> Speech Commands.

Protocol (two stages, every run through ``recipes/audio_classification.py``'s code path):

* Stage 1 (once per target speaker T, seed 0): a wav2vec2 ``tiny`` preset trained from
  scratch, full tuning, on the official-split train takes (5-49) of the three FSDD
  speakers other than T; 10 % of them held out (source validation). Its accuracy on
  T's test takes (0-4) is the "stage 1 only" reference. With ``--stage0_model DIR`` stage 1
  starts from a wav2vec 2.0 model pretrained without labels (stage 0,
  ``recipes/audio_pretraining.py``) instead of random weights.
* Stage 2 (seeds 1, 2, 3): the stage-1 model dir as ``--model_name_or_path``, partial
  tuning (top 3 layer groups: layer.0, layer.1, final), a new head, on a seeded
  ``--max_train_samples`` subset of the same source takes, with
  ``erm`` (source-only) and each of ``--objectives`` (default ``dann mmd``); the unlabelled target data are T's train
  takes; accuracy on T's test takes (50 clips). Model selection: source validation.
* FSDD -> Speech Commands: the stage-1 model of the first target (its three source
  speakers), stage 2 with ``erm`` vs ``dann``; target = the 100 Speech Commands clips of
  zero..nine (16 kHz, 22 speakers) relabelled with ``--label_rename zero=0,...``; they
  are both the unlabelled target data and the test set (transductive: there are only
  10 clips per word).

Writes ``benchmarks/results/speech_da.json`` (every run, with its command, wall and
CPU seconds) and ``benchmarks/results/speech_da.md`` (mean +- sample std over seeds).
Runs go to ``runs/speech_da`` (``--resume`` reuses finished ones). Run it from the
repository root, e.g. ``nice -n 5 python benchmarks/speech_da.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import DATA  # noqa: E402  (the shared data folder, env TLTEXT_DATA)
SPEAKERS = ("george", "jackson", "nicolas", "theo")
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RECIPE = "recipes/audio_classification.py"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=DATA,
                   help='folder holding fsdd/ and speech_commands_mini/ (env TLTEXT_DATA)')
    p.add_argument("--work", default=str(ROOT / "runs" / "speech_da"),
                   help='folder for the runs')
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"),
                   help='folder for NAME.json and NAME.md')
    p.add_argument("--targets", nargs="+", default=["theo", "nicolas"], choices=SPEAKERS,
                   help="target speakers (each: the other three are the source); the Speech Commands rows start "
                        "from the first one's stage-1 model")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3],
                   help='stage-2 seeds (stage 1 uses seed 0)')
    p.add_argument("--model_config", default="tiny",
                   help='wav2vec2 preset of stage 1 without --stage0_model')
    p.add_argument("--stage0_model", default=None,
                   help="a wav2vec 2.0 model pretrained without labels (recipes/audio_pretraining.py OUT/model): stage 1 "
                        "starts from it instead of random --model_config weights")
    p.add_argument("--objectives", nargs="+", default=["dann", "mmd"],
                   help="stage-2 objectives of the FSDD rows besides erm (source-only, the paired reference, always "
                        "run); the Speech Commands rows are always erm vs dann")
    p.add_argument("--name", default="speech_da", help="results file stem under --results")
    p.add_argument("--speed_perturbation", type=float, nargs="+", default=None,
                   help="passed to every stage-1 and stage-2 run (e.g. 0.9 1.0 1.1: speed perturbation, Ko et al. 2015)")
    p.add_argument("--stage1_epochs", type=float, default=8,
                   help='stage-1 epochs (full tuning, erm)')
    p.add_argument("--stage1_lr", type=float, default=2e-3,
                   help='stage-1 learning rate')
    p.add_argument("--stage2_epochs", type=float, default=3,
                   help='stage-2 epochs')
    p.add_argument("--stage2_lr", type=float, default=1e-3,
                   help='stage-2 learning rate')
    p.add_argument("--stage2_unfreeze_top_k", type=int, default=3,
                   help='stage-2 partial tuning: top layer groups trained')
    p.add_argument("--stage2_max_train_samples", type=int, default=600,
                   help='source clips per stage-2 run')
    p.add_argument("--max_duration_seconds", type=float, default=1.0,
                   help='clip crop length, seconds')
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for tiny on a busy CPU)")
    p.add_argument("--no_speech_commands", action="store_true",
                   help='skip the FSDD -> Speech Commands rows')
    p.add_argument("--resume", action="store_true", help="reuse runs whose record.json exists")
    p.add_argument("--report_only", action="store_true",
                   help="recompute the summary of NAME.json (--name) and rewrite NAME.json and NAME.md; nothing trains")
    return p.parse_args(argv)


class Bench:
    def __init__(self, a):
        self.a = a
        self.data = Path(a.data).resolve()
        self.fsdd = str(self.data / "fsdd" / "manifest.csv")
        self.sc = str(self.data / "speech_commands_mini" / "manifest.csv")
        self.work = Path(a.work)
        self.records: List[Dict[str, Any]] = []

    def shown(self, argv: List[str]) -> str:
        """The command to type from the repository root (data and run paths relative)."""
        parts = []
        for x in argv:
            for base in (str(self.data), str(self.work)):
                if x.startswith(base):
                    x = os.path.relpath(base, ROOT) + x[len(base):]
            parts.append(x)
        return f"python {RECIPE} " + shlex.join(parts)

    def run(self, name: str, argv: List[str], **info) -> Dict[str, Any]:
        from tltext.experiment import parse_and_run

        out = self.work / name
        rec_path = out / "record.json"
        argv = argv + ["--output_dir", str(out), "--overwrite_output_dir", "--disable_tqdm", "--report", "False"]
        old = json.loads(rec_path.read_text()) if self.a.resume and rec_path.exists() else None
        if old is not None and old.get("command") != self.shown(argv):
            print(f"[rerun] {name}: its record.json ran another command (--resume reuses a run only when the "
                  f"command is the same)", flush=True)
            old = None
        if old is not None:
            rec = old
            print(f"[reuse] {name}: test accuracy {rec['test_accuracy']:.4f}", flush=True)
        else:
            print(f"[run] {name}\n  {self.shown(argv)}", flush=True)
            w0, c0 = time.perf_counter(), time.process_time()
            res = parse_and_run("speech", argv)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            rec = {"name": name, **info, "command": self.shown(argv),
                   "test_accuracy": float(res["test"]["accuracy"]),
                   "test_f1": float(res["test"].get("f1", float("nan"))),
                   "source_val_accuracy": (float(res["validation"]["accuracy"]) if res.get("validation") else None),
                   "best_epoch": res.get("best_epoch"), "num_examples": res.get("num_examples"),
                   "head_init": (res.get("training") or {}).get("head_init"),
                   "learning_rates": {k: v for k, v in (res.get("training") or {}).items() if k.endswith("learning_rate")},
                   "warnings": res.get("warnings", []), "wall_seconds": wall, "cpu_seconds": cpu}
            rec_path.write_text(json.dumps(rec, indent=2))
            print(f"  -> test accuracy {rec['test_accuracy']:.4f}  ({wall:.0f} s wall, {cpu:.0f} s CPU)", flush=True)
        self.records.append(rec)
        return rec

    # ------------------------------------------------------------------ protocol
    def fsdd_split(self, flag: str, speakers, split: str) -> List[str]:
        return [f"--{flag}_file", self.fsdd, f"--{flag}_filter", f"speaker={','.join(speakers)};split={split}"]

    def common(self, label_column: str = "digit") -> List[str]:
        aug = ["--speed_perturbation", *(f"{f:g}" for f in self.a.speed_perturbation)] if self.a.speed_perturbation else []
        return ["--audio_column", "path", "--label_column", label_column,
                "--max_duration_seconds", f"{self.a.max_duration_seconds:g}", "--per_device_train_batch_size", "32", *aug]

    def stage1(self, target: str) -> Path:
        a = self.a
        src = [s for s in SPEAKERS if s != target]
        init = ["--model_name_or_path", a.stage0_model] if a.stage0_model else ["--model_config", a.model_config]
        argv = [*init, *self.fsdd_split("train", src, "train"),
                *self.fsdd_split("test", [target], "test"), *self.common(), "--tuning", "full",
                "--objective", "erm", "--num_train_epochs", f"{a.stage1_epochs:g}",
                "--learning_rate", f"{a.stage1_lr:g}", "--seed", "0"]
        self.run(f"stage1_{target}", argv, task=f"FSDD {'+'.join(src)} -> {target}", stage=1,
                 setting="stage 1 only (no stage 2)", seed=0)
        return self.work / f"stage1_{target}" / "model"

    def stage2_args(self, model: Path, seed: int, objective: str, label_column: str = "digit") -> List[str]:
        a = self.a
        return ["--model_name_or_path", str(model), *self.common(label_column), "--tuning", "partial",
                "--unfreeze_top_k", str(a.stage2_unfreeze_top_k), "--objective", objective,
                "--num_train_epochs", f"{a.stage2_epochs:g}", "--learning_rate", f"{a.stage2_lr:g}",
                "--max_train_samples", str(a.stage2_max_train_samples), "--seed", str(seed), "--save_model", "False"]

    def fsdd_target(self, target: str) -> Path:
        model = self.stage1(target)
        src = [s for s in SPEAKERS if s != target]
        task = f"FSDD {'+'.join(src)} -> {target}"
        for seed in self.a.seeds:
            for obj in dict.fromkeys(["erm", *self.a.objectives]):
                argv = self.stage2_args(model, seed, obj) + self.fsdd_split("train", src, "train") \
                    + self.fsdd_split("test", [target], "test") + self.fsdd_split("target", [target], "train")
                self.run(f"stage2_{target}_{obj}_s{seed}", argv, task=task, stage=2, setting=SETTING.get(obj, obj), seed=seed)
        return model

    def speech_commands(self, model: Path, source_target: str) -> None:
        src = [s for s in SPEAKERS if s != source_target]
        task = f"FSDD {'+'.join(src)} -> Speech Commands digits"
        digits = ["--label_rename", ",".join(f"{w}={i}" for i, w in enumerate(WORDS))]
        sc_test = ["--test_file", self.sc, "--test_filter", f"label={','.join(WORDS)}"]
        sc_target = ["--target_file", self.sc, "--target_filter", f"label={','.join(WORDS)}"]
        self.run("sc_stage1_eval", ["--model_name_or_path", str(model), "--eval_only", *self.common("digit,label"), *sc_test,
                                    *digits], task=task, stage=1, setting="stage 1 only (no stage 2)", seed=0)
        for seed in self.a.seeds:
            for obj in ("erm", "dann"):
                argv = self.stage2_args(model, seed, obj, "digit,label") + self.fsdd_split("train", src, "train") + sc_test \
                    + sc_target + digits
                self.run(f"sc_stage2_{obj}_s{seed}", argv, task=task, stage=2, setting=SETTING.get(obj, obj), seed=seed)


SETTING = {"erm": "source-only (erm)", "dann": "DANN", "mmd": "MK-MMD", "self_training": "self-training",
           "cdan": "CDAN", "mcc": "MCC"}


# ---------------------------------------------------------------------- summary
def summarise(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows: Dict[tuple, Dict[str, Any]] = {}
    for r in records:
        key = (r["task"], r["setting"])
        row = rows.setdefault(key, {"task": r["task"], "setting": r["setting"], "stage": r["stage"], "seeds": [],
                                    "test_accuracy": [], "source_val_accuracy": [], "cpu_seconds": 0.0,
                                    "wall_seconds": 0.0, "command": r["command"]})
        row["seeds"].append(r["seed"])
        row["test_accuracy"].append(r["test_accuracy"])
        if r.get("source_val_accuracy") is not None:
            row["source_val_accuracy"].append(r["source_val_accuracy"])
        row["cpu_seconds"] += r["cpu_seconds"]
        row["wall_seconds"] += r["wall_seconds"]
    out = []
    for row in rows.values():
        acc = np.asarray(row["test_accuracy"])
        row["mean"] = float(acc.mean())
        row["std"] = float(acc.std(ddof=1)) if len(acc) > 1 else None
        row["n"] = len(acc)
        base = rows.get((row["task"], SETTING["erm"]))
        if row["stage"] == 2 and base is not None and row is not base:  # paired by seed
            ref = dict(zip(base["seeds"], base["test_accuracy"]))
            diff = np.asarray([a - ref[s] for s, a in zip(row["seeds"], row["test_accuracy"]) if s in ref])
            row["delta_vs_source_only"] = {"mean": float(diff.mean()),
                                           "std": float(diff.std(ddof=1)) if len(diff) > 1 else None}
        out.append(row)
    return out


def _pm(mean: float, std) -> str:
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def mfcc_rows(payload: Dict[str, Any]) -> List[str]:
    """Reference rows from ``benchmarks/results/speech_mfcc.json`` (MFCC + logistic regression,
    ``benchmarks/speech_mfcc.py``) for this benchmark's FSDD targets, when that file exists."""
    path = ROOT / "benchmarks" / "results" / "speech_mfcc.json"
    if not path.exists():
        return []
    runs = {r["target"]: r for r in json.loads(path.read_text())["runs"]}
    rows = []
    for target in payload["settings"]["targets"]:
        r = runs.get(target)
        if r:
            rows.append(f"| FSDD {'+'.join(r['sources'])} -> {target} | MFCC(40) mean/std + logistic regression "
                        f"(benchmarks/speech_mfcc.py; val. column: the source speakers' test takes) | "
                        f"{100 * r['cross_speaker_accuracy']:.1f} | - | - | {100 * r['within_speaker_accuracy']:.1f} | "
                        f"{r['fit_seconds'] / 60:.1f} |")
    return rows


def markdown(payload: Dict[str, Any]) -> str:
    s = payload["settings"]
    lines = [
        "# Speech domain adaptation (FSDD speakers" + ("" if s.get("no_speech_commands") else ", FSDD -> Speech Commands")
        + ")" + (f", stage 1 from {s['stage0_model']}" if s.get("stage0_model") else ""), "",
        f"Measured {payload['date']} on {payload['machine']['cpus']} shared CPU cores "
        f"(torch {payload['machine']['torch']}, {s['threads']} intra-op thread(s), load average "
        f"{payload['machine']['loadavg_start']:.1f} at the start); total {payload['total_wall_minutes']:.1f} wall minutes, "
        f"{payload['total_cpu_minutes']:.1f} CPU minutes (process time of all runs).", "",
        "Target accuracy in % on the target's labelled test clips: mean ± sample standard deviation "
        f"(n - 1) over stage-2 seeds {', '.join(map(str, s['seeds']))}; the stage-1 model is trained once per "
        "target (seed 0) and reused by every stage-2 seed, so the spread is that of stage 2 only.", "",
        "| task | setting | target acc. (%) | per seed | vs source-only (points, paired) | source val. acc. (%) | CPU min |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in payload["summary"]:
        per_seed = ", ".join(f"{100 * v:.0f}" for v in r["test_accuracy"]) if r["n"] > 1 else "-"
        sv = np.mean(r["source_val_accuracy"]) if r["source_val_accuracy"] else None
        d = r.get("delta_vs_source_only")
        delta = "-" if d is None else ("+" if d["mean"] >= 0 else "") + _pm(d["mean"], d["std"])
        lines.append(f"| {r['task']} | {r['setting']} | {_pm(r['mean'], r['std'])} | {per_seed} | {delta} | "
                     f"{'-' if sv is None else f'{100 * sv:.1f}'} | {r['cpu_seconds'] / 60:.1f} |")
    lines += mfcc_rows(payload)
    n_test = {r["task"]: (r.get("num_examples") or {}).get("test") for r in payload["runs"]}
    lines += ["", "Notes:", "",
              "- Test sets: " + "; ".join(f"{t}: {n} clips (one clip = {100 / n:.1f} points)" for t, n in n_test.items() if n) + ".",
              "- Source validation: stage 1 holds out 10 % of the source takes (a true held-out score); a stage-2 "
              "run holds out 10 % of its seeded subset, clips the stage-1 model was trained on, so its source "
              "validation accuracy is optimistic (it is only used to pick the epoch).",
              "- No target labels are used for training or model selection in any run."]
    lines += ["", "## Protocol", "", payload["protocol"], "", "## Settings", ""]
    lines += [f"- `{k}`: {v}" for k, v in s.items()]
    lines += ["", "## Commands (from the repository root; one per setting, the first seed shown)", ""]
    for r in payload["summary"]:
        lines += [f"{r['task']}, {r['setting']}:", "", "```bash", r["command"], "```", ""]
    lines += ["Regenerate everything: `nice -n 5 python benchmarks/speech_da.py"
              + "".join(f" --{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in s.items()
                        if k in ("stage0_model", "targets", "objectives", "speed_perturbation") and v)
              + (" --no_speech_commands" if s.get("no_speech_commands") else "")
              + (f" --name {payload.get('name')}" if payload.get("name", "speech_da") != "speech_da" else "") + "` "
              "(data: FSDD, CC BY-SA 4.0; Speech Commands v0.01, Warden 2018, CC BY 4.0)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    a = parse_args(argv)
    from benchmarks.common import run_payload, write_payload

    if a.report_only:
        if not (Path(a.results) / f"{a.name}.json").exists():
            print(f"error: --report_only: {Path(a.results) / f'{a.name}.json'} not found (--name, --results)", file=sys.stderr)
            return 2
        payload = json.loads((Path(a.results) / f"{a.name}.json").read_text())
        payload["summary"] = summarise(payload["runs"])
        payload.setdefault("name", a.name)
        write_payload(a.results, a.name, payload, markdown(payload))
        return 0
    import torch

    torch.set_num_threads(a.threads)
    b = Bench(a)
    for path in (b.fsdd, b.sc):
        if not os.path.exists(path) and not (path == b.sc and a.no_speech_commands):
            print(f"error: {path} not found (set --data or TLTEXT_DATA to the shared data folder)", file=sys.stderr)
            return 2
    if a.stage0_model and not (Path(a.stage0_model) / "config.json").is_file():
        print(f"error: --stage0_model {a.stage0_model}: not a model folder with a config.json "
              "(recipes/audio_pretraining.py writes one in OUT/model)", file=sys.stderr)
        return 2
    from tltext import objectives

    unknown = [o for o in a.objectives if o not in objectives.names()]
    if unknown:
        print(f"error: --objectives {' '.join(unknown)}: unknown; expected names from {', '.join(objectives.names())}",
              file=sys.stderr)
        return 2
    b.work.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    w0 = time.perf_counter()
    models = {t: b.fsdd_target(t) for t in a.targets}
    if not a.no_speech_commands:
        b.speech_commands(models[a.targets[0]], a.targets[0])
    payload = run_payload("speech_da", __doc__,
                          {k: v for k, v in vars(a).items() if k not in ("data", "work", "results", "resume", "name")},
                          load0, w0, b.records, summarise(b.records))
    payload["total_wall_minutes_of_runs"] = sum(r["wall_seconds"] for r in b.records) / 60
    payload["name"] = a.name
    write_payload(a.results, a.name, payload, markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
