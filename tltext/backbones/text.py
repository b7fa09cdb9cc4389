"""Text backbone: any Hugging Face ``AutoModel`` encoder (BERT, RoBERTa,
DistilBERT, MiniLM, ...) with masked-mean or CLS pooling."""
from __future__ import annotations

import inspect
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from .base import Backbone, LayerGroup, length_chunks
from .pooling import pool


def sentence_transformers_normalizes(name_or_path: str) -> bool:
    """True when ``name_or_path`` is a sentence-transformers checkpoint whose pipeline
    (``modules.json``) includes ``sentence_transformers.models.Normalize``: its sentence
    embedding is the L2-normalised pooled output. Reads the local folder, or for a Hub id
    only the local Hub cache (no network); False when there is no such file."""
    import json
    import os

    path = os.path.join(name_or_path, "modules.json")
    if not os.path.isfile(path):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name_or_path, "modules.json")
        except Exception:  # not a repo id (e.g. a missing local path): no pipeline to read
            cached = None
        path = cached if isinstance(cached, str) else ""
    if not path:
        return False
    try:
        with open(path, encoding="utf-8") as f:
            modules = json.load(f)
    except (OSError, ValueError):
        return False
    return any(str(m.get("type", "")).endswith("models.Normalize") for m in modules if isinstance(m, dict))


def _transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's stack of transformer blocks (the longest ModuleList)."""
    best = None
    for _, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and (best is None or len(mod) > len(best)):
            best = mod
    if best is None:
        raise ValueError(f"cannot find transformer layers in {type(model).__name__}")
    return best


def _position_offset(encoder: nn.Module) -> int:
    """Position ids the model reserves below the first token: RoBERTa-style
    embeddings count positions from ``padding_idx + 1`` (2 for RoBERTa), BERT from 0."""
    table = getattr(getattr(encoder, "embeddings", None), "position_embeddings", None)
    if isinstance(table, nn.Embedding) and table.padding_idx is not None:
        return int(table.padding_idx) + 1
    return 0


def position_limit(encoder: nn.Module, tokenizer: Any) -> Optional[Tuple[int, str]]:
    """The longest input (tokens) the encoder and tokenizer support, and where the
    limit comes from; ``None`` when neither states one (e.g. relative positions only)."""
    cfg = encoder.config
    limits = []
    n = getattr(cfg, "max_position_embeddings", None)
    if isinstance(n, int) and n > 0 and getattr(cfg, "position_biased_input", True) is not False:
        off = _position_offset(encoder)
        why = f"{cfg.model_type} max_position_embeddings={n}" + (f" minus {off} reserved" if off else "")
        limits.append((n - off, why))
    t = getattr(tokenizer, "model_max_length", None)
    if isinstance(t, int) and 0 < t < 1_000_000:  # tokenizers without a limit say ~1e30
        limits.append((t, f"tokenizer model_max_length={t}"))
    return min(limits, key=lambda lim: lim[0]) if limits else None  # ties: the model's own reason


DEFAULT_MAX_LENGTH = 256


def check_max_length(max_length: Optional[int], encoder: nn.Module, tokenizer: Any) -> int:
    """``max_length`` clamped to the model's limit (with a one-line UserWarning).

    ``None`` means the default: ``DEFAULT_MAX_LENGTH`` tokens, or the model's limit
    when that is smaller (silently: the user asked for nothing).
    Raises ``ValueError`` when ``max_length`` is not a positive integer."""
    if max_length is None:
        limit = position_limit(encoder, tokenizer)
        return min(DEFAULT_MAX_LENGTH, limit[0]) if limit is not None else DEFAULT_MAX_LENGTH
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 0:
        raise ValueError(f"--max_seq_length {max_length!r}: expected a positive number of tokens")
    limit = position_limit(encoder, tokenizer)
    if limit is not None and max_length > limit[0]:
        warnings.warn(f"--max_seq_length {max_length} exceeds the model's {limit[0]} positions ({limit[1]}): "
                      f"clamped to {limit[0]}", UserWarning, stacklevel=3)
        return limit[0]
    return max_length


class TextBackbone(Backbone):
    modality = "text"
    padding_invariant = True  # masked attention + masked pooling: pad tokens are never attended or pooled
    lp_ft_head = False  # a random head (full) / the Trainer-like adapter (partial) measured better: Backbone.lp_ft_head

    def __init__(self, encoder: nn.Module, tokenizer, pooling: str = "mean", max_length: Optional[int] = None,
                 pretrained_weights_loaded: bool = True, unit_norm_embeddings: bool = False):
        """``max_length`` is clamped to the positions the model supports (a warning
        says so; ``self.max_length`` is the effective length, saved in ``config_dict``).

        Raises ``ValueError`` for a ``max_length`` that is not a positive integer."""
        super().__init__()
        # The pooler (tanh over [CLS]) is unused by mean/cls pooling of the last
        # hidden state; dropping it keeps every parameter in the computation graph.
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = check_max_length(max_length, encoder, tokenizer)
        self.pretrained_weights_loaded = bool(pretrained_weights_loaded)
        self.unit_norm_embeddings = bool(unit_norm_embeddings)
        names = set(inspect.signature(encoder.forward).parameters)
        self._input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]

    # construction -----------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, pooling: str = "mean", max_length: Optional[int] = None, **_: Any) -> "TextBackbone":
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        encoder = AutoModel.from_pretrained(name_or_path)
        return cls(encoder, tokenizer, pooling=pooling, max_length=max_length,
                   unit_norm_embeddings=sentence_transformers_normalizes(name_or_path))

    @classmethod
    def from_config_dict(cls, cfg: Dict[str, Any], preprocessor_dir: str | None = None) -> "TextBackbone":
        """Rebuild with random weights (the checkpoint being loaded supplies them)."""
        enc_cfg = dict(cfg["encoder"])
        config = AutoConfig.for_model(enc_cfg.pop("model_type"), **enc_cfg)
        encoder = AutoModel.from_config(config)
        tokenizer = AutoTokenizer.from_pretrained(preprocessor_dir or cfg["name_or_path"])
        return cls(encoder, tokenizer, pooling=cfg.get("pooling", "mean"), max_length=cfg.get("max_length", 128),
                   unit_norm_embeddings=bool(cfg.get("unit_norm_embeddings", False)))

    def config_dict(self) -> Dict[str, Any]:
        enc = self.encoder.config.to_dict()
        for k in ("architectures", "_name_or_path", "transformers_version", "torch_dtype", "dtype"):
            enc.pop(k, None)
        return {
            "type": "text",
            "name_or_path": getattr(self.encoder.config, "_name_or_path", ""),
            "pooling": self.pooling,
            "max_length": self.max_length,
            "unit_norm_embeddings": self.unit_norm_embeddings,
            "encoder": enc,
        }

    def save_preprocessor(self, directory: str) -> None:
        self.tokenizer.save_pretrained(directory)

    # interface --------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Collated ``input_ids`` / ``attention_mask`` (/ ``token_type_ids``) ``[B, T]`` ->
        pooled ``[B, H]``. A right-padded batch whose lengths spread widely (``length_chunks``:
        a class-balanced SupCon batch, a prototype episode, neither grouped by length) runs as
        up to 8 passes, each cropped to its own longest text: the same embeddings and gradients
        (up to float rounding; masked attention and pooling never see pad tokens) for less
        padded compute and activation memory."""
        kwargs = {k: v for k, v in inputs.items() if k in self._input_names}
        mask = inputs.get("attention_mask")
        if "attention_mask" in kwargs and mask.dim() == 2 and mask.shape[0] > 1 and self._right_padded():
            lengths = mask.sum(dim=1).cpu()
            chunks = length_chunks(lengths)
            if len(chunks) > 1:
                out = None
                for rows in chunks:
                    n = max(int(lengths[rows].max()), 1)
                    rows = rows.to(mask.device)
                    z = self._forward({k: v[rows, :n] for k, v in kwargs.items()}, mask[rows, :n])
                    out = z.new_empty((mask.shape[0], z.shape[1])) if out is None else out
                    out = out.index_copy(0, rows, z)
                return out
        return self._forward(kwargs, mask)

    def _forward(self, kwargs: Dict[str, torch.Tensor], mask: Optional[torch.Tensor]) -> torch.Tensor:
        out = self.encoder(**kwargs)
        return pool(out.last_hidden_state, mask, self.pooling)

    def _right_padded(self) -> bool:
        return getattr(self.tokenizer, "padding_side", "right") == "right"

    def collate(self, inputs: Sequence[Any], train: bool = False) -> Dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(inputs), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v for k, v in enc.items() if k in self._input_names}

    def length(self, raw: Any) -> int:
        """Characters of one text (a cheap proxy; :meth:`lengths` counts tokens)."""
        return len(raw)

    def lengths(self, raws: Sequence[Any]) -> List[int]:
        """Token counts after truncation to ``max_length``, the padded length each text costs
        in a batch (what transformers' ``group_by_length`` sorts by), from one batched call of
        the fast tokenizer; characters for a tokenizer that cannot count them."""
        texts = list(raws)
        if not texts:
            return []
        try:
            enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=False,
                                 return_attention_mask=False, return_token_type_ids=False)
        except (TypeError, ValueError):
            return [len(t) for t in texts]
        return [len(ids) for ids in enc["input_ids"]]

    def layer_groups(self) -> List[LayerGroup]:
        layers = _transformer_layers(self.encoder)
        layer_ids = {id(p): i for i, layer in enumerate(layers) for p in layer.parameters()}
        groups: List[List[nn.Parameter]] = [[] for _ in range(len(layers) + 2)]
        for name, p in self.encoder.named_parameters():
            if id(p) in layer_ids:
                groups[layer_ids[id(p)] + 1].append(p)
            elif "embed" in name:
                groups[0].append(p)
            else:  # final norms and the like, above the last layer
                groups[-1].append(p)
        names = ["embeddings"] + [f"layer.{i}" for i in range(len(layers))] + ["final"]
        return [LayerGroup(n, g) for n, g in zip(names, groups) if g]
