"""Hand encoded conversations to Hugging Face: ``datasets.map`` columns and the training recipe.

    ds.map(map_fn(tok, mode="training"), batched=True, remove_columns=ds.column_names)
        -> input_ids, attention_mask, loss_mask, labels   (lists of ints, unpadded)
           status ("encoded", "truncated", "dropped", "rejected"), error_code, error ("" or why)

Nothing here imports ``datasets``, ``pyarrow`` or ``torch``: the columns are plain Python
lists, which Arrow stores as ``list<int64>``, and the functions are numpy. A record that
cannot be encoded is a row with ``status == "rejected"``, empty ids, its ``error_code`` and
``error`` (the message: what, where, how to fix), never an exception that stops the map;
keep the others with ``ds.filter(lambda e: not e, input_columns="error")``. Every column
has one type in every row ("" rather than None for "no error"): a column that is None in a
whole first batch gets Arrow's null type, and ``datasets`` then refuses later batches.

The recipe for Hugging Face causal LMs (``GemmaForCausalLM``, ``Gemma3ForCausalLM``, ...):

- ``labels = where(loss_mask, input_ids, -100)``, **unshifted**: the model shifts inside its
  loss (``logits[:, :-1]`` against ``labels[:, 1:]``), so our loss mask, which marks the
  tokens to produce, becomes labels position by position (:func:`labels`).
- Packed rows: ``position_ids`` restart at 0 in each segment, and :func:`cu_seqlens` /
  :func:`segment_lengths` give the segment boundaries a variable-length attention kernel
  (flash-attention ``varlen``) needs to keep attention inside a segment. A model that only
  reads ``attention_mask`` lets a packed segment attend to the segments before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .arrays import cu_seqlens, segment_lengths
from .encoder import GemmaTokenizer
from .jsonl import Line
from .options import ArrayOptions, EncodeOptions

__all__ = [
    "COLUMNS",
    "IGNORE_INDEX",
    "MapFn",
    "cu_seqlens",
    "labels",
    "map_fn",
    "segment_attention_mask",
    "segment_lengths",
]

IGNORE_INDEX = -100  # what torch.nn.CrossEntropyLoss and every HF model ignore
COLUMNS = ("input_ids", "attention_mask", "loss_mask", "labels")
EXTRA_KEYS = ("tools", "chat_template_kwargs")  # record keys taken from columns of these names


def labels(input_ids, loss_mask, *, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """HF ``labels``: the id where the loss mask is 1, ``ignore_index`` (-100) elsewhere,
    position by position, not shifted (HF models shift inside their loss). Padding has loss
    mask 0, so it is ignored too. Any shape (one sequence or a padded batch):

        input_ids  [2, 105, 2364, 107, 9259, 106, 107]
        loss_mask  [0,   0,    0,   0,    1,   1,   0]
        labels     [-100, -100, -100, -100, 9259, 106, -100]

    Pass unshifted rows (built without ``shift``); for shifted rows the model's own shift
    would skip a token.
    """
    ids = np.asarray(input_ids)
    mask = np.asarray(loss_mask)
    if ids.shape != mask.shape:
        raise ValueError(
            f"input_ids {ids.shape} and loss_mask {mask.shape} must have one shape (aligned by "
            "position)"
        )
    return np.where(mask != 0, ids, ignore_index).astype(np.int64)


def segment_attention_mask(segment_ids, *, dtype=np.float32) -> np.ndarray:
    """A 4-D additive attention mask, ``[rows, 1, length, length]``, that keeps attention
    causal and inside each packed segment: 0 where query ``q`` may read key ``k``
    (``k <= q`` in the same segment), the dtype's minimum elsewhere. For HF models run with
    ``attn_implementation="eager"`` or ``"sdpa"``, which take a 4-D ``attention_mask`` as
    given and do not read segment boundaries from ``position_ids``. A padding position reads
    only itself (a row of nothing but minimums would make NaN).

        segment_ids [[1, 1, 2]]  ->  allowed [[1, 0, 0],
                                              [1, 1, 0],
                                              [0, 0, 1]]
    """
    segments = np.asarray(segment_ids)
    if segments.ndim != 2:
        raise ValueError(f"segment_ids must be 2-D (rows x length), got shape {segments.shape}")
    length = segments.shape[1]
    causal = np.tri(length, dtype=bool)
    same = segments[:, :, None] == segments[:, None, :]
    real = (segments != 0)[:, None, :]
    allowed = (same & real & causal) | np.eye(length, dtype=bool)
    mask = np.where(allowed, 0, np.finfo(dtype).min).astype(dtype)
    return mask[:, None, :, :]


class MapFn:
    """A ``datasets.map(..., batched=True)`` function; build it with :func:`map_fn`.

    Called with a batch (a dict of columns) and optionally the rows' indices
    (``with_indices=True``, so that error messages name the dataset row). It pickles (the
    tokenizer travels as its model bytes), so ``num_proc=N`` works.
    """

    def __init__(
        self,
        tokenizer: GemmaTokenizer,
        *,
        encode_options: EncodeOptions,
        array_options: ArrayOptions,
        columns: tuple[str, ...],
        messages_column: str,
        text_column: str,
    ):
        self.tokenizer = tokenizer
        self.encode_options = encode_options
        self.array_options = array_options
        self.columns = columns
        self.messages_column = messages_column
        self.text_column = text_column

    def __call__(self, batch: Mapping[str, Sequence], indices: Sequence[int] | None = None) -> dict:
        from .fit import fit_lines  # here: fit imports the streaming machinery

        records = self._records(batch)
        numbers = range(len(records)) if indices is None else list(indices)
        lines = (Line(n, value=r) for n, r in zip(numbers, records, strict=True))
        out = {name: [] for name in (*self.columns, "status", "error_code", "error")}
        fitted = fit_lines(
            self.tokenizer,
            lines,
            encode_options=self.encode_options,
            array_options=self.array_options,
            num_threads=1,  # datasets runs one map function per process
        )
        for record in fitted:
            if record.kept:
                ids, mask = record.encoding.ids, record.encoding.loss_mask
                code = message = ""
            else:
                ids = mask = np.zeros(0, np.int32)
                code, message = self._error(record, with_row=indices is not None)
            values = {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "loss_mask": mask,
                "labels": labels(ids, mask) if "labels" in self.columns else None,
            }
            for name in self.columns:
                out[name].append(values[name].tolist())
            out["status"].append(record.kind)
            out["error_code"].append(code)
            out["error"].append(message)
        return out

    def _records(self, batch: Mapping[str, Sequence]) -> list:
        if self.encode_options.mode == "pt":
            column = self.text_column
        else:
            column = self.messages_column
        if column not in batch:
            raise KeyError(
                f"the batch has no column {column!r} (it has {', '.join(map(repr, batch))}); "
                f"pass {'text_column' if column == self.text_column else 'messages_column'}= "
                "to map_fn to name the column that holds the records"
            )
        values = list(batch[column])
        if self.encode_options.mode == "pt":
            return values
        extras = [key for key in EXTRA_KEYS if key in batch]
        records = []
        for i, messages in enumerate(values):
            record = {"messages": messages}
            for key in extras:
                if batch[key][i] is not None:
                    record[key] = batch[key][i]
            records.append(record)
        return records

    @staticmethod
    def _error(record, *, with_row: bool) -> tuple[str, str]:
        """``(code, message)`` of a record left out."""
        if record.error is not None:
            error = record.error
            if not with_row:  # numbers within the batch would mislead: say no row
                error = error.with_record(None)
            return error.code, str(error)
        drop = record.drop
        where = f"record {record.number}: " if with_row else ""
        fix = f". {drop.fix}" if drop.fix else ""
        return drop.code, f"{where}{drop.reason}{fix}"

    def __repr__(self) -> str:
        return (
            f"MapFn({self.tokenizer!r}, mode={self.encode_options.mode!r}, "
            f"columns={self.columns}, max_length={self.array_options.max_length})"
        )


def _check_truncation(truncation) -> None:
    from .options import TRUNCATIONS

    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}")


def map_fn(
    tokenizer: GemmaTokenizer,
    *,
    mode: str,
    columns: Iterable[str] = COLUMNS,
    max_length: int | None = None,
    truncation: str = "drop",
    messages_column: str = "messages",
    text_column: str = "text",
    **encode_options,
) -> MapFn:
    """A function for ``dataset.map(fn, batched=True)`` that encodes each record.

    Input columns: ``messages`` (a list of ``{"role", "content"}``, as TRL writes it) and,
    when present, ``tools`` and ``chat_template_kwargs`` (Gemma 4); in ``mode="pt"``,
    ``text``. ``encode_options`` are the keywords of :class:`~gemma_turns.EncodeOptions`
    (``train_on``, ``reserved``, ``enable_thinking``, ...).

    Output columns, one value per input row, unpadded (a collator pads them):
    ``columns`` (any of ``input_ids``, ``attention_mask``, ``loss_mask``, ``labels``; all by
    default) as lists of ints, ``status`` (``encoded``, ``truncated``, ``dropped`` or
    ``rejected``), ``error_code`` and ``error`` (``""``, or the code such as
    ``roles_not_alternating`` or ``too_long`` and the message, with empty id lists). ``max_length`` with ``truncation`` (``drop`` by default here, ``truncate``,
    ``drop_oldest_turns``, or ``error``, which raises SequenceTooLongError) applies the
    array truncation policies; without it sequences keep their length.
    """
    columns = tuple(columns)
    unknown = [name for name in columns if name not in COLUMNS]
    if unknown or not columns:
        raise ValueError(
            f"columns must be some of {', '.join(COLUMNS)}, got {list(columns)!r}"
        )
    options = EncodeOptions(mode=mode, **encode_options)
    if max_length is None:  # no row to fit: nothing is ever too long
        _check_truncation(truncation)
        truncation = "error"
    array_options = ArrayOptions(max_length=max_length, truncation=truncation)
    array_options.check_mode(mode)
    if truncation == "drop_oldest_turns":
        from .fit import check_dialect

        check_dialect(tokenizer)
    return MapFn(
        tokenizer,
        encode_options=options,
        array_options=array_options,
        columns=columns,
        messages_column=messages_column,
        text_column=text_column,
    )
