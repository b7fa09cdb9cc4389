"""Load ``Examples`` for any modality, with row filters (``col=v1,v2;col2=v``)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .examples import DataError, Examples


def parse_filter(spec: Optional[str]) -> Optional[Dict[str, List[str]]]:
    if not spec:
        return None
    out: Dict[str, List[str]] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        if "=" not in part:
            raise DataError(f"filter {spec!r}: expected 'column=value1,value2;column2=value', got {part!r}")
        col, vals = part.split("=", 1)
        out[col.strip()] = [v.strip() for v in vals.split(",") if v.strip()]
    return out


def _filter_table(path: str, ds, flt: Dict[str, List[str]]):
    for col, vals in flt.items():
        if col not in ds.column_names:
            raise DataError(f"{path}: filter column {col!r} not found; columns are {ds.column_names}")
        ds = ds.filter(lambda v: str(v) in vals, input_columns=[col])
    if len(ds) == 0:
        raise DataError(f"{path}: no rows left after the filter {flt}")
    return ds


def parse_rename(spec: Optional[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for part in (spec or "").split(","):
        if part.strip():
            if "=" not in part:
                raise DataError(f"--label_rename {spec!r}: expected 'old=new,old2=new2', got {part!r}")
            a, b = part.split("=", 1)
            out[a.strip()] = b.strip()
    return out


def load_examples(modality: str, path: str, data_args: Any, require_labels: bool = True,
                  filter_spec: Optional[str] = None, sampling_rate: Optional[int] = None,
                  encoding: Optional[str] = None) -> Examples:
    """Examples of ``modality`` from ``path``, filtered and with labels renamed.

    ``encoding``: of CSV/TSV/JSON(L) tables (default: ``data_args.encoding`` if the
    arguments have one, else UTF-8). Raises ``DataError`` for unreadable data."""
    if encoding is None:
        encoding = getattr(data_args, "encoding", None)
    ex = _load(modality, path, data_args, require_labels, filter_spec, sampling_rate, encoding)
    ren = parse_rename(getattr(data_args, "label_rename", None))
    if ren and ex.labels is not None:
        ex.labels = [ren.get(str(v), v) for v in ex.labels]
    return ex


def _load(modality: str, path: str, data_args: Any, require_labels: bool = True,
          filter_spec: Optional[str] = None, sampling_rate: Optional[int] = None,
          encoding: Optional[str] = None) -> Examples:
    flt = parse_filter(filter_spec)
    if modality == "text":
        from .tables import load_table
        from .text import examples_from_table

        ds = load_table(path, encoding=encoding)
        if flt:
            ds = _filter_table(path, ds, flt)
        return examples_from_table(ds, path, data_args.text_column, data_args.label_column, require_labels)
    if modality == "speech":
        from .audio import load_audio_examples

        return load_audio_examples(path, audio_column=data_args.audio_column, label_column=data_args.label_column,
                                   sampling_rate=sampling_rate or 16000, require_labels=require_labels, filter=flt,
                                   encoding=encoding)
    if modality == "image":
        from .image import load_image_examples

        ex = load_image_examples(path, image_column=data_args.image_column, label_column=data_args.label_column,
                                 require_labels=require_labels, encoding=encoding)
        return ex
    raise ValueError(f"unknown modality {modality!r}")
