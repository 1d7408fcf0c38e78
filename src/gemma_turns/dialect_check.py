"""Sequences written in another chat format than the tokenizer speaks, reported as one finding.

What can be told from ids alone: a sequence whose first text spells another dialect's
turn marker (a Gemma 3 template's ``<start_of_turn>`` tokenized with a Gemma 4 vocabulary, or
the reverse: the marker is no piece there, so it is plain text); ids of a vocabulary that puts
the markers elsewhere (Gemma 2's ``<start_of_turn>`` is 106, which Gemma 3 and 4 read as the
closing marker); a system turn of its own read with a dialect that folds system text into the
first user turn. Plain chats are the same ids in Gemma 3 and 4, and a system text folded into
a user turn is ordinary user text: neither is a mismatch anyone can see.

Ids of another vocabulary (:func:`foreign`: Gemma 2, Llama, Mistral, ChatML/Qwen, a larger
vocabulary), when they are at least half of a batch, are one ``foreign_ids`` finding for the
whole batch.
"""

from __future__ import annotations

import numpy as np

from . import chat_format

__all__ = ["mismatch"]

LOOK_AHEAD = 16  # tokens decoded at a suspect start


def mismatch(lay, tokenizer) -> None:
    """Hit ``dialect_mismatch`` once per unit that looks written for another dialect, and keep
    that unit's other findings out of the report (they all follow from it)."""
    v, b = lay.vocab, lay.units
    flat = b.flat
    if len(flat) == 0:
        return
    start = lay.first_content
    inside = start < b.ends
    first = np.full(len(start), -1, dtype=np.int64)
    first[inside] = flat[start[inside]]
    ours = tokenizer.dialect
    others = [d for d in chat_format.DIALECTS.values() if d.name != ours.name]
    found: dict[int, str] = {}
    for u in np.flatnonzero(inside & (first == v.close)).tolist():
        found[u] = (
            f"the sequence opens with {v.close_piece} (id {v.close}), the closing marker: its ids "
            f"come from a vocabulary that puts the markers elsewhere (Gemma 2's <start_of_turn> is "
            f"id 106, <end_of_turn> 107); re-encode it with this {ours.name} tokenizer"
        )
    suspect = inside & (first >= 0) & (first < v.size)
    suspect[suspect] = v.maybe_text_bos[first[suspect]] & ~v.is_break[first[suspect]]
    for u in np.flatnonzero(suspect).tolist():
        a = int(start[u])
        ids = flat[a : min(int(b.ends[u]), a + LOOK_AHEAD)]
        ids = ids[: np.argmin((ids >= 0) & (ids < v.size))] if not ((ids >= 0) & (ids < v.size)).all() else ids
        text = v.decode(ids.tolist()).lstrip()
        text = text.removeprefix("<bos>").lstrip()
        for other in others:
            if text.startswith(other.turn_open):
                found[u] = (
                    f"the sequence spells {other.turn_open} as text: it was formatted for "
                    f"{other.name} ({other.description.split(':')[0]}) and tokenized with this "
                    f"{ours.name} tokenizer, which has no such piece; format it for {ours.name} "
                    f"(its turns open with {ours.turn_open}), or load a {other.name} tokenizer"
                )
    if ours.system == "first_user_turn" and "system" not in v.roles:
        system = tokenizer.processor.piece_to_id("system")
        if v.pieces[system] == "system":
            role = b.at(start, 1, np.arange(len(start)))
            for u in np.flatnonzero(inside & (first == v.open) & (role == system)).tolist():
                found.setdefault(
                    u,
                    "the sequence opens a system turn of its own: the Gemma 4 layout, read with a "
                    f"{ours.name} tokenizer, whose format folds system text into the first user turn; "
                    "load the Gemma 4 tokenizer",
                )
    for u in lay.findings.suppressed.tolist():
        found.pop(u, None)  # already explained (foreign ids)
    if not found:
        return
    units = np.array(sorted(found), dtype=np.int64)
    lay.findings.suppress(units)
    lay.findings.explain(
        "dialect_mismatch",
        start[units],
        lambda k, m=[found[int(u)] for u in units]: (m[k], f"a {ours.name} sequence ({ours.turn_open} ... turns)"),
        units=units,
    )


# Other tokenizers, told by the ids a sequence opens with (ids other vocabularies give their
# BOS and first markers). Each: a name, what gives it away, a test on (first id, second id,
# largest id) per unit.
FOREIGN = (
    (
        "Gemma 2",
        "BOS then 106: Gemma 2's <start_of_turn> is 106 and its <end_of_turn> 107, which this "
        "vocabulary reads as {close} and '\\n'",
        lambda first, second, top, v: (first == v.bos) & (second == 106) & (v.close == 106),
    ),
    (
        "Llama 3",
        "<|begin_of_text|> 128000 or <|start_header_id|> 128006 first",
        lambda first, second, top, v: np.isin(first, (128000, 128006)),
    ),
    (
        "ChatML (Qwen)",
        "<|im_start|> 151644 first",
        lambda first, second, top, v: first == 151644,
    ),
    (
        "Mistral",
        "BOS 1 then [INST] 3 (this vocabulary's <eos> then <unk>)",
        lambda first, second, top, v: (first == 1) & (second == 3),
    ),
    (
        "Llama 2 / Mistral (a 32k SentencePiece vocabulary)",
        "BOS 1 (this vocabulary's <eos>) first and no id above 32,767",
        lambda first, second, top, v: (first == 1) & (second != 3) & (top < 32768),
    ),
    (
        "a larger vocabulary",
        "no BOS first, and ids at or above this vocabulary's size {size}",
        lambda first, second, top, v: (first != v.bos) & (top >= v.size),
    ),
)


def foreign(lay, tokenizer) -> None:
    """One ``foreign_ids`` finding when most sequences (at least half) carry the ids of
    another tokenizer or Gemma generation; every finding in those sequences is dropped (they
    all follow from it) and each is counted invalid."""
    v, b = lay.vocab, lay.units
    flat = b.flat
    lengths = b.ends - b.starts
    nonempty = np.flatnonzero(lengths > 0)
    if len(nonempty) == 0:
        return
    starts = b.starts[nonempty]
    first = flat[starts].astype(np.int64)
    second = np.where(lengths[nonempty] > 1, flat[np.minimum(starts + 1, len(flat) - 1)], -1).astype(np.int64)
    top = np.maximum.reduceat(flat, starts).astype(np.int64) if len(flat) else first
    for name, sign, test in FOREIGN:
        hit = np.asarray(test(first, second, top, v), dtype=bool)
        count = int(hit.sum())
        if count == 0 or 2 * count < len(nonempty):
            continue
        units = nonempty[hit]
        clue = sign.format(close=v.close_piece, size=f"{v.size:,}")
        message = (
            f"the ids come from another tokenizer: {name} ({clue}) in {count} of {len(nonempty)} "
            f"sequences of this batch; their other findings are left out. Re-encode the "
            f"conversations with this {tokenizer.dialect.name} tokenizer (gemma-turns encode), or "
            f"validate with the tokenizer they were made with"
        )
        lay.findings.suppress(units)
        at = units[:1]
        where = np.where(lay.first_content[at] < b.ends[at], lay.first_content[at], b.starts[at])
        lay.findings.explain(
            "foreign_ids",
            where,  # the first id that gives it away (after BOS, when there is one)
            lambda k, m=message: (m, f"{tokenizer.dialect.name} ids (<bos> {v.bos}, {v.open_piece} {v.open})"),
            units=at,
            rows_explained=np.unique(b.rows[units]),
        )
        return
