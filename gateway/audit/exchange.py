"""Exported audit records: CSV and JSON writers, and a reader for either.

Both formats carry every column a record has (seq, time, event, message ids,
fields, previous hash, hash), so an export can be checked on its own: each
record's hash must match its contents and each must link to the one before
(`sealgate audit verify --file EXPORT`). JSON is an array of objects; CSV has a
header line and the fields as one canonical JSON column.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import Any, TextIO

from gateway.audit.chain import Record, dumps, parse_iso_time

FORMATS = ("csv", "json")
COLUMNS = ("seq", "time", "event", "message_id", "related_id", "fields", "prev_hash", "hash")


class ExportFormatError(ValueError):
    """A file that is not an audit export (the message says where)."""


def record_to_json(record: Record) -> dict[str, Any]:
    """A record as one object of a JSON export."""
    return {
        "seq": record.seq,
        "time": record.time,
        "event": record.event,
        "message_id": record.message_id,
        "related_id": record.related_id,
        "fields": record.fields,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


class ExportWriter:
    """Writes records one at a time (exports can be larger than memory)."""

    def __init__(self, out: TextIO, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}")
        self._out = out
        self._fmt = fmt
        self.count = 0
        self._csv = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(COLUMNS)
        else:
            out.write("[")

    def write(self, record: Record) -> None:
        """Add one record."""
        if self._csv is not None:
            self._csv.writerow(
                (
                    record.seq,
                    record.time,
                    record.event,
                    record.message_id or "",
                    record.related_id or "",
                    dumps(record.fields),
                    record.prev_hash,
                    record.hash,
                )
            )
        else:
            # Columns in their natural order (seq first); fields keep their canonical order.
            line = json.dumps(record_to_json(record), ensure_ascii=False, separators=(",", ":"))
            self._out.write(("\n" if self.count == 0 else ",\n") + line)
        self.count += 1

    def close(self) -> None:
        """Finish the document (the stream stays open)."""
        if self._csv is None:
            self._out.write("\n]\n" if self.count else "]\n")


def write_export(records: Iterable[Record], out: TextIO, fmt: str) -> int:
    """Write records as an export; return how many."""
    writer = ExportWriter(out, fmt)
    for record in records:
        writer.write(record)
    writer.close()
    return writer.count


def read_export(text: str) -> list[Record]:
    """The records of a CSV or JSON export (the format is told by the first character)."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        return _read_json(stripped)
    return _read_csv(text)


def _read_json(text: str) -> list[Record]:
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise ExportFormatError(f"not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise ExportFormatError("a JSON export is an array of records")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ExportFormatError(f"item {i + 1} is not a record object")
        out.append(_record(item, f"item {i + 1}"))
    return out


def _read_csv(text: str) -> list[Record]:
    reader = csv.DictReader(text.splitlines())
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ExportFormatError(f"a CSV export starts with the header {','.join(COLUMNS)}")
    out = []
    for row in reader:
        where = f"line {reader.line_num}"
        try:
            fields = json.loads(row["fields"] or "")
        except ValueError:
            raise ExportFormatError(f"{where}: the fields column is not JSON") from None
        item: dict[str, Any] = {**row, "fields": fields}
        out.append(_record(item, where))
    return out


def _record(item: dict[str, Any], where: str) -> Record:
    try:
        fields = item["fields"]
        if not isinstance(fields, dict):
            raise ExportFormatError(f"{where}: fields is not an object")
        return Record(
            seq=int(item["seq"]),
            at=parse_iso_time(str(item["time"])),
            event=str(item["event"]),
            fields=fields,
            prev_hash=str(item["prev_hash"]),
            hash=str(item["hash"]),
            message_id=item.get("message_id") or None,
            related_id=item.get("related_id") or None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ExportFormatError):
            raise
        raise ExportFormatError(f"{where}: not an audit record ({exc})") from None
