"""MTA-STS (RFC 8461): a recipient domain's published demand for verified TLS.

The domain announces a policy with a TXT record at _mta-sts.DOMAIN (its id
changes when the policy does) and serves it at
https://mta-sts.DOMAIN/.well-known/mta-sts.txt. Policies are cached for their
max_age; the TXT id says when to fetch again, and a fetch that fails leaves an
unexpired cached policy in force (RFC 8461 section 5.1), so an attacker who
blocks the HTTPS fetch cannot switch the policy off. With cache_dir the cache
also survives restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway import log
from gateway.fetch import FetchError, HttpsFetcher
from gateway.resolver import DnsTemporaryError, Resolver
from gateway.safeio import write_file

StsMode = Literal["enforce", "testing", "none"]

# RFC 8461 section 3.2: max_age is at most 31557600 seconds (about a year).
MAX_AGE_LIMIT = 31_557_600
_ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
_CACHE_FILE = "mta-sts.json"
_MODES: dict[str, StsMode] = {"enforce": "enforce", "testing": "testing", "none": "none"}
# After a failed fetch, wait this long before fetching the same id again, so a
# broken policy host is not asked once per delivery.
_RETRY_FETCH_AFTER = 300.0


class PolicyError(ValueError):
    """A policy document that does not follow RFC 8461 section 3.2."""


@dataclass(frozen=True)
class StsPolicy:
    """A domain's MTA-STS policy, as fetched under TXT id `id`, valid until `expires`."""

    mode: StsMode
    mx: tuple[str, ...]
    max_age: int
    id: str = ""
    expires: float = 0.0

    def matches(self, host: str) -> bool:
        """Whether MX host is allowed by the policy's mx patterns (RFC 8461 section 4.1)."""
        return any(mx_matches(pattern, host) for pattern in self.mx)


def mx_matches(pattern: str, host: str) -> bool:
    """An mx pattern against a host: exact, or "*." matching exactly one leftmost label."""
    pattern = pattern.strip().rstrip(".").lower()
    host = host.strip().rstrip(".").lower()
    if pattern.startswith("*."):
        first, sep, rest = host.partition(".")
        return bool(sep) and bool(first) and rest == pattern[2:]
    return pattern == host


def parse_txt(records: list[str]) -> str | None:
    """The policy id from _mta-sts TXT records, or None when there is no valid one.

    RFC 8461 section 3.1: records not starting with v=STSv1 are ignored; more
    than one STSv1 record means no policy.
    """
    ids: list[str | None] = []
    for record in records:
        fields = [f.strip() for f in record.split(";")]
        if fields[0].replace(" ", "") != "v=STSv1":
            continue
        ident = None
        for item in fields[1:]:
            key, sep, value = item.partition("=")
            if sep and key.strip() == "id" and ident is None:
                ident = value.strip()
        ids.append(ident if ident is not None and _ID_RE.match(ident) else None)
    return ids[0] if len(ids) == 1 else None


def parse_policy(text: str) -> StsPolicy:
    """Parse a policy document; raises PolicyError when it is not valid."""
    values: dict[str, str] = {}
    mx: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError("a policy line has no ':'")
        key, value = key.strip(), value.strip()
        if key == "mx":
            mx.append(value.lower())
        else:
            values.setdefault(key, value)
    if values.get("version") != "STSv1":
        raise PolicyError("version is not STSv1")
    mode = _MODES.get(values.get("mode", ""))
    if mode is None:
        raise PolicyError("mode is not enforce, testing or none")
    age = values.get("max_age", "")
    if not age.isdigit() or len(age) > 10:
        raise PolicyError("max_age is not a number of seconds")
    if mode != "none" and not mx:
        raise PolicyError("no mx pattern")
    return StsPolicy(mode=mode, mx=tuple(mx), max_age=min(int(age), MAX_AGE_LIMIT))


def policy_url(domain: str) -> str:
    """Where domain serves its policy (RFC 8461 section 3.3)."""
    return f"https://mta-sts.{domain}/.well-known/mta-sts.txt"


class MtaSts:
    """Finds, fetches and caches MTA-STS policies; never raises for network trouble."""

    def __init__(
        self,
        resolver: Resolver,
        fetcher: HttpsFetcher,
        *,
        cache_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._resolver = resolver
        self._fetcher = fetcher
        self._cache_dir = cache_dir
        self._clock = clock
        self._cache: dict[str, StsPolicy] = {}
        self._failed: dict[str, tuple[str, float]] = {}  # domain -> (id, retry after)
        self._locks: dict[str, asyncio.Lock] = {}
        self._loaded = cache_dir is None

    async def policy(self, domain: str) -> StsPolicy | None:
        """The policy in force for domain (mode enforce or testing), or None."""
        domain = domain.strip().rstrip(".").lower()
        # One lookup per domain at a time: deliveries that arrive together wait
        # and then find the policy cached instead of fetching it again.
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:
            return await self._lookup(domain)

    async def _lookup(self, domain: str) -> StsPolicy | None:
        if not self._loaded:
            await self._load()
        now = self._clock()
        cached = self._cache.get(domain)
        if cached is not None and cached.expires <= now:
            cached = None
            del self._cache[domain]
        try:
            ident = parse_txt(await self._resolver.txt(f"_mta-sts.{domain}"))
        except DnsTemporaryError as exc:
            log.event("mta_sts_lookup_failed", domain=domain, reason=str(exc))
            return _in_force(cached)
        if ident is None:
            # No record now, but a cached policy stays in force until it expires
            # (RFC 8461 section 5.1): removing the record is not how a policy ends.
            return _in_force(cached)
        if cached is not None and cached.id == ident:
            return _in_force(cached)
        failed = self._failed.get(domain)
        if failed is not None and failed[0] == ident and failed[1] > now:
            return _in_force(cached)
        fetched = await self._fetch(domain, ident, now)
        if fetched is None:
            self._failed[domain] = (ident, now + _RETRY_FETCH_AFTER)
            return _in_force(cached)
        self._failed.pop(domain, None)
        self._cache[domain] = fetched
        await self._save()
        return _in_force(fetched)

    async def _fetch(self, domain: str, ident: str, now: float) -> StsPolicy | None:
        try:
            result = await self._fetcher.get(policy_url(domain), accept="text/plain")
            if result.status != 200:
                raise PolicyError(f"HTTP status {result.status}")
            ctype = result.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "text/plain":
                raise PolicyError("the policy is not served as text/plain")
            parsed = parse_policy(result.body.decode("utf-8"))
        except (FetchError, PolicyError, UnicodeDecodeError) as exc:
            log.event("mta_sts_fetch_failed", logging.WARNING, domain=domain, reason=str(exc))
            return None
        log.event("mta_sts_policy", domain=domain, mode=parsed.mode, max_age=parsed.max_age)
        return StsPolicy(
            mode=parsed.mode,
            mx=parsed.mx,
            max_age=parsed.max_age,
            id=ident,
            expires=now + parsed.max_age,
        )

    async def _load(self) -> None:
        self._loaded = True
        assert self._cache_dir is not None
        path = self._cache_dir / _CACHE_FILE
        try:
            raw = await asyncio.to_thread(path.read_bytes)
            data = json.loads(raw)
            for domain, entry in data.items():
                self._cache[domain] = _from_json(entry)
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # A damaged cache costs fetches, not deliveries.
            log.event("mta_sts_cache_unreadable", logging.WARNING, error=str(exc))
            self._cache.clear()

    async def _save(self) -> None:
        if self._cache_dir is None:
            return
        data = {domain: _to_json(p) for domain, p in self._cache.items()}
        blob = json.dumps(data, sort_keys=True).encode()
        path = self._cache_dir / _CACHE_FILE
        try:
            await asyncio.to_thread(_write, path, blob)
        except OSError as exc:
            log.event("mta_sts_cache_write_failed", logging.WARNING, error=str(exc))


def _write(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, blob)


def _in_force(policy: StsPolicy | None) -> StsPolicy | None:
    if policy is None or policy.mode == "none":
        return None
    return policy


def _to_json(policy: StsPolicy) -> dict[str, Any]:
    return {
        "mode": policy.mode,
        "mx": list(policy.mx),
        "max_age": policy.max_age,
        "id": policy.id,
        "expires": policy.expires,
    }


def _from_json(entry: dict[str, Any]) -> StsPolicy:
    mode = _MODES.get(entry["mode"])
    if mode is None:
        raise ValueError("bad mode")
    return StsPolicy(
        mode=mode,
        mx=tuple(str(m) for m in entry["mx"]),
        max_age=int(entry["max_age"]),
        id=str(entry["id"]),
        expires=float(entry["expires"]),
    )
