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

from .conversation import Conversation, Marker, normalize_messages

__all__ = ["Run", "TrainOn", "content_stretches", "format_chat", "render_runs"]

TrainOn = Literal["all", "last", "none"]
Run = tuple[str | Marker, bool]  # (text or marker, trainable)

_START = (Marker.START_OF_TURN, False)


def format_chat(messages: object, *, add_generation_prompt: bool | None = None) -> str:
    """Return the turn text of ``messages``, without BOS (which is a token, not text).

    ``add_generation_prompt`` defaults to True when the last message is from the user.

    >>> format_chat([{"role": "user", "content": " Hi! "}])
    '<start_of_turn>user\\nHi!<end_of_turn>\\n<start_of_turn>model\\n'
    """
    conversation = normalize_messages(messages)
    if add_generation_prompt is None:
        add_generation_prompt = conversation.last_role == "user"
    runs = render_runs(conversation, add_generation_prompt=add_generation_prompt)
    return "".join(value for value, _ in runs)


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
    runs: list[Run] = []
    append = runs.append
    turns = conversation.turns
    last_model = len(turns) - 1 if turns[-1].role == "model" else len(turns) - 2
    for k, turn in enumerate(turns):
        trained = turn.role == "model" and (
            train_on == "all" or (train_on == "last" and k == last_model)
        )
        append(_START)
        header = turn.role + "\n"
        if k == 0 and conversation.system is not None:
            header += conversation.system + "\n\n"
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
        append((Marker.END_OF_TURN, trained))
        append(("\n", trained and train_newline))
    if add_generation_prompt:
        append(_START)
        append(("model\n", False))
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
        yield 0, "system", [(None, 0, conversation.system)]
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
