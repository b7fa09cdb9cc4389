"""benchmarks/collect_runs.py: the flags column names every training flag that ran."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import collect_runs  # noqa: E402


def _results(tmp_path, args):
    run = tmp_path / "b2k_partial_bs8_s2"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "args": args, "test": {"accuracy": 0.761}, "validation": {"accuracy": 0.835},
        "timing": {"train_seconds": 855.0}, "training": {"precision": "no", "learning_rate": 5e-5,
                                                          "head_learning_rate": 5e-5}}))
    return str(run)


def test_flags_outside_the_shown_list_and_factory_defaults(tmp_path):
    defaults = collect_runs._defaults()
    args = dict(defaults, train_file="/data/amazon/books.jsonl", tuning="partial", seed=2, learning_rate=5e-5,
                per_device_train_batch_size=8, validation_split_percentage=0.0,
                output_dir="/runs/x", overwrite_output_dir=True, disable_tqdm=True, report=False, save_model=False)
    r = collect_runs.row(_results(tmp_path, args), defaults)
    flags = r["flags"].split(" --")
    assert flags[0] == "--train_file books.jsonl"
    assert "per_device_train_batch_size 8" in flags and "validation_split_percentage 0.0" in flags
    assert "learning_rate 5e-05" in flags and "tuning partial" in flags and "seed 2" in flags
    # list-valued defaults (--metric) and the output/report flags are not differences in what trained
    assert not any(f.split()[0].lstrip("-") in ("metric", "output_dir", "report", "save_model", "disable_tqdm")
                   for f in flags), r["flags"]
    assert r["test_accuracy"] == 0.761 and r["learning_rates"] == {"learning_rate": 5e-5, "head_learning_rate": 5e-5}


def test_objective_flags_the_objective_does_not_read_are_left_out(tmp_path):
    defaults = collect_runs._defaults()
    # a DANN run recorded before --episodes_per_epoch's default changed: prototypes' flag played no part
    args = dict(defaults, train_file="/data/amazon/books.jsonl", objective="dann", da_weight=0.03, episodes_per_epoch=100,
                n_way=5)
    flags = collect_runs.row(_results(tmp_path, args), defaults)["flags"]
    assert "--da_weight 0.03" in flags and "episodes_per_epoch" not in flags and "n_way" not in flags
    args["objective"] = "prototypes"
    (tmp_path / "p").mkdir()
    assert "--episodes_per_epoch 100 --n_way 5" in collect_runs.row(_results(tmp_path / "p", args), defaults)["flags"]


def test_mfcc_peer_speaker_standardisation_uses_each_speakers_train_rows_only():
    import numpy as np

    from benchmarks.speech_mfcc import speaker_standardise

    rng = np.random.default_rng(0)
    spk = np.array(["a"] * 6 + ["b"] * 6)
    split = np.array(["train", "train", "train", "train", "test", "test"] * 2)
    X = rng.normal(size=(12, 3)) + np.where(spk[:, None] == "b", 5.0, 0.0)
    X[:, 2] = np.where(spk == "a", 1.0, X[:, 2])  # a constant column for speaker a: left unscaled, centred
    Z = speaker_standardise(X, spk, split)
    for s in ("a", "b"):
        ref = (spk == s) & (split == "train")
        np.testing.assert_allclose(Z[ref].mean(0), 0.0, atol=1e-12)
        np.testing.assert_allclose(Z[ref][:, :2].std(0), 1.0, atol=1e-12)
        rows = (spk == s) & (split == "test")  # test rows use the train rows' statistics, not their own
        mu, sd = X[ref].mean(0), X[ref].std(0)
        np.testing.assert_allclose(Z[rows][:, :2], (X[rows][:, :2] - mu[:2]) / sd[:2])
    assert np.all(Z[spk == "a", 2] == 0.0)
