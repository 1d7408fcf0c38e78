"""The fixture tokenizer is what its committed script trains, and has the Gemma 3 layout."""

import hashlib
import importlib.util

import pytest
import sentencepiece
from conftest import FIXTURE_MODEL, FIXTURES

SCRIPT = FIXTURES / "tokenizer" / "train_fixture_tokenizer.py"


def recorded_sha256() -> str:
    return (FIXTURES / "tokenizer" / "SHA256").read_text().split()[0]


def test_model_matches_recorded_hash():
    assert hashlib.sha256(FIXTURE_MODEL.read_bytes()).hexdigest() == recorded_sha256()


@pytest.mark.skipif(
    not sentencepiece.__version__.startswith("0.2."),
    reason="trained with sentencepiece 0.2.3; another series may learn other merges",
)
def test_script_reproduces_the_model():
    spec = importlib.util.spec_from_file_location("train_fixture_tokenizer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert hashlib.sha256(module.train()).hexdigest() == recorded_sha256()


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
