"""Token sequences from files, in chunks of rows, for ``validate`` and ``inspect``.

    OUT.npz, DIR    arrays written by ``encode -o``, checked against their manifest first
                    (:func:`gemma_turns.store.open_stored`); shifted rows are rebuilt as
                    full sequences, packed rows carry their segment ids
    X.npy           a 1-D (one sequence) or 2-D (rows) integer array of ids
    X.parquet       rows with list<int> columns (pyarrow, the ``parquet`` extra)
    anything else   JSON lines: a list of ids, or an object with ``input_ids`` and masks
                    (``-``: standard input)

Objects, Parquet rows and npz arrays may hold other tools' masks and packing (``labels``,
``assistant_masks``, ``completion_mask``, ``position_ids`` restarts, ``seq_lengths``,
``cu_seqlens``, an attention mask numbered 1..k): :mod:`gemma_turns.conventions` reads them;
a key that looks like a mask and is not read is a warning.

A :class:`Source` tells what was read (``chunks``), what its manifest says, integrity
``problems`` (a file missing, changed or not listed), ``notices`` (what could not be
checked), ``warnings`` (what the reader should know), and, per chunk, the
:func:`gemma_turns.arrays.check_arrays` problems of its stored masks and positions.
Sequences are indices from 0; sequence ``k`` of a JSONL input is its line ``k + 1``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .arrays import ArrayProblem, check_arrays
from .conventions import LOSS_KEYS, Record, looks_like_mask, read_record
from .errors import DatasetError
from .store import manifest_beside, manifest_inputs, open_stored, read_arrays, source_lookup, unshift

__all__ = ["Chunk", "Source", "open_sequences"]

CHUNK_ROWS = 4096


@dataclass
class Chunk:
    """Rows of one input, with their masks and their indices in the input."""

    ids: object  # 2-D array, or a list of 1-D arrays
    indices: np.ndarray
    loss_mask: object = None
    labels: object = None  # labels (-100: not trained), read by validate(labels=)
    attention_mask: object = None
    segment_ids: object = None
    source: Callable[[int, int], int | None] | None = None  # (row, position) -> input line
    source_file: Callable[[int, int], str | None] | None = None  # (row, position) -> its file
    checks: list[ArrayProblem] = field(default_factory=list)  # rows relative to the chunk
    stored_ids: np.ndarray | None = None  # the rows as stored (shifted rows: the inputs)


@dataclass
class Source:
    """One input: its chunks, what its manifest says, and what to tell the user."""

    path: str
    chunks: Iterator[Chunk]
    manifest: dict | None = None
    warnings: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)  # JSONL lines that are no sequence
    blank_lines: int = 0
    read_keys: dict = field(default_factory=dict)  # key read -> what it was read as

    def note_record(self, record: Record) -> None:
        """Remember what one record's keys were read as; warn once per key not read."""
        if record.loss_key and record.loss_key not in self.read_keys:
            self.read_keys[record.loss_key] = "loss mask"
        if record.packing_key and record.packing_key not in self.read_keys:
            self.read_keys[record.packing_key] = "packed segments"
        for what in record.unused:
            key = what.split(" ", 1)[0]
            if key not in self.read_keys:
                self.read_keys[key] = None
                self.warnings.append(f"key {what}: not checked")


def open_sequences(path: str, *, tokenizer_sha256: str | None = None) -> Source:
    """The sequences of the input at ``path``; DatasetError if it cannot be read at all."""
    if path != "-" and os.path.isdir(path) or path.endswith(".npz") or _written_by_us(path):
        return _stored(path, tokenizer_sha256)
    if path.endswith(".npy"):
        source = Source(path, _npy_chunks(path))
    elif path.endswith((".parquet", ".pq")):
        source = Source(path, iter(()))
        source.chunks = _parquet_chunks(path, source)
    else:
        source = Source(path, iter(()))
        source.chunks = _jsonl_chunks(path, source)
    source.notices.append(
        "ids without a manifest: their integrity, the options and the tokenizer they were "
        "made with could not be checked"
    )
    return source


def _written_by_us(path: str) -> bool:
    """A Parquet file that ``encode -o`` wrote (its manifest beside it), rather than another
    tool's rows."""
    return path.endswith(".parquet") and manifest_beside(path).exists()


def _stored(path: str, tokenizer_sha256: str | None) -> Source:
    stored = open_stored(path)
    if not stored.files:
        raise DatasetError(f"{path} is a directory without .npz shards", path=path)
    source = Source(path, iter(()), stored.manifest, problems=stored.problems, notices=stored.notices)
    manifest = stored.manifest or {}
    tok = manifest.get("tokenizer")
    sha = tok.get("sha256") if isinstance(tok, dict) else manifest.get("tokenizer_sha256")
    if tokenizer_sha256 and isinstance(sha, str) and sha != tokenizer_sha256:
        source.warnings.append(
            f"the manifest says these ids were made with the tokenizer sha256 {sha[:12]}..., "
            f"but --tokenizer is {tokenizer_sha256[:12]}...: expect findings everywhere if it "
            "is another model"
        )
    arrays = manifest.get("array_options")
    arrays = arrays if isinstance(arrays, dict) else {}
    if arrays.get("truncation") == "truncate":
        source.warnings.append(
            "the manifest says truncation='truncate': rows cut short end inside a turn and "
            "are reported (unclosed_turn, bad_ending)"
        )
    shifted_by_us = arrays.get("shift") is True

    def chunks() -> Iterator[Chunk]:
        first = 0
        for file, rows in stored.files:
            try:
                read = read_arrays(file)
            except DatasetError:
                if rows is None or not stored.problems:
                    raise
                first += rows  # a missing shard, already reported: keep the indices
                continue
            for chunk in _npz_chunks(file, read, first, source, shifted_by_us):
                yield chunk
            first += len(read["input_ids"]) if read["input_ids"].ndim == 2 else 1

    source.chunks = chunks()
    return source


def _npz_chunks(path: Path, arrays: dict, first: int, source: Source, shifted_by_us: bool):
    if "input_ids" not in arrays:
        raise DatasetError(f"{path} has no input_ids array (it has {sorted(arrays)})", path=path)
    for key, value in arrays.items():
        if key not in ("source_line", "source_file") and value.dtype.kind not in "iub":
            raise DatasetError(f"{path}: {key} must hold integers, got {value.dtype}", path=path)
    ids = arrays["input_ids"]
    if ids.ndim == 1:
        arrays = {key: value[None] if value.ndim == 1 else value for key, value in arrays.items()}
        ids = arrays["input_ids"]
    if ids.ndim != 2:
        raise DatasetError(
            f"{path}: input_ids must be a 2-D array of rows, got shape {ids.shape}", path=path
        )
    for key in ("attention_mask", "loss_mask", "segment_ids", "targets", "position_ids", *LOSS_KEYS):
        if key in arrays and arrays[key].shape != ids.shape:
            raise DatasetError(
                f"{path}: {key} has shape {arrays[key].shape}, input_ids {ids.shape}", path=path
            )
    if "targets" not in arrays and _other_convention(arrays):
        yield from _convention_rows(path, arrays, first, source)
        return
    for key in sorted(set(arrays) - NPZ_KEYS):
        if looks_like_mask(key) and key not in source.read_keys:
            source.read_keys[key] = None
            source.warnings.append(f"{path.name}: key {key} (not a key validate reads): not checked")
    stored_ids = ids
    loss = arrays.get("loss_mask")
    attention = arrays.get("attention_mask")
    segments = arrays.get("segment_ids")
    positions = arrays.get("position_ids")
    if "targets" in arrays:
        if not shifted_by_us:
            source.warnings.append(
                f"{path.name} holds shifted rows (input_ids and targets): each sequence is "
                "rebuilt as its inputs plus its last target, and positions count that sequence"
            )
        ids, loss, attention, segments = unshift(ids, arrays["targets"], loss, attention, segments)
    line_table = arrays.get("segment_source_line" if segments is not None else "source_line")
    file_table = arrays.get("segment_source_file" if segments is not None else "source_file")
    names = [entry.get("path") for entry in manifest_inputs(source.manifest or {})]
    raw_attention, raw_segments = arrays.get("attention_mask"), arrays.get("segment_ids")
    for lo in range(0, len(ids), CHUNK_ROWS):
        hi = min(len(ids), lo + CHUNK_ROWS)
        cut = lambda value: None if value is None else value[lo:hi]  # noqa: E731
        yield Chunk(
            ids=ids[lo:hi],
            indices=np.arange(first + lo, first + hi),
            loss_mask=cut(loss),
            attention_mask=cut(attention),
            segment_ids=cut(segments),
            source=source_lookup(line_table, segments, lo),
            source_file=_file_lookup(file_table, segments, lo, names),
            checks=check_arrays(
                attention_mask=cut(raw_attention),
                position_ids=cut(positions),
                segment_ids=cut(raw_segments),
            ),
            stored_ids=stored_ids[lo:hi],
        )


NPZ_KEYS = frozenset(
    {"input_ids", "attention_mask", "loss_mask", "segment_ids", "targets", "position_ids", "source_line", "segment_source_line",
     "source_file", "segment_source_file"}
)


def _other_convention(arrays: dict) -> bool:
    """Whether an npz holds another tool's masks or packing (read row by row)."""
    if set(arrays) & {"labels", "assistant_masks", "completion_mask", "seq_lengths", "cu_seqlens", "cu_seq_lens_q"}:
        return True
    attention = arrays.get("attention_mask")
    if "segment_ids" not in arrays and attention is not None and attention.size and attention.max() > 1:
        return True  # axolotl: an attention mask numbered 1..k
    positions = arrays.get("position_ids")
    if "segment_ids" not in arrays and positions is not None and positions.size:
        real = np.ones(positions.shape, bool) if attention is None else attention != 0
        return bool(((positions == 0) & real).sum(axis=1).max() > 1)  # positions restart
    return False


def _convention_rows(path: Path, arrays: dict, first: int, source: Source) -> Iterator[Chunk]:
    n = len(arrays["input_ids"])
    for lo in range(0, n, CHUNK_ROWS):
        hi = min(n, lo + CHUNK_ROWS)
        records = []
        for r in range(lo, hi):
            row = {key: value[r] for key, value in arrays.items() if value.ndim == 2 and len(value) == n}
            try:
                record = read_record(row, _int_list)
            except ValueError as error:
                raise DatasetError(f"{path}: row {r}: {error}", path=path) from None
            source.note_record(record)
            records.append(record)
        yield _records_chunk(records, range(first + lo, first + hi))


def _file_lookup(table, segments, first_row: int, names: list) -> Callable | None:
    """``(row, position) -> input file`` from a ``source_file`` table (an index into the
    manifest's ``inputs``), or None when the arrays have one input."""
    index = source_lookup(table, segments, first_row)
    if index is None:
        return None

    def lookup(row: int, position: int) -> str | None:
        number = index(row, position)
        if number is None or not 0 <= number < len(names):
            return None
        return names[number] or "<stdin>"

    return lookup


def _npy_chunks(path: str) -> Iterator[Chunk]:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"cannot read {path!r}: no such file", path=path) from None
    except (OSError, ValueError, EOFError) as error:
        raise DatasetError(f"{path} is not a readable .npy file ({error})", path=path) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iu" or array.ndim not in (1, 2):
        shape = f"{array.ndim}-D {array.dtype}" if isinstance(array, np.ndarray) else "an archive"
        raise DatasetError(
            f"{path}: expected a 1-D or 2-D integer array of ids, got {shape}", path=path
        )
    if array.ndim == 1:
        array = array[None]
    for lo in range(0, len(array), CHUNK_ROWS):
        hi = min(len(array), lo + CHUNK_ROWS)
        yield Chunk(ids=array[lo:hi], indices=np.arange(lo, hi))


@contextmanager
def open_binary(path: str):
    """The file at ``path`` in binary mode, or standard input for ``-``; DatasetError names
    a file that cannot be opened."""
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise DatasetError(f"cannot read {path!r}: {error.strerror}", path=path) from None
    with handle:
        yield handle


def _jsonl_chunks(path: str, source: Source) -> Iterator[Chunk]:
    """JSON lines; sequence ``k`` is line ``k + 1`` (blank lines keep their index). Lines
    that are no sequence are listed in ``source.bad_lines``, and reported at the end."""
    with open_binary(path) as stream:
        records, indices = [], []
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                source.blank_lines += 1
                continue
            try:
                record = _jsonl_record(raw)
            except ValueError as error:
                source.bad_lines.append(f"line {number}: {error}")
                continue
            source.note_record(record)
            records.append(record)
            indices.append(number - 1)
            if len(records) == CHUNK_ROWS:
                yield _records_chunk(records, indices)
                records, indices = [], []
        if records:
            yield _records_chunk(records, indices)
    problems = source.bad_lines
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise DatasetError(
            f"{len(problems)} line(s) are not token sequences ({shown}). Each line must be a "
            'list of ids, or {"input_ids": [...], "loss_mask": [...]} (or labels, '
            "assistant_masks, completion_mask; see the Interoperability section of the README)",
            path=path,
        )


def _jsonl_record(raw: bytes) -> Record:
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except Exception as error:  # any parser-level failure is this line's, e.g. a huge integer
        raise ValueError(f"not valid JSON ({error})") from None
    if isinstance(value, dict):
        return read_record(value, _int_list)
    return Record(ids=_int_list(value, "input_ids"))


def _parquet_chunks(path: str, source: Source) -> Iterator[Chunk]:
    """Parquet rows with list<int> columns (``input_ids`` and the mask conventions);
    sequence ``k`` is row ``k``."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(
            f"{path}: reading Parquet needs pyarrow, an optional extra: pip install 'gemma-turns[parquet]'",
            path=path,
        ) from None
    try:
        file = pq.ParquetFile(path)
    except FileNotFoundError:
        raise DatasetError(f"cannot read {path!r}: no such file", path=path) from None
    except Exception as error:  # pyarrow raises its own types for a corrupt file
        raise DatasetError(f"{path} is not a readable Parquet file ({error})", path=path) from None
    if "input_ids" not in file.schema_arrow.names:
        raise DatasetError(f"{path} has no input_ids column (it has {file.schema_arrow.names[:8]})", path=path)
    first = 0
    batches = file.iter_batches(batch_size=CHUNK_ROWS)
    while True:
        try:
            batch = next(batches, None)
        except Exception as error:  # a corrupt row group: pyarrow's own error types
            raise DatasetError(f"{path}: rows from {first} cannot be read ({error})", path=path) from None
        if batch is None:
            break
        records = []
        for k, row in enumerate(batch.to_pylist()):
            try:
                record = read_record({key: value for key, value in row.items() if value is not None}, _int_list)
            except ValueError as error:
                raise DatasetError(f"{path}: row {first + k}: {error}", path=path) from None
            source.note_record(record)
            records.append(record)
        yield _records_chunk(records, list(range(first, first + len(records))))
        first += len(records)


def _int_list(value, name: str) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu":
        return value.astype(np.int64, copy=False)
    if not isinstance(value, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        raise ValueError(f"{name} must be a list of integers")
    try:
        return np.array(value, dtype=np.int64)
    except OverflowError:
        raise ValueError(f"{name} has an integer too large for an id") from None


def _records_chunk(records: list[Record], indices) -> Chunk:
    # a record without a mask has None in its place: its mask is not checked, its padding inferred
    column = lambda name: (  # noqa: E731
        [getattr(r, name) for r in records] if any(getattr(r, name) is not None for r in records) else None
    )
    return Chunk(
        ids=[r.ids for r in records],
        indices=np.array(indices, dtype=np.int64),
        loss_mask=column("loss"),
        labels=column("labels"),
        attention_mask=column("attention"),
        segment_ids=column("segments"),
    )
