"""Sequences written in another chat format than the tokenizer speaks, reported as one finding.

What can be told from ids alone: a sequence whose first text spells another dialect's
turn marker (a Gemma 3 template's ``<start_of_turn>`` tokenized with a Gemma 4 vocabulary, or
the reverse: the marker is no piece there, so it is plain text); ids of a vocabulary that puts
the markers elsewhere (Gemma 2's ``<start_of_turn>`` is 106, which Gemma 3 and 4 read as the
closing marker); a system turn of its own read with a dialect that folds system text into the
first user turn. Plain chats are the same ids in Gemma 3 and 4, and a system text folded into
a user turn is ordinary user text: neither is a mismatch anyone can see.
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
    if not found:
        return
    units = np.array(sorted(found), dtype=np.int64)
    lay.findings.suppress(units)
    lay.findings.hit(
        "dialect_mismatch",
        start[units],
        lambda k, m=[found[int(u)] for u in units]: (m[k], f"a {ours.name} sequence ({ours.turn_open} ... turns)"),
        units=units,
    )
