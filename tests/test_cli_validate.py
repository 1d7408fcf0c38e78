"""``gemma-turns validate`` and ``gemma-turns inspect``, in-process through cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURE_MODEL as FIXTURE
from conftest import SAMPLE

from gemma_turns.cli import main

MODEL = str(FIXTURE)


@pytest.fixture(scope="module")
def tok(fixture_tokenizer):
    return fixture_tokenizer


@pytest.fixture(scope="module")
def encodings(tok):
    conversations = [json.loads(line)["messages"] for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return tok.encode_chat_batch(conversations, mode="training")


def write_npz(path: Path, encodings, *, left=False, manifest=None, **extra):
    width = max(len(e) for e in encodings) + 2
    ids = np.zeros((len(encodings), width), np.int32)
    attention = np.zeros_like(ids, dtype=np.int8)
    loss = np.zeros_like(ids, dtype=np.int8)
    for row, e in enumerate(encodings):
        cols = slice(width - len(e), width) if left else slice(0, len(e))
        ids[row, cols], attention[row, cols], loss[row, cols] = e.ids, 1, e.loss_mask
    np.savez(path, input_ids=ids, attention_mask=attention, loss_mask=loss, **extra)
    if manifest is not None:
        path.with_name(path.name.removesuffix(".npz") + ".manifest.json").write_text(json.dumps(manifest))
    return ids, attention, loss


def manifest_for(tok, **options):
    return {
        "tokenizer": {"sha256": tok.sha256},
        "encode_options": {"mode": "training", "train_on": "all", "train_newline": False, **options},
        "array_options": {"padding": "right", "pack": False},
    }


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_valid_npz_with_manifest(tmp_path, capsys, tok, encodings):
    path = tmp_path / "data.npz"
    write_npz(path, encodings, manifest=manifest_for(tok))
    code, out, err = run(capsys, "validate", "--tokenizer", MODEL, str(path))
    assert code == 0, out + err
    assert f"{len(encodings)} sequences" in out and "0 invalid" in out
    assert "warning" not in err


def test_invalid_npz_points_at_sequence_and_token(tmp_path, capsys, tok, encodings):
    path = tmp_path / "data.npz"
    ids, attention, loss = write_npz(path, encodings, left=True, manifest=manifest_for(tok))
    row = 3
    start = int(np.argmax(attention[row]))
    ids[row, start + 5] = tok.specials.bos
    np.savez(path, input_ids=ids, attention_mask=attention, loss_mask=loss, source_line=np.arange(1, len(ids) + 1))
    code, out, _ = run(capsys, "validate", "--tokenizer", MODEL, str(path))
    assert code == 1
    assert f"sequence {row} (source line {row + 1}), position {start + 5} (id {tok.specials.bos}): bos_inside" in out
    assert "»<bos>«" in out and "findings by rule: bos_inside 1" in out


def test_json_output(tmp_path, capsys, tok, encodings):
    path = tmp_path / "ids.jsonl"
    lines = [json.dumps(e.to_dict()) for e in encodings[:4]]
    broken = encodings[1].ids.tolist()
    broken[1] = broken[4]  # <start_of_turn> replaced by a word
    lines[2] = json.dumps(broken)
    lines.insert(1, "")  # a blank line keeps its index: sequence k is line k + 1
    path.write_text("\n".join(lines) + "\n")
    code, out, err = run(capsys, "validate", "--tokenizer", MODEL, "--json", str(path))
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    assert records and all({"sequence", "position", "token_id", "rule", "message", "expected", "context"} <= r.keys() for r in records)
    assert {r["sequence"] for r in records} == {3}
    assert (3, 1, "bad_start") in {(r["sequence"], r["position"], r["rule"]) for r in records}
    assert "bad_start 1" in err and "1 invalid" in err  # the summary goes to stderr


def test_max_findings_and_counts(tmp_path, capsys, tok, encodings):
    path = tmp_path / "ids.jsonl"
    path.write_text("".join(json.dumps([tok.specials.bos] + e.ids.tolist()) + "\n" for e in encodings))
    code, out, _ = run(capsys, "validate", "--tokenizer", MODEL, "--max-findings", "2", str(path))
    assert code == 1
    assert out.count("bos_inside: ") == 2
    assert f"bos_inside {len(encodings)}" in out and f"{len(encodings) - 2} findings not listed" in out


def test_npy_and_expect_flag(tmp_path, capsys, tok, encodings):
    ids, _, _ = write_npz(tmp_path / "x.npz", encodings)
    np.save(tmp_path / "ids.npy", ids)
    assert run(capsys, "validate", "--tokenizer", MODEL, str(tmp_path / "ids.npy"))[0] == 0
    code, out, _ = run(capsys, "validate", "--tokenizer", MODEL, "--expect", "inference", str(tmp_path / "ids.npy"))
    assert code == 1 and "bad_ending" in out
    np.save(tmp_path / "one.npy", encodings[0].ids)  # a 1-D array is one sequence
    code, out, _ = run(capsys, "validate", "--tokenizer", MODEL, str(tmp_path / "one.npy"))
    assert code == 0 and "1 sequences" in out


def test_manifest_options_are_the_defaults(tmp_path, capsys, tok):
    messages = [{"role": "user", "content": "Hi"}, {"role": "model", "content": "Hello"}, {"role": "user", "content": "Bye"}, {"role": "model", "content": "Ciao"}]
    last = tok.encode_chat(messages, mode="training", train_on="last")
    path = tmp_path / "last.npz"
    write_npz(path, [last], manifest=manifest_for(tok, train_on="last"))
    assert run(capsys, "validate", "--tokenizer", MODEL, str(path))[0] == 0
    # the manifest said train_on=all: the mask of the first answer is missing
    write_npz(path, [last], manifest=manifest_for(tok))
    code, out, _ = run(capsys, "validate", "--tokenizer", MODEL, str(path))
    assert code == 1 and "loss_mask" in out
    # flags win over the manifest
    assert run(capsys, "validate", "--tokenizer", MODEL, "--train-on", "last", str(path))[0] == 0
    # an inference manifest expects prompts
    write_npz(path, [last], manifest=manifest_for(tok, mode="inference", add_generation_prompt=True))
    code, out, _ = run(capsys, "validate", "--tokenizer", MODEL, str(path))
    assert code == 1 and "bad_ending" in out


def test_tokenizer_mismatch_warns(tmp_path, capsys, tok, encodings):
    path = tmp_path / "data.npz"
    manifest = manifest_for(tok)
    manifest["tokenizer"]["sha256"] = "0" * 64
    write_npz(path, encodings[:2], manifest=manifest)
    code, _, err = run(capsys, "validate", "--tokenizer", MODEL, str(path))
    assert code == 0 and "warning" in err and "sha256 000000000000" in err


def test_packed_and_shifted_rows(tmp_path, capsys, tok, encodings):
    a, b = encodings[0], encodings[1]
    width = len(a) + len(b) + 3
    ids = np.zeros((1, width), np.int32)
    segments = np.zeros((1, width), np.int32)
    loss = np.zeros((1, width), np.int8)
    ids[0, : len(a)], ids[0, len(a) : len(a) + len(b)] = a.ids, b.ids
    segments[0, : len(a)], segments[0, len(a) : len(a) + len(b)] = 1, 2
    loss[0, : len(a)], loss[0, len(a) : len(a) + len(b)] = a.loss_mask, b.loss_mask
    path = tmp_path / "packed.npz"
    np.savez(path, input_ids=ids, attention_mask=(segments > 0).astype(np.int8), loss_mask=loss, segment_ids=segments)
    assert run(capsys, "validate", "--tokenizer", MODEL, "--expect", "training", str(path))[0] == 0
    ids[0, len(a) + 2] = tok.specials.eos
    np.savez(path, input_ids=ids, attention_mask=(segments > 0).astype(np.int8), loss_mask=loss, segment_ids=segments)
    code, out, _ = run(capsys, "validate", "--tokenizer", MODEL, str(path))
    assert code == 1 and f"position {len(a) + 2}" in out and "eos_inside" in out
    # shifted: inputs ids[:-1], targets ids[1:], the loss mask aligned with the targets
    n = len(a)
    shifted = tmp_path / "shifted.npz"
    inputs = np.zeros((1, n + 1), np.int32)
    targets = np.zeros((1, n + 1), np.int32)
    inputs[0, : n - 1], targets[0, : n - 1] = a.ids[:-1], a.ids[1:]
    mask = np.zeros((1, n + 1), np.int8)
    mask[0, : n - 1] = a.loss_mask[1:]
    attention = (np.arange(n + 1) < n - 1).astype(np.int8)[None]
    np.savez(shifted, input_ids=inputs, targets=targets, attention_mask=attention, loss_mask=mask)
    code, out, err = run(capsys, "validate", "--tokenizer", MODEL, "--expect", "training", "--train-on", "all", str(shifted))
    assert code == 0, out
    assert "shifted rows" in err


def test_shard_directory(tmp_path, capsys, tok, encodings):
    folder = tmp_path / "shards"
    folder.mkdir()
    write_npz(folder / "shard-00000.npz", encodings[:5])
    bad = [e for e in encodings[5:]]
    ids, attention, loss = write_npz(folder / "shard-00001.npz", bad)
    ids[0, 0] = tok.specials.eos
    np.savez(folder / "shard-00001.npz", input_ids=ids, attention_mask=attention, loss_mask=loss)
    (folder / "manifest.json").write_text(json.dumps({**manifest_for(tok), "files": [{"name": "shard-00000.npz"}, {"name": "shard-00001.npz"}]}))
    code, out, _ = run(capsys, "validate", "--tokenizer", MODEL, str(folder))
    assert code == 1
    assert "sequence 5, position 0" in out  # indices run on across shards


def test_io_errors_exit_2_without_traceback(tmp_path, capsys, encodings):
    missing = tmp_path / "missing.npz"
    code, out, err = run(capsys, "validate", "--tokenizer", MODEL, str(missing))
    assert code == 2 and "missing.npz" in err and "Traceback" not in err
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file")
    code, _, err = run(capsys, "validate", "--tokenizer", MODEL, str(corrupt))
    assert code == 2 and "corrupt.npz" in err
    bad_lines = tmp_path / "bad.jsonl"
    bad_lines.write_text(
        json.dumps(encodings[0].ids.tolist())
        + "\n{not json\n[1, 2.5]\n{\"ids\": []}\n"
        + json.dumps({"input_ids": [2, 5], "attention_mask": [1]})
        + "\n"
    )
    code, out, err = run(capsys, "validate", "--tokenizer", MODEL, str(bad_lines))
    assert code == 2 and "Traceback" not in err
    assert all(f"line {n}" in err for n in (2, 3, 4, 5))
    assert "1 sequences" in out  # the good line was still checked
    assert run(capsys, "validate", "--tokenizer", str(tmp_path / "none.model"), str(bad_lines))[0] == 2
    assert run(capsys, "validate", "--tokenizer", MODEL)[0] == 2  # no FILE
    assert run(capsys, "validate", "--tokenizer", MODEL, "--max-findings", "-1", str(bad_lines))[0] == 2
    # an I/O error wins over invalid data
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps([5, 5]) + "\n")
    assert run(capsys, "validate", "--tokenizer", MODEL, str(good), str(missing))[0] == 2


def test_stdin(monkeypatch, capsys, encodings):
    import io
    import sys

    data = "".join(json.dumps(e.ids.tolist()) + "\n" for e in encodings[:3]).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert run(capsys, "validate", "--tokenizer", MODEL, "-")[0] == 0


def test_encode_then_validate(tmp_path, capsys):
    """The npz files that `encode -o` writes, with their manifest, validate as they are."""
    for extra in ([], ["--pack", "--max-length", "300"], ["--padding", "left"], ["--shift"]):
        out = tmp_path / f"out{len(extra)}.npz"
        code, _, err = run(capsys, "encode", "--tokenizer", MODEL, "--mode", "training", str(SAMPLE), "-o", str(out), *extra)
        if code != 0 or not out.exists():
            pytest.skip(f"encode -o {' '.join(extra)} is not available here: {err.strip()[:200]}")
        code, text, err = run(capsys, "validate", "--tokenizer", MODEL, str(out))
        assert code == 0, text + err


# -- inspect ------------------------------------------------------------------------------------


def test_inspect_shows_tokens_roles_and_mask(tmp_path, capsys, tok, encodings):
    path = tmp_path / "data.npz"
    write_npz(path, encodings, manifest=manifest_for(tok))
    code, out, _ = run(capsys, "inspect", "--tokenizer", MODEL, str(path), "--sequence", "1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"{path}: sequence 1:") and "valid" in lines[0]
    assert lines[1].split() == ["pos", "id", "piece", "role", "part", "mask", "finding"]
    assert lines[2].split() == ["0", str(tok.specials.bos), "<bos>", "bos", "0"]
    assert lines[3].split() == ["1", str(tok.specials.start_of_turn), "<start_of_turn>", "user", "marker", "0"]
    trained = [line for line in lines if line.split()[-1:] == ["1"] and "model" in line]
    assert trained  # the answer's tokens carry mask 1
    assert "\x1b[" not in out  # not a terminal: no colour


def test_inspect_colour_findings_and_errors(tmp_path, capsys, tok, encodings):
    path = tmp_path / "ids.jsonl"
    broken = encodings[0].ids.tolist()
    broken[4] = tok.specials.bos
    path.write_text(json.dumps(encodings[1].ids.tolist()) + "\n" + json.dumps(broken) + "\n")
    code, out, _ = run(capsys, "inspect", "--tokenizer", MODEL, str(path), "-n", "1", "--color", "always")
    assert code == 1
    assert "\x1b[" in out and "bos_inside" in out
    assert "sequence 1, position 4" in out
    assert run(capsys, "inspect", "--tokenizer", MODEL, str(path), "-n", "5")[0] == 2
    assert run(capsys, "inspect", "--tokenizer", MODEL, str(tmp_path / "nope.npz"))[0] == 2
