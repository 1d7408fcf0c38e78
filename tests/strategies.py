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
