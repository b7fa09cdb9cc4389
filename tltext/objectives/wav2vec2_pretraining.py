"""wav2vec 2.0 self-supervised pretraining: contrastive prediction of masked, quantized frames.

Baevski, Zhou, Mohamed & Auli, "wav2vec 2.0: A Framework for Self-Supervised Learning of
Speech Representations", NeurIPS 2020 (arXiv:2006.11477), sec. 3.2 and 3.3.

On a batch of waveforms, with the speech backbone's wav2vec2 encoder:

    z_t = CNN(x)                      latent frames (20 ms), t = 1..T   ("extract_features")
    M   = spans of ``mask_time_length`` frames, started with probability p = ``mask_time_prob``
          (transformers' ``_compute_mask_indices``); masked z_t are replaced by a learned vector
    c_t = Transformer(z)_t            context frames
    q_t = GumbelVQ(z_t)               G codebooks of V entries, Gumbel-softmax at temperature tau
    L_m = -1/|M| sum_{t in M} log  exp(sim(W_c c_t, W_q q_t) / kappa)
                                   / sum_{q~ in Q_t} exp(sim(W_c c_t, W_q q~) / kappa)     (eq. 3)
          Q_t: q_t and K distractors from other masked frames of the same clip
          (``_sample_negative_indices``), sim = cosine, kappa = 0.1
    L_d = (G V - exp(H(p_bar))) / (G V)      codebook diversity, p_bar: batch-mean softmax
                                              of the masked frames' code logits           (eq. 4)
    L   = L_m + alpha L_d,  alpha = ``diversity_loss_weight`` (0.1)                      (eq. 2)

``exp(H(p_bar))`` summed over groups is the codebook perplexity (logged; at most G V).
The quantizer (``Wav2Vec2GumbelVectorQuantizer``), the projections W_c, W_q and the
contrastive logits (``Wav2Vec2ForPreTraining.compute_contrastive_logits``) are
transformers' own; L_m is normalised per masked frame (transformers' ForPreTraining
returns the sum; its ``run_wav2vec2_pretraining_no_trainer.py`` divides by |M|).
Gumbel temperature: ``tau_n = max(tau_max * decay^n, tau_min)`` at update n (transformers'
script; paper: 2 -> 0.5, decay 0.999995), or, with ``--gumbel_temperature_decay 0``,
progress-based: ``tau(p) = tau_max (tau_min / tau_max)^p`` over training progress p in [0, 1].

No labels are used: the term replaces the cross-entropy and the classifier is not trained.
Clips with fewer than ``mask_time_length`` frames cannot hold a masked span; such rows of
a batch are left out of the loss (``recipes/audio_pretraining.py`` skips them up front).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import weakref
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import register
from .base import Objective, ObjectiveSetup, Step, TermOutput

#: flag -> default (the paper's / transformers' pretraining script's values)
DEFAULTS: Dict[str, Any] = {
    "mask_time_prob": 0.65, "mask_time_length": 10, "num_negatives": 100,
    "max_gumbel_temperature": 2.0, "min_gumbel_temperature": 0.5, "gumbel_temperature_decay": 0.999995,
    "diversity_loss_weight": 0.1, "contrastive_logits_temperature": 0.1,
    "num_codevector_groups": None, "num_codevectors_per_group": None, "codevector_dim": None, "proj_codevector_dim": None,
}
#: flags that are also ``Wav2Vec2Config`` fields (None: keep the encoder config's value)
CONFIG_FIELDS = ("mask_time_length", "num_negatives", "diversity_loss_weight", "contrastive_logits_temperature",
                 "num_codevector_groups", "num_codevectors_per_group", "codevector_dim", "proj_codevector_dim")
FLOAT_FIELDS = ("diversity_loss_weight", "contrastive_logits_temperature")
HEAD_PREFIXES = ("quantizer.", "project_hid.", "project_q.")
#: id(encoder) -> (weak reference to the encoder, the last objective built on it)
_LAST: Dict[int, Tuple[Any, "Wav2Vec2Pretraining"]] = {}


def trained_heads(encoder) -> "Wav2Vec2Pretraining":
    """The last ``wav2vec2`` objective built on ``encoder`` (its quantizer and projections,
    trained along with it), to save the pretraining model after ``Trainer.train``.
    Raises ValueError when none was built."""
    ref, obj = _LAST.get(id(encoder), (lambda: None, None))
    if obj is None or ref() is not encoder:
        raise ValueError("no --objective wav2vec2 was trained on this encoder")
    return obj


def option(args: Any, name: str) -> Any:
    """``args.<name>`` when the run's arguments have it and it is not None, else ``DEFAULTS[name]``."""
    v = getattr(args, name, None) if args is not None else None
    return DEFAULTS[name] if v is None else v


def check_options(args: Any) -> None:
    """One-line ValueError naming the flag for out-of-range pretraining options."""
    p, length, k = option(args, "mask_time_prob"), option(args, "mask_time_length"), option(args, "num_negatives")
    t_max, t_min, decay = (option(args, n) for n in ("max_gumbel_temperature", "min_gumbel_temperature",
                                                     "gumbel_temperature_decay"))
    if not 0.0 < float(p) <= 1.0:
        raise ValueError(f"--mask_time_prob {p}: expected a probability in (0, 1]")
    if int(length) < 1:
        raise ValueError(f"--mask_time_length {length}: expected at least 1 frame")
    if int(k) < 1:
        raise ValueError(f"--num_negatives {k}: expected at least 1 distractor")
    if not 0.0 < float(t_min) <= float(t_max):
        raise ValueError(f"--min_gumbel_temperature {t_min} / --max_gumbel_temperature {t_max}: expected 0 < min <= max")
    if not 0.0 <= float(decay) <= 1.0:
        raise ValueError(f"--gumbel_temperature_decay {decay}: expected a factor in [0, 1] (0: progress-based)")
    if float(option(args, "diversity_loss_weight")) < 0:
        raise ValueError(f"--diversity_loss_weight {option(args, 'diversity_loss_weight')}: expected >= 0")


def pretraining_config(encoder_config, args: Any):
    """The encoder's ``Wav2Vec2Config`` with the pretraining flags that were given (codebook
    sizes, negatives, span length, ...) written into it; raises ValueError naming the flag
    when ``codevector_dim`` is not divisible by ``num_codevector_groups``."""
    cfg = copy.deepcopy(encoder_config)
    for name in CONFIG_FIELDS:
        v = getattr(args, name, None) if args is not None else None
        if v is not None:
            setattr(cfg, name, float(v) if name in FLOAT_FIELDS else int(v))
    if cfg.codevector_dim % cfg.num_codevector_groups:
        raise ValueError(f"--codevector_dim {cfg.codevector_dim} must be divisible by --num_codevector_groups "
                         f"{cfg.num_codevector_groups}")
    return cfg


def speech_encoder(model: Any):
    """The wav2vec2-style encoder of a ``TltextModel``'s speech backbone; ValueError otherwise."""
    enc = getattr(getattr(model, "backbone", None), "encoder", None)
    if enc is None or not all(hasattr(enc, a) for a in ("feature_extractor", "feature_projection",
                                                         "_get_feat_extract_output_lengths")):
        raise ValueError("--objective wav2vec2 needs a wav2vec2-style speech backbone (recipes/audio_pretraining.py "
                         "or recipes/audio_classification.py with --model_config / a wav2vec2 checkpoint)")
    return enc


def gumbel_temperature(updates: int, progress: float, t_max: float, t_min: float, decay: float) -> float:
    """``max(t_max * decay^updates, t_min)``, or ``t_max * (t_min / t_max)^progress`` when ``decay == 0``."""
    if decay == 0.0:
        p = min(max(float(progress), 0.0), 1.0)
        return float(t_max * (t_min / t_max) ** p)
    return float(max(t_max * decay ** int(updates), t_min))


def frame_lengths(encoder, attention_mask: Optional[Tensor], batch: int, num_samples: int) -> Tensor:
    """Frames per clip ``[B]`` (long) after the CNN, from the waveform mask ``[B, N]``."""
    n = attention_mask.sum(-1) if attention_mask is not None else torch.full((batch,), num_samples)
    return encoder._get_feat_extract_output_lengths(n.long().cpu()).long()


def time_mask(lengths: Tensor, num_frames: int, prob: float, span: int) -> np.ndarray:
    """``[B, T]`` bool: ``_compute_mask_indices`` spans (>= 1 per clip) inside each clip's
    frames; rows of clips shorter than ``span`` frames are all False."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

    ok = lengths >= max(span, 2)
    mask = np.zeros((len(lengths), num_frames), dtype=bool)
    if ok.any() and span <= num_frames:
        rows = ok.nonzero().flatten()
        frame_mask = (torch.arange(num_frames)[None, :] < lengths[rows, None]).long()
        mask[rows.numpy()] = _compute_mask_indices((len(rows), num_frames), mask_prob=prob, mask_length=span,
                                                   attention_mask=frame_mask, min_masks=2 if span == 1 else 1)
        mask &= (np.arange(num_frames)[None, :] < lengths.numpy()[:, None])
    return mask


@register
class Wav2Vec2Pretraining(Objective):
    """``L_m + alpha L_d`` on masked frames (module docstring); logs ``contrastive``,
    ``diversity``, ``perplexity`` (codebook perplexity, at most G V), ``accuracy`` (masked
    frames whose true quantized frame scores highest), ``masked_fraction`` and
    ``gumbel_temperature``."""

    name = "wav2vec2"
    modalities = ("speech",)
    pretraining_recipe = "recipes/audio_pretraining.py"
    paper = ("Baevski et al., wav2vec 2.0: A Framework for Self-Supervised Learning of Speech Representations, "
             "NeurIPS 2020")
    description = ("self-supervised wav2vec 2.0 pretraining of a speech encoder: contrastive loss over masked, "
                   "quantized frames + codebook diversity loss (no labels; the classifier is not trained)")
    tags = ("wav2vec2", "self-supervised", "pretraining")
    needs_token_inputs = True
    replaces_cross_entropy = True
    trains_classifier = False
    options = tuple(DEFAULTS)

    def __init__(self, setup: ObjectiveSetup):
        super().__init__(setup)
        from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2GumbelVectorQuantizer

        check_options(setup.args)
        encoder = speech_encoder(setup.model)
        self.config = pretraining_config(encoder.config, setup.args)
        self.mask_prob = float(option(setup.args, "mask_time_prob"))
        self.temps = tuple(float(option(setup.args, n)) for n in
                           ("max_gumbel_temperature", "min_gumbel_temperature", "gumbel_temperature_decay"))
        cfg = self.config
        self.quantizer = Wav2Vec2GumbelVectorQuantizer(cfg)
        nn.init.normal_(self.quantizer.weight_proj.weight, mean=0.0, std=1.0)  # transformers' _init_weights
        nn.init.zeros_(self.quantizer.weight_proj.bias)
        nn.init.uniform_(self.quantizer.codevectors)
        self.project_hid = nn.Linear(cfg.hidden_size, cfg.proj_codevector_dim)
        self.project_q = nn.Linear(cfg.codevector_dim, cfg.proj_codevector_dim)
        self.dropout_features = nn.Dropout(getattr(cfg, "feat_quantizer_dropout", 0.0))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        encoder.config.apply_spec_augment = True  # masking needs it; mask_time_prob stays as configured (0 in presets)
        if getattr(encoder, "masked_spec_embed", None) is None:  # presets build none (SpecAugment off)
            encoder.masked_spec_embed = nn.Parameter(torch.empty(cfg.hidden_size).uniform_())
        self.loaded_heads = self._load_heads(getattr(setup.args, "model_name_or_path", None), encoder)
        self.setup = dataclasses.replace(setup, model=None)  # no strong reference from here to the model
        for k in [k for k, (ref, _) in _LAST.items() if ref() is None]:
            del _LAST[k]
        _LAST[id(encoder)] = (weakref.ref(encoder), self)

    def _load_heads(self, path: Optional[str], encoder) -> bool:
        """Quantizer / projections / mask vector of a ``Wav2Vec2ForPreTraining`` checkpoint folder
        (continued pretraining); False when ``path`` has none (e.g. a plain encoder)."""
        f = os.path.join(str(path or ""), "model.safetensors")
        if not os.path.isfile(f):
            return False
        from safetensors.torch import load_file

        state = load_file(f)
        heads = {k: v for k, v in state.items() if k.startswith(HEAD_PREFIXES)}
        if not heads:
            return False
        own = self.state_dict()
        wrong = [f"{k} {tuple(v.shape)} there, {tuple(own[k].shape)} here" for k, v in heads.items()
                 if k in own and own[k].shape != v.shape]
        if wrong:
            raise ValueError(f"--model_name_or_path {path}: its quantizer does not fit the codebook flags ({wrong[0]}); "
                             "leave --num_codevector_groups/--num_codevectors_per_group/--codevector_dim/"
                             "--proj_codevector_dim unset to continue with the checkpoint's")
        self.load_state_dict({**own, **heads})
        if "wav2vec2.masked_spec_embed" in state:
            with torch.no_grad():
                encoder.masked_spec_embed.copy_(state["wav2vec2.masked_spec_embed"])
        return True

    def temperature(self, progress: float) -> float:
        return gumbel_temperature(int(self.num_updates), progress, *self.temps)

    def forward(self, step: Step) -> TermOutput:
        inp = step.source_inputs
        if inp is None or "input_values" not in inp:
            raise ValueError("--objective wav2vec2 needs raw waveforms (a speech backbone, --tuning partial or full)")
        backbone = step.model.backbone
        enc = backbone.encoder
        x, am = inp["input_values"], inp.get("attention_mask")
        lengths = frame_lengths(enc, am, x.shape[0], x.shape[1])
        num_frames = int(enc._get_feat_extract_output_lengths(torch.tensor(x.shape[1])))
        mask_np = time_mask(lengths, num_frames, self.mask_prob, int(self.config.mask_time_length))
        mask = torch.from_numpy(mask_np).to(x.device)
        out = enc(x, attention_mask=am if getattr(backbone, "_pass_mask", True) else None, mask_time_indices=mask)
        keep = mask_np.sum(1) >= 2  # a clip needs >= 2 masked frames (one positive, distractors from the rest)
        rows = torch.from_numpy(keep).to(x.device)
        tau = self.temperature(step.progress)
        self.quantizer.temperature = tau
        if self.training:
            self.num_updates += 1
        if not keep.any():  # no clip in the batch is long enough: a zero loss that still reaches every head
            zero = 0.0 * (self.project_hid(out.last_hidden_state).sum() + self.quantizer.codevectors.sum())
            return TermOutput(zero, {"skipped": 1.0, "gumbel_temperature": tau})
        terms = self.loss_terms(out.last_hidden_state[rows], out.extract_features[rows], mask[rows], mask_np[keep])
        loss = terms["contrastive"] + self.config.diversity_loss_weight * terms["diversity"]
        n_real = float(lengths[torch.from_numpy(keep)].sum())
        logs = {k: v.detach() for k, v in terms.items()}
        logs.update(gumbel_temperature=tau, masked_fraction=float(mask_np[keep].sum()) / max(n_real, 1.0))
        return TermOutput(self.weight * loss, logs)

    def loss_terms(self, hidden: Tensor, extract: Tensor, mask: Tensor, mask_np: np.ndarray) -> Dict[str, Tensor]:
        """``contrastive`` L_m (mean over masked frames), ``diversity`` L_d, ``perplexity`` and
        ``accuracy`` from context frames ``[B, T, H]``, CNN features ``[B, T, C]`` and the
        time mask ``[B, T]`` (every row with >= 2 masked frames)."""
        from transformers.models.wav2vec2.modeling_wav2vec2 import (Wav2Vec2ForPreTraining,
                                                                    _sample_negative_indices)

        cfg = self.config
        predicted = self.project_hid(hidden)
        quantized, perplexity = self.quantizer(self.dropout_features(extract), mask_time_indices=mask)
        quantized = self.project_q(quantized.to(self.project_q.weight.dtype))
        b, t, d = quantized.shape
        neg_idx = _sample_negative_indices((b, t), int(cfg.num_negatives), mask_time_indices=mask_np)
        negatives = quantized.reshape(-1, d)[torch.from_numpy(neg_idx).long().reshape(-1).to(quantized.device)]
        negatives = negatives.view(b, t, -1, d).permute(2, 0, 1, 3)  # [K, B, T, D]
        logits = Wav2Vec2ForPreTraining.compute_contrastive_logits(
            quantized[None], negatives, predicted, cfg.contrastive_logits_temperature)  # [K + 1, B, T]
        neg_is_pos = (quantized == negatives).all(-1)
        if neg_is_pos.any():  # a distractor equal to the positive (collapsed codebook) is not a distractor
            logits[1:][neg_is_pos] = float("-inf")
        logits = logits.permute(1, 2, 0)[mask]  # [|M|, K + 1], column 0 = the true quantized frame
        target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        contrastive = F.cross_entropy(logits.float(), target)
        gv = cfg.num_codevectors_per_group * cfg.num_codevector_groups
        diversity = (gv - perplexity) / gv
        accuracy = (logits.argmax(-1) == 0).float().mean()
        return {"contrastive": contrastive, "diversity": diversity, "perplexity": perplexity, "accuracy": accuracy}

    def pretraining_model(self, encoder):
        """A ``transformers.Wav2Vec2ForPreTraining`` made of ``encoder`` (weights shared) and this
        objective's quantizer and projections, for ``save_pretrained``: ``AutoModel`` loads its
        encoder, ``--model_name_or_path`` of the pretraining recipe continues from it."""
        from transformers import Wav2Vec2ForPreTraining

        cfg = copy.deepcopy(self.config)
        cfg.architectures = ["Wav2Vec2ForPreTraining"]
        model = Wav2Vec2ForPreTraining(cfg)
        model.wav2vec2, model.quantizer = encoder, self.quantizer
        model.project_hid, model.project_q, model.dropout_features = self.project_hid, self.project_q, self.dropout_features
        return model


def describe_config(cfg) -> Dict[str, Any]:
    """The pretraining settings a run used (for logs and results)."""
    return json.loads(json.dumps({k: getattr(cfg, k, None) for k in CONFIG_FIELDS}))
