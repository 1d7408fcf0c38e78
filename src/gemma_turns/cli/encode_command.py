"""``gemma-turns encode --tokenizer MODEL FILE``: token ids and loss masks, one JSON line each."""

from __future__ import annotations

import json
import sys

from ..streaming import EncodeOptions, Tally, encode_lines
from ..jsonl import read_lines
from .common import EXIT_INVALID, EXIT_OK, add_input_argument, load_tokenizer, open_input


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "encode",
        help="encode conversations to token ids and loss masks",
        description="Write one JSON line per input line: {\"input_ids\", \"loss_mask\"}, or "
        "{\"line\", \"error\"} for a record that cannot be encoded. A summary goes to stderr. "
        "Exit code 0 if every record was encoded, 1 if any was rejected, 2 for usage or I/O errors.",
    )
    add_input_argument(parser)
    parser.add_argument("--tokenizer", required=True, metavar="MODEL", help="SentencePiece tokenizer.model")
    add_encode_options(parser)
    parser.set_defaults(run=run)


def add_encode_options(parser) -> None:
    parser.add_argument(
        "--mode",
        choices=("training", "inference", "pt"),
        required=True,
        help="training: conversations end with a model turn; inference: end with the "
        "generation prompt after a user turn; pt: {\"text\": ...} records as [BOS] text [EOS]",
    )
    parser.add_argument(
        "--train-on",
        choices=("all", "last"),
        default="all",
        help="model turns the loss mask covers (training; default: all)",
    )
    parser.add_argument(
        "--train-newline",
        action="store_true",
        help="also train the \\n after each trained <end_of_turn>",
    )
    parser.add_argument(
        "--reserved",
        choices=("refuse", "escape", "allow"),
        default="refuse",
        help="content that spells a reserved token such as <end_of_turn>: refuse the record "
        "(default), escape it as plain text, or allow it (the official pipeline's ids)",
    )
    parser.add_argument(
        "--no-eos", dest="add_eos", action="store_false", help="pt: end without <eos> (a PT prompt)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N", help="SentencePiece threads (default: all cores)"
    )


def encode_options(args) -> EncodeOptions:
    return EncodeOptions(
        mode=args.mode,
        train_on=args.train_on,
        train_newline=args.train_newline,
        reserved=args.reserved,
        add_eos=args.add_eos,
    )


def run(args) -> int:
    tokenizer = load_tokenizer(args.tokenizer)
    tally = Tally()
    write = sys.stdout.write
    with open_input(args.input) as stream:
        outcomes = encode_lines(
            tokenizer, read_lines(stream), encode_options(args), num_threads=args.threads
        )
        for outcome in outcomes:
            tally.add(outcome)
            if outcome.encoding is not None:
                write(json.dumps(outcome.encoding.to_dict()) + "\n")
            elif outcome.error is not None:
                write(json.dumps({"line": outcome.line, "error": outcome.error.to_dict()}, ensure_ascii=False) + "\n")
    print(f"gemma-turns encode: {tally.summary()}", file=sys.stderr)
    return EXIT_INVALID if tally.rejected else EXIT_OK
