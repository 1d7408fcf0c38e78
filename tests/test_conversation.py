"""Input checks: every way a conversation can be refused, with its location."""

import pytest

from gemma_turns import ConversationError, Marker, normalize_messages


def user(text="hi"):
    return {"role": "user", "content": text}


def model(text="hello"):
    return {"role": "model", "content": text}


def test_normalizes_roles_system_and_parts():
    conversation = normalize_messages(
        [
            {"role": "system", "content": " Be brief. "},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image", "url": "x"}]},
            {"role": "assistant", "content": "b", "extra": 1},
        ]
    )
    assert conversation.system == " Be brief. "  # untrimmed, as the template uses it
    assert [t.role for t in conversation.turns] == ["user", "model"]
    assert conversation.turns[0].parts == ("a", Marker.START_OF_IMAGE)
    assert [t.message_index for t in conversation.turns] == [1, 2]


def test_system_as_one_text_part():
    conversation = normalize_messages(
        [{"role": "system", "content": [{"type": "text", "text": "S"}]}, user()]
    )
    assert conversation.system == "S"


@pytest.mark.parametrize(
    "messages, code, index, role",
    [
        ([], "empty_conversation", None, None),
        ("hello", "bad_conversation", None, None),
        ({"role": "user"}, "bad_conversation", None, None),
        ([{"role": "system", "content": "S"}], "system_only", 0, "system"),
        ([user(), {"role": "tool", "content": "x"}], "unknown_role", 1, "tool"),
        ([user(), model(), {"role": "system", "content": "S"}], "misplaced_system", 2, "system"),
        ([model()], "roles_not_alternating", 0, "model"),
        ([{"role": "system", "content": "S"}, {"role": "assistant", "content": "x"}], "roles_not_alternating", 1, "assistant"),
        ([user(), user()], "roles_not_alternating", 1, "user"),
        ([user(), model(), model()], "roles_not_alternating", 2, "model"),
        (["hi"], "bad_message", 0, None),
        ([{"content": "hi"}], "bad_message", 0, None),
        ([{"role": None, "content": "hi"}], "bad_message", 0, None),
        ([{"role": "user"}], "bad_content", 0, "user"),
        ([{"role": "user", "content": None}], "bad_content", 0, "user"),
        ([{"role": "user", "content": 42}], "bad_content", 0, "user"),
        ([{"role": "user", "content": {"type": "text", "text": "x"}}], "bad_content", 0, "user"),
        ([{"role": "user", "content": [{"type": "audio"}]}], "bad_content", 0, "user"),
        ([{"role": "user", "content": [{"type": "text"}]}], "bad_content", 0, "user"),
        ([{"role": "user", "content": ["plain string part"]}], "bad_content", 0, "user"),
        ([{"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, user()], "bad_content", 0, "system"),
        ([{"role": "system", "content": [{"type": "image"}]}, user()], "bad_content", 0, "system"),
    ],
)
def test_refusals_name_code_and_location(messages, code, index, role):
    with pytest.raises(ConversationError) as caught:
        normalize_messages(messages)
    error = caught.value
    assert error.code == code
    assert error.message_index == index
    assert error.role == role
    assert isinstance(error, ValueError)
    if index is not None:
        assert f"message {index}" in str(error)


def test_lone_surrogate_is_refused_with_its_offset():
    with pytest.raises(ConversationError) as caught:
        normalize_messages([user("ok"), model("fine"), user("a\ud800b")])
    assert (caught.value.code, caught.value.message_index, caught.value.char_offset) == ("invalid_text", 2, 1)
    with pytest.raises(ConversationError) as caught:
        normalize_messages([{"role": "user", "content": [{"type": "text", "text": "é\udfff"}]}])
    assert caught.value.code == "invalid_text" and caught.value.part_index == 0


def test_tool_calls_are_refused_not_dropped():
    call = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]}
    with pytest.raises(ConversationError) as caught:
        normalize_messages([user(), call])
    assert caught.value.code == "bad_message" and "tool_calls" in str(caught.value)
    assert normalize_messages([user(), {**call, "tool_calls": []}])  # an empty list loses nothing


def test_part_index_is_reported():
    with pytest.raises(ConversationError) as caught:
        normalize_messages([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "video"}]}])
    assert caught.value.part_index == 1
    assert "part 1" in str(caught.value)
    assert caught.value.to_dict()["part_index"] == 1


def test_error_says_what_was_expected_and_how_to_fix():
    with pytest.raises(ConversationError) as caught:
        normalize_messages([user(), user()])
    text = str(caught.value)
    assert "a model message was expected" in text
    assert "Merge consecutive messages" in text


def test_with_record_adds_the_record():
    error = ConversationError("bad", code="x", message_index=2)
    error.with_record(7)
    assert error.record == 7
    assert str(error).startswith("record 7, message 2: bad")
    assert error.to_dict() == {"code": "x", "reason": "bad", "record": 7, "message_index": 2}


def test_a_checked_conversation_is_not_taken_for_messages():
    """A Conversation is a named tuple (of its system text, turns, ...), never a list of
    messages: passing one back is refused as such, not read as messages."""
    conversation = normalize_messages([user(), model()])
    with pytest.raises(ConversationError, match="must be a list of messages, got Conversation") as caught:
        normalize_messages(conversation)
    assert caught.value.code == "bad_conversation"
