"""The README's two opening commands are exactly the ones CI runs."""

import re

from conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)[:2]


def test_ci_runs_the_readme_commands_verbatim():
    install, tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci
    assert tests in ci
    assert "pip install" in install and "pytest" in tests


def test_the_python_api_example_runs():
    """The README's first Python example, on the fixture tokenizer."""
    text = (ROOT / "README.md").read_text()
    example = re.findall(r"```python\n(.+?)\n```", text, flags=re.S)[0]
    assert 'GemmaTokenizer.load("tokenizer.model")' in example
    namespace = {}
    exec(example.replace("tokenizer.model", str(ROOT / "fixtures/tokenizer/gemma3_layout.model")), namespace)
    assert namespace["enc"].loss_mask.any() and len(namespace["batch"]) == 2
    assert type(namespace["results"][1]).__name__ == "ConversationError"


def test_the_gemma4_example_ids_and_mask(real4_tokenizer):
    """The README's Gemma 4 tool-use example: its code, ids and mask, on the real tokenizer."""
    text = (ROOT / "README.md").read_text()
    code, table = re.search(r"```python\n(record = .+?)\n```\n\n```\n(piece .+?)\n```", text, flags=re.S).groups()
    namespace = {"tok": real4_tokenizer}
    exec(code, namespace)
    rows = [line.split()[1:] for line in table.splitlines()]
    ids = [int(x) for row in rows[1::4] for x in row]
    mask = [int(x) for row in rows[2::4] for x in row]
    assert namespace["enc"].ids.tolist() == ids
    assert namespace["enc"].loss_mask.tolist() == mask
