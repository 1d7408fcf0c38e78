"""``gemma-turns inspect --tokenizer MODEL FILE``: one sequence, token by token.

Each line shows the position, the id, the piece, the role of the turn the token is in, the
part of the turn (marker, header, content, ...), the loss mask and the rule of any finding at
that token; coloured when standard output is a terminal. Inputs as for ``validate``. Exit
code 0 when the sequence is valid, 1 when it has findings (listed below the table), 2 for
usage or I/O errors.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import numpy as np

from ..conventions import labels_to_loss
from ..validator import label_tokens, validate
from .common import EXIT_INVALID, EXIT_OK, TOKENIZER_HELP, CommandError, load_tokenizer
from .validate_command import add_check_options, check_checkpoint, check_options, open_source

__all__ = ["register", "run"]

ROLE_COLORS = {"user": "36", "model": "32", "text": "33", "system": "34"}  # cyan, green, yellow, blue
PART_COLORS = {
    "bos": "35",
    "marker": "35",
    "prompt": "35",
    "eos": "35",
    "pad": "2",
    "outside": "31",
    "think": "35",
    "thought": "90",  # grey: the model's reasoning
    "result": "33",  # yellow: what a tool wrote (never trained)
    "declaration": "34",
}
PIECE_WIDTH = 24
PAD_RUN_SHOWN = 2


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show one sequence token by token: position, id, piece, role, mask",
        description="Show one sequence of FILE (.npz, shard directory, .npy or JSONL) token "
        "by token, with its role, loss mask and findings: the view for debugging masks. "
        "Exit code 0 if the sequence is valid, 1 if it has findings, 2 for usage or I/O errors.",
    )
    parser.add_argument("input", metavar="FILE", help=".npz, shard directory, .npy, or JSONL ('-': stdin)")
    parser.add_argument("--tokenizer", required=True, metavar="MODEL", help=TOKENIZER_HELP)
    parser.add_argument(
        "--sequence",
        "-n",
        type=int,
        default=0,
        metavar="N",
        help="0-based index of the sequence (row) in FILE; in JSONL, line N+1 (default 0)",
    )
    add_check_options(parser)
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the output (default: when standard output is a terminal and NO_COLOR is unset)",
    )
    parser.set_defaults(run=run)


def run(args) -> int:
    if args.sequence < 0:
        raise CommandError(f"--sequence must be 0 or more, got {args.sequence}")
    tokenizer = load_tokenizer(args.tokenizer)
    check_checkpoint(args, tokenizer)
    source = open_source(args.input, tokenizer)
    row = _find(source, args.sequence)
    ids, loss, attention, segments = row
    options = check_options(args, source.manifest)
    for warning in source.warnings:
        print(f"gemma-turns inspect: {args.input}: warning: {warning}", file=sys.stderr)
    labels = label_tokens(ids, tokenizer, attention_mask=attention, segment_ids=segments, expect=options.get("expect"))
    report = validate(
        [ids],
        tokenizer,
        loss_mask=None if loss is None else [loss],
        attention_mask=None if attention is None else [attention],
        segment_ids=None if segments is None else [segments],
        **options,
    )
    color = args.color == "always" or (
        args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    )
    out = sys.stdout
    out.write(_heading(args.input, args.sequence, ids, loss, labels, report) + "\n")
    notes: dict[int, list[str]] = {}
    for finding in report.findings:
        notes.setdefault(finding.position, []).append(finding.rule)
    out.write(_line("pos", "id", "piece", "role", "part", "mask", "finding", color=False, bold=color) + "\n")
    pads = 0
    for position, token in enumerate(ids.tolist()):
        role, part = labels[position]
        if part == "pad" and position not in notes:
            pads += 1
            if pads > PAD_RUN_SHOWN:
                continue
        elif pads > PAD_RUN_SHOWN:
            out.write(f"{'':>6}  ... {pads - PAD_RUN_SHOWN} more padding tokens\n")
            pads = 0
        else:
            pads = 0
        mask = "" if loss is None else str(int(loss[position]))
        out.write(
            _line(
                str(position),
                str(token),
                _piece(tokenizer, token),
                role,
                part,
                mask,
                " ".join(notes.get(position, [])),
                color=color,
            )
            + "\n"
        )
    if pads > PAD_RUN_SHOWN:
        out.write(f"{'':>6}  ... {pads - PAD_RUN_SHOWN} more padding tokens\n")
    end_notes = [f for f in report.findings if f.position >= len(ids)]
    for finding in end_notes:
        out.write(_line(str(finding.position), "", "(end)", "", "", "", finding.rule, color=color) + "\n")
    if report.findings:
        findings = tuple(replace(f, sequence=args.sequence) for f in report.findings)
        out.write("\n" + replace(report, findings=findings).format(limit=None) + "\n")
    return EXIT_OK if report.ok else EXIT_INVALID


def _find(source, index: int):
    seen = 0
    for chunk in source.chunks:
        where = np.flatnonzero(chunk.indices == index)
        if len(where):
            k = int(where[0])
            pick = lambda value: None if value is None else value[k]  # noqa: B023 (used at once)
            ids = np.asarray(chunk.ids[k], dtype=np.int64)
            loss, attention, segments = pick(chunk.loss_mask), pick(chunk.attention_mask), pick(chunk.segment_ids)
            if loss is None and pick(chunk.labels) is not None:
                # labels: shifted or not is told over the whole chunk, then this row's mask taken
                read = labels_to_loss([np.asarray(x) for x in chunk.ids], chunk.labels)
                loss = read.loss[k]
                print(f"gemma-turns inspect: {source.path}: {read.note or 'labels that fit no convention'}", file=sys.stderr)
            return (
                ids,
                None if loss is None else np.asarray(loss),
                None if attention is None else np.asarray(attention),
                None if segments is None else np.asarray(segments),
            )
        seen = max(seen, int(chunk.indices[-1]) + 1) if len(chunk.indices) else seen
    raise CommandError(f"{source.path} has no sequence {index} (sequences 0..{seen - 1})" if seen else f"{source.path} has no sequence")


def _heading(path, index, ids, loss, labels, report) -> str:
    padding = sum(1 for _, part in labels if part == "pad")
    text = f"{path}: sequence {index}: {len(ids)} positions"
    if padding:
        text += f" ({padding} padding)"
    if loss is not None:
        text += f", loss mask on {int(np.count_nonzero(loss))} tokens"
    verdict = "valid" if report.ok else f"{report.total} finding{'s' if report.total > 1 else ''}"
    return f"{text}: {verdict}"


def _piece(tokenizer, token: int) -> str:
    if not 0 <= token < tokenizer.vocab_size:
        return f"<id {token}?>"
    text = repr(tokenizer.piece(token))[1:-1]  # raw piece: a space shows as ▁
    return text if len(text) <= PIECE_WIDTH else text[: PIECE_WIDTH - 1] + "…"


def _line(position, token, piece, role, part, mask, note, *, color: bool, bold: bool = False) -> str:
    cells = f"{position:>6} {token:>7}  {piece:<{PIECE_WIDTH}} {role:<6} {part:<11} {mask:>4}"
    if bold:
        return f"\x1b[1m{cells}  {note}".rstrip() + "\x1b[0m"
    if color:
        code = PART_COLORS.get(part) or ROLE_COLORS.get(role, "")
        if mask == "1":  # trained tokens in bold
            code = f"{code};1" if code else "1"
        if code:
            cells = f"\x1b[{code}m{cells}\x1b[0m"
        if note:
            note = f"\x1b[31;1m{note}\x1b[0m"
    return f"{cells}  {note}".rstrip()
