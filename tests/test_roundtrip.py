"""A trained OUT/model reloads anywhere: the Auto class of its modality and
``pipeline`` give the logits tltext itself computed on the test split during
the run (no trust_remote_code, weights from safetensors)."""
import os

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from transformers import (AutoModelForAudioClassification, AutoModelForImageClassification,
                          AutoModelForSequenceClassification, pipeline)

import tltext  # noqa: F401 - registers the tltext model type

from helpers import run_and_capture, write_jsonl

COMMON = ["--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--disable_tqdm", "--report", "False"]


def _pipeline_logits(pipe, inputs, names, **kw):
    """Raw logits [N, C] from a pipeline (function_to_apply='none'), columns in label-id order."""
    outs = pipe(inputs, top_k=len(names), function_to_apply="none", **kw)
    return torch.tensor([[{d["label"]: d["score"] for d in o}[n] for n in names] for o in outs])


def _check_saved(model_dir, auto_cls, main_input):
    files = os.listdir(model_dir)
    assert "model.safetensors" in files and not [f for f in files if f.endswith((".bin", ".pt", ".pth"))]
    model = auto_cls.from_pretrained(model_dir)
    assert type(model).__name__ == "TltextModel" and model.main_input_name == main_input
    card = open(os.path.join(model_dir, "README.md")).read()
    assert card.startswith("---\nlibrary_name: tltext")
    return model


def test_text_roundtrip(monkeypatch, tiny_bert_dir, tmp_path):
    rows = [{"text": t, "label": l} for t, l in [
        ("great product works well", "positive"), ("love it very good", "positive"), ("excellent and great", "positive"),
        ("terrible broke fast", "negative"), ("awful do not buy", "negative"), ("bad and broken", "negative")]] * 3
    long = {"text": " ".join(["good"] * 40 + ["awful"] * 40), "label": "negative"}  # truncated at 16 tokens
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", rows[:6] + [long])
    out = tmp_path / "out"
    res, seen = run_and_capture(monkeypatch, "text", [
        "--model_name_or_path", tiny_bert_dir, "--train_file", str(tmp_path / "train.jsonl"), "--test_file",
        str(tmp_path / "test.jsonl"), "--tuning", "full", "--learning_rate", "1e-3", "--max_seq_length", "16",
        "--output_dir", str(out), *COMMON])
    model = _check_saved(out / "model", AutoModelForSequenceClassification, "input_ids")
    assert model.config.id2label == {0: "negative", 1: "positive"}
    pipe = pipeline("text-classification", model=str(out / "model"))
    got = _pipeline_logits(pipe, seen["inputs"], seen["names"], truncation=True, max_length=16)
    assert torch.allclose(got, seen["logits"], atol=1e-4), (got, seen["logits"])
    labels = [o["label"] for o in pipe(seen["inputs"], truncation=True, max_length=16)]
    acc = np.mean([seen["names"].index(l) == y for l, y in zip(labels, seen["labels"])])
    assert acc == res["test"]["accuracy"]


def test_speech_roundtrip(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):  # tones of two pitches, 0.2-0.35 s at 16 kHz
        label, hz = ("low", 300) if i % 2 else ("high", 1500)
        n = int(16000 * (0.2 + 0.05 * (i % 4)))
        x = 0.5 * np.sin(2 * np.pi * hz * np.arange(n) / 16000) + 0.05 * rng.standard_normal(n)
        sf.write(tmp_path / f"{i}.wav", x.astype(np.float32), 16000)
        rows.append(f"{tmp_path / f'{i}.wav'},{label}")
    (tmp_path / "m.csv").write_text("audio,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    res, seen = run_and_capture(monkeypatch, "speech", [
        "--model_config", "tiny", "--allow_random_weights", "--train_file", str(tmp_path / "m.csv"), "--test_file", str(tmp_path / "m.csv"),
        "--target_file", str(tmp_path / "m.csv"), "--objective", "mmd", "--tuning", "frozen",
        "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), *COMMON])
    model = _check_saved(out / "model", AutoModelForAudioClassification, "input_values")
    assert model.config.tltext["objective"] == "mmd" and model.config.adapter_dim == 256
    pipe = pipeline("audio-classification", model=str(out / "model"))
    assert type(pipe.feature_extractor).__name__ == "Wav2Vec2FeatureExtractor"
    assert pipe.feature_extractor.sampling_rate == 16000 and pipe.feature_extractor.return_attention_mask
    waves = [np.asarray(x, dtype=np.float32) for x in seen["inputs"]]
    got = _pipeline_logits(pipe, waves, seen["names"])
    assert torch.allclose(got, seen["logits"], atol=1e-4), (got, seen["logits"])
    card = (out / "model" / "README.md").read_text()
    assert "pipeline_tag: audio-classification" in card and "base_model" not in card.split("---")[1]


def test_image_roundtrip(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    for c, channel in (("red", 0), ("blue", 2)):
        os.makedirs(tmp_path / "data" / c)
        for i in range(6):  # varied sizes: crops with even and odd margins
            a = rng.integers(0, 80, (32 + 4 * (i % 2), 32 + 7 * (i % 3), 3), dtype=np.uint8)
            a[..., channel] += 150
            Image.fromarray(a).save(tmp_path / "data" / c / f"{i}.png")
    out = tmp_path / "out"
    res, seen = run_and_capture(monkeypatch, "image", [
        "--model_name_or_path", "resnet18", "--image_size", "32", "--train_dir", str(tmp_path / "data"),
        "--test_dir", str(tmp_path / "data"), "--tuning", "full", "--learning_rate", "1e-3",
        "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), *COMMON])
    _check_saved(out / "model", AutoModelForImageClassification, "pixel_values")
    pipe = pipeline("image-classification", model=str(out / "model"))
    assert type(pipe.image_processor).__name__ == "TltextImageProcessor"
    got = _pipeline_logits(pipe, seen["inputs"], seen["names"])
    assert torch.allclose(got, seen["logits"], atol=1e-4), (got, seen["logits"])
    labels = [o[0]["label"] for o in pipe(seen["inputs"], top_k=1)]
    assert np.mean([seen["names"].index(l) == y for l, y in zip(labels, seen["labels"])]) == res["test"]["accuracy"]
