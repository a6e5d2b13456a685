"""Which OpenPGP key to encrypt to for an address, and keeping that answer trustworthy.

Trust on first use, with the admin as the authority:
- a key the admin imports (`sealgate keys pgp import`) is accepted for the
  addresses its user ids name;
- otherwise the first key discovered (WKD, validated OPENPGPKEY DNS) or learnt
  from mail (Autocrypt, a key attached to signed mail) is accepted;
- a different key seen later for an address that has an accepted key is never
  used on its own: it waits as "pending" and a pgp_key_changed event tells the
  admin, who accepts or rejects it (`sealgate keys pgp pending|accept|reject`).
Discovery results are cached (encryption.pgp.lookup_cache for keys found, after
which they are refreshed; negative_cache for addresses without one).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from gateway import log
from gateway.config import PgpConfig
from gateway.fetch import HttpsFetcher
from gateway.pgp.autocrypt import attached_keys, autocrypt_key
from gateway.pgp.discovery import Candidate, Discovery, split_address
from gateway.pgp.keyring import KeyInfo, Keyring, KeyringError, normalize_fingerprint
from gateway.pgp.state import Binding, KeyState
from gateway.resolver import Resolver

T = TypeVar("T")
# How long a key's listing (expiry, revocation) is reused before asking gpg again.
_INFO_TTL = 30.0
# gpg runs as child processes; a burst of deliveries should not start hundreds.
_GPG_CONCURRENCY = 8
_ERRORS = (KeyringError, sqlite3.Error, OSError)


def pgp_home(data_dir: Path) -> Path:
    """The directory holding the keyring and its state (data_dir/keys/pgp)."""
    return data_dir / "keys" / "pgp"


def normalize_address(address: str) -> tuple[str, str, str] | None:
    """(key used for the address in our records, local part, ASCII domain), or None."""
    parts = split_address(address)
    if parts is None:
        return None
    local, domain = parts
    return f"{local.lower()}@{domain}", local, domain


@dataclass(frozen=True)
class _Found:
    key: KeyInfo
    data: bytes
    source: str


def _pick(addr: str, keys: list[KeyInfo], candidate: Candidate) -> _Found | None:
    # A directory must hand out a key bound to the address asked for (WKD section 3.1).
    usable = [k for k in keys if addr in k.emails and k.usable and not k.secret]
    return _Found(usable[0], candidate.data, candidate.source) if usable else None


class PgpDirectory:
    """Recipients' OpenPGP keys: the keyring, discovery, and the rules for trusting them."""

    def __init__(
        self,
        data_dir: Path,
        cfg: PgpConfig,
        resolver: Resolver | None,
        fetcher: HttpsFetcher | None,
    ) -> None:
        home = pgp_home(data_dir)
        self.keyring = Keyring(home / "gnupg")
        self.state = KeyState(home / "state.sqlite")
        self._cfg = cfg
        self._discovery = Discovery(cfg, resolver, fetcher)
        self._can_discover = bool(
            (cfg.wkd and fetcher is not None) or (cfg.openpgpkey_dns and resolver is not None)
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self._infos: dict[str, tuple[float, KeyInfo | None]] = {}
        self._gpg_slots = asyncio.Semaphore(_GPG_CONCURRENCY)
        # Anything else gpg accepts is passed on as given: a sign_key that names no
        # key in the keyring then fails every encryption (visibly) instead of
        # silently sending unsigned copies.
        sign = (cfg.sign_key or "").strip()
        self._sign_key = (normalize_fingerprint(sign) or sign) if sign else None

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        async with self._gpg_slots:
            return await asyncio.to_thread(func, *args)

    # --- choosing a key ------------------------------------------------------------

    async def key_for(self, address: str) -> str | None:
        """Fingerprint of a usable encryption key for address; None when there is none.

        The keyring first, then WKD and OPENPGPKEY DNS. Never raises for network
        trouble; a key that changed for a known address is recorded, not used.
        """
        norm = normalize_address(address)
        if norm is None:
            return None
        addr, local, domain = norm
        lock = self._locks.setdefault(addr, asyncio.Lock())
        try:
            async with lock:
                return await self._key_for(addr, local, domain)
        except _ERRORS as exc:
            log.event("pgp_lookup_failed", level=logging.WARNING, domain=domain, reason=str(exc))
            return None
        finally:
            # Forgotten when idle so the table does not grow with every address ever
            # seen; a racing caller at worst repeats a lookup, it never skips a check.
            if not lock.locked():
                self._locks.pop(addr, None)

    async def _key_for(self, addr: str, local: str, domain: str) -> str | None:
        binding = await self._run(self.state.binding, addr)
        now = time.time()
        if binding is not None:
            lookup = await self._run(self.state.lookup, addr)
            stale = lookup is None or now - lookup.checked >= self._cfg.lookup_cache
            fresh = False
            if stale and self._can_discover:
                await self._refresh(addr, local, domain, binding)
                fresh = True
            info = await self.key_info(binding.fingerprint, fresh=fresh)
            return binding.fingerprint if info is not None and info.usable else None
        lookup = await self._run(self.state.lookup, addr)
        if (
            lookup is not None
            and lookup.fingerprint is None
            and now - lookup.checked < self._cfg.negative_cache
        ):
            return None
        if not self._can_discover:
            return None
        found = await self._discover(addr, local, domain)
        if found is None:
            await self._run(self.state.set_lookup, addr, None)
            return None
        await self._accept(addr, found.key.fingerprint, found.data, found.source)
        return found.key.fingerprint

    async def _scan(self, data: bytes) -> list[KeyInfo]:
        try:
            return await self._run(self.keyring.scan, data)
        except KeyringError:
            return []

    async def _discover(self, addr: str, local: str, domain: str) -> _Found | None:
        for candidate in await self._discovery.find(local, domain):
            found = _pick(addr, await self._scan(candidate.data), candidate)
            if found is not None:
                return found
            log.event("pgp_key_unusable", domain=domain, source=candidate.source)
        return None

    async def _refresh(self, addr: str, local: str, domain: str, binding: Binding) -> None:
        """Look the address up again: same key -> update it; another key -> pending."""
        for candidate in await self._discovery.find(local, domain):
            keys = await self._scan(candidate.data)
            if any(k.fingerprint == binding.fingerprint for k in keys):
                # Taken even when no longer usable: that is how a revocation or an
                # expiry arrives.
                await self._run(self.keyring.import_key, candidate.data, binding.fingerprint)
                self._infos.pop(binding.fingerprint, None)
                break
            found = _pick(addr, keys, candidate)
            if found is not None:
                await self._changed(addr, domain, binding, found)
                break
        await self._run(self.state.set_lookup, addr, binding.fingerprint)

    async def _accept(self, addr: str, fingerprint: str, data: bytes, source: str) -> None:
        await self._run(self.keyring.import_key, data, fingerprint)
        await self._run(self.state.bind, addr, fingerprint, source)
        self._infos.pop(fingerprint, None)
        log.event(
            "pgp_key_learned",
            address_domain=addr.rpartition("@")[2],
            fingerprint=fingerprint,
            source=source,
        )

    async def _changed(self, addr: str, domain: str, binding: Binding, found: _Found) -> None:
        new = await self._run(
            self.state.add_pending, addr, found.key.fingerprint, found.source, found.data
        )
        if new:
            log.event(
                "pgp_key_changed",
                level=logging.WARNING,
                address_domain=domain,
                old_fingerprint=binding.fingerprint,
                new_fingerprint=found.key.fingerprint,
                source=found.source,
                action="kept the accepted key; review with `sealgate keys pgp pending`",
            )

    async def key_info(self, fingerprint: str, *, fresh: bool = False) -> KeyInfo | None:
        """What the keyring says about a key (reused for a few seconds unless fresh)."""
        now = time.monotonic()
        cached = self._infos.get(fingerprint)
        if cached is not None and not fresh and now - cached[0] < _INFO_TTL:
            return cached[1]
        info = await self._run(self.keyring.get, fingerprint)
        self._infos[fingerprint] = (now, info)
        return info

    async def usable(self, fingerprint: str) -> bool:
        """Whether fingerprint is in our keyring and can be encrypted to now."""
        info = await self.key_info(fingerprint)
        return info is not None and info.usable

    @property
    def signs(self) -> bool:
        """Whether encrypted copies are also signed with the organisation's key."""
        return self._sign_key is not None

    async def encrypt(self, data: bytes, fingerprint: str) -> bytes:
        """data encrypted to fingerprint (and signed with encryption.pgp.sign_key when set)."""
        return await self._run(self.keyring.encrypt, data, fingerprint, self._sign_key)

    # --- learning from mail ------------------------------------------------------------

    async def learn(self, data: bytes) -> None:
        """Harvest keys from a message passing through: its Autocrypt header, or a key
        attached to a signed message. Best effort: never raises."""
        if not self._cfg.autocrypt:
            return
        try:
            offered = autocrypt_key(data)
            if offered is not None:
                await self._offer(offered.address, offered.keydata, "autocrypt", need_uid=False)
            for attached in await asyncio.to_thread(attached_keys, data):
                signer = await self._run(
                    self.keyring.verify_with, attached.keydata, attached.signed, attached.signature
                )
                if signer is None:
                    continue  # only a key that signed the message vouches for its sender
                await self._offer(
                    attached.address, attached.keydata, "attached", need_uid=True, only=signer
                )
        except Exception as exc:
            # Whatever a message holds, harvesting must never hold up its delivery.
            log.event("pgp_learn_failed", level=logging.WARNING, reason=type(exc).__name__)

    async def _offer(
        self,
        address: str,
        keydata: bytes,
        source: str,
        *,
        need_uid: bool,
        only: str | None = None,
    ) -> None:
        norm = normalize_address(address)
        if norm is None:
            return
        addr, _, domain = norm
        keys = [k for k in await self._scan(keydata) if not k.secret]
        if only is not None:
            keys = [k for k in keys if k.fingerprint == only]
        usable = [k for k in keys if k.usable and (not need_uid or addr in k.emails)]
        lock = self._locks.setdefault(addr, asyncio.Lock())
        try:
            async with lock:
                binding = await self._run(self.state.binding, addr)
                if binding is not None and any(k.fingerprint == binding.fingerprint for k in keys):
                    # An update of the accepted key, maybe its revocation.
                    await self._run(self.keyring.import_key, keydata, binding.fingerprint)
                    self._infos.pop(binding.fingerprint, None)
                elif not usable:
                    return
                elif binding is None:
                    await self._accept(addr, usable[0].fingerprint, keydata, source)
                else:
                    await self._changed(addr, domain, binding, _Found(usable[0], keydata, source))
        finally:
            if not lock.locked():
                self._locks.pop(addr, None)

    def close(self) -> None:
        """Stop the gpg-agent the signing key may have started."""
        self.keyring.close()
