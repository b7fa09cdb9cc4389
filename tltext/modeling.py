"""The saved tltext model: backbone -> (adapter) -> linear head.

It is a ``PreTrainedModel`` registered with the Auto classes on ``import tltext``
(model_type ``tltext``), so ``OUT/model`` reloads with
``AutoModelForSequenceClassification`` / ``pipeline`` without remote code.
Training-only parts (domain discriminators, ...) live in the objective and are
never saved here.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .backbones import Backbone, backbone_from_config


class TltextConfig(PretrainedConfig):
    model_type = "tltext"

    def __init__(
        self,
        backbone: Optional[Dict[str, Any]] = None,
        adapter_dim: int = 0,
        head_dropout: float = 0.1,
        hidden_size: int = 0,
        tltext: Optional[Dict[str, Any]] = None,
        feature_norm: Optional[str] = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if feature_norm not in (None, "l2"):
            raise ValueError(f"TltextConfig feature_norm must be None or 'l2'; got {feature_norm!r}")
        self.feature_norm = feature_norm  # "l2": features scaled to unit length before the classifier
        self.backbone = backbone or {}
        self.adapter_dim = adapter_dim
        self.head_dropout = head_dropout
        self.hidden_size = hidden_size
        self.tltext = tltext or {}  # how it was trained (tuning, objective, ...)


class TltextModel(PreTrainedModel):
    """Backbone + optional bottleneck adapter + linear classifier."""

    config_class = TltextConfig
    base_model_prefix = "tltext"
    main_input_name = "input_ids"
    _no_split_modules: list = []

    def __init__(self, config: TltextConfig, backbone: Optional[Backbone] = None):
        super().__init__(config)
        if backbone is None:
            backbone = backbone_from_config(config.backbone, preprocessor_dir=getattr(config, "_name_or_path", None) or None)
        self.backbone = backbone
        self.main_input_name = {"text": "input_ids", "speech": "input_values", "image": "pixel_values"}.get(
            backbone.modality, "input_ids"
        )
        h = config.hidden_size or backbone.hidden_size
        if config.adapter_dim:
            self.adapter = nn.Sequential(nn.Linear(h, config.adapter_dim), nn.GELU(), nn.Dropout(config.head_dropout))
            feat = config.adapter_dim
        else:
            self.adapter = nn.Identity()
            feat = h
        self.dropout = nn.Dropout(config.head_dropout)
        self.classifier = nn.Linear(feat, config.num_labels)
        self.feature_dim = feat
        self._init_head()
        self.post_init()

    def _init_head(self) -> None:
        for m in list(self.adapter.modules()) + [self.classifier]:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def _init_weights(self, module: nn.Module) -> None:  # weights come from the backbone / checkpoint
        pass

    @classmethod
    def from_backbone(cls, backbone: Any, label2id: Optional[Dict[str, int]] = None, adapter_dim: int = 0,
                      head_dropout: float = 0.1, num_labels: Optional[int] = None, modality: str = "text",
                      **extra: Any) -> "TltextModel":
        """A new model on ``backbone`` (a ``Backbone``, or a local path / Hub id loaded as
        ``modality``), with a head over ``label2id`` or ``num_labels`` classes
        (``LABEL_0 ..``; the training data's label names replace them in ``tltext.Trainer``).
        Raises ValueError when neither labels nor ``num_labels`` are given."""
        if not isinstance(backbone, Backbone):
            from .backbones import load_backbone

            backbone = load_backbone(modality, str(backbone))
        if label2id is None:
            if not num_labels or num_labels < 1:
                raise ValueError("TltextModel.from_backbone needs label2id or num_labels >= 1")
            label2id = {f"LABEL_{i}": i for i in range(int(num_labels))}
        id2label = {i: l for l, i in label2id.items()}
        config = TltextConfig(
            backbone=backbone.config_dict(), adapter_dim=adapter_dim, head_dropout=head_dropout,
            hidden_size=backbone.hidden_size, num_labels=len(label2id), label2id=dict(label2id),
            id2label=id2label, tltext=extra,
        )
        return cls(config, backbone=backbone)

    # pieces used by the training engine --------------------------------------
    def encode(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Backbone pooled embedding (before the adapter)."""
        return self.backbone(**inputs)

    def features(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Adapter output: the space that DA losses align and prototypes live in."""
        return self.adapter(embeddings)

    def head_input(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B, F]`` features -> what the linear classifier reads ``[B, F]``: scaled to unit L2
        norm when ``config.feature_norm == "l2"`` (a linear probe fitted on unit sentence
        embeddings), else unchanged."""
        if getattr(self.config, "feature_norm", None) == "l2":
            return nn.functional.normalize(feats, dim=-1)
        return feats

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B, F]`` features -> ``[B, num_labels]`` logits: the classifier on ``head_input``."""
        return self.classifier(self.dropout(self.head_input(feats)))

    def forward(self, embeddings: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                return_dict: bool = True, **inputs: Any) -> SequenceClassifierOutput:
        z = embeddings if embeddings is not None else self.encode(**inputs)
        logits = self.classify(self.features(z))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:  # type: ignore[override]
        self.config.backbone = self.backbone.config_dict()
        super().save_pretrained(save_directory, **kwargs)
        self.backbone.save_preprocessor(save_directory)
        if self.backbone.modality == "image":
            write_image_processor_config(save_directory, self.backbone)


def write_image_processor_config(directory: str, backbone: Backbone) -> None:
    """Add the keys of a transformers image processor (``TltextImageProcessor``) to
    the image backbone's ``preprocessor_config.json``, so that
    ``pipeline("image-classification")`` preprocesses exactly like the backbone."""
    path = os.path.join(directory, "preprocessor_config.json")
    cfg: Dict[str, Any] = {}
    if os.path.isfile(path):
        with open(path) as f:
            cfg = json.load(f)
    size = int(backbone.image_size)
    cfg.update({
        "image_processor_type": "TltextImageProcessor", "do_convert_rgb": True, "do_resize": True,
        "size": {"shortest_edge": int(backbone.resize_size)}, "resample": 2, "do_center_crop": True,
        "crop_size": {"height": size, "width": size}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": list(backbone.mean), "image_std": list(backbone.std),
    })
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def _image_processor_class():
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    class TltextImageProcessor(CLIPImageProcessorPil):
        """The image backbone's eval transform as a transformers image processor:
        shorter side -> ``size.shortest_edge`` (PIL bilinear), centre crop with
        torchvision's offsets ``round((H - h) / 2)``, x/255, (x - mean)/std."""

        def center_crop(self, image, size, **kwargs):
            h, w = image.shape[-2:]
            top, left = int(round((h - size.height) / 2.0)), int(round((w - size.width) / 2.0))
            if top < 0 or left < 0:  # smaller than the crop: padded as usual
                return super().center_crop(image, size, **kwargs)
            return image[..., top:top + size.height, left:left + size.width]

    return TltextImageProcessor


def register_auto_classes() -> None:
    from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForAudioClassification,
                              AutoModelForImageClassification, AutoModelForSequenceClassification)

    try:
        AutoConfig.register("tltext", TltextConfig)
    except ValueError:  # already registered
        return
    for auto in (AutoModel, AutoModelForSequenceClassification, AutoModelForAudioClassification,
                 AutoModelForImageClassification):
        auto.register(TltextConfig, TltextModel)
    processor = _image_processor_class()
    AutoImageProcessor.register(TltextConfig, image_processor_classes={"pil": processor, "torchvision": processor})
