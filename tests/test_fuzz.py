"""Random bytes and random JSON into the JSONL reader, the encoder stream and the validate
reader: no exception escapes, and every line is accounted for."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemma_turns import EncodeOptions
from gemma_turns.errors import DatasetError
from gemma_turns.jsonl import read_lines
from gemma_turns.readers import open_sequences
from gemma_turns.records import Counts
from gemma_turns.streaming import encode_lines

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.sampled_from(["user", "model", "assistant", "system", "<end_of_turn>", "text", "image"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["role", "content", "messages", "system", "type", "text",
                                       "input_ids", "loss_mask", "attention_mask"]), children, max_size=4),
    max_leaves=20,
)
raw_lines = st.one_of(
    st.binary(max_size=60).map(lambda b: b.replace(b"\n", b" ")),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
)
files = st.lists(raw_lines, max_size=12).map(lambda lines: [line + b"\n" for line in lines])
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                             HealthCheck.function_scoped_fixture])


@SETTINGS
@given(lines=files, mode=st.sampled_from(["training", "inference", "pt"]))
def test_every_line_gets_one_record(fixture_tokenizer, lines, mode):
    counts = Counts()
    records = list(encode_lines(fixture_tokenizer, read_lines(lines), EncodeOptions(mode=mode)))
    for record in records:
        counts.add(record)
    assert [r.number for r in records] == list(range(1, len(lines) + 1))
    assert counts.lines == counts.encoded + counts.blank + sum(counts.rejected.values()) == len(lines)


@SETTINGS
@given(lines=files)
def test_the_validate_reader_accounts_for_every_line(tmp_path_factory, fixture_tokenizer, lines):
    from gemma_turns import validate

    path = tmp_path_factory.mktemp("fuzz") / "ids.jsonl"
    path.write_bytes(b"".join(lines))
    source = open_sequences(str(path))
    sequences = 0
    try:
        for chunk in source.chunks:
            sequences += len(chunk.indices)
            validate(chunk.ids, fixture_tokenizer, loss_mask=chunk.loss_mask, attention_mask=chunk.attention_mask,
                     canonical=False)
    except DatasetError:
        assert source.bad_lines  # the lines that are no sequence, named
    except ValueError as error:  # arrays that do not fit together: reported by the command
        assert "loss_mask" in str(error) or "mask" in str(error), error
        return
    assert sequences + len(source.bad_lines) + source.blank_lines == len(lines)


@settings(SETTINGS, max_examples=60)
@given(lines=files)
def test_the_commands_never_raise(tmp_path_factory, capsys, lines):
    from conftest import FIXTURE_MODEL

    from gemma_turns.cli import main

    path = tmp_path_factory.mktemp("fuzz") / "data.jsonl"
    path.write_bytes(b"".join(lines))
    for argv in (["validate", "--tokenizer", str(FIXTURE_MODEL), "--no-canonical", str(path)],
                 ["encode", "--tokenizer", str(FIXTURE_MODEL), "--mode", "training", str(path)],
                 ["format", str(path)]):
        assert main(argv) in (0, 1, 2)
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        if argv[0] == "encode":
            assert len(out.splitlines()) == sum(1 for line in read_lines(lines) if not line.blank)
