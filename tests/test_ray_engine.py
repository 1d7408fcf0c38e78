"""``--engine ray`` on a local Ray cluster (2 CPUs): the same records as a local run, and a
worker killed mid-run. Few tests, one cluster for the module: Ray takes seconds to start."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURE_MODEL, ROOT, SAMPLE, packed_records, two_inputs

from gemma_turns.cli import main
from gemma_turns.dataset import load_dataset
from gemma_turns.store import open_stored

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own, on its settings


def encode(capsys, *argv):
    code = main(["encode", "--tokenizer", str(FIXTURE_MODEL), "--mode", "training", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_without_ray_the_command_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    code, _, err = encode(capsys, SAMPLE, "-o", tmp_path / "o", "--engine", "ray", "--max-length", 128)
    assert code == 2 and "pip install 'gemma-turns[ray]'" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--engine", "ray"], "--engine: only with arrays"),
        (["-o", "{t}/o.npz", "--workers", "2"], "--workers: only with --engine ray"),
        (["-o", "{t}/o", "--engine", "ray"], "needs --max-length"),
        (["-o", "{t}/o", "--engine", "ray", "--max-length", "9", "--pack-scope", "global"], "only with --pack"),
    ],
)
def test_engine_flags_are_checked_before_any_work(tmp_path, capsys, argv, message):
    code, _, err = encode(capsys, SAMPLE, *[a.format(t=tmp_path) for a in argv])
    assert code == 2 and message in err


def test_importing_gemma_turns_does_not_import_ray():
    import subprocess

    code = "import gemma_turns, gemma_turns.cli, gemma_turns.engines.chunks, sys; print('ray' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    # Workers import gemma_turns and this module (for the dying worker) from the sources.
    paths = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="error",
        runtime_env={"env_vars": {"PYTHONPATH": paths}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture()
def inputs(tmp_path):
    return two_inputs(tmp_path, 40, 20)


def segments(path):
    """Every (ids, loss mask) of a packed output, sorted: what was encoded, wherever from."""
    arrays, _ = load_dataset(path)
    out = []
    for r, row in enumerate(arrays["segment_ids"]):
        for s in np.unique(row[row > 0]):
            where = row == s
            out.append((arrays["input_ids"][r][where].tolist(), arrays["loss_mask"][r][where].tolist()))
    return sorted(out)


def test_ray_run_gives_the_local_records(ray_cluster, inputs, tmp_path, capsys):
    """The command on Ray (two workers) and locally: the same (file, line, ids, loss mask),
    counts and rejects; validate reads the Ray output; packed in one pass (global) over
    chunks of 16 KiB, the very same arrays."""
    flags = ["--max-length", 256, "--pack", "--truncation", "drop", "--shard-size", 16]
    code, _, err = encode(capsys, *inputs, "-o", tmp_path / "local", "--rejects", tmp_path / "l.jsonl", *flags)
    assert code == 1
    local_summary = err.splitlines()[0]
    ray_flags = ["--engine", "ray", "--workers", 2, "--chunk-mib", 1]
    # 1 MiB chunks: one chunk a file here; the Python API below and the next test cut finer.
    code, _, err = encode(capsys, *inputs, "-o", tmp_path / "ray", "--rejects", tmp_path / "r.jsonl", *flags, *ray_flags)
    assert code == 1 and err.splitlines()[0].split(";")[0] == local_summary.split(";")[0]
    assert packed_records(tmp_path / "ray") == packed_records(tmp_path / "local")
    assert (tmp_path / "r.jsonl").read_text() == (tmp_path / "l.jsonl").read_text()
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["engine"]["name"] == "ray" and manifest["engine"]["chunks"] == 2
    assert open_stored(tmp_path / "ray").problems == []
    code = main(["validate", "--tokenizer", str(FIXTURE_MODEL), str(tmp_path / "ray")])
    assert code == 0, capsys.readouterr()
    capsys.readouterr()

    from gemma_turns import ArrayOptions, EncodeOptions, GemmaTokenizer
    from gemma_turns.engines.ray_engine import write_dataset_ray

    tokenizer = GemmaTokenizer.load(FIXTURE_MODEL)
    options = dict(
        encode_options=EncodeOptions(mode="training"),
        array_options=ArrayOptions(max_length=256, pack=True, truncation="drop"),
        shard_size=16,
        chunk_bytes=16 << 10,
    )
    whole = write_dataset_ray(tokenizer, inputs, tmp_path / "global", pack_scope="global", **options)
    assert whole.manifest["engine"]["chunks"] >= 6  # several chunks, packed in one pass
    ours, theirs = load_dataset(tmp_path / "global")[0], load_dataset(tmp_path / "local")[0]
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in theirs)


def test_a_ray_dataset_encodes_as_its_rows_would_from_a_file(ray_cluster, tmp_path, capsys):
    """Records already in a ray.data.Dataset: written as JSONL by Ray into a staging folder
    that the manifest names, then encoded there: the same (ids, loss mask) as the file."""
    import ray.data

    from gemma_turns import ArrayOptions, EncodeOptions, GemmaTokenizer
    from gemma_turns.engines.ray_engine import write_ray_dataset
    from gemma_turns.errors import DatasetError

    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    tokenizer = GemmaTokenizer.load(FIXTURE_MODEL)
    options = dict(
        encode_options=EncodeOptions(mode="training"),
        array_options=ArrayOptions(max_length=256, pack=True, truncation="drop"),
        shard_size=16,
    )
    written = write_ray_dataset(tokenizer, ray.data.from_items(rows), tmp_path / "out", staging=tmp_path / "rows", **options)
    code, _, _ = encode(capsys, SAMPLE, "-o", tmp_path / "local", "--max-length", 256, "--pack", "--truncation", "drop",
                        "--shard-size", 16)
    assert code == 0 and written.counts.encoded == len(rows)
    assert segments(tmp_path / "out") == segments(tmp_path / "local")
    assert all(entry["path"].startswith(str(tmp_path / "rows")) for entry in written.manifest["inputs"])
    with pytest.raises(DatasetError, match="not empty"):
        write_ray_dataset(tokenizer, ray.data.from_items(rows), tmp_path / "again", staging=tmp_path / "rows", **options)


try:
    from gemma_turns.engines.ray_engine import RayChunkWorker
except ImportError:  # pragma: no cover
    RayChunkWorker = object


class DyingWorker(RayChunkWorker):
    """Dies (the process exits) on chunk 3 the first time, after leaving half a shard."""

    def __call__(self, batch):
        work = Path(self.worker.job.work)
        marker = work.parent / "died-once"
        if int(batch["index"][0]) == 3 and not marker.exists():
            marker.touch()
            (work / "shard-00003-000.npz").write_bytes(b"PK\x03\x04 half")
            os._exit(1)
        # which process, and which loaded tokenizer, encoded this chunk
        note = f"calls-{os.getpid()}-{id(self.worker.tokenizer)}-{int(batch['index'][0])}"
        (work.parent / note).touch()
        return super().__call__(batch)


def test_a_killed_worker_is_replaced_and_nothing_counted_twice(ray_cluster, inputs, tmp_path):
    from gemma_turns import ArrayOptions, EncodeOptions, GemmaTokenizer
    from gemma_turns.dataset import write_dataset
    from gemma_turns.engines.ray_engine import write_dataset_ray

    tokenizer = GemmaTokenizer.load(FIXTURE_MODEL)
    options = dict(
        encode_options=EncodeOptions(mode="training"),
        array_options=ArrayOptions(max_length=256, pack=True, truncation="drop"),
        shard_size=16,
    )
    local = write_dataset(tokenizer, None, tmp_path / "local", inputs=inputs, **options)
    written = write_dataset_ray(
        tokenizer, inputs, tmp_path / "ray", chunk_bytes=16 << 10, worker_class=DyingWorker, **options
    )
    assert (tmp_path / "died-once").exists()  # the worker did die
    calls = [p.name.split("-") for p in tmp_path.glob("calls-*")]
    assert sorted(int(c[3]) for c in calls) == list(range(written.manifest["engine"]["chunks"]))
    loaded = {(c[1], c[2]) for c in calls}  # tokenizers loaded: one per worker process
    assert len(loaded) <= 3 < len(calls)  # two workers and the one that replaced the dead
    assert packed_records(tmp_path / "ray") == packed_records(tmp_path / "local")
    same = ("lines", "encoded", "encoded_tokens", "rejected", "dropped", "sequences", "tokens")
    assert {k: written.counts.as_dict()[k] for k in same} == {k: local.counts.as_dict()[k] for k in same}
    listed = [entry["name"] for entry in written.manifest["files"]]
    assert sorted(os.listdir(tmp_path / "ray")) == sorted([*listed, "manifest.json"])
    assert open_stored(tmp_path / "ray").problems == []


class FailingWorker(RayChunkWorker):
    """A worker that cannot start (its node has another tokenizer file, say)."""

    def __init__(self, job):
        from gemma_turns.errors import DatasetError

        raise DatasetError("the tokenizer on this worker is not the driver's")


def test_a_worker_that_cannot_start_fails_the_run_cleanly(ray_cluster, inputs, tmp_path):
    from gemma_turns import ArrayOptions, EncodeOptions, GemmaTokenizer
    from gemma_turns.engines.ray_engine import write_dataset_ray
    from gemma_turns.errors import DatasetError

    with pytest.raises(DatasetError, match="a Ray worker failed: the tokenizer on this worker"):
        write_dataset_ray(
            GemmaTokenizer.load(FIXTURE_MODEL), inputs, tmp_path / "out",
            encode_options=EncodeOptions(mode="training"),
            array_options=ArrayOptions(max_length=256), shard_size=16, worker_class=FailingWorker,
        )
    assert sorted(os.listdir(tmp_path)) == ["a.jsonl", "b.jsonl"]  # no output, no leftovers
