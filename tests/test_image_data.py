"""Image data: the offline digits domain pair and the image loaders."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from tltext.cli import main as cli_main
from tltext.data import DataError, build_label_maps
from tltext.data.digits import PALETTE_BACKGROUND, PALETTE_INK, _upscale, write_digits
from tltext.data.image import load_image_examples

DIGITS = [str(d) for d in range(10)]
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))}


def _index(path: str) -> int:
    return int(Path(path).stem)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    return out, write_digits(str(out), seed=0, size=32)


def test_digits_layout_and_counts(digits):
    out, info = digits
    assert sorted(os.listdir(out)) == ["digits.json", "source", "target"]  # no temporary folder left
    assert (info["source"], info["target"]) == (901, 896) and info["reused"] is False
    assert info["shift"] == "random_colour" and info["max_per_class"] is None
    for dom in ("source", "target"):
        counts = info["per_class"][dom]
        assert sorted(os.listdir(out / dom)) == DIGITS and sum(counts.values()) == info[dom]
        for d in DIGITS:
            assert len(os.listdir(out / dom / d)) == counts[d]
        assert 87 <= min(counts.values()) and max(counts.values()) <= 92  # halves of 174..183 per class
    saved = json.loads((out / "digits.json").read_text())
    assert saved["per_class"] == info["per_class"] and saved["seed"] == 0 and saved["size"] == 32
    with Image.open(out / "target" / "3" / os.listdir(out / "target" / "3")[0]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"


def test_digits_halves_are_disjoint_and_the_target_recoloured(digits):
    out, _ = digits
    src = load_image_examples(str(out / "source"))
    tgt = load_image_examples(str(out / "target"))
    si, ti = [_index(p) for p in src.extra["paths"]], [_index(p) for p in tgt.extra["paths"]]
    assert not set(si) & set(ti) and sorted(si + ti) == list(range(1797))  # every image once, in one domain
    data = load_digits()
    assert [str(data.target[i]) for i in si] == src.labels and [str(data.target[i]) for i in ti] == tgt.labels
    s = np.stack([np.asarray(x, dtype=np.float32) for x in src.inputs])
    t = np.stack([np.asarray(x, dtype=np.float32) for x in tgt.inputs])
    assert (s[..., 0] == s[..., 1]).all() and (s[..., 1] == s[..., 2]).all()  # source is grey ...
    assert np.abs(s[..., 0] / 255 - np.stack([_upscale(data.images[i], 32) for i in si])).max() < 1 / 255 + 1e-6
    assert np.abs(t[..., 0] - t[..., 1]).mean() > 20  # ... target is coloured
    grey = np.stack([_upscale(data.images[i], 32) for i in ti])  # each target image's own grey digit
    ink, bg = grey > 200 / 255, grey < 5 / 255
    assert bg.mean() > 0.3 and ink.mean() > 0.05
    luma = t @ LUMA
    assert luma[bg].mean() > 40  # black background -> coloured background
    per_image = [(luma[i][ink[i]].mean() - luma[i][bg[i]].mean()) / 255 for i in range(len(t)) if ink[i].any()]
    assert min(per_image) > 0.2 and len(per_image) > 850  # the ink stays brighter than the background
    bg_colours = np.stack([t[i][bg[i]].mean(0) for i in range(len(t))])
    assert bg_colours.std(0).min() > 30  # a different background colour per image


def test_digits_palette_shift(tmp_path):
    info = write_digits(str(tmp_path / "p"), seed=0, size=16, per_class=3, shift="palette")
    assert (info["source"], info["target"]) == (30, 30) and info["shift"] == "palette"
    assert all(n == 3 for dom in ("source", "target") for n in info["per_class"][dom].values())
    tgt = load_image_examples(str(tmp_path / "p" / "target"))
    data = load_digits()
    t = np.stack([np.asarray(x, dtype=np.float32) / 255 for x in tgt.inputs])
    grey = np.stack([_upscale(data.images[_index(p)], 16) for p in tgt.extra["paths"]])
    expected = (1 - grey[..., None]) * np.array(PALETTE_BACKGROUND) + grey[..., None] * np.array(PALETTE_INK)
    err = t - expected  # the same colours everywhere, only the pixel noise (std 0.03) differs
    assert abs(err.mean()) < 0.01 and 0.02 < err.std() < 0.04
    src = load_image_examples(str(tmp_path / "p" / "source"))
    firsts = {c: np.flatnonzero(data.target == c)[:6] for c in range(10)}  # per_class=3: the first 3 of each half
    assert sorted(_index(p) for p in src.extra["paths"]) == sorted(i for f in firsts.values() for i in f[0::2])
    assert sorted(_index(p) for p in tgt.extra["paths"]) == sorted(i for f in firsts.values() for i in f[1::2])
    with pytest.raises(ValueError, match="shift='mnistm': expected one of random_colour, palette"):
        write_digits(str(tmp_path / "x"), shift="mnistm")
    with pytest.raises(ValueError, match="per_class=0: expected a positive number"):
        write_digits(str(tmp_path / "x"), per_class=0)


def test_digits_are_deterministic(digits, tmp_path):
    out, _ = digits
    first = _digest(out)
    again = write_digits(str(tmp_path / "a"), seed=0, size=32)
    assert again["source"] == 901 and _digest(tmp_path / "a") == first
    other = _digest(Path(write_digits(str(tmp_path / "b"), seed=1, size=32)["source_dir"]).parent)
    same_src = [k for k in first if k.startswith("source")]
    assert all(other[k] == first[k] for k in same_src)  # the seed changes the target colours only
    changed = [k for k in first if k.startswith("target") and other[k] != first[k]]
    assert len(changed) == 896


def test_digits_rerun_is_idempotent(tmp_path):
    d = tmp_path / "d"
    first = write_digits(str(d), seed=0, size=16, per_class=2)
    mtimes = {p: p.stat().st_mtime_ns for p in d.rglob("*")}
    again = write_digits(str(d), seed=0, size=16, per_class=2)  # the same command again: nothing rewritten
    assert again["reused"] is True and {k: v for k, v in again.items() if k != "reused"} == \
        {k: v for k, v in first.items() if k != "reused"}
    assert {p: p.stat().st_mtime_ns for p in d.rglob("*")} == mtimes
    with pytest.raises(ValueError, match="written with other settings .*overwrite"):
        write_digits(str(d), seed=1, size=16, per_class=2)
    next((d / "target" / "4").iterdir()).unlink()  # an incomplete folder is not reused
    with pytest.raises(ValueError, match="already holds"):
        write_digits(str(d), seed=0, size=16, per_class=2)
    assert write_digits(str(d), seed=1, size=16, per_class=2, overwrite=True)["reused"] is False
    assert json.loads((d / "digits.json").read_text())["seed"] == 1
    assert len(list((d / "target").rglob("*.png"))) == 20


def test_digits_command_line(tmp_path, capsys):
    d = str(tmp_path / "cli")
    argv = ["data", "digits", "--output_dir", d, "--size", "16", "--per_class", "2", "--shift", "palette"]
    assert cli_main(argv) == 0
    assert capsys.readouterr().out.startswith(f"wrote: 20 source images in {d}/source, 20 target images")
    assert cli_main(argv) == 0  # re-running the same command is fine
    assert capsys.readouterr().out.startswith("unchanged (same settings): 20 source images")
    assert cli_main(argv[:-2]) == 2  # another shift: refused ...
    assert "written with other settings" in capsys.readouterr().err
    assert cli_main(argv[:-2] + ["--overwrite"]) == 0  # ... unless asked
    assert json.loads((tmp_path / "cli" / "digits.json").read_text())["shift"] == "random_colour"


def test_digits_folder_loads_as_labelled_rgb_examples(digits):
    out, info = digits
    ex = load_image_examples(str(out / "source"))
    assert len(ex) == 901 and ex.source == str(out / "source")
    assert all(im.mode == "RGB" and im.size == (32, 32) for im in ex.inputs[:50])
    assert ex.labels == sorted(ex.labels)  # class folders in sorted order
    assert {d: ex.labels.count(d) for d in DIGITS} == info["per_class"]["source"]
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
