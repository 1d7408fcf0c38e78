"""The ``gemma-turns`` command: a thin layer over the library.

Exit codes, for every subcommand: 0 everything went through; 1 the data is invalid (a record
was rejected, a sequence failed validation); 2 usage or I/O error (bad flag, missing file,
unreadable tokenizer). Library modules never import this package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import encode_command, format_command, inspect_command, validate_command
from .common import EXIT_USAGE, CommandError

__all__ = ["entry_point", "main"]

COMMANDS = (format_command, encode_command, validate_command, inspect_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemma-turns",
        description="Chat conversations to the exact token ids a Gemma model expects.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (without the program name); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # argparse exits 2 on usage errors and 0 for --help
        return int(exit.code or 0)
    try:
        return args.run(args)
    except CommandError as error:
        print(f"gemma-turns {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0


def entry_point() -> None:
    raise SystemExit(main())
