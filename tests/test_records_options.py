"""One Record per input line, one Counts, and options recorded and read back generically."""

import json

import pytest

import gemma_turns
from gemma_turns import ArrayOptions, Counts, EncodeOptions, Record
from gemma_turns.dataset import build_batch, write_dataset
from gemma_turns.jsonl import read_lines
from gemma_turns.options import validate_keywords
from gemma_turns.store import load_dataset


def test_options_round_trip_through_the_manifest(fixture_tokenizer, tmp_path):
    encode = EncodeOptions(mode="inference", add_generation_prompt=True, reserved="escape")
    arrays = ArrayOptions(max_length=64, truncation="drop_oldest_turns", padding="left")
    line = json.dumps([{"role": "user", "content": "Hi"}]).encode() + b"\n"
    write_dataset(fixture_tokenizer, [line], tmp_path / "o.npz", encode_options=encode, array_options=arrays)
    manifest = load_dataset(tmp_path / "o.npz").manifest
    assert EncodeOptions.from_dict(manifest["encode_options"]) == encode
    assert ArrayOptions.from_dict(manifest["array_options"]) == arrays  # shard_size, compress ignored
    assert validate_keywords(manifest["encode_options"]) == {
        "expect": "inference", "endings": ["generation_prompt"], "train_on": "all", "train_newline": False,
    }


def test_from_dict_checks_values_and_ignores_newer_fields():
    assert EncodeOptions.from_dict({"mode": "pt", "option_of_a_newer_version": True}) == EncodeOptions(mode="pt")
    with pytest.raises(ValueError, match="train_newline"):
        EncodeOptions.from_dict({"mode": "training", "train_newline": "yes"})
    with pytest.raises(ValueError, match="max_length"):
        ArrayOptions.from_dict({"max_length": -1})


def test_validate_keywords_leave_the_unstated_unknown():
    assert validate_keywords({"mode": "training"}) == {"expect": "training"}
    assert validate_keywords({"mode": "pt", "add_eos": False})["endings"] == ["text"]
    assert validate_keywords(None) == {} and validate_keywords("junk") == {}


def test_one_record_per_line_and_one_counter(fixture_tokenizer):
    good = [{"role": "user", "content": "Hi"}, {"role": "model", "content": "Hello there, friend"}]
    records = [good, [{"role": "model", "content": "x"}], good * 6, good]
    built = build_batch(
        fixture_tokenizer, records, encode_options=EncodeOptions(mode="training"),
        array_options=ArrayOptions(max_length=40, truncation="drop"),
    )
    assert [(r.number, r.kind) for r in built.problems] == [(1, "rejected"), (2, "dropped")]
    counts = built.counts
    assert isinstance(counts, Counts) and counts.problems == [1, 2]
    assert counts.where() == "rejected or dropped: lines 1, 2"
    assert counts.lines == counts.blank + sum(counts.rejected.values()) + counts.encoded


def test_old_names_are_aliases():
    from gemma_turns.dataset import Fitted

    assert gemma_turns.Outcome is Record and Fitted is Record and gemma_turns.Tally is Counts
    record = Record(3, "truncated", length=9)
    assert (record.line, record.truncated, record.blank, record.dropped) == (3, True, False, None)


def test_the_tally_line_is_unchanged():
    counts = Counts()
    for line in read_lines([b"[]\n", b"\n"]):
        counts.add(Record.blank_line(line.number) if line.blank else Record(line.number, "encoded", length=4))
    assert counts.summary(arrays=False) == "2 lines: 1 encoded (4 tokens), 0 rejected, 1 blank"
