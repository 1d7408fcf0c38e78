"""Hypothesis strategies shared by the property tests: texts and conversations."""

from hypothesis import strategies as st

# Fragments that exercise the tokenizer's edges: whitespace runs, newlines, tabs, HTML tags,
# brackets, several scripts, emoji, Unicode whitespace that str.strip() removes, a NUL
# (byte fallback in the fixture), and BOS spelled as text.
PLAIN = list("ab xyz\n\t  <>[]/_.,!?0123456789") + [
    "é", "ж", "你", "の", "🙂", "\u3000", "\xa0", "\x00", "\n\n", "<b>", "<table>", "<bos>", "[BOS]",
]
# The same with reserved text, for encoders run with reserved="escape".
WITH_RESERVED = PLAIN + ["<end_of_turn>", "<start_of_turn>", "<mask>", "<unused3>"]


def texts(fragments=PLAIN, max_size=30):
    return st.lists(st.sampled_from(fragments), max_size=max_size).map("".join)


@st.composite
def conversations(draw, fragments=PLAIN, *, end_with_model=None):
    """An optional system message, then 1 to 5 alternating turns (roles ``model`` or
    ``assistant``), content as a string or a list of text and image parts."""
    text = texts(fragments)
    part = st.one_of(text.map(lambda t: {"type": "text", "text": t}), st.just({"type": "image"}))
    turns = draw(st.integers(1, 5))
    if end_with_model is not None and (turns % 2 == 0) != end_with_model:
        turns += 1
    messages = [{"role": "system", "content": draw(text)}] if draw(st.booleans()) else []
    for k in range(turns):
        role = "user" if k % 2 == 0 else draw(st.sampled_from(["model", "assistant"]))
        content = draw(st.one_of(text, st.lists(part, min_size=1, max_size=3)))
        messages.append({"role": role, "content": content})
    return messages


# -- Gemma 4: records with tools, thinking, reasoning, calls and results ------------------------

TOOL_NAMES = ["get_weather", "search", "book_flight"]
ARGUMENT_KEYS = ["city", "days", "query", "Flag", "limit", "where"]


def gemma4_tools():
    return [
        {"type": "function", "function": {"name": name, "description": f"{name} tool",
                                          "parameters": {"type": "object", "properties": {
                                              "city": {"type": "string"}, "days": {"type": "integer"}}}}}
        for name in TOOL_NAMES
    ]


def json_values(text):
    atoms = st.one_of(text, st.integers(-1000, 10**12), st.booleans(), st.none(),
                      st.floats(allow_nan=False, allow_infinity=False, width=32))
    return st.recursive(
        atoms,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(st.sampled_from(ARGUMENT_KEYS), inner, max_size=3),
        ),
        max_leaves=6,
    )


@st.composite
def gemma4_records(draw, fragments=PLAIN, *, end_with_model=True):
    """A Gemma 4 record: an optional system (or developer) message, tools, a thinking flag, then
    user messages and model episodes (reasoning, tool calls with their results, answers)."""
    text = texts(fragments)
    messages = []
    if draw(st.booleans()):
        messages.append({"role": draw(st.sampled_from(["system", "developer"])), "content": draw(text)})
    episodes = draw(st.integers(1, 3))
    call_id = 0
    for episode in range(episodes):
        if draw(st.booleans()) or episode == 0:
            part = st.one_of(text.map(lambda t: {"type": "text", "text": t}),
                             st.sampled_from([{"type": "image"}, {"type": "audio"}, {"type": "video"}]))
            messages.append({"role": "user", "content": draw(st.one_of(text, st.lists(part, min_size=1, max_size=3)))})
        last = episode == episodes - 1
        if last and not end_with_model:
            break
        for step in range(draw(st.integers(0, 2))):
            calls = []
            for _ in range(draw(st.integers(1, 2))):
                call_id += 1
                arguments = draw(st.dictionaries(st.sampled_from(ARGUMENT_KEYS), json_values(text), max_size=3))
                calls.append({"type": "function", "id": f"c{call_id}",
                              "function": {"name": draw(st.sampled_from(TOOL_NAMES)), "arguments": arguments}})
            message = {"role": "assistant", "tool_calls": calls}
            if draw(st.booleans()):
                message["reasoning_content"] = draw(text) or "r"
            messages.append(message)
            for call in calls:
                result = draw(st.one_of(text, st.dictionaries(st.sampled_from(ARGUMENT_KEYS), json_values(text), max_size=2)))
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
        answer = {"role": "assistant", "content": draw(text) + " ok"}
        if draw(st.booleans()):
            answer["reasoning_content"] = draw(text) or "r"
        messages.append(answer)
    record = {"messages": messages}
    if draw(st.booleans()):
        record["tools"] = gemma4_tools()
    if draw(st.booleans()):
        record["chat_template_kwargs"] = {"enable_thinking": draw(st.booleans()), "preserve_thinking": draw(st.booleans())}
    return record
