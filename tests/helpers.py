"""What several test files share: toy review files and a recipe run that keeps what it computed on its test split."""
import json
from pathlib import Path

from tltext import experiment, trainer

POS = ["great product works well", "love it very good", "excellent and great", "good value love",
       "works great", "very good indeed", "really love this", "great great great"]
NEG = ["terrible broke fast", "awful do not buy", "bad and broken", "waste of money awful",
       "broke after a day", "very bad product", "terrible awful bad", "hate it broken"]


def write_jsonl(path: Path, rows) -> str:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def reviews(n_each: int = 8, repeat: int = 3, pos: str = "pos", neg: str = "neg"):
    """``n_each`` positive then ``n_each`` negative toy reviews, each repeated ``repeat`` times."""
    return [{"text": t, "label": pos} for t in POS[:n_each] * repeat] + \
           [{"text": t, "label": neg} for t in NEG[:n_each] * repeat]


def write_domains(d: Path, names=("src", "tgt"), n_each: int = 8, repeat: int = 3) -> Path:
    """A labelled source file and a shifted target file (every second review + " in the kitchen")."""
    src = reviews(n_each, repeat)
    write_jsonl(d / f"{names[0]}.jsonl", src)
    write_jsonl(d / f"{names[1]}.jsonl", [{"text": r["text"] + " in the kitchen", "label": r["label"]} for r in src[::2]])
    return d


def run_and_capture(monkeypatch, modality: str, argv):
    """Run a recipe; keep what it computed on its test split (raw inputs, labels, logits, label names)."""
    seen = {}
    original = trainer.default_callbacks

    class Capture(trainer.TrainerCallback):
        def on_train_end(self, result, arts):
            seen.update(inputs=list(arts.raw_inputs["test"]), labels=list(arts.labels["test"]),
                        logits=arts.logits["test"].clone(), names=list(arts.label_names))

    monkeypatch.setattr(trainer, "default_callbacks", lambda t: original(t) + [Capture()])
    return experiment.parse_and_run(modality, argv), seen
