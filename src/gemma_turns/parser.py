"""Token ids back to the conversation: the inverse of the encoder.

    ids -> Layout (read through the tokenizer's dialect) -> turns: role, content text, media

For every sequence the encoder makes,

    parse(tokenizer.encode_chat(messages, ...), tokenizer).messages == normalized_messages(messages)

where the normalized form is what the ids can tell: roles ``user``/``model``, content trimmed,
a system text folded into the first user turn (``system + "\\n\\n" + content``, in Gemma 3),
text parts joined, a media part as ``{"type": "image"}`` (its type). :meth:`ParsedConversation.encodable_messages`
gives messages that encode back to the very same ids (it splits a system text off again where
trimming would otherwise change the first user turn).

Ids whose layout is broken (no BOS, a turn never closed, a role that is neither user nor
model, ...) raise :class:`ParseError`, which carries the validator's Finding: rule, position,
token id, what was expected and the decoded context. Content problems (non-canonical ids,
reserved ids, untrimmed text) do not stop the parse: the text is what the ids decode to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .chat_format import GEMMA3, Dialect, Marker
from .conversation import normalize_messages
from .errors import ParseError
from .findings import BLOCKING, Ending, Expect
from .blocks import CALL_O, CH_C, CH_O, CLOSE, HANDOVER, MEDIA, OPEN, RESP_O, THINK, TOOL_O
from .turn_messages import content_of, finish_record, messages_of, normalized_record, system_content, tool_of
from .validator import read_layout

__all__ = [
    "ParseError",
    "ParsedConversation",
    "ParsedTurn",
    "normalized_messages",
    "normalized_record",
    "parse",
]


@dataclass(frozen=True, slots=True)
class ParsedTurn:
    """One closed turn: its role, its content parts (text, or a media Marker), and the
    positions of its opening and closing markers."""

    role: str
    parts: tuple[str | Marker, ...]
    start: int
    end: int

    @property
    def content(self) -> str | list[dict]:
        """A string when the turn is all text; else a list of text and image parts."""
        if not any(isinstance(part, Marker) for part in self.parts):
            return "".join(self.parts)
        return [
            {"type": part.value} if isinstance(part, Marker) else {"type": "text", "text": part}
            for part in self.parts
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedConversation:
    """What a sequence says: chat turns and how the sequence ends, or a PT text.

    ``ending``: ``generation_prompt`` (an open model turn header, not a turn), ``model_turn``
    or ``user_turn`` (the last turn is closed), ``eos`` or ``text`` (PT, with or without EOS).
    """

    turns: tuple[ParsedTurn, ...] = ()
    ending: Ending
    text: str | None = None
    dialect: Dialect = GEMMA3
    record: dict | None = None  # dialects with tools (Gemma 4): the normalized record

    PROMPTS = frozenset({"generation_prompt", "empty_thought_prompt", "thought_after_results"})

    @property
    def is_pt(self) -> bool:
        return self.text is not None

    @property
    def messages(self) -> list[dict]:
        """The turns as ``{"role", "content"}`` messages, in the normalized form."""
        if self.record is not None:
            return self.record["messages"]
        return [{"role": turn.role, "content": turn.content} for turn in self.turns]

    @property
    def add_generation_prompt(self) -> bool:
        return self.ending in self.PROMPTS

    def encodable_messages(self) -> list[dict] | dict:
        """Messages that the encoder turns back into the same ids.

        The formatter trims content but not the system text, so a first user turn that
        starts (or ends) with whitespace can only come from a system message; it is split
        off as one here: ``system + "\\n\\n" + content``, the content trimmed.
        """
        if self.record is not None:
            return self.record  # Gemma 4: tools and the thinking switch travel with the messages
        messages = self.messages
        if not self.turns or self.turns[0].role != "user":
            return messages
        parts = list(self.turns[0].parts)
        if not parts or isinstance(parts[0], Marker) or parts[0] == parts[0].strip():
            return messages
        split = self.dialect.split_system(parts[0])
        if split is None:
            return messages  # no formatter output looks like this; re-encoding will differ
        system, rest = split
        parts[0:1] = [rest] if rest else []
        first = ParsedTurn("user", tuple(parts), self.turns[0].start, self.turns[0].end)
        return [{"role": "system", "content": system}, {"role": "user", "content": first.content}] + messages[1:]


def parse(ids: object, tokenizer, *, expect: Expect | None = None) -> ParsedConversation:
    """The conversation (or PT text) that ``ids`` encode, for ``tokenizer`` (a GemmaTokenizer).

    ``ids``: one unpadded sequence (a list or 1-D array of ints, or an Encoding). ``expect``
    as in :func:`~gemma_turns.validator.validate`: ``"pt"`` reads a PT text, ``"inference"``
    or ``"training"`` a chat, ``None`` decides by the presence of a turn-opening marker; the
    ending is reported, not checked.

    Raises ParseError when the turn layout is broken.
    """
    if hasattr(ids, "ids") and hasattr(ids, "loss_mask"):
        ids = ids.ids
    array = np.asarray(ids)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise ValueError(f"parse takes one sequence of integer ids, got shape {array.shape} ({array.dtype})")
    array = array.astype(np.int64)
    layout, found = read_layout(array, tokenizer, expect=expect)
    findings = found.report(max_findings=None).findings
    blocking = [f for f in findings if f.rule in BLOCKING or (f.rule == "text_bos" and layout.chat[0])]
    if blocking:
        raise ParseError(blocking[0])
    ending = str(layout.ending[0]) if len(layout.ending) else ""
    if not ending:
        raise ParseError(next(f for f in findings if f.rule == "bad_ending"))
    decode = tokenizer.processor.decode
    values = array.tolist()
    dialect = tokenizer.dialect
    if not layout.chat[0]:
        body = values[1 : len(values) - (ending == "eos")]
        return ParsedConversation(ending=ending, text=decode(body), dialect=dialect)
    if layout.blocks is not None:
        return ParsedConversation(ending=ending, dialect=dialect, record=_record(array, layout, decode))
    return ParsedConversation(turns=tuple(_turns(array, layout, decode)), ending=ending, dialect=dialect)


def _record(array: np.ndarray, layout, decode) -> dict:
    """The normalized record of the one unit, in a dialect with tools: the system turn, user
    turns, and model turns cut into messages (see :mod:`gemma_turns.turn_messages`)."""
    vocab, blocks = layout.vocab, layout.blocks
    values = array.tolist()
    media = {token_id: marker for marker, token_id in _media_markers(vocab).items()}
    kinds, positions, turn_of = blocks.kind.tolist(), blocks.pos.tolist(), blocks.turn.tolist()
    marks_of: dict[int, list[int]] = {}
    for k, t in enumerate(turn_of):
        if t >= 0:
            marks_of.setdefault(t, []).append(k)
    turns = layout.turns_of(0).tolist()
    ending = str(layout.ending[0])
    if ending in ("generation_prompt", "empty_thought_prompt"):
        turns = turns[:-1]  # the prompt: no turn of the conversation
    messages: list[dict] = []
    tools: list[dict] = []
    thinking = bool(blocks.thinking[0])
    for j, t in enumerate(turns):
        role = vocab.role_name(layout.role[t])
        start, end = int(layout.opens[t]), int(layout.content_end[t])
        marks = [k for k in marks_of.get(t, []) if kinds[k] not in (OPEN, CLOSE)]
        if role == "system":
            stop = positions[marks[0]] if marks and kinds[marks[0]] != THINK else end
            text = _after_header(decode(values[start + 1 : stop]))
            if marks and kinds[marks[0]] == THINK:
                after = positions[marks[0]]
                stop = positions[marks[1]] if len(marks) > 1 else end
                text = decode(values[after + 1 : stop])[1:]
            tools.extend(tool_of(*blocks.values[positions[k]]) for k in marks if kinds[k] == TOOL_O)
            if text or not (tools or thinking):
                messages.append({"role": "system", "content": system_content(text)})
            continue
        if role != "model":
            cuts = [positions[k] for k in marks if kinds[k] == MEDIA]
            parts: list = [_after_header(decode(values[start + 1 : cuts[0] if cuts else end]))]
            for c, cut in enumerate(cuts):
                parts.append(media[values[cut]])
                parts.append(decode(values[cut + 1 : cuts[c + 1] if c + 1 < len(cuts) else end]))
            messages.append({"role": role, "content": content_of([p for p in parts if p != ""])})
            continue
        elements: list[tuple] = []
        here = start + 3
        for k in marks:
            kind, at = kinds[k], positions[k]
            if at > here and kind in (CH_O, CALL_O, RESP_O, HANDOVER):
                elements.append(("text", decode(values[here:at])))
            if kind == CH_O:
                if k + 1 < len(kinds) and kinds[k + 1] == CH_C:
                    close = positions[k + 1]
                    elements.append(("reasoning", decode(values[at + 1 : close])[len("thought\n") : -1]))
            elif kind in (CALL_O, RESP_O):
                name, value = blocks.values[at]
                if kind == CALL_O:
                    elements.append(("call", name, value))
                else:
                    elements.append(("result", name, value, ()))
            elif kind == MEDIA:
                _, name, value, returned = elements[-1]
                elements[-1] = ("result", name, value, (*returned, media[values[at]]))
            here = at + 1
        if here < end and (not marks or kinds[marks[-1]] != CH_O):
            elements.append(("text", decode(values[here:end])))
        last = j == len(turns) - 1
        messages.extend(messages_of(elements, closed=bool(layout.closed[t]), last=last))
    return finish_record(messages, tools, thinking)


def _after_header(text: str) -> str:
    """The text after a turn header's newline, which may be decoded merged with what follows."""
    return text.split("\n", 1)[1] if "\n" in text else ""


def _turns(array: np.ndarray, layout, decode) -> list[ParsedTurn]:
    """The closed turns of the one unit: role, and content cut at media markers."""
    vocab = layout.vocab
    media = {token_id: marker for marker, token_id in _media_markers(vocab).items()}
    values = array.tolist()
    media_at = np.flatnonzero(np.isin(array, list(media))).tolist()
    turns = []
    for t in layout.turns_of(0).tolist():
        if not layout.closed[t]:
            break  # the generation prompt: not a turn
        start, end = int(layout.opens[t]), int(layout.content_end[t])
        role = vocab.role_name(layout.role[t])
        cuts = [i for i in media_at if layout.content_start[t] <= i < end]
        # The header and the first text run: split at the header's newline, which may be
        # merged with newlines of a system text that follows it ("user\n" + "\nSys").
        first = decode(values[start + 1 : cuts[0] if cuts else end])
        parts: list[str | Marker] = []
        text = first.split("\n", 1)[1] if "\n" in first else ""
        if text:
            parts.append(text)
        for j, cut in enumerate(cuts):
            parts.append(media[values[cut]])
            text = decode(values[cut + 1 : cuts[j + 1] if j + 1 < len(cuts) else end])
            if text:
                parts.append(text)
        turns.append(ParsedTurn(role, tuple(parts), start, end))
    return turns


def _media_markers(vocab) -> dict[Marker, int]:
    """The media markers of the dialect that the model has, with their ids."""
    markers = vocab.dialect.media.values()
    return {m: i for m, i in vocab.markers.items() if m in markers}


def normalized_messages(messages: object, dialect: Dialect = GEMMA3) -> list[dict]:
    """The form :func:`parse` gives ``messages`` back in (raises ConversationError as the
    encoder does): roles ``user``/``model``; text trimmed as the formatter trims it, text
    parts joined; the system text and a blank line opening the first user turn's content.
    In a dialect with tools (Gemma 4): the messages of :func:`normalized_record`."""
    if dialect.tools:
        return normalized_record(messages, dialect)["messages"]
    conversation = normalize_messages(messages, dialect)
    out = []
    if conversation.system is not None and dialect.system == "own_turn":
        out.append({"role": dialect.system_role, "content": conversation.system})
    for k, turn in enumerate(conversation.turns):
        prefix = ""
        if k == 0 and conversation.system is not None and dialect.system == "first_user_turn":
            prefix = conversation.system + dialect.system_separator
        out.append({"role": turn.role, "content": content_of(turn.parts, prefix)})
    return out
