"""The seam between gemma-turns and a distributed engine; no engine is imported here.

    driver   plan_chunks: inputs -> chunks (byte ranges that start at a line), each input
             hashed once for the manifest
             launch (the engine's part): every chunk through a ChunkWorker, on any worker,
             in any order, retried when a worker dies
             write_chunked: merge the results into one output (the store's partial
             directory, lock and atomic rename), one manifest written last
    worker   ChunkWorker(job): loads the tokenizer once; called on a chunk, it encodes its
             lines with the local pipeline (fit_lines, the truncation policy, rows or packed
             rows) and writes its shards, ``shard-CHUNK-PART.npz``, into the output's
             partial directory; it returns the shards' entries (name, rows, sha256, bytes,
             keys), its counts and its rejects entries

An engine adapter only has to run ``ChunkWorker(job)(chunk.to_row())`` once per chunk and
hand back the results (:mod:`gemma_turns.engines.ray_engine` does it with Ray Data's
``map_batches``; an Apache Beam adapter is ``beam.Create(rows) | beam.ParDo(DoFn)`` whose
``setup`` builds the ChunkWorker).

Guarantees. A shard's name is a function of its chunk (and the part in it), so a retried
chunk overwrites what a killed attempt wrote instead of adding to it; a shard is written
under a hidden name and renamed when complete. The driver lists only the shards that the
results name (each checked on disk with its size), removes anything else from the partial
directory, counts each chunk's result once, and writes the manifest last, then renames the
directory into place: a run killed at any point leaves no manifest naming missing or partial
shards, and the next run into the output removes its leftovers.

Packing (``pack_scope``): ``"chunk"`` packs each chunk's records on its worker; each chunk
ends with a few partly filled rows, so the fill is a little lower than one pass over the
whole input. ``"global"``: the workers only encode, and the driver packs all records in
input order in one pass and writes the shards: the local run's rows, exactly, at the cost
of every id passing through the driver.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..dataset import Assembler, Written, check_inputs
from ..encoder import Encoding, GemmaTokenizer
from ..errors import DatasetError, EmptyInputError, SequenceTooLongError
from ..fit import fit_lines
from ..jsonl import MAX_RECORD_BYTES, read_lines
from ..options import ArrayOptions, EncodeOptions
from ..records import Counts
from ..store import ArrayWriter, RunOutput, build_manifest, check_paths, write_npz

__all__ = ["Chunk", "ChunkWorker", "Job", "plan_chunks", "write_chunked"]

CHUNK_BYTES = 16 << 20  # input bytes per chunk: one worker call
PACK_SCOPES = ("chunk", "global")


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes ``[start, end)`` of input ``file`` (its index in the run), starting at line
    ``first_line``. ``index`` orders chunks in input order and names their shards."""

    index: int
    file: int
    path: str
    start: int
    end: int
    first_line: int

    def to_row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row) -> Chunk:
        return cls(**{name: _plain(row[name]) for name in cls.__slots__})


def _plain(value):
    """A numpy scalar (how engines hand rows back) as the Python value."""
    return value.item() if isinstance(value, np.generic) else value


def plan_chunks(
    inputs: Sequence[str | os.PathLike], *, chunk_bytes: int = CHUNK_BYTES
) -> tuple[list[Chunk], list[dict]]:
    """Cut each input into chunks of about ``chunk_bytes`` that start at a line start, and
    describe each input for the manifest (``path``, ``sha256``, ``bytes``). Reads every
    input once, on the driver. DatasetError names an input that cannot be read."""
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be a positive integer, got {chunk_bytes!r}")
    names = check_inputs(inputs)
    if "-" in names:
        raise ValueError(
            "a distributed run reads its inputs in chunks on several workers: standard input "
            "('-') cannot be split; save it to a file first"
        )
    chunks, described = [], []
    for file, name in enumerate(names):
        digest, position, line, start, first = hashlib.sha256(), 0, 0, 0, 1
        where = os.path.abspath(name)  # what workers open, from their own folders
        try:
            with open(name, "rb") as handle:
                for raw in iter(lambda: handle.readline(1 << 20), b""):
                    digest.update(raw)
                    position += len(raw)
                    if raw.endswith(b"\n"):
                        line += 1
                        if position - start >= chunk_bytes:
                            chunks.append(Chunk(len(chunks), file, where, start, position, first))
                            start, first = position, line + 1
        except OSError as error:
            raise DatasetError(f"cannot read {name!r}: {error.strerror}", path=name) from None
        if position > start or start == 0:  # the rest (an empty file is one empty chunk)
            chunks.append(Chunk(len(chunks), file, where, start, position, first))
        described.append({"path": name, "sha256": digest.hexdigest(), "bytes": position})
    return chunks, described


@dataclass(frozen=True)
class Job:
    """What every worker needs, as small plain values an engine can ship: the tokenizer
    (its path, which every worker must see, and its sha256, checked when a worker loads it),
    the options, and where the shards go."""

    tokenizer: str
    tokenizer_sha256: str
    dialect: str
    encode_options: dict
    array_options: dict
    work: str  # the output's partial directory, on a file system every worker sees
    names: tuple[str, ...]  # every input of the run, in order
    shard_size: int
    compress: bool = False
    pack_scope: str = "chunk"
    max_record_bytes: int = MAX_RECORD_BYTES
    num_threads: int | None = 1  # SentencePiece threads per worker: one core each

    @property
    def tag_files(self) -> bool:
        return len(self.names) > 1


class ChunkWorker:
    """A worker: the tokenizer loaded once, then any number of chunks encoded.

    ``worker(chunk_row) -> result``: a dict of plain values (``chunk``, ``result`` JSON:
    ``files``, ``counts``, ``problems``, ``rejects``, ``too_long``; and with
    ``pack_scope="global"`` ``encoded``: the kept records' ids and masks as ``.npz`` bytes).
    """

    def __init__(self, job: Job):
        self.job = job
        self.tokenizer = GemmaTokenizer.load(job.tokenizer, dialect=job.dialect)
        if self.tokenizer.sha256 != job.tokenizer_sha256:
            raise DatasetError(
                f"the tokenizer {job.tokenizer} on this worker ({os.uname().nodename}) is not "
                f"the driver's (sha256 {self.tokenizer.sha256[:12]}..., the driver's "
                f"{job.tokenizer_sha256[:12]}...); give every node the same file",
                path=job.tokenizer,
            )
        self.encode_options = EncodeOptions.from_dict(job.encode_options)
        self.array_options = ArrayOptions.from_dict(job.array_options)

    def __call__(self, row) -> dict:
        chunk = Chunk.from_row(row)
        job, rejects, kept = self.job, [], []
        name = job.names[chunk.file] if job.tag_files else None
        result = {"chunk": chunk.index, "files": [], "too_long": None}
        with open(chunk.path, "rb") as handle:
            handle.seek(chunk.start)
            lines = read_lines(
                _Range(handle, chunk.end - chunk.start),
                max_record_bytes=job.max_record_bytes,
                first_line=chunk.first_line,
            )
            try:
                if job.pack_scope == "global":
                    counts = self._encode_only(chunk, lines, name, rejects, kept)
                else:
                    counts = self._write_shards(chunk, lines, rejects, result["files"])
            except SequenceTooLongError as error:
                result["too_long"] = {
                    "length": error.length,
                    "max_length": error.max_length,
                    "record": error.record,
                    "path": job.names[chunk.file],
                }
                counts = Counts()
        counts.input_bytes = chunk.end - chunk.start
        result["counts"] = counts.as_dict()
        result["problems"] = counts.problems
        result["rejects"] = rejects
        return {
            "chunk": chunk.index,
            "result": json.dumps(result, ensure_ascii=False),
            "encoded": _pack_encoded(kept) if job.pack_scope == "global" else b"",
        }

    def _write_shards(self, chunk: Chunk, lines, rejects: list, files: list) -> Counts:
        job, work = self.job, Path(self.job.work)

        def emit(blocks) -> None:
            name = f"shard-{chunk.index:05d}-{len(files):03d}.npz"
            entry = write_npz(work / name, blocks, compress=job.compress)
            files.append({key: entry[key] for key in ("name", "rows", "sha256", "bytes", "keys")})

        assembler = Assembler(
            self.tokenizer,
            encode_options=self.encode_options,
            array_options=self.array_options,
            emit=emit,
            sharded=True,
            block_rows=job.shard_size,
            names=job.names,
            tag_files=job.tag_files,
            reject=rejects.append,
        )
        assembler.feed(chunk.file, lines, num_threads=job.num_threads)
        assembler.finish(empty_file=False)
        return assembler.counts

    def _encode_only(self, chunk: Chunk, lines, name, rejects: list, kept: list) -> Counts:
        counts = Counts()
        fitted = fit_lines(
            self.tokenizer,
            lines,
            encode_options=self.encode_options,
            array_options=self.array_options,
            num_threads=self.job.num_threads,
        )
        for record in fitted:
            counts.add(record, file=name)
            if record.kept:
                kept.append((record.number, record.encoding))
            elif record.kind != "blank":
                report = record.report()
                rejects.append(report if name is None else {"file": name, **report})
        return counts


class _Range:
    """``size`` bytes of a file from where it stands, read by lines (chunks start at lines)."""

    def __init__(self, handle, size: int):
        self.handle = handle
        self.left = size

    def readline(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        limit = self.left if size is None or size < 0 else min(size, self.left)
        raw = self.handle.readline(limit)
        self.left -= len(raw)
        return raw

    def __iter__(self):
        return iter(self.readline, b"")


def _pack_encoded(kept: list) -> bytes:
    """The kept records of a chunk as ``.npz`` bytes: lines, lengths, ids, loss masks."""
    buffer = io.BytesIO()
    lengths = np.array([len(e) for _, e in kept], dtype=np.int64)
    np.savez(
        buffer,
        lines=np.array([n for n, _ in kept], dtype=np.int64),
        lengths=lengths,
        ids=np.concatenate([e.ids for _, e in kept]) if kept else np.zeros(0, np.int32),
        loss_mask=np.concatenate([e.loss_mask for _, e in kept]) if kept else np.zeros(0, np.int8),
    )
    return buffer.getvalue()


def _unpack_encoded(data: bytes) -> Iterable[tuple[int, Encoding]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        lines, lengths = arrays["lines"], arrays["lengths"]
        ids, masks = arrays["ids"], arrays["loss_mask"]
    ends = np.cumsum(lengths)
    starts = ends - lengths
    for line, start, end in zip(lines.tolist(), starts.tolist(), ends.tolist(), strict=True):
        yield line, Encoding(ids[start:end], masks[start:end])


Launch = Callable[[Job, list[Chunk]], Iterable[dict]]


def write_chunked(
    tokenizer: GemmaTokenizer,
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    launch: Launch,
    encode_options: EncodeOptions,
    array_options: ArrayOptions,
    shard_size: int,
    rejects: str | os.PathLike | None = None,
    compress: bool = False,
    chunk_bytes: int = CHUNK_BYTES,
    pack_scope: str = "chunk",
    max_record_bytes: int = MAX_RECORD_BYTES,
    engine: dict | None = None,
    on_result: Callable[[Counts], None] | None = None,
) -> Written:
    """The driver: plan chunks, ``launch`` them (the engine runs a ChunkWorker on each and
    yields the results, in any order), merge the results into the shard directory
    ``output`` with one manifest. Same output format, counts and rejects as
    :func:`gemma_turns.dataset.write_dataset` with ``shard_size``; raises what it raises."""
    array_options.check_mode(encode_options.mode)
    if pack_scope not in PACK_SCOPES:
        raise ValueError(f"pack_scope must be one of {PACK_SCOPES}, got {pack_scope!r}")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    if array_options.max_length is None:
        raise ValueError(
            "a distributed run writes shards: it needs a max_length, so that every shard has "
            "the same width"
        )
    if tokenizer.path is None:
        raise ValueError(
            "a distributed run loads the tokenizer on every worker from its file: load it with "
            "GemmaTokenizer.load(path)"
        )
    names = check_inputs(inputs)
    check_paths(inputs=names, output=output, sharded=True, rejects=rejects)
    chunks, described = plan_chunks(names, chunk_bytes=chunk_bytes)
    target = ArrayWriter(output, sharded=True, compress=compress)
    with RunOutput(target, rejects) as run:
        reject_file = run.rejects
        job = Job(
            tokenizer=os.path.abspath(tokenizer.path),
            tokenizer_sha256=tokenizer.sha256,
            dialect=tokenizer.dialect.name,
            encode_options=encode_options.as_dict(),
            array_options=array_options.as_dict(),
            work=os.path.abspath(target.work),  # workers run elsewhere, in other folders
            names=tuple(names),
            shard_size=shard_size,
            compress=compress,
            pack_scope=pack_scope,
            max_record_bytes=max_record_bytes,
        )
        merged = _Merge(chunks, tokenizer, job, target, encode_options, array_options, on_result)
        for row in launch(job, chunks):
            merged.add(row)
        counts = merged.finish(reject_file)
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
            engine={
                **(engine or {}),
                "chunks": len(chunks),
                "chunk_bytes": chunk_bytes,
                "pack_scope": pack_scope,
            },
        )
        manifest_path, files = run.commit(manifest)
    return Written(manifest_path, files, manifest, counts)


class _Merge:
    """The driver's side: each chunk's result taken once, in any order; merged in chunk
    order (counts, rejects, shards), or packed in one pass (``pack_scope="global"``), which
    needs the results in chunk order and waits for the missing ones."""

    def __init__(self, chunks, tokenizer, job, target, encode_options, array_options, on_result):
        self.chunks = chunks
        self.tokenizer = tokenizer
        self.job = job
        self.target = target
        self.results: dict[int, dict] = {}
        self.counts = Counts()
        self.on_result = on_result
        self.next = 0  # global packing: the next chunk to pack
        self.waiting: dict[int, bytes] = {}
        self.assembler = None
        if job.pack_scope == "global":
            self.assembler = Assembler(
                tokenizer,
                encode_options=encode_options,
                array_options=array_options,
                emit=target.write,
                sharded=True,
                block_rows=job.shard_size,
                names=job.names,
                tag_files=job.tag_files,
            )

    def add(self, row) -> None:
        index = int(_plain(row["chunk"]))
        result = json.loads(row["result"])
        if not 0 <= index < len(self.chunks) or result["chunk"] != index:
            raise DatasetError(f"a worker returned a result for no chunk of this run ({index})")
        if index in self.results:  # an engine that delivered a retried chunk twice
            if result != self.results[index]:
                raise DatasetError(
                    f"chunk {index} came back twice with different results; run again"
                )
            return
        self.results[index] = result
        part = Counts.from_dict(result["counts"])
        self.counts.merge(part)
        if self.on_result is not None:
            self.on_result(self.counts)
        if self.assembler is not None:
            self.waiting[index] = bytes(row["encoded"])
            while self.next in self.waiting and not self._too_long_before(self.next):
                chunk = self.chunks[self.next]
                for line, encoding in _unpack_encoded(self.waiting.pop(self.next)):
                    self.assembler.place((chunk.file, line), encoding)
                self.next += 1

    def _too_long_before(self, index: int) -> bool:
        return self.results[index]["too_long"] is not None

    def finish(self, reject_file) -> Counts:
        missing = [c.index for c in self.chunks if c.index not in self.results]
        if missing:
            raise DatasetError(
                f"the engine returned no result for chunks {missing[:5]} of {len(self.chunks)}; "
                "nothing written"
            )
        ordered = [self.results[c.index] for c in self.chunks]
        for result in ordered:
            if result["too_long"] is not None:
                error = result["too_long"]
                raise SequenceTooLongError(
                    error["length"],
                    error["max_length"],
                    record=error["record"],
                    path=error["path"] if self.job.tag_files else None,
                )
        counts = Counts()
        for result in ordered:  # again in chunk order, for the first problem lines shown
            part = Counts.from_dict(result["counts"])
            part.problems = result["problems"]
            counts.merge(part)
        if counts.lines == counts.blank:
            raise EmptyInputError(
                f"{' and '.join(self.job.names) if len(self.job.names) < 4 else 'the inputs'} "
                "have no records: empty or only blank lines"
            )
        for result in ordered:
            if reject_file is not None:
                for entry in result["rejects"]:
                    reject_file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        if self.assembler is not None:
            self.assembler.finish()
            counts.rows, counts.tokens, counts.cells = (
                self.assembler.counts.rows,
                self.assembler.counts.tokens,
                self.assembler.counts.cells,
            )
        else:
            for result in ordered:
                self.target.add(result["files"])
            if not self.target.files:  # no record kept: one empty shard, as a local run
                Assembler(
                    self.tokenizer,
                    encode_options=EncodeOptions.from_dict(self.job.encode_options),
                    array_options=ArrayOptions.from_dict(self.job.array_options),
                    emit=self.target.write,
                    sharded=True,
                    block_rows=self.job.shard_size,
                    names=self.job.names,
                    tag_files=self.job.tag_files,
                ).finish()
        self.target.remove_unlisted()
        return counts
