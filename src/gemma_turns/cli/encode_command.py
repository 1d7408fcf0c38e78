"""``gemma-turns encode --tokenizer MODEL FILE``: token ids and loss masks, one JSON line each;
with ``-o OUT.npz`` (or ``-o DIR --shard-size N``), model-input arrays streamed to disk."""

from __future__ import annotations

import json
import os
import stat
import sys
import time

from ..dataset import BLOCK_ROWS, block_bytes, write_dataset
from ..errors import DatasetError, EmptyInputError, SequenceTooLongError
from ..fit import check_dialect
from ..jsonl import MAX_RECORD_BYTES, read_lines
from ..options import ArrayOptions, EncodeOptions
from ..records import Counts
from ..store import AtomicText, check_paths
from ..streaming import encode_lines
from .chat_flags import add_chat_flags, chat_options
from .common import (
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    TOKENIZER_HELP,
    CommandError,
    add_inputs_argument,
    expand_inputs,
    load_tokenizer,
    non_negative_int,
    open_input,
    positive_int,
)

MAX_MEMORY_MIB = 4096  # default --max-memory: what one block of rows may take

# Flags that shape arrays, with their "not given" value: they need -o.
ARRAY_FLAGS = {
    "shard_size": ("--shard-size", None),
    "max_length": ("--max-length", None),
    "pad_to_multiple": ("--pad-to-multiple", None),
    "padding": ("--padding", None),
    "truncation": ("--truncation", None),
    "pack": ("--pack", False),
    "shift": ("--shift", False),
    "compress": ("--compress", False),
    "file_format": ("--format", None),
    "max_memory": ("--max-memory", MAX_MEMORY_MIB),
    "engine": ("--engine", "local"),
    "workers": ("--workers", None),
    "chunk_mib": ("--chunk-mib", None),
    "pack_scope": ("--pack-scope", None),
}
RAY_FLAGS = ("workers", "chunk_mib", "pack_scope")  # only with --engine ray
RAY_SHARD_SIZE = 1024  # rows a shard, when --engine ray is not given --shard-size
CHUNK_MIB = 16  # input MiB a Ray worker takes at a time


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "encode",
        help="encode conversations to token ids and loss masks, or to model-input arrays",
        description='Without -o: write one JSON line per input line: {"input_ids", "loss_mask"}, '
        'or {"line", "error"} for a record that cannot be encoded. With -o OUT.npz: write '
        "model-input arrays (input_ids, attention_mask, loss_mask, position_ids, ...) and "
        "OUT.manifest.json; with --shard-size N, -o names a directory of shards. A summary goes "
        "to stderr. Exit code 0 if every record was encoded (dropped or truncated as --truncation "
        "asks is fine), 1 if any was rejected (more than --max-rejects) or too long under "
        "--truncation error, 2 for usage or I/O errors.",
    )
    add_inputs_argument(parser)
    parser.add_argument(
        "--tokenizer", required=True, metavar="MODEL", help=TOKENIZER_HELP
    )
    add_encode_options(parser)
    add_chat_flags(parser)
    add_array_options(parser)
    parser.set_defaults(run=run)


def add_encode_options(parser) -> None:
    parser.add_argument(
        "--mode",
        choices=("training", "inference", "pt"),
        required=True,
        help="training: conversations end with a model turn; inference: end with the "
        'generation prompt after a user turn; pt: {"text": ...} records as [BOS] text [EOS]',
    )
    parser.add_argument(
        "--train-on",
        choices=("all", "last"),
        default="all",
        help="model turns the loss mask covers (training; default: all)",
    )
    parser.add_argument(
        "--train-newline",
        action="store_true",
        help="also train the \\n after each trained <end_of_turn>",
    )
    parser.add_argument(
        "--reserved",
        choices=("refuse", "escape", "allow"),
        default="refuse",
        help="content that spells a reserved token such as <end_of_turn>: refuse the record "
        "(default), escape it as plain text, or allow it (the official pipeline's ids)",
    )
    parser.add_argument(
        "--no-eos", dest="add_eos", action="store_false", help="pt: end without <eos> (a PT prompt)"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="SentencePiece threads (default: all cores)",
    )
    parser.add_argument(
        "--max-record-bytes",
        type=positive_int,
        default=MAX_RECORD_BYTES,
        metavar="N",
        help=f"reject a line longer than N bytes unread (default {MAX_RECORD_BYTES:,}: "
        "encoding a line takes many times its size in memory)",
    )


def add_array_options(parser) -> None:
    group = parser.add_argument_group("arrays (with -o)")
    group.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="write arrays to OUT.npz or OUT.parquet, or to the directory OUT with --shard-size",
    )
    group.add_argument(
        "--format",
        dest="file_format",
        choices=("npz", "parquet"),
        help="array files: npz (default) or parquet (ragged rows as list columns, for Hugging "
        "Face datasets, Spark, grain; needs pyarrow: pip install 'gemma-turns[parquet]'); "
        "a single -o file's suffix decides by itself",
    )
    group.add_argument(
        "--shard-size",
        type=int,
        metavar="ROWS",
        help="write OUT as a directory of .npz shards of ROWS rows each (bounds memory; "
        "needs --max-length)",
    )
    group.add_argument(
        "--max-length",
        type=int,
        metavar="N",
        help="real tokens per row (default: the longest record; required with --pack and "
        "--shard-size)",
    )
    group.add_argument(
        "--pad-to-multiple", type=int, metavar="K", help="round the row width up to a multiple of K"
    )
    group.add_argument(
        "--padding",
        choices=("right", "left"),
        help="right (default, training) or left (generation: prompts end in the last column)",
    )
    group.add_argument(
        "--truncation",
        choices=("error", "drop", "truncate", "drop_oldest_turns"),
        help="a record longer than --max-length: error (default: stop, exit 1), drop (left out, "
        "listed in --rejects), truncate (cut the end; a cut model turn is not trained), "
        "drop_oldest_turns (inference: keep the first user turn and the latest turns that fit)",
    )
    group.add_argument(
        "--pack",
        action="store_true",
        help="several records per row (best fit), with segment_ids, and positions restarting "
        "in each record",
    )
    group.add_argument(
        "--shift",
        action="store_true",
        help="training targets: input_ids = ids[:-1], targets = ids[1:], loss_mask aligned "
        "with the targets",
    )
    group.add_argument(
        "--compress", action="store_true", help="write compressed files (npz: deflate; parquet: zstd)"
    )
    group.add_argument(
        "--max-memory",
        type=positive_int,
        default=MAX_MEMORY_MIB,
        metavar="MIB",
        help=f"refuse, before any work, rows whose block would take more than MIB MiB to build "
        f"(default {MAX_MEMORY_MIB}; see --max-length, --shard-size)",
    )
    engine = parser.add_argument_group("engine (with -o)")
    engine.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default): this process; ray: Ray Data workers on the cluster this "
        f"machine reaches (RAY_ADDRESS), or a local one; needs {INSTALL_RAY}; writes a shard "
        f"directory (--shard-size default {RAY_SHARD_SIZE})",
    )
    engine.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="ray: worker processes, one CPU each (default: the cluster's CPUs)",
    )
    engine.add_argument(
        "--chunk-mib",
        type=positive_int,
        metavar="MIB",
        help=f"ray: input a worker encodes at a time (default {CHUNK_MIB}); each chunk writes "
        "its own shards",
    )
    engine.add_argument(
        "--pack-scope",
        choices=("chunk", "global"),
        help="ray with --pack: chunk (default) packs each chunk on its worker (a little less "
        "full); global packs every record in one pass on this machine: the local run's rows",
    )
    parser.add_argument(
        "--max-rejects",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="exit 0 when at most N records were rejected as invalid (default 0: any rejected "
        "record exits 1); with -o, needs --rejects FILE, so every rejected record is listed",
    )
    parser.add_argument(
        "--rejects",
        metavar="FILE",
        help="write the rejected and dropped records, with their line numbers and reasons, to "
        "FILE (JSONL; '-': standard output, with -o)",
    )


def encode_options(args, tokenizer) -> EncodeOptions:
    """The options of the flags, checked against the model's dialect before any work."""
    return chat_options(
        args,
        tokenizer.dialect,
        mode=args.mode,
        train_on=args.train_on,
        train_newline=args.train_newline,
        reserved=args.reserved,
        add_eos=args.add_eos,
    )


def array_options(args) -> ArrayOptions:
    if args.engine == "ray":
        if args.max_length is None:
            raise CommandError(
                "--engine ray writes a directory of shards: it needs --max-length, so that "
                "every shard has the same width"
            )
        if args.shard_size is None:
            args.shard_size = RAY_SHARD_SIZE
        if args.pack_scope is not None and not args.pack:
            raise CommandError("--pack-scope: only with --pack")
        if args.threads is not None:
            raise CommandError(
                "--threads: each Ray worker runs one SentencePiece thread on its one CPU; set "
                "how many run with --workers"
            )
    else:
        given = [ARRAY_FLAGS[name][0] for name in RAY_FLAGS if getattr(args, name) is not None]
        if given:
            raise CommandError(f"{', '.join(given)}: only with --engine ray")
    try:
        options = ArrayOptions(
            max_length=args.max_length,
            padding=args.padding or "right",
            pad_to_multiple=1 if args.pad_to_multiple is None else args.pad_to_multiple,
            truncation=args.truncation or "error",
            pack=args.pack,
            shift=args.shift,
        )
        options.check_mode(args.mode)
    except ValueError as error:
        raise CommandError(_flags(str(error))) from None
    if args.shard_size is not None and args.shard_size < 1:
        raise CommandError(f"--shard-size must be a positive integer, got {args.shard_size}")
    if args.shard_size is not None and args.max_length is None:
        raise CommandError(
            "--shard-size needs --max-length, so that every shard has the same width"
        )
    rows = args.shard_size or BLOCK_ROWS
    needed = block_bytes(options, rows)
    if needed is not None and needed > args.max_memory << 20:
        raise CommandError(
            f"rows of --max-length {args.max_length} in blocks of {rows} rows "
            f"({'--shard-size' if args.shard_size else 'a single .npz is built'} "
            f"{'' if args.shard_size else 'that many at a time'}) need about "
            f"{needed / (1 << 20):,.0f} MiB, more than --max-memory {args.max_memory} MiB; "
            "lower --max-length or --shard-size, or raise --max-memory if the machine has it"
        )
    return options


def run(args) -> int:
    args.inputs = expand_inputs(args.inputs)
    _check_inputs(args.inputs)
    if args.output is None:
        given = [
            flag for name, (flag, unset) in ARRAY_FLAGS.items() if getattr(args, name) != unset
        ]
        if given:
            raise CommandError(
                f"{', '.join(given)}: only with arrays; give -o OUT.npz (or -o DIR --shard-size N)"
            )
        return run_jsonl(args)
    return run_arrays(args)


def run_jsonl(args) -> int:
    """Today's output: one JSON line per input line on stdout."""
    if args.rejects == "-":
        raise CommandError(
            "--rejects -: standard output already carries the encoded lines and, in their "
            "place, the rejected ones; name a file"
        )
    _check_paths(args)
    tokenizer = load_tokenizer(args.tokenizer)
    options = encode_options(args, tokenizer)
    counts = Counts()
    write = sys.stdout.write
    rejects = _open_rejects(args.rejects)
    several = len(args.inputs) > 1
    try:
        for name in args.inputs:
            # With several inputs, a rejected line and a rejects entry name their file.
            where = {"file": name} if several else {}
            with open_input(name) as stream:
                records = encode_lines(
                    tokenizer,
                    read_lines(stream, max_record_bytes=args.max_record_bytes),
                    options,
                    num_threads=args.threads,
                )
                for record in records:
                    counts.add(record, file=name if several else None)
                    if record.kind == "encoded":
                        write(json.dumps(record.encoding.to_dict()) + "\n")
                    elif record.kind == "rejected":
                        error = {**where, "line": record.number, "error": record.error.to_dict()}
                        write(json.dumps(error, ensure_ascii=False) + "\n")
                        if rejects is not None:
                            entry = {**where, **record.report()}
                            rejects.write(json.dumps(entry, ensure_ascii=False) + "\n")
        sys.stdout.flush()  # a full disk shows here, before the summary
        if rejects is not None:
            rejects.commit()
    except BaseException:
        if rejects is not None:
            rejects.abort()
        raise
    print(f"gemma-turns encode: {counts.summary(arrays=False)}", file=sys.stderr)
    _where(counts, args)
    return _exit_code(counts, args)


def run_arrays(args) -> int:
    """Arrays streamed to OUT.npz or a shard directory, with a manifest and a summary."""
    if args.max_rejects and args.rejects is None:
        raise CommandError(
            "--max-rejects with -o needs --rejects FILE: a run that passes with rejected "
            "records must list them somewhere"
        )
    options = array_options(args)
    _check_file_format(args)
    _check_paths(args)
    tokenizer = load_tokenizer(args.tokenizer)
    chat = encode_options(args, tokenizer)
    if options.truncation == "drop_oldest_turns":
        try:
            check_dialect(tokenizer)
        except ValueError as error:
            raise CommandError(_flags(str(error))) from None
    progress = (
        ProgressBar(sys.stderr, total_bytes=_total_size(args.inputs))
        if _is_terminal(sys.stderr)
        else None
    )
    try:
        if args.engine == "ray":
            written = _write_on_ray(args, tokenizer, chat, options, progress)
        else:
            written = write_dataset(
                tokenizer,
                None,
                args.output,
                encode_options=chat,
                array_options=options,
                shard_size=args.shard_size,
                rejects=args.rejects,
                compress=args.compress,
                inputs=args.inputs,
                num_threads=args.threads,
                on_progress=progress,
                max_record_bytes=args.max_record_bytes,
                file_format=args.file_format,
            )
    except SequenceTooLongError as error:
        return _too_long(args, error)
    except EmptyInputError as error:
        print(f"gemma-turns encode: {error}; nothing written", file=sys.stderr)
        return EXIT_INVALID
    except DatasetError as error:
        raise CommandError(f"{error}; nothing written") from None
    except OSError as error:
        where = error.filename or f"{', '.join(args.inputs)} -> {args.output}"
        raise CommandError(
            f"I/O error ({where}): {error.strerror or error}; nothing written"
        ) from None
    except KeyboardInterrupt:
        print("\ngemma-turns encode: interrupted; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if progress is not None:
            progress.close()
    counts = written.counts
    print(f"gemma-turns encode: {counts.summary()}", file=sys.stderr)
    _where(counts, args)
    shapes = ", ".join(
        f"{key} {tuple(counts.rows if d == 'rows' else d for d in spec['shape'])} {spec['dtype']}"
        for key, spec in written.manifest["keys"].items()
    )
    where = (
        args.output if len(written.files) == 1 else f"{args.output} ({len(written.files)} shards)"
    )
    print(
        f"gemma-turns encode: wrote {where}: {shapes}; manifest {written.manifest_path}",
        file=sys.stderr,
    )
    return _exit_code(counts, args)


def _exit_code(counts: Counts, args) -> int:
    """0 when no record was rejected, or no more than --max-rejects (said on stderr); else 1.
    Dropped and truncated records never fail a run: --truncation asked for them."""
    rejected = sum(counts.rejected.values())
    if not rejected:
        return EXIT_OK
    if rejected <= args.max_rejects:
        print(
            f"gemma-turns encode: {rejected} rejected, within --max-rejects {args.max_rejects}: "
            "exit 0",
            file=sys.stderr,
        )
        return EXIT_OK
    if args.max_rejects:
        print(
            f"gemma-turns encode: {rejected} rejected, more than --max-rejects {args.max_rejects}",
            file=sys.stderr,
        )
    return EXIT_INVALID


INSTALL_RAY = "pip install 'gemma-turns[ray]'"


def _write_on_ray(args, tokenizer, chat, options, progress):
    """The run on Ray Data (imported only here: the local engine never loads Ray)."""
    if "-" in args.inputs:
        raise CommandError(
            "--engine ray reads its inputs in chunks on several workers: standard input "
            "('-') cannot be split; save it to a file first"
        )
    from ..engines.ray_engine import write_dataset_ray  # imports Ray only when it runs

    try:
        return write_dataset_ray(
            tokenizer,
            args.inputs,
            args.output,
            encode_options=chat,
            array_options=options,
            shard_size=args.shard_size,
            rejects=args.rejects,
            compress=args.compress,
            chunk_bytes=(args.chunk_mib or CHUNK_MIB) << 20,
            pack_scope=args.pack_scope or "chunk",
            workers=args.workers,
            on_result=progress,
            max_record_bytes=args.max_record_bytes,
        )
    except ValueError as error:
        if isinstance(error, (DatasetError, SequenceTooLongError)):
            raise
        raise CommandError(_flags(str(error))) from None


def _where(counts: Counts, args) -> None:
    """What documented rules left out, the first rejected or dropped line numbers, and where
    to find them all."""
    noted = counts.noted()
    if noted is not None:
        print(f"gemma-turns encode: {noted}", file=sys.stderr)
    where = counts.where()
    if where is None:
        return
    more = f"; all in {args.rejects}" if args.rejects not in (None, "-") else (
        "" if args.rejects else "; --rejects FILE lists them with their reasons"
    )
    print(f"gemma-turns encode: {where}{more}", file=sys.stderr)


def _check_file_format(args) -> None:
    """The file format from --format and the output's name, and pyarrow for Parquet: usage
    errors before any work."""
    from ..store import file_format_of

    try:
        if args.shard_size is None:
            args.file_format = file_format_of(args.output, args.file_format)
    except ValueError as error:
        raise CommandError(str(error).replace("the file format asked is", "--format is")) from None
    if args.file_format == "parquet":
        from ..store_parquet import require_pyarrow

        try:
            require_pyarrow()
        except DatasetError as error:
            raise CommandError(f"{error}; nothing written") from None


def _check_paths(args) -> None:
    try:
        check_paths(
            inputs=args.inputs,
            output=args.output,
            sharded=args.shard_size is not None,
            rejects=args.rejects,
        )
    except DatasetError as error:
        raise CommandError(str(error)) from None


def _too_long(args, error: SequenceTooLongError) -> int:
    ways = "drop, drop_oldest_turns" if args.mode == "inference" else "drop, truncate"
    plus = " (+1 with --shift)" if args.shift else ""
    where = f"{error.path} line" if error.path is not None else "line"
    print(
        f"gemma-turns encode: {where} {error.record}: {error.length} ids do not fit a row of "
        f"--max-length {args.max_length}{plus}. Raise --max-length, or pass --truncation "
        f"{{{ways}}} (with --rejects FILE to list what is dropped); nothing written",
        file=sys.stderr,
    )
    return EXIT_INVALID


class ProgressBar:
    """Records/s and tokens/s on one line of ``stream``, redrawn at most every ``interval`` s."""

    def __init__(
        self, stream, *, total_bytes: int | None = None, interval: float = 0.5, clock=time.monotonic
    ):
        self.stream = stream
        self.total_bytes = total_bytes
        self.interval = interval
        self.clock = clock
        self.start = self.last = clock()
        self.drawn = False

    def __call__(self, counts: Counts) -> None:
        now = self.clock()
        if now - self.last < self.interval:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        text = (
            f"\r{counts.lines:,} records  {counts.lines / elapsed:,.0f} records/s  "
            f"{counts.encoded_tokens / elapsed:,.0f} tokens/s"
        )
        if self.total_bytes:
            text += f"  {min(counts.input_bytes / self.total_bytes, 1):.0%}"
        self.stream.write(text)
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _open_rejects(path: str | None) -> AtomicText | None:
    if path is None:
        return None
    try:
        return AtomicText(path)
    except DatasetError as error:
        raise CommandError(str(error)) from None


def _check_inputs(names: list[str]) -> None:
    """Every input can be read, before any work (a missing file is a usage error)."""
    for name in names:
        if name == "-":
            continue
        if os.path.isdir(name):
            raise CommandError(f"{name} is a directory; name its JSONL files (or 'DIR/*.jsonl')")
        if not os.access(name, os.R_OK):
            reason = "no such file" if not os.path.exists(name) else "permission denied"
            raise CommandError(f"cannot read {name!r}: {reason}")


def _total_size(names: list[str]) -> int | None:
    """The bytes of all the inputs, for the progress line; None when one is no regular file."""
    total = 0
    for name in names:
        try:
            info = os.stat(name) if name != "-" else os.fstat(sys.stdin.fileno())
        except (OSError, AttributeError, ValueError):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        total += info.st_size
    return total


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _flags(message: str) -> str:
    """A library option message in the CLI's flag names."""
    for name, flag in (
        ("max_length", "--max-length"),
        ("pad_to_multiple", "--pad-to-multiple"),
        ("truncation=", "--truncation "),
        ("padding=", "--padding "),
        ("mode=", "--mode "),
    ):
        message = message.replace(name, flag)
    return message.replace("packing", "--pack")
