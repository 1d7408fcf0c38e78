"""The special ids of a loaded model, found by piece text, never hard-coded.

Gemma 2 and Gemma 3 put the same pieces at different ids (``<start_of_turn>`` is 106 in
Gemma 2 and 105 in Gemma 3), so every id here is looked up in the model at load time; a
required piece that is missing is an error that names it.

This module does not import sentencepiece: it takes any object with the processor's
``piece_to_id``/``id_to_piece``/``encode``/``get_piece_size`` methods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from .errors import TokenizerError

__all__ = ["SpecialTokens", "find_reserved_pieces"]

# Pieces that are reserved in the Gemma vocabularies: turn and image markers, <mask>,
# [multimodal], Gemma 2's [@BOS@], and every <unusedN>. Only the ones the model matches
# inside text (USER_DEFINED pieces) can be forged by content; see find_reserved_pieces.
RESERVED_NAMES = (
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<mask>",
    "[multimodal]",
    "[@BOS@]",
)
UNUSED_PIECE = re.compile(r"<unused\d+>")


@dataclass(frozen=True, slots=True, kw_only=True)
class SpecialTokens:
    """Ids of the pieces gemma-turns places as integers. Image markers are ``None`` in models
    without them (Gemma 2)."""

    pad: int
    eos: int
    bos: int
    unk: int
    start_of_turn: int
    end_of_turn: int
    newline: int
    start_of_image: int | None = None
    end_of_image: int | None = None

    PIECES = {
        "pad": "<pad>",
        "eos": "<eos>",
        "bos": "<bos>",
        "unk": "<unk>",
        "start_of_turn": "<start_of_turn>",
        "end_of_turn": "<end_of_turn>",
        "newline": "\n",
        "start_of_image": "<start_of_image>",
        "end_of_image": "<end_of_image>",
    }
    OPTIONAL = frozenset({"start_of_image", "end_of_image"})

    @classmethod
    def from_processor(cls, processor, *, path: str | None = None) -> SpecialTokens:
        """Look every special piece up in ``processor``; raise TokenizerError for a missing one."""
        found = {}
        for field in fields(cls):
            piece = cls.PIECES[field.name]
            token_id = _piece_id(processor, piece)
            if token_id is None and field.name not in cls.OPTIONAL:
                raise TokenizerError(
                    f"the model has no piece {piece!r}, which Gemma's chat format needs; "
                    "load a Gemma tokenizer.model or a model with the same special pieces",
                    path=path,
                    piece=piece,
                )
            found[field.name] = token_id
        newline = processor.encode("\n")
        if newline != [found["newline"]]:
            raise TokenizerError(
                f"the model encodes '\\n' as {newline}, not as its single piece "
                f"{found['newline']}; Gemma models match newline runs as whole pieces",
                path=path,
                piece="\n",
            )
        return cls(**found)

    def as_dict(self) -> dict[str, int | None]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


def _piece_id(processor, piece: str) -> int | None:
    token_id = processor.piece_to_id(piece)
    if processor.id_to_piece(token_id) != piece:  # piece_to_id answers unk for a missing piece
        return None
    return token_id


def find_reserved_pieces(processor, pieces: list[str]) -> dict[str, int]:
    """Reserved pieces (by the names above) that the model matches inside text, with their ids.

    ``pieces`` is the model's whole vocabulary, by id. A reserved piece that SentencePiece
    never matches in text (a CONTROL piece) cannot be forged and is left out.
    """
    candidates = {
        piece: token_id
        for token_id, piece in enumerate(pieces)
        if piece in RESERVED_NAMES or UNUSED_PIECE.fullmatch(piece)
    }
    names = list(candidates)
    encoded = processor.encode(names) if names else []
    return {
        name: candidates[name] for name, ids in zip(names, encoded) if ids == [candidates[name]]
    }
