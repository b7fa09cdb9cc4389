"""A catalogue of bad inputs: each is a one-line ``error: ...`` naming the file /
column / value / flag and what was expected, exit code 2, and no half-written
output (no results.json, no model; an output dir created by the failed run is
removed, an existing one is left as it was)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tltext.experiment import main

ROWS = [{"text": t, "label": l} for t, l in (("great love it", "pos"), ("awful broken", "neg"), ("love great", "pos"),
                                              ("broken awful bad", "neg"), ("superb", "pos"), ("terrible", "neg"))] * 4


def _jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _wav(path: Path, seconds: float = 0.2, sr: int = 16000, freq: float = 440.0) -> Path:
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    f = {"dir": d, "good": _jsonl(d / "good.jsonl", ROWS)}
    f["unseen"] = _jsonl(d / "unseen.jsonl", ROWS[:4] + [{"text": "meh", "label": "neutral"}])
    f["garbage"] = str(d / "garbage.jsonl")
    (d / "garbage.jsonl").write_text('{"text": "ok", "label": "pos"}\n{not json at all\n')
    f["txt"] = str(d / "train.txt")
    (d / "train.txt").write_text("great\tpos\n")
    f["no_text"] = _jsonl(d / "no_text.jsonl", [{"sentence": r["text"], "label": r["label"]} for r in ROWS])
    f["no_label"] = _jsonl(d / "no_label.jsonl", [{"text": r["text"]} for r in ROWS])
    f["empty"] = str(d / "empty.jsonl")
    (d / "empty.jsonl").write_text("")
    f["header_only"] = str(d / "header_only.csv")
    (d / "header_only.csv").write_text("text,label\n")
    f["one_class"] = _jsonl(d / "one_class.jsonl", [{"text": r["text"], "label": "pos"} for r in ROWS])
    f["mixed"] = _jsonl(d / "mixed.jsonl", [{"text": "a b", "label": 1}, {"text": "c d", "label": "pos"}] * 4)
    f["null_text"] = _jsonl(d / "null_text.jsonl", ROWS[:5] + [{"text": None, "label": "neg"}] + ROWS[6:])
    f["blank_text"] = _jsonl(d / "blank_text.jsonl", ROWS[:3] + [{"text": "   ", "label": "neg"}] + ROWS[4:])
    f["null_label"] = _jsonl(d / "null_label.jsonl", ROWS[:2] + [{"text": "fine", "label": None}] + ROWS[3:])
    f["no_rows_target"] = str(d / "target.csv")
    (d / "target.csv").write_text("text\n")
    f["not_model"] = str(d / "not_a_model")
    os.makedirs(f["not_model"])
    (d / "not_a_model" / "notes.txt").write_text("hello")
    f["full_out"] = str(d / "existing_out")
    os.makedirs(f["full_out"])
    (d / "existing_out" / "results.json").write_text('{"keep": true}')
    # audio: a manifest per bad clip, next to good clips
    a = d / "audio"
    a.mkdir()
    good = [_wav(a / f"g{i}.wav", freq=300 + 500 * (i % 2)) for i in range(6)]
    (a / "random.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (a / "zero.wav").write_bytes(b"")
    _wav(a / "no_frames.wav", seconds=0.0)
    (a / "text.wav").write_text("this is not audio\n" * 50)
    base = [{"audio": p.name, "label": ["low", "high"][i % 2]} for i, p in enumerate(good)]
    for name in ("random", "zero", "no_frames", "text", "missing"):
        f[f"wav_{name}"] = _jsonl(a / f"{name}.jsonl", base + [{"audio": f"{name}.wav", "label": "low"}])
    f["wav_good"] = _jsonl(a / "good.jsonl", base)
    f["wav_no_audio_col"] = _jsonl(a / "no_audio_col.jsonl", [{"path": r["audio"], "label": r["label"]} for r in base])
    f["wav_bad_rate"] = _jsonl(a / "bad_rate.jsonl", [{**r, "sample_rate": "unknown"} for r in base])
    f["wav_wrong_rate"] = _jsonl(a / "wrong_rate.jsonl", [{**r, "sample_rate": 8000} for r in base])
    return f


# (name, modality, argv template, substrings the one-line error must contain)
# {out} = a fresh output dir, {bert} = the tiny BERT, other {keys} = files above
TEXT = ["--model_name_or_path", "{bert}", "--output_dir", "{out}", "--tuning", "frozen", "--num_train_epochs", "1",
        "--disable_tqdm", "--report", "False"]
SPEECH = ["--model_config", "tiny", "--allow_random_weights", "--output_dir", "{out}", "--tuning", "frozen", "--num_train_epochs", "1",
          "--validation_split_percentage", "0", "--disable_tqdm", "--report", "False"]
CASES = [
    ("missing train file", "text", TEXT + ["--train_file", "{dir}/nope.jsonl"], ["nope.jsonl", "file not found"]),
    ("speech augmentation on text", "text", TEXT + ["--train_file", "{good}", "--speed_perturbation", "0.9", "1.1"],
     ["--speed_perturbation is a speech augmentation; this is a text run"]),
    ("missing test file", "text", TEXT + ["--train_file", "{good}", "--test_file", "{dir}/gone.csv"], ["gone.csv", "file not found"]),
    ("malformed JSONL", "text", TEXT + ["--train_file", "{garbage}"], ["garbage.jsonl", "cannot read as JSONL: line 2 is not valid JSON", "one JSON object per line"]),
    ("unsupported format", "text", TEXT + ["--train_file", "{txt}"], ["train.txt", "unsupported file type .txt", ".jsonl"]),
    ("missing text column", "text", TEXT + ["--train_file", "{no_text}"], ["no_text.jsonl", "no text column 'text'", "sentence", "--text_column"]),
    ("missing label column", "text", TEXT + ["--train_file", "{no_label}"], ["no_label.jsonl", "no label column 'label'", "--label_column"]),
    ("wrong --label_column", "text", TEXT + ["--train_file", "{good}", "--label_column", "sentiment"], ["good.jsonl", "'sentiment'", "columns are"]),
    ("empty file", "text", TEXT + ["--train_file", "{empty}"], ["empty.jsonl", "file is empty"]),
    pytest.param("header but no rows", "text", TEXT + ["--train_file", "{header_only}"], ["header_only.csv", "no rows"]),
    ("single class", "text", TEXT + ["--train_file", "{one_class}"], ["one_class.jsonl", "single class 'pos'", "at least 2"]),
    ("test label unseen in training", "text", TEXT + ["--train_file", "{good}", "--test_file", "{unseen}"], ["unseen.jsonl", "'neutral'", "not seen in training"]),
    ("mixed label types", "text", TEXT + ["--train_file", "{mixed}"], ["mixed.jsonl", "mixes label types", "['int', 'str']"]),
    ("null text", "text", TEXT + ["--train_file", "{null_text}"], ["null_text.jsonl", "row 5", "no text", "non-empty string"]),
    ("blank text", "text", TEXT + ["--train_file", "{blank_text}"], ["blank_text.jsonl", "row 3", "empty text", "non-empty string"]),
    ("null label", "text", TEXT + ["--train_file", "{null_label}"], ["null_label.jsonl", "row 2", "empty label"]),
    ("shots per class > class size", "text", TEXT + ["--train_file", "{good}", "--shots_per_class", "20"], ["good.jsonl", "k=20", "has only 12", "--allow_fewer_shots"]),
    pytest.param("target file with no rows", "text", TEXT + ["--train_file", "{good}", "--objective", "mmd", "--target_file", "{no_rows_target}"], ["target.csv", "no rows"]),
    ("dann without target", "text", TEXT + ["--train_file", "{good}", "--objective", "dann"], ["--objective dann", "--target_file"]),
    ("mmd without target", "text", TEXT + ["--train_file", "{good}", "--objective", "mmd"], ["--objective mmd", "--target_file"]),
    ("unfreeze_top_k > layer groups", "text", TEXT + ["--train_file", "{good}", "--tuning", "partial", "--unfreeze_top_k", "9"], ["--unfreeze_top_k 9", "3 layer groups", "layer.1"]),
    ("non-empty output dir", "text", TEXT + ["--train_file", "{good}", "--output_dir", "{full_out}"], ["existing_out", "not empty", "--overwrite_output_dir"]),
    ("batch size 0", "text", TEXT + ["--train_file", "{good}", "--per_device_train_batch_size", "0"], ["--per_device_train_batch_size 0", "positive"]),
    ("negative learning rate", "text", TEXT + ["--train_file", "{good}", "--learning_rate", "-0.001"], ["--learning_rate", "-0.001", "positive"]),
    ("model dir that is not a model", "text", TEXT + ["--train_file", "{good}", "--model_name_or_path", "{not_model}"], ["not_a_model", "not a model directory"]),
    ("model path that does not exist", "text", TEXT + ["--train_file", "{good}", "--model_name_or_path", "{dir}/no_model_here"], ["no_model_here", "no such directory"]),
    ("--eval_only on a non-tltext model", "text", ["--eval_only", "--model_name_or_path", "{bert}", "--test_file", "{good}", "--output_dir", "{out}"], ["{bert}", "a 'bert' model", "not a trained tltext model"]),
    ("bad --checkpointing_steps", "text", TEXT + ["--train_file", "{good}", "--checkpointing_steps", "often"], ["--checkpointing_steps 'often'", "'epoch'"]),
    ("missing checkpoint", "text", TEXT + ["--train_file", "{good}", "--resume_from_checkpoint", "{dir}/ck"], ["{dir}/ck", "not a tltext checkpoint"]),
    ("--max_train_samples 0", "text", TEXT + ["--train_file", "{good}", "--max_train_samples", "0"], ["--max_train_samples", "positive", "got 0"]),
    ("--gradient_accumulation_steps 0", "text", TEXT + ["--train_file", "{good}", "--tuning", "partial", "--gradient_accumulation_steps", "0"],
     ["--gradient_accumulation_steps must be >= 1; got 0"]),
    ("negative --da_weight", "text", TEXT + ["--train_file", "{good}", "--target_file", "{good}", "--objective", "dann", "--tuning", "partial",
                                             "--da_weight", "-1"], ["--da_weight must be >= 0", "-1"]),
    ("--warmup_ratio 2", "text", TEXT + ["--train_file", "{good}", "--tuning", "partial", "--warmup_ratio", "2"], ["--warmup_ratio", "[0, 1]", "2"]),
    ("--head_dropout 2", "text", TEXT + ["--train_file", "{good}", "--head_dropout", "2"], ["--head_dropout", "[0, 1)", "2"]),
    ("empty objective term", "text", TEXT + ["--train_file", "{good}", "--objective", "erm+"], ["--objective 'erm+'", "empty term", "NAME[:WEIGHT]"]),
    ("misspelt --metric", "text", TEXT + ["--train_file", "{good}", "--metric", "acuracy"], ["--metric acuracy", "not bundled", "accuracy, f1"]),
    ("misspelt --metric_for_best_model", "text", TEXT + ["--train_file", "{good}", "--metric_for_best_model", "acc"],
     ["--metric_for_best_model acc", "not bundled"]),
    ("unknown --report_to", "text", TEXT + ["--train_file", "{good}", "--report_to", "tensorbord"], ["--report_to tensorbord", "unknown tracker", "tensorboard"]),
    ("--push_to_hub with --eval_only", "text", ["--eval_only", "--model_name_or_path", "{bert}", "--test_file", "{good}", "--output_dir", "{out}",
                                                "--push_to_hub", "--hub_model_id", "me/x"], ["--push_to_hub does not apply to --eval_only"]),
    ("validation split 100%", "text", TEXT + ["--train_file", "{good}", "--validation_split_percentage", "100"], ["--validation_split_percentage", "[0, 100)"]),
    ("corrupt wav", "speech", SPEECH + ["--train_file", "{wav_random}"], ["random.wav", "WAV/FLAC/OGG"]),
    ("augmentation under frozen tuning", "speech", SPEECH + ["--train_file", "{wav_good}", "--noise_snr_db", "10", "40"],
     ["--noise_snr_db has no effect under --tuning frozen"]),
    ("pretraining objective in the classification recipe", "speech",
     SPEECH[:5] + ["--tuning", "full", "--train_file", "{wav_good}", "--objective", "wav2vec2"],
     ["--objective wav2vec2 learns representations without labels", "recipes/audio_pretraining.py"]),
    ("eval-only with nothing to evaluate", "text", ["--eval_only", "--model_name_or_path", "{bert}", "--output_dir", "{out}"],
     ["--eval_only: nothing to evaluate; pass --test_file and/or --validation_file"]),
    ("zero-length wav", "speech", SPEECH + ["--train_file", "{wav_zero}"], ["zero.wav", "0 bytes"]),
    ("wav with no frames", "speech", SPEECH + ["--train_file", "{wav_no_frames}"], ["no_frames.wav", "no audio frames"]),
    ("text file named .wav", "speech", SPEECH + ["--train_file", "{wav_text}"], ["text.wav", "WAV/FLAC/OGG"]),
    ("wav file missing", "speech", SPEECH + ["--train_file", "{wav_missing}"], ["missing.wav", "not found"]),
    ("missing audio column", "speech", SPEECH + ["--train_file", "{wav_no_audio_col}"], ["no_audio_col.jsonl", "no audio column 'audio'", "--audio_column"]),
    ("unknown sample-rate value", "speech", SPEECH + ["--train_file", "{wav_bad_rate}"], ["bad_rate.jsonl", "'sample_rate'", "'unknown'", "positive integer in Hz"]),
    ("sample rate contradicts file", "speech", SPEECH + ["--train_file", "{wav_wrong_rate}"], ["wrong_rate.jsonl", "8000 Hz", "16000 Hz"]),
]


@pytest.mark.parametrize("name,modality,argv,expect", CASES,
                         ids=[c.values[0] if hasattr(c, "values") else c[0] for c in CASES])
def test_bad_input_is_a_one_line_error(name, modality, argv, expect, files, tiny_bert_dir, tmp_path, capsys):
    keys = {**files, "bert": tiny_bert_dir, "out": str(tmp_path / "out")}
    args = [a.format(**keys) for a in argv]
    out = Path(args[args.index("--output_dir") + 1]) if "--output_dir" in args else None
    before = sorted(os.listdir(out)) if out and out.exists() else None
    rc = main(modality, args)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc == 2, f"{name}: exit code {rc}"
    assert len(err) == 1, f"{name}: expected one error line, got {err}"
    for s in expect:
        assert s.format(**keys) in err[0], f"{name}: {s.format(**keys)!r} not in {err[0]!r}"
    # nothing half-written: a dir this run created is gone, an existing one is unchanged
    if before is None:
        assert not out.exists(), f"{name}: left {out} behind ({os.listdir(out)})"
    else:
        assert sorted(os.listdir(out)) == before
        assert json.loads((out / "results.json").read_text()) == {"keep": True}


def test_the_good_files_do_run(files, tiny_bert_dir, tmp_path):
    """The fixtures' good text and audio files train, so each case above fails for its one fault."""
    assert main("text", [a.format(bert=tiny_bert_dir, out=tmp_path / "t") for a in TEXT] + ["--train_file", files["good"]]) == 0
    assert main("speech", [a.format(out=tmp_path / "s") for a in SPEECH] + ["--train_file", files["wav_good"]]) == 0
    assert (tmp_path / "t" / "results.json").exists() and (tmp_path / "s" / "model").is_dir()


def test_a_flag_value_of_the_wrong_type_is_one_line_not_the_usage_block(tmp_path, capsys):
    from tltext.experiment import parse_and_run

    with pytest.raises(SystemExit) as e:
        parse_and_run("text", ["--validation_split_percentage", "abc", "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert "--validation_split_percentage" in err[0] and "'abc'" in err[0] and "see --help" in err[0]


def test_output_dir_that_is_a_file(files, tiny_bert_dir, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    argv = [a.format(bert=tiny_bert_dir, out=afile) for a in TEXT] + ["--train_file", files["good"]]
    assert main("text", argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and f"--output_dir {afile}: is a file; expected a folder" in err[0]
    assert afile.read_text() == "keep"


def test_report_to_a_tracker_that_is_not_installed(files, tiny_bert_dir, tmp_path, capsys):
    from accelerate.tracking import get_available_trackers

    if "tensorboard" in [str(getattr(x, "value", x)) for x in get_available_trackers()]:
        pytest.skip("tensorboard is installed here")
    argv = [a.format(bert=tiny_bert_dir, out=tmp_path / "o") for a in TEXT] + ["--train_file", files["good"],
                                                                               "--report_to", "tensorboard"]
    assert main("text", argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "--report_to tensorboard: the tensorboard package is not installed" in err[0]
    assert not (tmp_path / "o").exists()


def test_push_to_hub_without_a_token_fails_before_training(files, tiny_bert_dir, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    argv = [a.format(bert=tiny_bert_dir, out=tmp_path / "o") for a in TEXT] + [
        "--train_file", files["good"], "--push_to_hub", "--hub_model_id", "me/x"]
    assert main("text", argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "--push_to_hub: no Hugging Face token" in err[0]
    assert not (tmp_path / "o").exists()


def test_overwrite_replaces_the_previous_run_whole(files, tiny_bert_dir, tmp_path):
    """--overwrite_output_dir: once the new run is trained, no file of the old run stays
    (report, plots, a stray file); the saved model is readable under the umask."""
    out = tmp_path / "o"
    base = [a.format(bert=tiny_bert_dir, out=out) for a in TEXT] + ["--train_file", files["good"]]
    assert main("text", [x if x != "False" else "True" for x in base] + ["--seed", "1"]) == 0  # --report True
    assert (out / "report.md").exists() and list(out.glob("*.png"))
    (out / "stale.txt").write_text("from before")
    old_model = (out / "model" / "model.safetensors").stat().st_ino
    old_mask = os.umask(0o022)
    try:
        assert main("text", base + ["--seed", "2", "--overwrite_output_dir"]) == 0  # --report False
    finally:
        os.umask(old_mask)
    assert sorted(os.listdir(out)) == ["model", "results.json"]
    assert json.loads((out / "results.json").read_text())["args"]["seed"] == 2
    assert (out / "model" / "model.safetensors").stat().st_ino != old_model
    assert (out / "model").stat().st_mode & 0o777 == 0o755
    assert {p.name: p.stat().st_mode & 0o777 for p in (out / "model").iterdir()} == \
        {p.name: 0o644 for p in (out / "model").iterdir()}
    assert (out / "results.json").stat().st_mode & 0o777 == 0o644


def test_target_file_that_no_term_trains_on_is_a_warning(files, tiny_bert_dir, tmp_path):
    out = tmp_path / "o"
    argv = [a.format(bert=tiny_bert_dir, out=out) for a in TEXT] + ["--train_file", files["good"],
                                                                    "--target_file", files["good"]]
    assert main("text", argv) == 0
    warns = json.loads((out / "results.json").read_text())["warnings"]
    assert f"--target_file {files['good']}: no term of --objective erm trains on target data; the file is used only " \
           "for the report's domain-gap plots" in warns
