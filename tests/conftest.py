"""Shared fixtures: the committed fixture tokenizer, and the real Gemma 3 tokenizer when
GEMMA_TOKENIZER names it (tests that need it skip cleanly otherwise)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gemma_turns import GemmaTokenizer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
FIXTURE_MODEL = FIXTURES / "tokenizer" / "gemma3_layout.model"
SAMPLE = FIXTURES / "conversations" / "sample.jsonl"
GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="session")
def fixture_tokenizer() -> GemmaTokenizer:
    return GemmaTokenizer.load(FIXTURE_MODEL)


@pytest.fixture(scope="session")
def real_tokenizer() -> GemmaTokenizer:
    path = os.environ.get("GEMMA_TOKENIZER")
    if not path:
        pytest.skip("GEMMA_TOKENIZER is not set: the real Gemma 3 tokenizer tier is skipped")
    return GemmaTokenizer.load(path)


@pytest.fixture(scope="session", params=["fixture", "real"])
def any_tokenizer(request) -> GemmaTokenizer:
    """Runs a test on the fixture model and, when available, on the real one."""
    return request.getfixturevalue(f"{request.param}_tokenizer")
