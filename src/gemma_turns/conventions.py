"""Other tools' names for masks and packing, read into gemma-turns' own terms.

    loss mask    loss_mask; assistant_masks (HF apply_chat_template); completion_mask (TRL);
                 labels (-100 where not trained; unshifted as HF models take them, or
                 shifted by one: labels[i] == input_ids[i + 1])
    packing      segment_ids; seq_lengths / cu_seqlens (a row's segment lengths, or their
                 running sums from 0); attention_mask numbered 1..k (axolotl); position_ids
                 that restart at 0 (TRL padding-free and BFD packing)

    input_ids     [2, 105, 9, 2, 105, 7]        position_ids [0, 1, 2, 0, 1, 2]
    -> segment_ids [1, 1, 1, 2, 2, 2]

    input_ids     [2, 105, 9, 106]               labels [-100, -100, 9, 106]   (unshifted)
    -> loss_mask  [0, 0, 1, 1]                   labels [-100, 9, 106, -100]   (shifted)

Pure numpy, no chat format: what ``readers`` (files), ``testing`` (batches) and ``validate``
(``labels=``) share. A record's keys are read by :func:`read_record`; a key that looks like a
mask and is not read is named in ``unused``, so a mask is never silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "IGNORE_INDEX",
    "LOSS_KEYS",
    "PACKING_KEYS",
    "Labels",
    "Record",
    "as_array",
    "labels_to_loss",
    "read_record",
]

IGNORE_INDEX = -100
# In this order: the first present is the row's loss mask; the others are named unused.
LOSS_KEYS = ("loss_mask", "assistant_masks", "completion_mask", "labels")
# In this order: the first present gives the row's segments.
PACKING_KEYS = ("segment_ids", "seq_lengths", "cu_seqlens", "cu_seq_lens_q", "position_ids")
KNOWN_KEYS = frozenset({"input_ids", "attention_mask", *LOSS_KEYS, *PACKING_KEYS})
# Keys that are no mask, though their names look like one.
NOT_MASKS = frozenset({"token_type_ids", "pixel_values", "messages", "prompt", "completion", "text"})
_MASKISH = re.compile(r"mask|label|segment|seq_?len|cu_seq|position|packed|doc_?id", re.IGNORECASE)


def as_array(value):
    """A numpy array from a torch tensor (any device), or any array-like (``__array__``,
    ``__dlpack__``); lists, tuples, arrays and None pass through unchanged."""
    if value is None or isinstance(value, (np.ndarray, list, tuple, str, bytes)):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor
        return value.detach().cpu().numpy()
    if hasattr(value, "__array__"):
        return np.asarray(value)
    if hasattr(value, "__dlpack__"):
        return np.from_dlpack(value)
    return value


@dataclass
class Record:
    """One record's arrays in gemma-turns' terms; the keys each came from."""

    ids: np.ndarray
    loss: np.ndarray | None = None
    labels: np.ndarray | None = None  # raw labels: validate() tells shifted from unshifted
    attention: np.ndarray | None = None
    segments: np.ndarray | None = None
    loss_key: str | None = None
    packing_key: str | None = None
    unused: list[str] = field(default_factory=list)  # mask-like keys not read, with why


def looks_like_mask(key: str) -> bool:
    return key not in NOT_MASKS and bool(_MASKISH.search(key))


def read_record(record: Mapping, convert) -> Record:
    """The arrays of one record (a JSON object, a Parquet row, a batch row). ``convert(value,
    name)`` makes a 1-D integer array or raises ValueError naming the key.

    The loss mask is the first of LOSS_KEYS present; segments come from the first of
    PACKING_KEYS, or from an attention mask numbered 1..k. ValueError for arrays whose length
    differs from input_ids' or segments that cannot be read."""
    if "input_ids" not in record:
        raise ValueError(f"an object without input_ids (keys {sorted(record)[:8]})")
    ids = convert(record["input_ids"], "input_ids")
    out = Record(ids=ids)
    for key in LOSS_KEYS:
        if record.get(key) is None:
            continue
        if out.loss_key is None:
            value = convert(record[key], key)
            _same_length(value, ids, key, allow_other=key == "loss_mask")
            out.loss_key = key
            if key == "labels":
                out.labels = value
            else:
                out.loss = value
        else:
            out.unused.append(f"{key} (the loss mask is read from {out.loss_key})")
    if record.get("attention_mask") is not None:
        attention = convert(record["attention_mask"], "attention_mask")
        _same_length(attention, ids, "attention_mask")
        out.attention = attention
    for key in PACKING_KEYS:
        if record.get(key) is None:
            continue
        if out.packing_key is not None:
            if key != "position_ids":  # positions beside segments are usual: not a second packing
                out.unused.append(f"{key} (segments are read from {out.packing_key})")
            continue
        value = convert(record[key], key)
        segments = _segments(key, value, ids, out.attention)
        if segments is not None:
            out.segments, out.packing_key = segments, key
    if out.packing_key is None and out.attention is not None and len(out.attention) and out.attention.max() > 1:
        out.segments, out.packing_key = numbered_attention(out.attention), "attention_mask"
    if out.packing_key is not None and out.attention is not None:
        out.attention = None  # the segments say where padding is
    for key in record:
        if key not in KNOWN_KEYS and looks_like_mask(key):
            out.unused.append(f"{key} (not a key validate reads)")
    return out


def _same_length(value, ids, key: str, *, allow_other: bool = False) -> None:
    if len(value) != len(ids) and not allow_other:  # a loss mask of another length is a finding
        raise ValueError(f"{key} has {len(value)} values for {len(ids)} input_ids")


def _segments(key: str, value: np.ndarray, ids: np.ndarray, attention) -> np.ndarray | None:
    n = len(ids)
    if key == "segment_ids":
        _same_length(value, ids, key)
        return value
    if key == "position_ids":
        _same_length(value, ids, key)
        return restarts(value, attention)
    lengths = np.diff(value) if key.startswith("cu_") else value
    if key.startswith("cu_") and (len(value) == 0 or value[0] != 0):
        raise ValueError(f"{key} must start with 0 (running sums of the segment lengths), got {value[:3].tolist()}")
    if (lengths < 0).any() or lengths.sum() > n:
        raise ValueError(f"{key} {value.tolist()[:8]} does not fit {n} input_ids: segment lengths must be >= 0 and add up to at most {n}")
    lengths = lengths[lengths > 0]
    segments = np.zeros(n, np.int64)
    segments[: lengths.sum()] = np.repeat(np.arange(1, len(lengths) + 1), lengths)
    return segments


def restarts(positions: np.ndarray, attention=None) -> np.ndarray | None:
    """Segment ids from position ids that restart at 0 (padding, where the attention mask is
    0, gets 0); None when the row is one sequence (a single start): nothing to cut."""
    real = np.ones(len(positions), bool) if attention is None else attention != 0
    if attention is not None and attention.max(initial=0) > 1:
        real = attention > 0
    start = real & (positions == 0)
    if start.sum() <= 1:
        return None
    segments = np.cumsum(start)
    segments[~real] = 0
    return segments


def numbered_attention(attention: np.ndarray) -> np.ndarray:
    """axolotl's packed attention mask (1..k: the segment of each token, 0 padding) as
    segment ids."""
    return attention.astype(np.int64)


@dataclass(frozen=True)
class Labels:
    """``labels`` read as loss masks: which convention the rows follow, and the rows that
    follow none (a finding each)."""

    loss: list  # a loss-mask row per labels row (None: no labels, or unreadable labels)
    kind: str  # "unshifted", "shifted", "unshifted (assumed)", "none"
    bad: list  # (row, position, message, expected)

    @property
    def note(self) -> str:
        return {
            "unshifted": "labels read as unshifted (labels[i] == input_ids[i] where not -100: "
            "the model shifts them, as Hugging Face models do)",
            "shifted": "labels read as shifted (labels[i] == input_ids[i + 1] where not -100: "
            "already aligned with the next token)",
            "unshifted (assumed)": "labels read as unshifted: every row fits both conventions "
            "(no trained token, or repeated ids), so the loss mask is the same either way",
        }.get(self.kind, "")


def labels_to_loss(ids_rows, label_rows) -> Labels:
    """Loss masks from ``labels`` (-100: not trained), telling shifted from unshifted labels
    by the ids they repeat. The convention that more rows fit alone is the batch's; a row
    that fits neither (or only the other) is reported and gets no mask.

        input_ids [2, 105, 9, 106]   labels [-100, -100, 9, 106]  -> unshifted, [0, 0, 1, 1]
                                     labels [-100, 9, 106, -100]  -> shifted,   [0, 0, 1, 1]
    """
    fits = []
    for ids, labels in zip(ids_rows, label_rows):
        if labels is None:
            fits.append(None)
            continue
        trained = labels != IGNORE_INDEX
        unshifted = bool(np.all(~trained | (labels == ids)))
        n = len(ids)
        shifted = n == 0 or bool(np.all(~trained[:-1] | (labels[:-1] == ids[1:])))
        fits.append((unshifted, shifted))
    only_un = sum(1 for f in fits if f and f[0] and not f[1])
    only_sh = sum(1 for f in fits if f and f[1] and not f[0])
    if only_sh > only_un:
        kind = "shifted"
    elif only_un:
        kind = "unshifted"
    elif any(f and f[0] for f in fits):
        kind = "unshifted (assumed)"
    else:
        kind = "none"
    use_shift = kind == "shifted"
    loss, bad = [], []
    for r, (ids, labels, fit) in enumerate(zip(ids_rows, label_rows, fits)):
        if fit is None:
            loss.append(None)
            continue
        if fit[int(use_shift)]:
            trained = (labels != IGNORE_INDEX).astype(np.int8)
            if use_shift:
                trained = np.r_[np.int8(0), trained[:-1]]
            loss.append(trained)
            continue
        loss.append(None)
        bad.append(_labels_problem(r, ids, labels, fit, use_shift, kind))
    return Labels(loss=loss, kind=kind, bad=bad)


def _labels_problem(r, ids, labels, fit, use_shift, kind):
    trained = labels != IGNORE_INDEX
    if use_shift:
        wrong = trained[:-1] & (labels[:-1] != ids[1:])
    else:
        wrong = trained & (labels != ids)
    i = int(np.argmax(wrong))
    nxt = f"{int(ids[i + 1])}" if i + 1 < len(ids) else "none (the last position)"
    if fit[1 - int(use_shift)]:
        other = "shifted" if not use_shift else "unshifted"
        message = (
            f"these labels are {other}, the other rows' are {'shifted' if use_shift else 'unshifted'}: "
            "one file mixes both conventions; make every row one or the other"
        )
    else:
        message = (
            f"labels[{i}] = {int(labels[i])}, but input_ids[{i}] = {int(ids[i])} and input_ids[{i + 1}] = "
            f"{nxt}: the labels are neither the ids (unshifted) nor the ids shifted by one, with "
            f"{IGNORE_INDEX} where not trained; they do not belong to these input_ids"
        )
    expected = "-100, or input_ids[i + 1]" if use_shift else "-100, or input_ids[i]"
    return r, i, message, expected
