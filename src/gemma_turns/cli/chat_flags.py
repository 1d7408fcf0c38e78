"""The flags that say how a chat is rendered, shared by ``format`` and ``encode``: the dialect
(when no tokenizer gives it), and Gemma 4's checkpoint, thinking and reasoning options."""

from __future__ import annotations

from .. import chat_format
from .common import CommandError

__all__ = ["add_chat_flags", "chat_options"]


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


def chat_options(args, dialect, **fields):
    """The EncodeOptions of ``fields`` and the chat flags, checked against ``dialect`` before
    any work: an unknown checkpoint, or none where the prompt depends on it, is a usage error."""
    from ..formatter import missing_checkpoint
    from ..options import EncodeOptions

    try:
        options = EncodeOptions(
            **fields,
            checkpoint=args.checkpoint,
            enable_thinking=args.enable_thinking,
            preserve_thinking=args.preserve_thinking,
            earlier_reasoning=args.earlier_reasoning,
        )
        checkpoint = dialect.checkpoint(options.checkpoint)
    except ValueError as error:
        raise CommandError(str(error)) from None
    prompt = options.mode == "inference" and options.add_generation_prompt is not False
    if dialect.checkpoints and checkpoint is None and prompt and not options.enable_thinking:
        raise CommandError(missing_checkpoint(dialect))
    return options
