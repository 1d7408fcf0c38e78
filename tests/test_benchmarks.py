"""The benchmark scripts still run (on a tiny input): a smoke test, no timing is asserted."""

import importlib.util

from conftest import ROOT


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_conversations_are_deterministic():
    conversations = load("conversations")
    first = conversations.generate(30, seed=3)
    assert first == conversations.generate(30, seed=3)
    assert first != conversations.generate(30, seed=4)
    assert all(m[-1]["role"] == "assistant" for m in first)


def test_run_prints_every_phase(capsys):
    run = load("run")
    assert run.main(["--conversations", "12", "--repeat", "1", "--no-memory", "--max-length", "512"]) == 0
    out = capsys.readouterr().out
    for phase in ("floor", "batch API", "one-conversation API", "pad", "pack", "validate", "CLI"):
        assert phase in out


def test_ray_engine_benchmark_local_run(tmp_path):
    """The Ray benchmark's local child run (the Ray runs need a cluster: not here)."""
    import argparse

    from conftest import FIXTURE_MODEL, SAMPLE

    bench = load("ray_engine")
    args = argparse.Namespace(
        child="local", tokenizer=FIXTURE_MODEL, max_length=512, shard_size=8, cpus=1,
        output=str(tmp_path / "out"), inputs=[str(SAMPLE)], chunk_mib=1,
    )
    measured = bench.child(args)
    assert measured["records"] == 12 and 0 < measured["fill"] <= 1 and measured["seconds"] > 0
