"""Peak memory of `gemma-turns encode` streaming JSONL to sharded npz, for growing inputs.

    python benchmarks/streaming_memory.py --sizes 100 1000 --tokenizer gemma3.model

Writes a JSONL file of each size (MB) from the generated conversations, runs the CLI on it in
a child process, and reports the child's peak resident memory (ru_maxrss from wait4) and its
throughput. Streaming holds one batch of lines and one shard of rows at a time, so the peak
should not grow with the input.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from conversations import generate  # noqa: E402

FIXTURE = HERE.parent / "fixtures" / "tokenizer" / "gemma3_layout.model"


def write_jsonl(path: Path, megabytes: int) -> int:
    """Repeat the generated conversations until the file holds ``megabytes`` MB; return lines."""
    lines = [json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in generate(2000, seed=1)]
    target = megabytes * 1_000_000
    written = count = 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < target:
            line = lines[count % len(lines)]
            handle.write(line)
            written += len(line.encode("utf-8"))
            count += 1
    return count


def run_cli(argv: list[str]) -> tuple[float, float, int]:
    """Run the CLI in a child; return (seconds, peak RSS in MiB, exit code)."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "gemma_turns", *argv], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, child.returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", default=str(FIXTURE))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000], help="input sizes in MB")
    parser.add_argument("--shard-size", type=int, default=4096, help="rows per shard")
    parser.add_argument("--max-length", type=int, default=8192)
    parser.add_argument("--pack", action="store_true", help="pack rows (default: one row per conversation)")
    parser.add_argument("--dir", help="scratch folder (default: a temporary one; needs 2x the largest size)")
    args = parser.parse_args(argv)

    print(f"{'input MB':>9} {'lines':>9} {'seconds':>8} {'MB/s':>6} {'peak RSS MiB':>13} {'exit':>5}")
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        for megabytes in args.sizes:
            data = Path(scratch) / f"input-{megabytes}.jsonl"
            lines = write_jsonl(data, megabytes)
            out = Path(scratch) / f"out-{megabytes}"
            argv_cli = ["encode", "--tokenizer", args.tokenizer, "--mode", "training", str(data),
                        "-o", str(out), "--shard-size", str(args.shard_size),
                        "--max-length", str(args.max_length), "--truncation", "truncate"]
            if args.pack:
                argv_cli.append("--pack")
            seconds, peak, code = run_cli(argv_cli)
            print(f"{megabytes:9d} {lines:9d} {seconds:8.1f} {megabytes / seconds:6.1f} {peak:13.0f} {code:5d}")
            data.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
