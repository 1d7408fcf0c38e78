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
SHAPE = r"<[^<>\[\]\s]+>|\[[^<>\[\]\s]+\]"
SHAPES = re.compile(rf"(?:{SHAPE})(?:\n(?:{SHAPE}))*")  # pieces, one a line
TRAILING_NUMBER = re.compile(r"\d+([>\]])$", re.MULTILINE)


class ReservedText:
    """Finds occurrences of a fixed set of reserved piece texts.

    Reserved pieces look like ``<name>`` or ``[name]`` with no ``<``, ``>``, ``[``, ``]`` or
    whitespace inside. A regex finds every such candidate and a set lookup keeps the reserved
    ones. A candidate holds no bracket inside, so none can hide another (in ``<a[multimodal]>``
    the candidate is ``[multimodal]``), and no other USER_DEFINED piece (whitespace runs, HTML
    tags) can overlap one: every occurrence found here is one SentencePiece matches, a
    property the tests check against the tokenizer.
    """

    def __init__(self, pieces: Iterable[str]):
        self.pieces = frozenset(pieces)
        # One line per piece, so each check below is one regex call in C, not one per piece
        # (a model has over 6,000): whitespace cannot occur inside a reserved piece.
        lines = "\n".join(sorted(self.pieces))
        if self.pieces and not SHAPES.fullmatch(lines):
            raise ValueError("reserved pieces must look like <name> or [name]")
        longest = max((len(p) for p in self.pieces), default=3) - 2
        self._candidate = re.compile(rf"<[^<>\[\]\s]{{1,{longest}}}>|\[[^<>\[\]\s]{{1,{longest}}}\]")
        # Every reserved piece starts with one of these few stems ("<unused" stands for
        # 6,242 pieces): text with none of them is decided by one search for them all.
        stems = sorted(set(TRAILING_NUMBER.sub("", lines).split("\n")) - {""})
        self._has_stem = re.compile("|".join(map(re.escape, stems)) or "(?!)").search

    def find(self, text: str) -> list[tuple[int, str]]:
        """``(character offset, piece)`` of each reserved piece in ``text``, left to right."""
        if "<" not in text and "[" not in text:
            return []  # the common case, decided without the regex
        if not self._has_stem(text):
            return []  # code and HTML: brackets, but no reserved piece
        return [
            (match.start(), match.group())
            for match in self._candidate.finditer(text)
            if match.group() in self.pieces
        ]

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
