"""``gemma-turns validate --tokenizer MODEL FILE...``: every broken sequence, where and why.

Inputs, by name:
    OUT.npz          arrays written by ``encode -o`` (input_ids, attention_mask, loss_mask,
                     segment_ids when packed, targets when shifted); OUT.manifest.json beside
                     it, when present, gives the expected ending, the loss-mask options and
                     the tokenizer's sha256
    DIR              a directory of shards (manifest.json, shard-00000.npz, ...)
    X.npy            a 1-D (one sequence) or 2-D (rows) integer array
    anything else    JSON lines: a list of ids, or {"input_ids": [...], "loss_mask": [...]}
                     ('-' reads standard input)

Exit codes: 0 every sequence is valid; 1 some sequence is invalid; 2 usage or I/O error (a
missing or corrupt file, a line that is no token sequence), which wins over 1.
"""

from __future__ import annotations

__all__ = ["add_check_options", "check_options", "manifest_options", "open_source", "register", "run"]

import argparse
import json
import os
import sys
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..dataset import manifest_beside
from ..validator import EXPECTED_ENDINGS, validate
from .common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    load_tokenizer,
    open_input,
    positive_int,
)

CHUNK_ROWS = 4096
DEFAULT_MAX_FINDINGS = 100


class InputError(CommandError):
    """One input cannot be read: reported, the other inputs are still checked, exit code 2."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check token sequences: layout, masks, canonical tokenization",
        description="Check every sequence of .npz files written by encode (with their "
        "manifest), .npy arrays, or JSON lines of id lists, and report each finding with "
        "the sequence, the token position, the rule and the decoded context. Exit code 0 if "
        "all are valid, 1 if any is invalid, 2 for usage or I/O errors.",
    )
    parser.add_argument("inputs", nargs="+", metavar="FILE", help=".npz, shard directory, .npy, or JSONL ('-': stdin)")
    parser.add_argument("--tokenizer", required=True, metavar="MODEL", help="SentencePiece tokenizer.model")
    add_check_options(parser)
    parser.add_argument("--json", action="store_true", help="one JSON line per finding on stdout; the summary goes to stderr")
    parser.add_argument(
        "--max-findings",
        type=int,
        default=DEFAULT_MAX_FINDINGS,
        metavar="N",
        help=f"list at most N findings in all (default {DEFAULT_MAX_FINDINGS}; 0: no limit); every finding is counted",
    )
    parser.add_argument(
        "--no-canonical",
        dest="canonical",
        action="store_false",
        help="skip the canonical-tokenization rule (re-encoding every text run: the slow rule)",
    )
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N", help="SentencePiece threads for the canonical rule")
    parser.set_defaults(run=run)


def add_check_options(parser) -> None:
    """What the sequences must be: shared with ``inspect``."""
    parser.add_argument(
        "--expect",
        choices=("inference", "training", "pt"),
        default=None,
        help="inference: chat ending with the generation prompt; training: chat ending with "
        "a closed model turn; pt: [BOS] text [EOS]. Default: the manifest's mode, else any "
        "ending the encoder makes",
    )
    parser.add_argument(
        "--train-on",
        choices=("all", "last"),
        default=None,
        help="the model turns the loss mask covers (default: the manifest's, else any legal mask)",
    )
    parser.add_argument(
        "--train-newline",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the loss mask covers the \\n after each trained <end_of_turn> "
        "(default: the manifest's, else either)",
    )


# -- inputs -------------------------------------------------------------------------------------


@dataclass
class Chunk:
    """Rows of one input, with their masks and their indices in the input."""

    ids: object  # 2-D array, or a list of 1-D arrays
    indices: np.ndarray
    loss_mask: object = None
    attention_mask: object = None
    segment_ids: object = None
    source: object = None  # callable (row, position) -> source line, or None


@dataclass
class Source:
    """One input: its chunks, what its manifest says, and warnings for the user."""

    path: str
    chunks: Iterator[Chunk]
    manifest: dict | None = None
    warnings: list[str] = field(default_factory=list)


def open_source(path: str, tokenizer) -> Source:
    """The chunks of the input at ``path``; raises InputError if it cannot be read."""
    if path != "-" and os.path.isdir(path):
        return _shards(Path(path), tokenizer)
    if path.endswith(".npz"):
        manifest = _manifest_of(Path(path))
        source = Source(path, iter(()), manifest)
        source.chunks = _npz_chunks(Path(path), 0, source)
        _check_manifest(source, tokenizer)
        return source
    if path.endswith(".npy"):
        return Source(path, _npy_chunks(path))
    return Source(path, _jsonl_chunks(path))


def _shards(folder: Path, tokenizer) -> Source:
    manifest = _read_manifest(folder / "manifest.json")
    names = []
    if manifest is not None and isinstance(manifest.get("files"), list):
        names = [entry.get("name") for entry in manifest["files"] if isinstance(entry, dict)]
    if not names or not all(isinstance(name, str) for name in names):
        names = sorted(p.name for p in folder.glob("*.npz"))
    if not names:
        raise InputError(f"{folder} is a directory without .npz shards")
    source = Source(str(folder), iter(()), manifest)

    def chunks():
        first = 0
        for name in names:
            rows = 0
            for chunk in _npz_chunks(folder / name, first, source):
                rows = int(chunk.indices[-1]) + 1 - first if len(chunk.indices) else rows
                yield chunk
            first += rows

    source.chunks = chunks()
    _check_manifest(source, tokenizer)
    return source


def _manifest_of(path: Path) -> dict | None:
    beside = manifest_beside(path)
    if beside.exists():
        return _read_manifest(beside)
    shared = path.parent / "manifest.json"  # a shard of a directory
    return _read_manifest(shared) if shared.exists() else None


def _read_manifest(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the manifest {path}: {error}") from None
    if not isinstance(value, dict):
        raise InputError(f"the manifest {path} is not a JSON object")
    return value


def _check_manifest(source: Source, tokenizer) -> None:
    manifest = source.manifest
    if manifest is None:
        return
    tok = manifest.get("tokenizer")
    sha = tok.get("sha256") if isinstance(tok, dict) else manifest.get("tokenizer_sha256")
    if isinstance(sha, str) and sha != tokenizer.sha256:
        source.warnings.append(
            f"the manifest says these ids were made with the tokenizer sha256 {sha[:12]}..., "
            f"but --tokenizer is {tokenizer.sha256[:12]}...: expect findings everywhere if it "
            "is another model"
        )
    arrays = manifest.get("array_options") or {}
    if isinstance(arrays, dict) and arrays.get("truncation") == "truncate":
        source.warnings.append(
            "the manifest says truncation='truncate': rows cut short end inside a turn and "
            "are reported (unclosed_turn, bad_ending)"
        )


def manifest_options(manifest: dict | None) -> dict:
    """validate() keywords from a manifest's encode options (empty without one)."""
    if not manifest:
        return {}
    options = manifest.get("encode_options") or manifest.get("options") or {}
    if not isinstance(options, dict):
        return {}
    out: dict = {}
    mode = options.get("mode")
    if mode in EXPECTED_ENDINGS:
        out["expect"] = mode
    if mode == "inference":
        prompt = options.get("add_generation_prompt")
        out["endings"] = {
            True: ["generation_prompt"],
            False: ["model_turn", "user_turn"],
        }.get(prompt, ["generation_prompt", "model_turn"])  # None: a prompt after a user turn
    if mode == "pt" and options.get("add_eos") is False:
        out["endings"] = ["text"]
    if options.get("train_on") in ("all", "last"):
        out["train_on"] = options["train_on"]
    if isinstance(options.get("train_newline"), bool):
        out["train_newline"] = options["train_newline"]
    return out


def _npz_chunks(path: Path, first: int, source: Source) -> Iterator[Chunk]:
    arrays = _load_npz(path)
    ids = arrays["input_ids"]
    if ids.ndim == 1:
        arrays = {key: value[None] if value.ndim == 1 else value for key, value in arrays.items()}
        ids = arrays["input_ids"]
    if ids.ndim != 2:
        raise InputError(f"{path}: input_ids must be a 2-D array of rows, got shape {ids.shape}")
    for key in ("attention_mask", "loss_mask", "segment_ids", "targets"):
        if key in arrays and arrays[key].shape != ids.shape:
            raise InputError(f"{path}: {key} has shape {arrays[key].shape}, input_ids {ids.shape}")
    loss = arrays.get("loss_mask")
    attention = arrays.get("attention_mask")
    segments = arrays.get("segment_ids")
    if "targets" in arrays:
        source.warnings.append(
            f"{path.name} holds shifted rows (input_ids and targets): each sequence is rebuilt "
            "as its inputs plus its last target, and positions count that sequence"
        )
        ids, loss, attention, segments = _unshift(ids, arrays["targets"], loss, attention, segments)
    line_table = arrays.get("segment_source_line" if segments is not None else "source_line")
    for lo in range(0, len(ids), CHUNK_ROWS):
        hi = min(len(ids), lo + CHUNK_ROWS)
        yield Chunk(
            ids=ids[lo:hi],
            indices=np.arange(first + lo, first + hi),
            loss_mask=None if loss is None else loss[lo:hi],
            attention_mask=None if attention is None else attention[lo:hi],
            segment_ids=None if segments is None else segments[lo:hi],
            source=_source_lines(line_table, segments, lo),
        )


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise InputError(f"cannot read {str(path)!r}: no such file") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise InputError(f"{path} is not a readable .npz file ({error})") from None
    if "input_ids" not in arrays:
        raise InputError(f"{path} has no input_ids array (it has {sorted(arrays)})")
    for key, value in arrays.items():
        if key != "source_line" and value.dtype.kind not in "iub":
            raise InputError(f"{path}: {key} must hold integers, got {value.dtype}")
    return arrays


def _unshift(ids, targets, loss, attention, segments):
    """Rows of full sequences from shifted rows: each segment's inputs and its last target.

    A shifted row stores ``inputs = seq[:-1]`` and ``targets = seq[1:]`` with the loss mask
    aligned with the targets, so the full sequence is ``inputs + [targets[-1]]`` and its loss
    mask is ``[0] + loss``.
    """
    rows, width = ids.shape
    new_rows, new_loss, new_segments = [], [], []
    for r in range(rows):
        if segments is not None:
            spans = _runs(segments[r])
        else:
            present = np.flatnonzero(attention[r] != 0) if attention is not None else np.arange(width)
            spans = [(int(present[0]), int(present[-1]) + 1, 1)] if len(present) else []
        parts, masks, labels = [], [], []
        for a, b, label in spans:
            parts.append(np.append(ids[r, a:b], targets[r, b - 1]))
            masks.append(np.append(0, loss[r, a:b]) if loss is not None else np.zeros(b - a + 1, np.int64))
            labels.append(np.full(b - a + 1, label))
        new_rows.append(np.concatenate(parts) if parts else np.zeros(0, np.int64))
        new_loss.append(np.concatenate(masks) if masks else np.zeros(0, np.int64))
        new_segments.append(np.concatenate(labels) if labels else np.zeros(0, np.int64))
    size = max((len(row) for row in new_rows), default=0)
    pad = 0

    def stack(values, fill):
        out = np.full((rows, size), fill, dtype=np.int64)
        for r, value in enumerate(values):
            out[r, : len(value)] = value
        return out

    full_ids = stack(new_rows, pad)
    full_segments = stack(new_segments, 0)
    full_loss = stack(new_loss, 0) if loss is not None else None
    if segments is not None:
        return full_ids, full_loss, (full_segments > 0).astype(np.int8), full_segments
    return full_ids, full_loss, (full_segments > 0).astype(np.int8), None


def _runs(segment_row) -> list[tuple[int, int, int]]:
    change = np.flatnonzero(np.diff(segment_row)) + 1
    bounds = np.concatenate([[0], change, [len(segment_row)]])
    return [(int(a), int(b), int(segment_row[a])) for a, b in zip(bounds, bounds[1:]) if segment_row[a] > 0]


def _source_lines(table, segments, lo):
    if table is None or table.dtype.kind not in "iu":
        return None

    def lookup(row: int, position: int):
        r = lo + row
        if r >= len(table):
            return None
        if table.ndim == 1:
            return int(table[r])
        if segments is None:
            return None
        width = segments.shape[1]
        segment = int(segments[r, min(position, width - 1)])
        if segment < 1 and position > 0:
            segment = int(segments[r, min(position - 1, width - 1)])
        if 1 <= segment <= table.shape[1]:
            value = int(table[r, segment - 1])
            return value if value >= 0 else None
        return None

    return lookup


def _npy_chunks(path: str) -> Iterator[Chunk]:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"cannot read {path!r}: no such file") from None
    except (OSError, ValueError, EOFError) as error:
        raise InputError(f"{path} is not a readable .npy file ({error})") from None
    if array.dtype.kind not in "iu" or array.ndim not in (1, 2):
        raise InputError(
            f"{path}: expected a 1-D or 2-D integer array of ids, got {array.ndim}-D {array.dtype}"
        )
    if array.ndim == 1:
        array = array[None]
    for lo in range(0, len(array), CHUNK_ROWS):
        hi = min(len(array), lo + CHUNK_ROWS)
        yield Chunk(ids=array[lo:hi], indices=np.arange(lo, hi))


def _jsonl_chunks(path: str) -> Iterator[Chunk]:
    """JSON lines; sequence ``k`` is line ``k + 1`` (blank lines keep their index)."""
    problems: list[str] = []
    with open_input(path) as stream:
        rows, losses, attentions, indices = [], [], [], []
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                ids, loss, attention = _jsonl_record(raw)
            except ValueError as error:
                problems.append(f"line {number}: {error}")
                continue
            rows.append(ids)
            losses.append(loss)
            attentions.append(attention)
            indices.append(number - 1)
            if len(rows) == CHUNK_ROWS:
                yield _jsonl_chunk(rows, losses, attentions, indices)
                rows, losses, attentions, indices = [], [], [], []
        if rows:
            yield _jsonl_chunk(rows, losses, attentions, indices)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InputError(
            f"{len(problems)} line(s) are not token sequences ({shown}). Each line must be a "
            'list of ids, or {"input_ids": [...], "loss_mask": [...]}'
        )


def _jsonl_record(raw: bytes):
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"not valid JSON ({error})") from None
    loss = attention = None
    if isinstance(value, dict):
        if "input_ids" not in value:
            raise ValueError(f"an object without input_ids (keys {sorted(value)[:5]})")
        ids = value["input_ids"]
        loss = value.get("loss_mask")
        attention = value.get("attention_mask")
    else:
        ids = value
    ids = _int_list(ids, "input_ids")
    loss = None if loss is None else _int_list(loss, "loss_mask")
    attention = None if attention is None else _int_list(attention, "attention_mask")
    if attention is not None and len(attention) != len(ids):
        raise ValueError(f"attention_mask has {len(attention)} values for {len(ids)} input_ids")
    return ids, loss, attention


def _int_list(value, name: str) -> np.ndarray:
    if not isinstance(value, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        raise ValueError(f"{name} must be a list of integers")
    try:
        return np.array(value, dtype=np.int64)
    except OverflowError:
        raise ValueError(f"{name} has an integer too large for an id") from None


def _jsonl_chunk(rows, losses, attentions, indices) -> Chunk:
    # a line without a mask has None in its place: its mask is not checked, its padding inferred
    return Chunk(
        ids=rows,
        indices=np.array(indices, dtype=np.int64),
        loss_mask=losses if any(loss is not None for loss in losses) else None,
        attention_mask=attentions if any(a is not None for a in attentions) else None,
    )


# -- the command ----------------------------------------------------------------------------


def run(args) -> int:
    if args.max_findings < 0:
        raise CommandError(f"--max-findings must be 0 (no limit) or more, got {args.max_findings}")
    tokenizer = load_tokenizer(args.tokenizer)
    out = sys.stdout
    summary_stream = sys.stderr if args.json else sys.stdout
    budget = None if args.max_findings == 0 else args.max_findings
    listed = 0
    totals = Counter()
    sequences = tokens = invalid = 0
    failed = False
    for path in args.inputs:
        file_counts = Counter()
        file_sequences = file_tokens = file_invalid = 0
        warned = 0
        source = None
        try:
            source = open_source(path, tokenizer)
            options = check_options(args, source.manifest)
            for chunk in source.chunks:
                warned = _warn(path, source, warned)
                remaining = None if budget is None else max(0, budget - listed)
                report = _validate_chunk(chunk, tokenizer, options, args, remaining)
                for finding in report.findings:
                    row = finding.sequence
                    line = chunk.source(row, finding.position) if chunk.source else None
                    finding = replace(finding, sequence=int(chunk.indices[row]))
                    out.write(_render(path, finding, line, as_json=args.json))
                listed += len(report.findings)
                file_counts.update(report.counts)
                file_sequences += report.sequences
                file_tokens += report.tokens
                file_invalid += report.invalid
        except CommandError as error:
            failed = True
            message = str(error) if path in str(error) else f"{path}: {error}"
            print(f"gemma-turns validate: {message}", file=sys.stderr)
            if not file_sequences:
                continue  # nothing of this input was checked
        finally:
            if source is not None:
                _warn(path, source, warned)
        totals.update(file_counts)
        sequences += file_sequences
        tokens += file_tokens
        invalid += file_invalid
        print(_summary(path, file_sequences, file_tokens, file_invalid, file_counts), file=summary_stream)
    if len(args.inputs) > 1:
        print(_summary("all inputs", sequences, tokens, invalid, totals), file=summary_stream)
    total = sum(totals.values())
    if total > listed:
        print(
            f"{total - listed} findings not listed (--max-findings {args.max_findings}); "
            "the counts above include them",
            file=summary_stream,
        )
    if failed:
        return EXIT_USAGE
    return EXIT_INVALID if total else EXIT_OK


def _warn(path: str, source: Source, already: int) -> int:
    for warning in source.warnings[already:]:
        print(f"gemma-turns validate: {path}: warning: {warning}", file=sys.stderr)
    return len(source.warnings)


def check_options(args, manifest) -> dict:
    options = manifest_options(manifest)
    if args.expect is not None:
        options["expect"] = args.expect
        options.pop("endings", None)  # the flag asks for that mode's own ending
    if args.train_on is not None:
        options["train_on"] = args.train_on
    if args.train_newline is not None:
        options["train_newline"] = args.train_newline
    # Options nobody stated are unknown: any legal loss-mask shape passes.
    options.setdefault("train_on", None)
    options.setdefault("train_newline", None)
    return options


def _validate_chunk(chunk: Chunk, tokenizer, options: dict, args, remaining):
    try:
        return validate(
            chunk.ids,
            tokenizer,
            loss_mask=chunk.loss_mask,
            attention_mask=chunk.attention_mask,
            segment_ids=chunk.segment_ids,
            canonical=args.canonical,
            max_findings=remaining,
            num_threads=args.threads,
            **options,
        )
    except ValueError as error:  # arrays that do not fit together: the input is malformed
        raise InputError(f"sequences {chunk.indices[0]}..{chunk.indices[-1]}: {error}") from None


def _render(path: str, finding, line, *, as_json: bool) -> str:
    if as_json:
        record = {"file": path, **finding.to_dict()}
        if line is not None:
            record["source_line"] = line
        return json.dumps(record, ensure_ascii=False) + "\n"
    token = "end of sequence" if finding.token_id is None else f"id {finding.token_id}"
    origin = f" (source line {line})" if line is not None else ""
    text = (
        f"{path}: sequence {finding.sequence}{origin}, position {finding.position} ({token}): "
        f"{finding.rule}: {finding.message}\n"
    )
    if finding.expected:
        text += f"    expected: {finding.expected}\n"
    return text + f"    context:  {finding.context}\n"


def _summary(label: str, sequences: int, tokens: int, invalid: int, counts: Counter) -> str:
    text = f"{label}: {sequences} sequences ({tokens} tokens): {sequences - invalid} valid, {invalid} invalid"
    if counts:
        text += "; findings by rule: " + ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items(), key=lambda i: (-i[1], i[0])))
    return text


