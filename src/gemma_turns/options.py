"""The options of a run, each one frozen value: checked once, recorded once, read back once.

    EncodeOptions   how records become ids and loss masks (the encoder's keywords)
    ArrayOptions    how encoded records become arrays (width, padding, truncation, packing)

Both are keyword-only frozen dataclasses whose ``__post_init__`` checks every value, so an
options value that exists is a valid one. ``as_dict()`` is what a manifest records and
``from_dict()`` reads it back; both go over the dataclass fields, so a field added later
(say ``enable_thinking``) is recorded and read with no edit anywhere else. A record written
by a newer version may hold fields this one does not know: ``from_dict`` ignores them.

:func:`validate_keywords` maps recorded encode options to the keywords of
:func:`gemma_turns.validator.validate`: the one place that knows which ending and which
loss mask a set of options produces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal

from .arrays import OPEN_ROWS

__all__ = ["ArrayOptions", "EncodeOptions", "options_of", "validate_keywords"]

Mode = Literal["training", "inference", "pt"]
Truncation = Literal["error", "drop", "truncate", "drop_oldest_turns"]
TRUNCATIONS = ("error", "drop", "truncate", "drop_oldest_turns")


class _Recorded:
    """``as_dict``/``from_dict`` over the dataclass fields of a frozen options value."""

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, recorded: Mapping):
        """The options a manifest recorded; unknown keys (a newer version's) are ignored, and
        every value is checked as at construction (ValueError)."""
        names = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in recorded.items() if name in names})


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def _optional_bool(name: str, value) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{name} must be True, False or None, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class EncodeOptions(_Recorded):
    """How records are encoded: the keywords of GemmaTokenizer's methods.

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
        _one_of("mode", self.mode, ("training", "inference", "pt"))
        _one_of("train_on", self.train_on, ("all", "last"))
        _one_of("reserved", self.reserved, ("refuse", "escape", "allow"))
        _one_of("earlier_reasoning", self.earlier_reasoning, (None, "refuse", "drop"))
        _optional_bool("add_generation_prompt", self.add_generation_prompt)
        for name in ("train_newline", "add_eos", "enable_thinking", "preserve_thinking"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.mode == "training" and self.add_generation_prompt:
            raise ValueError(
                "mode='training' ends with the model's answer, so add_generation_prompt=True "
                "does not apply; use mode='inference' for a prompt"
            )
        if self.checkpoint is not None and not isinstance(self.checkpoint, str):
            raise ValueError(f"checkpoint must be a name such as 'gemma-4-31b-it', got {self.checkpoint!r}")

    @property
    def reasoning_policy(self) -> Literal["refuse", "drop"]:
        """What happens to reasoning the format has no place for, with the mode's default."""
        if self.earlier_reasoning is not None:
            return self.earlier_reasoning
        return "refuse" if self.mode == "training" else "drop"


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
    key = (*keywords.items(), *map(type, keywords.values()))  # with the types: 1 is not True
    try:
        return _RECENT[key]
    except (KeyError, TypeError):  # new, or an unhashable value (reported below)
        pass
    options = EncodeOptions(**keywords)
    try:
        if len(_RECENT) >= 64:
            _RECENT.clear()
        _RECENT[key] = options
    except TypeError:
        pass
    return options


# The options of recent keyword calls: a server calls encode_chat(..., mode=...) per request,
# and checking the same keywords again costs more than the encode of a short prompt.
_RECENT: dict[tuple, EncodeOptions] = {}


@dataclass(frozen=True, kw_only=True)
class ArrayOptions(_Recorded):
    """How encoded records become arrays.

    ``max_length`` caps the real tokens of a row (``None``: the longest record sets the
    width, unpacked only); ``pad_to_multiple`` only rounds the array
    width up. ``truncation`` is what happens to a record longer than a row: ``error`` (raise
    SequenceTooLongError), ``drop`` (leave it out, reported), ``truncate`` (cut the end),
    ``drop_oldest_turns`` (inference: see :func:`gemma_turns.fit.drop_oldest_turns`).
    ``shift`` stores inputs ``ids[:-1]`` and ``targets`` ``ids[1:]``, so a row holds
    ``max_length + 1`` ids of a record. ``pack`` puts several records in a row, planned by
    best fit with at most ``open_rows`` rows open.
    """

    max_length: int | None = None
    padding: Literal["right", "left"] = "right"
    pad_to_multiple: int = 1
    truncation: Truncation = "error"
    pack: bool = False
    shift: bool = False
    open_rows: int = OPEN_ROWS

    def __post_init__(self):
        for name in ("max_length", "pad_to_multiple", "open_rows"):
            value = getattr(self, name)
            if value is None and name == "max_length":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        _one_of("padding", self.padding, ("right", "left"))
        _one_of("truncation", self.truncation, TRUNCATIONS)
        for name in ("pack", "shift"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.max_length is None and (self.pack or self.truncation != "error"):
            what = "packing" if self.pack else f"truncation={self.truncation!r}"
            raise ValueError(f"{what} needs a max_length: the row length to fit records into")
        if self.pack and self.padding == "left":
            raise ValueError(
                "packed rows are for training and are right-padded; use padding='right', "
                "or leave packing off for a left-padded generation batch"
            )

    def check_mode(self, mode: str) -> None:
        """Refuse a truncation policy that would corrupt records of this encoding mode."""
        if self.truncation == "drop_oldest_turns" and mode != "inference":
            raise ValueError(
                f"truncation='drop_oldest_turns' keeps the latest turns of a chat prompt, so it "
                f"applies to mode='inference' only, not {mode!r}; use 'truncate' or 'drop'"
            )
        if self.truncation == "truncate" and mode == "inference":
            raise ValueError(
                "truncation='truncate' cuts the end, which would remove the generation prompt "
                "of an inference record; use 'drop_oldest_turns' or 'drop'"
            )

    @property
    def limit(self) -> int | None:
        """Ids of one record that fit a row (``max_length``, one more with ``shift``)."""
        return None if self.max_length is None else self.max_length + int(self.shift)


def validate_keywords(recorded: Mapping | None) -> dict:
    """The keywords of ``validate()`` for ids made with the recorded encode options (or an
    EncodeOptions).

    Only what the record states: a missing or unreadable field stays unknown, so the
    validator accepts any legal shape for it. ``{}`` for no record.

        {"mode": "inference", "add_generation_prompt": None, "train_on": "all"}
        -> {"expect": "inference", "endings": ["generation_prompt", "model_turn"],
            "train_on": "all"}
    """
    if isinstance(recorded, EncodeOptions):
        recorded = recorded.as_dict()
    if not isinstance(recorded, Mapping):
        return {}
    out: dict = {}
    mode = recorded.get("mode")
    if mode in ("training", "inference", "pt"):
        out["expect"] = mode
    if mode == "inference":
        prompt = recorded.get("add_generation_prompt")
        out["endings"] = {
            True: ["generation_prompt"],
            False: ["model_turn", "user_turn"],
        }.get(prompt, ["generation_prompt", "model_turn"])  # None: a prompt after a user turn
        if prompt is not False and isinstance(recorded.get("checkpoint"), str):
            out["checkpoint"] = recorded["checkpoint"]  # Gemma 4: whose prompt is expected
    if mode == "pt" and recorded.get("add_eos") is False:
        out["endings"] = ["text"]
    if recorded.get("train_on") in ("all", "last"):
        out["train_on"] = recorded["train_on"]
    if isinstance(recorded.get("train_newline"), bool):
        out["train_newline"] = recorded["train_newline"]
    return out
