"""recipes/language_modeling.py (DAPT) end to end on a tiny BERT, then the classifier recipe on its output."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM

from helpers import reviews, write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def _recipe():
    spec = importlib.util.spec_from_file_location("language_modeling", ROOT / "recipes" / "language_modeling.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_dapt_trains_saves_a_plain_checkpoint_that_the_classifier_recipe_loads(tiny_bert_dir, tmp_path, capsys):
    lm = _recipe()
    rows = reviews(8, 4)
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": r["text"]} for r in rows[::2]])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": r["text"]} for r in rows[1::2]])
    out = tmp_path / "dapt"
    rc = lm.main(["--model_name_or_path", tiny_bert_dir, "--train_file", a, b, "--max_seq_length", "16",
                  "--per_device_train_batch_size", "8", "--learning_rate", "3e-3", "--num_train_epochs", "8",
                  "--seed", "0", "--disable_tqdm", "--output_dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["num_texts"] == len(rows) and res["saved_as"] == "BertForMaskedLM"
    assert res["mlm_head"].startswith("new") and res["timing"]["train_steps"] == 8 * 8
    losses = [h["mlm/loss"] for h in res["history"]]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 2.0, losses  # 16 distinct short reviews: the MLM loss falls fast
    assert not [p.name for p in out.iterdir() if p.name.startswith(".model-")]  # atomic save: no temp left

    model_dir = out / "model"
    assert (model_dir / "tokenizer.json").exists() or (model_dir / "vocab.txt").exists()
    mlm, info = AutoModelForMaskedLM.from_pretrained(model_dir, output_loading_info=True)
    assert not info["missing_keys"], info  # encoder and head both saved
    enc = AutoModel.from_pretrained(model_dir)
    before = AutoModel.from_pretrained(tiny_bert_dir)
    w = "embeddings.word_embeddings.weight"
    assert not torch.equal(enc.state_dict()[w], before.state_dict()[w])  # it was trained
    assert torch.equal(mlm.get_output_embeddings().weight, mlm.get_input_embeddings().weight)
    # a second DAPT / UDALM run on it uses the saved head
    from tltext.backbones import TextBackbone
    from tltext.objectives.mlm import build_head

    head = build_head(TextBackbone.from_pretrained(str(model_dir)).encoder)
    assert head.from_checkpoint and torch.equal(head.bias, mlm.cls.predictions.bias)

    from tltext.experiment import main

    src = write_jsonl(tmp_path / "src.jsonl", reviews(8, 2))
    rc = main("text", ["--model_name_or_path", str(model_dir), "--train_file", src, "--test_file", src,
                       "--tuning", "full", "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
                       "--max_seq_length", "16", "--report", "False", "--disable_tqdm",
                       "--output_dir", str(tmp_path / "cls")])
    assert rc == 0, capsys.readouterr().err
    cls = json.loads((tmp_path / "cls" / "results.json").read_text())
    assert cls["base_model"] == str(model_dir) and 0.0 <= cls["test"]["accuracy"] <= 1.0


def test_bad_flags_are_one_line_errors(tiny_bert_dir, tmp_path, capsys):
    lm = _recipe()
    f = write_jsonl(tmp_path / "t.jsonl", [{"text": "a kitchen knife"}])
    assert lm.main(["--model_name_or_path", tiny_bert_dir, "--output_dir", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == "error: --train_file is required (one or more files of unlabelled text)"
    assert lm.main(["--model_name_or_path", tiny_bert_dir, "--train_file", f, "--mlm_probability", "1.5",
                    "--output_dir", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == "error: --mlm_probability 1.5: expected a probability in (0, 1)"
    assert lm.main(["--model_name_or_path", tiny_bert_dir, "--train_file", f, "--text_column", "body",
                    "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "body" in err and "\n" not in err
