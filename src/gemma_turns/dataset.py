"""Whole datasets: records to batches in memory, or JSONL streamed to arrays on disk.

    JSONL lines -> fit_lines (encode in batches, truncation policy: one Record per line)
                -> rows (one per record, or packed) -> blocks of arrays
                -> store.ArrayWriter (.npz file or shards) + manifest

Several input files are read one after the other as one stream; each row (segment) keeps
its source as ``(file index, line)``. :class:`Assembler` is the middle part (records ->
rows -> blocks), shared with the workers of a distributed run
(:mod:`gemma_turns.engines.chunks`).

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arrays import Batch, BestFit, pack_rows, pad_batch
from .encoder import Encoding, GemmaTokenizer
from .errors import EmptyInputError, SequenceTooLongError
from .fit import drop_oldest_turns, fit_lines
from .jsonl import MAX_RECORD_BYTES, Line, read_lines
from .options import ArrayOptions, EncodeOptions
from .records import Counts, Drop, Record
from .store import (
    ArrayWriter,
    AtomicText,
    Dataset,
    RunOutput,
    build_manifest,
    check_paths,
    iter_shards,
    load_dataset,
    manifest_beside,
)

__all__ = [
    "ArrayOptions",
    "Assembler",
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
    "check_inputs",
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
    """Kept sequences waiting to become arrays: one row each, or packed by best fit.

    A sequence's ``source`` is ``(input file index, line)``.
    """

    def __init__(self, options: ArrayOptions):
        self.options = options
        self.ready: list[list[tuple[tuple[int, int], Encoding]]] = []  # closed rows
        self.planner = (
            BestFit(options.max_length, max_open_rows=options.open_rows) if options.pack else None
        )
        self.waiting: dict[tuple[int, int], Encoding] = {}  # in open packed rows, by source

    def add(self, source: tuple[int, int], encoding: Encoding) -> None:
        if self.planner is None:
            self.ready.append([(source, encoding)])
            return
        self.waiting[source] = encoding
        self._close(self.planner.add(source, len(encoding) - int(self.options.shift)))

    def finish(self) -> None:
        if self.planner is not None:
            self._close(self.planner.finish())

    def take(self, count: int) -> list[list[tuple[tuple[int, int], Encoding]]]:
        rows = self.ready[:count]
        del self.ready[:count]
        return rows

    def _close(self, rows: list[list[tuple[int, int]]]) -> None:
        self.ready.extend([(source, self.waiting.pop(source)) for source in row] for row in rows)


def _to_arrays(rows, options: ArrayOptions, pad_id: int) -> tuple[Batch, np.ndarray, np.ndarray]:
    """The batch of ``rows``, and the input line and file index of each row (of each segment,
    ``[rows, max segments]``, when packed; -1: none)."""
    encodings = [encoding for row in rows for _, encoding in row]
    files = np.array([source[0] for row in rows for source, _ in row], dtype=np.int32)
    lines = np.array([source[1] for row in rows for source, _ in row], dtype=np.int64)
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
        return batch, lines, files
    counts = np.array([len(row) for row in rows], dtype=np.int64)
    first = np.cumsum(counts) - counts
    plan = [
        list(range(start, start + count))
        for start, count in zip(first.tolist(), counts.tolist(), strict=True)
    ]
    batch = pack_rows(plan, ids, row_length=options.max_length, **common)
    row_of = np.repeat(np.arange(len(rows)), counts)
    at = (row_of, np.arange(len(lines)) - first[row_of])
    width = int(counts.max(initial=0))
    line_table = np.full((len(rows), width), -1, dtype=np.int64)
    file_table = np.full((len(rows), width), -1, dtype=np.int32)
    line_table[at], file_table[at] = lines, files
    return batch, line_table, file_table


def _source_key(options: ArrayOptions) -> str:
    return "segment_source_line" if options.pack else "source_line"


def _file_key(options: ArrayOptions) -> str:
    return "segment_source_file" if options.pack else "source_file"


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
            rows.add((0, record.number), record.encoding)
        elif record.kind != "blank":
            problems.append(record)
    rows.finish()
    batch, sources, _ = _to_arrays(
        rows.take(len(rows.ready)), array_options, tokenizer.specials.pad
    )
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


class Assembler:
    """Records of one or more inputs -> rows (one per record, or packed) -> blocks of arrays.

    What one writer does, whether it is ``write_dataset`` or a worker of a distributed run
    given a chunk of the input: ``feed`` the lines of each input (``file`` is the input's
    index in the run, which the arrays' ``source_file`` keys hold when ``tag_files``),
    ``finish``, and every block of ``block_rows`` rows goes to ``emit`` (a list of blocks:
    one shard) as soon as it is full (``sharded``), or all at the end as one file. Rejected
    and dropped records go to ``reject`` as their rejects-file entries (with ``"file"``
    when ``tag_files``); ``counts`` adds up everything.
    """

    def __init__(
        self,
        tokenizer: GemmaTokenizer,
        *,
        encode_options: EncodeOptions,
        array_options: ArrayOptions,
        emit: Callable[[list[dict[str, np.ndarray]]], None],
        sharded: bool,
        block_rows: int | None,
        names: Sequence[str | None] = (None,),
        tag_files: bool = False,
        reject: Callable[[dict], None] | None = None,
    ):
        self.tokenizer = tokenizer
        self.encode_options = encode_options
        self.array_options = array_options
        self.emit = emit
        self.sharded = sharded
        self.block_rows = block_rows
        self.names = list(names)
        self.tag_files = tag_files
        self.reject = reject
        self.counts = Counts()
        self.rows = _Rows(array_options)
        self.blocks: list[dict[str, np.ndarray]] = []
        self.pending = 0  # rows in ``blocks``, not yet emitted
        self.emitted = 0

    def feed(
        self,
        file: int,
        lines: Iterable[Line],
        *,
        batch_size: int = 1024,
        num_threads: int | None = None,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        """Encode the lines of input ``file`` and place their rows; ``on_batch`` is called
        after every ``batch_size`` lines."""
        name = self.names[file] if self.tag_files else None
        counts = self.counts
        fitted = fit_lines(
            self.tokenizer,
            lines,
            encode_options=self.encode_options,
            array_options=self.array_options,
            batch_size=batch_size,
            num_threads=num_threads,
        )
        try:
            for record in fitted:
                counts.add(record, file=name)
                if record.kept:
                    self.place((file, record.number), record.encoding)
                elif record.kind != "blank" and self.reject is not None:
                    report = record.report()
                    self.reject(report if name is None else {"file": name, **report})
                if on_batch is not None and counts.lines % batch_size == 0:
                    on_batch()
        except SequenceTooLongError as error:
            if error.path is None and self.tag_files and error.record is not None:
                raise SequenceTooLongError(
                    error.length, error.max_length, record=error.record, path=name
                ) from None
            raise

    def place(self, source: tuple[int, int], encoding: Encoding) -> None:
        """One kept sequence (``source``: its file index and line) into a row; full blocks
        of rows are built. ``feed`` places what it encodes; a driver that packs what its
        workers encoded places theirs."""
        self.rows.add(source, encoding)
        while (size := self._next_block()) is not None and len(self.rows.ready) >= size:
            self._build(self.rows.take(size))

    def _next_block(self) -> int | None:
        """How many rows to build next: ``block_rows``, but a shard is built in blocks of
        at most BLOCK_ROWS, so its rows never wait all at once, ragged and then padded (a
        shard of 4,096 rows of 8,192 peaked at 2.2x its size that way)."""
        if self.block_rows is None or not self.sharded:
            return self.block_rows
        return min(BLOCK_ROWS, self.block_rows - self.pending)

    def finish(self, *, empty_file: bool = True) -> None:
        """Close the open rows and emit the rest; with ``empty_file``, an output that got no
        rows still gets one (empty) file."""
        self.rows.finish()
        while self.rows.ready:
            self._build(self.rows.take(self._next_block() or len(self.rows.ready)))
        if empty_file and not self.emitted and not self.blocks:
            self._build([])  # (a sharded output emits it at once)
        if self.blocks:
            self._flush()

    def _build(self, chunk) -> None:
        options = self.array_options
        batch, lines, files = _to_arrays(chunk, options, self.tokenizer.specials.pad)
        self.counts.add_rows(batch)
        block = {**batch.arrays(), _source_key(options): lines}
        if self.tag_files:
            block[_file_key(options)] = files
        self.blocks.append(block)
        self.pending += len(chunk)
        if self.sharded and (self.pending == self.block_rows or not chunk):
            self._flush()

    def _flush(self) -> None:
        self.emit(self.blocks)
        self.emitted += 1
        self.blocks = []
        self.pending = 0


def write_dataset(
    tokenizer: GemmaTokenizer,
    source: Iterable[bytes] | None,
    output: str | os.PathLike,
    *,
    encode_options: EncodeOptions,
    array_options: ArrayOptions = ArrayOptions(),
    shard_size: int | None = None,
    rejects: str | os.PathLike | None = None,
    compress: bool = False,
    input_path: str | None = None,
    inputs: Sequence[str | os.PathLike] | None = None,
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
    Several input files: pass their paths as ``inputs`` (and ``source=None``); they are read
    one after the other, the manifest lists each (``inputs``: path, sha256, bytes), the
    arrays get ``source_file`` (``segment_source_file`` when packed: the index of each
    row's, each segment's, file in ``inputs``) beside ``source_line``, and the rejects
    entries a ``"file"``. While it runs, the output is locked (a second run into it fails at
    once with DatasetError), and leftovers of runs into it that were killed are removed.

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
    if inputs is not None:
        if source is not None or input_path is not None:
            raise ValueError("give either inputs (paths) or source (and input_path), not both")
        names = check_inputs(inputs)
    else:
        if source is None:
            raise ValueError("give source (a binary stream) or inputs (paths)")
        names = [input_path]
    check_paths(inputs=names, output=output, sharded=shard_size is not None, rejects=rejects)
    target = ArrayWriter(
        output,
        sharded=shard_size is not None,
        compress=compress,
        file_format=file_format,
        pad_id=tokenizer.specials.pad,
        padding=array_options.padding,
    )
    # Closed rows become arrays in blocks as they come, while the encoder works on later
    # lines; a shard is one block, a single .npz is written from all its blocks at the end.
    block_rows = shard_size or (BLOCK_ROWS if array_options.max_length is not None else None)
    with RunOutput(target, rejects) as run:
        reject_file = run.rejects
        write_reject = (
            None
            if reject_file is None
            else lambda entry: reject_file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        )
        assembler = Assembler(
            tokenizer,
            encode_options=encode_options,
            array_options=array_options,
            emit=target.write,
            sharded=shard_size is not None,
            block_rows=block_rows,
            names=names,
            tag_files=len(names) > 1,
            reject=write_reject,
        )
        counts, done, described = assembler.counts, 0, []
        for file, name in enumerate(names):
            with _opened(source, name, inputs is not None) as stream:
                hashed = _HashingSource(stream)

                def progress(hashed=hashed) -> None:
                    counts.input_bytes = done + hashed.size
                    if on_progress is not None:
                        on_progress(counts)

                assembler.feed(
                    file,
                    read_lines(hashed, max_record_bytes=max_record_bytes),
                    batch_size=batch_size,
                    num_threads=num_threads,
                    on_batch=progress,
                )
            done += hashed.size
            counts.input_bytes = done
            described.append(
                {
                    "path": None if name == "-" else name,  # standard input has no path
                    "sha256": hashed.sha256.hexdigest(),
                    "bytes": hashed.size,
                }
            )
        if counts.lines == counts.blank:
            what = " and ".join(
                "the input" if n in (None, "-") else n for n in names
            ) if len(names) < 4 else (
                f"all {len(names)} inputs"
            )
            raise EmptyInputError(
                f"{what} {'has' if len(names) == 1 else 'have'} no records: empty or only "
                "blank lines",
                path=names[0] if len(names) == 1 and names[0] != "-" else None,
            )
        assembler.finish()
        if on_progress is not None:
            on_progress(counts)
        manifest = build_manifest(
            tokenizer=tokenizer,
            encode_options=encode_options,
            array_options=array_options,
            counts=counts,
            files=target.files,
            inputs=described,
            shard_size=shard_size,
            compress=compress,
            rejects=rejects,
            file_format=target.file_format,
        )
        manifest_path, files = run.commit(manifest)
    return Written(manifest_path, files, manifest, counts)


def check_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """The input paths as strings, refused (ValueError) when there are none, when ``-``
    (standard input) is one of several, or when one file is named twice (its records would
    be counted twice)."""
    names = [os.fspath(name) for name in inputs]
    if not names:
        raise ValueError("no input files given")
    if len(names) > 1 and "-" in names:
        raise ValueError("'-' (standard input) can only be the one input, not one of several")
    seen: dict[tuple[int, int], str] = {}
    for name in names:
        try:
            info = os.stat(name)
        except OSError:
            continue  # reported, with its reason, when it is opened
        key = (info.st_dev, info.st_ino)
        if key in seen:
            raise ValueError(
                f"{name} is named twice (also as {seen[key]}): its records would be counted "
                "twice; name each input once"
            )
        seen[key] = name
    return names


@contextmanager
def _opened(source, name: str | None, by_path: bool):
    if not by_path:
        yield source
        return
    from .readers import open_binary  # here: readers imports the validator

    with open_binary(name) as stream:
        yield stream


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


