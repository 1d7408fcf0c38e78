"""Gemma 4 sequences: every encoder output validates and parses back to its normalized record;
each Gemma 4 rule catches its corruption, named and located; the other pipelines' bugs get a
precise message; a dialect mix-up is one finding."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import GOLDEN
from hypothesis import HealthCheck, given, settings
from strategies import gemma4_records

from gemma_turns import ParseError
from gemma_turns.chat_format import Marker
from gemma_turns.parser import normalized_record, parse
from gemma_turns.validator import label_tokens, validate

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CALL = {"type": "function", "id": "c1", "function": {"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}}
TOOL_USE = [
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "reasoning_content": "Ask the tool.", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "Rain"}, {"type": "image"}]},
    {"role": "assistant", "content": "It rains."},
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
RECORD = {"messages": [{"role": "system", "content": "Be brief."}, *TOOL_USE], "tools": TOOLS,
          "chat_template_kwargs": {"enable_thinking": True}}


def rules(report) -> set[str]:
    return set(report.counts)


def marker(tok, m: Marker) -> int:
    return tok.specials.markers[m]


def training(tok, record=RECORD, **options):
    encoding = tok.encode_chat(record, mode="training", **options)
    return encoding.ids.tolist(), encoding.loss_mask.tolist()


def check(tok, ids, mask=None, **options):
    options.setdefault("expect", "training")
    return validate([ids], tok, loss_mask=None if mask is None else [mask], **options)


# -- what the encoder makes passes, and parses back -------------------------------------------


@PROPERTY
@given(record=gemma4_records())
def test_training_encodings_validate_and_parse_back(any4_tokenizer, record):
    tok = any4_tokenizer
    options = {"mode": "training", "earlier_reasoning": "drop"}
    encoding = tok.encode_chat(record, **options)
    report = validate(encoding, tok, expect="training")
    assert report.ok, report.format(5)
    parsed = parse(encoding, tok)
    assert parsed.record == normalized_record(record, tok.dialect, **options)
    assert tok.encode_chat(parsed.record, **options).ids.tolist() == encoding.ids.tolist()


@PROPERTY
@given(record=gemma4_records(end_with_model=False))
def test_prompts_validate_for_their_checkpoint_and_parse_back(any4_tokenizer, record):
    tok = any4_tokenizer
    for checkpoint in ("e2b", "31b"):
        options = {"mode": "inference", "checkpoint": checkpoint}
        encoding = tok.encode_chat(record, **options)
        endings = ["generation_prompt", "model_turn"]  # no prompt after the model's own answer
        report = validate(encoding, tok, expect="inference", endings=endings, checkpoint=checkpoint)
        assert report.ok, report.format(5)
        parsed = parse(encoding, tok)
        assert parsed.record == normalized_record(record, tok.dialect, **options)
        assert parsed.add_generation_prompt or parsed.ending in ("hand_over", "after_results", "model_turn")


@pytest.mark.parametrize("path", sorted((GOLDEN / "gemma4").glob("*.json")), ids=lambda p: p.stem)
def test_golden_cases_validate_parse_and_encode_back(any4_tokenizer, path):
    tok = any4_tokenizer
    case = json.loads(path.read_text())
    options = case["options"]
    encoding = tok.encode_chat(case["record"], **options)
    expect = {"expect": options["mode"], "checkpoint": options.get("checkpoint")}
    if options["mode"] == "inference":
        expect["endings"] = ["generation_prompt", "model_turn"]
    assert validate(encoding, tok, **expect).ok
    parsed = parse(encoding, tok)
    assert parsed.record == normalized_record(case["record"], tok.dialect, **options)
    again = tok.encode_chat(parsed.encodable_messages(), **options)
    assert again.ids.tolist() == encoding.ids.tolist()


def test_the_parsed_record_in_the_input_convention(fixture4_tokenizer):
    parsed = parse(fixture4_tokenizer.encode_chat(RECORD, mode="training"), fixture4_tokenizer)
    assert parsed.record == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "model", "content": "It rains.", "reasoning_content": "Ask the tool.",
             "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}}]},
            {"role": "tool", "name": "get_weather", "content": [{"type": "text", "text": "Rain"}, {"type": "image"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {
            "properties": {"city": {"type": "STRING"}}, "type": "OBJECT"}}}],
        "chat_template_kwargs": {"enable_thinking": True},
    }
    assert parsed.ending == "model_turn"


# -- structure -----------------------------------------------------------------------------------


def test_each_misplaced_marker_is_named_and_located(fixture4_tokenizer):
    tok = fixture4_tokenizer
    ids, mask = training(tok)
    user = ids.index(marker(tok, Marker.TURN_OPEN), 2) + 3  # the user turn's text
    cases = {
        Marker.THINK: "only at the very start of the system turn",
        Marker.TOOL_OPEN: "tool declarations belong in the system turn",
        Marker.CALL_OPEN: "belong in model turns",
        Marker.QUOTE: "outside a declaration, call or result",
    }
    for m, words in cases.items():
        broken = ids[:user] + [marker(tok, m)] + ids[user:]
        report = check(tok, broken, mask[:user] + [0] + mask[user:])
        found = [f for f in report.findings if f.rule == "misplaced_marker"]
        assert found and found[0].position == user and words in found[0].message, report.format(3)


def test_a_channel_after_calls_and_a_call_left_open(fixture4_tokenizer):
    tok = fixture4_tokenizer
    ids, mask = training(tok)
    close = ids.index(marker(tok, Marker.CALL_CLOSE))
    after_call = ids[: close + 1] + [marker(tok, Marker.CHANNEL_OPEN)] + ids[close + 1 :]
    report = check(tok, after_call, canonical=False)
    assert "calls are followed by their results" in report.findings[0].message
    unclosed = ids[:close] + ids[close + 1 :]
    report = check(tok, unclosed, mask[:close] + mask[close + 1 :])
    assert "misplaced_marker" in rules(report) and "never closed" in report.format()
    assert report.counts["misplaced_marker"] == 1  # one finding, not one per mark after it
    quote = ids.index(marker(tok, Marker.QUOTE)) + 1  # inside the declaration
    inside = ids[:quote] + [marker(tok, Marker.THINK)] + ids[quote:]
    report = check(tok, inside, canonical=False)
    assert report.counts == {"misplaced_marker": 1}, report.format()
    with pytest.raises(ParseError, match="misplaced_marker"):
        parse(unclosed, tok)


def test_system_turn_only_first(fixture4_tokenizer):
    tok = fixture4_tokenizer
    ids, _ = training(tok)
    system_turn = ids[1 : ids.index(marker(tok, Marker.TURN_CLOSE)) + 2]
    second = ids.index(marker(tok, Marker.TURN_OPEN), 2)
    late = ids[:second] + system_turn + ids[second:]
    report = check(tok, late, canonical=False)
    assert "misplaced_system" in rules(report)


def test_thought_text_tool_syntax_and_results_balance(fixture4_tokenizer):
    tok = fixture4_tokenizer
    ids, mask = training(tok)
    channel = ids.index(marker(tok, Marker.CHANNEL_OPEN))
    end = ids.index(marker(tok, Marker.CHANNEL_CLOSE))
    thought = tok.processor.encode("thought")
    empty = ids[: channel + 1] + thought + ids[end:]
    assert "bad_thought" in rules(check(tok, empty))  # thought text is read in the decoding tier
    quote = ids.index(marker(tok, Marker.QUOTE), ids.index(marker(tok, Marker.CALL_OPEN)))
    no_quote = ids[:quote] + ids[quote + 1 :]
    report = check(tok, no_quote, mask[:quote] + mask[quote + 1 :])
    assert "bad_tool_syntax" in rules(report)
    assert "an odd number, so a string is never closed" in next(f.message for f in report.findings if f.rule == "bad_tool_syntax")
    swapped = ids[:]
    body = ids.index(marker(tok, Marker.CALL_OPEN)) + 1
    swapped[body] = tok.processor.encode("response")[0]  # call: spelled otherwise, quotes intact
    report = check(tok, swapped, canonical=True)
    assert "the call cannot be read back" in next(f.message for f in report.findings if f.rule == "bad_tool_syntax")
    call = ids[ids.index(marker(tok, Marker.CALL_OPEN)) : ids.index(marker(tok, Marker.CALL_CLOSE)) + 1]
    at = ids.index(marker(tok, Marker.CALL_CLOSE)) + 1
    two_calls = ids[:at] + call + ids[at:]
    report = check(tok, two_calls, canonical=False)
    assert "unbalanced_results" in rules(report)
    assert "2 tool calls here, but 1 result follow" in report.format()


# -- endings -----------------------------------------------------------------------------------


def test_the_prompt_follows_the_checkpoint_and_the_thinking_switch(fixture4_tokenizer):
    tok = fixture4_tokenizer
    messages = [{"role": "user", "content": "Hi"}]
    small = tok.encode_chat(messages, mode="inference", checkpoint="e2b")
    large = tok.encode_chat(messages, mode="inference", checkpoint="31b")
    assert validate(small, tok, expect="inference").ok and validate(large, tok, expect="inference").ok
    assert validate(small, tok, expect="inference", checkpoint="e4b").ok
    wrong = validate(small, tok, expect="inference", checkpoint="31b")
    assert rules(wrong) == {"bad_ending"} and "empty thought channel" in wrong.findings[0].message
    wrong = validate(large, tok, expect="inference", checkpoint="e2b")
    assert rules(wrong) == {"bad_ending"} and "only the large checkpoints" in wrong.findings[0].message
    thinking = {"messages": messages, "chat_template_kwargs": {"enable_thinking": True}}
    on = tok.encode_chat(thinking, mode="inference")
    assert validate(on, tok, expect="inference", checkpoint="31b").ok
    assert parse(large, tok).ending == "empty_thought_prompt" and parse(large, tok).messages == messages
    with pytest.raises(ValueError, match="unknown gemma4 checkpoint"):
        validate(small, tok, checkpoint="gemma-4-7b")


def test_open_model_turns_end_as_the_mode_allows(fixture4_tokenizer):
    tok = fixture4_tokenizer
    hand_over = tok.encode_chat(TOOL_USE[:2], mode="training")
    assert validate(hand_over, tok, expect="training").ok
    assert parse(hand_over, tok).ending == "hand_over"
    after = tok.encode_chat(TOOL_USE[:3], mode="inference")
    assert validate(after, tok, expect="inference").ok and parse(after, tok).ending == "after_results"
    report = validate(after, tok, expect="training")
    assert "bad_ending" in rules(report)
    truncated = hand_over.ids[:-3]
    report = validate([truncated], tok, expect="training")
    assert "unclosed_turn" in rules(report)


# -- masks and the other pipelines' bugs -------------------------------------------------------


def test_mask_bugs_are_named(fixture4_tokenizer):
    tok = fixture4_tokenizer
    ids, mask = training(tok)
    last_close = len(ids) - 2
    untrained = mask[:last_close] + [0] + mask[last_close + 1 :]
    report = check(tok, ids, untrained)
    assert "is untrained, so it never learns to end its turn" in report.findings[0].message
    result = ids.index(marker(tok, Marker.RESPONSE_CLOSE))
    trained_result = [1 if ids.index(marker(tok, Marker.RESPONSE_OPEN)) < i <= result else b for i, b in enumerate(mask)]
    report = check(tok, ids, trained_result)
    assert rules(report) == {"loss_mask"}
    assert "a tool's result is trained, but the tool wrote it" in report.findings[0].message


def test_bos_and_eos_bugs_are_named(fixture4_tokenizer):
    tok = fixture4_tokenizer
    ids, mask = training(tok)
    text_bos = tok.processor.encode("<bos>")
    doubled = check(tok, ids[:1] + text_bos + ids[1:], canonical=False)
    assert "doubled BOS" in doubled.findings[0].message
    spelled = check(tok, text_bos + ids[1:], canonical=False)
    assert "no BOS id" in spelled.format()
    missing = check(tok, ids[1:], canonical=False)
    assert "bos_missing" in rules(missing)
    eos = ids[:-2] + [tok.specials.eos] + ids[-1:]
    report = check(tok, eos, canonical=False)
    assert "EOS where <turn|> belongs" in next(f.message for f in report.findings if f.rule == "eos_inside")


def test_a_gemma3_layout_in_a_gemma4_vocabulary_is_one_finding(fixture4_tokenizer, fixture_tokenizer):
    gemma3_text = fixture_tokenizer.format_chat([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}, {"role": "model", "content": "Yo"}])
    ids = [fixture4_tokenizer.specials.bos] + fixture4_tokenizer.processor.encode(gemma3_text)
    report = validate([ids], fixture4_tokenizer)
    assert rules(report) == {"dialect_mismatch"} and report.total == 1
    assert "formatted for gemma3" in report.findings[0].message
    gemma4_text = fixture4_tokenizer.format_chat(RECORD["messages"], mode="training")
    ids = [fixture_tokenizer.specials.bos] + fixture_tokenizer.processor.encode(gemma4_text)
    report = validate([ids], fixture_tokenizer, expect="training")
    assert rules(report) == {"dialect_mismatch"} and "formatted for gemma4" in report.findings[0].message


def test_gemma4_ids_read_with_gemma3_and_gemma2_ids(real_tokenizer, real4_tokenizer):
    encoding = real4_tokenizer.encode_chat(RECORD, mode="training")
    report = validate(encoding.ids, real_tokenizer, expect="training")
    assert rules(report) == {"dialect_mismatch"} and "system turn of its own" in report.findings[0].message
    plain = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    same = real4_tokenizer.encode_chat(plain, mode="training")
    assert same.ids.tolist() == real_tokenizer.encode_chat(plain, mode="training").ids.tolist()  # undetectable, and fine
    gemma2 = np.array(real_tokenizer.encode_chat(plain, mode="training").ids)
    gemma2 = np.where(gemma2 == 105, 106, np.where(gemma2 == 106, 107, gemma2))  # Gemma 2's marker ids
    report = validate([gemma2], real4_tokenizer, expect="training", canonical=False)
    assert rules(report) == {"foreign_ids"} and "Gemma 2" in report.findings[0].message  # another vocabulary


def test_inspect_labels_channels_calls_and_results(fixture4_tokenizer):
    tok = fixture4_tokenizer
    ids, _ = training(tok)
    labels = label_tokens(ids, tok)
    parts = {part for _, part in labels}
    assert {"thought", "call", "result", "declaration", "think", "hand-over"} <= parts
    i = ids.index(marker(tok, Marker.RESPONSE_CLOSE))
    assert labels[i] == ("model", "result")
    assert labels[ids.index(marker(tok, Marker.RESPONSE_OPEN))] == ("model", "hand-over")


def test_expectations_follow_the_encode_options_the_manifest_records(fixture4_tokenizer):
    from gemma_turns import EncodeOptions
    from gemma_turns.options import validate_keywords as expectations

    tok = fixture4_tokenizer
    options = EncodeOptions(mode="inference", checkpoint="31b")
    encoding = tok.encode_chat([{"role": "user", "content": "Hi"}], options=options)
    assert expectations(options) == {"expect": "inference", "endings": ["generation_prompt", "model_turn"],
                                     "checkpoint": "31b", "train_on": "all", "train_newline": False}
    assert validate(encoding, tok, **expectations(options.as_dict())).ok
    small = EncodeOptions(mode="inference", checkpoint="e2b").as_dict()
    assert rules(validate(encoding, tok, **expectations(small))) == {"bad_ending"}
    assert "checkpoint" not in expectations({"mode": "inference", "checkpoint": "31b", "add_generation_prompt": False})
    assert expectations({"mode": "training", "train_on": "last"}) == {"expect": "training", "train_on": "last"}


def test_inspect_command_shows_a_gemma4_sequence(tmp_path, capsys, fixture4_tokenizer):
    from conftest import FIXTURE4_MODEL

    from gemma_turns.cli import main

    tok = fixture4_tokenizer
    encoding = tok.encode_chat(RECORD, mode="training")
    path = tmp_path / "ids.jsonl"
    path.write_text(json.dumps(encoding.to_dict()) + "\n")
    code = main(["inspect", "--tokenizer", str(FIXTURE4_MODEL), str(path), "--expect", "training"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line.split() for line in out.splitlines()[2:]]
    by_part = {row[4]: row for row in rows if len(row) >= 6}
    assert by_part["hand-over"][3:6] == ["model", "hand-over", "1"]
    assert by_part["result"][5] == "0" and by_part["call"][5] == "1" and by_part["thought"][5] == "1"
    assert {"think", "declaration"} <= set(by_part)
