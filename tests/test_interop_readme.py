"""The README's Interoperability examples run as written (on the fixture tokenizer)."""

import re

import pytest
from conftest import ROOT


def example(section: str) -> str:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"### {section}\n", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.+?)\n```", body, flags=re.S)[0]


def test_the_datasets_example_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("datasets")
    monkeypatch.chdir(ROOT)
    exec(example("Hugging Face datasets"), {})
    assert capsys.readouterr().out.strip() == "rejected roles_not_alternating"


def test_the_training_recipe_example_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace = {}
    exec(example("The Hugging Face training recipe: labels and packed rows"), namespace)
    assert namespace["packed_batch"]["attention_mask"].shape == (1, 1, 64, 64)
    assert (namespace["hf_batch"]["labels"] != -100).any()
