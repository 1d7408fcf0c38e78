"""Writes the interop golden inputs (run from the repository root:
``PYTHONPATH=src python tests/interop/make_interop.py``), from the fixture tokenizer only.
Each file is another tool's convention; test_interop.py says what validate must find.

    trl_completion.jsonl    TRL: input_ids + completion_mask (content, <end_of_turn>, \\n)
    hf_labels.jsonl         HF: labels unshifted, -100 where not trained; line 2 a broken row
    shifted_labels.jsonl    labels shifted by one (labels[i] == input_ids[i + 1])
    trl_packed.jsonl        TRL padding-free packing: two conversations, position_ids restart
    axolotl_packed.npz      axolotl: attention_mask numbered 1..k, labels, zero padding
    llama3.jsonl            Llama 3 ids (<|begin_of_text|> 128000 ...): another tokenizer
"""

import json
from pathlib import Path

import numpy as np

from gemma_turns import GemmaTokenizer

HERE = Path(__file__).resolve().parent
tok = GemmaTokenizer.load(HERE.parent.parent / "fixtures" / "tokenizer" / "gemma3_layout.model")
CHATS = [
    [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "My name is Gemma!"}],
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
]
enc = [tok.encode_chat(c, mode="training", train_newline=True) for c in CHATS]


def jsonl(name, rows):
    (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


jsonl("trl_completion.jsonl", [{"input_ids": e.ids.tolist(), "completion_mask": e.loss_mask.tolist()} for e in enc])
labels = [np.where(e.loss_mask == 1, e.ids, -100) for e in enc]
broken = labels[1].copy()
broken[np.flatnonzero(broken != -100)[0]] = 7
jsonl(
    "hf_labels.jsonl",
    [{"input_ids": e.ids.tolist(), "attention_mask": [1] * len(e.ids), "labels": l.tolist()} for e, l in zip(enc, labels)]
    + [{"input_ids": enc[1].ids.tolist(), "labels": broken.tolist()}],
)
jsonl(
    "shifted_labels.jsonl",
    [{"input_ids": e.ids.tolist(), "labels": np.r_[l[1:], -100].tolist()} for e, l in zip(enc, labels)],
)
ids = np.concatenate([e.ids for e in enc])
jsonl(
    "trl_packed.jsonl",
    [
        {
            "input_ids": ids.tolist(),
            "completion_mask": np.concatenate([e.loss_mask for e in enc]).tolist(),
            "position_ids": np.concatenate([np.arange(len(e.ids)) for e in enc]).tolist(),
            "seq_lengths": [len(e.ids) for e in enc],
        }
    ],
)
width = len(ids) + 3
row_ids = np.zeros((1, width), np.int64)
row_ids[0, : len(ids)] = ids
attention = np.zeros((1, width), np.int64)
attention[0, : len(ids)] = np.concatenate([np.full(len(e.ids), k + 1) for k, e in enumerate(enc)])
row_labels = np.full((1, width), -100, np.int64)
row_labels[0, : len(ids)] = np.concatenate(labels)
np.savez(HERE / "axolotl_packed.npz", input_ids=row_ids, attention_mask=attention, labels=row_labels)
llama = [128000, 128006, 882, 128007, 271, 15546, 527, 499, 30, 128009, 128006, 78191, 128007, 271]
jsonl("llama3.jsonl", [llama, llama[:10], llama])
