"""What encoding gives: token ids and their loss mask, one array each, aligned by position."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import ID_DTYPE, MASK_DTYPE

__all__ = ["ID_DTYPE", "MASK_DTYPE", "Encoding"]


@dataclass(frozen=True, slots=True, eq=False)
class Encoding:
    """Token ids and the loss mask, aligned by position.

    ``loss_mask[i]`` is 1 when token ``i`` is one the model must learn to produce (a model
    turn's content and its ``<end_of_turn>``), 0 otherwise (BOS, turn headers, user turns).
    With the Gemma 3 tokenizer, user "Hi" and model "Hello" in training mode give:

        piece      <bos> <sot> user  \\n   Hi   <eot>  \\n  <sot> model  \\n  Hello <eot>  \\n
        ids            2   105 2364  107 10979  106  107   105  4368  107  9259  106  107
        loss_mask      0     0    0    0     0    0    0     0     0    0     1    1    0
    """

    ids: np.ndarray
    loss_mask: np.ndarray
    notes: tuple[str, ...] = ()  # what a documented rule dropped: "dropped_reasoning", ...

    def __post_init__(self):
        if self.ids.shape != self.loss_mask.shape or self.ids.ndim != 1:
            raise ValueError(
                f"ids {self.ids.shape} and loss_mask {self.loss_mask.shape} must be 1-D "
                "arrays of one length"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict[str, list[int]]:
        """Plain lists for JSON: ``{"input_ids": [...], "loss_mask": [...]}``."""
        return {"input_ids": self.ids.tolist(), "loss_mask": self.loss_mask.tolist()}
