"""Where `gemma-turns encode -o OUT.npz --pack` spends its CPU, stage by stage.

    python benchmarks/profile_stages.py --tokenizer gemma3.model --data four.jsonl

Each stage runs alone over the whole file, in one process and one thread, and is timed in
CPU seconds (best of ``--repeat``; start-up: wall seconds of a child process); the stages add
up to about the CLI's own CPU time, which is printed last for comparison (its SentencePiece
work runs in worker threads, whose CPU the process time includes). The encoder's own stages
(planning, SentencePiece on the texts planned, assembly) run through its private methods, so
that each is timed by itself. The checks, formatting and reserved-text scan the planner calls
are also timed alone, as a breakdown of planning outside the sum. The planned batches are
encoded after all planning, so the segment cache serves nothing across batches here (the
CLI's first pass over the 4 corpus files: under 1%). Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gemma_turns import GemmaTokenizer
from gemma_turns.arrays import best_fit, pack_rows
from gemma_turns.cli import main as cli_main
from gemma_turns.conversation import from_record
from gemma_turns.encoder import _chunks
from gemma_turns.formatter import render_runs, wants_generation_prompt
from gemma_turns.jsonl import messages_of, read_lines
from gemma_turns.options import EncodeOptions
from gemma_turns.store import ArrayWriter

STARTUP = "import gemma_turns.cli.encode_command; from gemma_turns import GemmaTokenizer; GemmaTokenizer.load({model!r})"


def cpu(repeat: int, run) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--data", required=True, help="a JSONL file of records that encode in training mode")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=8192)
    args = parser.parse_args(argv)

    tokenizer = GemmaTokenizer.load(args.tokenizer)
    options = EncodeOptions(mode="training")
    raw = Path(args.data).read_bytes().splitlines(keepends=True)
    records = [line.value for line in read_lines(raw)]
    conversations = [from_record(messages_of(r), tokenizer.dialect, options) for r in records]
    runs = [list(render_runs(c, add_generation_prompt=False, train_on="all", train_newline=False, checkpoint=None))
            for c in conversations]
    free = [value for rs in runs for value, _ in rs if type(value) is str]
    encodings = tokenizer.encode_chat_batch(records, options=options, num_threads=1)
    fitting = [e for e in encodings if len(e) <= args.max_length]  # the CLI truncates the others
    lengths = [len(e) for e in fitting]

    def startup():
        subprocess.run([sys.executable, "-c", STARTUP.format(model=args.tokenizer)], check=True)

    stages = {"start-up: import + load (a child process)": 0.0}
    walls = []
    for _ in range(args.repeat):
        wall = time.perf_counter()
        startup()
        walls.append(time.perf_counter() - wall)
    stages["start-up: import + load (a child process)"] = min(walls)

    stages["JSON: read and parse the lines"] = cpu(args.repeat, lambda: list(read_lines(raw)))
    breakdown = {
        "checks: messages to a conversation": cpu(
            args.repeat, lambda: [from_record(messages_of(r), tokenizer.dialect, options) for r in records]),
        "formatting: conversation to runs": cpu(args.repeat, lambda: [
            list(render_runs(c, add_generation_prompt=wants_generation_prompt(c, options), train_on="all",
                             train_newline=False, checkpoint=None)) for c in conversations]),
        "reserved-text scan": cpu(args.repeat, lambda: [tokenizer.reserved.find(t) for t in free]),
    }
    planner = tokenizer._chat_planner(options)

    def plan():
        tokenizer.clear_segment_cache()  # every run a first pass, as the CLI's is
        return list(tokenizer._plan_batches(_chunks(records), planner, collect_errors=False))

    stages["planning: records to the texts to encode and where their ids go"] = cpu(args.repeat, plan)
    planned = plan()
    stages["SentencePiece: encode the texts planned"] = cpu(
        args.repeat, lambda: [tokenizer._encode_texts(texts) for _, texts in planned])
    encoded = [tokenizer._encode_texts(texts) for _, texts in planned]
    stages["assembly: ids and masks from the encoded texts"] = cpu(
        args.repeat, lambda: [tokenizer._build(plans, ids) for (plans, _), ids in zip(planned, encoded)])

    def pack():
        rows = best_fit(lengths, capacity=args.max_length)
        return pack_rows(rows, [e.ids for e in fitting], loss_masks=[e.loss_mask for e in fitting],
                         pad_id=tokenizer.specials.pad, row_length=args.max_length)

    stages["packing: best fit and the arrays"] = cpu(args.repeat, pack)
    batch = pack()
    with tempfile.TemporaryDirectory() as scratch:
        def write():
            writer = ArrayWriter(Path(scratch) / "out.npz", sharded=False, compress=False)
            writer.write([batch.arrays()])
            writer.abort()

        stages["writing: npz and its sha256"] = cpu(args.repeat, write)

        def cli():
            with contextlib.redirect_stderr(io.StringIO()):
                cli_main(["encode", "--tokenizer", args.tokenizer, "--mode", "training", "--threads", "1",
                          args.data, "-o", str(Path(scratch) / "cli.npz"), "--pack",
                          "--max-length", str(args.max_length), "--truncation", "truncate"])

        cli_time = cpu(args.repeat, cli)

    total = sum(stages.values())
    print(f"{len(records)} records, {sum(len(e) for e in encodings):,} ids, one thread\n")
    print(f"{'stage':<62} {'CPU s':>7} {'share':>6}")
    for name, seconds in stages.items():
        print(f"{name:<62} {seconds:7.2f} {seconds / total:6.1%}")
        if name.startswith("planning"):
            for part, part_seconds in breakdown.items():
                print(f"{'  of which, timed alone: ' + part:<62} {part_seconds:7.2f}")
    print(f"{'sum':<62} {total:7.2f}")
    print(f"{'the CLI in-process, one encoding thread (no start-up)':<62} {cli_time:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
