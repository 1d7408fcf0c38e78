"""The on-disk format of model-input arrays: writer and reader side by side.

    OUT.npz + OUT.manifest.json            one file (``-o OUT.npz``)
    DIR/shard-00000.npz ... + manifest.json    shards (``-o DIR --shard-size N``)
    OUT.parquet, DIR/shard-00000.parquet       the same rows as Parquet (:mod:`.store_parquet`)
    DIR/shard-00000-000.npz ... + manifest.json    shards of a distributed run, named by
                                               input chunk and part (``--engine ray``)

An ``.npz`` holds the arrays (``input_ids``, ``attention_mask``, ``loss_mask``,
``position_ids``, and ``targets``, ``segment_ids``, ``source_line`` or
``segment_source_line`` as the options ask). The manifest (JSON) records the format and
its version, the gemma-turns version, the inputs' and the tokenizer's sha256, the options
(``EncodeOptions.as_dict()``, ``ArrayOptions.as_dict()``), the counts, each key's dtype and
shape, and each array file's name, rows and sha256. It is written last, and read first:
every file is checked against it (:func:`open_stored`), so arrays of one run never pass
with the manifest of another.

Writing (:class:`ArrayWriter`, :class:`AtomicText`): everything goes into a hidden
directory beside the output (``.OUT.partial-PID-*``) and is renamed into place at the end;
a run holds ``.OUT.lock`` (``flock``) from start to end, so two runs cannot write one
output at once, and a later run removes the partial directories of runs that died.

Reading: :func:`load_dataset` and :func:`iter_shards` (arrays, checked), :func:`open_stored`
(which files, what their manifest says, what failed the check and what could not be
checked), :func:`read_arrays` (one file), :func:`unshift` and :func:`source_lookup` (shifted
rows and source lines back, for the validator).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import DatasetError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "ArrayWriter",
    "AtomicText",
    "Dataset",
    "OutputLock",
    "RunOutput",
    "Stored",
    "build_manifest",
    "check_paths",
    "iter_shards",
    "load_dataset",
    "manifest_beside",
    "manifest_inputs",
    "open_stored",
    "read_arrays",
    "read_manifest",
    "source_lookup",
    "unshift",
    "write_npz",
]

FORMAT = "gemma-turns/arrays"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# shard-00000.npz (or .parquet), or shard-CHUNK-PART.npz from a distributed run (one name per input chunk)
SHARD_NAME = re.compile(r"shard-\d{5,}(?:-\d{3,})?\.(?:npz|parquet)")
FILE_FORMATS = {".npz": "npz", ".parquet": "parquet"}  # array file suffix -> file format


def manifest_beside(npz: str | os.PathLike) -> Path:
    """Where the manifest of a single ``NAME.npz`` (or ``NAME.parquet``) output is:
    ``NAME.manifest.json``."""
    npz = Path(npz)
    stem = npz.name.removesuffix(".npz") if npz.suffix == ".npz" else npz.name.removesuffix(".parquet")
    return npz.with_name(stem + ".manifest.json")


def file_format_of(output: str | os.PathLike, file_format: str | None = None) -> str:
    """The array file format of an output: ``file_format`` when given (``npz`` or
    ``parquet``), else by a single file's suffix (``.parquet``), else ``npz``."""
    if file_format is not None and file_format not in FILE_FORMATS.values():
        raise ValueError(f"file_format must be 'npz' or 'parquet', got {file_format!r}")
    by_suffix = FILE_FORMATS.get(Path(output).suffix)
    if file_format is not None and by_suffix is not None and by_suffix != file_format:
        raise ValueError(
            f"the output {output} is named as {by_suffix}, but the file format asked is "
            f"{file_format}; name it NAME.{file_format}"
        )
    return file_format or by_suffix or "npz"


# -- the manifest ------------------------------------------------------------------------------


def build_manifest(
    *,
    tokenizer,
    encode_options,
    array_options,
    counts,
    files: list[dict],
    input_path: str | None = None,
    input_sha256: str | None = None,
    shard_size: int | None,
    compress: bool,
    rejects: str | os.PathLike | None,
    file_format: str = "npz",
    inputs: list[dict] | None = None,
    engine: dict | None = None,
) -> dict:
    """The manifest of a finished run; ``files``: what :meth:`ArrayWriter.write` recorded.

    ``inputs``: each input's ``{"path", "sha256", "bytes"}`` in the order the arrays'
    ``source_file`` index counts them (or one input as ``input_path``, ``input_sha256``).
    The manifest lists them as ``inputs``, and a single one also as ``input``, where
    readers of the first format version look. ``engine``: how a distributed run was made.
    """
    from . import __version__  # here, not at import: the package imports this module

    if inputs is None:
        inputs = [{"path": input_path, "sha256": input_sha256, "bytes": counts.input_bytes}]
    single = {"input": inputs[0]} if len(inputs) == 1 else {}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gemma_turns_version": __version__,
        **single,
        "inputs": inputs,
        **({"engine": engine} if engine is not None else {}),
        "tokenizer": {
            "path": tokenizer.path,
            "sha256": tokenizer.sha256,  # of the file at path
            "kind": tokenizer.kind,  # "sentencepiece", "tokenizer.json" or "gguf"
            "model_sha256": tokenizer.model_sha256,  # of the model the ids come from
            "vocab_size": tokenizer.vocab_size,
            "dialect": tokenizer.dialect.name,
            "specials": tokenizer.specials.as_dict(),
        },
        "encode_options": encode_options.as_dict(),
        "array_options": {
            **array_options.as_dict(),
            "shard_size": shard_size,
            "compress": compress,
            "file_format": file_format,
        },
        "counts": counts.as_dict(),
        "rejects": None if rejects is None else os.fspath(rejects),
        "keys": _merged_keys(files),
        "files": [{name: entry[name] for name in ("name", "rows", "sha256")} for entry in files],
    }


def manifest_inputs(manifest: dict) -> list[dict]:
    """The inputs a manifest lists: ``inputs``, or the one ``input`` of older manifests."""
    inputs = manifest.get("inputs")
    if isinstance(inputs, list):
        return [entry if isinstance(entry, dict) else {} for entry in inputs]
    single = manifest.get("input")
    return [single] if isinstance(single, dict) else []


def _merged_keys(files: list[dict]) -> dict:
    """Each key's dtype and shape over all files: ``["rows", width]``, the widest width
    (a packed ``segment_source_line`` table is as wide as the row with most segments)."""
    keys = {}
    for entry in files:
        for key, spec in entry["keys"].items():
            known = keys.setdefault(key, dict(spec))
            known["shape"] = [
                "rows",
                *(max(a, b) for a, b in zip(known["shape"][1:], spec["shape"][1:], strict=True)),
            ]
    return keys


def read_manifest(path: str | os.PathLike) -> tuple[dict, Path]:
    """``(manifest, folder of its array files)`` of an output: ``NAME.npz``, its manifest, or a
    shard directory. Raises DatasetError when there is no gemma-turns manifest of a version
    this one reads."""
    path = Path(path)
    if path.is_dir():
        manifest_path = path / MANIFEST
    elif path.name.endswith(".json"):
        manifest_path = path
    else:
        manifest_path = manifest_beside(path)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(
            f"no manifest {manifest_path}: {path} is not a finished gemma-turns output (the run "
            "that wrote it did not finish, or the files were moved apart)",
            path=manifest_path,
        ) from None
    except (OSError, ValueError, RecursionError) as error:
        raise DatasetError(
            f"cannot read the manifest {manifest_path}: {error}", path=manifest_path
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(
            f"{manifest_path} is not a gemma-turns arrays manifest", path=manifest_path
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{manifest_path} has format version {manifest.get('format_version')}; this "
            f"gemma-turns reads version {FORMAT_VERSION}",
            path=manifest_path,
        )
    if not isinstance(manifest.get("files"), list) or not isinstance(manifest.get("keys"), dict):
        raise DatasetError(f"{manifest_path} lists no files or keys", path=manifest_path)
    if manifest_path != path and not path.is_dir() and path.name not in _names(manifest):
        raise DatasetError(
            f"{manifest_path} is the manifest of {', '.join(_names(manifest)) or 'no file'}, "
            f"not of {path.name}: {path} is not a finished gemma-turns output",
            path=path,
        )
    return manifest, manifest_path.parent


def _names(manifest: dict) -> list[str]:
    return [e.get("name") for e in manifest.get("files", []) if isinstance(e, dict)]


# -- reading -----------------------------------------------------------------------------------


class Dataset(NamedTuple):
    """Arrays and manifest read back: ``arrays, manifest = load_dataset(path)``."""

    arrays: dict[str, np.ndarray]
    manifest: dict


def load_dataset(path: str | os.PathLike, *, verify: bool = True) -> Dataset:
    """Read what ``write_dataset`` wrote: ``NAME.npz``, its manifest, or a shard directory.

    Shards are concatenated by rows (packed ``segment_source_line`` tables are widened with
    -1), so this holds the whole dataset in memory: use :func:`iter_shards` for big ones.
    With ``verify``, every file's sha256 must match the manifest.
    """
    manifest, _ = read_manifest(path)
    shards = list(iter_shards(path, verify=verify))
    arrays = {}
    for key in manifest["keys"]:
        parts = [shard[key] for shard in shards]
        if key.startswith("segment_source_"):
            width = max(part.shape[1] for part in parts)
            parts = [
                np.pad(part, ((0, 0), (0, width - part.shape[1])), constant_values=-1)
                for part in parts
            ]
        arrays[key] = np.concatenate(parts)
    return Dataset(arrays, manifest)


def iter_shards(path: str | os.PathLike, *, verify: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """The arrays of each file of a written dataset, one file at a time."""
    manifest, folder = read_manifest(path)
    for entry in manifest["files"]:
        file = folder / entry["name"]
        if verify and _sha256_or_none(file) != entry["sha256"]:
            raise DatasetError(
                f"{file} does not match its manifest (missing, changed, or from another run); "
                "write the dataset again with gemma-turns encode",
                path=file,
            )
        arrays = read_arrays(file)
        if set(arrays) != set(manifest["keys"]):
            raise DatasetError(
                f"{file} holds {sorted(arrays)}, but its manifest lists {sorted(manifest['keys'])}",
                path=file,
            )
        yield arrays


def read_arrays(file: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of one ``.npz`` file (no pickles), or of one ``.parquet`` file padded back
    to the same arrays; DatasetError when it cannot be read."""
    if Path(file).suffix == ".parquet":
        from .store_parquet import read_parquet

        return read_parquet(file)
    try:
        with np.load(file, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise DatasetError(f"cannot read {os.fspath(file)!r}: no such file", path=file) from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{file} is not a readable .npz file ({error})", path=file) from None
    except AttributeError:  # np.load of something that is no .npz (a bare .npy)
        raise DatasetError(f"{file} is not an .npz archive", path=file) from None


@dataclass
class Stored:
    """An output on disk as checked before reading: its manifest (None without one), the
    array files to read in order (with their rows when the manifest says), integrity
    ``problems`` (a file missing, changed, or not listed) and ``notices`` (what could not be
    checked)."""

    path: Path
    manifest: dict | None
    files: list[tuple[Path, int | None]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def open_stored(path: str | os.PathLike) -> Stored:
    """Check an ``.npz`` file or a shard directory against its manifest, before reading it.

    A gemma-turns manifest must list the file(s) with their sha256: a file that is missing,
    differs, or (in a shard directory) is not listed is a problem. Without a manifest, or
    with one that is not gemma-turns' (no ``format``), the files are read as they are and a
    notice says what could not be checked.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    manifest_path = path / MANIFEST if path.is_dir() else manifest_beside(path)
    if not path.is_dir() and not manifest_path.exists() and (folder / MANIFEST).exists():
        manifest_path = folder / MANIFEST  # one shard of a directory
    stored = Stored(path, _manifest_or_none(manifest_path, path))
    manifest = stored.manifest
    on_disk = (
        sorted(p.name for suffix in FILE_FORMATS for p in folder.glob(f"*{suffix}"))
        if path.is_dir()
        else [path.name]
    )
    if manifest is None or manifest.get("format") != FORMAT:
        what = f"no manifest ({manifest_path.name})" if manifest is None else (
            f"{manifest_path.name} is not a gemma-turns manifest"
        )
        stored.notices.append(
            f"{what}: the files' integrity, the options they were made with and their "
            "tokenizer could not be checked"
        )
        stored.files = _listed(manifest, folder) if path.is_dir() else [(path, None)]
        stored.files = stored.files or [(folder / name, None) for name in on_disk]
        return stored
    entries = [e for e in manifest["files"] if isinstance(e, dict) and isinstance(e.get("name"), str)]
    listed = {e["name"]: e for e in entries}
    if path.is_dir():
        stored.files = [(folder / e["name"], e.get("rows")) for e in entries]
        for name in on_disk:
            if name not in listed:
                stored.problems.append(
                    f"{name} is not listed in {manifest_path.name} (a shard of another run?)"
                )
    elif path.name in listed:
        stored.files = [(path, listed[path.name].get("rows"))]
    else:
        stored.problems.append(f"{manifest_path.name} does not list {path.name}")
        stored.files = [(path, None)]
    for file, _ in stored.files:
        expected = listed.get(file.name, {}).get("sha256")
        if expected is None:
            if file.name in listed:
                stored.notices.append(f"{file.name}: the manifest has no sha256 to check")
            continue
        actual = _sha256_or_none(file)
        if actual is None:
            stored.problems.append(f"{file.name} is missing (listed in {manifest_path.name})")
        elif actual != expected:
            stored.problems.append(
                f"{file.name} does not match {manifest_path.name} (sha256 {actual[:12]}..., "
                f"the manifest says {expected[:12]}...): changed, or written by another run"
            )
    return stored


def _manifest_or_none(manifest_path: Path, path: Path) -> dict | None:
    try:
        value = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as error:
        raise DatasetError(f"cannot read the manifest {manifest_path}: {error}", path=path) from None
    if not isinstance(value, dict):
        raise DatasetError(f"the manifest {manifest_path} is not a JSON object", path=path)
    return value


def _listed(manifest: dict | None, folder: Path) -> list[tuple[Path, int | None]]:
    entries = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(entries, list):
        return []
    names = [e.get("name") for e in entries if isinstance(e, dict)]
    if not names or not all(isinstance(n, str) and "/" not in n for n in names):
        return []
    return [(folder / name, None) for name in names]


def unshift(ids, targets, loss, attention, segments):
    """Rows of full sequences from shifted rows: each segment's inputs and its last target.

    A shifted row stores ``inputs = seq[:-1]`` and ``targets = seq[1:]`` with the loss mask
    aligned with the targets, so the full sequence is ``inputs + [targets[-1]]`` and its loss
    mask is ``[0] + loss``. Returns ``(ids, loss, attention, segments)`` of the full rows.
    """
    rows, width = ids.shape
    new_rows, new_loss, new_segments = [], [], []
    for r in range(rows):
        if segments is not None:
            spans = _runs(segments[r])
        else:
            present = np.flatnonzero(attention[r] != 0) if attention is not None else np.arange(width)
            spans = [(int(present[0]), int(present[-1]) + 1, 1)] if len(present) else []
        parts, masks, labels = [], [], []
        for a, b, label in spans:
            parts.append(np.append(ids[r, a:b], targets[r, b - 1]))
            masks.append(
                np.append(0, loss[r, a:b]) if loss is not None else np.zeros(b - a + 1, np.int64)
            )
            labels.append(np.full(b - a + 1, label))
        new_rows.append(np.concatenate(parts) if parts else np.zeros(0, np.int64))
        new_loss.append(np.concatenate(masks) if masks else np.zeros(0, np.int64))
        new_segments.append(np.concatenate(labels) if labels else np.zeros(0, np.int64))
    size = max((len(row) for row in new_rows), default=0)

    def stack(values, fill):
        out = np.full((rows, size), fill, dtype=np.int64)
        for r, value in enumerate(values):
            out[r, : len(value)] = value
        return out

    full_ids = stack(new_rows, 0)
    full_segments = stack(new_segments, 0)
    full_loss = stack(new_loss, 0) if loss is not None else None
    attention = (full_segments > 0).astype(np.int8)
    return full_ids, full_loss, attention, full_segments if segments is not None else None


def _runs(segment_row) -> list[tuple[int, int, int]]:
    change = np.flatnonzero(np.diff(segment_row)) + 1
    bounds = np.concatenate([[0], change, [len(segment_row)]])
    return [
        (int(a), int(b), int(segment_row[a]))
        for a, b in zip(bounds, bounds[1:], strict=False)
        if segment_row[a] > 0
    ]


def source_lookup(table, segments, first_row: int) -> Callable[[int, int], int | None] | None:
    """``(row, position) -> input line`` from a ``source_line`` (one per row) or a packed
    ``segment_source_line`` table (per segment), for rows counted from ``first_row``."""
    if table is None or table.dtype.kind not in "iu":
        return None

    def lookup(row: int, position: int) -> int | None:
        r = first_row + row
        if r >= len(table):
            return None
        if table.ndim == 1:
            return int(table[r])
        if segments is None:
            return None
        width = segments.shape[1]
        segment = int(segments[r, min(position, width - 1)])
        if segment < 1 and position > 0:
            segment = int(segments[r, min(position - 1, width - 1)])
        if 1 <= segment <= table.shape[1]:
            value = int(table[r, segment - 1])
            return value if value >= 0 else None
        return None

    return lookup


# -- writing -----------------------------------------------------------------------------------


class OutputLock:
    """An exclusive ``flock`` on ``.NAME.lock`` beside an output, held for a whole run.

    Two runs writing one output would interleave their files; the second is refused at
    once with the first's pid. The lock file is removed on release; a killed run's lock
    file is taken over (the kernel drops the lock of a dead process).
    """

    def __init__(self, output: str | os.PathLike):
        output = Path(output)
        self.output = output
        self.path = output.parent / f".{output.name}.lock"
        self.descriptor: int | None = None

    def acquire(self) -> OutputLock:
        while True:
            try:
                descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as error:
                raise DatasetError(
                    f"cannot write in {self.path.parent}: {error.strerror}", path=self.output
                ) from None
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
                os.close(descriptor)
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise DatasetError(
                        f"cannot lock {self.path}: {error.strerror}", path=self.output
                    ) from None
                raise DatasetError(
                    f"another gemma-turns run (pid {holder or '?'}) is writing {self.output}; "
                    "wait for it to finish, or write elsewhere",
                    path=self.output,
                ) from None
            try:  # the holder before us may have removed the file we opened: try again
                same = os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(descriptor, 0)
                os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
                self.descriptor = descriptor
                return self
            os.close(descriptor)

    def release(self) -> None:
        if self.descriptor is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.descriptor)
            self.descriptor = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _partial_prefix(name: str) -> str:
    return f".{name}.partial-"


def _remove_dead_partials(folder: Path, name: str) -> list[Path]:
    """Remove ``.NAME.partial-PID-*`` and ``.NAME.old-PID-*`` left by runs that died: their
    pid is not running (a pid that runs again, reused, keeps them: only provably dead runs'
    leftovers go). Returns what was removed."""
    removed = []
    pattern = re.compile(rf"\.{re.escape(name)}\.(?:partial|old)-(\d+)-")
    for entry in folder.iterdir():
        match = pattern.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's running process
        return True
    return True


class ArrayWriter:
    """Array files written into a hidden directory beside the output, renamed into place by
    :meth:`commit` with the manifest written last, removed by :meth:`abort`. Holds the
    output's :class:`OutputLock` from construction to commit or abort."""

    def __init__(
        self,
        output: str | os.PathLike,
        *,
        sharded: bool,
        compress: bool,
        file_format: str | None = None,
        pad_id: int = 0,
        padding: str = "right",
    ):
        self.path = Path(output)
        self.sharded = sharded
        self.compress = compress
        self.files: list[dict] = []
        try:
            self.file_format = file_format_of(output, file_format) if not sharded else (
                file_format or "npz"
            )
        except ValueError as error:
            raise DatasetError(str(error), path=self.path) from None
        if self.file_format not in FILE_FORMATS.values():
            raise DatasetError(
                f"file_format must be 'npz' or 'parquet', got {self.file_format!r}", path=self.path
            )
        self.pad_id, self.padding = pad_id, padding
        if self.file_format == "parquet":
            from .store_parquet import require_pyarrow

            require_pyarrow()  # before any work: say how to install it
        if sharded:
            if self.path.exists() and not (self.path.is_dir() and _replaceable_dir(self.path)):
                raise DatasetError(
                    f"{self.path} exists and is not a gemma-turns output directory (it holds "
                    "files a run did not write, which replacing it would delete); remove them "
                    "or choose another directory",
                    path=self.path,
                )
        else:
            if self.path.suffix not in FILE_FORMATS:
                raise DatasetError(
                    f"name the output FILE.npz or FILE.parquet (got {self.path}), or give a "
                    "shard size to write a directory of shards",
                    path=self.path,
                )
            if self.path.is_dir():
                raise DatasetError(f"{self.path} is a directory; name a .npz file", path=self.path)
            _check_manifest_owner(self.path)
        parent = self.path.parent
        if not parent.is_dir():
            raise DatasetError(
                f"cannot write {self.path}: {parent} is not a directory", path=self.path
            )
        self.lock = OutputLock(self.path).acquire()
        try:
            self.removed = _remove_dead_partials(parent, self.path.name)
            prefix = f"{_partial_prefix(self.path.name)}{os.getpid()}-"
            self.work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            os.chmod(self.work, 0o777 & ~_umask())  # mkdtemp makes it private; outputs are not
        except OSError as error:
            self.lock.release()
            raise DatasetError(f"cannot write in {parent}: {error.strerror}", path=parent) from None

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST if self.sharded else manifest_beside(self.path)

    def write(self, blocks: list[dict[str, np.ndarray]]) -> None:
        """One .npz (or .parquet) file of the rows of ``blocks``, one after the other."""
        suffix = "parquet" if self.file_format == "parquet" else "npz"
        name = f"shard-{len(self.files):05d}.{suffix}" if self.sharded else self.path.name
        if self.file_format != "parquet":
            self.files.append(write_npz(self.work / name, blocks, compress=self.compress))
            return
        from .store_parquet import write_parquet

        path = self.work / name
        keys = write_parquet(path, blocks, pad_id=self.pad_id, padding=self.padding, compress=self.compress)
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        rows = sum(len(next(iter(block.values()))) for block in blocks)
        self.files.append({"name": name, "rows": rows, "sha256": _sha256(path), "keys": keys})

    def add(self, entries: list[dict]) -> None:
        """Files that others wrote into :attr:`work` (workers of a distributed run), each
        ``{"name", "rows", "sha256", "keys"}`` as :func:`write_npz` returns it: checked to
        be there with their size, listed in the manifest in the order given."""
        for entry in entries:
            path = self.work / entry["name"]
            try:
                size = path.stat().st_size
            except OSError:
                size = None
            if size != entry.get("bytes"):
                raise DatasetError(
                    f"{path} is missing or has {size} bytes, not the {entry.get('bytes')} its "
                    "worker reported; run again",
                    path=path,
                )
            self.files.append(entry)

    def remove_unlisted(self) -> list[str]:
        """Remove from :attr:`work` what no listed file is (what killed workers left)."""
        listed = {entry["name"] for entry in self.files}
        removed = []
        for entry in self.work.iterdir():
            if entry.name not in listed:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry.name)
        return removed

    def commit(self, manifest: dict) -> tuple[Path, tuple[Path, ...]]:
        try:
            if self.sharded:
                _write_json(self.work / MANIFEST, manifest)
                _fsync_dir(self.work)
                old = None
                if self.path.exists():
                    prefix = f".{self.path.name}.old-{os.getpid()}-"
                    old = Path(tempfile.mkdtemp(prefix=prefix, dir=self.path.parent))
                    os.rename(self.path, old / "dataset")
                os.rename(self.work, self.path)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            else:
                # Remove the old manifest first: a run stopped between the renames leaves an
                # array file without a manifest, which load_dataset refuses.
                self.manifest_path.unlink(missing_ok=True)
                os.replace(self.work / self.path.name, self.path)
                _write_json(self.work / MANIFEST, manifest)
                os.replace(self.work / MANIFEST, self.manifest_path)
                shutil.rmtree(self.work, ignore_errors=True)
            _fsync_dir(self.path.parent)
        finally:
            self.lock.release()
        folder = self.path if self.sharded else self.path.parent
        return self.manifest_path, tuple(folder / entry["name"] for entry in self.files)

    def abort(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        self.lock.release()


def _check_manifest_owner(path: Path) -> None:
    """``NAME.npz`` and ``NAME.parquet`` share ``NAME.manifest.json``: refuse to write one
    while the manifest describes the other, which replacing it would leave unreadable."""
    manifest_path = manifest_beside(path)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return
    others = [name for name in _names(manifest) if name != path.name]
    if others and (path.parent / others[0]).exists():
        raise DatasetError(
            f"{manifest_path} is the manifest of {others[0]}, which writing {path.name} would "
            f"leave without one; remove {others[0]} and its manifest, or name the output "
            "differently",
            path=path,
        )


def write_npz(path: Path, blocks: list[dict[str, np.ndarray]], *, compress: bool) -> dict:
    """One ``.npz`` file of the rows of ``blocks``, written under a hidden name, flushed to
    disk and renamed into place, so a process killed while writing never leaves a partial
    file under ``path``'s name. Returns ``{"name", "rows", "sha256", "bytes", "keys"}``."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.writing-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            keys = _save_npz(handle, blocks, compress=compress)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    rows = sum(len(next(iter(block.values()))) for block in blocks)
    return {
        "name": path.name,
        "rows": rows,
        "sha256": _sha256(path),
        "bytes": path.stat().st_size,
        "keys": keys,
    }


def _save_npz(handle, blocks: list[dict[str, np.ndarray]], *, compress: bool) -> dict:
    """Write what ``np.savez`` writes for the blocks joined by rows, one block at a time, so
    the joined arrays never exist at once. Returns each key's dtype and shape.

    Blocks have one width, but for a packed ``segment_source_line`` table, which is as wide as
    its row with the most segments: narrower ones are widened with -1.
    """
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    keys = {}
    with zipfile.ZipFile(handle, mode="w", compression=compression, allowZip64=True) as archive:
        for key in blocks[0]:
            parts = [block[key] for block in blocks]
            width = max(part.shape[1:] for part in parts)
            parts = [
                part
                if part.shape[1:] == width
                else np.pad(part, ((0, 0), (0, width[0] - part.shape[1])), constant_values=-1)
                for part in parts
            ]
            shape = (sum(len(part) for part in parts), *width)
            header = {
                "descr": np.lib.format.dtype_to_descr(parts[0].dtype),
                "fortran_order": False,
                "shape": shape,
            }
            with archive.open(f"{key}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, header)
                for part in parts:
                    if part.size:  # a memoryview of no bytes cannot be cast
                        member.write(memoryview(np.ascontiguousarray(part)).cast("B"))
            keys[key] = {"dtype": parts[0].dtype.name, "shape": ["rows", *width]}
    return keys


class AtomicText:
    """A text file written under a hidden temporary name, renamed on :meth:`commit`; ``-``
    writes to standard output as it goes. A failed write raises DatasetError naming the file,
    and :meth:`abort` removes the temporary file."""

    def __init__(self, path: str | os.PathLike, *, stdout=None):
        self.name = os.fspath(path)
        self.temporary = None
        if self.name == "-":
            self.handle = stdout
            return
        self.path = Path(path)
        try:
            _remove_dead_partials(self.path.parent, self.path.name)
            descriptor, temporary = tempfile.mkstemp(
                prefix=f"{_partial_prefix(self.path.name)}{os.getpid()}-", dir=self.path.parent
            )
        except OSError as error:
            raise DatasetError(
                f"cannot write {self.path}: {error.strerror}", path=self.path
            ) from None
        self.temporary = Path(temporary)
        os.chmod(self.temporary, 0o666 & ~_umask())  # mkstemp makes it private; outputs are not
        self.handle = os.fdopen(descriptor, "w", encoding="utf-8")

    def write(self, text: str) -> None:
        try:
            self.handle.write(text)
        except OSError as error:
            raise self._failed(error) from None

    def commit(self) -> None:
        try:
            self.handle.flush()
            if self.temporary is None:
                return
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.temporary, self.path)
        except OSError as error:
            raise self._failed(error) from None

    def abort(self) -> None:
        if self.temporary is None:
            return
        try:
            self.handle.close()
        except OSError:  # the buffered rest cannot be written either: it is being discarded
            pass
        self.temporary.unlink(missing_ok=True)

    def _failed(self, error: OSError) -> DatasetError:
        self.abort()
        where = "standard output" if self.temporary is None else self.name
        return DatasetError(f"cannot write {where}: {error.strerror or error}", path=self.name)


class RunOutput:
    """What one run writes: its arrays (``target``) and, when ``rejects`` names one, its
    rejects file (``self.rejects``, an AtomicText). In a ``with`` block both are committed
    together by :meth:`commit`, or both abandoned if the block raises (the commit included),
    so a failed run leaves neither half-written. ``write_dataset`` and the distributed
    driver share it."""

    def __init__(self, target: ArrayWriter, rejects: str | os.PathLike | None):
        self.target = target
        self.rejects_path = rejects
        self.rejects: AtomicText | None = None

    def __enter__(self) -> RunOutput:
        try:
            if self.rejects_path is not None:
                self.rejects = AtomicText(self.rejects_path, stdout=sys.stdout)
        except BaseException:
            self.target.abort()
            raise
        return self

    def commit(self, manifest: dict) -> tuple[Path, tuple[Path, ...]]:
        """Commit the arrays with ``manifest``, then the rejects file; the arrays' paths."""
        written = self.target.commit(manifest)
        if self.rejects is not None:
            self.rejects.commit()
        return written

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self.target.abort()
            if self.rejects is not None:
                self.rejects.abort()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _replaceable_dir(path: Path) -> bool:
    """An empty directory, or one that a previous run wrote: our manifest and shards, and
    nothing else (replacing it must not delete a file of the user's)."""
    names = [entry.name for entry in path.iterdir()]
    if not names:
        return True
    if any(name != MANIFEST and not SHARD_NAME.fullmatch(name) for name in names):
        return False
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def check_paths(
    *,
    inputs: Sequence = (),
    output: str | os.PathLike | None = None,
    sharded: bool = False,
    rejects: str | os.PathLike | None = None,
) -> None:
    """Refuse, before any work, outputs that would overwrite an input or each other.

    ``output`` may not be an input, nor (one ``.npz``) have an input as its manifest, nor (a
    shard directory, replaced whole) hold an input. ``rejects`` may not be an input, the
    output or its manifest, lie inside a shard directory, be a directory, a symlink or
    anything but a regular file (``/dev/stdout`` is a symlink: pass ``-`` for standard
    output). Raises DatasetError.
    """
    taken = [name for name in inputs if name not in (None, "-")]
    if output is not None:
        output = Path(output)
        written = [output] if sharded else [output, manifest_beside(output)]
        for name in taken:
            for path in written:
                if _same(name, path):
                    what = "output" if path == output else "manifest of the output"
                    raise DatasetError(
                        f"the {what} {path} is the input {name}: writing it would destroy the "
                        "input; name another output",
                        path=path,
                    )
            if sharded and Path(name).resolve().is_relative_to(output.resolve()):
                raise DatasetError(
                    f"the input {name} is inside the output directory {output}, which a run "
                    "replaces whole, deleting the files it did not write; write the output "
                    "elsewhere",
                    path=output,
                )
        if sharded:
            written = [output]
    if rejects is None or os.fspath(rejects) == "-":
        return
    path = Path(rejects)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        kind = "a directory" if path.is_dir() else (
            "a symlink" if path.is_symlink() else "not a regular file"
        )
        raise DatasetError(
            f"--rejects {rejects} is {kind}; name a regular file (or '-' for standard output)",
            path=rejects,
        )
    if output is not None and sharded and path.resolve().is_relative_to(output.resolve()):
        raise DatasetError(
            f"the rejects file {rejects} is inside the output directory {output}, which "
            "a run replaces whole; write it elsewhere",
            path=rejects,
        )
    others = taken + ([] if output is None else written)
    if any(_same(path, other) for other in others):
        raise DatasetError(
            f"the rejects file {rejects} is also an input or an output of this run; name "
            "another file",
            path=rejects,
        )


def _same(a, b) -> bool:
    a, b = Path(a), Path(b)
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _write_json(path: Path, value: dict) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_or_none(path: Path) -> str | None:
    try:
        return _sha256(path)
    except OSError:
        return None
