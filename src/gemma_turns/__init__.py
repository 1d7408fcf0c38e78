"""gemma-turns: chat conversations to the exact token ids a Gemma model expects.

    messages -> conversation (checked) -> formatter (turn text) -> encoder (ids, loss mask)
             -> arrays (padded or packed numpy batches) -> dataset (npz files + manifest)
    ids -> validator (findings) / parser (the conversation back)

The public names are listed here; the logic lives in the modules. ``gemma_turns.arrays``
(the numpy layer) and ``gemma_turns.dataset`` hold more, for finer control.
"""

from .arrays import Batch, best_fit, pack_rows, pad_batch, unpack, unpad
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
from .validator import RULES, Finding, Report, assert_valid, validate

__version__ = "0.1.0"

__all__ = [
    "RULES",
    "ArrayOptions",
    "Batch",
    "Conversation",
    "ConversationError",
    "Counts",
    "DatasetError",
    "EmptyInputError",
    "EncodeOptions",
    "Encoding",
    "Finding",
    "GemmaTokenizer",
    "GemmaTurnsError",
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
    "unpack",
    "unpad",
    "validate",
    "write_dataset",
]
