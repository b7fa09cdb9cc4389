"""Datasets and batching for the engine: raw or cached inputs, length grouping."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch
from torch.utils.data import Dataset, Sampler


class SplitDataset(Dataset):
    """Items ``(index, input, label)``; ``input`` is raw data or a cached embedding row."""

    def __init__(self, inputs: Sequence[Any], labels: Optional[Sequence[int]] = None):
        self.inputs = inputs
        self.labels = labels

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int):
        return i, self.inputs[i], (-1 if self.labels is None else int(self.labels[i]))


def collate_items(items: List[tuple]) -> dict:
    """Keep raw inputs as a list (the backbone collates them later, source and
    target together); stack cached embeddings."""
    idx = torch.tensor([i for i, _, _ in items], dtype=torch.long)
    labels = torch.tensor([y for _, _, y in items], dtype=torch.long)
    xs = [x for _, x, _ in items]
    if isinstance(xs[0], torch.Tensor):
        return {"index": idx, "labels": labels, "embeddings": torch.stack(xs)}
    return {"index": idx, "labels": labels, "raw": xs}


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


def length_sorted(lengths: Sequence[int]) -> List[int]:
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])
