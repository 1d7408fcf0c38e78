"""Benchmarks: gemma-turns against raw SentencePiece, side by side, in one process.

    python benchmarks/run.py                                  # fixture tokenizer, generated chats
    python benchmarks/run.py --tokenizer gemma3.model --corpus ../shared/corpus --threads 2

Every phase runs on the same conversations in the same process, best of ``--repeat`` runs,
and is reported as a ratio to the floor: SentencePiece's batched encode of every message's
content, with the same thread count (the faster of its list and numpy outputs). Peak memory
is the peak of Python's heap (tracemalloc: Python objects and numpy arrays, not
SentencePiece's own C++ buffers) in a separate, untimed run.
Not a test: speed is never asserted anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from conversations import generate, generate_gemma4, load_jsonl, texts_of  # noqa: E402

from gemma_turns import GemmaTokenizer, best_fit, pack_rows, pad_batch, validate  # noqa: E402
from gemma_turns.arrays import truncate  # noqa: E402
from gemma_turns.cli import main as cli_main  # noqa: E402

FIXTURE = HERE.parent / "fixtures" / "tokenizer" / "gemma3_layout.model"


def best_of(repeat: int, run, fresh=None) -> float:
    """The best time of ``repeat`` runs, each after ``fresh()`` (a cache emptied: every run
    is a first pass over the data)."""
    times = []
    for _ in range(repeat):
        if fresh is not None:
            fresh()
        gc.collect()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_mib(run) -> float:
    gc.collect()
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def encodable(tokenizer, conversations, threads):
    """The conversations gemma-turns encodes in training mode (a corpus may hold others)."""
    results = tokenizer.try_encode_chat_batch(
        conversations, mode="training", reserved="allow", num_threads=threads
    )
    kept = [c for c, r in zip(conversations, results) if not isinstance(r, Exception)]
    return kept, len(conversations) - len(kept)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", default=str(FIXTURE), help="SentencePiece model (default: the fixture)")
    parser.add_argument("--corpus", help="JSONL file or folder of {\"messages\": [...]} lines (default: generated)")
    parser.add_argument("--conversations", type=int, default=4000, help="how many to generate (default 4000)")
    parser.add_argument("--gemma4", action="store_true", help="generate Gemma 4 records (system, thinking, "
                        "tools, calls, results) instead of plain chats; needs a Gemma 4 tokenizer")
    parser.add_argument("--checkpoint", default="e4b", help="Gemma 4 checkpoint for prompts (default e4b)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="SentencePiece threads")
    parser.add_argument("--repeat", type=int, default=3, help="runs per phase; the best counts")
    parser.add_argument("--max-length", type=int, default=8192, help="row length for padding and packing")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-memory runs (they take as long as the timed ones)")
    parser.add_argument("--hf-tokenizer", help="a local Hugging Face tokenizer folder with the "
                        "official chat_template, to time apply_chat_template (needs transformers)")
    parser.add_argument("--skip-single", action="store_true", help="skip the one-conversation API loop")
    args = parser.parse_args(argv)

    tokenizer = GemmaTokenizer.load(args.tokenizer)
    threads = args.threads
    source = args.corpus or f"generated ({args.conversations} {'Gemma 4 records' if args.gemma4 else 'conversations'}, seed 0)"
    if args.corpus:
        conversations = load_jsonl(args.corpus)
    else:
        conversations = generate_gemma4(args.conversations) if args.gemma4 else generate(args.conversations)
    conversations, refused = encodable(tokenizer, conversations, threads)
    contents = [text for c in conversations for text in texts_of(c)]
    megabytes = sum(len(text.encode("utf-8")) for text in contents) / 1e6
    processor = tokenizer.processor

    encodings = tokenizer.encode_chat_batch(conversations, mode="training", reserved="allow", num_threads=threads)
    tokens = sum(len(e) for e in encodings)
    print(f"tokenizer {args.tokenizer} ({tokenizer.vocab_size} pieces), data: {source}", file=sys.stderr)
    print(f"{len(conversations)} conversations ({refused} refused), {len(contents)} messages, "
          f"{megabytes:.1f} MB of content, {tokens} tokens, {threads} threads\n", file=sys.stderr)

    phases = {}  # name -> (seconds, peak MiB or None)

    def measure(name, run, *, repeat=args.repeat, seconds=None) -> float:
        """Time ``run`` (best of ``repeat``) and, unless --no-memory, its peak memory."""
        if seconds is None:
            seconds = best_of(repeat, run, getattr(tokenizer, "clear_segment_cache", None))
        phases[name] = (seconds, peak_mib(run) if args.memory else None)
        return seconds

    def floor():
        processor.encode(contents, num_threads=threads)

    def floor_numpy():
        processor.encode(contents, num_threads=threads, return_type="numpy")

    floor_time = min(best_of(args.repeat, floor), best_of(args.repeat, floor_numpy))
    measure("floor: SentencePiece encode of the contents", floor_numpy, seconds=floor_time)

    def batch_api():
        tokenizer.encode_chat_batch(conversations, mode="training", reserved="allow", num_threads=threads)

    measure("gemma-turns batch API (ids + loss masks)", batch_api)

    def batch_api_refuse():
        tokenizer.encode_chat_batch(conversations, mode="training", num_threads=threads)

    measure("  same, with the reserved-text guard (default)", batch_api_refuse)

    if not args.skip_single:
        def single_api():
            for messages in conversations:
                tokenizer.encode_chat(messages, mode="training", reserved="allow")

        measure("gemma-turns one-conversation API (1 thread)", single_api, repeat=1)

    ids = [e.ids for e in encodings]
    masks = [e.loss_mask for e in encodings]
    cut = [truncate(i, m, max_length=args.max_length) for i, m in zip(ids, masks)]
    cut_ids, cut_masks = [c[0] for c in cut], [c[1] for c in cut]

    def padding():
        for start in range(0, len(cut_ids), 32):
            pad_batch(cut_ids[start:start + 32], loss_masks=cut_masks[start:start + 32],
                      pad_id=tokenizer.specials.pad, pad_to_multiple=128)

    measure("pad (right, batches of 32, to a multiple of 128)", padding)

    def packing():
        rows = best_fit([len(i) for i in cut_ids], capacity=args.max_length)
        pack_rows(rows, cut_ids, loss_masks=cut_masks, pad_id=tokenizer.specials.pad, row_length=args.max_length)

    measure(f"pack (best fit, rows of {args.max_length})", packing)

    def structural():
        report = validate(encodings, tokenizer, expect="training", canonical=False, num_threads=threads)
        if not report.ok:
            raise SystemExit(f"validation failed on encoder output:\n{report}")

    validation_time = measure("validate, structural rules", structural)

    def canonical():
        validate(encodings, tokenizer, expect="training", canonical=True, num_threads=threads)

    measure("validate, with canonical re-encoding", canonical, repeat=1)

    with tempfile.TemporaryDirectory() as scratch:
        jsonl = Path(scratch) / "data.jsonl"
        with open(jsonl, "w", encoding="utf-8") as handle:
            for record in conversations:
                record = record if isinstance(record, dict) else {"messages": record}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        lines = jsonl.read_bytes().splitlines()

        def parse_and_floor():
            parsed = [json.loads(line) for line in lines]
            texts = [text for record in parsed for text in texts_of(record)]
            processor.encode(texts, num_threads=threads, return_type="numpy")

        cli_floor = measure("CLI floor: json.loads + SentencePiece encode", parse_and_floor)

        def cli():
            with contextlib.redirect_stderr(io.StringIO()):  # the CLI's summary, each run
                code = cli_main(["encode", "--tokenizer", args.tokenizer, "--mode", "training",
                                 "--reserved", "allow", "--threads", str(threads), str(jsonl),
                                 "-o", str(Path(scratch) / "out.npz"), "--pack",
                                 "--max-length", str(args.max_length), "--truncation", "truncate"])
            if code != 0:
                raise SystemExit(f"the CLI exited {code}")

        measure("CLI: JSONL file -> packed npz", cli)

    if args.hf_tokenizer:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(args.hf_tokenizer)

        def hf_template():
            for messages in conversations:
                hf.apply_chat_template(messages, tokenize=True)

        measure("transformers apply_chat_template(tokenize=True)", hf_template, repeat=1)

    print(f"{'phase':<52} {'seconds':>8} {'x floor':>8} {'MB/s':>7} {'Mtok/s':>7}"
          + (f" {'peak MiB':>9}" if args.memory else ""))
    for name, (seconds, peak) in phases.items():
        base = cli_floor if name.startswith("CLI:") else floor_time
        line = (f"{name:<52} {seconds:8.3f} {seconds / base:8.2f} {megabytes / seconds:7.1f} "
                f"{tokens / seconds / 1e6:7.2f}")
        if peak is not None:
            line += f" {peak:9.1f}"
        print(line)
    if hasattr(tokenizer, "clear_segment_cache"):
        tokenizer.clear_segment_cache()
        tokenizer.encode_chat_batch(conversations, mode="training", num_threads=threads)
        served = tokenizer.segment_cache.served_tokens
        print(f"\nsegment cache, one pass: {served} of {tokens} ids ({served / tokens:.1%}) served from it")
    print(f"\nstructural validation is {floor_time / validation_time:.1f} x faster than encoding the same tokens;"
          f" the CLI ratio is to its own floor (json.loads + encode).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
