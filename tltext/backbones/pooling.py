"""Pooling of token / frame states into one vector.

mean: z = sum_t m_t h_t / max(1, sum_t m_t)   (m = attention mask, padding ignored)
cls:  z = h_0
"""
from __future__ import annotations

import torch

POOLINGS = ("mean", "cls")


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, method: str = "mean") -> torch.Tensor:
    """Pool ``hidden`` ``[B, T, H]`` with ``mask`` ``[B, T]`` (1 = real token)."""
    if method == "cls":
        return hidden[:, 0]
    if method != "mean":
        raise ValueError(f"pooling must be one of {POOLINGS}, got {method!r}")
    if mask is None:
        return hidden.mean(dim=1)
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
