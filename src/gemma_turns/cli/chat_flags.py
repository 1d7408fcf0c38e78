"""The flags that say how a chat is rendered, shared by ``format`` and ``encode``: the dialect
(when no tokenizer gives it), and Gemma 4's checkpoint, thinking and reasoning options."""

from __future__ import annotations

from .. import chat_format

__all__ = ["add_chat_flags", "chat_keywords"]


def add_chat_flags(parser, *, dialect: bool = False) -> None:
    group = parser.add_argument_group("chat format (Gemma 4)")
    if dialect:
        group.add_argument(
            "--dialect",
            choices=sorted(chat_format.DIALECTS),
            help="the chat format, when no --tokenizer says it (default: gemma3)",
        )
    group.add_argument(
        "--checkpoint",
        metavar="NAME",
        help="the Gemma 4 model the prompt is for: e2b, e4b, 12b, 26b-a4b, 31b (or gemma-4-31b-it); "
        "the large ones end the generation prompt with an empty thought channel when thinking is off",
    )
    group.add_argument(
        "--thinking",
        dest="enable_thinking",
        action="store_true",
        help="enable_thinking for records without chat_template_kwargs",
    )
    group.add_argument(
        "--preserve-thinking",
        dest="preserve_thinking",
        action="store_true",
        help="preserve_thinking for records without chat_template_kwargs: keep the reasoning of "
        "earlier model messages that call tools",
    )
    group.add_argument(
        "--earlier-reasoning",
        choices=("refuse", "drop"),
        help="reasoning on model messages before the last user message, which the format has no "
        "place for (default: refuse in training, drop in inference; drops are counted)",
    )


def chat_keywords(args) -> dict:
    """The EncodeOptions fields the chat flags set."""
    return {
        "checkpoint": args.checkpoint,
        "enable_thinking": args.enable_thinking,
        "preserve_thinking": args.preserve_thinking,
        "earlier_reasoning": args.earlier_reasoning,
    }
