"""Check chat messages and bring them into one shape: an optional system text and turns.

This is the only place that reads the input conventions (role aliases such as ``assistant``
for ``model``, a ``system`` message only first, content as a string or a list of parts);
what is allowed comes from the dialect (:mod:`gemma_turns.chat_format`), so the formatter
downstream can trust its input. Every rejection names the message index, the role and what
was expected; nothing is dropped silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

from .chat_format import GEMMA3, Dialect, Marker
from .errors import ConversationError
from .options import EncodeOptions

__all__ = [
    "Conversation",
    "Marker",
    "ToolCall",
    "ToolResult",
    "Turn",
    "check_text",
    "from_record",
    "normalize_messages",
    "with_tools",
]

EarlierReasoning = Literal["refuse", "drop"]
# Reasoning keys of other tools: a format without thought channels has no place for them;
# they are left out and noted ("ignored_reasoning"), so a run can count and warn.
IGNORED_REASONING = ("reasoning_content", "reasoning", "thinking")

# Message keys whose data the Gemma format has no place for: refused, never dropped.
UNSUPPORTED_KEYS = ("tool_calls", "function_call", "tool_responses")
_MISSING = object()


Part = str | Marker  # a text part, or a media marker (Marker.IMAGE for an image part)


class ToolCall(NamedTuple):
    """A model message's call, already in Gemma's tool syntax (text and quote markers)."""

    name: str
    arguments: Mapping
    items: list
    call_id: object = None  # the call's "id", which a tool message's tool_call_id names


class ToolResult(NamedTuple):
    """A tool message's result, in Gemma's tool syntax, and the media it returned."""

    name: str
    value: object
    items: list
    media: tuple[Marker, ...]
    message_index: int


class Turn(NamedTuple):
    """One message as a turn. In dialects with tools, consecutive model messages (and the
    tool results between them) form one turn: ``continues`` (no header) and ``closes``
    (the closing marker follows) say how this message joins it."""

    role: str  # a role of the dialect: "user" or "model"
    parts: tuple[Part, ...]  # content as given: text is not yet trimmed
    message_index: int  # index of the message in the caller's list, for error messages
    reasoning: str | None = None
    calls: tuple[ToolCall, ...] = ()
    results: tuple[ToolResult, ...] = ()
    continues: bool = False
    closes: bool = True
    weight: int | None = None  # 0: never trained, 1: trained, None: as train_on says


class Conversation(NamedTuple):
    """A checked conversation; the formatter places ``system`` (the text as rendered) as the
    dialect says. ``tools`` are the declarations, in Gemma's tool syntax; ``thinking`` the
    thinking switch; ``notes`` what was dropped by a documented rule (``dropped_reasoning``).
    A named tuple, like its turns: one is built for every record, and a frozen dataclass
    costs several times as much to build."""

    system: str | None
    turns: tuple[Turn, ...]
    dialect: Dialect = GEMMA3
    tools: tuple[list, ...] = ()
    thinking: bool = False
    system_spans: tuple = ()  # (part_index, offset, text) of the system text, for locating
    notes: tuple[str, ...] = ()


def from_record(record: object, dialect: Dialect, options: EncodeOptions) -> Conversation:
    """The checked conversation of a record: a list of messages, or the HF/TRL form
    ``{"messages": [...], "tools": [...], "chat_template_kwargs": {"enable_thinking": ...}}``,
    whose kwargs override the options' defaults."""
    thinking, preserve, tools = options.enable_thinking, options.preserve_thinking, None
    messages = record
    if type(record) is not list and isinstance(record, Mapping) and "messages" in record:
        messages, tools = record["messages"], record.get("tools")
        kwargs = record.get("chat_template_kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise ConversationError(
                "chat_template_kwargs must be an object", code="bad_record", field="chat_template_kwargs"
            )
        if kwargs:
            thinking = _flag(kwargs, "enable_thinking", thinking)
            preserve = _flag(kwargs, "preserve_thinking", preserve)
    return normalize_messages(
        messages,
        dialect,
        tools=tools,
        enable_thinking=thinking,
        preserve_thinking=preserve,
        earlier_reasoning=options.reasoning_policy,
        strip_thoughts=options.reserved == "allow",
    )


def with_tools(messages: object, tools: object) -> object:
    """A record of ``messages`` and ``tools`` (``messages`` itself without tools)."""
    return messages if tools is None else {"messages": messages, "tools": tools}


def _flag(kwargs: Mapping, name: str, default: bool) -> bool:
    value = kwargs.get(name, default)
    if not isinstance(value, bool):
        raise ConversationError(
            f"chat_template_kwargs.{name} must be true or false, got {value!r}",
            code="bad_record",
            field=f"chat_template_kwargs.{name}",
        )
    return value


def normalize_messages(
    messages: object,
    dialect: Dialect = GEMMA3,
    *,
    tools: object = None,
    enable_thinking: bool = False,
    preserve_thinking: bool = False,
    earlier_reasoning: EarlierReasoning = "refuse",
    strip_thoughts: bool = False,
) -> Conversation:
    """Check ``messages`` (a list of ``{"role", "content"}`` mappings) and return a Conversation.

    In a dialect with tools and thinking (Gemma 4), ``tools`` (OpenAI/HF function schemas),
    ``enable_thinking``, ``preserve_thinking`` (keep the reasoning of earlier model messages
    that call tools) and ``earlier_reasoning`` (what to do with reasoning the format has no
    place for: ``refuse``, or ``drop`` it, noted in ``notes``) apply; ``strip_thoughts``
    removes thought channels spelled in a model message's text, as the official template does
    (for ``reserved="allow"``: the official pipeline's ids); elsewhere tools and thinking are
    refused.

    >>> normalize_messages([{"role": "assistant", "content": "hi"}])
    Traceback (most recent call last):
    ...
    gemma_turns.errors.ConversationError: message 0 (assistant): ...
    """
    if type(messages) is not list and (
        isinstance(messages, (str, bytes, Conversation)) or not isinstance(messages, Sequence)
    ):  # a Conversation is a tuple, but of its parts, not of messages
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

    if dialect.tools:
        return _normalize_with_tools(
            messages, dialect, tools, enable_thinking, preserve_thinking, earlier_reasoning, strip_thoughts
        )
    if tools or enable_thinking:
        raise ConversationError(
            f"the {dialect.name} chat format has no place for "
            + ("tool declarations" if tools else "a thinking switch"),
            code="bad_conversation",
            fix="Use a Gemma 4 tokenizer, or drop the tools / thinking options",
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
    notes: list[str] = []
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
        parts = _content_parts(message, index, given_role, dialect)
        if len(message) > 2:  # role and content alone: nothing more to read
            weight = _weight(message, index, given_role, role == model)
            if any(message.get(key) for key in IGNORED_REASONING):
                notes.append("ignored_reasoning")
        else:
            weight = None
        turns.append(Turn(role, parts, index, weight=weight))
    spans = () if system is None else ((None, 0, system),)
    if system is not None and dialect.trim_system:
        spans = ((None, len(system) - len(system.lstrip()), system.strip()),)
        system = system.strip()
    return Conversation(system, tuple(turns), dialect, system_spans=spans, notes=tuple(notes))


def _role_of(message: object, index: int, supported: tuple[str, ...] = ()) -> str:
    if type(message) is not dict and not isinstance(message, Mapping):
        raise ConversationError(
            f"a message must be an object with 'role' and 'content', got {type(message).__name__}",
            code="bad_message",
            message_index=index,
        )
    role = message.get("role")
    for key in UNSUPPORTED_KEYS if len(message) > 2 else ():  # role and content alone: none
        if message.get(key) and key not in supported:
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


# -- dialects with tools and thinking (Gemma 4) ----------------------------------------------


def _normalize_with_tools(messages, dialect, tools, thinking, preserve_thinking, earlier_reasoning, strip_thoughts):
    """The Gemma 4 rules: a system turn of its own, no alternation, consecutive model
    messages (and the tool results after their calls) joined into one turn, reasoning on
    model messages after the last user message (and, with ``preserve_thinking``, on earlier
    ones that call tools)."""
    if earlier_reasoning not in ("refuse", "drop"):
        raise ValueError(f"earlier_reasoning must be 'refuse' or 'drop', got {earlier_reasoning!r}")
    supported = ("tool_calls", "tool_responses")
    roles = [_role_of(message, index, supported) for index, message in enumerate(messages)]
    system, spans, start = None, (), 0
    if roles[0] in dialect.system_aliases:
        system, spans = _system_of(messages[0], dialect)
        start = 1
    user, model = dialect.user_role, dialect.trained_role
    last_user = next((k for k in range(len(roles) - 1, start - 1, -1) if dialect.role_of(roles[k]) == user), -1)
    declarations = _declarations(tools)
    turns: list[Turn] = []
    notes: list[str] = []
    previous = None
    index = start
    while index < len(messages):
        message, given = messages[index], roles[index]
        if given == "tool":
            raise ConversationError(
                "a tool message must follow a model message whose tool_calls it answers",
                code="orphan_tool_result",
                message_index=index,
                role="tool",
                fix="Put it right after the assistant message with the matching tool_calls",
            )
        if given in dialect.system_aliases:
            raise ConversationError(
                f"a {given} message may only be the first message",
                code="misplaced_system",
                message_index=index,
                role=given,
                fix="Merge its text into the first system message, or send it as a user message",
            )
        role = dialect.role_of(given)
        if role is None:
            raise ConversationError(
                f"unknown role {given!r}; expected one of {', '.join(dialect.aliases)}, tool, "
                f"or {' / '.join(dialect.system_aliases)} as the first message",
                code="unknown_role",
                message_index=index,
                role=given,
            )
        if role == model and message.get("content") is None:
            parts = ()  # a model message of calls or reasoning alone
        else:
            parts = _content_parts(message, index, given, dialect)
        if role == model and strip_thoughts:
            parts = tuple(_strip_thoughts(p, dialect) if type(p) is str else p for p in parts)
        plain = len(message) == 2 and "content" in message  # role and content: nothing more to read
        weight = None if plain else _weight(message, index, given, role == model)
        if role != model:
            turns.append(Turn(role, parts, index, weight=weight))
            previous, index = role, index + 1
            continue
        if any(isinstance(part, Marker) for part in parts):
            raise ConversationError(
                "a model message cannot hold media: the format has media markers in user turns "
                "and tool results only",
                code="bad_content",
                message_index=index,
                role=given,
                fix="Move the media into a user message or a tool result",
            )
        calls = [] if plain else _tool_calls(message, index, given)
        reasoning = None if plain else _reasoning(message, index, given, dialect)
        if reasoning is not None and not (index > last_user or (preserve_thinking and calls)):
            if earlier_reasoning == "refuse":
                raise ConversationError(
                    "this model message comes before the last user message, and the format keeps "
                    "reasoning only on model messages after it (the official template drops it)",
                    code="earlier_reasoning",
                    message_index=index,
                    role=given,
                    field="reasoning",
                    fix="Remove the reasoning, pass earlier_reasoning='drop' (CLI: --earlier-reasoning drop), "
                    "or preserve_thinking=True if the message calls tools",
                )
            reasoning = None
            notes.append("dropped_reasoning")
        after = index + 1
        results = [] if plain else _embedded_results(message, index, given, calls)
        if calls and not results:
            while after < len(messages) and roles[after] == "tool":
                results.append(_tool_result(messages[after], after, calls))
                after += 1
        if calls and len(results) != len(calls) and (results or after < len(messages)):
            raise ConversationError(
                f"the message makes {len(calls)} tool calls but {len(results)} tool messages answer them",
                code="tool_results_missing" if len(results) < len(calls) else "orphan_tool_result",
                message_index=index,
                role=given,
                field="tool_calls",
                fix="Give one role 'tool' message per call, right after this message",
            )
        following = roles[after] if after < len(roles) else None
        # Only "assistant" messages join (as in the official template): a "model" message
        # is a turn of its own.
        next_is_model = given == "assistant" and following == "assistant"
        has_content = any(type(part) is str and part.strip() for part in parts)
        if calls and not results:
            closes = False  # ends with the hand-over to the tool: nothing may follow
        elif next_is_model:
            closes = False  # the next model message continues this turn
        elif results and not has_content and following is None:
            closes = False  # the model's answer to the results is still to come
        else:
            closes = True
        continues = previous == "assistant" and given == "assistant"
        turns.append(
            Turn(model, parts, index, reasoning, tuple(calls), tuple(results), continues, closes, weight)
        )
        previous, index = given, after
    if not turns and system is None and not declarations and not thinking:
        raise ConversationError("the conversation has no messages", code="empty_conversation")
    return Conversation(
        system, tuple(turns), dialect, tuple(declarations), bool(thinking), spans, tuple(notes)
    )


def _strip_thoughts(text: str, dialect: Dialect) -> str:
    """The template's ``strip_thinking``: text with every thought channel spelled in it cut."""
    opening, closing = dialect.pieces[Marker.CHANNEL_OPEN], dialect.pieces[Marker.CHANNEL_CLOSE]
    if opening not in text and closing not in text:
        return text
    return "".join(piece.split(opening)[0] for piece in text.split(closing)).strip()


def _system_of(message: Mapping, dialect: Dialect) -> tuple[str, tuple]:
    """The system text as the Gemma 4 template writes it: a string trimmed; text parts each
    trimmed and followed by a space. Non-text parts are refused (the template drops them)."""
    given = message.get("role")
    parts = _content_parts(message, 0, given, dialect)
    if isinstance(message.get("content"), str):
        text = parts[0]
        return text.strip(), ((None, len(text) - len(text.lstrip()), text.strip()),)
    spans = []
    for k, part in enumerate(parts):
        if isinstance(part, Marker):
            raise ConversationError(
                "a system message can hold text only; the official template drops other parts",
                code="bad_content",
                message_index=0,
                role=given,
                part_index=k,
                fix="Move the media into a user message",
            )
        spans.append((k, len(part) - len(part.lstrip()), part.strip() + " "))
    return "".join(text for _, _, text in spans), tuple(spans)


def _weight(message: Mapping, index: int, given: str, trainable: bool) -> int | None:
    """A message's ``weight`` (0 or 1, as axolotl writes it), or None without one."""
    weight = message.get("weight")
    if weight is None:
        return None
    if weight not in (0, 1) or isinstance(weight, float) and not weight.is_integer():
        raise ConversationError(
            f"weight must be 0 (do not train) or 1 (train), got {weight!r}",
            code="bad_message",
            message_index=index,
            role=given,
            field="weight",
        )
    if weight == 1 and not trainable:
        raise ConversationError(
            "weight 1 on a message the model does not write: only model messages are trained",
            code="bad_message",
            message_index=index,
            role=given,
            field="weight",
        )
    return int(weight)


def _reasoning(message: Mapping, index: int, given: str, dialect: Dialect) -> str | None:
    """The reasoning text under any of the dialect's keys (None when empty); keys that hold
    different values are refused (HF and the template would each pick another)."""
    found = {key: message[key] for key in dialect.reasoning_keys if message.get(key) is not None}
    for key, value in found.items():
        if not isinstance(value, str):
            raise ConversationError(
                f"{key} must be a string, got {type(value).__name__}",
                code="bad_message",
                message_index=index,
                role=given,
                field=key,
            )
        check_text(value, message_index=index, role=given, field=key)
    if len(set(found.values())) > 1:
        raise ConversationError(
            f"the message has different reasoning under {', '.join(found)}; which one is meant?",
            code="bad_message",
            message_index=index,
            role=given,
            field=next(iter(found)),
            fix="Keep one reasoning key",
        )
    return next(iter(found.values()), None) or None


def _tool_calls(message: Mapping, index: int, given: str) -> list[ToolCall]:
    calls = message.get("tool_calls")
    if not calls:
        return []
    if not _is_list(calls):
        raise ConversationError(
            "tool_calls must be a list of calls",
            code="bad_tool_call",
            message_index=index,
            role=given,
            field="tool_calls",
        )
    out = []
    for k, call in enumerate(calls):
        field = f"tool_calls[{k}]"
        function = call.get("function", call) if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            raise ConversationError(
                'a tool call must be {"type": "function", "function": {"name": ..., "arguments": {...}}}',
                code="bad_tool_call",
                message_index=index,
                role=given,
                field=field,
            )
        arguments = function.get("arguments")
        if isinstance(arguments, str):  # OpenAI's wire format: a JSON text
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except (ValueError, RecursionError) as error:
                raise ConversationError(
                    f"the arguments are a string that is not JSON ({error})",
                    code="bad_tool_call",
                    message_index=index,
                    role=given,
                    field=f"{field}.function.arguments",
                    fix="Give the arguments as a JSON object",
                ) from None
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            raise ConversationError(
                f"the arguments must be a JSON object, got {type(arguments).__name__}",
                code="bad_tool_call",
                message_index=index,
                role=given,
                field=f"{field}.function.arguments",
            )
        name = function.get("name")
        from . import tool_syntax  # here: only Gemma 4 tool records need it, not start-up

        try:
            items = tool_syntax.call_items(name, arguments)
        except tool_syntax.ToolSyntaxError as error:
            raise _syntax_error(error, index, given, f"{field}.function", "bad_tool_call") from None
        _check_items(items, index, given, field)
        out.append(ToolCall(name, arguments, items, call.get("id")))
    return out


def _embedded_results(message: Mapping, index: int, given: str, calls: list) -> list[ToolResult]:
    """Results written on the model message itself (``tool_responses``: Gemma's own form)."""
    embedded = message.get("tool_responses")
    if not embedded:
        return []
    if not calls:
        raise ConversationError(
            "tool_responses without tool_calls: there is no call for them to answer",
            code="orphan_tool_result",
            message_index=index,
            role=given,
            field="tool_responses",
        )
    if not _is_list(embedded):
        raise ConversationError(
            "tool_responses must be a list of {'name': ..., 'response': ...}",
            code="bad_tool_result",
            message_index=index,
            role=given,
            field="tool_responses",
        )
    out = []
    for k, response in enumerate(embedded):
        if not isinstance(response, Mapping) or not response.get("name"):
            raise ConversationError(
                "each tool response must name its tool: {'name': ..., 'response': ...}",
                code="unresolved_tool",
                message_index=index,
                role=given,
                field=f"tool_responses[{k}]",
            )
        out.append(_result(response["name"], response.get("response"), (), index, given, f"tool_responses[{k}]"))
    return out


def _result(name, value, media, index, role, field) -> ToolResult:
    if isinstance(value, str):
        check_text(value, message_index=index, role=role, field=field)
    from . import tool_syntax

    try:
        items = tool_syntax.response_items(name, value)
    except tool_syntax.ToolSyntaxError as error:
        raise _syntax_error(error, index, role, field, "bad_tool_result") from None
    _check_items(items, index, role, field)
    return ToolResult(name, value, items, tuple(media), index)


def _tool_result(message: Mapping, index: int, calls: list[ToolCall]) -> ToolResult:
    """A ``role: "tool"`` message: its call's name (by ``tool_call_id``, else its ``name``,
    else the only call's), its value, and the media it returned."""
    call_id = message.get("tool_call_id")
    name = None
    if call_id is not None:
        name = next((c.name for c in calls if c.call_id == call_id), None)
    name = name or message.get("name")
    if not name and len(calls) == 1:
        name = calls[0].name
    if not isinstance(name, str) or not name:
        raise ConversationError(
            "the tool message names no tool: no tool_call_id that matches a call's id, and no name",
            code="unresolved_tool",
            message_index=index,
            role="tool",
            fix="Give it the tool_call_id of its call, or a name",
        )
    content = message.get("content")
    media: list[Marker] = []
    value = content
    if isinstance(content, Sequence) and not isinstance(content, (str, bytes, bytearray)):
        texts = []
        for k, part in enumerate(content):
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind in TOOL_MEDIA:
                media.append(TOOL_MEDIA[kind])
            else:
                raise ConversationError(
                    "a tool result given as a list must be content parts ({'type': 'text', 'text': ...} "
                    f"or media), got {_short(part)}",
                    code="bad_content",
                    message_index=index,
                    role="tool",
                    part_index=k,
                    fix='Give a JSON value as a string, or as an object such as {"value": [...]}',
                )
        value = "".join(texts)
    return _result(name, value, media, index, "tool", "content")


TOOL_MEDIA = {
    "image": Marker.IMAGE,
    "image_url": Marker.IMAGE,
    "audio": Marker.AUDIO,
    "input_audio": Marker.AUDIO,
    "video": Marker.VIDEO,
}


_DECLARATIONS: dict[str, list] = {}  # repr of a function schema -> its items; real data repeats them
DECLARATIONS_KEPT = 256


def _declarations(tools: object) -> list[list]:
    if not tools:
        return []
    if not _is_list(tools):
        raise ConversationError("tools must be a list of function schemas", code="bad_tools", field="tools")
    out = []
    for k, tool in enumerate(tools):
        function = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping):
            raise ConversationError(
                'a tool must be {"type": "function", "function": {"name": ..., "parameters": {...}}}',
                code="bad_tools",
                field=f"tools[{k}]",
            )
        key = repr(function)
        items = _DECLARATIONS.get(key)
        if items is None:
            from . import tool_syntax

            try:
                items = tool_syntax.declaration_items(function)
            except tool_syntax.ToolSyntaxError as error:
                raise ConversationError(
                    str(error),
                    code="bad_tools",
                    field=f"tools[{k}]" + (f".{error.path}" if error.path else ""),
                ) from None
            _check_items(items, None, None, f"tools[{k}]")
            if len(_DECLARATIONS) >= DECLARATIONS_KEPT:
                _DECLARATIONS.clear()
            _DECLARATIONS[key] = items
        out.append(items)
    return out


def _is_list(value: object) -> bool:
    """A JSON list (any sequence but a string, bytes or an object)."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray, Mapping))


def _check_items(items: list, index, role, field: str) -> None:
    for text in items:
        if type(text) is str and not text.isascii():
            check_text(text, message_index=index, role=role, field=field)


def _syntax_error(error: Exception, index: int, role: str, field: str, code: str) -> ConversationError:
    return ConversationError(
        str(error),
        code=code,
        message_index=index,
        role=role,
        field=f"{field}.{error.path}" if error.path else field,
    )
