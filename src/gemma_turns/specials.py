"""The special ids of a loaded model, found by piece text, never hard-coded, and its dialect.

Gemma 2 and Gemma 3 put the same pieces at different ids (``<start_of_turn>`` is 106 in
Gemma 2 and 105 in Gemma 3), and Gemma 4 puts other pieces at Gemma 3's ids, so every id here
is looked up in the model at load time, by the piece texts of the model's dialect; a
required piece that is missing is an error that names it.

This module does not import sentencepiece: it takes any object with the processor's
``piece_to_id``/``id_to_piece``/``encode``/``get_piece_size`` methods.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from . import chat_format
from .chat_format import Dialect, Marker
from .errors import TokenizerError

__all__ = ["SpecialTokens", "find_dialect", "find_reserved_pieces"]

# Pieces that are reserved in the Gemma vocabularies besides every dialect's markers: <mask>,
# [multimodal], Gemma 2's [@BOS@], and every <unusedN>. Only the ones the model matches
# inside text (USER_DEFINED pieces) can be forged by content; see find_reserved_pieces.
RESERVED_NAMES = frozenset({"<mask>", "[multimodal]", "[@BOS@]"})
UNUSED_BYTES = re.compile(rb"<unused\d+>")
LEGACY_NAMES = ("start_of_turn", "end_of_turn", "start_of_image", "end_of_image")
CORE_PIECES = {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "unk": "<unk>", "newline": "\n"}


@dataclass(frozen=True, slots=True, kw_only=True)
class SpecialTokens:
    """Ids of the pieces gemma-turns places as integers: BOS, EOS, PAD, <unk>, the newline,
    and the markers of the model's dialect (``markers``; a marker the model lacks, such as
    Gemma 2's image marker, is absent)."""

    pad: int
    eos: int
    bos: int
    unk: int
    newline: int
    markers: Mapping[Marker, int]

    @classmethod
    def from_processor(cls, processor, dialect: Dialect, *, path: str | None = None) -> SpecialTokens:
        """Look every special piece up in ``processor``; raise TokenizerError for a missing one."""
        found = {}
        for name, piece in CORE_PIECES.items():
            found[name] = _require(processor, piece, path, "Gemma's chat format needs")
        markers = {}
        for marker, piece in dialect.pieces.items():
            if marker in dialect.required:
                markers[marker] = _require(processor, piece, path, f"the {dialect.name} chat format needs")
            elif (token_id := _piece_id(processor, piece)) is not None:
                markers[marker] = token_id
        newline = processor.encode("\n")
        if newline != [found["newline"]]:
            raise TokenizerError(
                f"the model encodes '\\n' as {newline}, not as its single piece "
                f"{found['newline']}; Gemma models match newline runs as whole pieces",
                path=path,
                piece="\n",
            )
        return cls(**found, markers=markers)

    # The Gemma 2/3 names of the markers, kept for one release.
    start_of_turn = property(lambda self: self.markers[Marker.TURN_OPEN])
    end_of_turn = property(lambda self: self.markers[Marker.TURN_CLOSE])
    start_of_image = property(lambda self: self.markers.get(Marker.IMAGE))
    end_of_image = property(lambda self: self.markers.get(Marker.IMAGE_END))

    def as_dict(self) -> dict[str, int | None]:
        """Name to id, markers by their name (``turn_open``, ``image``, ...); the Gemma 2/3
        names (``start_of_turn`` ...) too, for readers of older manifests, for one release."""
        core = {name: getattr(self, name) for name in CORE_PIECES}
        markers = {marker.value: token_id for marker, token_id in self.markers.items()}
        legacy = {name: getattr(self, name) for name in LEGACY_NAMES}
        return core | markers | legacy

    def __repr__(self) -> str:
        markers = {marker.value: token_id for marker, token_id in self.markers.items()}
        names = {name: getattr(self, name) for name in CORE_PIECES} | markers
        return "SpecialTokens(" + ", ".join(f"{k}={v}" for k, v in names.items()) + ")"


def find_dialect(processor, *, path: str | None = None) -> Dialect:
    """The dialect whose markers the model has; TokenizerError when none or several match."""
    matches = chat_format.detect(lambda piece: _piece_id(processor, piece) is not None)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise TokenizerError(
            f"the model has the turn markers of several chat formats ({', '.join(d.name for d in matches)}); "
            "say which one it speaks: dialect=... (CLI: --dialect)",
            path=path,
        )
    missing = {
        d.name: [d.pieces[m] for m in Marker if m in d.required and _piece_id(processor, d.pieces[m]) is None]
        for d in chat_format.DIALECTS.values()
    }
    lacking = "; ".join(f"{name} needs {', '.join(map(repr, pieces))}" for name, pieces in missing.items())
    raise TokenizerError(
        f"the model has the turn markers of no Gemma chat format: it lacks pieces ({lacking}); "
        "load the tokenizer.model of a Gemma checkpoint",
        path=path,
        piece=next(iter(missing.values()))[0],
    )


def _require(processor, piece: str, path, needed_by: str) -> int:
    token_id = _piece_id(processor, piece)
    if token_id is None:
        raise TokenizerError(
            f"the model has no piece {piece!r}, which {needed_by}; load a Gemma tokenizer.model "
            "or a model with the same special pieces",
            path=path,
            piece=piece,
        )
    return token_id


def _piece_id(processor, piece: str) -> int | None:
    token_id = processor.piece_to_id(piece)
    if processor.id_to_piece(token_id) != piece:  # piece_to_id answers unk for a missing piece
        return None
    return token_id


def find_reserved_pieces(processor, model_proto: bytes) -> dict[str, int]:
    """Reserved pieces (every dialect's markers, and the names above) that the model matches
    inside text, with their ids.

    The ``<unusedN>`` names are read off the serialized model (``model_proto``) by one regex
    in C, not a Python loop over 262,144 pieces; every candidate is then checked against the
    model: it must be a whole piece, and one SentencePiece matches in text (a CONTROL piece
    cannot be forged and is left out).
    """
    names = RESERVED_NAMES | chat_format.reserved_pieces()
    names |= {match.decode() for match in set(UNUSED_BYTES.findall(model_proto))}
    names = sorted(names)
    ids = processor.piece_to_id(names)
    found = {name: token_id for name, token_id, back in zip(names, ids, processor.id_to_piece(ids)) if back == name}
    names = list(found)
    encoded = processor.encode(names) if names else []
    return {name: found[name] for name, ids in zip(names, encoded) if ids == [found[name]]}
