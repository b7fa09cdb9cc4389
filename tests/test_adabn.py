"""AdaBN (Li et al. 2017) on the head's input features: the fold, its errors, and a real run."""
import json

import pytest
import torch
from safetensors import safe_open

from tltext.experiment import parse_and_run
from tltext.objectives.adabn import adabn_head

from helpers import write_domains


def test_folded_head_equals_standardising_target_features_to_source_statistics():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(200, 6, generator=g) * torch.tensor([1.0, 2, 3, 1, 1, 0.5]) + 1.0
    tgt = torch.randn(150, 6, generator=g) * 0.5 - 2.0
    w, b = torch.randn(3, 6, generator=g), torch.randn(3, generator=g)
    w2, b2 = adabn_head(w, b, src, tgt)
    moved = (tgt - tgt.mean(0)) / tgt.std(0, unbiased=False) * src.std(0, unbiased=False) + src.mean(0)
    assert torch.allclose(tgt @ w2.T + b2, moved @ w.T + b, atol=1e-4)
    # the source's own statistics leave the head unchanged
    w3, b3 = adabn_head(w, b, src, src)
    assert torch.allclose(w3, w, atol=1e-6) and torch.allclose(b3, b, atol=1e-5)


def test_a_dimension_with_no_target_spread_keeps_its_scale():
    src = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    tgt = torch.tensor([[7.0, 1.0], [7.0, 2.0], [7.0, 3.0]])  # dim 0 is constant on the target
    w, b = torch.ones(2, 2), torch.zeros(2)
    w2, b2 = adabn_head(w, b, src, tgt)
    assert torch.isfinite(w2).all() and torch.isfinite(b2).all()
    assert w2[0, 0] == pytest.approx(1.0)  # r = 1 there: only the mean moves
    assert b2[0] == pytest.approx((2.0 - 7.0) + (3.0 - (1.633 / 0.8165) * 2.0), rel=1e-3)


def test_too_few_examples_and_mismatched_shapes_are_one_line_errors():
    w, b = torch.ones(2, 3), torch.zeros(2)
    with pytest.raises(ValueError, match="at least 2 source and 2 target examples"):
        adabn_head(w, b, torch.ones(5, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"matching the head \[C, D\]"):
        adabn_head(w, b, torch.ones(5, 4), torch.ones(5, 4))


def _run(toy, tiny_bert_dir, out, objective, tuning, target=True):
    args = ["--model_name_or_path", tiny_bert_dir, "--train_file", str(toy / "src.jsonl"),
            "--test_file", str(toy / "tgt.jsonl"), "--tuning", tuning, "--objective", objective,
            "--output_dir", str(out), "--num_train_epochs", "2", "--per_device_train_batch_size", "8",
            "--disable_tqdm", "--report", "False", "--seed", "3", "--cache_dir", str(out.parent / "cache"),
            "--validation_split_percentage", "0"]
    if target:
        args += ["--target_file", str(toy / "tgt.jsonl")]
    return parse_and_run("text", args)


@pytest.mark.parametrize("tuning", ["frozen", "full"])
def test_adabn_run_trains_like_erm_then_folds_the_target_statistics_into_the_head(tiny_bert_dir, tmp_path, tuning):
    """Same seed: the training history is erm's (no target batches are drawn), and the saved head
    is erm's head folded with the source-train and target feature statistics."""
    import tltext  # noqa: F401  (registers the Auto classes)
    from transformers import AutoModelForSequenceClassification

    (tmp_path / "data").mkdir()
    toy = write_domains(tmp_path / "data")
    erm = _run(toy, tiny_bert_dir, tmp_path / "erm", "erm", tuning, target=False)
    ada = _run(toy, tiny_bert_dir, tmp_path / "ada", "adabn", tuning)
    assert [e.get("loss") for e in ada["history"]] == [e.get("loss") for e in erm["history"]]
    assert "head_adaptation" not in erm["training"] and "before_head_adaptation" not in erm
    assert ada["before_head_adaptation"]["test"] == erm["test"]  # scored before the fold: erm's model
    models = {k: AutoModelForSequenceClassification.from_pretrained(str(tmp_path / k / "model")).eval() for k in ("erm", "ada")}
    src = [json.loads(l)["text"] for l in open(toy / "src.jsonl")]
    tgt = [json.loads(l)["text"] for l in open(toy / "tgt.jsonl")]
    m = models["erm"]
    with torch.no_grad():
        def head_input(texts):
            return m.head_input(m.features(m.encode(**m.backbone.collate(texts))))
        fs, ft = head_input(src), head_input(tgt)
    note = ada["training"]["head_adaptation"]
    assert "AdaBN" in note and f"from {len(src)} source training and {len(tgt)} unlabelled target examples" in note
    for name, p in m.backbone.state_dict().items():  # the same encoder: only the head differs
        assert torch.equal(models["ada"].backbone.state_dict()[name], p), name
    w, b = adabn_head(m.classifier.weight, m.classifier.bias, fs, ft)
    assert not torch.allclose(w, m.classifier.weight, atol=1e-3)
    assert torch.allclose(models["ada"].classifier.weight, w, atol=1e-4)
    assert torch.allclose(models["ada"].classifier.bias, b, atol=1e-4)
    if tuning == "frozen":  # the probe's cross-validated score describes the head before the fold
        assert "which this score predates" in ada["validation"]["note"]
        assert "predates" not in erm["validation"]["note"]
    card = (tmp_path / "ada" / "model" / "README.md").read_text()
    assert "head adapted to the target after training" in card


def test_adabn_without_target_is_a_clear_error(tiny_bert_dir, tmp_path):
    (tmp_path / "data").mkdir()
    toy = write_domains(tmp_path / "data")
    with pytest.raises((ValueError, SystemExit), match="adabn needs --target_file"):
        _run(toy, tiny_bert_dir, tmp_path / "run", "adabn", "frozen", target=False)


def test_adabn_flags_weight_pooled_validation_and_too_small_target(tiny_bert_dir, tmp_path):
    """A weight on adabn is said to be ignored; a frozen probe fitted on its validation rows gets
    no 'before' validation score (it would be in-sample); the card gives the test score before
    and after; a one-row target is refused before anything trains."""
    from helpers import write_jsonl

    (tmp_path / "data").mkdir()
    toy = write_domains(tmp_path / "data")
    args = ["--model_name_or_path", tiny_bert_dir, "--train_file", str(toy / "src.jsonl"),
            "--test_file", str(toy / "tgt.jsonl"), "--target_file", str(toy / "tgt.jsonl"), "--tuning", "frozen",
            "--objective", "adabn:0.5", "--output_dir", str(tmp_path / "run"), "--disable_tqdm", "--report", "False",
            "--cache_dir", str(tmp_path / "cache")]
    res = parse_and_run("text", args)
    assert any("the weight of 'adabn' is ignored" in w for w in res["warnings"])
    assert any("target examples for" in w and "feature dimensions" in w for w in res["warnings"])  # 24 rows, 32 dims
    assert list(res["before_head_adaptation"]) == ["test"]
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    before = res["before_head_adaptation"]["test"]["accuracy"]
    assert f"test before the head adaptation: accuracy {before:.4f}" in card
    assert f"(after: accuracy {res['test']['accuracy']:.4f}" in card
    write_jsonl(tmp_path / "one.jsonl", [{"text": "only one target review", "label": "pos"}])
    args[args.index(str(toy / "tgt.jsonl"), args.index("--target_file"))] = str(tmp_path / "one.jsonl")
    with pytest.raises((ValueError, SystemExit), match="need at least 2 target examples; the target data has 1"):
        parse_and_run("text", args + ["--overwrite_output_dir"])
    assert not (tmp_path / "run" / "results.json").read_text().count("one.jsonl")  # the earlier run's files stay
