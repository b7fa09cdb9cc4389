"""UDALM's masked-LM term (tltext/objectives/mlm.py) on a tiny BERT."""
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from helpers import NEG, POS, reviews, write_jsonl
from tltext import objectives
from tltext.backbones import TextBackbone
from tltext.modeling import TltextModel
from tltext.objectives import ObjectiveSet, ObjectiveSetup, Step
from tltext.objectives.mlm import MaskedLMHead, mask_tokens, masking_collator

pytestmark = pytest.mark.usefixtures("one_thread")

TARGET = [t + " in the kitchen" for t in POS + NEG]


def _model(path):
    bb = TextBackbone.from_pretrained(path, max_length=32)
    return TltextModel.from_backbone(bb, {"neg": 0, "pos": 1})


def _objective(model, spec="mlm"):
    setup = ObjectiveSetup(feature_dim=model.feature_dim, num_classes=2, tuning="full", model=model)
    return ObjectiveSet(spec, setup)


def _step(model, src=POS[:4] + NEG[:4], tgt=TARGET):
    bb = model.backbone
    labels = torch.tensor([1] * 4 + [0] * 4)
    return Step(model, {"parts": [bb.collate(src), bb.collate(tgt)]}, labels, len(src), len(tgt), 0.0)


def test_mlm_term_is_finite_logged_and_decreases(tiny_bert_dir):
    torch.manual_seed(0)
    model = _model(tiny_bert_dir).train()
    obj = _objective(model)
    assert not obj.terms[0].head.from_checkpoint  # tiny_bert_dir is a BertModel: a new head
    params = [p for p in list(model.parameters()) + list(obj.parameters()) if p.requires_grad]
    assert len({id(p) for p in params}) == len(params)  # the tied decoder is not a second parameter
    opt = torch.optim.AdamW(params, lr=3e-3)
    first, last = [], []
    for i in range(30):
        loss, logs = obj(_step(model))
        assert torch.isfinite(loss)
        assert {"ce", "mlm", "mlm/loss", "mlm/accuracy", "mlm/masked"} <= set(logs)
        assert logs["mlm"] == pytest.approx(logs["mlm/loss"])  # default weight 1 (lambda = 0.5)
        assert float(loss.detach()) == pytest.approx(logs["ce"] + logs["mlm"], rel=1e-5)
        (first if i < 5 else last).append(logs["mlm/loss"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    vocab = model.backbone.tokenizer.vocab_size
    assert sum(first) / 5 > 9.5 and abs(first[0] - torch.log(torch.tensor(float(vocab))).item()) < 1.0
    assert sum(last[-5:]) / 5 < sum(first) / 5 - 2.0, (first, last[-5:])


def test_weight_scales_the_mlm_term(tiny_bert_dir):
    model = _model(tiny_bert_dir).eval()
    torch.manual_seed(3)
    _, logs = _objective(model, "mlm:0.25")(_step(model))
    assert logs["mlm"] == pytest.approx(0.25 * logs["mlm/loss"], rel=1e-6)


def test_decoder_is_tied_to_the_input_embeddings(tiny_bert_dir):
    model = _model(tiny_bert_dir)
    head = _objective(model).terms[0].head
    emb = model.backbone.encoder.get_input_embeddings().weight
    assert head.decoder_weight.data_ptr() == emb.data_ptr()
    assert all(p.data_ptr() != emb.data_ptr() for p in head.parameters())
    logits = head(torch.randn(3, emb.shape[1]))
    logits.sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0  # the decoder trains the embeddings


def test_only_masked_positions_are_scored(tiny_bert_dir):
    model = _model(tiny_bert_dir).eval()
    term = _objective(model).terms[0]
    seen = []
    term.head.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    step = _step(model)
    torch.manual_seed(1)
    out = term(step)
    masked = int(out.logs["masked"])
    tokens = int(step.target_inputs["attention_mask"].sum())
    assert seen == [torch.Size([masked, model.backbone.hidden_size])]
    assert 0 < masked < tokens  # a fraction, not every position
    # the chosen positions never include [CLS]/[SEP]/[PAD]
    coll = term.collator
    torch.manual_seed(1)
    ids, mask = step.target_inputs["input_ids"], step.target_inputs["attention_mask"]
    _, labels = mask_tokens(coll, ids, mask)
    special = torch.isin(ids, torch.tensor(coll.tokenizer.all_special_ids)) | (mask == 0)
    assert int((labels != -100).sum()) == masked
    assert bool((labels[special] == -100).all())


def test_masking_rates_follow_bert(tiny_bert_dir):
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    coll = masking_collator(tok, "--objective mlm", "tiny")
    ids = torch.randint(1000, 20000, (200, 100))
    torch.manual_seed(0)
    masked, labels = mask_tokens(coll, ids)
    chosen = labels != -100
    assert 0.14 < chosen.float().mean() < 0.16
    to_mask = (masked == tok.mask_token_id) & chosen
    kept = (masked == ids) & chosen
    assert 0.78 < to_mask.sum() / chosen.sum() < 0.82
    assert 0.08 < kept.sum() / chosen.sum() < 0.12
    assert bool((labels[chosen] == ids[chosen]).all()) and bool((masked[~chosen] == ids[~chosen]).all())


def test_checkpoint_head_is_used_when_present(tiny_bert_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(5)
    mlm = BertForMaskedLM(cfg)
    with torch.no_grad():
        mlm.cls.predictions.bias.normal_()
    mlm.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    head = _objective(_model(str(tmp_path))).terms[0].head
    assert head.from_checkpoint
    assert torch.equal(head.bias, mlm.cls.predictions.bias)
    assert torch.equal(head.dense.weight, mlm.cls.predictions.transform.dense.weight)
    assert torch.equal(head.layer_norm.weight, mlm.cls.predictions.transform.LayerNorm.weight)


def test_frozen_tuning_is_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError) as e:
        objectives.check("mlm", "frozen", has_target=True)
    msg = str(e.value)
    assert msg == "--objective mlm trains the encoder on raw inputs; use --tuning partial or full"
    with pytest.raises(ValueError, match="--objective mlm needs --target_file"):
        objectives.check("mlm", "full", has_target=False)


def test_frozen_tuning_is_refused_by_the_recipe(tmp_path, capsys):
    from tltext.experiment import main

    src = write_jsonl(tmp_path / "s.jsonl", reviews(4, 1))
    rc = main("text", ["--train_file", src, "--target_file", src, "--objective", "mlm", "--tuning", "frozen",
                       "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "error: --objective mlm trains the encoder on raw inputs; use --tuning partial or full"


def test_tokenizer_without_mask_token_is_a_one_line_error(tiny_bert_dir):
    model = _model(tiny_bert_dir)
    model.backbone.tokenizer.mask_token = None
    with pytest.raises(ValueError) as e:
        _objective(model)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--objective mlm: the tokenizer of ")
    assert tiny_bert_dir in msg and "no mask token" in msg


def test_a_udalm_step_runs_two_encoder_passes_not_three(tiny_bert_dir):
    """CE needs only the source features: the unmasked target batch is never encoded
    (Step encodes each part on first use); the masked target is the second pass."""
    model = _model(tiny_bert_dir).train()
    obj = _objective(model)
    calls = []
    model.backbone.encoder.register_forward_hook(lambda m, i, o: calls.append(o.last_hidden_state.shape[0]))
    loss, _ = obj(_step(model))
    loss.backward()
    assert calls == [8, len(TARGET)]
