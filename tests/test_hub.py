"""Model card and Hub upload. The Hub is replaced at the HTTP boundary by a local
stub server (127.0.0.1) that speaks the endpoints huggingface_hub calls
(repos/create, validate-yaml, preupload, commit); everything above the socket
is the real huggingface_hub code."""
import base64
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

import tltext  # noqa: F401 - registers the Auto classes
from tltext import hub
from tltext.cli import main as cli_main
from tltext.experiment import main as run_main
from tltext.experiment import parse_and_run
from tltext.model_card import is_hub_id, render_card

from helpers import write_domains

FAKE = "hf_FAKEtoken123"


class HubStub:
    """Records every request; stores committed files (all sent inline, base64)."""

    def __init__(self, fail_commit: bool = False):
        self.requests, self.files, self.repos = [], {}, []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                parts = self.path.split("?")[0].strip("/").split("/")
                if self.path.startswith("/api/repos/create"):
                    req = json.loads(body)
                    stub.repos.append(req)
                    repo = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                    return self._json(200, {"url": f"{stub.url}/{repo}"})
                if self.path.startswith("/api/validate-yaml"):
                    return self._json(200, {})
                if parts[:2] == ["api", "models"] and parts[-2] == "preupload":
                    files = json.loads(body)["files"]
                    return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False} for f in files]})
                if parts[:2] == ["api", "models"] and parts[-2] == "commit":
                    if fail_commit:
                        # echo the credentials, as a careless server might: the client must scrub them
                        return self._json(403, {"error": f"stub: refused {self.headers.get('Authorization')}"})
                    for line in body.splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            stub.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    repo = "/".join(parts[2:-2])
                    return self._json(200, {"commitUrl": f"{stub.url}/{repo}/commit/{'a' * 40}",
                                            "commitOid": "a" * 40})
                return self._json(404, {"error": f"stub: no route {self.path}"})

            def _json(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub(monkeypatch, tmp_path):
    import huggingface_hub.constants as c

    s = HubStub()
    monkeypatch.setattr(c, "ENDPOINT", s.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(tmp_path / "no_stored_token"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_domains(tmp_path_factory.mktemp("toy_hub"), ("books", "kitchen"), n_each=4, repeat=4)


def _args(toy, model, out, *extra):
    return ["--model_name_or_path", model, "--train_file", str(toy / "books.jsonl"), "--target_file",
            str(toy / "kitchen.jsonl"), "--test_file", str(toy / "kitchen.jsonl"), "--objective", "dann",
            "--tuning", "frozen", "--num_train_epochs", "2", "--per_device_train_batch_size", "8",
            "--output_dir", str(out), "--disable_tqdm", "--cache_dir", str(out.parent / "cache"), *extra]


def _front_matter(text):
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _model_index_values(meta):
    """{(split, metric): value} from the card's model-index."""
    out = {}
    for r in meta["model-index"][0]["results"]:
        for m in r["metrics"]:
            out[(r["dataset"]["split"], m["type"])] = m["value"]
    return out


def _no_token_anywhere(root, *texts):
    for dirpath, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                assert FAKE.encode() not in fh.read(), f"token found in {f}"
    for t in texts:
        assert FAKE not in t


# --------------------------------------------------------------------------- card
def test_card_metadata_and_body_from_results():
    res = {
        "modality": "text", "objective": "mmd", "tuning": "partial", "oracle": False, "best_epoch": 3,
        "selection": "source validation split", "label_names": ["negative", "positive"],
        "num_examples": {"train": 1800, "validation": 200, "test": 2000, "target": 2000},
        "validation": {"accuracy": 0.8125, "f1": 0.80625, "f1_per_class": {"negative": 0.8, "positive": 0.81},
                       "confusion_matrix": [[90, 10], [20, 80]]},
        "test": {"accuracy": 0.7135, "f1": 0.70998, "roc_auc": float("nan")},
        "domain_gap": {"a_distance_before": 1.62, "a_distance_after": 0.91, "mmd2_before": 0.31, "mmd2_after": 0.04,
                       "n_per_domain": 500, "space_before": "backbone embeddings (384-d)",
                       "space_after": "adapter features (256-d)"},
        "warnings": ["negative transfer: mmd is worse than source-only"],
        "source_only": {"test": {"accuracy": 0.7250, "f1": 0.72}},
        "args": {"model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2", "train_file": "/home/u/data/amazon/books.jsonl",
                 "target_file": "stanfordnlp/imdb", "test_file": "/home/u/data/amazon/kitchen.jsonl",
                 "validation_split_percentage": 10.0, "tuning": "partial", "unfreeze_top_k": 2, "objective": "mmd",
                 "da_weight": 0.5, "mmd_kernels": 5, "learning_rate": None, "num_train_epochs": 4.0, "seed": 7,
                 "hub_token": "***", "output_dir": "/home/u/runs/x", "max_seq_length": 128},
        "training": {"learning_rate": 5e-5, "head_learning_rate": 5e-4, "optimizer_steps": 226},
    }
    text = render_card(res, {"adapter_dim": 0, "backbone": {"type": "text", "max_length": 128}}, repo_id="me/books2kitchen")
    meta = _front_matter(text)
    assert meta["library_name"] == "tltext" and meta["pipeline_tag"] == "text-classification"
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["datasets"] == ["stanfordnlp/imdb"]  # local files are described in the body instead
    for tag in ("transfer-learning", "domain-adaptation", "mmd", "partial-fine-tuning", "text"):
        assert tag in meta["tags"]
    assert meta["model-index"][0]["name"] == "books2kitchen"
    vals = _model_index_values(meta)
    assert vals == {("validation", "accuracy"): 0.8125, ("validation", "f1"): 0.80625,
                    ("test", "accuracy"): 0.7135, ("test", "f1"): 0.70998}  # NaN roc_auc left out
    body = text.split("---\n", 2)[2]
    assert "| proxy A-distance (0 = same, 2 = separable) | 1.6200 | 0.9100 |" in body
    assert "local `amazon/books.jsonl`" in body and "/home/u" not in text
    assert "Model selected without target labels" in body and "negative transfer" in body
    assert 'pipeline("text-classification", model="me/books2kitchen")' in body and "import tltext" in body
    assert "| learning_rate | 5e-05 (default for this tuning; head 0.0005) |" in body
    assert "| da_weight | 0.5 |" in body and "| unfreeze_top_k | 2 |" in body and "hub_token" not in text
    assert "| target test, source-only (ERM) baseline | same data, same seed and tuning | 2000 | 0.7250 | 0.7200 |" in body
    assert "ORACLE" not in text


def test_few_shot_card():
    res = {"modality": "text", "objective": "prototypes", "tuning": "frozen", "label_names": ["a", "b", "c"],
           "test": {"accuracy": 0.61}, "test_episodic": {"accuracy": 0.7, "ci95": 0.02, "episodes": 600, "n_way": 3,
                                                          "k_shot": 5, "n_query": 5},
           "args": {"train_file": "PolyAI/banking77", "test_file": "PolyAI/banking77", "shots_per_class": 5,
                    "objective": "prototypes", "n_way": 3, "k_shot": 5, "da_weight": 1.0}}
    text = render_card(res)
    meta = _front_matter(text)
    assert meta["datasets"] == ["PolyAI/banking77"] and {"prototypical-networks", "few-shot"} <= set(meta["tags"])
    assert "Episodic test accuracy: 0.7000 +- 0.0200 (95% CI, 600 3-way 5-shot episodes)" in text
    assert "| k_shot | 5 |" in text and "da_weight" not in text  # DA settings only for dann/mmd
    assert _model_index_values(meta) == {("test", "accuracy"): 0.61}


def test_oracle_card_warns_and_local_base_model_is_not_metadata(tmp_path):
    res = {"modality": "speech", "objective": "dann", "tuning": "frozen", "oracle": True,
           "selection": "ORACLE: selected on target test labels", "label_names": ["0", "1"],
           "test": {"accuracy": 0.9}, "validation": {"accuracy": 0.95},
           "args": {"model_name_or_path": str(tmp_path), "train_file": "fsdd/manifest.csv", "target_file": "x.csv",
                    "test_file": "x.csv", "selection": "source_validation"}}
    text = render_card(res, {"backbone": {"type": "speech", "feature_extractor": {"sampling_rate": 16000}}})
    meta = _front_matter(text)
    assert "base_model" not in meta and "datasets" not in meta
    assert meta["pipeline_tag"] == "audio-classification" and "oracle-selection" in meta["tags"]
    assert "ORACLE RUN: NOT A VALID TRANSFER RESULT" in text and "Oracle run" in text
    assert "ORACLE selection" in meta["model-index"][0]["results"][1]["dataset"]["name"]
    assert "not a Hub id" in text and "Model selected without target labels" not in text


def test_is_hub_id():
    assert is_hub_id("stanfordnlp/imdb") and is_hub_id("bert-base-uncased")
    for bad in ("data/books.jsonl", "/abs/path", "./rel", "x.csv", "a/b/c", "", None):
        assert not is_hub_id(bad)


def test_token_resolution_order(stub, monkeypatch, tmp_path):
    import huggingface_hub.constants as c

    with pytest.raises(ValueError, match="no Hugging Face token: pass --hub_token, set HF_TOKEN"):
        hub.resolve_token(None)
    stored = tmp_path / "token"
    stored.write_text("hf_STOREDtoken")
    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(stored))
    assert hub.resolve_token(None) == "hf_STOREDtoken"
    monkeypatch.setenv("HF_TOKEN", "hf_ENVtoken")
    assert hub.resolve_token(None) == "hf_ENVtoken"
    assert hub.resolve_token("hf_FLAGtoken") == "hf_FLAGtoken"


# --------------------------------------------------------------------------- run + push
def test_run_with_push_uploads_card_model_and_plots_without_leaking_token(stub, toy, tiny_bert_dir, tmp_path, capfd):
    out = tmp_path / "run"
    res = parse_and_run("text", _args(toy, tiny_bert_dir, out, "--push_to_hub", "--hub_model_id", "me/tiny-dann",
                                      "--hub_private_repo", "--hub_token", FAKE))
    logs = capfd.readouterr()
    saved = json.loads((out / "results.json").read_text())
    assert saved["args"]["hub_token"] == "***" and not saved.get("warnings")
    # repo created private, under the right id, with the flag's token in the header only
    assert stub.repos == [{"name": "tiny-dann", "organization": "me", "visibility": "private", "type": "model"}]
    assert {r["auth"] for r in stub.requests} == {f"Bearer {FAKE}"}
    assert all(FAKE.encode() not in r["body"] for r in stub.requests)
    # exactly: the model folder at the root + the run's plots and report
    model_files = sorted(os.listdir(out / "model"))
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= set(model_files)
    assert pngs and not [f for f in model_files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    expected = model_files + pngs + ["report.md"]
    assert saved["hub"]["files"] == expected and sorted(stub.files) == sorted(expected)
    for name, data in stub.files.items():
        local = out / "model" / name if name in model_files else out / name
        assert data == local.read_bytes(), name
    assert saved["hub"]["repo_id"] == "me/tiny-dann" and saved["hub"]["private"] is True
    # the card: metadata parses, model-index equals results.json
    meta = _front_matter(stub.files["README.md"].decode())
    vals = _model_index_values(meta)
    assert vals and all(v == saved[split][metric] for (split, metric), v in vals.items())
    assert {("validation", "accuracy"), ("test", "accuracy"), ("test", "f1")} <= set(vals)
    assert meta["library_name"] == "tltext" and "domain-adaptation" in meta["tags"] and "dann" in meta["tags"]
    assert "base_model" not in meta  # a local folder
    card = stub.files["README.md"].decode()
    assert "## Domain gap" in card and "me/tiny-dann" in card and "![curves](curves.png)" in card
    assert res["test"] == saved["test"]
    # no token in any file of the run or in anything printed
    _no_token_anywhere(out, logs.out, logs.err)
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert "hub_token" not in json.dumps(cfg["tltext"])


def test_failed_push_keeps_results_and_warns_without_token(monkeypatch, toy, tiny_bert_dir, tmp_path, capfd):
    import huggingface_hub.constants as c

    s = HubStub(fail_commit=True)
    monkeypatch.setattr(c, "ENDPOINT", s.url)
    try:
        out = tmp_path / "run"
        rc = run_main("text", _args(toy, tiny_bert_dir, out, "--num_train_epochs", "1", "--report", "False",
                                    "--push_to_hub", "--hub_model_id", "me/x", "--hub_token", FAKE))
    finally:
        s.close()
    logs = capfd.readouterr()
    assert rc == 1 and f"error: --push_to_hub: the push failed (WARNING above); the run is saved in {out}" in logs.err
    saved = json.loads((out / "results.json").read_text())
    assert "hub" not in saved
    warning = [w for w in saved["warnings"] if w.startswith("push to the Hub failed")]
    assert len(warning) == 1 and "tltext push" in warning[0] and "stub: refused Bearer ***" in warning[0]
    assert (out / "model" / "README.md").exists()
    _no_token_anywhere(out, logs.out, logs.err)


def test_cli_push_of_a_run_folder(stub, toy, tiny_bert_dir, tmp_path, monkeypatch, capfd):
    out = tmp_path / "run"
    parse_and_run("text", _args(toy, tiny_bert_dir, out, "--num_train_epochs", "1", "--report", "False"))
    card = (out / "model" / "README.md").read_text()
    assert "path/to/OUT/model" in card  # written after the run, before any push
    monkeypatch.setenv("HF_TOKEN", FAKE)
    assert cli_main(["push", str(out), "--hub_model_id", "org/pushed"]) == 0
    logs = capfd.readouterr()
    assert "pushed" in logs.out and FAKE not in logs.out + logs.err
    assert stub.repos == [{"name": "pushed", "organization": "org", "visibility": "public", "type": "model"}]
    assert {r["auth"] for r in stub.requests} == {f"Bearer {FAKE}"}  # from HF_TOKEN
    assert sorted(stub.files) == sorted(os.listdir(out / "model"))  # --report False: no plots
    card = stub.files["README.md"].decode()
    assert 'model="org/pushed"' in card  # the card is rewritten with the repo id
    saved = json.loads((out / "results.json").read_text())
    vals = _model_index_values(_front_matter(card))
    assert all(v == saved[s][m] for (s, m), v in vals.items()) and len(vals) >= 4


def test_cli_push_errors(stub, tmp_path, capsys):
    assert hub.push_main([str(tmp_path), "--hub_model_id", "me/x"]) == 2
    assert "expected a tltext run folder" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "tltext"}))
    assert hub.push_main([str(tmp_path), "--hub_model_id", "me/x"]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err
    assert hub.push_main([str(tmp_path), "--hub_model_id", "me/x", "--hub_token", FAKE]) == 2
    err = capsys.readouterr().err
    assert "no model.safetensors" in err and FAKE not in err
    assert stub.requests == []  # nothing was sent


def test_card_states_what_ran():
    """Precision, the global batch and steps, how the head was fitted, the guard's decision
    and an unstratified validation split are stated as results.json records them."""
    res = {"modality": "text", "objective": "mmd", "tuning": "frozen", "label_names": ["a", "b"],
           "selection": "source validation split", "num_examples": {"train": 9}, "validation": {}, "test": {},
           "training": {"device": "cpu", "num_processes": 2, "precision": "bf16", "fit": None,
                        "global_batch_size": 64, "per_device_train_batch_size": 16, "gradient_accumulation_steps": 2,
                        "optimizer_steps": 30, "head_init": "linear probe on the pretrained encoder (LP-FT)"},
           "negative_transfer_guard": {"note": "negative-transfer guard: snd ... kept source_only"},
           "validation_split": {"size": 1, "stratified": False, "reason": "class id(s) [1] have a single example"},
           "args": {"tuning": "frozen", "objective": "mmd", "train_file": "x.jsonl", "seed": 1}}
    card = render_card(res, {"backbone": {"type": "text"}})
    assert "precision bf16; global batch 64 (per device 16 x 2 process(es) x accumulation 2), 30 optimizer steps" in card
    assert "head initialised from: linear probe on the pretrained encoder (LP-FT)" in card
    assert "kept source_only" in card
    assert "not stratified (class id(s) [1] have a single example)" in card


def test_card_of_a_run_whose_guard_kept_source_only_names_source_only():
    res = {"modality": "text", "objective": "dann", "tuning": "frozen", "label_names": ["neg", "pos"],
           "objective_terms": [{"name": "dann", "weight": None, "paper": "Ganin", "description": "DANN"}],
           "test": {"accuracy": 0.70}, "source_only": {"test": {"accuracy": 0.70}},
           "negative_transfer_guard": {"criterion": "snd", "source_only": 2.1, "adapted": 2.0, "kept": "source_only",
                                       "note": "negative-transfer guard (snd): source-only 2.1 vs dann 2.0: kept source_only"},
           "args": {"objective": "dann", "tuning": "frozen", "da_weight": 1.0, "train_file": "books.jsonl"}}
    text = render_card(res, {})
    meta = _front_matter(text)
    assert meta["model-index"][0]["name"] == "tltext-text-erm-frozen" and "dann" not in meta["tags"]
    body = text.split("---\n", 2)[2]
    assert body.lstrip().startswith("# tltext-text-erm-frozen") and "| objective | erm |" in body and "| da_weight |" not in body
    assert "kept source_only" in body  # the guard's note names the adaptation that lost


def test_card_hyperparameters_are_the_ones_that_ran():
    """Explicit learning rates still show the head's and the objective parts' rates; the selection
    row is what ran; a closed-form probe lists no optimiser settings and no 'selected epoch'."""
    base = {"modality": "text", "objective": "dann", "tuning": "partial", "label_names": ["a", "b"],
            "selection": "source validation split", "num_examples": {"train": 9}, "best_epoch": 1,
            "training": {"learning_rate": 1e-4, "head_learning_rate": 1e-4, "objective_learning_rate": 1e-3},
            "args": {"tuning": "partial", "objective": "dann", "learning_rate": 1e-4, "head_learning_rate": None,
                     "num_train_epochs": 3.0, "selection": "source_validation", "train_file": "x.jsonl", "seed": 1}}
    card = render_card(base, {"backbone": {"type": "text"}})
    assert "| learning_rate | 0.0001 (head 0.0001, objective's own parts 0.001) |" in card
    assert "| selection | source validation split |" in card and "| selected epoch | 1 |" in card
    probe = {**base, "objective": "erm", "tuning": "frozen", "best_epoch": 0,
             "selection": "4-fold stratified cross-validation on training + held-out validation (C of the "
                          "logistic-regression probe)",
             "num_examples": {"train": 9, "validation": 3, "fitted_on": 12},
             "training": {"fit": "full batch (scikit-learn lbfgs); no engine steps", "head": "linear probe: ..."},
             "args": {**base["args"], "objective": "erm", "tuning": "frozen"}}
    card = render_card(probe, {"backbone": {"type": "text"}})
    for row in ("| learning_rate |", "| num_train_epochs |", "| selected epoch |", "(epoch 0)"):
        assert row not in card, row
    assert "| selection | 4-fold stratified cross-validation on training + held-out validation" in card
    assert "Trained on 12 labelled examples (the 9 training examples and the 3 held out for validation, pooled " \
           "into the probe's final fit)" in card
    # its validation score is cross-validated over all 12: the card must not call it a held-out split
    pooled = {**probe, "validation": {"accuracy": 0.75, "cross_validated": True, "note": "mean 4-fold cross-validated "
                                      "accuracy over training + held-out validation at the chosen C"}}
    card = render_card(pooled, {"backbone": {"type": "text"}})
    assert "| source cross-validation (training + held-out validation) | local `x.jsonl`, all labelled examples, pooled | 12 " \
           "| 0.7500 |" in card and "| source validation |" not in card
    assert "source cross-validation (training + held-out validation) accuracy" in card  # model-index metric name
    assert "- labelled source (train): local `x.jsonl`, 9 examples (the probe was fitted on 12: these and the held-out " \
           "validation split)" in card
    # no validation data at all: the probe's CV score over the training split, named so
    cv_train = {**probe, "num_examples": {"train": 9}, "validation": {"accuracy": 0.7, "cross_validated": True}}
    card = render_card(cv_train, {"backbone": {"type": "text"}})
    assert "| source cross-validation (training split) | local `x.jsonl`, training split | 9 | 0.7000 |" in card
    from tltext.model_card import eval_results

    assert [r.dataset_split for r in eval_results(cv_train)] == ["train"]  # model-index: not a held-out split
    assert [r.dataset_split for r in eval_results(pooled)] == ["train+validation"]
    # a score without the key (an older results.json, or a held-out split) is not called cross-validated
    card = render_card({**pooled, "validation": {"accuracy": 0.75, "note": "cross-validated"}}, {"backbone": {"type": "text"}})
    assert "| source cross-validation" not in card
    no_val = {**base, "best_epoch": -1, "selection": "last epoch (no validation data)"}
    card = render_card(no_val, {"backbone": {"type": "text"}})
    assert "-1" not in card and "Model selection: last epoch (no validation data)." in card


def test_card_of_a_python_api_run_names_its_in_memory_data():
    res = {"modality": "text", "objective": "dann", "tuning": "partial", "label_names": ["neg", "pos"],
           "selection": "source validation split", "num_examples": {"train": 43, "validation": 5, "target": 8, "test": 8},
           "validation": {"accuracy": 0.8}, "test": {"accuracy": 0.75},
           "validation_split": {"percentage": 10.0, "seed": 3, "stratified": True, "size": 5},
           "args": {"tuning": "partial", "objective": "dann", "validation_split_percentage": 10.0, "seed": 3}}
    card = render_card(res, {"backbone": {"type": "text"}})
    assert "| source validation | in memory (Python API), 10% held out (stratified) | 5 |" in card
    assert "- labelled source (train): `train_dataset` passed to `tltext.Trainer` (in memory (Python API)), 43" in card
    assert "- unlabelled target: `target_dataset` passed to `tltext.Trainer`" in card and "| , " not in card
    # an eval_dataset given (nothing held out): named as such, not as a held-out percentage
    given = {**res, "validation_split": {}}
    card = render_card(given, {"backbone": {"type": "text"}})
    assert "| source validation | `eval_dataset` (in memory (Python API)) | 5 |" in card and "held out" not in card
    assert "- validation: `eval_dataset` passed to `tltext.Trainer`" in card


def test_local_card_links_resolve_from_the_model_folder(tmp_path):
    """OUT/model/README.md links the plots and report.md that stay in OUT/ (a Hub card links
    them beside itself, where the upload puts them)."""
    import re

    from tltext.hub import write_model_card

    out, model = tmp_path / "out", tmp_path / "out" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"backbone": {"type": "text"}, "id2label": {"0": "a", "1": "b"}}))
    (out / "curves.png").write_bytes(b"\x89PNG")
    (out / "report.md").write_text("# report\n")
    res = {"modality": "text", "objective": "erm", "tuning": "frozen", "label_names": ["a", "b"],
           "num_examples": {"train": 4}, "args": {"train_file": "x.jsonl"}}
    card = (model / "README.md").read_text() if write_model_card(str(model), res, out_dir=str(out)) else ""
    links = re.findall(r"\]\(([^)]+\.(?:png|md))\)", card)
    assert sorted(links) == ["../curves.png", "../report.md"]
    assert all((model / link).resolve().is_file() for link in links)
    hub = (model / "README.md").read_text() if write_model_card(str(model), res, repo_id="me/x", out_dir=str(out)) else ""
    assert sorted(re.findall(r"\]\(([^)]+\.(?:png|md))\)", hub)) == ["curves.png", "report.md"]
