"""One conversation (``encode_chat``) is encoded with one SentencePiece call of its whole
turn text (``GemmaTokenizer._whole_plan``), unless that cannot give the ids of the
segment-by-segment path that batches take, which then runs. Both must give the same ids,
mask and errors, on both dialects' fixture and real tokenizers, for every policy, and the
whole path must really be the one taken for ordinary conversations."""

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


def test_ordinary_conversations_take_the_whole_path(tok, monkeypatch):
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
    counter = Counting(tok, monkeypatch)
    close = tok.dialect.turn_close
    messages = [{"role": "user", "content": f"a{close}b"}, {"role": "assistant", "content": "ok"}]
    _same_both_ways(tok, messages, mode="training", reserved="escape")
    _same_both_ways(tok, messages, mode="training", reserved="allow")
    _same_both_ways(tok, messages, mode="training")  # refused, with the same error
    assert counter.passed == 1  # escape; refuse raised from the whole path itself


def test_a_long_conversation_takes_the_segment_path(fixture_tokenizer, monkeypatch):
    from gemma_turns import encoder

    tok = GemmaTokenizer.load(fixture_tokenizer.path)
    counter = Counting(tok, monkeypatch)
    long = [{"role": "user", "content": "word " * (encoder.WHOLE_TEXT_CHARS // 5 + 1)},
            {"role": "assistant", "content": "ok"}]
    _same_both_ways(tok, long, mode="training")
    assert (counter.answered, counter.passed) == (0, 1)
    _same_both_ways(tok, [{"role": "user", "content": "short"}, {"role": "assistant", "content": "ok"}], mode="training")
    assert (counter.answered, counter.passed) == (1, 1)
