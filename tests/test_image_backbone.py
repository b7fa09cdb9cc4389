"""ImageBackbone: layer groups, embeddings, transforms, weights and config round trips."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import models

from tltext.backbones import backbone_class, backbone_from_config, load_backbone
from tltext.backbones.image import IMAGENET_MEAN, IMAGENET_STD, PREPROCESSOR_FILE, ImageBackbone

TINY_VIT = {"patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}


def _images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(40, 52), (64, 48), (33, 33), (50, 70)]
    return [Image.fromarray(rng.integers(0, 256, (*sizes[i % 4], 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module")
def backbones():
    torch.manual_seed(0)
    return {arch: load_backbone("image", arch, image_size=32) for arch in ("resnet18", "vgg16", "vit_b_16")}


def test_registered():
    assert backbone_class("image") is ImageBackbone


@pytest.mark.parametrize("arch,names", [
    ("resnet18", ["stem", "layer1", "layer2", "layer3", "layer4"]),
    ("vgg16", ["block1", "block2", "block3", "block4", "block5", "classifier"]),
    ("vit_b_16", ["embeddings"] + [f"layer.{i}" for i in range(12)] + ["final"]),
])
def test_layer_groups_cover_every_parameter_once(backbones, arch, names):
    bb = backbones[arch]
    groups = bb.layer_groups()
    assert [g.name for g in groups] == names
    ids = [id(p) for g in groups for p in g.params]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in bb.parameters()}
    if arch == "vgg16":  # 2 or 3 convs (weight + bias) per block, classifier without its last Linear
        assert [len(g.params) for g in groups] == [4, 4, 6, 6, 6, 4]
        assert groups[-1].params[-1].shape == (4096,)
    if arch == "vit_b_16":
        first = {id(p) for p in groups[0].params}
        assert id(bb.model.class_token) in first and id(bb.model.encoder.pos_embedding) in first


@pytest.mark.parametrize("arch,dim", [("resnet18", 512), ("vgg16", 4096), ("vit_b_16", 768)])
def test_embedding_dims_and_every_parameter_gets_a_gradient(backbones, arch, dim):
    bb = backbones[arch]
    assert bb.hidden_size == dim == bb.config_dict()["num_features"]
    bb.train()
    batch = bb.collate(_images(2), train=True)
    assert set(batch) == {"pixel_values"} and batch["pixel_values"].shape == (2, 3, 32, 32)
    bb.zero_grad()
    z = bb(**batch)
    assert z.shape == (2, dim)
    z.pow(2).sum().backward()
    no_grad = [n for n, p in bb.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_resnet50_is_2048_wide():
    assert load_backbone("image", "resnet50", image_size=32).hidden_size == 2048


def test_freezing_a_group_sets_requires_grad_exactly(backbones):
    bb = backbones["resnet18"]
    groups = bb.layer_groups()
    for p in bb.parameters():
        p.requires_grad_(False)
    for p in groups[3].params:
        p.requires_grad_(True)
    try:
        bb.zero_grad(set_to_none=True)
        bb.train()
        bb(**bb.collate(_images(2), train=True)).sum().backward()
        trainable = {id(p) for p in bb.parameters() if p.requires_grad}
        with_grad = {id(p) for p in bb.parameters() if p.grad is not None}
        assert trainable == with_grad == {id(p) for p in groups[3].params}
    finally:
        for p in bb.parameters():
            p.requires_grad_(True)


def test_transforms():
    bb = ImageBackbone(models.resnet18(), "resnet18", image_size=32)
    assert bb.resize_size == 36
    imgs = _images(4) + [Image.new("L", (20, 30), 128), Image.new("RGBA", (40, 40))]
    torch.manual_seed(0)
    a = bb.collate(imgs, train=True)["pixel_values"]
    b = bb.collate(imgs, train=True)["pixel_values"]
    assert a.shape == (6, 3, 32, 32) and a.dtype == torch.float32
    assert not torch.equal(a, b)  # random crops / flips
    e1, e2 = bb.collate(imgs)["pixel_values"], bb.collate(imgs)["pixel_values"]
    assert e1.shape == (6, 3, 32, 32) and torch.equal(e1, e2)
    # no flip, full-area crops: a square image is only resized, so training batches are deterministic
    fixed = ImageBackbone(models.resnet18(), "resnet18", image_size=32, min_crop_scale=1.0, hflip=False)
    assert fixed.config_dict()["min_crop_scale"] == 1.0 and fixed.config_dict()["hflip"] is False
    sq = [_images(3)[2]]
    assert torch.equal(fixed.collate(sq, train=True)["pixel_values"], fixed.collate(sq, train=True)["pixel_values"])
    # a constant image is normalised channel-wise: (c / 255 - mean) / std
    flat = bb.collate([Image.new("RGB", (50, 40), (255, 0, 51))])["pixel_values"][0]
    want = (torch.tensor([1.0, 0.0, 0.2]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(flat.mean(dim=(1, 2)), want, atol=1e-5) and flat.std(dim=(1, 2)).max() < 1e-5
    # eval = shorter side to 36 (bilinear), then the centre 32 x 32, then normalise
    img = _images(1)[0]  # 52 wide, 40 high
    crop = np.asarray(img.resize((36 * 52 // 40, 36), Image.BILINEAR), dtype=np.float32)[2:34, 7:39] / 255
    manual = (torch.from_numpy(crop).permute(2, 0, 1) - torch.tensor(IMAGENET_MEAN)[:, None, None]) \
        / torch.tensor(IMAGENET_STD)[:, None, None]
    assert torch.allclose(bb.eval_transform(img), manual, atol=1e-5)


def test_config_round_trip_gives_same_embedding(tmp_path):
    stats = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}  # as torchvision weights with their own stats
    torch.manual_seed(0)
    r18 = ImageBackbone(models.resnet18(), "resnet18", image_size=32, **stats)
    vit = ImageBackbone(models.VisionTransformer(image_size=32, **TINY_VIT), "vision_transformer", image_size=32,
                        model_kwargs=TINY_VIT, **stats)
    for i, bb in enumerate((r18, vit)):
        bb.eval()
        d = tmp_path / str(i)
        bb.save_preprocessor(str(d))
        saved = json.loads((d / PREPROCESSOR_FILE).read_text())
        assert saved == {"image_size": 32, "resize_size": 36, **stats}
        cfg = json.loads(json.dumps(bb.config_dict()))
        assert cfg["type"] == "image" and cfg["arch"] == bb.arch and cfg["num_features"] == bb.hidden_size
        for k in ("mean", "std", "resize_size"):
            cfg.pop(k)  # the preprocessor file supplies them
        re = backbone_from_config(cfg, preprocessor_dir=str(d)).eval()
        assert (re.mean, re.std, re.resize_size) == (stats["mean"], stats["std"], 36)
        re.load_state_dict(bb.state_dict())
        imgs = _images(3, seed=1)
        x = re.collate(imgs)["pixel_values"]
        assert torch.equal(x, bb.collate(imgs)["pixel_values"])  # the same preprocessing
        with torch.no_grad():
            assert torch.allclose(re(pixel_values=x), bb(pixel_values=x), atol=1e-6)


def test_saved_model_reloads_with_auto_class(tmp_path):
    from transformers import AutoModelForImageClassification

    from tltext.modeling import TltextModel

    torch.manual_seed(0)
    bb = load_backbone("image", "resnet18", image_size=32)
    bb.train()
    with torch.no_grad():  # move BatchNorm running statistics off their defaults
        bb(**bb.collate(_images(4), train=True))
    model = TltextModel.from_backbone(bb, {"cat": 0, "dog": 1}).eval()
    model.save_pretrained(str(tmp_path))
    assert (tmp_path / PREPROCESSOR_FILE).exists()
    again = AutoModelForImageClassification.from_pretrained(str(tmp_path)).eval()
    x = bb.collate(_images(2))["pixel_values"]
    with torch.no_grad():
        assert torch.allclose(again(pixel_values=x).logits, model(pixel_values=x).logits, atol=1e-5)


def test_local_weights(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    ref = models.resnet18().eval()  # a torchvision checkpoint, head included
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    x = torch.randn(2, 3, 32, 32)
    ref.fc = torch.nn.Identity()
    with torch.no_grad():
        want = ref(x)
    for name in ("r18.pth", "r18.safetensors"):
        bb = ImageBackbone.from_pretrained("resnet18", weights_path=str(tmp_path / name), image_size=32).eval()
        with torch.no_grad():
            assert torch.allclose(bb(pixel_values=x), want, atol=1e-6)
    headless = ImageBackbone.from_pretrained("resnet18", weights_path=str(tmp_path / "r18.pth"), image_size=32)
    torch.save(headless.state_dict(), tmp_path / "backbone.pt")  # "model."-prefixed, without fc
    again = ImageBackbone.from_pretrained("resnet18", weights_path=str(tmp_path / "backbone.pt"), image_size=32)
    with torch.no_grad():
        assert torch.allclose(again.eval()(pixel_values=x), want, atol=1e-6)
    torch.save(models.VisionTransformer(image_size=32, **TINY_VIT).state_dict(), tmp_path / "vit.pth")
    with pytest.raises(ValueError, match=r"vit\.pth: not a resnet18 state dict \(missing \['conv1.weight'"):
        ImageBackbone.from_pretrained("resnet18", weights_path=str(tmp_path / "vit.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pth: cannot read weights"):
        ImageBackbone.from_pretrained("resnet18", weights_path=str(tmp_path / "junk.pth"))
    with pytest.raises(ValueError, match="no torchvision weights 'NOPE'"):
        ImageBackbone.from_pretrained("resnet18", weights_path="torchvision:NOPE")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet7'"):
        load_backbone("image", "resnet7")
    with pytest.raises(ValueError, match="image_size=40 must be divisible by the patch size 16"):
        load_backbone("image", "vit_b_16", image_size=40)
    with pytest.raises(ValueError, match="image_size=36 must be divisible by the patch size 8"):
        backbone_from_config({"type": "image", "arch": "vision_transformer", "image_size": 36, "model_kwargs": TINY_VIT})
    with pytest.raises(ValueError, match="built for image_size=32, not 64"):
        ImageBackbone(models.VisionTransformer(image_size=32, **TINY_VIT), "vision_transformer", image_size=64)
    with pytest.raises(ValueError, match="unsupported torchvision model 'squeezenet1_0'"):
        load_backbone("image", "squeezenet1_0")
