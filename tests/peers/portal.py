"""A running portal for tests: real store, real master key, real HTTP over loopback.

The portal serves on 127.0.90.x from the test's event loop (`portal.serve.serve`);
mail it submits (codes, replies, read notices) lands in an SMTP sink on
127.0.91.x, where tests read the one-time codes as a recipient would.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway import config as config_mod
from gateway.config import Config
from gateway.portalbox import Deposit, PortalBox
from gateway.sealing import MasterKey
from gateway.store import Store, open_store
from portal.serve import serve
from tests.peers.gateway import free_port
from tests.peers.postgres import PostgresServer, postgres_available
from tests.peers.sink import SinkFactory, SmtpSink

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
CODE_RE = re.compile(r"\b(\d{6})\b")


def csrf_of(html: str) -> str:
    """The CSRF token in a page's forms."""
    m = CSRF_RE.search(html)
    assert m, "no CSRF token on the page"
    return m.group(1)


@dataclass
class PortalEnv:
    """A portal under test and the things around it."""

    cfg: Config
    base: str
    store: Store
    box: PortalBox
    sink: SmtpSink
    master: MasterKey

    def client(self, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
        """A browser-like client (cookies kept, redirects not followed)."""
        return httpx.AsyncClient(
            base_url=self.base, follow_redirects=False, timeout=30, verify=verify
        )

    async def deposit(
        self, raw: bytes, rcpt: str = "pat@example.net", *, sealed: bool = False, **kw: Any
    ) -> Deposit:
        """Store a message for rcpt as the portal delivery method would."""
        queue_id = kw.pop("queue_id", None) or f"Q{abs(hash((raw, rcpt, sealed))) % 10**12:012d}"
        return await self.box.deposit(
            queue_id,
            rcpt,
            kw.pop("sender", "dr.who@clinic.example"),
            raw,
            expires_in=kw.pop("expires_in", 86400.0),
            sealed_link=sealed,
        )

    async def mails(self, n: int) -> list[EmailMessage]:
        """The first n messages the portal submitted, parsed."""
        got = await self.sink.wait_for_async(n, timeout=30)
        out = []
        for r in got[:n]:
            msg = email.message_from_bytes(r.data, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            out.append(msg)
        return out

    async def last_code(self, count: int) -> str:
        """The code in the count-th mail the sink received."""
        msg = (await self.mails(count))[count - 1]
        body = msg.get_body(("plain",))
        assert body is not None
        m = CODE_RE.search(body.get_content())
        assert m, "no code in the mail"
        return m.group(1)

    async def sign_in_by_link(self, client: httpx.AsyncClient, dep: Deposit, mail_no: int) -> str:
        """Follow the link, ask for a code, enter it; return where it led."""
        page = await client.get(f"/m/{dep.token}")
        assert page.status_code == 200, page.text
        sent = await client.post(f"/m/{dep.token}/send", data={"csrf": csrf_of(page.text)})
        assert sent.status_code == 303, sent.text
        form = await client.get(sent.headers["location"])
        code = await self.last_code(mail_no)
        done = await client.post(
            f"/m/{dep.token}/verify", data={"csrf": csrf_of(form.text), "code": code}
        )
        assert done.status_code == 303, done.text
        return str(done.headers["location"])


def make_config(
    tmp: Path,
    sink: SmtpSink,
    host: str,
    port: int,
    storage_url: str | None = None,
    **portal: Any,
) -> Config:
    """A configuration whose portal listens on host:port and submits to the sink."""
    settings: dict[str, Any] = {
        "storage": {"url": storage_url},
        "data_dir": str(tmp / "data"),
        "hostname": "gw.clinic.example",
        "portal": {
            "listen": f"{host}:{port}",
            "base_url": f"{'https' if portal.get('tls') else 'http'}://{host}:{port}",
            "submit": sink.address,
            "organisation": "Riverside Clinic",
            **portal,
        },
    }
    return config_mod.parse(yaml.safe_dump(settings), "<test>", tmp)


@asynccontextmanager
async def running_portal(
    tmp: Path,
    sink_factory: SinkFactory,
    host: str = "127.0.90.1",
    *,
    storage_url: str | None = None,
    sink: SmtpSink | None = None,
    **portal: Any,
) -> AsyncIterator[PortalEnv]:
    """Start a portal (and its mail sink, unless given one); stop it afterwards.

    Portals started with the same tmp and storage_url are nodes sharing one
    database and master key.
    """
    if sink is None:
        sink = sink_factory("127.0.91.1", free_port("127.0.91.1"))
    cfg = make_config(tmp, sink, host, free_port(host), storage_url, **portal)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    master = MasterKey.load_or_create(cfg.data_dir / "master.key")
    store = await open_store(cfg.storage, cfg.data_dir)
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(serve(cfg, stop, on_ready=ready.set, audit=False))
    try:
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        assert ready.is_set(), "the portal did not start"
        yield PortalEnv(
            cfg=cfg,
            base=cfg.portal.base_url,
            store=store,
            box=PortalBox(store, master),
            sink=sink,
            master=master,
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await store.close()


def sample_message(
    *,
    subject: str = "Lab results \u2013 Zoë Müller",
    text: str = "Grüße! Ihre Werte: HbA1c 6.1 %. 診断: 正常. — Dr. Who",
    html: str | None = None,
    attachment: tuple[str, bytes] | None = ("Befund-Müller.pdf", b"%PDF-1.4\n\x00\x01binary\xff"),
    to: str = "pat@example.net",
    cc: str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> bytes:
    """A patient message with non-ASCII text, optional HTML and an attachment."""
    msg = EmailMessage()
    msg["From"] = "Dr Who <dr.who@clinic.example>"
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Message-ID"] = "<orig-1@clinic.example>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    for k, v in (extra_headers or {}).items():
        msg[k] = v
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    if attachment is not None:
        name, data = attachment
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return msg.as_bytes(policy=email.policy.SMTP)


def postgres_on(host: str) -> Iterator[PostgresServer]:
    """Body of a module fixture: a PostgreSQL server on host; skipped only outside CI."""
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if not postgres_available():
        if in_ci:
            pytest.fail("PostgreSQL is not installed; .ci/run installs it")
        pytest.skip("PostgreSQL is not installed (bash .ci/run installs it)")
    server = PostgresServer(host)
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        if in_ci:
            pytest.fail(f"PostgreSQL did not start: {exc}")
        pytest.skip(f"PostgreSQL did not start: {exc}")
    try:
        yield server
    finally:
        server.stop()
