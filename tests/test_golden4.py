"""Gemma 4 golden cases (tests/golden/gemma4/*.json): hand-written turn text (checked by hand
against the official template's rules), and the ids and loss masks on the Gemma 4 fixture and
the real Gemma 4 tokenizer. Add a case in gemma4/cases.py and run make_golden.py."""

import pytest
from conftest import GOLDEN
from test_golden import check_ids_and_mask, load

from gemma_turns import format_chat
from gemma_turns.chat_format import GEMMA4

CASES = sorted((GOLDEN / "gemma4").glob("*.json"))


def test_there_are_golden_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_turn_text(path):
    case = load(path)
    assert format_chat(case["record"], dialect=GEMMA4, **case["options"]) == case["text"]


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
@pytest.mark.parametrize("label", ["fixture", "gemma4"])
def test_ids_and_mask(path, label, request):
    tokenizer = request.getfixturevalue("fixture4_tokenizer" if label == "fixture" else "real4_tokenizer")
    check_ids_and_mask(load(path), "record", label, tokenizer)
