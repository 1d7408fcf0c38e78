"""Every error gemma-turns raises, in one tree.

    GemmaTurnsError                       base: catch this to catch everything below
    ├── TokenizerError (ValueError)       the SentencePiece model cannot be used (missing file,
    │                                     corrupt model, a required piece is missing)
    ├── ConversationError (ValueError)    a conversation cannot be formatted or encoded
    │   └── ReservedTokenError            content spells a reserved token such as <end_of_turn>
    ├── SequenceTooLongError (ValueError) an encoded sequence does not fit max_length
    ├── DatasetError (ValueError)         an output cannot be written, or read back
    │   └── EmptyInputError               the input has no record at all
    └── ParseError (ValueError)           ids without the Gemma turn layout: no conversation

Each error carries structured location fields (``record``, ``message_index``, ``role``,
``char_offset``, ...) besides its message, so a caller can report or count errors by
``code`` without parsing text. ``record`` is ``None`` until a batch or file reader fills it in.

Every error pickles with its fields and message (``pickle.loads(pickle.dumps(error))``), so it
crosses process boundaries: ``ProcessPoolExecutor``, ``multiprocessing``, ``datasets.map(num_proc=N)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

__all__ = [
    "ConversationError",
    "DatasetError",
    "EmptyInputError",
    "GemmaTurnsError",
    "ParseError",
    "ReservedTokenError",
    "SequenceTooLongError",
    "TokenizerError",
]


class GemmaTurnsError(Exception):
    """Base class of every error raised by gemma-turns."""

    def __reduce__(self):
        # The default rebuilds an exception as ``cls(*args)``, which our keyword-only fields
        # refuse (a worker's error then kills a ProcessPoolExecutor with BrokenProcessPool).
        # Rebuild without __init__: the rendered message as args, every field as state.
        return (_rebuild, (type(self), self.args), self.__dict__)


def _rebuild(cls, args):
    """An error of ``cls`` with ``args``, its fields set by pickle from the saved state."""
    return cls.__new__(cls, *args)


class TokenizerError(GemmaTurnsError, ValueError):
    """The SentencePiece model cannot be loaded or lacks a piece gemma-turns needs."""

    def __init__(self, message: str, *, path: str | None = None, piece: str | None = None):
        super().__init__(message)
        self.path = path
        self.piece = piece


@dataclass(frozen=True)
class Location:
    """Where in the input a problem is: all fields optional, printed in this order."""

    record: int | None = None
    message_index: int | None = None
    role: str | None = None
    part_index: int | None = None
    char_offset: int | None = None
    field: str | None = None  # where in a message beyond its content: "reasoning", "tool_calls[0]..."

    def describe(self) -> str:
        bits = []
        if self.record is not None:
            bits.append(f"record {self.record}")
        if self.message_index is not None:
            role = f" ({self.role})" if self.role is not None else ""
            bits.append(f"message {self.message_index}{role}")
        if self.field is not None:
            bits.append(self.field)
        if self.part_index is not None:
            bits.append(f"part {self.part_index}")
        if self.char_offset is not None:
            bits.append(f"character {self.char_offset}")
        return ", ".join(bits)


class ConversationError(GemmaTurnsError, ValueError):
    """A conversation cannot be turned into Gemma turns.

    ``code`` is a stable short name (``unknown_role``, ``roles_not_alternating`` ...) that
    the CLI writes into its error lines and counts in its summary.
    """

    def __init__(
        self,
        reason: str,
        *,
        code: str,
        message_index: int | None = None,
        role: str | None = None,
        part_index: int | None = None,
        char_offset: int | None = None,
        record: int | None = None,
        fix: str | None = None,
        field: str | None = None,
    ):
        self.reason = reason
        self.code = code
        self.fix = fix
        self.location = Location(record, message_index, role, part_index, char_offset, field)
        super().__init__(self._render())

    # Location fields, readable directly on the error.
    record = property(lambda self: self.location.record)
    message_index = property(lambda self: self.location.message_index)
    role = property(lambda self: self.location.role)
    part_index = property(lambda self: self.location.part_index)
    char_offset = property(lambda self: self.location.char_offset)
    field = property(lambda self: self.location.field)

    def _render(self) -> str:
        where = self.location.describe()
        text = f"{where}: {self.reason}" if where else self.reason
        return f"{text}. {self.fix}" if self.fix else text

    def with_record(self, record: int) -> ConversationError:
        """Return this error with ``record`` set (the line number or batch index)."""
        self.location = replace(self.location, record=record)
        self.args = (self._render(),)
        return self

    def to_dict(self) -> dict:
        """A JSON-ready description: code, reason, fix and every known location field."""
        out = {"code": self.code, "reason": self.reason}
        for name in ("record", "message_index", "role", "field", "part_index", "char_offset"):
            value = getattr(self.location, name)
            if value is not None:
                out[name] = value
        if self.fix:
            out["fix"] = self.fix
        return out


class ReservedTokenError(ConversationError):
    """Content contains the text of a reserved token, which SentencePiece would turn into
    the real token id (a forged turn marker, image marker or unused id)."""

    def __init__(self, token: str, **location):
        self.token = token
        super().__init__(
            f"content contains the reserved token text {token!r}, which the tokenizer would "
            "turn into that token's id",
            code="reserved_token",
            fix=(
                "Remove it, or pass reserved='escape' to encode it as plain text "
                "(or reserved='allow' for the official pipeline's ids)"
            ),
            **location,
        )

    def to_dict(self) -> dict:
        return {**super().to_dict(), "token": self.token}


class SequenceTooLongError(GemmaTurnsError, ValueError):
    """An encoded sequence is longer than the row it must fit in."""

    def __init__(
        self, length: int, max_length: int, *, record: int | None = None, path: str | None = None
    ):
        self.length = length
        self.max_length = max_length
        self.record = record
        self.path = path  # the input file of the record, when a run reads several
        where = f"record {record}: " if record is not None else ""
        where = f"{path}: {where}" if path is not None else where
        super().__init__(
            f"{where}sequence of {length} tokens does not fit max_length={max_length}. "
            "Raise max_length, or choose a truncation policy (drop, truncate, drop_oldest_turns)"
        )


class DatasetError(GemmaTurnsError, ValueError):
    """An output cannot be written where asked, or a written dataset cannot be read back."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.path = None if path is None else os.fspath(path)


class EmptyInputError(DatasetError):
    """The input has no record at all (an empty file, or only blank lines)."""


class ParseError(GemmaTurnsError, ValueError):
    """The ids do not have the Gemma turn layout, so there is no conversation to give back.

    ``finding`` (a validator Finding) says where and why: ``rule``, ``position``,
    ``token_id``, ``expected``, ``context``, also readable on the error.
    """

    def __init__(self, finding):
        self.finding = finding
        token = "end of sequence" if finding.token_id is None else f"id {finding.token_id}"
        text = f"position {finding.position} ({token}): {finding.rule}: {finding.message}"
        if finding.expected:
            text += f"; expected {finding.expected}"
        super().__init__(f"{text}. Context: {finding.context}")

    rule = property(lambda self: self.finding.rule)
    position = property(lambda self: self.finding.position)
    token_id = property(lambda self: self.finding.token_id)
    expected = property(lambda self: self.finding.expected)
    context = property(lambda self: self.finding.context)
