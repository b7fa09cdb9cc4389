"""Read tabular data: local JSONL / JSON / CSV / Parquet, a ``save_to_disk``
folder, or a ``datasets`` dataset name (``name`` or ``name:split``).

Text formats (CSV, TSV, JSON, JSONL) must be UTF-8, or be read with an explicit
``encoding`` (e.g. ``cp1252`` for Windows / Excel exports): the file is then
transcoded to a temporary UTF-8 copy for ``datasets``, deleted afterwards."""
from __future__ import annotations

import codecs
import contextlib
import logging
import os
import tempfile
from typing import BinaryIO, Iterator, Optional

from .examples import DataError

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
_TEXT_EXTS = (".jsonl", ".json", ".csv", ".tsv")
_CHUNK = 1 << 20


def load_table(path: str, split: Optional[str] = None, encoding: Optional[str] = None):
    """Return a ``datasets.Dataset`` for ``path``.

    ``encoding``: the character encoding of a CSV/TSV/JSON/JSONL file (default and
    ``None``: UTF-8). Raises ``DataError`` (one line naming ``path``) when the file is
    missing, empty, header-only, not valid text in its encoding (with line and byte
    offset), of an unsupported type, or unreadable by ``datasets`` (with the
    innermost cause of the failure)."""
    import datasets

    if os.path.isdir(path):
        return _load_saved(path, split)
    ext = os.path.splitext(path)[1].lower()
    if ext in _BUILDERS:
        return _load_file(path, ext, encoding)
    if os.path.exists(path):
        raise DataError(f"{path}: unsupported file type {ext or '(none)'}; expected .jsonl, .json, .csv, .tsv or .parquet")
    if "/" in path and (path.startswith(".") or path.startswith("/")):
        raise DataError(f"{path}: file not found")
    name, _, sp = path.partition(":")
    try:
        return datasets.load_dataset(name, split=sp or split or "train")
    except Exception as e:
        raise DataError(f"{path}: not a local file and not loadable as a datasets name ({_cause(e)})") from None


def _load_saved(path: str, split: Optional[str]):
    """A ``save_to_disk`` folder (``split`` picks from a DatasetDict); DataError otherwise."""
    import datasets

    if not any(os.path.exists(os.path.join(path, f)) for f in ("dataset_info.json", "dataset_dict.json")):
        raise DataError(f"{path}: a folder, but not a dataset saved with save_to_disk (expected dataset_info.json)")
    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[split or ("train" if "train" in ds else next(iter(ds)))]
    return ds


def _load_file(path: str, ext: str, encoding: Optional[str]):
    """One local file of a known type (see ``load_table`` for the errors)."""
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: file is empty; expected rows of {ext[1:].upper()}")
    tmp = None
    try:
        source = path
        if ext in _TEXT_EXTS:
            enc = _normalize_encoding(encoding)
            if enc == "utf-8":
                _check_decodes(path, "utf-8")
            else:
                source = tmp = _transcode_to_temp(path, ext, enc)
        return _read_with_datasets(path, source, ext)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _read_with_datasets(path: str, source: str, ext: str):
    """``datasets.load_dataset`` on ``source`` (UTF-8 when text); errors name ``path``."""
    import datasets

    if ext in (".csv", ".tsv"):  # datasets reports a header-only table as "corresponds to no data"
        with open(source, encoding="utf-8", errors="replace") as fh:
            if sum(1 for line, _ in zip(fh, range(2)) if line.strip()) < 2:
                raise DataError(f"{path}: a header but no rows; expected at least one data row")
    kwargs = {"delimiter": "\t"} if ext == ".tsv" else {}
    try:
        with _quiet_json_builder(ext == ".jsonl"):
            return datasets.load_dataset(_BUILDERS[ext], data_files=source, split="train", **kwargs)
    except Exception as e:  # datasets raises many types for malformed files
        if ext == ".jsonl":
            _check_jsonl(path, source)  # names the bad line; parsed only once datasets has failed
        raise DataError(f"{path}: cannot read as {ext[1:].upper()} ({_cause(e)})") from None


@contextlib.contextmanager
def _quiet_json_builder(quiet: bool) -> Iterator[None]:
    """Silence the datasets JSON builder's own error log while ``quiet``: its failure becomes
    one DataError (``_check_jsonl``'s line), not that plus a logged second message."""
    logger = logging.getLogger("datasets.packaged_modules.json.json")
    level = logger.level
    if quiet:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_jsonl(path: str, source: str) -> None:
    """Every non-blank line of ``source`` is one JSON object; else DataError naming ``path``
    and the 1-based line (datasets' own message gives a 0-based row)."""
    import json

    with open(source, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise DataError(f"{path}: cannot read as JSONL: line {n} is not valid JSON ({e.msg} at column "
                                f"{e.colno}); expected one JSON object per line") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: cannot read as JSONL: line {n} is a JSON {type(obj).__name__}; "
                                "expected one JSON object per line") from None


def _cause(e: BaseException) -> str:
    """``Type: message`` (first line, 200 chars) of the innermost cause of ``e``.

    Explicit causes (``raise ... from``, e.g. the pandas ParserError behind datasets'
    generic DatasetGenerationError) are followed to the end. An implicit
    ``__context__`` is followed only from a ``datasets`` exception or one without a
    message: elsewhere it is often a failed fallback (datasets re-raises pyarrow's
    "JSON parse error ... in row 1" while handling its pandas retry's error)."""
    seen = {id(e)}
    while True:
        nxt = e.__cause__
        if nxt is None and not e.__suppress_context__ and (
                type(e).__module__.split(".")[0] == "datasets" or not str(e).strip()):
            nxt = e.__context__
        if nxt is None or id(nxt) in seen:
            break
        e = nxt
        seen.add(id(e))
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__


def _normalize_encoding(encoding: Optional[str]) -> str:
    """Python's canonical codec name (``utf8`` -> ``utf-8``); DataError if unknown."""
    if not encoding:
        return "utf-8"
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"--encoding {encoding}: unknown text encoding; expected e.g. utf-8, cp1252, latin-1 or utf-16") from None


def _check_decodes(path: str, encoding: str, out: Optional[BinaryIO] = None) -> None:
    """Decode ``path`` in chunks (writing UTF-8 to ``out`` when given).

    Raises ``DataError`` naming the first bad byte, its 1-based line and 0-based
    byte offset, and what to do about it."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = lines = 0  # bytes and newlines before the current chunk
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:  # e.object = bytes buffered from the last chunk + chunk
                pos = offset - (len(e.object) - len(chunk)) + e.start
                line = lines + e.object[:e.start].count(b"\n") + 1  # a partial character holds no newline
                raise DataError(_decode_message(path, encoding, e.object[e.start], line, pos)) from None
            if out is not None:
                out.write(text.encode("utf-8"))
            if not chunk:
                return
            offset += len(chunk)
            lines += chunk.count(b"\n")


def _decode_message(path: str, encoding: str, byte: int, line: int, pos: int) -> str:
    where = f"byte 0x{byte:02x} at line {line}, byte offset {pos}"
    if encoding == "utf-8":
        return (f"{path}: not UTF-8 text ({where}); re-save it as UTF-8 or pass --encoding "
                f"{_guess_encoding(path)}")
    return f"{path}: not {encoding} text ({where}); check --encoding {encoding} (or re-save the file as UTF-8)"


def _guess_encoding(path: str) -> str:
    """A likely legacy encoding for a non-UTF-8 file: utf-16 (BOM), cp1252 or latin-1."""
    with open(path, "rb") as fh:
        head = fh.read(_CHUNK)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        head.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:  # one of the five bytes cp1252 leaves undefined
        return "latin-1"


def _transcode_to_temp(path: str, ext: str, encoding: str) -> str:
    """A temporary UTF-8 copy of ``path`` read as ``encoding`` (the caller deletes it).

    Raises ``DataError`` when ``path`` is not valid ``encoding`` text."""
    fd, tmp = tempfile.mkstemp(prefix="tltext-utf8-", suffix=ext)
    try:
        with os.fdopen(fd, "wb") as out:
            _check_decodes(path, encoding, out)
    except BaseException:
        os.remove(tmp)
        raise
    return tmp
