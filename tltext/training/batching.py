"""Datasets and batching for the engine: raw or cached inputs, collation in the
data loader, length grouping, the per-process target stream."""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset, Sampler


class SplitDataset(Dataset):
    """Items ``(index, input, label)``; ``input`` is raw data or a cached embedding row."""

    def __init__(self, inputs: Sequence[Any], labels: Optional[Sequence[int]] = None):
        self.inputs = inputs
        self.labels = labels

    @property
    def cached(self) -> bool:
        return isinstance(self.inputs, torch.Tensor)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int):
        return i, self.inputs[i], (-1 if self.labels is None else int(self.labels[i]))


def make_collate(backbone=None, train: bool = False) -> Callable[[List[tuple]], Dict[str, Any]]:
    """The data loader's ``collate_fn``: ``{"index" [B], "labels" [B]}`` plus either
    ``"embeddings"`` ``[B, H]`` (cached rows, stacked) or ``"inputs"`` (the backbone's
    collated model inputs: token ids + mask, padded waveforms, pixel tensors)."""

    def collate(items: List[tuple]) -> Dict[str, Any]:
        idx = torch.tensor([i for i, _, _ in items], dtype=torch.long)
        labels = torch.tensor([y for _, _, y in items], dtype=torch.long)
        xs = [x for _, x, _ in items]
        if isinstance(xs[0], torch.Tensor):
            return {"index": idx, "labels": labels, "embeddings": torch.stack(xs)}
        if backbone is None:
            return {"index": idx, "labels": labels, "raw": xs}
        return {"index": idx, "labels": labels, "inputs": backbone.collate(xs, train=train)}

    return collate


def concat_batches(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """One joint batch from two collated ones: rows of ``a`` then ``b``; 2-D sequence
    tensors (waveforms, attention masks) are right-padded with 0 to the longer one,
    which is what joint collation would have produced (padding value 0, mask 0)."""
    out = {}
    for k, x in a.items():
        y = b[k]
        if x.dim() == 2 and x.shape[1] != y.shape[1]:
            n = max(x.shape[1], y.shape[1])
            x, y = F.pad(x, (0, n - x.shape[1])), F.pad(y, (0, n - y.shape[1]))
        out[k] = torch.cat([x, y.to(x.device)])
    return out


def to_device(obj: Any, device) -> Any:
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


class EpochRandomSampler(Sampler[int]):
    """A uniformly random order whose permutation depends only on ``(seed, epoch)``,
    so epoch ``e`` is the same whether or not the run was resumed before it."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        rng = np.random.default_rng([self.seed % 2**63, self.epoch])
        return iter(rng.permutation(self.n).tolist())


class LengthGroupedSampler(Sampler[int]):
    """Random order, but items of similar length close together (less padding).

    Shuffle, cut into mega-batches of ``mega * batch_size``, sort each by
    length, then shuffle the resulting batches' order. Deterministic by
    ``seed`` and ``set_epoch``."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega = mega
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.mega * self.batch_size
        batches = []
        for s in range(0, len(perm), size):
            chunk = sorted(perm[s:s + size], key=lambda i: -self.lengths[i])
            batches += [chunk[b:b + self.batch_size] for b in range(0, len(chunk), self.batch_size)]
        order = torch.randperm(len(batches), generator=g).tolist()
        for b in order:
            yield from batches[b]


class ShardBatches(Sampler[List[int]]):
    """Batches of ``batch_size`` indices from ``sampler``'s epoch order, this process's
    share only (batch ``j`` goes to process ``j % num_processes``), skipping the first
    ``skip`` of its batches (resume) without loading them."""

    def __init__(self, sampler: Sampler, batch_size: int, rank: int = 0, world: int = 1, skip: int = 0):
        self.sampler, self.batch_size, self.rank, self.world, self.skip = sampler, int(batch_size), rank, world, int(skip)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def _all(self) -> List[List[int]]:
        order = list(iter(self.sampler))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return batches[self.rank::self.world] or batches[:1]

    def __len__(self) -> int:
        return max(0, len(self._all()) - self.skip)

    def __iter__(self) -> Iterator[List[int]]:
        yield from self._all()[self.skip:]


def length_sorted(lengths: Sequence[int]) -> List[int]:
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])
