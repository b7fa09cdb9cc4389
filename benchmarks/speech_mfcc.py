#!/usr/bin/env python
"""MFCC + logistic-regression baseline for FSDD speaker transfer (the row every learned speech model is compared to).

Protocol (leave one speaker out, the official FSDD split, no target labels for training or selection):

* features: ``torchaudio.transforms.MFCC`` at FSDD's native 8 kHz, 40 coefficients (40 mel bands,
  25 ms Hann windows, 10 ms hop, n_fft 256), then the mean and the standard deviation of each
  coefficient over the clip's frames -> 80 numbers per clip (Davis & Mermelstein 1980);
* classifier: ``StandardScaler`` + scikit-learn ``LogisticRegression`` (lbfgs, L2); C from
  {0.01, 0.1, 1, 10, 100} by leave-one-source-speaker-out cross-validation on the three source
  speakers' train takes (``GridSearchCV`` with ``LeaveOneGroupOut``), refitted on all of them;
* for each target speaker T: train on the other three speakers' train takes (5-49, 1350 clips),
  report accuracy on T's test takes (0-4, 50 clips: cross-speaker) and on the three source
  speakers' own test takes (150 clips: within-speaker);
* the same with per-speaker standardisation (speaker-level cepstral mean and variance
  normalisation of the 80 clip features): each speaker's clips standardised by the mean and
  standard deviation of that speaker's own train takes; for T those are its unlabelled train
  takes, the same target information tltext's ``--objective adabn`` reads (no target labels).

Writes ``benchmarks/results/speech_mfcc.json`` and ``speech_mfcc.md`` (each through a temporary
file and a rename). Run from the repository root: ``OMP_NUM_THREADS=1 python benchmarks/speech_mfcc.py``
(about a minute on one CPU core).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import DATA  # noqa: E402  (the shared data folder, env TLTEXT_DATA)
SPEAKERS = ("george", "jackson", "nicolas", "theo")
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
SAMPLE_RATE = 8000
N_MFCC = 40


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=DATA,
                   help='folder holding fsdd/ (env TLTEXT_DATA)')
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"),
                   help='folder for speech_mfcc.json and .md')
    p.add_argument("--targets", nargs="+", default=list(SPEAKERS), choices=SPEAKERS,
                   help='target speakers (each: trained on the other three)')
    return p.parse_args(argv)


def mfcc_stats(waves: List[np.ndarray], sample_rate: int = SAMPLE_RATE, n_mfcc: int = N_MFCC) -> np.ndarray:
    """Clips (1-D float32 at ``sample_rate``) -> ``[N, 2 * n_mfcc]``: per-coefficient mean and
    standard deviation over the frames of ``torchaudio.transforms.MFCC`` (25 ms / 10 ms)."""
    import torch
    import torchaudio

    mfcc = torchaudio.transforms.MFCC(sample_rate=sample_rate, n_mfcc=n_mfcc, log_mels=False, melkwargs={
        "n_fft": 256, "win_length": int(0.025 * sample_rate), "hop_length": int(0.010 * sample_rate), "n_mels": 40})
    out = []
    with torch.no_grad():
        for x in waves:
            m = mfcc(torch.from_numpy(np.asarray(x, dtype=np.float32)))  # [n_mfcc, frames]
            out.append(torch.cat([m.mean(dim=1), m.std(dim=1, unbiased=False)]).numpy())
    return np.stack(out)


def load_fsdd(manifest: str):
    """All FSDD clips at 8 kHz with their digit, speaker and official split."""
    from tltext.data.audio import load_audio_examples

    ex = load_audio_examples(manifest, audio_column="path", label_column="digit", sampling_rate=SAMPLE_RATE)
    cols = ex.extra["columns"]
    return ex.inputs, np.asarray([int(v) for v in ex.labels]), np.asarray(cols["speaker"]), np.asarray(cols["split"])


def speaker_standardise(X: np.ndarray, spk: np.ndarray, split: np.ndarray) -> np.ndarray:
    """``X [N, D]`` with each speaker's rows standardised by the per-dimension mean and standard
    deviation of that speaker's train-split rows (speaker-level CMVN; labels are not read)."""
    out = np.empty_like(X)
    for s in np.unique(spk):
        rows, ref = spk == s, (spk == s) & (split == "train")
        mu, sd = X[ref].mean(0), X[ref].std(0)
        out[rows] = (X[rows] - mu) / np.where(sd > 1e-8, sd, 1.0)
    return out


def fit_and_score(X, y, spk, split, target: str) -> Dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    src = (spk != target) & (split == "train")
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    search = GridSearchCV(pipe, {"logisticregression__C": list(C_GRID)}, cv=LeaveOneGroupOut(), n_jobs=1)
    t0 = time.perf_counter()
    search.fit(X[src], y[src], groups=spk[src])
    seconds = time.perf_counter() - t0
    cross = (spk == target) & (split == "test")
    within = (spk != target) & (split == "test")
    return {"target": target, "sources": [s for s in SPEAKERS if s != target], "C": search.best_params_["logisticregression__C"],
            "cv_accuracy_by_C": {f"{c:g}": float(v) for c, v in zip(C_GRID, search.cv_results_["mean_test_score"])},
            "train_clips": int(src.sum()), "cross_speaker_test_clips": int(cross.sum()),
            "within_speaker_test_clips": int(within.sum()),
            "cross_speaker_accuracy": float(search.score(X[cross], y[cross])),
            "within_speaker_accuracy": float(search.score(X[within], y[within])), "fit_seconds": seconds}


def markdown(payload: Dict[str, Any]) -> str:
    lines = ["# MFCC + logistic regression on FSDD (leave one speaker out)", "",
             f"Measured {payload['date']} on {payload['machine']['cpus']} shared CPU cores "
             f"(load average {payload['machine']['loadavg_start']:.1f} at the start); features "
             f"{payload['feature_seconds']:.1f} s, total {payload['total_seconds']:.1f} s wall.", "",
             "Accuracy (%) of one model per target speaker, trained on the other three speakers' train takes "
             "(5-49); C chosen by leave-one-source-speaker-out CV (no target labels).", "",
             "| target speaker | C | cross-speaker: target test takes | within-speaker: source test takes | source CV acc. at C |",
             "|---|---|---|---|---|"]
    for r in payload["runs"]:
        lines.append(f"| {r['target']} ({r['cross_speaker_test_clips']} / {r['within_speaker_test_clips']} clips) | "
                     f"{r['C']:g} | {100 * r['cross_speaker_accuracy']:.1f} | {100 * r['within_speaker_accuracy']:.1f} | "
                     f"{100 * r['cv_accuracy_by_C']['%g' % r['C']]:.1f} |")
    m = payload["mean"]
    lines += [f"| mean over {len(payload['runs'])} targets | - | {100 * m['cross_speaker_accuracy']:.1f} | "
              f"{100 * m['within_speaker_accuracy']:.1f} | - |"]
    if payload.get("runs_speaker_norm"):
        lines += ["", "With per-speaker standardisation of the features (each speaker by its own train takes; the "
                  "target's are unlabelled):", "",
                  "| target speaker | C | cross-speaker: target test takes | within-speaker: source test takes | source CV acc. at C |",
                  "|---|---|---|---|---|"]
        for r in payload["runs_speaker_norm"]:
            lines.append(f"| {r['target']} | {r['C']:g} | {100 * r['cross_speaker_accuracy']:.1f} | "
                         f"{100 * r['within_speaker_accuracy']:.1f} | {100 * r['cv_accuracy_by_C']['%g' % r['C']]:.1f} |")
        m = payload["mean_speaker_norm"]
        lines.append(f"| mean over {len(payload['runs_speaker_norm'])} targets | - | {100 * m['cross_speaker_accuracy']:.1f} | "
                     f"{100 * m['within_speaker_accuracy']:.1f} | - |")
    lines += ["", "## Protocol", "", payload["protocol"], "",
              "Command: `OMP_NUM_THREADS=1 python benchmarks/speech_mfcc.py` (data: FSDD, CC BY-SA 4.0)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from benchmarks.common import write_payload

    manifest = Path(a.data) / "fsdd" / "manifest.csv"
    if not manifest.exists():
        print(f"error: {manifest} not found (set --data or TLTEXT_DATA to the shared data folder)", file=sys.stderr)
        return 2
    load0, w0 = os.getloadavg()[0], time.perf_counter()
    waves, y, spk, split = load_fsdd(str(manifest))
    X = mfcc_stats(waves)
    feature_seconds = time.perf_counter() - w0
    runs = [fit_and_score(X, y, spk, split, t) for t in a.targets]
    Xn = speaker_standardise(X, spk, split)
    runs_norm = [fit_and_score(Xn, y, spk, split, t) for t in a.targets]
    payload = {"benchmark": "speech_mfcc", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "loadavg_start": load0},
               "protocol": __doc__.split("\n\n", 1)[1].split("\nWrites", 1)[0].strip(),
               "settings": {"sample_rate": SAMPLE_RATE, "n_mfcc": N_MFCC, "C_grid": list(C_GRID), "targets": a.targets},
               "feature_seconds": feature_seconds, "runs": runs,
               "mean": {k: float(np.mean([r[k] for r in runs])) for k in ("cross_speaker_accuracy", "within_speaker_accuracy")},
               "runs_speaker_norm": runs_norm,
               "mean_speaker_norm": {k: float(np.mean([r[k] for r in runs_norm]))
                                     for k in ("cross_speaker_accuracy", "within_speaker_accuracy")},
               "total_seconds": time.perf_counter() - w0}
    write_payload(a.results, "speech_mfcc", payload, markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
