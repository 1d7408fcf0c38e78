"""Turn the formatter's runs into token ids and a loss mask, through a SentencePiece model.

BOS and the turn and image markers are placed as integers looked up in the model; only
text goes through SentencePiece, so no text (``[BOS]``, ``<bos>``) can ever become BOS.
Text between two markers is encoded as one string, as a plain ``encode`` of the whole turn
text would see it, so for content without reserved text

    encode_chat(messages).ids == [bos] + sp.encode(format_chat(messages))

which the tests check on the fixture and on the real Gemma 3 tokenizer. Ids and loss mask
are built together in one pass, so their lengths cannot diverge.

This is the only module that imports sentencepiece.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cached_property, partial
from itertools import islice
from operator import itemgetter
from typing import Literal

import numpy as np
import sentencepiece as spm

from . import chat_format
from .chat_format import Dialect, Marker
from .conversation import check_text, from_record, with_tools
from .encoding import ID_DTYPE, MASK_DTYPE, Encoding
from .errors import ConversationError, ReservedTokenError, TokenizerError
from .formatter import TrainOn, content_stretches, format_chat, render_runs, wants_generation_prompt
from .options import EncodeOptions, options_of
from .reserved import POLICIES, ReservedPolicy, ReservedText
from .specials import SpecialTokens, find_dialect, find_reserved_pieces
from .whole_text import Splitter, WholeText

__all__ = ["ChatMode", "Encoding", "GemmaTokenizer"]

ChatMode = Literal["training", "inference"]
# Records per SentencePiece call when a batch is pipelined: big enough to keep its threads
# busy, small enough that formatting the next chunk overlaps with encoding this one.
PIPELINE_CHUNK = 1024
# Up to this many texts are encoded one SentencePiece call each: its batch call starts a
# thread pool, which costs more than a few short encodes (a single conversation).
FEW_TEXTS = 16
# One conversation (encode_chat) goes segment by segment when one of its texts this long was
# seen before: from there the segment cache saves more than the segments cost over one string.
WORTH_CACHING = 512
# Ids the segment cache holds at most (4 bytes each; each entry counts ENTRY_IDS more):
# recurring system prompts, tool declarations and instructions are encoded once. 0 turns the
# cache off; under 4 * (ENTRY_IDS + 1) it keeps nothing across batches.
SEGMENT_CACHE_IDS = 1 << 22
# What one cached text costs beyond its ids (its dict slot, the text, the array: about 250
# bytes), counted as ids, so that the capacity bounds the memory of many short texts too.
ENTRY_IDS = 64


class GemmaTokenizer:
    """A Gemma SentencePiece model with its chat format (:attr:`dialect`) and ids resolved.

    Load it with :meth:`load` (a ``tokenizer.model``, a checkpoint folder, a ``tokenizer.json``
    or a GGUF file) or :meth:`from_bytes`. Every special id comes from the model: see
    :attr:`specials`. The dialect is found from the model's pieces; pass ``dialect=`` (a name
    or a :class:`~gemma_turns.chat_format.Dialect`) for a model whose pieces fit several.
    """

    def __init__(
        self,
        model_proto: bytes,
        *,
        path: str | None = None,
        dialect: str | Dialect | None = None,
        segment_cache: int = SEGMENT_CACHE_IDS,
        source=None,
    ):
        # What was loaded (tokenizer_files.TokenizerSource) when it was not the model itself:
        # path and sha256 are then the file read (a GGUF, a tokenizer.json), model_sha256
        # that of the SentencePiece model rebuilt from it.
        self.model_sha256 = hashlib.sha256(model_proto).hexdigest()
        self.kind = source.kind if source is not None else "sentencepiece"
        self.path = source.path if source is not None else path
        self.sha256 = source.sha256 if source is not None else self.model_sha256
        path = self.path
        self.processor = spm.SentencePieceProcessor()
        try:
            self.processor.LoadFromSerializedProto(model_proto)
        except Exception as error:  # sentencepiece raises RuntimeError/OSError with C++ text
            raise TokenizerError(
                f"{path or 'the model'} is not a SentencePiece model ({error}); pass the "
                "tokenizer.model file of a Gemma checkpoint",
                path=path,
            ) from None
        self.vocab_size = self.processor.get_piece_size()
        if dialect is None:
            self.dialect = find_dialect(self.processor, path=path)
        else:
            try:
                self.dialect = chat_format.get(dialect)
            except ValueError as error:
                raise TokenizerError(str(error), path=path) from None
        self.specials = SpecialTokens.from_processor(self.processor, self.dialect, path=path)
        self.reserved_ids = find_reserved_pieces(self.processor, model_proto)
        self.reserved = ReservedText(self.reserved_ids)
        # Ids placed without SentencePiece (markers, and text every conversation repeats) sit
        # in a table ahead of each batch's encoded texts: a plan refers to either by index.
        specials = self.specials
        constants = [[specials.bos], [specials.eos]]
        self._bos_index, self._eos_index = 0, 1
        self._marker_index = {}
        for marker, token_id in specials.markers.items():
            self._marker_index[marker] = len(constants)
            constants.append([token_id])
        self._text_index = {}
        d = self.dialect
        for text in {d.turn_end, d.header_end, d.generation_role + d.header_end}:
            self._text_index[text] = len(constants)
            constants.append(self.processor.encode(text))
        self._constant_ids = [np.array(ids, dtype=ID_DTYPE) for ids in constants]
        self._constant_texts = {text: constants[index] for text, index in self._text_index.items()}
        self._splitter = Splitter(specials.bos, specials.markers.values(), self.vocab_size)
        self._segments = SegmentCache(segment_cache)

    @classmethod
    def load(cls, path: str | os.PathLike, *, dialect: str | Dialect | None = None, **options) -> GemmaTokenizer:
        """Load a SentencePiece ``tokenizer.model`` file, a checkpoint folder, a
        ``tokenizer.json`` or a GGUF file (see tokenizer_files; ``segment_cache``: see __init__)."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as handle:
                data = handle.read(4)
                if data != b"GGUF":  # a GGUF may hold gigabytes of weights: read it elsewhere
                    data += handle.read()
        except IsADirectoryError:
            data = b""  # a checkpoint folder
        except OSError as error:
            raise TokenizerError(
                f"cannot read the tokenizer model {path!r}: {error.strerror}", path=path
            ) from None
        if data == b"" or data == b"GGUF" or data[:1] in b"{ \t\r":  # folder, GGUF, JSON
            from .tokenizer_files import read_tokenizer

            data, source = read_tokenizer(path)
            return cls(data, dialect=dialect, source=source, **options)
        return cls(data, path=path, dialect=dialect, **options)

    @classmethod
    def from_bytes(cls, model_proto: bytes, *, dialect: str | Dialect | None = None, **options) -> GemmaTokenizer:
        return cls(model_proto, dialect=dialect, **options)

    def __reduce__(self):
        """Pickle as the model bytes, path, dialect and cache size (the SentencePiece processor
        itself does not pickle): a copy loads the same model again, with an empty segment
        cache, so a tokenizer crosses into worker processes (``datasets.map(num_proc=N)``,
        ``multiprocessing``)."""
        registered = chat_format.DIALECTS.get(self.dialect.name) is self.dialect
        dialect = self.dialect.name if registered else self.dialect
        state = (self.processor.serialized_model_proto(), self.path, dialect, self._segments.capacity)
        return (_unpickle_tokenizer, state)

    def __repr__(self) -> str:
        return (
            f"GemmaTokenizer(path={self.path!r}, dialect={self.dialect.name!r}, "
            f"vocab_size={self.vocab_size}, {self.specials})"
        )

    def format_chat(
        self, messages: object, *, tools: object = None, options: EncodeOptions | None = None, **keywords
    ) -> str:
        """The turn text of ``messages`` in this model's dialect (no BOS: it is a token).

        Options as for :meth:`encode_chat` (``mode`` defaults to inference here); markers
        are spelled as their pieces, so the text shows exactly what the ids encode.
        """
        return format_chat(messages, dialect=self.dialect, tools=tools, options=options, **keywords)

    # -- chat ---------------------------------------------------------------------------

    def encode_chat(
        self, messages: object, *, tools: object = None, options: EncodeOptions | None = None, **keywords
    ) -> Encoding:
        """Encode one conversation: BOS, then its turns, ids and loss mask together.

        ``messages``: a list of ``{"role", "content"}`` messages, or a record
        ``{"messages": [...], "tools": [...], "chat_template_kwargs": {...}}`` (HF/TRL).
        ``tools``: function schemas (Gemma 4), for a list of messages. Options, as keywords
        or one :class:`~gemma_turns.options.EncodeOptions`:

        ``mode="inference"``: ends with the generation prompt when ``add_generation_prompt``
        is True (the default unless the conversation ends with the model's message).
        ``mode="training"``: the conversation must end with a model message and have something
        to learn; ``train_on="last"`` trains only the last model turn, ``train_newline`` also
        trains the ``\\n`` after each trained closing marker.
        ``reserved``: what to do with content that spells a reserved token (see reserved.py).
        Gemma 4: ``enable_thinking``, ``preserve_thinking``, ``checkpoint``,
        ``earlier_reasoning`` (see EncodeOptions).
        """
        options = options_of(options, keywords)
        record = with_tools(messages, tools)
        conversation, runs = self._chat_runs(record, options, self._checkpoint(options))
        whole = self._whole_plan(conversation, runs, options.reserved)
        if whole is not None:
            encoding = self._splitter.split(whole, self.processor.encode(whole.text))
            if encoding is not None:
                return encoding
        return self._encode_by_segments(conversation, runs, options.reserved)

    def _encode_by_segments(self, conversation, runs, reserved) -> Encoding:
        texts = _Texts()
        plan = self._plan_runs(conversation, runs, texts, reserved)
        (result,) = self._build([plan], self._encoded(texts))
        return result

    def encode_chat_batch(
        self,
        conversations: Sequence[object],
        *,
        options: EncodeOptions | None = None,
        num_threads: int | None = None,
        **keywords,
    ) -> list[Encoding]:
        """Encode many conversations (lists of messages, or records), ``num_threads``
        (default: all cores) encoding at once. Options as for :meth:`encode_chat`.

        Raises the first ConversationError, with ``record`` set to the conversation's index;
        use :meth:`try_encode_chat_batch` to get every error instead.
        """
        return self._encode_chats(conversations, options_of(options, keywords), num_threads, collect_errors=False)

    def try_encode_chat_batch(
        self,
        conversations: Sequence[object],
        *,
        options: EncodeOptions | None = None,
        num_threads: int | None = None,
        **keywords,
    ) -> list[Encoding | ConversationError]:
        """Like :meth:`encode_chat_batch`, but a conversation that cannot be encoded gives its
        ConversationError (``record`` set to its index) in its place, so nothing is lost."""
        return self._encode_chats(conversations, options_of(options, keywords), num_threads, collect_errors=True)

    def try_encode_chat_batches(
        self,
        batches: Iterable[Sequence[object]],
        *,
        options: EncodeOptions | None = None,
        num_threads: int | None = None,
        **keywords,
    ) -> Iterator[list[Encoding | ConversationError]]:
        """:meth:`try_encode_chat_batch` over a stream of batches: each batch's results, in order.

        For data that does not fit in memory. While SentencePiece encodes one batch (in a
        worker thread: it releases the GIL), the next batch is formatted and the previous one
        assembled and handed to you, so Python work overlaps with the encode. ``record`` of
        an error is its index in its batch.
        """
        plan = self._chat_planner(options_of(options, keywords))
        planned = self._plan_batches(((0, batch) for batch in batches), plan, collect_errors=True)
        return self._pipeline(planned, num_threads)

    # -- pretraining text ---------------------------------------------------------------

    def encode_pt(
        self, text: str, *, add_eos: bool = True, reserved: ReservedPolicy = "refuse"
    ) -> Encoding:
        """Encode a plain text as ``[BOS] text [EOS]`` (PT models end a text with ``<eos>``).

        ``add_eos=False`` gives a PT prompt. The loss mask covers the text and EOS.
        """
        (result,) = self._encode_pts([text], add_eos, reserved, 1, collect_errors=False)
        return result

    def encode_pt_batch(
        self,
        texts: Sequence[str],
        *,
        add_eos: bool = True,
        reserved: ReservedPolicy = "refuse",
        num_threads: int | None = None,
    ) -> list[Encoding]:
        """:meth:`encode_pt` for many texts, ``num_threads`` encoding at once.

        Raises the first ConversationError, with ``record`` set to the text's index."""
        return self._encode_pts(texts, add_eos, reserved, num_threads, collect_errors=False)

    def try_encode_pt_batch(
        self,
        texts: Sequence[str],
        *,
        add_eos: bool = True,
        reserved: ReservedPolicy = "refuse",
        num_threads: int | None = None,
    ) -> list[Encoding | ConversationError]:
        """Like :meth:`encode_pt_batch`, with each failing text's error in its place."""
        return self._encode_pts(texts, add_eos, reserved, num_threads, collect_errors=True)

    def try_encode_pt_batches(
        self,
        batches: Iterable[Sequence[str]],
        *,
        add_eos: bool = True,
        reserved: ReservedPolicy = "refuse",
        num_threads: int | None = None,
    ) -> Iterator[list[Encoding | ConversationError]]:
        """:meth:`try_encode_pt_batch` over a stream of batches, pipelined as
        :meth:`try_encode_chat_batches` is."""
        _check_reserved(reserved)
        plan = partial(self._plan_pt, add_eos=add_eos, reserved=reserved)
        planned = self._plan_batches(((0, batch) for batch in batches), plan, collect_errors=True)
        return self._pipeline(planned, num_threads)

    # -- plain text ----------------------------------------------------------------------

    def encode_text(self, text: str, *, reserved: ReservedPolicy = "refuse") -> list[int]:
        """Ids of ``text`` alone: no BOS, no markers. ``reserved`` as in :meth:`encode_chat`."""
        _check_reserved(reserved)
        check_text(text)
        texts = _Texts()
        plan = _Plan()
        self._add_text(plan, texts, text, 0, reserved, _locate_in_text(text, self.reserved))
        return self._build([plan], self._encoded(texts))[0].ids.tolist()

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; BOS, EOS and PAD decode to nothing."""
        return self.processor.decode([int(i) for i in ids])

    def piece(self, token_id: int) -> str:
        return self.pieces[token_id]

    @cached_property
    def pieces(self) -> list[str]:
        """Every piece's text, by id: read once, when first asked (the validator's layout
        does; encoding never does)."""
        return self.processor.id_to_piece(list(range(self.vocab_size)))

    @property
    def segment_cache(self) -> SegmentCache:
        """The recurring segments' ids (``served_tokens`` counts the ids they gave)."""
        return self._segments

    def clear_segment_cache(self) -> None:
        """Forget every remembered segment (benchmarks time a first pass with it)."""
        self._segments = SegmentCache(self._segments.capacity)

    # -- internals -----------------------------------------------------------------------
    #
    # Encoding runs in three steps: plan each record (check, format, find reserved text)
    # while collecting the texts to encode; encode the texts of a chunk of records with one
    # SentencePiece call in a worker thread; build ids and masks for the chunk with a few
    # numpy calls. Chunks are pipelined: encodes run beside the planning and building.

    def _encode_chats(self, conversations, options, num_threads, *, collect_errors):
        plan = self._chat_planner(options)
        planned = self._plan_batches(_chunks(conversations), plan, collect_errors=collect_errors)
        return [result for chunk in self._pipeline(planned, num_threads) for result in chunk]

    def _chat_planner(self, options: EncodeOptions):
        """``plan(record, texts)`` with these options, checked once."""
        return partial(self._plan_chat, options=options, checkpoint=self._checkpoint(options))

    def _checkpoint(self, options: EncodeOptions):
        """The dialect's checkpoint named by ``options``, once its mode is checked."""
        if options.mode not in ("training", "inference"):
            raise ValueError(f"mode must be 'training' or 'inference', got {options.mode!r}")
        return self.dialect.checkpoint(options.checkpoint)

    def _encode_pts(self, texts, add_eos, reserved, num_threads, *, collect_errors):
        _check_reserved(reserved)
        plan = partial(self._plan_pt, add_eos=add_eos, reserved=reserved)
        planned = self._plan_batches(_chunks(texts), plan, collect_errors=collect_errors)
        return [result for chunk in self._pipeline(planned, num_threads) for result in chunk]

    @staticmethod
    def _plan_batches(
        batches: Iterable[tuple[int, Sequence]], plan: Callable, *, collect_errors: bool
    ) -> Iterator[tuple[list, list[str]]]:
        """``(plans, texts)`` of each ``(first record, records)`` batch; a record that cannot
        be encoded gives its error (``record`` set) in place of a plan, or raises it."""
        for first, records in batches:
            texts = _Texts()
            plans: list[_Plan | ConversationError] = []
            for record, value in enumerate(records, start=first):
                try:
                    plans.append(plan(value, texts))
                except ConversationError as error:
                    error.with_record(record)
                    if not collect_errors:
                        raise
                    plans.append(error)
            yield plans, texts

    def _pipeline(self, planned: Iterable[tuple[list, list[str]]], num_threads) -> Iterator[list]:
        """Each batch's results, in order.

        ``num_threads`` worker threads each encode whole batches (SentencePiece releases the
        GIL), while this thread plans the batches ahead and builds and hands over the ones
        behind. Workers take batches as they come, so one that is slowed down (by this
        thread, say) holds up no other, as the split of one call across threads would.
        """
        from concurrent.futures import ThreadPoolExecutor  # here: one conversation never needs it

        workers = num_threads if num_threads and num_threads > 0 else (os.cpu_count() or 1)
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            pending: deque = deque()
            for plans, texts in planned:
                pending.append((plans, texts, pool.submit(self._encode_texts, texts)))
                if len(pending) > workers:  # one batch queued for each worker
                    plans, texts, encoding = pending.popleft()
                    yield self._build(plans, self._segments.keep(texts, encoding.result()))
            while pending:
                plans, texts, encoding = pending.popleft()
                yield self._build(plans, self._segments.keep(texts, encoding.result()))
        finally:
            # Never wait for the workers here: a stream abandoned half-way is closed by the
            # garbage collector, in whatever thread it runs (even one that is starting and
            # holds threading's locks), and joining there deadlocks. Idle workers exit alone.
            pool.shutdown(wait=False, cancel_futures=True)

    def _encoded(self, texts: _Texts) -> list[np.ndarray]:
        """:meth:`_encode_texts` in this thread, remembering the segments worth it."""
        return self._segments.keep(texts, self._encode_texts(texts))

    def _encode_texts(self, texts: _Texts) -> list[np.ndarray]:
        """Ids of each text, with one SentencePiece thread (the pipeline runs several); a text
        already encoded (from the segment cache) is an array in ``texts`` and stays as it is."""
        if not texts:
            return []
        strings = texts if not texts.cached else [t for t in texts if type(t) is str]
        if len(strings) <= FEW_TEXTS:  # a batch call starts a thread: dearer than a few encodes
            encode = self.processor.encode
            encoded = [np.array(encode(text), dtype=ID_DTYPE) for text in strings]
        else:
            encoded = self.processor.encode(strings, num_threads=1, return_type="numpy")
        if not texts.cached:
            return encoded
        encoded = iter(encoded)
        return [next(encoded) if type(t) is str else t for t in texts]

    def _plan_pt(self, text: str, texts: list[str], *, add_eos: bool, reserved) -> _Plan:
        if not isinstance(text, str):
            raise ConversationError(
                f"a pretraining text must be a string, got {type(text).__name__}",
                code="bad_content",
            )
        check_text(text)
        plan = _Plan()
        plan.add(self._bos_index, 0)
        self._add_text(plan, texts, text, 1, reserved, _locate_in_text(text, self.reserved))
        if add_eos:
            plan.add(self._eos_index, 1)
        return plan

    def _plan_chat(self, record, texts, *, options: EncodeOptions, checkpoint) -> _Plan:
        conversation, runs = self._chat_runs(record, options, checkpoint)
        return self._plan_runs(conversation, runs, texts, options.reserved)

    def _chat_runs(self, record, options: EncodeOptions, checkpoint):
        """The checked conversation and its formatted runs: ``(text or Marker, mask bit)``."""
        conversation = from_record(record, self.dialect, options)
        training = options.mode == "training"
        if training:
            _check_something_to_learn(conversation, options.train_on)
        runs = render_runs(
            conversation,
            add_generation_prompt=wants_generation_prompt(conversation, options),
            train_on=options.train_on if training else "all",
            train_newline=options.train_newline,
            checkpoint=checkpoint,
        )
        return conversation, runs

    def _plan_runs(self, conversation, runs, texts, reserved) -> _Plan:
        plan = _Plan(conversation.notes)
        pieces, bits = plan.pieces, plan.bits
        pieces.append(self._bos_index)
        bits.append(0)
        # The hot loop: markers, constant texts and texts without reserved text are placed
        # inline; reserved text goes through _add_text and its policy.
        markers, constants = self._marker_index, self._text_index
        find = None if reserved == "allow" else self.reserved.find
        place, first_text = self._segments.place, len(self._constant_ids)  # texts follow the constants
        for value, bit in runs:
            if type(value) is not str:
                index = markers.get(value)
                if index is None:
                    self._unsupported_marker(value, conversation)
            else:
                index = constants.get(value)
                if index is None:
                    if find is not None and find(value):
                        locate = _locate_in_conversation(conversation, self.reserved)
                        self._add_text(plan, texts, value, bit, reserved, locate)
                        continue
                    index = first_text + place(value, texts)
            pieces.append(index)
            bits.append(bit)
        return plan

    def _whole_plan(self, conversation, runs, reserved) -> WholeText | None:
        """The conversation as one text to encode (see whole_text.py): its turn text, markers
        spelled, as a plain encode of the rendered template sees it. None where that cannot
        give the segment path's ids (content that needs escaping, a marker the model lacks,
        two free texts between two markers), and where the segment cache can do better: a
        long text seen before (a recurring system prompt or tool declaration) is served from
        the cache, or kept there, on the segment path. Reserved text the policy refuses
        raises here, located.
        """
        marker_ids, constants, spelled = self.specials.markers, self._constant_texts, self.dialect.pieces
        cache = self._segments
        whole = WholeText(conversation.notes, self.specials.bos)
        strings, bits, lengths, fixed_ids, groups = [], whole.bits, whole.lengths, whole.fixed_ids, whole.groups
        free, before, fixed = -1, 0, 0  # the open group: its free unit, the fixed ids before it, in all
        long_texts = []
        for value, bit in runs:
            if type(value) is not str:
                token_id = marker_ids.get(value)
                if token_id is None:
                    return None
                groups.append((free, before, fixed))
                free, before, fixed = -1, 0, 0
                fixed_ids.append(token_id)
                lengths.append(1)
                strings.append(spelled[value])
            else:
                ids = constants.get(value)
                if ids is not None:
                    fixed_ids += ids
                    lengths.append(len(ids))
                    fixed += len(ids)
                    if free < 0:
                        before += len(ids)
                else:
                    if free >= 0:
                        return None  # two free texts between two markers: lengths unknowable
                    if reserved != "allow" and self.reserved.find(value):
                        if reserved == "escape":
                            return None
                        self._plan_runs(conversation, runs, _Texts(), reserved)  # raises, located
                    free = len(lengths)
                    lengths.append(0)  # what the markers leave: found by the split
                    if len(value) >= WORTH_CACHING:
                        long_texts.append(value)
                strings.append(value)
            bits.append(bit)
        groups.append((free, before, fixed))
        if long_texts and cache.capacity and not cache.first_sightings(long_texts):
            return None
        whole.text = "".join(strings)
        return whole

    def _add_text(self, plan, texts, text, bit, reserved, locate) -> None:
        """Add ``text`` to ``plan``, applying the reserved-text policy."""
        constant = self._text_index.get(text)
        if constant is not None:
            plan.add(constant, bit)
            return
        parts = [text]
        if reserved != "allow" and (found := self.reserved.find(text)):
            if reserved == "refuse":
                raise ReservedTokenError(found[0][1], **locate())
            parts = self.reserved.split_for_escape(text)
        first_text = len(self._constant_ids)  # texts are numbered after the constants
        place = self._segments.place
        for part in parts:
            plan.pieces.append(first_text + place(part, texts))
            plan.bits.append(bit)

    def _unsupported_marker(self, marker: Marker, conversation) -> None:
        """Raise for a media part whose marker the model lacks (an image for Gemma 2)."""
        turn, part_index = next(
            (t, k) for t in conversation.turns for k, p in enumerate(t.parts) if p is marker
        )
        piece = self.dialect.pieces[marker]
        raise ConversationError(
            f"the content has an {marker.value} part, but this model has no {piece} piece",
            code="bad_content",
            message_index=turn.message_index,
            role=turn.role,
            part_index=part_index,
            fix=f"Use a tokenizer that has {piece}, or remove the {marker.value} part",
        )

    def _build(self, plans: list, encoded: list[np.ndarray]) -> list:
        """Ids and masks of every plan, from the encoded texts, with a few numpy calls."""
        pool = self._constant_ids + encoded
        indices: list[int] = []
        bits: list[int] = []
        counts: list[int] = []
        for plan in plans:
            if isinstance(plan, _Plan):
                indices.extend(plan.pieces)
                bits.extend(plan.bits)
                counts.append(len(plan.pieces))
        if not indices:
            return list(plans)
        pool_lengths = np.fromiter(map(len, pool), dtype=np.int64, count=len(pool))
        lengths = pool_lengths[np.array(indices)]
        ids = np.concatenate(itemgetter(*indices)(pool) if len(indices) > 1 else [pool[indices[0]]])
        mask = np.repeat(np.array(bits, dtype=MASK_DTYPE), lengths)
        ends = np.cumsum(lengths)[np.cumsum(counts) - 1].tolist()
        results = []
        ends_iter = iter(ends)
        start = 0
        for plan in plans:
            if isinstance(plan, _Plan):
                end = next(ends_iter)
                # Copies, so that keeping one encoding does not keep its whole batch alive.
                results.append(Encoding(ids[start:end].copy(), mask[start:end].copy(), plan.notes))
                start = end
            else:
                results.append(plan)
        return results


def _unpickle_tokenizer(model_proto: bytes, path, dialect, segment_cache: int) -> GemmaTokenizer:
    return GemmaTokenizer(model_proto, path=path, dialect=dialect, segment_cache=segment_cache)


class _Texts(list):
    """The texts of a batch to encode, in plan order, each distinct one once (``index``). A
    text the segment cache holds is its ids array already (``cached`` counts them);
    ``keep`` lists the texts seen before, whose ids the cache takes once encoded;
    ``repeats`` the texts planned more than once."""

    __slots__ = ("cached", "index", "keep", "repeats")

    def __init__(self):
        super().__init__()
        self.cached = 0
        self.index: dict[str, int] = {}
        self.keep: list[int] = []
        self.repeats: list[int] = []


class SegmentCache:
    """Ids of text segments that recur, so each distinct one is encoded once.

    Text between the same markers is tokenized the same way every time (markers are pieces
    SentencePiece never merges across), so a repeated system prompt, tool declaration or
    instruction can take its ids from here: invisible in the output (a test compares every id
    with the uncached path). Within a batch each distinct text is encoded once; across
    batches a segment is kept from its second sighting on (sightings are remembered as
    hashes, a bounded set), at most ``capacity`` ids (each entry counting ``ENTRY_IDS``
    more), the oldest going first; none bigger than a quarter of it. ``capacity=0`` turns
    both off. Only the thread that plans and builds batches touches it.
    """

    SEEN_KEPT = 1 << 16

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.ids: dict[str, np.ndarray] = {}
        self.held = 0
        self.seen: set[int] = set()  # hashes of texts met once (a collision only caches early)
        self.served_tokens = 0  # ids that came from here rather than from SentencePiece

    def place(self, text: str, texts: _Texts) -> int:
        """The index of ``text`` in ``texts``, adding it (or its cached ids) when new.

        Short texts too: SentencePiece's batch call costs about 5 µs a string, however
        short, and tool syntax writes dozens of short texts a record, most of them the same
        (``,``, ``STRING``, ``}},required:[``); looking one up costs a tenth of that."""
        if not self.capacity:
            texts.append(text)
            return len(texts) - 1
        index = texts.index.get(text)
        if index is not None:
            texts.repeats.append(index)
            return index
        index = texts.index[text] = len(texts)
        ids = self.ids.get(text)
        if ids is not None:
            self.served_tokens += len(ids)
            texts.cached += 1
            texts.append(ids)
            return index
        texts.append(text)
        if self.sighted(text):  # hashes, not texts: long unique messages must not pile up
            texts.keep.append(index)
        return index

    def first_sightings(self, texts: list[str]) -> bool:
        """True when none of ``texts`` is held or was sighted before: they are then noted as
        sighted (the whole-text path encodes them). False: the segment path should take
        them, so that the cache serves or keeps them."""
        keys = [hash(text) for text in texts]
        if any(key in self.seen for key in keys) or any(text in self.ids for text in texts):
            return False
        self._note_seen(keys)
        return True

    def sighted(self, text: str) -> bool:
        """Note a sighting of ``text``; True from its second on (then :meth:`store` its ids)."""
        key = hash(text)
        if key in self.seen:
            return True
        self._note_seen([key])
        return False

    def _note_seen(self, keys: list[int]) -> None:
        """Remember ``keys`` as seen once; the set is bounded, emptied when it would overflow."""
        if len(self.seen) + len(keys) > self.SEEN_KEPT:
            self.seen.clear()
        self.seen.update(keys)

    def store(self, text: str, ids: np.ndarray) -> None:
        """Remember the ids of ``text``, the oldest segments going first beyond capacity."""
        if text in self.ids or len(ids) + ENTRY_IDS > self.capacity // 4:
            return
        self.ids[text] = ids
        self.held += len(ids) + ENTRY_IDS
        self.seen.discard(hash(text))
        while self.held > self.capacity:
            self.held -= len(self.ids.pop(next(iter(self.ids)))) + ENTRY_IDS

    def keep(self, texts: _Texts, encoded: list) -> list:
        """Remember the segments of ``texts`` marked for it, from their ``encoded`` ids."""
        for k in texts.repeats:
            self.served_tokens += len(encoded[k])
        for k in texts.keep:
            self.store(texts[k], encoded[k])
        return encoded


def _chunks(records: Iterable) -> Iterator[tuple[int, list]]:
    """``(index of the first record, records)`` for each chunk of PIPELINE_CHUNK records."""
    iterator = iter(records)
    start = 0
    while chunk := list(islice(iterator, PIPELINE_CHUNK)):
        yield start, chunk
        start += len(chunk)


class _Plan:
    """One sequence before its texts are encoded: ``pieces`` holds indices into the pool of
    id arrays (the tokenizer's constants, then the batch's encoded texts); ``bits`` holds each
    piece's mask bit."""

    __slots__ = ("pieces", "bits", "notes")

    def __init__(self, notes: tuple[str, ...] = ()):
        self.pieces: list[int] = []
        self.bits: list[int] = []
        self.notes = notes

    def add(self, piece: int, bit: int) -> None:
        self.pieces.append(piece)
        self.bits.append(bit)


def _locate_in_conversation(conversation, finder: ReservedText):
    """A function giving the location of the first reserved text in ``conversation``.

    Called only on the error path, so the hot path keeps no source map: it re-walks the
    rendered content, where text can span joined parts but never a header or a blank line.
    """

    def locate() -> dict:
        for message_index, role, field, spans in content_stretches(conversation):
            found = finder.find("".join(text for _, _, text in spans))
            if not found:
                continue
            offset = found[0][0]
            for part_index, start, text in spans:
                if offset < len(text):
                    return {
                        "message_index": message_index,
                        "role": role,
                        "field": field,
                        "part_index": part_index,
                        "char_offset": None if start is None else start + offset,
                    }
                offset -= len(text)
        return {}

    return locate


def _locate_in_text(text: str, finder: ReservedText):
    """Like _locate_in_conversation, for a plain text: the character offset."""
    return lambda: {"char_offset": finder.find(text)[0][0]}


def _check_something_to_learn(conversation, train_on: TrainOn) -> None:
    """A training conversation must end with the model's message, and teach something."""
    model = conversation.dialect.trained_role
    last = conversation.turns[-1] if conversation.turns else None
    if last is None or last.role != model or (last.results and not last.closes):
        raise ConversationError(
            f"a training conversation must end with a {model} message, the answer to learn",
            code="nothing_to_learn",
            message_index=None if last is None else last.message_index,
            role=None if last is None else (last.role if not last.results else "tool"),
            fix="Add the model's answer, or encode it with mode='inference'",
        )
    if last.weight is None and not last.continues and train_on == "all" and last.parts and type(last.parts[0]) is str:
        text = last.parts[0]
        if (text and not text.isspace()) or last.calls or last.reasoning is not None:
            return  # the common case: the final answer has text
    turns = [turn for turn in conversation.turns if turn.role == model]
    if train_on == "last":
        start = max(k for k, turn in enumerate(turns) if not turn.continues)
        turns = turns[start:]
    trained = [turn for turn in turns if turn.weight != 0] if any(t.weight is not None for t in turns) else turns
    if not any(
        turn.reasoning is not None
        or turn.calls
        or any(isinstance(part, Marker) or part.strip() for part in turn.parts)
        for turn in trained
    ):
        raise ConversationError(
            "nothing to learn: the trained model turns have no content",
            code="nothing_to_learn",
            message_index=last.message_index,
            role=model,
            fix="Give the model turn its answer, or drop the conversation",
        )


def _check_reserved(reserved) -> None:
    if reserved not in POLICIES:
        raise ValueError(f"reserved must be one of {', '.join(POLICIES)}, got {reserved!r}")
