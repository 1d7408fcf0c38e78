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

The formatter knows no tokenizer. It returns *runs*: a marker token, or the text between two
markers that the encoder encodes as one string, with whether the model learns it
(``trainable``). Text of one trainability is merged into one run, exactly as SentencePiece
would see it in the whole turn text; a model turn's header and its content are separate runs
(safe because content is trimmed and ``\n`` is a piece of its own). :func:`format_chat`
joins the runs into the turn text, for people and for comparison with other tools.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .chat_format import GEMMA3, Dialect, Marker
from .conversation import Conversation, normalize_messages

__all__ = ["Run", "TrainOn", "content_stretches", "format_chat", "render_runs", "runs_text"]

TrainOn = Literal["all", "last", "none"]
Run = tuple[str | Marker, bool]  # (text or marker, trainable)

_OPEN = (Marker.TURN_OPEN, False)


def format_chat(
    messages: object, *, add_generation_prompt: bool | None = None, dialect: Dialect = GEMMA3
) -> str:
    """Return the turn text of ``messages``, without BOS (which is a token, not text).

    ``add_generation_prompt`` defaults to True when the last message is from the user.

    >>> format_chat([{"role": "user", "content": " Hi! "}])
    '<start_of_turn>user\\nHi!<end_of_turn>\\n<start_of_turn>model\\n'
    """
    conversation = normalize_messages(messages, dialect)
    if add_generation_prompt is None:
        add_generation_prompt = conversation.last_role == dialect.user_role
    runs = render_runs(conversation, add_generation_prompt=add_generation_prompt)
    return runs_text(runs, dialect)


def runs_text(runs: list[Run], dialect: Dialect) -> str:
    """The text of ``runs``: markers spelled as their pieces."""
    pieces = dialect.pieces
    return "".join(value if type(value) is str else pieces[value] for value, _ in runs)


def render_runs(
    conversation: Conversation,
    *,
    add_generation_prompt: bool,
    train_on: TrainOn = "all",
    train_newline: bool = False,
) -> list[Run]:
    """The runs of ``conversation`` in order.

    ``train_on`` picks the model turns whose content and ``<end_of_turn>`` are trainable:
    ``all`` of them, the ``last`` one only, or ``none``. With ``train_newline`` the ``\\n``
    after a trained turn's ``<end_of_turn>`` is trainable too.
    """
    dialect = conversation.dialect
    runs: list[Run] = []
    append = runs.append
    turns = conversation.turns
    model, header_end, turn_end = dialect.trained_role, dialect.header_end, dialect.turn_end
    last_model = max((k for k, turn in enumerate(turns) if turn.role == model), default=-1)
    system = conversation.system
    if system is not None and dialect.trim_system:
        system = system.strip()
    if system is not None and dialect.system == "own_turn":
        append(_OPEN)
        append((dialect.system_role + header_end + system, False))
        append((Marker.TURN_CLOSE, False))
        append((turn_end, False))
    for k, turn in enumerate(turns):
        trained = turn.role == model and (
            train_on == "all" or (train_on == "last" and k == last_model)
        )
        append(_OPEN)
        header = turn.role + header_end
        if k == 0 and system is not None and dialect.system == "first_user_turn":
            header += system + dialect.system_separator
        parts = turn.parts
        if len(parts) == 1 and type(parts[0]) is str:  # the common case, kept fast
            content = parts[0].strip()
            if trained:
                append((header, False))
                if content:
                    append((content, True))
            else:
                append((header + content, False))
        else:
            _render_parts(parts, header, trained, append)
        append((Marker.TURN_CLOSE, trained))
        append((turn_end, trained and train_newline))
    if add_generation_prompt:
        append(_OPEN)
        append((dialect.generation_role + header_end, False))
    return runs


def _render_parts(parts, header: str, trained: bool, append) -> None:
    """Content given as parts: each text trimmed, joined with nothing; images as markers."""
    text, text_trained = header, False
    for part in parts:
        if isinstance(part, Marker):
            if text:
                append((text, text_trained))
            append((part, trained))
            text, text_trained = "", trained
            continue
        part = part.strip()
        if not part:
            continue
        if text and text_trained != trained:
            append((text, text_trained))
            text = ""
        text += part
        text_trained = trained
    if text:
        append((text, text_trained))


def content_stretches(conversation: Conversation) -> Iterator[tuple[int, str, list]]:
    """Each stretch of content text as rendered, for locating a problem in the caller's input.

    Yields ``(message_index, role, spans)`` where ``spans`` lists ``(part_index, offset,
    text)``: the rendered (trimmed) text of each part of one unbroken stretch, and the
    character where it starts in that part. Parts in a stretch are joined with nothing, so
    text can span them; images, the system's blank line and role headers break stretches.
    """
    if conversation.system is not None:
        system = conversation.system
        if conversation.dialect.trim_system:
            yield 0, "system", [(None, len(system) - len(system.lstrip()), system.strip())]
        else:
            yield 0, "system", [(None, 0, system)]
    for turn in conversation.turns:
        many = len(turn.parts) > 1
        spans = []
        for index, part in enumerate(turn.parts):
            if isinstance(part, Marker):
                if spans:
                    yield turn.message_index, turn.role, spans
                spans = []
                continue
            text = part.strip()
            if text:
                spans.append((index if many else None, len(part) - len(part.lstrip()), text))
        if spans:
            yield turn.message_index, turn.role, spans
