"""K-shot subsets: stratified, seeded, nested, with clear errors."""
from __future__ import annotations

from collections import Counter

import pytest

from tltext.data import DataError
from tltext.data.fewshot import sample_k_shot

LABELS = ["pos", "neg", "neu"] * 10 + ["pos"] * 5  # pos 15, neg 10, neu 10


def test_stratified_sorted_and_valid():
    idx = sample_k_shot(LABELS, k=4, seed=0)
    assert idx == sorted(idx) and len(set(idx)) == len(idx) == 12
    assert Counter(LABELS[i] for i in idx) == {"pos": 4, "neg": 4, "neu": 4}


def test_deterministic_by_seed():
    assert sample_k_shot(LABELS, 4, seed=3) == sample_k_shot(LABELS, 4, seed=3)
    assert sample_k_shot(LABELS, 4, seed=3) != sample_k_shot(LABELS, 4, seed=4)
    assert len({tuple(sample_k_shot(LABELS, 4, seed=s)) for s in range(10)}) == 10


def test_nested_across_k():
    for seed in range(3):
        assert set(sample_k_shot(LABELS, 2, seed)) < set(sample_k_shot(LABELS, 8, seed))


def test_int_labels():
    labels = [i % 5 for i in range(50)]
    idx = sample_k_shot(labels, 3, seed=1)
    assert Counter(labels[i] for i in idx) == {c: 3 for c in range(5)}


def test_too_few_names_class_count_k_and_flag():
    with pytest.raises(DataError) as e:
        sample_k_shot(LABELS, k=12, seed=0, source="books.jsonl")
    msg = str(e.value)
    assert "books.jsonl" in msg and "k=12" in msg and "--allow_fewer_shots" in msg
    assert "class 'neg' has only 10" in msg and "class 'neu' has only 10" in msg and "'pos'" not in msg


def test_allow_fewer_uses_all_of_short_class():
    idx = sample_k_shot(LABELS, k=12, seed=0, allow_fewer=True)
    assert Counter(LABELS[i] for i in idx) == {"pos": 12, "neg": 10, "neu": 10}


def test_bad_input():
    with pytest.raises(DataError, match="row 1 has an empty label"):
        sample_k_shot(["a", None, "b"], 1, seed=0)
    with pytest.raises(DataError, match="must be >= 1"):
        sample_k_shot(LABELS, 0, seed=0)


def test_held_out_validation_says_whether_it_was_stratified():
    from tltext.experiment import held_out_validation

    labels = [0] * 10 + [1] * 10
    tr, va, info, desc = held_out_validation(labels, 10, 3, "train.jsonl")
    assert sorted(tr + va) == list(range(20)) and sorted(labels[i] for i in va) == [0, 1]
    assert info["stratified"] and desc == "train.jsonl (10% held out, stratified, seed 3)"
    tr, va, info, desc = held_out_validation(labels + [2], 10, 3, "train.jsonl")
    assert not info["stratified"]
    assert desc == "train.jsonl (10% held out, NOT stratified: class id(s) [2] have a single example, seed 3)"
    _, _, info, desc = held_out_validation(labels + [2], 10, 3, "train.jsonl", names=["a", "b", "c"])
    assert "NOT stratified: class(es) ['c'] have a single example" in desc
