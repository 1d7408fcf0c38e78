"""The validator's rules over turn bodies where the dialect has thinking and tools (Gemma 4):
trimmed text runs, what a tool writes left out of the trained spans, and mask messages that
name the part of a body a wrong bit is on."""

from __future__ import annotations

import numpy as np

from .blocks import CALL_C, CH_C, MEDIA, OPEN, OUTSIDE, RESP_C, ROLE_NAMES, SYSTEM, THINK

__all__ = ["refine_messages", "trained_holes", "whitespace_in_bodies"]


def trained_holes(lay, trained_turn: np.ndarray):
    """``(starts, stops, units, trained_turn)``: the spans inside trained turns that the model
    does not write (a tool's results, the thinking prompt after them), and the trained turns
    without the large checkpoints' prompt, which is no turn the model wrote."""
    blocks = lay.blocks
    empty = np.zeros(0, np.int64)
    if blocks is None:
        return empty, empty, empty, trained_turn
    b = lay.units
    prompt_units = np.flatnonzero(lay.ending == "empty_thought_prompt")
    if len(prompt_units):
        trained_turn = trained_turn.copy()
        trained_turn[np.searchsorted(lay.opens, lay.last_marker[prompt_units], side="right") - 1] = False
    keep = (blocks.hole_turns >= 0) & trained_turn[np.maximum(blocks.hole_turns, 0)]
    starts, stops, units = blocks.hole_starts[keep], blocks.hole_stops[keep], blocks.hole_units[keep]
    if blocks.prompt_channel:
        prompt_units = np.array(list(blocks.prompt_channel), dtype=np.int64)
        channel = np.array(list(blocks.prompt_channel.values()), dtype=np.int64)
        turn = np.searchsorted(lay.opens, lay.last_marker[prompt_units], side="right") - 1
        trained = trained_turn[turn]
        starts = np.r_[starts, channel[trained]]
        stops = np.r_[stops, b.ends[prompt_units[trained]]]
        units = np.r_[units, prompt_units[trained]]
    return starts, stops, units, trained_turn


def whitespace_in_bodies(check) -> None:
    """Text the formatter trims must be trimmed: user text between media, model text between
    blocks, the system text (whose parts each end with a space, so spaces may end it).
    Block bodies (thought, calls, results, declarations) are written as given."""
    lay, v = check.layout, check.vocab
    blocks, b = lay.blocks, check.batch
    kind, pos, unit, role = blocks.kind, blocks.pos, blocks.unit, blocks.role
    if len(pos) == 0:
        return
    flat = b.flat
    same = np.r_[unit[1:] == unit[:-1], False]
    stop = np.r_[pos[1:], 0]
    start = pos + 1 + np.where(kind == OPEN, 2, 0) + np.where(kind == THINK, 1, 0)
    text = np.isin(kind, [OPEN, THINK, MEDIA, CH_C, RESP_C, CALL_C]) & (role != OUTSIDE) & same
    text &= (lay.chat & ~check.blocked)[unit] & (stop > start)
    starts, stops, roles = start[text], stop[text], role[text]
    head = np.clip(flat[starts], 0, v.size - 1)
    tail = np.clip(flat[stops - 1], 0, v.size - 1)
    lead, trail = v.lead_ws[head], v.trail_ws[tail] & (roles != SYSTEM)
    # decoded: byte pieces, and system text ending with whitespace (only spaces may end it)
    unsure = np.flatnonzero(v.unsure[head] | v.unsure[tail] | ((roles == SYSTEM) & v.trail_ws[tail]))
    if len(unsure):
        texts = v.decode([flat[starts[k] : stops[k]].tolist() for k in unsure])
        for k, decoded in zip(unsure, texts):
            lead[k] = decoded[:1].isspace()
            if roles[k] == SYSTEM:
                decoded = decoded.rstrip(" ")
            trail[k] = decoded[-1:].isspace()
    where = np.flatnonzero(lead | trail)
    position = np.where(lead[where], starts[where], stops[where] - 1)
    check.hit(
        "content_whitespace",
        position,
        lambda k, lead_=lead[where], r=roles[where]: (
            f"{ROLE_NAMES[r[k]]} text {'starts' if lead_[k] else 'ends'} with whitespace; the formatter "
            "trims it (str.strip), so the encoder never makes this",
            "trimmed text",
        ),
    )


def refine_messages(lay, start: int, want: int, text: str) -> str:
    """A loss-mask message that names the bug: an untrained closing marker, a trained result."""
    v, blocks = lay.vocab, lay.blocks
    token = int(lay.units.flat[start])
    if want == 1 and token == v.close:
        return text + f": the model's {v.close_piece} is untrained, so it never learns to end its turn"
    inside = (blocks.hole_starts <= start) & (start < blocks.hole_stops)
    if want == 0 and inside.any():
        return text + ": a tool's result is trained, but the tool wrote it, not the model"
    return text
