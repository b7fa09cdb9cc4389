"""Heap trimming between CPU steps: when it runs, that it frees memory, that it changes no result."""
import gc
import json

import pytest
import torch

from tltext.experiment import parse_and_run
from tltext.training.memory import HeapTrimmer, _glibc_malloc_trim, input_numel

from helpers import reviews, write_jsonl


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_input_numel_walks_nested_inputs():
    inputs = {"parts": [{"input_ids": torch.ones(4, 7), "attention_mask": torch.ones(4, 7)},
                        {"input_ids": torch.ones(2, 3)}], "labels": None}
    assert input_numel(inputs) == 4 * 7 * 2 + 2 * 3
    assert input_numel({"embeddings": torch.zeros(8, 384)}) == 8 * 384


def test_trims_only_before_a_long_step_larger_than_the_last():
    calls = []
    tr = HeapTrimmer(trim=lambda pad: calls.append(pad) or 1, near_max=0.75)
    sizes = [10, 5, 20, 20, 30, 2, 3, 23, 22, 29, 40]
    due = [tr.before_step({"x": torch.zeros(n)}) for n in sizes]
    # 3 grew but is far below the largest (30); 23 >= 0.75 * 30; 29 grew from 22; 40 is a new maximum
    assert due == [True, False, True, False, True, False, False, True, False, True, True]
    assert tr.trims == 6 and calls == [0] * 6
    off = HeapTrimmer(enabled=False)
    assert not off.active and not off.before_step({"x": torch.zeros(3)}) and off.trims == 0


@pytest.mark.skipif(_glibc_malloc_trim() is None, reason="malloc_trim needs glibc on Linux")
def test_malloc_trim_returns_freed_heap_pages():
    # 64 KiB tensors stay below glibc's mmap threshold, so they live in the heap; keeping every
    # 16th alive pins the heap so that freeing the rest leaves resident holes, not a shorter heap
    ts = [torch.ones(16 * 1024) for _ in range(3000)]
    keep = ts[::16]
    del ts
    gc.collect()
    before = _rss_mb()
    HeapTrimmer().before_step({"x": torch.zeros(1)})
    after = _rss_mb()
    assert before - after > 60, f"RSS {before:.0f} -> {after:.0f} MB after malloc_trim"
    assert len(keep) == 188


def test_trimming_changes_no_result(tiny_bert_dir, tmp_path):
    rows = reviews(pos="positive", neg="negative")
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", rows[::3])
    runs = {}
    for trim in ("True", "False"):
        out = tmp_path / trim
        parse_and_run("text", ["--model_name_or_path", tiny_bert_dir, "--train_file", str(tmp_path / "train.jsonl"),
                               "--test_file", str(tmp_path / "test.jsonl"), "--tuning", "full", "--output_dir", str(out),
                               "--num_train_epochs", "2", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
                               "--trim_cpu_heap", trim, "--disable_tqdm", "--report", "False", "--save_model", "False"])
        runs[trim] = json.loads((out / "results.json").read_text())
    on, off = runs["True"], runs["False"]
    assert 1 <= on["timing"]["heap_trims"] < on["timing"]["train_steps"]
    assert off["timing"]["heap_trims"] == 0
    assert on["test"] == off["test"]
    assert [h["train_loss"] for h in on["history"]] == [h["train_loss"] for h in off["history"]]
