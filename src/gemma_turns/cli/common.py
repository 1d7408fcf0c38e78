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
TOKENIZER_HELP = "a tokenizer.model, a checkpoint folder, its tokenizer.json, or a GGUF file"


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


def add_inputs_argument(parser) -> None:
    """Several input files: paths, and glob patterns expanded here (a quoted pattern reaches
    the command unexpanded)."""
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="FILE",
        help="JSONL files, one conversation a line, or glob patterns ('data/*.jsonl'); '-' "
        "for stdin (as the only input)",
    )


GLOB_CHARACTERS = frozenset("*?[")


def expand_inputs(patterns: list[str]) -> list[str]:
    """The input files of the command line, in the order given: a pattern (``*``, ``?``,
    ``[``) that is not itself a file is replaced by the files it matches, sorted. A pattern
    that matches nothing, ``-`` among several inputs, or a file named twice is a usage
    error."""
    import glob
    import os

    names: list[str] = []
    for pattern in patterns:
        if pattern != "-" and GLOB_CHARACTERS & set(pattern) and not os.path.exists(pattern):
            matches = sorted(m for m in glob.glob(pattern, recursive=True) if not os.path.isdir(m))
            if not matches:
                raise CommandError(
                    f"no file matches {pattern!r}; check the pattern (it is expanded relative to "
                    f"{os.getcwd()})"
                )
            names.extend(matches)
        else:
            names.append(pattern)
    if len(names) > 1 and "-" in names:
        raise CommandError("'-' (standard input) can only be the one input, not one of several")
    seen: dict[str, str] = {}
    for name in names:
        key = os.path.realpath(name) if name != "-" else name
        if key in seen:
            raise CommandError(
                f"{name} is given twice (also as {seen[key]}, perhaps through a pattern): its "
                "records would be counted twice; name each input once"
            )
        seen[key] = name
    return names


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return value
