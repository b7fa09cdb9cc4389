"""The objective registry: names, specs, combinations, and that nothing outside an
objective's own file compares objective names."""
import re
from pathlib import Path

import pytest
import torch

from synthetic_da import ToyModel
from tltext import objectives
from tltext.objectives import ObjectiveSet, ObjectiveSetup, Step

ROOT = Path(__file__).resolve().parents[1]


def test_builtin_objectives_are_registered():
    assert {"erm", "dann", "mmd", "prototypes", "cdan", "mcc"} <= set(objectives.names())
    for name in objectives.names():
        cls = objectives.get(name)
        assert cls.name == name and cls.description and cls.paper


def test_unknown_objective_is_a_one_line_error_listing_the_names():
    with pytest.raises(ValueError) as e:
        objectives.parse_spec("mmd+cdann")
    msg = str(e.value)
    assert "\n" not in msg and "'cdann'" in msg and "did you mean" in msg
    assert all(n in msg for n in objectives.names())
    with pytest.raises(ValueError, match=r"'dan': unknown \(did you mean 'dann'\?\)"):
        objectives.parse_spec("dan")
    with pytest.raises(ValueError) as e:
        objectives.parse_spec("xyzzy")
    assert "did you mean" not in str(e.value)


@pytest.mark.parametrize("spec, err", [("mmd:x", "not a number"), ("mmd:-1", ">= 0"), ("mmd+mmd", "twice"), ("", "empty")])
def test_bad_specs(spec, err):
    with pytest.raises(ValueError, match=err):
        objectives.parse_spec(spec)


def test_spec_weights_and_descriptions():
    assert objectives.parse_spec("mmd:0.5+mcc") == [("mmd", 0.5), ("mcc", None)]
    terms = objectives.describe("mmd:0.5+mcc")
    assert [t["name"] for t in terms] == ["mmd", "mcc"] and terms[0]["weight"] == 0.5
    assert terms[1]["weight"] == objectives.get("mcc").default_weight  # the weight it runs with, never None
    # --da_weight fills the terms given without NAME:WEIGHT; plain cross-entropy adds no weighted term
    assert [t["weight"] for t in objectives.describe("erm+mmd:0.5+mcc", da_weight=0.1)] == [None, 0.5, 0.1]
    assert objectives.needs_target("erm+mcc") and not objectives.needs_target("erm")



def test_default_weight_and_head_depend_on_the_tuning_through_the_registry():
    # the alignment terms run at a tenth of their frozen weight on a trainable encoder, DANN at 0.03 under full
    # tuning (pilots_full_dann_weight003.md), unless given
    for tuning, dann, mmd in (("frozen", 1.0, 1.0), ("partial", 0.1, 0.1), ("full", 0.03, 0.1), (None, 1.0, 1.0)):
        assert [t["weight"] for t in objectives.describe("dann+mmd+mcc", tuning=tuning, modality="text")] == [dann, mmd, 1.0]
    # 0.03 was measured on text only: a from-scratch image model (or speech) under full tuning keeps 0.1
    for modality in ("image", "speech", None):
        assert objectives.describe("dann", tuning="full", modality=modality)[0]["weight"] == 0.1
    assert [t["weight"] for t in objectives.describe("dann:0.7+mmd", da_weight=0.3, tuning="partial")] == [0.7, 0.3]
    ours = objectives.ObjectiveSet("dann+mcc", objectives.ObjectiveSetup(feature_dim=8, num_classes=2, tuning="full"))
    assert [t.weight for t in ours.terms] == [0.03, 1.0]
    assert "dann 1 (frozen), 0.1 (partial/full), 0.03 (text/full); " in objectives.weights_help()
    # LP-FT head: any term that reads target predictions; the feature-alignment terms take source-only's recipe
    assert objectives.lp_ft_head("mmd+mcc") and objectives.lp_ft_head("mlm+self_training")
    assert not objectives.lp_ft_head("dann") and not objectives.lp_ft_head("erm+mmd")

def test_a_plug_in_objective_sets_its_weight_per_tuning_and_the_help_reads_it(monkeypatch):
    from tltext.objectives import _REGISTRY, Objective

    class Toy(Objective):
        name = "toy_weights"
        tuning_weights = {"partial": 0.1, "full": 0.03, "image/full": 0.5}

    monkeypatch.setitem(_REGISTRY, "toy_weights", Toy)
    assert [objectives.term_weight("toy_weights", None, tuning=t) for t in ("frozen", "partial", "full", None)] == [
        1.0, 0.1, 0.03, 1.0]
    # a modality-qualified key wins for that modality only
    assert [objectives.term_weight("toy_weights", None, tuning="full", modality=m) for m in ("image", "text")] == [0.5, 0.03]
    assert objectives.term_weight("toy_weights", None, da_weight=0.5, tuning="full") == 0.5  # --da_weight wins
    assert objectives.term_weight("toy_weights", 0.2, da_weight=0.5, tuning="full") == 0.2  # NAME:WEIGHT wins
    assert "toy_weights 1 (frozen), 0.1 (partial), 0.03 (full), 0.5 (image/full)" in objectives.weights_help()
    assert "; mcc 1;" in objectives.weights_help()  # one value for every tuning: no breakdown


def test_checks_name_the_flag():
    with pytest.raises(ValueError, match="--objective cdan needs --target_file"):
        objectives.check("cdan", "frozen", has_target=False)
    objectives.check("erm", "frozen", has_target=False)


def _step(n_src=8, n_tgt=8, seed=0):
    torch.manual_seed(seed)
    model = ToyModel()
    x = torch.randn(n_src + n_tgt, 10)
    return model, Step(model, {"embeddings": x}, torch.randint(0, 2, (n_src,)), n_src, n_tgt, 0.5)


def test_combination_is_ce_plus_each_weighted_term_logged_apart():
    model, step = _step()
    setup = ObjectiveSetup(feature_dim=16, num_classes=2)
    both = ObjectiveSet("mmd:0.5+mcc", setup)
    loss, logs = both(step)
    assert {"ce", "mmd", "mcc", "mmd/mmd2", "mcc/confusion"} <= set(logs)
    assert float(loss.detach()) == pytest.approx(logs["ce"] + logs["mmd"] + logs["mcc"], rel=1e-5)
    assert logs["mmd"] == pytest.approx(0.5 * logs["mmd/mmd2"], rel=1e-5)
    assert both.coefficients(0.3) == {"mmd/coeff": 0.5, "mcc/coeff": 1.0}
    # --da_weight applies to terms without an explicit weight
    assert ObjectiveSet("mmd:0.5+mcc", setup, default_weight=0.2).coefficients(0.3)["mcc/coeff"] == 0.2


def test_degenerate_batches_skip_the_term_not_the_run():
    setup = ObjectiveSetup(feature_dim=16, num_classes=2)
    for n_src, n_tgt in ((1, 8), (8, 1)):  # a last batch of one row on either side
        _, step = _step(n_src, n_tgt)
        loss, logs = ObjectiveSet("mmd", setup)(step)
        assert logs["mmd/skipped"] == 1.0 and logs["mmd"] == 0.0 and torch.isfinite(loss)
    for spec in ("dann", "cdan", "mcc"):
        _, step = _step(8, 1)
        loss, logs = ObjectiveSet(spec, setup)(step)
        assert torch.isfinite(loss) and "skipped" not in " ".join(logs)


def test_no_objective_name_is_compared_outside_its_own_file():
    names = "|".join(objectives.names())
    pattern = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    offenders = []
    for path in (ROOT / "tltext").rglob("*.py"):
        if path.parent.name == "objectives":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_objectives_name_their_modality_in_help_and_checks():
    """The shared --help marks modality-specific objectives; a mismatch is a one-line error."""
    text = objectives.help_text()
    assert "wav2vec2 [speech only]:" in text and "mlm [text only]:" in text and "simcse [text only]:" in text
    assert "dann:" in text and "dann [" not in text  # every modality: no mark
    with pytest.raises(ValueError, match=r"^--objective wav2vec2 is for speech models; this is a text run"):
        objectives.check("wav2vec2", "full", has_target=False, modality="text")
    with pytest.raises(ValueError, match=r"^--objective mlm is for text models; this is a speech run"):
        objectives.check("erm+mlm", "full", has_target=True, modality="speech")
    objectives.check("mlm", "full", has_target=True, modality="text")
    objectives.check("dann", "frozen", has_target=True, modality="image")
