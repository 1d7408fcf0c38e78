"""Write tests/golden/<name>.json from the hand-written cases in cases.py.

    python tests/golden/make_golden.py /path/to/gemma3.model

The turn text of each case is written by hand (cases.py) and only copied here. The ids and
loss masks are the encoder's output for the fixture tokenizer and the real Gemma 3 one; read
the diff before committing. test_golden.py checks them against an independent oracle too:
``[bos] + sp.encode(text)`` for every case without escaping.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import CASES  # noqa: E402

from gemma_turns import GemmaTokenizer  # noqa: E402

FIXTURE = HERE.parent.parent / "fixtures" / "tokenizer" / "gemma3_layout.model"


def main(real_model: str) -> None:
    tokenizers = {"fixture": GemmaTokenizer.load(FIXTURE), "gemma3": GemmaTokenizer.load(real_model)}
    for name, messages, options, text in CASES:
        case = {"name": name, "messages": messages, "options": options, "text": text}
        for label, tokenizer in tokenizers.items():
            encoding = tokenizer.encode_chat(messages, **options)
            case[label] = encoding.to_dict()
        (HERE / f"{name}.json").write_text(dump(case) + "\n")


def dump(case: dict) -> str:
    """Indented JSON with each id list on one line, so diffs stay readable."""
    lines = [f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}" for key, value in case.items()]
    return "{\n" + ",\n".join(lines) + "\n}"


if __name__ == "__main__":
    main(sys.argv[1])
