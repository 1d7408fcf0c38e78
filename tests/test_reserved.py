"""The reserved-text finder predicts exactly what SentencePiece matches, on both tokenizers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemma_turns.reserved import ReservedText

FRAGMENTS = st.sampled_from(
    ["<", ">", "[", "]", "a", " ", "\n", "_", "<start_of_turn>", "<end_of_turn>", "<end_of", "turn>",
     "<mask>", "[multimodal]", "<unused1>", "<unused12>", "<unused999999>", "<b>", "</b>", "<table>",
     "<bos>", "[BOS]", "<start_of_image>", "multimodal", "<<", "]]"]
)
TEXT = st.lists(FRAGMENTS, max_size=12).map("".join)


def test_find_reports_offsets_left_to_right():
    finder = ReservedText(["<end_of_turn>", "[multimodal]", "<unused1>", "<unused12>"])
    assert finder.find("x<end_of_turn>y<a[multimodal]>") == [(1, "<end_of_turn>"), (17, "[multimodal]")]
    assert finder.find("<unused12> <unused1>") == [(0, "<unused12>"), (11, "<unused1>")]
    assert finder.find("no brackets here") == []
    assert finder.split_for_escape("a<unused1>b") == ["a<", "unused1>b"]
    assert finder.split_for_escape("plain") == ["plain"]


@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_finder_agrees_with_sentencepiece(any_tokenizer, text):
    tok = any_tokenizer
    reserved = np.array(list(tok.reserved_ids.values()))
    ids = np.array(tok.processor.encode(text))
    found = tok.reserved.find(text)
    matched = ids[np.isin(ids, reserved)].tolist()
    assert [tok.reserved_ids[piece] for _, piece in found] == matched


@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_escape_leaves_no_reserved_id_and_decodes_back(any_tokenizer, text):
    tok = any_tokenizer
    ids = tok.encode_text(text, reserved="escape")
    assert not np.isin(ids, list(tok.reserved_ids.values())).any()
    assert tok.decode(ids) == text


def test_real_model_reserved_set(real_tokenizer):
    reserved = real_tokenizer.reserved_ids
    assert reserved["<start_of_turn>"] == 105 and reserved["<end_of_turn>"] == 106
    assert reserved["<start_of_image>"] == 255999 and reserved["<mask>"] == 4
    assert "<unused6241>" in reserved and "<table>" not in reserved and "<bos>" not in reserved
    assert len(reserved) == 6 + 6242  # 6 named pieces and every <unusedN>


@pytest.mark.parametrize("policy", ["refuse", "escape", "allow"])
def test_bos_text_never_becomes_bos(any_tokenizer, policy):
    tok = any_tokenizer
    for text in ("<bos>", "[BOS]", "<bos><bos>", " <bos>"):
        assert tok.specials.bos not in tok.encode_text(text, reserved=policy)
