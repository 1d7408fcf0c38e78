"""The engine seam without an engine: chunks planned, run by ChunkWorkers in this process,
merged by the driver; the guarantees a distributed run gives, checked fast."""

import json
import os
import re

import numpy as np
import pytest
from conftest import FIXTURE_MODEL, packed_records, two_inputs

from gemma_turns import ArrayOptions, EncodeOptions, GemmaTokenizer
from gemma_turns.dataset import load_dataset, write_dataset
from gemma_turns.engines.chunks import ChunkWorker, plan_chunks, write_chunked
from gemma_turns.store import iter_shards, open_stored

OPTIONS = dict(
    encode_options=EncodeOptions(mode="training"),
    array_options=ArrayOptions(max_length=256, pack=True, truncation="drop"),
)


@pytest.fixture(scope="module")
def tokenizer():
    return GemmaTokenizer.load(FIXTURE_MODEL)


@pytest.fixture()
def inputs(tmp_path):
    return [str(path) for path in two_inputs(tmp_path, 5, 3)]


def in_process(job, chunks):
    worker = ChunkWorker(job)
    return [worker(chunk.to_row()) for chunk in chunks]


def test_plan_cuts_at_line_starts(inputs):
    chunks, described = plan_chunks(inputs, chunk_bytes=2000)
    assert len(chunks) > 4 and [c.index for c in chunks] == list(range(len(chunks)))
    for name, entry in zip(inputs, described, strict=True):
        data = open(name, "rb").read()
        mine = [c for c in chunks if c.path == os.path.abspath(name)]
        assert mine[0].start == 0 and mine[-1].end == len(data) == entry["bytes"]
        for before, after in zip(mine, mine[1:], strict=False):
            assert before.end == after.start and data[after.start - 1 : after.start] == b"\n"
            assert after.first_line == data[: after.start].count(b"\n") + 1


@pytest.mark.parametrize("scope", ["chunk", "global"])
def test_same_records_as_a_local_run(tokenizer, inputs, tmp_path, scope):
    local = write_dataset(
        tokenizer, None, tmp_path / "local", inputs=inputs, shard_size=8,
        rejects=tmp_path / "local.jsonl", **OPTIONS,
    )
    chunked = write_chunked(
        tokenizer, inputs, tmp_path / "chunked", launch=in_process, shard_size=8,
        chunk_bytes=2000, pack_scope=scope, rejects=tmp_path / "chunked.jsonl", **OPTIONS,
    )
    assert chunked.manifest["engine"]["chunks"] > 4
    assert packed_records(tmp_path / "chunked") == packed_records(tmp_path / "local")
    assert (tmp_path / "chunked.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()
    assert chunked.manifest["inputs"] == local.manifest["inputs"]
    same = {k: v for k, v in local.counts.as_dict().items() if k not in ("rows", "cells", "fill_ratio")}
    assert {k: chunked.counts.as_dict()[k] for k in same} == same
    assert chunked.counts.problems == local.counts.problems
    assert open_stored(tmp_path / "chunked").problems == []
    if scope == "global":  # one packing pass: the very same rows and shards
        ours, theirs = load_dataset(tmp_path / "chunked")[0], load_dataset(tmp_path / "local")[0]
        assert all(np.array_equal(ours[k], theirs[k]) for k in theirs) and ours.keys() == theirs.keys()
    else:
        names = sorted(os.listdir(tmp_path / "chunked"))  # shard-CHUNK-PART, one name a chunk
        assert names[0] == "manifest.json" and names[1:] == [e["name"] for e in chunked.manifest["files"]]
        assert all(re.fullmatch(r"shard-\d{5}-\d{3}\.npz", name) for name in names[1:])


def test_a_result_delivered_twice_is_counted_once(tokenizer, inputs, tmp_path):
    def twice(job, chunks):
        results = in_process(job, chunks)
        return results + results[:2]

    once = write_chunked(tokenizer, inputs, tmp_path / "once", launch=in_process, shard_size=8, chunk_bytes=2000, **OPTIONS)
    again = write_chunked(tokenizer, inputs, tmp_path / "again", launch=twice, shard_size=8, chunk_bytes=2000, **OPTIONS)
    assert again.counts.as_dict() == once.counts.as_dict()
    assert again.manifest["files"] == once.manifest["files"]


def test_a_run_that_dies_leaves_no_manifest_and_a_rerun_completes(tokenizer, inputs, tmp_path):
    """The engine fails after some chunks wrote their shards (and a worker left a shard half
    written): nothing appears under the output's name; the next run writes it whole, without
    the dead attempt's files."""
    out = tmp_path / "out"

    def dies(job, chunks):
        results = in_process(job, chunks[:2])
        with open(os.path.join(job.work, "shard-00002-000.npz"), "wb") as half:
            half.write(b"PK\x03\x04 half a shard")
        yield from results
        raise RuntimeError("worker node lost")

    with pytest.raises(RuntimeError):
        write_chunked(tokenizer, inputs, out, launch=dies, shard_size=8, chunk_bytes=2000, **OPTIONS)
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".out")]

    def leaves_a_stray(job, chunks):
        with open(os.path.join(job.work, "shard-00099-000.npz"), "wb") as stray:
            stray.write(b"from a worker that was killed")
        return in_process(job, chunks)

    written = write_chunked(tokenizer, inputs, out, launch=leaves_a_stray, shard_size=8, chunk_bytes=2000, **OPTIONS)
    listed = [entry["name"] for entry in written.manifest["files"]]
    assert sorted(os.listdir(out)) == sorted([*listed, "manifest.json"])
    assert sum(len(shard["input_ids"]) for shard in iter_shards(out)) == written.counts.rows
    assert written.counts.lines == sum(open(name, "rb").read().count(b"\n") for name in inputs)


def test_too_long_names_the_first_in_input_order(tokenizer, inputs, tmp_path):
    from gemma_turns.errors import SequenceTooLongError

    options = {**OPTIONS, "array_options": ArrayOptions(max_length=40, pack=True)}
    with pytest.raises(SequenceTooLongError) as caught:
        write_dataset(tokenizer, None, tmp_path / "l", inputs=inputs, shard_size=8, **options)
    with pytest.raises(SequenceTooLongError) as chunked:
        write_chunked(tokenizer, inputs, tmp_path / "c", launch=in_process, shard_size=8, chunk_bytes=2000, **options)
    assert (chunked.value.path, chunked.value.record) == (caught.value.path, caught.value.record)
    assert caught.value.path == inputs[0] and not (tmp_path / "c").exists()


def test_rejects_entries_name_file_and_line(tokenizer, inputs, tmp_path):
    write_chunked(tokenizer, inputs, tmp_path / "o", launch=in_process, shard_size=8, chunk_bytes=2000, rejects=tmp_path / "r.jsonl", **OPTIONS)
    entries = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(e["file"], e["line"], e["code"]) for e in entries] == [(inputs[1], 13, "invalid_json")]


def test_no_rows_still_makes_an_output_and_no_records_is_an_error(tokenizer, tmp_path):
    from gemma_turns.errors import EmptyInputError

    empty, blank, bad = tmp_path / "e.jsonl", tmp_path / "b.jsonl", tmp_path / "x.jsonl"
    empty.write_bytes(b"")
    blank.write_bytes(b"\n\n")
    bad.write_bytes(b"x\ny\n")
    written = write_chunked(tokenizer, [bad, empty], tmp_path / "o", launch=in_process, shard_size=8, **OPTIONS)
    assert written.counts.rejected == {"invalid_json": 2} and written.counts.rows == 0
    arrays, _ = load_dataset(tmp_path / "o")  # one empty shard, with every key
    assert arrays["input_ids"].shape == (0, 256) and "segment_source_file" in arrays
    with pytest.raises(EmptyInputError, match="no records"):
        write_chunked(tokenizer, [empty, blank], tmp_path / "n", launch=in_process, shard_size=8, **OPTIONS)
    assert not (tmp_path / "n").exists()
