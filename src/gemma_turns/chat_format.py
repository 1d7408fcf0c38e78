"""The chat formats Gemma models speak, as data: one :class:`Dialect` per format.

A dialect says everything that differs between formats: the marker pieces, how a turn opens
and closes, the roles and their aliases, where system text goes, what is trimmed, the
generation prompt, which tokens a training mask covers, and which endings are legal. The
formatter renders from it; the layout reader, parser and validator read ids back through it;
no other module names a marker piece, a role or an offset.

    Gemma 2 / 3:  <start_of_turn>user\\n{system}\\n\\n{content}<end_of_turn>\\n
                  <start_of_turn>model\\n{content}<end_of_turn>\\n
                  <start_of_turn>model\\n                       (the generation prompt)

The dialect of a model is found from its pieces (:func:`detect`): the first dialect whose
turn-opening piece the model matches as one piece. Adding a format means adding one
``Dialect`` value to :data:`DIALECTS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

__all__ = ["DIALECTS", "Dialect", "GEMMA3", "Marker", "detect", "get"]


class Marker(Enum):
    """Tokens the formatter places as ids, never as text. A plain Enum: a marker never equals
    the text that spells it. Each dialect maps the markers it uses to their piece text."""

    TURN_OPEN = "turn_open"
    TURN_CLOSE = "turn_close"
    IMAGE = "image"
    IMAGE_END = "image_end"  # a piece of the Gemma 3 vocabulary, never placed by the formatter

    # Old spellings, kept for one release.
    START_OF_TURN = "turn_open"
    END_OF_TURN = "turn_close"
    START_OF_IMAGE = "image"


SystemPlacement = Literal["first_user_turn", "own_turn"]


@dataclass(frozen=True, kw_only=True)
class Dialect:
    """One chat format. Every field is data the formatter and the layout reader share.

    ``roles`` are the role names a turn header may carry, ``aliases`` map input roles to
    them; ``trained_role`` is the role whose content a training mask covers. ``system``
    says where a system message goes: ``first_user_turn`` (its text, then
    ``system_separator``, opens the first user turn) or ``own_turn`` (a turn of
    ``system_role``, which must then be one of ``roles``). ``media`` maps a
    content part's ``type`` to its marker.
    """

    name: str
    description: str
    pieces: Mapping[Marker, str]
    required: frozenset[Marker] = frozenset({Marker.TURN_OPEN, Marker.TURN_CLOSE})
    roles: tuple[str, ...]
    aliases: Mapping[str, str]
    trained_role: str = "model"
    system: SystemPlacement
    system_role: str = "system"  # the header role of a system turn (own_turn)
    system_separator: str = ""
    trim_system: bool
    alternating: bool
    header_end: str = "\n"  # after the role: ends the turn header
    turn_end: str = "\n"  # after the closing marker
    media: Mapping[str, Marker] = field(default_factory=dict)

    @property
    def turn_open(self) -> str:
        return self.pieces[Marker.TURN_OPEN]

    @property
    def turn_close(self) -> str:
        return self.pieces[Marker.TURN_CLOSE]

    @property
    def generation_role(self) -> str:
        """The role of the turn the generation prompt opens."""
        return self.trained_role

    @property
    def user_role(self) -> str:
        return self.aliases["user"]

    def role_of(self, given: str) -> str | None:
        """The header role of an input role, or None if the dialect has no such role."""
        return self.aliases.get(given)

    def split_system(self, text: str) -> tuple[str, str] | None:
        """``(system, content)`` with ``system + system_separator + content == text`` and
        ``content`` trimmed (possibly empty), or None if there is no such split: how a first
        user turn that holds a system text is read back."""
        separator = self.system_separator
        if self.system != "first_user_turn" or not separator:
            return None
        if text.endswith(separator):
            return text[: -len(separator)], ""
        if text[-1:].isspace():
            return None
        cuts = [m.start() for m in re.finditer(re.escape(separator) + r"(?=\S)", text)]
        return (text[: cuts[-1]], text[cuts[-1] + len(separator) :]) if cuts else None

    def __str__(self) -> str:
        return self.name


GEMMA3 = Dialect(
    name="gemma3",
    description="Gemma 2 / 3 (and 3n, MedGemma): <start_of_turn>role ... <end_of_turn>, "
    "roles user and model, system text folded into the first user turn",
    pieces={
        Marker.TURN_OPEN: "<start_of_turn>",
        Marker.TURN_CLOSE: "<end_of_turn>",
        Marker.IMAGE: "<start_of_image>",
        Marker.IMAGE_END: "<end_of_image>",
    },
    roles=("user", "model"),
    aliases={"user": "user", "model": "model", "assistant": "model"},
    system="first_user_turn",
    system_separator="\n\n",
    trim_system=False,
    alternating=True,
    media={"image": Marker.IMAGE},
)

DIALECTS: dict[str, Dialect] = {GEMMA3.name: GEMMA3}


def get(name: str | Dialect) -> Dialect:
    """The dialect called ``name`` (or ``name`` itself when it is a Dialect)."""
    if isinstance(name, Dialect):
        return name
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown dialect {name!r}; choose one of {', '.join(DIALECTS)}") from None


def detect(has_piece) -> list[Dialect]:
    """The dialects whose required markers are all pieces of a model (``has_piece(text)``
    tells whether the model has ``text`` as one piece)."""
    return [d for d in DIALECTS.values() if all(has_piece(d.pieces[m]) for m in d.required)]
