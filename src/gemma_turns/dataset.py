"""Whole datasets: truncation policies, batches, JSONL streamed to .npz files, and a reader.

    JSONL lines -> encode_lines (batches of lines) -> fit (truncation policy)
                -> rows (one per record, or packed) -> .npz file or shards + manifest

Every input line ends in exactly one place: a row (``encoded``, maybe ``truncated``), the
``dropped`` count (too long for ``truncation="drop"``), the ``rejected`` count (invalid
record), or ``blank``; dropped and rejected lines go to the rejects file with their reasons.

Memory. The input is read line by line, ``batch_size`` lines at a time. Kept sequences wait
as ragged ids and masks (5 bytes a token) until a shard is full; packing keeps at most
``open_rows`` rows open. While a shard is written, its padded arrays (10 bytes a cell, 18
with targets and segment ids) and about as much in temporaries exist once. So a sharded run
holds about one shard whatever the input size. A single ``.npz`` output is one shard: it
holds every row of the file until the end, so shard big datasets.

Outputs appear atomically: everything is written under a hidden temporary name next to the
output and renamed at the end, so an interrupted run leaves no file that looks complete.
The manifest (JSON) records the gemma-turns version, the tokenizer's sha256 and special
ids, every option, the counts, and the sha256 of every array file, which
:func:`load_dataset` checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from .arrays import OPEN_ROWS, Batch, BestFit, pack_rows, pad_batch, truncate
from .encoder import Encoding, GemmaTokenizer
from .errors import (
    ConversationError,
    DatasetError,
    EmptyInputError,
    SequenceTooLongError,
)
from .jsonl import Line, read_lines
from .streaming import EncodeOptions, Outcome, encode_lines

__all__ = [
    "ArrayOptions",
    "Built",
    "Counts",
    "Dataset",
    "Drop",
    "Fitted",
    "Written",
    "build_batch",
    "drop_oldest_turns",
    "fit_lines",
    "iter_shards",
    "load_dataset",
    "write_dataset",
]

FORMAT = "gemma-turns/arrays"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_NAME = re.compile(r"shard-\d{5}\.npz")
BLOCK_ROWS = 256  # rows turned into arrays at a time for a single .npz output

Truncation = Literal["error", "drop", "truncate", "drop_oldest_turns"]
TRUNCATIONS = ("error", "drop", "truncate", "drop_oldest_turns")


@dataclass(frozen=True, kw_only=True)
class ArrayOptions:
    """How encoded records become arrays.

    ``max_length`` caps the real tokens of a row (``None``: the longest record sets the
    width, unpacked only); ``pad_to_multiple`` only rounds the array width up. ``truncation``
    is what happens to a record longer than a row: ``error`` (raise SequenceTooLongError),
    ``drop`` (leave it out, reported), ``truncate`` (cut the end, see :func:`fit_lines`),
    ``drop_oldest_turns`` (inference: see :func:`drop_oldest_turns`). ``shift`` stores
    inputs ``ids[:-1]`` and ``targets`` ``ids[1:]``, so a row holds ``max_length + 1`` ids
    of a record. ``pack`` puts several records in a row, planned by best fit with at most
    ``open_rows`` rows open.
    """

    max_length: int | None = None
    padding: Literal["right", "left"] = "right"
    pad_to_multiple: int = 1
    truncation: Truncation = "error"
    pack: bool = False
    shift: bool = False
    open_rows: int = OPEN_ROWS

    def __post_init__(self):
        for name in ("max_length", "pad_to_multiple", "open_rows"):
            value = getattr(self, name)
            if value is None and name == "max_length":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.padding not in ("right", "left"):
            raise ValueError(f"padding must be 'right' or 'left', got {self.padding!r}")
        if self.truncation not in TRUNCATIONS:
            raise ValueError(
                f"truncation must be one of {', '.join(TRUNCATIONS)}, got {self.truncation!r}"
            )
        if self.max_length is None and (self.pack or self.truncation != "error"):
            what = "packing" if self.pack else f"truncation={self.truncation!r}"
            raise ValueError(f"{what} needs a max_length: the row length to fit records into")
        if self.pack and self.padding == "left":
            raise ValueError(
                "packed rows are for training and are right-padded; use padding='right', "
                "or leave packing off for a left-padded generation batch"
            )

    def check_mode(self, mode: str) -> None:
        """Refuse a truncation policy that would corrupt records of this encoding mode."""
        if self.truncation == "drop_oldest_turns" and mode != "inference":
            raise ValueError(
                f"truncation='drop_oldest_turns' keeps the latest turns of a chat prompt, so it "
                f"applies to mode='inference' only, not {mode!r}; use 'truncate' or 'drop'"
            )
        if self.truncation == "truncate" and mode == "inference":
            raise ValueError(
                "truncation='truncate' cuts the end, which would remove the generation prompt "
                "of an inference record; use 'drop_oldest_turns' or 'drop'"
            )

    @property
    def limit(self) -> int | None:
        """Ids of one record that fit a row (``max_length``, one more with ``shift``)."""
        return None if self.max_length is None else self.max_length + int(self.shift)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Drop:
    """Why a valid record was left out of the arrays."""

    code: str  # "too_long", or "no_target" (one id: nothing to predict with shift)
    reason: str
    fix: str | None = None

    def to_dict(self) -> dict:
        out = {"code": self.code, "reason": self.reason}
        return {**out, "fix": self.fix} if self.fix else out


@dataclass(frozen=True, slots=True)
class Fitted:
    """One input record after encoding and the truncation policy: kept (``encoding``, maybe
    ``truncated``), ``dropped``, rejected (``error``), or blank (none of them)."""

    line: int  # the 1-based line number (the 0-based index for in-memory records)
    encoding: Encoding | None = None
    error: ConversationError | None = None
    dropped: Drop | None = None
    truncated: bool = False
    length: int = 0  # encoded ids before the truncation policy

    @property
    def blank(self) -> bool:
        return self.encoding is None and self.error is None and self.dropped is None

    def report(self) -> dict:
        """The rejects-file entry of a dropped or rejected record."""
        if self.error is not None:
            return {"line": self.line, "kind": "rejected", **self.error.to_dict()}
        if self.dropped is not None:
            return {"line": self.line, "kind": "dropped", **self.dropped.to_dict()}
        raise ValueError(f"line {self.line} was neither dropped nor rejected")


@dataclass
class Counts:
    """Where every line went, and how full the rows are.

    ``lines == blank + rejected + encoded`` and ``encoded == sequences + dropped``;
    ``truncated`` records are among the kept ``sequences``, ``untrained`` among the
    truncated (training records whose cut left nothing to learn).
    """

    lines: int = 0
    blank: int = 0
    rejected: Counter = field(default_factory=Counter)  # by error code
    encoded: int = 0
    encoded_tokens: int = 0  # before truncation
    dropped: Counter = field(default_factory=Counter)  # by drop code
    truncated: int = 0
    untrained: int = 0
    sequences: int = 0
    rows: int = 0
    tokens: int = 0  # real tokens in the rows
    cells: int = 0  # rows x width
    input_bytes: int = 0

    def add(self, fitted: Fitted, *, mode: str) -> None:
        self.lines += 1
        if fitted.error is not None:
            self.rejected[fitted.error.code] += 1
            return
        if fitted.blank:
            self.blank += 1
            return
        self.encoded += 1
        self.encoded_tokens += fitted.length
        if fitted.dropped is not None:
            self.dropped[fitted.dropped.code] += 1
            return
        self.sequences += 1
        if fitted.truncated:
            self.truncated += 1
            if mode == "training" and not fitted.encoding.loss_mask.any():
                self.untrained += 1

    def add_rows(self, batch: Batch) -> None:
        self.rows += batch.shape[0]
        self.tokens += int(np.count_nonzero(batch.attention_mask))
        self.cells += batch.attention_mask.size

    @property
    def fill_ratio(self) -> float:
        """Real tokens / row capacity (rows x width)."""
        return self.tokens / self.cells if self.cells else 0.0

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["rejected"] = dict(self.rejected.most_common())
        out["dropped"] = dict(self.dropped.most_common())
        out["fill_ratio"] = round(self.fill_ratio, 6)
        return out

    def summary(self) -> str:
        def by_code(counter: Counter) -> str:
            total = sum(counter.values())
            codes = ", ".join(f"{code} {n}" for code, n in counter.most_common())
            return f"{total} ({codes})" if total else "0"

        untrained = f" ({self.untrained} with nothing left to learn)" if self.untrained else ""
        return (
            f"{self.lines} lines: {self.encoded} encoded ({self.encoded_tokens} tokens), "
            f"{by_code(self.rejected)} rejected, {self.blank} blank; "
            f"{self.truncated} truncated{untrained}, {by_code(self.dropped)} dropped; "
            f"{self.rows} rows, {self.tokens} tokens, fill ratio {self.fill_ratio:.1%}"
        )


# -- truncation policies -------------------------------------------------------------------


def drop_oldest_turns(
    tokenizer: GemmaTokenizer, messages: Sequence, *, max_length: int, options: EncodeOptions
) -> Encoding:
    """Encode a chat prompt with as many of its latest turns as fit ``max_length`` ids.

    Kept: the first user turn (Gemma puts the system text inside it, so the instructions
    survive) and the longest run of latest turns that fits, which starts with a model turn so
    that roles still alternate and ends as the conversation did (with the generation prompt).
    Dropped: the turn pairs in between, oldest first: (model 1, user 2), (model 2, user 3) ...

        system, user 1, model 1, user 2, model 2, user 3     (too long)
        -> system, user 1, model 2, user 3  <start_of_turn>model

    Each candidate is re-encoded with ``tokenizer``: a binary search, so about log2(turns)
    encodings. Raises SequenceTooLongError when even the first user turn and the last model
    and user turns do not fit; ValueError outside ``mode="inference"``.
    """
    if options.mode != "inference":
        raise ValueError(f"drop_oldest_turns is for mode='inference' prompts, not {options.mode!r}")
    messages = list(messages)
    first_is_system = (
        bool(messages) and isinstance(messages[0], Mapping) and messages[0].get("role") == "system"
    )
    head = 2 if first_is_system else 1  # messages[:head]: the system message and first user turn
    starts = list(range(head, len(messages), 2)) or [len(messages)]  # where a kept tail may start

    def encode(start: int) -> Encoding:
        return tokenizer.encode_chat(
            messages[:head] + messages[start:],
            mode="inference",
            add_generation_prompt=options.add_generation_prompt,
            reserved=options.reserved,
        )

    best, shortest = None, None
    low, high = 0, len(starts) - 1
    while low <= high:  # encoded length shrinks as the tail starts later
        middle = (low + high) // 2
        encoding = encode(starts[middle])
        if len(encoding) <= max_length:
            best, high = encoding, middle - 1
        else:
            shortest, low = encoding, middle + 1
    if best is None:
        raise SequenceTooLongError(len(shortest), max_length)
    return best


def fit_lines(
    tokenizer: GemmaTokenizer,
    lines: Iterable[Line],
    *,
    encode_options: EncodeOptions,
    array_options: ArrayOptions,
    batch_size: int = 1024,
    num_threads: int | None = None,
) -> Iterator[Fitted]:
    """Encode parsed lines in batches and apply the truncation policy: one Fitted per line.

    ``truncate`` keeps the first ids that fit. In chat modes a model turn that the cut splits
    keeps its ids as context but loses its loss mask (see :func:`gemma_turns.arrays.truncate`),
    so no row teaches an answer that stops in the middle; a pt text keeps its trainable prefix.
    ``error`` raises SequenceTooLongError with ``record`` set to the line number.
    """
    array_options.check_mode(encode_options.mode)
    outcomes = encode_lines(
        tokenizer, lines, encode_options, batch_size=batch_size, num_threads=num_threads
    )
    for outcome in outcomes:
        if outcome.encoding is None:
            yield Fitted(outcome.line, error=outcome.error)
        else:
            yield _fit(tokenizer, outcome, encode_options, array_options)


def _fit(tokenizer, outcome: Outcome, encode_options, array_options) -> Fitted:
    encoding = outcome.encoding
    length, limit = len(encoding), array_options.limit
    fitted = partial(Fitted, outcome.line, length=length)
    if array_options.shift and length < 2:
        return fitted(dropped=Drop("no_target", "one id: nothing to predict"))
    if limit is None or length <= limit:
        return fitted(encoding=encoding)
    policy = array_options.truncation
    if policy == "error":
        raise SequenceTooLongError(length, limit, record=outcome.line)
    too_long = f"{length} ids, more than the {limit} that fit a row"
    if policy == "drop":
        return fitted(dropped=Drop("too_long", too_long, "Raise max_length to keep it"))
    if policy == "truncate":
        pt = encode_options.mode == "pt"
        ids, mask = truncate(encoding.ids, encoding.loss_mask, limit, keep_cut_span=pt)
        return fitted(encoding=Encoding(ids, mask), truncated=True)
    try:
        shorter = drop_oldest_turns(
            tokenizer, outcome.value, max_length=limit, options=encode_options
        )
    except SequenceTooLongError as error:
        reason = f"{too_long}; the first user turn with the latest turns still takes {error.length}"
        return fitted(dropped=Drop("too_long", reason, "Raise max_length to keep it"))
    return fitted(encoding=shorter, truncated=True)


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
    problems: tuple[Fitted, ...]  # rejected and dropped records, in input order
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
    is listed in ``problems`` (``line`` is its index), never lost silently.
    """
    counts, rows, problems = Counts(), _Rows(array_options), []
    lines = (Line(index, value=record) for index, record in enumerate(records))
    fitted_lines = fit_lines(
        tokenizer,
        lines,
        encode_options=encode_options,
        array_options=array_options,
        num_threads=num_threads,
    )
    for fitted in fitted_lines:
        counts.add(fitted, mode=encode_options.mode)
        if fitted.encoding is not None:
            rows.add(fitted.line, fitted.encoding)
        elif not fitted.blank:
            problems.append(fitted)
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
) -> Written:
    """Stream JSONL lines (bytes, e.g. a file opened ``"rb"``) to arrays on disk.

    ``output`` is ``NAME.npz`` (manifest ``NAME.manifest.json``), or with ``shard_size`` a
    directory of ``shard-00000.npz`` ... of ``shard_size`` rows each and ``manifest.json``
    (then ``max_length`` is required, so every shard has one width). ``rejects``: a JSONL
    file of the rejected and dropped records with their line numbers and reasons.
    ``on_progress`` is called with the counts after every batch of lines.

    Raises SequenceTooLongError under ``truncation="error"``, EmptyInputError when the input
    has no record, DatasetError when ``output`` cannot be used; nothing is written then.
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
    if rejects is not None:
        check_rejects_path(rejects, inputs=[input_path], output=output)
    target = _Target(output, sharded=shard_size is not None, compress=compress)
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
        reject_file = AtomicText(rejects) if rejects is not None else None
        fitted_lines = fit_lines(
            tokenizer,
            read_lines(hashed),
            encode_options=encode_options,
            array_options=array_options,
            batch_size=batch_size,
            num_threads=num_threads,
        )
        for fitted in fitted_lines:
            counts.add(fitted, mode=encode_options.mode)
            if fitted.encoding is not None:
                rows.add(fitted.line, fitted.encoding)
            elif not fitted.blank and reject_file is not None:
                reject_file.write(json.dumps(fitted.report(), ensure_ascii=False) + "\n")
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
        manifest = _manifest(
            tokenizer,
            encode_options,
            array_options,
            counts,
            target.files,
            input_path=input_path,
            input_sha256=hashed.sha256.hexdigest(),
            shard_size=shard_size,
            compress=compress,
            rejects=rejects,
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
    """Input lines passed through, counted and hashed for the manifest."""

    def __init__(self, source: Iterable[bytes]):
        self.source = source
        self.sha256 = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for raw in self.source:
            self.sha256.update(raw)
            self.size += len(raw)
            yield raw


class _Target:
    """Array files written into a hidden temporary directory beside the output, renamed into
    place by :meth:`commit`, removed by :meth:`abort`."""

    def __init__(self, output: str | os.PathLike, *, sharded: bool, compress: bool):
        self.path = Path(output)
        self.sharded = sharded
        self.compress = compress
        self.files: list[dict] = []
        if sharded:
            if self.path.exists() and not (self.path.is_dir() and _replaceable_dir(self.path)):
                raise DatasetError(
                    f"{self.path} exists and is not a gemma-turns output directory (it holds "
                    "files a run did not write, which replacing it would delete); remove them "
                    "or choose another directory",
                    path=self.path,
                )
        else:
            if self.path.suffix != ".npz":
                raise DatasetError(
                    f"name the output FILE.npz (got {self.path}), or give a shard size to write "
                    "a directory of shards",
                    path=self.path,
                )
            if self.path.is_dir():
                raise DatasetError(f"{self.path} is a directory; name a .npz file", path=self.path)
        parent = self.path.parent
        if not parent.is_dir():
            raise DatasetError(
                f"cannot write {self.path}: {parent} is not a directory", path=self.path
            )
        try:
            self.work = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-", dir=parent))
            os.chmod(self.work, 0o777 & ~_umask())  # mkdtemp makes it private; outputs are not
        except OSError as error:
            raise DatasetError(f"cannot write in {parent}: {error.strerror}", path=parent) from None

    @property
    def manifest_path(self) -> Path:
        if self.sharded:
            return self.path / MANIFEST
        return manifest_beside(self.path)

    def write(self, blocks: list[dict[str, np.ndarray]]) -> None:
        """One .npz file of the rows of ``blocks``, one after the other."""
        name = f"shard-{len(self.files):05d}.npz" if self.sharded else self.path.name
        path = self.work / name
        with open(path, "wb") as handle:
            keys = _save_npz(handle, blocks, compress=self.compress)
            handle.flush()
            os.fsync(handle.fileno())
        rows = sum(len(next(iter(block.values()))) for block in blocks)
        self.files.append({"name": name, "rows": rows, "sha256": _sha256(path), "keys": keys})

    def commit(self, manifest: dict) -> tuple[Path, tuple[Path, ...]]:
        if self.sharded:
            _write_json(self.work / MANIFEST, manifest)
            _fsync_dir(self.work)
            old = None
            if self.path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-", dir=self.path.parent))
                os.rename(self.path, old / "dataset")
            os.rename(self.work, self.path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            # Remove the old manifest first: a run stopped between the renames leaves an
            # array file without a manifest, which load_dataset refuses.
            self.manifest_path.unlink(missing_ok=True)
            os.replace(self.work / self.path.name, self.path)
            _write_json(self.work / MANIFEST, manifest)
            os.replace(self.work / MANIFEST, self.manifest_path)
            shutil.rmtree(self.work, ignore_errors=True)
        _fsync_dir(self.path.parent)
        folder = self.path if self.sharded else self.path.parent
        return self.manifest_path, tuple(folder / entry["name"] for entry in self.files)

    def abort(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _save_npz(handle, blocks: list[dict[str, np.ndarray]], *, compress: bool) -> dict:
    """Write what ``np.savez`` writes for the blocks joined by rows, one block at a time, so
    the joined arrays never exist at once. Returns each key's dtype and shape.

    Blocks have one width, but for a packed ``segment_source_line`` table, which is as wide as
    its row with the most segments: narrower ones are widened with -1.
    """
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    keys = {}
    with zipfile.ZipFile(handle, mode="w", compression=compression, allowZip64=True) as archive:
        for key in blocks[0]:
            parts = [block[key] for block in blocks]
            width = max(part.shape[1:] for part in parts)
            parts = [
                part
                if part.shape[1:] == width
                else np.pad(part, ((0, 0), (0, width[0] - part.shape[1])), constant_values=-1)
                for part in parts
            ]
            shape = (sum(len(part) for part in parts), *width)
            header = {
                "descr": np.lib.format.dtype_to_descr(parts[0].dtype),
                "fortran_order": False,
                "shape": shape,
            }
            with archive.open(f"{key}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, header)
                for part in parts:
                    if part.size:  # a memoryview of no bytes cannot be cast
                        member.write(memoryview(np.ascontiguousarray(part)).cast("B"))
            keys[key] = {"dtype": parts[0].dtype.name, "shape": ["rows", *width]}
    return keys


class AtomicText:
    """A text file written under a hidden temporary name, renamed on :meth:`commit`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            descriptor, temporary = tempfile.mkstemp(
                prefix=f".{self.path.name}.partial-", dir=self.path.parent
            )
        except OSError as error:
            raise DatasetError(
                f"cannot write {self.path}: {error.strerror}", path=self.path
            ) from None
        self.temporary = Path(temporary)
        os.chmod(self.temporary, 0o666 & ~_umask())  # mkstemp makes it private; outputs are not
        self.handle = os.fdopen(descriptor, "w", encoding="utf-8")
        self.write = self.handle.write

    def commit(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.temporary, self.path)

    def abort(self) -> None:
        self.handle.close()
        self.temporary.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def manifest_beside(npz: str | os.PathLike) -> Path:
    """Where the manifest of a single ``NAME.npz`` output is: ``NAME.manifest.json``."""
    npz = Path(npz)
    return npz.with_name(npz.name.removesuffix(".npz") + ".manifest.json")


def _replaceable_dir(path: Path) -> bool:
    """An empty directory, or one that a previous run wrote: our manifest and shards, and
    nothing else (replacing it must not delete a file of the user's)."""
    names = [entry.name for entry in path.iterdir()]
    if not names:
        return True
    if any(name != MANIFEST and not SHARD_NAME.fullmatch(name) for name in names):
        return False
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_rejects_path(
    rejects: str | os.PathLike, *, inputs: Sequence = (), output: str | os.PathLike | None = None
) -> None:
    """Refuse a rejects file that would overwrite an input or an output, or is a directory."""
    path = Path(rejects).resolve()
    if path.is_dir():
        raise DatasetError(f"--rejects {rejects} is a directory; name a file", path=rejects)
    taken = [Path(name).resolve() for name in inputs if name not in (None, "-")]
    if output is not None:
        output = Path(output).resolve()
        taken += [output, manifest_beside(output)]
        if path.is_relative_to(output):
            raise DatasetError(
                f"the rejects file {rejects} is inside the output directory {output}, which "
                "a run replaces whole; write it elsewhere",
                path=rejects,
            )
    if path in taken:
        raise DatasetError(
            f"the rejects file {rejects} is also an input or an output of this run; name "
            "another file",
            path=rejects,
        )


def _manifest(tokenizer, encode_options, array_options, counts, files, **extra) -> dict:
    from . import __version__  # here, not at import: the package imports this module

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gemma_turns_version": __version__,
        "input": {
            "path": extra["input_path"],
            "sha256": extra["input_sha256"],
            "bytes": counts.input_bytes,
        },
        "tokenizer": {
            "path": tokenizer.path,
            "sha256": tokenizer.sha256,
            "vocab_size": tokenizer.vocab_size,
            "specials": tokenizer.specials.as_dict(),
        },
        "encode_options": encode_options.as_dict(),
        "array_options": {
            **array_options.as_dict(),
            "shard_size": extra["shard_size"],
            "compress": extra["compress"],
        },
        "counts": counts.as_dict(),
        "rejects": None if extra["rejects"] is None else os.fspath(extra["rejects"]),
        "keys": _merged_keys(files),
        "files": [{name: entry[name] for name in ("name", "rows", "sha256")} for entry in files],
    }


def _merged_keys(files: list[dict]) -> dict:
    """Each key's dtype and shape over all files: ``["rows", width]``, the widest width
    (a packed ``segment_source_line`` table is as wide as the row with most segments)."""
    keys = {}
    for entry in files:
        for key, spec in entry["keys"].items():
            known = keys.setdefault(key, dict(spec))
            known["shape"] = [
                "rows",
                *(max(a, b) for a, b in zip(known["shape"][1:], spec["shape"][1:], strict=True)),
            ]
    return keys


def _write_json(path: Path, value: dict) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- reading ---------------------------------------------------------------------------------


class Dataset(NamedTuple):
    """Arrays and manifest read back: ``arrays, manifest = load_dataset(path)``."""

    arrays: dict[str, np.ndarray]
    manifest: dict


def load_dataset(path: str | os.PathLike, *, verify: bool = True) -> Dataset:
    """Read what :func:`write_dataset` wrote: ``NAME.npz``, its manifest, or a shard directory.

    Shards are concatenated by rows (packed ``segment_source_line`` tables are widened with
    -1), so this holds the whole dataset in memory: use :func:`iter_shards` for big ones.
    With ``verify``, every file's sha256 must match the manifest.
    """
    manifest, _ = _read_manifest(path)
    shards = list(iter_shards(path, verify=verify))
    arrays = {}
    for key in manifest["keys"]:
        parts = [shard[key] for shard in shards]
        if key == "segment_source_line":
            width = max(part.shape[1] for part in parts)
            parts = [
                np.pad(part, ((0, 0), (0, width - part.shape[1])), constant_values=-1)
                for part in parts
            ]
        arrays[key] = np.concatenate(parts)
    return Dataset(arrays, manifest)


def iter_shards(path: str | os.PathLike, *, verify: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """The arrays of each file of a written dataset, one file at a time."""
    manifest, folder = _read_manifest(path)
    for entry in manifest["files"]:
        file = folder / entry["name"]
        if verify and _sha256_or_none(file) != entry["sha256"]:
            raise DatasetError(
                f"{file} does not match its manifest (missing, changed, or from another run); "
                "write the dataset again with gemma-turns encode",
                path=file,
            )
        try:
            with np.load(file, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as error:
            raise DatasetError(f"cannot read {file}: {error}", path=file) from None
        if set(arrays) != set(manifest["keys"]):
            raise DatasetError(
                f"{file} holds {sorted(arrays)}, but its manifest lists {sorted(manifest['keys'])}",
                path=file,
            )
        yield arrays


def _read_manifest(path: str | os.PathLike) -> tuple[dict, Path]:
    path = Path(path)
    if path.is_dir():
        manifest_path = path / MANIFEST
    elif path.name.endswith(".json"):
        manifest_path = path
    else:
        manifest_path = manifest_beside(path)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(
            f"no manifest {manifest_path}: {path} is not a finished gemma-turns output (the run "
            "that wrote it did not finish, or the files were moved apart)",
            path=manifest_path,
        ) from None
    except (OSError, ValueError) as error:
        raise DatasetError(
            f"cannot read the manifest {manifest_path}: {error}", path=manifest_path
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(
            f"{manifest_path} is not a gemma-turns arrays manifest", path=manifest_path
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{manifest_path} has format version {manifest.get('format_version')}; this "
            f"gemma-turns reads version {FORMAT_VERSION}",
            path=manifest_path,
        )
    return manifest, manifest_path.parent


def _sha256_or_none(path: Path) -> str | None:
    try:
        return _sha256(path)
    except OSError:
        return None
