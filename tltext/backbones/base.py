"""The one ``Backbone`` interface every modality implements.

A backbone turns a batch of raw examples into one pooled vector per example:

    x_1..x_B  --collate-->  inputs  --forward-->  z in R^{B x H}

and exposes its parameters as an ordered list of *layer groups* (bottom -> top,
e.g. embeddings, layer 0 .. layer L-1, pooler) for partial unfreezing.
"""
from __future__ import annotations

import hashlib
from typing import Any, Dict, List, NamedTuple, Sequence

import torch
from torch import nn


class LayerGroup(NamedTuple):
    """A named block of parameters (e.g. ``layer.3``) for partial unfreezing."""

    name: str
    params: List[nn.Parameter]


def length_split(lengths: torch.Tensor, min_saving: float = 0.2) -> List[torch.Tensor]:
    """Row indices of a padded batch in one or two length-homogeneous chunks.

    ``lengths``: ``[B]`` real lengths (samples, tokens). The batch costs ``max(l) * B``
    padded positions as one pass; split (sorted, longest first) at the ``k`` that
    minimises ``l_(1) * k + l_(k+1) * (B - k)``, it costs that. Returns ``[rows]`` when the
    best split saves less than ``min_saving`` of the padded positions, else
    ``[longest k rows, the others]`` (each in the batch's order). A batch with a long
    outlier (a 2.3 s clip among 0.5 s ones) is the case it is for."""
    n = int(lengths.numel())
    rows = torch.arange(n, device=lengths.device)
    if n < 2:
        return [rows]
    srt, order = torch.sort(lengths.long(), descending=True, stable=True)
    k = torch.arange(1, n, device=lengths.device)
    costs = srt[0] * k + srt[1:] * (n - k)
    best = int(torch.argmin(costs))
    if float(costs[best]) > (1.0 - min_saving) * float(srt[0]) * n:
        return [rows]
    long_rows = order[: best + 1].sort().values
    keep = torch.ones(n, dtype=torch.bool, device=lengths.device)
    keep[long_rows] = False
    return [long_rows, rows[keep]]


def length_chunks(lengths: torch.Tensor, min_saving: float = 0.2, max_chunks: int = 8) -> List[torch.Tensor]:
    """``length_split`` applied again to each part while it still saves ``min_saving`` of
    that part's padded positions, up to ``max_chunks`` parts: row indices (each part in the
    batch's order, longest part first) of a batch whose lengths spread widely, such as a
    class-balanced or episodic batch of texts that was not grouped by length.

    ``lengths``: ``[B]`` real lengths. Returns ``[rows]`` when no split saves enough.
    Raises ``ValueError`` for ``max_chunks < 1``."""
    if max_chunks < 1:
        raise ValueError(f"length_chunks: max_chunks must be >= 1; got {max_chunks}")
    device, lengths = lengths.device, lengths.detach().cpu()  # one host sync on an accelerator, then CPU work
    parts = [torch.arange(int(lengths.numel()))]
    while len(parts) < max_chunks:
        # split the part with the most padded positions that a split would save enough on
        best, best_cost = None, 0
        for i, rows in enumerate(parts):
            sub = length_split(lengths[rows], min_saving)
            if len(sub) > 1:
                cost = int(lengths[rows].max()) * len(rows)
                if cost > best_cost:
                    best, best_cost = (i, [rows[s] for s in sub]), cost
        if best is None:
            break
        i, sub = best
        parts[i:i + 1] = sub
    return [p.to(device) for p in parts]


class Backbone(nn.Module):
    """Encoder + pooling with a modality-specific preprocessor.

    Subclasses set ``modality`` and implement ``forward``, ``layer_groups``,
    ``collate``, ``length``, ``config_dict``, ``from_config_dict``,
    ``from_pretrained`` and ``save_preprocessor``.
    """

    modality: str = "abstract"
    #: True when padding a batch never changes an example's pooled output
    #: (attention-masked text encoders). The engine then encodes source and
    #: target batches of a DA step in two passes, each padded only to its own
    #: longest item, instead of one pass padded to the longest of both.
    padding_invariant: bool = False
    #: True when the encoder's weights came from a checkpoint or weights file
    #: (pretrained or trained), False when they are a random initialisation
    #: (e.g. a torchvision name without ``weights_path``, a speech ``model_config``).
    #: Frozen or partial tuning of random weights trains a head on noise features.
    #: Backbones rebuilt by ``from_config_dict`` keep True: the checkpoint being
    #: loaded supplies the weights.
    pretrained_weights_loaded: bool = True
    #: True when the checkpoint defines its embedding as L2-normalised (a
    #: sentence-transformers folder whose ``modules.json`` ends in ``Normalize``,
    #: as all-MiniLM-L6-v2's does). The pooled output stays unnormalised (the
    #: features every objective trains on); the frozen linear probe fits on the
    #: unit vectors the checkpoint was trained to compare (``TltextConfig.feature_norm``).
    unit_norm_embeddings: bool = False
    #: True when a trainable encoder of this family starts its cross-entropy head from the
    #: linear probe (LP-FT, Kumar et al., ICLR 2022) by default, under partial and full tuning,
    #: whatever the objective, when its weights were loaded (``pretrained_weights_loaded``; from
    #: random weights there are no features to keep). Speech and image backbones: True. On FSDD
    #: (wav2vec 2.0 stage-0 model, stage 1 full, lr 2e-3, seed 0) a random head at 10x that rate
    #: scored 62 / 70 / 54 / 64 % on george / jackson / nicolas / theo against 68 / 70 / 60 / 68 %
    #: from the probe (README, "Speech and images"). Text: False, where a random head (full) or
    #: the Trainer-like adapter (partial) was measured better on Amazon and SST-2
    #: (``tltext.trainer.default_head_init``); objectives with ``lp_ft_head`` still start from
    #: the probe there.
    lp_ft_head: bool = True

    @property
    def hidden_size(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """Pooled embeddings ``[B, H]`` for collated ``inputs``."""
        raise NotImplementedError

    def layer_groups(self) -> List[LayerGroup]:  # pragma: no cover
        """Ordered parameter groups, bottom (input side) first; every parameter
        that influences the pooled output is in exactly one group."""
        raise NotImplementedError

    def collate(self, inputs: Sequence[Any], train: bool = False) -> Dict[str, torch.Tensor]:
        """Raw inputs (texts, waveforms, images) -> model input tensors."""
        raise NotImplementedError  # pragma: no cover

    def length(self, raw: Any) -> int:
        """A cheap size of one raw input, used to sort batches by length."""
        return 0

    def lengths(self, raws: Sequence[Any]) -> List[int]:
        """``length`` of every raw input (a backbone may compute them in one batched call)."""
        return [self.length(x) for x in raws]

    def config_dict(self) -> Dict[str, Any]:  # pragma: no cover
        """JSON-able description that rebuilds this backbone without weights."""
        raise NotImplementedError

    @classmethod
    def from_config_dict(cls, cfg: Dict[str, Any], preprocessor_dir: str | None = None) -> "Backbone":
        raise NotImplementedError  # pragma: no cover

    def save_preprocessor(self, directory: str) -> None:
        """Save tokenizer / feature extractor next to the model weights."""

    def fingerprint(self) -> str:
        """Hash of the weights and the config: the embedding-cache key part."""
        h = hashlib.sha1(repr(sorted(self.config_dict().items())).encode())
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def set_layerdrop(self, value: float) -> None:
        """Switch stochastic layer dropping (LayerDrop); no-op where absent."""
