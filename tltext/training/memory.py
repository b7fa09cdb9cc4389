"""Peak host memory on CPU: hand freed heap pages back before the largest steps.

Dynamic padding and length-grouped batches make every step's activations a
different size. glibc keeps freed chunks in its heap, so pages touched by
earlier steps stay resident and the heap grows in jumps whenever a long batch
does not fit the holes left by shorter ones (peak RSS 1.04x the ``Trainer``'s
in ``benchmarks/throughput.py``, whose random batches are all padded to similar
lengths). ``malloc_trim(0)`` returns free pages to the OS, so the next step's
peak is live memory + its own working set; the price is re-faulting those pages.
Peaks come from the longest steps, so the trim runs only before a step whose
input is larger than the previous step's and at least ``near_max`` (0.75) of
the largest seen: 5 trims in 60 MiniLM steps, peak RSS 1890-1920 -> 1780-1833 MB
(Trainer 1833-1876), ~1 s more system CPU time in a ~25 s run (trimming before
every growing step: 33 trims, +6 s, no lower peak). A no-op off glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any, Callable, Optional

import torch


def _glibc_malloc_trim() -> Optional[Callable[[int], int]]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def input_numel(inputs: Any) -> int:
    """Elements in a step's input tensors (dicts, lists and tuples walked)."""
    if torch.is_tensor(inputs):
        return inputs.numel()
    if isinstance(inputs, dict):
        return sum(input_numel(v) for v in inputs.values())
    if isinstance(inputs, (list, tuple)):
        return sum(input_numel(v) for v in inputs)
    return 0


class HeapTrimmer:
    """``before_step(inputs)`` trims the heap when this step's input is larger than
    the last one's and at least ``near_max`` of the largest so far; ``trims``
    counts the calls that ran."""

    def __init__(self, enabled: bool = True, trim: Optional[Callable[[int], int]] = None, near_max: float = 0.75):
        self._trim = (trim or _glibc_malloc_trim()) if enabled else None
        self.near_max = near_max
        self._last = -1
        self._max = 0
        self.trims = 0

    @property
    def active(self) -> bool:
        return self._trim is not None

    def before_step(self, inputs: Any) -> bool:
        if self._trim is None:
            return False
        n = input_numel(inputs)
        self._max = max(self._max, n)
        due = n > self._last and n >= self.near_max * self._max
        self._last = n
        if due:
            self._trim(0)
            self.trims += 1
        return due
