"""OUT/report.md and its pictures after real tiny-BERT runs."""
import json

import numpy as np
import pytest
from PIL import Image

from tltext import report
from tltext.experiment import parse_and_run

from helpers import write_jsonl


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy_report")
    pos = ["great product works well", "love it very good", "excellent and great", "good value love"]
    neg = ["terrible broke fast", "awful do not buy", "bad and broken", "waste of money awful"]
    write_jsonl(d / "train.jsonl", [{"text": t, "label": "positive"} for t in pos * 5] + [{"text": t, "label": "negative"} for t in neg * 5])
    tpos, tneg = ["a wonderful novel, great plot", "loved the story"], ["boring novel, awful plot", "bad book, dull"]
    test = [{"text": t, "label": "positive"} for t in tpos * 4] + [{"text": t, "label": "negative"} for t in tneg * 4]
    write_jsonl(d / "test.jsonl", test)
    write_jsonl(d / "target.jsonl", [{"text": r["text"]} for r in test])
    return d


def _args(toy, tiny_bert_dir, out, *extra):
    return ["--model_name_or_path", tiny_bert_dir, "--train_file", str(toy / "train.jsonl"),
            "--test_file", str(toy / "test.jsonl"), "--output_dir", str(out), "--num_train_epochs", "1",
            "--per_device_train_batch_size", "8", "--disable_tqdm", "--save_model", "False", *extra]


def _check_png(path, figsize):
    img = Image.open(path)
    img.load()
    assert img.format == "PNG" and img.size == report.figure_pixels(figsize)
    px = np.asarray(img.convert("L"))
    assert px.std() > 5 and len(np.unique(px)) > 20  # drawn, not blank


def test_frozen_dann_run_writes_report_and_domain_gap(toy, tiny_bert_dir, tmp_path):
    out = tmp_path / "out"
    res = parse_and_run("text", _args(toy, tiny_bert_dir, out, "--objective", "dann", "--target_file",
                                      str(toy / "target.jsonl"), "--cache_dir", str(tmp_path / "cache")))
    for name in ("embeddings_before.png", "embeddings_after.png", "curves.png"):
        _check_png(out / name, report.CURVES_FIGSIZE if name == "curves.png" else report.EMBEDDINGS_FIGSIZE)
    _check_png(out / "confusion_matrix.png", report.confusion_figsize(2))
    md = (out / "report.md").read_text()
    for name in ("embeddings_before.png", "embeddings_after.png", "confusion_matrix.png", "curves.png"):
        assert f"]({name})" in md
    saved = json.loads((out / "results.json").read_text())
    gap = saved["domain_gap"]
    for key in ("a_distance_before", "a_distance_after", "mmd2_before", "mmd2_after"):
        assert isinstance(gap[key], float), key
    assert 0.0 <= gap["a_distance_before"] <= 2.0 and 0.0 <= gap["a_distance_after"] <= 2.0
    assert gap["n_per_domain"] == 16  # the target file has 16 rows, the source more: balanced
    assert "backbone embeddings (32-d)" == gap["space_before"] and "(256-d)" in gap["space_after"]  # DA adapter
    assert f"{gap['a_distance_before']:.3f} | {gap['a_distance_after']:.3f}" in md
    assert saved["warnings"] == [] and res["domain_gap"] == gap
    assert saved["timing"]["report_seconds"] < 30


def test_partial_run_embeds_with_the_pretrained_backbone(toy, tiny_bert_dir, tmp_path):
    """No target: train vs test; the backbone was trained, so 'before' re-embeds with a fresh copy."""
    out = tmp_path / "out"
    parse_and_run("text", _args(toy, tiny_bert_dir, out, "--tuning", "partial", "--unfreeze_top_k", "1",
                                "--learning_rate", "1e-3", "--metric", "accuracy", "confusion_matrix", "--report_tsne", "False"))
    saved = json.loads((out / "results.json").read_text())
    assert "domain_gap" not in saved and saved["warnings"] == []
    _check_png(out / "embeddings_before.png", report.EMBEDDINGS_FIGSIZE)
    _check_png(out / "embeddings_after.png", report.EMBEDDINGS_FIGSIZE)
    assert np.asarray(saved["test"]["confusion_matrix"]).sum() == 16
    md = (out / "report.md").read_text()
    assert "Domain gap" not in md and "| test |" in md
    # partial source-only trains the default adapter (the hidden size); without one, the 'after' features
    # are the trained encoder's pooled embeddings, and the report says so
    assert saved["training"]["adapter_dim"] == 32 and "## Embeddings after adaptation (adapter features)" in md
    parse_and_run("text", _args(toy, tiny_bert_dir, tmp_path / "no_adapter", "--tuning", "partial", "--adapter_dim", "0",
                                "--max_train_steps", "1", "--report_tsne", "False"))
    md = (tmp_path / "no_adapter" / "report.md").read_text()
    assert "## Embeddings after adaptation (head input: pooled embeddings of the trained model)" in md


def test_no_report_flag(toy, tiny_bert_dir, tmp_path):
    out = tmp_path / "out"
    parse_and_run("text", _args(toy, tiny_bert_dir, out, "--report", "False", "--max_train_steps", "1",
                                "--cache_dir", str(tmp_path / "cache")))
    assert (out / "results.json").exists()
    assert not (out / "report.md").exists() and not list(out.glob("*.png"))


def test_many_class_confusion_and_empty_history(tmp_path):
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 9, (25, 25))
    report.plot_confusion(cm, [f"intent_{i}" for i in range(25)], str(tmp_path / "cm.png"), "25 classes")
    _check_png(tmp_path / "cm.png", report.confusion_figsize(25))
    report.plot_curves([], str(tmp_path / "c.png"), "no history")
    assert Image.open(tmp_path / "c.png").size == report.figure_pixels(report.CURVES_FIGSIZE)


def test_target_points_take_test_labels_only_for_the_same_file():
    from types import SimpleNamespace

    from tltext.args import DataArguments

    splits = SimpleNamespace(inputs={"test": ["a", "b", "c"], "target": ["a", "b", "c"]},
                             labels={"test": [0, 1, 0], "target": None})
    same = DataArguments(test_file="k.jsonl", target_file="k.jsonl")
    assert report._target_labels_from_test(same, splits) == [0, 1, 0]
    assert report._target_labels_from_test(DataArguments(test_file="k.jsonl", target_file="u.jsonl"), splits) is None
    assert report._target_labels_from_test(DataArguments(test_file="k.jsonl", target_file="k.jsonl",
                                                         target_filter="speaker=a"), splits) is None


def test_eval_only_summary_says_nothing_was_trained(toy, tiny_bert_dir, tmp_path, capsys):
    trained = tmp_path / "trained"
    parse_and_run("text", _args(toy, tiny_bert_dir, trained, "--report", "False", "--save_model", "True"))
    capsys.readouterr()
    out = tmp_path / "eval"
    res = parse_and_run("text", ["--eval_only", "--model_name_or_path", str(trained / "model"), "--test_file",
                                 str(toy / "test.jsonl"), "--output_dir", str(out), "--disable_tqdm"])
    summary = capsys.readouterr().out
    assert "evaluation only: nothing trained  |  classes: 2" in summary and "seed=" not in summary
    assert "train: None" not in summary and "time: train" not in summary and "time: evaluation " in summary
    assert f"test:       accuracy {res['test']['accuracy']:.4f}" in summary
    # --validation_file is scored too (it was silently ignored)
    both = parse_and_run("text", ["--eval_only", "--model_name_or_path", str(trained / "model"), "--test_file",
                                  str(toy / "test.jsonl"), "--validation_file", str(toy / "train.jsonl"),
                                  "--output_dir", str(tmp_path / "eval2"), "--disable_tqdm"])
    assert both["num_examples"] == {"validation": 40, "test": 16} and 0.0 <= both["validation"]["accuracy"] <= 1.0
    # the text length recorded is the saved model's, the one that ran; a different flag is named as ignored
    saved_length = json.loads((trained / "results.json").read_text())["args"]["max_seq_length"]
    assert isinstance(saved_length, int) and res["args"]["max_seq_length"] == saved_length and not res.get("warnings")
    other = parse_and_run("text", ["--eval_only", "--model_name_or_path", str(trained / "model"), "--test_file",
                                   str(toy / "test.jsonl"), "--output_dir", str(tmp_path / "eval3"), "--disable_tqdm",
                                   "--max_seq_length", str(saved_length + 7)])
    assert other["args"]["max_seq_length"] == saved_length and other["test"] == res["test"]
    assert other["warnings"] == [f"--max_seq_length {saved_length + 7} ignored: --eval_only scores with the saved "
                                 f"model's length, {saved_length} tokens"]
