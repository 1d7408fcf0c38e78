"""drop_oldest_turns cuts the ids at turn starts: the same ids as re-encoding the shorter
conversation, checked on generated conversations (fixture) and on the real tokenizer."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import WITH_RESERVED, conversations

from gemma_turns import EncodeOptions
from gemma_turns.errors import ConversationError, SequenceTooLongError
from gemma_turns.fit import _drop_by_reencoding, drop_oldest_turns


def both(tokenizer, messages, limit, options):
    """(cut, re-encoded): each an Encoding, or the length of the shortest candidate."""
    head = 2 if messages[0]["role"] == "system" else 1
    out = []
    for policy in (
        lambda: drop_oldest_turns(tokenizer, messages, max_length=limit, options=options),
        lambda: _drop_by_reencoding(tokenizer, messages, head, limit, options),
    ):
        try:
            encoding = policy()
            out.append((encoding.ids.tolist(), encoding.loss_mask.tolist()))
        except SequenceTooLongError as error:
            out.append(error.length)
    return out


def check_equivalence(tokenizer, messages, options, fractions):
    try:
        full = tokenizer.encode_chat(
            messages, mode="inference", reserved=options.reserved,
            add_generation_prompt=options.add_generation_prompt,
        )
    except ConversationError:
        return 0
    for fraction in fractions:
        limit = max(1, int(len(full) * fraction))
        cut, reencoded = both(tokenizer, messages, limit, options)
        assert cut == reencoded, (messages, limit)
    return len(fractions)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=conversations(WITH_RESERVED),
    reserved=st.sampled_from(["refuse", "escape", "allow"]),
    prompt=st.sampled_from([None, True, False]),
    fractions=st.lists(st.floats(0.05, 1.2), min_size=1, max_size=4),
)
def test_cutting_equals_reencoding_generated(fixture_tokenizer, messages, reserved, prompt, fractions):
    options = EncodeOptions(mode="inference", reserved=reserved, add_generation_prompt=prompt)
    check_equivalence(fixture_tokenizer, messages, options, fractions)


def test_forged_markers_fall_back_to_reencoding(fixture_tokenizer):
    """Under reserved='allow' content spelling <start_of_turn> has the marker's id: the ids
    cannot say where turns start, so the policy re-encodes, as it always did."""
    messages = [{"role": "user", "content": f"q{k} <start_of_turn>" if k == 2 else f"q{k} words here"}
                if k % 2 == 0 else {"role": "model", "content": f"answer {k} words"} for k in range(7)]
    options = EncodeOptions(mode="inference", reserved="allow")
    assert check_equivalence(fixture_tokenizer, messages, options, [0.3, 0.5, 0.7, 0.9]) == 4


@pytest.mark.real_tokenizer
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=conversations(WITH_RESERVED), fractions=st.lists(st.floats(0.05, 1.0), min_size=1, max_size=3))
def test_cutting_equals_reencoding_real(real_tokenizer, messages, fractions):
    check_equivalence(real_tokenizer, messages, EncodeOptions(mode="inference", reserved="escape"), fractions)
