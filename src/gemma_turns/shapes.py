"""Token-sequence inputs cut into units: one per sequence, or per packed segment.

    list of ids / 2-D rows / Encodings (+ loss mask, attention mask, segment ids)
      -> Units: every unit's ids concatenated in ``flat``, with where each came from

Padding is cut off by the attention mask (or, without one, as leading and trailing runs of
``<pad>``); packed rows are cut at their segment ids. Problems seen while cutting (padding
that is not ``<pad>``, a loss mask on padding) are kept as early hits for the report. This
module knows no chat format: it needs only the PAD id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .conventions import as_array
from .findings import NO_TOKEN

__all__ = ["Units", "int_array", "is_flat", "prepare", "rows_of"]



@dataclass
class Units:
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

    def units_at(self, flat_positions) -> np.ndarray:
        """The unit of each position inside a unit."""
        return np.searchsorted(self.ends, flat_positions, side="right")

    def at(self, anchors, offset: int, units) -> np.ndarray:
        """The id ``offset`` tokens after each anchor position (in ``units``), or -1 past the
        anchor's unit."""
        anchors = np.asarray(anchors, dtype=np.int64)
        if len(anchors) == 0:
            return np.zeros(0, np.int64)
        flat = self.flat
        probe = anchors + offset
        inside = probe < self.ends[units]
        return np.where(inside, flat[np.minimum(probe, len(flat) - 1)].astype(np.int64), -1)


def prepare(sequences, loss_mask, attention_mask, segment_ids, pad: int) -> Units:
    """Cut ``sequences`` (one sequence, a list of them, Encodings, or a 2-D array of rows) and
    the masks aligned with them into units. Torch tensors and other array-likes are read as
    numpy arrays, as are the rows of a list."""
    sequences, loss_mask, attention_mask, segment_ids = (
        as_array(x) for x in (sequences, loss_mask, attention_mask, segment_ids)
    )
    if _is_encoding(sequences):
        sequences = [sequences]
    if isinstance(sequences, Sequence) and sequences and all(_is_encoding(s) for s in sequences):
        if loss_mask is None:
            loss_mask = [s.loss_mask for s in sequences]
        sequences = [s.ids for s in sequences]
    if isinstance(sequences, np.ndarray) and sequences.ndim == 2:
        return _from_matrix(
            int_array(sequences, "sequences"),
            _matrix_like(loss_mask, sequences.shape, "loss_mask"),
            _matrix_like(attention_mask, sequences.shape, "attention_mask"),
            _matrix_like(segment_ids, sequences.shape, "segment_ids"),
            pad,
        )
    rows = _rows(sequences, "sequences")
    single = len(rows) == 1 and _is_flat(sequences)
    return _from_rows(
        rows,
        _rows_like(loss_mask, single, "loss_mask"),
        _rows_like(attention_mask, single, "attention_mask"),
        _rows_like(segment_ids, single, "segment_ids"),
        pad,
    )


def _is_encoding(value) -> bool:
    return hasattr(value, "ids") and hasattr(value, "loss_mask")


def is_flat(value) -> bool:
    """Whether ``value`` is one sequence of ids (not a list of sequences)."""
    if isinstance(value, np.ndarray):
        return value.ndim == 1
    return isinstance(value, Sequence) and len(value) > 0 and isinstance(value[0], (int, np.integer))


_is_flat = is_flat


def rows_of(value, name: str, *, like: list | None = None) -> list:
    """The rows of ``value`` (one sequence, a list of them, a 2-D array; tensors read as
    arrays) as 1-D integer arrays, a None row kept; ``like``: the rows they align with (a
    single flat row then stands for one of one)."""
    value = as_array(value)
    if _is_encoding(value):
        return [int_array(value.ids, name)]
    if isinstance(value, Sequence) and value and all(_is_encoding(s) for s in value):
        return [int_array(s.ids, name) for s in value]
    if like is not None and len(like) == 1 and is_flat(value):
        return [int_array(value, name)]
    return _rows(value, name, none_rows=like is not None)


def int_array(value, name: str) -> np.ndarray:
    try:
        array = np.asarray(as_array(value))
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
    value = as_array(value)
    if isinstance(value, np.ndarray):
        if value.ndim == 1:
            return [int_array(value, name)]
        if value.ndim == 2:
            return [int_array(row, name) for row in value]
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {value.shape}")
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of token ids or a list of sequences")
    if not value:
        return []
    if _is_flat(value):
        return [int_array(value, name)]
    if all(type(row) is np.ndarray and row.ndim == 1 and row.dtype.kind in "iu" for row in value):
        return list(value)  # as int_array leaves them (Encodings bring such rows)
    rows = [None if none_rows and row is None else int_array(row, name) for row in value]
    for index, row in enumerate(rows):
        if row is not None and row.ndim != 1:
            raise ValueError(f"{name}[{index}] must be 1-D, got shape {row.shape}")
    return rows


def _rows_like(value, single: bool, name: str) -> list | None:
    """Rows of a mask; a None row (in a list) means that sequence has none."""
    if value is None:
        return None
    if single and _is_flat(value):
        return [int_array(value, name)]
    return _rows(value, name, none_rows=True)


def _matrix_like(value, shape, name: str) -> np.ndarray | None:
    if value is None:
        return None
    array = int_array(value, name)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, but the sequences have shape {shape}")
    return array


def _from_rows(rows, losses, attentions, segments, pad: int) -> Units:
    """Rows of different lengths: one unit per row (leading and trailing <pad> cut off), or
    per packed segment of a row that has its own attention mask or segment ids."""
    for name, given in (("loss_mask", losses), ("attention_mask", attentions), ("segment_ids", segments)):
        if given is not None and len(given) != len(rows):
            raise ValueError(f"{name} has {len(given)} rows, but there are {len(rows)} sequences")
    lengths = np.array([len(ids) for ids in rows], dtype=np.int64)
    early, losses = _aligned_losses(rows, lengths, losses)
    has_loss = np.array([loss is not None for loss in losses], bool) if losses else np.zeros(len(rows), bool)
    all_ids = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    spans_from, spans_to = _unpadded_spans(all_ids, lengths, pad)
    plain = np.ones(len(rows), dtype=bool)
    for given in (attentions, segments):
        if given is not None:
            plain &= np.array([row is None for row in given], dtype=bool)
    masked = np.flatnonzero(~plain).tolist()
    unit_rows, unit_offsets, unit_ends = [np.flatnonzero(plain)], [spans_from[plain]], [spans_to[plain]]
    for r in masked:
        sub = _from_masked_row(r, rows[r], _row_or_none(losses, r), attentions, segments, pad)
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
    return Units(
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


def _from_masked_row(r, ids, loss, attentions, segments, pad: int) -> Units:
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
        pad,
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


def _from_matrix(ids, loss, attention, segments, pad: int) -> Units:
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
        present = (attention != 0) if attention is not None else (ids != pad)
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
    bad = outside[all_ids[outside] != pad]
    if len(bad):
        early.append(
            (
                "padding",
                bad // width,
                bad % width,
                all_ids[bad],
                lambda k, what=not_pad_what: (
                    f"a non-<pad> id where the {what}: padding must be <pad>, or the mask is wrong",
                    f"<pad> (id {pad})",
                ),
            )
        )
    if loss is not None:
        trained = outside[loss.ravel()[outside] != 0]
        if len(trained):
            early.append(_loss_on_padding(trained // width, trained % width, all_ids[trained]))
    lengths = (ends_col - starts_col).astype(np.int64)
    ends = np.cumsum(lengths)
    return Units(
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

