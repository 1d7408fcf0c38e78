"""``gemma-turns format FILE``: the turn text of each conversation, one JSON line each."""

from __future__ import annotations

import json
import sys

from ..errors import ConversationError
from ..formatter import format_chat
from ..jsonl import messages_of, read_lines
from .common import EXIT_INVALID, EXIT_OK, add_input_argument, open_input


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
        help="always end with <start_of_turn>model\\n (default: when the last message is a user's)",
    )
    prompt.add_argument(
        "--no-generation-prompt", dest="add_generation_prompt", action="store_false"
    )
    parser.set_defaults(run=run)


def run(args) -> int:
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
                text = format_chat(
                    messages_of(line.value), add_generation_prompt=args.add_generation_prompt
                )
                out.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            except ConversationError as error:
                rejected += 1
                error.with_record(line.number)
                out.write(json.dumps({"line": line.number, "error": error.to_dict()}) + "\n")
    print(f"formatted {total - rejected} of {total} records, {rejected} rejected", file=sys.stderr)
    return EXIT_INVALID if rejected else EXIT_OK
