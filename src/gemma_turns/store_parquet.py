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
``list<int64>`` of its segments' lines. The file's schema metadata (``gemma_turns``) holds
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
    """Write the rows of ``blocks`` (one after the other) to one Parquet file; returns each
    key's dtype and shape as the manifest lists them (``["rows", width]``, as for ``.npz``)."""
    pq = require_pyarrow()
    import pyarrow as pa

    columns, keys = {}, {}
    for key in blocks[0]:
        parts = [block[key] for block in blocks]
        dtype = parts[0].dtype
        if key in ROW_KEYS:
            columns[key] = pa.array(np.concatenate(parts), type=pa.from_numpy_dtype(dtype))
            keys[key] = {"dtype": dtype.name, "shape": ["rows"]}
            continue
        if key in TABLE_KEYS:
            lists = [row[row >= 0] for part in parts for row in part]
            width = max((part.shape[1] for part in parts), default=0)
        else:
            masks = [block["attention_mask"] != 0 for block in blocks]
            lists = [row[keep] for part, mask in zip(parts, masks) for row, keep in zip(part, mask)]
            width = parts[0].shape[1]
        columns[key] = _lists(pa, lists, dtype)
        keys[key] = {"dtype": dtype.name, "shape": ["rows", width]}
    width = blocks[0]["input_ids"].shape[1]
    metadata = {
        "width": width,
        "padding": padding,
        "pad_id": int(pad_id),
        "keys": {key: spec["dtype"] for key, spec in keys.items()},
    }
    table = pa.table(columns).replace_schema_metadata({METADATA_KEY: json.dumps(metadata)})
    pq.write_table(table, path, compression="zstd" if compress else "none")
    return keys


def _lists(pa, rows: list[np.ndarray], dtype: np.dtype):
    """A ``list<dtype>`` Arrow array from numpy rows, built from offsets (no Python ints)."""
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = np.concatenate(rows).astype(dtype) if rows else np.zeros(0, dtype)
    return pa.ListArray.from_arrays(
        pa.array(offsets, type=pa.int32()), pa.array(values, type=pa.from_numpy_dtype(dtype))
    )


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
