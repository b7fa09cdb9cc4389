"""Text backbone: any Hugging Face ``AutoModel`` encoder (BERT, RoBERTa,
DistilBERT, MiniLM, ...) with masked-mean or CLS pooling."""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Sequence

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from .base import Backbone, LayerGroup
from .pooling import pool


def _transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's stack of transformer blocks (the longest ModuleList)."""
    best = None
    for _, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and (best is None or len(mod) > len(best)):
            best = mod
    if best is None:
        raise ValueError(f"cannot find transformer layers in {type(model).__name__}")
    return best


class TextBackbone(Backbone):
    modality = "text"
    padding_invariant = True  # masked attention + masked pooling: pad tokens are never attended or pooled

    def __init__(self, encoder: nn.Module, tokenizer, pooling: str = "mean", max_length: int = 128):
        super().__init__()
        # The pooler (tanh over [CLS]) is unused by mean/cls pooling of the last
        # hidden state; dropping it keeps every parameter in the computation graph.
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        names = set(inspect.signature(encoder.forward).parameters)
        self._input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]

    # construction -----------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, pooling: str = "mean", max_length: int = 128, **_: Any) -> "TextBackbone":
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        encoder = AutoModel.from_pretrained(name_or_path)
        return cls(encoder, tokenizer, pooling=pooling, max_length=max_length)

    @classmethod
    def from_config_dict(cls, cfg: Dict[str, Any], preprocessor_dir: str | None = None) -> "TextBackbone":
        enc_cfg = dict(cfg["encoder"])
        config = AutoConfig.for_model(enc_cfg.pop("model_type"), **enc_cfg)
        encoder = AutoModel.from_config(config)
        tokenizer = AutoTokenizer.from_pretrained(preprocessor_dir or cfg["name_or_path"])
        return cls(encoder, tokenizer, pooling=cfg.get("pooling", "mean"), max_length=cfg.get("max_length", 128))

    def config_dict(self) -> Dict[str, Any]:
        enc = self.encoder.config.to_dict()
        for k in ("architectures", "_name_or_path", "transformers_version", "torch_dtype", "dtype"):
            enc.pop(k, None)
        return {
            "type": "text",
            "name_or_path": getattr(self.encoder.config, "_name_or_path", ""),
            "pooling": self.pooling,
            "max_length": self.max_length,
            "encoder": enc,
        }

    def save_preprocessor(self, directory: str) -> None:
        self.tokenizer.save_pretrained(directory)

    # interface --------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        kwargs = {k: v for k, v in inputs.items() if k in self._input_names}
        out = self.encoder(**kwargs)
        return pool(out.last_hidden_state, inputs.get("attention_mask"), self.pooling)

    def collate(self, inputs: Sequence[Any], train: bool = False) -> Dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(inputs), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v for k, v in enc.items() if k in self._input_names}

    def length(self, raw: Any) -> int:
        return len(raw)

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
