"""gemma-turns: chat conversations to the exact token ids a Gemma model expects.

    messages -> conversation (checked) -> formatter (turn text) -> encoder (ids, loss mask)

The public names are listed here; the logic lives in the modules.
"""

from .conversation import Conversation, Marker, Turn, normalize_messages
from .encoder import Encoding, GemmaTokenizer
from .errors import (
    ConversationError,
    GemmaTurnsError,
    ReservedTokenError,
    SequenceTooLongError,
    TokenizerError,
)
from .formatter import format_chat
from .specials import SpecialTokens
from .streaming import EncodeOptions, Outcome, Tally, encode_lines

__version__ = "0.1.0"

__all__ = [
    "Conversation",
    "ConversationError",
    "EncodeOptions",
    "Encoding",
    "GemmaTokenizer",
    "GemmaTurnsError",
    "Marker",
    "Outcome",
    "ReservedTokenError",
    "SequenceTooLongError",
    "SpecialTokens",
    "Tally",
    "TokenizerError",
    "Turn",
    "__version__",
    "encode_lines",
    "format_chat",
    "normalize_messages",
]
