"""Other tools' output, in their own conventions: masks (labels shifted or not, HF
assistant_masks, TRL completion_mask), packing (position_ids restarts, seq_lengths, cu_seqlens,
axolotl's numbered attention mask), torch tensors, HF's split of long space runs, and ids of
another tokenizer. Golden inputs in tests/interop/ (made by make_interop.py from the fixture
tokenizer); transformers, torch and pyarrow tests skip without them."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURE_MODEL

from gemma_turns import validate
from gemma_turns.cli import main
from gemma_turns.conventions import labels_to_loss, read_record
from gemma_turns.shapes import int_array
from gemma_turns.testing import assert_valid, validate_batch

INTEROP = Path(__file__).resolve().parent / "interop"
CHATS = [
    [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "My name is Gemma!"}],
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
]


@pytest.fixture(scope="module")
def tok(fixture_tokenizer):
    return fixture_tokenizer


def cli(capsys, *argv):
    code = main(["validate", "--tokenizer", str(FIXTURE_MODEL), *argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- labels ---------------------------------------------------------------------------------


def test_labels_unshifted_and_shifted_are_told_apart():
    ids = [np.array([2, 14, 9, 15, 8])]
    assert labels_to_loss(ids, [np.array([-100, -100, 9, 15, -100])]).kind == "unshifted"
    read = labels_to_loss(ids, [np.array([-100, 9, 15, -100, -100])])
    assert read.kind == "shifted" and read.loss[0].tolist() == [0, 0, 1, 1, 0]
    assert labels_to_loss(ids, [np.full(5, -100)]).kind == "unshifted (assumed)"
    neither = labels_to_loss(ids, [np.array([-100, -100, 4, 15, -100])])
    assert neither.loss == [None] and neither.bad[0][:2] == (0, 2)


def test_labels_keyword_reports_the_convention(tok):
    encodings = [tok.encode_chat(c, mode="training") for c in CHATS]
    ids = np.stack([np.r_[e.ids, np.zeros(30 - len(e.ids), int)] for e in encodings])
    unshifted = np.where(np.stack([np.r_[e.loss_mask, np.zeros(30 - len(e.ids), int)] for e in encodings]) == 1, ids, -100)
    report = validate(ids, tok, labels=unshifted, expect="training")
    assert report.ok and "unshifted" in report.notes[0]
    shifted = np.c_[unshifted[:, 1:], np.full(2, -100)]
    report = validate(ids, tok, labels=shifted, expect="training")
    assert report.ok and "read as shifted" in report.notes[0]
    untrained = unshifted.copy()
    untrained[untrained == tok.specials.markers[list(tok.specials.markers)[1]]] = -100  # no <end_of_turn>
    wrong = validate(ids, tok, labels=untrained, expect="training")
    assert wrong.counts.get("loss_mask") == 2  # the model never learns to end its turn
    mixed = validate(ids, tok, labels=np.stack([unshifted[0], shifted[1]]), expect="training")
    assert mixed.counts == {"labels": 1} and "mixes both conventions" in mixed.findings[0].message


def test_all_ignored_labels_are_an_all_zero_mask(tok):
    e = tok.encode_chat(CHATS[0], mode="training")
    report = validate([e.ids], tok, labels=[np.full(len(e.ids), -100)], expect="training")
    assert report.counts == {"loss_mask_all_zero": 1}


# -- records in other tools' keys ------------------------------------------------------------


def test_read_record_packing_conventions():
    ids = [2, 14, 9, 2, 14, 7, 0]
    seg = lambda **keys: read_record({"input_ids": ids, **keys}, int_array).segments.tolist()  # noqa: E731
    assert seg(position_ids=[0, 1, 2, 0, 1, 2, 0], attention_mask=[1] * 6 + [0]) == [1, 1, 1, 2, 2, 2, 0]
    assert seg(seq_lengths=[3, 3]) == [1, 1, 1, 2, 2, 2, 0]
    assert seg(cu_seqlens=[0, 3, 6]) == [1, 1, 1, 2, 2, 2, 0]
    assert seg(attention_mask=[1, 1, 1, 2, 2, 2, 0]) == [1, 1, 1, 2, 2, 2, 0]
    assert read_record({"input_ids": ids, "position_ids": list(range(7))}, int_array).segments is None
    with pytest.raises(ValueError, match="add up to at most 7"):
        seg(seq_lengths=[5, 5])
    record = read_record({"input_ids": ids, "loss_mask": [0] * 7, "labels": ids, "my_loss_weights_mask": [1] * 7}, int_array)
    assert record.loss_key == "loss_mask" and len(record.unused) == 2


GOLDEN = [
    ("trl_completion.jsonl", 0, "read completion_mask as loss mask"),
    ("hf_labels.jsonl", 1, "labels read as unshifted"),
    ("shifted_labels.jsonl", 0, "labels read as shifted"),
    ("trl_packed.jsonl", 0, "seq_lengths as packed segments"),
    ("axolotl_packed.npz", 0, "attention_mask as packed segments"),
]


@pytest.mark.parametrize("name, code, said", GOLDEN)
def test_golden_inputs_of_other_tools(capsys, name, code, said):
    found, out, err = cli(capsys, "--expect", "training", str(INTEROP / name))
    assert found == code and said in err, (out, err)
    if code:
        assert "labels: labels[18] = 7" in out


def test_a_packed_dump_without_its_packing_keys_fails_at_the_join(tmp_path, capsys):
    """What happened before: the keys ignored, a false finding where the conversations meet."""
    record = json.loads((INTEROP / "trl_packed.jsonl").read_text())
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"input_ids": record["input_ids"], "completion_mask": record["completion_mask"]}) + "\n")
    code, out, _ = cli(capsys, str(path))
    assert code == 1 and "bos_inside" in out
    path.write_text(json.dumps({k: v for k, v in record.items() if k != "seq_lengths"}) + "\n")
    assert cli(capsys, "--expect", "training", str(path))[0] == 0  # position_ids restarts


def test_an_unread_mask_key_is_a_warning(tmp_path, capsys):
    e = json.loads((INTEROP / "trl_completion.jsonl").read_text().splitlines()[0])
    path = tmp_path / "w.jsonl"
    path.write_text(json.dumps({**e, "assistant_masks": e["completion_mask"], "weight_mask": [1]}) + "\n")
    code, _, err = cli(capsys, str(path))
    assert code == 0
    assert "key completion_mask (the loss mask is read from assistant_masks): not checked" in err
    assert "key weight_mask (not a key validate reads): not checked" in err


def test_npz_with_cu_seqlens_and_labels(tmp_path, tok, capsys):
    encodings = [tok.encode_chat(c, mode="training") for c in CHATS]
    ids = np.concatenate([e.ids for e in encodings])
    labels = np.concatenate([np.where(e.loss_mask == 1, e.ids, -100) for e in encodings])
    cu = np.r_[0, np.cumsum([len(e.ids) for e in encodings])]
    np.savez(tmp_path / "x.npz", input_ids=ids, labels=labels, cu_seqlens=cu)
    code, out, err = cli(capsys, "--expect", "training", str(tmp_path / "x.npz"))
    assert code == 0 and "cu_seqlens as packed segments" in err, out


# -- other tokenizers ------------------------------------------------------------------------


def test_ids_of_another_tokenizer_are_one_finding_per_file(capsys, monkeypatch):
    from gemma_turns import readers

    monkeypatch.setattr(readers, "CHUNK_ROWS", 2)  # two chunks: still one finding
    code, out, _ = cli(capsys, str(INTEROP / "llama3.jsonl"))
    assert code == 1 and out.count(": foreign_ids:") == 1 and "Llama 3" in out
    assert "3 sequences (38 tokens): 0 valid, 3 invalid; findings by rule: foreign_ids 1" in out


@pytest.mark.parametrize(
    "ids, name",
    [
        ([151644, 872, 198, 9707, 151645, 198], "ChatML (Qwen)"),
        ([1, 3, 16127, 4, 22177, 2], "Mistral"),
        ([1, 518, 25580, 29962, 15043, 518, 29914, 25580, 29962], "Llama 2 / Mistral"),
    ],
)
def test_other_vocabularies_are_named(tok, ids, name):
    report = validate([ids, ids], tok)
    assert report.counts == {"foreign_ids": 1} and name in report.findings[0].message
    assert report.invalid == 2


def test_one_corrupt_sequence_is_not_another_tokenizer(tok):
    e = tok.encode_chat(CHATS[0], mode="training").ids.tolist()
    report = validate([e, e, [1, 3, 5]], tok)  # one of three: below half
    assert "foreign_ids" not in report.counts


@pytest.mark.real_tokenizer
def test_gemma2_ids_are_one_file_level_finding(real_tokenizer):
    gemma2 = [2, 106, 1645, 108, 6750, 107, 108, 106, 2516, 108, 10979, 107, 108]
    report = validate([gemma2] * 5, real_tokenizer, expect="training")
    assert report.counts == {"foreign_ids": 1} and "Gemma 2" in report.findings[0].message
    assert report.invalid == 5


# -- tensors and assert_valid ----------------------------------------------------------------


def test_torch_tensors_and_a_collator_batch(tok):
    torch = pytest.importorskip("torch")
    encodings = [tok.encode_chat(c, mode="training") for c in CHATS]
    width = max(len(e.ids) for e in encodings)
    pad = lambda x, v: np.r_[x, np.full(width - len(x), v)]  # noqa: E731
    batch = {
        "input_ids": torch.tensor(np.stack([pad(e.ids, 0) for e in encodings])),
        "attention_mask": torch.tensor(np.stack([pad(np.ones(len(e.ids), int), 0) for e in encodings])),
        "labels": torch.tensor(np.stack([pad(np.where(e.loss_mask == 1, e.ids, -100), -100) for e in encodings])),
    }
    assert_valid(batch, tok, expect="training")
    assert validate(batch["input_ids"], tok, attention_mask=batch["attention_mask"], expect="training").ok
    assert_valid([torch.tensor(e.ids) for e in encodings], tok, expect="training")
    broken = dict(batch, input_ids=torch.cat([torch.full((2, 1), 2), batch["input_ids"][:, :-1]], dim=1))
    with pytest.raises(AssertionError, match="bos_inside"):
        assert_valid(broken, tok)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validate_batch({**batch, "weights_mask": batch["attention_mask"]}, tok)
    assert any("weights_mask" in str(w.message) for w in caught)


# -- Hugging Face's fast tokenizer -----------------------------------------------------------


def hf_tokenizer(model: Path, tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    folder = tmp_path_factory.mktemp("hf")
    (folder / "tokenizer.model").symlink_to(model)
    return transformers.GemmaTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def hf_fixture(tmp_path_factory):
    return hf_tokenizer(FIXTURE_MODEL, tmp_path_factory)


TABLE = [{"role": "user", "content": "Align:\n| a" + " " * 40 + "| b |"}, {"role": "assistant", "content": "Done."}]


def test_hf_long_space_runs_are_a_known_difference(tok, hf_fixture, tmp_path, capsys):
    from gemma_turns import format_chat

    text = format_chat(TABLE, mode="training")
    ids = [tok.specials.bos] + hf_fixture(text, add_special_tokens=False)["input_ids"]
    ours = tok.encode_chat(TABLE, mode="training").ids.tolist()
    assert ids != ours  # transformers really splits the 40 spaces otherwise
    report = validate(ids, tok, expect="training")
    assert report.counts == {"hf_space_runs": 1} and "known difference" in report.findings[0].message
    assert validate(ids, tok, expect="training", tolerate={"hf_space_runs"}).ok
    path = tmp_path / "hf.jsonl"
    path.write_text(json.dumps(ids) + "\n")
    assert cli(capsys, str(path))[0] == 1
    assert cli(capsys, "--tolerate", "hf_space_runs", str(path))[0] == 0
    sp = tok.processor  # another difference beside the space run (a word cut into letters): still noncanonical
    k = next(i for i in range(4, len(ids)) if len(sp.id_to_piece(ids[i])) > 1 and "\u2581" not in sp.id_to_piece(ids[i]))
    letters = [sp.piece_to_id(c) for c in sp.id_to_piece(ids[k])]
    edited = ids[:k] + letters + ids[k + 1 :]
    assert "noncanonical" in validate(edited, tok, tolerate={"hf_space_runs"}).counts


def test_hf_chat_template_masks(tok, hf_fixture):
    """transformers' own assistant mask for Gemma's template (no generation blocks) is all
    zero: caught."""
    hf_fixture.chat_template = (
        "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
        "{{ m.content | trim }}<end_of_turn>\n{% endfor %}"
    )
    out = hf_fixture.apply_chat_template(CHATS[0], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    report = validate_batch({"input_ids": out["input_ids"], "assistant_masks": out["assistant_masks"]}, tok, expect="training")
    assert report.counts == {"loss_mask_all_zero": 1}


@pytest.fixture(scope="module")
def hf_real(real_tokenizer, tmp_path_factory):
    import os

    return hf_tokenizer(Path(os.environ["GEMMA_TOKENIZER"]), tmp_path_factory)


@pytest.mark.real_tokenizer
def test_real_gemma3_hf_space_runs(real_tokenizer, hf_real):
    """The real vocabulary converted by transformers: runs of 32+ spaces differ (16-space
    pieces, then the rest), shorter ones do not; every one is the known difference."""
    sp = real_tokenizer.processor
    for n in (17, 31, 32, 40, 63, 100):
        text = "a" + " " * n + "b"
        hf_ids = hf_real(text, add_special_tokens=False)["input_ids"]
        assert (hf_ids != sp.encode(text)) == (n >= 32), n
        chat = [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]
        from gemma_turns import format_chat

        ids = [2] + hf_real(format_chat(chat, mode="training"), add_special_tokens=False)["input_ids"]
        report = validate(ids, real_tokenizer, expect="training")
        assert report.counts == ({"hf_space_runs": 1} if n >= 32 else {}), (n, report.format())


# -- Parquet -------------------------------------------------------------------------------


def test_parquet_input(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [json.loads(line) for line in (INTEROP / "hf_labels.jsonl").read_text().splitlines()]
    table = pa.Table.from_pylist([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    pq.write_table(table, tmp_path / "d.parquet")
    code, out, err = cli(capsys, "--expect", "training", str(tmp_path / "d.parquet"))
    assert code == 1 and "sequence 2" in out and "labels read as unshifted" in err


def test_parquet_without_pyarrow_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    code, out, err = cli(capsys, str(tmp_path / "d.parquet"))
    assert code == 2 and "pip install 'gemma-turns[parquet]'" in err and "Traceback" not in err


def test_the_readme_torch_example_runs():
    pytest.importorskip("torch")
    import re

    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    start = text.index("### Torch tensors and `assert_valid`")
    section = text[start : text.index("\n### ", start + 1)]
    (example,) = re.findall(r"```python\n(.+?)\n```", section, flags=re.S)
    namespace = {}
    exec(example.replace('"tokenizer.model"', repr(str(FIXTURE_MODEL))), namespace)
    assert namespace["batch"]["labels"].shape[0] == 2


def test_a_hugging_face_dataset_slice_is_a_batch(tok):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(line) for line in (INTEROP / "hf_labels.jsonl").read_text().splitlines()[:2]]
    ds = datasets.Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    report = validate_batch(ds[:2], tok, expect="training", train_newline=True)
    assert report.ok and "unshifted" in report.notes[0]
    ds = ds.map(lambda r: {"labels": r["labels"][1:] + [-100]})  # shifted by a map
    assert "read as shifted" in validate_batch(ds[:2], tok, expect="training", train_newline=True).notes[0]


def test_a_wrong_completion_mask_is_now_checked(tmp_path, capsys):
    """A TRL dump whose mask also trains the prompt: it used to pass unread."""
    rows = [json.loads(line) for line in (INTEROP / "trl_completion.jsonl").read_text().splitlines()]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({**r, "completion_mask": [1] * len(r["input_ids"])}) + "\n" for r in rows))
    code, out, _ = cli(capsys, "--expect", "training", str(path))
    assert code == 1 and "loss_mask: the loss mask is 1 on BOS" in out


def test_inspect_reads_labels_and_numbered_attention(capsys):
    code = main(["inspect", "--tokenizer", str(FIXTURE_MODEL), str(INTEROP / "shifted_labels.jsonl"), "-n", "1", "--color", "never"])
    out, err = capsys.readouterr()
    assert code == 0 and "labels read as shifted" in err and "loss mask on 3 tokens: valid" in out
    code = main(["inspect", "--tokenizer", str(FIXTURE_MODEL), str(INTEROP / "axolotl_packed.npz"), "--color", "never"])
    out, err = capsys.readouterr()
    assert code == 0 and "(3 padding)" in out and ": valid" in out


def test_parquet_errors_are_clear(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist([{"text": "x"}]), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pylist([{"input_ids": [2, None]}]), tmp_path / "b.parquet")
    (tmp_path / "c.parquet").write_bytes((tmp_path / "b.parquet").read_bytes()[:-30])
    code, _, err = cli(capsys, *(str(tmp_path / f"{n}.parquet") for n in "abc"))
    assert code == 2 and "Traceback" not in err
    assert "has no input_ids column" in err and "row 0: input_ids must be a list of integers" in err
    assert "is not a readable Parquet file" in err
