"""Two real processes (``accelerate launch``, gloo on the CPU) against one process.

One launch runs a whole plan of trainings and evaluations (this file is also the
launched script); the tests then check, in this process:

* every objective x {frozen (cached), partial, partial + gradual unfreezing}
  scores exactly the 37 test rows (odd, so shards are uneven), and ``--eval_only``
  of the saved model gives the same accuracy and confusion matrix on 2 processes
  as on 1;
* 2-process training reaches the accuracy of 1-process training (same global batch);
* the embedding cache built by 2 sharded processes equals the 1-process cache;
* prototypes are the class means over ALL training rows (gathered), not one shard's;
* DDP runs without ``find_unused_parameters`` (frozen params, the GRL branch, a
  speech encoder with LayerDrop and an unused SpecAugment vector), and gradual
  unfreezing re-wraps DDP when the trainable set grows.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import write_jsonl

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = ("erm", "dann", "mmd", "prototypes")
TUNINGS = {"frozen": ["--tuning", "frozen"],
           "partial": ["--tuning", "partial", "--unfreeze_top_k", "2"],
           "gradual": ["--tuning", "partial", "--unfreeze_top_k", "2", "--gradual_unfreeze"]}
N_TEST = 37
LR = "3e-3"
POS = "great excellent love wonderful perfect happy superb fantastic".split()
NEG = "terrible awful hate broken horrible waste poor useless".split()
FILL = "the product was and it this is a very really so item".split()


# --------------------------------------------------------------------------- launched side
def _driver(plan_file: str) -> int:
    """Run every entry of the plan in this (multi-process) job; record DDP wraps."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from tltext.experiment import parse_and_run

    wraps = []
    init = DDP.__init__

    def recording_init(self, *args, **kwargs):
        wraps.append(bool(kwargs.get("find_unused_parameters", False)))
        init(self, *args, **kwargs)

    DDP.__init__ = recording_init
    plan = json.loads(Path(plan_file).read_text())
    record = {}
    for run in plan["runs"]:
        if "copy" in run:  # e.g. one checkpoint of a finished run into a fresh output dir
            if int(os.environ.get("RANK", "0")) == 0:
                import shutil

                shutil.copytree(*run["copy"])
            torch.distributed.barrier()
            continue
        wraps.clear()
        t0 = time.perf_counter()
        res = parse_and_run(run["modality"], run["argv"])
        record[run["name"]] = {"ddp_wraps": len(wraps), "find_unused_parameters": any(wraps),
                               "seconds": time.perf_counter() - t0, "num_processes": res["num_processes"]}
    if int(os.environ.get("RANK", "0")) == 0:
        Path(plan["record"]).write_text(json.dumps(record, indent=1))
    return 0


# --------------------------------------------------------------------------- data
def _rows(n: int, seed: int):
    """Alternating pos / neg rows: 3 sentiment words + 0-2 fillers (learnable by a random tiny BERT)."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        lab = "pos" if i % 2 == 0 else "neg"
        words = r.sample(POS if lab == "pos" else NEG, 3) + r.sample(FILL, r.randint(0, 2))
        r.shuffle(words)
        out.append({"text": " ".join(words), "label": lab})
    return out


def _speech_data(d: Path):
    """Tones: 'low' (200-400 Hz) vs 'high' (1.2-2 kHz), 0.25 s at 16 kHz."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    (d / "wav").mkdir()
    rows = []
    for i in range(24):
        lab = "low" if i % 2 == 0 else "high"
        f = rng.uniform(200, 400) if lab == "low" else rng.uniform(1200, 2000)
        t = np.arange(4000) / 16000
        x = 0.5 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(d / "wav" / f"{i}.wav", x.astype(np.float32), 16000)
        rows.append({"audio": f"wav/{i}.wav", "label": lab})
    write_jsonl(d / "train.jsonl", rows[:16])
    write_jsonl(d / "test.jsonl", rows[16:])
    from transformers import Wav2Vec2Config

    from tltext.backbones.speech import PRESETS, _PRESET_COMMON

    # LayerDrop on (a dropped layer gets no gradient in that step) and SpecAugment off
    # (its mask vector is a trainable parameter that is then never used)
    Wav2Vec2Config(**{**_PRESET_COMMON, **PRESETS["tiny"], "layerdrop": 0.5}).save_pretrained(d / "layerdrop")
    return d


def _common(data: Path, tiny_bert_dir: str, objective: str, tuning: str, out: Path, cache: Path, bs: int):
    args = ["--model_name_or_path", tiny_bert_dir, "--train_file", str(data / "train.jsonl"),
            "--validation_file", str(data / "val.jsonl"), "--test_file", str(data / "test.jsonl"),
            "--objective", objective, *TUNINGS[tuning], "--output_dir", str(out), "--num_train_epochs", "4",
            "--per_device_train_batch_size", str(bs), "--learning_rate", LR, "--seed", "3",
            "--metric", "accuracy", "confusion_matrix", "--disable_tqdm", "--report", "False",
            "--cache_dir", str(cache)]
    if objective in ("dann", "mmd", "adabn"):
        args += ["--target_file", str(data / "target.jsonl")]
    if objective == "prototypes":
        args += ["--n_way", "2", "--k_shot", "4", "--n_query", "4", "--episodes_per_epoch", "8"]
    return args


def _eval_args(model: Path, data: Path, out: Path, cache: Path):
    return ["--eval_only", "--model_name_or_path", str(model), "--test_file", str(data / "test.jsonl"),
            "--output_dir", str(out), "--metric", "accuracy", "confusion_matrix", "--disable_tqdm",
            "--report", "False", "--cache_dir", str(cache)]


def _start(plan: Path, nproc: int) -> subprocess.Popen:
    """The plan under ``accelerate launch`` (gloo on the CPU) or, for 1 process, plainly."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, __file__, str(plan)]
    if nproc > 1:
        cmd[1:1] = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "--main_process_port", str(29500 + os.getpid() % 1000)]
    log = open(plan.with_suffix(".log"), "w")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=str(ROOT))


def _wait(proc: subprocess.Popen, plan: Path, timeout: float) -> dict:
    rc = proc.wait(timeout=timeout)
    text = plan.with_suffix(".log").read_text()
    errors = "\n".join(dict.fromkeys(l for l in text.splitlines() if "Error" in l and "elastic" not in l))
    assert rc == 0, f"{plan.name}: job failed (rc {rc}):\n{errors[-4000:] or text[-4000:]}"
    return json.loads(plan.with_name(plan.stem + "-record.json").read_text())


def _plan(path: Path, runs) -> Path:
    path.write_text(json.dumps({"runs": runs, "record": str(path.with_name(path.stem + "-record.json"))}))
    return path


class _one_thread:
    """In-process runs on one intra-op thread (a busy machine stalls multi-threaded ops)."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_bert_dir):
    """Both jobs side by side: the 2-process plan (train + eval every configuration, and
    the speech encoder) and the 1-process trainings; then, here, ``--eval_only`` of
    every 2-process model on 1 process."""
    from tltext.experiment import parse_and_run

    d = tmp_path_factory.mktemp("dist")
    for name, rows in (("train", _rows(64, 0)), ("val", _rows(32, 3)), ("test", _rows(N_TEST, 1)), ("target", _rows(40, 2))):
        write_jsonl(d / f"{name}.jsonl", rows)
    (d / "speech").mkdir()
    sp = _speech_data(d / "speech")
    two, one = [], []
    for obj in OBJECTIVES:
        for tun in TUNINGS:
            name = f"{obj}-{tun}"
            two.append({"name": name, "modality": "text",
                        "argv": _common(d, tiny_bert_dir, obj, tun, d / "two" / name, d / "cache2", 8)})
            two.append({"name": name + "/eval", "modality": "text",
                        "argv": _eval_args(d / "two" / name / "model", d, d / "two_eval" / name, d / "cache2")})
            one.append({"name": name, "modality": "text",
                        "argv": _common(d, tiny_bert_dir, obj, tun, d / "one" / name, d / "cache1", 16)})
    for plan, bs in ((two, 8), (one, 16)):  # AdaBN: target statistics over every process's shard
        plan.append({"name": "adabn-frozen", "modality": "text", "argv": _common(
            d, tiny_bert_dir, "adabn", "frozen", d / ("two" if plan is two else "one") / "adabn-frozen",
            d / ("cache2" if plan is two else "cache1"), bs)})
    two.append({"name": "speech-layerdrop", "modality": "speech",
                "argv": ["--model_config", str(sp / "layerdrop"), "--train_file", str(sp / "train.jsonl"),
                         "--test_file", str(sp / "test.jsonl"), "--validation_split_percentage", "0",
                         "--tuning", "full", "--output_dir", str(d / "two" / "speech"), "--num_train_epochs", "3",
                         "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--disable_tqdm",
                         "--report", "False", "--cache_dir", str(d / "cache_speech")]})  # LP-FT encodes its clips
    # exact resume on 2 processes: DANN + gradual unfreezing, resumed mid-epoch 1 (after the re-wrap)
    res_args = ["--num_train_epochs", "3", "--checkpointing_steps", "3"]
    two.append({"name": "resume-ref", "modality": "text",
                "argv": _common(d, tiny_bert_dir, "dann", "gradual", d / "two" / "resume-ref", d / "cache2", 4) + res_args})
    two.append({"name": "copy", "copy": [str(d / "two" / "resume-ref" / "checkpoints" / "step_9"),
                                         str(d / "two" / "resumed" / "checkpoints" / "step_9")]})
    two.append({"name": "resumed", "modality": "text",
                "argv": _common(d, tiny_bert_dir, "dann", "gradual", d / "two" / "resumed", d / "cache2", 4) + res_args
                + ["--resume_from_checkpoint", "latest"]})
    t0 = time.perf_counter()
    p2 = _start(_plan(d / "two.json", two), 2)
    p1 = _start(_plan(d / "one.json", one), 1)
    rec1 = _wait(p1, d / "one.json", 300)
    rec2 = _wait(p2, d / "two.json", 300)
    seconds = time.perf_counter() - t0
    evals = {}
    with _one_thread():
        for obj in OBJECTIVES:
            for tun in TUNINGS:
                name = f"{obj}-{tun}"
                evals[name] = parse_and_run("text", _eval_args(d / "two" / name / "model", d, d / "one_eval" / name,
                                                               d / "cache1"))
    return {"dir": d, "record": rec2, "record1": rec1, "seconds": seconds, "eval1": evals}


def _results(path: Path):
    return json.loads((path / "results.json").read_text())


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_two_process_metrics_cover_exactly_the_test_set(job, objective):
    d = job["dir"]
    rows = []
    for tun in TUNINGS:
        name = f"{objective}-{tun}"
        two = _results(d / "two" / name)
        two_eval = _results(d / "two_eval" / name)
        one_eval = job["eval1"][name]
        assert two["num_processes"] == 2 and two_eval["num_processes"] == 2 and one_eval["num_processes"] == 1
        for res in (two, two_eval, one_eval):
            assert res["num_examples"]["test"] == N_TEST
            cm = np.asarray(res["test"]["confusion_matrix"])
            assert cm.shape == (2, 2) and cm.sum() == N_TEST
            assert cm.sum(axis=1).tolist() == [18, 19]  # true neg / pos rows of the test file
        # evaluation is exact: the same model scores the same on 1 and on 2 processes
        assert two_eval["test"]["accuracy"] == one_eval["test"]["accuracy"] == two["test"]["accuracy"]
        assert two_eval["test"]["confusion_matrix"] == one_eval["test"]["confusion_matrix"] == two["test"]["confusion_matrix"]
        rows.append((name, _results(d / "one" / name)["test"]["accuracy"], two["test"]["accuracy"]))
    print("\n".join(f"{n:22s} 1-process {a:.4f}  2-process {b:.4f}" for n, a, b in rows))


def test_two_process_training_matches_one_process(job):
    """Same seed and global batch (2 x 8 vs 1 x 16): both learn the task and land
    within noise of each other (37 test rows: one row is 0.027)."""
    d = job["dir"]
    diffs = []
    for obj in OBJECTIVES:
        for tun in TUNINGS:
            name = f"{obj}-{tun}"
            a1 = _results(d / "one" / name)["test"]["accuracy"]
            a2 = _results(d / "two" / name)["test"]["accuracy"]
            assert min(a1, a2) >= 0.8, f"{name}: not learnt (1-process {a1:.3f}, 2-process {a2:.3f})"
            assert abs(a1 - a2) <= 0.15, f"{name}: 1-process {a1:.3f} vs 2-process {a2:.3f}"
            diffs.append(a2 - a1)
    assert abs(float(np.mean(diffs))) <= 0.06, f"mean 2-process minus 1-process accuracy {np.mean(diffs):+.3f}"


def test_sharded_cache_equals_single_process_cache(job):
    from safetensors.torch import load_file

    c1, c2 = job["dir"] / "cache1", job["dir"] / "cache2"
    f1 = sorted(p.name for p in c1.glob("*.safetensors"))
    f2 = {p.name for p in c2.glob("*.safetensors")}
    assert len(f1) == 4 and set(f1) == f2  # train, validation, test, target; the same keys
    for name in f1:
        e1, e2 = load_file(str(c1 / name))["embeddings"], load_file(str(c2 / name))["embeddings"]
        assert e1.shape == e2.shape and e1.shape[0] in (64, 32, N_TEST, 40)
        torch.testing.assert_close(e2, e1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tuning", list(TUNINGS))
def test_prototypes_use_every_process_support_set(job, tuning):
    """The saved head is the cosine one, W_k = s c_k/||c_k||, b = 0, with c_k the mean unit
    feature of class k over all 64 training rows, which no single process holds (each sees its shard)."""
    import tltext  # noqa: F401
    from transformers import AutoModelForSequenceClassification

    from tltext.objectives.prototypes import cosine_prototype_head

    d = job["dir"]
    model = AutoModelForSequenceClassification.from_pretrained(d / "two" / f"prototypes-{tuning}" / "model").eval()
    rows = [json.loads(line) for line in (d / "train.jsonl").read_text().splitlines()]
    y = torch.tensor([model.config.label2id[r["label"]] for r in rows])
    with torch.no_grad():
        feats = model.features(model.encode(**model.backbone.collate([r["text"] for r in rows])))
    scale = float(model.classifier.weight.norm(dim=1)[0])
    w, b = cosine_prototype_head(feats, y, 2, scale=scale)
    torch.testing.assert_close(model.classifier.weight, w, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.classifier.bias, b, rtol=1e-4, atol=1e-4)
    # one process's share of the rows gives different prototypes: the check has teeth
    w_half, _ = cosine_prototype_head(feats[:32], y[:32], 2, scale=scale)
    assert (w_half - model.classifier.weight).abs().max() > 1e-3


def test_two_process_resume_is_exact(job):
    """Resumed at step 9 (epoch 1 of 8-step epochs, both groups unfrozen inside the one DDP wrapper)."""
    from safetensors.torch import load_file

    d = job["dir"] / "two"
    a, b = _results(d / "resume-ref"), _results(d / "resumed")
    assert a["num_processes"] == b["num_processes"] == 2 and a["timing"]["train_steps"] == 24
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert a["test"] == b["test"]
    wa, wb = load_file(str(d / "resume-ref" / "model" / "model.safetensors")), load_file(str(d / "resumed" / "model" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert job["record"]["resumed"]["ddp_wraps"] == 1


def test_ddp_without_find_unused_parameters(job):
    rec = job["record"]
    for name, r in rec.items():
        assert r["num_processes"] == 2
        assert r["find_unused_parameters"] is False, name
        if name.endswith("/eval"):
            assert r["ddp_wraps"] == 0, name  # evaluation never wraps the model
    for obj in OBJECTIVES:
        assert rec[f"{obj}-partial"]["ddp_wraps"] == 1
        assert rec[f"{obj}-gradual"]["ddp_wraps"] == 1  # epoch 1 unfreezes a group inside the one wrapper (inactive grads masked)
    # full tuning of a speech encoder whose layers are dropped at random trained on 2 processes
    sp = _results(job["dir"] / "two" / "speech")
    assert sp["num_processes"] == 2 and sp["timing"]["train_steps"] > 0
    assert sp["num_examples"]["test"] == 8 and np.isfinite(sp["history"][-1]["train_loss"])
    print(f"2-process job: {job['seconds']:.1f} s; per run: "
          + ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in rec.items()))


if __name__ == "__main__":
    sys.exit(_driver(sys.argv[1]))


def test_frozen_probe_does_not_depend_on_the_number_of_processes(job):
    """The frozen erm head is a logistic regression fitted to convergence on the gathered
    embeddings: 1 process (batch 16) and 2 processes (2 x 8) give the same head."""
    from safetensors.torch import load_file

    d = job["dir"]
    one, two = _results(d / "one" / "erm-frozen"), _results(d / "two" / "erm-frozen")
    assert "linear probe" in one["training"]["head"] and one["training"]["head"] == two["training"]["head"]
    assert one["test"]["accuracy"] == two["test"]["accuracy"] and one["validation"] == two["validation"]
    w1 = load_file(str(d / "one" / "erm-frozen" / "model" / "model.safetensors"))
    w2 = load_file(str(d / "two" / "erm-frozen" / "model" / "model.safetensors"))
    torch.testing.assert_close(w1["classifier.weight"], w2["classifier.weight"], rtol=1e-3, atol=1e-3)


def test_adabn_head_does_not_depend_on_the_number_of_processes(job):
    """AdaBN's source and target statistics are taken over the gathered features of every
    process: the folded head is the same on 1 and on 2 processes, and differs from erm's."""
    from safetensors.torch import load_file

    d = job["dir"]
    one, two = _results(d / "one" / "adabn-frozen"), _results(d / "two" / "adabn-frozen")
    note = two["training"]["head_adaptation"]
    assert "AdaBN" in note and "40 unlabelled target examples" in note and note == one["training"]["head_adaptation"]
    assert one["test"]["accuracy"] == two["test"]["accuracy"]
    w1 = load_file(str(d / "one" / "adabn-frozen" / "model" / "model.safetensors"))
    w2 = load_file(str(d / "two" / "adabn-frozen" / "model" / "model.safetensors"))
    for k in ("classifier.weight", "classifier.bias"):
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-3, atol=1e-3)
    erm = load_file(str(d / "two" / "erm-frozen" / "model" / "model.safetensors"))
    assert not torch.allclose(erm["classifier.bias"], w2["classifier.bias"], atol=1e-3)
