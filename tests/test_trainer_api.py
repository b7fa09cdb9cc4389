"""``tltext.Trainer``: the Python API with datasets.Dataset / lists of dicts, and the
README's example run as written."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch

from helpers import reviews
from test_hub import FAKE, stub  # noqa: F401  (the Hub's HTTP endpoint, stubbed)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(tiny_bert_dir, out, head_init=None, **kw):
    from tltext import TltextModel, Trainer, TrainArguments

    train = datasets.Dataset.from_list(reviews(8, 3))
    target = [r["text"] + " in the kitchen" for r in reviews(8, 1)]
    return Trainer(model=TltextModel.from_backbone(tiny_bert_dir, num_labels=2),
                   args=TrainArguments(output_dir=str(out), num_train_epochs=2, seed=3, disable_tqdm=True,
                                       report=False, per_device_train_batch_size=8, head_init=head_init),
                   train_dataset=train, target_dataset=target, **kw)


def test_train_evaluate_predict_with_datasets_and_lists(tiny_bert_dir, tmp_path):
    from tltext import TltextModel

    trainer = _trainer(tiny_bert_dir, tmp_path / "run", objective="mmd:0.5+mcc", tuning="partial")
    model = trainer.train()
    assert isinstance(model, TltextModel) and model.config.id2label == {0: "neg", 1: "pos"}  # names from the data
    res = trainer.result
    assert [t["name"] for t in res.objective_terms] == ["mmd", "mcc"] and res.objective_terms[0]["weight"] == 0.5
    assert {"ce", "mmd", "mcc"} <= set(res.history[-1]) and len(res.history) == 2
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["objective"] == "mmd:0.5+mcc" and saved["training"]["optimizer_steps"] == res.training["optimizer_steps"]
    # no eval_dataset: 10 % of train held out, stratified, as the CLI does (48 rows -> 43 + 5)
    assert saved["num_examples"]["train"] == 43 and saved["num_examples"]["validation"] == 5
    assert saved["validation_split"]["stratified"] is True and saved["selection"].startswith("source validation")
    # as used: the LP-FT head learns at the encoder's rate (recorded after the probe init)
    assert "linear probe" in saved["training"]["head_init"]
    assert (saved["training"]["learning_rate"], saved["training"]["head_learning_rate"]) == (5e-5, 5e-5)  # target terms
    metrics = trainer.evaluate([{"text": r["text"], "label": r["label"]} for r in reviews(8, 1)])
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "f1" in metrics
    pred = trainer.predict(["great product works well", "terrible broke fast"])
    assert pred.logits.shape == (2, 2) and set(pred.labels) <= {"neg", "pos"}
    # the saved model predicts exactly what the trainer does
    from transformers import AutoModelForSequenceClassification

    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model").eval()
    with torch.no_grad():
        logits = reloaded(**reloaded.backbone.collate(["great product works well", "terrible broke fast"])).logits
    assert torch.allclose(logits, torch.from_numpy(pred.logits), atol=1e-4)


def test_lp_ft_head_learns_at_the_encoder_rate_and_the_discriminator_at_the_random_head_rate(tiny_bert_dir, tmp_path):
    # CDAN reads the head on target batches (lp_ft_head): LP-FT head at 5e-5, its discriminator at 10x
    trainer = _trainer(tiny_bert_dir, tmp_path / "run", objective="cdan", tuning="partial")
    trainer.train()
    tr = json.loads((tmp_path / "run" / "results.json").read_text())["training"]
    assert "linear probe" in tr["head_init"]
    assert (tr["learning_rate"], tr["head_learning_rate"], tr["objective_learning_rate"]) == (5e-5, 5e-5, 5e-4)
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "head 5e-05, objective's own parts 0.0005" in card
    # the per-tuning defaults: partial source-only 1e-4, full 5e-5; the head: partial source-only trains a
    # hidden-wide adapter + random head (10x), --head_init probe the LP-FT linear head (at the encoder's rate),
    # full a random linear head (10x). The feature-alignment terms (DANN, MMD: no lp_ft_head) take source-only's
    # recipe of each tuning, at weight 0.1; a term that reads target predictions (self-training) keeps LP-FT.
    from transformers import AutoConfig

    hidden = AutoConfig.from_pretrained(tiny_bert_dir).hidden_size
    adapter_head = f"random, behind a {hidden}-wide adapter (the default for --tuning partial)"
    for name, tuning, extra, lr, head_lr, init, adapter, weight in (
            ("partial", "partial", {}, 1e-4, 1e-3, adapter_head, hidden, None),
            ("lpft", "partial", {"head_init": "probe"}, 1e-4, 1e-4, "linear probe", 0, None),
            ("full", "full", {}, 5e-5, 5e-4, "random (the default for --tuning full)", 0, None),
            ("partial_dann", "partial", {"objective": "dann"}, 1e-4, 1e-3, adapter_head, hidden, 0.1),
            ("full_mmd", "full", {"objective": "mmd"}, 5e-5, 5e-4, "random (the default for --tuning full)", 0, 0.1),
            ("full_st", "full", {"objective": "self_training"}, 5e-5, 5e-5, "linear probe", 0, 1.0)):
        trainer = _trainer(tiny_bert_dir, tmp_path / name, tuning=tuning, **extra)
        trainer.train()
        res = json.loads((tmp_path / name / "results.json").read_text())
        tr = res["training"]
        assert (tr["learning_rate"], tr["head_learning_rate"]) == (lr, head_lr) and tr["head_init"].startswith(init)
        assert res["objective_terms"][0]["weight"] == weight
        model_cfg = json.loads((tmp_path / name / "model" / "config.json").read_text())
        assert model_cfg["adapter_dim"] == adapter
    # --head_init where there is no cross-entropy head on a trainable encoder: one warning, kept in results.json
    _trainer(tiny_bert_dir, tmp_path / "frozen", head_init="random", tuning="frozen").train()
    warned = json.loads((tmp_path / "frozen" / "results.json").read_text())["warnings"]
    assert [w for w in warned if "--head_init" in w] == [
        "--head_init random is ignored: it chooses how a cross-entropy head starts on a trainable encoder "
        "(--tuning partial or full), and this run (--tuning frozen --objective erm) has no such head"]


def test_bad_inputs_name_what_is_wrong(tiny_bert_dir, tmp_path):
    from tltext import ModelArguments, Trainer, TrainArguments

    with pytest.raises(ValueError, match="train_dataset: rows have no key 'text'"):
        Trainer(model=tiny_bert_dir, train_dataset=[{"sentence": "x", "label": "a"}])
    with pytest.raises(ValueError, match="--objective dann needs --target_file"):
        Trainer(model=tiny_bert_dir, train_dataset=reviews(2, 1), objective="dann")
    with pytest.raises(ValueError, match="registered objectives: .*cdan"):
        Trainer(model=tiny_bert_dir, train_dataset=reviews(2, 1), objective="cdann")
    with pytest.raises(ValueError, match="--metric acuracy: metric 'acuracy' is not bundled"):
        Trainer(model=tiny_bert_dir, train_dataset=reviews(2, 1), args=TrainArguments(metric=["acuracy"]))
    with pytest.raises(ValueError, match="--da_weight must be >= 0"):
        Trainer(model=tiny_bert_dir, train_dataset=reviews(2, 1), target_dataset=["x", "y"],
                model_args=ModelArguments(objective="mmd", da_weight=-1.0))
    with pytest.raises(ValueError, match="--head_init probe .* cannot start the head behind --adapter_dim 64"):
        Trainer(model=tiny_bert_dir, train_dataset=reviews(2, 1), tuning="partial",
                model_args=ModelArguments(adapter_dim=64), args=TrainArguments(head_init="probe"))
    for args, flag in ((TrainArguments(head_learning_rate=0.0), "--head_learning_rate must be positive; got 0.0"),
                       (TrainArguments(head_learning_rate=-1.0), "--head_learning_rate must be positive; got -1.0")):
        with pytest.raises(ValueError, match=flag):
            Trainer(model=tiny_bert_dir, train_dataset=reviews(2, 1), args=args)
    with pytest.raises(ValueError, match="--adapter_dim must be >= 0 \\(0: no adapter\\); got -1"):
        Trainer(model=tiny_bert_dir, train_dataset=reviews(2, 1), model_args=ModelArguments(adapter_dim=-1))
    # flag checks come before the backbone loads: a model path that does not exist is never reached
    with pytest.raises(ValueError, match="--head_learning_rate must be positive; got 0.0"):
        Trainer(model=str(tmp_path / "no-such-model"), train_dataset=reviews(2, 1),
                args=TrainArguments(head_learning_rate=0.0))
    with pytest.raises(ValueError, match="call train\\(\\) first"):
        Trainer(model=tiny_bert_dir, train_dataset=reviews(2, 1)).predict(["x"])


def test_push_to_hub_uploads_the_run(stub, tiny_bert_dir, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_TOKEN", FAKE)
    trainer = _trainer(tiny_bert_dir, tmp_path / "run", objective="erm", tuning="frozen")
    trainer.train()
    info = trainer.push_to_hub("org/api-model")
    assert info["repo_id"] == "org/api-model"
    assert "model.safetensors" in stub.files and "README.md" in stub.files
    assert "linear probe" in json.loads((tmp_path / "run" / "results.json").read_text())["training"]["head"]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "amazon" / "books.jsonl").exists(), reason="needs ../shared/data/amazon")
def test_readme_python_example_runs_as_written(tmp_path):
    code = _readme_example()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.strip().splitlines()
    acc = float(out[-2])
    assert 0.6 < acc <= 1.0, out  # MiniLM, books -> kitchen: well above chance
    assert set(eval(out[-1])) <= {"positive", "negative"}


def test_api_inputs_users_tried(tiny_bert_dir, tmp_path):
    """Found by a new user: empty targets, a saved OUT/model as model=, a single string to
    predict, ClassLabel names, rows with no text, and a term skipped on every step."""
    from tltext import Trainer, TrainArguments

    rows = reviews(8, 1)
    with pytest.raises(ValueError, match="target_dataset: no rows"):
        Trainer(model=tiny_bert_dir, train_dataset=rows, target_dataset=[], objective="mmd")
    with pytest.raises(ValueError, match="row 1 has no text in 'text'"):
        Trainer(model=tiny_bert_dir, train_dataset=[rows[0], {"text": None, "label": "neg"}])
    with pytest.raises(ValueError, match="tuning must be one of frozen, partial, full; got 'lora'"):
        Trainer(model=tiny_bert_dir, train_dataset=rows, tuning="lora")
    ds = datasets.Dataset.from_dict({"text": [r["text"] for r in rows], "label": [int(r["label"] == "pos") for r in rows]},
                                    features=datasets.Features({"text": datasets.Value("string"),
                                                                "label": datasets.ClassLabel(names=["neg", "pos"])}))
    args = TrainArguments(output_dir=str(tmp_path / "a"), num_train_epochs=1, disable_tqdm=True, report=False,
                          per_device_train_batch_size=1)
    trainer = Trainer(model=tiny_bert_dir, args=args, train_dataset=ds, objective="mmd", tuning="partial",
                      target_dataset=[r["text"] for r in rows])
    trainer.train()
    assert trainer.label_names == ["neg", "pos"]
    assert any("mmd was skipped on every step" in w for w in trainer.result.warnings)  # batches of one row
    assert len(trainer.predict("great product works well").labels) == 1
    with pytest.raises(ValueError, match="no items"):
        trainer.predict([])
    again = Trainer(model=str(tmp_path / "a" / "model"), args=TrainArguments(output_dir=str(tmp_path / "b"),
                    disable_tqdm=True, report=False), train_dataset=rows, tuning="frozen")
    again.train()  # continues from the trained tltext model's backbone
    assert again.result.test == {} and 0.0 <= again.evaluate(rows)["accuracy"] <= 1.0


def test_disable_tqdm_also_silences_model_loading_bars(tiny_bert_dir, tmp_path):
    import subprocess as sp

    code = ("from tltext import Trainer, TrainArguments\n"
            f"Trainer(model={tiny_bert_dir!r}, args=TrainArguments(output_dir={str(tmp_path / 'o')!r}, disable_tqdm=True),"
            " train_dataset=[{'text': 'good', 'label': 'pos'}, {'text': 'bad', 'label': 'neg'}] * 4)\n")
    quiet = sp.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    loud = sp.run([sys.executable, "-c", code.replace("disable_tqdm=True", "disable_tqdm=False")],
                  capture_output=True, text=True, cwd=ROOT)
    assert "Loading weights" in loud.stderr  # the bar this flag must hide (a fresh process each: global state)
    assert "Loading weights" not in quiet.stderr and "%|" not in quiet.stderr


def test_partial_run_from_a_model_path_draws_the_before_embeddings(tiny_bert_dir, tmp_path):
    """The API builds its own untrained copy for the report's 'before' picture, as the CLI does."""
    from tltext import Trainer, TrainArguments

    out = tmp_path / "run"
    trainer = Trainer(model=tiny_bert_dir, tuning="partial", train_dataset=datasets.Dataset.from_list(reviews(8, 2)),
                      args=TrainArguments(output_dir=str(out), num_train_epochs=1, seed=1, disable_tqdm=True,
                                          save_model=False))
    trainer.train()
    assert not [w for w in trainer.result.warnings if "embeddings not computed" in w]
    assert (out / "embeddings_before.png").stat().st_size > 0 and (out / "embeddings_after.png").stat().st_size > 0
