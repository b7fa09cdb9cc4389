"""Unsupervised SimCSE on the target text (tltext/objectives/simcse.py)."""
import pytest
import torch

from helpers import NEG, POS
from tltext.backbones import TextBackbone
from tltext.modeling import TltextModel
from tltext.objectives import ObjectiveSet, ObjectiveSetup, Step
from tltext.objectives.simcse import TEMPERATURE, info_nce

pytestmark = pytest.mark.usefixtures("one_thread")

TARGET = [t + " in the kitchen" for t in POS + NEG]


def _model(path):
    return TltextModel.from_backbone(TextBackbone.from_pretrained(path, max_length=32), {"neg": 0, "pos": 1})


def _step(model, tgt=TARGET):
    bb = model.backbone
    src = POS[:4] + NEG[:4]
    labels = torch.tensor([1] * 4 + [0] * 4)
    return Step(model, {"parts": [bb.collate(src), bb.collate(tgt)]}, labels, len(src), len(tgt), 0.0)


def _simcse(model, spec="simcse"):
    return ObjectiveSet(spec, ObjectiveSetup(feature_dim=model.feature_dim, num_classes=2, model=model))


def test_identical_views_score_lower_than_shuffled_pairs():
    torch.manual_seed(0)
    z = torch.randn(16, 32)
    same = info_nce(z, z)
    shuffled = info_nce(z, z[torch.roll(torch.arange(16), 1)])
    assert same < 0.01 < 5.0 < shuffled  # tau = 0.05: cos 1 vs ~0 is a logit gap of ~20
    assert TEMPERATURE == 0.05
    # the formula: -log softmax of cos/tau on the diagonal
    sim = torch.nn.functional.normalize(z, dim=1) @ torch.nn.functional.normalize(z, dim=1).t() / 0.05
    assert same.item() == pytest.approx(-torch.log_softmax(sim, 1).diag().mean().item(), rel=1e-4)


def test_info_nce_rejects_a_single_row():
    with pytest.raises(ValueError, match=r"N >= 2"):
        info_nce(torch.randn(1, 4), torch.randn(1, 4))


def test_no_dropout_views_coincide_and_dropout_views_do_not(tiny_bert_dir):
    model = _model(tiny_bert_dir)
    obj = _simcse(model)
    model.eval()
    _, logs = obj(_step(model))
    assert logs["simcse/pos_cos"] == pytest.approx(1.0, abs=1e-5)
    model.train()
    _, logs = obj(_step(model))
    assert logs["simcse/pos_cos"] < 0.9999
    assert logs["simcse"] == pytest.approx(logs["simcse/loss"]) and logs["simcse/loss"] > 0


def test_gradient_reaches_the_encoder(tiny_bert_dir):
    torch.manual_seed(0)
    model = _model(tiny_bert_dir).train()
    out = _simcse(model).terms[0](_step(model))
    model.zero_grad()
    out.loss.backward()
    enc = model.backbone.encoder
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                 "encoder.layer.1.output.dense.weight"):
        g = dict(enc.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name
    assert model.classifier.weight.grad is None  # the term does not touch the head


def test_fewer_than_two_target_rows_skip_the_term(tiny_bert_dir):
    model = _model(tiny_bert_dir).train()
    loss, logs = _simcse(model)(_step(model, tgt=TARGET[:1]))
    assert logs["simcse/skipped"] == 1.0 and logs["simcse"] == 0.0
    assert torch.isfinite(loss) and float(loss.detach()) == pytest.approx(logs["ce"])
