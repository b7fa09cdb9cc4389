"""Image examples (RGB PIL images) from a class-per-folder directory, a
``datasets`` dataset (saved to disk, or a name) with an Image column, or a
manifest table (CSV/JSONL/...) whose column holds image file paths.

Folder layout: ``ROOT/<class>/<image>`` (label = folder name; ``.png .jpg .jpeg
.bmp .webp``, sorted by class then file name). A folder of images with no class
sub-folders is read as unlabelled. Manifest paths are relative to the manifest.
"""
from __future__ import annotations

import io
import os
from typing import Any, List, Optional, Tuple

from PIL import Image, UnidentifiedImageError

from .examples import DataError, Examples
from .tables import load_table

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_BAD_IMAGE = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def open_rgb(path: str) -> Image.Image:
    """Read one image file eagerly as RGB; DataError naming the file if unreadable."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except _BAD_IMAGE as e:
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {str(e)[:200]}); "
                        f"expected one of {', '.join(IMAGE_EXTENSIONS)}") from None


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_images(folder: str) -> List[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in sorted(files) if _is_image(f))
    return found


def _from_folder(path: str, require_labels: bool) -> Examples:
    entries = sorted(e for e in os.listdir(path) if not e.startswith("."))
    classes = [e for e in entries if os.path.isdir(os.path.join(path, e))]
    if not classes:
        files = [os.path.join(path, e) for e in entries if _is_image(e)]
        if not files:
            raise DataError(f"{path}: no images and no class folders; expected {path}/<class>/<image> "
                            f"with images ending in {', '.join(IMAGE_EXTENSIONS)}")
        if require_labels:
            raise DataError(f"{path}: images without class folders, so no labels; expected {path}/<class>/<image>")
        return Examples([open_rgb(f) for f in files], None, path, {"paths": files})
    files: List[str] = []
    labels: List[str] = []
    for c in classes:
        imgs = _list_images(os.path.join(path, c))
        if not imgs:
            raise DataError(f"{os.path.join(path, c)}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        files.extend(imgs)
        labels.extend([c] * len(imgs))
    return Examples([open_rgb(f) for f in files], labels, path, {"paths": files})


def _to_rgb(value: Any, where: str, base_dir: str) -> Tuple[Image.Image, Optional[str]]:
    """A dataset cell (PIL image, {"bytes","path"} dict or file path) -> RGB image."""
    if isinstance(value, Image.Image):
        try:
            return value.convert("RGB"), None
        except _BAD_IMAGE as e:
            raise DataError(f"{where}: cannot decode image ({type(e).__name__}: {str(e)[:200]})") from None
    if isinstance(value, str) and value.strip():
        p = value if os.path.isabs(value) else os.path.join(base_dir, value)
        return open_rgb(p), p
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        if value.get("bytes"):
            try:
                with Image.open(io.BytesIO(value["bytes"])) as im:
                    return im.convert("RGB"), value.get("path")
            except _BAD_IMAGE as e:
                raise DataError(f"{where} ({value.get('path') or 'bytes'}): cannot decode image "
                                f"({type(e).__name__}: {str(e)[:200]})") from None
        return _to_rgb(value["path"], where, base_dir)
    raise DataError(f"{where}: holds {type(value).__name__} {str(value)[:50]!r}; expected an image or an image file path")


def _from_table(path: str, image_column: str, label_column: Optional[str], require_labels: bool,
                split: Optional[str], encoding: Optional[str] = None) -> Examples:
    ds = load_table(path, split=split, encoding=encoding)
    if len(ds) == 0:
        raise DataError(f"{path}: no rows")
    col = image_column
    if col not in ds.column_names:
        if image_column == "image" and "path" in ds.column_names:
            col = "path"  # a manifest's usual file column
        else:
            raise DataError(f"{path}: no image column {image_column!r}; columns are {ds.column_names} "
                            "(set --image_column: one column name for every file)")
    base_dir = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else os.path.abspath(path)
    feat = ds.features.get(col)
    if getattr(feat, "decode", None) is True and type(feat).__name__ == "Image":
        ds = ds.cast_column(col, type(feat)(decode=False))  # decode here, naming the bad row
    images, paths = [], []
    for i, v in enumerate(ds[col]):
        img, p = _to_rgb(v, f"{path}: row {i} column {col!r}", base_dir)
        images.append(img)
        paths.append(p)
    labels = None
    if label_column and label_column in ds.column_names:
        labels = list(ds[label_column])
        names = getattr(ds.features.get(label_column), "names", None)  # ClassLabel ids -> class names
        if names:
            labels = [names[y] if isinstance(y, int) and 0 <= y < len(names) else y for y in labels]
    elif require_labels:
        raise DataError(f"{path}: no label column {label_column!r}; columns are {ds.column_names} (set --label_column: one column name for every file)")
    extra = {"paths": paths} if any(paths) else {}
    return Examples(images, labels, path, extra)


def load_image_examples(path: str, image_column: str = "image", label_column: Optional[str] = "label",
                        require_labels: bool = True, split: Optional[str] = None,
                        encoding: Optional[str] = None) -> Examples:
    """Images as RGB PIL images (loaded eagerly) with raw labels (str or int).

    ``encoding``: of a CSV/JSON(L) manifest (default UTF-8)."""
    is_saved = os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f)) for f in ("dataset_info.json", "dataset_dict.json"))
    if os.path.isdir(path) and not is_saved:
        return _from_folder(path, require_labels)
    return _from_table(path, image_column, label_column, require_labels, split, encoding)
