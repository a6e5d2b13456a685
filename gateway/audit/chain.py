"""The hash chain: canonical form of a record, its hash, and the check of a whole trail.

Record n's hash is SHA-256 over record n-1's hash (64 hex digits; 64 zeros for
the first record) followed by the canonical serialisation of (seq, time, event,
fields): JSON with sorted keys, no whitespace, UTF-8, the time as an ISO 8601
UTC string to the millisecond. Editing, deleting, inserting or reordering a
record therefore breaks the hash of that record or the link of the next one;
only cutting records off the end leaves an intact (shorter) chain, which is why
admins keep the head (`SEQ:HASH`) somewhere else and check against it.

Purging old records keeps the chain checkable: the last purged record's seq and
hash become the anchor the remaining chain starts from, and each purge appends
an `audit_purged` record naming the anchor and the (seq, hash) of every older
record kept under legal hold. Records below the anchor are then checked against
the latest such record instead of against their (purged) neighbours.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.audit.catalog import message_ids

GENESIS = "0" * 64
PURGE_EVENT = "audit_purged"


def round_time(at: float) -> float:
    """A time as records keep it: Unix seconds to the millisecond."""
    return round(at * 1000) / 1000


def iso_time(at: float) -> str:
    """A record's time as its canonical form writes it: 2026-11-23T14:33:38.123Z."""
    ms = round(at * 1000)
    second, milli = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{milli:03d}Z"


def parse_iso_time(text: str) -> float:
    """The Unix time of an iso_time() string (or any ISO 8601 time with a zone)."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round_time(when.timestamp())


def jsonable(value: Any) -> Any:
    """value as plain JSON types (str, int, float, bool, None, lists, string-keyed dicts)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        # NaN and infinities have no JSON form; they are never ids or codes anyway.
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    return str(value)


def dumps(value: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, non-ASCII kept as is."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical(seq: int, at: float, event: str, fields: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers (after the previous hash)."""
    body = {"seq": seq, "time": iso_time(at), "event": event, "fields": fields}
    return dumps(body).encode("utf-8")


def chain_hash(prev_hash: str, seq: int, at: float, event: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the previous record's hash and this record's canonical form."""
    digest = hashlib.sha256(prev_hash.encode("ascii", "replace"))
    digest.update(canonical(seq, at, event, fields))
    return digest.hexdigest()


@dataclass(frozen=True)
class Record:
    """One audit record as stored."""

    seq: int
    at: float
    event: str
    fields: dict[str, Any]
    prev_hash: str
    hash: str
    message_id: str | None = None
    related_id: str | None = None

    @classmethod
    def make(
        cls, prev_hash: str, seq: int, at: float, event: str, fields: Mapping[str, Any]
    ) -> Record:
        """The record following prev_hash, its hash and message ids computed."""
        plain = jsonable(dict(fields))
        at = round_time(at)
        mid, related = message_ids(plain)
        digest = chain_hash(prev_hash, seq, at, event, plain)
        return cls(seq, at, event, plain, prev_hash, digest, mid, related)

    @property
    def time(self) -> str:
        """The record's time in ISO 8601 (UTC)."""
        return iso_time(self.at)

    def computed_hash(self) -> str:
        """The hash the record's contents and stored previous hash give."""
        return chain_hash(self.prev_hash, self.seq, self.at, self.event, self.fields)


@dataclass(frozen=True)
class Problem:
    """A place where the trail was changed: the record's seq (None: the trail as a whole)."""

    seq: int | None
    text: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.text}" if self.seq is not None else self.text


@dataclass
class Report:
    """The outcome of a check: what was looked at and every problem found."""

    anchor_seq: int
    anchor_hash: str
    head_seq: int
    head_hash: str
    checked: int = 0
    held: int = 0
    gaps: int = 0  # in an export: places where records were left out (not checked as links)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.problems

    @property
    def head(self) -> str:
        """The checkpoint to keep: SEQ:HASH of the last record."""
        return f"{self.head_seq}:{self.head_hash}"


def parse_checkpoint(text: str) -> tuple[int, str]:
    """SEQ and HASH from "SEQ:HASH"; ValueError when it is not one."""
    seq_text, sep, digest = text.strip().partition(":")
    digest = digest.lower()
    if (
        not sep
        or not seq_text.isdigit()
        or len(digest) != 64
        or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise ValueError(f"{text!r} is not a checkpoint SEQ:HASH (as `sealgate audit head` prints)")
    return int(seq_text), digest


class ChainChecker:
    """Checks records fed in seq order against the anchor they start from."""

    def __init__(
        self,
        anchor_seq: int = 0,
        anchor_hash: str = GENESIS,
        expect_head: tuple[int, str] | None = None,
        *,
        whole: bool = True,
    ) -> None:
        self.report = Report(anchor_seq, anchor_hash, anchor_seq, anchor_hash)
        # False for an export: a window or a selection, where gaps are expected.
        self._whole = whole
        self._expect = expect_head
        self._at_checkpoint: str | None = None
        self._last_seq = anchor_seq
        self._last_hash = anchor_hash
        self._below: dict[int, str] = {}
        self._purge: Record | None = None

    def _problem(self, seq: int | None, text: str) -> None:
        self.report.problems.append(Problem(seq, text))

    def feed(self, record: Record) -> None:
        """Check one record (records must come in ascending seq)."""
        own_ok = self._check_contents(record)
        if record.seq <= self.report.anchor_seq:
            # Kept under legal hold when older records were purged: checked at finish()
            # against the latest purge record, which lists every record kept.
            self._below[record.seq] = record.hash
            self.report.held += 1
            return
        expected = self._last_seq + 1
        if record.seq < expected:
            self._problem(record.seq, "appears more than once")
            return
        self.report.checked += 1
        if record.seq > expected and not self._whole:
            self.report.gaps += 1
        elif record.seq > expected:
            missing = (
                f"record {expected} is" if record.seq == expected + 1 else
                f"records {expected} to {record.seq - 1} are"
            )  # fmt: skip
            self._problem(record.seq, f"{missing} missing before it (deleted)")
        elif record.prev_hash != self._last_hash:
            self._problem(
                record.seq,
                f"does not follow record {self._last_seq}: the link to the previous record "
                "is broken (a record was deleted, inserted or moved here)",
            )
        if self._expect is not None and record.seq == self._expect[0]:
            self._at_checkpoint = record.hash
        if own_ok and record.event == PURGE_EVENT:
            self._purge = record
        # Carry on from the stored hash: each change is reported once, where it is.
        self._last_seq, self._last_hash = record.seq, record.hash
        self.report.head_seq, self.report.head_hash = record.seq, record.hash

    def _check_contents(self, record: Record) -> bool:
        if record.computed_hash() != record.hash:
            self._problem(
                record.seq,
                f"({record.time}, {record.event}) its contents do not match its hash "
                "(edited, or moved from another place)",
            )
            return False
        if (record.message_id, record.related_id) != message_ids(record.fields):
            self._problem(record.seq, "its message id columns were changed")
            return False
        return True

    def finish(self) -> Report:
        """Check what only the whole trail shows; return the report."""
        report = self.report
        if report.anchor_seq > 0 and self._whole:
            self._check_anchor()
        if self._expect is not None:
            self._check_head(*self._expect)
        return report

    def _check_anchor(self) -> None:
        report, purge = self.report, self._purge
        if purge is None or (
            purge.fields.get("anchor_seq") != report.anchor_seq
            or purge.fields.get("anchor_hash") != report.anchor_hash
        ):
            self._problem(
                None,
                f"the purge anchor (record {report.anchor_seq}) is not the one the latest "
                f"{PURGE_EVENT} record names: records were removed from the start of the trail",
            )
            return
        listed: dict[int, str] = {}
        for item in purge.fields.get("held") or []:
            if isinstance(item, list) and len(item) == 2:
                listed[int(item[0])] = str(item[1])
        for seq, digest in sorted(self._below.items()):
            if seq not in listed:
                self._problem(seq, "lies before the purge anchor but was not kept by the purge")
            elif listed[seq] != digest:
                self._problem(seq, "differs from the record the purge kept under legal hold")
        for seq in sorted(set(listed) - set(self._below)):
            self._problem(seq, "kept under legal hold by the purge, now missing (deleted)")

    def _check_head(self, seq: int, digest: str) -> None:
        report = self.report
        if seq > report.head_seq:
            self._problem(
                None,
                f"the trail ends at record {report.head_seq}, before the checkpoint {seq}: "
                "records were removed from the end",
            )
        elif seq == report.anchor_seq:
            if digest != report.anchor_hash:
                self._problem(seq, "differs from the checkpoint")
        elif seq < report.anchor_seq:
            self._problem(
                None,
                f"the checkpoint (record {seq}) is older than the purged part of the trail "
                f"(up to record {report.anchor_seq}); it cannot be checked",
            )
        elif self._at_checkpoint is None:
            self._problem(seq, "the checkpoint's record is missing (deleted)")
        elif self._at_checkpoint != digest:
            self._problem(seq, "differs from the checkpoint")


def check(
    records: list[Record],
    anchor_seq: int = 0,
    anchor_hash: str = GENESIS,
    expect_head: tuple[int, str] | None = None,
    *,
    whole: bool = True,
) -> Report:
    """Check records held in memory: a whole trail, or (whole=False) an export's selection."""
    checker = ChainChecker(anchor_seq, anchor_hash, expect_head, whole=whole)
    for record in sorted(records, key=lambda r: r.seq):
        checker.feed(record)
    return checker.finish()
