"""validate(): every rule flags its breakage at the right position; encoder output always passes."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pytest
from conftest import ROOT, SAMPLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import WITH_RESERVED, conversations

from gemma_turns.errors import ConversationError
from gemma_turns.testing import assert_valid
from gemma_turns.validator import (
    RULES,
    Finding,
    Report,
    label_tokens,
    validate,
)

CHAT = [
    {"role": "user", "content": "Who are you?"},
    {"role": "model", "content": "My name is Gemma!"},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "model", "content": "4"},
]


@pytest.fixture
def tok(fixture_tokenizer):
    return fixture_tokenizer


@pytest.fixture
def tokenizer(any_tokenizer):
    """The fixture tokenizer, and the real one when GEMMA_TOKENIZER names it (conftest)."""
    return any_tokenizer


def rules_at(report: Report) -> set[tuple[str, int]]:
    return {(f.rule, f.position) for f in report.findings}


def training(tok, messages=CHAT, **options):
    return tok.encode_chat(messages, mode="training", **options)


def inference(tok, messages=CHAT[:3], **options):
    return tok.encode_chat(messages, mode="inference", **options)


def index_of(ids, token, nth=0):
    return [k for k, i in enumerate(ids) if i == token][nth]


def first_content(ids, tok, turn=0):
    """Position of the first content token of turn ``turn``."""
    return index_of(ids, tok.specials.start_of_turn, turn) + 3


# -- every rule, one breakage each -----------------------------------------------------------


def test_valid_sequences_have_no_findings(tok):
    report = validate(training(tok), tok, expect="training")
    assert report.ok and report.findings == () and report.invalid == 0 and report.sequences == 1
    assert validate(inference(tok), tok, expect="inference").ok
    assert validate(tok.encode_pt("Hello there."), tok, expect="pt").ok


def test_id_out_of_range_and_unk(tok):
    ids = inference(tok).ids.tolist()
    k = first_content(ids, tok)
    ids[k] = tok.vocab_size
    ids[k + 1] = -5
    ids[k + 2] = tok.specials.unk
    found = rules_at(validate(ids, tok, expect="inference"))
    assert {("id_out_of_range", k), ("id_out_of_range", k + 1), ("unk", k + 2)} <= found


def test_bos_missing_inside_and_double(tok):
    ids = inference(tok).ids.tolist()
    assert ("bos_missing", 0) in rules_at(validate(ids[1:], tok))
    assert rules_at(validate([tok.specials.bos] + ids, tok)) == {("bos_inside", 1)}
    assert ("bos_inside", 6) in rules_at(validate(ids[:6] + [tok.specials.bos] + ids[6:], tok))
    empty = validate([np.zeros(0, np.int64)], tok)
    assert [(f.rule, f.position, f.token_id) for f in empty.findings] == [("bos_missing", 0, None)]


@pytest.mark.parametrize("spelled", ["<bos>", "[BOS]"])
def test_text_bos(tokenizer, spelled):
    tok = tokenizer
    ids = inference(tok).ids.tolist()
    text = tok.encode_text(spelled)
    # BOS id then BOS text: the template wrote "<bos>" and the tokenizer added BOS
    assert rules_at(validate(ids[:1] + text + ids[1:], tok)) == {("text_bos", 1)}
    # BOS text only: the tokenizer added none
    assert rules_at(validate(text + ids[1:], tok)) == {("text_bos", 0)}
    # A PT text that itself starts with BOS text is the bug too, even when the encoder made it.
    pt = tok.encode_pt(spelled + "Once upon a time").ids.tolist()
    assert ("text_bos", 1) in rules_at(validate(pt, tok, expect="pt"))


def test_eos_and_pad_inside(tok):
    ids = training(tok).ids.tolist()
    eos, pad = tok.specials.eos, tok.specials.pad
    # a chat sequence never holds EOS, not even at its end
    assert rules_at(validate(ids + [eos], tok, expect="training")) == {("eos_inside", len(ids))}
    pt = tok.encode_pt("one two three").ids.tolist()
    assert ("eos_inside", 2) in rules_at(validate(pt[:2] + [eos] + pt[2:], tok, expect="pt"))
    k = first_content(ids, tok)
    broken = ids[:k] + [pad] + ids[k + 1 :]
    found = validate([broken], tok, attention_mask=[np.ones(len(broken))], expect="training")
    assert ("pad_inside", k) in rules_at(found)


def test_padding_rules(tok):
    a, b = training(tok).ids, inference(tok).ids
    width = max(len(a), len(b)) + 3
    ids = np.zeros((2, width), np.int32)
    attention = np.zeros((2, width), np.int8)
    ids[0, : len(a)] = a
    attention[0, : len(a)] = 1
    ids[1, width - len(b) :] = b  # left padding
    attention[1, width - len(b) :] = 1
    assert validate(ids, tok, attention_mask=attention).ok
    broken = ids.copy()
    broken[0, width - 1] = 7  # a non-pad id where the attention mask is 0
    assert ("padding", width - 1) in rules_at(validate(broken, tok, attention_mask=attention))
    holes = attention.copy()
    holes[0, 4] = 0
    assert ("padding", 4) in rules_at(validate(ids, tok, attention_mask=holes))
    # without an attention mask, leading and trailing <pad> runs are padding
    assert validate(ids, tok).ok


def test_packed_segments(tok):
    a, b, c = training(tok).ids, inference(tok).ids, tok.encode_pt("plain text").ids
    width = len(a) + len(b) + 4
    ids = np.zeros((2, width), np.int32)
    segments = np.zeros((2, width), np.int32)
    ids[0, : len(a)] = a
    ids[0, len(a) : len(a) + len(b)] = b
    segments[0, : len(a)] = 1
    segments[0, len(a) : len(a) + len(b)] = 2
    ids[1, : len(c)] = c
    segments[1, : len(c)] = 1
    loss = np.zeros_like(ids, dtype=np.int8)
    loss[0, : len(a)] = training(tok).loss_mask
    loss[0, len(a) : len(a) + len(b)] = inference(tok).loss_mask
    loss[1, : len(c)] = tok.encode_pt("plain text").loss_mask
    report = validate(ids, tok, segment_ids=segments, attention_mask=(segments > 0), loss_mask=loss)
    assert report.ok, report
    # a finding inside the second segment is reported at its position in the row
    broken = ids.copy()
    broken[0, len(a) + 1] = tok.specials.bos
    assert ("bos_inside", len(a) + 1) in rules_at(validate(broken, tok, segment_ids=segments))
    # segments out of order
    swapped = segments.copy()
    swapped[0, : len(a)] = 2
    swapped[0, len(a) : len(a) + len(b)] = 1
    assert ("padding", 0) in rules_at(validate(ids, tok, segment_ids=swapped))
    # attention mask and segment ids disagree
    attention = (segments > 0).astype(np.int8)
    attention[1, width - 1] = 1
    assert ("padding", width - 1) in rules_at(validate(ids, tok, segment_ids=segments, attention_mask=attention))


def test_reserved_in_content(tok):
    ids = inference(tok).ids.tolist()
    k = first_content(ids, tok)
    mask_id = tok.reserved_ids["<mask>"]
    ids[k] = mask_id
    assert ("reserved_in_content", k) in rules_at(validate(ids, tok))
    pt = tok.encode_pt("a b c").ids.tolist()
    pt[2] = tok.specials.start_of_turn  # turn markers are reserved inside a PT text
    assert ("reserved_in_content", 2) in rules_at(validate(pt, tok, expect="pt"))
    end_of_image = tok.specials.end_of_image
    ids = inference(tok).ids.tolist()
    assert ("reserved_in_content", k) in rules_at(validate(ids[:k] + [end_of_image] + ids[k:], tok))


def test_turn_layout_rules(tok):
    s = tok.specials
    ids = training(tok).ids.tolist()
    sot, eot = index_of(ids, s.start_of_turn, 1), index_of(ids, s.end_of_turn, 0)
    word = ids[first_content(ids, tok)]
    user, model = tok.encode_text("user")[0], tok.encode_text("model")[0]
    cases = {
        "bad_start": (ids[:1] + ids[2:], 1),
        "bad_role": (ids[:sot + 1] + [word] + ids[sot + 2 :], sot + 1),
        "bad_header": (ids[: sot + 2] + [word] + ids[sot + 3 :], sot + 2),
        "roles_not_alternating": (ids[:2] + [model] + ids[3:], 2),
        "unclosed_turn": (ids[:eot] + ids[eot + 2 :], eot),  # <end_of_turn>\n lost
        "stray_end_of_turn": (ids[: eot + 2] + [s.end_of_turn] + ids[eot + 2 :], eot + 2),
        "missing_turn_newline": (ids[: eot + 1] + ids[eot + 2 :], eot + 1),
        "text_between_turns": (ids[: eot + 2] + [word] + ids[eot + 2 :], eot + 2),
    }
    for rule, (broken, position) in cases.items():
        found = rules_at(validate(broken, tok, expect="training"))
        assert (rule, position) in found, (rule, found)
    # a model turn in a second user turn's place
    swapped = list(ids)
    swapped[index_of(ids, s.start_of_turn, 2) + 1] = model
    assert ("roles_not_alternating", index_of(ids, s.start_of_turn, 2) + 1) in rules_at(validate(swapped, tok))
    assert user != model


def test_truncated_sequence_is_an_unclosed_turn(tok):
    ids = training(tok).ids.tolist()
    cut = ids[:-2]  # <end_of_turn>\n cut off
    finding = validate(cut, tok, expect="training").findings[0]
    assert (finding.rule, finding.position, finding.token_id) == ("unclosed_turn", len(cut), None)
    assert "(end)" in finding.context


def test_endings(tok):
    prompt = inference(tok)
    found = validate(prompt, tok, expect="training")
    start = index_of(prompt.ids.tolist(), tok.specials.start_of_turn, 3)
    assert rules_at(found) == {("bad_ending", start)}
    assert "generation prompt" in found.findings[0].message
    closed = training(tok)
    last_turn = index_of(closed.ids.tolist(), tok.specials.start_of_turn, 3)
    assert rules_at(validate(closed, tok, expect="inference")) == {("bad_ending", last_turn)}
    prompt_pt = tok.encode_pt("text", add_eos=False)
    assert rules_at(validate(prompt_pt, tok, expect="pt")) == {("bad_ending", len(prompt_pt))}
    # endings= narrows what passes; None accepts what the encoder makes
    assert validate(closed, tok, expect="inference", endings=["model_turn"]).ok
    assert validate([prompt, closed, prompt_pt], tok).ok
    assert rules_at(validate([tok.specials.bos], tok, expect="inference")) == {("bad_ending", 1)}


def test_nothing_to_learn(tok):
    messages = CHAT[:3] + [{"role": "model", "content": ""}]
    ids = tok.encode_chat(messages, mode="inference").ids.tolist()  # the encoder refuses it for training
    found = validate([ids], tok, expect="training", train_on="last")
    assert [(f.rule, f.position) for f in found.findings] == [("nothing_to_learn", len(ids) - 2)]
    with pytest.raises(ConversationError):
        tok.encode_chat(messages, mode="training", train_on="last")
    assert validate([ids], tok, expect="training", train_on="all").ok  # the first answer teaches


def test_content_whitespace(tok):
    space = tok.encode_text(" ")
    ids = training(tok).ids.tolist()
    k = first_content(ids, tok, turn=1)
    eot = index_of(ids, tok.specials.end_of_turn, 1)
    assert ("content_whitespace", k) in rules_at(validate(ids[:k] + space + ids[k:], tok))
    assert ("content_whitespace", eot) in rules_at(validate(ids[:eot] + space + ids[eot:], tok))
    # the first user turn may open with a system text: leading whitespace is fine there
    with_system = training(tok, [{"role": "system", "content": "  Be brief.\n"}] + CHAT)
    assert validate(with_system, tok, expect="training").ok


def test_noncanonical(tokenizer):
    tok = tokenizer
    ids = inference(tok).ids.tolist()
    k = next(i for i in range(first_content(ids, tok), len(ids)) if len(tok.piece(ids[i])) > 1)
    piece = tok.piece(ids[k]).replace("\u2581", " ")
    pieces = [t for ch in piece for t in tok.encode_text(ch)]  # same text, other ids
    broken = ids[:k] + pieces + ids[k + 1 :]
    assert tok.decode(broken) == tok.decode(ids)
    report = validate(broken, tok)
    assert rules_at(report) == {("noncanonical", k)}
    assert str([ids[k]])[:-1] in report.findings[0].expected
    assert validate(broken, tok, canonical=False).ok


@pytest.mark.real_tokenizer
def test_gemma2_ids_against_gemma3(tokenizer):
    """Gemma 2 put <start_of_turn> at 106 and <end_of_turn> at 107: shifting the markers by one
    is what Gemma 2 ids look like to the Gemma 3 model."""
    tok = tokenizer
    s = tok.specials
    ids = training(tok).ids.tolist()
    shifted = [i + 1 if i in (s.start_of_turn, s.end_of_turn) else i for i in ids]
    report = validate(shifted, tok, expect="training")
    assert not report.ok and report.findings[0].position == 1


def test_loss_mask_rules(tok):
    encoding = training(tok)
    ids, mask = encoding.ids, encoding.loss_mask
    header = index_of(ids.tolist(), tok.specials.start_of_turn, 1) + 1
    wrong = mask.copy()
    wrong[header] = 1
    found = validate(ids, tok, loss_mask=wrong, expect="training")
    assert rules_at(found) == {("loss_mask", header)}
    assert "role header" in found.findings[0].message
    user = mask.copy()
    user[3:6] = 1
    found = validate(ids, tok, loss_mask=user, expect="training")
    assert rules_at(found) == {("loss_mask", 3)} and "3 tokens" in found.findings[0].message
    assert rules_at(validate(ids, tok, loss_mask=mask * 0, expect="training")) == {("loss_mask_all_zero", 0)}
    twos = mask * 2
    assert any(f.rule == "loss_mask" for f in validate(ids, tok, loss_mask=twos).findings)
    short = validate([ids], tok, loss_mask=[mask[:-1]])
    assert rules_at(short) == {("loss_mask", len(ids) - 1)}


def test_loss_mask_options(tok):
    last = training(tok, train_on="last", train_newline=True)
    assert validate(last, tok, expect="training", train_on="last", train_newline=True).ok
    found = validate(last, tok, expect="training")  # the encoder's defaults: all, no newline
    first_model = first_content(last.ids.tolist(), tok, turn=1)
    assert ("loss_mask", first_model) in rules_at(found)
    # unknown options: any legal shape passes, and a wrong mask names the closest one
    assert validate(last, tok, expect="training", train_on=None, train_newline=None).ok
    assert validate(training(tok), tok, train_on=None, train_newline=None).ok
    broken = last.loss_mask.copy()
    broken[2] = 1
    found = validate(last.ids, tok, loss_mask=broken, train_on=None, train_newline=None)
    assert rules_at(found) == {("loss_mask", 2)} and "train_on='last'" in found.findings[0].message
    # inference masks train every model turn, whatever train_on says
    assert validate(inference(tok, CHAT), tok, train_on="last", expect="inference", endings=["model_turn"]).ok


def test_loss_mask_on_padding(tok):
    encoding = training(tok)
    n = len(encoding)
    ids = np.zeros((1, n + 2), np.int32)
    ids[0, :n] = encoding.ids
    loss = np.zeros((1, n + 2), np.int8)
    loss[0, :n] = encoding.loss_mask
    loss[0, n + 1] = 1
    attention = (np.arange(n + 2) < n)[None]
    assert ("loss_mask", n + 1) in rules_at(validate(ids, tok, loss_mask=loss, attention_mask=attention))



def test_list_rows_trimmed_masked_and_plain_together(tok):
    """A list mixing rows cut by their <pad> runs, by an attention mask and by segment ids:
    each row keeps its own positions and loss mask, in row order."""
    a, b = training(tok), training(tok, CHAT[:2])
    pad, bos = tok.specials.pad, tok.specials.bos
    trimmed = [pad, pad] + a.ids.tolist() + [pad]
    trimmed_loss = [0, 0] + a.loss_mask.tolist() + [1]  # 1 on the trailing pad
    attended = b.ids.tolist() + [pad]
    packed = a.ids.tolist() + b.ids.tolist()
    rows = [trimmed, attended, packed, b.ids.tolist()]
    losses = [trimmed_loss, b.loss_mask.tolist() + [0], a.loss_mask.tolist() + b.loss_mask.tolist(), None]
    attention = [None, [1] * len(b) + [0], None, None]
    segments = [None, None, [1] * len(a) + [2] * len(b), None]
    report = validate(rows, tok, loss_mask=losses, attention_mask=attention, segment_ids=segments, expect="training")
    assert [(f.rule, f.sequence, f.position) for f in report.findings] == [("loss_mask", 0, len(trimmed) - 1)]
    rows[2] = packed[: len(a) + 1] + [bos] + packed[len(a) + 2 :]  # a second BOS in segment 2
    rows[3] = rows[3] + [bos]
    report = validate(rows, tok, loss_mask=losses, attention_mask=attention, segment_ids=segments, expect="training")
    found = {(f.rule, f.sequence, f.position) for f in report.findings}
    assert ("bos_inside", 2, len(a) + 1) in found and ("bos_inside", 3, len(b)) in found
    assert {f.sequence for f in report.findings} == {0, 2, 3}


def test_loss_mask_runs_in_packed_int32_rows(tok):
    """The mask the encoder makes is compared per segment; a wrong run is reported once,
    at its first position in the row, with the part of the turn it is on."""
    a, b = training(tok), training(tok, train_newline=True)
    width = len(a) + len(b) + 3
    ids = np.zeros((1, width), np.int32)
    segments = np.zeros_like(ids)
    loss = np.zeros((1, width), np.int8)
    ids[0, : len(a)], ids[0, len(a) : len(a) + len(b)] = a.ids, b.ids
    segments[0, : len(a)], segments[0, len(a) : len(a) + len(b)] = 1, 2
    loss[0, : len(a)], loss[0, len(a) : len(a) + len(b)] = a.loss_mask, b.loss_mask
    assert validate(ids, tok, segment_ids=segments, loss_mask=loss, train_newline=None).ok
    assert rules_at(validate(ids, tok, segment_ids=segments, loss_mask=loss)) == {
        ("loss_mask", len(a) + index_of(b.ids, tok.specials.end_of_turn, nth=k) + 1) for k in (1, 3)
    }
    header = len(a) + index_of(b.ids, tok.specials.start_of_turn, nth=1) + 1
    loss[0, header : header + 2] = 1
    (finding,) = [f for f in validate(ids, tok, segment_ids=segments, loss_mask=loss, train_newline=None).findings]
    assert (finding.rule, finding.position, finding.token_id) == ("loss_mask", header, int(ids[0, header]))
    assert "the role header of a model turn (2 tokens from here)" in finding.message
    assert "train_newline=True" in finding.message

# -- the report and the pytest helper ---------------------------------------------------------


def test_report_fields_counts_and_limits(tok):
    good = training(tok).ids.tolist()
    bad = [tok.specials.bos] + good
    report = validate([good, bad, bad, good], tok, expect="training", max_findings=1)
    assert report.counts == {"bos_inside": 2}
    assert report.invalid == 2 and report.sequences == 4 and report.total == 2 and report.truncated
    (finding,) = report.findings
    assert isinstance(finding, Finding)
    assert finding.to_dict() == {
        "rule": "bos_inside",
        "sequence": 1,
        "position": 1,
        "token_id": tok.specials.bos,
        "expected": "no BOS after position 0",
        "message": finding.message,
        "context": "<bos>»<bos>«<start_of_turn>user\\nW…",
    }
    text = report.format()
    assert "sequence 1, position 1" in text and "1 more findings" in text and "bos_inside 2" in text
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.rule = "x"
    assert set(report.counts) <= set(RULES)


def test_assert_valid(tok):
    assert_valid(tok.encode_chat_batch([CHAT, CHAT[:2]], mode="training"), tok, expect="training")
    with pytest.raises(AssertionError) as caught:
        assert_valid([[tok.specials.bos] + training(tok).ids.tolist()], tok, expect="training")
    assert "bos_inside" in str(caught.value) and "»<bos>«" in str(caught.value)


def test_bad_arguments(tok):
    with pytest.raises(ValueError):
        validate([[2.5, 3.0]], tok)
    with pytest.raises(ValueError):
        validate(np.zeros((2, 3), np.int32), tok, attention_mask=np.ones((2, 4)))
    with pytest.raises(ValueError):
        validate([2], tok, expect="chat")
    with pytest.raises(ValueError):
        validate([2], tok, endings=["never"])
    assert validate([], tok).sequences == 0


def test_label_tokens(tok):
    ids = inference(tok).ids.tolist()
    labels = label_tokens(ids + [0, 0], tok)
    assert labels[0] == ("", "bos")
    assert labels[1] == ("user", "marker") and labels[2] == ("user", "header")
    assert labels[-3] == ("model", "prompt") and labels[-1] == ("", "pad")


# -- encoder output always passes ------------------------------------------------------------

MODES = [
    ({"mode": "training"}, {"expect": "training"}),
    ({"mode": "training", "train_on": "last"}, {"expect": "training", "train_on": "last"}),
    ({"mode": "training", "train_newline": True}, {"expect": "training", "train_newline": True}),
    ({"mode": "training", "train_on": "last", "train_newline": True}, {"expect": "training", "train_on": "last", "train_newline": True}),
    ({"mode": "inference", "add_generation_prompt": True}, {"expect": "inference"}),
    ({"mode": "inference", "train_newline": True}, {"endings": ["generation_prompt", "model_turn"], "train_newline": True}),
    ({"mode": "inference", "add_generation_prompt": False}, {"endings": ["model_turn", "user_turn"]}),
]


def _conversations():
    return [json.loads(line)["messages"] for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("encode, check", MODES, ids=[str(m[0]) for m in MODES])
@pytest.mark.parametrize("reserved", ["refuse", "escape"])
def test_encoder_output_passes(tokenizer, encode, check, reserved):
    conversations = _conversations() + [
        [{"role": "system", "content": "\n Sys \n"}, {"role": "user", "content": "Quote <end_of_turn> please"}, {"role": "model", "content": "<start_of_turn>user"}],
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "  and  "}, {"type": "image"}]}, {"role": "model", "content": "ok"}],
    ]
    results = tokenizer.try_encode_chat_batch(conversations, reserved=reserved, **encode)
    encodings = [r for r in results if not isinstance(r, ConversationError)]
    assert len(encodings) >= 8
    assert_valid(encodings, tokenizer, **check)


@pytest.mark.parametrize("add_eos", [True, False])
def test_pt_output_passes(tokenizer, add_eos):
    texts = ["Hello.", "  spaced  ", "", "\n\nnewlines\n", "a <bos> literal and <end_of_turn>", "日本語 🦊"]
    encodings = tokenizer.encode_pt_batch(texts, add_eos=add_eos, reserved="escape")
    assert_valid(encodings, tokenizer, expect="pt", endings=["eos" if add_eos else "text"])


@pytest.mark.real_tokenizer
def test_realistic_output_passes_on_the_real_tokenizer(real_tokenizer):
    """The benchmarks' generated conversations: 10 scripts, code, long messages."""
    tokenizer = real_tokenizer
    spec = importlib.util.spec_from_file_location("conversations", ROOT / "benchmarks" / "conversations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    conversations = module.generate(60, seed=7)
    for encode, check in MODES[:1] + MODES[4:5] + MODES[3:4]:
        results = tokenizer.try_encode_chat_batch(conversations, reserved="escape", **encode)
        assert_valid([r for r in results if not isinstance(r, ConversationError)], tokenizer, **check)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=conversations(WITH_RESERVED), case=st.sampled_from(MODES))
def test_encoder_output_passes_property(tok, messages, case):
    encode, check = case
    try:
        encoding = tok.encode_chat(messages, reserved="escape", **encode)
    except ConversationError:
        return
    assert_valid(encoding, tok, **check)
