"""Several input files in one run: every row, segment and reject traced to (file, line)."""

import hashlib
import json

import numpy as np
import pytest
from conftest import FIXTURE_MODEL, SAMPLE

from gemma_turns import EncodeOptions, GemmaTokenizer
from gemma_turns.cli import main
from gemma_turns.dataset import load_dataset
from gemma_turns.store import manifest_inputs

GOOD = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "model", "content": "yo"}]}\n'
BAD = b"not json\n"


def encode(capsys, *argv, mode="training"):
    code = main(["encode", "--tokenizer", str(FIXTURE_MODEL), "--mode", mode, *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture()
def inputs(tmp_path):
    """Three files: the sample, a short one with a bad line, and the sample's lines reversed
    (so the same ids come from different lines of different files)."""
    folder = tmp_path / "data"
    folder.mkdir()
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    (folder / "a.jsonl").write_bytes(b"".join(lines))
    (folder / "b.jsonl").write_bytes(GOOD + BAD + b"\n" + GOOD)
    (folder / "c.jsonl").write_bytes(b"".join(reversed(lines)))
    return folder


def _expected(folder, names):
    """(file, line) -> (ids, loss mask) of every good line, encoded one file at a time."""
    tokenizer = GemmaTokenizer.load(FIXTURE_MODEL)
    options = EncodeOptions(mode="training")
    out = {}
    for name in names:
        for number, raw in enumerate((folder / name).read_bytes().splitlines(), start=1):
            try:
                messages = json.loads(raw)["messages"]
            except ValueError:
                continue
            encoding = tokenizer.encode_chat(messages, options=options)
            out[(name, number)] = (encoding.ids.tolist(), encoding.loss_mask.tolist())
    return out


@pytest.mark.parametrize("pack", [False, True])
def test_rows_and_segments_traced_to_file_and_line(inputs, tmp_path, capsys, pack):
    """Two explicit files and a quoted glob (expanded by the command): the manifest lists each
    input once with its sha256 and size, and every row (segment) names its file and line."""
    out = tmp_path / "out.npz"
    flags = ["--max-length", 256, *(["--pack"] if pack else [])]
    code, _, err = encode(
        capsys, inputs / "b.jsonl", inputs / "a.jsonl", str(inputs / "c*.jsonl"), "-o", out, *flags
    )
    assert code == 1 and f"{inputs / 'b.jsonl'}:2" in err  # the bad line, by file and line
    arrays, manifest = load_dataset(out)
    names = [inputs / "b.jsonl", inputs / "a.jsonl", inputs / "c.jsonl"]
    assert [entry["path"] for entry in manifest["inputs"]] == list(map(str, names))
    for entry, path in zip(manifest["inputs"], names, strict=True):
        data = path.read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
    assert "input" not in manifest and manifest["counts"]["input_bytes"] == sum(
        p.stat().st_size for p in names
    )
    expected = _expected(inputs, ["a.jsonl", "b.jsonl", "c.jsonl"])
    got = {}
    if pack:
        files, lines = arrays["segment_source_file"], arrays["segment_source_line"]
        assert files.shape == lines.shape and files.dtype == np.int32
        for r in range(len(lines)):
            for s in np.flatnonzero(lines[r] >= 0):
                where = arrays["segment_ids"][r] == s + 1
                key = (names[files[r, s]].name, int(lines[r, s]))
                got[key] = (arrays["input_ids"][r][where].tolist(), arrays["loss_mask"][r][where].tolist())
    else:
        for r, (f, line) in enumerate(zip(arrays["source_file"], arrays["source_line"], strict=True)):
            real = arrays["attention_mask"][r] == 1
            got[(names[f].name, int(line))] = (
                arrays["input_ids"][r][real].tolist(),
                arrays["loss_mask"][r][real].tolist(),
            )
    assert got == expected


def test_rejects_and_jsonl_output_name_the_file(inputs, tmp_path, capsys):
    rejects = tmp_path / "r.jsonl"
    a, b = inputs / "a.jsonl", inputs / "b.jsonl"
    code, out, err = encode(capsys, a, b, "-o", tmp_path / "o.npz", "--rejects", rejects)
    entries = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert code == 1 and [(e["file"], e["line"], e["code"]) for e in entries] == [
        (str(b), 2, "invalid_json")
    ]
    assert "14 encoded" in err and "1 blank" in err  # 12 + 2 good lines, counted across files
    # Without -o: one JSON line per input line of each file; a rejected one names its file.
    code, out, _ = encode(capsys, a, b, "--rejects", rejects)
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and len(records) == 12 + 3  # the blank line gives no output line
    assert [r for r in records if "error" in r][0]["file"] == str(b)
    assert json.loads(rejects.read_text())["file"] == str(b)


def test_single_input_output_is_unchanged(tmp_path, capsys):
    """One input: no source_file key, the manifest's ``input`` as before (and ``inputs``)."""
    code, _, _ = encode(capsys, SAMPLE, "-o", tmp_path / "one.npz", "--max-length", 128)
    arrays, manifest = load_dataset(tmp_path / "one.npz")
    assert code == 0 and "source_file" not in arrays
    assert manifest["input"]["path"] == str(SAMPLE) and manifest["inputs"] == [manifest["input"]]
    old = {k: v for k, v in manifest.items() if k != "inputs"}  # a manifest of version 1
    assert manifest_inputs(old) == [manifest["input"]]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{d}/nothing-*.jsonl"], "no file matches"),
        (["{d}/a.jsonl", "{d}/a*.jsonl"], "given twice"),
        (["-", "{d}/a.jsonl"], "'-' (standard input) can only be the one input"),
        (["{d}/missing.jsonl", "{d}/a.jsonl"], "cannot read"),
        (["{d}"], "is a directory"),
    ],
)
def test_bad_input_lists_are_usage_errors(inputs, tmp_path, capsys, argv, message):
    argv = [arg.format(d=inputs) for arg in argv]
    code, out, err = encode(capsys, *argv, "-o", tmp_path / "x.npz")
    assert code == 2 and message in err and not (tmp_path / "x.npz").exists()


def test_validate_names_file_and_line(inputs, tmp_path, capsys):
    """Rows cut short are findings; validate names the input file and line of each."""
    out = tmp_path / "cut.npz"
    a, b = inputs / "a.jsonl", inputs / "b.jsonl"
    code, _, _ = encode(capsys, b, a, "-o", out, "--max-length", 24, "--truncation", "truncate")
    assert code == 1
    code = main(["validate", "--tokenizer", str(FIXTURE_MODEL), str(out), "--json"])
    out_text, err = capsys.readouterr()
    findings = [json.loads(line) for line in out_text.splitlines()]
    assert code == 1 and findings and "Traceback" not in err
    arrays, _ = load_dataset(out)
    for finding in findings:
        row = finding["sequence"]
        expect = [str(b), str(a)][arrays["source_file"][row]]
        assert finding["source_file"] == expect
        assert finding["source_line"] == arrays["source_line"][row]
    assert {f["source_file"] for f in findings} == {str(a)}  # b's two short lines fit
    code = main(["validate", "--tokenizer", str(FIXTURE_MODEL), str(out)])
    text, _ = capsys.readouterr()
    assert f"(source {a} line " in text
