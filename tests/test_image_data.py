"""Image data: the offline digits domain pair and the image loaders."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tltext.data import DataError, build_label_maps
from tltext.data.digits import write_digits
from tltext.data.image import load_image_examples

DIGITS = [str(d) for d in range(10)]


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    return out, write_digits(str(out), seed=0, size=32)


def test_digits_layout_and_counts(digits):
    out, info = digits
    assert sorted(os.listdir(out)) == ["digits.json", "source", "target"]  # no temporary folder left
    assert info["source"] == info["target"] == 1797 and sum(info["per_class"].values()) == 1797
    for dom in ("source", "target"):
        assert sorted(os.listdir(out / dom)) == DIGITS
        for d in DIGITS:
            assert len(os.listdir(out / dom / d)) == info["per_class"][d]
    assert min(info["per_class"].values()) >= 170  # load_digits is near-balanced (174..183 per class)
    assert json.loads((out / "digits.json").read_text())["per_class"] == info["per_class"]
    with Image.open(out / "target" / "3" / os.listdir(out / "target" / "3")[0]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"


def test_digits_target_is_a_shifted_copy(digits):
    out, _ = digits
    src = load_image_examples(str(out / "source"))
    tgt = load_image_examples(str(out / "target"))
    assert src.labels == tgt.labels and [Path(p).name for p in src.extra["paths"]] == [Path(p).name for p in tgt.extra["paths"]]
    s = np.stack([np.asarray(x, dtype=np.float32) for x in src.inputs])
    t = np.stack([np.asarray(x, dtype=np.float32) for x in tgt.inputs])
    assert (s[..., 0] == s[..., 1]).all() and (s[..., 1] == s[..., 2]).all()  # source is grey
    assert np.abs(t[..., 0] - t[..., 1]).mean() > 20  # target is coloured
    luma = t @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    ink, bg = s[..., 0] > 200, s[..., 0] < 5  # ink / pure background / pure background pixels of the source
    assert bg.mean() > 0.3 and ink.mean() > 0.05
    assert s[..., 0][bg].max() < 5 and luma[bg].mean() > 40  # black background -> coloured background
    per_image = [(luma[i][ink[i]].mean() - luma[i][bg[i]].mean()) / 255 for i in range(len(t)) if ink[i].any()]
    assert min(per_image) > 0.2 and len(per_image) > 1700  # ink stays brighter than the background
    assert np.abs(s - t).mean() > 40


def test_digits_are_deterministic(digits, tmp_path):
    out, _ = digits
    first = _digest(out)
    again = write_digits(str(tmp_path / "a"), seed=0, size=32)
    assert again["source"] == 1797 and _digest(tmp_path / "a") == first
    other = _digest(Path(write_digits(str(tmp_path / "b"), seed=1, size=32)["source_dir"]).parent)
    same_src = [k for k in first if k.startswith("source")]
    assert all(other[k] == first[k] for k in same_src)
    changed = [k for k in first if k.startswith("target") and other[k] != first[k]]
    assert len(changed) == 1797
    with pytest.raises(ValueError, match="already holds"):
        write_digits(str(tmp_path / "a"))
    write_digits(str(tmp_path / "a"), seed=1, size=16, overwrite=True)
    assert json.loads((tmp_path / "a" / "digits.json").read_text())["seed"] == 1
    with Image.open(next((tmp_path / "a" / "source" / "0").iterdir())) as im:
        assert im.size == (16, 16)


def test_digits_folder_loads_as_labelled_rgb_examples(digits):
    out, info = digits
    ex = load_image_examples(str(out / "source"))
    assert len(ex) == 1797 and ex.source == str(out / "source")
    assert all(im.mode == "RGB" and im.size == (32, 32) for im in ex.inputs[:50])
    assert ex.labels == sorted(ex.labels)  # class folders in sorted order
    assert {d: ex.labels.count(d) for d in DIGITS} == info["per_class"]
    assert build_label_maps(ex.labels, ex.source) == {d: i for i, d in enumerate(DIGITS)}


def _png(path: Path, value: int, size=(12, 10), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value // 2, 0)).save(path)


def test_folder_loader(tmp_path):
    root = tmp_path / "imgs"
    _png(root / "cat" / "b.png", 10)
    _png(root / "cat" / "a.jpg", 20)
    _png(root / "dog" / "sub" / "c.bmp", 30, mode="L")  # grey -> RGB, nested folders included
    (root / "dog" / "notes.txt").write_text("not an image")  # ignored
    ex = load_image_examples(str(root))
    assert ex.labels == ["cat", "cat", "dog"]
    assert [Path(p).name for p in ex.extra["paths"]] == ["a.jpg", "b.png", "c.bmp"]
    assert all(im.mode == "RGB" for im in ex.inputs) and ex.inputs[2].getpixel((0, 0)) == (30, 30, 30)

    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"broken\.png: cannot read image"):
        load_image_examples(str(root))
    (root / "dog" / "broken.png").unlink()

    (root / "bird").mkdir()
    with pytest.raises(DataError, match=r"bird: class folder holds no images"):
        load_image_examples(str(root))

    flat = tmp_path / "flat"
    _png(flat / "x.png", 1)
    _png(flat / "y.webp", 2)
    un = load_image_examples(str(flat), require_labels=False)
    assert un.labels is None and len(un) == 2
    with pytest.raises(DataError, match="images without class folders, so no labels"):
        load_image_examples(str(flat))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images and no class folders"):
        load_image_examples(str(tmp_path / "empty"))


def test_manifest_loader(tmp_path):
    _png(tmp_path / "img" / "one.png", 40)
    _png(tmp_path / "img" / "two.png", 80)
    (tmp_path / "m.csv").write_text("path,label\nimg/one.png,a\nimg/two.png,b\n")
    ex = load_image_examples(str(tmp_path / "m.csv"))
    assert ex.labels == ["a", "b"] and ex.inputs[1].getpixel((0, 0)) == (80, 40, 0)
    (tmp_path / "m2.csv").write_text("file,label\nimg/one.png,a\nimg/missing.png,b\n")
    with pytest.raises(DataError, match=r"missing\.png: image file not found"):
        load_image_examples(str(tmp_path / "m2.csv"), image_column="file")
    with pytest.raises(DataError, match=r"no image column 'image'; columns are \['file', 'label'\]"):
        load_image_examples(str(tmp_path / "m2.csv"))
    with pytest.raises(DataError, match="no label column 'y'"):
        load_image_examples(str(tmp_path / "m.csv"), label_column="y")


def test_saved_dataset_with_image_column(tmp_path):
    import datasets

    imgs = [Image.new("RGB", (8, 8), (i * 60, 0, 0)) for i in range(3)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["no", "yes"])})
    datasets.Dataset.from_dict({"image": imgs, "label": [0, 1, 1]}, features=feats).save_to_disk(str(tmp_path / "ds"))
    ex = load_image_examples(str(tmp_path / "ds"))
    assert ex.labels == ["no", "yes", "yes"]  # ClassLabel ids -> names
    assert [im.getpixel((0, 0)) for im in ex.inputs] == [(0, 0, 0), (60, 0, 0), (120, 0, 0)]

    bad = datasets.Dataset.from_dict(
        {"image": [{"bytes": b"not a png", "path": "x.png"}], "label": [0]}, features=feats)
    bad.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match=r"row 0 column 'image' \(x\.png\): cannot decode image"):
        load_image_examples(str(tmp_path / "bad"))
