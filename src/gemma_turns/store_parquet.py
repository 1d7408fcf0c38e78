"""Parquet array files: the rows of a written dataset as Arrow list columns, and back.

    OUT.parquet + OUT.manifest.json                  one file (``-o OUT.parquet``)
    DIR/shard-00000.parquet ... + manifest.json      shards (``--format parquet``)

Only :mod:`gemma_turns.store` calls this module (the manifest, the hidden partial directory,
the lock and the sha256 are its, as for ``.npz``); it is apart so that ``pyarrow``, an
optional extra (``pip install 'gemma-turns[parquet]'``), loads only when a Parquet file is
written or read.

Rows are stored **ragged**: each row holds its real cells only (where ``attention_mask`` is
1), as ``list<int32>`` (ids, targets, positions, segment ids) and ``list<int8>`` (masks)
columns, the shape Hugging Face ``datasets``, Spark and grain read directly and collators pad.
``source_line`` is an ``int64`` column; a packed row's ``segment_source_line`` is a
``list<int64>`` of its segments' lines; packed rows also get ``seq_lengths``, a
``list<int32>`` of their segments' lengths (``cu_seqlens`` for flash-attention varlen is their
running sum), which is derived from ``segment_ids`` and not read back. The file's schema metadata (``gemma_turns``) holds
what turns the rows back into the exact ``.npz`` arrays (width, padding side, pad id,
dtypes), so :func:`read_parquet` needs no manifest.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .errors import DatasetError

__all__ = ["INSTALL", "read_parquet", "require_pyarrow", "write_parquet"]

INSTALL = "pip install 'gemma-turns[parquet]' (or: pip install pyarrow)"
METADATA_KEY = b"gemma_turns"
PAD_WITH_ID = ("input_ids", "targets")  # keys whose padding cells hold the pad id, not 0
TABLE_KEYS = ("segment_source_line",)  # per row, one value per segment (-1: none)
ROW_KEYS = ("source_line",)  # one value per row
ROW_GROUP = 1024  # rows per Parquet row group (what one read or write step holds)
DERIVED = "seq_lengths"  # packed rows: each segment's length, for varlen attention; not read back


def require_pyarrow():
    """``pyarrow.parquet``, or DatasetError saying how to install it."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(f"Parquet output needs pyarrow, which is not installed: {INSTALL}") from None
    return pq


def write_parquet(
    path: str | os.PathLike,
    blocks: list[dict[str, np.ndarray]],
    *,
    pad_id: int,
    padding: str,
    compress: bool,
) -> dict:
    """Write the rows of ``blocks`` (one after the other) to one Parquet file, in row groups
    of ``ROW_GROUP`` rows (so only one group's Arrow columns exist at a time); returns each
    key's dtype and shape as the manifest lists them (``["rows", width]``, as for ``.npz``)."""
    pq = require_pyarrow()
    import pyarrow as pa

    first = blocks[0]
    width = first["input_ids"].shape[1]
    large = ROW_GROUP * max(width, 1) > np.iinfo(np.int32).max  # offsets past 32 bits
    list_of = pa.large_list if large else pa.list_
    fields, keys = [], {}
    for key, array in first.items():
        arrow_type = pa.from_numpy_dtype(array.dtype)
        fields.append(pa.field(key, arrow_type if key in ROW_KEYS else list_of(arrow_type)))
        shape = ["rows"] if key in ROW_KEYS else [
            "rows", max(block[key].shape[1] for block in blocks) if key in TABLE_KEYS else width
        ]
        keys[key] = {"dtype": array.dtype.name, "shape": shape}
    if "segment_ids" in first:
        fields.append(pa.field(DERIVED, list_of(pa.int32())))
    metadata = {
        "width": width,
        "padding": padding,
        "pad_id": int(pad_id),
        "keys": {key: spec["dtype"] for key, spec in keys.items()},
    }
    schema = pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata)})
    with pq.ParquetWriter(path, schema, compression="zstd" if compress else "none") as writer:
        groups = [
            {key: array[start : start + ROW_GROUP] for key, array in block.items()}
            for block in blocks
            for start in range(0, len(block["input_ids"]), ROW_GROUP)
        ] or [first]
        for group in groups:
            writer.write_table(_group_table(pa, group, schema, large))
    return keys


def _group_table(pa, group: dict[str, np.ndarray], schema, large: bool):
    """One row group: each row's real cells (where ``attention_mask`` is 1), row after row."""
    real = group["attention_mask"] != 0
    lengths = real.sum(axis=1)
    columns = []
    for key, part in group.items():
        if key in ROW_KEYS:
            columns.append(pa.array(part, type=pa.from_numpy_dtype(part.dtype)))
        elif key in TABLE_KEYS:
            columns.append(_lists(pa, part[part >= 0], (part >= 0).sum(axis=1), large))
        else:
            columns.append(_lists(pa, part[real], lengths, large))
    if "segment_ids" in group:
        segments = group["segment_ids"]
        counts = segments.max(axis=1, initial=0).astype(np.int64)
        per_row = [np.bincount(row[row != 0])[1:] for row in segments]
        flat = np.concatenate(per_row).astype(np.int32) if per_row else np.zeros(0, np.int32)
        columns.append(_lists(pa, flat, counts, large))
    return pa.Table.from_arrays(columns, schema=schema)


def _lists(pa, values: np.ndarray, lengths: np.ndarray, large: bool):
    """A ``list<dtype>`` Arrow array of rows of ``lengths`` cut from ``values``."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64 if large else np.int32)
    items = pa.array(values, type=pa.from_numpy_dtype(values.dtype))
    if large:
        return pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()), items)
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), items)


def read_parquet(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a Parquet file written by :func:`write_parquet`, padded back to the
    exact ``.npz`` arrays; DatasetError when it cannot be read or was not written by us."""
    pq = require_pyarrow()
    import pyarrow as pa

    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DatasetError(f"cannot read {os.fspath(path)!r}: no such file", path=path) from None
    except (OSError, pa.ArrowException) as error:
        raise DatasetError(f"{path} is not a readable Parquet file ({error})", path=path) from None
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    try:
        meta = json.loads(raw)
        width, side, pad_id = int(meta["width"]), meta["padding"], int(meta["pad_id"])
        dtypes = {key: np.dtype(name) for key, name in meta["keys"].items()}
    except (TypeError, ValueError, KeyError):
        raise DatasetError(
            f"{path} has no gemma-turns metadata: it was not written by gemma-turns encode",
            path=path,
        ) from None
    if DERIVED in table.column_names and "segment_ids" in dtypes:
        table = table.drop_columns([DERIVED])
    if set(dtypes) != set(table.column_names) or "attention_mask" not in dtypes:
        raise DatasetError(
            f"{path} holds columns {sorted(table.column_names)}, but its metadata lists "
            f"{sorted(dtypes)}",
            path=path,
        )
    rows = table.num_rows
    lengths = _lengths(table.column("attention_mask"))
    columns = np.arange(width)
    if side == "left":
        real = columns[None, :] >= (width - lengths)[:, None]
    else:
        real = columns[None, :] < lengths[:, None]
    arrays = {}
    for key in table.column_names:
        column, dtype = table.column(key), dtypes[key]
        if key in ROW_KEYS:
            arrays[key] = column.to_numpy().astype(dtype)
            continue
        values = _values(column, dtype)
        if key in TABLE_KEYS:
            counts = _lengths(column)
            table_width = int(counts.max(initial=0))
            out = np.full((rows, table_width), -1, dtype=dtype)
            out[np.arange(table_width)[None, :] < counts[:, None]] = values
        else:
            if not np.array_equal(_lengths(column), lengths):
                raise DatasetError(f"{path}: the rows of {key} and attention_mask differ in length", path=path)
            out = np.full((rows, width), pad_id if key in PAD_WITH_ID else 0, dtype=dtype)
            out[real] = values
        arrays[key] = out
    return arrays


def _lengths(column) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)


def _values(column, dtype) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(dtype)
