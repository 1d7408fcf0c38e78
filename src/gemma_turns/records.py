"""What became of each input record, and one counter over them.

Every input line (or in-memory record) gives exactly one :class:`Record`, whose ``kind`` is
one of

    encoded     its ids go into a row as they are
    truncated   its ids go into a row, cut to fit (``truncation="truncate"`` or
                ``"drop_oldest_turns"``)
    dropped     valid, but left out of the arrays (too long under ``"drop"``, or one id with
                nothing to predict under ``shift``); ``drop`` says why
    rejected    it cannot be encoded; ``error`` (a ConversationError) says why
    blank       an empty or whitespace-only line: counted, not encoded

and :class:`Counts` adds them up: ``lines == encoded + rejected + blank`` where the encoded
(in the summary's sense: "went through the encoder") are the kept rows plus the dropped.

Numbering: ``Record.number`` is where the record is in its input. Lines of a file are
counted from 1, as editors and ``sed -n Np`` count them (the rejects file's ``line``, the
``record`` of an error read from a file, ``source_line`` in the arrays); records passed
in memory, and sequences, rows and positions in arrays, are indices counted from 0.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np

from .arrays import Batch
from .encoder import Encoding
from .errors import ConversationError

__all__ = ["Counts", "Drop", "Kind", "Record"]

Kind = Literal["encoded", "truncated", "dropped", "rejected", "blank"]
SHOWN_PROBLEMS = 5  # problem line numbers a summary lists


@dataclass(frozen=True, slots=True)
class Drop:
    """Why a valid record was left out of the arrays."""

    code: str  # "too_long", or "no_target" (one id: nothing to predict with shift)
    reason: str
    fix: str | None = None

    def to_dict(self) -> dict:
        out = {"code": self.code, "reason": self.reason}
        return {**out, "fix": self.fix} if self.fix else out


@dataclass(frozen=True, slots=True)
class Record:
    """One input record and what became of it (see the module docstring for ``kind``).

    ``encoding``: the ids that go into a row (encoded, truncated); ``length``: its ids before
    any truncation; ``untrained``: a truncated training record whose cut left nothing to
    learn; ``value``: the record as read (its messages, or its text in pt mode), for a
    policy that needs it again.
    """

    number: int
    kind: Kind
    encoding: Encoding | None = None
    error: ConversationError | None = None
    drop: Drop | None = None
    length: int = 0
    untrained: bool = False
    value: object = None

    @classmethod
    def blank_line(cls, number: int) -> Record:
        return cls(number, "blank")

    @classmethod
    def rejected(cls, number: int, error: ConversationError, value: object = None) -> Record:
        return cls(number, "rejected", error=error, value=value)

    @classmethod
    def encoded(cls, number: int, encoding: Encoding, value: object = None) -> Record:
        return cls(number, "encoded", encoding=encoding, length=len(encoding), value=value)

    # The spellings of the records this type replaces (Outcome, Fitted), kept for a release.
    line = property(lambda self: self.number)
    dropped = property(lambda self: self.drop)
    truncated = property(lambda self: self.kind == "truncated")
    blank = property(lambda self: self.kind == "blank")

    @property
    def kept(self) -> bool:
        """Whether its ids go into a row."""
        return self.encoding is not None

    def report(self) -> dict:
        """The rejects-file entry of a dropped or rejected record."""
        if self.error is not None:
            return {"line": self.number, "kind": "rejected", **self.error.to_dict()}
        if self.drop is not None:
            return {"line": self.number, "kind": "dropped", **self.drop.to_dict()}
        raise ValueError(f"record {self.number} was neither dropped nor rejected")


@dataclass
class Counts:
    """Where every record went, and how full the rows are.

    ``lines == blank + rejected + encoded`` and ``encoded == sequences + dropped``;
    ``truncated`` records are among the kept ``sequences``, ``untrained`` among the
    truncated. ``problems`` holds the numbers of the first rejected or dropped records, for
    a summary that shows where they are.
    """

    lines: int = 0
    blank: int = 0
    rejected: Counter = field(default_factory=Counter)  # by error code
    encoded: int = 0
    encoded_tokens: int = 0  # before truncation
    dropped: Counter = field(default_factory=Counter)  # by drop code
    truncated: int = 0
    untrained: int = 0
    sequences: int = 0
    rows: int = 0
    tokens: int = 0  # real tokens in the rows
    cells: int = 0  # rows x width
    input_bytes: int = 0
    notes: Counter = field(default_factory=Counter)  # what documented rules dropped, by note
    problems: list = field(default_factory=list, repr=False)  # first SHOWN_PROBLEMS numbers

    def add(self, record: Record, *, mode: str | None = None, file: str | None = None) -> None:
        """Count one record (``mode`` is accepted for the old signature and unused); ``file``
        names its input when a run reads several (a problem is then shown as ``FILE:LINE``)."""
        self.lines += 1
        if record.kind == "blank":
            self.blank += 1
            return
        if record.kind == "rejected":
            self.rejected[record.error.code] += 1
            self._problem(record.number, file)
            return
        self.encoded += 1
        self.encoded_tokens += record.length
        if record.encoding is not None and record.encoding.notes:
            self.notes.update(record.encoding.notes)
        if record.kind == "dropped":
            self.dropped[record.drop.code] += 1
            self._problem(record.number, file)
            return
        self.sequences += 1
        if record.kind == "truncated":
            self.truncated += 1
            self.untrained += int(record.untrained)

    def _problem(self, number: int, file: str | None = None) -> None:
        if len(self.problems) < SHOWN_PROBLEMS:
            self.problems.append(number if file is None else f"{file}:{number}")

    def merge(self, other: Counts) -> None:
        """Add the counts of another part of the same run (a chunk encoded elsewhere)."""
        for f in fields(self):
            if f.name == "problems":
                room = SHOWN_PROBLEMS - len(self.problems)
                self.problems.extend(other.problems[: max(room, 0)])
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @classmethod
    def from_dict(cls, data: dict) -> Counts:
        """The counts of :meth:`as_dict` (and ``problems``, when given) back."""
        counts = cls()
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name in ("rejected", "dropped", "notes"):
                value = Counter(value)
            elif f.name == "problems":
                value = list(value)
            setattr(counts, f.name, value)
        return counts

    def add_rows(self, batch: Batch) -> None:
        self.rows += batch.shape[0]
        self.tokens += int(np.count_nonzero(batch.attention_mask))
        self.cells += batch.attention_mask.size

    @property
    def fill_ratio(self) -> float:
        """Real tokens / row capacity (rows x width)."""
        return self.tokens / self.cells if self.cells else 0.0

    @property
    def problem_count(self) -> int:
        return sum(self.rejected.values()) + sum(self.dropped.values())

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "problems"}
        out["rejected"] = dict(self.rejected.most_common())
        out["dropped"] = dict(self.dropped.most_common())
        out["notes"] = dict(self.notes.most_common())
        out["fill_ratio"] = round(self.fill_ratio, 6)
        return out

    def summary(self, *, arrays: bool = True) -> str:
        """One line: where the records went; with ``arrays``, also the rows and fill."""

        def by_code(counter: Counter) -> str:
            total = sum(counter.values())
            codes = ", ".join(f"{code} {n}" for code, n in counter.most_common())
            return f"{total} ({codes})" if total else "0"

        head = f"{self.lines} lines: {self.encoded} encoded ({self.encoded_tokens} tokens), "
        if not arrays:  # the summary of `encode` without arrays, as it always was
            text = f"{head}{sum(self.rejected.values())} rejected, {self.blank} blank"
            codes = ", ".join(f"{code} {n}" for code, n in self.rejected.most_common())
            return f"{text} ({codes})" if codes else text
        head += f"{by_code(self.rejected)} rejected, {self.blank} blank"
        untrained = f" ({self.untrained} with nothing left to learn)" if self.untrained else ""
        return (
            f"{head}; {self.truncated} truncated{untrained}, {by_code(self.dropped)} dropped; "
            f"{self.rows} rows, {self.tokens} tokens, fill ratio {self.fill_ratio:.1%}"
        )

    def noted(self) -> str | None:
        """What documented rules left out, once per run: ``notes: dropped_reasoning 3`` (a
        record's reasoning the format has no place for), or None."""
        if not self.notes:
            return None
        return "notes: " + ", ".join(f"{note} {n}" for note, n in self.notes.most_common())

    def where(self, noun: str = "line") -> str | None:
        """Where the first rejected or dropped records are, or None when there are none:
        ``rejected or dropped: lines 2, 4, 5 and 3 more``."""
        total = self.problem_count
        if not total:
            return None
        shown = ", ".join(map(str, self.problems))
        more = f" and {total - len(self.problems)} more" if total > len(self.problems) else ""
        plural = noun if total == 1 else noun + "s"
        return f"rejected or dropped: {plural} {shown}{more}"
