"""Proxy A-distance, MK-MMD^2, the strategy table and ``tltext diagnose``."""
import json

import numpy as np
import pytest

from tltext.diagnostics import (THRESHOLDS, a_distance_from_error, domain_classifier_error, mmd2, proxy_a_distance,
                                recommend)
from tltext.diagnostics.cli import main as diagnose_main
from tltext.diagnostics.recommend import (FEW_SHOT_PER_CLASS, LARGE_DATA_PER_CLASS, LARGE_GAP_A_DISTANCE,
                                          SIMILAR_A_DISTANCE, SMALL_DATA_PER_CLASS)


@pytest.fixture(scope="module")
def gauss():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 16)), rng.standard_normal((300, 16))
    far = rng.standard_normal((300, 16)) + 1.5  # mean shifted by 1.5 in every dimension: linearly separable
    return a, b, far


def test_a_distance_same_domain_is_near_zero_and_separable_near_two(gauss):
    a, b, far = gauss
    assert proxy_a_distance(a, b) < 0.3
    assert proxy_a_distance(a, far) > 1.9
    # in between: a small shift gives an intermediate value
    mid = proxy_a_distance(a, b + 0.15)
    assert 0.1 < mid < 1.9


def test_domain_classifier_balances_domains_and_clips():
    rng = np.random.default_rng(1)
    e = domain_classifier_error(rng.standard_normal((200, 4)), rng.standard_normal((37, 4)) + 3.0, seed=0)
    assert e["n_per_domain"] == 37 and e["folds"] == 5 and 0.0 <= e["error"] < 0.05
    assert a_distance_from_error(0.5) == 0.0 and a_distance_from_error(0.7) == 0.0
    assert a_distance_from_error(0.0) == 2.0 and a_distance_from_error(0.25) == pytest.approx(1.0)


def test_a_distance_bad_input_messages():
    with pytest.raises(ValueError, match="width"):
        proxy_a_distance(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(ValueError, match="at least 5 examples per domain"):
        proxy_a_distance(np.zeros((3, 2)), np.ones((10, 2)))
    with pytest.raises(ValueError, match="2-D"):
        proxy_a_distance(np.zeros(10), np.zeros(10))


def test_mmd_same_near_zero_shifted_positive(gauss):
    a, b, far = gauss
    same, diff = mmd2(a, b), mmd2(a, far)
    assert abs(same) < 0.01
    assert diff > 0.2 and diff > 30 * abs(same)
    assert mmd2(a, far, max_per_domain=50) > 0.1  # subsample


@pytest.mark.parametrize("per_class,a_dist,target,tuning,objective", [
    ({"a": 5, "b": 40}, 1.9, True, "frozen", "erm"),                 # few labels win over the gap: a probe
    ({"a": FEW_SHOT_PER_CLASS, "b": 50}, 0.2, True, "frozen", "erm"),
    ({"a": 50, "b": 60}, 1.8, True, "frozen", "dann"),               # large gap, little data
    ({"a": 500, "b": 600}, LARGE_GAP_A_DISTANCE, True, "partial", "dann"),  # large gap, more data
    ({"a": 50, "b": 60}, 1.8, False, "partial", "erm"),              # large gap but no target to align with
    ({"a": 50, "b": 60}, 0.4, True, "frozen", "erm"),                # little data, similar: probe
    ({"a": 50, "b": 60}, SIMILAR_A_DISTANCE, True, "partial", "erm"),  # little data, dissimilar
    ({"a": SMALL_DATA_PER_CLASS, "b": 900}, 0.4, True, "partial", "erm"),  # more data, similar
    ({"a": LARGE_DATA_PER_CLASS, "b": 3000}, 1.2, True, "full", "erm"),    # lots of data
])
def test_recommendation_follows_the_table(per_class, a_dist, target, tuning, objective):
    r = recommend(per_class, a_dist, has_unlabelled_target=target, evidence=[],
                  few_shot_evidence=[])  # no measurements: the rules
    assert (r.tuning, r.objective) == (tuning, objective), r.reasons
    assert r.reasons and r.flags == f"--tuning {tuning} --objective {objective}"
    assert r.to_dict()["flags"] == r.flags


def test_large_gap_recommendation_follows_the_measurements():
    from tltext.diagnostics.recommend import Evidence, load_evidence

    ev = [Evidence("text", "--tuning partial --objective erm", 72.0, 72.0, 200, "table A"),
          Evidence("text", "--tuning partial --objective dann", 64.0, 72.0, 200, "table A"),
          Evidence("text", "--tuning full --objective mlm", 80.0, 78.0, 500, "table B"),
          Evidence("text", "--tuning frozen --objective mmd", 67.0, 65.0, 50, "table C")]
    books = {"negative": 900, "positive": 900}
    r = recommend(books, 1.96, evidence=ev)
    assert r.flags == "--tuning full --objective mlm" and "80.0 %" in r.reasons[1] and "table B" in r.reasons[1]
    assert recommend({"a": 300, "b": 300}, 1.96, evidence=ev).flags == "--tuning partial --objective erm"  # not dann
    assert recommend({"a": 60, "b": 60}, 1.96, evidence=ev).flags == "--tuning frozen --objective mmd"
    assert recommend(books, 1.96, modality="speech", evidence=ev).objective == "dann"  # no speech measurement: rule
    # the shipped measurements: partial dann/mmd lost to partial source-only on books <-> kitchen
    shipped = recommend(books, 1.96)
    assert shipped.objective != "dann" and "benchmarks/results" in shipped.reasons[1]
    assert shipped.flags == "--tuning full --objective self_training"  # the best measured row (quality_amazon)
    assert all(e.measurement for e in load_evidence())


def test_few_shot_recommendation_follows_the_measurements():
    from tltext.diagnostics.recommend import FewShotEvidence, load_few_shot_evidence

    ev = [FewShotEvidence("text", "--tuning full --objective contrastive", 85.2, 10, "fewshot.md K=10"),
          FewShotEvidence("text", "--tuning frozen --objective erm", 84.4, 10, "fewshot.md K=10"),
          FewShotEvidence("text", "--tuning frozen --objective erm", 77.9, 5, "fewshot.md K=5"),
          FewShotEvidence("text", "--tuning full --objective contrastive", 77.8, 5, "fewshot.md K=5")]
    r = recommend({"a": 10, "b": 10}, 0.5, few_shot_evidence=ev)
    assert r.flags == "--tuning full --objective contrastive" and "85.2 % at K=10; fewshot.md K=10" in r.reasons[1]
    assert "not on your data" in r.reasons[1]
    assert r.alternatives == ["--tuning frozen --objective erm (84.4 % measured at K=10)"]
    # 4 labels per class: the nearest measured K is 5, where the probe measured best
    assert recommend({"a": 4, "b": 9}, 0.5, few_shot_evidence=ev).flags == "--tuning frozen --objective erm"
    # no measurement for this modality: the rule (a probe)
    r = recommend({"a": 4, "b": 9}, 1.9, modality="speech", few_shot_evidence=ev)
    assert r.flags == "--tuning frozen --objective erm" and "no speech measurement" in r.reasons[0]
    assert "domain gap is large" in r.reasons[-1]
    # the shipped file: BANKING77 at K = 10 recommends contrastive fine-tuning, and names the measurement
    shipped = recommend({"a": 10, "b": 12}, 0.5)
    assert shipped.flags == "--tuning full --objective contrastive" and "fewshot.json" in shipped.reasons[1]
    assert all(e.measurement and e.modality == "text" and e.task for e in load_few_shot_evidence())
    assert "on BANKING77" in shipped.reasons[1] and all("on BANKING77" in x for x in shipped.alternatives)


def test_evidence_file_is_what_the_results_files_say():
    """evidence.json is written by benchmarks/evidence.py from the results files: no hand-edited number."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "evidence.py"), "--check"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr


def test_recommendation_needs_counts():
    with pytest.raises(ValueError, match="per class"):
        recommend({}, 1.0)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    d = tmp_path_factory.mktemp("dx")
    src = ([{"text": t, "label": "pos"} for t in ["great blender", "love this pan", "works well, good kettle"] * 4]
           + [{"text": t, "label": "neg"} for t in ["broken toaster", "awful knife, bad", "the pot leaks"] * 4])
    tgt = [{"text": t} for t in ["a moving novel", "the plot drags on", "wonderful characters", "dull chapters"] * 3]
    _write(d / "src.jsonl", src)
    _write(d / "tgt.jsonl", tgt)
    _write(d / "nolabel.jsonl", tgt)
    return d


def test_diagnose_cli_writes_diagnosis(domains, tiny_bert_dir, tmp_path, capsys):
    args = ["--model_name_or_path", tiny_bert_dir, "--source_file", str(domains / "src.jsonl"),
            "--target_file", str(domains / "tgt.jsonl"), "--output_dir", str(tmp_path / "out"),
            "--cache_dir", str(tmp_path / "cache"), "--disable_tqdm"]
    assert diagnose_main(args) == 0
    dx = json.loads((tmp_path / "out" / "diagnosis.json").read_text())
    for key in ("a_distance", "domain_classifier_error", "mmd2", "labels_per_class", "min_labels_per_class",
                "recommendation", "thresholds", "num_examples", "embedding_dim", "timing"):
        assert key in dx, key
    assert dx["num_examples"] == {"source": 24, "target": 12} and dx["embedding_dim"] == 32
    assert dx["labels_per_class"] == {"neg": 12, "pos": 12} and dx["min_labels_per_class"] == 12
    assert dx["a_distance_n_per_domain"] == 12 and dx["target_labels_per_class"] is None
    assert 0.0 <= dx["a_distance"] <= 2.0
    assert dx["a_distance"] == pytest.approx(2 * (1 - 2 * dx["domain_classifier_error"]), abs=1e-9) or dx["a_distance"] == 0.0
    assert dx["thresholds"] == THRESHOLDS
    expected = recommend(dx["labels_per_class"], dx["a_distance"])
    assert dx["recommendation"]["flags"] == expected.flags
    table = capsys.readouterr().out
    assert "proxy A-distance" in table and expected.flags in table
    # 12 per domain: the A-distance comes with its standard error and a warning that it is rough
    a_line = next(l for l in table.splitlines() if "proxy A-distance" in l)
    e = dx["domain_classifier_error"]
    p = e if 0 < e < 1 else 0.5 / 24  # 24 held-out predictions in all
    se = 4 * (p * (1 - p) / 24) ** 0.5
    assert dx["a_distance_standard_error"] == pytest.approx(se)
    assert f"A-distance +- {se:.2f} s.e.; few examples: a rough estimate" in a_line and dx["a_distance_rough"] is True
    # a value within one s.e. of a threshold says the call is uncertain
    near = [t for t in (SIMILAR_A_DISTANCE, LARGE_GAP_A_DISTANCE) if abs(dx["a_distance"] - t) < se]
    assert any("uncertain: the A-distance" in r for r in dx["recommendation"]["reasons"]) == bool(near)
    saved = json.loads((tmp_path / "out" / "diagnosis.json").read_text())
    mmd_line = next(l for l in table.splitlines() if "MK-MMD^2" in l)
    assert f"{saved['mmd2']:+.4f}" in mmd_line
    assert ("below 0 means no detectable gap" in mmd_line) == (saved["mmd2"] < 0)
    # second run: both domains come from the embedding cache
    assert diagnose_main(args) == 0
    assert json.loads((tmp_path / "out" / "diagnosis.json").read_text())["timing"]["cache_hits"] == 2


def test_diagnose_cli_errors(domains, tiny_bert_dir, tmp_path, capsys):
    base = ["--model_name_or_path", tiny_bert_dir, "--target_file", str(domains / "tgt.jsonl"),
            "--cache_dir", str(tmp_path / "cache"), "--disable_tqdm"]
    assert diagnose_main(base + ["--source_file", str(domains / "nolabel.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "nolabel.jsonl" in err and "'label'" in err
    assert diagnose_main(base + ["--source_file", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    src = ["--source_file", str(domains / "src.jsonl")]
    assert diagnose_main(base + src + ["--a_distance_samples", "0"]) == 2  # was silently "all examples"
    assert capsys.readouterr().err.strip() == ("error: --a_distance_samples 0: expected at least 5 examples per domain "
                                               "(the A-distance is a 5-fold cross-validated domain classifier)")
    assert diagnose_main(base + src + ["--mmd_samples", "1"]) == 2
    assert "--mmd_samples 1: expected at least 2" in capsys.readouterr().err
