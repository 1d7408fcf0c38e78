"""Every error survives pickling with its fields and message, so it can cross a process
boundary (ProcessPoolExecutor, multiprocessing, datasets.map(num_proc=N))."""

import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest

from gemma_turns import errors
from gemma_turns.errors import (
    ConversationError,
    DatasetError,
    EmptyInputError,
    GemmaTurnsError,
    ParseError,
    ReservedTokenError,
    SequenceTooLongError,
    TokenizerError,
)
from gemma_turns.findings import Finding

FINDING = Finding("bad_marker", 3, 7, 106, "<start_of_turn>", "a turn closes that never opened", "…")

EXAMPLES = [
    TokenizerError("no such model", path="/x/tokenizer.model", piece="<start_of_turn>"),
    ConversationError(
        "roles must alternate",
        code="roles_not_alternating",
        message_index=2,
        role="user",
        part_index=1,
        char_offset=5,
        record=4,
        fix="Merge them",
        field="content",
    ),
    ReservedTokenError("<end_of_turn>", message_index=1, role="model", char_offset=9).with_record(7),
    SequenceTooLongError(900, 512, record=12),
    DatasetError("cannot write", path="/tmp/out.npz"),
    EmptyInputError("no records", path="in.jsonl"),
    ParseError(FINDING),
]

FIELDS = {
    TokenizerError: ["path", "piece"],
    ConversationError: ["reason", "code", "fix", "location", "record", "message_index", "role"],
    ReservedTokenError: ["token", "code", "location", "record"],
    SequenceTooLongError: ["length", "max_length", "record"],
    DatasetError: ["path"],
    EmptyInputError: ["path"],
    ParseError: ["finding", "rule", "position", "token_id", "expected", "context"],
}


def all_error_classes():
    classes = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, GemmaTurnsError)
    }
    return classes - {GemmaTurnsError}


def test_every_error_class_has_an_example():
    assert {type(e) for e in EXAMPLES} == all_error_classes()


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_error_round_trips_through_pickle(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error) and copy.args == error.args
    for name in FIELDS[type(error)]:
        assert getattr(copy, name) == getattr(error, name), name
    if isinstance(error, ConversationError):
        assert copy.to_dict() == error.to_dict()
        assert str(copy.with_record(99)).startswith("record 99")  # still a working error


def _raise_in_worker(index):
    raise EXAMPLES[index]


def test_error_raised_in_a_worker_process_reaches_the_caller():
    with ProcessPoolExecutor(max_workers=1) as pool:
        for index, original in enumerate(EXAMPLES):
            with pytest.raises(type(original)) as caught:
                pool.submit(_raise_in_worker, index).result()
            assert str(caught.value) == str(original)
