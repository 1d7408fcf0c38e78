"""The exit-code policy of `encode`: dropped and truncated records (asked for with
--truncation) never fail a run; rejected records do, unless --max-rejects allows them."""

import json

import pytest
from conftest import FIXTURE_MODEL, SAMPLE

from gemma_turns.cli import main

GOOD = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "model", "content": "yo"}]}\n'
LONG = (
    b'{"messages": [{"role": "user", "content": "' + b"word " * 80 + b'"}, '
    b'{"role": "model", "content": "ok"}]}\n'
)
BAD = b'{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}\n'
DATA = GOOD + BAD + LONG + b"not json\n" + GOOD


def encode(capsys, *argv):
    code = main(["encode", "--tokenizer", str(FIXTURE_MODEL), "--mode", "training", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(DATA)
    return path


def arrays_argv(tmp_path, data, *more):
    return (data, "-o", tmp_path / "out.npz", "--max-length", 64, "--truncation", "drop", *more)


def test_drops_asked_for_exit_0_but_rejects_exit_1(tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_bytes(GOOD + LONG + GOOD)
    code, _, err = encode(capsys, *arrays_argv(tmp_path, path))
    assert code == 0 and "1 (too_long 1) dropped" in err
    path.write_bytes(DATA)
    code, _, err = encode(capsys, *arrays_argv(tmp_path, path, "--rejects", tmp_path / "r.jsonl"))
    assert code == 1 and "2 (" in err and "max-rejects" not in err


@pytest.mark.parametrize("allowed, expected", [(2, 0), (5, 0), (1, 1)])
def test_max_rejects_sets_how_many_rejected_records_still_pass(
    tmp_path, capsys, data, allowed, expected
):
    rejects = tmp_path / "r.jsonl"
    argv = arrays_argv(tmp_path, data, "--rejects", rejects, "--max-rejects", allowed)
    code, _, err = encode(capsys, *argv)
    assert code == expected
    word = "within" if expected == 0 else "more than"
    assert f"2 rejected, {word} --max-rejects {allowed}" in err
    entries = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(e["line"], e["kind"]) for e in entries] == [
        (2, "rejected"),
        (3, "dropped"),
        (4, "rejected"),
    ]  # nothing lost: every record left out is listed, whatever the exit code
    assert (tmp_path / "out.npz").exists()


def test_max_rejects_with_arrays_needs_a_rejects_file(tmp_path, capsys, data):
    code, _, err = encode(capsys, *arrays_argv(tmp_path, data, "--max-rejects", 5))
    assert code == 2 and "--max-rejects with -o needs --rejects FILE" in err
    assert not (tmp_path / "out.npz").exists()


def test_max_rejects_without_arrays(capsys, data):
    code, out, err = encode(capsys, data, "--max-rejects", 2)
    assert code == 0 and len(out.splitlines()) == 5 and "within --max-rejects 2" in err
    code, _, _ = encode(capsys, data, "--max-rejects", 1)
    assert code == 1


def test_max_rejects_refuses_negative_numbers(capsys):
    code, _, err = encode(capsys, SAMPLE, "--max-rejects", "-1")
    assert code == 2 and "at least 0" in err


def test_help_states_the_policy(capsys):
    assert main(["encode", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "dropped or truncated as --truncation asks is fine" in text
    assert "--max-rejects N" in text
