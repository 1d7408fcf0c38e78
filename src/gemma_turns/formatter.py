"""Lay a conversation out as Gemma turns: text pieces and marker tokens, in order.

The layout follows the official Gemma 3 IT chat template:

    <start_of_turn>user\\n{system}\\n\\n{content}<end_of_turn>\\n
    <start_of_turn>model\\n{content}<end_of_turn>\\n
    ...
    <start_of_turn>model\\n                         (the generation prompt, when asked)

- user and model content is trimmed (Python ``str.strip()``, as Jinja's ``trim``); a list of
  parts is rendered part by part, each text part trimmed, with nothing between them;
- the system text is *not* trimmed: it is followed by a blank line and opens the first user turn;
- an image part is the ``<start_of_image>`` marker.

The formatter knows no tokenizer. It returns :class:`Piece` values that say which text is
content (and where it came from, for error messages) and which tokens the model learns
(``trainable``); the encoder turns them into ids. :func:`format_chat` joins them into the
turn text, for people and for comparison with other tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .conversation import Conversation, Marker, normalize_messages

__all__ = ["Piece", "TrainOn", "format_chat", "render_pieces"]

TrainOn = Literal["all", "last", "none"]


@dataclass(frozen=True, slots=True)
class Piece:
    """One span of the turn text: a marker token, or text to encode.

    ``message_index``/``part_index``/``offset`` locate content text in the caller's
    messages (``offset`` is the character in that message's content where ``value`` starts);
    they are ``None`` for the format's own text (role headers, newlines).
    """

    value: str | Marker
    trainable: bool = False
    message_index: int | None = None
    part_index: int | None = None
    offset: int = 0
    role: str | None = None


def format_chat(messages: object, *, add_generation_prompt: bool | None = None) -> str:
    """Return the turn text of ``messages``, without BOS (which is a token, not text).

    ``add_generation_prompt`` defaults to True when the last message is from the user.

    >>> format_chat([{"role": "user", "content": " Hi! "}])
    '<start_of_turn>user\\nHi!<end_of_turn>\\n<start_of_turn>model\\n'
    """
    conversation = normalize_messages(messages)
    if add_generation_prompt is None:
        add_generation_prompt = conversation.last_role == "user"
    pieces = render_pieces(conversation, add_generation_prompt=add_generation_prompt)
    return "".join(piece.value for piece in pieces)


def render_pieces(
    conversation: Conversation,
    *,
    add_generation_prompt: bool,
    train_on: TrainOn = "all",
    train_newline: bool = False,
) -> list[Piece]:
    """The pieces of ``conversation`` in order.

    ``train_on`` picks the model turns whose content and ``<end_of_turn>`` are trainable:
    ``all`` of them, the ``last`` one only, or ``none``. With ``train_newline`` the ``\\n``
    after a trained turn's ``<end_of_turn>`` is trainable too.
    """
    pieces: list[Piece] = []
    append = pieces.append
    last_model = max((k for k, t in enumerate(conversation.turns) if t.role == "model"), default=-1)
    for k, turn in enumerate(conversation.turns):
        trained = turn.role == "model" and (
            train_on == "all" or (train_on == "last" and k == last_model)
        )
        append(Piece(Marker.START_OF_TURN))
        append(Piece(turn.role + "\n"))
        if k == 0 and conversation.system is not None:
            append(Piece(conversation.system + "\n\n", False, 0, None, 0, "system"))
        many = len(turn.parts) > 1
        for p, part in enumerate(turn.parts):
            part_index = p if many else None
            if isinstance(part, Marker):
                append(Piece(part, trained, turn.message_index, part_index, 0, turn.role))
                continue
            text = part.strip()
            if text:
                offset = len(part) - len(part.lstrip())
                append(Piece(text, trained, turn.message_index, part_index, offset, turn.role))
        append(Piece(Marker.END_OF_TURN, trained))
        append(Piece("\n", trained and train_newline))
    if add_generation_prompt:
        append(Piece(Marker.START_OF_TURN))
        append(Piece("model\n"))
    return pieces
