"""What users download, turned into the SentencePiece model the encoder loads.

A Gemma tokenizer comes in four shapes: a SentencePiece ``tokenizer.model``, a Hugging Face
checkpoint folder (``tokenizer.model``, or only ``tokenizer.json``), a ``tokenizer.json``, or a
GGUF file (llama.cpp, Ollama). :func:`read_tokenizer` turns any of them into the bytes of a
SentencePiece ``ModelProto`` plus a :class:`TokenizerSource` saying what was read:

    kind             path                        sha256 of      model_sha256
    sentencepiece    .../tokenizer.model         that file      the same
    tokenizer.json   .../tokenizer.json          that file      the rebuilt model proto
    gguf             .../gemma-3-4b-it.gguf      that file      the rebuilt model proto

A rebuilt model has the pieces at their ids, their types as SentencePiece had them, scores in
the order of the original's, and Gemma's trainer and normalizer specs (BPE, byte fallback,
identity normalizer, no dummy prefix), so it gives the ids of the ``tokenizer.model`` the file
was made from. What cannot be rebuilt exactly is refused with a TokenizerError, never guessed.

The model proto is written by hand (a few protobuf fields) and a GGUF's metadata is read by
hand (its header only), so neither ``protobuf`` nor ``gguf`` is needed; ``json``, ``mmap`` and
numpy are imported only for the files that need them, so loading a ``tokenizer.model`` does no
more work than before.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass

from .errors import TokenizerError

__all__ = [
    "TokenizerSource",
    "model_from_gguf",
    "model_from_tokenizer_json",
    "model_proto",
    "read_gguf_metadata",
    "read_tokenizer",
]

GGUF_MAGIC = b"GGUF"
CHECKPOINT_FILES = ("tokenizer.model", "tokenizer.json")
# SentencePiece piece types (sentencepiece_model.proto: ModelProto.SentencePiece.Type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# The CONTROL pieces of every Gemma SentencePiece model (pad, eos, bos at ids 0, 1, 2); every
# other reserved piece is USER_DEFINED (matched in text). The files below do not keep that
# distinction faithfully (a GGUF marks <start_of_turn> CONTROL; tokenizer.json marks <mask>
# special), so it is restored from these names.
CONTROL_PIECES = {"<pad>": "pad", "<eos>": "eos", "<bos>": "bos"}
UNK_PIECE = "<unk>"
BYTE_PIECES = frozenset(f"<0x{b:02X}>" for b in range(256))
SPACE = "\u2581"  # "▁", SentencePiece's escaped space
# llama.cpp's token types (gguf.TokenType) -> SentencePiece's, before the Gemma restoration.
GGUF_TYPES = {1: NORMAL, 2: UNKNOWN, 3: CONTROL, 4: USER_DEFINED, 5: UNUSED, 6: BYTE}
HASH_CHUNK = 1 << 22


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenizerSource:
    """What was loaded: the file's ``kind`` and ``path``, the ``sha256`` of that file, and
    ``model_sha256``, that of the SentencePiece model the ids come from (the same bytes for a
    ``tokenizer.model``; the rebuilt model for a ``tokenizer.json`` or a GGUF)."""

    kind: str  # "sentencepiece", "tokenizer.json" or "gguf"
    path: str
    sha256: str
    model_sha256: str


def read_tokenizer(path: str | os.PathLike) -> tuple[bytes, TokenizerSource]:
    """The SentencePiece model proto of ``path`` and what was read.

    ``path``: a ``tokenizer.model``, a checkpoint folder (its ``tokenizer.model``, else its
    ``tokenizer.json``), a ``tokenizer.json`` or a ``.gguf`` file. The kind of a file is
    found from its first bytes (GGUF magic, JSON object), not from its name.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = _checkpoint_file(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            if head == GGUF_MAGIC:  # may be gigabytes of weights: never read whole
                return _from_gguf(path)
            data = head + handle.read()
    except OSError as error:
        raise TokenizerError(
            f"cannot read the tokenizer {path!r}: {error.strerror or error}", path=path
        ) from None
    sha = hashlib.sha256(data).hexdigest()
    # JSON: "{" first, maybe after spaces (a model proto starts with field 1's tag, "\n").
    if data[:1] in b"{ \t\r" and data.lstrip()[:1] == b"{":
        proto = model_from_tokenizer_json(data, path=path)
        return proto, TokenizerSource(
            kind="tokenizer.json", path=path, sha256=sha, model_sha256=hashlib.sha256(proto).hexdigest()
        )
    return data, TokenizerSource(kind="sentencepiece", path=path, sha256=sha, model_sha256=sha)


def _checkpoint_file(folder: str) -> str:
    for name in CHECKPOINT_FILES:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    raise TokenizerError(
        f"{folder!r} is a folder without {' or '.join(CHECKPOINT_FILES)}: point --tokenizer at "
        "a Gemma checkpoint folder, or at a tokenizer.model, tokenizer.json or .gguf file",
        path=folder,
    )


# -- writing a SentencePiece ModelProto ----------------------------------------------------------


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        value += 1 << 64  # protobuf's int32 negatives: ten bytes, two's complement
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


_SMALL = [bytes((value,)) for value in range(0x80)]
_FLOAT = struct.Struct("<f").pack
_SMALL_18 = [b"\x18" + one for one in _SMALL]  # type (field 3, varint) and its value


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(int(value))


def _float_field(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def _piece(text: str, score: float, kind: int) -> bytes:
    """One ``SentencePiece`` message, as a length-delimited field 1 of the ModelProto:
    piece (1, string), score (2, float), type (3, enum)."""
    raw = text.encode("utf-8")
    body = b"\x0a" + _varint(len(raw)) + raw + b"\x15" + _FLOAT(score) + b"\x18" + _varint(kind)
    return b"\x0a" + _varint(len(body)) + body


def model_proto(pieces: list[tuple[str, float, int]], *, path: str | None = None) -> bytes:
    """A Gemma SentencePiece ``ModelProto`` of ``pieces`` (text, score, type), one per id.

    The trainer and normalizer specs are those of the Gemma models (BPE, byte fallback, the
    identity normalizer, whitespace escaped to ``▁``, no dummy prefix, nothing stripped); the
    special ids are those of the pieces ``<unk>``, ``<bos>``, ``<eos>``, ``<pad>``. Field
    numbers are sentencepiece_model.proto's.
    """
    ids = {"unk": -1, "bos": -1, "eos": -1, "pad": -1}
    for index, (text, _score, kind) in enumerate(pieces):
        if kind == UNKNOWN and text == UNK_PIECE:
            ids["unk"] = index
        elif kind == CONTROL and text in CONTROL_PIECES:
            ids[CONTROL_PIECES[text]] = index
    if ids["unk"] < 0:
        raise TokenizerError(
            f"the vocabulary of {path or 'the tokenizer'} has no {UNK_PIECE} piece, which "
            "SentencePiece needs: is it a Gemma tokenizer?",
            path=path,
        )
    trainer = b"".join(
        [
            _int_field(3, 2),  # model_type: BPE
            _int_field(4, len(pieces)),  # vocab_size
            _float_field(10, 1.0),  # character_coverage
            _int_field(20, 16),  # max_sentencepiece_length
            _int_field(21, 1),  # split_by_unicode_script
            _int_field(22, 1),  # split_by_whitespace
            _int_field(23, 1),  # split_by_number
            _int_field(24, 0),  # treat_whitespace_as_suffix
            _int_field(25, 1),  # split_digits
            _int_field(26, 1),  # allow_whitespace_only_pieces
            _int_field(32, 1),  # vocabulary_output_piece_score
            _int_field(33, 1),  # hard_vocab_limit
            _int_field(35, 1),  # byte_fallback
            _int_field(40, ids["unk"]),
            _int_field(41, ids["bos"]),
            _int_field(42, ids["eos"]),
            _int_field(43, ids["pad"]),
            _bytes_field(45, UNK_PIECE.encode()),
            _bytes_field(46, b"<bos>"),
            _bytes_field(47, b"<eos>"),
            _bytes_field(48, b"<pad>"),
        ]
    )
    normalizer = b"".join(
        [
            _bytes_field(1, b"identity"),
            _bytes_field(2, b""),  # precompiled_charsmap: none
            _int_field(3, 0),  # add_dummy_prefix
            _int_field(4, 0),  # remove_extra_whitespaces
            _int_field(5, 1),  # escape_whitespaces
        ]
    )
    body = bytearray()
    for text, score, kind in pieces:
        raw = text.encode("utf-8")
        if len(raw) < 0x77 and 0 <= kind < 0x80:  # the common case, lengths of one byte each
            body += bytes((0x0A, len(raw) + 9, 0x0A, len(raw))) + raw + b"\x15" + _FLOAT(score) + _SMALL_18[kind]
        else:
            body += _piece(text, score, kind)
    body = bytes(body)
    return body + _bytes_field(2, trainer) + _bytes_field(3, normalizer)


def _restored_type(text: str, kind: int) -> int:
    """A reserved piece's SentencePiece type: UNKNOWN for ``<unk>``, CONTROL only for
    pad/eos/bos, else USER_DEFINED."""
    if kind in (CONTROL, USER_DEFINED, UNKNOWN):
        if text == UNK_PIECE:
            return UNKNOWN
        return CONTROL if text in CONTROL_PIECES else USER_DEFINED
    return kind


# -- tokenizer.json ------------------------------------------------------------------------------


def model_from_tokenizer_json(data: bytes, *, path: str | None = None) -> bytes:
    """The SentencePiece model of a Hugging Face ``tokenizer.json`` made from a Gemma
    ``tokenizer.model`` (BPE with byte fallback, spaces replaced by ``▁``).

    Ids and pieces come from ``model.vocab`` and ``added_tokens``; an added token is a
    reserved piece (CONTROL for pad/eos/bos, else USER_DEFINED, as in Gemma's models; one
    added beyond the vocabulary is CONTROL, so no text becomes it),
    ``<0xXX>`` pieces are BYTE, the model's unk token is UNKNOWN, the rest NORMAL. The
    file has no scores: SentencePiece merges by score, and Gemma's normal pieces score in
    id order (the first highest), which the file's merges must confirm; the rebuilt model
    scores them ``-rank``.
    """
    import json

    where = path or "the tokenizer.json"
    try:
        tree = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenizerError(
            f"{where} is not a tokenizer: it starts like a tokenizer.json but is not valid JSON "
            f"({error}); pass a tokenizer.model, a checkpoint folder, its tokenizer.json or a GGUF file",
            path=path,
        ) from None
    model = tree.get("model") if isinstance(tree, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        found = model.get("type") if isinstance(model, dict) else None
        raise TokenizerError(
            f"{where} is not a Hugging Face BPE tokenizer.json (model type {found!r}); "
            "gemma-turns reads the tokenizer.json of Gemma checkpoints",
            path=path,
        )
    _require_gemma_json(tree, model, where, path)
    pieces: dict[int, str] = {}
    for text, token_id in model["vocab"].items():
        if not isinstance(token_id, int) or token_id in pieces:
            raise TokenizerError(f"{where}: vocabulary id {token_id!r} of {text!r} is not a unique integer", path=path)
        pieces[token_id] = text
    reserved, beyond = set(), set()
    for token in tree.get("added_tokens") or []:
        if not isinstance(token, dict):
            raise TokenizerError(f"{where}: an added token is {_json_brief(token)}, not an object", path=path)
        token_id, text = token.get("id"), token.get("content")
        if token_id not in pieces:
            beyond.add(token_id)
        if pieces.setdefault(token_id, text) != text:
            raise TokenizerError(
                f"{where}: added token {text!r} has id {token_id}, which the vocabulary gives to "
                f"{pieces[token_id]!r}; a tokenizer.json with renamed pieces cannot be rebuilt exactly",
                path=path,
            )
        reserved.add(token_id)
    newline = model["vocab"].get("\n")
    if newline is not None and newline not in reserved:
        # Gemma's reserved pieces ("\n", space and tab runs, markers) are USER_DEFINED:
        # transformers lists them all as added tokens. A file that does not has lost which
        # pieces SentencePiece matches whole, and typing them NORMAL would change ids.
        raise TokenizerError(
            f"{where} does not list Gemma's reserved pieces as added tokens (\"\\n\", id "
            f"{newline}, is not one), so which pieces SentencePiece matches whole is lost: pass "
            "the checkpoint's tokenizer.model instead",
            path=path,
        )
    size = len(pieces)
    if sorted(pieces) != list(range(size)):
        raise TokenizerError(f"{where}: token ids are not 0..{size - 1} without gaps", path=path)
    unk = model.get("unk_token")
    rows = []
    rank = 0
    for token_id in range(size):
        text = pieces[token_id]
        if text == unk:
            kind = UNKNOWN
        elif token_id in beyond:
            # Added after the SentencePiece model (Gemma 3's <image_soft_token>): the model
            # it came from has no such piece, so this one must never match text either.
            kind = CONTROL
        elif token_id in reserved:
            kind = _restored_type(text, CONTROL)
        elif text in BYTE_PIECES:
            kind = BYTE
        else:
            kind = NORMAL
        score = 0.0
        if kind == NORMAL:
            score, rank = float(-rank), rank + 1
        rows.append((text, score, kind))
    _check_merge_order(model.get("merges") or [], rows, where, path)
    return model_proto(rows, path=path)


def _require_gemma_json(tree: dict, model: dict, where: str, path: str | None) -> None:
    """Gemma's settings: byte fallback, spaces to ``▁`` and nothing else, no prefix space."""
    normalizer = tree.get("normalizer")
    replaces_space = normalizer == {"type": "Replace", "pattern": {"String": " "}, "content": SPACE} or (
        isinstance(normalizer, dict)
        and normalizer.get("type") == "Sequence"
        and normalizer.get("normalizers") == [{"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]
    )
    problems = []
    if not model.get("byte_fallback"):
        problems.append("no byte fallback")
    if not replaces_space:
        problems.append(f"normalizer {_json_brief(normalizer)} (Gemma's replaces ' ' with '▁' and nothing else)")
    pre = tree.get("pre_tokenizer")
    if pre is not None and not (isinstance(pre, dict) and pre.get("type") == "Split" and pre.get("pattern") == {"String": " "}):
        problems.append(f"pre-tokenizer {_json_brief(pre)} (Gemma's splits on ' ' only)")
    if problems:
        raise TokenizerError(
            f"{where} is not a Gemma SentencePiece-style tokenizer: {'; '.join(problems)}; "
            "pass the checkpoint's tokenizer.model instead",
            path=path,
        )


def _json_brief(value) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_merge_order(merges: list, rows: list, where: str, path: str | None) -> None:
    """Refuse a file whose merges rank normal pieces other than by id: its scores differ
    from the ``-rank`` the rebuilt model gives, and so might its ids. (A merge of normal
    pieces into a normal piece; transformers writes a piece's merges together, by score.)"""
    import numpy as np

    normal = {text: index for index, (text, _score, kind) in enumerate(rows) if kind == NORMAL}
    pairs = (merge.split(" ", 1) if isinstance(merge, str) else merge for merge in merges)
    made = np.fromiter(
        (normal.get(left + right, -1) if left in normal and right in normal else -1 for left, right in pairs),
        dtype=np.int64,
    )
    made = made[made >= 0]
    behind = np.flatnonzero(made[1:] < np.maximum.accumulate(made)[:-1])
    if behind.size:
        token_id = int(made[behind[0] + 1])
        raise TokenizerError(
            f"{where}: its merges rank {rows[token_id][0]!r} (id {token_id}) after id "
            f"{int(made[: behind[0] + 1].max())}; Gemma's rank pieces in id order, so the "
            "SentencePiece scores cannot be rebuilt exactly: pass the checkpoint's "
            "tokenizer.model instead",
            path=path,
        )


# -- GGUF ----------------------------------------------------------------------------------------


def _from_gguf(path: str) -> tuple[bytes, TokenizerSource]:
    fields = read_gguf_metadata(path)
    proto = model_from_gguf(fields, path=path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return proto, TokenizerSource(
        kind="gguf", path=path, sha256=digest.hexdigest(), model_sha256=hashlib.sha256(proto).hexdigest()
    )


# GGUF value types (ggml's gguf.h / the gguf package's GGUFValueType): scalars by struct code.
GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
GGUF_STRING, GGUF_ARRAY = 8, 9


def read_gguf_metadata(path: str) -> dict:
    """The key-value metadata of a GGUF file (version 2 or 3, little-endian), as Python
    values: strings as ``str``, arrays of numbers as numpy arrays, arrays of strings as
    lists of ``bytes``. Only the header is read (the file is mapped, its tensors never
    touched), so a GGUF with gigabytes of weights costs the same as a vocabulary-only one.

    The format is ggml's ``docs/gguf.md``; the ``gguf`` package's GGUFReader reads the same
    values (the tests compare them) but builds an object per array element, tens of seconds
    for a 262,144-token vocabulary.
    """
    import mmap

    import numpy as np

    with open(path, "rb") as handle:
        try:
            view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file
            view = b""
    buffer = memoryview(view)
    offset = 0

    def take(code: str):
        nonlocal offset
        (value,) = struct.unpack_from("<" + code, buffer, offset)
        offset += struct.calcsize(code)
        return value

    def string() -> bytes:
        nonlocal offset
        size = take("Q")
        if offset + size > len(buffer):
            raise struct.error("string past the end of the file")
        value = bytes(buffer[offset : offset + size])
        offset += size
        return value

    def value(kind: int):
        nonlocal offset
        if kind in GGUF_SCALARS:
            return take(GGUF_SCALARS[kind])
        if kind == GGUF_STRING:
            return string().decode("utf-8", errors="replace")
        if kind != GGUF_ARRAY:
            raise ValueError(f"unknown value type {kind}")
        item, count = take("I"), take("Q")
        if item == GGUF_STRING:
            return [string() for _ in range(count)]
        if item in GGUF_SCALARS:
            dtype = np.dtype("<" + GGUF_SCALARS[item])
            array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).copy()
            offset += dtype.itemsize * count
            return array
        return [value(item) for _ in range(count)]  # arrays of arrays: rare, never the vocabulary

    try:
        if bytes(buffer[:4]) != GGUF_MAGIC:
            raise ValueError("no GGUF magic")
        offset = 4
        version = take("I")
        if version not in (2, 3):
            raise ValueError(
                f"GGUF version {version}" + (" (a big-endian file?)" if version > 0xFFFF else "")
                + "; versions 2 and 3 are read"
            )
        _tensors, count = take("Q"), take("Q")
        fields = {}
        for _ in range(count):
            key = string().decode("utf-8", errors="replace")
            fields[key] = value(take("I"))
        return fields
    except (struct.error, ValueError) as error:
        raise TokenizerError(f"{path!r} is not a readable GGUF file ({error})", path=path) from None
    finally:
        del buffer
        if isinstance(view, mmap.mmap):
            try:
                view.close()
            except BufferError:  # a view still held by a traceback: the collector closes it
                pass


def model_from_gguf(fields: dict, *, path: str | None = None) -> bytes:
    """The SentencePiece model of a GGUF's vocabulary (``fields``: its metadata, as
    :func:`read_gguf_metadata` gives it), as llama.cpp's ``convert_hf_to_gguf.py`` writes a
    Gemma ``tokenizer.model`` (``tokenizer.ggml.model`` ``"llama"``: tokens, scores and token
    types by id).

    The converter types reserved pieces CONTROL or USER_DEFINED by its own rules and writes
    the ``▁`` of a user-defined piece as a space; both are undone here (CONTROL only for
    pad/eos/bos, as in Gemma's models). Normal pieces keep their scores.
    """
    where = path or "the GGUF file"
    tokenizer_model = fields.get("tokenizer.ggml.model")
    if tokenizer_model != "llama":
        found = "no tokenizer.ggml.model" if tokenizer_model is None else f"tokenizer model {tokenizer_model!r}"
        raise TokenizerError(
            f"{where} has {found}; gemma-turns reads GGUF files whose tokenizer is a SentencePiece "
            "vocabulary ('llama'), as llama.cpp writes Gemma checkpoints: pass the checkpoint's "
            "tokenizer.model instead",
            path=path,
        )
    if fields.get("tokenizer.ggml.add_space_prefix") is True:
        raise TokenizerError(
            f"{where} asks for a space prefix (tokenizer.ggml.add_space_prefix true); Gemma's "
            "tokenizer adds none, so this is not a Gemma vocabulary",
            path=path,
        )
    arrays = []
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        if key not in fields:
            raise TokenizerError(f"{where} has no {key}: it carries no SentencePiece vocabulary", path=path)
        arrays.append(fields[key])
    tokens, scores, types = arrays
    if not (isinstance(tokens, list) and hasattr(scores, "tolist") and hasattr(types, "tolist")):
        raise TokenizerError(
            f"{where}: expected an array of strings (tokens) and arrays of numbers (scores, "
            "token types)",
            path=path,
        )
    if not len(tokens) == len(scores) == len(types):
        raise TokenizerError(
            f"{where}: {len(tokens)} tokens, {len(scores)} scores and {len(types)} token types; "
            "expected one of each per token",
            path=path,
        )
    rows = []
    for token_id, (raw, score, gguf_type) in enumerate(zip(tokens, scores.tolist(), types.tolist(), strict=True)):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TokenizerError(f"{where}: token {token_id} ({raw!r}) is not UTF-8 text", path=path) from None
        kind = GGUF_TYPES.get(gguf_type)
        if kind is None:
            raise TokenizerError(
                f"{where}: token {token_id} ({text!r}) has token type {gguf_type}, not one of "
                "llama.cpp's 1..6",
                path=path,
            )
        if text == "\n" and kind == NORMAL:
            # Gemma's "\n" is USER_DEFINED, as are its other reserved pieces; the converter
            # types them from the checkpoint's tokenizer_config.json. Without it they are
            # NORMAL, and which pieces SentencePiece matches whole is lost.
            raise TokenizerError(
                f"{where}: token {token_id} (\"\\n\") is typed NORMAL, so the file does not say "
                "which pieces are reserved (its converter had no tokenizer_config.json?): pass "
                "the checkpoint's tokenizer.model instead",
                path=path,
            )
        kind = _restored_type(text, kind)
        if kind == USER_DEFINED:
            text = text.replace(" ", SPACE)
        rows.append((text, score, kind))
    return model_proto(rows, path=path)
