"""Audio examples: decoded waveforms (1-D float32, mono, at the model's rate).

Sources:
  * a manifest table (CSV / JSONL / Parquet) with a path column (``--audio_column``;
    absolute, or relative to the manifest's folder) and a label column;
  * a folder: its ``manifest.{csv,jsonl,parquet}`` when present, else one
    sub-folder per class (label = folder name), or a flat folder of unlabelled clips;
  * a ``datasets`` dataset (``save_to_disk`` folder or a name) with an ``Audio``
    column (or dicts with ``array`` + ``sampling_rate``, ``bytes`` or ``path``).

Decoding uses soundfile (libsndfile: WAV, FLAC, OGG; no FFmpeg). Channels are
averaged to mono, x[n] = (1/C) sum_c x_c[n], and the rate is changed with the
windowed-sinc resampler of ``torchaudio.functional.resample``.
"""
from __future__ import annotations

import contextlib
import io
import os
from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .examples import DataError, Examples
from .tables import load_table

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif")
_EXPECTED = "expected a WAV/FLAC/OGG audio file readable by soundfile"
_MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl", "manifest.parquet")
_RATE_COLUMNS = ("sample_rate", "sampling_rate")


@lru_cache(maxsize=16)
def _resampler(orig: int, target: int):
    import torchaudio

    return torchaudio.transforms.Resample(orig, target)


@contextlib.contextmanager
def _one_thread():
    """Per-clip resampling is tiny; intra-op threads only add overhead (and stall
    badly on a busy machine), so run it on one thread and restore the setting."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited (windowed sinc) resampling of a 1-D float32 signal."""
    if orig_sr == target_sr:
        return x
    import torch

    with torch.no_grad():
        y = _resampler(int(orig_sr), int(target_sr))(torch.from_numpy(np.ascontiguousarray(x)))
    return y.numpy().astype(np.float32, copy=False)


def _decode(source: Any, name: str) -> Tuple[np.ndarray, int]:
    """soundfile decode of a path or bytes -> (mono float32, native rate)."""
    import soundfile as sf

    if isinstance(source, str):
        if not os.path.exists(source):
            raise DataError(f"{name}: file not found; {_EXPECTED}")
        if os.path.isdir(source):
            raise DataError(f"{name}: is a folder; {_EXPECTED}")
        if os.path.getsize(source) == 0:
            raise DataError(f"{name}: file is empty (0 bytes); {_EXPECTED}")
    elif isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise DataError(f"{name}: audio bytes are empty; {_EXPECTED}")
        source = io.BytesIO(source)
    try:
        data, sr = sf.read(source, dtype="float32", always_2d=True)
    except Exception as e:  # LibsndfileError, RuntimeError, TypeError for odd inputs
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise DataError(f"{name}: cannot decode as audio ({msg}); {_EXPECTED}") from None
    if data.shape[0] == 0:
        raise DataError(f"{name}: has no audio frames (valid header, 0 samples); expected at least one sample")
    x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(x).all():
        raise DataError(f"{name}: contains NaN or infinite samples; expected finite audio")
    return np.ascontiguousarray(x, dtype=np.float32), int(sr)


def load_waveform(path: str, target_sr: int) -> np.ndarray:
    """Decode ``path``, mix to mono and resample to ``target_sr`` -> float32 ``[N]``."""
    x, sr = _decode(str(path), str(path))
    with _one_thread():
        return resample(x, sr, target_sr)


def _check_rate(value: Any, where: str) -> int:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = float("nan")
    if not (rate > 0 and rate == int(rate)):
        raise DataError(f"{where}: invalid sampling rate {value!r}; expected a positive integer in Hz")
    return int(rate)


def _apply_filter(rows: Dict[str, List[Any]], flt: Optional[Dict[str, Any]], source: str) -> List[int]:
    """Row indices whose value in every filter column is one of the wanted values
    (compared as strings, so CLI strings match integer columns)."""
    n = len(next(iter(rows.values()))) if rows else 0
    keep = list(range(n))
    for col, wanted in (flt or {}).items():
        if col not in rows:
            raise DataError(f"{source}: filter column {col!r} not found; columns are {list(rows)}")
        values = wanted if isinstance(wanted, (list, tuple, set)) else [wanted]
        allowed = {str(v) for v in values}
        keep = [i for i in keep if str(rows[col][i]) in allowed]
        if not keep:
            present = sorted({str(v) for v in rows[col]})[:20]
            raise DataError(f"{source}: filter {col}={sorted(allowed)} selects no rows; values present: {present}")
    return keep


def _folder_rows(root: str) -> Dict[str, List[Any]]:
    """Class-per-folder (label = sub-folder name) or a flat folder of clips."""
    paths, labels = [], []
    for entry in sorted(os.listdir(root)):
        sub = os.path.join(root, entry)
        if os.path.isdir(sub):
            for dirpath, _, files in sorted(os.walk(sub)):
                for f in sorted(files):
                    if f.lower().endswith(AUDIO_EXTENSIONS):
                        paths.append(os.path.join(dirpath, f))
                        labels.append(entry)
    if paths:
        return {"path": paths, "label": labels}
    flat = [os.path.join(root, f) for f in sorted(os.listdir(root)) if f.lower().endswith(AUDIO_EXTENSIONS)]
    if not flat:
        raise DataError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in the folder or its sub-folders; "
                        "expected one sub-folder per class, a manifest or a saved dataset")
    return {"path": flat}


def _decode_item(item: Any, base: str, where: str) -> Tuple[np.ndarray, int, str]:
    """One audio-column value -> (waveform, native rate, name for messages)."""
    if isinstance(item, str):
        if not item.strip():
            raise DataError(f"{where}: empty audio path; expected a file path")
        path = item if os.path.isabs(item) else os.path.join(base, item)
        x, sr = _decode(path, path)
        return x, sr, path
    if isinstance(item, dict):
        if item.get("array") is not None:
            if "sampling_rate" not in item or item["sampling_rate"] is None:
                raise DataError(f"{where}: audio dict has an 'array' but no 'sampling_rate'; expected both")
            sr = _check_rate(item["sampling_rate"], where)
            x = np.asarray(item["array"], dtype=np.float32)
            if x.ndim == 2:  # [channels, samples]
                x = x.mean(axis=0)
            if x.ndim != 1 or x.size == 0:
                raise DataError(f"{where}: audio array has shape {x.shape}; expected a non-empty 1-D waveform")
            return x, sr, where
        if item.get("bytes"):
            name = f"{where} ({item.get('path') or 'bytes'})"
            x, sr = _decode(bytes(item["bytes"]), name)
            return x, sr, name
        if item.get("path"):
            return _decode_item(str(item["path"]), base, where)
        raise DataError(f"{where}: audio dict has none of 'array', 'bytes', 'path'; keys are {sorted(item)}")
    if hasattr(item, "get_all_samples"):  # a torchcodec AudioDecoder
        s = item.get_all_samples()
        x = s.data.numpy().astype(np.float32)
        return (x.mean(axis=0) if x.ndim == 2 else x), _check_rate(s.sample_rate, where), where
    raise DataError(f"{where}: audio value of type {type(item).__name__}; expected a path or an audio dict")


def _table_rows(path: str, encoding: Optional[str] = None) -> Tuple[Dict[str, List[Any]], str, bool]:
    """Columns of a manifest / dataset as lists, the folder relative paths start from,
    and whether it is a local manifest file."""
    ds = load_table(path, encoding=encoding)
    try:
        import datasets

        for col, feat in ds.features.items():
            if isinstance(feat, datasets.Audio) and feat.decode:
                ds = ds.cast_column(col, datasets.Audio(decode=False))  # decode here with soundfile
    except ImportError:  # pragma: no cover - load_table already needs datasets
        pass
    base = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else (path if os.path.isdir(path) else os.getcwd())
    return {c: ds[c] for c in ds.column_names}, base, os.path.isfile(path)


def load_audio_examples(path: str, audio_column: str = "audio", label_column: Optional[str] = "label",
                        sampling_rate: int = 16000, require_labels: bool = True,
                        filter: Optional[Dict[str, Any]] = None, encoding: Optional[str] = None) -> Examples:
    """Decoded clips (float32 mono at ``sampling_rate``) and labels from ``path``.

    ``label_column`` may list alternatives, ``"digit,label"``: the first one the file
    has is used (one flag for a source and a target corpus that name it differently).
    ``filter``: ``{column: value or [values]}`` keeps matching rows, before decoding
    (e.g. ``{"speaker": ["george", "jackson"]}``, ``{"split": "train"}``).
    ``extra``: ``paths`` (file or row names) and ``columns`` (the other columns of
    the kept rows, e.g. speaker ids for domain splits).
    ``encoding``: of a CSV/JSON(L) manifest (default UTF-8).
    """
    path = str(path)
    if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, f)) for f in ("dataset_info.json", "dataset_dict.json")):
        manifest = next((os.path.join(path, m) for m in _MANIFEST_NAMES if os.path.isfile(os.path.join(path, m))), None)
        if manifest is not None:
            rows, base, is_manifest = _table_rows(manifest, encoding)
            source = manifest
        else:
            rows, base, is_manifest, source = _folder_rows(path), path, False, path
            audio_column = "path"
            label_column = "label" if label_column else label_column
    elif not os.path.exists(path) and os.path.splitext(path)[1].lower() in AUDIO_EXTENSIONS:
        raise DataError(f"{path}: file not found")
    else:
        rows, base, is_manifest = _table_rows(path, encoding)
        source = path
    if not rows or len(next(iter(rows.values()))) == 0:
        raise DataError(f"{source}: no rows")
    if audio_column not in rows:
        raise DataError(f"{source}: no audio column {audio_column!r}; columns are {list(rows)} (set --audio_column: one column name for every file)")
    if label_column and "," in label_column:  # alternatives, e.g. 'digit,label' across two corpora
        label_column = next((c.strip() for c in label_column.split(",") if c.strip() in rows), label_column)
    has_labels = bool(label_column) and label_column in rows
    if not has_labels and require_labels:
        if source == path and "label" not in rows and os.path.isdir(path):
            raise DataError(f"{path}: audio files but no class sub-folders; expected one sub-folder per class "
                            "(or pass require_labels=False for unlabelled clips)")
        raise DataError(f"{source}: no label column {label_column!r}; columns are {list(rows)} (set --label_column: one column name for every file)")
    keep = _apply_filter(rows, filter, source)
    rate_col = next((c for c in _RATE_COLUMNS if c in rows), None) if is_manifest else None

    inputs, names = [], []
    with _one_thread():
        for i in keep:
            where = f"{source}: row {i}"
            x, sr, name = _decode_item(rows[audio_column][i], base, where)
            if rate_col is not None:
                stated = _check_rate(rows[rate_col][i], f"{where}, column {rate_col!r}")
                if stated != sr:
                    raise DataError(f"{where}: column {rate_col!r} says {stated} Hz but {name} is {sr} Hz; "
                                    "expected the manifest to match the file")
            inputs.append(resample(x, sr, sampling_rate))
            names.append(name)
    labels = [rows[label_column][i] for i in keep] if has_labels else None
    other = {c: [rows[c][i] for i in keep] for c in rows if c not in (audio_column, label_column)}
    return Examples(inputs, labels, source, {"paths": names, "columns": other, "sampling_rate": sampling_rate})


__all__ = ["AUDIO_EXTENSIONS", "load_waveform", "load_audio_examples", "resample"]
