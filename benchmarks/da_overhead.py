#!/usr/bin/env python
"""Time per optimizer step of domain-adaptation objectives relative to erm.

text (default): all-MiniLM-L6-v2, partial tuning (top 2), Amazon books (source) and
kitchen (target), batch 32 per domain, max length 128; objectives erm, dann, mmd
(and ``--objectives`` for more, e.g. mlm simcse self_training).
speech: the wav2vec2 ``small`` preset (random weights, full tuning), FSDD speakers
george+jackson+nicolas (source) and theo (target, labels unused), batch 32 per
domain; erm, dann, mmd. ``--single_pass`` forces the old behaviour for speech
(source and target concatenated into one batch padded to the longest clip of both)
to measure what the separate, length-grouped target pass saves.
image: the image_digits.py setting (ResNet-18 from random weights, full tuning, lr 1e-3,
32 px; grey digits source -> random-colour target), batch 32 per domain. Images have one
size, so source and target go through the encoder as one batch of 64 (BatchNorm sees
both domains, as in DANN's reference implementation).

DA steps push the target batch through the encoder too (a second pass, each domain
padded to its own longest item), so about 2x is the expected cost. Seconds per step
= (train_seconds - selection_seconds) / steps: the per-epoch selection passes (DA
runs score the target split after each epoch) are left out. Every objective runs
``--repeats`` times, interleaved; the fastest run of each counts.

    python benchmarks/da_overhead.py [--steps 20] [--modality text|speech|image] [--single_pass]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import DATA, record  # noqa: E402


def text_args(a: argparse.Namespace, obj: str) -> List[str]:
    books, kitchen = (os.path.join(DATA, "amazon", f"{d}.jsonl") for d in ("books", "kitchen"))
    return ["--train_file", books, "--tuning", "partial", "--unfreeze_top_k", "2",
            "--max_seq_length", str(a.max_length)] + (["--target_file", kitchen] if obj != "erm" else [])


def speech_args(a: argparse.Namespace, obj: str) -> List[str]:
    fsdd = os.path.join(DATA, "fsdd", "manifest.csv")
    return ["--model_config", "small", "--tuning", "full", "--train_file", fsdd, "--train_filter",
            "speaker=george,jackson,nicolas;split=train", "--audio_column", "path", "--label_column", "digit"] + (
        ["--target_file", fsdd, "--target_filter", "speaker=theo;split=train"] if obj != "erm" else [])


def image_args(a: argparse.Namespace, obj: str) -> List[str]:
    """The image_digits.py setting: ResNet-18 from random weights, full tuning, 32 px digits,
    grey source -> random-colour target (``tltext data digits``, written once under ``--work``)."""
    from tltext.data.digits import write_digits

    data = os.path.join(a.work, "data_random_colour")
    write_digits(data, seed=0, size=32, shift="random_colour")  # reused when already written
    return ["--model_name_or_path", "resnet18", "--image_size", "32", "--train_dir", os.path.join(data, "source"),
            "--tuning", "full", "--learning_rate", "1e-3", "--image_hflip", "False"] + (
        ["--target_dir", os.path.join(data, "target")] if obj != "erm" else [])


def force_single_pass() -> None:
    """The previous speech behaviour: no separate target pass (one padded batch of both domains)."""
    from tltext.backbones.speech import SpeechBackbone

    init = SpeechBackbone.__init__

    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.padding_invariant = False

    SpeechBackbone.__init__ = patched


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--modality", default="text", choices=["text", "speech", "image"])
    p.add_argument("--work", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs",
                                                  "image_digits"), help="image: where the digits data is written")
    p.add_argument("--objectives", nargs="+", default=["dann", "mmd"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--single_pass", action="store_true", help="speech: one padded pass for both domains (before)")
    a = p.parse_args()
    from tltext.experiment import parse_and_run

    if a.single_pass:
        force_single_pass()
    build = {"text": text_args, "speech": speech_args, "image": image_args}[a.modality]
    per_step, every = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for obj in (["erm"] + a.objectives) * a.repeats:
            args = build(a, obj) + [
                "--validation_split_percentage", "0", "--objective", obj, "--max_train_steps", str(a.steps),
                "--per_device_train_batch_size", "32", "--output_dir", os.path.join(tmp, obj), "--overwrite_output_dir",
                "--disable_tqdm", "--report", "False", "--save_model", "False", "--seed", "0"]
            res = parse_and_run(a.modality, args)
            tm = res["timing"]  # the training steps only: not the per-epoch selection passes (target scoring)
            s = (tm["train_seconds"] - tm.get("selection_seconds", 0.0)) / tm["train_steps"]
            every[obj] = every.get(obj, []) + [s]
            per_step[obj] = min(per_step.get(obj, s), s)
    ratios = {f"{o}_over_erm": per_step[o] / per_step["erm"] for o in a.objectives}
    rows = {"modality": a.modality, "single_pass": a.single_pass, "seconds_per_step": per_step, "every_run": every,
            "steps": a.steps, "repeats": a.repeats, **ratios}
    if a.modality == "text":
        rows["max_length"] = a.max_length
    name = "da_overhead" + ("" if a.modality == "text" else f"_{a.modality}" + ("_single_pass" if a.single_pass else ""))
    cmd = (f"python benchmarks/da_overhead.py --modality {a.modality} --steps {a.steps} --repeats {a.repeats} "
           f"--objectives {' '.join(a.objectives)}" + (" --single_pass" if a.single_pass else ""))
    record(name, cmd, rows, [(f"{o}_step_vs_erm", ratios[f"{o}_over_erm"], "<=2.1") for o in a.objectives])
    return 0


if __name__ == "__main__":
    sys.exit(main())
