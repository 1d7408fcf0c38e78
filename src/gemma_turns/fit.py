"""Records that must fit a row: the truncation policies, one Record per input line.

    parsed lines -> encode_lines (batches) -> fit_lines: encoded, truncated, dropped,
                                                          rejected or blank

The policies (``ArrayOptions.truncation``) for a record longer than a row: ``error`` raises
SequenceTooLongError, ``drop`` leaves it out, ``truncate`` cuts its end, and
``drop_oldest_turns`` (inference prompts) cuts whole turns out of its middle.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from .arrays import truncate
from .chat_format import Marker
from .encoder import Encoding, GemmaTokenizer
from .errors import SequenceTooLongError
from .jsonl import Line
from .options import ArrayOptions, EncodeOptions
from .records import Drop, Record
from .streaming import encode_lines

__all__ = ["check_dialect", "drop_oldest_turns", "fit_lines"]


def _turn_starts(ids: np.ndarray, tokenizer: GemmaTokenizer) -> np.ndarray:
    """Positions where a turn opens (the generation prompt opens like a turn)."""
    return np.flatnonzero(ids == tokenizer.specials.markers[Marker.TURN_OPEN])


def check_dialect(tokenizer: GemmaTokenizer) -> None:
    """drop_oldest_turns keeps the first user turn because Gemma 2/3 put the system text in
    it, and keeps roles alternating: defined for such dialects only."""
    dialect = tokenizer.dialect
    if dialect.system != "first_user_turn" or not dialect.alternating:
        raise ValueError(
            f"truncation='drop_oldest_turns' is defined for the Gemma 2/3 format (system text in "
            f"the first user turn, alternating roles), not for {dialect.name}; use truncation='drop'"
        )


def drop_oldest_turns(
    tokenizer: GemmaTokenizer,
    messages: Sequence,
    *,
    max_length: int,
    options: EncodeOptions,
    encoding: Encoding | None = None,
) -> Encoding:
    """A chat prompt with as many of its latest turns as fit ``max_length`` ids.

    Kept: the first user turn (Gemma puts the system text inside it, so the instructions
    survive) and the longest run of latest turns that fits, which starts with a model turn so
    that roles still alternate and ends as the conversation did (with the generation prompt).
    Dropped: the turn pairs in between, oldest first: (model 1, user 2), (model 2, user 3) ...

        system, user 1, model 1, user 2, model 2, user 3     (too long)
        -> system, user 1, model 2, user 3  <start_of_turn>model

    The ids are cut at turn starts out of the conversation's encoding (``encoding``, or
    encoded here once): every turn is encoded on its own, so the cut ids are the ids of the
    shorter conversation (``tests/test_fit.py`` checks it against re-encoding). Raises
    SequenceTooLongError when even the first user turn and the last model and user turns do
    not fit; ValueError outside ``mode="inference"``.
    """
    if options.mode != "inference":
        raise ValueError(f"drop_oldest_turns is for mode='inference' prompts, not {options.mode!r}")
    check_dialect(tokenizer)
    messages = list(messages)
    if encoding is None:
        encoding = _encode(tokenizer, messages, options)
    has_system = (
        bool(messages) and isinstance(messages[0], Mapping) and messages[0].get("role") == "system"
    )
    turns = len(messages) - int(has_system)
    prompt = options.add_generation_prompt
    prompt = turns % 2 == 1 if prompt is None else prompt  # by default after a user turn
    starts = _turn_starts(encoding.ids, tokenizer)
    if len(starts) != turns + int(prompt):  # content spelling <start_of_turn> ('allow')
        return _drop_by_reencoding(tokenizer, messages, int(has_system) + 1, max_length, options)
    size = len(encoding)
    if turns < 2 or size <= max_length:
        if size > max_length:
            raise SequenceTooLongError(size, max_length)
        return encoding
    head = int(starts[1])  # BOS and the first user turn
    tails = starts[1:turns:2]  # where a kept run of turns may start: each model turn
    lengths = head + size - tails
    fits = np.flatnonzero(lengths <= max_length)
    if not len(fits):
        raise SequenceTooLongError(int(lengths[-1]), max_length)
    tail = int(tails[fits[0]])
    if tail == head:
        return encoding
    return Encoding(
        np.concatenate([encoding.ids[:head], encoding.ids[tail:]]),
        np.concatenate([encoding.loss_mask[:head], encoding.loss_mask[tail:]]),
        encoding.notes,
    )


def _encode(tokenizer: GemmaTokenizer, messages: list, options: EncodeOptions) -> Encoding:
    return tokenizer.encode_chat(
        messages,
        mode="inference",
        add_generation_prompt=options.add_generation_prompt,
        reserved=options.reserved,
    )


def _drop_by_reencoding(tokenizer, messages: list, head: int, max_length, options) -> Encoding:
    """The same policy by re-encoding candidate conversations (a binary search over where the
    kept turns start): for content whose own ids hold turn markers (``reserved='allow'``),
    where turn starts cannot be told from the ids."""
    starts = list(range(head, len(messages), 2)) or [len(messages)]
    best, shortest = None, None
    low, high = 0, len(starts) - 1
    while low <= high:  # encoded length shrinks as the tail starts later
        middle = (low + high) // 2
        encoding = _encode(tokenizer, messages[:head] + messages[starts[middle] :], options)
        if len(encoding) <= max_length:
            best, high = encoding, middle - 1
        else:
            shortest, low = encoding, middle + 1
    if best is None:
        raise SequenceTooLongError(len(shortest), max_length)
    return best


def fit_lines(
    tokenizer: GemmaTokenizer,
    lines: Iterable[Line],
    *,
    encode_options: EncodeOptions,
    array_options: ArrayOptions,
    batch_size: int = 1024,
    num_threads: int | None = None,
) -> Iterator[Record]:
    """Encode parsed lines in batches and apply the truncation policy: one Record per line.

    ``truncate`` keeps the first ids that fit. In chat modes a model turn that the cut splits
    keeps its ids as context but loses its loss mask (see :func:`gemma_turns.arrays.truncate`),
    so no row teaches an answer that stops in the middle; a pt text keeps its trainable prefix.
    ``error`` raises SequenceTooLongError with ``record`` set to the record's number.
    """
    array_options.check_mode(encode_options.mode)
    if array_options.truncation == "drop_oldest_turns":
        check_dialect(tokenizer)
    records = encode_lines(
        tokenizer, lines, encode_options, batch_size=batch_size, num_threads=num_threads
    )
    for record in records:
        yield record if record.kind != "encoded" else _fit(
            tokenizer, record, encode_options, array_options
        )


def _fit(tokenizer, record: Record, encode_options, array_options) -> Record:
    encoding, number = record.encoding, record.number
    length, limit = len(encoding), array_options.limit

    def drop(code: str, reason: str, fix: str | None = None) -> Record:
        return Record(number, "dropped", drop=Drop(code, reason, fix), length=length)

    def truncated(kept: Encoding) -> Record:
        untrained = encode_options.mode == "training" and not kept.loss_mask.any()
        return Record(number, "truncated", encoding=kept, length=length, untrained=untrained)

    if array_options.shift and length < 2:
        return drop("no_target", "one id: nothing to predict")
    if limit is None or length <= limit:
        return Record(number, "encoded", encoding=encoding, length=length)
    policy = array_options.truncation
    if policy == "error":
        raise SequenceTooLongError(length, limit, record=number)
    too_long = f"{length} ids, more than the {limit} that fit a row"
    if policy == "drop":
        return drop("too_long", too_long, "Raise max_length to keep it")
    if policy == "truncate":
        pt = encode_options.mode == "pt"
        ids, mask = truncate(encoding.ids, encoding.loss_mask, limit, keep_cut_span=pt)
        return truncated(Encoding(ids, mask, encoding.notes))
    try:
        shorter = drop_oldest_turns(
            tokenizer, record.value, max_length=limit, options=encode_options, encoding=encoding
        )
    except SequenceTooLongError as error:
        reason = f"{too_long}; the first user turn with the latest turns still takes {error.length}"
        return drop("too_long", reason, "Raise max_length to keep it")
    return truncated(shorter)
