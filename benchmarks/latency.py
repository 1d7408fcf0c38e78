"""One conversation at a time, as a server meets it: latency percentiles of ``encode_chat``
beside SentencePiece's encode of the same rendered text, and beside Hugging Face's
``apply_chat_template(tokenize=True)`` when a tokenizer folder is given.

    python benchmarks/latency.py --tokenizer gemma3.model [--hf-tokenizer DIR] [--calls 10000]

Each conversation is encoded ``--calls`` times by each contender, in interleaved blocks of
100 calls so that all see the same machine; the table gives p50 and p99 in microseconds and
their ratio to SentencePiece's. Inference mode (the prompt a server sends). ``encode_chat``
runs twice: with the segment cache off, every call is a conversation never seen before (its
whole text goes to SentencePiece at once); with it on, as a server resending a conversation
or a system prompt meets it, its texts seen before come from the cache. Not a test.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gemma_turns import GemmaTokenizer  # noqa: E402

CONVERSATIONS = {
    "two turns, short": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "And of Italy?"},
    ],
    "system + 5 turns": [
        {"role": "system", "content": "You are a concise assistant. Answer in one or two sentences."},
        {"role": "user", "content": "Explain what a tokenizer does."},
        {"role": "assistant", "content": "It splits text into pieces from a fixed vocabulary and maps each to an id."},
        {"role": "user", "content": "Why do chat models need special tokens?"},
        {"role": "assistant", "content": "They mark where turns begin and end, so the model knows who speaks."},
        {"role": "user", "content": "Give an example with <b>HTML</b> and code: `print('hi')`."},
    ],
    "long system prompt + 2 turns": [
        {"role": "system", "content": " ".join(
            f"Rule {k}: answer politely, cite the policy section, and never promise a refund before checking."
            for k in range(16))},
        {"role": "user", "content": "Can I change my flight to Friday?"},
        {"role": "assistant", "content": "Yes, for a fee of 50 euros, if seats are left."},
        {"role": "user", "content": "Do it."},
    ],
}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city.",
                                           "parameters": {"type": "object", "required": ["city"],
                                                          "properties": {"city": {"type": "string"}}}}}]
GEMMA4 = {
    "tools, thinking, one call": {
        "messages": [
            {"role": "system", "content": "You are a travel agent."},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                "name": "get_weather", "arguments": {"city": "Oslo"}}}]},
            {"role": "tool", "name": "get_weather", "content": "Rain, 4 °C"},
        ],
        "tools": TOOLS,
        "chat_template_kwargs": {"enable_thinking": True},
    },
}


def percentiles(samples: list[int]) -> tuple[float, float]:
    samples = sorted(samples)
    return samples[len(samples) // 2] / 1e3, samples[int(len(samples) * 0.99)] / 1e3


def measure(contenders: dict, calls: int) -> dict[str, tuple[float, float]]:
    """p50 and p99 (µs) of each contender, run in interleaved blocks of 100 calls."""
    samples = {name: [] for name in contenders}
    clock = time.perf_counter_ns
    for _ in range(calls // 100):
        for name, call in contenders.items():
            out = samples[name]
            for _ in range(100):
                start = clock()
                call()
                out.append(clock() - start)
    return {name: percentiles(values) for name, values in samples.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--hf-tokenizer", help="a local Hugging Face tokenizer folder with the chat template")
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--checkpoint", default="31b", help="Gemma 4 checkpoint for the prompt")
    args = parser.parse_args(argv)

    tokenizer = GemmaTokenizer.load(args.tokenizer)
    uncached = GemmaTokenizer.load(args.tokenizer, segment_cache=0)
    hf = None
    if args.hf_tokenizer:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(args.hf_tokenizer)
    gemma4 = bool(tokenizer.dialect.tools)
    cases = {**CONVERSATIONS, **(GEMMA4 if gemma4 else {})}
    options = {"mode": "inference", **({"checkpoint": args.checkpoint} if gemma4 else {})}
    processor = tokenizer.processor

    print(f"{tokenizer.dialect.name}, {args.calls:,} calls each, p50 / p99 in µs (× SentencePiece)")
    gc.collect()
    for name, record in cases.items():
        text = tokenizer.format_chat(record, **options)
        messages = record["messages"] if isinstance(record, dict) else record
        contenders = {
            "SentencePiece encode of the rendered text": lambda text=text: processor.encode(text),
            "gemma-turns encode_chat, never seen before": lambda record=record: uncached.encode_chat(record, **options),
            "gemma-turns encode_chat, seen before (cached)": lambda record=record: tokenizer.encode_chat(record, **options),
        }
        if hf is not None:
            extra = record.get("chat_template_kwargs", {}) if isinstance(record, dict) else {}
            tools = record.get("tools") if isinstance(record, dict) else None
            contenders["transformers apply_chat_template(tokenize=True)"] = (
                lambda messages=messages, tools=tools, extra=extra: hf.apply_chat_template(
                    messages, tools=tools, tokenize=True, add_generation_prompt=True, **extra))
        results = measure(contenders, args.calls)
        base50, base99 = results["SentencePiece encode of the rendered text"]
        print(f"\n{name} ({len(tokenizer.encode_chat(record, **options))} ids)")
        for contender, (p50, p99) in results.items():
            print(f"  {contender:<50} {p50:8.1f} ({p50 / base50:4.1f}×) {p99:8.1f} ({p99 / base99:4.1f}×)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
