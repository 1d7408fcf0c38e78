"""Encode a JSONL stream in batches, one outcome per input line, in input order.

Memory is bounded by a few batches of ``batch_size`` lines; each batch is encoded with one
threaded SentencePiece call, pipelined: while SentencePiece encodes one batch, the next is
read, parsed and formatted, and the outcomes of the previous one are consumed. Every line
gives exactly one :class:`Outcome`: an encoding, an error (with the line number as
``record``), or a blank line, so callers can account for all.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .encoder import Encoding, GemmaTokenizer
from .errors import ConversationError
from .jsonl import Line, batched, messages_of, text_of
from .options import EncodeOptions

__all__ = ["EncodeOptions", "Outcome", "Tally", "encode_lines"]

@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one input line. ``value`` is the record that was encoded (its messages,
    or its text in pt mode), for policies that encode it again (drop_oldest_turns)."""

    line: int
    encoding: Encoding | None = None
    error: ConversationError | None = None
    value: object = None

    @property
    def blank(self) -> bool:
        return self.encoding is None and self.error is None


@dataclass
class Tally:
    """Counts over a stream: every line lands in exactly one of encoded, rejected, blank."""

    lines: int = 0
    encoded: int = 0
    blank: int = 0
    tokens: int = 0
    rejected: Counter = field(default_factory=Counter)  # by error code

    def add(self, outcome: Outcome) -> None:
        self.lines += 1
        if outcome.encoding is not None:
            self.encoded += 1
            self.tokens += len(outcome.encoding)
        elif outcome.error is not None:
            self.rejected[outcome.error.code] += 1
        else:
            self.blank += 1

    def summary(self) -> str:
        rejected = sum(self.rejected.values())
        text = (
            f"{self.lines} lines: {self.encoded} encoded ({self.tokens} tokens), "
            f"{rejected} rejected, {self.blank} blank"
        )
        if rejected:
            text += " (" + ", ".join(f"{code} {n}" for code, n in self.rejected.most_common()) + ")"
        return text


def encode_lines(
    tokenizer: GemmaTokenizer,
    lines: Iterable[Line],
    options: EncodeOptions,
    *,
    batch_size: int = 1024,
    num_threads: int | None = None,
) -> Iterator[Outcome]:
    """Encode parsed JSONL lines, yielding one Outcome per line in input order."""
    pending: deque[tuple[list[Line], list]] = deque()  # batches handed to the encoder

    def record_batches() -> Iterator[list]:
        for batch in batched(lines, batch_size):
            prepared = [_prepare(line, options.mode) for line in batch]
            pending.append((batch, prepared))
            yield [value for value in prepared if not isinstance(value, Outcome)]

    for results in _encode_batches(tokenizer, record_batches(), options, num_threads):
        batch, prepared = pending.popleft()
        results = iter(results)
        for line, value in zip(batch, prepared, strict=True):
            if isinstance(value, Outcome):
                yield value
                continue
            result = next(results)
            if isinstance(result, ConversationError):
                yield Outcome(line.number, error=result.with_record(line.number), value=value)
            else:
                yield Outcome(line.number, encoding=result, value=value)


def _prepare(line: Line, mode: str) -> object:
    """The record to encode from a line, or the line's final Outcome (blank, or an error)."""
    if line.blank:
        return Outcome(line.number)
    if line.error is not None:
        return Outcome(line.number, error=line.error)
    try:
        if mode == "pt":
            return text_of(line.value)
        messages = messages_of(line.value)
        return line.value if isinstance(line.value, dict) else messages  # with tools and kwargs
    except ConversationError as error:
        return Outcome(line.number, error=error.with_record(line.number))


def _encode_batches(tokenizer: GemmaTokenizer, batches, options: EncodeOptions, num_threads):
    if options.mode == "pt":
        return tokenizer.try_encode_pt_batches(
            batches, add_eos=options.add_eos, reserved=options.reserved, num_threads=num_threads
        )
    return tokenizer.try_encode_chat_batches(batches, options=options, num_threads=num_threads)
