"""Running ``encode -o`` on a distributed engine, with the local run's format and guarantees.

    chunks.py       the seam, engine-free: plan chunks of the inputs, what a worker does
                    with one chunk (``ChunkWorker``), how the driver merges the results into
                    one output and manifest (``write_chunked``)
    ray_engine.py   the Ray Data adapter: chunks as a ``ray.data.Dataset``, the worker as a
                    ``map_batches`` callable class (``write_dataset_ray``)

Nothing here is imported by ``import gemma_turns``, and only ``ray_engine`` imports Ray.
"""
