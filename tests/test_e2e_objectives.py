"""Every objective x tuning through the one engine on a tiny random BERT."""
import json

import pytest
import torch
from safetensors import safe_open

from tltext.experiment import parse_and_run

from helpers import write_domains


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_domains(tmp_path_factory.mktemp("toy_da"))


def _run(toy, tiny_bert_dir, out, objective, tuning, *extra):
    args = ["--model_name_or_path", tiny_bert_dir, "--train_file", str(toy / "src.jsonl"),
            "--test_file", str(toy / "tgt.jsonl"), "--tuning", tuning, "--unfreeze_top_k", "1",
            "--objective", objective, "--output_dir", str(out), "--num_train_epochs", "2",
            "--per_device_train_batch_size", "8", "--disable_tqdm", "--report", "False",
            "--cache_dir", str(out.parent / "cache")]
    if objective in ("dann", "mmd"):
        args += ["--target_file", str(toy / "tgt.jsonl")]
    if objective == "prototypes":
        args += ["--n_way", "2", "--k_shot", "3", "--n_query", "3", "--episodes_per_epoch", "4"]
    return parse_and_run("text", args + list(extra))


@pytest.mark.parametrize("objective", ["dann", "mmd", "prototypes"])
@pytest.mark.parametrize("tuning", ["frozen", "partial", "full"])
def test_objective_x_tuning(objective, tuning, toy, tiny_bert_dir, tmp_path):
    out = tmp_path / "run"
    res = _run(toy, tiny_bert_dir, out, objective, tuning)
    assert res["objective"] == objective and res["tuning"] == tuning
    trains = not (tuning == "frozen" and objective == "prototypes")  # frozen prototypes: nearest centroid, no steps
    assert len(res["history"]) == (2 if trains else 0)
    h = res["history"][-1] if trains else {"prototypes/episode_acc": 0.0}
    if objective == "dann":
        assert 0.0 <= h["dann/disc_acc"] <= 1.0 and "dann" in h
        # lambda_max: 1 over frozen embeddings, 0.1 when the encoder trains (the registry's default)
        assert 0 < h["dann/coeff"] <= (1.0 if tuning == "frozen" else 0.1)
    if objective == "mmd":
        assert "mmd" in h and h["mmd/coeff"] == (1.0 if tuning == "frozen" else 0.1)
    if objective == "prototypes":
        assert 0.0 <= h["prototypes/episode_acc"] <= 1.0
    # training-only modules never reach the exported model
    with safe_open(str(out / "model" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if "loss_module" in k or "discriminator" in k]
    assert any(k.startswith("classifier.") for k in keys)
    if tuning == "frozen" and objective in ("dann", "mmd"):
        assert any(k.startswith("adapter.") for k in keys)  # the bottleneck adapter over cached features
    if tuning == "frozen" and objective == "prototypes":  # no adapter: the cosine nearest centroid, nothing trains
        assert not any(k.startswith("adapter.") for k in keys) and res["timing"]["train_steps"] == 0


def test_prototype_head_is_nearest_prototype(toy, tiny_bert_dir, tmp_path):
    import tltext  # noqa: F401  (registers the Auto classes)
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "proto"
    res = _run(toy, tiny_bert_dir, out, "prototypes", "partial")
    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    rows = [json.loads(l) for l in open(toy / "src.jsonl")]
    texts = [r["text"] for r in rows]
    with torch.no_grad():
        feats = model.features(model.encode(**model.backbone.collate(texts)))
        logits = model(**model.backbone.collate(texts)).logits
    # the saved head is the cosine nearest-centroid head: W_k = s c_k/||c_k||, b = 0, so
    # logits = s ||f|| cos(f, c_k) and the argmax is the most cosine-similar centroid
    w = model.classifier.weight
    assert torch.all(model.classifier.bias == 0)
    assert torch.allclose(w.norm(dim=1), w.norm(dim=1)[:1].expand(len(w)), atol=1e-4)
    cos = torch.nn.functional.normalize(feats, dim=1) @ torch.nn.functional.normalize(w, dim=1).t()
    assert torch.allclose(logits, w.norm(dim=1) * feats.norm(dim=1, keepdim=True) * cos, atol=1e-3)
    assert torch.equal(logits.argmax(-1), cos.argmax(-1))
    assert res["test"]["accuracy"] >= 0.0


def test_compare_source_only_and_oracle_label(toy, tiny_bert_dir, tmp_path):
    res = _run(toy, tiny_bert_dir, tmp_path / "cmp", "dann", "frozen", "--compare_source_only")
    assert set(res["source_only"]) >= {"validation", "test"}
    assert "ORACLE" not in res["selection"] and res["oracle"] is False
    saved = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert saved["source_only"]["test"]["accuracy"] == res["source_only"]["test"]["accuracy"]
    # the guard decides with the label-free criterion (source validation here), never the test labels
    g = saved["negative_transfer_guard"]
    assert g["criterion"] == "source_validation" and g["kept"] in ("adapted", "source_only")
    assert g["kept"] == ("adapted" if g["adapted"] > g["source_only"] else "source_only")
    kept = res["source_only"] if g["kept"] == "source_only" else res
    assert g[g["kept"]] == pytest.approx(kept["validation"]["accuracy"])
    snd = _run(toy, tiny_bert_dir, tmp_path / "cmp_snd", "mmd", "frozen", "--compare_source_only", "--selection", "snd")
    assert snd["negative_transfer_guard"]["criterion"] == "snd"
    o = _run(toy, tiny_bert_dir, tmp_path / "oracle", "mmd", "frozen", "--oracle_selection")
    assert o["oracle"] is True and o["selection"].startswith("ORACLE")
    im = _run(toy, tiny_bert_dir, tmp_path / "im", "mmd", "frozen", "--selection", "information_maximisation")
    assert "target_im" in im["history"][0] and "information maximisation" in im["selection"]


def test_dann_without_target_is_a_clear_error(toy, tiny_bert_dir, tmp_path):
    from tltext.experiment import main

    rc = main("text", ["--model_name_or_path", tiny_bert_dir, "--train_file", str(toy / "src.jsonl"),
                       "--objective", "dann", "--output_dir", str(tmp_path / "x")])
    assert rc == 2
