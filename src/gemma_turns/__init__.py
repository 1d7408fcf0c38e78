"""gemma-turns: chat conversations to the exact token ids a Gemma model expects.

    messages -> conversation (checked) -> formatter (turn text) -> encoder (ids, loss mask)
             -> arrays (padded or packed numpy batches) -> dataset / store (npz files + manifest)
    ids -> layout (turns, read through the dialect) -> validator (findings) / parser

The chat format is data: ``chat_format.Dialect`` (GEMMA3, GEMMA4), found from the model.

The public names are listed here; the logic lives in the modules. ``gemma_turns.arrays``
(the numpy layer) and ``gemma_turns.dataset`` hold more, for finer control.
"""

import importlib
from typing import TYPE_CHECKING

_HOMES = {  # public name -> the module that defines it, imported on first use
    "ArrayOptions": "options",
    "Batch": "arrays",
    "Conversation": "conversation",
    "ConversationError": "errors",
    "Counts": "records",
    "DatasetError": "errors",
    "Dialect": "chat_format",
    "EmptyInputError": "errors",
    "EncodeOptions": "options",
    "Encoding": "encoder",
    "Finding": "validator",
    "GEMMA3": "chat_format",
    "GEMMA4": "chat_format",
    "GemmaTokenizer": "encoder",
    "GemmaTurnsError": "errors",
    "Layout": "layout",
    "Marker": "conversation",
    "Outcome": "streaming",
    "ParseError": "parser",
    "ParsedConversation": "parser",
    "RULES": "validator",
    "Record": "records",
    "Report": "validator",
    "ReservedTokenError": "errors",
    "SequenceTooLongError": "errors",
    "SpecialTokens": "specials",
    "Tally": "streaming",
    "TokenizerError": "errors",
    "Turn": "conversation",
    "assert_valid": "testing",
    "best_fit": "arrays",
    "build_batch": "dataset",
    "encode_lines": "streaming",
    "format_chat": "formatter",
    "iter_shards": "store",
    "load_dataset": "store",
    "normalize_messages": "conversation",
    "pack_rows": "arrays",
    "pad_batch": "arrays",
    "parse": "parser",
    "read_layout": "validator",
    "unpack": "arrays",
    "unpad": "arrays",
    "validate": "validator",
    "write_dataset": "dataset",
}

if TYPE_CHECKING:  # for type checkers and editors; at run time names load on first use
    from .arrays import Batch, best_fit, pack_rows, pad_batch, unpack, unpad
    from .chat_format import GEMMA3, GEMMA4, Dialect
    from .conversation import Conversation, Marker, Turn, normalize_messages
    from .dataset import build_batch, write_dataset
    from .encoder import Encoding, GemmaTokenizer
    from .errors import (
        ConversationError,
        DatasetError,
        EmptyInputError,
        GemmaTurnsError,
        ReservedTokenError,
        SequenceTooLongError,
        TokenizerError,
    )
    from .formatter import format_chat
    from .options import ArrayOptions, EncodeOptions
    from .parser import ParsedConversation, ParseError, parse
    from .records import Counts, Record
    from .specials import SpecialTokens
    from .store import iter_shards, load_dataset
    from .streaming import Outcome, Tally, encode_lines  # Outcome, Tally: old names of Record, Counts
    from .layout import Layout
    from .testing import assert_valid
    from .validator import RULES, Finding, Report, read_layout, validate


def __getattr__(name: str):
    """Import a public name's module on first use: ``import gemma_turns`` stays cheap, so
    the command line is inside its Ctrl-C and error handling before numpy loads."""
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module 'gemma_turns' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


__version__ = "0.1.0"

__all__ = [
    "GEMMA3",
    "GEMMA4",
    "RULES",
    "ArrayOptions",
    "Batch",
    "Conversation",
    "ConversationError",
    "Dialect",
    "Counts",
    "DatasetError",
    "EmptyInputError",
    "EncodeOptions",
    "Encoding",
    "Finding",
    "GemmaTokenizer",
    "GemmaTurnsError",
    "Layout",
    "Marker",
    "Outcome",
    "ParseError",
    "ParsedConversation",
    "Record",
    "Report",
    "ReservedTokenError",
    "SequenceTooLongError",
    "SpecialTokens",
    "Tally",
    "TokenizerError",
    "Turn",
    "__version__",
    "assert_valid",
    "best_fit",
    "build_batch",
    "encode_lines",
    "format_chat",
    "iter_shards",
    "load_dataset",
    "normalize_messages",
    "pack_rows",
    "pad_batch",
    "parse",
    "read_layout",
    "unpack",
    "unpad",
    "validate",
    "write_dataset",
]
