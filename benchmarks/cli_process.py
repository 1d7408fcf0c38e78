"""The whole command as a user runs it: fresh processes, start-up and model load included.

    python benchmarks/cli_process.py --tokenizer gemma3.model --corpus ../shared/corpus \
        --files tau_bench_airline.jsonl gpteacher.jsonl medicalgpt_sft.jsonl kdconv_zh.jsonl

Three pairs of processes, alternated and timed by wall clock (and, for the data, by CPU
seconds of all their threads, steadier on a shared machine), best of ``--repeat``:

- start-up: ``import sentencepiece`` and load the model, against ``import gemma_turns``'s
  encode command and ``GemmaTokenizer.load`` of the same model;
- the floor: a Python process that loads the model with SentencePiece, parses every JSONL
  line with ``json.loads`` and encodes every text of every record with SentencePiece's
  batched, threaded encode; against ``gemma-turns encode -o OUT.npz --pack`` on the same
  file, for the named files together and for the whole folder.

Records are the conversations of the files that encode in training mode with the default
reserved-text guard, written to one JSONL file per set. Run it with PYTHONDONTWRITEBYTECODE
unset, as a user's install is: otherwise every process compiles the package again (0.05 s).
Not a test: speed is never asserted anywhere.
"""

from __future__ import annotations

import argparse
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

from conversations import load_jsonl, texts_of  # noqa: E402

from gemma_turns import GemmaTokenizer  # noqa: E402

FLOOR = """
import json, sys, sentencepiece
sys.path.insert(0, {here!r})
from conversations import texts_of
processor = sentencepiece.SentencePieceProcessor(model_file={model!r})
with open({data!r}, "rb") as handle:
    texts = [text for line in handle for text in texts_of(json.loads(line))]
processor.encode(texts, num_threads={threads}, return_type="numpy")
"""
SP_START = "import sentencepiece; sentencepiece.SentencePieceProcessor(model_file={model!r})"
GT_START = (
    "import gemma_turns.cli.encode_command; from gemma_turns import GemmaTokenizer; "
    "GemmaTokenizer.load({model!r})"
)


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, all threads) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def best_pair(repeat: int, first: list[str], second: list[str]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Best (wall, CPU) seconds of each command, run alternately so that both see the same
    machine; each minimum is taken on its own."""
    a, b = [], []
    for _ in range(repeat):
        a.append(timed(first))
        b.append(timed(second))
    return tuple(map(min, zip(*a))), tuple(map(min, zip(*b)))


def gemma_turns_command() -> list[str]:
    script = Path(sys.executable).with_name("gemma-turns")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gemma_turns"]


def write_records(tokenizer, files: list[Path], target: Path) -> tuple[int, float]:
    conversations = [c for f in files for c in load_jsonl(f)]
    results = tokenizer.try_encode_chat_batch(conversations, mode="training")
    kept = [c for c, r in zip(conversations, results) if not isinstance(r, Exception)]
    with open(target, "w", encoding="utf-8") as handle:
        for messages in kept:
            handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    megabytes = sum(len(t.encode()) for c in kept for t in texts_of(c)) / 1e6
    return len(kept), megabytes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True, help="SentencePiece model")
    parser.add_argument("--corpus", required=True, help="a folder of JSONL conversation files")
    parser.add_argument("--files", nargs="*", default=[], help="names in --corpus for the smaller set")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=8192)
    args = parser.parse_args(argv)

    tokenizer = GemmaTokenizer.load(args.tokenizer)
    corpus = Path(args.corpus)
    sets = {}
    if args.files:
        sets[f"{len(args.files)} files"] = [corpus / name for name in args.files]
    sets["whole corpus"] = sorted(corpus.glob("*.jsonl"))

    python = sys.executable
    (sp_start, _), (gt_start, _) = best_pair(
        max(args.repeat, 5),
        [python, "-c", SP_START.format(model=args.tokenizer)],
        [python, "-c", GT_START.format(model=args.tokenizer)],
    )
    print(f"start-up (best of {max(args.repeat, 5)}): SentencePiece import + load {sp_start:.3f} s, "
          f"gemma-turns import + load {gt_start:.3f} s: {gt_start - sp_start:+.3f} s")

    print(f"\n{'data':<16} {'records':>8} {'MB':>6} {'floor s':>8} {'CLI s':>7} {'x floor':>8}"
          f" {'floor CPU s':>12} {'CLI CPU s':>10} {'x floor':>8}")
    with tempfile.TemporaryDirectory() as scratch:
        for name, files in sets.items():
            data = Path(scratch) / "data.jsonl"
            records, megabytes = write_records(tokenizer, files, data)
            floor = [python, "-c", FLOOR.format(here=str(HERE), model=args.tokenizer, data=str(data),
                                                threads=args.threads)]
            cli = [*gemma_turns_command(), "encode", "--tokenizer", args.tokenizer, "--mode", "training",
                   "--threads", str(args.threads), str(data),
                   "-o", str(Path(scratch) / "out.npz"), "--pack", "--max-length", str(args.max_length),
                   "--truncation", "truncate"]
            (floor_time, floor_cpu), (cli_time, cli_cpu) = best_pair(args.repeat, floor, cli)
            print(f"{name:<16} {records:>8} {megabytes:>6.1f} {floor_time:>8.2f} {cli_time:>7.2f} "
                  f"{cli_time / floor_time:>8.2f} {floor_cpu:>12.2f} {cli_cpu:>10.2f} {cli_cpu / floor_cpu:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
