"""The segment cache changes no id: batches with repeated system prompts, tool declarations
and messages give exactly the uncached path's ids and masks, on both dialects' tokenizers."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import conversations, gemma4_records

from gemma_turns import GemmaTokenizer
from gemma_turns import encoder as encoder_module

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", params=["fixture", "real", "fixture4", "real4"])
def pair(request):
    """A tokenizer with a small cache (so eviction happens too) and the same without one."""
    tok = request.getfixturevalue(f"{request.param}_tokenizer")
    return (GemmaTokenizer.load(tok.path, segment_cache=1024), GemmaTokenizer.load(tok.path, segment_cache=0))


def _same(cached, plain, records, monkeypatch, **options):
    monkeypatch.setattr(encoder_module, "PIPELINE_CHUNK", 3)  # many batches: the cache works across them
    for _ in range(2):  # the second pass is served from the cache
        a = cached.try_encode_chat_batch(records, num_threads=2, **options)
        b = plain.try_encode_chat_batch(records, num_threads=2, **options)
        for x, y in zip(a, b, strict=True):
            if isinstance(y, Exception):
                assert type(x) is type(y) and str(x) == str(y)
            else:
                assert x.ids.tolist() == y.ids.tolist() and x.loss_mask.tolist() == y.loss_mask.tolist()


@SETTINGS
@given(data=st.data())
def test_cached_ids_are_the_uncached_ids(pair, data, monkeypatch):
    cached, plain = pair
    if cached.dialect.tools:
        pool = data.draw(st.lists(gemma4_records(), min_size=1, max_size=3))
        options = {"mode": "training", "earlier_reasoning": "drop"}
    else:
        pool = data.draw(st.lists(conversations(end_with_model=True), min_size=1, max_size=3))
        options = {"mode": "training"}
    records = data.draw(st.lists(st.sampled_from(pool), min_size=2, max_size=12))  # repeats
    _same(cached, plain, records, monkeypatch, **options)


def test_short_texts_that_recur_are_encoded_once_a_batch_then_served(fixture4_tokenizer, monkeypatch):
    """Tool syntax writes many short texts a record (``,``, ``STRING``): each distinct one
    is encoded once in its batch, and across batches at most three times (its first
    sighting; its second, whose ids are kept; the batch planned while that one is encoded),
    whatever the number of batches; the ids stay the uncached ones."""
    tools = [{"type": "function", "function": {
        "name": f"tool_{k}", "description": "Look it up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}},
                       "required": ["q"]}}} for k in range(3)]
    records = [{"messages": [{"role": "user", "content": f"question {k}"},
                             {"role": "assistant", "content": f"answer {k}"}], "tools": tools} for k in range(12)]
    sent = {}
    for capacity in (0, 1 << 16):
        tok = GemmaTokenizer.load(fixture4_tokenizer.path, segment_cache=capacity)
        strings = []

        def counted(texts, encode_texts=tok._encode_texts, strings=strings):
            strings.extend(t for t in texts if type(t) is str)  # a cached text is its ids already
            return encode_texts(texts)

        monkeypatch.setattr(tok, "_encode_texts", counted)
        monkeypatch.setattr(encoder_module, "PIPELINE_CHUNK", 1)  # twelve batches
        encodings = tok.encode_chat_batch(records, mode="training", num_threads=1)
        sent[capacity] = (strings, [e.ids.tolist() for e in encodings])
    (uncached, ids), (cached, cached_ids) = sent[0], sent[1 << 16]
    assert cached_ids == ids
    short = [t for t in uncached if len(t) < 32]
    assert len(set(short)) < len(short)  # the premise: short texts recur
    sent_cached = Counter(t for t in cached if len(t) < 32)
    assert set(sent_cached) == set(short) and max(sent_cached.values()) <= 3
    assert sum(sent_cached.values()) * 3 < len(short)


def test_the_capacity_bounds_the_memory_of_many_short_texts():
    """Each entry costs ENTRY_IDS beyond its ids (about 250 bytes): many one-id texts
    cannot hold as many entries under a capacity counted in ids."""
    cache = encoder_module.SegmentCache(4096)
    for k in range(1000):
        cache.store(f"text {k}", np.array([k], dtype=np.int32))
    assert cache.held <= 4096
    assert len(cache.ids) == 4096 // (1 + encoder_module.ENTRY_IDS)
    assert f"text {999}" in cache.ids  # the newest stay, the oldest go
