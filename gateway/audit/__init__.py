"""The tamper-evident audit trail: what happened to each message, hash-chained.

- catalog: which events and fields are audited (an allow-list; no PHI);
- chain: the canonical form, the hash chain and its check;
- trail: the records in the shared store (append, read, verify, purge, holds);
- recorder: a gateway.log listener that appends from a background thread;
- exchange: CSV and JSON export, and reading an export back.

docs/audit.md describes what is recorded, checking, export, retention and holds.
"""
