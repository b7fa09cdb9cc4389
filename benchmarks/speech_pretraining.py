#!/usr/bin/env python
"""Does wav2vec 2.0 self-supervised pretraining (stage 0) help FSDD speaker transfer? vs MFCC + LR.

Protocol (one seed, short CPU runs, every run through the recipes' code paths):

* Stage 0: ``recipes/audio_pretraining.py`` on ALL FSDD clips of the four speakers (2000, no
  labels; this includes the target speaker's audio, as unlabelled pretraining data usually would),
  wav2vec2 ``tiny`` preset from random weights, masking p 0.65 (the paper's), with the flags of
  ``recipes/configs/fsdd_stage0.args`` (its comments give the reasons; this script's --stage0_*
  options override three of them; the commands below are what ran).
* Stage 1 (as in ``benchmarks/speech_da.py``): full tuning, objective erm, on the official train
  takes (5-49) of the three speakers other than the target, 10 % held out (source validation),
  scored on the target's test takes (0-4, 50 clips): once from random weights (``--model_config
  tiny``), once from the stage-0 model (``--model_name_or_path STAGE0/model``), same seed and flags.
* Reference: the MFCC + logistic-regression row of ``benchmarks/results/speech_mfcc.json``.

Writes ``benchmarks/results/speech_pretraining.json`` and ``.md`` (temporary file + rename). Runs go
to ``runs/speech_pretraining`` (``--resume`` reuses finished ones). From the repository root:
``OMP_NUM_THREADS=1 python benchmarks/speech_pretraining.py``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import DATA  # noqa: E402  (the shared data folder, env TLTEXT_DATA)
SPEAKERS = ("george", "jackson", "nicolas", "theo")
STAGE0_ARGS = ROOT / "recipes" / "configs" / "fsdd_stage0.args"


def parse_args(argv=None):
    file = stage0_values()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=DATA,
                   help='folder holding fsdd/ (env TLTEXT_DATA)')
    p.add_argument("--work", default=str(ROOT / "runs" / "speech_pretraining"),
                   help='folder for the runs (stage 0 in WORK/stage0)')
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"),
                   help='folder for NAME.json and NAME.md; the MFCC row is read from its speech_mfcc.json')
    p.add_argument("--target", default="theo", choices=SPEAKERS,
                   help='stage-1 target speaker (the other three are the source)')
    p.add_argument("--model_config", default="tiny",
                   help='wav2vec2 preset pretrained from random weights')
    p.add_argument("--stage0_epochs", type=float, default=6,
                   help='stage-0 (self-supervised) epochs over the 2,000 clips')
    p.add_argument("--stage0_lr", type=float, default=float(file["--learning_rate"]),
                   help='stage-0 learning rate; the default is read from recipes/configs/fsdd_stage0.args')
    p.add_argument("--stage0_mask_time_length", type=int, default=int(file["--mask_time_length"]),
                   help='stage-0 masked span, frames (20 ms each); the default is read from recipes/configs/fsdd_stage0.args')
    p.add_argument("--stage0_num_negatives", type=int, default=int(file["--num_negatives"]),
                   help='stage-0 distractors per masked frame; the default is read from recipes/configs/fsdd_stage0.args')
    p.add_argument("--stage1_epochs", type=float, default=8,
                   help='stage-1 epochs (full tuning, erm)')
    p.add_argument("--stage1_lr", type=float, default=2e-3,
                   help='stage-1 learning rate')
    p.add_argument("--seed", type=int, default=0, help="stage-1 seed (stage 0 always uses seed 0)")
    p.add_argument("--name", default="speech_pretraining", help="results file stem under --results")
    p.add_argument("--resume", action="store_true",
                   help="reuse runs whose record.json exists")
    return p.parse_args(argv)


def _shown(script: str, argv: List[str], data: str, work: str) -> str:
    parts = [os.path.relpath(data, ROOT) + x[len(data):] if x.startswith(data) else
             (os.path.relpath(work, ROOT) + x[len(work):] if x.startswith(work) else x) for x in argv]
    return f"OMP_NUM_THREADS=1 python {script} " + shlex.join(parts)


def _timed(name: str, out: Path, script: str, argv: List[str], call, a, resume: bool) -> Dict[str, Any]:
    rec_path = out / "record.json"
    if resume and rec_path.exists():
        return json.loads(rec_path.read_text())
    cmd = _shown(script, argv, str(Path(a.data).resolve()), str(Path(a.work).resolve()))
    print(f"[run] {name}\n  {cmd}", flush=True)
    w0, c0 = time.perf_counter(), time.process_time()
    res = call(argv)
    rec = {"name": name, "command": cmd, "wall_seconds": time.perf_counter() - w0, "cpu_seconds": time.process_time() - c0,
           "train_seconds": res["timing"]["train_seconds"], "result": res}
    rec_path.write_text(json.dumps(rec, indent=2, default=str))
    return rec


def stage0_flags(path: Path = STAGE0_ARGS) -> List[str]:
    """The stage-0 pretraining flags of ``recipes/configs/fsdd_stage0.args`` ('#' lines are comments),
    as ``[--flag, value, ...]``; ValueError naming the file when it holds no such pairs, or names a
    flag twice (the recipe would silently take the last)."""
    words = [w for line in path.read_text().splitlines() if not line.lstrip().startswith("#") for w in line.split()]
    if not words or len(words) % 2 or not all(w.startswith("--") for w in words[0::2]):
        raise ValueError(f"{path}: expected '--flag value' lines (and '#' comments); got {words!r}")
    twice = sorted({f for f in words[0::2] if words[0::2].count(f) > 1})
    if twice:
        raise ValueError(f"{path}: {', '.join(twice)} given more than once; expected each flag once")
    return words


def stage0_values() -> Dict[str, str]:
    """flag -> value of the stage-0 args file."""
    flags = stage0_flags()
    return dict(zip(flags[0::2], flags[1::2]))


def stage0_argv(a, fsdd: str, out: Path) -> List[str]:
    """``recipes/audio_pretraining.py`` arguments of stage 0: the args file, then this script's overrides."""
    file = stage0_values()
    overrides = [("--learning_rate", a.stage0_lr), ("--mask_time_length", a.stage0_mask_time_length),
                 ("--num_negatives", a.stage0_num_negatives)]
    return ["--model_config", a.model_config, "--train_file", fsdd, "--audio_column", "path", "--label_column", "digit",
            *[x for flag_value in file.items() for x in flag_value], "--num_train_epochs", f"{a.stage0_epochs:g}",
            *[x for flag, v in overrides if float(v) != float(file[flag]) for x in (flag, f"{v:g}")],
            "--seed", "0", "--logging_steps", "10", "--output_dir", str(out), "--overwrite_output_dir", "--disable_tqdm"]


def stage0(a, fsdd: str) -> Dict[str, Any]:
    spec = importlib.util.spec_from_file_location("audio_pretraining", ROOT / "recipes" / "audio_pretraining.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    out = Path(a.work).resolve() / "stage0"
    argv = stage0_argv(a, fsdd, out)

    def call(argv):
        m, d, t = recipe_parser(recipe).parse_args_into_dataclasses(args=argv)
        return recipe.pretrain(m, d, t)

    out.mkdir(parents=True, exist_ok=True)
    return _timed("stage0", out, "recipes/audio_pretraining.py", argv, call, a, a.resume)


def recipe_parser(recipe):
    from transformers import HfArgumentParser

    from tltext.args import DataArguments, TrainArguments

    return HfArgumentParser((recipe.PretrainingArguments, DataArguments, TrainArguments))


def stage1(a, fsdd: str, name: str, model: List[str]) -> Dict[str, Any]:
    from tltext.experiment import parse_and_run

    src = [s for s in SPEAKERS if s != a.target]
    out = Path(a.work).resolve() / name
    argv = [*model, "--train_file", fsdd, "--train_filter", f"speaker={','.join(src)};split=train",
            "--test_file", fsdd, "--test_filter", f"speaker={a.target};split=test", "--audio_column", "path",
            "--label_column", "digit", "--max_duration_seconds", "1", "--per_device_train_batch_size", "32",
            "--tuning", "full", "--objective", "erm", "--num_train_epochs", f"{a.stage1_epochs:g}",
            "--learning_rate", f"{a.stage1_lr:g}", "--seed", str(a.seed), "--output_dir", str(out), "--overwrite_output_dir",
            "--disable_tqdm", "--report", "False", "--save_model", "False"]
    out.mkdir(parents=True, exist_ok=True)
    return _timed(name, out, "recipes/audio_classification.py", argv, lambda v: parse_and_run("speech", v), a, a.resume)


def summary(s0, without, with_, mfcc, target: str) -> Dict[str, Any]:
    r0 = s0["result"]
    curve = [{k: h.get(k) for k in ("epoch", "step", "train_loss", "wav2vec2/contrastive", "wav2vec2/diversity",
                                     "wav2vec2/perplexity", "wav2vec2/accuracy", "wav2vec2/gumbel_temperature")}
             for h in r0["history"]]
    rows = []
    for label, rec in (("stage 1 from random weights (no stage 0)", without), ("stage 0 (wav2vec 2.0) + stage 1", with_)):
        r = rec["result"]
        rows.append({"setting": label, "source_val_accuracy": r["validation"]["accuracy"], "target_test_accuracy": r["test"]["accuracy"],
                     "stage1_wall_seconds": rec["wall_seconds"], "stage1_train_seconds": rec["train_seconds"],
                     "head_init": r["training"].get("head_init") or r["args"].get("head_init") or "random",
                     "command": rec["command"]})
    m = next((r for r in mfcc.get("runs", []) if r["target"] == target), None) if mfcc else None
    return {"stage0": {"curve": curve, "wall_seconds": s0["wall_seconds"], "train_seconds": s0["train_seconds"],
                       "steps": r0["training"]["optimizer_steps"], "data": r0.get("pretraining_data"),
                       "config": r0.get("pretraining_config"), "command": s0["command"]},
            "stage1": rows, "mfcc": m}


def markdown(p: Dict[str, Any]) -> str:
    s, s0 = p["summary"], p["summary"]["stage0"]
    lines = ["# wav2vec 2.0 pretraining (stage 0) before FSDD speaker transfer, vs MFCC + LR", "",
             f"Measured {p['date']} on {p['machine']['cpus']} shared CPU cores (load average "
             f"{p['machine']['loadavg_start']:.1f} at the start), one seed; target speaker {p['settings']['target']}.", "",
             f"## Stage 0: {s0['steps']} updates on {s0['data']['used']} unlabelled FSDD clips "
             f"({s0['data']['too_short']} too short skipped), {s0['wall_seconds'] / 60:.1f} wall min", "",
             f"| epoch | step | loss | contrastive L_m | diversity L_d | codebook perplexity (of "
             f"{s0['config']['num_codevector_groups'] * s0['config']['num_codevectors_per_group']}) | masked-frame accuracy | Gumbel tau |",
             "|---|---|---|---|---|---|---|---|"]
    for h in s0["curve"]:
        lines.append(f"| {h['epoch']} | {h['step']} | {h['train_loss']:.3f} | {h['wav2vec2/contrastive']:.3f} | "
                     f"{h['wav2vec2/diversity']:.3f} | {h['wav2vec2/perplexity']:.1f} | {h['wav2vec2/accuracy']:.3f} | "
                     f"{h['wav2vec2/gumbel_temperature']:.2f} |")
    k = p["settings"]["stage0_num_negatives"]
    lines += ["", f"Epoch means. L_m when every candidate scores the same: ln {k + 1} = {__import__('math').log(k + 1):.2f} "
              f"({k} distractors, drawn with replacement from the clip's other masked frames).", "",
              "## Stage 1 (supervised, 3 source speakers) and the MFCC baseline", "",
              "| setting | source val. acc. (%) | target test acc. (%) | stage-1 wall s |", "|---|---|---|---|"]
    for r in s["stage1"]:
        lines.append(f"| {r['setting']} | {100 * r['source_val_accuracy']:.1f} | {100 * r['target_test_accuracy']:.1f} | "
                     f"{r['stage1_wall_seconds']:.0f} |")
    if s["mfcc"]:
        m = s["mfcc"]
        lines.append(f"| MFCC(40) mean/std + logistic regression (benchmarks/speech_mfcc.py) | "
                     f"{100 * m['within_speaker_accuracy']:.1f} (source test takes) | {100 * m['cross_speaker_accuracy']:.1f} | "
                     f"{m['fit_seconds']:.0f} |")
    lines += ["", "Stage-1 head initialisation (``--head_init`` of the tree at measurement time; a linear probe "
              "on random features for the run without stage 0): "
              + "; ".join(f"{r['setting']}: {r['head_init']}" for r in s["stage1"]) + "."]
    lines += ["", f"Target test: 50 clips (one clip = 2 points). Source validation: 10 % of the source train takes "
              "(MFCC row: the source speakers' test takes). No target labels in training or selection.", "",
              "## Commands", "", "```bash", s0["command"]] + [r["command"] for r in s["stage1"]] + ["```", "",
              "## Protocol", "", p["protocol"], ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from benchmarks.common import write_payload

    fsdd = str((Path(a.data) / "fsdd" / "manifest.csv").resolve())
    if not os.path.exists(fsdd):
        print(f"error: {fsdd} not found (set --data or TLTEXT_DATA)", file=sys.stderr)
        return 2
    load0, w0 = os.getloadavg()[0], time.perf_counter()
    s0 = stage0(a, fsdd)
    # one stage-0 model serves every target speaker (it saw no labels); stage 1 is per target
    tag = a.target + ("" if a.seed == 0 else f"-s{a.seed}")  # seed 0: the first runs' folders
    without = stage1(a, fsdd, f"stage1_random-{tag}", ["--model_config", a.model_config])
    with_ = stage1(a, fsdd, f"stage1_pretrained-{tag}",
                   ["--model_name_or_path", str(Path(a.work).resolve() / "stage0" / "model")])
    mfcc_path = Path(a.results) / "speech_mfcc.json"
    mfcc = json.loads(mfcc_path.read_text()) if mfcc_path.exists() else None
    payload = {"benchmark": "speech_pretraining", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "loadavg_start": load0,
                           "loadavg_end": os.getloadavg()[0]},
               "protocol": __doc__.split("\n\n", 1)[1].split("\nWrites", 1)[0].strip(),
               "settings": {**{k: v for k, v in vars(a).items() if k not in ("data", "results", "resume", "name")},
                            "work": os.path.relpath(a.work, ROOT)},
               "summary": summary(s0, without, with_, mfcc, a.target), "total_wall_seconds": time.perf_counter() - w0}
    write_payload(a.results, a.name, payload, markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
