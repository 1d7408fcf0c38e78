"""Encode a JSONL stream in batches, one Record per input line, in input order.

Memory is bounded by a few batches of ``batch_size`` lines; each batch is encoded with one
threaded SentencePiece call, pipelined: while SentencePiece encodes one batch, the next is
read, parsed and formatted, and the records of the previous one are consumed. Every line
gives exactly one :class:`~gemma_turns.records.Record`: ``encoded``, ``rejected`` (the
error's ``record`` is the line number) or ``blank``, so callers can account for all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from .encoder import GemmaTokenizer
from .errors import ConversationError
from .jsonl import Line, batched, messages_of, text_of
from .options import EncodeOptions
from .records import Counts, Record

__all__ = ["EncodeOptions", "Outcome", "Record", "Tally", "encode_lines"]

# Old names, kept for one release: an Outcome is now a Record (kind "encoded", "rejected"
# or "blank"; ``line`` is ``number``), a Tally is Counts (its ``tokens`` is ``encoded_tokens``;
# ``summary(arrays=False)`` gives the Tally's line).
Outcome = Record
Tally = Counts


def encode_lines(
    tokenizer: GemmaTokenizer,
    lines: Iterable[Line],
    options: EncodeOptions,
    *,
    batch_size: int = 1024,
    num_threads: int | None = None,
) -> Iterator[Record]:
    """Encode parsed JSONL lines, yielding one Record per line in input order."""
    pending: deque[tuple[list[Line], list]] = deque()  # batches handed to the encoder

    def record_batches() -> Iterator[list]:
        for batch in batched(lines, batch_size):
            prepared = [_prepare(line, options.mode) for line in batch]
            pending.append((batch, prepared))
            yield [value for value in prepared if not isinstance(value, Record)]

    for results in _encode_batches(tokenizer, record_batches(), options, num_threads):
        batch, prepared = pending.popleft()
        results = iter(results)
        for line, value in zip(batch, prepared, strict=True):
            if isinstance(value, Record):
                yield value
                continue
            result = next(results)
            if isinstance(result, ConversationError):
                yield Record.rejected(line.number, result.with_record(line.number), value)
            else:
                yield Record.encoded(line.number, result, value)


def _prepare(line: Line, mode: str) -> object:
    """The record to encode from a line, or the line's final Record (blank, or rejected)."""
    if line.blank:
        return Record.blank_line(line.number)
    if line.error is not None:
        return Record.rejected(line.number, line.error)
    try:
        if mode == "pt":
            return text_of(line.value)
        messages = messages_of(line.value)
        if isinstance(line.value, dict):  # the record, for its tools and chat_template_kwargs
            return {**line.value, "messages": messages}
        return messages
    except ConversationError as error:
        return Record.rejected(line.number, error.with_record(line.number))


def _encode_batches(tokenizer: GemmaTokenizer, batches, options: EncodeOptions, num_threads):
    if options.mode == "pt":
        return tokenizer.try_encode_pt_batches(
            batches, add_eos=options.add_eos, reserved=options.reserved, num_threads=num_threads
        )
    return tokenizer.try_encode_chat_batches(batches, options=options, num_threads=num_threads)
