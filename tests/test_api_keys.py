"""API keys: made once, stored as SHA-256 only, scoped, revocable; the `sealgate apikey` CLI."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway import apikeys
from gateway.apikeys import ApiKeyError
from gateway.config import StorageConfig
from gateway.store import open_store

REPO = Path(__file__).resolve().parents[1]


async def test_create_authenticate_revoke(tmp_path: Path) -> None:
    """A key authenticates until revoked; only its hash is stored."""
    store = await open_store(StorageConfig(), tmp_path)
    try:
        key, text = await apikeys.create(
            store, "ehr", {"send", "status"}, ["@clinic.example"], "test"
        )
        assert text.startswith(f"sgk_{key.key_id}_")
        assert apikeys.parse_key(text) == key.key_id
        found = await apikeys.authenticate(store, text)
        assert found is not None and found.key_id == key.key_id
        assert found.allows("send") and not found.allows("quarantine")
        assert found.may_send_as("dr.alice@clinic.example")
        assert not found.may_send_as("eve@elsewhere.example")
        # Limited to its senders' messages; a key without patterns (or "*") sees all.
        assert found.sees("dr.alice@clinic.example") and not found.sees("eve@elsewhere.example")
        assert not found.sees(None)
        monitor, _ = await apikeys.create(store, "monitor", {"status"}, [], "test")
        assert monitor.sees(None) and monitor.sees("eve@elsewhere.example")
        # A wrong secret with a real key id does not pass.
        forged = text[:-4] + ("AAAA" if not text.endswith("AAAA") else "BBBB")
        assert await apikeys.authenticate(store, forged) is None
        assert await apikeys.authenticate(store, "Bearer nonsense") is None
        row = await store.fetchone("SELECT * FROM api_keys WHERE key_id = ?", (key.key_id,))
        assert row is not None
        assert row["key_hash"] == hashlib.sha256(text.encode()).hexdigest()
        assert text not in json.dumps(row)
        assert await apikeys.revoke(store, key.key_id, "test") is True
        assert await apikeys.revoke(store, key.key_id, "test") is False
        assert await apikeys.revoke(store, "0" * 12, "test") is None
        assert await apikeys.authenticate(store, text) is None
        listed = await apikeys.list_keys(store)
        assert {k.key_id for k in listed} == {key.key_id, monitor.key_id}
        assert next(k for k in listed if k.key_id == key.key_id).revoked_at is not None
    finally:
        await store.close()


async def test_send_scope_needs_senders(tmp_path: Path) -> None:
    """A sending key must say which senders it may use."""
    store = await open_store(StorageConfig(), tmp_path)
    try:
        with pytest.raises(ApiKeyError, match="--sender"):
            await apikeys.create(store, "app", {"send"}, [], "test")
        with pytest.raises(ApiKeyError, match="name"):
            await apikeys.create(store, " ", {"status"}, [], "test")
    finally:
        await store.close()


def test_parsing() -> None:
    """Scopes, sender patterns and key ids are checked as typed."""
    assert apikeys.parse_scopes(["send,status", "queue"]) == {"send", "status", "queue"}
    with pytest.raises(ApiKeyError, match="unknown scope"):
        apikeys.parse_scopes(["send,admin"])
    assert apikeys.parse_senders(["@Clinic.Example", "*"]) == ("@clinic.example", "*")
    with pytest.raises(ApiKeyError, match="sender pattern"):
        apikeys.parse_senders(["not an address"])
    assert apikeys.parse_key_id("sgk_abcdefghjkmn") == "abcdefghjkmn"
    with pytest.raises(ApiKeyError):
        apikeys.parse_key_id("../etc")


def _sealgate(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "-c", str(config), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    """`apikey create` prints the key once; list never shows it; revoke is audited."""
    config = tmp_path / "sealgate.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "hostname": "gw.test"}))
    made = _sealgate(
        config, "apikey", "create", "--name", "billing", "--scope", "send,status",
        "--sender", "@clinic.example", "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    text, key_id = created["key"], created["key_id"]
    assert text.startswith(f"sgk_{key_id}_")
    assert created["scopes"] == ["send", "status"]

    listing = _sealgate(config, "apikey", "list")
    assert listing.returncode == 0, listing.stderr
    assert key_id in listing.stdout and "billing" in listing.stdout
    assert text not in listing.stdout
    as_json = _sealgate(config, "apikey", "list", "--json")
    assert text not in as_json.stdout and json.loads(as_json.stdout)["key_id"] == key_id

    bad = _sealgate(config, "apikey", "create", "--name", "x", "--scope", "root")
    assert bad.returncode == 1 and "unknown scope" in bad.stderr

    revoked = _sealgate(config, "apikey", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout
    assert _sealgate(config, "apikey", "revoke", "zzzzzzzzzzzz").returncode == 1

    db = sqlite3.connect(tmp_path / "data" / "sealgate.db")
    try:
        events = [
            (e, json.loads(f))
            for e, f in db.execute("SELECT event, fields FROM audit_records ORDER BY seq")
        ]
        stored = db.execute("SELECT key_hash FROM api_keys").fetchall()
    finally:
        db.close()
    names = [e for e, _ in events]
    assert "api_key_created" in names and "api_key_revoked" in names
    assert text not in json.dumps(events)
    assert stored == [(hashlib.sha256(text.encode()).hexdigest(),)]
