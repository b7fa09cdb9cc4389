"""Engine runs end to end: checkpoints and exact resume (a run killed with SIGKILL
and resumed from its latest checkpoint ends bit for bit where the uninterrupted
run does; mid-epoch and end-of-epoch checkpoints; atomic writes), a NaN loss
stopping the run with a one-line error that leaves the last good checkpoint
intact, and bf16 mixed precision on the CPU."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tltext.experiment import main, parse_and_run
from tltext.training.engine import STATE_FILE, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
POS = "great excellent love wonderful perfect happy superb fantastic".split()
NEG = "terrible awful hate broken horrible waste poor useless".split()


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import random

    d = tmp_path_factory.mktemp("resume_data")
    for name, n, seed in (("train", 64, 0), ("val", 16, 1), ("test", 37, 2), ("target", 40, 3)):
        r = random.Random(seed)
        rows = [{"text": " ".join(r.sample(POS if i % 2 == 0 else NEG, 3) + ["the", "item"][: r.randint(0, 2)]),
                 "label": "pos" if i % 2 == 0 else "neg"} for i in range(n)]
        (d / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    return d


def _args(data: Path, bert: str, out: Path, *extra: str):
    return ["--model_name_or_path", bert, "--train_file", str(data / "train.jsonl"),
            "--validation_file", str(data / "val.jsonl"), "--test_file", str(data / "test.jsonl"),
            "--output_dir", str(out), "--learning_rate", "3e-3", "--seed", "7", "--disable_tqdm",
            "--report", "False", "--cache_dir", str(out.parent / "cache"), *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _recipe(args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "recipes" / "text_classification.py"), *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT), **kw)


def _weights(out: Path):
    return load_file(str(out / "model" / "model.safetensors"))


def _same_run(a: Path, b: Path) -> None:
    ra, rb = (json.loads((p / "results.json").read_text()) for p in (a, b))
    assert rb["test"]["accuracy"] == ra["test"]["accuracy"]
    assert rb["test"]["f1"] == ra["test"]["f1"]
    assert [h["train_loss"] for h in rb["history"]] == [h["train_loss"] for h in ra["history"]]
    assert [h.get("val_metric") for h in rb["history"]] == [h.get("val_metric") for h in ra["history"]]
    assert rb["best_epoch"] == ra["best_epoch"] and rb["timing"]["train_steps"] == ra["timing"]["train_steps"]
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


DANN = ["--objective", "dann", "--tuning", "partial", "--unfreeze_top_k", "2", "--gradual_unfreeze",
        "--num_train_epochs", "4", "--per_device_train_batch_size", "4"]


def test_sigkill_then_resume_latest_equals_uninterrupted_run(data, tiny_bert_dir, tmp_path, capsys):
    """DANN + gradual unfreezing (dropout RNG, data order, the target stream, the
    unfrozen set, the scheduler and AdamW state must all come back): 64 steps,
    a checkpoint every 5, SIGKILL as soon as the first one lands; the resumed and
    the uninterrupted runs then run here."""
    extra = DANN + ["--target_file", str(data / "target.jsonl"), "--checkpointing_steps", "5"]
    killed = tmp_path / "killed"
    p = _recipe(_args(data, tiny_bert_dir, killed, *extra))
    deadline = time.time() + 240
    while not list_checkpoints(str(killed)) and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL
    steps = [s for s, _ in list_checkpoints(str(killed))]
    assert steps and max(steps) < 64, f"checkpoints at {steps}: the run was not interrupted mid-way"
    assert not (killed / "results.json").exists() and not (killed / "model").exists()

    parse_and_run("text", _args(data, tiny_bert_dir, killed, *extra, "--resume_from_checkpoint", "latest"))
    assert f"resumed from {killed / 'checkpoints' / f'step_{max(steps)}'}" in capsys.readouterr().out
    parse_and_run("text", _args(data, tiny_bert_dir, tmp_path / "ref", *extra))
    _same_run(tmp_path / "ref", killed)
    with capsys.disabled():
        print(f"\nSIGKILL after checkpoint step_{max(steps)} of 64; the resumed run equals the uninterrupted one")


@pytest.mark.parametrize("case", ["prototypes-frozen-epoch", "mmd-frozen-steps"])
def test_resume_from_each_kind_of_checkpoint(case, data, tiny_bert_dir, tmp_path):
    """Episodes (EpisodeSampler) and cached embeddings (a per-epoch seeded random
    order, the target stream) resumed from end-of-epoch, mid-epoch and last-batch
    checkpoints, with early stopping state carried over."""
    if case == "prototypes-frozen-epoch":
        extra = ["--objective", "prototypes", "--tuning", "frozen", "--adapter_dim", "16", "--n_way", "2", "--k_shot", "3", "--n_query", "3",
                 "--episodes_per_epoch", "5", "--num_train_epochs", "3", "--checkpointing_steps", "epoch",
                 "--early_stopping_patience", "1"]
        picks = None  # every checkpoint (one per epoch)
    else:
        extra = ["--objective", "mmd", "--tuning", "frozen", "--target_file", str(data / "target.jsonl"),
                 "--num_train_epochs", "2", "--per_device_train_batch_size", "8", "--checkpointing_steps", "4"]
        picks = {4, 8}  # mid-epoch 0 and its last batch (8 steps per epoch)
    full = tmp_path / "full"
    parse_and_run("text", _args(data, tiny_bert_dir, full, *extra))
    found = list_checkpoints(str(full))
    assert found and all(os.path.isfile(os.path.join(p, STATE_FILE)) for _, p in found)
    for step, path in found:
        if picks is not None and step not in picks:
            continue
        part = tmp_path / f"from_{step}"
        shutil.copytree(path, part / "checkpoints" / f"step_{step}")
        res = parse_and_run("text", _args(data, tiny_bert_dir, part, *extra, "--resume_from_checkpoint", "latest"))
        assert res["timing"]["train_steps"] == json.loads((full / "results.json").read_text())["timing"]["train_steps"]
        _same_run(full, part)


def test_checkpoint_writes_are_atomic_and_checked(data, tiny_bert_dir, tmp_path, capsys):
    extra = ["--tuning", "frozen", "--linear_probe", "False", "--num_train_epochs", "2", "--per_device_train_batch_size", "16",
             "--checkpointing_steps", "3"]
    out = tmp_path / "run"
    parse_and_run("text", _args(data, tiny_bert_dir, out, *extra))
    steps = [s for s, _ in list_checkpoints(str(out))]
    assert steps == [3, 6]
    ck = out / "checkpoints" / "step_6"
    names = set(os.listdir(ck))
    assert {STATE_FILE, "model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"} <= names
    state = json.loads((ck / STATE_FILE).read_text())
    assert state["step"] == 6 and state["epoch"] == 1 and state["config"]["total_steps"] == 8
    # a half-written checkpoint (killed while saving) is never picked and is cleaned up
    junk = out / "checkpoints" / ".tmp-step_7"
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"partial")
    res = parse_and_run("text", _args(data, tiny_bert_dir, out, *extra, "--resume_from_checkpoint", "latest"))
    assert "resumed from " + str(ck) in capsys.readouterr().out
    assert not junk.exists() and res["timing"]["train_steps"] == 8
    # another setup cannot resume this checkpoint: one-line error, exit code 2
    rc = main("text", _args(data, tiny_bert_dir, out, *extra[:-4], "--per_device_train_batch_size", "8",
                            "--checkpointing_steps", "3", "--resume_from_checkpoint", str(ck)))
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert rc == 2 and len(err) == 1
    assert str(ck) in err[0] and "per_device_train_batch_size 16 there, 8 now" in err[0]


def test_non_finite_loss_stops_with_step_and_keeps_last_checkpoint(data, tiny_bert_dir, tmp_path, capsys):
    """lr 1e30 without clipping: after the first AdamW step the top layer's weights are
    ~1e30, its LayerNorm statistics overflow float32 and the next loss is NaN."""
    out = tmp_path / "nan"
    rc = main("text", _args(data, tiny_bert_dir, out, "--tuning", "partial", "--unfreeze_top_k", "1",
                            "--per_device_train_batch_size", "8", "--warmup_ratio", "0", "--max_grad_norm", "0",
                            "--checkpointing_steps", "1") + ["--learning_rate", "1e30"])
    assert rc == 2
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, lines
    assert "non-finite loss (nan) at step 2 (epoch 0)" in lines[0]
    last = out / "checkpoints" / "step_1"
    assert str(last) in lines[0] and "left intact" in lines[0]
    assert [s for s, _ in list_checkpoints(str(out))] == [1]
    assert json.loads((last / STATE_FILE).read_text())["step"] == 1
    w = load_file(str(last / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in w.values())
    assert max(t.abs().max().item() for t in w.values()) > 1e29  # the step that will overflow is in there
    assert not (out / "results.json").exists() and not (out / "model").exists()


def test_bf16_mixed_precision_on_cpu(data, tiny_bert_dir, tmp_path):
    """bf16 autocast on the CPU (partial tuning): the forward runs in bf16 (losses
    differ from fp32 in the 3rd-4th digit), weights stay fp32, the task is learnt.
    The bf16 run is a process of its own: Accelerate fixes the precision once per process."""
    extra = ["--tuning", "partial", "--num_train_epochs", "3", "--per_device_train_batch_size", "8"]
    p = _recipe(_args(data, tiny_bert_dir, tmp_path / "bf16", *extra, "--mixed_precision", "bf16"))
    parse_and_run("text", _args(data, tiny_bert_dir, tmp_path / "no", *extra))  # this process: fp32
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    rb, rf = (json.loads((tmp_path / mp / "results.json").read_text()) for mp in ("bf16", "no"))
    assert rb["args"]["mixed_precision"] == "bf16"
    lb, lf = ([h["train_loss"] for h in r["history"]] for r in (rb, rf))
    assert lb != lf and all(abs(b - f) <= 0.05 * f for b, f in zip(lb, lf))
    assert all(t.dtype == torch.float32 for t in _weights(tmp_path / "bf16").values())
    assert rb["test"]["accuracy"] >= 0.75 and abs(rb["test"]["accuracy"] - rf["test"]["accuracy"]) <= 0.1


def test_a_checkpoint_resumes_only_with_the_objective_options_it_ran(data, tiny_bert_dir, tmp_path, capsys):
    st = ["--tuning", "frozen", "--objective", "self_training", "--target_file", str(data / "target.jsonl"),
          "--self_training_teacher", "ema", "--self_training_ema_decay", "0.5", "--self_training_threshold", "0.5",
          "--num_train_epochs", "2", "--per_device_train_batch_size", "16", "--checkpointing_steps", "3"]
    out = tmp_path / "run"
    parse_and_run("text", _args(data, tiny_bert_dir, out, *st))
    ck = out / "checkpoints" / "step_6"
    saved = json.loads((ck / STATE_FILE).read_text())["config"]["objective_options"]
    assert saved["self_training_teacher"] == "ema" and saved["self_training_ema_decay"] == 0.5
    capsys.readouterr()
    for flag, old, new in (("--self_training_teacher", "'ema'", "'clean'"), ("--self_training_ema_decay", "0.5", "0.9")):
        i = st.index(flag)
        changed = st[:i + 1] + [new.strip("'")] + st[i + 2:]
        rc = main("text", _args(data, tiny_bert_dir, out, *changed, "--resume_from_checkpoint", str(ck)))
        err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
        assert rc == 2 and len(err) == 1 and "objective_options" in err[0], err
        assert f"'{flag[2:]}': {old}" in err[0] and str(ck) in err[0]
    # the same flags resume; the EMA teacher restarts from the model, and the run says so
    res = parse_and_run("text", _args(data, tiny_bert_dir, out, *st, "--resume_from_checkpoint", str(ck)))
    assert any("the EMA teacher starts again from the model" in w for w in res["warnings"])
