"""An offline image domain-adaptation pair from scikit-learn's digits.

``sklearn.datasets.load_digits`` (UCI optical digits, Alpaydin & Kaynak 1998;
1797 8x8 grey images, 10 classes) ships with scikit-learn, so this needs no
network. Two class-per-folder domains are written:

* ``OUT/source/<digit>/NNNN.png``: the digit, white ink on black, upscaled
  (bicubic) to ``size`` x ``size`` RGB;
* ``OUT/target/<digit>/NNNN.png``: the same digit in the style of MNIST-M
  (Ganin & Lempitsky, ICML 2015): blended with a random colour texture ``T`` by
  the absolute difference ``x_t = |T - x_s|`` per channel, so ink and
  background take random, image-specific colours and the ink can be darker
  than the background. ``T`` is a smooth random colour field plus pixel noise,
  drawn from ``numpy.random.default_rng([seed, i])`` (deterministic).

A classifier trained on the source alone drops sharply on the target (it never
sees coloured, textured or inverted contrast), while the class shapes are
unchanged, which is what domain alignment (DANN, CORAL, MMD) can exploit.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Dict

import numpy as np
from PIL import Image

INFO_FILE = "digits.json"


def _upscale(img8: np.ndarray, size: int) -> np.ndarray:
    """8x8 intensities in [0, 16] -> ``size`` x ``size`` floats in [0, 1]."""
    im = Image.fromarray((img8 / 16.0 * 255).astype(np.uint8), mode="L").resize((size, size), Image.BICUBIC)
    return np.asarray(im, dtype=np.float32) / 255.0


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random smooth colour field + pixel noise, HxWx3 in [0, 1]."""
    cells = int(rng.integers(2, 6))
    coarse = (rng.random((cells, cells, 3)) * 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse, mode="RGB").resize((size, size), Image.BICUBIC), dtype=np.float32) / 255
    noise = rng.normal(0.0, 0.08, (size, size, 3)).astype(np.float32)
    return np.clip(smooth + noise, 0.0, 1.0)


def shift_digit(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The target style of one source image (HxW in [0, 1]) -> HxWx3 uint8."""
    tex = _texture(rng, digit.shape[0])
    return (np.abs(tex - digit[:, :, None]) * 255).round().astype(np.uint8)


def write_digits(output_dir: str, seed: int = 0, size: int = 32, overwrite: bool = False) -> Dict[str, object]:
    """Write ``OUT/source`` and ``OUT/target`` (class-per-folder PNGs) and ``OUT/digits.json``.

    The files are written to a temporary folder inside ``output_dir`` and moved
    into place at the end. Returns ``{"source": n, "target": n, "per_class": {...},
    "size": size, "seed": seed, "source_dir": ..., "target_dir": ...}``.
    """
    from sklearn.datasets import load_digits

    if int(size) < 8:
        raise ValueError(f"size={size}: expected at least 8 pixels")
    size = int(size)
    names = ("source", "target", INFO_FILE)
    os.makedirs(output_dir, exist_ok=True)
    existing = [n for n in names if os.path.exists(os.path.join(output_dir, n))]
    if existing and not overwrite:
        raise ValueError(f"{output_dir}: already holds {existing}; delete them or choose another output_dir")
    data = load_digits()
    images, targets = data.images, data.target
    per_class = {str(c): int((targets == c).sum()) for c in sorted(set(targets.tolist()))}
    info = {"seed": int(seed), "size": size, "source": len(images), "target": len(images), "per_class": per_class,
            "dataset": "sklearn.datasets.load_digits (UCI optical recognition of handwritten digits)",
            "target_shift": "MNIST-M style: |random colour texture - digit| per channel"}
    tmp = tempfile.mkdtemp(prefix=".digits-", dir=output_dir)
    try:
        for dom in ("source", "target"):
            for c in per_class:
                os.makedirs(os.path.join(tmp, dom, c))
        for i, (img8, y) in enumerate(zip(images, targets)):
            digit = _upscale(img8, size)
            name = f"{i:04d}.png"
            src = (digit * 255).round().astype(np.uint8)
            Image.fromarray(np.repeat(src[:, :, None], 3, axis=2), mode="RGB").save(os.path.join(tmp, "source", str(y), name))
            tgt = shift_digit(digit, np.random.default_rng([int(seed), i]))
            Image.fromarray(tgt, mode="RGB").save(os.path.join(tmp, "target", str(y), name))
        with open(os.path.join(tmp, INFO_FILE), "w") as f:
            json.dump(info, f, indent=2)
        for n in names:
            dst = os.path.join(output_dir, n)
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            elif os.path.exists(dst):
                os.remove(dst)
            os.replace(os.path.join(tmp, n), dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**info, "source_dir": os.path.join(output_dir, "source"), "target_dir": os.path.join(output_dir, "target")}
