import pytest
import torch

from tltext.backbones import TextBackbone, pool


def test_mean_pooling_ignores_padding():
    h = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    z = pool(h, mask, "mean")
    assert torch.allclose(z[0], h[0, :3].mean(0))
    assert torch.allclose(z[1], h[1].mean(0))
    assert torch.allclose(pool(h, mask, "cls"), h[:, 0])
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool(h, mask, "max")


def test_text_embedding_same_alone_and_padded(tiny_bert_dir):
    bb = TextBackbone.from_pretrained(tiny_bert_dir).eval()
    short, long = "good", "a much longer sentence that forces padding of the short one"
    with torch.no_grad():
        alone = bb(**bb.collate([short]))
        batch = bb(**bb.collate([short, long]))
    assert batch.shape == (2, bb.hidden_size)
    assert torch.allclose(alone[0], batch[0], atol=1e-5)


def test_layer_groups_cover_every_parameter_once(minilm_path):
    bb = TextBackbone.from_pretrained(minilm_path)
    groups = bb.layer_groups()
    assert [g.name for g in groups] == ["embeddings"] + [f"layer.{i}" for i in range(6)]
    ids = [id(p) for g in groups for p in g.params]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in bb.parameters()}
    assert bb.hidden_size == 384
    # pooler removed: mean pooling never uses it, so DDP never sees an unused parameter
    assert getattr(bb.encoder, "pooler", None) is None


def test_config_round_trip_same_embedding(tiny_bert_dir, tmp_path):
    bb = TextBackbone.from_pretrained(tiny_bert_dir, pooling="cls", max_length=16).eval()
    bb.save_preprocessor(str(tmp_path))
    bb2 = TextBackbone.from_config_dict(bb.config_dict(), preprocessor_dir=str(tmp_path)).eval()
    bb2.load_state_dict(bb.state_dict())
    x = bb.collate(["one sentence", "and another one"])
    with torch.no_grad():
        assert torch.allclose(bb(**x), bb2(**x))
    assert bb2.pooling == "cls" and bb2.max_length == 16


@pytest.mark.parametrize("objective", ["dann", "mmd"])
def test_two_pass_da_step_equals_one_joint_pass(tiny_bert_dir, objective):
    """Text is padding-invariant, so the engine encodes source and target apart
    (each padded to its own length); loss and gradients must match the joint pass."""
    from tltext.modeling import TltextModel
    from tltext.objectives import ObjectiveSet, ObjectiveSetup
    from tltext.training.objective import TrainingModule

    torch.manual_seed(0)
    bb = TextBackbone.from_pretrained(tiny_bert_dir)
    assert bb.padding_invariant
    model = TltextModel.from_backbone(bb, {"neg": 0, "pos": 1}, adapter_dim=8)
    setup = ObjectiveSetup(feature_dim=model.feature_dim, num_classes=2)
    tm = TrainingModule(model, ObjectiveSet(objective, setup)).eval()
    src = ["short", "a rather longer source sentence with many more tokens in it"]
    tgt = ["tiny", "mid length target", "x"]
    labels = torch.tensor([0, 1, -1, -1, -1])
    runs = []
    for inputs in ({"parts": [bb.collate(src), bb.collate(tgt)]}, bb.collate(src + tgt)):
        tm.zero_grad()
        out = tm(inputs, labels, len(src), len(tgt), 0.7)
        out["loss"].backward()
        runs.append((out["loss"].item(), [p.grad.clone() for p in tm.parameters() if p.grad is not None]))
    assert bb.collate(tgt)["input_ids"].shape[1] < bb.collate(src + tgt)["input_ids"].shape[1]
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-5)
    assert len(runs[0][1]) == len(runs[1][1]) > 0
    for g2, g1 in zip(*(r[1] for r in runs)):
        assert torch.allclose(g2, g1, atol=1e-5, rtol=1e-4)


def test_length_grouping_sorts_by_truncated_token_counts(tiny_bert_dir):
    """Batches are grouped by what each text costs once tokenized and truncated (as
    transformers' group_by_length does), not by its number of characters."""
    from tltext.training.predict import item_lengths

    bb = TextBackbone.from_pretrained(tiny_bert_dir, max_length=8)
    texts = ["a " * 30, "supercalifragilistic", "ok", ""]
    lengths = item_lengths(bb, texts)
    ids = [bb.tokenizer(t, truncation=True, max_length=8)["input_ids"] for t in texts]
    assert lengths == [len(i) for i in ids]
    assert lengths[0] == 8 and lengths[2] < lengths[1]  # 30 words cut to 8 tokens; one long word > "ok"
    assert item_lengths(bb, torch.zeros(3, 4)) == [0, 0, 0]  # cached embeddings


def test_group_by_length_false_draws_uniformly_random_batches(tiny_bert_dir, tmp_path, one_thread):
    """--group_by_length (default) batches similar lengths together; False gives each epoch a
    uniformly random permutation (the Trainer's default order), and the training differs."""
    import json

    import numpy as np

    from helpers import reviews, write_jsonl
    from tltext.experiment import main
    from tltext.training.engine import train_sampler

    lengths = list(range(1, 201))
    grouped = list(train_sampler(False, lengths, 200, 8, 0, True))
    plain = list(train_sampler(False, lengths, 200, 8, 0, False))
    assert sorted(grouped) == sorted(plain) == list(range(200))

    def spread(order):  # mean length range inside a batch of 8
        return float(np.mean([np.ptp([lengths[i] for i in order[k:k + 8]]) for k in range(0, 200, 8)]))

    assert spread(grouped) < 10 and spread(plain) > 60
    assert list(train_sampler(True, lengths, 200, 8, 0, True)) == list(train_sampler(True, None, 200, 8, 0, False))

    train = write_jsonl(tmp_path / "train.jsonl", reviews(24, 1))
    losses = {}
    for flag in ("True", "False"):
        out = tmp_path / flag
        assert main("text", ["--model_name_or_path", tiny_bert_dir, "--train_file", train, "--output_dir", str(out),
                             "--tuning", "full", "--num_train_epochs", "1", "--per_device_train_batch_size", "4",
                             "--group_by_length", flag, "--disable_tqdm", "--report", "False", "--save_model", "False"]) == 0
        res = json.loads((out / "results.json").read_text())
        assert res["args"]["group_by_length"] is (flag == "True")
        losses[flag] = res["history"][0]["train_loss"]
    assert losses["True"] != losses["False"]


def test_length_chunks_splits_a_spread_batch_into_homogeneous_parts():
    from tltext.backbones.base import length_chunks

    lengths = torch.tensor([5, 60, 6, 30, 5, 31, 61, 7, 29, 5])
    parts = length_chunks(lengths)
    assert sorted(torch.cat(parts).tolist()) == list(range(10))  # every row exactly once
    assert len(parts) == 3
    assert [sorted(lengths[p].tolist()) for p in parts] == [[60, 61], [29, 30, 31], [5, 5, 5, 6, 7]]
    padded = sum(int(lengths[p].max()) * len(p) for p in parts)
    assert padded < 0.5 * 61 * 10
    assert [p.tolist() for p in length_chunks(torch.tensor([10, 11, 12, 9]))] == [[0, 1, 2, 3]]
    assert len(length_chunks(lengths, max_chunks=2)) == 2
    with pytest.raises(ValueError, match="max_chunks must be >= 1"):
        length_chunks(lengths, max_chunks=0)


def test_spread_text_batch_runs_in_cropped_passes_with_the_same_embeddings_and_gradients(tiny_bert_dir):
    """A batch not grouped by length (a SupCon or episode batch) is encoded in several passes,
    each cropped to its own longest text; output and gradients equal one padded pass."""
    torch.manual_seed(0)
    bb = TextBackbone.from_pretrained(tiny_bert_dir).eval()
    long = "a rather long review that goes on and on about the product and its many small flaws " * 2
    texts = ["ok", long, "fine", "short one", long + " indeed", "meh", "not bad at all", "x"]
    inputs = bb.collate(texts)
    calls = []
    hook = bb.encoder.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["input_ids"].shape), with_kwargs=True)
    results = []
    for run in (lambda: bb(**inputs), lambda: bb._forward(dict(inputs), inputs["attention_mask"])):
        bb.zero_grad()
        z = run()
        (z * torch.linspace(-1, 1, z.shape[1])).sum().backward()
        results.append((z.detach(), [p.grad.clone() for p in bb.parameters() if p.grad is not None]))
    hook.remove()
    assert len(calls) >= 3 and calls[-1] == inputs["input_ids"].shape  # chunked passes, then the one padded pass
    assert max(s[1] for s in calls[:-1]) == inputs["input_ids"].shape[1]
    assert min(s[1] for s in calls[:-1]) < inputs["input_ids"].shape[1] // 3
    assert sum(s[0] for s in calls[:-1]) == len(texts)
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert len(results[0][1]) == len(results[1][1]) > 0
    for g1, g2 in zip(results[0][1], results[1][1]):
        assert torch.allclose(g1, g2, atol=1e-5, rtol=1e-4)
