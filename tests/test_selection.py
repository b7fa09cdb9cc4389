"""Label-free model selection (tltext/training/selection.py): SND, DEV, IM on constructed
predictions, and a real Selector over a toy model trained for a few "epochs"."""
import math
import os

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from torch import nn

from synthetic_da import DIM, make_domain
from tltext.training.predict import Predictor
from tltext.training.selection import (CRITERIA, HISTORY_KEYS, SelectionData, Selector, deep_embedded_validation,
                                       density_ratios, describe, information_maximisation, soft_neighborhood_density)

pytestmark = pytest.mark.usefixtures("one_thread")


def _clustered(n=300, c=3, scale=6.0, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    return nn.functional.one_hot(y, c).float() * scale + noise * torch.randn(n, c, generator=g)


def test_snd_is_higher_for_confident_clusters_than_for_scattered_predictions():
    scattered = 1.5 * torch.randn(300, 3, generator=torch.Generator().manual_seed(1))
    clustered = _clustered()
    assert soft_neighborhood_density(clustered) > soft_neighborhood_density(scattered) + 0.1
    # three tight clusters of ~100 points: each point spreads over its own cluster, H ~ log(99)
    assert soft_neighborhood_density(clustered) == pytest.approx(math.log(99), abs=0.05)


def test_snd_of_identical_predictions_is_log_n_minus_1_and_chunking_changes_nothing():
    # the degenerate case (Saito et al. 2021 rely on the source loss to prevent it): one point mass
    assert soft_neighborhood_density(torch.zeros(50, 4)) == pytest.approx(math.log(49), rel=1e-5)
    x = _clustered(noise=1.0)
    assert soft_neighborhood_density(x, chunk=7) == pytest.approx(soft_neighborhood_density(x), rel=1e-5)


def test_snd_rejects_a_single_prediction():
    with pytest.raises(ValueError, match=r"N >= 2"):
        soft_neighborhood_density(torch.zeros(1, 3))


def test_information_maximisation_prefers_confident_diverse_predictions():
    assert information_maximisation(_clustered()) > information_maximisation(torch.zeros(300, 3)) + 1.0
    assert information_maximisation(torch.zeros(10, 4)) == pytest.approx(0.0, abs=1e-5)  # log 4 - log 4


def test_dev_with_equal_weights_is_the_mean_loss():
    losses = np.array([0.2, 0.5, 1.0, 0.1])
    assert deep_embedded_validation(np.ones(4), losses) == pytest.approx(losses.mean())


def test_dev_matches_the_control_variate_formula():
    rng = np.random.default_rng(0)
    w, l = rng.gamma(2.0, 0.5, 50), rng.random(50)
    wl = w * l
    eta = -np.cov(np.stack([wl, w]))[0, 1] / np.var(w, ddof=1)
    assert deep_embedded_validation(w, l) == pytest.approx(wl.mean() + eta * w.mean() - eta)
    with pytest.raises(ValueError, match=r"weights and losses \[N\]"):
        deep_embedded_validation(w, l[:-1])


def test_density_ratios_are_large_near_the_target_and_dev_weights_its_losses():
    rng = np.random.default_rng(0)
    src, tgt = rng.normal(0, 1, (400, 2)), rng.normal([2, 0], 1, (400, 2))
    val = np.array([[-2.0, 0.0], [0.0, 0.0], [2.0, 0.0], [4.0, 0.0]])
    w = density_ratios(src, tgt, val)
    assert np.all(np.diff(w) > 0) and w[0] < 0.2 and w[3] > 5  # true ratio exp(2x - 2): 0.0025, 0.14, 7.4, 403
    near_target_bad = np.array([0.0, 0.1, 1.0, 2.0])
    near_source_bad = near_target_bad[::-1].copy()
    assert deep_embedded_validation(w, near_target_bad) > deep_embedded_validation(w, near_source_bad)


class Toy(nn.Module):
    """What a Predictor needs: ``backbone`` (unused for cached inputs), ``features``, ``classify``."""

    backbone = None

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(DIM, 16), nn.ReLU())
        self.head = nn.Linear(16, 2)

    def features(self, x):
        return self.net(x)

    def classify(self, f):
        return self.head(f)


def _selectors():
    gen = torch.Generator().manual_seed(0)
    (xs, ys), (xv, yv) = make_domain(300, gen, False), make_domain(100, gen, False)
    (xt, _), (xte, yte) = make_domain(300, gen, True), make_domain(300, gen, True)
    data = SelectionData(train_inputs=xs, train_labels=ys.tolist(), validation_inputs=xv,
                         validation_labels=yv.tolist(), target_inputs=xt, test_inputs=xte, test_labels=yte.tolist())
    pred = Predictor(Accelerator(cpu=True), 64, disable_tqdm=True)
    make = lambda crit, rec: Selector(crit, pred, data, ["a", "b"], record_oracle=rec)  # noqa: E731
    return (xs, ys), make


@pytest.mark.parametrize("criterion", list(CRITERIA))
def test_record_oracle_records_every_epoch_and_never_changes_the_selection(criterion):
    (xs, ys), make = _selectors()
    plain, recording = make(criterion, False), make(criterion, True)
    torch.manual_seed(0)
    model = Toy()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    picks = {"plain": [], "recording": []}
    for epoch in range(4):
        for _ in range(10):
            loss = nn.functional.cross_entropy(model.classify(model.features(xs)), ys)
            opt.zero_grad()
            loss.backward()
            opt.step()
        a, b = plain.score(model, epoch), recording.score(model, epoch)
        assert a["score"] == b["score"]
        assert "oracle_test_metric" not in a and 0.0 <= b["oracle_test_metric"] <= 1.0
        assert {"val_metric", "target_im", "target_snd", "dev_risk"} <= set(b)  # the study records every criterion
        assert ("dev_risk" in a) == (criterion == "dev")  # DEV's extra pass over train only when it selects
        if criterion != "last":
            key, sign = HISTORY_KEYS[criterion]
            assert a["score"] == sign * a[key]
        picks["plain"].append(a["score"])
        picks["recording"].append(b["score"])
    assert picks["plain"] == picks["recording"]
    assert "not used for selection" in describe(criterion, False, True)


def test_oracle_selects_on_the_test_metric_and_unknown_criteria_are_rejected():
    _, make = _selectors()
    sel = make("snd", False)
    sel.oracle = True
    res = sel.score(Toy(), 0)
    assert res["score"] == res["oracle_test_metric"]
    with pytest.raises(ValueError, match=r"--selection 'oracle': expected one of source_validation, .*snd, dev"):
        make("oracle", False)


def test_selection_table_counts_hits_within_one_point_of_the_oracle(tmp_path):
    import json as _json

    from benchmarks.selection_table import main

    hist = [  # oracle best: epoch 1 (0.80); IM picks epoch 2 (0.795, hit), SND epoch 0 (0.70, miss)
        {"epoch": 0, "val_metric": 0.9, "target_im": 0.1, "target_snd": 3.0, "dev_risk": 0.5, "oracle_test_metric": 0.70},
        {"epoch": 1, "val_metric": 0.9, "target_im": 0.2, "target_snd": 2.0, "dev_risk": 0.3, "oracle_test_metric": 0.80},
        {"epoch": 2, "val_metric": 0.8, "target_im": 0.3, "target_snd": 1.0, "dev_risk": 0.4, "oracle_test_metric": 0.795},
    ]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(_json.dumps({"history": hist}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text(_json.dumps({"history": [{"epoch": 0, "val_metric": 0.5}]}))
    out = main([str(tmp_path / "a"), str(tmp_path / "b"), "--out_dir", str(tmp_path / "res")])
    s = out["summary"]
    assert s["source_validation"]["hits"] == 0 and s["source_validation"]["mean_gap"] == pytest.approx(10.0)
    assert s["information_maximisation"]["hits"] == 1 and s["information_maximisation"]["mean_gap"] == pytest.approx(0.5)
    assert s["snd"]["hits"] == 0 and s["dev"]["hits"] == 1 and s["dev"]["mean_gap"] == pytest.approx(0.0)
    assert s["last"]["hits"] == 1 and all(v["runs"] == 1 for v in s.values())
    assert "oracle_test_metric" in out["runs"][1]["skipped"]
    saved = _json.loads((tmp_path / "res" / "selection.json").read_text())
    assert saved["summary"] == s and (tmp_path / "res" / "selection.md").read_text().startswith("*Label-free")


def test_selection_table_merge_keeps_rows_of_runs_no_longer_on_disk(tmp_path):
    import json as _json
    import shutil

    from benchmarks.selection_table import main

    def run(name, oracle, epochs):
        d = tmp_path / name
        d.mkdir()
        hist = [{"epoch": i, "val_metric": 0.5 + 0.1 * i, "oracle_test_metric": o} for i, o in enumerate(oracle[:epochs])]
        (d / "results.json").write_text(_json.dumps({"history": hist}))
        return str(d)

    res = str(tmp_path / "res")
    old = run("old", [0.9, 0.7, 0.6], 3)  # source validation picks the last epoch: gap 30 points
    main([old, "--out_dir", res])
    shutil.rmtree(old)
    new = run("new", [0.7, 0.8], 2)  # picks epoch 1, the oracle's: gap 0
    out = main([new, "--out_dir", res, "--merge"])
    assert [r["run"] for r in out["runs"]] == [old, new]
    sv = out["summary"]["source_validation"]
    assert sv["runs"] == 2 and sv["hits"] == 1 and sv["mean_gap"] == pytest.approx(15.0)
    assert set(out["summary_by_length"]) == {"2 epochs", "3 epochs"}
    assert out["summary_by_length"]["3 epochs"]["source_validation"]["max_gap"] == pytest.approx(30.0)
    assert [r["run"] for r in main([new, "--out_dir", res, "--merge"])["runs"]] == [old, new]  # rerun: no duplicate
    # the deleted folder given again keeps its stored picks; one run spelt three ways is one row
    out = main([old, new + "/", os.path.join(new, "."), "--out_dir", res, "--merge"])
    assert [r["run"] for r in out["runs"]] == [old, new] and all("picks" in r for r in out["runs"])
    assert out["summary"]["source_validation"]["runs"] == 2
    assert [r["run"] for r in main([new, "--out_dir", res])["runs"]] == [new]  # without --merge: only what was given
    assert main([old, "--out_dir", res])["runs"][0]["skipped"] == "no such folder"
    with pytest.raises(SystemExit):
        main([new, "--out_dir", res, "--merge", "--tolerance", "2"])
    with pytest.raises(SystemExit):
        main([new, "--out_dir", res, "--tolerance", "nan"])
    (tmp_path / "res" / "selection.json").write_text("{not json")
    with pytest.raises(SystemExit):
        main([new, "--out_dir", res, "--merge"])
