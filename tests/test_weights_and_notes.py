"""Keys other tools write that a user clearly means: a message's ``weight`` is honoured by the
loss mask (axolotl's "don't train this turn"), and reasoning a format has no place for is noted,
never dropped without a word."""

import pytest

from gemma_turns import ConversationError

CHAT = [
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "a1", "weight": 0},
    {"role": "user", "content": "q2"},
    {"role": "assistant", "content": "a2"},
]


@pytest.mark.parametrize("name", ["fixture_tokenizer", "fixture4_tokenizer"])
def test_weight_zero_is_never_trained(request, name):
    tok = request.getfixturevalue(name)
    encoding = tok.encode_chat(CHAT, mode="training")
    trained = tok.decode([i for i, bit in zip(encoding.ids.tolist(), encoding.loss_mask.tolist()) if bit])
    assert "a1" not in trained and trained.startswith("a2")
    # weight 1 trains a turn that train_on="last" would leave out
    weighted = [dict(CHAT[0]), {**CHAT[1], "weight": 1}, *CHAT[2:]]
    last = tok.encode_chat(weighted, mode="training", train_on="last")
    trained = tok.decode([i for i, bit in zip(last.ids.tolist(), last.loss_mask.tolist()) if bit])
    assert trained.startswith("a1") and "a2" in trained


@pytest.mark.parametrize("name", ["fixture_tokenizer", "fixture4_tokenizer"])
def test_bad_weights_are_refused(request, name):
    tok = request.getfixturevalue(name)
    with pytest.raises(ConversationError, match="weight must be 0") as caught:
        tok.encode_chat([CHAT[0], {**CHAT[1], "weight": 0.5}], mode="training")
    assert (caught.value.message_index, caught.value.field) == (1, "weight")
    with pytest.raises(ConversationError, match="only model messages are trained"):
        tok.encode_chat([{**CHAT[0], "weight": 1}, CHAT[3]], mode="training")
    with pytest.raises(ConversationError, match="nothing to learn"):
        tok.encode_chat(CHAT[:2], mode="training")


def test_reasoning_on_gemma3_is_noted(fixture_tokenizer):
    messages = [CHAT[0], {"role": "assistant", "content": "a", "reasoning_content": "why"}]
    encoding = fixture_tokenizer.encode_chat(messages, mode="training")
    assert encoding.notes == ("ignored_reasoning",)
    assert "why" not in fixture_tokenizer.decode(encoding.ids)


def test_encode_counts_the_notes_once_per_run(tmp_path, capsys):
    from conftest import FIXTURE4_MODEL, FIXTURE_MODEL

    from gemma_turns.cli import main

    data = tmp_path / "in.jsonl"
    record = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}, {"role": "user", "content": "q2"}, {"role": "assistant", "content": "b"}]}\n'
    data.write_text(record * 3)
    assert main(["encode", "--tokenizer", str(FIXTURE_MODEL), "--mode", "training", str(data), "-o", str(tmp_path / "o.npz"), "--max-length", "64"]) == 0
    assert "notes: ignored_reasoning 3" in capsys.readouterr().err
    assert main(["encode", "--tokenizer", str(FIXTURE4_MODEL), "--mode", "training", "--earlier-reasoning", "drop", str(data)]) == 0
    assert capsys.readouterr().err.count("notes: dropped_reasoning 3") == 1
    assert main(["encode", "--tokenizer", str(FIXTURE4_MODEL), "--mode", "training", str(data)]) == 1  # refused
    assert "earlier_reasoning 3" in capsys.readouterr().err
