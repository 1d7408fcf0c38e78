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

import numpy as np

from .encoding import ID_DTYPE, MASK_DTYPE, Encoding

__all__ = ["Splitter", "WholeText"]

# Up to this many ids, the markers are found with plain Python, beyond with numpy.
SHORT_SEQUENCE = 256
# Up to this many units (BOS, markers, texts), the mask is set a slice per trained unit,
# beyond by ``np.repeat``, whose cost does not grow with them.
MANY_UNITS = 64


class WholeText:
    """One conversation to encode as one string, ``text``, and what its split needs.

    Per unit (BOS, then each run): ``bits``, its mask bit, and ``lengths``, its length in
    ids (1 for BOS and a marker, a constant text's, 0 for a free text until the split finds
    it). ``fixed_ids``: the ids of every unit but the free texts, in order (BOS, markers,
    constant texts). ``groups``: per stretch between two markers, ``(free, before, fixed)``:
    the index of its free text (-1: none; at most one), and how many fixed ids come before
    it and in all."""

    __slots__ = ("notes", "text", "bits", "lengths", "fixed_ids", "groups")

    def __init__(self, notes: tuple[str, ...], bos: int):
        self.notes = notes
        self.text = ""
        self.bits: list[int] = [0]
        self.lengths: list[int] = [1]
        self.fixed_ids: list[int] = [bos]
        self.groups: list[tuple[int, int, int]] = []


class Splitter:
    """Splits the ids of a whole text, for one model: its BOS and turn-marker ids."""

    def __init__(self, bos: int, marker_ids, vocab_size: int):
        self.bos = bos
        self.marker_set = frozenset(marker_ids)
        self.is_marker = np.zeros(vocab_size, dtype=bool)
        self.is_marker[list(self.marker_set)] = True

    def split(self, whole: WholeText, encoded: list[int]) -> Encoding | None:
        """The Encoding of ``whole`` from the ids of its text, or None when they do not
        split into its units as the segment path gives them.

        The markers found in the ids end the groups; a group's free text has the length its
        fixed ids leave. Then everything outside the free texts must be exactly
        ``fixed_ids``: BOS, each marker and each constant text as its own ids.
        """
        ids = [self.bos, *encoded]
        array = np.array(ids, dtype=ID_DTYPE)
        if len(ids) <= SHORT_SEQUENCE:  # plain Python beats numpy's cost per call
            markers = self.marker_set
            ends = [k for k, token_id in enumerate(ids) if token_id in markers]
        else:
            ends = np.flatnonzero(self.is_marker[array]).tolist()
        groups = whole.groups
        if len(ends) + 1 != len(groups):
            return None
        ends.append(len(ids))
        lengths = whole.lengths
        outside: list[int] = []
        start = 1  # the first group starts after BOS
        cursor = 0  # ids up to here are in ``outside`` or a free text
        for (free, before, fixed), end in zip(groups, ends):
            left = end - start - fixed
            if free < 0:
                if left:
                    return None
            else:
                if left < 0:
                    return None
                lengths[free] = left
                outside += ids[cursor:start + before]
                cursor = start + before + left
            start = end + 1
        outside += ids[cursor:]
        if outside != whole.fixed_ids:
            return None  # a marker or a constant text did not come out as its own ids
        return Encoding(array, _mask(whole.bits, lengths, len(ids)), whole.notes)


def _mask(bits: list[int], lengths: list[int], size: int) -> np.ndarray:
    """Each unit's bit over its length. A short conversation has a few dozen units and a
    few trained ones: zeros and a slice set for each trained unit cost half of ``np.repeat``."""
    if len(bits) > MANY_UNITS:
        return np.repeat(np.array(bits, dtype=MASK_DTYPE), lengths)
    mask = np.zeros(size, dtype=MASK_DTYPE)
    position = 0
    for bit, length in zip(bits, lengths):
        if bit:
            mask[position:position + length] = 1
        position += length
    return mask
