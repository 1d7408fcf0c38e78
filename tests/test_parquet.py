"""Parquet output: the same rows, manifest, atomicity and readers as .npz; ragged list
columns that Hugging Face datasets reads; a clear usage error without pyarrow."""

import json
import os
import sys

import numpy as np
import pytest
from conftest import FIXTURE_MODEL, SAMPLE

from gemma_turns.cli import main
from gemma_turns.errors import DatasetError
from gemma_turns.store import iter_shards, load_dataset, open_stored

pytest.importorskip("pyarrow")

BAD = b'{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}\n'


def encode(capsys, *argv):
    code = main(["encode", "--tokenizer", str(FIXTURE_MODEL), *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, err


CASES = {
    "right, shifted": ["--mode", "training", "--max-length", 128, "--shift"],
    "left, inference": ["--mode", "inference", "--max-length", 96, "--padding", "left",
                        "--truncation", "drop", "--pad-to-multiple", 32],
    "packed, shifted": ["--mode", "training", "--max-length", 256, "--pack", "--shift"],
    "packed shards": ["--mode", "training", "--max-length", 200, "--pack", "--shard-size", 2],
    "shards": ["--mode", "training", "--max-length", 128, "--shard-size", 5, "--compress"],
}


@pytest.mark.parametrize("flags", CASES.values(), ids=CASES.keys())
def test_parquet_reads_back_as_the_npz_arrays(tmp_path, capsys, flags):
    sharded = "--shard-size" in flags
    npz = tmp_path / ("npz" if sharded else "n.npz")
    parquet = tmp_path / ("pq" if sharded else "p.parquet")
    assert encode(capsys, SAMPLE, "-o", npz, *flags)[0] == 0
    more = ["--format", "parquet"] if sharded else []
    code, err = encode(capsys, SAMPLE, "-o", parquet, *flags, *more)
    assert code == 0 and f"wrote {parquet}" in err
    a, manifest_a = load_dataset(npz)
    b, manifest_b = load_dataset(parquet)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    for one, other in zip(iter_shards(npz), iter_shards(parquet), strict=True):
        assert all(np.array_equal(one[key], other[key]) for key in one)
    assert manifest_b["keys"] == manifest_a["keys"] and manifest_b["counts"] == manifest_a["counts"]
    assert manifest_b["array_options"]["file_format"] == "parquet"
    assert manifest_a["array_options"]["file_format"] == "npz"
    names = [entry["name"] for entry in manifest_b["files"]]
    assert all(name.endswith(".parquet") for name in names)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no partial, no lock


def test_rows_are_ragged_lists_that_datasets_reads(tmp_path, capsys, fixture_tokenizer):
    out = tmp_path / "train.parquet"
    code, _ = encode(capsys, SAMPLE, "-o", out, "--mode", "training", "--max-length", 128)
    assert code == 0
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.schema.field("input_ids").type.value_type == pa.int32()
    assert table.schema.field("loss_mask").type.value_type == pa.int8()
    assert pa.types.is_list(table.schema.field("position_ids").type)
    records = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    first = fixture_tokenizer.encode_chat(records[0]["messages"], mode="training")
    assert table.column("input_ids")[0].as_py() == first.ids.tolist()  # unpadded
    assert table.column("loss_mask")[0].as_py() == first.loss_mask.tolist()
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 12 and ds[0]["input_ids"] == first.ids.tolist()
    assert ds[0]["source_line"] == 1


def test_manifest_checks_parquet_files(tmp_path, capsys):
    out = tmp_path / "d"
    flags = ["--mode", "training", "--max-length", 128, "--shard-size", 5, "--format", "parquet"]
    assert encode(capsys, SAMPLE, "-o", out, *flags)[0] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(e["name"], e["rows"]) for e in manifest["files"]] == [
        ("shard-00000.parquet", 5), ("shard-00001.parquet", 5), ("shard-00002.parquet", 2)
    ]
    shard = out / "shard-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DatasetError, match="does not match its manifest"):
        load_dataset(out)
    assert any("shard-00001.parquet does not match" in p for p in open_stored(out).problems)
    (out / "shard-00009.parquet").write_bytes(b"x")
    assert any("shard-00009.parquet is not listed" in p for p in open_stored(out).problems)
    # a rerun replaces the directory of a previous run (our manifest and shards only)
    (out / "shard-00009.parquet").unlink()
    assert encode(capsys, SAMPLE, "-o", out, *flags)[0] == 0
    assert load_dataset(out).arrays["input_ids"].shape == (12, 128)


def test_npz_and_parquet_of_one_name_do_not_share_a_manifest(tmp_path, capsys):
    flags = ["--mode", "training", "--max-length", 128]
    assert encode(capsys, SAMPLE, "-o", tmp_path / "a.parquet", *flags)[0] == 0
    code, err = encode(capsys, SAMPLE, "-o", tmp_path / "a.npz", *flags)
    assert code == 2 and "is the manifest of a.parquet" in err
    assert load_dataset(tmp_path / "a.parquet").arrays["input_ids"].shape == (12, 128)
    (tmp_path / "a.npz").write_bytes(b"stray")
    with pytest.raises(DatasetError, match="not of a.npz"):
        load_dataset(tmp_path / "a.npz")


def test_parquet_with_rejects_and_drops(tmp_path, capsys):
    data = tmp_path / "in.jsonl"
    data.write_bytes(SAMPLE.read_bytes() + BAD)
    out = tmp_path / "o.parquet"
    code, err = encode(capsys, data, "-o", out, "--mode", "training", "--max-length", 50,
                       "--truncation", "drop", "--rejects", tmp_path / "r.jsonl")
    assert code == 1 and "9 (too_long 9) dropped" in err
    arrays, manifest = load_dataset(out)
    assert arrays["input_ids"].shape == (3, 50) and manifest["counts"]["rows"] == 3


def test_usage_errors(tmp_path, capsys):
    code, err = encode(capsys, SAMPLE, "-o", tmp_path / "x.npz", "--format", "parquet",
                       "--mode", "training")
    assert code == 2 and "--format is parquet" in err
    code, err = encode(capsys, SAMPLE, "--format", "parquet", "--mode", "training")
    assert code == 2 and "--format" in err and "only with arrays" in err
    code, err = encode(capsys, SAMPLE, "-o", tmp_path / "x.arrow", "--mode", "training")
    assert code == 2 and "FILE.npz or FILE.parquet" in err
    assert os.listdir(tmp_path) == []


def test_without_pyarrow_a_usage_error_says_how_to_install(tmp_path, capsys, monkeypatch):
    for name in [n for n in sys.modules if n == "pyarrow" or n.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    code, err = encode(capsys, SAMPLE, "-o", tmp_path / "x.parquet", "--mode", "training")
    assert code == 2
    assert "Parquet output needs pyarrow" in err and "pip install 'gemma-turns[parquet]'" in err
    assert os.listdir(tmp_path) == []
    with pytest.raises(DatasetError, match="needs pyarrow"):
        load_dataset_of_parquet_without_pyarrow(tmp_path)


def load_dataset_of_parquet_without_pyarrow(folder):
    from gemma_turns.store import read_arrays

    return read_arrays(folder / "missing.parquet")


def test_row_groups_of_a_few_rows_read_back_the_same(tmp_path, capsys, monkeypatch):
    from gemma_turns import store_parquet

    monkeypatch.setattr(store_parquet, "ROW_GROUP", 5)
    flags = ["--mode", "training", "--max-length", 256, "--pack", "--max-length", 100,
             "--truncation", "truncate"]
    assert encode(capsys, SAMPLE, "-o", tmp_path / "n.npz", *flags)[0] == 0
    assert encode(capsys, SAMPLE, "-o", tmp_path / "p.parquet", *flags)[0] == 0
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "p.parquet").metadata.num_row_groups > 1
    a, b = load_dataset(tmp_path / "n.npz").arrays, load_dataset(tmp_path / "p.parquet").arrays
    assert all(np.array_equal(a[key], b[key]) for key in a) and a.keys() == b.keys()


def test_the_rejects_file_may_not_be_the_manifest_of_a_parquet_output(tmp_path, capsys):
    from gemma_turns.dataset import check_rejects_path

    with pytest.raises(DatasetError, match="also an input or an output"):
        check_rejects_path(tmp_path / "o.manifest.json", output=tmp_path / "o.parquet")
    code, err = encode(capsys, SAMPLE, "-o", tmp_path / "o.parquet", "--mode", "training",
                       "--rejects", tmp_path / "o.manifest.json")
    assert code == 2 and "also an input or an output" in err


def test_packed_rows_carry_their_segment_lengths(tmp_path, capsys):
    out = tmp_path / "p.parquet"
    flags = ["--mode", "training", "--max-length", 256, "--pack", "--shift"]
    assert encode(capsys, SAMPLE, "-o", out, *flags)[0] == 0
    import pyarrow.parquet as pq

    from gemma_turns.arrays import cu_seqlens, segment_lengths

    table = pq.read_table(out)
    arrays = load_dataset(out).arrays
    assert "seq_lengths" not in arrays  # derived, not one of the arrays
    expected = [x.tolist() for x in segment_lengths(arrays["segment_ids"])]
    assert table.column("seq_lengths").to_pylist() == expected
    flat = [n for row in expected for n in row]
    assert cu_seqlens(arrays["segment_ids"]).tolist() == np.concatenate([[0], np.cumsum(flat)]).tolist()
