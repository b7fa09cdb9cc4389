"""``tltext diagnose``: how far apart are source and target, and what to try first.

Embeds both domains with the frozen backbone (through the embedding cache, so a
later ``--tuning frozen`` run reuses them), measures the proxy A-distance and
MK-MMD^2, counts labelled source examples per class and applies the decision
table of :mod:`tltext.diagnostics.recommend`. Writes OUT/diagnosis.json."""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import Counter
from typing import Any, Dict, List, Optional

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tltext diagnose", description=__doc__.split("\n\n")[0])
    p.add_argument("--model_name_or_path", default=None, help="Backbone (text default: the offline all-MiniLM-L6-v2).")
    p.add_argument("--source_file", required=True, help="Labelled source-domain data.")
    p.add_argument("--target_file", required=True, help="Target-domain data (labels, if any, are not used).")
    p.add_argument("--modality", default="text", choices=("text", "speech", "image"))
    p.add_argument("--text_column", default="text")
    p.add_argument("--audio_column", default="audio")
    p.add_argument("--image_column", default="image")
    p.add_argument("--label_column", default="label")
    p.add_argument("--source_filter", default=None, help="Row filter 'col=v1,v2;col2=v'.")
    p.add_argument("--target_filter", default=None)
    p.add_argument("--max_seq_length", type=int, default=None,
                   help="Tokens per text (default as in training: 256 or the model's limit; the cache is shared).")
    p.add_argument("--pooling", default="mean")
    p.add_argument("--max_samples_per_domain", type=int, default=None,
                   help="Embed at most this many examples per domain (default: all, which the cache shares with training).")
    p.add_argument("--a_distance_samples", type=int, default=2000, help="Examples per domain for the A-distance.")
    p.add_argument("--mmd_samples", type=int, default=1000, help="Examples per domain for MMD^2.")
    p.add_argument("--embed_batch_size", type=int, default=128)
    p.add_argument("--output_dir", default=None, help="Where diagnosis.json goes (not written without it).")
    p.add_argument("--cache_dir", default=None, help="Embedding cache (default $TLTEXT_CACHE or ~/.cache/tltext).")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--disable_tqdm", action="store_true")
    return p


def check_counts(a: argparse.Namespace) -> None:
    """One-line ValueError for a sample-count flag the diagnosis cannot use."""
    if a.a_distance_samples is not None and a.a_distance_samples < 5:
        raise ValueError(f"--a_distance_samples {a.a_distance_samples}: expected at least 5 examples per domain "
                         "(the A-distance is a 5-fold cross-validated domain classifier)")
    if a.mmd_samples is not None and a.mmd_samples < 2:
        raise ValueError(f"--mmd_samples {a.mmd_samples}: expected at least 2 examples per domain")
    if a.max_samples_per_domain is not None and a.max_samples_per_domain < 5:
        raise ValueError(f"--max_samples_per_domain {a.max_samples_per_domain}: expected at least 5, or omit it "
                         "to embed every example")


def _subset(ex, k: Optional[int], seed: int):
    if not k or k >= len(ex):
        return ex
    return ex.subset(sorted(np.random.default_rng(seed).choice(len(ex), k, replace=False).tolist()))


def diagnose(a: argparse.Namespace) -> Dict[str, Any]:
    """Run the diagnosis; returns the dict written to diagnosis.json."""
    from accelerate import Accelerator

    from ..args import DataArguments, ModelArguments
    from ..data import DataError
    from ..data.load import load_examples
    from ..atomic import atomic_write_json
    from ..experiment import build_backbone, default_model
    from ..training.predict import EmbeddingCache, Predictor
    from .adistance import a_distance_from_error, domain_classifier_error, mmd2
    from .recommend import LARGE_GAP_A_DISTANCE, SIMILAR_A_DISTANCE, THRESHOLDS, recommend

    for flag, path in (("--source_file", a.source_file), ("--target_file", a.target_file)):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{flag} {path}: no such file or folder")
    t0 = time.perf_counter()
    m = ModelArguments(model_name_or_path=a.model_name_or_path, pooling=a.pooling)
    d = DataArguments(text_column=a.text_column, audio_column=a.audio_column, image_column=a.image_column,
                      label_column=a.label_column, max_seq_length=a.max_seq_length, cache_dir=a.cache_dir)
    backbone = build_backbone(a.modality, m, d)
    sr = getattr(backbone, "sampling_rate", None)
    src = _subset(load_examples(a.modality, a.source_file, d, True, a.source_filter, sr), a.max_samples_per_domain, a.seed)
    tgt = _subset(load_examples(a.modality, a.target_file, d, False, a.target_filter, sr), a.max_samples_per_domain, a.seed + 1)
    for name, ex in (("--source_file", src), ("--target_file", tgt)):
        if len(ex) < 5:
            raise DataError(f"{name} {ex.source}: {len(ex)} rows; the A-distance (5-fold CV) needs at least 5 per domain")
    counts = Counter(str(v) for v in src.labels)
    cache = EmbeddingCache(Predictor(Accelerator(), a.embed_batch_size, a.disable_tqdm), a.cache_dir, a.embed_batch_size)
    es = cache.encode(backbone, src.inputs, "source")
    et = cache.encode(backbone, tgt.inputs, "target")
    t1 = time.perf_counter()
    e = domain_classifier_error(es, et, seed=a.seed, max_per_domain=a.a_distance_samples)
    mmd = mmd2(es, et, max_per_domain=a.mmd_samples, seed=a.seed)
    a_dist, a_se = a_distance_from_error(e["error"]), a_distance_standard_error(e["error"], e["n_per_domain"])
    rec = recommend(dict(counts), a_dist, has_unlabelled_target=True, modality=a.modality)
    near = [t for t in (SIMILAR_A_DISTANCE, LARGE_GAP_A_DISTANCE) if abs(a_dist - t) < a_se]
    if near:
        rec.reasons.append(f"uncertain: the A-distance {a_dist:.2f} is within one standard error ({a_se:.2f}) of the "
                           f"{near[0]} threshold; more examples per domain (--a_distance_samples, "
                           f"{e['n_per_domain']} used) could change this recommendation")
    out = {
        "model": a.model_name_or_path or default_model(a.modality),
        "modality": a.modality,
        "source_file": a.source_file,
        "target_file": a.target_file,
        "num_examples": {"source": len(src), "target": len(tgt)},
        "embedding_dim": int(es.shape[1]),
        "a_distance": a_dist,
        "domain_classifier_error": e["error"],
        "a_distance_n_per_domain": e["n_per_domain"],
        "a_distance_standard_error": a_se,
        "a_distance_rough": e["n_per_domain"] < ROUGH_BELOW,
        "mmd2": mmd,
        "mmd2_n_per_domain": min(len(src), len(tgt), a.mmd_samples) if a.mmd_samples else None,
        "labels_per_class": dict(sorted(counts.items())),
        "min_labels_per_class": min(counts.values()),
        "target_labels_per_class": dict(sorted(Counter(str(v) for v in tgt.labels).items())) if tgt.labels is not None else None,
        "recommendation": rec.to_dict(),
        "thresholds": THRESHOLDS,
        "seed": a.seed,
        "timing": {"encode_seconds": cache.stats.encode_seconds, "cache_hits": cache.stats.cache_hits,
                   "measure_seconds": time.perf_counter() - t1, "total_seconds": time.perf_counter() - t0},
    }
    if a.output_dir:
        os.makedirs(a.output_dir, exist_ok=True)
        atomic_write_json(os.path.join(a.output_dir, "diagnosis.json"), out)
    return out


ROUGH_BELOW = 100  # examples per domain under which the A-distance is flagged as a rough estimate


def a_distance_standard_error(error: float, n_per_domain: int) -> float:
    """Binomial standard error of the proxy A-distance ``2 (1 - 2 err)`` when ``err`` is a
    held-out error rate over ``2 n_per_domain`` examples: ``4 sqrt(err (1 - err) / (2 n))``
    (0.5 as ``err`` in the variance when ``err`` is 0, so a perfect split still reports its
    sampling uncertainty)."""
    n = max(1, 2 * int(n_per_domain))
    p = float(error) if 0.0 < error < 1.0 else 0.5 / n
    return 4.0 * math.sqrt(p * (1.0 - p) / n)


def format_table(dx: Dict[str, Any]) -> str:
    rec = dx["recommendation"]
    per_class = ", ".join(f"{k} {v}" for k, v in list(dx["labels_per_class"].items())[:8])
    if len(dx["labels_per_class"]) > 8:
        per_class += f", ... ({len(dx['labels_per_class'])} classes)"
    rows: List[str] = [
        f"tltext diagnose ({dx['modality']}, {dx['model']}, {dx['embedding_dim']}-d embeddings)",
        f"  source  {dx['source_file']}  ({dx['num_examples']['source']} examples)",
        f"  target  {dx['target_file']}  ({dx['num_examples']['target']} examples)",
        "",
        f"  {'proxy A-distance':<26}{dx['a_distance']:.3f}   (0 = same, 2 = separable; domain classifier error "
        f"{dx['domain_classifier_error']:.3f}, 5-fold, {dx['a_distance_n_per_domain']} per domain; "
        f"A-distance +- {dx['a_distance_standard_error']:.2f} s.e." + ("; few examples: a rough estimate" if
                                                                       dx.get("a_distance_rough") else "") + ")",
        f"  {'MK-MMD^2':<26}{dx['mmd2']:+.4f}  ({dx['mmd2_n_per_domain']} per domain"
        + ("; unbiased estimate: below 0 means no detectable gap)" if dx["mmd2"] < 0 else ")"),
        f"  {'labelled source / class':<26}min {dx['min_labels_per_class']}  ({per_class})",
        f"  {'recommendation':<26}{rec['flags']}",
    ]
    rows += [f"    - {x}" for x in rec["reasons"]]
    if rec["alternatives"]:
        rows.append("  also try: " + "; ".join(rec["alternatives"]))
    return "\n".join(rows)


def main(argv: Optional[List[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        check_counts(a)
        dx = diagnose(a)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(dx))
    if a.output_dir:
        print(f"diagnosis: {os.path.join(a.output_dir, 'diagnosis.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
