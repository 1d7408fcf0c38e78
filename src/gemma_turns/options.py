"""How records are encoded: one frozen value, checked once, recorded in the manifest once.

The encoder's methods take these fields as keywords (or an ``EncodeOptions``); the dataset
writer records :meth:`EncodeOptions.as_dict` in the manifest, and the validator reads the
expectations back from it with :meth:`EncodeOptions.from_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

__all__ = ["EncodeOptions", "Mode", "options_of"]

Mode = Literal["training", "inference", "pt"]
CHOICES = {
    "mode": ("training", "inference", "pt"),
    "train_on": ("all", "last"),
    "reserved": ("refuse", "escape", "allow"),
    "earlier_reasoning": (None, "refuse", "drop"),
}


@dataclass(frozen=True, kw_only=True)
class EncodeOptions:
    """How records are encoded.

    ``mode``: ``training`` (ends with the model's answer; a loss mask on what the model
    writes), ``inference`` (ends with the generation prompt), ``pt`` (``[BOS] text [EOS]``).
    ``add_generation_prompt``: None decides by the conversation (inference, last message not
    the model's). ``train_on``: ``all`` model turns or the ``last``; ``train_newline``: also
    the newline after a trained turn's closing marker. ``reserved``: content that spells a
    reserved token is refused, escaped or allowed. ``add_eos``: PT texts end with EOS.

    Gemma 4 (dialects with thinking and tools): ``enable_thinking`` and
    ``preserve_thinking`` are the defaults for records without ``chat_template_kwargs``;
    ``checkpoint`` names the model whose generation prompt is meant (``e2b`` ... ``31b``);
    ``earlier_reasoning``: reasoning on model messages before the last user message, which
    the format has no place for, is refused or dropped (None: refused in training, dropped
    in inference).
    """

    mode: Mode
    add_generation_prompt: bool | None = None
    train_on: Literal["all", "last"] = "all"
    train_newline: bool = False
    reserved: Literal["refuse", "escape", "allow"] = "refuse"
    add_eos: bool = True  # pt only
    enable_thinking: bool = False
    preserve_thinking: bool = False
    checkpoint: str | None = None
    earlier_reasoning: Literal["refuse", "drop"] | None = None

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                shown = ", ".join(repr(a) for a in allowed)
                raise ValueError(f"{name} must be one of {shown}, got {getattr(self, name)!r}")
        for name in ("train_newline", "add_eos", "enable_thinking", "preserve_thinking"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.add_generation_prompt not in (None, True, False):
            raise ValueError(f"add_generation_prompt must be None, True or False, got {self.add_generation_prompt!r}")
        if self.mode == "training" and self.add_generation_prompt:
            raise ValueError(
                "mode='training' ends with the model's answer, so add_generation_prompt=True "
                "does not apply; use mode='inference' for a prompt"
            )
        if self.checkpoint is not None and not isinstance(self.checkpoint, str):
            raise ValueError(f"checkpoint must be a name such as 'gemma-4-31b-it', got {self.checkpoint!r}")

    @property
    def reasoning_policy(self) -> Literal["refuse", "drop"]:
        if self.earlier_reasoning is not None:
            return self.earlier_reasoning
        return "refuse" if self.mode == "training" else "drop"

    def as_dict(self) -> dict:
        """Every field, for the manifest."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_dict(cls, values: dict) -> EncodeOptions:
        """The options a manifest recorded; fields it does not know keep their defaults."""
        known = {field.name for field in fields(cls)}
        return cls(**{name: value for name, value in values.items() if name in known})


def options_of(options: EncodeOptions | None, keywords: dict, **defaults) -> EncodeOptions:
    """One EncodeOptions from an options value or keywords (not both); ``defaults`` fill
    keywords that are not given."""
    if options is not None:
        if keywords:
            raise TypeError(f"pass options or keywords, not both (got {', '.join(keywords)})")
        return options
    keywords = {**defaults, **keywords}
    if "mode" not in keywords:
        raise TypeError("mode is required: 'training' or 'inference'")
    return EncodeOptions(**keywords)
