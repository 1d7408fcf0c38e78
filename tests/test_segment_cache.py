"""The segment cache changes no id: batches with repeated system prompts, tool declarations
and messages give exactly the uncached path's ids and masks, on both dialects' tokenizers."""

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
    return (GemmaTokenizer.load(tok.path, segment_cache=64), GemmaTokenizer.load(tok.path, segment_cache=0))


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
    assert cached._segments.held <= 64
