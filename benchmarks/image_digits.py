"""Image domain adaptation on the offline digits pair: source-only vs DANN vs MK-MMD.

Data: ``tltext data digits`` (scikit-learn's 8x8 digits, upscaled to 32 px; two
disjoint halves: grey source, recoloured target) under both target shifts,
``random_colour`` (MNIST-M-like, a random background/ink colour per image) and
``palette`` (one fixed colour cast). Model: a torchvision ResNet-18 from random
initialisation, full tuning (every layer trained from scratch), AdamW at
learning rate 1e-3 (head 1e-2), linear schedule with 10 % warm-up, batch 32,
5 epochs, no horizontal flips, RandomResizedCrop with area fraction in
[0.6, 1]. The epoch kept is the best on the source validation split (10 % of the
source, stratified): no target label is used for training or model selection.
DANN (Ganin et al. 2016) and MK-MMD (Long et al. 2015) use the unlabelled
target half with the default weight 1 (adapter: none); the target's labels
score the final model only.

Writes benchmarks/results/image_digits.{json,md}.
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

ROOT = Path(__file__).resolve().parent.parent
RECIPE = "recipes/image_classification.py"
SETTING = {"erm": "source-only (erm)", "dann": "DANN", "mmd": "MK-MMD"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default=str(ROOT / "runs" / "image_digits"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--shifts", nargs="+", default=["random_colour", "palette"], choices=["random_colour", "palette"])
    p.add_argument("--objectives", nargs="+", default=["erm", "dann", "mmd"], choices=list(SETTING))
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--epochs", type=float, default=5)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--min_crop_scale", type=float, default=0.6)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a busy 2-core CPU)")
    p.add_argument("--resume", action="store_true", help="reuse runs whose record.json exists")
    return p.parse_args(argv)


def shown(argv: List[str], prefix: str = f"python {RECIPE} ") -> str:
    """The command to type from the repository root (run paths relative)."""
    out = []
    for x in argv:
        if x.startswith(str(ROOT) + os.sep):
            x = os.path.relpath(x, ROOT)
        out.append(x)
    return prefix + shlex.join(out)


def run_one(a, data: Path, shift: str, objective: str, seed: int) -> Dict[str, Any]:
    from tltext.experiment import parse_and_run

    name = f"{shift}_{objective}_s{seed}"
    out = Path(a.work) / name
    rec_path = out / "record.json"
    if a.resume and rec_path.exists():
        rec = json.loads(rec_path.read_text())
        print(f"[reuse] {name}: target accuracy {rec['test_accuracy']:.4f}", flush=True)
        return rec
    argv = ["--model_name_or_path", a.model, "--image_size", str(a.image_size),
            "--train_dir", str(data / "source"), "--target_dir", str(data / "target"), "--test_dir", str(data / "target"),
            "--tuning", "full", "--objective", objective, "--learning_rate", f"{a.learning_rate:g}",
            "--num_train_epochs", f"{a.epochs:g}", "--per_device_train_batch_size", str(a.batch_size),
            "--image_hflip", "False", "--image_min_crop_scale", f"{a.min_crop_scale:g}", "--seed", str(seed),
            "--output_dir", str(out), "--overwrite_output_dir", "--save_model", "False", "--report", "False",
            "--disable_tqdm"]
    print(f"[run] {name}\n  {shown(argv)}", flush=True)
    w0, c0 = time.perf_counter(), time.process_time()
    res = parse_and_run("image", argv)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    rec = {"name": name, "shift": shift, "objective": objective, "setting": SETTING[objective], "seed": seed,
           "command": shown(argv), "test_accuracy": float(res["test"]["accuracy"]),
           "test_f1": float(res["test"].get("f1", float("nan"))),
           "source_val_accuracy": float(res["validation"]["accuracy"]), "best_epoch": res.get("best_epoch"),
           "num_examples": res["num_examples"], "train_seconds": float(res["timing"]["train_seconds"]),
           "wall_seconds": wall, "cpu_seconds": cpu, "warnings": res.get("warnings", [])}
    rec_path.write_text(json.dumps(rec, indent=2))
    print(f"  -> target accuracy {rec['test_accuracy']:.4f} (source val {rec['source_val_accuracy']:.4f}, "
          f"{wall:.0f} s wall, {cpu:.0f} s CPU)", flush=True)
    return rec


def summarise(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows: Dict[tuple, Dict[str, Any]] = {}
    for r in records:
        row = rows.setdefault((r["shift"], r["objective"]), {
            "shift": r["shift"], "objective": r["objective"], "setting": r["setting"], "seeds": [], "test_accuracy": [],
            "source_val_accuracy": [], "train_seconds": [], "wall_seconds": [], "cpu_seconds": [], "command": r["command"]})
        for k in ("seeds", "test_accuracy", "source_val_accuracy", "train_seconds", "wall_seconds", "cpu_seconds"):
            row[k].append(r["seed" if k == "seeds" else k])
    out = []
    for row in rows.values():
        acc = np.asarray(row["test_accuracy"])
        row.update(n=len(acc), mean=float(acc.mean()), std=float(acc.std(ddof=1)) if len(acc) > 1 else None,
                   source_val_mean=float(np.mean(row["source_val_accuracy"])),
                   train_seconds_mean=float(np.mean(row["train_seconds"])),
                   train_seconds_std=float(np.std(row["train_seconds"], ddof=1)) if len(acc) > 1 else None,
                   cpu_seconds_mean=float(np.mean(row["cpu_seconds"])),
                   cpu_seconds_std=float(np.std(row["cpu_seconds"], ddof=1)) if len(acc) > 1 else None)
        out.append(row)
    return out


def _pm(mean: float, std, scale: float = 100.0, fmt: str = ".1f") -> str:
    return f"{scale * mean:{fmt}}" + (f" ± {scale * std:{fmt}}" if std is not None else "")


def markdown(p: Dict[str, Any]) -> str:
    s, m = p["settings"], p["machine"]
    lines = [
        "# Image domain adaptation: digits, grey source -> recoloured target (ResNet-18 from scratch)", "",
        f"Measured {p['date']} on {m['cpus']} shared CPU cores (torch {m['torch']}, torchvision {m['torchvision']}, "
        f"{s['threads']} intra-op thread(s), load average {m['loadavg_start']:.1f} at the start, "
        f"{m['loadavg_end']:.1f} at the end); total {p['total_wall_minutes']:.1f} wall minutes.", "",
        "Target accuracy in % on the labelled target half: mean ± sample standard deviation (n - 1) over seeds "
        f"{', '.join(map(str, s['seeds']))}. Times per run, mean ± std: the engine's training loop (train s, wall "
        "clock, per-epoch source validation included) and the process CPU time of the whole run (data loading "
        "and target scoring included; less sensitive to other jobs on the shared machine).", "",
        "| target shift | setting | target acc. (%) | per seed | source val. acc. (%) | train s / run | CPU s / run |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in p["summary"]:
        per_seed = ", ".join(f"{100 * v:.1f}" for v in r["test_accuracy"])
        lines.append(f"| {r['shift']} | {r['setting']} | {_pm(r['mean'], r['std'])} | {per_seed} | "
                     f"{100 * r['source_val_mean']:.1f} | {_pm(r['train_seconds_mean'], r['train_seconds_std'], 1, '.0f')} | "
                     f"{_pm(r['cpu_seconds_mean'], r['cpu_seconds_std'], 1, '.0f')} |")
    lines += ["", "## Protocol", "", p["protocol"], "", "## Settings", ""]
    lines += [f"- `{k}`: {v}" for k, v in s.items()]
    lines += ["", "## Commands (from the repository root; the first seed shown)", ""]
    for shift, cmd in p["data_commands"].items():
        lines += [f"Data, {shift}:", "", "```bash", cmd, "```", ""]
    for r in p["summary"]:
        lines += [f"{r['shift']}, {r['setting']}:", "", "```bash", r["command"], "```", ""]
    lines += ["Regenerate everything: `nice -n 5 python benchmarks/image_digits.py` "
              "(data: scikit-learn's copy of the UCI optical digits, no download)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    a = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch
    import torchvision

    from benchmarks.common import run_payload, write_payload

    from tltext.data.digits import write_digits

    torch.set_num_threads(a.threads)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    w0 = time.perf_counter()
    records, data_commands = [], {}
    for shift in a.shifts:
        data = work / f"data_{shift}"
        write_digits(str(data), seed=0, size=a.image_size, shift=shift)  # reused when already written
        data_commands[shift] = shown(["--output_dir", str(data), "--size", str(a.image_size), "--shift", shift],
                                     prefix="tltext data digits ")
        for seed in a.seeds:
            for obj in a.objectives:
                records.append(run_one(a, data, shift, obj, seed))
    payload = run_payload("image_digits", __doc__, {k: v for k, v in vars(a).items() if k not in ("work", "results", "resume")},
                          load0, w0, records, summarise(records), data_commands=data_commands)
    payload["machine"]["torchvision"] = torchvision.__version__
    write_payload(a.results, "image_digits", payload, markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
