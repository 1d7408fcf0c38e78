"""``gemma-turns validate --tokenizer MODEL FILE...``: every broken sequence, where and why.

Inputs, by name:
    OUT.npz          arrays written by ``encode -o`` (input_ids, attention_mask, loss_mask,
                     segment_ids when packed, targets when shifted); OUT.manifest.json beside
                     it, when present, gives the expected ending, the loss-mask options and
                     the tokenizer's sha256
    DIR              a directory of shards (manifest.json, shard-00000.npz, ...)
    X.npy            a 1-D (one sequence) or 2-D (rows) integer array
    X.parquet        rows with list<int> columns (needs pyarrow: the parquet extra)
    anything else    JSON lines: a list of ids, or {"input_ids": [...], "loss_mask": [...]}
                     ('-' reads standard input)
JSON objects, Parquet rows and npz arrays may use other tools' keys (labels, assistant_masks,
completion_mask, position_ids restarts, seq_lengths, cu_seqlens, an attention mask numbered
1..k); what was read as what is said on stderr, and a mask-like key not read is a warning.

Exit codes: 0 every sequence is valid; 1 some sequence is invalid; 2 usage or I/O error (a
missing or corrupt file, a line that is no token sequence), which wins over 1.
"""

from __future__ import annotations

__all__ = ["add_check_options", "check_options", "manifest_options", "open_source", "register", "run"]

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

from ..arrays import ArrayProblem
from ..errors import DatasetError
from ..findings import TOLERANCES
from ..options import validate_keywords
from ..readers import Chunk, Source, open_sequences
from ..validator import Finding, validate
from .common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    OutputError,
    load_tokenizer,
    positive_int,
    TOKENIZER_HELP,
)

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
    parser.add_argument("--tokenizer", required=True, metavar="MODEL", help=TOKENIZER_HELP)
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
    parser.add_argument(
        "--tolerate",
        action="append",
        choices=sorted(TOLERANCES),
        default=[],
        metavar="DIFFERENCE",
        help="accept a known difference of another tokenizer: hf_space_runs (runs of 17+ spaces "
        "split as Hugging Face's fast Gemma tokenizer splits them); repeatable",
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
    parser.add_argument(
        "--checkpoint",
        metavar="NAME",
        default=None,
        help="Gemma 4: the model the generation prompt is for (e2b ... 31b), which decides its "
        "form (default: the manifest's, else any form)",
    )


# -- inputs -------------------------------------------------------------------------------------


def open_source(path: str, tokenizer) -> Source:
    """The sequences of the input at ``path`` (see :mod:`gemma_turns.readers`), with its
    integrity problems among the warnings (for ``inspect``); raises InputError if it cannot
    be read."""
    source = _open(path, tokenizer)
    source.warnings[:0] = [f"integrity: {problem}" for problem in source.problems]
    source.chunks = _reading(path, source.chunks)
    return source


def _open(path: str, tokenizer) -> Source:
    try:
        return open_sequences(path, tokenizer_sha256=tokenizer.sha256)
    except DatasetError as error:
        raise InputError(str(error)) from None


def _reading(path: str, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """The chunks, with a read failure as InputError (the file is reported, the others go on)."""
    try:
        yield from chunks
    except DatasetError as error:
        raise InputError(str(error)) from None


def manifest_options(manifest: dict | None) -> dict:
    """validate() keywords from a manifest's encode options (empty without one)."""
    if not isinstance(manifest, dict):
        return {}
    return validate_keywords(manifest.get("encode_options") or manifest.get("options"))


# -- the command ----------------------------------------------------------------------------


def run(args) -> int:
    if args.max_findings < 0:
        raise CommandError(f"--max-findings must be 0 (no limit) or more, got {args.max_findings}")
    tokenizer = load_tokenizer(args.tokenizer)
    check_checkpoint(args, tokenizer)
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
            source = _open(path, tokenizer)
            for problem in source.problems:  # integrity first
                failed = True
                print(f"gemma-turns validate: {path}: integrity: {problem}", file=sys.stderr)
            for notice in source.notices:
                print(f"gemma-turns validate: {path}: notice: {notice}", file=sys.stderr)
            options = check_options(args, source.manifest)
            notes: list[str] = []
            for chunk in _reading(path, source.chunks):
                warned = _warn(path, source, warned)
                remaining = None if budget is None else max(0, budget - listed)
                report = _validate_chunk(chunk, tokenizer, options, args, remaining)
                for note in report.notes:
                    if note not in notes:
                        notes.append(note)
                        print(f"gemma-turns validate: {path}: {note}", file=sys.stderr)
                if file_counts.get("foreign_ids") and report.counts.get("foreign_ids"):
                    report = _fold_foreign(report)  # one file-level finding, not one per chunk
                stored = [_array_finding(problem, chunk) for problem in chunk.checks]
                room = None if remaining is None else max(0, remaining - len(report.findings))
                shown = sorted(
                    [*report.findings, *stored[:room]], key=lambda f: (f.sequence, f.position)
                )
                for finding in shown:
                    row = finding.sequence
                    line = chunk.source(row, finding.position) if chunk.source else None
                    origin = (
                        chunk.source_file(row, finding.position) if chunk.source_file else None
                    )
                    finding = replace(finding, sequence=int(chunk.indices[row]))
                    out.write(_render(path, finding, line, as_json=args.json, origin=origin))
                listed += len(shown)
                file_counts.update(report.counts)
                file_counts.update(finding.rule for finding in stored)
                file_sequences += report.sequences
                file_tokens += report.tokens
                seen = {finding.sequence for finding in report.findings}
                file_invalid += report.invalid + len({f.sequence for f in stored} - seen)
        except OutputError:
            raise  # standard output is gone: nothing more can be reported
        except CommandError as error:
            failed = True
            message = str(error) if path in str(error) else f"{path}: {error}"
            print(f"gemma-turns validate: {message}", file=sys.stderr)
            if not file_sequences:
                continue  # nothing of this input was checked
        finally:
            if source is not None:
                _warn(path, source, warned)
                read_as = {key: what for key, what in source.read_keys.items() if what}
                if read_as:
                    keys = ", ".join(f"{key} as {what}" for key, what in read_as.items())
                    print(f"gemma-turns validate: {path}: read {keys}", file=sys.stderr)
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


def _fold_foreign(report):
    """A later chunk's foreign_ids finding folded into the file's first: not listed again,
    not counted again (its sequences still count as invalid)."""
    counts = dict(report.counts)
    counts.pop("foreign_ids")
    findings = tuple(f for f in report.findings if f.rule != "foreign_ids")
    return replace(report, findings=findings, counts=counts)


def _array_finding(problem: ArrayProblem, chunk: Chunk) -> Finding:
    """A stored-array problem as a validator Finding, its context the stored ids around it."""
    token = int(chunk.stored_ids[problem.row, problem.position])
    return Finding(
        rule=problem.rule,
        sequence=problem.row,
        position=problem.position,
        token_id=token,
        expected=problem.expected,
        message=problem.message,
        context=f"{_array_name(problem.rule)}[{problem.row}, {problem.position}] = {problem.value}",
    )


def _array_name(rule: str) -> str:
    return "attention_mask" if rule.startswith("attention") else "position_ids"


def _warn(path: str, source: Source, already: int) -> int:
    for warning in source.warnings[already:]:
        print(f"gemma-turns validate: {path}: warning: {warning}", file=sys.stderr)
    return len(source.warnings)


def check_checkpoint(args, tokenizer) -> None:
    """A --checkpoint the model's dialect does not know is a usage error, before any work."""
    if args.checkpoint is not None:
        try:
            tokenizer.dialect.checkpoint(args.checkpoint)
        except ValueError as error:
            raise CommandError(str(error)) from None


def check_options(args, manifest) -> dict:
    options = manifest_options(manifest)
    if args.expect is not None:
        options["expect"] = args.expect
        options.pop("endings", None)  # the flag asks for that mode's own ending
    if args.train_on is not None:
        options["train_on"] = args.train_on
    if args.train_newline is not None:
        options["train_newline"] = args.train_newline
    if args.checkpoint is not None:
        options["checkpoint"] = args.checkpoint
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
            labels=chunk.labels,
            attention_mask=chunk.attention_mask,
            segment_ids=chunk.segment_ids,
            canonical=args.canonical,
            tolerate=frozenset(args.tolerate),
            max_findings=remaining,
            num_threads=args.threads,
            **options,
        )
    except ValueError as error:  # arrays that do not fit together: the input is malformed
        raise InputError(f"sequences {chunk.indices[0]}..{chunk.indices[-1]}: {error}") from None


def _render(path: str, finding, line, *, as_json: bool, origin: str | None = None) -> str:
    """One finding; ``line`` and ``origin`` (its input file, when the arrays were made from
    several) say where its sequence came from."""
    if as_json:
        record = {"file": path, **finding.to_dict()}
        if origin is not None:
            record["source_file"] = origin
        if line is not None:
            record["source_line"] = line
        return json.dumps(record, ensure_ascii=False) + "\n"
    token = "end of sequence" if finding.token_id is None else f"id {finding.token_id}"
    where = f"{origin} line" if origin is not None else "line"
    origin = f" (source {where} {line})" if line is not None else ""
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


