"""Mutation test: random corruptions of encoder output must all be flagged.

A corruption (delete, insert, swap or replace a token; shift a loss-mask bit) that yields
another valid sequence is not a corruption: it is recognised by parsing the mutated ids and
encoding the result again with the same options; when that gives the mutated ids and mask
back, the sequence is valid, and the validator must find nothing (no false alarm). Every other
mutation must get at least one finding. The detection rate is printed (``pytest -s``) and
must be 100%.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from conftest import SAMPLE

from gemma_turns.errors import ConversationError
from gemma_turns.parser import ParseError, parse
from gemma_turns.validator import validate

EXTRA = [
    [
        {"role": "system", "content": "  Be brief.\n"},
        {"role": "user", "content": "Hi <end_of_turn> there"},
        {"role": "model", "content": "a"},
        {"role": "user", "content": "b"},
    ],
    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}, {"role": "model", "content": "A cat."}],
]
CHAT_OPTIONS = [
    {"mode": "training"},
    {"mode": "training", "train_on": "last", "train_newline": True},
    {"mode": "inference"},
    {"mode": "inference", "add_generation_prompt": False},
]
PT_TEXTS = ["Hello world.", " leading and trailing ", "a<mask>b", ""]


def expectation(options: dict) -> dict:
    """validate() keywords that describe what the encoder made with ``options``."""
    if options["mode"] == "pt":
        return {"expect": "pt", "endings": ["eos" if options["add_eos"] else "text"]}
    if options["mode"] == "training":
        return {
            "expect": "training",
            "train_on": options.get("train_on", "all"),
            "train_newline": options.get("train_newline", False),
        }
    endings = {
        None: ["generation_prompt", "model_turn"],
        True: ["generation_prompt"],
        False: ["model_turn", "user_turn"],
    }[options.get("add_generation_prompt")]
    return {"expect": "inference", "endings": endings, "train_newline": options.get("train_newline", False)}


def encode_own_parse(tokenizer, ids, options):
    """The encoding of the conversation the ids parse to, or None if there is none."""
    try:
        parsed = parse(ids, tokenizer, expect=options["mode"])
    except ParseError:
        return None
    try:
        if options["mode"] == "pt":
            if parsed.ending != ("eos" if options["add_eos"] else "text"):
                return None
            return tokenizer.encode_pt(parsed.text, add_eos=options["add_eos"], reserved="escape")
        return tokenizer.encode_chat(parsed.encodable_messages(), reserved="escape", **options)
    except (ConversationError, ValueError):
        return None


def cases(tokenizer):
    conversations = [json.loads(line)["messages"] for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for messages in conversations + EXTRA:
        for options in CHAT_OPTIONS:
            try:
                out.append((options, tokenizer.encode_chat(messages, reserved="escape", **options)))
            except ConversationError:
                continue
    for text in PT_TEXTS:
        for add_eos in (True, False):
            options = {"mode": "pt", "add_eos": add_eos}
            out.append((options, tokenizer.encode_pt(text, add_eos=add_eos, reserved="escape")))
    return out


def mutate(rng: random.Random, ids: list[int], mask: list[int], interesting: list[int], vocab_size: int):
    ids, mask = list(ids), list(mask)
    kind = rng.choice(["delete", "insert", "swap", "replace", "mask"])
    i = rng.randrange(len(ids))
    new = rng.choice(interesting) if rng.random() < 0.5 else rng.randrange(vocab_size)
    if kind == "delete":
        del ids[i], mask[i]
    elif kind == "insert":
        ids.insert(i, new)
        mask.insert(i, rng.choice([0, 1, mask[i]]))
    elif kind == "swap":
        j = min(len(ids) - 1, i + 1) if rng.random() < 0.5 else rng.randrange(len(ids))
        ids[i], ids[j] = ids[j], ids[i]
        mask[i], mask[j] = mask[j], mask[i]
    elif kind == "replace":
        ids[i] = new
    else:  # shift a mask bit to a neighbour (or flip it at the ends)
        j = i + rng.choice([-1, 1])
        if 0 <= j < len(mask) and mask[i] != mask[j]:
            mask[i], mask[j] = mask[j], mask[i]
        else:
            mask[i] ^= 1
    return kind, ids, mask


def run_mutations(tokenizer, count: int, seed: int) -> dict:
    rng = random.Random(seed)
    s = tokenizer.specials
    interesting = [s.bos, s.eos, s.pad, s.unk, s.start_of_turn, s.end_of_turn, s.newline, s.start_of_image]
    interesting += [s.end_of_image, tokenizer.reserved_ids["<mask>"]]
    interesting += [ids[0] for ids in tokenizer.processor.encode(["user", "model", " ", "\n\n", "  x"])]
    pool = cases(tokenizer)
    stats = {"mutations": 0, "valid": 0, "detected": 0}
    missed, false_alarms = [], []
    for _ in range(count):
        options, encoding = rng.choice(pool)
        kind, ids, mask = mutate(rng, encoding.ids.tolist(), encoding.loss_mask.tolist(), interesting, tokenizer.vocab_size)
        stats["mutations"] += 1
        again = encode_own_parse(tokenizer, ids, options)
        valid = again is not None and again.ids.tolist() == ids and again.loss_mask.tolist() == mask
        report = validate([ids], tokenizer, loss_mask=[mask], attention_mask=[np.ones(len(ids), np.int8)], **expectation(options))
        if valid:
            stats["valid"] += 1
            if not report.ok:
                false_alarms.append((kind, options, ids, report.format(3)))
        elif report.ok:
            missed.append((kind, options, [tokenizer.piece(i) if 0 <= i < tokenizer.vocab_size else i for i in ids]))
        else:
            stats["detected"] += 1
    corrupt = stats["mutations"] - stats["valid"]
    stats["rate"] = stats["detected"] / corrupt if corrupt else 1.0
    stats["missed"], stats["false_alarms"] = missed, false_alarms
    return stats


def _check(stats, name):
    print(
        f"\n{name}: {stats['mutations']} mutations, {stats['valid']} gave another valid sequence, "
        f"{stats['detected']} of {stats['mutations'] - stats['valid']} corruptions flagged: "
        f"detection rate {stats['rate']:.1%}"
    )
    assert not stats["missed"], stats["missed"][:3]
    assert not stats["false_alarms"], stats["false_alarms"][:3]
    assert stats["rate"] == 1.0
    assert stats["detected"] > stats["mutations"] // 3  # the mutations do corrupt


def test_mutations_on_the_fixture_tokenizer(fixture_tokenizer):
    _check(run_mutations(fixture_tokenizer, 600, seed=20261121), "fixture tokenizer")


@pytest.mark.real_tokenizer
def test_mutations_on_the_real_tokenizer(real_tokenizer):
    _check(run_mutations(real_tokenizer, 250, seed=3), "real Gemma 3 tokenizer")
