"""Encode a JSONL stream in batches, one outcome per input line, in input order.

Memory is bounded by ``batch_size`` lines at a time; each batch is encoded with one
threaded SentencePiece call. Every line gives exactly one :class:`Outcome`: an encoding, an
error (with the line number as ``record``), or a blank line, so callers can account for all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from .encoder import Encoding, GemmaTokenizer
from .errors import ConversationError
from .jsonl import Line, batched, messages_of, text_of

__all__ = ["EncodeOptions", "Outcome", "Tally", "encode_lines"]

Mode = Literal["training", "inference", "pt"]


@dataclass(frozen=True, kw_only=True)
class EncodeOptions:
    """How records are encoded; the fields mirror GemmaTokenizer's keywords."""

    mode: Mode
    add_generation_prompt: bool | None = None
    train_on: Literal["all", "last"] = "all"
    train_newline: bool = False
    reserved: Literal["refuse", "escape", "allow"] = "refuse"
    add_eos: bool = True  # pt only

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class Outcome:
    line: int
    encoding: Encoding | None = None
    error: ConversationError | None = None

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
    for batch in batched(lines, batch_size):
        values, slots = [], []
        outcomes: list[Outcome | None] = []
        for line in batch:
            if line.blank:
                outcomes.append(Outcome(line.number))
                continue
            if line.error is not None:
                outcomes.append(Outcome(line.number, error=line.error))
                continue
            try:
                value = text_of(line.value) if options.mode == "pt" else messages_of(line.value)
            except ConversationError as error:
                outcomes.append(Outcome(line.number, error=error.with_record(line.number)))
                continue
            slots.append(len(outcomes))
            values.append(value)
            outcomes.append(None)
        for slot, result in zip(slots, _encode(tokenizer, values, options, num_threads)):
            number = batch[slot].number
            if isinstance(result, ConversationError):
                outcomes[slot] = Outcome(number, error=result.with_record(number))
            else:
                outcomes[slot] = Outcome(number, encoding=result)
        yield from outcomes


def _encode(tokenizer: GemmaTokenizer, values: list, options: EncodeOptions, num_threads):
    if options.mode == "pt":
        return tokenizer.try_encode_pt_batch(
            values, add_eos=options.add_eos, reserved=options.reserved, num_threads=num_threads
        )
    return tokenizer.try_encode_chat_batch(
        values,
        mode=options.mode,
        add_generation_prompt=options.add_generation_prompt,
        train_on=options.train_on,
        train_newline=options.train_newline,
        reserved=options.reserved,
        num_threads=num_threads,
    )
