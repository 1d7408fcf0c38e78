"""One conversation encoded as one string, and its ids split back into the formatter's runs.

For a single conversation (``encode_chat``: a server's prompt) SentencePiece's cost per call
and the encoder's per text dominate, so the whole turn text goes to SentencePiece at once,
markers spelled, as a plain encode of the rendered template sees it. The turn markers are
pieces it never merges with their neighbours, so the ids of the whole text are the ids of its
texts end to end: :class:`WholeText` is the conversation planned that way (built by
``GemmaTokenizer._whole_plan``), and :class:`Splitter` finds where each text's ids end from
where the markers fall, and repeats every unit's mask bit over its length.

Nothing is assumed: the markers must come out where the runs put them and every constant
text (the newline after a turn, ``model\\n``) as its own ids, or the split answers None and
the encoder takes the segment-by-segment path. A property test compares both paths on both
real tokenizers. Batches always take the segment path: measured side by side (encoding
each conversation as one string, the split done for a whole batch with numpy), SentencePiece
took as long for the whole texts as for the segments and the planning cost more.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np

from .encoding import ID_DTYPE, MASK_DTYPE, Encoding

__all__ = ["FREE", "MARKER", "Splitter", "WholeText"]

# A unit's length before the split: a marker's is 1, a constant text's is known, and a free
# text's is what the markers around it leave.
MARKER, FREE = -1, -2
# Up to this many ids, the split is done with plain Python, beyond with numpy.
SHORT_SEQUENCE = 256


class WholeText:
    """One conversation to encode as one string: ``text``, and per unit (BOS, then each run)
    its mask bit (``bits``) and length (``known``: 1 for BOS, MARKER, a constant's length,
    or FREE); ``expected``: the marker ids in order; ``constant_ids``: the constant texts'
    ids end to end; ``notes``: the conversation's."""

    __slots__ = ("notes", "text", "expected", "bits", "known", "constant_ids")

    def __init__(self, notes: tuple[str, ...]):
        self.notes = notes
        self.text = ""
        self.expected: list[int] = []
        self.bits: list[int] = [0]
        self.known: list[int] = [1]
        self.constant_ids: list[int] = []


class Splitter:
    """Splits the ids of a whole text, for one model: its BOS and turn-marker ids."""

    def __init__(self, bos: int, marker_ids, vocab_size: int):
        self.bos = bos
        self.marker_set = frozenset(marker_ids)
        self.is_marker = np.zeros(vocab_size, dtype=bool)
        self.is_marker[list(self.marker_set)] = True

    def split(self, whole: WholeText, encoded: list[int]) -> Encoding | None:
        """The Encoding of ``whole`` from the ids of its text, or None when they do not
        split into its units as the segment path gives them."""
        if len(encoded) + 1 <= SHORT_SEQUENCE:  # plain Python beats numpy's cost per call
            ids = [self.bos, *encoded]
            markers = self.marker_set
            where = [k for k, token_id in enumerate(ids) if token_id in markers]
            if [ids[k] for k in where] != whole.expected:
                return None
        else:
            ids = np.empty(len(encoded) + 1, dtype=ID_DTYPE)
            ids[0], ids[1:] = self.bos, encoded
            found = np.flatnonzero(self.is_marker[ids])
            if len(found) != len(whole.expected) or not np.array_equal(ids[found], whole.expected):
                return None
            where = found.tolist()
        lengths = _unit_lengths(whole.known, where, len(ids))
        if lengths is None:
            return None
        constant_ids: list[int] = []
        for start, length, known in zip(accumulate(lengths, initial=0), lengths, whole.known):
            if known > 0 and start:  # a constant text (the unit at 0 is BOS)
                segment = ids[start:start + length]
                constant_ids += segment if type(segment) is list else segment.tolist()
        if constant_ids != whole.constant_ids:
            return None  # a constant text did not come out as its own ids
        mask = np.repeat(np.array(whole.bits, dtype=MASK_DTYPE), lengths)
        return Encoding(np.asarray(ids, dtype=ID_DTYPE), mask, whole.notes)


def _unit_lengths(known: list[int], markers_at: list[int], total: int) -> list[int] | None:
    """Each unit's length in a whole-conversation encode of ``total`` ids.

    ``known`` holds BOS (1), then per run MARKER, a constant text's length, or FREE (a text
    whose length is what its group leaves); ``markers_at`` the ids' positions of the markers.
    The ids between two markers are one group: at most one FREE unit each, and the lengths
    must add up exactly; None when they do not.
    """
    lengths = list(known)
    group_start, used, free = 1, 0, None
    marker_positions = iter([*markers_at, total])

    def close(end: int) -> bool:
        span = end - group_start
        if free is None:
            return span == used
        lengths[free] = span - used
        return span - used >= 0

    for unit in range(1, len(known)):
        length = known[unit]
        if length == MARKER:
            position = next(marker_positions)
            if not close(position):
                return None
            lengths[unit] = 1
            group_start, used, free = position + 1, 0, None
        elif length == FREE:
            if free is not None:
                return None
            free = unit
        else:
            used += length
    if not close(next(marker_positions)):
        return None
    return lengths
