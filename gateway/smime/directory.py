"""Which certificate to encrypt to for an address: the store's index, kept in memory.

The gateway asks for every protected recipient, so the index is held in memory
and re-read only when the file on disk was replaced (by the CLI or by another
process harvesting), which one stat() per question notices.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from cryptography import x509

from gateway import log
from gateway.config import SmimeConfig
from gateway.smime.harvest import harvest
from gateway.smime.store import (
    CertificateError,
    CertInfo,
    CertStore,
    best_for,
    normalize_address,
    problems,
    time_problem,
)


class SmimeDirectory:
    """Recipients' S/MIME certificates: lookup by address, harvesting from signed mail."""

    def __init__(self, data_dir: Path, cfg: SmimeConfig) -> None:
        self.store = CertStore(data_dir)
        self._cfg = cfg
        self._lock = threading.Lock()  # learn() may run in worker threads
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[str, CertInfo] = {}
        self._loaded = False

    def _current(self) -> dict[str, CertInfo]:
        stamp = self.store.index_stamp()
        with self._lock:
            if self._loaded and stamp == self._stamp:
                return self._entries
            try:
                entries = self.store.read_index()
            except CertificateError as exc:
                # No certificates rather than a crash: other methods still protect the mail.
                log.event("smime_index_unreadable", reason=str(exc))
                entries = {}
            self._entries, self._stamp, self._loaded = entries, stamp, True
            return entries

    def cert_for(self, address: str) -> str | None:
        """SHA-256 fingerprint (hex) of the best usable certificate for address, or None."""
        return best_for(self._current(), address, time.time())

    def certificate(self, fp: str, address: str | None = None) -> x509.Certificate | None:
        """The certificate with fingerprint fp if it is still stored and usable now."""
        info = self._current().get(fp)
        now = time.time()
        if info is None or not info.valid_at(now):
            return None
        if address is not None and normalize_address(address) not in info.emails:
            return None
        cert = self.store.load(fp)
        if cert is None or problems(cert) or time_problem(cert, now) is not None:
            return None
        return cert

    def learn(self, data: bytes) -> int:
        """Harvest certificates from a signed message passing through; how many were new.

        Blocking (CMS verification, file writes): call it off the event loop.
        """
        if not self._cfg.harvest:
            return 0
        new = 0
        try:
            for cert in harvest(data):
                try:
                    info, added = self.store.add(cert, "harvest")
                except CertificateError as exc:
                    log.event("smime_harvest_skipped", reason=str(exc))
                    continue
                if added:
                    new += 1
                    log.event(
                        "smime_harvested",
                        fingerprint=info.fingerprint,
                        emails=list(info.emails),
                        not_after=int(info.not_after),
                    )
        except Exception as exc:
            # Learning is a side line of delivery: whatever goes wrong must not stop the message.
            log.event("smime_harvest_failed", error=type(exc).__name__)
        return new
