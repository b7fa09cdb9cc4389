#!/usr/bin/env python
"""Self-supervised wav2vec 2.0 pretraining of a speech encoder on unlabelled audio (stage 0).

    python recipes/audio_pretraining.py --model_config tiny        # random weights, or
                                        --model_name_or_path DIR   # continue from a checkpoint
        --train_file manifest.csv [--train_filter 'split=train'] --audio_column path \
        [--mask_time_prob 0.65 --mask_time_length 10 --num_negatives 100 \
         --max_gumbel_temperature 2.0 --min_gumbel_temperature 0.5 --gumbel_temperature_decay 0.999995] \
        --num_train_epochs 10 --learning_rate 1e-3 --output_dir OUT

Flags follow transformers' ``run_wav2vec2_pretraining_no_trainer.py``; the loss, masking and
Gumbel schedule are ``--objective wav2vec2`` (tltext/objectives/wav2vec2_pretraining.py), trained
by the one engine through ``tltext.Trainer``. Labels are never used (a label column in the
manifest is ignored, and said once). Clips with fewer CNN frames than one masked span
(``--mask_time_length``, after the ``--max_duration_seconds`` crop) and silent clips (peak
below ``--silence_threshold``) are skipped with a count; none left is a one-line error.

Writes ``OUT/model``: a ``Wav2Vec2ForPreTraining`` checkpoint (encoder, quantizer, projections)
with its feature extractor, which ``recipes/audio_classification.py --model_name_or_path
OUT/model`` fine-tunes and ``--model_name_or_path OUT/model`` here continues; and
``OUT/results.json`` (per-epoch loss, contrastive / diversity terms, codebook perplexity).
"""
import os
import sys
from dataclasses import dataclass, field, replace
from typing import List, Optional, Tuple

import numpy as np

from tltext.args import DataArguments, ModelArguments, TrainArguments


@dataclass
class PretrainingArguments(ModelArguments):
    """``ModelArguments`` + the wav2vec 2.0 pretraining flags (read by ``--objective wav2vec2``)."""

    objective: str = field(default="wav2vec2", metadata={"help": "An objective that replaces cross-entropy (default wav2vec2)."})
    tuning: str = field(default="full", metadata={"help": "full (default) or partial."})
    mask_time_prob: float = field(default=0.65, metadata={"help": "Probability that a frame starts a masked span (paper: 0.065 x 10 spans ~ 0.65 with span 10; transformers' script: 0.65)."})
    mask_time_length: Optional[int] = field(default=None, metadata={"help": "Masked span length in frames (default: the model config's, 10)."})
    num_negatives: Optional[int] = field(default=None, metadata={"help": "Distractors per masked frame (default: the model config's, 100)."})
    max_gumbel_temperature: float = field(default=2.0)
    min_gumbel_temperature: float = field(default=0.5)
    gumbel_temperature_decay: float = field(default=0.999995, metadata={"help": "Per-update factor; 0: geometric from max to min over the run (progress-based)."})
    diversity_loss_weight: Optional[float] = field(default=None, metadata={"help": "alpha of the diversity loss (default: the model config's, 0.1)."})
    contrastive_logits_temperature: Optional[float] = field(default=None, metadata={"help": "kappa (default 0.1)."})
    num_codevector_groups: Optional[int] = field(default=None, metadata={"help": "G codebooks (default: the model config's, 2)."})
    num_codevectors_per_group: Optional[int] = field(default=None, metadata={"help": "V entries per codebook (default 320)."})
    codevector_dim: Optional[int] = field(default=None, metadata={"help": "Width of the quantized vectors (default 256)."})
    proj_codevector_dim: Optional[int] = field(default=None, metadata={"help": "Width of the contrastive space (default 256)."})
    silence_threshold: float = field(default=1e-4, metadata={"help": "Skip clips whose peak |x| is below this (-80 dBFS)."})


def usable_clips(inputs: List[np.ndarray], backbone, span: int, silence: float) -> Tuple[List[int], int, int]:
    """``(kept indices, number too short, number silent)``: a clip is too short when the CNN gives
    it fewer than ``max(span, 2)`` frames (after the backbone's ``max_duration_seconds`` crop), silent
    when ``max |x| < silence``."""
    enc = backbone.encoder
    max_len = None if backbone.max_duration_seconds is None else int(round(backbone.max_duration_seconds * backbone.sampling_rate))
    keep, short, silent = [], 0, 0
    for i, x in enumerate(inputs):
        n = len(x) if max_len is None else min(len(x), max_len)
        frames = int(enc._get_feat_extract_output_lengths(n)) if n >= backbone.min_samples else 0
        if frames < max(span, 2):
            short += 1
        elif float(np.max(np.abs(x))) < silence:
            silent += 1
        else:
            keep.append(i)
    return keep, short, silent


def load_unlabelled(m: PretrainingArguments, d: DataArguments, backbone, span: int):
    """The usable clips of ``--train_file`` (``--train_filter``); prints what was skipped."""
    from tltext.data import DataError
    from tltext.data.load import load_examples

    if not d.train_file:
        raise ValueError("--train_file is required (unlabelled audio: a manifest, a folder or a datasets dataset)")
    ex = load_examples("speech", d.train_file, d, False, d.train_filter, backbone.sampling_rate)
    if ex.labels is not None:
        print(f"labels: column {d.label_column!r} of {d.train_file} is ignored (self-supervised pretraining uses no labels)")
    keep, short, silent = usable_clips(ex.inputs, backbone, span, m.silence_threshold)
    hop = int(np.prod(backbone.encoder.config.conv_stride))
    min_ms = 1000.0 * ((max(span, 2) - 1) * hop + backbone.min_samples) / backbone.sampling_rate
    what = (f"{short} shorter than one masked span (--mask_time_length {span} frames: {min_ms:.0f} ms) "
            f"and {silent} silent (peak below --silence_threshold {m.silence_threshold:g})")
    if not keep:
        raise DataError(f"--train_file {d.train_file}: no usable clip for pretraining among {len(ex.inputs)}: {what}")
    print(f"pretraining data: {len(keep)} of {len(ex.inputs)} clips from {d.train_file}; skipped {what}")
    return [ex.inputs[i] for i in keep], {"clips": len(ex.inputs), "used": len(keep), "too_short": short, "silent": silent}


def pretrain(m: PretrainingArguments, d: DataArguments, t: TrainArguments):
    """Build or load the encoder, train ``--objective`` on the unlabelled clips with ``tltext.Trainer``,
    save ``OUT/model`` (``Wav2Vec2ForPreTraining`` + feature extractor). Returns the run's results dict."""
    from accelerate.utils import set_seed

    from tltext import objectives
    from tltext.atomic import atomic_write_json
    from tltext.experiment import build_backbone, check_args, prepare_output_dir
    from tltext.objectives.wav2vec2_pretraining import check_options, describe_config, trained_heads
    from tltext.trainer import Split, Trainer, make_accelerator

    check_args(m, d, t, "speech")
    if not objectives.replaces_cross_entropy(m.objective):
        raise ValueError(f"--objective {m.objective}: pretraining uses no labels; expected an objective that replaces "
                         "cross-entropy (wav2vec2)")
    check_options(m)
    acc = make_accelerator(t)
    prepare_output_dir(t, acc.is_main_process)
    set_seed(t.seed)
    backbone = build_backbone("speech", replace(m, mask_time_prob=None), d)  # the objective masks, not SpecAugment
    span = int(m.mask_time_length or getattr(backbone.encoder.config, "mask_time_length", 10))
    clips, counts = load_unlabelled(m, d, backbone, span)
    run_args = replace(t, save_model=False, report=False, head_learning_rate=t.head_learning_rate or t.learning_rate)
    trainer = Trainer(model=backbone, args=run_args, model_args=m, data_args=d, accelerator=acc,
                      label2id={"unlabelled": 0}, train_dataset=Split(clips, [0] * len(clips), d.train_file),
                      callbacks=[])
    trainer.train()
    res = trainer.result.as_dict()
    heads = trained_heads(backbone.encoder)
    res.update(pretraining_data=counts, pretraining_config={**describe_config(heads.config), "mask_time_prob": m.mask_time_prob,
                                                            "quantizer_from_checkpoint": heads.loaded_heads})
    if acc.is_main_process:
        if t.save_model:
            save_pretraining_model(heads.pretraining_model(backbone.encoder), backbone, t.output_dir)
            res.setdefault("paths", {})["model"] = os.path.join(t.output_dir, "model")
        atomic_write_json(os.path.join(t.output_dir, "results.json"), res)
        print_curve(res)
    acc.wait_for_everyone()
    return res


def save_pretraining_model(model, backbone, out_dir: str) -> str:
    """``OUT/model`` (weights, config, feature extractor) written to a temporary folder, then renamed."""
    from tltext.atomic import atomic_dir

    final = os.path.join(out_dir, "model")
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp)
        backbone.save_preprocessor(tmp)
    return final


def print_curve(res) -> None:
    for h in res.get("history", []):
        print(f"epoch {h['epoch']}: loss {h['train_loss']:.4f}  contrastive {h.get('wav2vec2/contrastive', float('nan')):.4f}  "
              f"diversity {h.get('wav2vec2/diversity', float('nan')):.4f}  perplexity {h.get('wav2vec2/perplexity', float('nan')):.1f}  "
              f"accuracy {h.get('wav2vec2/accuracy', float('nan')):.3f}  temperature {h.get('wav2vec2/gumbel_temperature', float('nan')):.3f}")
    print(f"time: train {res['timing']['train_seconds']:.1f}s  ->  {res.get('paths', {}).get('model', '(not saved)')}")


def main(argv=None) -> int:
    from transformers import HfArgumentParser

    from tltext.data import DataError

    parser = HfArgumentParser((PretrainingArguments, DataArguments, TrainArguments))
    m, d, t = parser.parse_args_into_dataclasses(args=argv)
    try:
        pretrain(m, d, t)
    except (ValueError, DataError, FileNotFoundError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
