"""Command-line arguments shared by every recipe (parsed with ``HfArgumentParser``).

Flag names follow the Hugging Face examples (``--model_name_or_path``,
``--per_device_train_batch_size``, ``--learning_rate``, ...)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from . import objectives
from .objectives import contrastive as contrastive_defaults

#: objective options that a backbone of the modality reads too (the speech encoder's SpecAugment
#: time masking in fine-tuning): never "ignored" there, whatever the objective
BACKBONE_OPTIONS: Dict[str, Tuple[str, ...]] = {"speech": ("mask_time_prob",)}

TUNINGS = ("frozen", "partial", "full")
#: objectives that start a trainable encoder's head from the linear probe (``Objective.lp_ft_head``)
_LP_FT = ", ".join(n for n in objectives.names() if objectives.get(n).lp_ft_head)
_HEAD_FROM_FEATURES = ", ".join(n for n in objectives.names() if objectives.builds_head(n))
_ITERATIONS, _BATCH, _PER_CLASS = (contrastive_defaults.DEFAULT_ITERATIONS, contrastive_defaults.DEFAULT_BATCH,
                                   contrastive_defaults.PER_CLASS)


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(default=None, metadata={"help": "Local dir, Hub id or (image) torchvision name. Text default: the offline all-MiniLM-L6-v2."})
    model_config: Optional[str] = field(default=None, metadata={"help": "Speech: build from a config file or preset ('tiny', 'small') instead of pretrained weights."})
    pooling: str = field(default="mean", metadata={"help": "mean (masked) or cls."})
    tuning: str = field(default="frozen", metadata={"help": "frozen | partial | full."})
    unfreeze_top_k: int = field(default=2, metadata={"help": "partial: number of top layer groups to train."})
    layerwise_lr_decay: float = field(default=1.0, metadata={"help": "Layer i from the top gets lr * g^i."})
    gradual_unfreeze: bool = field(default=False, metadata={"help": "Unfreeze one more group per epoch, top down."})
    objective: str = field(default="erm", metadata={"help": "One registered objective, or several with weights "
                           "joined by '+' (e.g. mmd:0.5+mcc). Registered: " + objectives.help_text()})
    da_weight: Optional[float] = field(default=None, metadata={"help": "Weight of every objective term given without "
                                       "NAME:WEIGHT (default: each objective's own, per --tuning where it depends on it: " + objectives.weights_help() + ")."})
    da_warmup_ratio: float = field(default=0.0, metadata={"help": "MMD: linear ramp of the weight over this fraction of training."})
    mmd_kernels: int = field(default=5, metadata={"help": "Number of Gaussian kernels in MK-MMD."})
    self_training_threshold: float = field(default=0.9, metadata={"help": "self_training: keep a target pseudo-label "
                                           "when its softmax probability is above this, in [0, 1] (1.0 keeps none)."})
    self_training_warmup: float = field(default=0.3, metadata={"help": "self_training: ramp the weight linearly "
                                        "from 0 over this fraction of training, in [0, 1]."})
    self_training_teacher: str = field(default="student", metadata={"choices": ["student", "clean", "ema"], "help":
                                       "self_training: what pseudo-labels the target: 'student' (the logits being "
                                       "trained, with dropout), 'clean' (the model itself without dropout, no "
                                       "gradient) or 'ema' (a mean teacher: the moving average of the model's "
                                       "weights, without dropout)."})
    self_training_ema_decay: float = field(default=0.99, metadata={"help": "self_training --self_training_teacher ema: "
                                           "the EMA decay d of the teacher's weights (theta' <- d * theta' + (1 - d) * "
                                           "theta each step), in [0, 1]."})
    discriminator_hidden_dim: int = field(default=256, metadata={"help": "DANN discriminator width."})
    adapter_dim: Optional[int] = field(default=None, metadata={"help": "Adapter (Linear + GELU) width between the pooled embedding and the head (0: none). Default: under --tuning frozen the objective's own (256 for the alignment and self-training objectives, else 0); under --tuning partial the encoder's hidden size for a cross-entropy classifier (an objective that does not start from an LP-FT head: not " + _LP_FT + ") with no --head_init probe on a text encoder (the two-layer head the Trainer's pooler + classifier trains); else 0."})
    head_dropout: float = field(default=0.1, metadata={"help": "Dropout probability before the head (and inside the adapter), in [0, 1)."})
    n_way: Optional[int] = field(default=None, metadata={"help": "prototypes: classes per episode (default: every class "
                                 "with k_shot+n_query examples, at most 64; --eval_episodes: 5)."})
    k_shot: Optional[int] = field(default=None, metadata={"help": "prototypes: support items per class (default ceil(m/2), "
                                  "m = min(10, smallest class count), e.g. 5 for --shots_per_class 10; --eval_episodes: 5)."})
    n_query: Optional[int] = field(default=None, metadata={"help": "prototypes: query items per class (default m - k_shot; "
                                   "--eval_episodes: 5)."})
    episodes_per_epoch: Optional[int] = field(default=None, metadata={"help": "prototypes: training episodes per "
                                              "epoch (default: one pass over the training set when the encoder trains, "
                                              "ceil(examples / (n_way x (k_shot + n_query))); 100 for a frozen "
                                              "encoder's --adapter_dim adapter, whose steps are cheap)."})
    contrastive_loss: str = field(default="supcon", metadata={"help": "contrastive: supcon (Khosla et al. 2020, class-balanced "
                                  "batches) or pairs (SetFit: CosineSimilarityLoss on positive/negative pairs)."})
    contrastive_temperature: float = field(default=0.1, metadata={"help": "contrastive supcon: temperature tau of the similarities."})
    contrastive_iterations: Optional[int] = field(default=None, metadata={"help": "contrastive: per epoch, pairs: R positive and R "
                                        f"negative pairs per example (SetFit's num_iterations, default {_ITERATIONS['pairs']}); supcon: passes "
                                        f"over the training set (default {_ITERATIONS['supcon']})."})
    contrastive_batch_size: Optional[int] = field(default=None, metadata={"help": "contrastive: texts per step (pairs: 2 per pair, "
                                        f"default {_BATCH['pairs']} = SetFit's {_BATCH['pairs'] // 2} pairs; supcon: default {_BATCH['supcon']} = "
                                        f"{_BATCH['supcon'] // _PER_CLASS} classes x {_PER_CLASS}; a class's leftover single example joins its last "
                                        f"chunk, so 5 shots make one chunk of 5)."})
    contrastive_head: str = field(default="logreg", metadata={"help": "contrastive: head fitted on the tuned training features: "
                                  "logreg (scikit-learn LogisticRegression, C=1) or prototype (cosine nearest centroid)."})
    layer_weighting: bool = field(default=False, metadata={"help": "Speech: learnable weighted sum of hidden layers (SUPERB)."})
    freeze_feature_encoder: bool = field(default=False, metadata={"help": "Speech: keep the CNN feature encoder frozen."})
    speed_perturbation: Optional[List[float]] = field(default=None, metadata={"help": "Speech: training clips are "
                                     "resampled by a factor drawn from these (Ko et al. 2015 speed perturbation, "
                                     "e.g. 0.9 1.0 1.1; torchaudio.functional.speed)."})
    noise_snr_db: Optional[List[float]] = field(default=None, metadata={"help": "Speech: white noise added to training "
                               "clips at an SNR drawn uniformly from [LOW, HIGH] dB (e.g. 10 40; torchaudio.functional.add_noise)."})
    mask_time_prob: Optional[float] = field(default=None, metadata={"help": "Speech: SpecAugment time masking in "
                                 "training, the model's mask_time_prob (spans of mask_time_length frames; presets: 0, off)."})
    allow_random_weights: bool = field(default=False, metadata={"help": "Allow --tuning frozen/partial on a backbone "
                                       "with no pretrained weights (random features: rarely what you want)."})
    weights_path: Optional[str] = field(default=None, metadata={"help": "Image: local state dict (or torchvision:WEIGHTS when online)."})
    image_size: int = field(default=224)
    image_hflip: bool = field(default=True, metadata={"help": "Image: random horizontal flips in training (turn off for digits/text)."})
    image_min_crop_scale: float = field(default=0.08, metadata={"help": "Image: smallest area fraction of the training RandomResizedCrop."})


@dataclass
class DataArguments:
    train_file: Optional[str] = field(default=None, metadata={"help": "Labelled source data: JSONL/CSV/Parquet, a folder or a datasets name."})
    validation_file: Optional[str] = field(default=None, metadata={"help": "Labelled validation data (same format "
                                           "as --train_file) for model selection; without it, "
                                           "--validation_split_percentage of the training data is held out."})
    test_file: Optional[str] = field(default=None, metadata={"help": "Labelled test data (the target domain's for DA)."})
    target_file: Optional[str] = field(default=None, metadata={"help": "Unlabelled target-domain data for DA (labels there are ignored)."})
    text_column: str = field(default="text")
    audio_column: str = field(default="audio")
    image_column: str = field(default="image")
    label_column: str = field(default="label")
    train_filter: Optional[str] = field(default=None, metadata={"help": "Row filter 'col=v1,v2;col2=v' (e.g. speaker=george,jackson)."})
    validation_filter: Optional[str] = field(default=None)
    test_filter: Optional[str] = field(default=None)
    target_filter: Optional[str] = field(default=None)
    label_rename: Optional[str] = field(default=None, metadata={"help": "Rename raw labels in every split, 'zero=0,one=1' (e.g. to match a source corpus)."})
    max_seq_length: Optional[int] = field(default=None, metadata={"help": "Text: tokens per text (longer texts are "
                                "truncated; batches are padded only to their longest text). Default: 256, or the "
                                "model's position limit when smaller; a larger value given here is clamped, with a "
                                "warning, to that limit. results.json records the length used."})
    encoding: Optional[str] = field(default=None, metadata={"help": "Text encoding of CSV/TSV/JSON(L) files "
                                    "(default UTF-8), e.g. cp1252 or latin-1."})
    max_duration_seconds: Optional[float] = field(default=None)
    validation_split_percentage: float = field(default=10.0)
    shots_per_class: Optional[int] = field(default=None, metadata={"help": "Build a K-shot training set (stratified, by seed)."})
    allow_fewer_shots: bool = field(default=False, metadata={"help": "--shots_per_class: use every example of a "
                                    "class that has fewer than K (default: a one-line error naming the class)."})
    max_train_samples: Optional[int] = field(default=None)
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Score only the first N rows of "
                                            "--test_file (the validation data is not truncated)."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Embedding cache (default $TLTEXT_CACHE or ~/.cache/tltext)."})


@dataclass
class TrainArguments:
    output_dir: str = field(default=None, metadata={"help": "Where results.json and model/ go."})
    overwrite_output_dir: bool = field(default=False)
    seed: int = field(default=42)
    learning_rate: Optional[float] = field(default=None, metadata={"help": "Default 1e-3 for frozen, 1e-4 for partial (5e-5 with an LP-FT head: the objectives " + _LP_FT + ", and speech and image encoders with loaded weights), 5e-5 for full."})
    head_learning_rate: Optional[float] = field(default=None, metadata={"help": "Head/adapter/discriminator lr (default: lr if frozen, 10x lr otherwise; an LP-FT head takes "
                                    "--learning_rate, the objective's own new parts such as a discriminator keep 10x)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Passes over the training data (fractions "
                                    "allowed; an objective with its own batch sampler defines its epoch)."})
    head_init: Optional[str] = field(default=None, metadata={"help": "partial/full with cross-entropy: 'probe' starts "
                           "the head from the linear probe on the pretrained embeddings (LP-FT, Kumar et al. 2022; head "
                           "lr = --learning_rate unless --head_learning_rate), 'random' from a random head (head lr "
                           "10x). Default: probe, under partial and full, for the objectives whose target terms read the head's predictions from the first step or were measured so (" + _LP_FT + "), and for partial without an adapter; random for other full fine-tuning (erm, dann, mmd, ...), and behind the default partial adapter (see --adapter_dim). Speech and image encoders with loaded weights: probe under partial and full, whatever the objective (no default adapter)."})
    linear_probe: bool = field(default=True, metadata={"help": "--tuning frozen with plain cross-entropy and no adapter: "
                               "fit the head to convergence as a logistic regression (scikit-learn lbfgs; C chosen on "
                               "--validation_file when given, else by stratified 5-fold cross-validation on the "
                               "labelled examples, a held-out validation split pooled back in) instead of "
                               "--num_train_epochs of AdamW."})
    max_train_steps: Optional[int] = field(default=None)
    wise_ft_alpha: Optional[float] = field(default=None, metadata={"help": "WiSE-FT (Wortsman et al., CVPR 2022): after "
                                           "training, set the trained encoder weights to (1 - a) * pretrained + a * "
                                           "fine-tuned, then fit the head on the interpolated features; in (0, 1], 1: no "
                                           "interpolation. Applies to objectives that compute their head from the features "
                                           "(" + _HEAD_FROM_FEATURES + ") on a trainable encoder. Default: unset, 1 (off: on "
                                           "BANKING77 at 10 shots the head fitted on the tuned encoder scored higher "
                                           "on held-out train rows than 0.5, benchmarks/results/"
                                           "contrastive_iterations1.md)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Examples per process per step, as in "
                                             "the Hugging Face examples: the global batch is this x processes x "
                                             "--gradient_accumulation_steps (the summary prints it)."})
    per_device_eval_batch_size: int = field(default=64)
    gradient_accumulation_steps: int = field(default=1)
    weight_decay: float = field(default=0.01)
    warmup_ratio: float = field(default=0.1)
    lr_scheduler_type: str = field(default="linear")
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the gradient norm to this; 0 or less: no "
                                  "clipping (as in the transformers Trainer)."})
    mixed_precision: Optional[str] = field(default=None, metadata={"help": "no | fp16 | bf16 (default: accelerate's config)."})
    class_weights: Optional[str] = field(default=None, metadata={"help": "'balanced' for inverse-frequency class weights."})
    early_stopping_patience: Optional[int] = field(default=None)
    metric_for_best_model: str = field(default="accuracy")
    metric: List[str] = field(default_factory=lambda: ["accuracy", "f1"], metadata={"help": "Metrics: bundled names or any evaluate Hub metric."})
    selection: str = field(default="source_validation", metadata={"help": "Which epoch to keep: source_validation | "
                           "information_maximisation | snd | dev (label-free, on the unlabelled target) | last; the "
                           "--compare_source_only guard decides with the same criterion."})
    oracle_selection: bool = field(default=False, metadata={"help": "Select on TARGET test labels (an oracle run; labelled so)."})
    record_oracle: bool = field(default=False, metadata={"help": "Record the metric on the TARGET test labels each epoch "
                                "(history: oracle_test_metric) WITHOUT selecting on it, to compare selection criteria "
                                "with the oracle afterwards (benchmarks/selection_table.py)."})
    compare_source_only: bool = field(default=False, metadata={"help": "Also train the erm model with the same seed/tuning and report it."})
    eval_episodes: int = field(default=0, metadata={"help": "prototypes: episodic test evaluation with N episodes."})
    eval_only: bool = field(default=False, metadata={"help": "Evaluate --model_name_or_path (a tltext model) without training."})
    report_to: str = field(default="none", metadata={"help": "Accelerate trackers: none, all, tensorboard, wandb, ... "
                           "(comma-separated); each needs its package installed (e.g. pip install tensorboard)."})
    logging_steps: int = field(default=50)
    checkpointing_steps: Optional[str] = field(default=None, metadata={"help": "N (steps) or 'epoch'."})
    resume_from_checkpoint: Optional[str] = field(default=None, metadata={"help": "A checkpoint dir or 'latest'."})
    embed_batch_size: int = field(default=128)
    dataloader_num_workers: int = field(default=0)
    group_by_length: bool = field(default=True, metadata={"help": "partial/full text and speech: draw training batches "
                                  "of similar length (mega-batches of 50 batches sorted by length, as the transformers "
                                  "Trainer's group_by_length), which pads less; False: uniformly random batches."})
    trim_cpu_heap: bool = field(default=True, metadata={"help": "On CPU, return freed heap pages to the OS before a long step that grew (larger than the last, >= 3/4 of the largest; glibc malloc_trim; lower peak RSS)."})
    disable_tqdm: bool = field(default=False)
    save_model: bool = field(default=True)
    report: bool = field(default=True, metadata={"help": "Write OUT/report.md with plots."})
    report_tsne: bool = field(default=True, metadata={"help": "t-SNE panels in the report (a few seconds for 1000 points; PCA is always drawn)."})
    push_to_hub: bool = field(default=False)
    hub_model_id: Optional[str] = field(default=None)
    hub_private_repo: bool = field(default=False)
    hub_token: Optional[str] = field(default=None)


ARGUMENT_CLASSES = (ModelArguments, DataArguments, TrainArguments)
