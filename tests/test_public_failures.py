"""Failures users met in public runs, each fixed at its source:

* a length flag longer than the model's position table (``--max_seq_length 1024``
  on a 512-position MiniLM crashed mid-training with a tensor-size mismatch): it is
  clamped at load time with a one-line warning; a wrong ``--image_size`` for a ViT
  is a one-line error naming the flag;
* a CSV in cp1252 gave only "DatasetGenerationError: An error occurred while
  generating the dataset": now the first non-UTF-8 byte, its line and offset, and
  the ``encoding`` option that reads the file;
* random weights (a torchvision name without weights, a speech ``--model_config``)
  are marked ``pretrained_weights_loaded = False`` and frozen/partial tuning on them
  is refused unless ``--allow_random_weights``;
* MMD on 37 rows with batch 16 stopped at the last one-row batch ("mk_mmd2 needs at
  least 2 samples per domain"): degenerate batches skip the term for that step;
* an fp16 overflow (inf gradient norm) was fatal: under a gradient scaler it is a
  skipped step, and only a run that keeps overflowing stops;
* a failure after training lost the model: the model is saved first, and
  results.json names what failed.
"""
from __future__ import annotations

import glob
import json
import os
import tempfile
import types
import warnings

import pytest
import torch

from tltext.backbones import TextBackbone, load_backbone
from tltext.data import DataError, load_table
from tltext.data import tables
from tltext.data.load import load_examples

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

ROWS = [("great coffee at the café", "pos"), ("awful service", "neg"), ("loved the crème brûlée", "pos"),
        ("cold food", "neg")]


def _csv(path, encoding: str) -> str:
    path.write_bytes(("text,label\n" + "".join(f"{t},{l}\n" for t, l in ROWS)).encode(encoding))
    return str(path)


def _temp_copies() -> set:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "tltext-utf8-*")))


# ------------------------------------------------------------------ 1. length flags
def test_max_seq_length_clamped_to_model_positions(minilm_path):
    with pytest.warns(UserWarning, match=r"--max_seq_length 1024 exceeds the model's 512 positions .*: clamped to 512"):
        bb = TextBackbone.from_pretrained(minilm_path, max_length=1024)
    assert bb.max_length == 512 and bb.config_dict()["max_length"] == 512
    text = " ".join(["word"] * 1000)
    batch = bb.collate([text, "short"])
    assert batch["input_ids"].shape[1] == 512
    with torch.no_grad():
        assert bb.eval()(**batch).shape == (2, 384)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within the limit: no warning
        assert TextBackbone.from_pretrained(minilm_path, max_length=512).max_length == 512


def test_position_offset_and_saved_length(minilm_path, tiny_bert_dir):
    """RoBERTa counts positions from padding_idx + 1: 34 embeddings hold 32 tokens.
    A clamped length is saved, so a reload is silent."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = RobertaConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=34, pad_token_id=1)  # as RoBERTa
    with pytest.warns(UserWarning, match=r"--max_seq_length 64 exceeds the model's 32 positions \(roberta "
                                         r"max_position_embeddings=34 minus 2 reserved\): clamped to 32"):
        rob = TextBackbone(RobertaModel(cfg), tok, max_length=64)
    with torch.no_grad():
        assert rob.eval()(**rob.collate([" ".join(["word"] * 100)])).shape == (1, 32)

    with pytest.warns(UserWarning, match="200 exceeds the model's 128 positions"):
        bb = TextBackbone.from_pretrained(tiny_bert_dir, max_length=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = TextBackbone.from_config_dict(bb.config_dict(), preprocessor_dir=tiny_bert_dir)
    assert again.max_length == 128
    with pytest.raises(ValueError, match="--max_seq_length 0: expected a positive number of tokens"):
        TextBackbone.from_pretrained(tiny_bert_dir, max_length=0)


def test_default_length_is_256_or_the_model_limit_without_warning(minilm_path, tiny_bert_dir):
    """No --max_seq_length: 256 tokens, or fewer on a smaller model, and nothing to warn about."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TextBackbone.from_pretrained(minilm_path).max_length == 256
        assert TextBackbone.from_pretrained(tiny_bert_dir).max_length == 128


def test_image_size_checked_against_vit_positions(tmp_path):
    from torchvision import models

    from tltext.backbones.image import ImageBackbone, _load_local_weights

    tiny = {"patch_size": 8, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 16}
    with pytest.raises(ValueError, match=r"built for image_size=32, not 64 .*pass --image_size 32"):
        ImageBackbone(models.VisionTransformer(image_size=32, **tiny), "vision_transformer", image_size=64)
    with pytest.raises(ValueError, match="--image_size 0: expected a positive size"):
        load_backbone("image", "resnet18", image_size=0)
    torch.save(models.VisionTransformer(image_size=32, **tiny).state_dict(), tmp_path / "vit32.pth")
    with pytest.raises(ValueError, match=r"--image_size 48: .*vit32.pth holds vision_transformer weights for "
                                         r"image_size 32 \(16 patch positions\); pass --image_size 32"):
        _load_local_weights(models.VisionTransformer(image_size=48, **tiny), str(tmp_path / "vit32.pth"),
                            "vision_transformer")
    _load_local_weights(models.VisionTransformer(image_size=32, **tiny), str(tmp_path / "vit32.pth"),
                        "vision_transformer")


# ------------------------------------------------------------------ 2. file encodings
def test_cp1252_csv_names_the_byte_and_reads_with_encoding(tmp_path):
    path = _csv(tmp_path / "books.csv", "cp1252")
    offset = len("text,label\ngreat coffee at the caf".encode())
    with pytest.raises(DataError) as e:
        load_table(path)
    assert str(e.value) == (f"{path}: not UTF-8 text (byte 0xe9 at line 2, byte offset {offset}); "
                            "re-save it as UTF-8 or pass --encoding cp1252")
    before = _temp_copies()
    ds = load_table(path, encoding="cp1252")
    assert ds["text"] == [t for t, _ in ROWS] and ds["label"] == [l for _, l in ROWS]
    assert _temp_copies() == before  # the UTF-8 copy is gone
    assert load_table(_csv(tmp_path / "utf8.csv", "utf-8"), encoding="utf8")["text"][2] == ROWS[2][0]


def test_encoding_errors_for_jsonl_and_bad_names(tmp_path):
    p = tmp_path / "reviews.jsonl"
    p.write_bytes("".join(json.dumps({"text": t, "label": l}, ensure_ascii=False) + "\n"
                          for t, l in ROWS).encode("latin-1"))
    offset = len('{"text": "great coffee at the caf')
    with pytest.raises(DataError, match=rf"reviews.jsonl: not UTF-8 text \(byte 0xe9 at line 1, byte offset {offset}\)"):
        load_table(str(p))
    assert load_table(str(p), encoding="latin-1")["text"][0] == ROWS[0][0]
    with pytest.raises(DataError, match="--encoding klingon: unknown text encoding"):
        load_table(str(p), encoding="klingon")
    u16 = tmp_path / "u16.csv"
    u16.write_bytes(("text,label\n" + "".join(f"{t},{l}\n" for t, l in ROWS)).encode("utf-16"))
    with pytest.raises(DataError, match=r"byte 0xff at line 1, byte offset 0\); .*--encoding utf-16$"):
        load_table(str(u16))
    assert load_table(str(u16), encoding="utf-16")["label"] == [l for _, l in ROWS]
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\nok,pos\n\x81\x8d,neg\n")  # cp1252 leaves 0x81 undefined
    before = _temp_copies()
    with pytest.raises(DataError, match=r"bad.csv: not cp1252 text \(byte 0x81 at line 3, byte offset 18\)"):
        load_table(str(bad), encoding="cp1252")
    assert _temp_copies() == before


def test_decode_position_across_chunk_boundaries(tmp_path, monkeypatch):
    """Multi-byte characters split between chunks are fine; the offset stays exact."""
    text = "é" * 9 + "\nab€\n" + "ü" * 5
    data = text.encode() + b"\xe9xyz"
    (tmp_path / "t.csv").write_bytes(data)
    for size in (1, 2, 3, 5, 7):
        monkeypatch.setattr(tables, "_CHUNK", size)
        with pytest.raises(DataError, match=rf"byte 0xe9 at line 3, byte offset {len(text.encode())}\)"):
            tables._check_decodes(str(tmp_path / "t.csv"), "utf-8")
    truncated = tmp_path / "cut.csv"
    truncated.write_bytes("text\nabc".encode() + "é".encode()[:1])
    with pytest.raises(DataError, match=r"byte 0xc3 at line 2, byte offset 8\)"):
        tables._check_decodes(str(truncated), "utf-8")


def test_datasets_failure_reports_the_innermost_cause(tmp_path, capfd):
    p = tmp_path / "garbage.json"  # a JSON file goes to datasets as it is (JSONL is checked line by line first)
    p.write_text('{"text": "ok", "label": "pos"}\n{not json at all\n')
    with pytest.raises(DataError) as e:
        load_table(str(p))
    msg = str(e.value)
    assert msg.startswith(f"{p}: cannot read as JSON (") and "\n" not in msg
    assert "DatasetGenerationError" not in msg and "An error occurred while generating" not in msg
    assert "JSON parse error" in msg  # pyarrow's error, not that of datasets' pandas retry
    lines = tmp_path / "garbage.jsonl"
    lines.write_text('{"text": "ok", "label": "pos"}\n\n["a list"]\n')
    with pytest.raises(DataError, match=r"garbage.jsonl: cannot read as JSONL: line 3 is a JSON list; expected one "
                                        r"JSON object per line"):
        load_table(str(lines))
    capfd.readouterr()  # what the .json case above logged
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "pos"}\n{not json at all\n')
    with pytest.raises(DataError, match=r"bad.jsonl: cannot read as JSONL: line 2 is not valid JSON"):
        load_table(str(bad))
    assert "Failed to load JSON" not in capfd.readouterr().err  # one message, not datasets' logged one too
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\nok,pos\n" + "a,b,c,d\n" * 3)
    with pytest.raises(DataError, match=r"ragged.csv: cannot read as CSV \(ParserError: .*line 3"):
        load_table(str(ragged))

    try:
        try:
            raise KeyError("'text'")
        except KeyError as inner:
            raise RuntimeError("wrapper") from inner
    except RuntimeError as outer:
        try:
            raise ValueError("") from outer  # no message: the cause's message is used
        except ValueError as top:
            assert tables._cause(top) == "KeyError: \"'text'\""
    try:
        try:
            raise OSError("fallback failed")
        except OSError:
            raise ValueError("the real error")  # implicit context: a failed fallback, not a cause
    except ValueError as v:
        assert tables._cause(v) == "ValueError: the real error"


def test_load_examples_threads_the_encoding(tmp_path):
    path = _csv(tmp_path / "train.csv", "cp1252")
    args = types.SimpleNamespace(text_column="text", label_column="label")
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_examples("text", path, args)
    assert load_examples("text", path, args, encoding="cp1252").inputs[0] == ROWS[0][0]
    args.encoding = "cp1252"  # once --encoding is a DataArguments field
    assert load_examples("text", path, args).inputs[2] == ROWS[2][0]


def test_recipe_prints_one_line_for_a_cp1252_csv(tmp_path, tiny_bert_dir, capsys):
    from tltext.experiment import main

    path = _csv(tmp_path / "books.csv", "cp1252")
    rc = main("text", ["--model_name_or_path", tiny_bert_dir, "--train_file", path, "--output_dir",
                       str(tmp_path / "out"), "--tuning", "frozen", "--num_train_epochs", "1", "--disable_tqdm",
                       "--report", "False"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(err) == 1
    assert "books.csv: not UTF-8 text (byte 0xe9 at line 2" in err[0] and "--encoding cp1252" in err[0]


# ------------------------------------------------------------------ 3. random weights
def test_pretrained_weights_loaded_flag(minilm_path, tmp_path):
    from torchvision import models

    from tltext.backbones.base import Backbone

    assert Backbone.pretrained_weights_loaded is True
    assert load_backbone("image", "resnet18", image_size=32).pretrained_weights_loaded is False
    torch.save(models.resnet18().state_dict(), tmp_path / "r18.pth")
    assert load_backbone("image", "resnet18", image_size=32,
                         weights_path=str(tmp_path / "r18.pth")).pretrained_weights_loaded is True
    assert TextBackbone.from_pretrained(minilm_path).pretrained_weights_loaded is True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tiny = load_backbone("speech", "", model_config="tiny")
        assert tiny.pretrained_weights_loaded is False
        tiny.encoder.save_pretrained(tmp_path / "speech")
        tiny.save_preprocessor(str(tmp_path / "speech"))
        assert load_backbone("speech", str(tmp_path / "speech")).pretrained_weights_loaded is True


def test_frozen_or_partial_on_random_weights_is_refused_in_one_line(tmp_path, capsys):
    """No torchvision weights offline: resnet18 is random. Freezing it is an error naming
    the flag, unless --allow_random_weights; --tuning full is fine."""
    from tltext.experiment import main

    src = tmp_path / "src"
    for label in ("a", "b"):
        (src / label).mkdir(parents=True)
        for i in range(3):
            from PIL import Image
            Image.new("RGB", (8, 8), (i * 40, 0, 0) if label == "a" else (0, 0, i * 40)).save(src / label / f"{i}.png")
    base = ["--model_name_or_path", "resnet18", "--image_size", "32", "--train_dir", str(src), "--output_dir",
            str(tmp_path / "out"), "--disable_tqdm", "--report", "False", "--validation_split_percentage", "0"]
    for tuning in ("frozen", "partial"):
        rc = main("image", base + ["--tuning", tuning])
        err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
        assert rc == 2 and len(err) == 1
        assert "--model_name_or_path resnet18: no pretrained weights" in err[0] and "--allow_random_weights" in err[0]
        assert "--weights_path (a local state dict)" in err[0]
    assert not (tmp_path / "out").exists()
    # a speech preset: the way out is a checkpoint, not the image-only --weights_path
    rc = main("speech", ["--model_config", "tiny", "--tuning", "frozen", "--train_file", str(tmp_path / "none.csv"),
                         "--output_dir", str(tmp_path / "sp")])
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert rc == 2 and len(err) == 1 and "--model_config tiny: no pretrained weights" in err[0]
    assert "a pretrained checkpoint as --model_name_or_path" in err[0] and "weights_path" not in err[0]


def _toy(tmp_path, n_rows: int):
    from helpers import reviews, write_jsonl

    both = reviews(8, 3)
    half = len(both) // 2
    rows = ([r for pair in zip(both[:half], both[half:]) for r in pair] * 2)[:n_rows]
    src = write_jsonl(tmp_path / "src.jsonl", rows)
    tgt = write_jsonl(tmp_path / "tgt.jsonl", [{"text": r["text"] + " at home"} for r in rows[:9]])
    return src, tgt


def test_mmd_with_a_one_row_last_batch_trains_and_logs_the_skip(tmp_path, tiny_bert_dir):
    """37 rows, 10 % validation -> 33 training rows, batch 16: the last source batch has 1 row;
    the 9-row target set is smaller than a batch."""
    from tltext.experiment import parse_and_run

    src, tgt = _toy(tmp_path, 37)
    res = parse_and_run("text", ["--model_name_or_path", tiny_bert_dir, "--train_file", src, "--target_file", tgt,
                                 "--objective", "mmd", "--tuning", "full", "--per_device_train_batch_size", "16",
                                 "--num_train_epochs", "2", "--output_dir", str(tmp_path / "out"), "--disable_tqdm",
                                 "--report", "False", "--seed", "1"])
    assert res["num_examples"]["train"] == 33 and res["training"]["optimizer_steps"] == 6
    h = res["history"]
    assert all(0 < e["mmd/skipped"] < 1 for e in h)  # one step of three per epoch skipped the term
    assert all(torch.isfinite(torch.tensor(e["train_loss"])) for e in h)


def _scaled_trainer(tmp_path, tiny_bert_dir, init_scale: float, epochs: int = 2):
    """A real ``torch.amp.GradScaler`` on CPU behind accelerate, as fp16 training on a GPU has."""
    from accelerate import Accelerator

    from helpers import reviews
    from tltext import Trainer, TrainArguments

    acc = Accelerator()
    acc.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=1000)
    return Trainer(model=tiny_bert_dir, accelerator=acc, tuning="full", train_dataset=reviews(8, 2),
                   args=TrainArguments(output_dir=str(tmp_path / "out"), num_train_epochs=epochs, seed=2,
                                       disable_tqdm=True, report=False, per_device_train_batch_size=8))


def test_fp16_overflow_steps_are_skipped_not_fatal(tmp_path, tiny_bert_dir):
    trainer = _scaled_trainer(tmp_path, tiny_bert_dir, init_scale=2.0 ** 127)
    trainer.train()
    tr = trainer.result.training
    assert tr["skipped_fp16_steps"] >= 1  # the scaler started too high: overflow, skip, halve
    assert tr["skipped_fp16_steps"] < tr["optimizer_steps"] + tr["skipped_fp16_steps"]
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in trainer.result.history)


def test_fp16_run_that_keeps_overflowing_stops_with_the_step(tmp_path, tiny_bert_dir):
    from tltext.training.engine import MAX_SKIPPED_FP16_STEPS, NonFiniteLossError

    trainer = _scaled_trainer(tmp_path, tiny_bert_dir, init_scale=float("inf"), epochs=15)  # every step overflows
    with pytest.raises(NonFiniteLossError, match=f"{MAX_SKIPPED_FP16_STEPS} fp16 steps in a row overflowed"):
        trainer.train()


def test_a_failure_after_training_keeps_the_model_and_says_what_failed(tmp_path, tiny_bert_dir, monkeypatch):
    from tltext import trainer as trainer_mod
    from tltext.experiment import main
    from tltext.training import predict

    src, _ = _toy(tmp_path, 24)
    real = predict.score

    def failing(logits, labels, names, metrics):
        if len(labels) == 5:  # the test file (the validation split has 2 rows)
            raise RuntimeError("scoring exploded")
        return real(logits, labels, names, metrics)

    monkeypatch.setattr(predict, "score", failing)
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in [{"text": "great", "label": "pos"}] * 5))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="scoring exploded"):
        main("text", ["--model_name_or_path", tiny_bert_dir, "--train_file", src, "--test_file", str(test),
                      "--tuning", "partial", "--num_train_epochs", "1", "--output_dir", str(out), "--disable_tqdm",
                      "--report", "False", "--validation_split_percentage", "8"])
    saved = json.loads((out / "results.json").read_text())
    assert "scoring exploded" in saved["errors"][0] and str(out / "model") in saved["errors"][0]
    assert (out / "model" / "model.safetensors").exists()
    from transformers import AutoModelForSequenceClassification

    import tltext  # noqa: F401
    assert AutoModelForSequenceClassification.from_pretrained(out / "model") is not None


def test_results_record_the_clamped_length(tiny_bert_dir, tmp_path):
    """--max_seq_length 200 on a 128-position model: the run, results.json and the card say 128."""
    from helpers import write_domains

    from tltext.experiment import parse_and_run

    (tmp_path / "data").mkdir()
    d = write_domains(tmp_path / "data")
    out = tmp_path / "run"
    res = parse_and_run("text", ["--model_name_or_path", tiny_bert_dir, "--train_file", str(d / "src.jsonl"),
                                 "--output_dir", str(out), "--max_seq_length", "200", "--disable_tqdm",
                                 "--report", "False"])
    assert any("200 exceeds the model's 128 positions" in w for w in res["warnings"])
    assert res["args"]["max_seq_length"] == 128
    assert json.loads((out / "results.json").read_text())["args"]["max_seq_length"] == 128
    assert "| max_seq_length | 128 |" in (out / "model" / "README.md").read_text()
