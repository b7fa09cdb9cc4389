"""Backbones: one interface, one implementation per modality.

``register_backbone`` lets a modality module add itself; ``load_backbone``
builds one from a local directory, Hub id or name."""
from __future__ import annotations

from typing import Any, Callable, Dict, Type

from .base import Backbone, LayerGroup
from .pooling import pool
from .text import TextBackbone

_REGISTRY: Dict[str, Type[Backbone]] = {"text": TextBackbone}
_LAZY: Dict[str, Callable[[], None]] = {}


def register_backbone(modality: str, cls: Type[Backbone]) -> None:
    _REGISTRY[modality] = cls


def _lazy(modality: str, module: str) -> None:
    def _import() -> None:
        import importlib

        importlib.import_module(module, __name__)

    _LAZY[modality] = _import


_lazy("speech", ".speech")
_lazy("image", ".image")


def backbone_class(modality: str) -> Type[Backbone]:
    if modality not in _REGISTRY and modality in _LAZY:
        _LAZY[modality]()
    if modality not in _REGISTRY:
        raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(set(_REGISTRY) | set(_LAZY))}")
    return _REGISTRY[modality]


def load_backbone(modality: str, name_or_path: str, **kwargs: Any) -> Backbone:
    return backbone_class(modality).from_pretrained(name_or_path, **kwargs)


def backbone_from_config(cfg: Dict[str, Any], preprocessor_dir: str | None = None) -> Backbone:
    return backbone_class(cfg["type"]).from_config_dict(cfg, preprocessor_dir=preprocessor_dir)


__all__ = [
    "Backbone",
    "LayerGroup",
    "TextBackbone",
    "pool",
    "register_backbone",
    "backbone_class",
    "load_backbone",
    "backbone_from_config",
]
