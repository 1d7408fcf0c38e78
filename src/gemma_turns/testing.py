"""A pytest helper: ``assert_valid`` on what a data pipeline hands a model.

    from gemma_turns.testing import assert_valid
    assert_valid(collator(examples), tok, expect="training")   # a dict of torch tensors
    assert_valid(tok.encode_chat_batch(data, mode="training"), tok, expect="training")

Accepts one sequence, a list of them, a 2-D array or tensor (numpy, torch, any array-like,
lists, Encodings), or a batch mapping in another tool's convention (``input_ids`` with
``labels``, ``assistant_masks``, ``completion_mask`` or ``loss_mask``; ``attention_mask``;
packing by ``segment_ids``, ``position_ids`` restarts, ``seq_lengths``/``cu_seqlens`` or an
attention mask numbered 1..k), read as ``gemma-turns validate`` reads such files.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from .conventions import as_array, read_record
from .shapes import int_array
from .validator import Report, validate

__all__ = ["assert_valid", "validate_batch"]


def validate_batch(batch: Mapping, tokenizer, **options) -> Report:
    """:func:`~gemma_turns.validator.validate` on a batch mapping (a collator's output, a
    dataset's columns): its keys read as conventions (see the module docstring). A key that
    looks like a mask and is not read gives a warning (``UserWarning``)."""
    keys = {key: as_array(value) for key, value in batch.items()}
    ids = keys.get("input_ids")
    if ids is None:
        raise ValueError(f"the batch has no input_ids (keys {sorted(keys)[:8]})")
    single = isinstance(ids, np.ndarray) and ids.ndim == 1 or (
        isinstance(ids, list) and ids and not isinstance(ids[0], (list, tuple, np.ndarray))
    )
    n = 1 if single else len(ids)
    per_row = {k: v for k, v in keys.items() if not single and v is not None and not _is_scalar(v)}
    rows = []
    for r in range(n):
        record = {k: per_row[k][r] if k in per_row else v for k, v in keys.items()}
        rows.append(read_record(record, int_array))
    unused = sorted({u for row in rows for u in row.unused})
    for what in unused:
        warnings.warn(f"batch key {what}: not checked by validate", UserWarning, stacklevel=3)
    column = lambda name: None if all(getattr(r, name) is None for r in rows) else [getattr(r, name) for r in rows]  # noqa: E731
    return validate(
        [r.ids for r in rows],
        tokenizer,
        loss_mask=column("loss"),
        labels=column("labels"),
        attention_mask=column("attention"),
        segment_ids=column("segments"),
        **options,
    )


def _is_scalar(value) -> bool:
    """A batch entry that is no column (``num_items_in_batch``, a 0-d tensor, a string)."""
    return isinstance(value, (str, bytes, int, float)) or getattr(value, "ndim", 1) == 0


def assert_valid(sequences: object, tokenizer, **options) -> None:
    """Fail (AssertionError, with the report: the first 20 findings and the counts) unless
    ``validate`` finds nothing. ``sequences``: what :func:`validate` takes (numpy, torch,
    lists, Encodings), or a batch mapping (:func:`validate_batch`)."""
    __tracebackhide__ = True  # pytest shows the caller's line
    if isinstance(sequences, Mapping):
        report = validate_batch(sequences, tokenizer, **options)
    else:
        report = validate(sequences, tokenizer, **options)
    if not report.ok:
        raise AssertionError("invalid token sequences:\n" + report.format(limit=20))
