"""Check token sequences against their dialect's turn layout, and say where and why each breaks.

    ids (+ loss mask, attention mask, segment ids)
      -> shapes     units: one per sequence, or per packed segment; padding cut off by the masks
      -> layout     turns, roles, content spans and endings, read through the dialect
                    (structure rules: markers, role headers, endings); in Gemma 4 the turn
                    bodies too (blocks: channels, declarations, calls, results; body_rules)
      -> rules      token rules (ids in range, BOS, EOS, PAD, reserved ids); the loss mask as
                    spans, compared with the encoder's; content trimmed as the formatter does;
                    optional, slower, canonical tokenization: every text run re-encodes to its ids
      -> findings   Report of Findings (rule, sequence, position, token id, expected, message, context)

No rule loops over tokens in Python: rules work on the few positions that are not plain text
(markers, BOS, EOS, PAD, reserved ids), on the ids a fixed offset after them, and on spans
compared through one prefix sum. Per-token views are built only to explain a finding.

A sequence written in another dialect gets one ``dialect_mismatch`` finding instead of all
it breaks (dialect_check).

A sequence passes when it is exactly what :class:`~gemma_turns.encoder.GemmaTokenizer` would
produce for some conversation (reserved text escaped): for an unpadded sequence ``x`` with its
loss mask, ``validate`` finds nothing if and only if ``x`` equals the encoding of its own
parse (the mutation tests check both directions). Content encoded with ``reserved="allow"``
that spells a turn marker is a forged turn and fails, as it should.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import replace
from typing import Literal

import numpy as np

from .body_rules import refine_messages, trained_holes, whitespace_in_bodies
from .findings import (
    BLOCKING,
    ENDINGS,
    EXPECTED_ENDINGS,
    RULES,
    Ending,
    Expect,
    TOLERANCES,
    Finding,
    Findings,
    Report,
)
from .conventions import as_array, labels_to_loss
from .dialect_check import foreign, mismatch
from .layout import Layout, vocab_of
from .shapes import int_array, is_flat, prepare, rows_of

__all__ = [
    "BLOCKING",
    "ENDINGS",
    "EXPECTED_ENDINGS",
    "RULES",
    "Ending",
    "Expect",
    "Finding",
    "Report",
    "label_tokens",
    "read_layout",
    "validate",
]


def validate(
    sequences: object,
    tokenizer,
    *,
    loss_mask: object = None,
    attention_mask: object = None,
    segment_ids: object = None,
    labels: object = None,
    expect: Expect | None = None,
    endings: Collection[str] | None = None,
    train_on: Literal["all", "last"] | None = "all",
    train_newline: bool | None = False,
    canonical: bool = True,
    tolerate: Collection[str] = frozenset(),
    max_findings: int | None = None,
    num_threads: int | None = None,
    checkpoint: str | None = None,
) -> Report:
    """Check token sequences made for ``tokenizer`` (a GemmaTokenizer) and report every finding.

    ``sequences``: one sequence (a 1-D array or list of ints, or an Encoding), a list of them,
    or a 2-D array of rows. An Encoding brings its own loss mask.

    ``loss_mask``, ``attention_mask``, ``segment_ids``: aligned with ``sequences``, optional.
    Arrays may be numpy arrays, torch tensors (any array-like) or lists. ``labels`` (instead of
    ``loss_mask``, per row): ``-100`` where not trained, else the ids, unshifted
    (``labels[i] == input_ids[i]``, as Hugging Face models take them) or shifted
    (``labels[i] == input_ids[i + 1]``); which one is detected and named in ``Report.notes``.
    Without an attention mask (and segment ids), leading and trailing runs of ``<pad>`` are
    taken as padding. With ``segment_ids`` (packed rows: 0 padding, 1..k segments in order),
    each segment is checked as a sequence of its own; positions stay relative to the row.

    ``expect``: how sequences must end, and what they are. ``"inference"``: chat, ending with
    the generation prompt; ``"training"``: chat, ending with a closed model turn that has
    something to learn; ``"pt"``: ``[BOS] text [EOS]``. ``None``: a sequence with a
    turn-opening marker is chat, one without is PT, and every ending the encoder can make is
    accepted. ``endings`` (names from ENDINGS) overrides the accepted endings.

    ``train_on``, ``train_newline``: the encoder options the loss mask was made with (its
    defaults: ``"all"``, ``False``). ``None`` means unknown: a mask passes if it has any of the
    legal shapes. With ``expect="inference"`` every model turn is trained, as the encoder does.

    ``canonical``: re-encode each text run and compare, and (Gemma 4) read every thought
    channel and tool body back (slower: a SentencePiece encode of all the text, a decode of
    the bodies). ``tolerate``: known differences of other tokenizers to accept (TOLERANCES:
    ``"hf_space_runs"``, runs of 17+ spaces split as Hugging Face's fast Gemma tokenizer
    splits them). ``max_findings`` caps the findings listed (every one is still counted).

    ``checkpoint`` (Gemma 4: ``e2b`` ... ``31b``, as ``EncodeOptions.checkpoint``): the model
    whose generation prompt is expected; None accepts either form. Endings named in
    ``endings`` stand for every form the dialect makes of them (``generation_prompt`` also
    the large checkpoints' prompt, the prompt after tool results and the hand-over).
    """
    if expect is not None and expect not in EXPECTED_ENDINGS:
        raise ValueError(f"expect must be 'inference', 'training', 'pt' or None, got {expect!r}")
    if train_on not in ("all", "last", None):
        raise ValueError(f"train_on must be 'all', 'last' or None, got {train_on!r}")
    if endings is not None:
        unknown = set(endings) - set(ENDINGS)
        if unknown:
            raise ValueError(f"unknown endings {sorted(unknown)}; choose from {sorted(ENDINGS)}")
    unknown = set(tolerate) - set(TOLERANCES)
    if unknown:
        raise ValueError(f"unknown tolerances {sorted(unknown)}; choose from {sorted(TOLERANCES)}")
    vocab = vocab_of(tokenizer)
    named = tokenizer.dialect.checkpoint(checkpoint)
    sequences, loss_mask, attention_mask, segment_ids, labels = (
        as_array(x) for x in (sequences, loss_mask, attention_mask, segment_ids, labels)
    )
    notes, label_hits = [], []
    if labels is not None:
        sequences, loss_mask, label_hits, note = _labels_as_loss(sequences, labels, loss_mask)
        notes.append(note)
    units = prepare(sequences, loss_mask, attention_mask, segment_ids, vocab.pad)
    units.early.extend(label_hits)
    check = _Check(
        units,
        tokenizer,
        expect=expect,
        endings=None if endings is None else frozenset(endings),
        train_on=train_on,
        train_newline=train_newline,
        checkpoint=named,
        tolerate=frozenset(tolerate),
    )
    check.run(canonical=canonical, num_threads=num_threads)
    report = check.findings.report(max_findings)
    return replace(report, notes=tuple(n for n in notes if n)) if notes else report


def _labels_as_loss(sequences, labels, loss_mask):
    """``(sequences, loss_mask, hits, note)``: labels read as loss masks (rows that have a loss
    mask keep it), the rows whose labels follow no convention as ``labels`` hits (those rows
    get no mask: a 2-D batch then goes on as a list of rows)."""
    id_rows = rows_of(sequences, "sequences")
    label_rows = rows_of(labels, "labels", like=id_rows)
    for r, (ids, row) in enumerate(zip(id_rows, label_rows)):
        if row is not None and len(row) != len(ids):
            raise ValueError(f"labels[{r}] has {len(row)} values, but sequence {r} has {len(ids)} ids")
    read = labels_to_loss(id_rows, label_rows)
    masks = rows_of(loss_mask, "loss_mask", like=id_rows) if loss_mask is not None else [None] * len(id_rows)
    merged = [given if given is not None else from_labels for given, from_labels in zip(masks, read.loss)]
    hits = [
        (
            "labels",
            np.array([r]),
            np.array([position]),
            np.array([int(id_rows[r][position])]),
            lambda k, m=message, e=expected: (m, e),
        )
        for r, position, message, expected in read.bad
    ]
    matrix = isinstance(sequences, np.ndarray) and sequences.ndim == 2
    if matrix and all(m is not None for m in merged):
        merged = np.stack(merged) if merged else np.zeros(sequences.shape, np.int8)
    elif matrix:
        sequences = list(sequences)
    elif isinstance(sequences, np.ndarray) or is_flat(sequences):
        merged = merged[0]
    return sequences, merged, hits, read.note


def read_layout(ids: np.ndarray, tokenizer, *, expect: Expect | None) -> tuple[Layout, Findings]:
    """The layout of one unpadded sequence, with the token and structure rules' findings:
    what the parser reads."""
    vocab = vocab_of(tokenizer)
    units = prepare(ids[None], None, np.ones((1, len(ids)), np.int8), None, vocab.pad)
    check = _Check(units, tokenizer, expect=expect, endings=None, train_on="all", train_newline=False)
    if check.layout.blocks is not None:
        check.layout.blocks.read_bodies()  # the parser needs the values
    return check.layout, check.findings


def label_tokens(
    ids: object,
    tokenizer,
    *,
    attention_mask: object = None,
    segment_ids: object = None,
    expect: Expect | None = None,
) -> list[tuple[str, str]]:
    """``(role, part)`` of each token of one row, for display (``gemma-turns inspect``).

    role: a role of the dialect (``user``, ``model``), ``text`` (PT) or ``""``; part: ``bos``,
    ``marker``, ``header``, ``content``, ``newline`` (after the closing marker), ``prompt``
    (the generation prompt), ``eos``, ``outside`` (in no turn) or ``pad``; in Gemma 4 also
    ``think``, ``declaration``, ``thought``, ``call``, ``hand-over`` (the trained
    ``<|tool_response>`` after calls), ``result`` (what a tool wrote) and ``media``. Masks as
    in :func:`validate`.
    """
    row = int_array(ids, "ids")
    if row.ndim != 1:
        raise ValueError(f"label_tokens takes one row of ids, got shape {row.shape}")
    vocab = vocab_of(tokenizer)
    units = prepare(
        row[None],
        None,
        None if attention_mask is None else int_array(attention_mask, "attention_mask")[None],
        None if segment_ids is None else int_array(segment_ids, "segment_ids")[None],
        vocab.pad,
    )
    check = _Check(units, tokenizer, expect=expect, endings=None, train_on="all", train_newline=False)
    flat_labels = check.layout.labels()
    labels = [("", "pad")] * len(row)
    for start, end, offset in zip(units.starts.tolist(), units.ends.tolist(), units.offsets.tolist()):
        labels[offset : offset + end - start] = flat_labels[start:end]
    return labels


class _Check:
    """The rules over one batch of units; the layout and the token rules run on creation.

    Hits stay arrays in ``findings`` until the report shows them.
    """

    def __init__(
        self, units, tokenizer, *, expect, endings, train_on, train_newline, checkpoint=None, tolerate=frozenset()
    ):
        self.batch = units
        self.tokenizer = tokenizer
        self.vocab = vocab_of(tokenizer)
        self.expect = expect
        self.train_on = "all" if expect == "inference" else train_on
        self.train_newline = train_newline
        self.findings = Findings(units, self.vocab.show)
        self.hit = self.findings.hit
        self.layout = Layout(units, self.vocab, self.findings, expect=expect, endings=endings, checkpoint=checkpoint)
        self.tolerate = tolerate
        self.token_rules()
        foreign(self.layout, tokenizer)
        mismatch(self.layout, tokenizer)

    @property
    def blocked(self) -> np.ndarray:
        return self.findings.blocked

    def _may_open_with_system(self, turns: np.ndarray) -> np.ndarray:
        """Whether each turn may start with system text (the dialect folds it into the first
        user turn, then a separator): untrimmed there."""
        lay, v = self.layout, self.vocab
        if v.dialect.system != "first_user_turn":
            return np.zeros(len(turns), bool)
        return (lay.turn_in_unit[turns] == 0) & (lay.role[turns] == v.user)

    def run(self, *, canonical: bool, num_threads: int | None) -> None:
        self.whitespace()
        self.loss_rule()
        if canonical:
            if self.layout.blocks is not None:
                self.layout.blocks.read_bodies()
            self.canonical(num_threads)

    def token_rules(self) -> None:
        b, v, lay = self.batch, self.vocab, self.layout
        starts, ends = b.starts, b.ends
        lengths = ends - starts
        marks, ids, unit = lay.marks, lay.mark_ids, lay.mark_unit
        self.hit(
            "id_out_of_range",
            marks[(ids < 0) | (ids >= v.size)],
            lambda k: (
                f"id outside the vocabulary of {v.size} pieces: the ids come from another "
                "tokenizer, or are corrupt",
                f"an id in 0..{v.size - 1}",
            ),
        )
        self.hit(
            "unk",
            marks[ids == v.unk],
            lambda k: (
                "the <unk> id: the text could not be encoded, or the ids come from another vocabulary",
                "a known piece",
            ),
        )
        is_bos, is_eos, is_pad = ids == v.bos, ids == v.eos, ids == v.pad
        chat_mark = lay.chat[unit]
        missing = np.flatnonzero(~lay.starts_with_bos & ~lay.text_bos)
        self.hit(
            "bos_missing",
            starts[missing],
            lambda k, empty=(lengths[missing] == 0): (
                ("the sequence is empty", "[BOS] then the sequence")
                if empty[k]
                else (
                    "the sequence does not start with BOS; insert the BOS id (never the text "
                    "'<bos>'), e.g. encode with add_bos or prepend it as an integer",
                    f"<bos> (id {v.bos})",
                )
            ),
            units=missing,
        )
        inside_bos = is_bos & (marks > starts[unit])
        # Gemma 4: a second BOS right after the first is the template's '<bos>' read as the
        # BOS id by a fast tokenizer, plus the tokenizer's own from add_special_tokens=True
        second = (marks[inside_bos] == starts[unit[inside_bos]] + 1) & v.dialect.tools
        self.hit(
            "bos_inside",
            marks[inside_bos],
            lambda k: (
                "doubled BOS: the chat template writes '<bos>' (read as the BOS id here) and the "
                "tokenizer added its own with add_special_tokens=True; tokenize the template's "
                "text with add_special_tokens=False, or let apply_chat_template tokenize"
                if second[k]
                else "BOS inside the sequence: the double-BOS bug (BOS added twice, or by a "
                "template and again by the tokenizer), or sequences joined without segment ids",
                "no BOS after position 0",
            ),
        )
        where_text_bos = np.flatnonzero(lay.text_bos)
        doubled = lay.starts_with_bos[where_text_bos]
        precise = v.dialect.tools  # Gemma 4: name the pipeline that makes each form
        self.hit(
            "text_bos",
            lay.first_content[where_text_bos],
            lambda k: (
                (
                    "doubled BOS: the BOS id, then '<bos>' as text: the chat template's text (which "
                    "starts with '<bos>') was tokenized with add_special_tokens=True; tokenize the "
                    "template's text with add_special_tokens=False, or let apply_chat_template tokenize"
                    if doubled[k]
                    else "BOS spelled as text and no BOS id: the template's '<bos>' text was tokenized "
                    "as plain pieces (a CONTROL piece never comes from text); drop '<bos>' from the "
                    "text and insert the BOS id as an integer"
                )
                if precise
                else "BOS spelled as text at the start: a template wrote '<bos>' into the text, "
                "which the tokenizer encodes as plain pieces; remove it from the template and "
                "insert the BOS id as an integer",
                f"<bos> as its id {v.bos}, once, at position 0",
            ),
            units=where_text_bos,
        )
        eos_bad = is_eos & (chat_mark | (marks != ends[unit] - 1))
        close = v.close_piece
        # Gemma 4: an EOS that ends a turn (before its \n, or at the end) stands for <turn|>
        as_close = np.zeros(int(eos_bad.sum()), bool)
        if v.dialect.tools and as_close.size:
            where = marks[eos_bad]
            after = b.at(where, 1, unit[eos_bad])
            as_close = chat_mark[eos_bad] & ((after == v.newline) | (after < 0))
        self.hit(
            "eos_inside",
            marks[eos_bad],
            lambda k, in_chat=chat_mark[eos_bad]: (
                (
                    f"EOS where {close} belongs: a template or collator closed the turn with the "
                    f"tokenizer's eos_token; Gemma 4 turns end with {close}\\n, and the model must "
                    f"learn {close} to stop"
                )
                if as_close[k]
                else (
                    f"EOS in a chat sequence: Gemma chat sequences end with {close}\\n "
                    "(or the generation prompt), never with <eos>"
                )
                if in_chat[k]
                else "EOS before the end of a PT text",
                f"{close} (id {v.close})" if as_close[k] else "no <eos> here",
            ),
        )
        self.hit(
            "pad_inside",
            marks[is_pad],
            lambda k: (
                "PAD inside the sequence: padding must be where the attention mask is 0, at one end",
                "a content token",
            ),
        )
        reserved = np.where(chat_mark, v.lookup(v.is_reserved_chat, ids), v.lookup(v.is_reserved_pt, ids))
        self.hit(
            "reserved_in_content",
            marks[reserved],
            lambda k, found=ids[reserved]: (
                f"the reserved id of {v.show(int(found[k]))} inside content: content spelled it and "
                "was encoded without escaping (reserved='allow'), or the ids are corrupt",
                "text, or the reserved text escaped (reserved='escape')",
            ),
        )

    # -- trimmed content

    def whitespace(self) -> None:
        if self.layout.blocks is not None:
            return whitespace_in_bodies(self)
        return self._whitespace()

    def _whitespace(self) -> None:
        """Content segments (text between a header, image markers and <end_of_turn>) must be
        trimmed, as the formatter trims them; the first user turn may open with a system text."""
        b, v = self.batch, self.vocab
        flat, n = b.flat, len(b.flat)
        if n == 0:
            return
        lay = self.layout
        usable = lay.chat & ~self.blocked
        turn_index = np.flatnonzero(usable[lay.open_unit])
        sots = lay.opens[turn_index]
        # segment starts: after each header, and after each image marker inside content
        header_newline = flat[np.minimum(sots + 2, n - 1)]
        header_starts = np.where(header_newline == v.header_end, sots + 3, sots + 2)
        is_soi = v.lookup(v.is_media, lay.mark_ids)
        soi_unit = lay.mark_unit[is_soi]
        content = usable[soi_unit] & lay.in_content(lay.marks[is_soi], soi_unit)
        sois, soi_unit = lay.marks[is_soi][content], soi_unit[content]
        starts = np.concatenate([header_starts, sois + 1])
        first_of_unit = np.concatenate(
            [self._may_open_with_system(turn_index), np.zeros(len(sois), bool)]
        )
        text_from = np.concatenate([sots + 1, sois + 1])  # where the decoded run begins
        from_header = np.concatenate([np.ones(len(sots), bool), np.zeros(len(sois), bool)])
        unit_end = b.ends[np.concatenate([lay.open_unit[turn_index], soi_unit])]
        inside = starts < unit_end
        starts, first_of_unit, text_from, from_header, unit_end = (
            starts[inside], first_of_unit[inside], text_from[inside], from_header[inside], unit_end[inside]
        )
        # segment ends: the next image marker or <end_of_turn> in the unit
        stops = lay.marks[is_soi | (lay.mark_ids == v.close)]
        next_stop = np.searchsorted(stops, starts)
        ends = stops[np.minimum(next_stop, len(stops) - 1)] if len(stops) else np.zeros(len(starts), np.int64)
        ends = np.where((next_stop < len(stops)) & (ends < unit_end), ends, -1)
        keep = (ends > starts) & (ends >= 0)
        starts, ends, first_of_unit, text_from, from_header = (
            starts[keep], ends[keep], first_of_unit[keep], text_from[keep], from_header[keep]
        )
        if len(starts) == 0:
            return
        head = np.clip(flat[starts], 0, v.size - 1)
        tail = np.clip(flat[ends - 1], 0, v.size - 1)
        lead, trail = v.lead_ws[head], v.trail_ws[tail]
        unsure = v.unsure[head] | v.unsure[tail]
        decode = np.flatnonzero(unsure | (first_of_unit & (lead | trail)))
        bad_lead, bad_trail = lead & ~first_of_unit, trail & ~first_of_unit
        bad_lead[decode] = bad_trail[decode] = False
        processor = self.tokenizer.processor
        if len(decode):
            texts = processor.decode([flat[text_from[k] : ends[k]].tolist() for k in decode])
            for k, text in zip(decode, texts):
                if from_header[k]:
                    text = text.split("\n", 1)[1] if "\n" in text else ""
                if first_of_unit[k]:
                    if not (text == text.strip() or self.vocab.dialect.split_system(text) is not None):
                        bad_lead[k] = text[:1].isspace()
                        bad_trail[k] = not bad_lead[k]
                else:
                    bad_lead[k] = text[:1].isspace()
                    bad_trail[k] = text[-1:].isspace()
        where = np.flatnonzero(bad_lead | bad_trail)
        position = np.where(bad_lead[where], starts[where], ends[where] - 1)
        self.hit(
            "content_whitespace",
            position,
            lambda k, lead_=bad_lead[where], first_=first_of_unit[where], p=position: (
                f"{v.role_name(lay.parts.role_at[p[k]])} content "
                f"{'starts' if lead_[k] else 'ends'} with whitespace; the formatter trims "
                "content (str.strip), so the encoder never makes this"
                + (" (the first user turn may start with the system text, then a blank line)" if first_[k] else ""),
                "trimmed content",
            ),
        )

    # -- the loss mask

    # -- the loss mask

    def _trained_spans(self):
        """Candidate masks, one per legal (train_on, train_newline), as the encoder makes them:
        spans ``[start, stop)`` of ``flat`` (with the unit of each) where the mask is 1: the
        content and <end_of_turn> (and its \\n, with train_newline) of each trained model
        turn; a PT text after BOS. Exact where a unit's layout holds (not blocked), which is
        the only place a mask is compared.

        Returns ``(candidates, content)``: ``candidates`` a list of ``(name, starts, stops,
        units, trained_turn)``; ``content`` the content length of each turn."""
        b, v = self.batch, self.vocab
        train_ons = ["all", "last"] if self.train_on is None else [self.train_on]
        newlines = [False, True] if self.train_newline is None else [bool(self.train_newline)]
        lay = self.layout
        sots, sot_unit, role = lay.opens, lay.open_unit, lay.role
        model_turn = role == v.model
        last_model = np.zeros(len(sots), dtype=bool)
        model_index = np.flatnonzero(model_turn)
        if len(model_index):
            model_unit = sot_unit[model_index]
            last_model[model_index[np.r_[model_unit[1:] != model_unit[:-1], True]]] = True
        content_start, content_end, closed = lay.content_start, lay.content_end, lay.closed
        newline_after = closed & (b.at(np.where(closed, content_end, sots), 1, sot_unit) == v.newline)
        pt_units = np.flatnonzero(~lay.chat & (b.ends - b.starts > 1))
        candidates = []
        for train_on in train_ons:
            trained_turn = model_turn & (last_model if train_on == "last" else True)
            # what a tool writes inside trained turns: spans given backwards, so they subtract
            hole_starts, hole_stops, hole_units, trained_turn = trained_holes(lay, trained_turn)
            for newline in newlines:
                stop = content_end + closed + (newline & newline_after)
                candidates.append(
                    (
                        (train_on, newline),
                        np.concatenate([content_start[trained_turn], b.starts[pt_units] + 1, hole_stops]),
                        np.concatenate([stop[trained_turn], b.ends[pt_units], hole_starts]),
                        np.concatenate([sot_unit[trained_turn], pt_units, hole_units]),
                        trained_turn,
                    )
                )
        return candidates, content_end - content_start

    def loss_rule(self) -> None:
        b = self.batch
        units = len(b.starts)
        candidates, content = self._trained_spans() if units else ([], None)
        chosen = np.zeros(units, dtype=np.int64)
        if b.loss is not None and len(candidates) and len(b.flat):
            loss = b.loss
            if loss.min() < 0 or loss.max() > 1:
                bad_value = (loss != 0) & (loss != 1)
                self.hit(
                    "loss_mask",
                    np.flatnonzero(bad_value),
                    lambda k, x=loss[bad_value]: (f"loss-mask value {x[k]}", "0 or 1"),
                )
            given = loss != 0
            total = _prefix_sums(given)
            given_count = total[b.ends] - total[b.starts]
            checked = ~self.blocked & b.has_loss
            # per unit and candidate: positions where the given mask differs from the candidate
            expected_count, mismatches = [], []
            for _, starts, stops, span_unit, _ in candidates:
                length = np.bincount(span_unit, stops - starts, minlength=units).astype(np.int64)
                agree = np.bincount(span_unit, total[stops] - total[starts], minlength=units).astype(np.int64)
                expected_count.append(length)
                mismatches.append(np.where(checked, given_count + length - 2 * agree, 0))
            mismatches = np.stack(mismatches)
            chosen = mismatches.argmin(axis=0)
            expected_count = np.choose(chosen, expected_count)
            all_zero = np.flatnonzero(~self.blocked & b.has_loss & (given_count == 0) & (expected_count > 0))
            self.hit(
                "loss_mask_all_zero",
                b.starts[all_zero],
                lambda k, c=expected_count[all_zero]: (
                    "the loss mask is all zero: this sequence teaches nothing",
                    f"1 on {c[k]} tokens (the trained model turns' content and <end_of_turn>)",
                ),
                units=all_zero,
            )
            wrong_units = np.choose(chosen, mismatches) > 0
            wrong_units[all_zero] = False
            if wrong_units.any():
                self._loss_mask_runs(wrong_units, given, candidates, chosen)
        if self.expect == "training":
            self._nothing_to_learn(candidates, content, chosen)

    def _loss_mask_runs(self, wrong_units, given, candidates, chosen) -> None:
        """One finding per run of positions where the mask differs from the chosen candidate."""
        n = len(self.batch.flat)
        pick = [chosen[span_unit] == c for c, (_, _, _, span_unit, _) in enumerate(candidates)]
        starts = np.concatenate([s[p] for p, (_, s, _, _, _) in zip(pick, candidates)])
        stops = np.concatenate([e[p] for p, (_, _, e, _, _) in zip(pick, candidates)])
        edges = np.zeros(n + 1, dtype=np.int64)
        np.add.at(edges, starts, 1)
        np.add.at(edges, stops, -1)
        expected = np.cumsum(edges[:n]) > 0
        index = np.arange(n)
        lay = self.layout
        wrong = wrong_units[lay.unit_of] & (given != expected)
        run_start = wrong & ~np.r_[False, wrong[:-1]] | (wrong & (index == lay.unit_start))
        run_end = wrong & ~np.r_[wrong[1:], False] | (wrong & (index == lay.unit_end - 1))
        starts, stops = np.flatnonzero(run_start), np.flatnonzero(run_end) + 1
        unknown = self.train_on is None or self.train_newline is None
        names = [name for name, _, _, _, _ in candidates]
        self.hit(
            "loss_mask",
            starts,
            lambda k, s=starts, e=stops: self._mask_message(int(s[k]), int(e[k]), expected, given, names, chosen, unknown),
        )

    def _mask_message(self, start, stop, expected, given, names, chosen, unknown):
        unit = int(self.layout.unit_of[start])
        part = self.layout.part_name(start)
        count = stop - start
        want = int(expected[start])
        text = (
            f"the loss mask is {int(given[start])} on {part}"
            + (f" ({count} tokens from here)" if count > 1 else "")
            + f"; the encoder's mask is {want} there"
        )
        if want == 0 and part.startswith(("the role header", "<start_of_turn>", "BOS")):
            text += " (headers and BOS are never trained)"
        if self.layout.blocks is not None:
            text = refine_messages(self.layout, start, want, text)
        if unknown:
            train_on, newline = names[int(chosen[unit])]
            text += f" (options unknown: compared with the closest legal mask, train_on={train_on!r}, train_newline={newline})"
        return text, f"loss mask {want}"

    def _nothing_to_learn(self, candidates, content, chosen) -> None:
        b, v = self.batch, self.vocab
        lay = self.layout
        if not len(candidates) or not len(lay.opens):
            return
        sot_unit = lay.open_unit
        usable = lay.chat & ~self.blocked & (lay.ending == "model_turn")
        has_model = _per_group(lay.role == v.model, sot_unit, len(b.starts))
        flagged = []
        for c, (_, _, _, _, trained_turn) in enumerate(candidates):
            learn = _per_group(trained_turn & (content > 0), sot_unit, len(b.starts))
            flagged.append(usable & (learn == 0) & (has_model > 0) & (chosen == c))
        units = np.flatnonzero(np.logical_or.reduce(flagged))
        # point at the <end_of_turn> of the last model turn
        self.hit(
            "nothing_to_learn",
            lay.last_marker[units],
            lambda k: (
                "nothing to learn: the trained model turns have no content (the encoder "
                "refuses such a training conversation)",
                "an answer in the trained model turn",
            ),
            units=units,
        )

    # -- canonical tokenization

    # -- canonical tokenization

    def canonical(self, num_threads: int | None) -> None:
        b, v = self.batch, self.vocab
        flat, n = b.flat, len(b.flat)
        if n == 0:
            return
        # text runs: from a unit's start or the token after a mark, to the next mark or the unit's end
        marks = self.layout.marks
        starts = np.union1d(b.starts[b.ends > b.starts], marks + 1)
        starts = starts[(starts < n) & ~np.isin(starts, marks)]
        stops = np.minimum(b.ends[b.units_at(starts)], np.r_[marks, n][np.searchsorted(marks, starts)])
        skip = (stops - starts == 1) & (flat[starts] == v.newline)
        if len(self.findings.suppressed):  # explained by one finding (foreign ids): not re-encoded
            skip |= np.isin(b.units_at(starts), self.findings.suppressed)
        starts, stops = starts[~skip], stops[~skip]
        if len(starts) == 0:
            return
        runs = [flat[a:z].tolist() for a, z in zip(starts.tolist(), stops.tolist())]
        processor = self.tokenizer.processor
        texts = processor.decode(runs)
        reserved = self.tokenizer.reserved
        parts, owners = [], []
        for k, text_ in enumerate(texts):
            split = reserved.split_for_escape(text_) if reserved.find(text_) else [text_]
            parts.extend(split)
            owners.extend([k] * len(split))
        kwargs = {} if num_threads is None else {"num_threads": num_threads}
        encoded = processor.encode(parts, **kwargs)
        canonical: list[list[int]] = [[] for _ in runs]
        for k, ids in zip(owners, encoded):
            canonical[k].extend(ids)
        bad, where, expected = [], [], []
        spaced_where, spaced_what = [], []
        for k, (ids, again) in enumerate(zip(runs, canonical)):
            if ids != again:
                d = next((i for i, (x, y) in enumerate(zip(ids, again)) if x != y), min(len(ids), len(again)))
                at = min(int(starts[k]) + d, int(stops[k]) - 1)  # a token of the run
                if SPACE_RUN in texts[k] and space_split_only(ids, again, texts[k], v.pieces):
                    if "hf_space_runs" not in self.tolerate:
                        spaced_where.append(at)
                        spaced_what.append((ids[d : d + 4], again[d : d + 4], _longest_space_run(texts[k])))
                    continue
                bad.append(k)
                where.append(at)
                expected.append((again[d : d + 6], texts[k]))
        self.hit(
            "hf_space_runs",
            np.array(spaced_where, dtype=np.int64),
            lambda k, w=spaced_what: (
                f"a run of {w[k][2]} spaces is split into the space pieces {w[k][0]}..., as Hugging Face's "
                "fast Gemma tokenizer splits long space runs; SentencePiece (what the model was "
                "trained with) gives the longest pieces. The text is the same: a known difference, "
                "not another tokenizer. Re-encode with SentencePiece (gemma-turns encode), or accept "
                "it: validate(..., tolerate={'hf_space_runs'}), gemma-turns validate --tolerate hf_space_runs",
                f"ids {w[k][1]}...",
            ),
        )
        self.hit(
            "noncanonical",
            np.array(where, dtype=np.int64),
            lambda k: (
                f"the text {_clip(expected[k][1])!r} re-encodes to other ids from here: the "
                "sequence was made by another tokenizer or Gemma version, or its ids were edited",
                f"ids {expected[k][0]}{'...' if len(expected[k][0]) == 6 else ''}",
            ),
        )

    # -- labels for inspect


# -- helpers ------------------------------------------------------------------------------------


def _prefix_sums(mask: np.ndarray) -> np.ndarray:
    """``total[i]`` = how many of ``mask[:i]`` are set (``len(mask) + 1`` entries)."""
    total = np.zeros(len(mask) + 1, dtype=np.int32 if len(mask) < 2**31 else np.int64)
    np.cumsum(mask, dtype=total.dtype, out=total[1:])  # dtype given: no casting buffer
    return total


def _per_group(mask: np.ndarray, group: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(group[mask], minlength=size) if len(group) else np.zeros(size, np.int64)


SPACE_RUN = " " * 17  # where HF's fast Gemma tokenizer may split spaces otherwise


def space_split_only(ids: list[int], again: list[int], text: str, pieces) -> bool:
    """Whether ``ids`` and the canonical ``again`` (both spelling ``text``) differ only in how
    runs of 17+ spaces are cut into pieces: the same pieces outside those runs, cut at the
    same places.

        "a" + 32 spaces + "b":  SentencePiece [a, ▁×31, ▁b]   HF fast [a, ▁×16, ▁×16, b]
    """
    regions = [(m.start(), m.end()) for m in re.finditer(" {17,}", text)]

    def spans(tokens):
        out, at = {}, 0
        for token in tokens:
            piece = pieces[token]
            size = 1 if _BYTE.fullmatch(piece) else len(piece)
            out[(at, at + size)] = token
            at += size
        return out, at

    first, end_a = spans(ids)
    second, end_b = spans(again)
    if end_a != end_b or end_a != len(text):
        return False  # byte pieces of multi-byte text: offsets are not characters; not this case

    def outside(span_map):
        return {
            span: token
            for span, token in span_map.items()
            if not any(lo <= span[1] and span[0] <= hi for lo, hi in regions)
        }

    def cuts(span_map):
        return {a for a, _ in span_map if not any(lo <= a <= hi for lo, hi in regions)}

    return outside(first) == outside(second) and cuts(first) == cuts(second)


_BYTE = re.compile(r"<0x[0-9A-F]{2}>")


def _longest_space_run(text: str) -> int:
    return max(len(m.group()) for m in re.finditer(" {17,}", text))


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
