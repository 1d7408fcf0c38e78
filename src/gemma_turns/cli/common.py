"""What every subcommand shares: exit codes, opening inputs, loading the tokenizer.

Light to import (the library is imported where it is used), so that the command is inside
its Ctrl-C and error handling before numpy and sentencepiece load.
"""

from __future__ import annotations

import argparse

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C


class CommandError(Exception):
    """A usage or I/O problem: printed on stderr, exit code 2."""


class OutputError(CommandError):
    """Standard output cannot be written (a full disk, a closed descriptor)."""


class GuardedOutput:
    """Standard output whose write errors name it: ``cannot write standard output: No space
    left on device``, raised as OutputError (a reader gone away stays BrokenPipeError)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as error:
            raise OutputError(f"cannot write standard output: {error.strerror or error}") from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as error:
            raise OutputError(f"cannot write standard output: {error.strerror or error}") from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def open_input(path: str):
    """The file at ``path`` in binary mode, or standard input for ``-`` (a context manager)."""
    from ..readers import open_binary

    return open_binary(path)


def load_tokenizer(path: str):
    """The GemmaTokenizer of ``path`` (a tokenizer.model, a checkpoint folder, a
    tokenizer.json or a GGUF file); a model that cannot be used is a usage error."""
    from ..encoder import GemmaTokenizer
    from ..errors import TokenizerError

    try:
        return GemmaTokenizer.load(path)
    except TokenizerError as error:
        raise CommandError(str(error)) from None


def add_input_argument(parser) -> None:
    parser.add_argument(
        "input", metavar="FILE", help="JSONL file, one conversation a line ('-' for stdin)"
    )


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value
