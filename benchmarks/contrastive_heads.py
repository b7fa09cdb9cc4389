#!/usr/bin/env python
"""Which head to fit on contrastively tuned embeddings: a development-set study.

For each (K, seed): run ``recipes/text_classification.py --objective contrastive --tuning full
--shots_per_class K --seed S`` (default flags, model saved), then encode with the tuned encoder
the K-shot support set, a development set of other BANKING77 *train* rows (``--dev_per_class``
per class, disjoint from the support set, drawn with ``--dev_seed``) and the test split, and fit
several heads on the support features:

- ``logreg_raw_C1``: scikit-learn LogisticRegression, C=1, on the pooled features (the
  recipe's default head: its test accuracy must equal the run's own);
- ``logreg_unit_C1``: the same on unit-normalised features (SetFit's head on a
  sentence-transformers body ending in ``Normalize``);
- ``logreg_unit_cv`` / ``logreg_raw_cv``: C chosen by stratified cross-validation on the
  support set (``tltext.training.probe.fit_linear_probe``, as the frozen probe does);
- ``prototype``: cosine nearest centroid;
- ``<head>@wise<a>``: the same head after WiSE-FT (Wortsman et al. 2022): the tuned encoder's
  weights set to ``(1 - a) * pretrained + a * tuned`` (``--alphas``; the run itself trains with
  ``--wise_ft_alpha 1`` so that its model is the tuned one).

Heads are to be compared on the development rows; the test column is reported, never used to
choose. Writes OUT_DIR/NAME.json and .md (temp file + rename).

    OMP_NUM_THREADS=1 python benchmarks/contrastive_heads.py --shots 10 --seeds 1 2 3
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import write_payload  # noqa: E402
from benchmarks.fewshot_peers import load_data, support_indices  # noqa: E402

BASE_HEADS = ("logreg_raw_C1", "logreg_unit_C1", "logreg_unit_cv", "logreg_raw_cv", "prototype")
WISE_HEADS = ("logreg_raw_C1", "prototype")  # heads also fitted after WiSE-FT interpolation


def head_names(alphas: Sequence[float]) -> List[str]:
    return list(BASE_HEADS) + [f"{h}@wise{a:g}" for a in alphas if a != 1.0 for h in WISE_HEADS]


def dev_indices(train_y: np.ndarray, exclude: Sequence[int], per_class: int, seed: int) -> List[int]:
    """``per_class`` rows of every class not in ``exclude`` (fewer when a class has fewer left)."""
    rng = np.random.default_rng(seed)
    taken = set(int(i) for i in exclude)
    out: List[int] = []
    for c in np.unique(train_y):
        pool = [int(i) for i in np.flatnonzero(train_y == c) if int(i) not in taken]
        out += sorted(rng.choice(pool, size=min(per_class, len(pool)), replace=False).tolist())
    return out


def heads(xs: torch.Tensor, ys: np.ndarray, num_classes: int, seed: int,
          names: Sequence[str] = BASE_HEADS) -> Dict[str, Any]:
    """name -> (weight [C, D], bias [C], unit features?, chosen C or None), for the heads in ``names``."""
    from tltext.objectives.prototypes import cosine_prototype_head
    from tltext.training.probe import fit_linear_probe

    unit = torch.nn.functional.normalize(xs, dim=-1)
    out = {}
    for name, x, folds in (("logreg_raw_C1", xs, 0), ("logreg_unit_C1", unit, 0), ("logreg_unit_cv", unit, 5),
                           ("logreg_raw_cv", xs, 5)):
        if name in names:
            p = fit_linear_probe(x, ys.tolist(), num_classes, seed=seed, cv_folds=folds)
            out[name] = (p.weight, p.bias, x is unit, p.C)
    if "prototype" in names:
        w, b = cosine_prototype_head(xs, torch.as_tensor(ys), num_classes)
        out["prototype"] = (w, b, False, None)
    return out


def accuracy(head, x: torch.Tensor, y: np.ndarray) -> float:
    w, b, unit, _ = head
    if unit:
        x = torch.nn.functional.normalize(x, dim=-1)
    return float((np.asarray((x @ w.t() + b).argmax(-1)) == y).mean())


def one_run(k: int, seed: int, a, data) -> Dict[str, Any]:
    from accelerate import Accelerator

    from tltext.modeling import TltextModel
    from tltext.training.predict import Predictor

    tr_path, te_path, tr_x, tr_y, te_x, te_y, label2id = data
    out = os.path.join(a.work_dir, f"b77_contrastive_k{k}_s{seed}")
    argv = [sys.executable, os.path.join(ROOT, "recipes", "text_classification.py"), "--train_file", tr_path,
            "--test_file", te_path, "--shots_per_class", str(k), "--seed", str(seed), "--objective", "contrastive",
            "--tuning", "full", "--wise_ft_alpha", "1", "--output_dir", out, "--disable_tqdm", "--report", "False",
            "--overwrite_output_dir"]
    if a.contrastive_iterations is not None:
        argv += ["--contrastive_iterations", str(a.contrastive_iterations)]
    if a.num_train_epochs is not None:
        argv += ["--num_train_epochs", f"{a.num_train_epochs:g}"]
    argv += shlex.split(a.recipe_args)
    t0 = time.perf_counter()
    if not os.path.isfile(os.path.join(out, "results.json")) or a.force:
        with open(out + ".log", "w") as log:
            subprocess.run(argv, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    run_s = time.perf_counter() - t0
    res = json.load(open(os.path.join(out, "results.json")))
    model = TltextModel.from_pretrained(os.path.join(out, "model"))
    predictor = Predictor(Accelerator(cpu=True), batch_size=64, disable_tqdm=True)  # the backbone's own max length
    sup = support_indices(tr_y, k, seed)
    dev = dev_indices(tr_y, sup, a.dev_per_class, a.dev_seed)
    def score(names: Sequence[str], suffix: str = "") -> Dict[str, Any]:
        """Encode support / dev / test with the model as it is now, fit ``names`` on the support rows."""
        f = {name: predictor.features(model, [tr_x[i] for i in idx] if idx is not None else list(te_x)).float()
             for name, idx in (("support", sup), ("dev", dev), ("test", None))}
        return {name + suffix: {"dev": accuracy(h, f["dev"], tr_y[dev]), "test": accuracy(h, f["test"], te_y), "C": h[3]}
                for name, h in heads(f["support"], tr_y[sup], len(label2id), seed, names).items()}

    rows = score(BASE_HEADS)
    if any(alpha != 1.0 for alpha in a.alphas):
        from tltext.backbones.text import TextBackbone
        from tltext.trainer import default_model, wise_ft

        pretrained = {n: p.detach() for n, p in TextBackbone.from_pretrained(default_model("text")).named_parameters()}
        tuned = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
        for alpha in (x for x in a.alphas if x != 1.0):
            with torch.no_grad():  # start each alpha from the tuned weights
                for n, p in model.backbone.named_parameters():
                    p.copy_(tuned[n])
            wise_ft(model.backbone, pretrained, alpha)
            rows.update(score(WISE_HEADS, f"@wise{alpha:g}"))
    return {"k": k, "seed": seed, "run": out, "run_seconds": run_s, "recipe_test_accuracy": res["test"]["accuracy"],
            "n_support": len(sup), "n_dev": len(dev), "heads": rows}


def markdown(p: Dict[str, Any]) -> str:
    HEADS = head_names(p.get("alphas", [1.0]))
    lines = [f"*{p['protocol']}*", "", "| head | K | dev accuracy (%) | test accuracy (%) | n |", "|---|---|---|---|---|"]
    for s in p["summary"]:
        f = lambda m, sd: f"{m:.1f} +- {sd:.1f}" if sd is not None else f"{m:.1f}"  # noqa: E731
        lines.append(f"| {s['head']} | {s['k']} | {f(s['dev_mean'], s['dev_std'])} | {f(s['test_mean'], s['test_std'])} | {s['n']} |")
    lines += ["", "| K | seed | recipe test | " + " | ".join(f"{h} dev / test (C)" for h in HEADS) + " |",
              "|---|---|---|" + "---|" * len(HEADS)]
    for r in p["runs"]:
        cells = [f"{100 * r['heads'][h]['dev']:.2f} / {100 * r['heads'][h]['test']:.2f}"
                 + (f" ({r['heads'][h]['C']:g})" if r["heads"][h]["C"] is not None else "") for h in HEADS]
        lines.append(f"| {r['k']} | {r['seed']} | {100 * r['recipe_test_accuracy']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shots", type=int, nargs="+", default=[10])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--dev_per_class", type=int, default=20)
    ap.add_argument("--dev_seed", type=int, default=0)
    ap.add_argument("--contrastive_iterations", type=int, default=None,
                    help="passed to the recipe (supcon passes per epoch; default: the objective's). Runs already in "
                         "--work_dir are reused as they are: give each setting its own --work_dir")
    ap.add_argument("--num_train_epochs", type=float, default=None,
                    help="passed to the recipe (default: the recipe's); like --contrastive_iterations, give each "
                         "setting its own --work_dir")
    ap.add_argument("--recipe_args", default="",
                    help="more recipe flags, quoted (e.g. '--contrastive_temperature 0.05'); like "
                         "--contrastive_iterations, give each setting its own --work_dir")
    ap.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.75, 0.5],
                    help="WiSE-FT mixing weights to evaluate besides the tuned encoder (1)")
    ap.add_argument("--data_dir", default=os.environ.get("TLTEXT_DATA", os.path.join(ROOT, "..", "shared", "data")))
    ap.add_argument("--work_dir", default=os.path.join(ROOT, "runs", "contrastive_heads"))
    ap.add_argument("--out_dir", default=os.path.join(ROOT, "benchmarks", "results"))
    ap.add_argument("--name", default="contrastive_heads")
    ap.add_argument("--force", action="store_true", help="retrain runs whose folder already holds results.json")
    a = ap.parse_args(argv)
    os.makedirs(a.work_dir, exist_ok=True)
    data = load_data(a.data_dir)
    runs = [one_run(k, s, a, data) for k in a.shots for s in a.seeds]
    summary = []
    for k in a.shots:
        rk = [r for r in runs if r["k"] == k]
        for h in head_names(a.alphas):
            dev = [100 * r["heads"][h]["dev"] for r in rk]
            test = [100 * r["heads"][h]["test"] for r in rk]
            sd = (lambda v: statistics.stdev(v) if len(v) > 1 else None)  # noqa: E731
            summary.append({"head": h, "k": k, "n": len(rk), "dev_mean": statistics.mean(dev), "dev_std": sd(dev),
                            "test_mean": statistics.mean(test), "test_std": sd(test)})
    payload = {"benchmark": "contrastive_heads",
               "protocol": ("BANKING77, all-MiniLM-L6-v2, `--objective contrastive --tuning full --wise_ft_alpha 1"
                            + (f" --contrastive_iterations {a.contrastive_iterations}" if a.contrastive_iterations else "")
                            + (f" --num_train_epochs {a.num_train_epochs:g}" if a.num_train_epochs else "")
                            + (f" {a.recipe_args}" if a.recipe_args else "")
                            + "` (otherwise default flags; runs trained before WiSE-FT existed are the same) on the K-shot "
                            f"support set (seeds {a.seeds}); heads fitted on the tuned support features, and after WiSE-FT "
                            f"at alphas {[x for x in a.alphas if x != 1.0]} (encoder = (1 - a) pretrained + a tuned); "
                            f"dev = {a.dev_per_class} other train rows per class (seed {a.dev_seed}), test = the "
                            f"3,080-row test split (reported, not used to choose). Accuracy, mean +- std over seeds."),
               "command": "OMP_NUM_THREADS=1 python benchmarks/contrastive_heads.py " + " ".join(argv or sys.argv[1:]),
               "alphas": a.alphas, "summary": summary, "runs": runs}
    write_payload(a.out_dir, a.name, payload, markdown(payload))
    return payload


if __name__ == "__main__":
    main()
