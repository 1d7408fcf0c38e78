"""The chat formats Gemma models speak, as data: one :class:`Dialect` per format.

A dialect says everything that differs between formats: the marker pieces, how a turn opens
and closes, the roles and their aliases, where system text goes, what is trimmed, the
generation prompt, which tokens a training mask covers, and which endings are legal. The
formatter renders from it; the layout reader, parser and validator read ids back through it;
no other module names a marker piece, a role or an offset.

    Gemma 2 / 3:  <start_of_turn>user\\n{system}\\n\\n{content}<end_of_turn>\\n
                  <start_of_turn>model\\n{content}<end_of_turn>\\n
                  <start_of_turn>model\\n                       (the generation prompt)

    Gemma 4:      <|turn>system\\n<|think|>\\n{system}<|tool>declaration:...<tool|><turn|>\\n
                  <|turn>user\\n{content}<turn|>\\n
                  <|turn>model\\n<|channel>thought\\n{reasoning}\\n<channel|>
                      <|tool_call>call:NAME{...}<tool_call|><|tool_response>response:NAME{...}<tool_response|>
                      {content}<turn|>\\n
                  <|turn>model\\n[<|channel>thought\\n<channel|>]     (the prompt; the empty
                                                                 thought only for large checkpoints)

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

__all__ = ["CHECKPOINTS", "DIALECTS", "Checkpoint", "Dialect", "GEMMA3", "GEMMA4", "Marker", "detect", "get"]


class Marker(Enum):
    """Tokens the formatter places as ids, never as text. A plain Enum: a marker never equals
    the text that spells it. Each dialect maps the markers it uses to their piece text."""

    TURN_OPEN = "turn_open"
    TURN_CLOSE = "turn_close"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    IMAGE_END = "image_end"  # a piece of the Gemma 3 vocabulary, never placed by the formatter
    THINK = "think"  # thinking switched on, at the start of the system turn
    CHANNEL_OPEN = "channel_open"  # a thought channel in a model turn
    CHANNEL_CLOSE = "channel_close"
    TOOL_OPEN = "tool_open"  # a tool declaration in the system turn
    TOOL_CLOSE = "tool_close"
    CALL_OPEN = "call_open"  # a tool call in a model turn
    CALL_CLOSE = "call_close"
    RESPONSE_OPEN = "response_open"  # a tool's result; the first after calls is the model's hand-over
    RESPONSE_CLOSE = "response_close"
    QUOTE = "quote"  # quotes a string in Gemma's tool syntax

    # Old spellings, kept for one release.
    START_OF_TURN = "turn_open"
    END_OF_TURN = "turn_close"
    START_OF_IMAGE = "image"

    # Members are singletons compared by identity: hash them the same way, in C (Enum's own
    # hash is a Python call, and the encoder looks a marker up for every one it places).
    __hash__ = object.__hash__


SystemPlacement = Literal["first_user_turn", "own_turn"]


@dataclass(frozen=True)
class Checkpoint:
    """A released model whose generation prompt differs from its siblings' (the tokenizer
    file is the same, so the user names it). ``names`` are the accepted spellings, lower
    case, the canonical one first. ``empty_thought`` says the prompt ends with an empty
    thought channel when thinking is off (Gemma 4's large checkpoints)."""

    names: tuple[str, ...]
    empty_thought: bool

    @property
    def name(self) -> str:
        return self.names[0]


def _gemma4_checkpoint(size: str, *, empty_thought: bool) -> Checkpoint:
    return Checkpoint((f"gemma-4-{size}-it", size, f"gemma-4-{size}"), empty_thought)


CHECKPOINTS = (
    _gemma4_checkpoint("e2b", empty_thought=False),
    _gemma4_checkpoint("e4b", empty_thought=False),
    _gemma4_checkpoint("12b", empty_thought=True),
    _gemma4_checkpoint("26b-a4b", empty_thought=True),
    _gemma4_checkpoint("31b", empty_thought=True),
)


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
    extra_reserved: tuple[str, ...] = ()  # marker pieces the formatter never places
    system_aliases: tuple[str, ...] = ("system",)  # input roles of a system message (first only)
    reasoning_keys: tuple[str, ...] = ()  # message keys holding a model message's reasoning
    checkpoints: tuple[Checkpoint, ...] = ()  # where the generation prompt depends on the model
    endings: frozenset[str] = frozenset({"generation_prompt", "model_turn", "user_turn", "eos", "text"})

    @property
    def tools(self) -> bool:
        """Whether the dialect has tool declarations, calls and results."""
        return Marker.CALL_OPEN in self.pieces

    @property
    def thinking(self) -> bool:
        """Whether the dialect has a thinking switch and thought channels."""
        return Marker.THINK in self.pieces

    def checkpoint(self, name: str | None) -> Checkpoint | None:
        """The checkpoint called ``name`` (any spelling of :attr:`Checkpoint.names`), or None
        for None; ValueError for a name the dialect does not know."""
        if name is None:
            return None
        key = name.strip().lower().removeprefix("google/")
        for checkpoint in self.checkpoints:
            if key in checkpoint.names:
                return checkpoint
        known = ", ".join(c.names[0] for c in self.checkpoints) or "none"
        raise ValueError(f"unknown {self.name} checkpoint {name!r}; known: {known}")

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

GEMMA4 = Dialect(
    name="gemma4",
    description="Gemma 4: <|turn>role ... <turn|>, a system turn of its own, thinking, tool "
    "declarations, calls and results, media markers",
    pieces={
        Marker.TURN_OPEN: "<|turn>",
        Marker.TURN_CLOSE: "<turn|>",
        Marker.IMAGE: "<|image|>",
        Marker.AUDIO: "<|audio|>",
        Marker.VIDEO: "<|video|>",
        Marker.THINK: "<|think|>",
        Marker.CHANNEL_OPEN: "<|channel>",
        Marker.CHANNEL_CLOSE: "<channel|>",
        Marker.TOOL_OPEN: "<|tool>",
        Marker.TOOL_CLOSE: "<tool|>",
        Marker.CALL_OPEN: "<|tool_call>",
        Marker.CALL_CLOSE: "<tool_call|>",
        Marker.RESPONSE_OPEN: "<|tool_response>",
        Marker.RESPONSE_CLOSE: "<tool_response|>",
        Marker.QUOTE: '<|"|>',
    },
    extra_reserved=("<|image>", "<|audio>", "<image|>", "<audio|>"),
    roles=("system", "user", "model"),
    aliases={"user": "user", "model": "model", "assistant": "model"},
    system="own_turn",
    system_aliases=("system", "developer"),
    trim_system=True,
    alternating=False,
    media={
        "image": Marker.IMAGE,
        "image_url": Marker.IMAGE,
        "audio": Marker.AUDIO,
        "input_audio": Marker.AUDIO,
        "video": Marker.VIDEO,
    },
    reasoning_keys=("reasoning_content", "reasoning", "thinking"),
    checkpoints=CHECKPOINTS,
    endings=frozenset(
        {
            "generation_prompt",  # <|turn>model\n: small checkpoints, or thinking on
            "empty_thought_prompt",  # ... <|channel>thought\n<channel|>: large ones, thinking off
            "model_turn",
            "hand_over",  # <|tool_response> after calls: awaiting their results
            "after_results",  # the model turn open after results (the prompt, thinking off)
            "thought_after_results",  # ... <|channel>thought\n (the prompt, thinking on)
            "user_turn",
            "system_turn",
            "eos",
            "text",
        }
    ),
)

DIALECTS: dict[str, Dialect] = {GEMMA3.name: GEMMA3, GEMMA4.name: GEMMA4}


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


def reserved_pieces() -> frozenset[str]:
    """Every marker piece of every dialect: reserved in content, whichever the model speaks."""
    return frozenset(p for d in DIALECTS.values() for p in (*d.pieces.values(), *d.extra_reserved))
