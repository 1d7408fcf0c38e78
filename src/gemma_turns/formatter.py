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

from .chat_format import GEMMA3, Checkpoint, Dialect, Marker
from .conversation import Conversation, from_record, with_tools
from .options import EncodeOptions, options_of

__all__ = [
    "Run",
    "TrainOn",
    "content_stretches",
    "format_chat",
    "render_runs",
    "runs_text",
    "wants_generation_prompt",
]

TrainOn = Literal["all", "last", "none"]
Run = tuple[str | Marker, bool]  # (text or marker, trainable)

def format_chat(
    messages: object,
    *,
    dialect: Dialect = GEMMA3,
    tools: object = None,
    options: EncodeOptions | None = None,
    **keywords,
) -> str:
    """Return the turn text of ``messages`` (or a record), without BOS (a token, not text).

    Options as for :meth:`GemmaTokenizer.encode_chat <gemma_turns.encoder.GemmaTokenizer.encode_chat>`;
    ``mode`` defaults to inference, and ``add_generation_prompt`` to True unless the
    conversation ends with the model's message.

    >>> format_chat([{"role": "user", "content": " Hi! "}])
    '<start_of_turn>user\\nHi!<end_of_turn>\\n<start_of_turn>model\\n'
    """
    options = options_of(options, keywords, mode="inference")
    conversation = from_record(with_tools(messages, tools), dialect, options)
    runs = render_runs(
        conversation,
        add_generation_prompt=wants_generation_prompt(conversation, options),
        train_on=options.train_on,
        checkpoint=dialect.checkpoint(options.checkpoint),
    )
    return runs_text(runs, dialect)


def wants_generation_prompt(conversation: Conversation, options: EncodeOptions) -> bool:
    """Whether to end with the generation prompt: as asked, or in inference unless the
    conversation ends with the model's own finished message."""
    if options.add_generation_prompt is not None:
        return options.add_generation_prompt
    if options.mode != "inference":
        return False
    last = conversation.turns[-1] if conversation.turns else None
    model = conversation.dialect.trained_role
    return last is None or last.role != model or bool(last.results and not last.closes)


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
    checkpoint: Checkpoint | None = None,
) -> list[Run]:
    """The runs of ``conversation`` in order.

    ``train_on`` picks the model turns whose content and closing marker are trainable:
    ``all`` of them, the ``last`` one only, or ``none``; a message's ``weight`` overrides
    it. With ``train_newline`` the ``\\n`` after a trained turn's closing marker is
    trainable too. In a model turn the model writes (and learns) its thought channel, its
    calls, the hand-over marker after them and its text; a tool's result is written by the
    environment and never trained. ``checkpoint`` picks the generation prompt where the
    dialect's differs by model.
    """
    dialect = conversation.dialect
    out = _Runs()
    text, marker = out.text, out.marker
    turns = conversation.turns
    opening = (Marker.TURN_OPEN, 0)
    model, header_end, turn_end = dialect.trained_role, dialect.header_end, dialect.turn_end
    last_model = -1  # where the last model turn starts: what train_on="last" trains from
    if train_on == "last":
        last_model = max((k for k, t in enumerate(turns) if t.role == model and not t.continues), default=-1)
    system = conversation.system
    folded = system is not None and dialect.system == "first_user_turn"  # into the first turn
    if dialect.system == "own_turn" and (
        system is not None or conversation.tools or conversation.thinking
    ):
        marker(Marker.TURN_OPEN, 0)
        text(dialect.system_role + header_end, 0)
        if conversation.thinking:
            marker(Marker.THINK, 0)
            text("\n", 0)
        text(system or "", 0)
        for declaration in conversation.tools:
            marker(Marker.TOOL_OPEN, 0)
            out.items(declaration, 0)
            marker(Marker.TOOL_CLOSE, 0)
        marker(Marker.TURN_CLOSE, 0)
        text(turn_end, 0)
    append = out.append
    for k, turn in enumerate(turns):
        if turn.weight is not None:
            trained = bool(turn.weight)
        else:
            trained = turn.role == model and (train_on == "all" or (train_on == "last" and k >= last_model))
        parts = turn.parts
        if (
            len(parts) == 1
            and type(parts[0]) is str
            and turn.closes
            and not (turn.continues or turn.calls or turn.reasoning is not None)
            and not (k == 0 and folded)
        ):
            # The common turn, kept fast: a header, one text, the close. A marker starts it,
            # so no text run before it can merge with this one.
            header, content = turn.role + header_end, parts[0].strip()
            append(opening)
            if trained:
                append((header, 0))
                if content:
                    append((content, True))
            else:
                append((header + content, 0))
            append((Marker.TURN_CLOSE, trained))
            append((turn_end, trained and train_newline))
            continue
        if not turn.continues:
            marker(Marker.TURN_OPEN, 0)
            header = turn.role + header_end
            if k == 0 and folded:
                header += system + dialect.system_separator
            text(header, 0)
        if turn.reasoning is not None:
            marker(Marker.CHANNEL_OPEN, trained)
            text("thought\n" + turn.reasoning + "\n", trained)
            marker(Marker.CHANNEL_CLOSE, trained)
        for call in turn.calls:
            marker(Marker.CALL_OPEN, trained)
            out.items(call.items, trained)
            marker(Marker.CALL_CLOSE, trained)
        for r, result in enumerate(turn.results):
            marker(Marker.RESPONSE_OPEN, 0 if r else trained)  # the first: the model's hand-over
            out.items(result.items, 0)
            marker(Marker.RESPONSE_CLOSE, 0)
            for media in result.media:
                marker(media, 0)
        for part in parts:
            if type(part) is str:
                text(part.strip(), trained)
            else:
                marker(part, trained)
        if turn.calls and not turn.results:
            marker(Marker.RESPONSE_OPEN, trained)  # the hand-over, awaiting the results
        if turn.closes:
            marker(Marker.TURN_CLOSE, trained)
            text(turn_end, trained and train_newline)
    if add_generation_prompt:
        _generation_prompt(out, conversation, checkpoint)
    return out


def _generation_prompt(out: _Runs, conversation: Conversation, checkpoint: Checkpoint | None) -> None:
    """Open the model's turn; after tool results (the turn still open), only a thought
    channel when thinking is on; after calls awaiting their results, nothing."""
    dialect = conversation.dialect
    last = conversation.turns[-1] if conversation.turns else None
    if last is not None and not last.closes:
        if last.results and conversation.thinking:
            out.marker(Marker.CHANNEL_OPEN, 0)
            out.text("thought\n", 0)
        return
    out.marker(Marker.TURN_OPEN, 0)
    out.text(dialect.generation_role + dialect.header_end, 0)
    if dialect.checkpoints and not conversation.thinking:
        if checkpoint is None:
            raise ValueError(missing_checkpoint(dialect))
        if checkpoint.empty_thought:
            out.marker(Marker.CHANNEL_OPEN, 0)
            out.text("thought\n", 0)
            out.marker(Marker.CHANNEL_CLOSE, 0)


def missing_checkpoint(dialect: Dialect) -> str:
    """Why a prompt needs the checkpoint named, listing which checkpoints differ."""
    plain = ", ".join(c.names[1] for c in dialect.checkpoints if not c.empty_thought)
    empty = ", ".join(c.names[1] for c in dialect.checkpoints if c.empty_thought)
    return (
        f"the {dialect.name} generation prompt without thinking depends on the checkpoint: "
        f"{plain} end it with {dialect.turn_open}model\\n; {empty} add an empty thought channel. "
        "Name it: checkpoint='gemma-4-31b-it' (CLI: --checkpoint 31b), or turn thinking on"
    )


class _Runs(list):
    """Runs being built: adjacent text of one trainability is merged, as SentencePiece
    would see it in the whole turn text."""

    def text(self, value: str, bit) -> None:
        if not value:
            return
        if self and type(self[-1][0]) is str and self[-1][1] == bit:
            self[-1] = (self[-1][0] + value, bit)
        else:
            self.append((value, bit))

    def marker(self, marker: Marker, bit) -> None:
        self.append((marker, bit))

    def items(self, items: list, bit) -> None:
        """Tool syntax: text, and quote markers."""
        for item in items:
            if type(item) is str:
                self.text(item, bit)
            else:
                self.append((item, bit))


def content_stretches(conversation: Conversation) -> Iterator[tuple[int | None, str | None, str | None, list]]:
    """Each stretch of the caller's text as rendered, for locating a problem in the input.

    Yields ``(message_index, role, field, spans)`` in rendering order, where ``spans`` lists
    ``(part_index, offset, text)``: the rendered (trimmed) text of each part of one unbroken
    stretch, and the character where it starts in that part (None where the text is tool
    syntax around the caller's values). Parts in a stretch are joined with nothing, so text
    can span them; markers, the system's blank line and role headers break stretches.
    """
    system_first = conversation.dialect.system == "own_turn"
    if conversation.system_spans and system_first:
        yield 0, "system", None, list(conversation.system_spans)
    for k, declaration in enumerate(conversation.tools):
        for item in declaration:
            if type(item) is str:
                yield None, None, f"tools[{k}]", [(None, None, item)]
    if conversation.system_spans and not system_first:
        yield 0, "system", None, list(conversation.system_spans)
    for turn in conversation.turns:
        where = turn.message_index, turn.role
        if turn.reasoning is not None:
            yield *where, "reasoning", [(None, 0, turn.reasoning)]
        for c, call in enumerate(turn.calls):
            for item in call.items:
                if type(item) is str:
                    yield *where, f"tool_calls[{c}]", [(None, None, item)]
        for result in turn.results:
            for item in result.items:
                if type(item) is str:
                    yield result.message_index, "tool", "content", [(None, None, item)]
        many = len(turn.parts) > 1
        spans = []
        for index, part in enumerate(turn.parts):
            if isinstance(part, Marker):
                if spans:
                    yield *where, None, spans
                spans = []
                continue
            text = part.strip()
            if text:
                spans.append((index if many else None, len(part) - len(part.lstrip()), text))
        if spans:
            yield *where, None, spans
