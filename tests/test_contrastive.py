"""Contrastive objective: SupCon and SetFit-pair losses, their batch samplers, gradients to the
encoder, the fitted head and its export, end to end on the tiny BERT (partial and full)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tltext.args import ModelArguments
from tltext.objectives import ObjectiveSet, ObjectiveSetup, Step, check
from tltext.objectives.contrastive import (
    ClassBalancedBatchSampler,
    Contrastive,
    PairBatchSampler,
    cosine_pair_loss,
    supcon_loss,
)


def _supcon_reference(z, y, tau):
    """Khosla et al. eq. 2 written as loops over anchors and positives."""
    z = F.normalize(z.double(), dim=1)
    total, anchors = 0.0, 0
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        pos = [p for p in others if y[p] == y[i]]
        if not pos:
            continue
        denom = sum(torch.exp(z[i] @ z[a] / tau) for a in others)
        total += -sum(torch.log(torch.exp(z[i] @ z[p] / tau) / denom) for p in pos) / len(pos)
        anchors += 1
    return total / anchors


def test_supcon_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(10, 6, generator=g)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4, 2])  # class 4 has no positive: not an anchor
    for tau in (0.1, 0.5):
        assert float(supcon_loss(z, y, tau)) == pytest.approx(float(_supcon_reference(z, y, tau)), rel=1e-5)
    assert supcon_loss(z[:3], torch.tensor([0, 1, 2])) is None  # no positives anywhere
    with pytest.raises(ValueError, match=r"supcon_loss: expected features \[B, D\] and labels \[B\]"):
        supcon_loss(z, y[:3])


def test_supcon_is_lower_for_clustered_embeddings_than_shuffled_labels():
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(6, 16, generator=g) * 3
    y = torch.arange(6).repeat_interleave(5)
    z = centers[y] + 0.3 * torch.randn(30, 16, generator=g)
    clustered = float(supcon_loss(z, y, 0.1))
    shuffled = float(supcon_loss(z, y[torch.randperm(30, generator=g)], 0.1))
    assert clustered < 0.5 * shuffled, (clustered, shuffled)
    # the minimum for 5 per class and tau: -log(1/4) when positives coincide and negatives are far
    assert clustered > np.log(4) - 1e-3


def test_cosine_pair_loss_values():
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0],    # same class, cos 1 -> 0
                      [1.0, 0.0], [0.0, 1.0],    # different class, cos 0 -> 0
                      [1.0, 0.0], [-1.0, 0.0]])  # same class, cos -1 -> (−1 − 1)^2 = 4
    y = torch.tensor([3, 3, 1, 2, 5, 5])
    assert float(cosine_pair_loss(f, y)) == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="even number of rows"):
        cosine_pair_loss(f[:5], y[:5])


def _labels(per_class=(10,) * 7 + (3, 1)):
    return [c for c, n in enumerate(per_class) for _ in range(n)]


def test_pair_sampler_follows_setfit_recipe():
    y = np.asarray(_labels())
    s = PairBatchSampler(y, iterations=6, pairs_per_batch=16, seed=0)
    p = s.pairs()
    n = len(y)
    assert p.shape == (2 * 6 * n, 2) and len(s) == int(np.ceil(2 * 6 * n / 16))
    same = y[p[:, 0]] == y[p[:, 1]]
    assert same[0::2].all() and not same[1::2].any()  # positive, negative, positive, ...
    assert (p[:, 0] <= p[:, 1]).all()  # combinations with replacement, i <= j, as setfit's triu_indices
    # positives: every unique same-class pair (with replacement) appears before any repeats (cycling)
    n_unique_pos = sum(k * (k + 1) // 2 for k in np.bincount(y))
    pos = p[0::2]
    assert 6 * n > n_unique_pos and len({tuple(r) for r in pos[:n_unique_pos]}) == n_unique_pos
    assert np.array_equal(pos[n_unique_pos], pos[0])  # then the list cycles
    assert len({tuple(r) for r in p[1::2]}) == 6 * n  # negatives: plenty, all distinct
    batches = list(s)
    assert len(batches) == len(s) and all(len(b) == 32 for b in batches[:-1])
    assert batches[0] == p[:16].reshape(-1).tolist()
    s.set_epoch(1)
    assert not np.array_equal(s.pairs(), p)  # a fresh order each epoch, reproducible
    s.set_epoch(0)
    assert np.array_equal(s.pairs(), p)


def test_pair_sampler_large_data_draws_partners_per_anchor(monkeypatch):
    from tltext.objectives import contrastive

    monkeypatch.setattr(contrastive, "MAX_EXACT_PAIRS", 10)
    y = np.asarray(_labels())
    p = PairBatchSampler(y, iterations=2, pairs_per_batch=8, seed=3).pairs()
    same = y[p[:, 0]] == y[p[:, 1]]
    assert same[0::2].all() and not same[1::2].any() and len(p) == 4 * len(y)
    assert np.array_equal(np.bincount(p[0::2, 0], minlength=len(y)), np.full(len(y), 2))  # each example R times


@pytest.mark.parametrize("per_class_counts", [(10,) * 7 + (3, 1), (5,) * 6 + (9, 1)])  # 5 = 4 + a leftover single
def test_class_balanced_sampler_covers_every_example_with_positives(per_class_counts):
    y = np.asarray(_labels(per_class_counts))
    s = ClassBalancedBatchSampler(y, batch_size=16, per_class=4, passes=2, seed=0)
    batches = list(s)
    assert len(batches) == len(s)
    seen = np.concatenate([np.asarray(b) for b in batches])
    assert np.array_equal(np.bincount(seen, minlength=len(y)), np.full(len(y), 2))  # each example once per pass
    assert all(len(b) <= 16 for b in batches)
    for b in batches:
        counts = np.bincount(y[b])
        # every class present in a batch has >= 2 examples, except the one-example (last) class
        assert all(c >= 2 for k, c in enumerate(counts) if c and k != len(per_class_counts) - 1)
    with pytest.raises(ValueError, match="need batch_size >= 2, per_class >= 2, passes >= 1"):
        ClassBalancedBatchSampler(y, batch_size=16, per_class=1)


def test_options_and_tuning_errors_are_one_line():
    with pytest.raises(ValueError, match="--contrastive_loss must be one of supcon, pairs; got 'triplet'"):
        Contrastive(ObjectiveSetup(4, 2, args=ModelArguments(contrastive_loss="triplet")))
    with pytest.raises(ValueError, match="--contrastive_head must be one of logreg, prototype; got 'knn'"):
        Contrastive(ObjectiveSetup(4, 2, args=ModelArguments(contrastive_head="knn")))
    with pytest.raises(ValueError, match="--contrastive_temperature must be > 0; got 0.0"):
        Contrastive(ObjectiveSetup(4, 2, args=ModelArguments(contrastive_temperature=0.0)))
    with pytest.raises(ValueError, match="--objective contrastive trains the encoder on raw inputs; use --tuning partial or full"):
        check("contrastive", "frozen", has_target=False)


def _tiny_model(tiny_bert_dir):
    from tltext.backbones import load_backbone
    from tltext.modeling import TltextModel

    bb = load_backbone("text", tiny_bert_dir, pooling="mean", max_length=32)
    return TltextModel.from_backbone(bb, {"a": 0, "b": 1, "c": 2}, tuning="full", objective="contrastive",
                                     base_model=tiny_bert_dir)


@pytest.mark.parametrize("loss", ["supcon", "pairs"])
def test_gradient_reaches_the_encoder(loss, tiny_bert_dir, one_thread):
    model = _tiny_model(tiny_bert_dir)
    args = ModelArguments(contrastive_loss=loss)
    obj = ObjectiveSet("contrastive", ObjectiveSetup(model.feature_dim, 3, tuning="full", args=args, model=model))
    assert not obj.use_ce  # the contrastive loss replaces the cross-entropy
    texts = ["great", "good", "awful", "bad", "fine", "okay"]
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss_value, logs = obj(Step(model, model.backbone.collate(texts), labels, 6, 0, 0.0))
    loss_value.backward()
    enc = model.backbone.encoder
    first = enc.encoder.layer[0].attention.self.query.weight.grad
    assert first is not None and first.abs().sum() > 0
    assert model.classifier.weight.grad is None  # the head is fitted afterwards, never trained
    assert "ce" not in logs and np.isfinite(logs["contrastive"])


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def intents(tmp_path_factory):
    d = tmp_path_factory.mktemp("intents")
    words = {"card": ["my card is lost", "card stolen help", "lost my card today", "card missing", "where is my card",
                      "cannot find card"],
             "pay": ["payment failed", "my payment did not go", "failed to pay", "pay error", "payment declined",
                     "cannot pay bill"],
             "rate": ["exchange rate today", "what rate do you use", "rate for euros", "fx rate", "currency rate",
                      "rate is wrong"]}
    rows = [{"text": t, "label": k} for k, ts in words.items() for t in ts]
    _write(d / "train.jsonl", rows)
    _write(d / "test.jsonl", rows[::2])
    return d


@pytest.mark.parametrize("tuning, loss, head", [("full", "supcon", "logreg"), ("partial", "pairs", "prototype")])
def test_end_to_end_and_saved_head_round_trip(tuning, loss, head, intents, tiny_bert_dir, tmp_path, monkeypatch, one_thread):
    import tltext  # noqa: F401  (Auto classes)
    from transformers import AutoModelForSequenceClassification

    from helpers import run_and_capture
    from tltext.objectives.prototypes import cosine_prototype_head
    from tltext.training.probe import fit_linear_probe

    out = tmp_path / "run"
    res, seen = run_and_capture(monkeypatch, "text", [
        "--model_name_or_path", tiny_bert_dir, "--train_file", str(intents / "train.jsonl"),
        "--test_file", str(intents / "test.jsonl"), "--shots_per_class", "4", "--seed", "2",
        "--objective", "contrastive", "--tuning", tuning, "--unfreeze_top_k", "1", "--contrastive_loss", loss,
        "--contrastive_head", head, "--contrastive_iterations", "2", "--contrastive_batch_size", "8",
        "--num_train_epochs", "2", "--learning_rate", "1e-3", "--output_dir", str(out),
        "--cache_dir", str(tmp_path / "cache"), "--disable_tqdm", "--report", "False"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["num_examples"]["train"] == 12 and saved["timing"]["train_steps"] > 0
    key = "contrastive/supcon" if loss == "supcon" else "contrastive/pair_mse"
    assert all(np.isfinite(h[key]) for h in saved["history"]) and "ce" not in saved["history"][0]
    # the saved model is a plain AutoModelForSequenceClassification that reproduces the run's test logits
    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    with torch.no_grad():
        logits = model(**model.backbone.collate(seen["inputs"])).logits
    torch.testing.assert_close(logits, seen["logits"], rtol=1e-4, atol=1e-4)
    acc = float((logits.argmax(1).numpy() == np.asarray(seen["labels"])).mean())
    assert acc == pytest.approx(saved["test"]["accuracy"])
    # its head is the one fitted on the tuned features of the 12 training shots
    rows = [json.loads(l) for l in (intents / "train.jsonl").read_text().splitlines()]
    from tltext.data.fewshot import sample_k_shot

    ids = [model.config.label2id[r["label"]] for r in rows]
    idx = sample_k_shot(ids, 4, 2)
    with torch.no_grad():
        feats = model.features(model.encode(**model.backbone.collate([rows[i]["text"] for i in idx])))
    y = torch.tensor([ids[i] for i in idx])
    if head == "prototype":
        w, b = cosine_prototype_head(feats, y, 3)
    else:
        p = fit_linear_probe(feats, y.tolist(), 3, seed=2, cv_folds=0)  # C = 1, as the objective fits it
        w, b = p.weight, p.bias
    torch.testing.assert_close(model.classifier.weight, w, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(model.classifier.bias, b, rtol=1e-3, atol=1e-3)
    if tuning == "partial":  # the bottom layer never moved
        from transformers import BertModel

        ref = BertModel.from_pretrained(tiny_bert_dir).encoder.layer[0].attention.self.query.weight
        torch.testing.assert_close(model.backbone.encoder.encoder.layer[0].attention.self.query.weight, ref)


@pytest.mark.parametrize("extra", [[], ["--gradual_unfreeze", "--num_train_epochs", "2"]])
def test_wise_ft_interpolates_the_encoder_before_the_head_is_fitted(extra, intents, tiny_bert_dir, tmp_path, monkeypatch,
                                                                     one_thread):
    from transformers import AutoModelForSequenceClassification, BertModel

    from helpers import run_and_capture

    def run(name, *flags):
        out = tmp_path / name
        run_and_capture(monkeypatch, "text", [
            "--model_name_or_path", tiny_bert_dir, "--train_file", str(intents / "train.jsonl"),
            "--test_file", str(intents / "test.jsonl"), "--shots_per_class", "4", "--seed", "2",
            "--objective", "contrastive", "--tuning", "full", "--contrastive_iterations", "2",
            "--contrastive_batch_size", "8", "--num_train_epochs", "1", "--learning_rate", "1e-3",
            "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), "--disable_tqdm", "--report", "False",
            *flags, *extra])
        model = AutoModelForSequenceClassification.from_pretrained(out / "model")
        return model, json.loads((out / "results.json").read_text())

    tuned, res_tuned = run("default")  # contrastive's default: no interpolation
    mixed, res_mixed = run("mixed", "--wise_ft_alpha", "0.5")
    assert res_tuned["training"]["wise_ft_alpha"] == 1.0 and res_mixed["training"]["wise_ft_alpha"] == 0.5
    w1 = dict(tuned.backbone.encoder.named_parameters())
    pre = {n: p for n, p in BertModel.from_pretrained(tiny_bert_dir).named_parameters() if n in w1}
    assert len(pre) == len(w1)
    w = dict(mixed.backbone.encoder.named_parameters())
    moved = [n for n in pre if not torch.allclose(w1[n], pre[n])]
    # every weight training moved (under --gradual_unfreeze also the layers unfrozen later) is halfway back
    assert any(n.startswith("encoder.layer.0.") for n in moved) and any(n.startswith("encoder.layer.1.") for n in moved)
    for n in pre:
        torch.testing.assert_close(w[n], 0.5 * pre[n] + 0.5 * w1[n], rtol=1e-5, atol=1e-6)
    card = (tmp_path / "mixed" / "model" / "README.md").read_text()
    assert "WiSE-FT (Wortsman et al. 2022): the encoder's weights are 0.5 x pretrained + 0.5 x fine-tuned" in card
    assert "- WiSE-FT (Wortsman et al. 2022): off; the head was fitted on the fine-tuned encoder's features" in (
        tmp_path / "default" / "model" / "README.md").read_text()


def test_wise_ft_alpha_is_checked_and_ignored_where_no_head_is_fitted(intents, tiny_bert_dir, tmp_path, monkeypatch, one_thread):
    from helpers import run_and_capture

    base = ["--model_name_or_path", tiny_bert_dir, "--train_file", str(intents / "train.jsonl"),
            "--test_file", str(intents / "test.jsonl"), "--num_train_epochs", "1", "--disable_tqdm", "--report", "False", "--cache_dir", str(tmp_path / "cache")]
    with pytest.raises(ValueError, match=r"^--wise_ft_alpha must be in \(0, 1\] \(1: no interpolation\); got 0.0$"):
        run_and_capture(monkeypatch, "text", base + ["--wise_ft_alpha", "0", "--output_dir", str(tmp_path / "bad")])
    run_and_capture(monkeypatch, "text", base + ["--tuning", "full", "--wise_ft_alpha", "0.5", "--n_way", "5",
                                                 "--output_dir", str(tmp_path / "erm")])
    warned = json.loads((tmp_path / "erm" / "results.json").read_text())["warnings"]
    assert [w for w in warned if "is ignored" in w] == [
        "--n_way 5 is ignored: no term of --objective erm reads it",  # --eval_episodes is 0: nothing else reads it
        "--wise_ft_alpha 0.5 is ignored: it interpolates a trained encoder before a head is computed from its "
        "features, and this run (--tuning full --objective erm) has no such head"]


def test_wise_ft_is_reported_only_for_the_model_the_guard_keeps(intents, tiny_bert_dir, tmp_path, monkeypatch, one_thread):
    from helpers import run_and_capture

    out = tmp_path / "guard"
    run_and_capture(monkeypatch, "text", [
        "--model_name_or_path", tiny_bert_dir, "--train_file", str(intents / "train.jsonl"),
        "--test_file", str(intents / "test.jsonl"), "--target_file", str(intents / "test.jsonl"),
        "--tuning", "full", "--objective", "contrastive+mmd", "--compare_source_only", "--wise_ft_alpha", "0.5",
        "--contrastive_iterations", "1",
        "--contrastive_batch_size", "8", "--num_train_epochs", "1", "--output_dir", str(out),
        "--cache_dir", str(tmp_path / "cache"), "--disable_tqdm", "--report", "False"])
    res = json.loads((out / "results.json").read_text())
    kept = res["negative_transfer_guard"]["kept"]
    card = (out / "model" / "README.md").read_text()
    if kept == "source_only":  # erm fits no head from features: no interpolation ran on the kept model
        assert "wise_ft_alpha" not in res["training"] and "WiSE-FT" not in card
    else:
        assert res["training"]["wise_ft_alpha"] == 0.5 and "WiSE-FT" in card


def test_resolved_defaults_sampler_batch_and_head_are_reported_as_run(intents, tiny_bert_dir, tmp_path, monkeypatch,
                                                                      one_thread, capsys):
    from helpers import run_and_capture
    from tltext import trainer
    from tltext.objectives.contrastive import DEFAULT_BATCH, DEFAULT_ITERATIONS, PER_CLASS

    installs = []
    original = trainer.Trainer._install_head

    def counting(self, model, objective, inputs):  # the real head fit, counted
        installs.append(1)
        return original(self, model, objective, inputs)

    monkeypatch.setattr(trainer.Trainer, "_install_head", counting)
    out = tmp_path / "run"
    run_and_capture(monkeypatch, "text", [
        "--model_name_or_path", tiny_bert_dir, "--train_file", str(intents / "train.jsonl"),
        "--test_file", str(intents / "test.jsonl"), "--shots_per_class", "4", "--seed", "2",
        "--objective", "contrastive", "--tuning", "full", "--num_train_epochs", "2", "--learning_rate", "1e-3",
        "--validation_split_percentage", "0", "--head_dropout", "0.3", "--output_dir", str(out),
        "--cache_dir", str(tmp_path / "cache"), "--disable_tqdm", "--report", "False"])
    res = json.loads((out / "results.json").read_text())
    assert [w for w in res["warnings"] if "is ignored" in w] == [
        "--head_dropout 0.3 is ignored: this run (--tuning full --objective contrastive) trains no head or adapter for "
        "it to act on"]
    # the flags were left unset: what ran is recorded, not null
    assert res["args"]["contrastive_iterations"] is None
    assert res["objective_terms"][0]["settings"] == {"contrastive_iterations": DEFAULT_ITERATIONS["supcon"],
                                                    "contrastive_batch_size": DEFAULT_BATCH["supcon"]}
    tr = res["training"]
    assert tr["batch_sampler"] == (f"class-balanced batches of up to {DEFAULT_BATCH['supcon']} examples in chunks of "
                                   f"{PER_CLASS} of one class (a class's leftover single example joins its last chunk), "
                                   f"{DEFAULT_ITERATIONS['supcon']} pass(es) over the training set per epoch")
    assert tr["global_batch_size"] == 12 and tr["wise_ft_alpha"] == 1.0  # 12 shots fit one batch
    # the head was fitted, not trained: no head rate, no dropout, no per-device batch is claimed
    assert "head_learning_rate" not in tr and tr["head_dropout"] is None and "per_device_train_batch_size" not in tr
    assert tr["head"].startswith("scikit-learn LogisticRegression (lbfgs, L2, C=1, no cross-validation) fitted after")
    summary, card = capsys.readouterr().out, (out / "model" / "README.md").read_text()
    assert (f"objective defaults as resolved for this run: --contrastive_iterations {DEFAULT_ITERATIONS['supcon']}, "
            f"--contrastive_batch_size {DEFAULT_BATCH['supcon']}") in summary
    for text in (summary, card):
        assert "global batch 12 on average over 1 process(es), from the objective's batch sampler (class-balanced" in text
        assert "per device 16" not in text and "WiSE-FT (Wortsman et al. 2022): off" in text
    assert f"| contrastive_iterations | {DEFAULT_ITERATIONS['supcon']} |" in card
    assert "| learning_rate | 0.001 (no head trained) |" in card and "head: scikit-learn LogisticRegression" in card
    for row in ("| head_dropout |", "| per_device_train_batch_size |", "| group_by_length |"):
        assert row not in card  # none of them acted in this run
    assert "2 optimizer steps in 2 epoch(s)" in summary
    # nothing is scored between epochs (no validation, target or oracle), so the head is fitted once, at the end
    assert len(installs) == 1
