"""Read JSONL input one line at a time, keeping line numbers, and pull out the conversation.

A line that cannot be used (invalid UTF-8, malformed JSON, a value that is no conversation)
becomes a :class:`Line` carrying a ConversationError instead of a value, so callers can
report it with its line number and go on; no line is ever skipped without being counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import ConversationError

__all__ = ["Line", "batched", "read_lines", "messages_of", "text_of"]

UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Line:
    """One input line: its 1-based number, and either its JSON value or why it has none.

    ``blank`` lines (only whitespace) carry neither; callers count them.
    """

    number: int
    value: object = None
    error: ConversationError | None = None
    blank: bool = False


def read_lines(stream: Iterable[bytes]) -> Iterator[Line]:
    """Parse each line of a binary stream as JSON."""
    for number, raw in enumerate(stream, start=1):
        if number == 1 and raw.startswith(UTF8_BOM):  # files saved by some Windows editors
            raw = raw[len(UTF8_BOM) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            yield Line(
                number,
                error=ConversationError(
                    f"the line is not valid UTF-8 (byte {error.start}: {raw[error.start:error.start + 1]!r})",
                    code="invalid_utf8",
                    char_offset=error.start,
                    record=number,
                    fix="Re-encode the file as UTF-8",
                ),
            )
            continue
        if not text.strip():
            yield Line(number, blank=True)
            continue
        try:
            yield Line(number, value=json.loads(text))
        except json.JSONDecodeError as error:
            yield Line(
                number,
                error=ConversationError(
                    f"the line is not valid JSON: {error.msg}",
                    code="invalid_json",
                    char_offset=error.pos,
                    record=number,
                    fix="Write one JSON object a line",
                ),
            )


def messages_of(value: object) -> object:
    """The messages of a record: ``{"messages": [...]}`` or a bare list."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and "messages" in value:
        return value["messages"]
    raise ConversationError(
        f"a record must be {{\"messages\": [...]}} or a list of messages, got {_kind(value)}",
        code="bad_record",
    )


def text_of(value: object) -> str:
    """The text of a pretraining record: ``{"text": "..."}`` or a bare string."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"]
    raise ConversationError(
        f'a pretraining record must be {{"text": "..."}} or a string, got {_kind(value)}',
        code="bad_record",
    )


def batched(lines: Iterable[Line], size: int) -> Iterator[list[Line]]:
    """Group lines into lists of ``size`` (the last may be shorter)."""
    batch: list[Line] = []
    for line in lines:
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:5]}"
    return type(value).__name__
