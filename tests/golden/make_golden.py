"""Write tests/golden/<name>.json (Gemma 3) and tests/golden/gemma4/<name>.json from the
hand-written cases in cases.py and gemma4/cases.py.

    python tests/golden/make_golden.py /path/to/gemma3.model /path/to/gemma4.model

The turn text of each case is written by hand (cases.py) and only copied here. The ids and
loss masks are the encoder's output for the fixture tokenizer and the real Gemma 3 one; read
the diff before committing. test_golden.py checks them against an independent oracle too:
``[bos] + sp.encode(text)`` for every case without escaping.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
import importlib.util  # noqa: E402

from gemma_turns import GemmaTokenizer  # noqa: E402

FIXTURES = HERE.parent.parent / "fixtures" / "tokenizer"


def cases_of(folder: Path) -> list:
    spec = importlib.util.spec_from_file_location(f"cases_{folder.name}", folder / "cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES


def main(gemma3_model: str, gemma4_model: str) -> None:
    for folder, key, fixture, real in (
        (HERE, "messages", "gemma3_layout.model", ("gemma3", gemma3_model)),
        (HERE / "gemma4", "record", "gemma4_layout.model", ("gemma4", gemma4_model)),
    ):
        tokenizers = {"fixture": GemmaTokenizer.load(FIXTURES / fixture), real[0]: GemmaTokenizer.load(real[1])}
        for name, messages, options, text in cases_of(folder):
            case = {"name": name, key: messages, "options": options, "text": text}
            for label, tokenizer in tokenizers.items():
                case[label] = tokenizer.encode_chat(messages, **options).to_dict()
            (folder / f"{name}.json").write_text(dump(case) + "\n")


def dump(case: dict) -> str:
    """Indented JSON with each id list on one line, so diffs stay readable."""
    lines = [f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}" for key, value in case.items()]
    return "{\n" + ",\n".join(lines) + "\n}"


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
