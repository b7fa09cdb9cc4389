"""wav2vec 2.0 self-supervised pretraining (``--objective wav2vec2``, recipes/audio_pretraining.py):
the loss equals transformers' Wav2Vec2ForPreTraining, trains through the one engine on real
FSDD clips, its model loads in the classification recipe, bad clips are skipped or refused."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from tltext.backbones.speech import SpeechBackbone
from tltext.modeling import TltextModel
from tltext.objectives import ObjectiveSet, ObjectiveSetup, Step
from tltext.objectives.wav2vec2_pretraining import gumbel_temperature, time_mask

ROOT = Path(__file__).resolve().parents[1]
SMALL_CODEBOOK = ["--num_codevectors_per_group", "16", "--codevector_dim", "32", "--proj_codevector_dim", "32",
                  "--num_negatives", "8", "--mask_time_length", "4"]


def _recipe():
    spec = importlib.util.spec_from_file_location("audio_pretraining", ROOT / "recipes" / "audio_pretraining.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _objective(**opts):
    torch.manual_seed(0)
    bb = SpeechBackbone.from_pretrained("", model_config="tiny")
    model = TltextModel.from_backbone(bb, num_labels=1)
    args = SimpleNamespace(num_codevectors_per_group=16, codevector_dim=32, proj_codevector_dim=32, num_negatives=8,
                           mask_time_length=4, **opts)
    setup = ObjectiveSetup(feature_dim=model.feature_dim, num_classes=1, args=args, model=model, modality="speech")
    return model, ObjectiveSet("wav2vec2", setup)


def _clips(data_dir, n=4):
    import csv

    from tltext.data.audio import load_waveform

    rows = list(csv.DictReader(open(data_dir / "fsdd" / "manifest.csv")))[:n]
    return [load_waveform(str(data_dir / "fsdd" / r["path"]), 16000) for r in rows]


def test_gumbel_schedule_per_update_and_progress_based():
    assert gumbel_temperature(0, 0.0, 2.0, 0.5, 0.999995) == 2.0
    assert gumbel_temperature(1000, 0.0, 2.0, 0.5, 0.999995) == pytest.approx(2.0 * 0.999995 ** 1000)
    assert gumbel_temperature(10**7, 0.0, 2.0, 0.5, 0.999995) == 0.5  # floored at the minimum
    assert gumbel_temperature(5, 0.5, 2.0, 0.5, 0.0) == pytest.approx(1.0)  # 2 * (0.5/2)^0.5
    assert gumbel_temperature(5, 1.0, 2.0, 0.5, 0.0) == pytest.approx(0.5)


def test_time_mask_stays_inside_each_clip_and_skips_short_ones():
    np.random.seed(0)
    lengths = torch.tensor([40, 12, 3])
    m = time_mask(lengths, 40, prob=0.65, span=4)
    assert m.shape == (3, 40)
    assert m[0].sum() >= 4 and m[1].sum() >= 4 and not m[1, 12:].any()
    assert not m[2].any()  # 3 frames cannot hold a span of 4


def test_loss_is_transformers_wav2vec2_for_pretraining(data_dir, one_thread):
    """Same encoder, heads, masks and distractors: L = (L_m + alpha L_d) equals transformers'
    ForPreTraining loss divided by the number of masked frames."""
    from transformers import Wav2Vec2ForPreTraining
    from transformers.models.wav2vec2.modeling_wav2vec2 import _sample_negative_indices

    model, objset = _objective()
    obj = objset.terms[0]
    enc = model.backbone.encoder
    hf = Wav2Vec2ForPreTraining(obj.config)
    hf.wav2vec2 = enc
    for name in ("quantizer", "project_hid", "project_q"):
        getattr(hf, name).load_state_dict(getattr(obj, name).state_dict())
    hf.eval(), obj.eval()
    batch = model.backbone.collate(_clips(data_dir, 2))
    t = int(enc._get_feat_extract_output_lengths(torch.tensor(batch["input_values"].shape[1])))
    lengths = enc._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1))
    np.random.seed(1)
    mask_np = time_mask(lengths, t, 0.65, 4)
    mask = torch.from_numpy(mask_np)
    with torch.no_grad():
        out = enc(batch["input_values"], attention_mask=batch["attention_mask"], mask_time_indices=mask)
        np.random.seed(2)
        ours = obj.loss_terms(out.last_hidden_state, out.extract_features, mask, mask_np)
        np.random.seed(2)
        neg = torch.from_numpy(_sample_negative_indices((2, t), 8, mask_time_indices=mask_np)).long()
        ref = hf(batch["input_values"], attention_mask=batch["attention_mask"], mask_time_indices=mask,
                 sampled_negative_indices=neg)
    n = float(mask.sum())
    assert float(ours["contrastive"]) * n == pytest.approx(float(ref.contrastive_loss), rel=1e-4)
    assert float(ours["perplexity"]) == pytest.approx(float(ref.codevector_perplexity), rel=1e-5)
    ours_total = float(ours["contrastive"] + obj.config.diversity_loss_weight * ours["diversity"])
    assert ours_total * n == pytest.approx(float(ref.loss), rel=1e-4)


def test_gradients_reach_encoder_and_quantizer_not_classifier(data_dir, one_thread):
    model, objset = _objective()
    batch = model.backbone.collate(_clips(data_dir, 3), train=True)
    objset.train(), model.train()
    loss, logs = objset(Step(model, batch, torch.zeros(3, dtype=torch.long), 3, 0, 0.0))
    loss.backward()
    assert torch.isfinite(loss) and "ce" not in logs
    assert {"wav2vec2/contrastive", "wav2vec2/diversity", "wav2vec2/perplexity", "wav2vec2/gumbel_temperature"} <= set(logs)
    assert 1.0 <= logs["wav2vec2/perplexity"] <= 2 * 16
    enc = model.backbone.encoder
    for p in (enc.feature_extractor.conv_layers[0].conv.weight, enc.encoder.layers[-1].feed_forward.output_dense.weight,
              enc.masked_spec_embed, objset.terms[0].quantizer.weight_proj.weight, objset.terms[0].project_q.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert model.classifier.weight.grad is None
    assert int(objset.terms[0].num_updates) == 1


@pytest.mark.parametrize("flag, value, expected", [("mask_time_prob", 0.0, "(0, 1]"), ("num_negatives", 0, "at least 1"),
                                                    ("codevector_dim", 33, "divisible by --num_codevector_groups")])
def test_bad_options_name_the_flag(flag, value, expected):
    with pytest.raises(ValueError) as e:
        _objective_with(**{flag: value})
    assert f"--{flag}" in str(e.value) and expected in str(e.value) and "\n" not in str(e.value)


def _objective_with(**kw):
    torch.manual_seed(0)
    bb = SpeechBackbone.from_pretrained("", model_config="tiny")
    model = TltextModel.from_backbone(bb, num_labels=1)
    setup = ObjectiveSetup(feature_dim=model.feature_dim, num_classes=1, args=SimpleNamespace(**kw), model=model,
                           modality="speech")
    return ObjectiveSet("wav2vec2", setup)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_dir):
    """12 epochs of one 16-clip batch through recipes/audio_pretraining.py (the one engine)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("w2v2") / "run"
    argv = ["--model_config", "tiny", "--train_file", str(data_dir / "fsdd" / "manifest.csv"),
            "--train_filter", "speaker=jackson;split=test;digit=0,1,2,3", "--audio_column", "path", "--label_column", "digit",
            "--max_duration_seconds", "0.8", "--per_device_train_batch_size", "20", "--num_train_epochs", "12",
            "--learning_rate", "3e-3", "--warmup_ratio", "0", "--gumbel_temperature_decay", "0", "--seed", "0",
            "--output_dir", str(out), "--disable_tqdm", *SMALL_CODEBOOK]
    assert _recipe().main(argv) == 0
    return out


def test_pretraining_loss_decreases_and_perplexity_is_logged(pretrained):
    res = json.loads((pretrained / "results.json").read_text())
    hist = res["history"]
    assert len(hist) == 12 and res["objective"] == "wav2vec2"
    losses = [h["train_loss"] for h in hist]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses
    assert all(1.0 <= h["wav2vec2/perplexity"] <= 32 for h in hist)
    temps = [h["wav2vec2/gumbel_temperature"] for h in hist]
    assert temps[0] == pytest.approx(2.0) and temps[-1] < 0.6 and temps == sorted(temps, reverse=True)
    assert res["pretraining_data"] == {"clips": 20, "used": 20, "too_short": 0, "silent": 0}
    assert res["pretraining_config"]["num_negatives"] == 8 and res["pretraining_config"]["quantizer_from_checkpoint"] is False


def test_pretraining_continues_from_its_checkpoint_quantizer_included(pretrained, data_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    argv = ["--model_name_or_path", str(pretrained / "model"), "--train_file", str(data_dir / "fsdd" / "manifest.csv"),
            "--train_filter", "speaker=jackson;split=test;digit=0", "--audio_column", "path", "--max_train_steps", "1",
            "--learning_rate", "1e-12", "--output_dir", str(tmp_path / "more"), "--disable_tqdm", *SMALL_CODEBOOK]
    assert _recipe().main(argv) == 0
    res = json.loads((tmp_path / "more" / "results.json").read_text())
    assert res["pretraining_config"]["quantizer_from_checkpoint"] is True
    before, after = load_file(str(pretrained / "model" / "model.safetensors")), load_file(str(tmp_path / "more" / "model" / "model.safetensors"))
    assert torch.allclose(before["quantizer.codevectors"], after["quantizer.codevectors"], atol=1e-6)
    capsys.readouterr()
    other = ["--model_name_or_path", str(pretrained / "model"), "--train_file", str(data_dir / "fsdd" / "manifest.csv"),
             "--train_filter", "speaker=jackson;split=test;digit=0", "--audio_column", "path", "--max_train_steps", "1",
             "--output_dir", str(tmp_path / "other"), "--disable_tqdm", "--num_codevectors_per_group", "8"]
    assert _recipe().main(other) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # transformers' load report may come before it
    assert last.startswith("error: --model_name_or_path") and "does not fit the codebook flags" in last


def test_saved_model_loads_in_the_classification_recipe(pretrained, tmp_path, data_dir):
    from safetensors.torch import load_file

    from tltext.args import DataArguments, ModelArguments
    from tltext.experiment import build_backbone, parse_and_run

    model_dir = pretrained / "model"
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["Wav2Vec2ForPreTraining"] and cfg["mask_time_prob"] == 0.0  # no SpecAugment downstream
    assert (model_dir / "preprocessor_config.json").exists()
    saved = load_file(str(model_dir / "model.safetensors"))
    assert any(k.startswith("quantizer.") for k in saved)
    bb = build_backbone("speech", ModelArguments(model_name_or_path=str(model_dir)), DataArguments())
    for k, v in bb.encoder.state_dict().items():
        assert torch.equal(v, saved[f"wav2vec2.{k}"]), k
    fresh = SpeechBackbone.from_pretrained("", model_config="tiny")  # pretraining moved the weights
    assert not torch.equal(fresh.encoder.encoder.layers[0].attention.q_proj.weight, bb.encoder.encoder.layers[0].attention.q_proj.weight)
    fsdd = str(data_dir / "fsdd" / "manifest.csv")
    res = parse_and_run("speech", ["--model_name_or_path", str(model_dir), "--train_file", fsdd, "--train_filter",
                                   "speaker=george;split=test", "--audio_column", "path", "--label_column", "digit",
                                   "--max_duration_seconds", "0.8", "--tuning", "partial", "--unfreeze_top_k", "2",
                                   "--max_train_steps", "2", "--per_device_train_batch_size", "16",
                                   "--output_dir", str(tmp_path / "cls"), "--disable_tqdm", "--report", "False"])
    assert res["base_model"] == str(model_dir) and 0.0 <= res["validation"]["accuracy"] <= 1.0


def _manifest(tmp_path, data_dir, clips):
    rows = ["path,digit"]
    for i, x in enumerate(clips):
        sf.write(tmp_path / f"c{i}.wav", x, 16000)
        rows.append(f"c{i}.wav,{i % 10}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    return str(tmp_path / "manifest.csv")


def test_short_and_silent_clips_are_skipped_with_a_count(tmp_path, data_dir, capsys, one_thread):
    real = _clips(data_dir, 4)
    rng = np.random.default_rng(0)
    clips = real + [0.1 * rng.standard_normal(800).astype(np.float32), np.zeros(8000, np.float32)]  # 50 ms, silent 0.5 s
    manifest = _manifest(tmp_path, data_dir, clips)
    argv = ["--model_config", "tiny", "--train_file", manifest, "--audio_column", "path", "--label_column", "digit",
            "--max_train_steps", "1", "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "out"),
            "--disable_tqdm", *SMALL_CODEBOOK]
    assert _recipe().main(argv) == 0
    out = capsys.readouterr().out
    assert "labels: column 'digit'" in out and "ignored" in out
    assert "4 of 6 clips" in out and "skipped 1 shorter than one masked span" in out and "1 silent" in out
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["pretraining_data"] == {"clips": 6, "used": 4, "too_short": 1, "silent": 1}


def test_all_silent_is_a_one_line_error(tmp_path, data_dir, capsys):
    manifest = _manifest(tmp_path, data_dir, [np.zeros(8000, np.float32)] * 3)
    argv = ["--model_config", "tiny", "--train_file", manifest, "--audio_column", "path",
            "--output_dir", str(tmp_path / "out"), "--disable_tqdm", *SMALL_CODEBOOK]
    assert _recipe().main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --train_file")
    assert "no usable clip for pretraining among 3" in err and "3 silent" in err and "--silence_threshold" in err


def test_labelled_objective_is_refused(tmp_path, data_dir, capsys):
    argv = ["--model_config", "tiny", "--objective", "erm", "--train_file", str(data_dir / "fsdd" / "manifest.csv"),
            "--audio_column", "path", "--output_dir", str(tmp_path / "out")]
    assert _recipe().main(argv) == 2
    assert "--objective erm: pretraining uses no labels" in capsys.readouterr().err


def _stage0_pairs():
    """(flag, value) pairs of recipes/configs/fsdd_stage0.args."""
    spec = importlib.util.spec_from_file_location("speech_pretraining", ROOT / "benchmarks" / "speech_pretraining.py")
    sp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sp)
    pairs = list(sp.stage0_values().items())
    assert pairs and all(f.startswith("--") for f, _ in pairs), pairs
    return sp, pairs


def test_stage0_flags_live_in_one_file_read_by_the_benchmark_and_the_shell_config(data_dir, tmp_path):
    sp, pairs = _stage0_pairs()
    recipe = _recipe()
    fsdd = str(data_dir / "fsdd" / "manifest.csv")

    def parsed(argv):
        m, d, t = sp.recipe_parser(recipe).parse_args_into_dataclasses(args=sp.stage0_argv(sp.parse_args(argv), fsdd, tmp_path))
        return lambda name: next(getattr(x, name) for x in (m, d, t) if hasattr(x, name))

    get = parsed(["--stage0_epochs", "3"])
    for flag, value in pairs:  # every file value reaches the recipe's dataclasses
        assert float(get(flag[2:])) == float(value), flag
    assert get("num_train_epochs") == 3
    get = parsed(["--stage0_lr", "1e-3", "--stage0_num_negatives", "20"])  # the benchmark's overrides win
    assert (get("learning_rate"), get("num_negatives")) == (1e-3, 20)
    assert get("mask_time_length") == int(dict(pairs)["--mask_time_length"])

    env = {**os.environ, "LAUNCH": "echo", "DATA": str(data_dir)}
    out = subprocess.run(["bash", "recipes/configs/fsdd_two_stage.sh", str(tmp_path / "run")], cwd=ROOT, env=env,
                         capture_output=True, text=True).stdout  # fails later: echo trains nothing
    line = next(x for x in out.splitlines() if x.startswith("recipes/audio_pretraining.py"))
    assert " ".join(f"{f} {v}" for f, v in pairs) in line, line
    stage1 = [x for x in out.splitlines() if x.startswith("recipes/audio_classification.py") and "--tuning full" in x]
    assert [("--objective erm" in x, "--objective adabn" in x) for x in stage1] == [(True, False), (False, True)]
    assert "--target_file" not in stage1[0]  # stage 1 itself never reads the target speaker
    assert "--target_filter speaker=theo;split=train" in stage1[1] and "--test_filter speaker=theo;split=test" in stage1[1]
    elsewhere = subprocess.run(["bash", str(ROOT / "recipes/configs/fsdd_two_stage.sh"), str(tmp_path / "run")],
                               cwd=tmp_path, env=env, capture_output=True, text=True)
    assert elsewhere.returncode == 2 and "run from the repository root" in elsewhere.stderr, elsewhere.stderr


def test_stage0_settings_record_the_values_used(tmp_path):
    sp, pairs = _stage0_pairs()
    a = sp.parse_args([])  # the defaults are the file's values, so results.json records what ran
    assert (a.stage0_lr, a.stage0_mask_time_length, a.stage0_num_negatives) == (
        float(dict(pairs)["--learning_rate"]), int(dict(pairs)["--mask_time_length"]), int(dict(pairs)["--num_negatives"]))
    stored = json.loads((ROOT / "benchmarks" / "results" / "speech_pretraining.json").read_text())
    stored["settings"].update({k: v for k, v in vars(a).items() if k.startswith("stage0")})
    assert f"ln {a.stage0_num_negatives + 1} = " in sp.markdown(stored)  # chance level of L_m reads the setting
    bad = tmp_path / "bad.args"
    bad.write_text("# only comments\n")
    with pytest.raises(ValueError, match="bad.args: expected '--flag value' lines"):
        sp.stage0_flags(bad)
    bad.write_text("--learning_rate 1e-3\n--mask_time_length 4\n--learning_rate 2e-3\n")
    with pytest.raises(ValueError, match=r"bad.args: --learning_rate given more than once; expected each flag once$"):
        sp.stage0_flags(bad)
