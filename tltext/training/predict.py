"""Inference over a split on every process: logits, features, cached embeddings.

``Predictor`` runs a model over raw inputs (collated in the loader) or cached
embeddings with ``tltext.training.engine.infer`` (sharded, gathered, in input
order); ``EmbeddingCache`` encodes a split once with a frozen backbone and keeps
the ``[N, H]`` embeddings on disk (``tltext.training.cache``)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from .batching import SplitDataset, make_collate
from .cache import cache_key, default_cache_dir, load_cached, save_cached
from .engine import infer


def item_lengths(backbone, inputs) -> List[int]:
    """Per-item lengths for length grouping (0 for cached embeddings)."""
    if isinstance(inputs, torch.Tensor):
        return [0] * len(inputs)
    return list(backbone.lengths(inputs))


class Predictor:
    """``logits(model, inputs) -> [N, C]``, ``features(model, inputs) -> [N, D]``
    (adapter space), ``embed(backbone, inputs) -> [N, H]``; ``inputs`` is a list of raw
    items or a ``[N, H]`` tensor of cached embeddings."""

    def __init__(self, acc, batch_size: int, disable_tqdm: bool = False):
        self.acc, self.batch_size, self.disable_tqdm = acc, int(batch_size), disable_tqdm

    def _run(self, fn, backbone, inputs, desc: str, batch_size: Optional[int] = None) -> torch.Tensor:
        return infer(self.acc, fn, SplitDataset(inputs), item_lengths(backbone, inputs), batch_size or self.batch_size,
                     make_collate(backbone, train=False), desc, self.disable_tqdm)

    def logits(self, model, inputs, desc: str = "predict") -> torch.Tensor:
        model.eval()
        return self._run(lambda b: model.classify(model.features(_embeddings(model, b))), model.backbone, inputs, desc)

    def features(self, model, inputs, desc: str = "features") -> torch.Tensor:
        model.eval()
        return self._run(lambda b: model.features(_embeddings(model, b)), model.backbone, inputs, desc)

    def embed(self, backbone, inputs, desc: str = "encode", batch_size: Optional[int] = None) -> torch.Tensor:
        backbone.to(self.acc.device).eval()
        return self._run(lambda b: backbone(**b["inputs"]), backbone, inputs, desc, batch_size)


def _embeddings(model, batch: Dict[str, Any]) -> torch.Tensor:
    return batch["embeddings"] if "embeddings" in batch else model.encode(**batch["inputs"])


@dataclass
class CacheStats:
    encode_seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0


class EmbeddingCache:
    """``encode(backbone, inputs, name) -> [N, H]``: every item encoded exactly once
    per (backbone weights + config, inputs), stored under ``cache_dir``
    (default ``$TLTEXT_CACHE`` or ``~/.cache/tltext``)."""

    def __init__(self, predictor: Predictor, cache_dir: Optional[str] = None, batch_size: int = 128):
        self.predictor, self.cache_dir = predictor, cache_dir or default_cache_dir()
        self.batch_size = batch_size
        self.stats = CacheStats()
        self._fingerprints: Dict[int, str] = {}

    def encode(self, backbone, inputs: Sequence[Any], name: str = "split") -> torch.Tensor:
        acc = self.predictor.acc
        t0 = time.perf_counter()
        fp = self._fingerprints.setdefault(id(backbone), backbone.fingerprint())
        key = cache_key(fp, inputs)
        emb = load_cached(self.cache_dir, key)
        if acc.num_processes > 1:  # a hit only where every process has the file (per-node disks): encoding is collective
            hits = acc.gather(torch.tensor([int(emb is not None)], device=acc.device))
            emb = emb if bool(hits.min()) else None
        if emb is None:
            emb = self.predictor.embed(backbone, list(inputs), f"encode {name}", self.batch_size)
            if acc.is_local_main_process:  # once per node (atomic rename: a shared disk is fine)
                save_cached(self.cache_dir, key, emb)
            acc.wait_for_everyone()
            self.stats.cache_misses += 1
        else:
            self.stats.cache_hits += 1
        self.stats.encode_seconds += time.perf_counter() - t0
        return emb


def score(logits: torch.Tensor, labels: Sequence[int], label_names: Sequence[str], metrics: Sequence[str]) -> Dict[str, Any]:
    """Metrics of ``[N, C]`` logits against label ids (bundled ``evaluate`` modules)."""
    from ..metrics import compute_metrics

    probs = torch.softmax(logits.float(), dim=-1).numpy()
    return compute_metrics(probs.argmax(-1), np.asarray(labels), probabilities=probs, label_names=list(label_names),
                           metrics=tuple(metrics))
