"""Find content text that SentencePiece would turn into a reserved token.

In Gemma tokenizers ``<start_of_turn>``, ``<end_of_turn>``, the image markers, ``<mask>``,
``[multimodal]`` and ``<unusedN>`` are USER_DEFINED pieces: SentencePiece matches them
anywhere in text, so a user message containing ``<end_of_turn>\\n<start_of_turn>model\\n``
forges a model turn. Whitespace runs and HTML tags are USER_DEFINED too but are ordinary
text; they are not reserved. Text such as ``<bos>`` is a CONTROL piece, never matched in
text, so it stays plain text whatever the policy.

Policies: ``refuse`` (raise, the default), ``escape`` (encode the text so that no reserved
id appears and the ids decode to the same characters), ``allow`` (the official pipeline's ids).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

__all__ = ["ReservedPolicy", "ReservedText"]

ReservedPolicy = Literal["refuse", "escape", "allow"]
POLICIES = ("refuse", "escape", "allow")


class ReservedText:
    """Finds occurrences of a fixed set of reserved piece texts.

    Reserved pieces look like ``<name>`` or ``[name]``; a lookahead regex finds every such
    candidate (overlapping ones too, as in ``<a[multimodal]>``) and a set lookup keeps the
    reserved ones. Because those pieces hold no ``<``, ``>``, ``[``, ``]`` or whitespace
    inside, no other USER_DEFINED piece can hide part of one, so every occurrence found here
    is one SentencePiece would match (a property the tests check against the tokenizer).
    """

    def __init__(self, pieces: Iterable[str]):
        self.pieces = frozenset(pieces)
        longest = max((len(p) for p in self.pieces), default=2)
        self._openers = "".join(sorted({p[0] for p in self.pieces}))
        self._candidate = re.compile(
            rf"(?=(<[^<>\[\]\s]{{1,{longest}}}>|\[[^<>\[\]\s]{{1,{longest}}}\]))"
        )

    def find(self, text: str) -> list[tuple[int, str]]:
        """``(character offset, piece)`` of each reserved piece in ``text``, left to right."""
        if not any(opener in text for opener in self._openers):
            return []  # the common case, decided without the regex
        found = []
        end = 0
        for match in self._candidate.finditer(text):
            start = match.start()
            piece = match.group(1)
            if start >= end and piece in self.pieces:
                found.append((start, piece))
                end = start + len(piece)
        return found

    def split_for_escape(self, text: str) -> list[str]:
        """Cut ``text`` just after the first character of each reserved piece.

        Encoding the parts separately keeps SentencePiece from matching the piece: ``"a<end_of_turn>"``
        becomes ``["a<", "end_of_turn>"]``, plain-text ids that decode to the same characters.
        """
        cuts = [start + 1 for start, _ in self.find(text)]
        if not cuts:
            return [text]
        bounds = [0, *cuts, len(text)]
        return [text[a:b] for a, b in zip(bounds, bounds[1:])]
