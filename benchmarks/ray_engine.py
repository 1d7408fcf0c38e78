"""The Ray engine against the local one, on the same corpus and options, on this machine.

    python benchmarks/ray_engine.py                                   # fixture tokenizer, generated chats
    python benchmarks/ray_engine.py --tokenizer gemma3.model --corpus '../shared/corpus/*.jsonl'

Each run is a child process (so its peak resident memory is its own, from wait4): the local
engine (``write_dataset``, SentencePiece on ``--cpus`` threads), then Ray with ``--cpus``
workers of one thread each, packing per chunk and packing in one pass (``global``). For Ray
the time is reported with and without starting the local cluster (a real cluster is already
running), and each worker's peak resident memory is read from the worker itself. The overhead
ratio is Ray's time (cluster already up) over the local time: on one machine Ray can only add
cost; what it buys is more machines. Not a test: speed is never asserted anywhere.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
FIXTURE = HERE.parent / "fixtures" / "tokenizer" / "gemma3_layout.model"


def child(args) -> dict:
    """One run, in this (child) process; returns what it measured."""
    from gemma_turns import ArrayOptions, EncodeOptions, GemmaTokenizer
    from gemma_turns.dataset import write_dataset

    tokenizer = GemmaTokenizer.load(args.tokenizer)
    options = dict(
        encode_options=EncodeOptions(mode="training"),
        array_options=ArrayOptions(
            max_length=args.max_length, pack=True, truncation="truncate", shift=False
        ),
        shard_size=args.shard_size,
    )
    out = Path(args.output)
    if args.child == "local":
        start = time.perf_counter()
        written = write_dataset(
            tokenizer, None, out, inputs=args.inputs, num_threads=args.cpus, **options
        )
        return {"seconds": time.perf_counter() - start, **_summary(written)}
    import ray

    from gemma_turns.engines.ray_engine import RayChunkWorker, write_dataset_ray

    class MeasuredWorker(RayChunkWorker):
        """Writes its process's peak resident memory beside the output after each chunk."""

        def __call__(self, batch):
            result = super().__call__(batch)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            (Path(self.worker.job.work).parent / f".rss-{os.getpid()}").write_text(str(peak))
            return result

    start = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="error")
    started = time.perf_counter()
    written = write_dataset_ray(
        tokenizer,
        args.inputs,
        out,
        pack_scope=args.child.removeprefix("ray-"),
        chunk_bytes=args.chunk_mib << 20,
        workers=args.cpus,
        worker_class=MeasuredWorker,
        **options,
    )
    done = time.perf_counter()
    rss = [int(p.read_text()) / 1024 for p in out.parent.glob(".rss-*")]
    ray.shutdown()
    return {
        "seconds": done - started,
        "startup": started - start,
        "worker_rss_mib": sorted(rss),
        "chunks": written.manifest["engine"]["chunks"],
        **_summary(written),
    }


def _summary(written) -> dict:
    counts = written.counts
    return {
        "records": counts.lines,
        "tokens": counts.encoded_tokens,
        "rows": counts.rows,
        "fill": counts.fill_ratio,
        "shards": len(written.files),
    }


def spawn(name: str, args, folder: Path) -> dict:
    argv = [
        sys.executable, __file__, "--child", name, "--output", str(folder / name / "out"),
        "--tokenizer", str(args.tokenizer), "--max-length", str(args.max_length),
        "--shard-size", str(args.shard_size), "--cpus", str(args.cpus),
        "--chunk-mib", str(args.chunk_mib), *args.inputs,
    ]
    (folder / name).mkdir()  # the workers' memory notes go beside the output: one folder a run
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as process:
        out = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{name} failed (exit {process.returncode})")
    return {**json.loads(out), "peak_rss_mib": usage.ru_maxrss / 1024}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="*", help="JSONL files or patterns")
    parser.add_argument("--corpus", help="a glob of JSONL files (quoted)")
    parser.add_argument("--tokenizer", default=FIXTURE)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--shard-size", type=int, default=4096)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--chunk-mib", type=int, default=16)
    parser.add_argument("--child", choices=("local", "ray-chunk", "ray-global"))
    parser.add_argument("--output")
    parser.add_argument("--generated", type=int, default=20000, help="conversations, without inputs")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs = [p for pattern in args.inputs for p in sorted(glob.glob(pattern))]
        inputs += sorted(glob.glob(args.corpus)) if args.corpus else []
        if not inputs:
            from conversations import generate

            path = folder / "generated.jsonl"
            with open(path, "w", encoding="utf-8") as handle:
                for messages in generate(args.generated, seed=1):
                    handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
            inputs = [str(path)]
        args.inputs = inputs
        size = sum(os.path.getsize(p) for p in inputs)
        print(
            f"{len(inputs)} files, {size / 1e6:.1f} MB; --max-length {args.max_length} --pack "
            f"--truncation truncate --shard-size {args.shard_size}; {args.cpus} CPUs; "
            f"Ray chunks of {args.chunk_mib} MiB"
        )
        runs = {name: spawn(name, args, folder) for name in ("local", "ray-chunk", "ray-global")}
    local = runs["local"]
    print(f"{'run':<11} {'records/s':>10} {'seconds':>8} {'ratio':>6} {'startup':>8} "
          f"{'peak RSS':>9} {'worker RSS':>16} {'rows':>7} {'fill':>7}")
    for name, run in runs.items():
        workers = ", ".join(f"{m:.0f}" for m in run.get("worker_rss_mib", [])) or "-"
        startup = f"{run['startup']:.1f}" if "startup" in run else "-"
        print(
            f"{name:<11} {run['records'] / run['seconds']:>10,.0f} {run['seconds']:>8.1f} "
            f"{run['seconds'] / local['seconds']:>6.2f} {startup:>8} "
            f"{run['peak_rss_mib']:>6.0f} MiB {workers:>12} MiB {run['rows']:>7,} {run['fill']:>7.2%}"
        )
    if len({run["records"] for run in runs.values()}) != 1:
        print("the runs counted different numbers of records", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
