"""Check token sequences against the Gemma turn layout, and say where and why each one breaks.

    ids (+ loss mask, attention mask, segment ids)
      -> units: one per sequence, or per packed segment; padding cut off by the masks
      -> token rules       numpy over the whole batch (ids in range, BOS, EOS, PAD, reserved ids)
      -> structure rules   numpy over the whole batch (turn markers, role headers, endings)
      -> loss-mask rule    numpy: the spans the encoder would have trained, compared with the mask
      -> text rules        content trimmed as the formatter does; BOS spelled as text; and, optional
                           and slower, canonical tokenization: every text run re-encodes to its ids
      -> Report of Findings (rule, sequence, position, token id, expected, message, context)

No rule loops over tokens in Python, and few passes read every token: one table lookup finds
the *marks* (every id that is not plain text: turn markers, BOS, EOS, PAD, reserved ids), and
the rules work on those few positions and on the ids a fixed offset after them (turn state by
``searchsorted`` over marker positions; the loss mask as spans, compared through one prefix
sum). Per-token views are built only to explain a finding. Python loops run once per finding,
per turn whose text must be decoded, or per text run for the canonical rule.

A sequence passes when it is exactly what :class:`~gemma_turns.encoder.GemmaTokenizer` would
produce for some conversation (reserved text escaped): for an unpadded sequence ``x`` with its
loss mask, ``validate`` finds nothing if and only if ``x`` equals the encoding of its own
parse (the mutation tests check both directions). Content encoded with ``reserved="allow"``
that spells a turn marker is a forged turn and fails, as it should.
"""

from __future__ import annotations

import re
import weakref
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from .errors import TokenizerError

__all__ = [
    "ENDINGS",
    "RULES",
    "Ending",
    "Expect",
    "Finding",
    "Report",
    "assert_valid",
    "label_tokens",
    "validate",
]

Expect = Literal["inference", "training", "pt"]
Ending = Literal["generation_prompt", "model_turn", "user_turn", "eos", "text"]

ENDINGS: dict[str, str] = {
    "generation_prompt": "the generation prompt <start_of_turn>model\\n",
    "model_turn": "a closed model turn (the answer, <end_of_turn>, \\n)",
    "user_turn": "a closed user turn (<end_of_turn>, \\n)",
    "eos": "<eos>",
    "text": "text without <eos> (a PT prompt)",
}
CHAT_ENDINGS = frozenset({"generation_prompt", "model_turn", "user_turn"})
PT_ENDINGS = frozenset({"eos", "text"})
EXPECTED_ENDINGS = {
    "inference": frozenset({"generation_prompt"}),
    "training": frozenset({"model_turn"}),
    "pt": frozenset({"eos"}),
}

RULES: dict[str, str] = {
    "id_out_of_range": "an id outside the vocabulary (negative, or not below the vocabulary size)",
    "unk": "the <unk> id: text the tokenizer could not encode, or ids of another vocabulary",
    "bos_missing": "the sequence (each packed segment) does not start with BOS, or is empty",
    "bos_inside": "BOS after the start of the sequence: the double-BOS bug",
    "text_bos": "BOS spelled as text (<bos>, [BOS]) at the start: the text-BOS bug",
    "eos_inside": "EOS where none belongs: any EOS in a chat sequence, or before a PT text's end",
    "pad_inside": "PAD inside the sequence, where the attention mask is 1",
    "padding": "padding that is not <pad>, an attention mask with holes, or segment ids out of order",
    "reserved_in_content": "a reserved id (turn or image marker, <mask>, <unusedN>) inside content",
    "bad_start": "a chat sequence whose first token after BOS is not <start_of_turn>",
    "bad_role": "the token after <start_of_turn> is not the role 'user' or 'model'",
    "bad_header": "the role is not followed by the newline that ends the turn header",
    "roles_not_alternating": "turns do not alternate user, model, user, ... starting with user",
    "unclosed_turn": "a turn without <end_of_turn>: a new turn starts, or the sequence ends, inside it",
    "stray_end_of_turn": "<end_of_turn> with no open turn",
    "missing_turn_newline": "<end_of_turn> not followed by its \\n",
    "text_between_turns": "tokens between a turn's closing \\n and the next <start_of_turn>",
    "bad_ending": "the sequence does not end as expected (generation prompt, model turn, EOS)",
    "nothing_to_learn": "training: the trained model turns have no content",
    "content_whitespace": "content that starts or ends with whitespace, which the formatter trims",
    "noncanonical": "a text run that re-encodes to other ids (another tokenizer or Gemma version)",
    "loss_mask": "the loss mask differs from the encoder's (or is not 0/1, or not aligned with the ids)",
    "loss_mask_all_zero": "the loss mask is all zero where tokens should be trained",
}

# Rules after which a sequence's turn layout cannot be trusted: the loss-mask and trim rules
# skip such a sequence, and parse() refuses it. (text_bos blocks a chat sequence too, where it
# stands for bad_start; a PT text that starts with '<bos>' is still a text.)
BLOCKING = frozenset(
    {
        "id_out_of_range",
        "bos_missing",
        "bos_inside",
        "eos_inside",
        "pad_inside",
        "bad_start",
        "bad_role",
        "bad_header",
        "unclosed_turn",
        "stray_end_of_turn",
        "missing_turn_newline",
        "text_between_turns",
    }
)

NO_TOKEN = np.iinfo(np.int64).min  # a hit at the end of a sequence: no token there
CONTEXT_BEFORE = 5
CONTEXT_AFTER = 4
TEXT_BOS = ("<bos>", "[BOS]")


@dataclass(frozen=True, slots=True)
class Finding:
    """One broken thing in one sequence.

    ``sequence`` is the index of the sequence (row) in the input; ``position`` the token's
    index in that row (for a packed row, in the row, not the segment); ``token_id`` is None
    when the position is the end of the sequence (something is missing there).
    """

    rule: str
    sequence: int
    position: int
    token_id: int | None
    expected: str | None
    message: str
    context: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        token = "end of sequence" if self.token_id is None else f"id {self.token_id}"
        text = f"sequence {self.sequence}, position {self.position} ({token}): {self.rule}: {self.message}"
        if self.expected:
            text += f"\n    expected: {self.expected}"
        return text + f"\n    context:  {self.context}"


@dataclass(frozen=True, slots=True)
class Report:
    """What :func:`validate` found.

    ``findings`` are sorted by sequence and position, at most ``max_findings`` of them;
    ``counts`` counts every finding by rule, listed or not; ``invalid`` is the number of
    sequences (rows) with at least one finding.
    """

    findings: tuple[Finding, ...]
    counts: Mapping[str, int]
    sequences: int
    tokens: int
    invalid: int

    @property
    def ok(self) -> bool:
        return not self.counts

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def truncated(self) -> bool:
        return self.total > len(self.findings)

    def summary(self) -> str:
        text = (
            f"{self.sequences} sequences ({self.tokens} tokens): "
            f"{self.sequences - self.invalid} valid, {self.invalid} invalid"
        )
        if self.counts:
            by_rule = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
            text += "; findings by rule: " + ", ".join(f"{rule} {n}" for rule, n in by_rule)
        return text

    def format(self, limit: int | None = 20) -> str:
        """The report for people: the first ``limit`` findings, then the summary."""
        shown = self.findings if limit is None else self.findings[:limit]
        lines = [str(finding) for finding in shown]
        if self.total > len(shown):
            lines.append(f"... and {self.total - len(shown)} more findings")
        lines.append(self.summary())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def validate(
    sequences: object,
    tokenizer,
    *,
    loss_mask: object = None,
    attention_mask: object = None,
    segment_ids: object = None,
    expect: Expect | None = None,
    endings: Collection[str] | None = None,
    train_on: Literal["all", "last"] | None = "all",
    train_newline: bool | None = False,
    canonical: bool = True,
    max_findings: int | None = None,
    num_threads: int | None = None,
) -> Report:
    """Check token sequences made for ``tokenizer`` (a GemmaTokenizer) and report every finding.

    ``sequences``: one sequence (a 1-D array or list of ints, or an Encoding), a list of them,
    or a 2-D array of rows. An Encoding brings its own loss mask.

    ``loss_mask``, ``attention_mask``, ``segment_ids``: aligned with ``sequences``, optional.
    Without an attention mask (and segment ids), leading and trailing runs of ``<pad>`` are
    taken as padding. With ``segment_ids`` (packed rows: 0 padding, 1..k segments in order),
    each segment is checked as a sequence of its own; positions stay relative to the row.

    ``expect``: how sequences must end, and what they are. ``"inference"``: chat, ending with
    the generation prompt; ``"training"``: chat, ending with a closed model turn that has
    something to learn; ``"pt"``: ``[BOS] text [EOS]``. ``None``: a sequence with a
    ``<start_of_turn>`` is chat, one without is PT, and every ending the encoder can make is
    accepted. ``endings`` (names from ENDINGS) overrides the accepted endings.

    ``train_on``, ``train_newline``: the encoder options the loss mask was made with (its
    defaults: ``"all"``, ``False``). ``None`` means unknown: a mask passes if it has any of the
    legal shapes. With ``expect="inference"`` every model turn is trained, as the encoder does.

    ``canonical``: re-encode each text run and compare (slower: a SentencePiece encode of all
    the text). ``max_findings`` caps the findings listed (every one is still counted).
    """
    if expect is not None and expect not in EXPECTED_ENDINGS:
        raise ValueError(f"expect must be 'inference', 'training', 'pt' or None, got {expect!r}")
    if train_on not in ("all", "last", None):
        raise ValueError(f"train_on must be 'all', 'last' or None, got {train_on!r}")
    if endings is not None:
        unknown = set(endings) - set(ENDINGS)
        if unknown:
            raise ValueError(f"unknown endings {sorted(unknown)}; choose from {sorted(ENDINGS)}")
    batch = _prepare(sequences, loss_mask, attention_mask, segment_ids, _vocab(tokenizer))
    check = _Check(
        batch,
        tokenizer,
        expect=expect,
        endings=None if endings is None else frozenset(endings),
        train_on=train_on,
        train_newline=train_newline,
    )
    check.run(canonical=canonical, num_threads=num_threads)
    return check.report(max_findings)


def assert_valid(sequences: object, tokenizer, **options) -> None:
    """Fail (AssertionError, with the report) unless :func:`validate` finds nothing.

    For pytest: ``assert_valid(tokenizer.encode_chat_batch(data, mode="training"), tokenizer,
    expect="training")``.
    """
    __tracebackhide__ = True  # pytest shows the caller's line
    report = validate(sequences, tokenizer, **options)
    if not report.ok:
        raise AssertionError("invalid token sequences:\n" + report.format(limit=20))


def check_layout(ids: np.ndarray, tokenizer, *, expect: Expect | None) -> _Check:
    """The token and structure rules over one unpadded sequence, for the parser: the check
    object holds the layout (``sots``, ``is_eot``, ``is_soi``, ``chat``, ``ending``) it reads."""
    batch = _prepare(ids[None], None, np.ones((1, len(ids)), np.int8), None, _vocab(tokenizer))
    check = _Check(batch, tokenizer, expect=expect, endings=None, train_on="all", train_newline=False)
    check.tokens_and_structure()
    return check


def label_tokens(
    ids: object,
    tokenizer,
    *,
    attention_mask: object = None,
    segment_ids: object = None,
    expect: Expect | None = None,
) -> list[tuple[str, str]]:
    """``(role, part)`` of each token of one row, for display (``gemma-turns inspect``).

    role: ``user``, ``model``, ``text`` (PT) or ``""``; part: ``bos``, ``marker``, ``header``,
    ``content``, ``newline`` (after ``<end_of_turn>``), ``prompt`` (the generation prompt),
    ``eos``, ``outside`` (in no turn) or ``pad``. Masks as in :func:`validate`.
    """
    row = _int_array(ids, "ids")
    if row.ndim != 1:
        raise ValueError(f"label_tokens takes one row of ids, got shape {row.shape}")
    batch = _prepare(
        row[None],
        None,
        None if attention_mask is None else _int_array(attention_mask, "attention_mask")[None],
        None if segment_ids is None else _int_array(segment_ids, "segment_ids")[None],
        _vocab(tokenizer),
    )
    check = _Check(batch, tokenizer, expect=expect, endings=None, train_on="all", train_newline=False)
    check.tokens_and_structure()
    flat_labels = check.labels()
    labels = [("", "pad")] * len(row)
    for start, end, offset in zip(batch.starts.tolist(), batch.ends.tolist(), batch.offsets.tolist()):
        labels[offset : offset + end - start] = flat_labels[start:end]
    return labels


# -- the model's ids ------------------------------------------------------------------------


class _Vocab:
    """Arrays of the ids the rules need, derived once per tokenizer."""

    def __init__(self, tokenizer):
        specials = tokenizer.specials
        self.size = tokenizer.vocab_size
        self.bos = specials.bos
        self.eos = specials.eos
        self.pad = specials.pad
        self.unk = specials.unk
        self.sot = specials.start_of_turn
        self.eot = specials.end_of_turn
        self.newline = specials.newline
        self.soi = -2 if specials.start_of_image is None else specials.start_of_image
        self.user = _single_id(tokenizer, "user")
        self.model = _single_id(tokenizer, "model")
        pieces = tokenizer.pieces
        self.pieces = pieces
        reserved = np.array(sorted(tokenizer.reserved_ids.values()), dtype=np.int64)
        newline_runs = np.array([i for i, p in enumerate(pieces) if p and not p.strip("\n")], dtype=np.int64)
        # Lookup tables by id, with one entry past the vocabulary that every out-of-range id
        # looks up (see lookup): faster than np.isin against thousands of reserved ids.
        self.is_break = self._table(np.union1d(reserved, [self.bos, self.eos, self.pad, self.unk]), extra=True)
        self.is_reserved_chat = self._table(np.setdiff1d(reserved, [self.sot, self.eot, self.soi]))
        self.is_reserved_pt = self._table(reserved)
        self.is_newline_run = self._table(newline_runs)
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

    def show(self, token_id: int) -> str:
        if 0 <= token_id < self.size:
            return _visible(self.pieces[token_id])
        return f"<id {token_id}?>"


_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")
_VOCABS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _vocab(tokenizer) -> _Vocab:
    vocab = _VOCABS.get(tokenizer)
    if vocab is None:
        vocab = _VOCABS[tokenizer] = _Vocab(tokenizer)
    return vocab


def _single_id(tokenizer, text: str) -> int:
    ids = tokenizer.processor.encode(text)
    if len(ids) != 1:
        raise TokenizerError(
            f"the model encodes the role {text!r} as {len(ids)} pieces {ids}; the validator "
            "needs each role name as one piece, as in every Gemma tokenizer",
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


# -- inputs to units ------------------------------------------------------------------------


@dataclass
class _Batch:
    """The input cut into units (one per sequence or packed segment), concatenated.

    ``flat`` holds every unit's ids in order; unit ``u`` is ``flat[starts[u]:ends[u]]``,
    which is ``row(rows[u])[offsets[u]:offsets[u] + length]`` of the input.
    """

    row: Callable[[int], np.ndarray]
    n_rows: int
    flat: np.ndarray  # int32 or int64
    loss: np.ndarray | None  # aligned with flat (zeros where a unit has none)
    starts: np.ndarray
    ends: np.ndarray
    rows: np.ndarray
    offsets: np.ndarray
    has_loss: np.ndarray  # bool per unit
    early: list  # row-level hits found while cutting: (rule, rows, positions, tokens, render)


def _prepare(sequences, loss_mask, attention_mask, segment_ids, vocab: _Vocab) -> _Batch:
    if _is_encoding(sequences):
        sequences = [sequences]
    if isinstance(sequences, Sequence) and sequences and all(_is_encoding(s) for s in sequences):
        if loss_mask is None:
            loss_mask = [s.loss_mask for s in sequences]
        sequences = [s.ids for s in sequences]
    if isinstance(sequences, np.ndarray) and sequences.ndim == 2:
        return _from_matrix(
            _int_array(sequences, "sequences"),
            _matrix_like(loss_mask, sequences.shape, "loss_mask"),
            _matrix_like(attention_mask, sequences.shape, "attention_mask"),
            _matrix_like(segment_ids, sequences.shape, "segment_ids"),
            vocab,
        )
    rows = _rows(sequences, "sequences")
    single = len(rows) == 1 and _is_flat(sequences)
    return _from_rows(
        rows,
        _rows_like(loss_mask, single, "loss_mask"),
        _rows_like(attention_mask, single, "attention_mask"),
        _rows_like(segment_ids, single, "segment_ids"),
        vocab,
    )


def _is_encoding(value) -> bool:
    return hasattr(value, "ids") and hasattr(value, "loss_mask")


def _is_flat(value) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim == 1
    return isinstance(value, Sequence) and len(value) > 0 and isinstance(value[0], (int, np.integer))


def _int_array(value, name: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (OverflowError, ValueError) as error:
        raise ValueError(f"{name} must hold integers: {error}") from None
    if array.dtype.kind == "f" and (array.size == 0 or (name != "sequences" and np.all(array == np.round(array)))):
        array = array.astype(np.int64)  # masks given as floats (0.0 / 1.0)
    if array.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array


def _rows(value, name: str, *, none_rows: bool = False) -> list:
    if value is None:
        raise ValueError(f"{name} is None")
    if isinstance(value, np.ndarray):
        if value.ndim == 1:
            return [_int_array(value, name)]
        if value.ndim == 2:
            return [_int_array(row, name) for row in value]
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {value.shape}")
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of token ids or a list of sequences")
    if not value:
        return []
    if _is_flat(value):
        return [_int_array(value, name)]
    if all(type(row) is np.ndarray and row.ndim == 1 and row.dtype.kind in "iu" for row in value):
        return list(value)  # as _int_array leaves them (Encodings bring such rows)
    rows = [None if none_rows and row is None else _int_array(row, name) for row in value]
    for index, row in enumerate(rows):
        if row is not None and row.ndim != 1:
            raise ValueError(f"{name}[{index}] must be 1-D, got shape {row.shape}")
    return rows


def _rows_like(value, single: bool, name: str) -> list | None:
    """Rows of a mask; a None row (in a list) means that sequence has none."""
    if value is None:
        return None
    if single and _is_flat(value):
        return [_int_array(value, name)]
    return _rows(value, name, none_rows=True)


def _matrix_like(value, shape, name: str) -> np.ndarray | None:
    if value is None:
        return None
    array = _int_array(value, name)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, but the sequences have shape {shape}")
    return array


def _from_rows(rows, losses, attentions, segments, vocab: _Vocab) -> _Batch:
    """Rows of different lengths: one unit per row (leading and trailing <pad> cut off), or
    per packed segment of a row that has its own attention mask or segment ids."""
    for name, given in (("loss_mask", losses), ("attention_mask", attentions), ("segment_ids", segments)):
        if given is not None and len(given) != len(rows):
            raise ValueError(f"{name} has {len(given)} rows, but there are {len(rows)} sequences")
    lengths = np.array([len(ids) for ids in rows], dtype=np.int64)
    early, losses = _aligned_losses(rows, lengths, losses)
    has_loss = np.array([loss is not None for loss in losses], bool) if losses else np.zeros(len(rows), bool)
    all_ids = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    spans_from, spans_to = _unpadded_spans(all_ids, lengths, vocab.pad)
    plain = np.ones(len(rows), dtype=bool)
    for given in (attentions, segments):
        if given is not None:
            plain &= np.array([row is None for row in given], dtype=bool)
    masked = np.flatnonzero(~plain).tolist()
    unit_rows, unit_offsets, unit_ends = [np.flatnonzero(plain)], [spans_from[plain]], [spans_to[plain]]
    for r in masked:
        sub = _from_masked_row(r, rows[r], _row_or_none(losses, r), attentions, segments, vocab)
        for rule, _, positions, tokens, render in sub.early:
            early.append((rule, np.full(len(positions), r), positions, tokens, render))
        unit_rows.append(np.full(len(sub.starts), r))
        unit_offsets.append(sub.offsets)
        unit_ends.append(sub.offsets + sub.ends - sub.starts)
    unit_rows, unit_offsets, unit_ends = (
        np.concatenate(x).astype(np.int64) for x in (unit_rows, unit_offsets, unit_ends)
    )
    order = np.lexsort((unit_offsets, unit_rows))  # units in row order
    unit_rows, unit_offsets, unit_ends = unit_rows[order], unit_offsets[order], unit_ends[order]

    trimmed = np.flatnonzero(plain & ((spans_from > 0) | (spans_to < lengths)))
    for r in trimmed[has_loss[trimmed]].tolist():  # a loss mask set on the <pad> cut off
        a, b, loss = spans_from[r], spans_to[r], losses[r]
        positions = np.concatenate([np.flatnonzero(loss[:a] != 0), b + np.flatnonzero(loss[b:] != 0)])
        if len(positions):
            early.append(_loss_on_padding(np.full(len(positions), r), positions, rows[r][positions]))

    whole = not masked and not len(trimmed)  # the units are the rows: no slice of each
    units = [] if whole else list(zip(unit_rows.tolist(), unit_offsets.tolist(), unit_ends.tolist()))
    flat = _ids_dtype(all_ids if whole else _gather(rows, units))
    loss_flat = None
    if losses is not None:
        whole_losses = whole and has_loss.all() and losses
        loss_flat = np.concatenate(losses) if whole_losses else _gather(losses, units or _whole_rows(lengths))
    lengths = unit_ends - unit_offsets
    ends = np.cumsum(lengths)
    return _Batch(
        row=lambda r: rows[r],
        n_rows=len(rows),
        flat=flat,
        loss=loss_flat,
        starts=ends - lengths,
        ends=ends,
        rows=unit_rows,
        offsets=unit_offsets,
        has_loss=has_loss[unit_rows],
        early=early,
    )


def _from_masked_row(r, ids, loss, attentions, segments, vocab: _Vocab) -> _Batch:
    """One row with its own attention mask or segment ids, cut as a matrix of one row."""
    attention, segment = _row_or_none(attentions, r), _row_or_none(segments, r)
    for name, given in (("attention_mask", attention), ("segment_ids", segment)):
        if given is not None and len(given) != len(ids):
            raise ValueError(f"{name}[{r}] has {len(given)} values, but sequence {r} has {len(ids)} ids")
    return _from_matrix(
        ids[None],
        None if loss is None else loss[None],
        None if attention is None else attention[None],
        None if segment is None else segment[None],
        vocab,
    )


def _whole_rows(lengths) -> list:
    return [(r, 0, length) for r, length in enumerate(lengths.tolist())]


def _row_or_none(rows, r):
    return None if rows is None else rows[r]


def _aligned_losses(rows, lengths, losses):
    """``(hits, losses)``: a loss-mask row whose length differs from its ids' is a finding,
    and that row is then taken as having no mask."""
    if losses is None:
        return [], None
    losses = list(losses)
    hits = []
    loss_lengths = np.array([-1 if loss is None else len(loss) for loss in losses], dtype=np.int64)
    for r in np.flatnonzero((loss_lengths >= 0) & (loss_lengths != lengths)).tolist():
        count, size = int(loss_lengths[r]), int(lengths[r])
        hits.append(
            _row_hit(
                "loss_mask",
                r,
                min(count, size),
                NO_TOKEN,
                f"the loss mask has {count} values for {size} ids",
                "one loss-mask value per id",
            )
        )
        losses[r] = None
    return hits, losses


def _unpadded_spans(all_ids, lengths, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """``[from, to)`` of each row (concatenated in ``all_ids``) without its leading and
    trailing <pad> runs (``0, 0`` for padding only). Only rows that start or end with <pad>
    are searched."""
    ends = np.cumsum(lengths)
    starts = ends - lengths
    spans_from, spans_to = np.zeros(len(lengths), np.int64), lengths.copy()
    nonempty = lengths > 0
    padded = np.zeros(len(lengths), dtype=bool)
    padded[nonempty] = (all_ids[starts[nonempty]] == pad) | (all_ids[ends[nonempty] - 1] == pad)
    for r in np.flatnonzero(padded).tolist():
        nonpad = np.flatnonzero(all_ids[starts[r] : ends[r]] != pad)
        spans_from[r], spans_to[r] = (nonpad[0], nonpad[-1] + 1) if len(nonpad) else (0, 0)
    return spans_from, spans_to


def _gather(rows, units) -> np.ndarray:
    """The ``[a, b)`` slices of ``rows[r]`` for each unit ``(r, a, b)``, concatenated (zeros
    for a None row)."""
    pieces = [rows[r][a:b] if rows[r] is not None else np.zeros(b - a, np.int8) for r, a, b in units]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)


def _ids_dtype(flat: np.ndarray) -> np.ndarray:
    """int32 and int64 ids stay as they are (a copy would cost a pass); others become int64."""
    return flat if flat.dtype in (np.int32, np.int64) else flat.astype(np.int64)


def _from_matrix(ids, loss, attention, segments, vocab: _Vocab) -> _Batch:
    """Rows of one width: one unit per packed segment (with segment ids), or per row (the
    attention mask's 1s, or the row without leading and trailing <pad>)."""
    n, width = ids.shape
    early: list = []
    if segments is not None:
        covered = segments > 0
        unit_rows, starts_col, ends_col, number = _segment_runs(segments)
        rank = np.arange(len(unit_rows)) - np.searchsorted(unit_rows, unit_rows)
        bad = np.flatnonzero(number != rank + 1)
        if len(bad):
            early.append(
                (
                    "padding",
                    unit_rows[bad],
                    starts_col[bad],
                    ids[unit_rows[bad], starts_col[bad]],
                    lambda k, nb=number[bad], rk=rank[bad]: (
                        f"segment id {nb[k]} where segment {rk[k] + 1} of the row starts; "
                        "segment ids must number the segments of a row 1, 2, 3, ... in order",
                        f"segment id {rk[k] + 1}",
                    ),
                )
            )
        gap = np.flatnonzero((rank > 0) & (starts_col != np.r_[0, ends_col[:-1]]))
        if len(gap):
            where = ends_col[gap - 1]
            early.append(
                (
                    "padding",
                    unit_rows[gap],
                    where,
                    ids[unit_rows[gap], where],
                    lambda k: (
                        "padding between two packed segments; packed segments follow one another",
                        "the next segment, or padding only at the end of the row",
                    ),
                )
            )
        empty_rows = np.flatnonzero(np.bincount(unit_rows, minlength=n) == 0)
        if len(empty_rows):
            early.append(
                (
                    "bos_missing",
                    empty_rows,
                    np.zeros(len(empty_rows), np.int64),
                    ids[empty_rows, 0] if width else np.full(len(empty_rows), NO_TOKEN),
                    lambda k: ("the row has no segment: every segment id is 0 (all padding)", "a sequence"),
                )
            )
        if attention is not None:
            disagree_rows, disagree_cols = np.nonzero((attention != 0) != covered)
            if len(disagree_rows):
                early.append(
                    (
                        "padding",
                        disagree_rows,
                        disagree_cols,
                        ids[disagree_rows, disagree_cols],
                        lambda k, a=attention[disagree_rows, disagree_cols]: (
                            f"the attention mask is {a[k]} where the segment id says "
                            f"{'padding' if a[k] else 'a segment'}",
                            "attention_mask == (segment_ids > 0)",
                        ),
                    )
                )
        not_pad_what = "segment id is 0"
    else:
        present = (attention != 0) if attention is not None else (ids != vocab.pad)
        has = present.any(axis=1)
        if width:
            first = np.where(has, present.argmax(axis=1), 0)
            last = np.where(has, width - present[:, ::-1].argmax(axis=1), 0)
        else:
            first = last = np.zeros(n, dtype=np.int64)
        columns = np.arange(width)
        covered = (columns >= first[:, None]) & (columns < last[:, None])
        unit_rows = np.arange(n)
        starts_col, ends_col = first, last
        holes = np.flatnonzero(has & (present.sum(axis=1) != last - first))
        if len(holes):
            hole_cols = np.array([first[r] + np.argmin(present[r, first[r] : last[r]]) for r in holes])
            early.append(
                (
                    "padding",
                    holes,
                    hole_cols,
                    ids[holes, hole_cols],
                    lambda k: (
                        "the attention mask has a 0 between 1s; padding belongs at one end",
                        "attention mask 1",
                    ),
                )
            )
        not_pad_what = "attention mask is 0"
    covered = covered.ravel()
    outside = np.flatnonzero(~covered)  # padding: checked position by position
    all_ids = ids.ravel()
    bad = outside[all_ids[outside] != vocab.pad]
    if len(bad):
        early.append(
            (
                "padding",
                bad // width,
                bad % width,
                all_ids[bad],
                lambda k, what=not_pad_what: (
                    f"a non-<pad> id where the {what}: padding must be <pad>, or the mask is wrong",
                    f"<pad> (id {vocab.pad})",
                ),
            )
        )
    if loss is not None:
        trained = outside[loss.ravel()[outside] != 0]
        if len(trained):
            early.append(_loss_on_padding(trained // width, trained % width, all_ids[trained]))
    lengths = (ends_col - starts_col).astype(np.int64)
    ends = np.cumsum(lengths)
    return _Batch(
        row=lambda r: ids[r],
        n_rows=n,
        flat=_ids_dtype(all_ids[covered]),
        loss=None if loss is None else loss.ravel()[covered],
        starts=ends - lengths,
        ends=ends,
        rows=unit_rows.astype(np.int64),
        offsets=starts_col.astype(np.int64),
        has_loss=np.full(len(lengths), loss is not None),
        early=early,
    )


def _segment_runs(segments: np.ndarray):
    """``(rows, starts, ends, numbers)`` of each run of equal positive segment ids in a row."""
    n, width = segments.shape
    if segments.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    values = segments.ravel()
    run_starts = np.union1d(np.flatnonzero(values[1:] != values[:-1]) + 1, np.arange(0, values.size, width))
    run_ends = np.r_[run_starts[1:], values.size]
    numbers = values[run_starts]
    keep = numbers > 0
    run_starts, run_ends, numbers = run_starts[keep], run_ends[keep], numbers[keep]
    rows = run_starts // width
    return rows, run_starts - rows * width, run_ends - rows * width, numbers


def _row_hit(rule, row, position, token, message, expected):
    return (
        rule,
        np.array([row]),
        np.array([position]),
        np.array([token]),
        lambda k: (message, expected),
    )


def _loss_on_padding(rows, positions, tokens):
    return (
        "loss_mask",
        np.asarray(rows),
        np.asarray(positions),
        np.asarray(tokens),
        lambda k: ("the loss mask is set on padding", "loss mask 0 on padding"),
    )


# -- the rules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Per position of ``flat``: the latest <start_of_turn> of its unit (-1 if none), which
    part of a turn it is, and the turn's role id (-1 outside turns). For display only."""

    last_sot: np.ndarray
    header: np.ndarray
    content: np.ndarray
    closing: np.ndarray
    after_newline: np.ndarray
    role_at: np.ndarray



class _Check:
    """The rules over one batch. Hits stay arrays until the report shows them.

    The rules read the *marks*: the positions of every id that is not plain text (markers,
    BOS, EOS, PAD, <unk>, reserved and out-of-range ids), found in one lookup pass. Text
    between marks only matters at a few offsets after them (role, header newline, the \\n
    after <end_of_turn>), read there. Per-token views (``unit_of``, ``layout``, ...) are built
    only when a finding needs explaining, for labels, or for the parser.
    """

    def __init__(self, batch: _Batch, tokenizer, *, expect, endings, train_on, train_newline):
        self.batch = batch
        self.tokenizer = tokenizer
        self.vocab = _vocab(tokenizer)
        self.expect = expect
        self.endings = endings
        self.train_on = "all" if expect == "inference" else train_on
        self.train_newline = train_newline
        self.groups: list = list(batch.early)  # (rule, rows, positions, tokens, render)
        units = len(batch.starts)
        self.blocked = np.zeros(units, dtype=bool)
        self.ending = np.full(units, "", dtype=object)

    # -- recording hits

    def hit(self, rule: str, flat_positions, render, *, units=None) -> None:
        """Hits at positions of ``flat``; pass ``units`` for positions that may be a unit's end."""
        batch = self.batch
        flat_positions = np.asarray(flat_positions, dtype=np.int64)
        if len(flat_positions) == 0:
            return
        if units is None:
            units = self.units_at(flat_positions)
        units = np.asarray(units, dtype=np.int64)
        inside = flat_positions < batch.ends[units]
        if len(batch.flat):
            found = batch.flat[np.minimum(flat_positions, len(batch.flat) - 1)].astype(np.int64)
            tokens = np.where(inside, found, NO_TOKEN)
        else:
            tokens = np.full(len(flat_positions), NO_TOKEN)
        positions = batch.offsets[units] + flat_positions - batch.starts[units]
        self.groups.append((rule, batch.rows[units], positions, tokens, render))
        if rule in BLOCKING:
            self.blocked[units] = True

    def units_at(self, flat_positions) -> np.ndarray:
        """The unit of each position inside a unit."""
        return np.searchsorted(self.batch.ends, flat_positions, side="right")

    # -- the stages

    def run(self, *, canonical: bool, num_threads: int | None) -> None:
        self.tokens_and_structure()
        self.whitespace()
        self.loss_rule()
        if canonical:
            self.canonical(num_threads)

    def tokens_and_structure(self) -> None:
        b, v = self.batch, self.vocab
        flat, starts, ends = b.flat, b.starts, b.ends
        lengths = ends - starts
        marks = v.breaks(flat)
        ids = flat[marks].astype(np.int64)
        unit = self.units_at(marks)
        self.marks, self.mark_ids = marks, ids

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
        is_sot, is_eot = ids == v.sot, ids == v.eot

        # What each unit is: chat (turns) or PT (plain text).
        if self.expect in ("inference", "training"):
            chat = np.ones(len(starts), dtype=bool)
        elif self.expect == "pt":
            chat = np.zeros(len(starts), dtype=bool)
        else:
            chat = np.bincount(unit[is_sot], minlength=len(starts)) > 0
        self.chat = chat
        chat_mark = chat[unit]

        # BOS: at position 0 only; BOS spelled as text where it should be.
        starts_with_bos = np.zeros(len(starts), dtype=bool)
        nonempty = lengths > 0
        starts_with_bos[nonempty] = flat[starts[nonempty]] == v.bos
        first_content = starts + starts_with_bos  # where turns / text begin
        text_bos = self._text_bos_units(first_content)
        missing = np.flatnonzero(~starts_with_bos & ~text_bos)
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
        self.hit(
            "bos_inside",
            marks[is_bos & (marks > starts[unit])],
            lambda k: (
                "BOS inside the sequence: the double-BOS bug (BOS added twice, or by a "
                "template and again by the tokenizer), or sequences joined without segment ids",
                "no BOS after position 0",
            ),
        )
        where_text_bos = np.flatnonzero(text_bos)
        self.hit(
            "text_bos",
            first_content[where_text_bos],
            lambda k: (
                "BOS spelled as text at the start: a template wrote '<bos>' into the text, "
                "which the tokenizer encodes as plain pieces; remove it from the template and "
                "insert the BOS id as an integer",
                f"<bos> as its id {v.bos}, once, at position 0",
            ),
            units=where_text_bos,
        )
        eos_bad = is_eos & (chat_mark | (marks != ends[unit] - 1))
        self.hit(
            "eos_inside",
            marks[eos_bad],
            lambda k, in_chat=chat_mark[eos_bad]: (
                (
                    "EOS in a chat sequence: Gemma chat sequences end with <end_of_turn>\\n "
                    "(or the generation prompt), never with <eos>"
                )
                if in_chat[k]
                else "EOS before the end of a PT text",
                "no <eos> here",
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
        turn_mark = (is_sot | is_eot) & chat_mark
        self._structure(first_content, text_bos, marks[turn_mark], is_sot[turn_mark], unit[turn_mark])

    def _text_bos_units(self, first_content) -> np.ndarray:
        """Units whose first text (after BOS, or at 0 without it) is '<bos>' or '[BOS]' as text."""
        b, v = self.batch, self.vocab
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
            text = self.tokenizer.processor.decode(ids.tolist()).lstrip()
            found[u] = text.startswith(TEXT_BOS)
        return found

    def _structure(self, first_content, text_bos, markers, kind, unit) -> None:
        """The turn rules, over the turn markers of chat units: ``markers`` (positions),
        ``kind`` (True for <start_of_turn>), ``unit`` (of each)."""
        b, v = self.batch, self.vocab
        flat = b.flat
        at = self.at
        # The first token of a chat unit (after BOS) opens a turn.
        self.blocked |= self.chat & text_bos
        chat_units = np.flatnonzero(self.chat & ~text_bos)
        opener = first_content[chat_units]
        has_more = opener < b.ends[chat_units]
        first_token = flat[opener[has_more]]
        # a BOS, EOS or PAD there is reported by its own rule
        bad_start = chat_units[has_more][(first_token != v.sot) & ~np.isin(first_token, [v.bos, v.eos, v.pad])]
        self.hit(
            "bad_start",
            first_content[bad_start],
            lambda k: (
                "a chat sequence must begin with <start_of_turn> right after BOS",
                f"<start_of_turn> (id {v.sot})",
            ),
            units=bad_start,
        )

        self.markers, self.marker_is_sot, self.marker_unit = markers, kind, unit
        first = np.r_[True, unit[1:] != unit[:-1]] if len(markers) else np.zeros(0, bool)
        previous_kind = np.r_[False, kind[:-1]] if len(markers) else np.zeros(0, bool)
        previous_position = np.r_[-1, markers[:-1]] if len(markers) else np.zeros(0, np.int64)
        stray = ~kind & (first | ~previous_kind)
        self.hit(
            "stray_end_of_turn",
            markers[stray],
            lambda k: (
                "<end_of_turn> with no open turn: a turn closed twice, or a <start_of_turn> lost",
                "<start_of_turn> role \\n before it",
            ),
        )
        reopened = kind & ~first & previous_kind
        self.hit(
            "unclosed_turn",
            markers[reopened],
            lambda k, p=previous_position[reopened] - b.starts[unit[reopened]] + b.offsets[unit[reopened]]: (
                f"a new turn starts, but the turn opened at position {p[k]} was never closed",
                f"<end_of_turn> (id {v.eot}) \\n before the next <start_of_turn>",
            ),
        )

        # Turn headers: <start_of_turn> role newline.
        sots, sot_unit = markers[kind], unit[kind]
        self.sots, self.sot_unit = sots, sot_unit
        role = at(sots, 1, sot_unit)
        header_newline = at(sots, 2, sot_unit)
        role_ok = (role == v.user) | (role == v.model)
        bad_role = (role >= 0) & ~role_ok & (role != v.sot)
        self.hit(
            "bad_role",
            sots[bad_role] + 1,
            lambda k: (
                "the token after <start_of_turn> must be the role 'user' or 'model' "
                "(system text belongs inside the first user turn; 'assistant' is 'model')",
                f"user (id {v.user}) or model (id {v.model})",
            ),
        )
        newline_ok = v.lookup(v.is_newline_run, header_newline)
        bad_header = role_ok & (header_newline >= 0) & ~newline_ok
        self.hit(
            "bad_header",
            sots[bad_header] + 2,
            lambda k: ("the role must be followed by a newline that ends the turn header", f"\\n (id {v.newline})"),
        )
        turn = np.arange(len(sots)) - np.searchsorted(sot_unit, sot_unit)
        self.turn_in_unit = turn
        expected_role = np.where(turn % 2 == 0, v.user, v.model)
        # The generation prompt is no turn: the encoder (as the official template) puts it
        # after a model turn too, when asked to.
        prompt = (sots + 3 == b.ends[sot_unit]) & (role == v.model) & (header_newline == v.newline)
        alternating = role_ok & (role != expected_role) & ~prompt
        self.hit(
            "roles_not_alternating",
            sots[alternating] + 1,
            lambda k, t=turn[alternating], r=role[alternating]: (
                f"turn {t[k]} is a {'user' if r[k] == v.user else 'model'} turn; turns must "
                "alternate user, model, user, ... starting with user",
                "the user role" if t[k] % 2 == 0 else "the model role",
            ),
        )
        self.role = role
        self.role_ok = role_ok

        # After <end_of_turn>: exactly one \n, then <start_of_turn> or the end.
        eots, eot_unit = markers[~kind], unit[~kind]
        after = at(eots, 1, eot_unit)
        newline_after = after == v.newline
        self.hit(
            "missing_turn_newline",
            eots[~newline_after] + 1,
            lambda k: ("<end_of_turn> must be followed by \\n", f"\\n (id {v.newline})"),
            units=eot_unit[~newline_after],
        )
        following = at(eots, 2, eot_unit)
        between = newline_after & (following >= 0) & (following != v.sot)
        between &= ~np.isin(following, [v.bos, v.eos, v.pad])  # reported by their own rules
        self.hit(
            "text_between_turns",
            eots[between] + 2,
            lambda k: (
                "tokens between a closed turn and the next <start_of_turn>: every token of a "
                "chat sequence belongs to a turn",
                f"<start_of_turn> (id {v.sot}) or the end of the sequence",
            ),
        )

        # Endings.
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
            closed = flat[position] == v.eot
            # the turn a closing <end_of_turn> closes: the role after the latest <start_of_turn>
            sot_index = np.searchsorted(sots, position, side="right") - 1
            if len(sots):
                same_unit = (sot_index >= 0) & (sot_unit[np.maximum(sot_index, 0)] == chat_units)
                closes_role = np.where(same_unit, role[np.maximum(sot_index, 0)], -1)
            else:
                closes_role = np.full(len(chat_units), -1)
            end = b.ends[chat_units]
            prompt = (
                ~closed
                & (position + 3 == end)
                & (at(position, 1, chat_units) == v.model)
                & (at(position, 2, chat_units) == v.newline)
            )
            open_end = ~closed & ~prompt
            ending[chat_units] = np.where(
                closed,
                np.where(closes_role == v.model, "model_turn", np.where(closes_role == v.user, "user_turn", "")),
                np.where(prompt, "generation_prompt", ""),
            )
            self.hit(
                "unclosed_turn",
                end[open_end],
                lambda k, p=position[open_end] - b.starts[chat_units[open_end]] + b.offsets[chat_units[open_end]]: (
                    f"the sequence ends inside the turn opened at position {p[k]} (truncated?); "
                    "only the generation prompt <start_of_turn>model\\n may stay open",
                    f"<end_of_turn> (id {v.eot}) \\n",
                ),
                units=chat_units[open_end],
            )
        self.last_marker = last_marker
        self._ending_rule()

    def at(self, anchors, offset: int, units) -> np.ndarray:
        """The id ``offset`` tokens after each anchor position (in ``units``), or -1 past the
        anchor's unit."""
        anchors = np.asarray(anchors, dtype=np.int64)
        flat = self.batch.flat
        if len(anchors) == 0:
            return np.zeros(0, np.int64)
        probe = anchors + offset
        inside = probe < self.batch.ends[units]
        return np.where(inside, flat[np.minimum(probe, len(flat) - 1)].astype(np.int64), -1)

    def _ending_rule(self) -> None:
        b = self.batch
        if self.endings is not None:
            chat_ok = pt_ok = self.endings
        elif self.expect is not None:
            chat_ok = pt_ok = EXPECTED_ENDINGS[self.expect]
        else:
            chat_ok, pt_ok = CHAT_ENDINGS, PT_ENDINGS
        ending = self.ending
        known = ending != ""
        allowed = np.where(self.chat, np.isin(ending, list(chat_ok)), np.isin(ending, list(pt_ok)))
        wrong = np.flatnonzero(known & ~allowed)
        # where to point: the last turn's <start_of_turn> (chat), the last token (PT)
        position = np.where(
            self.chat[wrong],
            np.where(
                ending[wrong] == "generation_prompt",
                self.last_marker[wrong],
                self._last_sot_before(self.last_marker[wrong]),
            ),
            np.where(ending[wrong] == "eos", b.ends[wrong] - 1, b.ends[wrong]),
        ).astype(np.int64)
        self.hit(
            "bad_ending",
            position,
            lambda k, e=ending[wrong], c=self.chat[wrong]: (
                f"the sequence ends with {ENDINGS[e[k]]}",
                " or ".join(ENDINGS[x] for x in sorted(chat_ok if c[k] else pt_ok)),
            ),
            units=wrong,
        )
        # a chat unit without any turn
        no_turn = np.flatnonzero(self.chat & (self.last_marker < 0) & (b.ends - b.starts <= 1))
        self.hit(
            "bad_ending",
            b.ends[no_turn],
            lambda k: (
                "the chat sequence has no turn",
                " or ".join(ENDINGS[x] for x in sorted(chat_ok)),
            ),
            units=no_turn,
        )

    def _last_sot_before(self, positions) -> np.ndarray:
        index = np.searchsorted(self.sots, positions, side="right") - 1
        return np.where(index >= 0, self.sots[np.maximum(index, 0)] if len(self.sots) else 0, positions)


    def _in_content(self, positions, units) -> np.ndarray:
        """Whether each position (not a turn marker) lies in the content of a turn of its unit:
        the latest turn marker before it is a <start_of_turn> at least 3 tokens back."""
        markers = self.markers
        j = np.searchsorted(markers, positions, side="right") - 1
        if len(markers) == 0:
            return np.zeros(len(positions), bool)
        k = np.maximum(j, 0)
        return (j >= 0) & (self.marker_unit[k] == units) & self.marker_is_sot[k] & (positions >= markers[k] + 3)

    # -- per-token views, built on demand (labels, parser, explaining a finding)

    @cached_property
    def unit_of(self) -> np.ndarray:
        b = self.batch
        return np.repeat(np.arange(len(b.starts)), b.ends - b.starts)

    @cached_property
    def unit_start(self) -> np.ndarray:
        return self.batch.starts[self.unit_of]

    @cached_property
    def unit_end(self) -> np.ndarray:
        return self.batch.ends[self.unit_of]

    @cached_property
    def chat_token(self) -> np.ndarray:
        return self.chat[self.unit_of]

    @cached_property
    def is_sot(self) -> np.ndarray:
        return self.batch.flat == self.vocab.sot

    @cached_property
    def is_eot(self) -> np.ndarray:
        return self.batch.flat == self.vocab.eot

    @cached_property
    def is_soi(self) -> np.ndarray:
        return self.batch.flat == self.vocab.soi

    @cached_property
    def layout(self) -> _Layout:
        """Per position: the turn it is in, and which part of the turn (chat units)."""
        b, v = self.batch, self.vocab
        flat, n = b.flat, len(b.flat)
        index = np.arange(n)
        is_sot, is_eot = self.is_sot & self.chat_token, self.is_eot & self.chat_token
        last_sot = _last_at_or_before(is_sot, self.unit_start)
        last_eot = _last_at_or_before(is_eot, self.unit_start)
        in_turn = (last_sot >= 0) & (last_sot > last_eot)
        offset = index - last_sot
        # index of the position's turn in self.sots (-1 outside turns)
        turn_of = np.where(last_sot >= 0, np.cumsum(is_sot) - 1, -1)
        role_at = np.full(n, -1, dtype=np.int64)
        inside = turn_of >= 0
        role_at[inside] = self.role[turn_of[inside]]
        return _Layout(
            last_sot=last_sot,
            header=in_turn & (offset >= 1) & (offset <= 2),
            content=in_turn & (offset >= 3),
            closing=is_eot & (last_sot >= 0),
            after_newline=~in_turn & self.chat_token & (last_eot >= 0) & (index - last_eot == 1) & (flat == v.newline),
            role_at=role_at,
        )

    # -- trimmed content

    def whitespace(self) -> None:
        """Content segments (text between a header, image markers and <end_of_turn>) must be
        trimmed, as the formatter trims them; the first user turn may open with a system text."""
        b, v = self.batch, self.vocab
        flat, n = b.flat, len(b.flat)
        if n == 0:
            return
        usable = self.chat & ~self.blocked
        turn_index = np.flatnonzero(usable[self.sot_unit])
        sots = self.sots[turn_index]
        # segment starts: after each header, and after each image marker inside content
        header_newline = flat[np.minimum(sots + 2, n - 1)]
        header_starts = np.where(header_newline == v.newline, sots + 3, sots + 2)
        is_soi = self.mark_ids == v.soi
        soi_unit = self.units_at(self.marks[is_soi])
        content = usable[soi_unit] & self._in_content(self.marks[is_soi], soi_unit)
        sois, soi_unit = self.marks[is_soi][content], soi_unit[content]
        starts = np.concatenate([header_starts, sois + 1])
        first_of_unit = np.concatenate(
            [(self.turn_in_unit[turn_index] == 0) & (self.role[turn_index] == v.user), np.zeros(len(sois), bool)]
        )
        text_from = np.concatenate([sots + 1, sois + 1])  # where the decoded run begins
        from_header = np.concatenate([np.ones(len(sots), bool), np.zeros(len(sois), bool)])
        unit_end = b.ends[np.concatenate([self.sot_unit[turn_index], soi_unit])]
        inside = starts < unit_end
        starts, first_of_unit, text_from, from_header, unit_end = (
            starts[inside], first_of_unit[inside], text_from[inside], from_header[inside], unit_end[inside]
        )
        # segment ends: the next image marker or <end_of_turn> in the unit
        stops = self.marks[is_soi | (self.mark_ids == v.eot)]
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
                    if not _system_prefixed_ok(text):
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
                f"{'user' if self.layout.role_at[p[k]] == v.user else 'model'} content "
                f"{'starts' if lead_[k] else 'ends'} with whitespace; the formatter trims "
                "content (str.strip), so the encoder never makes this"
                + (" (the first user turn may start with the system text, then a blank line)" if first_[k] else ""),
                "trimmed content",
            ),
        )

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
        sots, sot_unit, role = self.sots, self.sot_unit, self.role
        model_turn = role == v.model
        last_model = np.zeros(len(sots), dtype=bool)
        model_index = np.flatnonzero(model_turn)
        if len(model_index):
            model_unit = sot_unit[model_index]
            last_model[model_index[np.r_[model_unit[1:] != model_unit[:-1], True]]] = True
        # A turn's content runs to the next turn marker of its unit (its <end_of_turn>), or
        # to the unit's end (the generation prompt, which has none).
        following = np.searchsorted(self.markers, sots, side="right")
        k = np.minimum(following, len(self.markers) - 1)
        has_next = (following < len(self.markers)) & (self.marker_unit[k] == sot_unit)
        content_end = np.where(has_next, self.markers[k], b.ends[sot_unit])
        closed = has_next & ~self.marker_is_sot[k]
        content_start = np.minimum(sots + 3, content_end)
        newline_after = closed & (self.at(np.where(closed, content_end, sots), 1, sot_unit) == v.newline)
        pt_units = np.flatnonzero(~self.chat & (b.ends - b.starts > 1))
        candidates = []
        for train_on in train_ons:
            trained_turn = model_turn & (last_model if train_on == "last" else True)
            for newline in newlines:
                stop = content_end + closed + (newline & newline_after)
                candidates.append(
                    (
                        (train_on, newline),
                        np.concatenate([content_start[trained_turn], b.starts[pt_units] + 1]),
                        np.concatenate([stop[trained_turn], b.ends[pt_units]]),
                        np.concatenate([sot_unit[trained_turn], pt_units]),
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
        wrong = wrong_units[self.unit_of] & (given != expected)
        run_start = wrong & ~np.r_[False, wrong[:-1]] | (wrong & (index == self.unit_start))
        run_end = wrong & ~np.r_[wrong[1:], False] | (wrong & (index == self.unit_end - 1))
        starts, stops = np.flatnonzero(run_start), np.flatnonzero(run_end) + 1
        unknown = self.train_on is None or self.train_newline is None
        names = [name for name, _, _, _, _ in candidates]
        self.hit(
            "loss_mask",
            starts,
            lambda k, s=starts, e=stops: self._mask_message(int(s[k]), int(e[k]), expected, given, names, chosen, unknown),
        )

    def _mask_message(self, start, stop, expected, given, names, chosen, unknown):
        unit = int(self.unit_of[start])
        part = self.part_name(start)
        count = stop - start
        want = int(expected[start])
        text = (
            f"the loss mask is {int(given[start])} on {part}"
            + (f" ({count} tokens from here)" if count > 1 else "")
            + f"; the encoder's mask is {want} there"
        )
        if want == 0 and part.startswith(("the role header", "<start_of_turn>", "BOS")):
            text += " (headers and BOS are never trained)"
        if unknown:
            train_on, newline = names[int(chosen[unit])]
            text += f" (options unknown: compared with the closest legal mask, train_on={train_on!r}, train_newline={newline})"
        return text, f"loss mask {want}"

    def part_name(self, i: int) -> str:
        v, layout = self.vocab, self.layout
        role = {v.user: "user", v.model: "model"}.get(int(layout.role_at[i]), "")
        if not self.chat_token[i]:
            return "BOS" if i == self.unit_start[i] else ("<eos>" if self.batch.flat[i] == v.eos else "the PT text")
        if i == self.unit_start[i]:
            return "BOS"
        if layout.header[i]:
            return f"the role header of a {role} turn"
        if layout.content[i]:
            return f"{role} content"
        if layout.closing[i]:
            return f"<end_of_turn> of a {role} turn"
        if layout.after_newline[i]:
            return f"the \\n after a {role} turn's <end_of_turn>"
        if self.is_sot[i]:
            return "<start_of_turn>"
        return "a token outside any turn"

    def _nothing_to_learn(self, candidates, content, chosen) -> None:
        b, v = self.batch, self.vocab
        if not len(candidates) or not len(self.sots):
            return
        sot_unit = self.sot_unit
        usable = self.chat & ~self.blocked & (self.ending == "model_turn")
        has_model = _per_group(self.role == v.model, sot_unit, len(b.starts))
        flagged = []
        for c, (_, _, _, _, trained_turn) in enumerate(candidates):
            learn = _per_group(trained_turn & (content > 0), sot_unit, len(b.starts))
            flagged.append(usable & (learn == 0) & (has_model > 0) & (chosen == c))
        units = np.flatnonzero(np.logical_or.reduce(flagged))
        # point at the <end_of_turn> of the last model turn
        self.hit(
            "nothing_to_learn",
            self.last_marker[units],
            lambda k: (
                "nothing to learn: the trained model turns have no content (the encoder "
                "refuses such a training conversation)",
                "an answer in the trained model turn",
            ),
            units=units,
        )

    # -- canonical tokenization

    def canonical(self, num_threads: int | None) -> None:
        b, v = self.batch, self.vocab
        flat, n = b.flat, len(b.flat)
        if n == 0:
            return
        # text runs: from a unit's start or the token after a mark, to the next mark or the unit's end
        marks = self.marks
        starts = np.union1d(b.starts[b.ends > b.starts], marks + 1)
        starts = starts[(starts < n) & ~np.isin(starts, marks)]
        stops = np.minimum(b.ends[self.units_at(starts)], np.r_[marks, n][np.searchsorted(marks, starts)])
        single_newline = (stops - starts == 1) & (flat[starts] == v.newline)
        starts, stops = starts[~single_newline], stops[~single_newline]
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
        for k, (ids, again) in enumerate(zip(runs, canonical)):
            if ids != again:
                d = next((i for i, (x, y) in enumerate(zip(ids, again)) if x != y), min(len(ids), len(again)))
                bad.append(k)
                where.append(int(starts[k]) + d)
                expected.append((again[d : d + 6], texts[k]))
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

    def labels(self) -> list[tuple[str, str]]:
        b, v, layout = self.batch, self.vocab, self.layout
        out = []
        for i in range(len(b.flat)):
            token = int(b.flat[i])
            role = {v.user: "user", v.model: "model"}.get(int(layout.role_at[i]), "")
            if not self.chat_token[i]:
                if i == self.unit_start[i] and token == v.bos:
                    out.append(("", "bos"))
                elif token == v.eos:
                    out.append(("", "eos"))
                else:
                    out.append(("text", "content"))
                continue
            if i == self.unit_start[i] and token == v.bos:
                out.append(("", "bos"))
            elif self.is_sot[i]:
                prompt = self.ending[self.unit_of[i]] == "generation_prompt" and i == self.last_marker[self.unit_of[i]]
                out.append((role, "prompt" if prompt else "marker"))
            elif layout.header[i]:
                prompt = self.ending[self.unit_of[i]] == "generation_prompt" and layout.last_sot[i] == self.last_marker[self.unit_of[i]]
                out.append((role, "prompt" if prompt else "header"))
            elif layout.content[i]:
                out.append((role, "content"))
            elif layout.closing[i]:
                out.append((role, "marker"))
            elif layout.after_newline[i]:
                out.append((role, "newline"))
            else:
                out.append(("", "outside"))
        return out

    # -- the report

    def report(self, max_findings: int | None) -> Report:
        b = self.batch
        counts: Counter = Counter()
        rows, positions, group_of, index_in = [], [], [], []
        for g, (rule, r, p, _, _) in enumerate(self.groups):
            if len(r) == 0:
                continue
            counts[rule] += len(r)
            rows.append(np.asarray(r, dtype=np.int64))
            positions.append(np.asarray(p, dtype=np.int64))
            group_of.append(np.full(len(r), g))
            index_in.append(np.arange(len(r)))
        if rows:
            all_rows = np.concatenate(rows)
            all_positions = np.concatenate(positions)
            all_groups = np.concatenate(group_of)
            all_index = np.concatenate(index_in)
            order = np.lexsort((all_index, all_groups, all_positions, all_rows))
            invalid = len(np.unique(all_rows))
        else:
            order, invalid = np.zeros(0, np.int64), 0
        limit = len(order) if max_findings is None else max(0, max_findings)
        findings = []
        for j in order[:limit]:
            rule, r, p, t, render = self.groups[all_groups[j]]
            k = int(all_index[j])
            message, expected = render(k)
            row, position, token = int(r[k]), int(p[k]), int(t[k])
            findings.append(
                Finding(
                    rule=rule,
                    sequence=row,
                    position=position,
                    token_id=None if token == NO_TOKEN else token,
                    expected=expected,
                    message=message,
                    context=self.context(row, position),
                )
            )
        return Report(
            findings=tuple(findings),
            counts=dict(counts),
            sequences=b.n_rows,
            tokens=int(len(b.flat)),
            invalid=invalid,
        )

    def context(self, row: int, position: int) -> str:
        ids = self.batch.row(row)
        v = self.vocab
        lo = max(0, position - CONTEXT_BEFORE)
        hi = min(len(ids), position + 1 + CONTEXT_AFTER)
        before = "".join(v.show(int(i)) for i in ids[lo:position])
        if position < len(ids):
            here = v.show(int(ids[position]))
            after = "".join(v.show(int(i)) for i in ids[position + 1 : hi])
        else:
            here, after = "", ""
        return (
            ("…" if lo > 0 else "")
            + before
            + f"»{here}«"
            + after
            + ("…" if hi < len(ids) else "")
            + ("" if position < len(ids) else " (end)")
        )


# -- numpy helpers ------------------------------------------------------------------------------


def _prefix_sums(mask: np.ndarray) -> np.ndarray:
    """``total[i]`` = how many of ``mask[:i]`` are set (``len(mask) + 1`` entries)."""
    total = np.zeros(len(mask) + 1, dtype=np.int32 if len(mask) < 2**31 else np.int64)
    np.cumsum(mask, out=total[1:])
    return total


def _per_group(mask: np.ndarray, group: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(group[mask], minlength=size) if len(group) else np.zeros(size, np.int64)


def _last_at_or_before(flag: np.ndarray, unit_start: np.ndarray) -> np.ndarray:
    """For each position, the latest position at or before it where ``flag`` is set, in the
    same unit; -1 if none."""
    index = np.where(flag, np.arange(len(flag)), -1)
    np.maximum.accumulate(index, out=index)
    index[index < unit_start] = -1
    return index


def _system_prefixed_ok(text: str) -> bool:
    """Whether the first user turn's first text can come from the formatter: trimmed content,
    or a system text followed by a blank line and trimmed (possibly empty) content."""
    return text == text.strip() or split_system(text) is not None


def split_system(text: str) -> tuple[str, str] | None:
    """``(system, content)`` with ``system + "\n\n" + content == text`` and ``content``
    trimmed (possibly empty), or None if there is no such split."""
    if text.endswith("\n\n"):
        return text[:-2], ""
    if text[-1:].isspace():
        return None
    cuts = [m.start() for m in re.finditer(r"\n\n(?=\S)", text)]
    return (text[: cuts[-1]], text[cuts[-1] + 2 :]) if cuts else None


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
