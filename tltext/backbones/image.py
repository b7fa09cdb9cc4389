"""Image backbone: a torchvision ResNet, VGG or Vision Transformer.

The pooled embedding is the input of the network's original classifier:

* ResNet (He et al., CVPR 2016): global-average-pooled last stage, ``fc`` -> Identity
  (512-D for resnet18/34, 2048-D for resnet50+);
* VGG (Simonyan & Zisserman, ICLR 2015): the classifier MLP without its last
  Linear, i.e. ``Dropout(ReLU(W_2 ReLU(W_1 x)))`` (4096-D);
* ViT (Dosovitskiy et al., ICLR 2021): the final-LayerNorm class token
  ``z_L^0``, ``heads.head`` -> Identity (768-D for vit_b_*).

Weights: ``weights_path`` is a local state dict (``.safetensors``, or a torch
file read with ``weights_only=True``) of the torchvision model, or
``"torchvision:NAME"`` (e.g. ``torchvision:IMAGENET1K_V1`` / ``torchvision:DEFAULT``:
torchvision downloads it, so online only). Without it the network is randomly
initialised (the offline default).

Preprocessing (torchvision ``transforms.v2``): train = RandomResizedCrop +
horizontal flip; eval = Resize(shorter side to ``resize_size``, by default
``image_size * 256/224``) + CenterCrop; both then ``(x/255 - mean) / std``
with the ImageNet statistics (or the torchvision weights' own).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn
from torchvision import models
from torchvision.transforms import v2

from . import register_backbone
from .base import Backbone, LayerGroup

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSOR_FILE = "preprocessor_config.json"
CUSTOM_VIT = "vision_transformer"  # a ViT of any depth/width, built from ``model_kwargs``
_VIT_KWARGS = ("patch_size", "num_layers", "num_heads", "hidden_dim", "mlp_dim")


def _check_patch(arch: str, patch: int, image_size: int) -> None:
    if image_size % patch:
        raise ValueError(f"{arch}: image_size={image_size} must be divisible by the patch size {patch} (set --image_size)")


def _check_vit_positions(model: nn.Module, arch: str, image_size: int) -> None:
    """A ViT's position table must hold one entry per patch of an ``image_size`` image
    (+ the class token). Raises ``ValueError`` naming --image_size otherwise."""
    if not isinstance(model, models.VisionTransformer):
        return
    n = int(model.encoder.pos_embedding.shape[1]) - 1
    supported = int(round(n ** 0.5)) * model.patch_size
    if model.image_size != image_size or (image_size // model.patch_size) ** 2 != n:
        raise ValueError(f"{arch}: built for image_size={supported}, not {image_size} ({n} patch positions of "
                         f"{model.patch_size} px); pass --image_size {supported}")


def build_torchvision_model(arch: str, image_size: int = 224, weights: Any = None,
                            model_kwargs: Optional[Dict[str, Any]] = None) -> nn.Module:
    """The full torchvision classifier ``arch`` (with its original head)."""
    if arch == CUSTOM_VIT:
        if not model_kwargs or any(k not in model_kwargs for k in _VIT_KWARGS):
            raise ValueError(f"arch {CUSTOM_VIT!r} needs model_kwargs with {list(_VIT_KWARGS)}")
        _check_patch(arch, int(model_kwargs["patch_size"]), image_size)
        return models.VisionTransformer(image_size=image_size, **model_kwargs)
    if arch not in models.list_models(module=models):
        raise ValueError(f"unknown torchvision model {arch!r}; expected a classification model such as "
                         "resnet18, resnet50, vgg16 or vit_b_16")
    config: Dict[str, Any] = {"weights": weights}
    if arch.startswith("vit_"):
        _check_patch(arch, int(arch.rsplit("_", 1)[-1]), image_size)
        config["image_size"] = image_size
    try:
        return models.get_model(arch, **config)
    except ValueError as e:  # e.g. ViT weights trained at another image size
        raise ValueError(f"cannot build {arch!r} with image_size={image_size} (set --image_size): {e}") from None


def _strip_head(model: nn.Module, arch: str) -> int:
    """Replace the last classifier Linear by Identity in place; return the feature size."""
    if isinstance(model, models.ResNet):
        dim = model.fc.in_features
        model.fc = nn.Identity()
    elif isinstance(model, models.VGG):
        dim = model.classifier[-1].in_features
        model.classifier[-1] = nn.Identity()
    elif isinstance(model, models.VisionTransformer):
        dim = model.heads.head.in_features
        model.heads.head = nn.Identity()  # keeps pre_logits (Linear + Tanh) when present
    else:
        raise ValueError(f"unsupported torchvision model {arch!r} ({type(model).__name__}); "
                         "expected a ResNet/ResNeXt/Wide-ResNet, VGG or ViT")
    return int(dim)


def _read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise ValueError(f"{path}: weights file not found")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                         "expected a state dict saved with torch.save or safetensors") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state dict (parameter name -> tensor)")
    inner = "backbone.model."  # a saved TltextModel: keep its backbone's part
    if any(k.startswith(inner) for k in sd):
        sd = {k[len(inner):]: v for k, v in sd.items() if k.startswith(inner)}
    for prefix in ("module.", "model."):  # DataParallel / ImageBackbone prefixes
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _load_local_weights(model: nn.Module, path: str, arch: str) -> None:
    """Load a torchvision state dict; the original head may be present or absent."""
    sd = _read_state_dict(path)
    own = model.state_dict()
    head = {k for k in own if k.startswith(("fc.", "heads.head.", f"classifier.{len(getattr(model, 'classifier', [])) - 1}."))}
    sd = {k: v for k, v in sd.items() if k not in head}
    missing = [k for k in own if k not in sd and k not in head]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if shapes == ["encoder.pos_embedding"]:  # a ViT trained at another resolution
        n = int(sd["encoder.pos_embedding"].shape[1]) - 1
        size = int(round(n ** 0.5)) * model.patch_size
        raise ValueError(f"--image_size {model.image_size}: {path} holds {arch} weights for image_size {size} "
                         f"({n} patch positions); pass --image_size {size}")
    if missing or unexpected or shapes:
        raise ValueError(f"{path}: not a {arch} state dict (missing {missing[:3]}, unexpected {unexpected[:3]}, "
                         f"wrong shape {shapes[:3]})")
    model.load_state_dict(sd, strict=False)


class ImageBackbone(Backbone):
    """torchvision image encoder; ``forward(pixel_values [B,3,S,S]) -> [B, H]``."""

    modality = "image"

    def __init__(self, model: nn.Module, arch: str, image_size: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, resize_size: Optional[int] = None,
                 model_kwargs: Optional[Dict[str, Any]] = None, min_crop_scale: float = 0.08, hflip: bool = True,
                 pretrained_weights_loaded: bool = True):
        """Raises ``ValueError`` for a bad ``min_crop_scale`` or an ``image_size`` that is
        under 8 (32 for VGG) or, for a ViT, not the size its position embedding holds."""
        super().__init__()
        if not 0 < float(min_crop_scale) <= 1:
            raise ValueError(f"min_crop_scale={min_crop_scale}: expected a fraction of the image area in (0, 1]")
        if int(image_size) < 8:
            raise ValueError(f"--image_size {image_size}: expected a positive size of at least 8 pixels")
        if isinstance(model, models.VGG) and int(image_size) < 32:
            raise ValueError(f"--image_size {image_size}: too small for {arch}'s five 2x2 max-pools; expected >= 32")
        _check_vit_positions(model, arch, int(image_size))
        self.num_features = _strip_head(model, arch)
        self.model = model
        self.arch = arch
        self.image_size = int(image_size)
        self.resize_size = int(resize_size) if resize_size else int(self.image_size * 256 / 224)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.model_kwargs = dict(model_kwargs) if model_kwargs else None
        self.min_crop_scale = float(min_crop_scale)
        self.hflip = bool(hflip)
        self.pretrained_weights_loaded = bool(pretrained_weights_loaded)

    def _normalize(self) -> list:
        return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]

    @property
    def train_transform(self) -> v2.Compose:
        """PIL image -> normalised ``[3,S,S]``: random resized crop (area fraction in
        ``[min_crop_scale, 1]``, aspect in [3/4, 4/3]) + horizontal flip (when ``hflip``)."""
        aug = [v2.RandomResizedCrop(self.image_size, scale=(self.min_crop_scale, 1.0), antialias=True)]
        if self.hflip:
            aug.append(v2.RandomHorizontalFlip())
        return v2.Compose(aug + self._normalize())

    @property
    def eval_transform(self) -> v2.Compose:
        """PIL image -> normalised ``[3,S,S]``: shorter side to ``resize_size``, centre crop."""
        return v2.Compose([v2.Resize(self.resize_size, antialias=True), v2.CenterCrop(self.image_size)]
                          + self._normalize())

    # construction -----------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, weights_path: Optional[str] = None, image_size: int = 224,
                        min_crop_scale: float = 0.08, hflip: bool = True, **_: Any) -> "ImageBackbone":
        """``name_or_path``: a torchvision model name (resnet18/34/50, vgg16, vit_b_16, ...).

        ``min_crop_scale`` / ``hflip`` set the training augmentation (e.g. 0.5 / False for digits).
        Without ``weights_path`` the weights are random (``pretrained_weights_loaded`` False).
        Raises ``ValueError`` for unknown models or weights, unreadable or mismatched
        weight files and image sizes the model cannot take."""
        arch = name_or_path
        mean, std, resize = IMAGENET_MEAN, IMAGENET_STD, None
        if weights_path and weights_path.startswith("torchvision:"):
            wname = weights_path.split(":", 1)[1]
            try:
                weights = models.get_model_weights(arch)[wname] if arch in models.list_models(module=models) else None
            except KeyError:
                weights = None
            if weights is None:
                raise ValueError(f"{weights_path}: no torchvision weights {wname!r} for {arch!r}")
            tf = weights.transforms()
            mean, std = tf.mean, tf.std
            resize = round(image_size * tf.resize_size[0] / tf.crop_size[0])
            model = build_torchvision_model(arch, image_size, weights=weights)
        else:
            model = build_torchvision_model(arch, image_size)
            if weights_path:
                _load_local_weights(model, weights_path, arch)
        return cls(model, arch, image_size=image_size, mean=mean, std=std, resize_size=resize,
                   min_crop_scale=min_crop_scale, hflip=hflip, pretrained_weights_loaded=bool(weights_path))

    @classmethod
    def from_config_dict(cls, cfg: Dict[str, Any], preprocessor_dir: Optional[str] = None) -> "ImageBackbone":
        """Rebuild (random init; the checkpoint supplies the weights)."""
        pre = {k: cfg[k] for k in ("image_size", "mean", "std", "resize_size") if k in cfg}
        path = os.path.join(preprocessor_dir, PREPROCESSOR_FILE) if preprocessor_dir else None
        if path and os.path.isfile(path):
            with open(path) as f:
                pre.update({k: v for k, v in json.load(f).items() if k in ("image_size", "mean", "std", "resize_size")})
        image_size = int(pre.get("image_size", 224))
        model = build_torchvision_model(cfg["arch"], image_size, model_kwargs=cfg.get("model_kwargs"))
        bb = cls(model, cfg["arch"], image_size=image_size, mean=pre.get("mean", IMAGENET_MEAN),
                 std=pre.get("std", IMAGENET_STD), resize_size=pre.get("resize_size"),
                 model_kwargs=cfg.get("model_kwargs"), min_crop_scale=cfg.get("min_crop_scale", 0.08),
                 hflip=cfg.get("hflip", True))
        if cfg.get("num_features") not in (None, bb.num_features):
            raise ValueError(f"config num_features={cfg['num_features']} but {cfg['arch']} gives {bb.num_features}")
        return bb

    def config_dict(self) -> Dict[str, Any]:
        cfg = {"type": "image", "arch": self.arch, "image_size": self.image_size, "num_features": self.num_features,
               **self.preprocessor_config(), "min_crop_scale": self.min_crop_scale, "hflip": self.hflip}
        if self.model_kwargs:
            cfg["model_kwargs"] = dict(self.model_kwargs)
        return cfg

    def preprocessor_config(self) -> Dict[str, Any]:
        return {"image_size": self.image_size, "resize_size": self.resize_size, "mean": self.mean, "std": self.std}

    def save_preprocessor(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, PREPROCESSOR_FILE), "w") as f:
            json.dump(self.preprocessor_config(), f, indent=2)

    # interface --------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.num_features

    def forward(self, pixel_values: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values)

    def train(self, mode: bool = True) -> "ImageBackbone":
        """Train mode, except that batch-norm layers whose weights are frozen (groups
        left out by partial tuning or not yet unfrozen) stay in eval mode: their
        running mean/variance stay those of the starting model, so a frozen group
        computes exactly what it computed before training."""
        super().train(mode)
        if mode:
            for mod in self.model.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.affine \
                        and not any(p.requires_grad for p in mod.parameters()):
                    mod.eval()
        return self

    def collate(self, inputs: Sequence[Any], train: bool = False) -> Dict[str, torch.Tensor]:
        tf = self.train_transform if train else self.eval_transform
        out = []
        for img in inputs:
            if getattr(img, "mode", "RGB") != "RGB":  # PIL grayscale / RGBA / palette
                img = img.convert("RGB")
            out.append(tf(img))
        return {"pixel_values": torch.stack(out)}

    def layer_groups(self) -> List[LayerGroup]:
        m = self.model
        if isinstance(m, models.ResNet):
            groups = [("stem", [m.conv1, m.bn1])] + [(f"layer{i}", [getattr(m, f"layer{i}")]) for i in range(1, 5)]
        elif isinstance(m, models.VGG):
            groups, block = [], []
            for mod in m.features:
                block.append(mod)
                if isinstance(mod, nn.MaxPool2d):
                    groups.append((f"block{len(groups) + 1}", block))
                    block = []
            if block:
                groups.append((f"block{len(groups) + 1}", block))
            groups.append(("classifier", [m.classifier]))
        else:  # VisionTransformer
            groups = [("embeddings", [m.conv_proj])] + [
                (f"layer.{i}", [layer]) for i, layer in enumerate(m.encoder.layers)] + [
                ("final", [m.encoder.ln, m.heads])]
        out = [LayerGroup(n, [p for mod in mods for p in mod.parameters()]) for n, mods in groups]
        if isinstance(m, models.VisionTransformer):
            out[0].params[:0] = [m.class_token, m.encoder.pos_embedding]
        return [g for g in out if g.params]

    def length(self, raw: Any) -> int:
        return 0  # every image becomes image_size x image_size


register_backbone("image", ImageBackbone)
