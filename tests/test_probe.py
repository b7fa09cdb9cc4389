"""The linear probe's choice of C: on the validation split when there is one, else by
stratified cross-validation on the training examples, as scikit-learn's own CV search."""
import json
import warnings

import numpy as np
import pytest
import torch

from tltext.training.probe import C_GRID, fit_linear_probe


def _blobs(n_per_class=6, classes=4, dim=16, seed=0, spread=2.5):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim))
    x = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) for c in centers])
    y = np.repeat(np.arange(classes), n_per_class)
    return torch.tensor(x, dtype=torch.float32), y


def test_no_validation_split_chooses_c_as_sklearn_grid_search_cv_does():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    x, y = _blobs()
    probe = fit_linear_probe(x, y.tolist(), 4, seed=3)
    assert probe.cv_folds == 5 and set(probe.grid) == {f"{c:g}" for c in C_GRID}
    gs = GridSearchCV(LogisticRegression(max_iter=5000, random_state=3), {"C": list(C_GRID)},
                      cv=StratifiedKFold(n_splits=5, shuffle=True, random_state=3), scoring="accuracy").fit(
        x.double().numpy(), y)
    for c, mean in zip(gs.cv_results_["param_C"], gs.cv_results_["mean_test_score"]):
        assert probe.grid[f"{c:g}"] == pytest.approx(mean)
    best = max(C_GRID, key=lambda c: (probe.grid[f"{c:g}"], -c))  # ties: the smaller C
    assert probe.C == best
    # and the head is then fitted on every training example with that C
    ref = LogisticRegression(C=best, max_iter=5000, random_state=3).fit(x.double().numpy(), y)
    np.testing.assert_allclose(probe.weight.numpy(), ref.coef_, rtol=1e-3, atol=1e-3)


def test_folds_follow_the_rarest_class_singletons_stay_and_only_all_singletons_fall_back_to_c_1():
    x, y = _blobs(n_per_class=3)
    assert fit_linear_probe(x, y.tolist(), 4).cv_folds == 3
    y1 = y.copy()
    y1[0] = 3  # class 0 keeps 2 examples
    assert fit_linear_probe(x, y1.tolist(), 4).cv_folds == 2
    # class 4: a single example; C is still cross-validated over the others, and class 4 stays predictable
    x2, y2 = torch.cat([x, x[:1] + 10.0]), np.concatenate([y, [4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "least populated class" warning escapes
        p = fit_linear_probe(x2, y2.tolist(), 5)
    assert p.cv_folds == 3 and len(p.grid) == len(C_GRID)
    assert int((x2[-1:] @ p.weight.T + p.bias).argmax()) == 4
    singletons = fit_linear_probe(x[:4], [0, 1, 2, 3], 4)
    assert (singletons.C, singletons.cv_folds, singletons.grid) == (1.0, 0, {})
    assert fit_linear_probe(x, y.tolist(), 4, cv_folds=0).C == 1.0


def test_a_cross_validation_fold_with_one_class_predicts_that_class():
    """Three examples, classes [0, 0, 1]: 2 folds, and the fold holding out the class-1
    example trains on class 0 alone (sklearn refuses one class): it predicts class 0."""
    x, _ = _blobs(n_per_class=3, classes=1)
    p = fit_linear_probe(x, [0, 0, 1], 2)
    assert p.cv_folds == 2 and len(p.grid) == len(C_GRID)
    # every C scores the same on those folds: the fold with both classes in training holds out a class-0
    # example, the one-class fold predicts 0 for the class-1 example it holds out
    assert len({round(v, 9) for v in p.grid.values()}) == 1


def test_k_shot_frozen_run_says_c_came_from_cross_validation(tiny_bert_dir, tmp_path, one_thread):
    from tltext.experiment import parse_and_run

    rows = [{"text": f"{w} number {i}", "label": w} for w in ("alpha", "beta", "gamma") for i in range(6)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = parse_and_run("text", ["--model_name_or_path", tiny_bert_dir, "--train_file", str(path),
                                 "--test_file", str(path), "--shots_per_class", "4", "--tuning", "frozen",
                                 "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "c"),
                                 "--disable_tqdm", "--report", "False"])
    assert "by 4-fold stratified cross-validation on the training split" in res["training"]["head"]
    assert res["selection"].startswith("4-fold stratified cross-validation")
    assert any(k.startswith("cv_accuracy@C=") for k in res["history"][0]) and "val_metric" not in res["history"][0]


def _intents(tmp_path, per_class=6):
    rows = [{"text": f"{w} request number {i}", "label": w} for w in ("alpha", "beta", "gamma") for i in range(per_class)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(tiny_bert_dir, tmp_path, *flags):
    from tltext.experiment import parse_and_run

    return parse_and_run("text", ["--model_name_or_path", tiny_bert_dir, "--tuning", "frozen",
                                  "--output_dir", str(tmp_path / "out"), "--overwrite_output_dir",
                                  "--cache_dir", str(tmp_path / "c"), "--disable_tqdm", "--report", "False", *flags])


def test_probe_pools_a_held_out_split_for_cv_but_never_a_validation_file(tiny_bert_dir, tmp_path, one_thread, capsys):
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModelForSequenceClassification

    import tltext  # noqa: F401 - registers the Auto classes

    path = _intents(tmp_path, per_class=10)
    res = _run(tiny_bert_dir, tmp_path, "--train_file", str(path), "--test_file", str(path),
               "--validation_split_percentage", "30", "--seed", "3")
    n = res["num_examples"]
    assert n["fitted_on"] == n["train"] + n["validation"] == 30
    assert "5-fold stratified cross-validation on training + held-out validation" in res["training"]["head"]
    assert res["selection"].startswith("5-fold stratified cross-validation on training + held-out validation")
    assert "the saved probe was fitted on all 30: training + held-out validation" in capsys.readouterr().out
    C, cv = res["history"][0]["probe_C"], {k: v for k, v in res["history"][0].items() if k.startswith("cv_")}
    assert len(cv) == len(C_GRID) and C == max(C_GRID, key=lambda c: (cv[f"cv_accuracy@C={c:g}"], -c))
    assert res["validation"]["accuracy"] == cv[f"cv_accuracy@C={C:g}"] and res["validation"]["cross_validated"] is True
    # the saved head is scikit-learn's logistic regression at that C on all 30 examples
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "model").eval()
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    with torch.no_grad():
        x = model.encode(**model.backbone.collate([r["text"] for r in rows])).double().numpy()
    ref = LogisticRegression(C=C, max_iter=5000).fit(x, [model.config.label2id[r["label"]] for r in rows])
    np.testing.assert_allclose(model.classifier.weight.detach().numpy(), ref.coef_, rtol=2e-3, atol=2e-3)
    res = _run(tiny_bert_dir, tmp_path, "--train_file", str(path), "--test_file", str(path),
               "--shots_per_class", "2", "--validation_file", str(path))
    assert "fitted_on" not in res["num_examples"] and "refitted" not in res["training"]["head"]
    assert res["num_examples"]["train"] == 6 and "note" not in res["validation"]
    assert "cross_validated" not in res["validation"]
    # no validation data at all: the validation entry is the CV score over the training split
    res = _run(tiny_bert_dir, tmp_path, "--train_file", str(path), "--test_file", str(path),
               "--validation_split_percentage", "0", "--seed", "3")
    C, rec = res["history"][0]["probe_C"], res["history"][0]
    assert "validation" not in res["num_examples"] and "fitted_on" not in res["num_examples"]
    assert res["validation"]["accuracy"] == rec[f"cv_accuracy@C={C:g}"] and res["validation"]["cross_validated"] is True
    assert "over the training split" in res["validation"]["note"]
    card = (tmp_path / "out" / "model" / "README.md").read_text()
    assert "| source cross-validation (training split) |" in card


def test_k_shot_flags_and_skewed_eval_subsets_are_named(tiny_bert_dir, tmp_path, one_thread):
    path = _intents(tmp_path)
    with pytest.raises(ValueError, match=r"--validation_split_percentage 20 does not apply with --shots_per_class"):
        _run(tiny_bert_dir, tmp_path, "--train_file", str(path), "--shots_per_class", "2",
             "--validation_split_percentage", "20")
    from tltext.data import DataError

    with pytest.raises(DataError, match=r"class 'alpha' has only 6, class 'beta' has only 6"):
        _run(tiny_bert_dir, tmp_path, "--train_file", str(path), "--shots_per_class", "7")
    res = _run(tiny_bert_dir, tmp_path, "--train_file", str(path), "--test_file", str(path), "--max_eval_samples", "6")
    assert any(f"--max_eval_samples 6 keeps the first 6 rows of {path}: 1 of its 3 classes" in w for w in res["warnings"])


def test_sentence_transformers_normalize_module_is_read_from_modules_json(minilm_path, tiny_bert_dir, tmp_path):
    from tltext.backbones.text import sentence_transformers_normalizes

    assert sentence_transformers_normalizes(minilm_path)  # all-MiniLM-L6-v2: Transformer, Pooling, Normalize
    assert not sentence_transformers_normalizes(tiny_bert_dir)  # a plain transformers folder
    (tmp_path / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "",
                                                        "type": "sentence_transformers.models.Transformer"}]))
    assert not sentence_transformers_normalizes(str(tmp_path))


@pytest.mark.parametrize("normalize", [True, False])
def test_probe_fits_on_unit_embeddings_when_the_checkpoint_normalizes(tiny_bert_dir, tmp_path, one_thread, normalize):
    import shutil

    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModelForSequenceClassification

    import tltext  # noqa: F401 - registers the Auto classes

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_bert_dir, ckpt)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (ckpt / "modules.json").write_text(json.dumps(modules))
    path = _intents(tmp_path, per_class=10)
    res = _run(str(ckpt), tmp_path, "--train_file", str(path), "--test_file", str(path),
               "--validation_split_percentage", "30")
    assert ("unit-normalised (L2) sentence embeddings" in res["training"]["head"]) == normalize
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "model").eval()
    assert model.config.feature_norm == ("l2" if normalize else None)
    texts = [json.loads(l)["text"] for l in path.read_text().splitlines()]
    labels = [model.config.label2id[json.loads(l)["label"]] for l in path.read_text().splitlines()]
    with torch.no_grad():
        emb = model.encode(**model.backbone.collate(texts)).double()
        logits = model(**model.backbone.collate(texts)).logits
    x = torch.nn.functional.normalize(emb, dim=-1) if normalize else emb
    # the saved head is scikit-learn's logistic regression on (unit) embeddings of train + validation
    ref = LogisticRegression(C=res["history"][0]["probe_C"], max_iter=5000).fit(x.numpy(), labels)
    np.testing.assert_allclose(model.classifier.weight.detach().numpy(), ref.coef_, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(logits.numpy(), x.float().numpy() @ ref.coef_.T + ref.intercept_, rtol=2e-3, atol=2e-3)


def test_negative_transfer_guard_keeps_the_validation_split_unseen_by_the_probe(tiny_bert_dir, tmp_path, one_thread):
    """--compare_source_only scores both models on the source validation split, so the
    source-only probe must not have been fitted on it (no pooling, C chosen on it)."""
    path = _intents(tmp_path, per_class=10)
    res = _run(tiny_bert_dir, tmp_path, "--train_file", str(path), "--test_file", str(path), "--target_file",
               str(path), "--objective", "mmd", "--compare_source_only", "--validation_split_percentage", "30",
               "--num_train_epochs", "1")
    assert "fitted_on" not in res["num_examples"] and res["num_examples"]["validation"] == 9
    kept = res["negative_transfer_guard"]["kept"]
    if kept == "source_only":  # the card/summary then describe the probe that was kept, not the adapted run
        assert "linear probe" in res["training"]["head"] and res["training"]["optimizer_steps"] is None
