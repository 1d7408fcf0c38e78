"""Tokenizers from what people download: a checkpoint folder, a tokenizer.json, a GGUF.

Each is made here from a ``tokenizer.model`` by the tools that make them in the wild (a GGUF
the way llama.cpp's convert_hf_to_gguf.py writes a Gemma vocabulary, with the ``gguf``
package; a tokenizer.json by transformers' own conversion), loaded by gemma-turns, and
compared with the ``tokenizer.model`` it came from: every piece's text and type, every
piece's text encoded, corpus texts, and whole conversations. The fixture models run always;
the real Gemma 3 / Gemma 4 tokenizers when GEMMA_TOKENIZER / GEMMA4_TOKENIZER name them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import struct
import sys
from pathlib import Path

import pytest

from conftest import FIXTURE4_MODEL, FIXTURE_MODEL, SAMPLE, SAMPLE4
from gemma_turns import GemmaTokenizer
from gemma_turns.errors import TokenizerError
from gemma_turns.tokenizer_files import model_proto, read_gguf_metadata, read_tokenizer

CORPUS = Path("/work/shared/corpus")
# llama.cpp's does_token_look_special (convert_hf_to_gguf.py), for Gemma's pieces.
LOOK_SPECIAL = ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
# The pieces a Gemma checkpoint's tokenizer_config.json marks special besides the control ones.
SPECIAL_MARKERS = {"<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>"}


# -- makers: the files as the tools in the wild write them -------------------------------------


def write_gguf(model_path, out_path, *, with_config: bool = True) -> Path:
    """A vocabulary-only GGUF of ``model_path`` as convert_hf_to_gguf.py writes Gemma's:
    _create_vocab_sentencepiece (SentencePiece types, user-defined pieces left NORMAL), then
    the checkpoint's added_tokens_decoder (every reserved piece; special ones and those that
    look special become CONTROL, the others USER_DEFINED with "▁" written as a space, score
    -1000), tokenizer model "llama", no space prefix."""
    gguf = pytest.importorskip("gguf")
    pb = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")  # needs protobuf
    proto = pb.ModelProto()
    proto.ParseFromString(Path(model_path).read_bytes())
    # What SentencePieceProcessor's IsUnknown/IsControl/IsUnused/IsByte tell the converter:
    # a user-defined piece (4) is none of them, so NORMAL.
    as_seen = {1: gguf.TokenType.NORMAL, 2: gguf.TokenType.UNKNOWN, 3: gguf.TokenType.CONTROL,
               4: gguf.TokenType.NORMAL, 5: gguf.TokenType.UNUSED, 6: gguf.TokenType.BYTE}
    tokens = [p.piece.encode() for p in proto.pieces]
    scores = [p.score for p in proto.pieces]
    types = [as_seen[p.type] for p in proto.pieces]
    for i, (special, piece) in (added_tokens_decoder(proto) if with_config else {}).items():
        if special or piece in LOOK_SPECIAL or piece.startswith("<unused") or (
            piece.startswith("<|") and piece.endswith("|>")
        ):
            types[i] = gguf.TokenType.CONTROL
        else:
            piece = piece.replace("\u2581", " ")
            types[i] = gguf.TokenType.USER_DEFINED
        scores[i] = -1000.0
        tokens[i] = piece.encode()
    ids = {p.piece: i for i, p in enumerate(proto.pieces) if p.type in (2, 3)}
    writer = gguf.GGUFWriter(os.fspath(out_path), "gemma3")
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(ids["<bos>"])
    writer.add_eos_token_id(ids["<eos>"])
    writer.add_unk_token_id(ids["<unk>"])
    writer.add_pad_token_id(ids["<pad>"])
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return Path(out_path)


def added_tokens_decoder(proto) -> dict[int, tuple[bool, str]]:
    """What a Gemma checkpoint's tokenizer_config.json lists: every reserved piece (CONTROL,
    UNKNOWN, USER_DEFINED) by id, with its "special" flag."""
    return {
        i: (p.type in (2, 3) or p.piece in SPECIAL_MARKERS or p.piece.startswith("<|") or p.piece.endswith("|>"), p.piece)
        for i, p in enumerate(proto.pieces)
        if p.type in (2, 3, 4)
    }


def write_tokenizer_json(model_path, folder) -> Path:
    """transformers' tokenizer.json of ``model_path``: what save_pretrained writes for a
    checkpoint that had only the tokenizer.model (its conversion, offline)."""
    transformers = pytest.importorskip("transformers")
    source = Path(folder) / "slow"
    source.mkdir(parents=True)
    shutil.copy(model_path, source / "tokenizer.model")
    tokenizer = transformers.GemmaTokenizer.from_pretrained(os.fspath(source))
    tokenizer.save_pretrained(os.fspath(Path(folder) / "fast"))
    return Path(folder) / "fast" / "tokenizer.json"


# -- the comparison ------------------------------------------------------------------------------


def corpus_texts(per_file: int = 8) -> list[str]:
    texts = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            for _, line in zip(range(per_file), handle, strict=False):
                record = json.loads(line)
                for message in record.get("messages", []):
                    if isinstance(message.get("content"), str):
                        texts.append(message["content"])
    return texts


HAND_TEXTS = [
    "Hello, world!", "  two spaces", "\t\ttabs\n\n\nnewlines", "<table><tr><td>1</td></tr></table>",
    "<start_of_turn>user", "<|turn>model\n", "<mask> [multimodal] <unused5>", "<bos><eos><pad><unk>",
    "emoji 🦙🧪 and bytes \x00\x7f", "数字 12345 और हिंदी", "def f(x):\n    return x ** 2\n",
]


TYPE_CHECKS = ("is_control", "is_unknown", "is_byte", "is_unused")


@functools.lru_cache(maxsize=4)
def reference(original_path) -> dict:
    """What the ``tokenizer.model`` gives, computed once per model (a whole-vocabulary sweep
    of a real tokenizer takes seconds)."""
    original = GemmaTokenizer.load(original_path)
    a = original.processor
    every = list(range(a.get_piece_size()))
    pieces = a.decode([[i] for i in every])
    texts = HAND_TEXTS + corpus_texts()
    return {
        "tokenizer": original,
        "pieces": a.id_to_piece(every),
        "types": {check: [getattr(a, check)(i) for i in every] for check in TYPE_CHECKS},
        "piece_texts": pieces,
        "piece_ids": a.encode(pieces),
        "texts": texts,
        "text_ids": a.encode(texts),
    }


def assert_same_ids(original_path, loaded: GemmaTokenizer, conversations) -> dict:
    """Pieces, types, every piece's text, texts and conversations encode alike; the counts."""
    expected = reference(os.fspath(original_path))
    original, b = expected["tokenizer"], loaded.processor
    every = list(range(b.get_piece_size()))
    assert b.id_to_piece(every) == expected["pieces"]
    for check in TYPE_CHECKS:
        assert [getattr(b, check)(i) for i in every] == expected["types"][check], check
    # user-defined pieces stay whole, normal ones merge alike
    assert b.encode(expected["piece_texts"]) == expected["piece_ids"]
    assert b.encode(expected["texts"]) == expected["text_ids"]
    assert loaded.specials == original.specials and loaded.dialect == original.dialect
    assert loaded.reserved_ids == original.reserved_ids
    for conversation in conversations:
        assert_same_chat(original, loaded, conversation)
    return {"pieces": len(every), "texts": len(expected["texts"]), "conversations": len(conversations)}


def assert_same_chat(original, loaded, conversation) -> None:
    """One conversation: the same ids from both, or the same refusal."""
    try:
        expected = original.encode_chat(conversation, mode="inference").ids.tolist()
    except ValueError as error:
        with pytest.raises(type(error)):
            loaded.encode_chat(conversation, mode="inference")
        return
    assert loaded.encode_chat(conversation, mode="inference").ids.tolist() == expected


def conversations(path, limit: int = 20) -> list:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line, _ in zip(handle, range(limit), strict=False)]


FIXTURES = {"gemma3": (FIXTURE_MODEL, SAMPLE), "gemma4": (FIXTURE4_MODEL, SAMPLE4)}


# -- the fixture models --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_gguf_gives_the_ids_of_its_tokenizer_model(name, tmp_path):
    model, sample = FIXTURES[name]
    gguf_path = write_gguf(model, tmp_path / "vocab.gguf")
    loaded = GemmaTokenizer.load(gguf_path)
    assert_same_ids(model, loaded, conversations(sample))
    assert (loaded.kind, loaded.path) == ("gguf", os.fspath(gguf_path))
    assert loaded.sha256 == hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    assert loaded.model_sha256 == hashlib.sha256(loaded.processor.serialized_model_proto()).hexdigest()


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_tokenizer_json_gives_the_ids_of_its_tokenizer_model(name, tmp_path):
    model, sample = FIXTURES[name]
    json_path = write_tokenizer_json(model, tmp_path)
    loaded = GemmaTokenizer.load(json_path)
    assert_same_ids(model, loaded, conversations(sample))
    assert loaded.kind == "tokenizer.json"
    assert loaded.sha256 == hashlib.sha256(json_path.read_bytes()).hexdigest() != loaded.model_sha256


def test_checkpoint_folder_prefers_tokenizer_model_then_tokenizer_json(tmp_path):
    json_path = write_tokenizer_json(FIXTURE_MODEL, tmp_path)
    folder = json_path.parent  # a checkpoint with only tokenizer.json
    assert GemmaTokenizer.load(folder).kind == "tokenizer.json"
    assert GemmaTokenizer.load(folder).path == os.fspath(json_path)
    shutil.copy(FIXTURE_MODEL, folder / "tokenizer.model")
    loaded = GemmaTokenizer.load(folder)
    assert (loaded.kind, loaded.path) == ("sentencepiece", os.fspath(folder / "tokenizer.model"))
    assert loaded.sha256 == loaded.model_sha256 == hashlib.sha256(FIXTURE_MODEL.read_bytes()).hexdigest()


def test_a_tokenizer_model_loads_as_before(fixture_tokenizer):
    data = FIXTURE_MODEL.read_bytes()
    proto, source = read_tokenizer(FIXTURE_MODEL)
    assert proto == data and source.kind == "sentencepiece"
    assert source.sha256 == source.model_sha256 == fixture_tokenizer.sha256 == fixture_tokenizer.model_sha256
    assert fixture_tokenizer.kind == "sentencepiece" and fixture_tokenizer.path == os.fspath(FIXTURE_MODEL)


def test_written_model_proto_has_gemma_specs():
    """The hand-written ModelProto, parsed by protobuf: Gemma's trainer and normalizer specs
    (those of the real model, checked against it when GEMMA_TOKENIZER is set)."""
    pb = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    rows = [("<pad>", 0.0, 3), ("<eos>", 0.0, 3), ("<bos>", 0.0, 3), ("<unk>", 0.0, 2), ("▁▁", 0.0, 4), ("ab", -1.5, 1)]
    proto = pb.ModelProto()
    proto.ParseFromString(model_proto(rows))
    assert [(p.piece, p.score, p.type) for p in proto.pieces] == rows
    trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
    assert (trainer.model_type, trainer.vocab_size, trainer.byte_fallback) == (2, 6, True)
    assert (trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id) == (3, 2, 1, 0)
    assert (normalizer.name, normalizer.add_dummy_prefix, normalizer.remove_extra_whitespaces) == ("identity", False, False)
    assert normalizer.escape_whitespaces and normalizer.precompiled_charsmap == b""
    real = os.environ.get("GEMMA_TOKENIZER")
    if real:
        original = pb.ModelProto()
        original.ParseFromString(Path(real).read_bytes())
        original.trainer_spec.ClearField("model_prefix")
        trainer.vocab_size = original.trainer_spec.vocab_size
        assert trainer == original.trainer_spec
        assert normalizer == original.normalizer_spec


# -- refusals ------------------------------------------------------------------------------------


def test_folder_without_tokenizer_names_what_was_looked_for(tmp_path):
    with pytest.raises(TokenizerError, match=r"without tokenizer\.model or tokenizer\.json"):
        GemmaTokenizer.load(tmp_path)


def test_gguf_with_another_tokenizer_model_is_refused(tmp_path):
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(os.fspath(tmp_path / "gpt2.gguf"), "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([b"a", b"b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(TokenizerError, match=r"tokenizer model 'gpt2'.*SentencePiece vocabulary \('llama'\)"):
        GemmaTokenizer.load(tmp_path / "gpt2.gguf")


def test_gguf_with_a_space_prefix_is_refused(tmp_path):
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(os.fspath(tmp_path / "llama.gguf"), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_add_space_prefix(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(TokenizerError, match="add_space_prefix"):
        GemmaTokenizer.load(tmp_path / "llama.gguf")


def test_gguf_metadata_reads_as_the_gguf_package_reads_it(tmp_path):
    """Parity with the reference reader (gguf.GGUFReader) on a Gemma vocabulary GGUF."""
    gguf = pytest.importorskip("gguf")
    path = write_gguf(FIXTURE4_MODEL, tmp_path / "vocab.gguf")
    ours = read_gguf_metadata(os.fspath(path))
    fields = gguf.GGUFReader(path).fields
    reference = {name: field.contents() for name, field in fields.items() if not name.startswith("GGUF.")}
    assert set(ours) == set(reference) and "tokenizer.ggml.tokens" in ours
    for name, value in ours.items():
        if isinstance(value, list):
            value = [item.decode() for item in value]
        elif hasattr(value, "tolist"):
            value = value.tolist()
        assert value == reference[name], name


def test_gguf_loads_without_the_gguf_package(tmp_path, monkeypatch):
    path = write_gguf(FIXTURE_MODEL, tmp_path / "vocab.gguf")
    monkeypatch.setitem(sys.modules, "gguf", None)
    assert GemmaTokenizer.load(path).kind == "gguf"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GGUF" + struct.pack("<I", 1), "GGUF version 1"),
        (b"GGUF" + struct.pack(">I", 3), "big-endian"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 99), "past the end|unpack"),
    ],
)
def test_unreadable_gguf_is_a_tokenizer_error(tmp_path, data, message):
    path = tmp_path / "broken.gguf"
    path.write_bytes(data)
    with pytest.raises(TokenizerError, match=f"not a readable GGUF file.*({message})"):
        GemmaTokenizer.load(path)


@pytest.fixture(scope="module")
def fixture_json(tmp_path_factory) -> dict:
    return json.loads(write_tokenizer_json(FIXTURE_MODEL, tmp_path_factory.mktemp("json")).read_text())


def edited(tree: dict, path, edit) -> bytes:
    tree = json.loads(json.dumps(tree))
    edit(tree)
    path.write_text(json.dumps(tree))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["model"].update(type="Unigram"), r"not a Hugging Face BPE tokenizer\.json \(model type 'Unigram'\)"),
        (lambda t: t["model"].update(byte_fallback=False), "no byte fallback"),
        (lambda t: t.update(normalizer={"type": "NFKC"}), "normalizer"),
        (lambda t: t.update(pre_tokenizer={"type": "ByteLevel"}), "pre-tokenizer"),
        (lambda t: t["model"]["merges"].reverse(), "merges rank"),
        (lambda t: t["added_tokens"].append({"id": 20, "content": "<nope>"}), "renamed pieces"),
        (lambda t: t.update(added_tokens=[a for a in t["added_tokens"] if a["special"]]), "reserved pieces as added"),
    ],
)
def test_tokenizer_json_that_cannot_be_rebuilt_exactly_is_refused(fixture_json, tmp_path, edit, message):
    path = edited(fixture_json, tmp_path / "tokenizer.json", edit)
    with pytest.raises(TokenizerError, match=message):
        GemmaTokenizer.load(path)


def test_tokenizer_json_token_added_beyond_the_model_never_matches_text(fixture_json, tmp_path):
    """Gemma 3's tokenizer.json adds <image_soft_token> after the SentencePiece vocabulary:
    it gets its id, and text that spells it still encodes as the tokenizer.model encodes it."""
    size = len(fixture_json["model"]["vocab"])
    extra = {"id": size, "content": "<image_soft_token>", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True}
    path = edited(fixture_json, tmp_path / "tokenizer.json", lambda t: t["added_tokens"].append(extra))
    loaded, original = GemmaTokenizer.load(path), GemmaTokenizer.load(FIXTURE_MODEL)
    assert loaded.vocab_size == size + 1 and loaded.processor.piece_to_id("<image_soft_token>") == size
    text = "see <image_soft_token> here"
    assert loaded.processor.encode(text) == original.processor.encode(text)
    assert size not in loaded.processor.encode(text)


def test_invalid_json_is_a_tokenizer_error(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text("{ not json")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        GemmaTokenizer.load(path)


def test_cli_encodes_from_a_gguf_and_records_it_in_the_manifest(tmp_path, capsys):
    from gemma_turns.cli import main

    gguf_path = write_gguf(FIXTURE_MODEL, tmp_path / "vocab.gguf")
    out = tmp_path / "out.npz"
    assert main(["encode", os.fspath(SAMPLE), "--tokenizer", os.fspath(gguf_path), "--mode", "inference", "-o", os.fspath(out)]) == 0
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())["tokenizer"]
    assert manifest["kind"] == "gguf" and manifest["path"] == os.fspath(gguf_path)
    assert manifest["sha256"] == hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    assert manifest["model_sha256"] != manifest["sha256"]
    assert main(["encode", os.fspath(SAMPLE), "--tokenizer", os.fspath(tmp_path), "--mode", "inference", "-o", os.fspath(out)]) == 2
    assert "without tokenizer.model or tokenizer.json" in capsys.readouterr().err


# -- the real tokenizers -------------------------------------------------------------------------

REAL = {"gemma3": ("GEMMA_TOKENIZER", SAMPLE), "gemma4": ("GEMMA4_TOKENIZER", SAMPLE4)}


def real_model(name) -> str:
    variable = REAL[name][0]
    path = os.environ.get(variable)
    if not path:
        pytest.skip(f"{variable} is not set: the real {name} tokenizer tier is skipped")
    return path


@pytest.mark.real_tokenizer
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_gguf_gives_the_ids_of_its_tokenizer_model(name, tmp_path):
    model = real_model(name)
    loaded = GemmaTokenizer.load(write_gguf(model, tmp_path / "vocab.gguf"))
    counts = assert_same_ids(model, loaded, conversations(REAL[name][1]))
    assert counts["pieces"] == 262144


@pytest.mark.real_tokenizer
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_tokenizer_json_gives_the_ids_of_its_tokenizer_model(name, tmp_path):
    model = real_model(name)
    loaded = GemmaTokenizer.load(write_tokenizer_json(model, tmp_path))
    counts = assert_same_ids(model, loaded, conversations(REAL[name][1]))
    assert counts["pieces"] == 262144


def test_the_readme_gguf_example_runs(tmp_path):
    """The README's interoperability example, on a GGUF of the fixture tokenizer."""
    import re

    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Tokenizers from a checkpoint folder, tokenizer.json or GGUF") :]
    example = re.search(r"```python\n(.+?)\n```", section, flags=re.S).group(1)
    gguf_path = write_gguf(FIXTURE_MODEL, tmp_path / "vocab.gguf")
    namespace = {}
    exec(example.replace("gemma-3-4b-it-Q4_K_M.gguf", os.fspath(gguf_path)), namespace)
    assert namespace["tok"].kind == "gguf"
    expected = GemmaTokenizer.load(FIXTURE_MODEL).encode_chat(
        [{"role": "user", "content": "Who are you?"}], mode="inference"
    )
    assert namespace["ids"].tolist() == expected.ids.tolist()


def test_gguf_without_unk_names_the_file(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(os.fspath(path), "gemma3")
    writer.add_tokenizer_model("llama")
    writer.add_token_list([b"<pad>", b"<eos>", b"<bos>", b"a"])
    writer.add_token_scores([0.0, 0.0, 0.0, -1.0])
    writer.add_token_types([3, 3, 3, 1])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(TokenizerError, match=r"tiny\.gguf has no <unk> piece"):
        GemmaTokenizer.load(path)


def test_gguf_that_lost_the_reserved_pieces_is_refused(tmp_path):
    """Converted without the checkpoint's tokenizer_config.json, "\\n", the space runs and
    the markers are NORMAL pieces: SentencePiece would merge them instead of matching them."""
    path = write_gguf(FIXTURE_MODEL, tmp_path / "vocab.gguf", with_config=False)
    with pytest.raises(TokenizerError, match=r'token 16 \("\\n"\) is typed NORMAL'):
        GemmaTokenizer.load(path)


def test_a_jsonl_file_given_as_the_tokenizer_is_named_for_what_it_is_not(tmp_path):
    """A data file passed as --tokenizer starts like a tokenizer.json: say it is no
    tokenizer, and what to pass instead."""
    from gemma_turns.errors import TokenizerError

    data = tmp_path / "data.jsonl"
    data.write_bytes(SAMPLE.read_bytes())
    with pytest.raises(TokenizerError) as caught:
        GemmaTokenizer.load(data)
    assert str(data) in str(caught.value)
    assert "is not a tokenizer" in str(caught.value) and "tokenizer.model" in str(caught.value)
