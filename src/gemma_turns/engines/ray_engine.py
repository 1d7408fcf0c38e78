"""``encode --engine ray``: the chunks of :mod:`gemma_turns.engines.chunks` on Ray Data.

    chunks (ray.data.from_items, one row each)
      -> map_batches(RayChunkWorker, batch_size=1, concurrency=WORKERS, num_cpus=1)
         (an actor pool: the tokenizer is loaded once per worker)
      -> the driver takes each row as it comes and merges (write_chunked)

Why Ray Data and not Apache Beam: Ray runs on a laptop with ``pip install`` and on any
cluster (KubeRay, Anyscale, a VM group) without a managed runner, Python ML teams already
run it next to training, and its actor pools keep a loaded tokenizer per worker, which is
the one expensive piece of state here. The seam is :class:`~.chunks.ChunkWorker`: a Beam
``DoFn`` whose ``setup`` builds one and whose ``process`` calls it is the whole adapter.

Sizing: every worker is an actor holding ``num_cpus=1``, and there are at most as many
workers as the cluster has CPUs, so the pool can always start; the chunks come from
``from_items`` (no read tasks that would need a CPU the actors hold). ``max_restarts`` and
``max_task_retries`` let Ray replace a killed worker and run its chunk again; the chunk's
shard names are the same, so the retry overwrites.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from functools import partial

from ..dataset import Written
from ..encoder import GemmaTokenizer
from ..errors import DatasetError
from .chunks import Chunk, ChunkWorker, Job, write_chunked

__all__ = ["RayChunkWorker", "RayNotInstalled", "launch_on_ray", "write_dataset_ray", "write_ray_dataset"]

INSTALL = "pip install 'gemma-turns[ray]'"
RETRIES = 3  # a chunk whose worker dies is run again up to this many times


class RayNotInstalled(DatasetError):
    """``--engine ray`` without Ray installed."""


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayNotInstalled(
            f"the Ray engine needs Ray Data, which is not installed: {INSTALL} (or run "
            "without --engine ray: the local engine needs nothing more)"
        ) from None
    return ray


class RayChunkWorker:
    """The ``map_batches`` callable class: one ChunkWorker per actor, a batch of chunk rows
    in, one result row per chunk out."""

    def __init__(self, job: Job):
        self.worker = ChunkWorker(job)

    def __call__(self, batch: dict) -> dict:
        names = list(batch)
        size = len(batch[names[0]])
        results = [self.worker({name: batch[name][i] for name in names}) for i in range(size)]
        return {key: [result[key] for result in results] for key in ("chunk", "result", "encoded")}


def launch_on_ray(
    *, workers: int | None = None, worker_class: type = RayChunkWorker
) -> Callable[[Job, list[Chunk]], Iterable[dict]]:
    """The engine half of a run: chunks to results on the Ray cluster this process is
    connected to (``ray.init()`` first, or this starts a local one). ``worker_class``: a
    subclass of RayChunkWorker (to measure or instrument the workers)."""
    ray = _ray()

    def launch(job: Job, chunks: list[Chunk]) -> Iterable[dict]:
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False, logging_level="warning")
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        size = max(1, min(workers or cpus, cpus, len(chunks)))
        context = ray.data.DataContext.get_current()
        before = (context.execution_options.preserve_order, context.enable_progress_bars)
        # global packing takes the results in chunk order; chunk packing any order
        context.execution_options.preserve_order = job.pack_scope == "global"
        context.enable_progress_bars = False  # the command draws its own progress line
        try:
            dataset = ray.data.from_items([chunk.to_row() for chunk in chunks])
            with warnings.catch_warnings():  # ray_remote_args' spelling changes with versions
                warnings.simplefilter("ignore", DeprecationWarning)
                results = _map(dataset, job, size)
            yield from results.iter_rows()
        except (KeyboardInterrupt, DatasetError):
            raise
        except Exception as error:  # a worker's failure, wrapped by Ray
            raise _worker_error(error) from None
        finally:  # the caller's Ray Data settings as they were
            context.execution_options.preserve_order, context.enable_progress_bars = before

    def _map(dataset, job: Job, size: int):
        return dataset.map_batches(
            worker_class,
            fn_constructor_args=(job,),
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size),
            num_cpus=1,
            max_restarts=-1,
            max_task_retries=RETRIES,
        )

    return launch


def _worker_error(error: Exception) -> DatasetError:
    """A worker's failure as Ray hands it over (wrapped, perhaps only as text when the worker
    died while starting) as one DatasetError: our own message when there is one."""
    cause = getattr(error, "cause", None) or error
    if isinstance(cause, DatasetError):
        return DatasetError(str(cause), path=cause.path)
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(cause))
    ours = [line.strip() for line in text.splitlines() if "gemma_turns.errors." in line]
    if ours and ": " in ours[-1]:
        return DatasetError(f"a Ray worker failed: {ours[-1].split(': ', 1)[1]}")
    first = text.splitlines()[0] if text else ""
    return DatasetError(f"a Ray worker failed: {type(cause).__name__}: {first}")


def write_dataset_ray(
    tokenizer: GemmaTokenizer,
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    workers: int | None = None,
    worker_class: type = RayChunkWorker,
    **options,
) -> Written:
    """:func:`gemma_turns.dataset.write_dataset` (a shard directory) on Ray Data: the same
    format, counts and rejects; see :mod:`gemma_turns.engines.chunks` for what differs
    (shard names, and with ``pack_scope="chunk"`` the packed rows). ``options`` are
    :func:`~gemma_turns.engines.chunks.write_chunked`'s (``encode_options``,
    ``array_options``, ``shard_size``, ``rejects``, ``chunk_bytes``, ``pack_scope``, ...).
    The inputs, the tokenizer file and the output directory must be on a file system every
    worker sees. Raises RayNotInstalled without Ray."""
    launch = launch_on_ray(workers=workers, worker_class=worker_class)
    return write_chunked(
        tokenizer,
        inputs,
        output,
        launch=launch,
        engine={"name": "ray", "workers": workers},
        **options,
    )


def write_ray_dataset(
    tokenizer: GemmaTokenizer,
    dataset,
    output: str | os.PathLike,
    *,
    staging: str | os.PathLike,
    **options,
) -> Written:
    """:func:`write_dataset_ray` for records that are already a ``ray.data.Dataset`` (rows
    ``{"messages": [...], "tools": ..., ...}``, or ``{"text": ...}`` for ``mode="pt"``).

    Ray's workers write the rows as JSONL files into ``staging`` (one file per batch), and
    those files are the run's inputs: the manifest names them, and every row and reject
    traces to one of them and its line, as for files given by path. The rows are written
    with ``json``, not ``Dataset.write_json``, whose pandas conversion was seen to split a
    row whose messages mix text and part lists; a key whose value is None (Arrow's filler
    for a field a row lacks) is left out. ``staging`` must be new or empty (a file left
    from another run would be encoded too), on a file system every worker sees.
    """
    staging = os.fspath(staging)
    if os.path.exists(staging) and (not os.path.isdir(staging) or os.listdir(staging)):
        raise DatasetError(
            f"staging folder {staging} exists and is not empty: name a new one, so that "
            "only this dataset's rows are encoded",
            path=staging,
        )
    os.makedirs(staging, exist_ok=True)
    staged = dataset.map_batches(partial(_stage_rows, staging), batch_format="numpy", batch_size=4096)
    files = sorted(str(row["file"]) for row in staged.take_all())
    if not files:
        raise DatasetError(f"the dataset has no rows to write to {staging}", path=staging)
    return write_dataset_ray(tokenizer, files, output, **options)


def _stage_rows(staging: str, batch: dict) -> dict:
    """One batch of rows as one JSONL file in ``staging``; its name, for the driver."""
    import json
    import uuid

    import numpy as np

    columns = list(batch)
    count = len(batch[columns[0]]) if columns else 0
    name = os.path.join(staging, f"rows-{uuid.uuid4().hex}.jsonl")
    with open(name, "w", encoding="utf-8") as handle:
        for k in range(count):
            row = _plain({column: batch[column][k] for column in columns})
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"file": np.array([name])}


def _plain(value):
    """Python values from what Ray hands a batch (numpy arrays and scalars, Arrow's None for
    a missing field), as the record's JSON had them."""
    import numpy as np

    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
