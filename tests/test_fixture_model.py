"""The fixture tokenizers are what their committed script trains, with the Gemma 3 and Gemma 4
layouts."""

import hashlib
import importlib.util

import pytest
import sentencepiece
from conftest import FIXTURE4_MODEL, FIXTURE_MODEL, FIXTURES

from gemma_turns.chat_format import GEMMA4, Marker

SCRIPT = FIXTURES / "tokenizer" / "train_fixture_tokenizer.py"


def recorded_sha256(name: str = FIXTURE_MODEL.name) -> str:
    lines = (FIXTURES / "tokenizer" / "SHA256").read_text().splitlines()
    return {line.split()[1]: line.split()[0] for line in lines}[name]


@pytest.mark.parametrize("model", [FIXTURE_MODEL, FIXTURE4_MODEL], ids=lambda p: p.stem)
def test_model_matches_recorded_hash(model):
    assert hashlib.sha256(model.read_bytes()).hexdigest() == recorded_sha256(model.name)


@pytest.mark.skipif(
    not sentencepiece.__version__.startswith("0.2."),
    reason="trained with sentencepiece 0.2.3; another series may learn other merges",
)
def test_script_reproduces_the_model():
    spec = importlib.util.spec_from_file_location("train_fixture_tokenizer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert hashlib.sha256(module.train()).hexdigest() == recorded_sha256()
    assert hashlib.sha256(module.train("gemma4")).hexdigest() == recorded_sha256(FIXTURE4_MODEL.name)


def test_layout_matches_gemma3(fixture_tokenizer):
    specials = fixture_tokenizer.specials
    assert (specials.pad, specials.eos, specials.bos, specials.unk) == (0, 1, 2, 3)
    processor = fixture_tokenizer.processor
    for token_id in (specials.pad, specials.eos, specials.bos):
        assert processor.is_control(token_id)
    # turn markers are matched in text (USER_DEFINED), at other ids than the real model's
    assert processor.encode("<start_of_turn>") == [specials.start_of_turn]
    assert specials.start_of_turn not in (105, 106)
    assert processor.encode("\n\n\n") == [processor.piece_to_id("\n\n\n")]
    assert processor.encode("<table>") == [processor.piece_to_id("<table>")]
    assert processor.id_to_piece(processor.encode("\x01")[0]) == "<0x01>"  # byte fallback


def test_layout_matches_gemma4(fixture4_tokenizer):
    tok = fixture4_tokenizer
    assert tok.dialect is GEMMA4
    processor, markers = tok.processor, tok.specials.markers
    # every Gemma 4 marker is one USER_DEFINED piece, at other ids than the real model's
    for marker, piece in GEMMA4.pieces.items():
        assert processor.encode(piece) == [markers[marker]], piece
    assert markers[Marker.TURN_OPEN] != 105 and markers[Marker.QUOTE] != 52
    assert processor.encode("<start_of_turn>") != [processor.piece_to_id("<start_of_turn>")]
