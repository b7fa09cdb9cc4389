"""An offline image domain-adaptation pair from scikit-learn's digits.

``sklearn.datasets.load_digits`` (UCI optical digits, Alpaydin & Kaynak 1998;
1797 8x8 grey images, 10 classes) ships with scikit-learn, so this needs no
network. The images are split into two disjoint halves (the k-th image of each
class goes to the source when k is even, to the target when k is odd: 901 / 896
images, 87-92 per class), upscaled (bicubic) to ``size`` x ``size`` RGB and
written as class-per-folder PNGs:

* ``OUT/source/<digit>/NNNN.png``: white ink on black (grey);
* ``OUT/target/<digit>/NNNN.png``: recoloured, ``x_t = (1 - x) b + x k + e`` for
  the grey digit ``x`` in [0, 1], background colour ``b``, ink colour ``k`` and
  pixel noise ``e ~ N(0, 0.03^2)``. Two shifts:

  - ``random_colour`` (default), in the spirit of MNIST-M (Ganin & Lempitsky,
    ICML 2015): ``b`` and ``k`` drawn per image, uniform in [0, 1]^3, with
    ``luma(k) - luma(b) >= 0.35`` (the ink stays brighter, so the digit stays
    legible);
  - ``palette``: one fixed palette for every image, dark violet background
    ``b = (0.2, 0.1, 0.45)``, yellow ink ``k = (1.0, 0.8, 0.2)`` (a global
    colour cast, as from another scanner or camera).

  The noise (and the random colours) come from ``numpy.random.default_rng([seed,
  i])``, ``i`` = the image's index in ``load_digits``, so the files are
  deterministic. ``NNNN`` is that index.

The target half serves as the unlabelled target data and, with its labels, as
the target test set; no target image is a recoloured copy of a source image. A
ResNet-18 trained from scratch on the grey source reaches ~98 % on held-out
source images but 20-30 % on either target (it has never seen a non-black
background or coloured ink); aligning the feature distributions recovers part
of the gap under ``random_colour`` (DANN, MK-MMD: ~35 %) and most of it under
``palette`` (MK-MMD: ~93 %); see ``benchmarks/image_digits.py``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

INFO_FILE = "digits.json"
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601
MIN_CONTRAST = 0.35
NOISE_STD = 0.03
DOMAINS = ("source", "target")
SHIFTS = ("random_colour", "palette")
PALETTE_BACKGROUND = (0.2, 0.1, 0.45)
PALETTE_INK = (1.0, 0.8, 0.2)


def _upscale(img8: np.ndarray, size: int) -> np.ndarray:
    """8x8 intensities in [0, 16] -> ``size`` x ``size`` floats in [0, 1]."""
    im = Image.fromarray((img8 / 16.0 * 255).astype(np.uint8), mode="L").resize((size, size), Image.BICUBIC)
    return np.asarray(im, dtype=np.float32) / 255.0


def shift_digit(digit: np.ndarray, rng: np.random.Generator, shift: str = "random_colour") -> np.ndarray:
    """The target style of one grey image (HxW in [0, 1]) -> HxWx3 uint8."""
    if shift == "palette":
        bg, ink = np.array(PALETTE_BACKGROUND, np.float32), np.array(PALETTE_INK, np.float32)
    else:
        while True:
            bg, ink = rng.random(3, dtype=np.float32), rng.random(3, dtype=np.float32)
            if float((ink - bg) @ LUMA) >= MIN_CONTRAST:
                break
    d = digit[:, :, None]
    x = (1 - d) * bg + d * ink + rng.normal(0.0, NOISE_STD, d.shape[:2] + (3,)).astype(np.float32)
    return (np.clip(x, 0.0, 1.0) * 255).round().astype(np.uint8)


def split_domains(targets: np.ndarray, per_class: Optional[int] = None) -> Tuple[List[int], List[int]]:
    """Indices of the source and target halves: the k-th image of each class goes
    to the source if k is even, else to the target; at most ``per_class`` of each
    class per domain (the first ones)."""
    seen: Dict[int, int] = {}
    halves: Tuple[List[int], List[int]] = ([], [])
    for i, c in enumerate(np.asarray(targets).tolist()):
        k = seen.get(c, 0)
        seen[c] = k + 1
        if per_class is None or k // 2 < per_class:
            halves[k % 2].append(i)
    return halves


def _info(targets: np.ndarray, seed: int, size: int, per_class: Optional[int], shift: str) -> Dict[str, object]:
    src, tgt = split_domains(targets, per_class)
    counts = {dom: {str(c): int((targets[idx] == c).sum()) for c in sorted(set(targets.tolist()))}
              for dom, idx in zip(DOMAINS, (src, tgt))}
    return {"seed": int(seed), "size": int(size), "max_per_class": per_class, "source": len(src), "target": len(tgt),
            "per_class": counts,
            "dataset": "sklearn.datasets.load_digits (UCI optical recognition of handwritten digits)",
            "split": "disjoint halves: the k-th image of each class -> source if k is even, else target",
            "shift": shift, "target_shift": _describe(shift)}


def _describe(shift: str) -> str:
    if shift == "palette":
        colours = f"fixed background {PALETTE_BACKGROUND} and ink {PALETTE_INK} (RGB in [0, 1])"
    else:
        colours = f"random background and ink colours per image, ink >= {MIN_CONTRAST} brighter (luma)"
    return f"{colours}, Gaussian pixel noise std {NOISE_STD}"


def _already_written(output_dir: str, info: Dict[str, object]) -> bool:
    """The folder holds exactly what this call would write (same settings, every file present)."""
    try:
        with open(os.path.join(output_dir, INFO_FILE)) as f:
            if json.load(f) != info:
                return False
        for dom in DOMAINS:
            for c, n in info["per_class"][dom].items():
                names = [e for e in os.listdir(os.path.join(output_dir, dom, c)) if e.endswith(".png")]
                if len(names) != n:
                    return False
    except (OSError, ValueError):
        return False
    return True


def write_digits(output_dir: str, seed: int = 0, size: int = 32, per_class: Optional[int] = None,
                 shift: str = "random_colour", overwrite: bool = False) -> Dict[str, object]:
    """Write ``OUT/source`` and ``OUT/target`` (class-per-folder PNGs) and ``OUT/digits.json``.

    ``shift``: ``random_colour`` or ``palette`` (module docstring). ``per_class`` keeps at most that many images of each class per domain (small
    runs). Re-running with the same settings on a folder that already holds them
    rewrites nothing (``"reused": True``); other existing contents raise
    ValueError unless ``overwrite``. Files are written to a temporary folder inside
    ``output_dir`` and moved into place at the end. Returns the ``digits.json``
    dict plus ``source_dir``, ``target_dir`` and ``reused``.
    """
    from sklearn.datasets import load_digits

    if int(size) < 8:
        raise ValueError(f"size={size}: expected at least 8 pixels")
    if per_class is not None and int(per_class) < 1:
        raise ValueError(f"per_class={per_class}: expected a positive number of images per class")
    if shift not in SHIFTS:
        raise ValueError(f"shift={shift!r}: expected one of {', '.join(SHIFTS)}")
    size = int(size)
    per_class = None if per_class is None else int(per_class)
    data = load_digits()
    images, targets = data.images, data.target
    info = _info(targets, seed, size, per_class, shift)
    dirs = {"source_dir": os.path.join(output_dir, "source"), "target_dir": os.path.join(output_dir, "target")}
    names = DOMAINS + (INFO_FILE,)
    os.makedirs(output_dir, exist_ok=True)
    existing = [n for n in names if os.path.exists(os.path.join(output_dir, n))]
    if existing and not overwrite:
        if _already_written(output_dir, info):
            return {**info, **dirs, "reused": True}
        raise ValueError(f"{output_dir}: already holds {existing} written with other settings (or incomplete); "
                         "delete them, choose another output_dir or pass overwrite (--overwrite)")
    tmp = tempfile.mkdtemp(prefix=".digits-", dir=output_dir)
    try:
        for dom in DOMAINS:
            for c in info["per_class"][dom]:
                os.makedirs(os.path.join(tmp, dom, c))
        src_idx, tgt_idx = split_domains(targets, per_class)
        for dom, idx in zip(DOMAINS, (src_idx, tgt_idx)):
            for i in idx:
                digit = _upscale(images[i], size)
                path = os.path.join(tmp, dom, str(targets[i]), f"{i:04d}.png")
                if dom == "source":
                    grey = (digit * 255).round().astype(np.uint8)
                    Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), mode="RGB").save(path)
                else:
                    Image.fromarray(shift_digit(digit, np.random.default_rng([int(seed), i]), shift), mode="RGB").save(path)
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
    return {**info, **dirs, "reused": False}
