"""Read JSONL input one line at a time, keeping line numbers, and pull out the conversation.

A line that cannot be used (invalid UTF-8, malformed JSON, JSON nested too deep, an integer
too long to convert, a line longer than ``max_record_bytes``, a value that is no
conversation) becomes a :class:`Line` carrying a ConversationError instead of a value, so
callers can report it with its line number and go on; no line is ever skipped without being
counted, and no exception of one line stops the others. Lines are numbered from 1.

A record ``{"system": "...", "messages": [...]}`` (the top-level system prompt some
datasets use) is honoured: the system text becomes the first message. A record with both a
top-level ``system`` and a system message is refused (``bad_record``) rather than guessing
which one was meant; ``"system": null`` or ``""`` is no system prompt.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from .errors import ConversationError

__all__ = ["MAX_RECORD_BYTES", "Line", "batched", "messages_of", "read_lines", "text_of"]

UTF8_BOM = b"\xef\xbb\xbf"
# The longest line read: 64 MiB. Encoding a line costs many times its size in memory (the
# JSON objects, the text, the ids), so one huge line could take gigabytes.
MAX_RECORD_BYTES = 64 << 20
_SKIP_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Line:
    """One input line: its 1-based number, and either its JSON value or why it has none.

    ``blank`` lines (only whitespace) carry neither; callers count them.
    """

    number: int
    value: object = None
    error: ConversationError | None = None
    blank: bool = False


def read_lines(
    stream: Iterable[bytes], *, max_record_bytes: int = MAX_RECORD_BYTES, first_line: int = 1
) -> Iterator[Line]:
    """Parse each line of a binary stream as JSON; a line longer than ``max_record_bytes``
    is rejected (``too_large``) without being held in memory when ``stream`` has
    ``readline`` (a file). ``first_line``: the number of the stream's first line, when it
    starts inside a file (a chunk of it)."""
    for number, raw in enumerate(_raw_lines(stream, max_record_bytes), start=first_line):
        if isinstance(raw, int):
            yield Line(number, error=_too_large(number, raw, max_record_bytes))
            continue
        if number == 1 and raw.startswith(UTF8_BOM):  # files saved by some Windows editors
            raw = raw[len(UTF8_BOM) :]
        yield _parse(number, raw)


def _raw_lines(stream, limit: int) -> Iterator[bytes | int]:
    """The lines of ``stream``, or for a line over ``limit`` bytes its size instead."""
    readline = getattr(stream, "readline", None)
    if readline is None:
        for raw in stream:
            yield raw if len(raw) <= limit else len(raw)
        return
    while raw := readline(limit + 1):
        if len(raw) <= limit:
            yield raw
            continue
        size = len(raw)
        while not raw.endswith(b"\n") and (raw := readline(_SKIP_BLOCK)):
            size += len(raw)
        yield size


def _too_large(number: int, size: int, limit: int) -> ConversationError:
    return ConversationError(
        f"the line has {size:,} bytes, more than the {limit:,} a record may have",
        code="too_large",
        record=number,
        fix="Raise max_record_bytes (--max-record-bytes) if it is a real record; a run needs "
        "memory of many times the longest line",
    )


def _parse(number: int, raw: bytes) -> Line:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return Line(
            number,
            error=ConversationError(
                f"the line is not valid UTF-8 (byte {error.start}: {raw[error.start:error.start + 1]!r})",
                code="invalid_utf8",
                char_offset=error.start,
                record=number,
                fix="Re-encode the file as UTF-8",
            ),
        )
    if not text.strip():
        return Line(number, blank=True)
    try:
        return Line(number, value=json.loads(text))
    except json.JSONDecodeError as error:
        reason, offset = f"the line is not valid JSON: {error.msg}", error.pos
    except RecursionError:
        reason = f"the line's JSON is nested deeper than Python can read ({sys.getrecursionlimit()} levels)"
        offset = None
    except Exception as error:  # e.g. an integer longer than Python converts: one record's fault
        reason, offset = f"the line's JSON cannot be read: {error}", None
    return Line(
        number,
        error=ConversationError(
            reason,
            code="invalid_json",
            char_offset=offset,
            record=number,
            fix="Write one JSON object a line",
        ),
    )


def messages_of(value: object) -> object:
    """The messages of a record: ``{"messages": [...]}`` or a bare list."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and "messages" in value:
        return _with_system(value["messages"], value.get("system"))
    raise ConversationError(
        f"a record must be {{\"messages\": [...]}} or a list of messages, got {_kind(value)}",
        code="bad_record",
    )


def _with_system(messages: object, system: object) -> object:
    """``messages`` with a record's top-level ``system`` text as their first message."""
    if system is None or system == "":
        return messages
    if not isinstance(system, str):
        raise ConversationError(
            f'the record\'s "system" must be a string, got {_kind(system)}', code="bad_record"
        )
    if not isinstance(messages, list):
        return messages  # refused as it is, by the conversation check
    if messages and isinstance(messages[0], Mapping) and messages[0].get("role") == "system":
        raise ConversationError(
            'the record has a top-level "system" and a system message; keep one of them',
            code="bad_record",
        )
    return [{"role": "system", "content": system}, *messages]


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
