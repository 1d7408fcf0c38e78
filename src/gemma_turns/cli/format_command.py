"""``gemma-turns format FILE``: the turn text of each conversation, one JSON line each."""

from __future__ import annotations

import json
import sys

from .. import chat_format
from ..errors import ConversationError
from ..formatter import format_chat
from ..jsonl import messages_of, read_lines
from .chat_flags import add_chat_flags, chat_options
from .common import (
    EXIT_INVALID,
    EXIT_OK,
    TOKENIZER_HELP,
    CommandError,
    add_input_argument,
    load_tokenizer,
    open_input,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "format",
        help="write the turn text of each conversation",
        description="Write one JSON line {\"text\": ...} per input line (an error line for a "
        "record that cannot be formatted), without BOS, which is a token and not text.",
    )
    add_input_argument(parser)
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument(
        "--generation-prompt",
        dest="add_generation_prompt",
        action="store_true",
        default=None,
        help="always end with the generation prompt (default: unless the last message is the model's)",
    )
    prompt.add_argument(
        "--no-generation-prompt", dest="add_generation_prompt", action="store_false"
    )
    parser.add_argument(
        "--tokenizer", metavar="MODEL", help=TOKENIZER_HELP + ": write its chat format (instead of --dialect)"
    )
    add_chat_flags(parser, dialect=True)
    parser.set_defaults(run=run)


def run(args) -> int:
    if args.tokenizer and args.dialect:
        raise CommandError("give --tokenizer or --dialect, not both: the tokenizer says its dialect")
    dialect = load_tokenizer(args.tokenizer).dialect if args.tokenizer else chat_format.get(args.dialect or "gemma3")
    options = chat_options(args, dialect, mode="inference", add_generation_prompt=args.add_generation_prompt)
    out = sys.stdout
    total = rejected = 0
    with open_input(args.input) as stream:
        for line in read_lines(stream):
            if line.blank:
                continue
            total += 1
            try:
                if line.error is not None:
                    raise line.error
                messages_of(line.value)  # a record of messages, or a list of them
                text = format_chat(line.value, dialect=dialect, options=options)
                out.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            except ConversationError as error:
                rejected += 1
                error.with_record(line.number)
                out.write(json.dumps({"line": line.number, "error": error.to_dict()}) + "\n")
    print(f"formatted {total - rejected} of {total} records, {rejected} rejected", file=sys.stderr)
    return EXIT_INVALID if rejected else EXIT_OK
