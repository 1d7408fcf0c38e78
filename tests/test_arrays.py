"""The numpy layer: hand-written rows for each function, and properties for the round trips."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemma_turns.arrays import (
    Batch,
    BestFit,
    best_fit,
    pack_rows,
    pad_batch,
    shift,
    truncate,
    unpack,
    unpad,
)
from gemma_turns.errors import SequenceTooLongError

SEQUENCES = [[2, 10, 11, 20, 21], [2, 12, 22]]
MASKS = [[0, 0, 0, 1, 1], [0, 0, 1]]


def rows(array):
    return array.tolist()


# -- pad_batch -------------------------------------------------------------------------------


def test_pad_right():
    batch = pad_batch(SEQUENCES, loss_masks=MASKS, pad_id=0)
    assert rows(batch.input_ids) == [[2, 10, 11, 20, 21], [2, 12, 22, 0, 0]]
    assert rows(batch.attention_mask) == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert rows(batch.loss_mask) == [[0, 0, 0, 1, 1], [0, 0, 1, 0, 0]]
    assert rows(batch.position_ids) == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 0]]
    assert batch.targets is None and batch.segment_ids is None


def test_pad_left_for_generation():
    batch = pad_batch(SEQUENCES, loss_masks=MASKS, pad_id=0, side="left")
    assert rows(batch.input_ids) == [[2, 10, 11, 20, 21], [0, 0, 2, 12, 22]]
    assert rows(batch.attention_mask) == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert rows(batch.loss_mask) == [[0, 0, 0, 1, 1], [0, 0, 0, 0, 1]]
    assert rows(batch.position_ids) == [[0, 1, 2, 3, 4], [0, 0, 0, 1, 2]]


def test_pad_id_comes_from_the_caller():
    batch = pad_batch([[5, 6], [7]], pad_id=9)
    assert rows(batch.input_ids) == [[5, 6], [7, 9]]
    assert rows(batch.loss_mask) == [[0, 0], [0, 0]]  # no masks given: nothing trained


def test_dtypes():
    batch = pad_batch(SEQUENCES, loss_masks=MASKS, pad_id=0, shift=True)
    assert batch.input_ids.dtype == np.int32 and batch.targets.dtype == np.int32
    assert batch.position_ids.dtype == np.int32
    assert batch.attention_mask.dtype == np.int8 and batch.loss_mask.dtype == np.int8


def test_fixed_max_length_and_multiple():
    assert pad_batch(SEQUENCES, pad_id=0, max_length=8).shape == (2, 8)
    assert pad_batch(SEQUENCES, pad_id=0, pad_to_multiple=4).shape == (2, 8)  # longest 5 -> 8
    assert pad_batch(SEQUENCES, pad_id=0, max_length=6, pad_to_multiple=4).shape == (2, 8)
    assert pad_batch(SEQUENCES, pad_id=0, max_length=8, pad_to_multiple=4).shape == (2, 8)


def test_overflow_raises_with_the_index():
    with pytest.raises(SequenceTooLongError) as caught:
        pad_batch([[1, 2], [1, 2, 3, 4]], pad_id=0, max_length=3)
    assert (caught.value.record, caught.value.length, caught.value.max_length) == (1, 4, 3)
    assert "truncation" in str(caught.value)


def test_empty_batch():
    assert pad_batch([], pad_id=0).shape == (0, 0)
    assert pad_batch([], pad_id=0, max_length=4).shape == (0, 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"side": "middle"}, "side"),
        ({"max_length": 0}, "max_length"),
        ({"pad_to_multiple": 0}, "pad_to_multiple"),
        ({"loss_masks": [[0, 0, 0, 1, 1]]}, "loss masks"),
        ({"loss_masks": [[0, 0, 0, 1, 1], [0, 0]]}, "sequence 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pad_batch(SEQUENCES, pad_id=0, **kwargs)


def test_sequences_must_be_1d():
    with pytest.raises(ValueError, match="1-D"):
        pad_batch([[[1, 2]]], pad_id=0)


def test_batch_checks_shapes():
    ones = np.ones((2, 3), dtype=np.int8)
    with pytest.raises(ValueError, match="loss_mask"):
        Batch(input_ids=ones, attention_mask=ones, loss_mask=ones[:, :2], position_ids=ones)


def test_arrays_and_fill_ratio():
    batch = pad_batch(SEQUENCES, pad_id=0, max_length=8)
    assert list(batch.arrays()) == ["input_ids", "attention_mask", "loss_mask", "position_ids"]
    assert batch.fill_ratio() == 8 / 16


# -- shift -----------------------------------------------------------------------------------


def test_shift_gives_targets_and_the_mask_aligned_with_them():
    inputs, targets, mask = shift([2, 10, 11, 12, 20, 21, 1], [0, 0, 0, 0, 1, 1, 1])
    assert rows(inputs) == [2, 10, 11, 12, 20, 21]
    assert rows(targets) == [10, 11, 12, 20, 21, 1]
    assert rows(mask) == [0, 0, 0, 1, 1, 1]


def test_pad_batch_shift():
    batch = pad_batch(SEQUENCES, loss_masks=MASKS, pad_id=0, shift=True)
    assert rows(batch.input_ids) == [[2, 10, 11, 20], [2, 12, 0, 0]]
    assert rows(batch.targets) == [[10, 11, 20, 21], [12, 22, 0, 0]]
    assert rows(batch.loss_mask) == [[0, 0, 1, 1], [0, 1, 0, 0]]
    assert rows(batch.attention_mask) == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_shift_max_length_bounds_the_inputs():
    assert pad_batch(SEQUENCES, pad_id=0, shift=True, max_length=4).shape == (2, 4)
    with pytest.raises(SequenceTooLongError):
        pad_batch(SEQUENCES, pad_id=0, shift=True, max_length=3)


# -- truncate --------------------------------------------------------------------------------


def test_truncate_masks_a_cut_span():
    ids, mask = truncate([2, 5, 6, 7, 8, 9], [0, 0, 1, 1, 1, 0], 4)
    assert rows(ids) == [2, 5, 6, 7] and rows(mask) == [0, 0, 0, 0]


def test_truncate_can_keep_a_cut_span():
    ids, mask = truncate([2, 5, 6, 7, 8, 9], [0, 0, 1, 1, 1, 0], 4, keep_cut_span=True)
    assert rows(ids) == [2, 5, 6, 7] and rows(mask) == [0, 0, 1, 1]


def test_truncate_keeps_a_span_that_ends_at_the_cut():
    ids, mask = truncate([2, 5, 6, 7, 8, 9], [0, 0, 1, 1, 0, 0], 4)
    assert rows(mask) == [0, 0, 1, 1]


def test_truncate_keeps_earlier_spans():
    #                         first span  | cut span
    ids, mask = truncate([2, 5, 6, 7, 8, 9, 4, 3], [0, 1, 1, 0, 0, 1, 1, 1], 7)
    assert rows(mask) == [0, 1, 1, 0, 0, 0, 0]


def test_truncate_a_fully_trained_sequence():
    ids, mask = truncate([1, 2, 3, 4], [1, 1, 1, 1], 2)
    assert rows(mask) == [0, 0]


def test_truncate_without_a_cut_changes_nothing():
    ids, mask = truncate([2, 5, 6], [0, 1, 1], 5)
    assert rows(ids) == [2, 5, 6] and rows(mask) == [0, 1, 1]


# -- packing ---------------------------------------------------------------------------------


def test_best_fit_picks_the_tightest_row():
    planner = BestFit(8)
    assert planner.add("a", 5) == []
    assert planner.add("b", 4) == []
    assert planner.add("c", 3) == [["a", "c"]]  # c fits both rows; a's is tighter, and full
    assert planner.finish() == [["b"]]


def test_best_fit_closes_the_fullest_row_when_too_many_are_open():
    planner = BestFit(10, max_open_rows=2)
    planner.add(0, 7)
    planner.add(1, 5)
    assert planner.add(2, 6) == [[0]]  # fits neither; row [0] (3 free) is the fullest
    assert planner.finish() == [[1], [2]]


def test_best_fit_refuses_what_cannot_fit():
    with pytest.raises(SequenceTooLongError) as caught:
        BestFit(4).add(7, 5)
    assert caught.value.record == 7
    with pytest.raises(ValueError, match="at least one token"):
        BestFit(4).add(0, 0)


def test_best_fit_plan():
    assert best_fit([5, 4, 3, 8], capacity=8) == [[0, 2], [3], [1]]


def test_pack_rows():
    batch = pack_rows(
        [[0, 2], [1]],
        [[2, 7, 8], [2, 9, 9, 9], [2, 5]],
        loss_masks=[[0, 1, 1], [0, 0, 1, 1], [0, 1]],
        pad_id=0,
        row_length=5,
    )
    assert rows(batch.input_ids) == [[2, 7, 8, 2, 5], [2, 9, 9, 9, 0]]
    assert rows(batch.segment_ids) == [[1, 1, 1, 2, 2], [1, 1, 1, 1, 0]]
    assert rows(batch.position_ids) == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert rows(batch.attention_mask) == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert rows(batch.loss_mask) == [[0, 1, 1, 0, 1], [0, 0, 1, 1, 0]]
    assert batch.segment_ids.dtype == np.int32


def test_pack_rows_shift_keeps_targets_inside_their_segment():
    batch = pack_rows(
        [[0, 1]],
        [[2, 7, 8], [2, 5, 6]],
        loss_masks=[[0, 1, 1], [0, 0, 1]],
        pad_id=0,
        row_length=5,
        shift=True,
    )
    assert rows(batch.input_ids) == [[2, 7, 2, 5, 0]]
    assert rows(batch.targets) == [[7, 8, 5, 6, 0]]
    assert rows(batch.loss_mask) == [[1, 1, 0, 1, 0]]
    assert rows(batch.segment_ids) == [[1, 1, 2, 2, 0]]


def test_pack_rows_refuses_an_overfull_row_and_empty_sequences():
    with pytest.raises(ValueError, match="row 0 holds 6 tokens"):
        pack_rows([[0, 1]], [[1, 2, 3], [4, 5, 6]], pad_id=0, row_length=5)
    with pytest.raises(ValueError, match="no tokens"):
        pack_rows([[0]], [[]], pad_id=0, row_length=5)
    with pytest.raises(ValueError, match="outside"):
        pack_rows([[3]], [[1]], pad_id=0, row_length=5)


def test_pack_rows_empty_and_rounded():
    assert pack_rows([], [], pad_id=0, row_length=4).shape == (0, 4)
    assert pack_rows([[0]], [[1, 2]], pad_id=0, row_length=5, pad_to_multiple=4).shape == (1, 8)


# -- unpad / unpack --------------------------------------------------------------------------


def test_unpad_and_unpack():
    padded = pad_batch(SEQUENCES, pad_id=0, side="left")
    assert [rows(x) for x in unpad(padded.input_ids, padded.attention_mask)] == SEQUENCES
    packed = pack_rows([[1, 0]], SEQUENCES, pad_id=0, row_length=9)
    assert [rows(x) for x in unpack(packed.input_ids, packed.segment_ids)] == [
        SEQUENCES[1],
        SEQUENCES[0],
    ]
    assert unpack(np.zeros((1, 3), np.int32), np.zeros((1, 3), np.int32)) == []


# -- properties ------------------------------------------------------------------------------

ids_strategy = st.lists(st.integers(1, 1000), min_size=1, max_size=40)
sequences_strategy = st.lists(
    ids_strategy.flatmap(
        lambda ids: st.tuples(
            st.just(ids), st.lists(st.integers(0, 1), min_size=len(ids), max_size=len(ids))
        )
    ),
    min_size=0,
    max_size=12,
)


@settings(max_examples=80, deadline=None)
@given(sequences_strategy, st.sampled_from(["right", "left"]), st.integers(1, 8))
def test_unpadding_a_padded_batch_gives_the_sequences_back(pairs, side, multiple):
    ids = [p[0] for p in pairs]
    masks = [p[1] for p in pairs]
    batch = pad_batch(ids, loss_masks=masks, pad_id=0, side=side, pad_to_multiple=multiple)
    assert [rows(x) for x in unpad(batch.input_ids, batch.attention_mask)] == ids
    assert [rows(x) for x in unpad(batch.loss_mask, batch.attention_mask)] == masks
    assert all(
        rows(x) == list(range(len(s)))
        for x, s in zip(unpad(batch.position_ids, batch.attention_mask), ids)
    )
    assert batch.shape[1] % multiple == 0


@settings(max_examples=60, deadline=None)
@given(sequences_strategy, st.integers(0, 5))
def test_left_and_right_padding_agree_after_unpadding(pairs, extra):
    ids = [p[0] for p in pairs]
    masks = [p[1] for p in pairs]
    width = max((len(s) for s in ids), default=0) + extra or None
    right = pad_batch(ids, loss_masks=masks, pad_id=0, max_length=width, shift=False)
    left = pad_batch(ids, loss_masks=masks, pad_id=0, max_length=width, side="left")
    for name in ("input_ids", "loss_mask", "position_ids"):
        a = unpad(getattr(right, name), right.attention_mask)
        b = unpad(getattr(left, name), left.attention_mask)
        assert [rows(x) for x in a] == [rows(x) for x in b]


@settings(max_examples=60, deadline=None)
@given(sequences_strategy)
def test_shifted_batches_hold_the_targets(pairs):
    pairs = [p for p in pairs if len(p[0]) > 1]
    ids = [p[0] for p in pairs]
    masks = [p[1] for p in pairs]
    batch = pad_batch(ids, loss_masks=masks, pad_id=0, shift=True)
    assert [rows(x) for x in unpad(batch.input_ids, batch.attention_mask)] == [s[:-1] for s in ids]
    assert [rows(x) for x in unpad(batch.targets, batch.attention_mask)] == [s[1:] for s in ids]
    assert [rows(x) for x in unpad(batch.loss_mask, batch.attention_mask)] == [m[1:] for m in masks]


@settings(max_examples=80, deadline=None)
@given(sequences_strategy, st.integers(40, 100), st.integers(1, 6))
def test_packing_keeps_every_token_boundary_and_mask_bit(pairs, capacity, open_rows):
    ids = [p[0] for p in pairs]
    masks = [p[1] for p in pairs]
    plan = best_fit([len(s) for s in ids], capacity=capacity, max_open_rows=open_rows)
    assert sorted(i for row in plan for i in row) == list(range(len(ids)))
    batch = pack_rows(plan, ids, loss_masks=masks, pad_id=0, row_length=capacity)
    order = [i for row in plan for i in row]
    assert [rows(x) for x in unpack(batch.input_ids, batch.segment_ids)] == [ids[i] for i in order]
    assert [rows(x) for x in unpack(batch.loss_mask, batch.segment_ids)] == [
        masks[i] for i in order
    ]
    # positions restart at 0 in every segment
    assert all(
        rows(x) == list(range(len(x))) for x in unpack(batch.position_ids, batch.segment_ids)
    )
    # segments are numbered 1..k in each row, and padding is exactly where segment_ids is 0
    assert [int(batch.segment_ids[r].max(initial=0)) for r in range(len(plan))] == [
        len(row) for row in plan
    ]
    assert np.array_equal(batch.attention_mask != 0, batch.segment_ids != 0)
    assert int(batch.attention_mask.sum()) == sum(len(s) for s in ids)


@settings(max_examples=80, deadline=None)
@given(sequences_strategy, st.integers(0, 45))
def test_truncate_never_leaves_a_cut_span_trainable(pairs, max_length):
    for ids, mask in pairs:
        kept_ids, kept_mask = truncate(ids, mask, max_length)
        n = min(len(ids), max_length)
        assert rows(kept_ids) == ids[:n]
        assert all(k <= m for k, m in zip(rows(kept_mask), mask))
        if 0 < max_length < len(ids) and mask[max_length]:
            assert kept_mask[-1] == 0  # the span that continues past the cut is not trained
        changed = [k for k, (a, b) in enumerate(zip(rows(kept_mask), mask)) if a != b]
        assert all(mask[k] for k in range(changed[0], n)) if changed else True  # only the last span
