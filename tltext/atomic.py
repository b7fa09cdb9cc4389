"""Files and folders that appear whole or not at all.

Every output tltext writes (results.json, report.md, the model card, OUT/model, cached
embeddings, checkpoints of the recipes) is written under a temporary name in the same
folder and renamed into place (``os.replace``, atomic on one file system), so a crash
never leaves a half-written file. ``tempfile`` creates its files and folders owner-only
(0600 / 0700); before the rename they get the permissions an ordinary ``open`` or
``os.makedirs`` would have given them under the process umask, so a saved model is as
readable as the rest of the output folder."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_permissions(path: str) -> None:
    """chmod ``path`` (and, for a folder, everything under it) to 0666 / 0777 minus the umask."""
    mask = _umask()
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~mask)
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o777 & ~mask)
            for f in files:
                os.chmod(os.path.join(root, f), 0o666 & ~mask)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary file name beside ``path``; on success it becomes ``path``.
    On an exception the temporary file is removed and ``path`` is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}-", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        publish_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def json_default(o: Any) -> Any:
    """``json.dump``'s ``default``: numpy scalars and arrays, torch tensors as plain numbers
    and lists; anything else as its ``str``."""
    import numpy as np
    import torch

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray) or torch.is_tensor(o):
        return o.tolist()
    return str(o)


def atomic_write_json(path: str, obj: Any) -> None:
    """``path`` written whole or not at all (numpy/torch values as plain numbers)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=json_default)


@contextlib.contextmanager
def atomic_dir(final: str) -> Iterator[str]:
    """Yields a temporary folder beside ``final``; on success it replaces ``final``
    (an existing ``final`` is removed only then). On an exception the temporary
    folder is removed and ``final`` is left as it was."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(final)}-")
    try:
        yield tmp
        publish_permissions(tmp)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
