"""Truncation policies, in-memory batches, datasets written to disk, manifests, and the reader."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE

from gemma_turns import EncodeOptions
from gemma_turns.arrays import unpack, unpad
from gemma_turns.dataset import (
    ArrayOptions,
    build_batch,
    drop_oldest_turns,
    iter_shards,
    load_dataset,
    write_dataset,
)
from gemma_turns.errors import DatasetError, EmptyInputError, SequenceTooLongError

TRAINING = EncodeOptions(mode="training")
INFERENCE = EncodeOptions(mode="inference")


def chat(*texts, system=None):
    """Messages alternating user/model, starting with the user."""
    messages = [{"role": "system", "content": system}] if system else []
    roles = ("user", "model")
    return messages + [{"role": roles[k % 2], "content": text} for k, text in enumerate(texts)]


def long_chat(turns, system="Be brief."):
    texts = [
        f"{'question' if k % 2 == 0 else 'answer'} number {k} with several words"
        for k in range(turns)
    ]
    return chat(*texts, system=system)


def lines_of(*records):
    return [
        (json.dumps(r) if not isinstance(r, bytes) else r.decode("latin-1")).encode("latin-1")
        + b"\n"
        for r in records
    ]


# -- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_length": 0}, "max_length"),
        ({"pad_to_multiple": 0}, "pad_to_multiple"),
        ({"padding": "middle"}, "padding"),
        ({"truncation": "cut"}, "truncation"),
        ({"pack": True}, "needs a max_length"),
        ({"truncation": "drop"}, "needs a max_length"),
        ({"pack": True, "max_length": 8, "padding": "left"}, "right-padded"),
    ],
)
def test_array_options_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ArrayOptions(**kwargs)


def test_policies_that_would_corrupt_a_mode_are_refused():
    with pytest.raises(ValueError, match="inference"):
        ArrayOptions(max_length=8, truncation="drop_oldest_turns").check_mode("training")
    with pytest.raises(ValueError, match="generation prompt"):
        ArrayOptions(max_length=8, truncation="truncate").check_mode("inference")
    ArrayOptions(max_length=8, truncation="truncate").check_mode("pt")


def test_limit_counts_the_extra_id_of_shift():
    assert ArrayOptions(max_length=8).limit == 8
    assert ArrayOptions(max_length=8, shift=True).limit == 9
    assert ArrayOptions().limit is None


# -- in-memory batches and truncation policies ------------------------------------------------


def test_build_batch_matches_the_encodings(fixture_tokenizer):
    conversations = [chat("Hi", "Hello"), chat("Who are you?", "Gemma.", "2+2?", "4")]
    built = build_batch(fixture_tokenizer, conversations, encode_options=TRAINING)
    expected = fixture_tokenizer.encode_chat_batch(conversations, mode="training")
    batch = built.batch
    assert batch.shape == (2, max(len(e) for e in expected))
    assert [r.tolist() for r in unpad(batch.input_ids, batch.attention_mask)] == [
        e.ids.tolist() for e in expected
    ]
    assert [r.tolist() for r in unpad(batch.loss_mask, batch.attention_mask)] == [
        e.loss_mask.tolist() for e in expected
    ]
    assert (batch.input_ids[batch.attention_mask == 0] == fixture_tokenizer.specials.pad).all()
    assert built.sources.tolist() == [0, 1] and built.problems == ()


def test_error_policy_raises_with_the_record(fixture_tokenizer):
    with pytest.raises(SequenceTooLongError) as caught:
        build_batch(
            fixture_tokenizer,
            [chat("Hi", "Hello"), long_chat(8)],
            encode_options=TRAINING,
            array_options=ArrayOptions(max_length=30),
        )
    assert caught.value.record == 1 and caught.value.max_length == 30


def test_drop_policy_reports_the_record(fixture_tokenizer):
    built = build_batch(
        fixture_tokenizer,
        [chat("Hi", "Hello"), long_chat(8), [{"role": "model", "content": "x"}]],
        encode_options=TRAINING,
        array_options=ArrayOptions(max_length=30, truncation="drop"),
    )
    assert built.batch.shape[0] == 1 and built.sources.tolist() == [0]
    dropped, rejected = built.problems
    assert dropped.line == 1 and dropped.dropped.code == "too_long"
    assert dropped.report()["kind"] == "dropped" and "30" in dropped.report()["reason"]
    assert rejected.line == 2 and rejected.report()["kind"] == "rejected"
    counts = built.counts
    assert (counts.lines, counts.encoded, counts.sequences, dict(counts.dropped)) == (
        3,
        2,
        1,
        {"too_long": 1},
    )
    assert sum(counts.rejected.values()) == 1


def test_truncate_keeps_complete_model_turns_and_masks_the_cut_one(fixture_tokenizer):
    messages = chat(
        "Tell me",
        "First answer, complete.",
        "More please",
        "A second answer that will be cut in the middle",
    )
    full = fixture_tokenizer.encode_chat(messages, mode="training")
    first_turn = fixture_tokenizer.encode_chat(messages[:2], mode="training")
    limit = len(full) - 5  # inside the last model turn's content
    built = build_batch(
        fixture_tokenizer,
        [messages],
        encode_options=TRAINING,
        array_options=ArrayOptions(max_length=limit, truncation="truncate"),
    )
    row_ids = built.batch.input_ids[0]
    row_mask = built.batch.loss_mask[0]
    assert row_ids.tolist() == full.ids[:limit].tolist()
    # the first model turn stays trained exactly as before; nothing after it is
    assert row_mask[: len(first_turn)].tolist() == first_turn.loss_mask.tolist()
    assert not row_mask[len(first_turn) :].any()
    assert built.counts.truncated == 1 and built.counts.untrained == 0


def test_truncate_that_leaves_nothing_to_learn_is_counted(fixture_tokenizer):
    built = build_batch(
        fixture_tokenizer,
        [chat("A rather long question here", "An answer that is cut")],
        encode_options=TRAINING,
        array_options=ArrayOptions(max_length=12, truncation="truncate"),
    )
    assert not built.batch.loss_mask.any()
    assert (built.counts.truncated, built.counts.untrained) == (1, 1)
    assert "nothing left to learn" in built.counts.summary()


def test_truncate_pt_keeps_the_trainable_prefix(fixture_tokenizer):
    text = "plain text for pretraining, long enough to be cut somewhere"
    full = fixture_tokenizer.encode_pt(text)
    built = build_batch(
        fixture_tokenizer,
        [text],
        encode_options=EncodeOptions(mode="pt"),
        array_options=ArrayOptions(max_length=6, truncation="truncate"),
    )
    assert built.batch.input_ids[0].tolist() == full.ids[:6].tolist()
    assert built.batch.loss_mask[0].tolist() == full.loss_mask[:6].tolist()


def test_drop_oldest_turns_keeps_the_first_user_turn_and_the_latest(fixture_tokenizer):
    messages = long_chat(9)  # system, user 0, model 1, ..., user 8
    full = fixture_tokenizer.encode_chat(messages, mode="inference")
    # system + user 0, then model 5, user 6, model 7, user 8
    expected = fixture_tokenizer.encode_chat(messages[:2] + messages[6:], mode="inference")
    limit = len(expected) + 2
    assert len(full) > limit
    kept = drop_oldest_turns(fixture_tokenizer, messages, max_length=limit, options=INFERENCE)
    assert kept.ids.tolist() == expected.ids.tolist()
    text = fixture_tokenizer.decode(kept.ids)
    assert text.startswith("<start_of_turn>user\nBe brief.\n\nquestion number 0")
    assert text.endswith("<start_of_turn>model\n")  # still ends with the generation prompt


def test_drop_oldest_turns_without_a_system_message(fixture_tokenizer):
    messages = long_chat(7, system=None)
    minimal = fixture_tokenizer.encode_chat(messages[:1] + messages[5:], mode="inference")
    kept = drop_oldest_turns(
        fixture_tokenizer, messages, max_length=len(minimal), options=INFERENCE
    )
    assert kept.ids.tolist() == minimal.ids.tolist()


def test_drop_oldest_turns_that_cannot_fit(fixture_tokenizer):
    messages = long_chat(9)
    with pytest.raises(SequenceTooLongError):
        drop_oldest_turns(fixture_tokenizer, messages, max_length=10, options=INFERENCE)
    with pytest.raises(ValueError, match="inference"):
        drop_oldest_turns(fixture_tokenizer, messages, max_length=10, options=TRAINING)
    built = build_batch(
        fixture_tokenizer,
        [messages, chat("Hi")],
        encode_options=INFERENCE,
        array_options=ArrayOptions(max_length=20, truncation="drop_oldest_turns", padding="left"),
    )
    assert [p.line for p in built.problems] == [0] and "still takes" in built.problems[
        0
    ].dropped.reason
    assert built.counts.dropped["too_long"] == 1 and built.sources.tolist() == [1]


def test_drop_oldest_turns_policy_in_a_left_padded_batch(fixture_tokenizer):
    messages = long_chat(9)
    limit = len(fixture_tokenizer.encode_chat(messages[:2] + messages[-2:], mode="inference")) + 4
    built = build_batch(
        fixture_tokenizer,
        [messages, chat("Hi")],
        encode_options=INFERENCE,
        array_options=ArrayOptions(
            max_length=limit, truncation="drop_oldest_turns", padding="left"
        ),
    )
    batch = built.batch
    assert batch.shape == (2, limit) and built.counts.truncated == 1
    generation_prompt = (
        fixture_tokenizer.encode_chat(chat("Hi"), mode="inference").ids[-3:].tolist()
    )
    assert batch.input_ids[:, -3:].tolist() == [generation_prompt, generation_prompt]


def test_packed_batch_keeps_every_conversation(fixture_tokenizer):
    conversations = [chat(f"question {k}", f"answer {k}" * (k % 3 + 1)) for k in range(9)]
    expected = fixture_tokenizer.encode_chat_batch(conversations, mode="training")
    built = build_batch(
        fixture_tokenizer,
        conversations,
        encode_options=TRAINING,
        array_options=ArrayOptions(max_length=64, pack=True),
    )
    batch, sources = built.batch, built.sources
    assert batch.shape[0] < len(conversations)
    segments = unpack(batch.input_ids, batch.segment_ids)
    order = sources[sources >= 0].tolist()
    assert sorted(order) == list(range(9))
    assert [s.tolist() for s in segments] == [expected[i].ids.tolist() for i in order]
    bos = fixture_tokenizer.specials.bos
    assert all(s[0] == bos for s in segments)  # each segment starts with its own BOS
    assert built.counts.fill_ratio == pytest.approx(batch.fill_ratio())


def test_shift_drops_a_record_with_nothing_to_predict(fixture_tokenizer):
    built = build_batch(
        fixture_tokenizer,
        ["", "some text"],
        encode_options=EncodeOptions(mode="pt", add_eos=False),
        array_options=ArrayOptions(shift=True),
    )
    assert [p.dropped.code for p in built.problems] == ["no_target"]
    assert built.batch.shape[0] == 1


# -- writing and reading ------------------------------------------------------------------------


def write(tokenizer, tmp_path, records, name="out.npz", **kwargs):
    source = lines_of(*records) if not isinstance(records, Path) else open(records, "rb")
    kwargs.setdefault("encode_options", TRAINING)
    try:
        return write_dataset(tokenizer, source, tmp_path / name, **kwargs)
    finally:
        if hasattr(source, "close"):
            source.close()


def test_write_and_load_a_file(fixture_tokenizer, tmp_path):
    written = write(fixture_tokenizer, tmp_path, SAMPLE, array_options=ArrayOptions(max_length=128))
    assert written.files == (tmp_path / "out.npz",)
    assert written.manifest_path == tmp_path / "out.manifest.json"
    arrays, manifest = load_dataset(tmp_path / "out.npz")
    assert set(arrays) == {
        "input_ids",
        "attention_mask",
        "loss_mask",
        "position_ids",
        "source_line",
    }
    assert arrays["input_ids"].shape == (12, 128) and arrays["input_ids"].dtype == np.int32
    assert arrays["source_line"].tolist() == list(range(1, 13))  # input order, 1-based lines
    expected = [json.loads(line)["messages"] for line in SAMPLE.read_text().splitlines()]
    encodings = fixture_tokenizer.encode_chat_batch(expected, mode="training")
    assert [r.tolist() for r in unpad(arrays["input_ids"], arrays["attention_mask"])] == [
        e.ids.tolist() for e in encodings
    ]
    assert manifest == json.loads((tmp_path / "out.manifest.json").read_text())
    assert load_dataset(tmp_path / "out.manifest.json").manifest == manifest


def test_manifest_fields(fixture_tokenizer, tmp_path):
    import gemma_turns

    written = write(
        fixture_tokenizer,
        tmp_path,
        SAMPLE,
        array_options=ArrayOptions(max_length=64, truncation="drop"),
        input_path=str(SAMPLE),
    )
    manifest = written.manifest
    assert manifest["gemma_turns_version"] == gemma_turns.__version__
    assert manifest["tokenizer"]["sha256"] == fixture_tokenizer.sha256
    assert manifest["tokenizer"]["specials"] == fixture_tokenizer.specials.as_dict()
    assert manifest["encode_options"] == TRAINING.as_dict()
    assert (
        manifest["array_options"]["max_length"] == 64
        and manifest["array_options"]["truncation"] == "drop"
    )
    assert manifest["input"]["bytes"] == SAMPLE.stat().st_size
    counts = manifest["counts"]
    assert (
        counts["lines"]
        == 12
        == counts["encoded"] + counts["blank"] + sum(counts["rejected"].values())
    )
    assert counts["encoded"] == counts["sequences"] + sum(counts["dropped"].values())
    assert counts["rows"] == counts["sequences"] and 0 < counts["fill_ratio"] <= 1
    assert manifest["keys"]["loss_mask"] == {"dtype": "int8", "shape": ["rows", 64]}
    assert manifest["files"][0]["name"] == "out.npz"


def test_sharded_output_matches_the_single_file(fixture_tokenizer, tmp_path):
    options = ArrayOptions(max_length=128, pack=True, shift=True)
    write(fixture_tokenizer, tmp_path, SAMPLE, array_options=options)
    written = write(
        fixture_tokenizer, tmp_path, SAMPLE, name="shards", array_options=options, shard_size=3
    )
    names = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert names == ["manifest.json"] + [f"shard-{k:05d}.npz" for k in range(len(written.files))]
    single, _ = load_dataset(tmp_path / "out.npz")
    sharded, manifest = load_dataset(tmp_path / "shards")
    assert set(single) == set(sharded) >= {"segment_ids", "targets", "segment_source_line"}
    for key in single:
        assert np.array_equal(single[key], sharded[key]), key
    assert [len(shard["input_ids"]) for shard in iter_shards(tmp_path / "shards")] == [3] * (
        len(names) - 2
    ) + [manifest["files"][-1]["rows"]]


@pytest.mark.parametrize("block_rows", [1, 2, 256])
def test_a_shard_is_built_in_blocks_and_holds_exactly_shard_size_rows(
    fixture_tokenizer, tmp_path, monkeypatch, block_rows
):
    """Shards are built BLOCK_ROWS rows at a time (never a whole shard of ragged rows at
    once): blocks smaller than, dividing or not dividing the shard give the same shards."""
    import gemma_turns.dataset as dataset

    options = ArrayOptions(max_length=128, pack=True, shift=True)
    write(fixture_tokenizer, tmp_path, SAMPLE, array_options=options)
    monkeypatch.setattr(dataset, "BLOCK_ROWS", block_rows)
    built = []
    to_arrays = dataset._to_arrays
    monkeypatch.setattr(dataset, "_to_arrays", lambda chunk, *a: built.append(len(chunk)) or to_arrays(chunk, *a))
    write(fixture_tokenizer, tmp_path, SAMPLE, name="shards", array_options=options, shard_size=3)
    assert max(built) == min(block_rows, 3)
    single, _ = load_dataset(tmp_path / "out.npz")
    sharded, manifest = load_dataset(tmp_path / "shards")
    for key in single:
        assert np.array_equal(single[key], sharded[key]), key
    rows = [entry["rows"] for entry in manifest["files"]]
    assert rows[:-1] == [3] * (len(rows) - 1) and 0 < rows[-1] <= 3


def test_a_single_file_written_in_blocks_is_what_np_savez_writes(
    fixture_tokenizer, tmp_path, monkeypatch
):
    """A single .npz is built block by block (BLOCK_ROWS rows at a time) and written without
    joining the blocks: it must load exactly as the arrays joined and saved by numpy."""
    import gemma_turns.dataset as dataset

    options = ArrayOptions(max_length=128, pack=True, shift=True)
    write(fixture_tokenizer, tmp_path, SAMPLE, name="whole.npz", array_options=options)
    monkeypatch.setattr(dataset, "BLOCK_ROWS", 1)
    written = write(fixture_tokenizer, tmp_path, SAMPLE, name="blocks.npz", array_options=options)
    whole, _ = load_dataset(tmp_path / "whole.npz")
    blocks, manifest = load_dataset(tmp_path / "blocks.npz")
    assert written.counts.rows > 1 and manifest["files"][0]["rows"] == written.counts.rows
    for key in whole:
        assert blocks[key].dtype == whole[key].dtype and np.array_equal(blocks[key], whole[key]), key
    with np.load(tmp_path / "blocks.npz") as data:  # numpy's own reader, no manifest involved
        assert np.array_equal(data["input_ids"], whole["input_ids"])
    # rows of one segment next to rows of two: the narrower source table is widened with -1
    assert (blocks["segment_source_line"] == -1).any()


def test_rejects_file_lists_rejected_and_dropped_lines(fixture_tokenizer, tmp_path):
    records = [chat("Hi", "Hello"), b"not json", long_chat(10), chat("Hi")]
    written = write(
        fixture_tokenizer,
        tmp_path,
        records,
        rejects=tmp_path / "rejects.jsonl",
        array_options=ArrayOptions(max_length=40, truncation="drop"),
    )
    entries = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(e["line"], e["kind"], e["code"]) for e in entries] == [
        (2, "rejected", "invalid_json"),
        (3, "dropped", "too_long"),
        (4, "rejected", "nothing_to_learn"),
    ]
    assert written.counts.rows == 1


def test_empty_input_writes_nothing(fixture_tokenizer, tmp_path):
    for source in ([], [b"\n", b"  \n"]):
        with pytest.raises(EmptyInputError):
            write_dataset(fixture_tokenizer, source, tmp_path / "out.npz", encode_options=TRAINING)
    assert os.listdir(tmp_path) == []


def test_an_interrupted_run_leaves_no_output(fixture_tokenizer, tmp_path):
    def source():
        yield from lines_of(chat("Hi", "Hello"), chat("Hi", "Hello"))
        raise KeyboardInterrupt

    for name, shard_size in (("out.npz", None), ("shards", 1)):
        with pytest.raises(KeyboardInterrupt):
            write_dataset(
                fixture_tokenizer,
                source(),
                tmp_path / name,
                encode_options=TRAINING,
                array_options=ArrayOptions(max_length=32),
                shard_size=shard_size,
                rejects=tmp_path / "rejects.jsonl",
                batch_size=1,
            )
    assert os.listdir(tmp_path) == []


def test_an_interrupted_run_keeps_the_previous_output(fixture_tokenizer, tmp_path):
    write(fixture_tokenizer, tmp_path, [chat("Hi", "Hello")])
    before = (tmp_path / "out.npz").read_bytes()

    def source():
        yield from lines_of(chat("Bye", "Ciao"))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dataset(fixture_tokenizer, source(), tmp_path / "out.npz", encode_options=TRAINING)
    assert (tmp_path / "out.npz").read_bytes() == before
    assert load_dataset(tmp_path / "out.npz").arrays["input_ids"].shape[0] == 1
    assert sorted(os.listdir(tmp_path)) == ["out.manifest.json", "out.npz"]


def test_too_long_under_error_writes_nothing(fixture_tokenizer, tmp_path):
    with pytest.raises(SequenceTooLongError) as caught:
        write(
            fixture_tokenizer,
            tmp_path,
            [chat("Hi", "Hello"), long_chat(10)],
            array_options=ArrayOptions(max_length=30),
        )
    assert caught.value.record == 2
    assert os.listdir(tmp_path) == []


def test_a_previous_shard_directory_is_replaced_but_not_a_foreign_one(fixture_tokenizer, tmp_path):
    options = dict(array_options=ArrayOptions(max_length=64), shard_size=1)
    write(fixture_tokenizer, tmp_path, [chat("a", "b"), chat("c", "d")], name="shards", **options)
    write(fixture_tokenizer, tmp_path, [chat("e", "f")], name="shards", **options)
    assert sorted(os.listdir(tmp_path / "shards")) == ["manifest.json", "shard-00000.npz"]
    assert sorted(os.listdir(tmp_path)) == ["shards"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a gemma-turns output"):
        write(fixture_tokenizer, tmp_path, [chat("e", "f")], name="mine", **options)
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_output_names_are_checked(fixture_tokenizer, tmp_path):
    with pytest.raises(DatasetError, match="FILE.npz"):
        write(fixture_tokenizer, tmp_path, [chat("a", "b")], name="out.bin")
    with pytest.raises(ValueError, match="max_length"):
        write(fixture_tokenizer, tmp_path, [chat("a", "b")], name="shards", shard_size=2)


def test_the_reader_checks_files_against_the_manifest(fixture_tokenizer, tmp_path):
    write(fixture_tokenizer, tmp_path, [chat("a", "b")])
    data = bytearray((tmp_path / "out.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "out.npz").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="does not match its manifest"):
        load_dataset(tmp_path / "out.npz")
    (tmp_path / "out.manifest.json").unlink()
    with pytest.raises(DatasetError, match="no manifest"):
        load_dataset(tmp_path / "out.npz")
    (tmp_path / "out.manifest.json").write_text("{}")
    with pytest.raises(DatasetError, match="not a gemma-turns"):
        load_dataset(tmp_path / "out.npz")


def test_progress_is_reported(fixture_tokenizer, tmp_path):
    seen = []
    write(
        fixture_tokenizer,
        tmp_path,
        SAMPLE,
        batch_size=5,
        on_progress=lambda counts: seen.append(counts.lines),
    )
    assert seen == [5, 10, 12]


# -- the real Gemma 3 tokenizer -------------------------------------------------------------------


@pytest.mark.real_tokenizer
def test_real_tokenizer_sample_to_packed_arrays(real_tokenizer, tmp_path):
    written = write(
        real_tokenizer, tmp_path, SAMPLE, array_options=ArrayOptions(max_length=256, pack=True)
    )
    arrays, manifest = load_dataset(written.manifest_path)
    assert manifest["tokenizer"]["specials"]["start_of_turn"] == 105
    messages = [json.loads(line)["messages"] for line in SAMPLE.read_text().splitlines()]
    encodings = real_tokenizer.encode_chat_batch(messages, mode="training")
    lines = arrays["segment_source_line"][arrays["segment_source_line"] > 0].tolist()
    segments = unpack(arrays["input_ids"], arrays["segment_ids"])
    assert [s.tolist() for s in segments] == [encodings[line - 1].ids.tolist() for line in lines]


@pytest.mark.real_tokenizer
def test_real_tokenizer_drop_oldest_turns(real_tokenizer):
    messages = long_chat(9)
    expected = real_tokenizer.encode_chat(messages[:2] + messages[6:], mode="inference")
    kept = drop_oldest_turns(real_tokenizer, messages, max_length=len(expected), options=INFERENCE)
    assert kept.ids.tolist() == expected.ids.tolist()
    assert kept.ids[-3:].tolist() == [105, 4368, 107]  # <start_of_turn>model\n


def test_waiting_sequences_do_not_keep_the_encoder_batch_alive(fixture_tokenizer):
    from gemma_turns.dataset import _Rows

    batch = fixture_tokenizer.encode_chat_batch([chat("a", "b"), chat("c", "d")], mode="training")
    rows = _Rows(ArrayOptions(max_length=64, pack=True))
    rows.add(1, batch[0])
    (kept,) = rows.waiting.values()
    assert kept.ids.base is None and kept.loss_mask.base is None
    assert kept.ids.tolist() == batch[0].ids.tolist()
