"""Shared fixtures: the committed fixture tokenizers (Gemma 3 and Gemma 4 layouts), and the
real Gemma 3 / Gemma 4 tokenizers when GEMMA_TOKENIZER / GEMMA4_TOKENIZER name them (tests
that need them skip cleanly otherwise)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gemma_turns import GemmaTokenizer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
FIXTURE_MODEL = FIXTURES / "tokenizer" / "gemma3_layout.model"
FIXTURE4_MODEL = FIXTURES / "tokenizer" / "gemma4_layout.model"
SAMPLE = FIXTURES / "conversations" / "sample.jsonl"
SAMPLE4 = FIXTURES / "conversations" / "gemma4_tools.jsonl"
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


@pytest.fixture(scope="session")
def fixture4_tokenizer() -> GemmaTokenizer:
    return GemmaTokenizer.load(FIXTURE4_MODEL)


@pytest.fixture(scope="session")
def real4_tokenizer() -> GemmaTokenizer:
    path = os.environ.get("GEMMA4_TOKENIZER")
    if not path:
        pytest.skip("GEMMA4_TOKENIZER is not set: the real Gemma 4 tokenizer tier is skipped")
    return GemmaTokenizer.load(path)


@pytest.fixture(scope="session", params=["fixture4", "real4"])
def any4_tokenizer(request) -> GemmaTokenizer:
    """Runs a test on the Gemma 4 fixture model and, when available, on the real one."""
    return request.getfixturevalue(f"{request.param}_tokenizer")


def packed_records(path) -> list[tuple]:
    """Every (file, line, ids, loss mask) of a packed output of several inputs, sorted."""
    import numpy as np

    from gemma_turns.dataset import load_dataset

    arrays, manifest = load_dataset(path)
    names = [entry["path"] for entry in manifest["inputs"]]
    out = []
    for r, row in enumerate(arrays["segment_source_line"]):
        for s in np.flatnonzero(row >= 0):
            where = arrays["segment_ids"][r] == s + 1
            file = names[arrays["segment_source_file"][r, s]]
            ids, mask = arrays["input_ids"][r][where], arrays["loss_mask"][r][where]
            out.append((file, int(row[s]), ids.tolist(), mask.tolist()))
    return sorted(out)


def two_inputs(directory: Path, first: int, second: int) -> list[Path]:
    """Two JSONL inputs made from the sample, for runs over several files: ``a.jsonl`` is
    ``first`` copies of it; ``b.jsonl`` its lines reversed, a line that is not JSON and a
    blank one (right after the sample's lines), then ``second`` copies."""
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    a, b = directory / "a.jsonl", directory / "b.jsonl"
    a.write_bytes(b"".join(lines * first))
    b.write_bytes(b"".join(reversed(lines)) + b"not json\n\n" + b"".join(lines * second))
    return [a, b]
