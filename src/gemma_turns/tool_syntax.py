"""Gemma's tool syntax: JSON values, calls, results and declarations, written and read back.

Gemma 4 writes tool data in a syntax of its own, not JSON: keys bare and sorted (as Jinja's
``dictsort``: case-insensitively, stably), strings between two ``<|"|>`` tokens, numbers as
Python prints them, ``true``/``false``/``null``:

    call:get_weather{city:<|"|>Paris<|"|>,days:3,units:null}
    response:get_weather{value:<|"|>sunny<|"|>}
    declaration:get_weather{description:<|"|>...<|"|>,parameters:{properties:{...},type:<|"|>OBJECT<|"|>}}

The writers return *items*: text, and :attr:`Marker.QUOTE` where the quote token goes (the
encoder places it as an id, so a string can never close its own quotes). The reader
(:func:`read_value`) takes the same items back. What the syntax cannot delimit (a bare key
or a tool name holding ``{}[]:,``) is refused with :class:`ToolSyntaxError`, which the
conversation checks turn into a located ConversationError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from .chat_format import Marker

__all__ = [
    "ToolSyntaxError",
    "call_items",
    "declaration_items",
    "read_value",
    "response_items",
]

Q = Marker.QUOTE
Items = list  # of str and Marker.QUOTE; adjacent text merged
UNDELIMITED = re.compile(r"[{}\[\]:,]")
SCHEMA_KEYS = frozenset({"description", "type", "properties", "required", "nullable"})


class ToolSyntaxError(ValueError):
    """A value Gemma's tool syntax cannot hold; ``path`` says where (``city``, ``items[2]``)."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.path = path


class _Out(list):
    def text(self, value: str) -> None:
        if self and type(self[-1]) is str:
            self[-1] += value
        else:
            self.append(value)

    def quoted(self, value: str) -> None:
        self.append(Q)
        if value:
            self.append(value)
        self.append(Q)


def dictsort(mapping: Mapping) -> list:
    """Items sorted as Jinja's ``dictsort`` sorts them: by key, ignoring case, stably."""
    return sorted(mapping.items(), key=lambda item: item[0].lower() if isinstance(item[0], str) else item[0])


def _bare_key(key: object, path: str) -> str:
    if not isinstance(key, str):
        raise ToolSyntaxError(f"a key must be a string, got {type(key).__name__}", path)
    if not key or UNDELIMITED.search(key):
        raise ToolSyntaxError(
            f"the key {key!r} cannot be written bare in Gemma's tool syntax (empty, or holds one of {{}}[]:,)",
            path,
        )
    return key


def _value(out: _Out, value: object, *, quote_keys: bool, path: str) -> None:
    """The template's ``format_argument``."""
    if value is None:
        out.text("null")
    elif isinstance(value, str):
        out.quoted(value)
    elif value is True or value is False:
        out.text("true" if value else "false")
    elif isinstance(value, Mapping):
        out.text("{")
        for k, (key, item) in enumerate(dictsort(value)):
            if k:
                out.text(",")
            where = f"{path}.{key}" if path else str(key)
            if quote_keys:
                if not isinstance(key, str):
                    raise ToolSyntaxError(f"a key must be a string, got {type(key).__name__}", where)
                out.quoted(key)
            else:
                out.text(_bare_key(key, where))
            out.text(":")
            _value(out, item, quote_keys=quote_keys, path=where)
        out.text("}")
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        out.text("[")
        for k, item in enumerate(value):
            if k:
                out.text(",")
            _value(out, item, quote_keys=quote_keys, path=f"{path}[{k}]")
        out.text("]")
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ToolSyntaxError(f"the number {value} has no spelling a reader can trust", path)
        out.text(str(value))
    else:
        raise ToolSyntaxError(f"a value must be JSON data, got {type(value).__name__}", path)


def _name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise ToolSyntaxError(f"the {what} name must be a non-empty string, got {name!r}", "name")
    if UNDELIMITED.search(name) or name != name.strip():
        raise ToolSyntaxError(
            f"the {what} name {name!r} cannot be written in Gemma's tool syntax (spaces at an end, or one of {{}}[]:,)",
            "name",
        )
    return name


def call_items(name: str, arguments: Mapping) -> Items:
    """``call:NAME{key:value,...}`` (inside ``<|tool_call>`` ... ``<tool_call|>``)."""
    out = _Out()
    out.text(f"call:{_name(name, 'tool')}")
    _value(out, arguments, quote_keys=False, path="")
    return list(out)


def response_items(name: str, value: object) -> Items:
    """``response:NAME{key:value,...}`` for a mapping, else ``response:NAME{value:...}``."""
    out = _Out()
    out.text(f"response:{_name(name, 'tool')}")
    _value(out, value if isinstance(value, Mapping) else {"value": value}, quote_keys=False, path="")
    return list(out)


def declaration_items(function: Mapping) -> Items:
    """``declaration:NAME{description:...,parameters:{...}}`` from an OpenAI/HF function schema,
    as the official template writes it (its ``format_function_declaration``)."""
    out = _Out()
    name = _name(function.get("name"), "function")
    out.text(f"declaration:{name}{{description:")
    out.quoted(_text(function.get("description"), "description"))
    params = function.get("parameters")
    if params:
        if not isinstance(params, Mapping):
            raise ToolSyntaxError("parameters must be a JSON schema object", "parameters")
        if not params.get("type"):
            raise ToolSyntaxError(
                "parameters has no type; the official template then leaves its brace open "
                "(give it \"type\": \"object\")",
                "parameters",
            )
        out.text(",parameters:{")
        if params.get("properties"):
            out.text("properties:{")
            _properties(out, _mapping(params["properties"], "parameters.properties"), path="parameters.properties")
            out.text("},")
        if params.get("required"):
            _required(out, params["required"], "parameters.required")
            out.text(",")
        out.text("type:")
        out.quoted(_upper(params["type"]))
        out.text("}")
    if "response" in function:
        response = function["response"]
        if not isinstance(response, Mapping) or _upper(response.get("type")) != "OBJECT":
            raise ToolSyntaxError(
                "a response declaration must be an object schema; the official template leaves "
                "any other open",
                "response",
            )
        out.text(",response:{")
        if response.get("description"):
            out.text("description:")
            out.quoted(_text(response["description"], "response.description"))
            out.text(",")
        out.text("type:")
        out.quoted("OBJECT")
        out.text("}")
    out.text("}")
    return list(out)


def _properties(out: _Out, properties: Mapping, *, path: str, filter_keys: bool = False) -> None:
    """The template's ``format_parameters``."""
    first = True
    for key, value in dictsort(properties):
        if filter_keys and key in SCHEMA_KEYS:
            continue
        where = f"{path}.{key}"
        if not first:
            out.text(",")
        first = False
        out.text(f"{_bare_key(key, where)}:{{")
        if not isinstance(value, Mapping):
            value = {}  # as the template reads a schema that is no object: no field of it
        comma = False

        def separate() -> None:
            nonlocal comma
            if comma:
                out.text(",")
            comma = True

        kind = _upper(value.get("type"))
        if value.get("description"):
            out.text("description:")
            out.quoted(_text(value["description"], f"{where}.description"))
            comma = True
        if kind == "STRING":
            if value.get("enum"):
                separate()
                out.text("enum:")
                _value(out, value["enum"], quote_keys=True, path=f"{where}.enum")
        elif kind == "ARRAY":
            items = value.get("items")
            if isinstance(items, Mapping) and items:
                separate()
                out.text("items:{")
                _items(out, items, path=f"{where}.items")
                out.text("}")
        if value.get("nullable"):
            separate()
            out.text("nullable:true")
        if kind == "OBJECT":
            nested = value.get("properties")
            separate()
            out.text("properties:{")
            if isinstance(nested, Mapping):
                _properties(out, nested, path=f"{where}.properties")
            else:
                _properties(out, value, path=where, filter_keys=True)
            out.text("}")
            if value.get("required"):
                separate()
                _required(out, value["required"], f"{where}.required")
        separate()
        out.text("type:")
        out.quoted(kind)
        out.text("}")


def _items(out: _Out, items: Mapping, *, path: str) -> None:
    first = True
    for key, value in dictsort(items):
        if value is None:
            continue
        if not first:
            out.text(",")
        first = False
        where = f"{path}.{key}"
        if key == "properties":
            out.text("properties:{")
            if isinstance(value, Mapping):
                _properties(out, value, path=where)
            out.text("}")
        elif key == "required":
            _required(out, value, where)
        elif key == "type":
            out.text("type:")
            if isinstance(value, str):
                _value(out, value.upper(), quote_keys=True, path=where)
            else:
                _value(out, [_upper(v) for v in value], quote_keys=True, path=where)
        else:
            out.text(f"{_bare_key(key, where)}:")
            _value(out, value, quote_keys=True, path=where)


def _required(out: _Out, names: object, path: str) -> None:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ToolSyntaxError("required must be a list of property names", path)
    out.text("required:[")
    for k, name in enumerate(names):
        if k:
            out.text(",")
        out.quoted(_text(name, f"{path}[{k}]"))
    out.text("]")


def _upper(value: object) -> str:
    """Jinja's ``upper`` filter: the value's text, upper-cased ("" for a missing one)."""
    return "" if value is None else str(value).upper()


def _text(value: object, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ToolSyntaxError(f"expected a string, got {type(value).__name__}", path)
    return value


def _mapping(value: object, path: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ToolSyntaxError(f"expected a JSON schema object, got {type(value).__name__}", path)
    return value


# -- reading back ------------------------------------------------------------------------------

_ATOM = re.compile(r"-?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan)|true|false|null")
_INTEGER = re.compile(r"-?\d+")


_TOKEN = re.compile(r"[{}\[\]:,]|[^{}\[\]:,]+")
_DELIMITERS = frozenset("{}[]:,")


def read_value(items: Sequence, *, prefix: str) -> tuple[str, object]:
    """``(name, value)`` from items written by :func:`call_items` / :func:`response_items` /
    :func:`declaration_items` (``prefix`` is ``"call:"``, ``"response:"`` or
    ``"declaration:"``). ValueError says where the items stop making sense.

    The text is cut into delimiters and the runs between them once (a regex), then read by
    recursive descent over those tokens: no loop per character."""
    tokens: list = []
    for item in items:
        if item is Q:
            tokens.append(Q)
        else:
            tokens.extend(_TOKEN.findall(item))
    k, n = 0, len(tokens)
    while k < n and tokens[k] is not Q and tokens[k] != "{":
        k += 1
    head = "".join(tokens[:k])
    if not head.startswith(prefix):
        raise ValueError(f"expected {prefix!r}, found {head[:20]!r}")
    value, k = _read(tokens, k)
    if k != n:
        raise ValueError(f"unexpected {_shown(tokens[k])} after the value")
    return head[len(prefix) :], value


def _shown(token) -> str:
    return '<|"|>' if token is Q else repr(token[:20])


def _expect(tokens: list, k: int, char: str) -> int:
    if k >= len(tokens) or tokens[k] != char:
        found = "the end" if k >= len(tokens) else _shown(tokens[k])
        raise ValueError(f"expected {char!r}, found {found}")
    return k + 1


def _read(tokens: list, k: int) -> tuple[object, int]:
    n = len(tokens)
    if k >= n:
        raise ValueError("the value ends early")
    token = tokens[k]
    if token is Q:
        j = k + 1
        while j < n and tokens[j] is not Q:
            j += 1
        if j == n:
            raise ValueError('a string is never closed by <|"|>')
        return "".join(tokens[k + 1 : j]), j + 1
    if token == "{":
        out: dict = {}
        k += 1
        while k >= n or tokens[k] != "}":
            if out:
                k = _expect(tokens, k, ",")
            if k < n and tokens[k] is Q:
                key, k = _read(tokens, k)
            elif k < n and tokens[k] not in _DELIMITERS:
                key, k = tokens[k], k + 1
            else:
                raise ValueError(f"expected a key, found {'the end' if k >= n else _shown(tokens[k])}")
            k = _expect(tokens, k, ":")
            out[key], k = _read(tokens, k)
        return out, k + 1
    if token == "[":
        items: list = []
        k += 1
        while k >= n or tokens[k] != "]":
            if items:
                k = _expect(tokens, k, ",")
            value, k = _read(tokens, k)
            items.append(value)
        return items, k + 1
    if token in _DELIMITERS or not _ATOM.fullmatch(token):
        raise ValueError(f"not a value: {_shown(token)}")
    if token in ("true", "false"):
        return token == "true", k + 1
    if token == "null":
        return None, k + 1
    return (int(token) if _INTEGER.fullmatch(token) else float(token)), k + 1
