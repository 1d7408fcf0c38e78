"""gemma_turns.hf: datasets.map columns, the labels recipe, packed-row helpers, pickling;
and the recipe checked against a tiny Hugging Face Gemma 3 model built locally."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

from conftest import SAMPLE
from gemma_turns.arrays import best_fit, cu_seqlens, pack_rows, pad_batch, segment_lengths
from gemma_turns.errors import SequenceTooLongError
from gemma_turns.hf import IGNORE_INDEX, labels, map_fn, segment_attention_mask

HI = [{"role": "user", "content": "Hi"}, {"role": "model", "content": "Hello!"}]
SUM = [{"role": "user", "content": "What is 2+2?"}, {"role": "model", "content": "4."}]
NOT_ALTERNATING = [{"role": "user", "content": "Hi"}, {"role": "user", "content": "again"}]
LONG = [{"role": "user", "content": "word " * 200}, {"role": "model", "content": "ok"}]


def sample_conversations():
    """The sample conversations whose contents are all strings (Arrow needs one type per
    column, so a dataset cannot mix string contents with lists of parts)."""
    records = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    return [
        r["messages"] for r in records if all(isinstance(m["content"], str) for m in r["messages"])
    ]


# -- labels and packed-row helpers ---------------------------------------------------------


def test_labels_are_the_ids_where_the_loss_mask_is_set_unshifted():
    ids = [2, 105, 2364, 107, 9259, 106, 107]
    mask = [0, 0, 0, 0, 1, 1, 0]
    assert labels(ids, mask).tolist() == [-100, -100, -100, -100, 9259, 106, -100]
    batch = pad_batch([ids, ids[:3]], loss_masks=[mask, mask[:3]], pad_id=0)
    got = labels(batch.input_ids, batch.loss_mask, ignore_index=-1)
    assert got.shape == batch.shape and got[1].tolist() == [-1] * 7  # padding ignored too


def test_labels_refuse_misaligned_arrays():
    with pytest.raises(ValueError, match="one shape"):
        labels([1, 2, 3], [0, 1])


def test_segment_lengths_and_cu_seqlens_of_packed_rows():
    ids = [[2, 7, 8], [2, 9, 9, 9], [2, 5]]
    packed = pack_rows(best_fit([3, 4, 2], capacity=5), ids, pad_id=0, row_length=5)
    assert packed.segment_ids.tolist() == [[1, 1, 1, 2, 2], [1, 1, 1, 1, 0]]
    assert [x.tolist() for x in segment_lengths(packed.segment_ids)] == [[3, 2], [4]]
    boundaries = cu_seqlens(packed.segment_ids)
    assert boundaries.tolist() == [0, 3, 5, 9] and boundaries.dtype == np.int32
    flat = packed.input_ids[packed.attention_mask == 1]  # what a varlen kernel reads
    pieces = [flat[a:b].tolist() for a, b in zip(boundaries[:-1], boundaries[1:])]
    assert pieces == [[2, 7, 8], [2, 5], [2, 9, 9, 9]]
    # positions restart where each segment starts
    starts = np.flatnonzero(packed.position_ids[packed.attention_mask == 1] == 0)
    assert starts.tolist() == boundaries[:-1].tolist()


def test_segment_attention_mask_is_causal_inside_segments():
    mask = segment_attention_mask(np.array([[1, 1, 2, 0]]))
    assert mask.shape == (1, 1, 4, 4) and mask.dtype == np.float32
    allowed = (mask[0, 0] == 0).astype(int).tolist()
    assert allowed == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    with pytest.raises(ValueError, match="2-D"):
        segment_attention_mask(np.array([1, 1, 2]))


# -- map_fn without datasets ---------------------------------------------------------------


def test_map_fn_gives_columns_and_rejects_as_rows(fixture_tokenizer):
    fn = map_fn(fixture_tokenizer, mode="training", max_length=64)
    out = fn({"messages": [HI, NOT_ALTERNATING, LONG, SUM], "other": [1, 2, 3, 4]})
    assert set(out) == {
        "input_ids", "attention_mask", "loss_mask", "labels", "status", "error_code", "error"
    }
    assert out["status"] == ["encoded", "rejected", "dropped", "encoded"]
    for i, conversation in ((0, HI), (3, SUM)):
        enc = fixture_tokenizer.encode_chat(conversation, mode="training")
        assert out["input_ids"][i] == enc.ids.tolist()
        assert out["loss_mask"][i] == enc.loss_mask.tolist()
        assert out["attention_mask"][i] == [1] * len(enc)
        assert out["labels"][i] == labels(enc.ids, enc.loss_mask).tolist()
        assert out["error"][i] == out["error_code"][i] == ""
    assert out["error_code"][1] == "roles_not_alternating"
    assert out["error"][1].startswith("message 1 (user): roles must alternate")
    assert out["error_code"][2] == "too_long" and "max_length" in out["error"][2]
    assert out["input_ids"][1] == out["labels"][2] == []
    assert all(type(x) is int for x in out["input_ids"][0])  # plain lists, Arrow-ready


def test_map_fn_names_rows_with_indices_and_truncates_on_request(fixture_tokenizer):
    fn = map_fn(fixture_tokenizer, mode="training", max_length=32, truncation="truncate",
                columns=["input_ids", "labels"])
    out = fn({"messages": [LONG, NOT_ALTERNATING]}, [40, 41])
    assert set(out) == {"input_ids", "labels", "status", "error_code", "error"}
    assert out["status"] == ["truncated", "rejected"] and len(out["input_ids"][0]) == 32
    assert out["labels"][0] == [IGNORE_INDEX] * 32  # the cut answer is not trained
    assert out["error"][1].startswith("record 41, message 1")


def test_map_fn_passes_tools_and_template_kwargs(fixture4_tokenizer):
    from conftest import SAMPLE4

    records = [json.loads(line) for line in SAMPLE4.read_text().splitlines() if line.strip()][:4]
    batch = {
        "messages": [r["messages"] for r in records],
        "tools": [r.get("tools") for r in records],
        "chat_template_kwargs": [r.get("chat_template_kwargs") for r in records],
    }
    out = map_fn(fixture4_tokenizer, mode="training")(batch)
    expected = fixture4_tokenizer.try_encode_chat_batch(records, mode="training")
    for i, result in enumerate(expected):
        if hasattr(result, "ids"):
            assert out["input_ids"][i] == result.ids.tolist()
        else:
            assert out["error_code"][i] == result.code
    assert any(r.get("tools") for r in records)


def test_map_fn_pt_mode_reads_text(fixture_tokenizer):
    out = map_fn(fixture_tokenizer, mode="pt", columns=["input_ids"])({"text": ["Some text."]})
    assert out["input_ids"][0] == fixture_tokenizer.encode_pt("Some text.").ids.tolist()


def test_map_fn_usage_errors(fixture_tokenizer):
    with pytest.raises(ValueError, match="columns must be some of"):
        map_fn(fixture_tokenizer, mode="training", columns=["input_ids", "ids"])
    with pytest.raises(ValueError):
        map_fn(fixture_tokenizer, mode="training", train_on="first")
    with pytest.raises(ValueError, match="truncation"):
        map_fn(fixture_tokenizer, mode="inference", max_length=8, truncation="truncate")
    with pytest.raises(KeyError, match="messages_column"):
        map_fn(fixture_tokenizer, mode="training")({"conversations": [HI]})
    strict = map_fn(fixture_tokenizer, mode="training", max_length=8, truncation="error")
    with pytest.raises(SequenceTooLongError):
        strict({"messages": [LONG]})


def test_tokenizer_and_map_fn_pickle(fixture_tokenizer, fixture4_tokenizer):
    for tok in (fixture_tokenizer, fixture4_tokenizer):
        copy = pickle.loads(pickle.dumps(tok))
        assert copy.dialect is tok.dialect and copy.specials == tok.specials
        assert copy.sha256 == tok.sha256 and copy.path == tok.path
        assert copy.encode_chat(HI, mode="training").ids.tolist() == (
            tok.encode_chat(HI, mode="training").ids.tolist()
        )
    encoding = pickle.loads(pickle.dumps(fixture_tokenizer.encode_chat(HI, mode="training")))
    assert encoding.ids.tolist() == fixture_tokenizer.encode_chat(HI, mode="training").ids.tolist()
    fn = map_fn(fixture_tokenizer, mode="training")
    assert pickle.loads(pickle.dumps(fn))({"messages": [HI]}) == fn({"messages": [HI]})


def test_importing_hf_loads_no_optional_dependency():
    code = (
        "import sys, gemma_turns.hf; "
        "print(sorted(m for m in ('datasets', 'pyarrow', 'torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- with datasets --------------------------------------------------------------------------


def test_datasets_map_batched_and_with_two_processes(fixture_tokenizer, tmp_path):
    datasets = pytest.importorskip("datasets")
    conversations = sample_conversations()
    rows = [{"messages": m} for m in conversations] + [
        {"messages": NOT_ALTERNATING},
        {"messages": LONG},
    ]
    ds = datasets.Dataset.from_list(rows)
    fn = map_fn(fixture_tokenizer, mode="training", max_length=128)
    kwargs = dict(batched=True, batch_size=4, remove_columns=ds.column_names, with_indices=True)
    one = ds.map(fn, **kwargs, cache_file_name=str(tmp_path / "one.arrow"))
    two = ds.map(fn, **kwargs, num_proc=2, cache_file_name=str(tmp_path / "two.arrow"))
    assert one.to_list() == two.to_list()
    # batches whose rows all encode come first: the error columns are strings all along
    assert one.features["error"].dtype == one.features["error_code"].dtype == "string"
    expected = fixture_tokenizer.encode_chat_batch(conversations, mode="training")
    assert one["input_ids"][: len(expected)] == [e.ids.tolist() for e in expected]
    assert one["status"][-2:] == ["rejected", "dropped"]
    assert one["error_code"][-2:] == ["roles_not_alternating", "too_long"]
    assert one[len(expected)]["error"].startswith(f"record {len(expected)}, message 1")
    kept = one.filter(lambda error: not error, input_columns="error")
    assert len(kept) == len(expected)
    torch_ready = kept.with_format("numpy", columns=["input_ids", "labels"])
    assert torch_ready[0]["labels"].tolist() == labels(expected[0].ids, expected[0].loss_mask).tolist()


# -- with a tiny Hugging Face Gemma 3 model ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gemma3(fixture_tokenizer):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.Gemma3TextConfig(
        vocab_size=fixture_tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=128,
        pad_token_id=fixture_tokenizer.specials.pad,
        bos_token_id=fixture_tokenizer.specials.bos,
        eos_token_id=fixture_tokenizer.specials.eos,
    )
    model = transformers.Gemma3ForCausalLM(config).eval()
    return torch, model


def test_hf_loss_with_our_labels_is_shifted_cross_entropy_on_the_loss_mask(
    tiny_gemma3, fixture_tokenizer
):
    torch, model = tiny_gemma3
    encodings = fixture_tokenizer.encode_chat_batch(sample_conversations()[:3], mode="training")
    batch = pad_batch([e.ids for e in encodings], loss_masks=[e.loss_mask for e in encodings], pad_id=0)
    ids = torch.from_numpy(batch.input_ids).long()
    attention = torch.from_numpy(batch.attention_mask).long()
    with torch.no_grad():
        out = model(
            input_ids=ids,
            attention_mask=attention,
            labels=torch.from_numpy(labels(batch.input_ids, batch.loss_mask)),
        )
    logits = out.logits[:, :-1].float()  # position i predicts token i + 1
    targets = ids[:, 1:]
    weight = torch.from_numpy(batch.loss_mask[:, 1:]).bool()
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).reshape(targets.shape)
    by_hand = per_token[weight].mean()
    assert weight.sum() == int(batch.loss_mask.sum()) - int(batch.loss_mask[:, 0].sum())
    assert torch.allclose(out.loss, by_hand, atol=1e-5), (out.loss, by_hand)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_packed_row_matches_separate_rows_only_with_a_segment_mask(
    tiny_gemma3, fixture_tokenizer, implementation
):
    """What the README reports: positions alone do not keep attention inside a segment."""
    torch, model = tiny_gemma3
    model.config._attn_implementation = implementation
    encodings = fixture_tokenizer.encode_chat_batch(sample_conversations()[:2], mode="training")
    ids = [e.ids for e in encodings]
    width = sum(map(len, ids))
    packed = pack_rows([[0, 1]], ids, pad_id=0, row_length=width)
    row = torch.from_numpy(packed.input_ids).long()
    positions = torch.from_numpy(packed.position_ids).long()
    with torch.no_grad():
        separate = torch.cat([model(torch.from_numpy(i[None]).long()).logits[0] for i in ids])
        plain = model(row).logits[0]
        with_positions = model(row, position_ids=positions).logits[0]
        mask = torch.from_numpy(segment_attention_mask(packed.segment_ids))
        with_mask = model(row, position_ids=positions, attention_mask=mask).logits[0]
    first = len(ids[0])
    assert torch.allclose(plain[:first], separate[:first], atol=1e-5)  # segment 1: causal anyway
    assert (plain[first:] - separate[first:]).abs().max() > 1e-2
    assert (with_positions[first:] - separate[first:]).abs().max() > 1e-2
    assert torch.allclose(with_mask, separate, atol=1e-4)
