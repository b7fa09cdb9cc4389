"""Bundled evaluate metrics: equal to sklearn, offline, and compute_metrics' rules for absent classes."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from tltext.metrics import BUNDLED, compute_metrics, load_metric
from tltext.metrics.compute import _module

ROOT = Path(__file__).resolve().parents[1]


def _data(seed: int, num_classes: int, n: int = 120):
    r = np.random.RandomState(seed)
    probs = r.dirichlet(np.ones(num_classes), n)
    refs = r.randint(0, num_classes, n)
    # predictions correlated with the references, but not equal
    preds = np.where(r.rand(n) < 0.5, refs, probs.argmax(1))
    return preds, refs, probs


def _auc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """Mann-Whitney AUC: P(s+ > s-) + 0.5 P(s+ = s-)."""
    d = pos_scores[:, None] - neg_scores[None, :]
    return float((d > 0).mean() + 0.5 * (d == 0).mean())


@pytest.fixture(scope="module")
def mods():
    return {name: load_metric(name) for name in BUNDLED if name != "roc_auc"}


@pytest.mark.parametrize("num_classes", [2, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bundled_modules_equal_sklearn(mods, seed, num_classes):
    p, y, probs = _data(seed, num_classes)
    assert mods["accuracy"].compute(predictions=p, references=y)["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert mods["matthews_correlation"].compute(predictions=p, references=y)["matthews_correlation"] == \
        pytest.approx(skm.matthews_corrcoef(y, p))
    labels = list(range(num_classes))
    np.testing.assert_array_equal(
        mods["confusion_matrix"].compute(predictions=p, references=y, labels=labels)["confusion_matrix"],
        skm.confusion_matrix(y, p, labels=labels))
    sk = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}
    averages = ["macro", "micro", "weighted", None] + (["binary"] if num_classes == 2 else [])
    for name, fn in sk.items():
        for avg in averages:
            got = mods[name].compute(predictions=p, references=y, average=avg, zero_division=0)[name]
            np.testing.assert_allclose(got, fn(y, p, average=avg, zero_division=0), rtol=1e-12)
    if num_classes == 2:
        got = load_metric("roc_auc").compute(references=y, prediction_scores=probs[:, 1])["roc_auc"]
        assert got == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    else:
        m = _module("roc_auc", "multiclass")
        for mc in ("ovr", "ovo"):
            got = m.compute(references=y, prediction_scores=probs, multi_class=mc)["roc_auc"]
            assert got == pytest.approx(skm.roc_auc_score(y, probs, multi_class=mc))


@pytest.mark.parametrize("num_classes", [2, 4])
@pytest.mark.parametrize("seed", [3, 4])
def test_compute_metrics_equals_sklearn(seed, num_classes):
    p, y, probs = _data(seed, num_classes)
    names = [f"c{k}" for k in range(num_classes)]
    out = compute_metrics(p, y, probs, names, metrics=BUNDLED)
    json.dumps(out)  # flat and JSON-able
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    for name, fn in (("f1", skm.f1_score), ("precision", skm.precision_score), ("recall", skm.recall_score)):
        assert out[name] == pytest.approx(fn(y, p, average="macro", zero_division=0))
    per = skm.f1_score(y, p, average=None, labels=list(range(num_classes)), zero_division=0)
    assert out["f1_per_class"] == pytest.approx(dict(zip(names, per)))
    assert out["matthews_correlation"] == pytest.approx(skm.matthews_corrcoef(y, p))
    assert out["confusion_matrix"] == skm.confusion_matrix(y, p).tolist()
    want_auc = skm.roc_auc_score(y, probs[:, 1]) if num_classes == 2 else skm.roc_auc_score(y, probs, multi_class="ovr")
    assert out["roc_auc"] == pytest.approx(want_auc)
    assert set(compute_metrics(p, y)) == {"accuracy", "f1", "f1_per_class"}


def test_confusion_matrix_covers_absent_classes():
    y = np.array([0, 0, 2, 2, 2, 0])
    p = np.array([0, 1, 2, 0, 2, 0])
    out = compute_metrics(p, y, label_names=["a", "b", "c", "d", "e"], metrics=("confusion_matrix", "f1"))
    cm = np.array(out["confusion_matrix"])
    assert cm.shape == (5, 5)
    want = np.zeros((5, 5), int)
    for t, q in zip(y, p):
        want[t, q] += 1
    np.testing.assert_array_equal(cm, want)
    # a class never true nor predicted has no F1; one predicted but never true scores 0
    assert out["f1_per_class"]["d"] is None and out["f1_per_class"]["e"] is None
    assert out["f1_per_class"]["b"] == 0.0
    assert out["f1"] == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0))
    # C taken from the probabilities when there are no names
    probs = np.full((6, 4), 0.25)
    assert np.array(compute_metrics(p, y, probs, metrics=("confusion_matrix",))["confusion_matrix"]).shape == (4, 4)


def test_roc_auc_binary_ovr_absent_and_single_class():
    r = np.random.RandomState(7)
    y = r.randint(0, 2, 80)
    s = np.clip(0.3 * y + 0.7 * r.rand(80), 0, 1)
    probs = np.stack([1 - s, s], 1)
    out = compute_metrics(probs.argmax(1), y, probs, metrics=("roc_auc",))
    assert out["roc_auc"] == pytest.approx(_auc(s[y == 1], s[y == 0]))
    # perfect and reversed rankings
    perfect = np.stack([1 - y, y], 1).astype(float)
    assert compute_metrics(y, y, perfect, metrics=("roc_auc",))["roc_auc"] == 1.0
    assert compute_metrics(1 - y, y, perfect[:, ::-1], metrics=("roc_auc",))["roc_auc"] == 0.0

    # 4 classes, class 3 never true: mean of one-vs-rest AUCs over the present classes 0..2
    probs = r.dirichlet(np.ones(4), 90)
    y = r.randint(0, 3, 90)
    out = compute_metrics(probs.argmax(1), y, probs, metrics=("roc_auc",))
    want = np.mean([_auc(probs[y == k, k], probs[y != k, k]) for k in range(3)])
    assert out["roc_auc"] == pytest.approx(want)
    # with every class present the same rule is sklearn's one-vs-rest macro AUC
    y[:4] = 3
    got = compute_metrics(probs.argmax(1), y, probs, metrics=("roc_auc",))["roc_auc"]
    assert got == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))

    # a single class in the references: AUC undefined -> None, other metrics still computed
    out = compute_metrics(probs.argmax(1), np.zeros(90, int), probs, metrics=("roc_auc", "accuracy"))
    assert out["roc_auc"] is None and out["accuracy"] == pytest.approx((probs.argmax(1) == 0).mean())


def test_unknown_metric_name_error():
    with pytest.raises(ValueError) as e:
        load_metric("no_such_metric_tltext")
    msg = str(e.value)
    assert "'no_such_metric_tltext' is not bundled" in msg and "Hub" in msg and "\n" not in msg
    assert all(name in msg for name in BUNDLED)
    with pytest.raises(ValueError, match="is not bundled"):
        compute_metrics([0, 1], [0, 1], metrics=("accuracy", "no_such_metric_tltext"))


def test_other_names_go_to_evaluate_and_merge(tmp_path):
    d = tmp_path / "error_count"
    d.mkdir()
    (d / "error_count.py").write_text(textwrap.dedent('''
        import datasets
        import evaluate
        class ErrorCount(evaluate.Metric):
            def _info(self):
                return evaluate.MetricInfo(description="wrong predictions", citation="", inputs_description="",
                    features=datasets.Features({"predictions": datasets.Value("int64"),
                                                "references": datasets.Value("int64")}))
            def _compute(self, predictions, references):
                return {"errors": sum(int(p != r) for p, r in zip(predictions, references))}
    '''))
    out = compute_metrics([0, 1, 2, 2], [0, 2, 2, 1], metrics=("accuracy", str(d)))
    assert out == {"accuracy": 0.5, "errors": 2}


def test_modules_are_cached_and_bad_inputs_rejected():
    compute_metrics([0, 1], [0, 1])
    before = _module.cache_info()
    compute_metrics([0, 1, 1], [0, 1, 0])
    after = _module.cache_info()
    assert after.misses == before.misses and after.hits > before.hits
    assert load_metric("accuracy") is not load_metric("accuracy")  # the public loader gives fresh modules

    with pytest.raises(ValueError, match="predictions has 2 items but references has 3"):
        compute_metrics([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="class id 3 is out of range for 3 classes"):
        compute_metrics([0, 3], [0, 1], label_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="expected integer class ids"):
        compute_metrics([0.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match="probabilities has 3 columns but label_names has 2"):
        compute_metrics([0, 1], [0, 1], np.full((2, 3), 1 / 3), ["a", "b"])
    with pytest.raises(ValueError, match="roc_auc' needs probabilities"):
        compute_metrics([0, 1], [0, 1], metrics=("roc_auc",))


def test_works_offline_with_empty_cache(tmp_path, monkeypatch):
    """evaluate/huggingface_hub read the offline flags at import, so the check runs in a fresh process
    (which loads compute.py by path: it needs nothing else from tltext, and skipping torch keeps it quick)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached from the Hub
    p, y, probs = _data(11, 3)
    script = textwrap.dedent(f"""
        import importlib.util, json, numpy as np
        spec = importlib.util.spec_from_file_location("compute", {str(ROOT / "tltext" / "metrics" / "compute.py")!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        BUNDLED, compute_metrics, load_metric = mod.BUNDLED, mod.compute_metrics, mod.load_metric
        p, y, probs = np.array({p.tolist()}), np.array({y.tolist()}), np.array({probs.tolist()})
        out = compute_metrics(p, y, probs, metrics=BUNDLED)
        try:
            load_metric("bleu")
        except ValueError as e:
            out["error"] = str(e)
        print(json.dumps(out))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert out["f1"] == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0))
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert out["confusion_matrix"] == skm.confusion_matrix(y, p, labels=[0, 1, 2]).tolist()
    assert "'bleu' is not bundled" in out["error"]
