"""Read turn bodies back where the dialect has thinking and tools (Gemma 4): thought channels,
declarations, calls, results and media, beside the turn layout.

    Layout (turns, roles) + the structural marks of every chat unit
      -> Blocks: per mark its kind, its turn's role, the previous structural mark and whether
                 text lies between; blocks (open/close pairs); calls grouped with the results
                 that answer them; how an open model turn ends

Placement is one table lookup, ``LEGAL[role, previous kind, text between, kind]``, over all
marks at once (no loop per mark). Python runs only per block body decoded for the tool-syntax
and thought checks, and per finding. The grammar the table encodes, per turn:

    system:  [<|think|>\\n] text (<|tool>DECL<tool|>)*
    user:    (text | media)*
    model:   messages, each [<|channel>thought\\n...\\n<channel|>] [<|tool_call>..<tool_call|>+
             (<|tool_response>..<tool_response|> media*)+ | text <|tool_response> at the end]
             text; consecutive messages' text joins
"""

from __future__ import annotations

import numpy as np

from .chat_format import Marker
from .tool_syntax import UNDELIMITED, call_items, declaration_items, read_value, response_items

__all__ = ["Blocks", "KIND_OF", "OPEN", "CLOSE", "kind_table"]

(OPEN, CLOSE, THINK, CH_O, CH_C, TOOL_O, TOOL_C, CALL_O, CALL_C, RESP_O, RESP_C, MEDIA, HANDOVER, QUOTE, START) = range(15)
SYSTEM, USER, MODEL, OUTSIDE = range(4)
ROLE_NAMES = ("system", "user", "model", "")
KIND_OF = {
    Marker.TURN_OPEN: OPEN,
    Marker.TURN_CLOSE: CLOSE,
    Marker.THINK: THINK,
    Marker.CHANNEL_OPEN: CH_O,
    Marker.CHANNEL_CLOSE: CH_C,
    Marker.TOOL_OPEN: TOOL_O,
    Marker.TOOL_CLOSE: TOOL_C,
    Marker.CALL_OPEN: CALL_O,
    Marker.CALL_CLOSE: CALL_C,
    Marker.RESPONSE_OPEN: RESP_O,
    Marker.RESPONSE_CLOSE: RESP_C,
    Marker.QUOTE: QUOTE,
}
BODIES = {TOOL_O: (TOOL_C, "declaration:"), CALL_O: (CALL_C, "call:"), RESP_O: (RESP_C, "response:")}
OPENERS = (CH_O, TOOL_O, CALL_O, RESP_O)
CLOSER = np.full(15, -1, dtype=np.int64)  # the kind that closes each opening kind
CLOSER[[CH_O, TOOL_O, CALL_O, RESP_O]] = [CH_C, TOOL_C, CALL_C, RESP_C]
BODY_CACHE = 4096  # distinct bodies remembered per tokenizer
PASSES = 4  # placement passes: marks judged again against the latest mark in place


def _legal_table() -> np.ndarray:
    table = np.zeros((4, 15, 2, 14), dtype=bool)

    def allow(role, previous, texts, kinds):
        for p in previous:
            for t in texts:
                table[role, p, t, list(kinds)] = True

    both = (0, 1)
    allow(SYSTEM, [OPEN], [0], [THINK])
    allow(SYSTEM, [OPEN, THINK], both, [TOOL_O, CLOSE])
    allow(SYSTEM, [TOOL_O], [1], [TOOL_C])
    allow(SYSTEM, [TOOL_C], [0], [TOOL_O, CLOSE])
    allow(USER, [OPEN, MEDIA], both, [MEDIA, CLOSE])
    allow(MODEL, [OPEN, CH_C, RESP_C, MEDIA], both, [CH_O, CALL_O, CLOSE])
    allow(MODEL, [RESP_C, MEDIA], [0], [RESP_O, MEDIA])
    allow(MODEL, [CH_O], [1], [CH_C])
    allow(MODEL, [CALL_O], [1], [CALL_C])
    allow(MODEL, [CALL_C], [0], [CALL_O, RESP_O])
    allow(MODEL, [CALL_C], both, [HANDOVER])
    allow(MODEL, [RESP_O], [1], [RESP_C])
    return table


LEGAL = _legal_table()


def kind_table(vocab, markers) -> np.ndarray:
    """Kind of every id (one entry past the vocabulary for out-of-range ids): -1 for text."""
    table = np.full(vocab.size + 1, -1, dtype=np.int8)
    for marker, token_id in markers.items():
        if marker in KIND_OF:
            table[token_id] = KIND_OF[marker]
    table[vocab.media] = MEDIA
    return table


class Blocks:
    """The bodies of the turns of a :class:`~gemma_turns.layout.Layout` whose dialect has tools.

    ``pos``/``kind``/``unit``/``role``/``prev``/``text``: every structural mark of the chat
    units (quotes apart), in order. ``thinking[u]``: unit ``u`` switches thinking on.
    ``holes``: ``(starts, stops)`` of what a tool writes inside model turns (never trained).
    """

    def __init__(self, layout):
        self.layout = layout
        lay, v, b = layout, layout.vocab, layout.units
        self.vocab, self.units = v, b
        self.prompt_channel: dict[int, int] = {}  # unit -> its thinking prompt's <|channel>
        hit = layout.findings.hit
        kinds = v.lookup(v.kind, lay.mark_ids)
        chat = lay.chat[lay.mark_unit]
        structural = chat & (kinds >= 0) & (kinds != QUOTE)
        pos, kind, unit = lay.marks[structural], kinds[structural].astype(np.int64), lay.mark_unit[structural]
        kind[(kind == RESP_O) & (pos == b.ends[unit] - 1)] = HANDOVER
        self.pos, self.kind, self.unit = pos, kind, unit
        self.good = np.ones(len(pos), dtype=bool)
        self._previous()
        # the turn each mark lies in (OUTSIDE after its closing marker, or before any turn)
        turn = np.searchsorted(lay.opens, pos, side="right") - 1
        t = np.maximum(turn, 0)
        inside = (turn >= 0) & (lay.open_unit[t] == unit) & (pos <= lay.content_end[t]) if len(lay.opens) else turn >= 0
        role_code = v.lookup(v.role_code, lay.role[t]) if len(lay.opens) else np.zeros(len(pos), np.int64)
        self.turn = np.where(inside, turn, -1)
        self.role = np.where(inside, role_code, OUTSIDE).astype(np.int64)
        self.thinking = self._thinking()
        self._placement(hit)
        self._quotes(hit)
        self._system_first(hit)
        self._pairs(hit)
        self._results(hit)

    # -- rules

    def _thinking(self) -> np.ndarray:
        lay, v = self.layout, self.vocab
        first = (lay.turn_in_unit == 0) & (lay.role == v.roles["system"])
        opens = lay.opens[first]
        on = self.units.at(opens, 3, lay.open_unit[first]) == v.think
        thinking = np.zeros(len(self.units.starts), dtype=bool)
        thinking[lay.open_unit[first][on]] = True
        return thinking

    def _previous(self) -> None:
        """``prev`` (kind), ``prev_index`` and ``text`` (whether text lies between) of each
        mark, against the latest earlier mark of its unit that is ``good``."""
        pos, kind, unit = self.pos, self.kind, self.unit
        n = len(pos)
        latest = np.maximum.accumulate(np.where(self.good, np.arange(n), -1)) if n else np.zeros(0, np.int64)
        before = np.r_[-1, latest[:-1]] if n else np.zeros(0, np.int64)
        b = np.maximum(before, 0)
        valid = (before >= 0) & (unit[b] == unit) if n else np.zeros(0, bool)
        prev = np.where(valid, kind[b], START)
        gap = pos - np.where(valid, pos[b], -1) - 1 - np.where(prev == OPEN, 2, 0) - np.where(prev == THINK, 1, 0)
        self.prev, self.prev_index, self.text = prev, np.where(valid, before, -1), (gap > 0).astype(np.int64)

    def _misplaced(self) -> np.ndarray:
        role, prev, text, kind = self.role, self.prev, self.text, self.kind
        judged = (kind != OPEN) & (role != OUTSIDE) & ~((kind == CLOSE) & np.isin(prev, [CLOSE, START]))
        return judged & ~LEGAL[role, prev, text, np.minimum(kind, QUOTE)]

    def _placement(self, hit) -> None:
        """Marks misplaced against their predecessor; then again against the latest mark that
        is in place (a few passes), so one misplaced mark is one finding, not one for each mark
        after it."""
        bad = self._misplaced()
        for _ in range(PASSES):  # a few passes over all marks, until nothing changes
            if not bad.any() or np.array_equal(~bad, self.good):
                break
            self.good = ~bad
            self._previous()
            bad = self._misplaced()
        self.good = ~bad
        role, prev, text, kind = self.role, self.prev, self.text, self.kind
        # a block never closed: one finding, at the first mark after it
        unclosed = np.flatnonzero(bad & np.isin(prev, OPENERS) & (kind != CLOSER[prev]))
        _, first = np.unique(self.prev_index[unclosed], return_index=True)
        shown = bad.copy()
        shown[unclosed] = False
        shown[unclosed[first]] = True
        where = np.flatnonzero(shown)
        hit(
            "misplaced_marker",
            self.pos[where],
            lambda k, w=where: self._why(
                int(role[w[k]]), int(prev[w[k]]), int(text[w[k]]), int(kind[w[k]]), int(self.prev_index[w[k]])
            ),
        )
        # <|think|> must be followed by its \n
        think = np.flatnonzero((kind == THINK) & ~bad)
        after = self.units.at(self.pos[think], 1, self.unit[think])
        wrong = think[after != self.vocab.newline]
        hit(
            "misplaced_marker",
            self.pos[wrong] + 1,
            lambda k: ("<|think|> must be followed by \\n", f"\\n (id {self.vocab.newline})"),
            units=self.unit[wrong],
        )

    def _quotes(self, hit) -> None:
        lay, v = self.layout, self.vocab
        is_quote = (lay.mark_ids == v.quote) & lay.chat[lay.mark_unit]
        quotes, quote_unit = lay.marks[is_quote], lay.mark_unit[is_quote]
        self.quotes = quotes
        good = np.flatnonzero(self.good)  # the enclosing mark: the latest one in place
        before = np.searchsorted(self.pos[good], quotes) - 1
        b = good[np.maximum(before, 0)] if len(good) else np.zeros(len(quotes), np.int64)
        if len(good):
            ok = (before >= 0) & (self.unit[b] == quote_unit) & np.isin(self.kind[b], [TOOL_O, CALL_O, RESP_O])
            ok &= self.role[b] != OUTSIDE
        else:
            ok = np.zeros(len(quotes), bool)
        hit(
            "misplaced_marker",
            quotes[~ok],
            lambda k: (
                '<|"|> outside a declaration, call or result: it quotes strings in Gemma\'s tool syntax only',
                'text; a <|"|> spelled in content is escaped (reserved="escape")',
            ),
        )

    def _system_first(self, hit) -> None:
        lay, v = self.layout, self.vocab
        late = np.flatnonzero((lay.role == v.roles["system"]) & (lay.turn_in_unit > 0))
        hit(
            "misplaced_system",
            lay.opens[late] + 1,
            lambda k: (
                "a system turn after the first turn: the format has one system turn, first "
                "(a later system or developer message has no place in it)",
                "the user or model role",
            ),
        )

    def _pairs(self, hit) -> None:
        """Blocks: an opening mark followed by its closing one. A declaration, call or result
        holds an even number of quotes (prefix counts; the bodies are read by read_bodies)."""
        kind, pos, unit = self.kind, self.pos, self.unit
        n = len(kind)
        nxt = np.r_[kind[1:], START] if n else np.zeros(0, np.int64)
        same = np.r_[unit[1:] == unit[:-1], False] if n else np.zeros(0, bool)
        pair = same & (
            ((kind == CH_O) & (nxt == CH_C))
            | ((kind == TOOL_O) & (nxt == TOOL_C))
            | ((kind == CALL_O) & (nxt == CALL_C))
            | ((kind == RESP_O) & (nxt == RESP_C))
        )
        self.block = np.flatnonzero(pair)  # index of each block's opening mark
        opens, closes = pos[self.block], pos[self.block + 1]
        self.block_open, self.block_close, self.block_kind = opens, closes, kind[self.block]
        self.values = {}
        quoted = self.block_kind != CH_O
        count = np.searchsorted(self.quotes, closes) - np.searchsorted(self.quotes, opens)
        odd = np.flatnonzero(quoted & (count % 2 == 1))
        hit(
            "bad_tool_syntax",
            opens[odd],
            lambda k, c=count[odd]: (
                f'{c[k]} <|"|> in this block: an odd number, so a string is never closed',
                'strings between pairs of <|"|>',
            ),
        )
        self.odd = set(opens[odd].tolist())

    def read_bodies(self) -> None:
        """Decode what the blocks hold (the slower tier, with canonical tokenization, and for
        parse): thought text is checked, and declaration, call and result bodies are read back
        as Gemma's tool syntax and must be written as the encoder writes them."""
        hit = self.layout.findings.hit
        opens, closes, unit = self.block_open, self.block_close, self.unit
        flat, decode = self.units.flat, self.vocab.decode
        thought = self.block_kind == CH_O
        if thought.any():
            texts = decode([flat[a + 1 : z].tolist() for a, z in zip(opens[thought], closes[thought])])
            index = self.block[thought]
            # the large checkpoints' prompt: an empty channel right after the header, at the end
            at_end = closes[thought] == self.units.ends[unit[index]] - 1
            prompt = (self.prev[index] == OPEN) & (self.text[index] == 0) & at_end
            bad = [
                k
                for k, t in enumerate(texts)
                if not (t.startswith("thought\n") and t.endswith("\n") and len(t) > 9)
                and not (prompt[k] and t == "thought\n")
            ]
            where = opens[thought][bad]
            hit(
                "bad_thought",
                where + 1,
                lambda k, t=[texts[j] for j in bad]: (
                    f"the thought channel holds {_clip(t[k])!r}; the format writes 'thought\\n', "
                    "the reasoning (not empty), then '\\n'",
                    "thought\\n ... \\n before <channel|>",
                ),
            )
        body = np.flatnonzero(~thought & ~np.isin(opens, list(self.odd)))
        if len(body) == 0:
            return
        # Bodies repeat (the same declarations in every sequence of a dataset): each distinct
        # one is decoded and read once per tokenizer, while the cache stays small.
        cache = self.vocab.bodies
        keys = [(int(self.block_kind[k]), flat[int(opens[k]) + 1 : int(closes[k])].tobytes()) for k in body.tolist()]
        first = {}
        for j, key in enumerate(keys):
            first.setdefault(key, j)
        todo = [j for key, j in first.items() if key not in cache]
        if len(cache) + len(todo) > BODY_CACHE:
            cache.clear()
            todo = list(first.values())
        if todo:
            items = self._items(opens[body[todo]], closes[body[todo]])
            for j, block_items in zip(todo, items):
                cache[keys[j]] = _check_body(BODIES[keys[j][0]][1], block_items)
        errors, where = [], []
        for k, key in zip(body.tolist(), keys):
            ok, found = cache[key]
            if ok:
                self.values[int(opens[k])] = found
            else:
                errors.append(found)
                where.append(int(opens[k]))
        hit(
            "bad_tool_syntax",
            np.array(where, dtype=np.int64),
            lambda k: (
                f"the {errors[k][0].rstrip(':')} cannot be read back as Gemma's tool syntax: {errors[k][1]}",
                f'{errors[k][0]}NAME{{key:value,...}} with strings between <|"|> pairs',
            ),
        )

    def _items(self, opens: np.ndarray, closes: np.ndarray) -> list[list]:
        """Text and quote items of each body, decoded in one batch."""
        quotes = self.quotes
        lo, hi = np.searchsorted(quotes, opens), np.searchsorted(quotes, closes)
        runs, shape = [], []
        flat = self.units.flat
        for a, z, q0, q1 in zip(opens.tolist(), closes.tolist(), lo.tolist(), hi.tolist()):
            cuts = [a, *quotes[q0:q1].tolist(), z]
            shape.append(len(cuts) - 1)
            runs.extend(flat[cuts[j] + 1 : cuts[j + 1]].tolist() for j in range(len(cuts) - 1))
        texts = iter(self.vocab.decode(runs) if runs else [])
        out = []
        for segments in shape:
            block: list = []
            for j in range(segments):
                if j:
                    block.append(Marker.QUOTE)
                text = next(texts)
                if text:
                    block.append(text)
            out.append(block)
        return out

    def _results(self, hit) -> None:
        """Calls grouped (consecutive calls of one message) with the results that answer them;
        what a tool writes (after the hand-over through the last result and its media) is a hole
        in the trained span."""
        kind, pos, prev, text, role = self.kind, self.pos, self.prev, self.text, self.role
        model = role == MODEL
        calls = np.flatnonzero(model & (kind == CALL_O))
        starts_group = ~((prev[calls] == CALL_C) & (text[calls] == 0))
        group_of_call = np.cumsum(starts_group) - 1
        groups = int(starts_group.sum())
        answer = np.flatnonzero(model & np.isin(kind, [RESP_O, RESP_C, MEDIA, HANDOVER]))
        latest = np.searchsorted(calls, answer) - 1
        answer, latest = answer[latest >= 0], latest[latest >= 0]
        answer = answer[self.turn[calls[latest]] == self.turn[answer]] if len(answer) else answer
        latest = np.searchsorted(calls, answer) - 1
        group = group_of_call[latest] if len(latest) else np.zeros(0, np.int64)
        n_calls = np.bincount(group_of_call, minlength=groups)
        is_result = kind[answer] == RESP_O
        n_results = np.bincount(group[is_result], minlength=groups)
        first_call = calls[starts_group]
        wrong = np.flatnonzero((n_results > 0) & (n_results != n_calls))
        hit(
            "unbalanced_results",
            pos[first_call[wrong]],
            lambda k, c=n_calls[wrong], r=n_results[wrong]: (
                f"{c[k]} tool call{'s' if c[k] > 1 else ''} here, but {r[k]} result{'s' if r[k] > 1 else ''} "
                "follow; every call gets one <|tool_response>...<tool_response|>, in order",
                f"{c[k]} result{'s' if c[k] > 1 else ''}",
            ),
        )
        hole_start = np.full(groups, np.iinfo(np.int64).max)
        hole_stop = np.full(groups, -1)
        results = answer[is_result]
        np.minimum.at(hole_start, group[is_result], pos[results] + 1)
        ends = np.isin(kind[answer], [RESP_C, MEDIA])
        np.maximum.at(hole_stop, group[ends], pos[answer[ends]] + 1)
        has = hole_stop > hole_start
        self.hole_starts, self.hole_stops = hole_start[has], hole_stop[has]
        self.hole_units = self.unit[first_call[has]]
        self.hole_turns = self.turn[first_call[has]]

    # -- endings of open model turns

    def open_endings(self, units: np.ndarray, last_open: np.ndarray) -> np.ndarray:
        """How each unit that ends inside the turn opened at ``last_open`` ends: a name from
        ENDINGS, or "" (truncated, or inside a block)."""
        v, b = self.vocab, self.units
        flat = b.flat
        out = np.full(len(units), "", dtype=object)
        if len(units) == 0:
            return out
        end = b.ends[units]
        model = b.at(last_open, 1, units) == v.model
        header = b.at(last_open, 2, units) == v.header_end
        last = np.searchsorted(self.pos, end) - 1
        li = np.maximum(last, 0)
        has = (last >= 0) & (self.unit[li] == units) if len(self.pos) else np.zeros(len(units), bool)
        k = np.where(has, self.kind[li], START)
        p = np.where(has, self.pos[li], -1)
        pk = np.where(has, self.prev[li], START)
        thought = v.thought
        t = len(thought)

        def spells_thought(after):
            ok = after + t < end + 1
            for j in range(t):
                ok &= flat[np.minimum(after + j, len(flat) - 1)] == thought[j]
            return ok

        ok = model & header
        out[ok & (k == OPEN) & (last_open + 3 == end)] = "generation_prompt"
        empty = ok & (k == CH_C) & (pk == CH_O) & (p == end - 1) & (p == last_open + 4 + t)
        channel = flat[np.minimum(last_open + 3, len(flat) - 1)] == v.markers[Marker.CHANNEL_OPEN]
        empty &= channel & spells_thought(last_open + 4)
        out[empty] = "empty_thought_prompt"
        out[ok & (k == HANDOVER)] = "hand_over"
        out[ok & np.isin(k, [RESP_C, MEDIA]) & (p == end - 1)] = "after_results"
        prev_of = np.where(has & (li > 0), self.kind[np.maximum(li - 1, 0)], START)
        gap_ok = self.text[li] == 0 if len(self.pos) else np.zeros(len(units), bool)
        thinking_prompt = ok & (k == CH_O) & np.isin(prev_of, [RESP_C, MEDIA]) & gap_ok & (p + 1 + t == end)
        thinking_prompt &= spells_thought(p + 1)
        out[thinking_prompt] = "thought_after_results"
        self.prompt_channel.update((int(u), int(q)) for u, q in zip(units[thinking_prompt], p[thinking_prompt]))
        return out

    # -- labels (inspect)

    def parts(self) -> np.ndarray:
        """Per position of ``flat``: which body part it is (``thought``, ``declaration``,
        ``call``, ``result``, ``hand-over``, ``think``, ``media``), "" elsewhere. For display."""
        out = np.full(len(self.units.flat), "", dtype=object)
        names = {CH_O: "thought", TOOL_O: "declaration", CALL_O: "call", RESP_O: "result"}
        for a, z, kind in zip(self.block_open.tolist(), self.block_close.tolist(), self.block_kind.tolist()):
            out[a : z + 1] = names[kind]
        for a, z in zip(self.hole_starts.tolist(), self.hole_stops.tolist()):
            out[a:z] = "result"
        kind = self.kind
        out[self.pos[kind == THINK]] = "think"
        out[self.pos[kind == MEDIA]] = np.where(self.role[kind == MEDIA] == MODEL, "result", "media")
        hand_over = (kind == HANDOVER) | ((kind == RESP_O) & (self.prev == CALL_C) & (self.text == 0))
        out[self.pos[hand_over]] = "hand-over"
        for unit, channel in self.prompt_channel.items():
            out[channel : self.units.ends[unit]] = "prompt"
        return out

    # -- messages

    def _why(self, role: int, prev: int, text: int, kind: int, index: int) -> tuple[str, str]:
        """Message and expectation for a mark of ``kind`` after the mark at ``index`` (of
        kind ``prev``)."""
        name = self.vocab.kind_name
        where = {START: "at the start", OPEN: "right after the turn header"}.get(prev, f"after {name(prev)}")
        if text and prev not in (START,):
            where += " and text"
        allowed = [name(k) for k in np.flatnonzero(LEGAL[role, prev, text]) if k != HANDOVER]
        if LEGAL[role, prev, text, HANDOVER]:
            allowed.append("<|tool_response> ending the sequence (the hand-over)")
        expected = " or ".join(allowed) if allowed else f"nothing: {name(prev)} cannot be followed by text"
        where_role = f"in a {ROLE_NAMES[role]} turn"
        if prev in OPENERS and kind != {CH_O: CH_C, TOOL_O: TOOL_C, CALL_O: CALL_C, RESP_O: RESP_C}[prev]:
            reason = f"the {name(prev)} block opened at position {self._row_position(index)} is never closed"
        elif kind == THINK:
            reason = "<|think|> belongs only at the very start of the system turn"
        elif kind in (TOOL_O, TOOL_C) and role != SYSTEM:
            reason = "tool declarations belong in the system turn"
        elif kind in (CH_O, CH_C, CALL_O, CALL_C, RESP_O, RESP_C, HANDOVER) and role != MODEL:
            reason = "thought channels, tool calls and results belong in model turns"
        elif kind == MEDIA and role != USER:
            reason = "media markers belong in user turns, and in model turns right after a tool's result"
        elif kind in (CH_C, TOOL_C, CALL_C, RESP_C) and prev not in OPENERS:
            reason = f"{name(kind)} closes no open block"
        elif prev == CALL_C:
            reason = "calls are followed by their results, or by the hand-over <|tool_response> that ends the sequence"
        elif kind == HANDOVER:
            reason = "the sequence ends inside a tool result (a <|tool_response> never closed)"
        elif kind == RESP_O:
            reason = "a tool result follows its call or the previous result directly"
        else:
            reason = "the format has no place for it here"
        kind_text = "<|tool_response> at the end" if kind == HANDOVER else name(kind)
        return f"{kind_text} {where} {where_role}: {reason}", expected

    def _row_position(self, index: int) -> int:
        b = self.units
        unit = int(self.unit[index])
        return int(self.pos[index] - b.starts[unit] + b.offsets[unit])


def _check_body(prefix: str, items: list) -> tuple[bool, tuple]:
    """``(True, (name, value))`` for a body written as the encoder writes it, else ``(False,
    (prefix, why))``."""
    try:
        name, value = read_value(items, prefix=prefix)
        if not name or name != name.strip() or UNDELIMITED.search(name):
            raise ValueError(f"the name {name!r} is not a tool name")
        again = _render(prefix, name, value)
        if again != items:
            raise ValueError(
                "it reads, but is not written as the encoder (and the official template) "
                f"writes it: {_first_difference(items, again)}"
            )
    except (ValueError, IndexError, RecursionError) as error:
        return False, (prefix, str(error))
    return True, (name, value)


def _render(prefix: str, name: str, value) -> list:
    """The items the writer makes of what was read (ToolSyntaxError is a ValueError)."""
    if prefix == "call:":
        if not isinstance(value, dict):
            raise ValueError("a call's arguments are an object {...}")
        return call_items(name, value)
    if prefix == "response:":
        return response_items(name, value)
    if not isinstance(value, dict):
        raise ValueError("a declaration is an object {...}")
    return declaration_items({"name": name, **value})


def _first_difference(given: list, canonical: list) -> str:
    """Where two item lists part, in words: keys out of order, a number spelled otherwise, ..."""
    text = lambda items: "".join('<|"|>' if item is Marker.QUOTE else item for item in items)  # noqa: E731
    a, b = text(given), text(canonical)
    d = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return (
        f"from {_clip(a[max(0, d - 10):], 30)!r}, expected {_clip(b[max(0, d - 10):], 30)!r} "
        "(keys sorted case-insensitively, numbers as Python prints them)"
    )


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
