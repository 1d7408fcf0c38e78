"""parse(): the inverse of the encoder, on the fixture and (GEMMA_TOKENIZER) the real tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SAMPLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import WITH_RESERVED, conversations, texts

from gemma_turns.errors import ConversationError
from gemma_turns.parser import ParseError, normalized_messages, parse

CHAT_OPTIONS = [
    {"mode": "training"},
    {"mode": "training", "train_on": "last", "train_newline": True},
    {"mode": "inference"},
    {"mode": "inference", "add_generation_prompt": False},
    {"mode": "inference", "add_generation_prompt": True},
]


@pytest.fixture
def tokenizer(any_tokenizer):
    """The fixture tokenizer, and the real one when GEMMA_TOKENIZER names it (conftest)."""
    return any_tokenizer


def sample_conversations():
    return [json.loads(line)["messages"] for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]


EDGE_CONVERSATIONS = [
    [{"role": "system", "content": "\nLeading newline system."}, {"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "  padded system  "}, {"role": "user", "content": "   "}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " x "}]}],
    [{"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": " b"}]}],
    [{"role": "user", "content": "q"}, {"role": "model", "content": ""}, {"role": "user", "content": "again"}],
    [{"role": "user", "content": "spell <end_of_turn> and <start_of_turn>model\n please"}, {"role": "assistant", "content": "<mask> [multimodal] <unused3>"}],
    [{"role": "user", "content": "<bos> is text here"}, {"role": "model", "content": "ok"}],
]


def _encode(tokenizer, messages, options):
    return tokenizer.encode_chat(messages, reserved="escape", **options)


def _reencode(tokenizer, parsed, options):
    options = {**options, "add_generation_prompt": parsed.add_generation_prompt}
    if options["mode"] == "training":
        options.pop("add_generation_prompt")
    return tokenizer.encode_chat(parsed.encodable_messages(), reserved="escape", **options)


@pytest.mark.parametrize("options", CHAT_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_parse_inverts_encode_on_sample_and_edge_cases(tokenizer, options):
    checked = 0
    for messages in sample_conversations() + EDGE_CONVERSATIONS:
        try:
            encoding = _encode(tokenizer, messages, options)
        except ConversationError:
            continue  # e.g. training on a conversation that ends with a user turn
        parsed = parse(encoding, tokenizer)
        assert parsed.messages == normalized_messages(messages)
        again = _reencode(tokenizer, parsed, options)
        np.testing.assert_array_equal(again.ids, encoding.ids)
        np.testing.assert_array_equal(again.loss_mask, encoding.loss_mask)
        checked += 1
    assert checked >= 10


def test_endings(fixture_tokenizer):
    tok = fixture_tokenizer
    user = [{"role": "user", "content": "Hi"}]
    both = user + [{"role": "model", "content": "Hello"}]
    assert parse(tok.encode_chat(user, mode="inference"), tok).ending == "generation_prompt"
    assert parse(tok.encode_chat(user, mode="inference", add_generation_prompt=False), tok).ending == "user_turn"
    assert parse(tok.encode_chat(both, mode="training"), tok).ending == "model_turn"
    assert parse(tok.encode_pt("Hello"), tok).ending == "eos"
    assert parse(tok.encode_pt("Hello", add_eos=False), tok).ending == "text"


def test_system_is_folded_into_the_first_user_turn(fixture_tokenizer):
    tok = fixture_tokenizer
    messages = [
        {"role": "system", "content": "\nBe brief."},
        {"role": "user", "content": " Hi "},
        {"role": "assistant", "content": "Hello"},
    ]
    encoding = tok.encode_chat(messages, mode="training")
    # "user\n" + "\nBe brief." merge into "user" "\n\n" "Be brief." ...: the header's newline
    # piece is a longer run; the parser must still split the role from the content.
    assert tok.piece(int(encoding.ids[3])) == "\n\n"
    parsed = parse(encoding, tok)
    assert parsed.messages == [
        {"role": "user", "content": "\nBe brief.\n\nHi"},
        {"role": "model", "content": "Hello"},
    ]
    assert parsed.encodable_messages()[0] == {"role": "system", "content": "\nBe brief."}
    assert parsed.turns[0].start == 1 and parsed.turns[1].role == "model"


def test_images_and_pt(fixture_tokenizer):
    tok = fixture_tokenizer
    messages = [{"role": "user", "content": [{"type": "text", "text": "What?"}, {"type": "image"}]}, {"role": "model", "content": "A cat."}]
    parsed = parse(tok.encode_chat(messages, mode="training"), tok)
    assert parsed.messages[0]["content"] == [{"type": "text", "text": "What?"}, {"type": "image"}]
    text = " spaces and <end_of_turn> kept "
    pt = parse(tok.encode_pt(text, reserved="escape"), tok)
    assert pt.is_pt and pt.text == text and pt.turns == ()


@pytest.mark.parametrize(
    "edit, rule, position",
    [
        (lambda ids, s: ids[1:], "bos_missing", 0),
        (lambda ids, s: ids[:4] + [s.bos] + ids[4:], "bos_inside", 4),
        (lambda ids, s: ids[:-1], "unclosed_turn", None),  # the generation prompt cut short
        (lambda ids, s: ids[:2] + [ids[4]] + ids[3:], "bad_role", 2),
        (lambda ids, s: _drop_after(ids, s.end_of_turn), "missing_turn_newline", "eot+1"),
    ],
)
def test_unparsable_ids_raise_with_location(fixture_tokenizer, edit, rule, position):
    tok = fixture_tokenizer
    ids = tok.encode_chat([{"role": "user", "content": "Hi there"}], mode="inference").ids.tolist()
    broken = edit(ids, tok.specials)
    with pytest.raises(ParseError) as caught:
        parse(broken, tok)
    error = caught.value
    assert error.rule == rule
    if position == "eot+1":
        position = broken.index(tok.specials.end_of_turn) + 1
    assert error.position == (len(broken) if position is None else position)
    assert isinstance(error, ValueError) and "»" in error.context
    assert f"position {error.position}" in str(error)


def _drop_after(ids, token):
    k = ids.index(token) + 1
    return ids[:k] + ids[k + 1 :]


def test_parse_refuses_a_chat_without_turns(fixture_tokenizer):
    tok = fixture_tokenizer
    with pytest.raises(ParseError) as caught:
        parse([tok.specials.bos], tok, expect="inference")
    assert caught.value.rule == "bad_ending" and caught.value.token_id is None
    assert parse([tok.specials.bos], tok).text == ""  # without expect: an empty PT prompt


def test_parse_takes_one_sequence_of_integers(fixture_tokenizer):
    with pytest.raises(ValueError):
        parse([[2, 3]], fixture_tokenizer)
    with pytest.raises(ValueError):
        parse(np.array([2.0, 3.0]), fixture_tokenizer)


# -- property: random conversations --------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=conversations(WITH_RESERVED), option=st.sampled_from(CHAT_OPTIONS))
def test_parse_inverts_encode_property(fixture_tokenizer, messages, option):
    tok = fixture_tokenizer
    try:
        encoding = _encode(tok, messages, option)
    except ConversationError:
        return
    parsed = parse(encoding, tok)
    assert parsed.messages == normalized_messages(messages)
    again = _reencode(tok, parsed, option)
    assert again.ids.tolist() == encoding.ids.tolist()
    assert again.loss_mask.tolist() == encoding.loss_mask.tolist()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts(WITH_RESERVED), add_eos=st.booleans())
def test_parse_inverts_encode_pt_property(fixture_tokenizer, text, add_eos):
    tok = fixture_tokenizer
    parsed = parse(tok.encode_pt(text, add_eos=add_eos, reserved="escape"), tok, expect="pt")
    assert parsed.text == text and parsed.ending == ("eos" if add_eos else "text")
