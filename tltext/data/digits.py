"""An offline image domain-adaptation pair from scikit-learn's digits.

``sklearn.datasets.load_digits`` (UCI optical digits, Alpaydin & Kaynak 1998;
1797 8x8 grey images, 10 classes) ships with scikit-learn, so this needs no
network. Two class-per-folder domains are written:

* ``OUT/source/<digit>/NNNN.png``: the digit, white ink on black, upscaled
  (bicubic) to ``size`` x ``size`` RGB;
* ``OUT/target/<digit>/NNNN.png``: the same digit recoloured, in the spirit of
  MNIST-M (Ganin & Lempitsky, ICML 2015): a random background colour ``b`` and
  ink colour ``k`` per image, ``x_t = (1 - x_s) b + x_s k + e``, with
  ``luma(k) - luma(b) >= 0.35`` (the ink stays brighter, so the digit stays
  legible) and pixel noise ``e ~ N(0, 0.03^2)``; drawn from
  ``numpy.random.default_rng([seed, i])``, so the files are deterministic.

The class shapes are unchanged, but a network trained on the grey source alone
falls to near chance on the target (it has never seen a non-black background or
coloured ink); aligning the two feature distributions (DANN, CORAL, MMD) recovers
part of the gap, so the pair is a small, offline check that adaptation helps.
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
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601
MIN_CONTRAST = 0.35
NOISE_STD = 0.03


def _upscale(img8: np.ndarray, size: int) -> np.ndarray:
    """8x8 intensities in [0, 16] -> ``size`` x ``size`` floats in [0, 1]."""
    im = Image.fromarray((img8 / 16.0 * 255).astype(np.uint8), mode="L").resize((size, size), Image.BICUBIC)
    return np.asarray(im, dtype=np.float32) / 255.0


def shift_digit(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The target style of one source image (HxW in [0, 1]) -> HxWx3 uint8."""
    while True:
        bg, ink = rng.random(3, dtype=np.float32), rng.random(3, dtype=np.float32)
        if float((ink - bg) @ LUMA) >= MIN_CONTRAST:
            break
    d = digit[:, :, None]
    x = (1 - d) * bg + d * ink + rng.normal(0.0, NOISE_STD, d.shape[:2] + (3,)).astype(np.float32)
    return (np.clip(x, 0.0, 1.0) * 255).round().astype(np.uint8)


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
            "target_shift": ("random background and ink colours per image, ink >= "
                             f"{MIN_CONTRAST} brighter (luma), Gaussian pixel noise std {NOISE_STD}")}
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
