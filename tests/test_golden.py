"""Golden cases (tests/golden/*.json): hand-written turn text, and the ids and loss masks on
the fixture and the real Gemma 3 tokenizer. Add a case in cases.py and run make_golden.py."""

import json

import numpy as np
import pytest
from conftest import GOLDEN

from gemma_turns import format_chat

CASES = sorted(GOLDEN.glob("*.json"))
PUBLISHED_SEED_IDS = [2, 105, 2364, 107, 15938, 659, 611, 236881, 106, 107, 105, 4368, 107,
                      4754, 1463, 563, 147224, 236888, 106, 107, 105, 2364, 107, 3689, 563,
                      236743, 236778, 236862, 236778, 236881, 106, 107, 105, 4368, 107]


def load(path):
    return json.loads(path.read_text())


def test_there_are_golden_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_turn_text(path):
    case = load(path)
    prompt = case["options"].get("add_generation_prompt")
    if case["options"]["mode"] == "training":
        prompt = False
    assert format_chat(case["messages"], add_generation_prompt=prompt) == case["text"]


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
@pytest.mark.parametrize("label", ["fixture", "gemma3"])
def test_ids_and_mask(path, label, request):
    tokenizer = request.getfixturevalue("fixture_tokenizer" if label == "fixture" else "real_tokenizer")
    check_ids_and_mask(load(path), "messages", label, tokenizer)


def check_ids_and_mask(case: dict, key: str, label: str, tokenizer) -> None:
    """The case's ids and mask for ``label``, and an oracle that shares no code with the
    encoder: the whole turn text through SentencePiece (escaped text decodes to the same)."""
    encoding = tokenizer.encode_chat(case[key], **case["options"])
    assert encoding.to_dict() == case[label]
    if case["options"].get("reserved") != "escape":
        assert encoding.ids.tolist() == [tokenizer.specials.bos] + tokenizer.processor.encode(case["text"])
    else:
        assert tokenizer.decode(encoding.ids) == case["text"]
        content = encoding.ids[4:-5]
        assert not np.isin(content, list(tokenizer.reserved_ids.values())).any()


def test_seed_example_has_the_published_ids(real_tokenizer):
    case = load(GOLDEN / "seed_inference.json")
    assert case["gemma3"]["input_ids"] == PUBLISHED_SEED_IDS
    encoding = real_tokenizer.encode_chat(case["messages"], mode="inference")
    assert encoding.ids.tolist() == PUBLISHED_SEED_IDS
