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


def read_value(items: Sequence, *, prefix: str) -> tuple[str, object]:
    """``(name, value)`` from items written by :func:`call_items` / :func:`response_items`
    (``prefix`` is ``"call:"`` or ``"response:"``); a response ``{value:...}`` gives the bare
    value. ValueError says where the items stop making sense."""
    reader = _Reader(items)
    head = reader.bare(stop="{")
    if not head.startswith(prefix):
        raise ValueError(f"expected {prefix!r}, found {head[:20]!r}")
    name = head[len(prefix) :]
    value = reader.value()
    reader.end()
    return name, value


class _Reader:
    def __init__(self, items: Sequence):
        self.items = list(items)
        self.k = 0  # item
        self.i = 0  # character in a text item

    def _peek(self):
        while self.k < len(self.items):
            item = self.items[self.k]
            if item is Q:
                return Q
            if self.i < len(item):
                return item[self.i]
            self.k, self.i = self.k + 1, 0
        return None

    def _take(self, char: str) -> None:
        if self._peek() != char:
            raise ValueError(f"expected {char!r}, found {self._peek()!r}")
        self.i += 1

    def bare(self, *, stop: str) -> str:
        chars = []
        while (c := self._peek()) is not None and c is not Q and c not in stop:
            chars.append(c)
            self.i += 1
        return "".join(chars)

    def value(self) -> object:
        c = self._peek()
        if c is Q:
            self.k, self.i = self.k + 1, 0
            text = []
            while (c := self._peek()) is not Q:
                if c is None:
                    raise ValueError("a string is never closed by <|\"|>")
                item = self.items[self.k]
                text.append(item[self.i :])
                self.k, self.i = self.k + 1, 0
            self.k, self.i = self.k + 1, 0
            return "".join(text)
        if c == "{":
            self.i += 1
            out = {}
            while self._peek() != "}":
                if out:
                    self._take(",")
                key = self.value() if self._peek() is Q else self.bare(stop=":")
                self._take(":")
                out[key] = self.value()
            self.i += 1
            return out
        if c == "[":
            self.i += 1
            out = []
            while self._peek() != "]":
                if out:
                    self._take(",")
                out.append(self.value())
            self.i += 1
            return out
        atom = self.bare(stop=",}]")
        if not _ATOM.fullmatch(atom):
            raise ValueError(f"not a value: {atom[:20]!r}")
        if atom in ("true", "false"):
            return atom == "true"
        if atom == "null":
            return None
        number = float(atom)
        return int(atom) if re.fullmatch(r"-?\d+", atom) else number

    def end(self) -> None:
        if self._peek() is not None:
            raise ValueError(f"unexpected {self._peek()!r} after the value")
