"""The ``gemma-turns`` command: a thin layer over the library.

Exit codes, for every subcommand: 0 everything went through; 1 the data is invalid (a record
was rejected, a sequence failed validation); 2 usage or I/O error (bad flag, missing file,
unreadable tokenizer). Library modules never import this package.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import GemmaTurnsError
from .common import EXIT_INTERRUPTED, EXIT_USAGE, CommandError, GuardedOutput

__all__ = ["entry_point", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand. The subcommands (and with them numpy and
    sentencepiece) are imported here, inside main's handling of Ctrl-C and errors."""
    from . import encode_command, format_command, inspect_command, validate_command

    parser = argparse.ArgumentParser(
        prog="gemma-turns",
        description="Chat conversations to the exact token ids a Gemma model expects.",
    )
    parser.add_argument("--version", action="version", version=f"gemma-turns {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (format_command, encode_command, validate_command, inspect_command):
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (without the program name); return the exit code.

    Whatever happens, the result is an exit code and at most a line on stderr, never a
    traceback: a usage, input or output problem (a missing file, a full disk) is 2, Ctrl-C is
    130, a reader of stdout that went away (``| head``) is 0.
    """
    name = "gemma-turns"
    stdout = sys.stdout
    sys.stdout = GuardedOutput(stdout)
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit:  # argparse exits 2 on usage errors, 0 for --help/--version
            return int(exit.code or 0)
        name = f"gemma-turns {args.command}"
        code = args.run(args)
        sys.stdout.flush()
        return code
    except (CommandError, GemmaTurnsError) as error:
        print(f"{name}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. piped into `head`: the reader has what it wanted
        return 0
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        print(f"{name}: I/O error{where}: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print(f"{name}: out of memory; see 'What a run needs' in the README", file=sys.stderr)
        return EXIT_USAGE
    finally:
        sys.stdout = stdout


def entry_point() -> None:
    code = main()
    try:
        sys.stdout.flush()
    except OSError:  # the error is reported; let the interpreter's last flush succeed
        _silence_stdout()
    raise SystemExit(code)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass

