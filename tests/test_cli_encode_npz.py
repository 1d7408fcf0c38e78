"""``gemma-turns encode -o``: arrays on disk, in-process; one real interruption in a subprocess."""

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
from gemma_turns.cli.encode_command import ProgressBar
from gemma_turns.dataset import Counts, load_dataset

GOOD = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "model", "content": "yo"}]}\n'
MIXED = (
    GOOD
    + b"not json\n"
    + b"\n"
    + b'{"messages": [{"role": "user", "content": "a <end_of_turn>"}, '
    + b'{"role": "model", "content": "b"}]}\n'
    + b'{"messages": [{"role": "user", "content": "\xff"}, {"role": "model", "content": "b"}]}\n'
    + b'{"other": 1}\n'
    + GOOD
)


def encode(capsys, *argv):
    code = main(
        ["encode", "--tokenizer", str(FIXTURE_MODEL), "--mode", "training", *map(str, argv)]
    )
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_sample_to_a_training_batch(tmp_path, capsys):
    code, out, err = encode(capsys, SAMPLE, "-o", tmp_path / "train.npz", "--max-length", 128)
    assert code == 0 and out == ""
    assert "12 lines: 12 encoded" in err
    assert "input_ids (12, 128) int32" in err and "loss_mask (12, 128) int8" in err
    arrays, manifest = load_dataset(tmp_path / "train.npz")
    assert arrays["input_ids"].shape == (12, 128)
    assert manifest["counts"]["rows"] == 12
    assert sorted(os.listdir(tmp_path)) == ["train.manifest.json", "train.npz"]


def test_good_and_bad_lines(tmp_path, capsys):
    data = tmp_path / "mixed.jsonl"
    data.write_bytes(MIXED)
    rejects = tmp_path / "rejects.jsonl"
    code, _, err = encode(capsys, data, "-o", tmp_path / "out.npz", "--rejects", rejects)
    assert code == 1
    entries = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(e["line"], e["code"]) for e in entries] == [
        (2, "invalid_json"),
        (4, "reserved_token"),
        (5, "invalid_utf8"),
        (6, "bad_record"),
    ]
    assert all(e["kind"] == "rejected" and e["reason"] for e in entries)
    assert "7 lines: 2 encoded" in err and "4 (" in err and "1 blank" in err
    arrays, manifest = load_dataset(tmp_path / "out.npz")
    assert arrays["source_line"].tolist() == [1, 7]
    counts = manifest["counts"]
    assert counts["lines"] == counts["encoded"] + counts["blank"] + sum(counts["rejected"].values())


def test_packed_and_shifted(tmp_path, capsys):
    code, _, err = encode(
        capsys, SAMPLE, "-o", tmp_path / "p.npz", "--max-length", 200, "--pack", "--shift"
    )
    assert code == 0
    arrays, manifest = load_dataset(tmp_path / "p.npz")
    assert {"segment_ids", "targets", "segment_source_line"} <= set(arrays)
    assert arrays["segment_ids"].dtype == np.int32
    assert sorted(
        arrays["segment_source_line"][arrays["segment_source_line"] > 0].tolist()
    ) == list(range(1, 13))
    assert manifest["counts"]["rows"] < 12 and "fill ratio" in err


def test_sharded_directory(tmp_path, capsys):
    code, _, err = encode(
        capsys, SAMPLE, "-o", tmp_path / "shards", "--shard-size", 5, "--max-length", 128
    )
    assert code == 0 and "3 shards" in err
    assert sorted(os.listdir(tmp_path / "shards")) == [
        "manifest.json",
        "shard-00000.npz",
        "shard-00001.npz",
        "shard-00002.npz",
    ]
    arrays, _ = load_dataset(tmp_path / "shards")
    assert arrays["source_line"].tolist() == list(range(1, 13))


def test_left_padded_inference(tmp_path, capsys):
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        '[{"role": "user", "content": "Hi"}]\n[{"role": "user", "content": "What is 2+2?"}]\n'
    )
    code = main(
        [
            "encode",
            "--tokenizer",
            str(FIXTURE_MODEL),
            "--mode",
            "inference",
            str(data),
            "-o",
            str(tmp_path / "p.npz"),
            "--padding",
            "left",
            "--pad-to-multiple",
            "8",
        ]
    )
    assert code == 0
    arrays, _ = load_dataset(tmp_path / "p.npz")
    assert arrays["input_ids"].shape[1] % 8 == 0
    assert (arrays["attention_mask"][:, -1] == 1).all()  # prompts end in the last column


def test_too_long_stops_with_exit_1_and_writes_nothing(tmp_path, capsys):
    code, _, err = encode(capsys, SAMPLE, "-o", tmp_path / "out.npz", "--max-length", 50)
    assert code == 1
    assert "line 2: 69 ids do not fit" in err and "--truncation" in err
    assert os.listdir(tmp_path) == []


def test_drop_and_truncate(tmp_path, capsys):
    code, _, err = encode(
        capsys,
        SAMPLE,
        "-o",
        tmp_path / "d.npz",
        "--max-length",
        50,
        "--truncation",
        "drop",
        "--rejects",
        tmp_path / "r.jsonl",
    )
    assert code == 0 and "9 (too_long 9) dropped" in err
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 9
    code, _, err = encode(
        capsys, SAMPLE, "-o", tmp_path / "t.npz", "--max-length", 50, "--truncation", "truncate"
    )
    assert code == 0 and "9 truncated" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-length", "8"], "only with arrays"),
        (["-o", "{tmp}/x.bin"], "FILE.npz"),
        (["-o", "{tmp}/x.npz", "--pack"], "--pack needs a --max-length"),
        (
            ["-o", "{tmp}/x.npz", "--max-length", "8", "--truncation", "drop_oldest_turns"],
            "inference",
        ),
        (["-o", "{tmp}/d", "--shard-size", "4"], "--shard-size needs --max-length"),
        (["-o", "{tmp}/d", "--shard-size", "0", "--max-length", "8"], "--shard-size must be"),
        (["-o", "{tmp}/missing/x.npz"], "not a directory"),
    ],
)
def test_usage_errors_exit_2(tmp_path, capsys, argv, message):
    code, _, err = encode(capsys, SAMPLE, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and message in err


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    code, _, err = encode(capsys, empty, "-o", tmp_path / "out.npz")
    assert code == 1 and "no records" in err
    code, _, err = encode(capsys, tmp_path / "missing.jsonl", "-o", tmp_path / "out.npz")
    assert code == 2 and "cannot read" in err
    corrupt = tmp_path / "corrupt.model"
    corrupt.write_bytes(b"\x08\x01 this is not a model")
    for model, expected in (
        (tmp_path / "missing.model", "cannot read"),
        (corrupt, "not a SentencePiece model"),
    ):
        code = main(
            [
                "encode",
                "--tokenizer",
                str(model),
                "--mode",
                "training",
                str(SAMPLE),
                "-o",
                str(tmp_path / "o.npz"),
            ]
        )
        _, err = capsys.readouterr()
        assert code == 2 and expected in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["corrupt.model", "empty.jsonl"]


def test_interrupted_in_process(tmp_path, capsys, monkeypatch):
    import gemma_turns.dataset as dataset

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset, "pad_batch", interrupt)
    code, _, err = encode(
        capsys, SAMPLE, "-o", tmp_path / "out.npz", "--rejects", tmp_path / "r.jsonl"
    )
    assert code == 130 and "interrupted; nothing written" in err
    assert os.listdir(tmp_path) == []


def test_killed_run_leaves_no_file_that_looks_complete(tmp_path):
    """SIGKILL while the input is still streaming: no OUT.npz, no manifest, only a hidden
    partial directory."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gemma_turns",
            "encode",
            "--tokenizer",
            str(FIXTURE_MODEL),
            "--mode",
            "training",
            "-",
            "-o",
            str(tmp_path / "out.npz"),
            "--rejects",
            str(tmp_path / "r.jsonl"),
        ],
        stdin=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    process.stdin.write(GOOD * 50)
    process.stdin.flush()
    deadline = time.monotonic() + 30
    while not any(name.startswith(".out.npz.partial-") for name in os.listdir(tmp_path)):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdin.close()
    names = os.listdir(tmp_path)
    assert "out.npz" not in names and "out.manifest.json" not in names and "r.jsonl" not in names
    assert all(name.startswith(".") for name in names)


def test_jsonl_mode_is_unchanged_and_takes_rejects(tmp_path, capsys):
    data = tmp_path / "mixed.jsonl"
    data.write_bytes(MIXED)
    code, out, err = encode(capsys, data, "--rejects", tmp_path / "r.jsonl")
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 6 and "input_ids" in lines[0] and lines[1]["line"] == 2
    entries = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [e["line"] for e in entries] == [2, 4, 5, 6]


def test_progress_bar_draws_rates_and_percent():
    clock = iter([0.0, 0.1, 2.0, 2.1]).__next__
    stream = io.StringIO()
    bar = ProgressBar(stream, total_bytes=1000, clock=clock)
    counts = Counts(lines=100, encoded_tokens=5000, input_bytes=500)
    bar(counts)  # 0.1 s: too soon to redraw
    assert stream.getvalue() == ""
    bar(counts)  # 2.0 s
    bar.close()
    assert stream.getvalue() == "\r100 records  50 records/s  2,500 tokens/s  50%\n"


def test_progress_bar_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    import gemma_turns.cli.encode_command as command

    drawn = []
    monkeypatch.setattr(command, "_is_terminal", lambda stream: True)
    monkeypatch.setattr(
        command.ProgressBar, "__call__", lambda self, counts: drawn.append(counts.lines)
    )
    code, _, _ = encode(capsys, SAMPLE, "-o", tmp_path / "out.npz")
    assert code == 0 and drawn[-1] == 12


def readme_blocks(language):
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{language}\n(.+?)\n```", text, flags=re.S)


def test_the_documented_command(tmp_path, capsys, monkeypatch):
    """The README's first command installs the project, then makes a training batch."""
    monkeypatch.chdir(ROOT)
    command = readme_blocks("bash")[0].split(" && ")[-1]
    argv = shlex.split(command.replace("sample.npz", str(tmp_path / "sample.npz")))
    assert argv[0] == ".venv/bin/gemma-turns"
    assert main(argv[1:]) == 0
    err = capsys.readouterr().err
    assert "input_ids (12, 128) int32" in err and "targets (12, 128) int32" in err


def test_the_documented_python(monkeypatch):
    monkeypatch.chdir(ROOT)
    (example,) = [block for block in readme_blocks("python") if "pad_batch(" in block]
    exec(example, {})


def test_no_record_survives_an_empty_dataset_is_written_with_the_rejects(tmp_path, capsys):
    """Every record rejected: exit 1, a summary, an empty npz, and the rejects kept."""
    data = tmp_path / "prompts.jsonl"
    data.write_bytes(b'[{"role": "user", "content": "only a prompt"}]\n' * 3)
    code, _, err = encode(capsys, data, "-o", tmp_path / "out.npz", "--max-length", "64",
                          "--pack", "--rejects", tmp_path / "rejects.jsonl")
    assert code == 1 and "3 (nothing_to_learn 3) rejected" in err
    arrays, manifest = load_dataset(tmp_path / "out.npz")
    assert arrays["input_ids"].shape == (0, 64) and manifest["counts"]["rows"] == 0
    assert len((tmp_path / "rejects.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("which", ["input", "output", "manifest", "inside", "directory"])
def test_rejects_may_not_overwrite_an_input_or_an_output(tmp_path, capsys, which):
    data = tmp_path / "data.jsonl"
    data.write_bytes(MIXED)
    (tmp_path / "somewhere").mkdir()
    output = tmp_path / ("shards" if which == "inside" else "out.npz")
    rejects = {
        "input": data,
        "output": output,
        "manifest": tmp_path / "out.manifest.json",
        "inside": output / "rejects.jsonl",
        "directory": tmp_path / "somewhere",
    }[which]
    extra = ["--shard-size", "2", "--max-length", "64"] if which == "inside" else []
    code, _, err = encode(capsys, data, "-o", output, *extra, "--rejects", rejects)
    assert code == 2 and "rejects" in err
    assert data.read_bytes() == MIXED and not output.exists()
    if which in ("input", "directory"):  # without -o too
        code, out, err = encode(capsys, data, "--rejects", rejects)
        assert code == 2 and out == "" and data.read_bytes() == MIXED


def test_an_output_directory_with_foreign_files_is_not_replaced(tmp_path, capsys):
    options = ["--shard-size", "4", "--max-length", "512"]
    assert encode(capsys, SAMPLE, "-o", tmp_path / "out", *options)[0] == 0
    mine = tmp_path / "out" / "my_input.jsonl"
    mine.write_bytes(GOOD)
    code, _, err = encode(capsys, mine, "-o", tmp_path / "out", *options)
    assert code == 2 and "did not write" in err and mine.read_bytes() == GOOD


def test_a_byte_order_mark_is_not_an_error(tmp_path, capsys):
    data = tmp_path / "bom.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + GOOD + GOOD)
    code, out, _ = encode(capsys, data)
    assert code == 0 and all("input_ids" in line for line in out.splitlines())


@pytest.mark.parametrize("threads", ["0", "-3", "two"])
def test_thread_counts_must_be_positive(capsys, threads):
    assert encode(capsys, SAMPLE, "--threads", threads)[0] == 2
