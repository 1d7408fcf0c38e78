"""Read ids back through the dialect: where each unit's turns, headers, content and ending are.

    Units (ids cut into sequences / packed segments) + the tokenizer's dialect
      -> Layout: per unit chat or PT, where content begins (after BOS), the ending;
                 per turn its opening marker, role, content span and closing marker

The parser, the validator's rules, ``inspect`` and the loss-mask checks all read this one
value. It is computed with numpy over a whole batch: one table lookup finds the *marks* (every
id that is not plain text: markers, BOS, EOS, PAD, <unk>, reserved and out-of-range ids), and
turn structure is read at a few offsets after the turn markers. Broken structure is reported
as hits to a :class:`~gemma_turns.findings.Findings` collector; a unit with a blocking hit is
``blocked`` there, and its turns are not to be trusted.

Each turn header is ``open role header_end`` (three tokens: the dialect's roles and header
end are single pieces, checked when the Vocab is built); a turn closes with ``close
turn_end``. Where the dialect has thinking and tools (Gemma 4), the turn bodies are read by
:class:`~gemma_turns.blocks.Blocks` (``layout.blocks``), which also says how an open model
turn ends (the prompt forms, the hand-over, after results).
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .blocks import HANDOVER, KIND_OF, MEDIA, Blocks, kind_table
from .chat_format import Marker
from .errors import TokenizerError
from .findings import CHAT_ENDINGS, ENDINGS, PT_ENDINGS, Findings, accepted_endings

__all__ = ["HEADER", "Layout", "Vocab", "vocab_of"]

HEADER = 3  # tokens in a turn header: the opening marker, the role, the header's newline
TEXT_BOS = ("<bos>", "[BOS]")
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


class Vocab:
    """The ids the layout and the rules need, derived once per tokenizer from its dialect."""

    def __init__(self, tokenizer):
        specials, dialect = tokenizer.specials, tokenizer.dialect
        self.dialect = dialect
        self.size = tokenizer.vocab_size
        self.bos = specials.bos
        self.eos = specials.eos
        self.pad = specials.pad
        self.unk = specials.unk
        self.open = specials.markers[Marker.TURN_OPEN]
        self.close = specials.markers[Marker.TURN_CLOSE]
        self.newline = _single_id(tokenizer, dialect.turn_end, "the text after a closing marker")
        self.header_end = _single_id(tokenizer, dialect.header_end, "the end of a turn header")
        self.roles = {role: _single_id(tokenizer, role, "a role") for role in dialect.roles}
        self.role_names = {token_id: role for role, token_id in self.roles.items()}
        self.user = self.roles[dialect.user_role]
        self.model = self.roles[dialect.trained_role]
        self.media = np.array(
            sorted(specials.markers[m] for m in dialect.media.values() if m in specials.markers),
            dtype=np.int64,
        )
        self.markers = specials.markers
        self.open_piece, self.close_piece = dialect.turn_open, dialect.turn_close
        self.decode = tokenizer.processor.decode
        pieces = tokenizer.pieces
        self.pieces = pieces
        reserved = np.array(sorted(tokenizer.reserved_ids.values()), dtype=np.int64)
        inner = [i for m, i in specials.markers.items() if m in KIND_OF and m not in (Marker.TURN_OPEN, Marker.TURN_CLOSE)]
        structural = np.r_[self.open, self.close, self.media, np.array(inner, dtype=np.int64)]
        newline_runs = np.array([i for i, p in enumerate(pieces) if p and not p.strip("\n")], dtype=np.int64)
        # Lookup tables by id, with one entry past the vocabulary that every out-of-range id
        # looks up (see lookup): faster than np.isin against thousands of reserved ids.
        self.is_break = self._table(np.union1d(reserved, [self.bos, self.eos, self.pad, self.unk]), extra=True)
        self.is_reserved_chat = self._table(np.setdiff1d(reserved, structural))
        self.is_reserved_pt = self._table(reserved)
        self.is_newline_run = self._table(newline_runs)
        self.is_media = self._table(self.media)
        self.is_role = self._table(np.array(list(self.roles.values()), dtype=np.int64))
        if dialect.tools:
            self._inner(tokenizer)
        # Whitespace at either end of each piece's text, as str.strip() sees it ("\u2581" is a
        # space). A byte piece of a multi-byte character cannot tell alone: it is "unsure",
        # and segments that start or end with one are decoded.
        spaces = [(p[:1].isspace() or p[:1] == "\u2581", p[-1:].isspace() or p[-1:] == "\u2581") for p in pieces]
        self.lead_ws = np.array([lead for lead, _ in spaces], dtype=bool)
        self.trail_ws = np.array([trail for _, trail in spaces], dtype=bool)
        self.unsure = np.zeros(self.size, dtype=bool)
        for token_id, piece in enumerate(pieces):
            if piece.startswith("<0x") and _BYTE_PIECE.fullmatch(piece) and tokenizer.processor.is_byte(token_id):
                value = int(piece[3:5], 16)
                self.lead_ws[token_id] = self.trail_ws[token_id] = value < 0x80 and chr(value).isspace()
                self.unsure[token_id] = value >= 0x80
        # Pieces that may begin a BOS spelled as text (byte pieces start with "<" too).
        self.maybe_text_bos = self.lead_ws | np.array([p[:1] in ("<", "[") for p in pieces], dtype=bool)

    def _inner(self, tokenizer) -> None:
        """What the body reader (:mod:`gemma_turns.blocks`) needs: each id's kind, each role's
        code, the thinking switch, the quote, and the ids of ``thought\\n``."""
        markers = self.markers
        self.kind = kind_table(self, markers)
        self.role_code = np.full(self.size + 1, 3, dtype=np.int64)
        for code, role in enumerate(("system", "user", "model")):
            if role in self.roles:
                self.role_code[self.roles[role]] = code
        self.think = markers[Marker.THINK]
        self.quote = markers[Marker.QUOTE]
        self.thought = tokenizer.processor.encode("thought\n")
        names = {KIND_OF[m]: p for m, p in self.dialect.pieces.items() if m in KIND_OF}
        names[MEDIA] = "a media marker"
        names[HANDOVER] = self.dialect.pieces[Marker.RESPONSE_OPEN]
        self.kind_name = lambda kind: names.get(kind, "?")
        self.bodies: dict = {}  # (kind, body ids) -> what Blocks read there

    def _table(self, ids: np.ndarray, *, extra: bool = False) -> np.ndarray:
        table = np.zeros(self.size + 1, dtype=bool)
        table[ids[(ids >= 0) & (ids < self.size)]] = True
        table[self.size] = extra
        return table

    def lookup(self, table: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """``table[ids]``, with every out-of-range id looking up the last entry."""
        return table[np.where((ids < 0) | (ids >= self.size), self.size, ids)]

    def breaks(self, ids: np.ndarray) -> np.ndarray:
        """Positions of the ids that are not plain text: markers, BOS, EOS, PAD, <unk>,
        reserved and out-of-range ids. One pass; the range check only when an id needs it."""
        if len(ids) and (ids.min() < 0 or ids.max() >= self.size):
            return np.flatnonzero(self.lookup(self.is_break, ids))
        return np.flatnonzero(self.is_break[ids])

    def role_name(self, token_id: int) -> str:
        return self.role_names.get(int(token_id), "")

    def roles_text(self) -> str:
        return " or ".join(f"{role} (id {token_id})" for role, token_id in self.roles.items())

    def show(self, token_id: int) -> str:
        if 0 <= token_id < self.size:
            return _visible(self.pieces[token_id])
        return f"<id {token_id}?>"


_VOCABS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def vocab_of(tokenizer) -> Vocab:
    """The tokenizer's Vocab, built once."""
    vocab = _VOCABS.get(tokenizer)
    if vocab is None:
        vocab = _VOCABS[tokenizer] = Vocab(tokenizer)
    return vocab


def _single_id(tokenizer, text: str, what: str) -> int:
    ids = tokenizer.processor.encode(text)
    if len(ids) != 1:
        raise TokenizerError(
            f"the model encodes {what} {text!r} as {len(ids)} pieces {ids}; the {tokenizer.dialect.name} "
            "layout needs it as one piece, as in every Gemma tokenizer",
            path=tokenizer.path,
            piece=text,
        )
    return ids[0]


def _visible(piece: str) -> str:
    return (
        piece.replace("\u2581", " ")
        .replace("\\", "\\\\")
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
    )


@dataclass(frozen=True)
class TokenParts:
    """Per position of ``flat``: the latest turn opening of its unit (-1 if none), which part
    of a turn it is, and the turn's role id (-1 outside turns). For display and messages."""

    last_open: np.ndarray
    header: np.ndarray
    content: np.ndarray
    closing: np.ndarray
    after_newline: np.ndarray
    role_at: np.ndarray


class Layout:
    """The turn layout of a batch of units, read through the tokenizer's dialect.

    Per unit: ``chat`` (turns) or PT; ``first_content`` (the position after BOS);
    ``ending`` (a name from ENDINGS, "" when the unit ends in no legal way);
    ``last_marker`` (the last turn marker, -1 if none).
    Per turn, in order (``opens`` are the positions of the opening markers): ``open_unit``,
    ``role`` (the role's id, or whatever id stands there), ``role_ok``, ``turn_in_unit``;
    ``content_start``/``content_end`` bound its content, ``closed`` says whether a closing
    marker ends it (the generation prompt has none).
    ``markers``/``marker_is_open``/``marker_unit``: every turn marker of chat units.
    ``marks``/``mark_ids``: every position that is not plain text, and its id.

    Reading reports broken structure to ``findings`` (rules ``bad_start``, ``bad_role``,
    ``bad_header``, ``roles_not_alternating``, ``unclosed_turn``, ``stray_end_of_turn``,
    ``missing_turn_newline``, ``text_between_turns``, ``bad_ending``).
    """

    def __init__(self, units, vocab: Vocab, findings: Findings, *, expect=None, endings=None, checkpoint=None):
        self.units, self.vocab, self.findings = units, vocab, findings
        self.dialect = vocab.dialect
        self.expect, self.endings, self.checkpoint = expect, endings, checkpoint
        b, v = units, vocab
        self.marks = v.breaks(b.flat)
        self.mark_ids = b.flat[self.marks].astype(np.int64)
        self.mark_unit = b.units_at(self.marks)
        n_units = len(b.starts)
        if expect in ("inference", "training"):
            self.chat = np.ones(n_units, dtype=bool)
        elif expect == "pt":
            self.chat = np.zeros(n_units, dtype=bool)
        else:
            self.chat = np.bincount(self.mark_unit[self.mark_ids == v.open], minlength=n_units) > 0
        lengths = b.ends - b.starts
        self.starts_with_bos = np.zeros(n_units, dtype=bool)
        nonempty = lengths > 0
        self.starts_with_bos[nonempty] = b.flat[b.starts[nonempty]] == v.bos
        self.first_content = b.starts + self.starts_with_bos
        self.text_bos = self._text_bos_units()
        self.ending = np.full(n_units, "", dtype=object)
        chat_mark = self.chat[self.mark_unit]
        turn_mark = ((self.mark_ids == v.open) | (self.mark_ids == v.close)) & chat_mark
        self._read_turns(self.marks[turn_mark], (self.mark_ids == v.open)[turn_mark], self.mark_unit[turn_mark])
        self.blocks = Blocks(self) if self.dialect.tools else None
        self._read_endings()

    # -- reading

    def _text_bos_units(self) -> np.ndarray:
        """Units whose first text (after BOS, or at 0 without it) is '<bos>' or '[BOS]' as text."""
        b, v = self.units, self.vocab
        first_content = self.first_content
        found = np.zeros(len(b.starts), dtype=bool)
        candidates = np.flatnonzero(first_content < b.ends)
        if len(candidates) == 0:
            return found
        first_ids = b.flat[first_content[candidates]].astype(np.int64)
        maybe = v.maybe_text_bos[np.clip(first_ids, 0, v.size - 1)] & ~v.lookup(v.is_break, first_ids)
        for u in candidates[maybe]:
            a = int(first_content[u])
            ids = b.flat[a : min(int(b.ends[u]), a + 12)]
            stop = np.flatnonzero(v.lookup(v.is_break, ids))
            if len(stop):
                ids = ids[: stop[0]]
            found[u] = v.decode(ids.tolist()).lstrip().startswith(TEXT_BOS)
        return found

    def _read_turns(self, markers, kind, unit) -> None:
        """The turn rules, over the turn markers of chat units: ``markers`` (positions),
        ``kind`` (True for an opening marker), ``unit`` (of each)."""
        b, v, hit = self.units, self.vocab, self.findings.hit
        flat, at = b.flat, b.at
        first_content, text_bos = self.first_content, self.text_bos
        open_, close = v.open_piece, v.close_piece
        # The first token of a chat unit (after BOS) opens a turn.
        self.findings.blocked |= self.chat & text_bos
        chat_units = np.flatnonzero(self.chat & ~text_bos)
        opener = first_content[chat_units]
        has_more = opener < b.ends[chat_units]
        first_token = flat[opener[has_more]]
        # a BOS, EOS or PAD there is reported by its own rule
        bad_start = chat_units[has_more][(first_token != v.open) & ~np.isin(first_token, [v.bos, v.eos, v.pad])]
        hit(
            "bad_start",
            first_content[bad_start],
            lambda k: (f"a chat sequence must begin with {open_} right after BOS", f"{open_} (id {v.open})"),
            units=bad_start,
        )

        self.markers, self.marker_is_open, self.marker_unit = markers, kind, unit
        first = np.r_[True, unit[1:] != unit[:-1]] if len(markers) else np.zeros(0, bool)
        previous_kind = np.r_[False, kind[:-1]] if len(markers) else np.zeros(0, bool)
        previous_position = np.r_[-1, markers[:-1]] if len(markers) else np.zeros(0, np.int64)
        stray = ~kind & (first | ~previous_kind)
        hit(
            "stray_end_of_turn",
            markers[stray],
            lambda k: (
                f"{close} with no open turn: a turn closed twice, or a {open_} lost",
                f"{open_} role \\n before it",
            ),
        )
        reopened = kind & ~first & previous_kind
        hit(
            "unclosed_turn",
            markers[reopened],
            lambda k, p=previous_position[reopened] - b.starts[unit[reopened]] + b.offsets[unit[reopened]]: (
                f"a new turn starts, but the turn opened at position {p[k]} was never closed",
                f"{close} (id {v.close}) \\n before the next {open_}",
            ),
        )

        # Turn headers: open role header_end.
        opens, open_unit = markers[kind], unit[kind]
        self.opens, self.open_unit = opens, open_unit
        role = at(opens, 1, open_unit)
        header_newline = at(opens, 2, open_unit)
        role_ok = v.lookup(v.is_role, role)
        bad_role = (role >= 0) & ~role_ok & (role != v.open)
        roles = " or ".join(repr(r) for r in v.roles)
        hit(
            "bad_role",
            opens[bad_role] + 1,
            lambda k: (
                f"the token after {open_} must be the role {roles}"
                + (
                    " (system text belongs inside the first user turn; 'assistant' is 'model')"
                    if self.dialect.system == "first_user_turn"
                    else " ('assistant' is 'model')"
                ),
                v.roles_text(),
            ),
        )
        newline_ok = v.lookup(v.is_newline_run, header_newline)
        if self.dialect.tools:  # all text after a header is trimmed: the newline is alone
            newline_ok = header_newline == v.header_end
        bad_header = role_ok & (header_newline >= 0) & ~newline_ok
        hit(
            "bad_header",
            opens[bad_header] + 2,
            lambda k: ("the role must be followed by a newline that ends the turn header", f"\\n (id {v.header_end})"),
        )
        turn = np.arange(len(opens)) - np.searchsorted(open_unit, open_unit)
        self.turn_in_unit = turn
        # The generation prompt is no turn: the encoder (as the official template) puts it
        # after a model turn too, when asked to.
        prompt = (opens + HEADER == b.ends[open_unit]) & (role == v.model) & (header_newline == v.header_end)
        if self.dialect.alternating:
            expected_role = np.where(turn % 2 == 0, v.user, v.model)
            alternating = role_ok & (role != expected_role) & ~prompt
            hit(
                "roles_not_alternating",
                opens[alternating] + 1,
                lambda k, t=turn[alternating], r=role[alternating]: (
                    f"turn {t[k]} is a {v.role_name(r[k])} turn; turns must "
                    "alternate user, model, user, ... starting with user",
                    "the user role" if t[k] % 2 == 0 else "the model role",
                ),
            )
        self.role = role
        self.role_ok = role_ok

        # After the closing marker: exactly one newline, then the next turn or the end.
        closes, close_unit = markers[~kind], unit[~kind]
        after = at(closes, 1, close_unit)
        newline_after = after == v.newline
        hit(
            "missing_turn_newline",
            closes[~newline_after] + 1,
            lambda k: (f"{close} must be followed by \\n", f"\\n (id {v.newline})"),
            units=close_unit[~newline_after],
        )
        following = at(closes, 2, close_unit)
        between = newline_after & (following >= 0) & (following != v.open)
        between &= ~np.isin(following, [v.bos, v.eos, v.pad])  # reported by their own rules
        hit(
            "text_between_turns",
            closes[between] + 2,
            lambda k: (
                f"tokens between a closed turn and the next {open_}: every token of a "
                "chat sequence belongs to a turn",
                f"{open_} (id {v.open}) or the end of the sequence",
            ),
        )

        # Content spans: a turn's content runs to the next turn marker of its unit (its
        # closing marker), or to the unit's end (the generation prompt, which has none).
        following = np.searchsorted(markers, opens, side="right")
        k = np.minimum(following, len(markers) - 1)
        has_next = (following < len(markers)) & (unit[k] == open_unit) if len(markers) else np.zeros(0, bool)
        self.content_end = np.where(has_next, markers[k], b.ends[open_unit]) if len(markers) else np.zeros(0, np.int64)
        self.closed = has_next & ~kind[k] if len(markers) else np.zeros(0, bool)
        self.content_start = np.minimum(opens + HEADER, self.content_end)

    def _read_endings(self) -> None:
        b, v, flat = self.units, self.vocab, self.units.flat
        markers, unit = self.markers, self.marker_unit
        opens, open_unit, role = self.opens, self.open_unit, self.role
        units = len(b.starts)
        last_marker = np.full(units, -1, dtype=np.int64)
        if len(markers):
            is_last = np.r_[unit[1:] != unit[:-1], True]
            last_marker[unit[is_last]] = markers[is_last]
        ending = self.ending
        pt_units = np.flatnonzero(~self.chat)
        if len(pt_units):
            nonempty = b.ends[pt_units] > b.starts[pt_units]
            last_is_eos = np.zeros(len(pt_units), dtype=bool)
            last_is_eos[nonempty] = flat[b.ends[pt_units[nonempty]] - 1] == v.eos
            last_is_eos &= b.ends[pt_units] - b.starts[pt_units] > 1
            ending[pt_units] = np.where(last_is_eos, "eos", "text")
        chat_units = np.flatnonzero(self.chat & (last_marker >= 0))
        if len(chat_units):
            position = last_marker[chat_units]
            closed = flat[position] == v.close
            # the turn a closing marker closes: the role after the latest opening marker
            open_index = np.searchsorted(opens, position, side="right") - 1
            if len(opens):
                same_unit = (open_index >= 0) & (open_unit[np.maximum(open_index, 0)] == chat_units)
                closes_role = np.where(same_unit, role[np.maximum(open_index, 0)], -1)
            else:
                closes_role = np.full(len(chat_units), -1)
            end = b.ends[chat_units]
            prompt = (
                ~closed
                & (position + HEADER == end)
                & (b.at(position, 1, chat_units) == v.model)
                & (b.at(position, 2, chat_units) == v.header_end)
            )
            open_end = ~closed & ~prompt
            ending[chat_units] = np.where(
                closed,
                np.where(closes_role == v.model, "model_turn", np.where(closes_role == v.user, "user_turn", "")),
                np.where(prompt, "generation_prompt", ""),
            )
            if self.blocks is not None:
                # Gemma 4 leaves a model turn open in more ways: see Blocks.open_endings
                system = closed & (closes_role == v.roles["system"])
                ending[chat_units[system]] = "system_turn"
                left_open = ~closed
                found = self.blocks.open_endings(chat_units[left_open], position[left_open])
                ending[chat_units[left_open]] = found
                open_end = np.zeros(len(chat_units), bool)
                open_end[left_open] = found == ""
            open_, close = v.open_piece, v.close_piece
            self.findings.hit(
                "unclosed_turn",
                end[open_end],
                lambda k, p=position[open_end] - b.starts[chat_units[open_end]] + b.offsets[chat_units[open_end]]: (
                    f"the sequence ends inside the turn opened at position {p[k]} (truncated?); "
                    f"only the generation prompt {open_}model\\n may stay open"
                    + (
                        ", or a model turn after its calls' hand-over or after tool results"
                        if self.blocks is not None
                        else ""
                    ),
                    f"{close} (id {v.close}) \\n",
                ),
                units=chat_units[open_end],
            )
        self.last_marker = last_marker
        self._ending_rule()

    def _ending_rule(self) -> None:
        b = self.units
        made = self.dialect.endings
        if self.endings is not None or self.expect is not None:
            chat_ok = pt_ok = accepted_endings(self.endings, self.expect, made)
        else:
            chat_ok, pt_ok = CHAT_ENDINGS & made, PT_ENDINGS
        ending = self.ending
        known = ending != ""
        allowed = np.where(self.chat, np.isin(ending, list(chat_ok)), np.isin(ending, list(pt_ok)))
        wrong = np.flatnonzero(known & ~allowed)
        # where to point: the last turn's opening marker (chat), the last token (PT)
        position = np.where(
            self.chat[wrong],
            np.where(
                ending[wrong] == "generation_prompt",
                self.last_marker[wrong],
                self.last_open_before(self.last_marker[wrong]),
            ),
            np.where(ending[wrong] == "eos", b.ends[wrong] - 1, b.ends[wrong]),
        ).astype(np.int64)
        self.findings.hit(
            "bad_ending",
            position,
            lambda k, e=ending[wrong], c=self.chat[wrong]: (
                f"the sequence ends with {ENDINGS[e[k]]}",
                " or ".join(ENDINGS[x] for x in sorted(chat_ok if c[k] else pt_ok)),
            ),
            units=wrong,
        )
        if self.blocks is not None:
            self._prompt_rule(known & allowed)
        # a chat unit without any turn
        no_turn = np.flatnonzero(self.chat & (self.last_marker < 0) & (b.ends - b.starts <= 1))
        self.findings.hit(
            "bad_ending",
            b.ends[no_turn],
            lambda k: ("the chat sequence has no turn", " or ".join(ENDINGS[x] for x in sorted(chat_ok))),
            units=no_turn,
        )

    def _prompt_rule(self, judged) -> None:
        """The prompt's form follows the thinking switch (seen in the system turn) and, with
        thinking off, the checkpoint: large ones add an empty thought channel."""
        ending, thinking, checkpoint = self.ending, self.blocks.thinking, self.checkpoint
        large = checkpoint is not None and checkpoint.empty_thought
        wrong = judged & (
            ((ending == "empty_thought_prompt") & (thinking | (checkpoint is not None and not large)))
            | ((ending == "generation_prompt") & ~thinking & large)
            | ((ending == "thought_after_results") & ~thinking)
        )
        units = np.flatnonzero(wrong)
        turn_open = self.vocab.open_piece

        def why(k, e=ending[units], on=thinking[units]):
            if e[k] == "thought_after_results":
                return ("the thinking prompt <|channel>thought\\n after tool results, but thinking is off "
                        "(no <|think|> in the system turn)", "the sequence's end right after the results")
            if on[k]:
                return ("an empty thought channel ends the prompt, but thinking is on: every checkpoint's "
                        f"prompt is then {turn_open}model\\n", f"{turn_open}model\\n at the end")
            name = checkpoint.name
            if large:
                return (f"{name} ends its prompt (thinking off) with an empty thought channel",
                        f"{turn_open}model\\n<|channel>thought\\n<channel|>")
            return (f"the prompt has an empty thought channel, which only the large checkpoints write; {name} does not",
                    f"{turn_open}model\\n at the end")

        self.findings.hit("bad_ending", self.last_marker[units], why, units=units)

    # -- questions the rules ask

    def last_open_before(self, positions) -> np.ndarray:
        index = np.searchsorted(self.opens, positions, side="right") - 1
        return np.where(index >= 0, self.opens[np.maximum(index, 0)] if len(self.opens) else 0, positions)

    def in_content(self, positions, units) -> np.ndarray:
        """Whether each position (not a turn marker) lies in the content of a turn of its unit:
        the latest turn marker before it opens a turn at least HEADER tokens back."""
        markers = self.markers
        j = np.searchsorted(markers, positions, side="right") - 1
        if len(markers) == 0:
            return np.zeros(len(positions), bool)
        k = np.maximum(j, 0)
        return (j >= 0) & (self.marker_unit[k] == units) & self.marker_is_open[k] & (positions >= markers[k] + HEADER)

    def turns_of(self, unit: int) -> np.ndarray:
        """Indices (into ``opens``) of the turns of ``unit``, in order."""
        lo, hi = np.searchsorted(self.open_unit, [unit, unit + 1])
        return np.arange(lo, hi)

    # -- per-token views, built on demand (labels, explaining a finding)

    @cached_property
    def unit_of(self) -> np.ndarray:
        b = self.units
        return np.repeat(np.arange(len(b.starts)), b.ends - b.starts)

    @cached_property
    def unit_start(self) -> np.ndarray:
        return self.units.starts[self.unit_of]

    @cached_property
    def unit_end(self) -> np.ndarray:
        return self.units.ends[self.unit_of]

    @cached_property
    def chat_token(self) -> np.ndarray:
        return self.chat[self.unit_of]

    @cached_property
    def is_open(self) -> np.ndarray:
        return self.units.flat == self.vocab.open

    @cached_property
    def is_close(self) -> np.ndarray:
        return self.units.flat == self.vocab.close

    @cached_property
    def parts(self) -> TokenParts:
        """Per position: the turn it is in, and which part of the turn (chat units)."""
        b, v = self.units, self.vocab
        flat, n = b.flat, len(b.flat)
        index = np.arange(n)
        is_open, is_close = self.is_open & self.chat_token, self.is_close & self.chat_token
        last_open = _last_at_or_before(is_open, self.unit_start)
        last_close = _last_at_or_before(is_close, self.unit_start)
        in_turn = (last_open >= 0) & (last_open > last_close)
        offset = index - last_open
        # index of the position's turn in self.opens (-1 outside turns)
        turn_of = np.where(last_open >= 0, np.cumsum(is_open) - 1, -1)
        role_at = np.full(n, -1, dtype=np.int64)
        inside = turn_of >= 0
        role_at[inside] = self.role[turn_of[inside]]
        return TokenParts(
            last_open=last_open,
            header=in_turn & (offset >= 1) & (offset < HEADER),
            content=in_turn & (offset >= HEADER),
            closing=is_close & (last_open >= 0),
            after_newline=~in_turn & self.chat_token & (last_close >= 0) & (index - last_close == 1) & (flat == v.newline),
            role_at=role_at,
        )

    def part_name(self, i: int) -> str:
        """What position ``i`` of ``flat`` is, in words, for messages."""
        v, parts = self.vocab, self.parts
        role = v.role_name(parts.role_at[i])
        if not self.chat_token[i]:
            return "BOS" if i == self.unit_start[i] else ("<eos>" if self.units.flat[i] == v.eos else "the PT text")
        if i == self.unit_start[i]:
            return "BOS"
        if parts.header[i]:
            return f"the role header of a {role} turn"
        if parts.content[i]:
            return f"{role} content"
        if parts.closing[i]:
            return f"{v.close_piece} of a {role} turn"
        if parts.after_newline[i]:
            return f"the \\n after a {role} turn's {v.close_piece}"
        if self.is_open[i]:
            return v.open_piece
        return "a token outside any turn"

    def labels(self) -> list[tuple[str, str]]:
        """``(role, part)`` of every position of ``flat`` (see validator.label_tokens)."""
        b, v, parts = self.units, self.vocab, self.parts
        inner = self.blocks.parts() if self.blocks is not None else None
        out = []
        for i in range(len(b.flat)):
            token = int(b.flat[i])
            role = v.role_name(parts.role_at[i])
            if not self.chat_token[i]:
                if i == self.unit_start[i] and token == v.bos:
                    out.append(("", "bos"))
                elif token == v.eos:
                    out.append(("", "eos"))
                else:
                    out.append(("text", "content"))
                continue
            unit = self.unit_of[i]
            prompt_open = self.ending[unit] in ("generation_prompt", "empty_thought_prompt")
            if i == self.unit_start[i] and token == v.bos:
                out.append(("", "bos"))
            elif self.is_open[i]:
                out.append((role, "prompt" if prompt_open and i == self.last_marker[unit] else "marker"))
            elif parts.header[i]:
                out.append((role, "prompt" if prompt_open and parts.last_open[i] == self.last_marker[unit] else "header"))
            elif parts.content[i]:
                if prompt_open and parts.last_open[i] == self.last_marker[unit]:
                    out.append((role, "prompt"))  # the large checkpoints' empty thought channel
                else:
                    out.append((role, inner[i] if inner is not None and inner[i] else "content"))
            elif parts.closing[i]:
                out.append((role, "marker"))
            elif parts.after_newline[i]:
                out.append((role, "newline"))
            else:
                out.append(("", "outside"))
        return out


def _last_at_or_before(flag: np.ndarray, unit_start: np.ndarray) -> np.ndarray:
    """For each position, the latest position at or before it where ``flag`` is set, in the
    same unit; -1 if none."""
    index = np.where(flag, np.arange(len(flag)), -1)
    np.maximum.accumulate(index, out=index)
    index[index < unit_start] = -1
    return index
