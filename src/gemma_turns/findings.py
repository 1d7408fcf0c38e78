"""What the validator reports: the rule catalogue, findings, and the report.

Rules record *hits* as arrays (positions in the concatenated units, and a function that words
the message for hit ``k``); a :class:`Findings` collector keeps them until the report turns
the listed ones into :class:`Finding` values, so a batch with a million broken tokens costs
arrays, not a million strings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

__all__ = [
    "BLOCKING",
    "ENDINGS",
    "EXPECTED_ENDINGS",
    "Ending",
    "Expect",
    "Finding",
    "Findings",
    "RULES",
    "Report",
    "TOLERANCES",
    "accepted_endings",
]

Expect = Literal["inference", "training", "pt"]
Ending = Literal[
    "generation_prompt",
    "empty_thought_prompt",
    "model_turn",
    "hand_over",
    "after_results",
    "thought_after_results",
    "user_turn",
    "system_turn",
    "eos",
    "text",
]

ENDINGS: dict[str, str] = {
    "generation_prompt": "the generation prompt (an open model turn header)",
    "model_turn": "a closed model turn (the answer, the end-of-turn marker, \\n)",
    "user_turn": "a closed user turn (the end-of-turn marker, \\n)",
    "empty_thought_prompt": "the large checkpoints' generation prompt (an open model turn header and an empty thought channel)",
    "hand_over": "the model's hand-over <|tool_response> after its calls (awaiting their results)",
    "after_results": "a model turn left open after tool results (awaiting the model's continuation)",
    "thought_after_results": "tool results, then the thinking prompt <|channel>thought\\n",
    "system_turn": "a closed system turn",
    "eos": "<eos>",
    "text": "text without <eos> (a PT prompt)",
}
PT_ENDINGS = frozenset({"eos", "text"})
CHAT_ENDINGS = frozenset(ENDINGS) - PT_ENDINGS
EXPECTED_ENDINGS = {
    "inference": frozenset(
        {"generation_prompt", "empty_thought_prompt", "hand_over", "after_results", "thought_after_results"}
    ),
    "training": frozenset({"model_turn", "hand_over"}),
    "pt": frozenset({"eos"}),
}
# The endings a named ending stands for in dialects that have them (Gemma 4): every form the
# encoder makes where a Gemma 3 sequence would end with it. The prompt after tool results is
# nothing (thinking off) or a thought channel; calls awaiting results end with the hand-over.
ENDING_FORMS = {
    "generation_prompt": frozenset(
        {"generation_prompt", "empty_thought_prompt", "hand_over", "after_results", "thought_after_results"}
    ),
    "model_turn": frozenset({"model_turn", "hand_over", "after_results"}),
    "user_turn": frozenset({"user_turn", "system_turn"}),
}


def accepted_endings(endings, expect, dialect_endings) -> frozenset:
    """The endings accepted for ``endings`` (names, or None: the ``expect`` mode's own, or
    every chat ending) in a dialect that makes ``dialect_endings``. A training sequence never
    ends after tool results: the model's answer to them is what it learns."""
    if endings is None:
        if expect is None:
            return frozenset()
        names = EXPECTED_ENDINGS[expect]
    else:
        names = frozenset().union(*(ENDING_FORMS.get(e, {e}) for e in endings))
    if expect == "training":
        names -= {"after_results", "thought_after_results"}
    return names & dialect_endings

# In this order findings at one token are listed.
RULES: dict[str, str] = {
    "foreign_ids": "ids of another tokenizer (Llama, Mistral, ChatML/Qwen) or Gemma generation (Gemma 2): one finding for all the sequences it explains",
    "dialect_mismatch": "the sequence was written in another chat format than the tokenizer's (one finding for all it breaks)",
    "id_out_of_range": "an id outside the vocabulary (negative, or not below the vocabulary size)",
    "unk": "the <unk> id: text the tokenizer could not encode, or ids of another vocabulary",
    "bos_missing": "the sequence (each packed segment) does not start with BOS, or is empty",
    "bos_inside": "BOS after the start of the sequence: the double-BOS bug",
    "text_bos": "BOS spelled as text (<bos>, [BOS]) at the start: the text-BOS bug",
    "eos_inside": "EOS where none belongs: any EOS in a chat sequence, or before a PT text's end",
    "pad_inside": "PAD inside the sequence, where the attention mask is 1",
    "padding": "padding that is not <pad>, an attention mask with holes, or segment ids out of order",
    "reserved_in_content": "a reserved id (turn or image marker, <mask>, <unusedN>) inside content",
    "bad_start": "a chat sequence whose first token after BOS is not the turn-opening marker",
    "bad_role": "the token after the turn-opening marker is not a role of the dialect",
    "bad_header": "the role is not followed by the newline that ends the turn header",
    "roles_not_alternating": "turns do not alternate user, model, user, ... starting with user",
    "unclosed_turn": "a turn without its end-of-turn marker: a new turn starts, or the sequence ends, inside it",
    "stray_end_of_turn": "an end-of-turn marker with no open turn",
    "missing_turn_newline": "an end-of-turn marker not followed by its \\n",
    "text_between_turns": "tokens between a turn's closing \\n and the next turn",
    "misplaced_system": "a system turn after the first turn: the system turn comes first or not at all",
    "misplaced_marker": "a thinking, channel, declaration, call, result or media marker where the dialect has no place for it",
    "bad_thought": "a thought channel whose text is not 'thought\\n', the reasoning, '\\n'",
    "bad_tool_syntax": "a declaration, call or result body that Gemma's tool syntax cannot read back",
    "unbalanced_results": "tool results that do not answer the calls before them one to one",
    "bad_ending": "the sequence does not end as expected (generation prompt, model turn, EOS)",
    "nothing_to_learn": "training: the trained model turns have no content",
    "content_whitespace": "content that starts or ends with whitespace, which the formatter trims",
    "noncanonical": "a text run that re-encodes to other ids (another tokenizer or Gemma version)",
    "hf_space_runs": "a run of 17+ spaces split as Hugging Face's fast Gemma tokenizer splits it, not as SentencePiece does (tolerate with 'hf_space_runs')",
    "labels": "labels (-100 where not trained) that are neither the ids nor the ids shifted by one, or a file that mixes both",
    "loss_mask": "the loss mask differs from the encoder's (or is not 0/1, or not aligned with the ids)",
    "loss_mask_all_zero": "the loss mask is all zero where tokens should be trained",
}
RULE_RANK = {rule: rank for rank, rule in enumerate(RULES)}

# Rules after which a sequence's turn layout cannot be trusted: the loss-mask and trim rules
# skip such a sequence, and parse() refuses it. (text_bos blocks a chat sequence too, where it
# stands for bad_start; a PT text that starts with '<bos>' is still a text.)
BLOCKING = frozenset(
    {
        "id_out_of_range",
        "bos_missing",
        "bos_inside",
        "eos_inside",
        "pad_inside",
        "bad_start",
        "bad_role",
        "bad_header",
        "unclosed_turn",
        "stray_end_of_turn",
        "missing_turn_newline",
        "text_between_turns",
        "misplaced_system",
        "misplaced_marker",
        "bad_thought",
        "bad_tool_syntax",
        "unbalanced_results",
        "dialect_mismatch",
        "foreign_ids",
    }
)

# Known differences of other tokenizers that validate(tolerate=...) accepts.
TOLERANCES: dict[str, str] = {
    "hf_space_runs": "runs of 17+ spaces split into other space pieces, as Hugging Face's fast "
    "Gemma tokenizer splits them (the text is the same; SentencePiece takes the longest pieces)",
}

NO_TOKEN = np.iinfo(np.int64).min  # a hit at the end of a sequence: no token there
CONTEXT_BEFORE = 5
CONTEXT_AFTER = 4


@dataclass(frozen=True, slots=True)
class Finding:
    """One broken thing in one sequence.

    ``sequence`` is the index of the sequence (row) in the input; ``position`` the token's
    index in that row (for a packed row, in the row, not the segment); ``token_id`` is None
    when the position is the end of the sequence (something is missing there).
    """

    rule: str
    sequence: int
    position: int
    token_id: int | None
    expected: str | None
    message: str
    context: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        token = "end of sequence" if self.token_id is None else f"id {self.token_id}"
        text = f"sequence {self.sequence}, position {self.position} ({token}): {self.rule}: {self.message}"
        if self.expected:
            text += f"\n    expected: {self.expected}"
        return text + f"\n    context:  {self.context}"


@dataclass(frozen=True, slots=True)
class Report:
    """What :func:`~gemma_turns.validator.validate` found.

    ``findings`` are sorted by sequence and position, at most ``max_findings`` of them;
    ``counts`` counts every finding by rule, listed or not; ``invalid`` is the number of
    sequences (rows) with at least one finding. ``notes``: how the input was read (e.g. which
    labels convention was detected); never a failure.
    """

    findings: tuple[Finding, ...]
    counts: Mapping[str, int]
    sequences: int
    tokens: int
    invalid: int
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.counts

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def truncated(self) -> bool:
        return self.total > len(self.findings)

    def summary(self) -> str:
        text = (
            f"{self.sequences} sequences ({self.tokens} tokens): "
            f"{self.sequences - self.invalid} valid, {self.invalid} invalid"
        )
        if self.counts:
            by_rule = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
            text += "; findings by rule: " + ", ".join(f"{rule} {n}" for rule, n in by_rule)
        return text

    def format(self, limit: int | None = 20) -> str:
        """The report for people: the first ``limit`` findings, then the summary."""
        shown = self.findings if limit is None else self.findings[:limit]
        lines = [str(finding) for finding in shown]
        if self.total > len(shown):
            lines.append(f"... and {self.total - len(shown)} more findings")
        lines.append(self.summary())
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


class Findings:
    """Hits of every rule over one batch of units, kept as arrays until :meth:`report`.

    ``units`` is a :class:`~gemma_turns.shapes.Units`; ``show(token_id)`` spells a token for
    the context strings. ``blocked[u]`` is set once unit ``u`` has a BLOCKING hit.
    """

    def __init__(self, units, show):
        self.units = units
        self.show = show
        self.groups: list = list(units.early)  # (rule, rows, positions, tokens, render)
        self.blocked = np.zeros(len(units.starts), dtype=bool)
        self.suppressed = np.zeros(0, dtype=np.int64)  # units whose findings one finding explains
        self.explaining: set[int] = set()  # groups that explain suppressed units: always kept
        self.folded_rows = np.zeros(0, dtype=np.int64)  # rows invalid through a finding elsewhere

    def suppress(self, units) -> None:
        """Report no finding in ``units`` except the explaining ones (:meth:`explain`)."""
        self.suppressed = np.union1d(self.suppressed, units)

    def explain(self, rule: str, flat_positions, render, *, units, rows_explained=None) -> None:
        """A hit that explains suppressed units (kept when everything else in them is
        dropped); ``rows_explained``: rows it stands for, each counted invalid."""
        self.hit(rule, flat_positions, render, units=units)
        self.explaining.add(len(self.groups) - 1)
        if rows_explained is not None:
            self.folded_rows = np.union1d(self.folded_rows, rows_explained)

    def hit(self, rule: str, flat_positions, render, *, units=None) -> None:
        """Hits at positions of ``flat``; pass ``units`` for positions that may be a unit's end.

        ``render(k)`` gives ``(message, expected)`` of the ``k``-th hit."""
        b = self.units
        flat_positions = np.asarray(flat_positions, dtype=np.int64)
        if len(flat_positions) == 0:
            return
        if units is None:
            units = b.units_at(flat_positions)
        units = np.asarray(units, dtype=np.int64)
        inside = flat_positions < b.ends[units]
        if len(b.flat):
            found = b.flat[np.minimum(flat_positions, len(b.flat) - 1)].astype(np.int64)
            tokens = np.where(inside, found, NO_TOKEN)
        else:
            tokens = np.full(len(flat_positions), NO_TOKEN)
        positions = b.offsets[units] + flat_positions - b.starts[units]
        self.groups.append((rule, b.rows[units], positions, tokens, render))
        if rule in BLOCKING:
            self.blocked[units] = True

    def _in_suppressed(self, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
        b, units = self.units, self.suppressed
        out = np.zeros(len(rows), dtype=bool)
        for u in units.tolist():
            lo = b.offsets[u]
            out |= (rows == b.rows[u]) & (positions >= lo) & (positions <= lo + b.ends[u] - b.starts[u])
        return out

    def has(self, rule: str) -> bool:
        return any(group[0] == rule and len(group[1]) for group in self.groups)

    def report(self, max_findings: int | None) -> Report:
        """Findings sorted by sequence, position and the rule catalogue's order."""
        counts: Counter = Counter()
        rows, positions, ranks, group_of, index_in = [], [], [], [], []
        for g, (rule, r, p, _, _) in enumerate(self.groups):
            if len(r) == 0:
                continue
            if len(self.suppressed) and g not in self.explaining:
                keep = ~self._in_suppressed(np.asarray(r), np.asarray(p))
                if not keep.all():
                    index = np.flatnonzero(keep)
                    if len(index):
                        counts[rule] += len(index)
                        rows.append(np.asarray(r, dtype=np.int64)[index])
                        positions.append(np.asarray(p, dtype=np.int64)[index])
                        ranks.append(np.full(len(index), RULE_RANK.get(rule, len(RULE_RANK))))
                        group_of.append(np.full(len(index), g))
                        index_in.append(index)
                    continue
            counts[rule] += len(r)
            rows.append(np.asarray(r, dtype=np.int64))
            positions.append(np.asarray(p, dtype=np.int64))
            ranks.append(np.full(len(r), RULE_RANK.get(rule, len(RULE_RANK))))
            group_of.append(np.full(len(r), g))
            index_in.append(np.arange(len(r)))
        if rows:
            all_rows = np.concatenate(rows)
            all_groups = np.concatenate(group_of)
            all_index = np.concatenate(index_in)
            order = np.lexsort(
                (all_index, all_groups, np.concatenate(ranks), np.concatenate(positions), all_rows)
            )
            invalid = len(np.union1d(all_rows, self.folded_rows))
        else:
            order, invalid = np.zeros(0, np.int64), len(self.folded_rows)
        limit = len(order) if max_findings is None else max(0, max_findings)
        findings = []
        for j in order[:limit]:
            rule, r, p, t, render = self.groups[all_groups[j]]
            k = int(all_index[j])
            message, expected = render(k)
            row, position, token = int(r[k]), int(p[k]), int(t[k])
            findings.append(
                Finding(
                    rule=rule,
                    sequence=row,
                    position=position,
                    token_id=None if token == NO_TOKEN else token,
                    expected=expected,
                    message=message,
                    context=self.context(row, position),
                )
            )
        return Report(
            findings=tuple(findings),
            counts=dict(counts),
            sequences=self.units.n_rows,
            tokens=int(len(self.units.flat)),
            invalid=invalid,
        )

    def context(self, row: int, position: int) -> str:
        """A few tokens either side of ``position`` in ``row``, the token itself in »«."""
        ids = self.units.row(row)
        show = self.show
        lo = max(0, position - CONTEXT_BEFORE)
        hi = min(len(ids), position + 1 + CONTEXT_AFTER)
        before = "".join(show(int(i)) for i in ids[lo:position])
        if position < len(ids):
            here = show(int(ids[position]))
            after = "".join(show(int(i)) for i in ids[position + 1 : hi])
        else:
            here, after = "", ""
        return (
            ("…" if lo > 0 else "")
            + before
            + f"»{here}«"
            + after
            + ("…" if hi < len(ids) else "")
            + ("" if position < len(ids) else " (end)")
        )
