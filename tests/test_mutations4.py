"""Mutation test for Gemma 4: structural corruptions of encoder output must all be flagged.

Each mutation is one of the corruptions issue 10 lists: a marker, role, newline or BOS
deleted, duplicated or replaced; a special id inserted into content; a mask bit flipped; a
tool result's mask set; a call left unclosed; a ``<|"|>`` removed; plus random token edits.
A mutation that yields another valid sequence is recognised as the mutation tests for Gemma 3
do: parse it, encode the record again with the same options, and compare ids and mask. Those
must pass; every other one must get a finding. Counts are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest
from conftest import GOLDEN, SAMPLE4

from gemma_turns.chat_format import Marker
from gemma_turns.errors import ConversationError
from gemma_turns.parser import ParseError, parse
from gemma_turns.validator import validate

OPTIONS = [
    {"mode": "training"},
    {"mode": "training", "train_on": "last", "train_newline": True},
    {"mode": "inference", "checkpoint": "e2b"},
    {"mode": "inference", "checkpoint": "31b"},
    {"mode": "inference", "checkpoint": "31b", "add_generation_prompt": False},
]
THINKING = {"chat_template_kwargs": {"enable_thinking": True}}


def records():
    out = [json.loads(line) for line in SAMPLE4.read_text(encoding="utf-8").splitlines() if line.strip()]
    out += [json.loads(path.read_text())["record"] for path in sorted((GOLDEN / "gemma4").glob("*.json"))]
    out += [{**r, **THINKING} for r in out[:6] if isinstance(r, dict)]
    return out


def expectation(options: dict) -> dict:
    if options["mode"] == "training":
        return {"expect": "training", "train_on": options.get("train_on", "all"),
                "train_newline": options.get("train_newline", False)}
    endings = {None: ["generation_prompt", "model_turn"], False: ["model_turn", "user_turn"]}
    return {"expect": "inference", "endings": endings[options.get("add_generation_prompt")],
            "checkpoint": options["checkpoint"] if options.get("add_generation_prompt") is not False else None}


def cases(tok):
    out = []
    for record in records():
        for options in OPTIONS:
            try:
                encoding = tok.encode_chat(record, reserved="escape", earlier_reasoning="drop", **options)
            except ConversationError:
                continue
            out.append((options, encoding.ids.tolist(), encoding.loss_mask.tolist()))
    return out


def encode_own_parse(tok, ids, options):
    try:
        parsed = parse(ids, tok, expect=options["mode"])
        again = tok.encode_chat(parsed.encodable_messages(), reserved="escape", earlier_reasoning="drop", **options)
    except (ParseError, ConversationError, ValueError):
        return None
    return again.ids.tolist(), again.loss_mask.tolist()


class Mutator:
    def __init__(self, tok, rng):
        self.tok, self.rng = tok, rng
        m = tok.specials.markers
        self.markers = set(m.values())
        self.quote, self.call_close = m[Marker.QUOTE], m[Marker.CALL_CLOSE]
        self.response_open, self.response_close = m[Marker.RESPONSE_OPEN], m[Marker.RESPONSE_CLOSE]
        s = tok.specials
        roles = [tok.processor.encode(r)[0] for r in ("system", "user", "model")]
        self.specials = sorted(self.markers | {s.bos, s.eos, s.pad, s.unk, s.newline} | set(roles))
        self.structural = self.markers | {s.bos, s.newline} | set(roles)

    def __call__(self, ids, mask):
        rng, ids, mask = self.rng, list(ids), list(mask)
        kinds = ["structure", "insert_special", "flip_mask", "result_mask", "unclose_call", "remove_quote", "random"]
        kind = rng.choice(kinds)
        if kind == "structure":
            places = [i for i, x in enumerate(ids) if x in self.structural]
            i = rng.choice(places)
            how = rng.choice(["delete", "duplicate", "replace"])
            if how == "delete":
                del ids[i], mask[i]
            elif how == "duplicate":
                ids.insert(i, ids[i])
                mask.insert(i, mask[i])
            else:
                ids[i] = rng.choice([x for x in self.specials if x != ids[i]])
            return f"structure_{how}", ids, mask
        if kind == "insert_special":
            i = rng.randrange(1, len(ids))
            ids.insert(i, rng.choice(self.specials))
            mask.insert(i, rng.choice([0, 1]))
            return kind, ids, mask
        if kind == "flip_mask":
            mask[rng.randrange(len(mask))] ^= 1
            return kind, ids, mask
        if kind == "result_mask" and self.response_close in ids:
            close = rng.choice([i for i, x in enumerate(ids) if x == self.response_close])
            opening = max(i for i in range(close) if ids[i] == self.response_open)
            for i in range(opening + 1, close + 1):
                mask[i] = 1
            return kind, ids, mask
        if kind == "unclose_call" and self.call_close in ids:
            i = rng.choice([i for i, x in enumerate(ids) if x == self.call_close])
            del ids[i], mask[i]
            return kind, ids, mask
        if kind == "remove_quote" and self.quote in ids:
            i = rng.choice([i for i, x in enumerate(ids) if x == self.quote])
            del ids[i], mask[i]
            return kind, ids, mask
        i = rng.randrange(len(ids))
        ids[i] = rng.randrange(self.tok.vocab_size)
        return "random", ids, mask


def run_mutations(tok, count: int, seed: int) -> dict:
    rng = random.Random(seed)
    mutate = Mutator(tok, rng)
    pool = cases(tok)
    tried, valid, detected = Counter(), Counter(), Counter()
    missed, false_alarms = [], []
    for options, ids0, mask0 in pool:  # no encoder output is flagged
        report = validate([ids0], tok, loss_mask=[mask0], **expectation(options))
        if not report.ok:
            false_alarms.append(("original", options, report.format(3)))
    for _ in range(count):
        options, ids0, mask0 = rng.choice(pool)
        kind, ids, mask = mutate(ids0, mask0)
        if (ids, mask) == (ids0, mask0):
            continue
        tried[kind] += 1
        again = encode_own_parse(tok, ids, options)
        report = validate([ids], tok, loss_mask=[mask], attention_mask=[np.ones(len(ids), np.int8)], **expectation(options))
        if again == (ids, mask):
            valid[kind] += 1
            if not report.ok:
                false_alarms.append((kind, options, report.format(3)))
        elif report.ok:
            missed.append((kind, options, tok.decode([i for i in ids if 0 <= i < tok.vocab_size])[-200:]))
        else:
            detected[kind] += 1
    return {"pool": len(pool), "tried": tried, "valid": valid, "detected": detected,
            "missed": missed, "false_alarms": false_alarms}


def _check(stats, name):
    total, valid, detected = (sum(stats[k].values()) for k in ("tried", "valid", "detected"))
    by_kind = ", ".join(f"{k} {stats['detected'][k]}/{stats['tried'][k] - stats['valid'][k]}" for k in sorted(stats["tried"]))
    print(f"\n{name}: {stats['pool']} encoder outputs, none flagged: {not stats['false_alarms']}; "
          f"{total} mutations, {valid} gave another valid sequence, {detected} of {total - valid} "
          f"corruptions flagged ({by_kind})")
    assert not stats["false_alarms"], stats["false_alarms"][:3]
    assert not stats["missed"], stats["missed"][:3]
    assert detected > total // 2


def test_gemma4_mutations_on_the_fixture_tokenizer(fixture4_tokenizer):
    _check(run_mutations(fixture4_tokenizer, 1500, seed=10), "Gemma 4 fixture tokenizer")


@pytest.mark.real_tokenizer
def test_gemma4_mutations_on_the_real_tokenizer(real4_tokenizer):
    _check(run_mutations(real4_tokenizer, 600, seed=11), "real Gemma 4 tokenizer")
