"""Check chat messages and bring them into one shape: an optional system text and turns.

This is the only place that reads the input conventions (role aliases such as ``assistant``
for ``model``, a ``system`` message only first, content as a string or a list of parts);
what is allowed comes from the dialect (:mod:`gemma_turns.chat_format`), so the formatter
downstream can trust its input. Every rejection names the message index, the role and what
was expected; nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .chat_format import GEMMA3, Dialect, Marker
from .errors import ConversationError

__all__ = ["Conversation", "Marker", "Turn", "check_text", "normalize_messages"]

# Message keys whose data the Gemma format has no place for: refused, never dropped.
UNSUPPORTED_KEYS = ("tool_calls", "function_call")
_MISSING = object()


Part = str | Marker  # a text part, or a media marker (Marker.IMAGE for an image part)


class Turn(NamedTuple):
    role: str  # a role of the dialect: "user" or "model"
    parts: tuple[Part, ...]  # content as given: text is not yet trimmed
    message_index: int  # index of the message in the caller's list, for error messages


@dataclass(frozen=True, slots=True)
class Conversation:
    """A checked conversation; the formatter places ``system`` as the dialect says."""

    system: str | None
    turns: tuple[Turn, ...]
    dialect: Dialect = GEMMA3

    @property
    def last_role(self) -> str:
        return self.turns[-1].role


def normalize_messages(messages: object, dialect: Dialect = GEMMA3) -> Conversation:
    """Check ``messages`` (a list of ``{"role", "content"}`` mappings) and return a Conversation.

    >>> normalize_messages([{"role": "assistant", "content": "hi"}])
    Traceback (most recent call last):
    ...
    gemma_turns.errors.ConversationError: message 0 (assistant): ...
    """
    if type(messages) is not list and (
        isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence)
    ):
        raise ConversationError(
            f"a conversation must be a list of messages, got {type(messages).__name__}",
            code="bad_conversation",
            fix='Pass a list such as [{"role": "user", "content": "Hi"}]',
        )
    if not messages:
        raise ConversationError(
            "the conversation has no messages",
            code="empty_conversation",
            fix="Give at least one user message",
        )

    system = None
    start = 0
    first_role = _role_of(messages[0], 0)
    if first_role == "system":
        system = _system_text(messages[0], dialect)
        start = 1
        if len(messages) == 1 and dialect.system == "first_user_turn":
            raise ConversationError(
                "the conversation has only a system message; Gemma has no system turn, so "
                "system text is placed inside the first user turn and there is none",
                code="system_only",
                message_index=0,
                role="system",
                fix="Add a user message after the system message",
            )

    turns = []
    user, model = dialect.user_role, dialect.trained_role
    for index in range(start, len(messages)):
        message = messages[index]
        given_role = _role_of(message, index)
        expected = user if (index - start) % 2 == 0 else model
        if given_role == "system":
            raise ConversationError(
                "a system message may only be the first message",
                code="misplaced_system",
                message_index=index,
                role="system",
                fix="Merge its text into the first system message, or send it as a user message",
            )
        role = dialect.role_of(given_role)
        if role is None:
            raise ConversationError(
                f"unknown role {given_role!r}; expected one of {', '.join(dialect.aliases)}, "
                "or system as the first message",
                code="unknown_role",
                message_index=index,
                role=given_role,
            )
        if dialect.alternating and role != expected:
            raise ConversationError(
                f"roles must alternate user/model starting with user, so a {expected} "
                f"message was expected here",
                code="roles_not_alternating",
                message_index=index,
                role=given_role,
                fix="Merge consecutive messages of the same role, or insert the missing turn",
            )
        turns.append(Turn(role, _content_parts(message, index, given_role, dialect), index))
    return Conversation(system, tuple(turns), dialect)


def _role_of(message: object, index: int) -> str:
    if type(message) is not dict and not isinstance(message, Mapping):
        raise ConversationError(
            f"a message must be an object with 'role' and 'content', got {type(message).__name__}",
            code="bad_message",
            message_index=index,
        )
    role = message.get("role")
    for key in UNSUPPORTED_KEYS if len(message) > 2 else ():  # role and content alone: none
        if message.get(key):
            raise ConversationError(
                f"the message has {key!r}, which the Gemma chat format has no place for and "
                "would be lost",
                code="bad_message",
                message_index=index,
                role=role if isinstance(role, str) else None,
                fix="Render the call into the content text yourself, or remove the key",
            )
    if not isinstance(role, str):
        raise ConversationError(
            f"the message has no string 'role' (got {role!r})",
            code="bad_message",
            message_index=index,
            fix="Set role to user, model (or assistant), or system for the first message",
        )
    return role


def _content_parts(message: Mapping, index: int, role: str, dialect: Dialect) -> tuple[Part, ...]:
    content = message.get("content", _MISSING)
    if type(content) is str:  # the common case first
        if not content.isascii():
            check_text(content, message_index=index, role=role)
        return (content,)
    if content is _MISSING:
        raise ConversationError(
            "the message has no 'content'",
            code="bad_content",
            message_index=index,
            role=role,
            fix='Give the content as a string, or a list of {"type": "text", "text": ...} '
            'and {"type": "image"} parts',
        )
    if isinstance(content, str):  # a str subclass
        check_text(content, message_index=index, role=role)
        return (content,)
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        return tuple(_part(part, index, role, k, dialect) for k, part in enumerate(content))
    raise ConversationError(
        f"content must be a string or a list of parts, got {type(content).__name__}",
        code="bad_content",
        message_index=index,
        role=role,
    )


def _part(part: object, index: int, role: str, part_index: int, dialect: Dialect) -> Part:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind == "text" and isinstance(part.get("text"), str):
        check_text(part["text"], message_index=index, role=role, part_index=part_index)
        return part["text"]
    if kind in dialect.media:
        return dialect.media[kind]
    media = "".join(f" or {{'type': {kind!r}}}" for kind in dialect.media)
    raise ConversationError(
        f"a content part must be {{'type': 'text', 'text': str}}{media}, got {_short(part)}",
        code="bad_content",
        message_index=index,
        role=role,
        part_index=part_index,
        fix="Other part types would be lost: convert them to text or remove them",
    )


def _system_text(message: Mapping, dialect: Dialect) -> str:
    """The system text, untrimmed (the formatter trims it where the dialect says)."""
    parts = _content_parts(message, 0, "system", dialect)
    if len(parts) == 1 and not isinstance(parts[0], Marker):
        return parts[0]
    raise ConversationError(
        f"system content must be one text (a string or a single text part), got {len(parts)} "
        "parts or an image; the official template keeps only the first part's text",
        code="bad_content",
        message_index=0,
        role="system",
        fix="Join the system text into one string",
    )


def check_text(text: str, **location) -> None:
    """Refuse text that is not valid Unicode (a lone surrogate, as JSON's "\\ud800" gives),
    which no tokenizer can encode."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ConversationError(
            f"the text holds a lone surrogate {text[error.start]!r}, which is not a character "
            "and cannot be encoded",
            code="invalid_text",
            char_offset=error.start,
            fix="Repair the text's encoding (a surrogate pair split apart, or a bad escape)",
            **location,
        ) from None


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
