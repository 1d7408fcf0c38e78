"""The CLI, in-process: format and encode, exit codes 0 / 1 / 2, error lines, summaries."""

import io
import json
import sys

import pytest
from conftest import FIXTURE_MODEL, SAMPLE

from gemma_turns.cli import main


def run(capsys, *argv, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_format_sample(capsys):
    code, lines, err = run(capsys, "format", str(SAMPLE))
    assert code == 0
    assert len(lines) == 12
    assert lines[1]["text"].startswith("<start_of_turn>user\nOnly reply like a pirate.\n\nWhat is")
    assert "formatted 12 of 12" in err


def test_encode_sample(capsys, fixture_tokenizer):
    code, lines, err = run(capsys, "encode", "--tokenizer", str(FIXTURE_MODEL), "--mode", "training", str(SAMPLE))
    assert code == 0 and len(lines) == 12
    first = lines[0]
    assert first["input_ids"][0] == fixture_tokenizer.specials.bos
    assert len(first["input_ids"]) == len(first["loss_mask"]) and any(first["loss_mask"])
    assert "12 encoded" in err and "0 rejected" in err


def test_encode_reports_bad_lines_and_exits_1(tmp_path, capsys):
    data = tmp_path / "mixed.jsonl"
    data.write_bytes(
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "model", "content": "yo"}]}\n'
        b"not json\n"
        b"\n"
        b'{"messages": [{"role": "user", "content": "a <end_of_turn>"}, {"role": "model", "content": "b"}]}\n'
        b'{"messages": [{"role": "user", "content": "\xff"}]}\n'
        b'{"other": 1}\n'
        b'[{"role": "user", "content": "no answer"}]\n'
    )
    code, lines, err = run(capsys, "encode", "--tokenizer", str(FIXTURE_MODEL), "--mode", "training", str(data))
    assert code == 1
    assert "input_ids" in lines[0]
    errors = {line["line"]: line["error"] for line in lines if "error" in line}
    assert {n: e["code"] for n, e in errors.items()} == {
        2: "invalid_json", 4: "reserved_token", 5: "invalid_utf8", 6: "bad_record", 7: "nothing_to_learn"}
    assert errors[4]["message_index"] == 0 and errors[4]["char_offset"] == 2 and errors[4]["token"] == "<end_of_turn>"
    assert "7 lines: 1 encoded" in err and "5 rejected, 1 blank" in err


def test_a_lone_surrogate_rejects_only_its_record(tmp_path, capsys):
    data = tmp_path / "surrogate.jsonl"
    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "model", "content": "yo"}]}\n'
    data.write_text(good + good.replace("yo", "y\\ud800o") + good)
    code, lines, err = run(capsys, "encode", "--tokenizer", str(FIXTURE_MODEL), "--mode", "training", str(data))
    assert code == 1
    assert "input_ids" in lines[0] and "input_ids" in lines[2]
    assert lines[1]["error"]["code"] == "invalid_text" and lines[1]["error"]["message_index"] == 1
    code, lines, err = run(capsys, "format", str(data))
    assert code == 1 and lines[1]["error"]["code"] == "invalid_text" and "text" in lines[2]


def test_encode_stdin_pt_and_escape(capsys, monkeypatch, fixture_tokenizer):
    stdin = b'{"text": "Hello <start_of_turn> world"}\n"plain string"\n'
    code, lines, _ = run(capsys, "encode", "--tokenizer", str(FIXTURE_MODEL), "--mode", "pt", "--reserved", "escape", "-", stdin=stdin, monkeypatch=monkeypatch)
    assert code == 0
    ids = lines[0]["input_ids"]
    assert ids[0] == fixture_tokenizer.specials.bos and ids[-1] == fixture_tokenizer.specials.eos
    assert fixture_tokenizer.decode(ids) == "Hello <start_of_turn> world"


@pytest.mark.parametrize(
    "argv",
    [
        ["encode", "--tokenizer", "/nonexistent.model", "--mode", "training", "x.jsonl"],
        ["encode", "--tokenizer", "FIXTURE", "--mode", "training", "/nonexistent.jsonl"],
        ["encode", "--tokenizer", "FIXTURE", "x.jsonl"],
        ["encode", "--tokenizer", "FIXTURE", "--mode", "chat", "x.jsonl"],
        ["format", "/nonexistent.jsonl"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_and_io_errors_exit_2(capsys, argv):
    argv = [str(FIXTURE_MODEL) if a == "FIXTURE" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err and "Traceback" not in err


def test_corrupt_tokenizer_exits_2(tmp_path, capsys):
    model = tmp_path / "bad.model"
    model.write_bytes(b"\x00garbage")
    assert main(["encode", "--tokenizer", str(model), "--mode", "training", str(SAMPLE)]) == 2
    assert "not a SentencePiece model" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "encode" in capsys.readouterr().out
