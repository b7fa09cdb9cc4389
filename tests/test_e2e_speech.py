"""End-to-end speech runs on real FSDD clips (tiny wav2vec2 preset, 1 epoch, a few
clips per run via row filters): every objective, frozen (cached) and partial
tuning, the saved model's reload with the Auto class, two-stage adaptation from a
trained model dir, and --freeze_feature_encoder."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

import tltext  # noqa: F401 - registers the tltext model type with the Auto classes
from tltext.backbones.speech import SpeechBackbone
from tltext.experiment import parse_and_run

from helpers import run_and_capture

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]  # see conftest.py

MAX_S = 0.3  # crop: some test clips are longer (centre-cropped), some shorter
TRAIN = "speaker=george;index=5,6,7,8"  # 40 clips (4 held out for validation)
TEST = "speaker=theo;index=0"  # 10 clips, one per digit
TARGET = "speaker=theo;index=5,6"  # 20 unlabelled clips
RESULT_KEYS = {"modality", "objective", "tuning", "base_model", "selection", "best_epoch", "label_names",
               "num_examples", "validation", "test", "timing", "history", "args", "warnings"}




@pytest.fixture(scope="module")
def manifest(data_dir):
    return str(data_dir / "fsdd" / "manifest.csv")


def _args(manifest, out, objective="erm", tuning="full", model=("--model_config", "tiny"), target=True, *extra):
    a = [*model, "--train_file", manifest, "--train_filter", TRAIN, "--test_file", manifest,
         "--test_filter", TEST, "--audio_column", "path", "--label_column", "digit",
         "--max_duration_seconds", str(MAX_S), "--tuning", tuning, "--objective", objective,
         "--output_dir", str(out), "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
         "--learning_rate", "1e-3", "--seed", "3", "--disable_tqdm", "--report", "False",
         "--cache_dir", str(out.parent / "cache")]
    if target:
        a += ["--target_file", manifest, "--target_filter", TARGET]
    return a + list(extra)


def _encoder_weights(model_dir):
    """Encoder tensors of a saved tltext model or a plain wav2vec2 folder, by encoder key."""
    sd = load_file(str(model_dir / "model.safetensors"))
    prefix = "backbone.encoder."
    if any(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def _same(a, b, prefix):
    keys = [k for k in a if k.startswith(prefix)]
    assert keys, prefix
    return all(torch.equal(a[k], b[k]) for k in keys)


@pytest.mark.parametrize("objective", ["erm", "dann", "mmd", "prototypes"])
def test_objective_end_to_end_and_reload(objective, manifest, tmp_path, monkeypatch):
    out = tmp_path / "run"
    extra = ["--n_way", "5", "--k_shot", "1", "--n_query", "1", "--episodes_per_epoch", "3"] if objective == "prototypes" else []
    res, seen = run_and_capture(monkeypatch, "speech", _args(manifest, out, objective, "full", ("--model_config", "tiny"),
                                                    objective in ("dann", "mmd"), *extra))
    saved = json.loads((out / "results.json").read_text())
    assert RESULT_KEYS <= set(saved)
    assert saved["modality"] == "speech" and saved["objective"] == objective and saved["tuning"] == "full"
    assert saved["label_names"] == [str(i) for i in range(10)]
    n = saved["num_examples"]
    assert (n["train"], n["validation"], n["test"]) == (36, 4, 10)
    assert n.get("target") == (20 if objective in ("dann", "mmd") else None)
    assert saved["args"]["max_duration_seconds"] == MAX_S and saved["base_model"] == "tiny"
    assert len(saved["history"]) == 1 and saved["timing"]["train_seconds"] > 0
    assert saved["test"]["accuracy"] == res["test"]["accuracy"]
    h = saved["history"][0]
    if objective == "dann":
        assert 0.0 <= h["dann/disc_acc"] <= 1.0 and h["dann"] > 0
    if objective == "mmd":
        assert np.isfinite(h["mmd"])
    if objective == "prototypes":
        assert 0.0 <= h["prototypes/episode_acc"] <= 1.0

    # OUT/model reloads with the Auto class and gives the run's own test logits
    model = AutoModelForAudioClassification.from_pretrained(out / "model").eval()
    assert type(model).__name__ == "TltextModel" and model.main_input_name == "input_values"
    assert model.config.tltext["objective"] == objective and model.backbone.max_duration_seconds == MAX_S
    waves = seen["inputs"]
    with torch.no_grad():
        logits = model(**model.backbone.collate(waves)).logits
    assert torch.allclose(logits, seen["logits"], atol=1e-4), (logits, seen["logits"])
    acc = float(np.mean(logits.argmax(-1).numpy() == np.asarray(seen["labels"])))
    assert acc == pytest.approx(saved["test"]["accuracy"])
    # plain transformers preprocessing agrees on the clips that need no crop
    short = [i for i, w in enumerate(waves) if len(w) <= MAX_S * 16000]
    assert 0 < len(short) < len(waves)  # both paths (cropped, not cropped) were exercised above
    fe = AutoFeatureExtractor.from_pretrained(out / "model")
    batch = fe([waves[i] for i in short], sampling_rate=16000, padding=True, return_tensors="pt")
    with torch.no_grad():
        plain = model(**batch).logits
    assert torch.allclose(plain, seen["logits"][short], atol=1e-4)


def test_frozen_dann_uses_the_embedding_cache(manifest, tmp_path):
    r1 = parse_and_run("speech", _args(manifest, tmp_path / "a", "dann", "frozen", ("--model_config", "tiny", "--allow_random_weights")))
    # one encoding per file: the training file (train + its held-out validation rows), test, target
    assert r1["timing"]["cache_misses"] == 3 and r1["timing"]["cache_hits"] == 1
    keys = load_file(str(tmp_path / "a" / "model" / "model.safetensors")).keys()
    assert any(k.startswith("adapter.") for k in keys) and not any("discriminator" in k for k in keys)
    # same --seed, same preset weights: the second run (another head lr) reads every split from the cache
    r2 = parse_and_run("speech", _args(manifest, tmp_path / "b", "dann", "frozen", ("--model_config", "tiny", "--allow_random_weights"), True,
                                       "--learning_rate", "3e-3"))
    assert r2["timing"]["cache_hits"] == 4 and r2["timing"]["cache_misses"] == 0
    a, b = _encoder_weights(tmp_path / "a" / "model"), _encoder_weights(tmp_path / "b" / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)  # frozen: the encoder never moved


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """A plain Hugging Face wav2vec2 folder (tiny preset weights + feature extractor)."""
    d = tmp_path_factory.mktemp("w2v2")
    torch.manual_seed(0)
    bb = SpeechBackbone.from_pretrained("", model_config="tiny")
    bb.encoder.save_pretrained(d)
    bb.feature_extractor.save_pretrained(d)
    return d


def test_two_stage_and_freeze_feature_encoder(manifest, pretrained_dir, tmp_path):
    # stage 1: full tuning of a "pretrained" checkpoint with the CNN kept frozen
    s1 = tmp_path / "stage1"
    r1 = parse_and_run("speech", _args(manifest, s1, "erm", "full", ("--model_name_or_path", str(pretrained_dir)),
                                       False, "--freeze_feature_encoder"))
    w0, w1 = _encoder_weights(pretrained_dir), _encoder_weights(s1 / "model")
    assert _same(w0, w1, "feature_extractor.")  # the CNN stayed out of training ...
    assert not _same(w0, w1, "encoder.layers.0.") and not _same(w0, w1, "feature_projection.")  # ... the rest trained
    assert json.loads((s1 / "model" / "config.json").read_text())["backbone"]["freeze_feature_encoder"] is True
    assert r1["base_model"] == str(pretrained_dir)
    # speech backbones start a trainable encoder's head from the linear probe (Backbone.lp_ft_head), at the
    # encoder's rate, under full and partial tuning, whatever the objective (text: a random head / adapter)
    tr1 = r1["training"]
    assert tr1["head_init"].startswith("linear probe") and tr1["head_learning_rate"] == tr1["learning_rate"]

    # stage 2a: adapt the stage-1 model dir to the target speaker, partial tuning (top 2 groups) + DANN
    s2 = tmp_path / "stage2"
    r2 = parse_and_run("speech", _args(manifest, s2, "dann", "partial", ("--model_name_or_path", str(s1 / "model")),
                                       True, "--unfreeze_top_k", "2", "--speed_perturbation", "0.9", "1.1",
                                       "--noise_snr_db", "20", "30", "--mask_time_prob", "0.05"))
    assert r2["base_model"] == str(s1 / "model") and r2["num_examples"]["target"] == 20
    assert r2["training"]["head_init"].startswith("linear probe") and r2["training"]["adapter_dim"] == 0
    # this stage's augmentation flags reach the loaded backbone and are recorded
    bb = json.loads((s2 / "model" / "config.json").read_text())["backbone"]
    assert bb["speed_perturbation"] == [0.9, 1.1] and bb["noise_snr_db"] == [20.0, 30.0]
    assert bb["encoder"]["mask_time_prob"] == 0.05
    assert r2["args"]["speed_perturbation"] == [0.9, 1.1] and r2["args"]["mask_time_prob"] == 0.05
    # the backbone reads --mask_time_prob (SpecAugment) whatever the objective: no "ignored" warning
    assert not [w for w in r2["warnings"] if "mask_time_prob" in w], r2["warnings"]
    w2 = _encoder_weights(s2 / "model")
    for frozen in ("feature_extractor.", "feature_projection.", "encoder.pos_conv_embed.", "encoder.layers.0."):
        assert _same(w1, w2, frozen), frozen
    assert not _same(w1, w2, "encoder.layers.1.")  # layer.1 + final trained

    # stage 2b: full tuning of a stage-1 model that was trained with a trainable CNN;
    # --freeze_feature_encoder given at stage 2 applies to the loaded backbone
    s1b = tmp_path / "stage1b"
    parse_and_run("speech", _args(manifest, s1b, "erm", "full", ("--model_name_or_path", str(pretrained_dir)), False))
    w1b = _encoder_weights(s1b / "model")
    assert not _same(w0, w1b, "feature_extractor.")  # without the flag the CNN trains
    s3 = tmp_path / "stage2b"
    parse_and_run("speech", _args(manifest, s3, "mmd", "full", ("--model_name_or_path", str(s1b / "model")),
                                  True, "--freeze_feature_encoder"))
    w3 = _encoder_weights(s3 / "model")
    assert _same(w1b, w3, "feature_extractor.") and not _same(w1b, w3, "encoder.layers.0.")


def test_cross_corpus_label_column_and_rename(manifest, data_dir, tmp_path, capsys):
    """FSDD (8 kHz, column `digit`: 0..9) -> Speech Commands (16 kHz, column `label`:
    zero..nine): --label_column lists both names, --label_rename maps the words."""
    sc = str(data_dir / "speech_commands_mini" / "manifest.csv")
    words = "zero,one,two,three,four,five,six,seven,eight,nine"
    rename = ",".join(f"{w}={i}" for i, w in enumerate(words.split(",")))
    argv = _args(manifest, tmp_path / "x", "dann", "frozen", ("--model_config", "tiny", "--allow_random_weights"), False,  # later flags win:
                 "--label_column", "digit,label", "--label_rename", rename,
                 "--test_file", sc, "--test_filter", f"label={words};official_split=test",
                 "--target_file", sc, "--target_filter", f"label={words}")
    res = parse_and_run("speech", argv)
    assert res["label_names"] == [str(i) for i in range(10)]
    assert res["num_examples"]["test"] == 22 and res["num_examples"]["target"] == 100
    assert 0.0 <= res["test"]["accuracy"] <= 1.0
    # the summary names each split's filter and the unlabelled target set, and the rate that ran
    out = capsys.readouterr().out
    assert f"target (unlabelled): 100 examples from {sc} [label={words}]" in out
    assert f"({sc} [label={words};official_split=test])" in out and f"[{TRAIN}]" in out
    assert "learning rate: 0.001, head 0.001" in out  # given with --learning_rate: not called a default
    # without the rename the words are labels the model never saw: a one-line error naming one
    from tltext.experiment import main

    rc = main("speech", [x for x in argv if x not in ("--label_rename", rename)] + ["--overwrite_output_dir"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "speech_commands_mini/manifest.csv" in err and "was not seen in training" in err and "'eight'" in err


def test_random_weights_at_the_default_fine_tuning_rate_warn(manifest, tmp_path):
    argv = _args(manifest, tmp_path / "a", "erm", "full", ("--model_config", "tiny"), False)
    i = argv.index("--learning_rate")
    res = parse_and_run("speech", argv[:i] + argv[i + 2:])
    assert res["training"]["learning_rate"] == 5e-5
    assert any("no pretrained weights were loaded and no --learning_rate" in w for w in res["warnings"])
    res = parse_and_run("speech", _args(manifest, tmp_path / "b", "erm", "full", ("--model_config", "tiny"), False))
    assert not any("no --learning_rate" in w for w in res["warnings"])  # a rate given: nothing to say
