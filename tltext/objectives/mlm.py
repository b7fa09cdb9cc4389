"""Masked language modelling on the unlabelled target text (UDALM) and alone (DAPT).

Karouzos, Paraskevopoulos & Potamianos, "UDALM: Unsupervised Domain Adaptation
through Language Modeling", NAACL 2021, eq. 1: each step mixes the source
classification loss and the masked-LM loss of a target batch,

    L(s, t) = lambda * L_CLF(s) + (1 - lambda) * L_MLM(t)

The run minimises ``CE(source) + w * L_MLM(target)`` (``ObjectiveSet`` adds the CE
with weight 1), which is ``L / lambda``: the same minimiser, for

    w = (1 - lambda) / lambda        (lambda = 0.5  ->  w = 1, the default)

Masking is BERT's (Devlin et al. 2019), done by transformers'
``DataCollatorForLanguageModeling.torch_mask_tokens``: 15 % of the non-special,
non-padding tokens are chosen; of those 80 % become ``[MASK]``, 10 % a random
token, 10 % stay. ``L_MLM`` is the mean cross-entropy over the chosen tokens only.

The prediction head is the checkpoint's own when its weights are present
(``cls.predictions.*`` for BERT, ``lm_head.*`` for RoBERTa, ``vocab_*`` for
DistilBERT), else a new BERT-style head: ``LayerNorm(gelu(W h + b))`` then a decoder
tied to the encoder's input word embeddings plus an output bias. The head belongs to
this objective, so it trains with the run but is never saved in the classifier
(like DANN's discriminator). The decoder runs on masked positions only.

Gururangan et al., "Don't Stop Pretraining" (DAPT), ACL 2020, is the same loss with
no classification term: :class:`MaskedLMPretraining`, used by
``recipes/language_modeling.py``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import DataCollatorForLanguageModeling
from transformers.activations import ACT2FN

from . import register
from .base import Objective, ObjectiveSetup, Step, TermOutput, skipped

MLM_PROBABILITY = 0.15  # Devlin et al. 2019, kept by UDALM and DAPT

#: where known architectures keep their MLM head: (transform dense, transform LayerNorm, output bias)
HEAD_KEYS = {
    "bert": ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias"),
    "roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
    "xlm-roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
    "camembert": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
    "distilbert": ("vocab_transform", "vocab_layer_norm", "vocab_projector.bias"),
}


def model_name(encoder: nn.Module) -> str:
    return str(getattr(encoder.config, "_name_or_path", "") or type(encoder).__name__)


def masking_collator(tokenizer: Any, what: str, model: str,
                     mlm_probability: float = MLM_PROBABILITY) -> DataCollatorForLanguageModeling:
    """transformers' MLM collator (15 %, 80/10/10). Raises a one-line ValueError naming
    ``what`` (the flag) and ``model`` when the tokenizer has no mask token or the
    probability is outside (0, 1)."""
    if getattr(tokenizer, "mask_token", None) is None:
        raise ValueError(f"{what}: the tokenizer of {model} has no mask token; masked language modelling needs "
                         "a BERT/RoBERTa-style tokenizer with one (e.g. [MASK])")
    if not 0.0 < float(mlm_probability) < 1.0:
        raise ValueError(f"--mlm_probability {mlm_probability}: expected a probability in (0, 1)")
    return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=float(mlm_probability))


def mask_tokens(collator: DataCollatorForLanguageModeling, input_ids: Tensor,
                attention_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """``(masked_ids, labels)``, both ``[B, L]`` on ``input_ids``' device: BERT masking of
    the ids that are neither special tokens nor padding; ``labels`` is the original id
    at chosen positions and -100 elsewhere. Draws from the global torch RNG (so
    ``--seed`` and checkpoint resume fix it)."""
    ids = input_ids.detach().cpu()
    special = torch.isin(ids, torch.tensor(collator.tokenizer.all_special_ids, dtype=ids.dtype))
    if attention_mask is not None:
        special |= attention_mask.detach().cpu() == 0
    masked, labels = collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special)
    return masked.to(input_ids.device), labels.to(input_ids.device)


class MaskedLMHead(nn.Module):
    """BERT's LM prediction head (Devlin et al. 2019): ``h [N, H] -> logits [N, V]``,

        logits = LayerNorm(act(W h + b)) E^T + bias

    where ``E [V, H_e]`` is the encoder's input word-embedding matrix, tied (shared
    storage, not a parameter of this module: the encoder owns and trains it)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        cfg = encoder.config
        emb = encoder.get_input_embeddings()
        vocab, emb_dim = emb.weight.shape
        hidden = int(cfg.hidden_size)
        act = getattr(cfg, "hidden_act", None) or getattr(cfg, "activation", "gelu")
        self.dense = nn.Linear(hidden, emb_dim)
        self.act = ACT2FN[act] if isinstance(act, str) else act
        self.layer_norm = nn.LayerNorm(emb_dim, eps=float(getattr(cfg, "layer_norm_eps", 1e-12)))
        self.bias = nn.Parameter(torch.zeros(vocab))
        self._embeddings = [emb]  # a list: referenced, not registered (no parameter counted twice)
        std = float(getattr(cfg, "initializer_range", 0.02))
        nn.init.normal_(self.dense.weight, std=std)
        nn.init.zeros_(self.dense.bias)
        self.from_checkpoint = False

    @property
    def decoder_weight(self) -> Tensor:
        """``[V, H_e]``: the tied input word embeddings."""
        return self._embeddings[0].weight

    def forward(self, hidden: Tensor) -> Tensor:
        h = self.layer_norm(self.act(self.dense(hidden)))
        return F.linear(h, self.decoder_weight, self.bias)

    def load_checkpoint_head(self, path: str, model_type: str) -> bool:
        """Copy the checkpoint's own head weights (``HEAD_KEYS``) from the weights file
        in ``path`` if they are all there; returns whether they were."""
        keys = HEAD_KEYS.get(model_type)
        if not keys or not path or not os.path.isdir(path):
            return False
        dense, norm, bias = keys
        wanted = {f"{dense}.weight": self.dense.weight, f"{dense}.bias": self.dense.bias,
                  f"{norm}.weight": self.layer_norm.weight, f"{norm}.bias": self.layer_norm.bias, bias: self.bias}
        found = read_tensors(path, list(wanted))
        if found is None:
            return False
        with torch.no_grad():
            for k, p in wanted.items():
                if found[k].shape != p.shape:
                    return False
            for k, p in wanted.items():
                p.copy_(found[k])
        self.from_checkpoint = True
        return True

    def checkpoint_state(self, model_type: str) -> Dict[str, Tensor]:
        """The head as ``HEAD_KEYS`` names it (to save it in an ``AutoModelForMaskedLM`` checkpoint)."""
        dense, norm, bias = HEAD_KEYS[model_type]
        return {f"{dense}.weight": self.dense.weight, f"{dense}.bias": self.dense.bias,
                f"{norm}.weight": self.layer_norm.weight, f"{norm}.bias": self.layer_norm.bias, bias: self.bias}


def read_tensors(path: str, names) -> Optional[Dict[str, Tensor]]:
    """The named tensors of the checkpoint in folder ``path`` (safetensors, sharded or
    not, or ``pytorch_model.bin``); None when any is missing (keys may carry the
    architecture prefix, e.g. ``bert.``, which heads do not)."""
    files = []
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            files = sorted({os.path.join(path, v) for v in json.load(f)["weight_map"].values()})
    elif os.path.isfile(os.path.join(path, "model.safetensors")):
        files = [os.path.join(path, "model.safetensors")]
    out: Dict[str, Tensor] = {}
    if files:
        from safetensors import safe_open

        for fn in files:
            with safe_open(fn, framework="pt") as f:
                for k in set(names) & set(f.keys()):
                    out[k] = f.get_tensor(k)
    elif os.path.isfile(os.path.join(path, "pytorch_model.bin")):
        sd = torch.load(os.path.join(path, "pytorch_model.bin"), map_location="cpu", weights_only=True, mmap=True)
        out = {k: sd[k] for k in names if k in sd}
    return out if all(k in out for k in names) else None


def build_head(encoder: nn.Module) -> MaskedLMHead:
    """The checkpoint's own MLM head when its weights are in the encoder's folder, else a new one."""
    head = MaskedLMHead(encoder)
    head.load_checkpoint_head(str(getattr(encoder.config, "_name_or_path", "") or ""),
                              str(getattr(encoder.config, "model_type", "")))
    return head


def masked_lm_loss(encoder: nn.Module, head: MaskedLMHead, collator: DataCollatorForLanguageModeling,
                   inputs: Dict[str, Tensor]) -> Optional[Tuple[Tensor, Tensor, int]]:
    """``(L_MLM, masked-token accuracy, n_masked)`` of one collated text batch
    (``input_ids`` ``[B, L]``, ``attention_mask``, ...): mask, encode, decode the masked
    positions only (``[n_masked, V]`` logits). None when no token was masked."""
    masked, labels = mask_tokens(collator, inputs["input_ids"], inputs.get("attention_mask"))
    chosen = labels != -100
    n = int(chosen.sum())
    if n == 0:
        return None
    hidden = encoder(**{**inputs, "input_ids": masked}).last_hidden_state  # [B, L, H]
    logits = head(hidden[chosen]).float()  # [n_masked, V]
    target = labels[chosen]
    loss = F.cross_entropy(logits, target)
    acc = (logits.detach().argmax(-1) == target).float().mean()
    return loss, acc, n


def text_backbone(setup: ObjectiveSetup, what: str):
    backbone = getattr(setup.model, "backbone", None)
    if backbone is None or not hasattr(backbone, "tokenizer") or not hasattr(backbone, "encoder"):
        raise ValueError(f"{what} needs a text model (a tokenizer and a transformer encoder); "
                         f"got {type(backbone).__name__}")
    return backbone


@register
class MaskedLM(Objective):
    """UDALM: CE(source) + w * L_MLM(target), w = (1 - lambda) / lambda (module docstring).

    Logs ``mlm/loss`` (unweighted L_MLM), ``mlm/accuracy`` (masked-token accuracy) and
    ``mlm/masked`` (tokens scored). Raises ValueError (one line) when the tokenizer
    has no mask token or the model is not a text transformer."""

    name = "mlm"
    modalities = ("text",)
    paper = "Karouzos et al., UDALM: Unsupervised Domain Adaptation through Language Modeling, NAACL 2021"
    description = ("UDALM: source cross-entropy + masked-LM on the target text (weight w = (1-lambda)/lambda; "
                   "default 1, lambda = 0.5)")
    tags = ("domain-adaptation", "udalm", "masked-language-modeling")
    needs_target = True
    lp_ft_head = True
    needs_token_inputs = True
    default_weight = 1.0
    options = ("da_weight",)

    def __init__(self, setup: ObjectiveSetup):
        super().__init__(setup)
        backbone = text_backbone(setup, f"--objective {self.name}")
        self.collator = masking_collator(backbone.tokenizer, f"--objective {self.name}", model_name(backbone.encoder))
        self._encoder = [backbone.encoder]  # the model owns it
        self.head = build_head(backbone.encoder)

    def forward(self, step: Step) -> TermOutput:
        tgt = step.target_inputs
        if tgt is None and step.has_target and not step.cached:
            tgt = {k: v[step.n_source:] for k, v in step.inputs.items()}  # one joint batch
        if tgt is None or step.n_target < 1:
            return skipped(step.labels, "no target text in this step")
        out = masked_lm_loss(self._encoder[0], self.head, self.collator, tgt)
        if out is None:
            return skipped(step.labels, "no token was masked")
        loss, acc, n = out
        return TermOutput(self.weight * loss, {"loss": loss, "accuracy": acc, "masked": float(n)})


class MaskedLMPretraining(nn.Module):
    """DAPT (Gururangan et al. 2020): ``L_MLM`` of the step's (only) batch, no
    classification term. Plays the role of ``ObjectiveSet`` for the engine
    (``forward(step) -> (loss, logs)``, ``spec``, ``coefficients``); not an
    ``--objective`` (it trains no classifier)."""

    spec = "mlm (domain-adaptive pretraining: masked-LM only)"
    needs_target = False
    use_ce = False

    def __init__(self, backbone, mlm_probability: float = MLM_PROBABILITY, what: str = "--model_name_or_path"):
        super().__init__()
        self.collator = masking_collator(backbone.tokenizer, what, model_name(backbone.encoder), mlm_probability)
        self._encoder = [backbone.encoder]
        self.head = build_head(backbone.encoder)

    def coefficients(self, progress: float) -> Dict[str, float]:
        return {}

    def forward(self, step: Step) -> Tuple[Tensor, Dict[str, float]]:
        out = masked_lm_loss(self._encoder[0], self.head, self.collator, step.source_inputs)
        if out is None:  # nothing masked (a batch of very short texts): a zero step
            return self.head.bias.sum() * 0.0, {"mlm/skipped": 1.0}
        loss, acc, n = out
        return loss, {"mlm/loss": float(loss.detach()), "mlm/accuracy": float(acc), "mlm/masked": float(n)}
