#!/usr/bin/env python
"""Domain-adaptive pretraining (DAPT): continued masked-LM training on unlabelled text.

Gururangan et al., "Don't Stop Pretraining: Adapt Language Models to Domains and
Tasks", ACL 2020. Flags follow transformers'
examples/pytorch/language-modeling/run_mlm_no_trainer.py:

    python recipes/language_modeling.py --model_name_or_path M --train_file kitchen.jsonl [more.jsonl ...] \
        --text_column text --max_seq_length 128 --mlm_probability 0.15 --per_device_train_batch_size 16 \
        --learning_rate 5e-5 --num_train_epochs 1 --seed 42 --output_dir OUT
    python recipes/text_classification.py --model_name_or_path OUT/model ...   # then fine-tune

It trains through tltext's one engine (tltext/training/engine.py: accumulation, mixed
precision, clipping, warmup, checkpoints and ``--resume_from_checkpoint``): the texts
are the engine's (label-free) training split and the step's objective is
``tltext.objectives.mlm.MaskedLMPretraining`` (BERT masking by transformers'
``DataCollatorForLanguageModeling``; the checkpoint's own MLM head, or a new one tied
to the input embeddings). ``OUT/model`` is a plain transformers checkpoint with its
tokenizer, written to a temporary folder and renamed: an ``AutoModelForMaskedLM``
(encoder + MLM head) for architectures whose head layout is known (BERT, RoBERTa,
DistilBERT), else the ``AutoModel`` encoder alone. ``OUT/results.json`` holds the
MLM loss / masked-token accuracy per epoch and the timing.
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from typing import List, Optional


@dataclass
class LanguageModelingArguments:
    model_name_or_path: Optional[str] = field(default=None, metadata={"help": "Local model folder (default: the offline all-MiniLM-L6-v2)."})
    train_file: List[str] = field(default_factory=list, metadata={"help": "One or more text files (JSONL/CSV/Parquet); labels are not read."})
    text_column: str = field(default="text")
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per text (longer ones are truncated)."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens chosen for masking (80/10/10)."})
    per_device_train_batch_size: int = field(default=8)
    learning_rate: float = field(default=5e-5)
    weight_decay: float = field(default=0.0)
    num_train_epochs: float = field(default=3.0)
    max_train_steps: Optional[int] = field(default=None, metadata={"help": "Overrides --num_train_epochs."})
    gradient_accumulation_steps: int = field(default=1)
    lr_scheduler_type: str = field(default="linear")
    warmup_ratio: float = field(default=0.0)
    max_grad_norm: float = field(default=1.0)
    mixed_precision: Optional[str] = field(default=None, metadata={"help": "no | fp16 | bf16."})
    seed: int = field(default=42)
    output_dir: Optional[str] = field(default=None)
    overwrite_output_dir: bool = field(default=False)
    checkpointing_steps: Optional[str] = field(default=None, metadata={"help": "N (steps) or 'epoch'."})
    resume_from_checkpoint: Optional[str] = field(default=None, metadata={"help": "A checkpoint dir or 'latest'."})
    logging_steps: int = field(default=50)
    dataloader_num_workers: int = field(default=0)
    disable_tqdm: bool = field(default=False)
    # read by the engine, fixed here (class attributes, not flags)
    early_stopping_patience = None
    trim_cpu_heap = True
    eval_only = False


def check_args(a: LanguageModelingArguments) -> None:
    if not a.output_dir:
        raise ValueError("--output_dir is required")
    if not a.train_file:
        raise ValueError("--train_file is required (one or more files of unlabelled text)")
    for f in a.train_file:
        if not os.path.exists(f):
            raise ValueError(f"--train_file {f}: no such file")
    if a.per_device_train_batch_size <= 0 or a.learning_rate <= 0:
        raise ValueError(f"--per_device_train_batch_size and --learning_rate must be positive; got "
                         f"{a.per_device_train_batch_size}, {a.learning_rate}")
    if a.num_train_epochs <= 0 and not a.max_train_steps:
        raise ValueError(f"--num_train_epochs must be positive; got {a.num_train_epochs}")
    out = a.output_dir
    if os.path.isdir(out) and os.listdir(out) and not a.overwrite_output_dir and not a.resume_from_checkpoint:
        raise ValueError(f"output directory {out} exists and is not empty; use --overwrite_output_dir to replace it")


def load_texts(a: LanguageModelingArguments) -> List[str]:
    from tltext.args import DataArguments
    from tltext.data.load import load_examples

    d = DataArguments(text_column=a.text_column, max_seq_length=a.max_seq_length)
    texts = [t for f in a.train_file for t in load_examples("text", f, d, require_labels=False).inputs]
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError(f"--train_file {' '.join(a.train_file)}: no non-empty text in column {a.text_column!r}")
    return texts


def save_checkpoint(backbone, head, final: str) -> str:
    """Encoder (+ MLM head where its layout is known) and tokenizer into ``final``,
    written to a temporary sibling folder and renamed; returns the class saved."""
    from transformers import AutoModelForMaskedLM

    from tltext.atomic import atomic_dir
    from tltext.objectives.mlm import HEAD_KEYS

    enc = backbone.encoder
    with atomic_dir(final) as tmp:
        if enc.config.model_type in HEAD_KEYS:
            mlm = AutoModelForMaskedLM.from_config(enc.config)
            getattr(mlm, mlm.base_model_prefix).load_state_dict(enc.state_dict(), strict=False)
            mlm.load_state_dict(head.checkpoint_state(enc.config.model_type), strict=False)
            mlm.tie_weights()
            mlm.save_pretrained(tmp)
            saved = type(mlm).__name__
        else:
            enc.save_pretrained(tmp)
            saved = type(enc).__name__
        backbone.tokenizer.save_pretrained(tmp)
    return saved


def run(a: LanguageModelingArguments) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from tltext.backbones import TextBackbone
    from tltext.atomic import atomic_write_json
    from tltext.modeling import TltextModel
    from tltext.objectives.mlm import MaskedLMPretraining
    from tltext.trainer import default_model
    from tltext.training.batching import SplitDataset
    from tltext.training.engine import Engine, TrainData, check_checkpoint_args
    from tltext.training.objective import TrainingModule
    from tltext.training.predict import item_lengths
    from tltext.training.tuning import plan_tuning

    check_args(a)
    check_checkpoint_args(a)
    acc = Accelerator(gradient_accumulation_steps=a.gradient_accumulation_steps,
                      **({"mixed_precision": a.mixed_precision} if a.mixed_precision else {}))
    set_seed(a.seed)
    path = a.model_name_or_path or default_model("text")
    try:
        backbone = TextBackbone.from_pretrained(path, max_length=a.max_seq_length)
    except (OSError, EnvironmentError) as e:
        raise ValueError(f"--model_name_or_path {path}: cannot load a model ({str(e).splitlines()[0][:200]})") from None
    objective = MaskedLMPretraining(backbone, a.mlm_probability)
    texts = load_texts(a)
    model = TltextModel.from_backbone(backbone, num_labels=1)  # the engine's model; its head is not trained
    model.requires_grad_(False)
    plan = plan_tuning(backbone, [objective], "full", a.learning_rate, a.learning_rate, a.weight_decay)
    data = TrainData(train=SplitDataset(texts), lengths=item_lengths(backbone, texts), backbone=backbone)
    os.makedirs(a.output_dir, exist_ok=True)
    fit = Engine(acc, a, disable_tqdm=a.disable_tqdm).fit(TrainingModule(model.to(acc.device), objective.to(acc.device)),
                                                         plan.param_groups, plan, data, selector=None)
    res = {"method": "DAPT (Gururangan et al. 2020): masked-LM on unlabelled text", "base_model": path,
           "mlm_head": "the checkpoint's" if objective.head.from_checkpoint else "new (tied to the input embeddings)",
           "num_texts": len(texts), "args": asdict(a),
           "timing": {"train_seconds": fit.train_seconds, "train_steps": fit.steps,
                      "seconds_per_step": fit.train_seconds / max(1, fit.steps)},
           "history": fit.history}
    if acc.is_main_process:
        final = os.path.join(a.output_dir, "model")
        res["saved_as"] = save_checkpoint(backbone, objective.head, final)
        res["model"] = final
        atomic_write_json(os.path.join(a.output_dir, "results.json"), res)
        last = fit.history[-1] if fit.history else {}
        print(f"DAPT: {len(texts)} texts, {fit.steps} steps, {fit.train_seconds:.1f}s; last epoch mlm loss "
              f"{last.get('mlm/loss', float('nan')):.4f}, masked-token accuracy {last.get('mlm/accuracy', float('nan')):.4f}; "
              f"model: {final} ({res['saved_as']})", flush=True)
    acc.wait_for_everyone()
    return res


def main(argv: Optional[List[str]] = None) -> int:
    from transformers import HfArgumentParser

    from tltext.data import DataError

    (a,) = HfArgumentParser((LanguageModelingArguments,)).parse_args_into_dataclasses(args=argv)
    try:
        run(a)
    except (ValueError, DataError, FileNotFoundError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
