"""Whole datasets: records to batches in memory, or JSONL streamed to arrays on disk.

    JSONL lines -> fit_lines (encode in batches, truncation policy: one Record per line)
                -> rows (one per record, or packed) -> blocks of arrays
                -> store.ArrayWriter (.npz file or shards) + manifest

Every input line ends in exactly one place (see :mod:`gemma_turns.records`): a row
(``encoded`` or ``truncated``), the ``dropped`` count, the ``rejected`` count, or
``blank``; dropped and rejected lines go to the rejects file with their reasons.

Memory. The input is read line by line, ``batch_size`` lines at a time, and a line longer
than ``max_record_bytes`` is rejected unread. Kept sequences wait as ragged ids and masks
(5 bytes a token) until a shard is full; packing keeps at most ``open_rows`` rows open.
While a block of rows is written, its padded arrays (:func:`block_bytes`) and about as much
in temporaries exist once. So a sharded run holds about one shard whatever the input size.
A single ``.npz`` output is one shard: it holds every row of the file until the end, so
shard big datasets.

The on-disk format (manifest, atomic files, lock, reader) is :mod:`gemma_turns.store`; the
names it had here (``load_dataset``, ``iter_shards``, ``Dataset``, ``manifest_beside``,
``AtomicText``) are re-exported, as are ``ArrayOptions`` (:mod:`gemma_turns.options`),
``Counts``, ``Drop`` (:mod:`gemma_turns.records`), ``drop_oldest_turns`` and ``fit_lines``
(:mod:`gemma_turns.fit`). ``Fitted`` is the old name of ``Record``, kept for one release.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arrays import Batch, BestFit, pack_rows, pad_batch
from .encoder import Encoding, GemmaTokenizer
from .errors import EmptyInputError
from .fit import drop_oldest_turns, fit_lines
from .jsonl import MAX_RECORD_BYTES, Line, read_lines
from .options import ArrayOptions, EncodeOptions
from .records import Counts, Drop, Record
from .store import (
    ArrayWriter,
    AtomicText,
    Dataset,
    build_manifest,
    check_paths,
    iter_shards,
    load_dataset,
    manifest_beside,
)

__all__ = [
    "ArrayOptions",
    "AtomicText",
    "Built",
    "Counts",
    "Dataset",
    "Drop",
    "Fitted",
    "Record",
    "Written",
    "block_bytes",
    "build_batch",
    "drop_oldest_turns",
    "fit_lines",
    "iter_shards",
    "load_dataset",
    "manifest_beside",
    "write_dataset",
]

# Old names, kept for one release.
Fitted = Record

BLOCK_ROWS = 256  # rows turned into arrays at a time for a single .npz output


def check_rejects_path(rejects, *, inputs=(), output=None) -> None:
    """Old spelling of :func:`gemma_turns.store.check_paths` for a rejects file."""
    sharded = output is not None and Path(output).suffix not in (".npz", ".parquet")
    check_paths(inputs=inputs, output=output, sharded=sharded, rejects=rejects)


def block_bytes(array_options: ArrayOptions, rows: int) -> int | None:
    """Bytes that ``rows`` padded rows take while they are built and written: the arrays
    (10 bytes a cell; 14 with targets or segment ids, 18 with both) and as much again in
    temporaries. None when the width is not known before the data (no ``max_length``)."""
    if array_options.max_length is None:
        return None
    multiple = array_options.pad_to_multiple
    width = -(-array_options.max_length // multiple) * multiple
    cell = 10 + 4 * int(array_options.shift) + 4 * int(array_options.pack)
    return 2 * rows * width * cell


# -- rows ----------------------------------------------------------------------------------


class _Rows:
    """Kept sequences waiting to become arrays: one row each, or packed by best fit."""

    def __init__(self, options: ArrayOptions):
        self.options = options
        self.ready: list[list[tuple[int, Encoding]]] = []  # closed rows of (source, encoding)
        self.planner = (
            BestFit(options.max_length, max_open_rows=options.open_rows) if options.pack else None
        )
        self.waiting: dict[int, Encoding] = {}  # sequences in open packed rows, by source

    def add(self, source: int, encoding: Encoding) -> None:
        if self.planner is None:
            self.ready.append([(source, encoding)])
            return
        self.waiting[source] = encoding
        self._close(self.planner.add(source, len(encoding) - int(self.options.shift)))

    def finish(self) -> None:
        if self.planner is not None:
            self._close(self.planner.finish())

    def take(self, count: int) -> list[list[tuple[int, Encoding]]]:
        rows = self.ready[:count]
        del self.ready[:count]
        return rows

    def _close(self, rows: list[list[int]]) -> None:
        self.ready.extend([(source, self.waiting.pop(source)) for source in row] for row in rows)


def _to_arrays(rows, options: ArrayOptions, pad_id: int) -> tuple[Batch, np.ndarray]:
    """The batch of ``rows`` and the source of each row (each segment, when packed; -1: none)."""
    encodings = [encoding for row in rows for _, encoding in row]
    sources = np.array([source for row in rows for source, _ in row], dtype=np.int64)
    ids = [encoding.ids for encoding in encodings]
    masks = [encoding.loss_mask for encoding in encodings]
    common = dict(
        loss_masks=masks,
        pad_id=pad_id,
        pad_to_multiple=options.pad_to_multiple,
        shift=options.shift,
    )
    if not options.pack:
        batch = pad_batch(ids, max_length=options.max_length, side=options.padding, **common)
        return batch, sources
    counts = np.array([len(row) for row in rows], dtype=np.int64)
    first = np.cumsum(counts) - counts
    plan = [
        list(range(start, start + count))
        for start, count in zip(first.tolist(), counts.tolist(), strict=True)
    ]
    batch = pack_rows(plan, ids, row_length=options.max_length, **common)
    table = np.full((len(rows), int(counts.max(initial=0))), -1, dtype=np.int64)
    row_of = np.repeat(np.arange(len(rows)), counts)
    table[row_of, np.arange(len(sources)) - first[row_of]] = sources
    return batch, table


def _source_key(options: ArrayOptions) -> str:
    return "segment_source_line" if options.pack else "source_line"


@dataclass(frozen=True, eq=False)
class Built:
    """An in-memory batch: the arrays, where each row (segment) came from, and what was left out."""

    batch: Batch
    sources: np.ndarray  # record index per row; per segment [rows, max segments] when packed
    problems: tuple[Record, ...]  # rejected and dropped records, in input order
    counts: Counts


def build_batch(
    tokenizer: GemmaTokenizer,
    records: Iterable[object],
    *,
    encode_options: EncodeOptions,
    array_options: ArrayOptions = ArrayOptions(),
    num_threads: int | None = None,
) -> Built:
    """Records (message lists, ``{"messages": [...]}`` objects, or texts for pt) to one batch.

    The truncation policy applies as in :func:`write_dataset`; a rejected or dropped record
    is listed in ``problems`` (``number`` is its index, from 0), never lost silently.
    """
    counts, rows, problems = Counts(), _Rows(array_options), []
    lines = (Line(index, value=record) for index, record in enumerate(records))
    fitted = fit_lines(
        tokenizer,
        lines,
        encode_options=encode_options,
        array_options=array_options,
        num_threads=num_threads,
    )
    for record in fitted:
        counts.add(record)
        if record.kept:
            rows.add(record.number, record.encoding)
        elif record.kind != "blank":
            problems.append(record)
    rows.finish()
    batch, sources = _to_arrays(rows.take(len(rows.ready)), array_options, tokenizer.specials.pad)
    counts.add_rows(batch)
    return Built(batch, sources, tuple(problems), counts)


# -- writing ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Written:
    """What :func:`write_dataset` wrote."""

    manifest_path: Path
    files: tuple[Path, ...]
    manifest: dict
    counts: Counts


def write_dataset(
    tokenizer: GemmaTokenizer,
    source: Iterable[bytes],
    output: str | os.PathLike,
    *,
    encode_options: EncodeOptions,
    array_options: ArrayOptions = ArrayOptions(),
    shard_size: int | None = None,
    rejects: str | os.PathLike | None = None,
    compress: bool = False,
    input_path: str | None = None,
    batch_size: int = 1024,
    num_threads: int | None = None,
    on_progress: Callable[[Counts], None] | None = None,
    max_record_bytes: int = MAX_RECORD_BYTES,
    file_format: str | None = None,
) -> Written:
    """Stream JSONL lines (bytes, e.g. a file opened ``"rb"``) to arrays on disk.

    ``output`` is ``NAME.npz`` (manifest ``NAME.manifest.json``), or with ``shard_size`` a
    directory of ``shard-00000.npz`` ... of ``shard_size`` rows each and ``manifest.json``
    (then ``max_length`` is required, so every shard has one width). ``rejects``: a JSONL
    file of the rejected and dropped records with their line numbers and reasons (``"-"``:
    standard output). ``on_progress`` is called with the counts after every batch of lines.
    A line longer than ``max_record_bytes`` is rejected (``too_large``) unread.
    ``file_format``: ``"npz"`` or ``"parquet"`` (needs pyarrow); by default a single file's
    suffix decides (``NAME.parquet``), and shards are ``.npz``.

    ``input_path`` names the input for the manifest and for the checks made before any work:
    the output, its manifest and the rejects file may not be the input (or each other).
    While it runs, the output is locked (a second run into it fails at once with
    DatasetError), and leftovers of runs into it that were killed are removed.

    Raises SequenceTooLongError under ``truncation="error"``, EmptyInputError when the input
    has no record, DatasetError when ``output`` cannot be used or a file cannot be written;
    nothing is written then.
    """
    array_options.check_mode(encode_options.mode)
    if shard_size is not None and (
        isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1
    ):
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    if shard_size is not None and array_options.max_length is None:
        raise ValueError(
            "sharded output needs a max_length, so that every shard has the same width"
        )
    check_paths(inputs=[input_path], output=output, sharded=shard_size is not None, rejects=rejects)
    target = ArrayWriter(
        output,
        sharded=shard_size is not None,
        compress=compress,
        file_format=file_format,
        pad_id=tokenizer.specials.pad,
        padding=array_options.padding,
    )
    reject_file = None
    hashed = _HashingSource(source)
    counts, rows = Counts(), _Rows(array_options)
    pad_id, key = tokenizer.specials.pad, _source_key(array_options)

    # Closed rows become arrays in blocks as they come, while the encoder works on later
    # lines; a shard is one block, a single .npz is written from all its blocks at the end.
    block_rows = shard_size or (BLOCK_ROWS if array_options.max_length is not None else None)
    blocks: list[dict[str, np.ndarray]] = []

    def build(chunk) -> None:
        batch, sources = _to_arrays(chunk, array_options, pad_id)
        counts.add_rows(batch)
        blocks.append({**batch.arrays(), key: sources})
        if shard_size is not None:
            flush()

    def flush() -> None:
        target.write(blocks)
        blocks.clear()

    try:
        reject_file = AtomicText(rejects, stdout=sys.stdout) if rejects is not None else None
        fitted = fit_lines(
            tokenizer,
            read_lines(hashed, max_record_bytes=max_record_bytes),
            encode_options=encode_options,
            array_options=array_options,
            batch_size=batch_size,
            num_threads=num_threads,
        )
        for record in fitted:
            counts.add(record)
            if record.kept:
                rows.add(record.number, record.encoding)
            elif record.kind != "blank" and reject_file is not None:
                reject_file.write(json.dumps(record.report(), ensure_ascii=False) + "\n")
            while block_rows is not None and len(rows.ready) >= block_rows:
                build(rows.take(block_rows))
            if on_progress is not None and counts.lines % batch_size == 0:
                counts.input_bytes = hashed.size
                on_progress(counts)
        counts.input_bytes = hashed.size
        if counts.lines == counts.blank:
            raise EmptyInputError(
                f"{input_path or 'the input'} has no records: it is empty or only blank lines",
                path=input_path,
            )
        rows.finish()
        while rows.ready:
            build(rows.take(block_rows or len(rows.ready)))
        if blocks or not target.files:  # the single file, or an empty first shard
            if not blocks:
                build([])
            flush()
        if on_progress is not None:
            on_progress(counts)
        manifest = build_manifest(
            tokenizer=tokenizer,
            encode_options=encode_options,
            array_options=array_options,
            counts=counts,
            files=target.files,
            input_path=input_path,
            input_sha256=hashed.sha256.hexdigest(),
            shard_size=shard_size,
            compress=compress,
            rejects=rejects,
            file_format=target.file_format,
        )
        manifest_path, files = target.commit(manifest)
        if reject_file is not None:
            reject_file.commit()
    except BaseException:
        target.abort()
        if reject_file is not None:
            reject_file.abort()
        raise
    return Written(manifest_path, files, manifest, counts)


class _HashingSource:
    """Input bytes passed through, counted and hashed for the manifest: by ``readline`` when
    the source is a file, else line by line."""

    def __init__(self, source: Iterable[bytes]):
        self.source = source
        self.sha256 = hashlib.sha256()
        self.size = 0
        if hasattr(source, "readline"):
            self.readline = self._readline

    def _readline(self, size: int = -1) -> bytes:
        raw = self.source.readline(size)
        self.sha256.update(raw)
        self.size += len(raw)
        return raw

    def __iter__(self) -> Iterator[bytes]:
        for raw in self.source:
            self.sha256.update(raw)
            self.size += len(raw)
            yield raw


