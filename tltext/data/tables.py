"""Read tabular data: local JSONL / JSON / CSV / Parquet, a ``save_to_disk``
folder, or a ``datasets`` dataset name (``name`` or ``name:split``)."""
from __future__ import annotations

import os
from typing import Optional

from .examples import DataError

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


def load_table(path: str, split: Optional[str] = None):
    """Return a ``datasets.Dataset`` for ``path`` (a clear error when unreadable)."""
    import datasets

    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "dataset_info.json")) or os.path.exists(os.path.join(path, "dataset_dict.json")):
            ds = datasets.load_from_disk(path)
            if isinstance(ds, datasets.DatasetDict):
                key = split or ("train" if "train" in ds else next(iter(ds)))
                ds = ds[key]
            return ds
        raise DataError(f"{path}: a folder, but not a dataset saved with save_to_disk (expected dataset_info.json)")
    ext = os.path.splitext(path)[1].lower()
    if ext in _BUILDERS:
        if not os.path.exists(path):
            raise DataError(f"{path}: file not found")
        if os.path.getsize(path) == 0:
            raise DataError(f"{path}: file is empty; expected rows of {ext[1:].upper()}")
        if ext in (".csv", ".tsv"):  # datasets reports a header-only table as "corresponds to no data"
            with open(path, encoding="utf-8", errors="replace") as fh:
                if sum(1 for line, _ in zip(fh, range(2)) if line.strip()) < 2:
                    raise DataError(f"{path}: a header but no rows; expected at least one data row")
        kwargs = {"delimiter": "\t"} if ext == ".tsv" else {}
        try:
            return datasets.load_dataset(_BUILDERS[ext], data_files=path, split="train", **kwargs)
        except Exception as e:  # datasets raises many types for malformed files
            raise DataError(f"{path}: cannot read as {ext[1:].upper()} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if os.path.exists(path):
        raise DataError(f"{path}: unsupported file type {ext or '(none)'}; expected .jsonl, .json, .csv, .tsv or .parquet")
    if "/" in path and (path.startswith(".") or path.startswith("/")):
        raise DataError(f"{path}: file not found")
    name, _, sp = path.partition(":")
    try:
        return datasets.load_dataset(name, split=sp or split or "train")
    except Exception as e:
        raise DataError(f"{path}: not a local file and not loadable as a datasets name ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
