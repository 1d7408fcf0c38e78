"""Issue 11: nothing crashes, nothing is overwritten, validate trusts nothing. In-process
through cli.main, but for signals and concurrency (subprocesses)."""

import errno
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import FIXTURE_MODEL, ROOT, SAMPLE

from gemma_turns.cli import main
from gemma_turns.store import load_dataset, manifest_beside

MODEL = str(FIXTURE_MODEL)
GOOD = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "model", "content": "yo"}]}\n'
DEEP = b"[" * 100_000 + b"]" * 100_000 + b"\n"
HUGE_INT = b'{"messages": [], "n": ' + b"9" * 5000 + b"}\n"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def encode(capsys, *argv):
    return run(capsys, "encode", "--tokenizer", MODEL, "--mode", "training", *argv)


# -- one bad line stays in its record ------------------------------------------------------------


@pytest.mark.parametrize("bad", [DEEP, HUGE_INT], ids=["deep", "huge_int"])
def test_a_parser_failure_rejects_only_its_line(tmp_path, capsys, bad):
    data = tmp_path / "data.jsonl"
    data.write_bytes(GOOD + bad + GOOD)
    code, out, err = encode(capsys, data)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and "input_ids" in lines[0] and "input_ids" in lines[2]
    assert lines[1]["line"] == 2 and lines[1]["error"]["code"] == "invalid_json"
    code, _, err = encode(capsys, data, "-o", tmp_path / "o.npz")
    assert code == 1 and load_dataset(tmp_path / "o.npz").arrays["source_line"].tolist() == [1, 3]
    code, out, _ = run(capsys, "format", data)
    assert code == 1 and [json.loads(line).get("line") for line in out.splitlines()] == [None, 2, None]


def test_a_line_over_the_record_limit_is_rejected_unread(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    big = b'[{"role": "user", "content": "' + b"x" * 5000 + b'"}]\n'
    data.write_bytes(GOOD + big + GOOD)
    code, _, err = encode(capsys, data, "-o", tmp_path / "o.npz", "--max-record-bytes", 1000,
                          "--rejects", tmp_path / "r.jsonl")
    entry = json.loads((tmp_path / "r.jsonl").read_text())
    assert code == 1 and entry["line"] == 2 and entry["code"] == "too_large"
    assert "1,000" in entry["reason"] and "--max-record-bytes" in entry["fix"]
    assert load_dataset(tmp_path / "o.npz").arrays["source_line"].tolist() == [1, 3]


def test_a_row_width_that_cannot_fit_in_memory_is_refused_up_front(tmp_path, capsys):
    code, _, err = encode(capsys, SAMPLE, "-o", tmp_path / "o.npz", "--max-length", 10**9)
    assert code == 2 and "--max-memory" in err and "MiB" in err
    assert os.listdir(tmp_path) == []


# -- inputs are never overwritten ----------------------------------------------------------------


@pytest.mark.parametrize("case", ["output", "manifest", "inside"])
def test_the_output_may_not_be_the_input(tmp_path, capsys, case):
    name = {"output": "data.npz", "manifest": "out.manifest.json", "inside": "out/data.jsonl"}[case]
    data = tmp_path / name
    data.parent.mkdir(exist_ok=True)
    data.write_bytes(GOOD)
    output = tmp_path / ("data.npz" if case == "output" else "out.npz" if case == "manifest" else "out")
    extra = ["--shard-size", 2, "--max-length", 64] if case == "inside" else []
    code, _, err = encode(capsys, data, "-o", output, *extra)
    assert code == 2 and "input" in err and data.read_bytes() == GOOD


@pytest.mark.parametrize("target", ["symlink", "stdout", "fifo"])
def test_rejects_through_a_link_or_a_device_are_refused(tmp_path, capsys, target):
    """A link to a file, a link like /dev/stdout (made in tmp_path: the old code replaced the
    link itself with a file), a FIFO: refused, left as they were."""
    data = tmp_path / "data.jsonl"
    data.write_bytes(GOOD + b"not json\n")
    kept = tmp_path / "kept.txt"
    kept.write_text("mine")
    rejects = tmp_path / "rejects"
    if target == "fifo":
        os.mkfifo(rejects)
    else:
        rejects.symlink_to(kept if target == "symlink" else "/proc/self/fd/1")
    for extra in ([], ["-o", tmp_path / "o.npz"]):
        code, _, err = encode(capsys, data, *extra, "--rejects", rejects)
        assert code == 2 and "rejects" in err
    assert kept.read_text() == "mine" and (rejects.is_symlink() or target == "fifo")


def test_rejects_to_standard_output_with_arrays(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_bytes(GOOD + b"not json\n")
    code, out, _ = encode(capsys, data, "-o", tmp_path / "o.npz", "--rejects", "-")
    assert code == 1 and json.loads(out)["line"] == 2
    assert encode(capsys, data, "--rejects", "-")[0] == 2  # stdout holds the encoded lines


# -- I/O failures are one line, exit 2 -----------------------------------------------------------


def test_stdout_on_a_full_device(capsys, monkeypatch):
    full = open("/dev/full", "w")
    monkeypatch.setattr(sys, "stdout", full)
    code = main(["encode", "--tokenizer", MODEL, "--mode", "training", str(SAMPLE)])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write standard output: No space left on device" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    full.close = lambda: None  # its buffer cannot be flushed; nothing to close


def test_rejects_on_a_full_filesystem(tmp_path, capsys, monkeypatch):
    import gemma_turns.store as store

    real = os.fdopen

    class Full(io.TextIOWrapper):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "fdopen", lambda fd, *a, **k: Full(real(fd, "wb")))
    data = tmp_path / "data.jsonl"
    data.write_bytes(GOOD + b"not json\n")
    for extra in ([], ["-o", tmp_path / "o.npz"]):
        code, _, err = encode(capsys, data, *extra, "--rejects", tmp_path / "r.jsonl")
        assert code == 2 and f"cannot write {tmp_path / 'r.jsonl'}: No space left" in err
        assert sorted(os.listdir(tmp_path)) == ["data.jsonl"]  # no hidden partial file


@pytest.mark.parametrize("command", ["encode", "encode -o", "format", "validate", "inspect"])
def test_ctrl_c_in_every_command(tmp_path, capsys, monkeypatch, command):
    import gemma_turns.encoder as encoder
    import gemma_turns.cli.format_command as format_command

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(encoder.GemmaTokenizer, "load", interrupt)  # during start-up
    monkeypatch.setattr(format_command, "read_lines", interrupt)
    argv = {
        "encode": ["encode", "--tokenizer", MODEL, "--mode", "training", SAMPLE],
        "encode -o": ["encode", "--tokenizer", MODEL, "--mode", "training", SAMPLE, "-o", tmp_path / "o.npz",
                      "--rejects", tmp_path / "r.jsonl"],
        "format": ["format", SAMPLE],
        "validate": ["validate", "--tokenizer", MODEL, SAMPLE],
        "inspect": ["inspect", "--tokenizer", MODEL, SAMPLE],
    }[command]
    code, _, err = run(capsys, *argv)
    assert code == 130 and "interrupted" in err and os.listdir(tmp_path) == []


def cli(*argv, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "gemma_turns", *map(str, argv)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def wait_for(predicate, process, seconds=30):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)


def test_sigint_gives_130_and_no_leftovers(tmp_path):
    """A real Ctrl-C while encode (JSON lines out, rejects file) waits for its input."""
    process = cli("encode", "--tokenizer", MODEL, "--mode", "training", "-", "--rejects", tmp_path / "r.jsonl",
                  cwd=tmp_path)
    process.stdin.write(GOOD + b"not json\n")
    process.stdin.flush()
    wait_for(lambda: any(".partial-" in name for name in os.listdir(tmp_path)), process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130 and b"interrupted" in err and b"Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_two_runs_cannot_write_one_output(tmp_path):
    """The first run holds the output until it ends; the second is refused at once."""
    output = tmp_path / "out.npz"
    first = cli("encode", "--tokenizer", MODEL, "--mode", "training", "-", "-o", output)
    first.stdin.write(GOOD)
    first.stdin.flush()
    wait_for(lambda: (tmp_path / ".out.npz.lock").exists(), first)
    second = subprocess.run([sys.executable, "-m", "gemma_turns", "encode", "--tokenizer", MODEL, "--mode",
                             "training", str(SAMPLE), "-o", str(output)], capture_output=True, timeout=60)
    assert second.returncode == 2 and b"another gemma-turns run" in second.stderr
    _, err = first.communicate(input=GOOD, timeout=60)
    assert first.returncode == 0, err
    arrays, manifest = load_dataset(output)  # the first run's, whole
    assert manifest["counts"]["lines"] == 2 and sorted(os.listdir(tmp_path)) == ["out.manifest.json", "out.npz"]


def test_dead_runs_leftovers_are_removed(tmp_path, capsys):
    dead = tmp_path / ".o.npz.partial-999999999-abc"
    dead.mkdir()
    (dead / "o.npz").write_bytes(b"x" * 1000)
    alive = tmp_path / f".o.npz.partial-{os.getppid()}-abc"  # a running process: maybe a writer
    alive.mkdir()
    assert encode(capsys, SAMPLE, "-o", tmp_path / "o.npz")[0] == 0
    assert sorted(os.listdir(tmp_path)) == sorted([alive.name, "o.manifest.json", "o.npz"])


# -- validate trusts nothing ---------------------------------------------------------------------


def encoded(tmp_path, capsys, *extra, name="o.npz"):
    assert encode(capsys, SAMPLE, "-o", tmp_path / name, "--max-length", 128, *extra)[0] == 0
    return tmp_path / name


def test_validate_checks_integrity_first(tmp_path, capsys):
    path = encoded(tmp_path, capsys)
    arrays = {key: value[::-1] for key, value in np.load(path).items()}
    np.savez(path, **arrays)  # the same rows in another order: not what the manifest hashed
    code, _, err = run(capsys, "validate", "--tokenizer", MODEL, path)
    assert code == 2 and "integrity" in err and "does not match" in err
    manifest_beside(path).unlink()
    code, _, err = run(capsys, "validate", "--tokenizer", MODEL, path)
    assert code == 0 and "notice: no manifest" in err


def test_validate_reports_missing_and_foreign_shards(tmp_path, capsys):
    folder = encoded(tmp_path, capsys, "--shard-size", 5, name="shards")
    (folder / "shard-00001.npz").rename(folder / "shard-00009.npz")
    code, out, err = run(capsys, "validate", "--tokenizer", MODEL, folder)
    assert code == 2
    assert "shard-00001.npz is missing" in err and "shard-00009.npz is not listed" in err
    assert "7 sequences" in out  # the readable shards are still checked


def test_bare_ids_get_a_notice(tmp_path, capsys):
    np.save(tmp_path / "ids.npy", np.array([[2, 5, 6]]))
    code, _, err = run(capsys, "validate", "--tokenizer", MODEL, tmp_path / "ids.npy")
    assert "notice" in err and "could not be checked" in err


def test_masks_and_positions_are_checked(tmp_path, capsys):
    path = encoded(tmp_path, capsys, "--pack", name="p.npz")
    arrays = dict(np.load(path))
    arrays["attention_mask"][0, 1] = 2
    arrays["position_ids"][0, 3] = 9
    second = int(np.flatnonzero(arrays["segment_ids"][0] == 2)[0])
    arrays["position_ids"][0, second:] = np.arange(second, arrays["position_ids"].shape[1])
    manifest_beside(path).unlink()
    np.savez(path, **arrays)
    code, out, _ = run(capsys, "validate", "--tokenizer", MODEL, path)
    assert code == 1
    assert "position 1 (id" in out and "attention_mask_value" in out
    assert "position 3 (id" in out and "position_ids" in out
    assert f"position {second} (id" in out and "packed_position_ids" in out


# -- the newcomer's path -------------------------------------------------------------------------


def test_version(capsys):
    import gemma_turns

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"gemma-turns {gemma_turns.__version__}"


def test_rejected_lines_are_shown_without_a_rejects_file(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_bytes(GOOD + b"x\n" * 7 + GOOD)
    code, _, err = encode(capsys, data, "-o", tmp_path / "o.npz")
    assert code == 1 and "rejected or dropped: lines 2, 3, 4, 5, 6 and 2 more" in err
    assert "--rejects FILE" in err


def test_no_shift_warning_on_our_own_files(tmp_path, capsys):
    path = encoded(tmp_path, capsys, "--shift")
    for command in ("validate", "inspect"):
        code, _, err = run(capsys, command, "--tokenizer", MODEL, path)
        assert code == 0 and "warning" not in err


def test_the_readme_command_chain_works(tmp_path, capsys, monkeypatch):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Command line\n\n```bash\n(.+?)\n```", text, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_bytes(SAMPLE.read_bytes())
    for line in block.splitlines():
        argv = shlex.split(line.split("#")[0].replace("MODEL", MODEL))
        assert argv[0] == "gemma-turns"
        code, out, err = run(capsys, *argv[1:])
        assert code == 0, (line, out, err)


def test_a_top_level_system_is_honoured(tmp_path, capsys, fixture_tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "model", "content": "yo"}]
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"system": "Be brief.", "messages": messages}) + "\n"
                    + json.dumps({"system": "A", "messages": [{"role": "system", "content": "B"}, *messages]}) + "\n")
    code, out, _ = encode(capsys, data)
    first, second = [json.loads(line) for line in out.splitlines()]
    expected = fixture_tokenizer.encode_chat([{"role": "system", "content": "Be brief."}, *messages], mode="training")
    assert first["input_ids"] == expected.ids.tolist()
    assert code == 1 and second["error"]["code"] == "bad_record"
