"""One conversation (``encode_chat``) is encoded as its whole turn text, one string
(``GemmaTokenizer._whole_plan``, whole_text.py), unless that cannot give the ids of the
segment-by-segment path that batches take, which then runs, or the segment cache can serve a
text seen before. Both must give the same ids, mask and errors, on both dialects' fixture
and real tokenizers, for every policy, and the whole path must really be the one taken for
ordinary conversations."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import WITH_RESERVED, conversations, gemma4_records

from gemma_turns import GemmaTokenizer

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", params=["fixture", "real", "fixture4", "real4"])
def tok(request) -> GemmaTokenizer:
    return request.getfixturevalue(f"{request.param}_tokenizer")


class Counting:
    """Wraps ``_whole_plan`` to count how often it answered and how often it passed."""

    def __init__(self, tokenizer, monkeypatch):
        self.answered = self.passed = 0
        original = tokenizer._whole_plan

        def counted(*args, **keywords):
            result = original(*args, **keywords)
            if result is None:
                self.passed += 1
            else:
                self.answered += 1
            return result

        monkeypatch.setattr(tokenizer, "_whole_plan", counted)


def _outcome(call):
    try:
        encoding = call()
    except ValueError as error:
        return type(error), str(error)
    return encoding.ids.tolist(), encoding.loss_mask.tolist(), encoding.notes, encoding.ids.dtype, encoding.loss_mask.dtype


def _batched(tok, record, **options):
    (result,) = tok.try_encode_chat_batch([record], num_threads=1, **options)
    if isinstance(result, Exception):
        return type(result), str(result).removeprefix("record 0, ")  # batches say which record
    return result.ids.tolist(), result.loss_mask.tolist(), result.notes, result.ids.dtype, result.loss_mask.dtype


def _same_both_ways(tok, record, **options):
    """encode_chat (the whole-text path) against a batch of one and against encode_chat
    with the whole-text path turned off."""
    single = _outcome(lambda: tok.encode_chat(record, **options))
    batched = _batched(tok, record, **options)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tok, "_whole_plan", lambda *args, **keywords: None)
        segments = _outcome(lambda: tok.encode_chat(record, **options))
        segments_batched = _batched(tok, record, **options)
    assert single == segments
    assert batched == segments_batched


def _records(tok, data, fragments):
    if tok.dialect.tools:
        return data.draw(gemma4_records(fragments, end_with_model=data.draw(st.booleans())))
    return data.draw(conversations(fragments))


@SETTINGS
@given(data=st.data())
def test_the_whole_path_gives_the_segment_path_ids(tok, data, monkeypatch):
    record = _records(tok, data, WITH_RESERVED)
    reserved = data.draw(st.sampled_from(["refuse", "escape", "allow"]))
    mode = data.draw(st.sampled_from(["training", "inference"]))
    options = {"mode": mode, "reserved": reserved, "train_newline": data.draw(st.booleans())}
    if tok.dialect.tools:
        options |= {"earlier_reasoning": "drop", "checkpoint": data.draw(st.sampled_from(["e4b", "31b"]))}
    _same_both_ways(tok, record, **options)


def _uncached(tok) -> GemmaTokenizer:
    """A copy of ``tok`` without the segment cache: every text goes the whole-text way."""
    return GemmaTokenizer.from_bytes(tok.processor.serialized_model_proto(), dialect=tok.dialect, segment_cache=0)


def test_ordinary_conversations_take_the_whole_path(tok, monkeypatch):
    tok = _uncached(tok)
    counter = Counting(tok, monkeypatch)
    conversations = [
        [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}],
        [{"role": "system", "content": "Be brief.\n\nAnswer in French."}, {"role": "user", "content": "Hi\n\n\n  there"},
         {"role": "assistant", "content": "Bonjour  !\n- a\n- b"}],
        [{"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image"}]},
         {"role": "assistant", "content": "A cat."}, {"role": "user", "content": "<b>bold</b> [x]"}],
    ]
    prompt = {"checkpoint": "31b"} if tok.dialect.checkpoints else {}
    for messages in conversations:
        for mode in ("training", "inference"):
            _same_both_ways(tok, messages, mode=mode, **(prompt if mode == "inference" else {}))
    assert counter.answered >= 5  # the last conversation ends with a user turn: inference only
    assert counter.passed == 0


def test_content_that_needs_escaping_takes_the_segment_path(tok, monkeypatch):
    tok = _uncached(tok)
    counter = Counting(tok, monkeypatch)
    close = tok.dialect.turn_close
    messages = [{"role": "user", "content": f"a{close}b"}, {"role": "assistant", "content": "ok"}]
    _same_both_ways(tok, messages, mode="training", reserved="escape")
    _same_both_ways(tok, messages, mode="training", reserved="allow")
    _same_both_ways(tok, messages, mode="training")  # refused, with the same error
    assert counter.passed == 1  # escape; refuse raised from the whole path itself


def test_a_long_text_seen_before_takes_the_segment_path_and_then_the_cache(tok, monkeypatch):
    tok = GemmaTokenizer.from_bytes(tok.processor.serialized_model_proto(), dialect=tok.dialect)
    counter = Counting(tok, monkeypatch)
    records = [[{"role": "user", "content": "You are a careful assistant. " * 20},
                {"role": "assistant", "content": f"answer {k}"}] for k in range(3)]
    first = tok.encode_chat(records[0], mode="training")
    assert (counter.answered, counter.passed) == (1, 0)
    second = tok.encode_chat(records[1], mode="training")  # seen before: kept by the segment path
    assert (counter.answered, counter.passed) == (1, 1)
    served = tok.segment_cache.served_tokens
    third = tok.encode_chat(records[2], mode="training")  # served from the cache
    assert (counter.answered, counter.passed) == (1, 2)
    assert tok.segment_cache.served_tokens > served
    uncached = _uncached(tok)
    for record, encoding in zip(records, [first, second, third]):
        expected = uncached.encode_chat(record, mode="training")
        assert encoding.ids.tolist() == expected.ids.tolist()
        assert encoding.loss_mask.tolist() == expected.loss_mask.tolist()


def test_a_long_conversation_is_split_with_numpy_alike(tok, monkeypatch):
    from gemma_turns.whole_text import SHORT_SEQUENCE

    tok = _uncached(tok)
    counter = Counting(tok, monkeypatch)
    words = " ".join(f"word{k} and more" for k in range(SHORT_SEQUENCE))
    messages = [{"role": "user", "content": words}, {"role": "assistant", "content": words[::-1]},
                {"role": "user", "content": "and?"}, {"role": "assistant", "content": "done"}]
    _same_both_ways(tok, messages, mode="training", train_newline=True)
    _same_both_ways(tok, messages, mode="inference")
    assert len(tok.encode_chat(messages, mode="training")) > SHORT_SEQUENCE
    assert counter.passed == 0


@pytest.mark.parametrize("turns", [4, 40])
def test_the_mask_is_the_same_for_few_units_and_many(tok, turns, monkeypatch):
    """Few units: set a slice per trained unit; many: np.repeat (whole_text.MANY_UNITS)."""
    from gemma_turns.options import options_of
    from gemma_turns.whole_text import MANY_UNITS

    tok = _uncached(tok)
    messages = [{"role": "user" if k % 2 == 0 else "assistant", "content": f"turn {k}: {'why? ' * (k % 3)}"}
                for k in range(turns)]
    conversation, runs = tok._chat_runs(messages, options_of(None, {"mode": "training"}), None)
    units = len(tok._whole_plan(conversation, runs, "refuse").bits)
    assert (units > MANY_UNITS) == (turns == 40)  # both ways of building the mask are run
    counter = Counting(tok, monkeypatch)
    _same_both_ways(tok, messages, mode="training", train_newline=True)
    _same_both_ways(tok, messages, mode="training", train_on="last")
    assert (counter.answered, counter.passed) == (2, 0)


def test_the_split_refuses_ids_that_do_not_fit_the_plan(fixture_tokenizer):
    """Each check of Splitter.split: marker count, group lengths, and the fixed ids."""
    from gemma_turns.conversation import from_record
    from gemma_turns.formatter import render_runs
    from gemma_turns.options import EncodeOptions

    tok = _uncached(fixture_tokenizer)
    messages = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}]
    conversation = from_record(messages, tok.dialect, EncodeOptions(mode="training"))

    def planned():
        runs = render_runs(conversation, add_generation_prompt=False, checkpoint=None)
        return tok._whole_plan(conversation, runs, "refuse")

    encoded = tok.processor.encode(planned().text)
    assert tok._splitter.split(planned(), list(encoded)) is not None
    from gemma_turns.chat_format import Marker

    close, newline = tok.specials.markers[Marker.TURN_CLOSE], tok.specials.newline
    assert tok._splitter.split(planned(), [t for t in encoded if t != close]) is None  # markers missing
    assert tok._splitter.split(planned(), [*encoded[:2], close, *encoded[2:]]) is None  # one too many
    last_newline = len(encoded) - 1 - encoded[::-1].index(newline)
    assert tok._splitter.split(planned(), [*encoded[:last_newline], *encoded[last_newline + 1:]]) is None  # a group too short
    swapped = [*encoded[:last_newline], tok.processor.piece_to_id("a"), *encoded[last_newline + 1:]]
    assert tok._splitter.split(planned(), swapped) is None  # a constant text with other ids
