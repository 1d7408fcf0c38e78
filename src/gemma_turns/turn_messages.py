"""Gemma 4 turns as messages, both ways round: what the ids of a conversation can tell.

A model turn is a run of *elements*: reasoning, calls, results (with the media a tool
returned) and text. The ids show the elements, not where one message ended and the next
began, so both the parser (from ids) and :func:`normalized_record` (from a conversation) cut
elements into messages by one rule, :func:`messages_of`: a message is ``[reasoning] calls*
results* text``, and whatever cannot continue that order starts the next message. Both read
tool data back through the same reader (:func:`~gemma_turns.tool_syntax.read_value`), so
``parse(encode(record)).record == normalized_record(record)``.

The normalized record: ``{"messages": [...], "tools": [...], "chat_template_kwargs":
{"enable_thinking": True, "preserve_thinking": True}}`` (tools when there are any; the
switches when thinking is on / reasoning stands before the last user message).

- a system message when the system text is not empty, or when nothing else (tools, thinking)
  opened the system turn; its content a string, or text parts where it ends with spaces
  (each system part is written trimmed and followed by a space);
- user content a string, or text and media parts (text parts trimmed, joined);
- a model turn of one message has role ``model``; the messages of a longer turn have role
  ``assistant`` (only those continue a turn); each has ``content`` (a string), and
  ``reasoning_content`` and ``tool_calls`` (``{"type": "function", "function": {"name",
  "arguments"}}``, no ids) when it has them; a closed turn that ends with results and is the
  last turn ends with an empty ``assistant`` message (which is what closed it);
- after a message's calls, one ``{"role": "tool", "name", "content"}`` per result, in order:
  a result ``{value: x}`` gives ``x``; media a tool returned make the content a list of parts;
- tools as ``{"type": "function", "function": {"name", **declaration}}``, the declaration as
  Gemma's syntax wrote it (types upper-case, unsupported schema keys gone).
"""

from __future__ import annotations

from collections.abc import Iterable

from .chat_format import GEMMA4, Dialect, Marker
from .conversation import Conversation, from_record
from .options import EncodeOptions, options_of
from .tool_syntax import read_value

__all__ = [
    "call_message",
    "content_of",
    "finish_record",
    "messages_of",
    "normalized_record",
    "record_of",
    "result_message",
    "system_content",
    "tool_of",
]

RANK = {"reasoning": 0, "call": 1, "result": 2, "text": 3}


def messages_of(elements: Iterable[tuple], *, closed: bool, last: bool) -> list[dict]:
    """The messages of one model turn from its elements: ``("reasoning", text)``, ``("call",
    name, arguments)``, ``("result", name, value, media)``, ``("text", text)``."""
    groups: list[dict] = []
    rank = 99
    for element in elements:
        kind = element[0]
        r = RANK[kind]
        if not groups or r < rank or (r == rank and kind == "reasoning"):
            groups.append({"reasoning": None, "calls": [], "results": [], "text": ""})
        group = groups[-1]
        rank = r
        if kind == "reasoning":
            group["reasoning"] = element[1]
        elif kind == "call":
            group["calls"].append(element[1:])
        elif kind == "result":
            group["results"].append(element[1:])
        else:
            group["text"] += element[1]
    if not groups:
        groups.append({"reasoning": None, "calls": [], "results": [], "text": ""})
    if closed and last and groups[-1]["results"] and not groups[-1]["text"]:
        groups.append({"reasoning": None, "calls": [], "results": [], "text": ""})
    role = "model" if len(groups) == 1 else "assistant"
    out = []
    for group in groups:
        message: dict = {"role": role, "content": group["text"]}
        if group["reasoning"] is not None:
            message["reasoning_content"] = group["reasoning"]
        if group["calls"]:
            message["tool_calls"] = [call_message(name, arguments) for name, arguments in group["calls"]]
        out.append(message)
        out.extend(result_message(*result) for result in group["results"])
    return out


def call_message(name: str, arguments: dict) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def result_message(name: str, value: object, media: tuple[Marker, ...] = ()) -> dict:
    if isinstance(value, dict) and list(value) == ["value"] and not isinstance(value["value"], dict):
        value = value["value"]  # {value: x} is how a result that is no object is written
    if media:
        parts = [{"type": "text", "text": value}] if value != "" else []
        value = parts + [{"type": m.value} for m in media]
    return {"role": "tool", "name": name, "content": value}


def system_content(text: str) -> str | list[dict]:
    """The system text as content that writes it again: parts where it ends with spaces."""
    core = text.rstrip(" ")
    spaces = len(text) - len(core)
    if not spaces or core != core.strip():
        return text
    return [{"type": "text", "text": part} for part in [core] + [""] * (spaces - 1)]


def tool_of(name: str, declaration: dict) -> dict:
    return {"type": "function", "function": {"name": name, **declaration}}


def content_of(parts, prefix: str = "") -> str | list[dict]:
    """User content: a string, or text parts (trimmed, joined) and media parts. ``prefix``
    opens the first text untrimmed (Gemma 3's system text and its separator)."""
    out: list = []
    pending = prefix
    for part in parts:
        if isinstance(part, Marker):
            if pending:
                out.append(pending)
                pending = ""
            out.append(part)
        else:
            pending += part.strip()
    if pending:
        out.append(pending)
    if not any(isinstance(p, Marker) for p in out):
        return "".join(out)
    return [{"type": p.value} if isinstance(p, Marker) else {"type": "text", "text": p} for p in out]


def normalized_record(
    record: object, dialect: Dialect = GEMMA4, *, options: EncodeOptions | None = None, **keywords
) -> dict:
    """What :func:`~gemma_turns.parser.parse` gives back for the encoding of ``record`` (a
    list of messages or ``{"messages", "tools", "chat_template_kwargs"}``) with these encode
    options (``earlier_reasoning``, ``reserved``, ... as for the encoder)."""
    options = options_of(options, keywords, mode="inference")
    return record_of(from_record(record, dialect, options))


def record_of(conversation: Conversation) -> dict:
    """The normalized record of a checked conversation (see the module docstring)."""
    messages: list[dict] = []
    system = conversation.system
    if system is not None and (system or not (conversation.tools or conversation.thinking)):
        messages.append({"role": "system", "content": system_content(system)})
    turns = conversation.turns
    model = conversation.dialect.trained_role
    k = 0
    while k < len(turns):
        turn = turns[k]
        if turn.role != model:
            messages.append({"role": turn.role, "content": content_of(turn.parts)})
            k += 1
            continue
        group = [turn]
        k += 1
        while k < len(turns) and turns[k].continues:
            group.append(turns[k])
            k += 1
        elements: list[tuple] = []
        for message in group:
            if message.reasoning is not None:
                elements.append(("reasoning", message.reasoning))
            for call in message.calls:
                elements.append(("call", *read_value(call.items, prefix="call:")))
            for result in message.results:
                elements.append(("result", *read_value(result.items, prefix="response:"), result.media))
            text = "".join(p.strip() for p in message.parts if type(p) is str)
            if text:
                elements.append(("text", text))
        messages.extend(messages_of(elements, closed=group[-1].closes, last=k == len(turns)))
    tools = [tool_of(*read_value(items, prefix="declaration:")) for items in conversation.tools]
    return finish_record(messages, tools, conversation.thinking)


def finish_record(messages: list[dict], tools: list[dict], thinking: bool) -> dict:
    """The record of ``messages``: tools and the template switches where they matter
    (``preserve_thinking`` where reasoning stands before the last user message)."""
    record: dict = {"messages": messages}
    if tools:
        record["tools"] = tools
    kwargs = {}
    if thinking:
        kwargs["enable_thinking"] = True
    last_user = max((k for k, m in enumerate(messages) if m["role"] == "user"), default=-1)
    if any("reasoning_content" in m for m in messages[:last_user]):
        kwargs["preserve_thinking"] = True
    if kwargs:
        record["chat_template_kwargs"] = kwargs
    return record
