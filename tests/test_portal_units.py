"""Portal pieces on their own: sessions and codes against a real SQLite store with a
controlled clock, the HTML sanitiser, message parsing and reply addressing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.config import StorageConfig
from gateway.store import Store, open_store
from portal import credentials, mime
from portal.security import frame_csp, page_csp
from portal.store import CodeResult, PortalStore
from portal.web import _contrast_text, mask_address
from tests.peers.portal import postgres_on, sample_message
from tests.peers.postgres import PostgresServer

PG_HOST = "127.0.91.50"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL on this suite's loopback corner (fails rather than skips in CI)."""
    yield from postgres_on(PG_HOST)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The same tests on both backends: sessions and lock-outs must hold across nodes."""
    url = None
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("pg_server")
        url = server.create_database()
    s = await open_store(StorageConfig(url=url), tmp_path)
    try:
        yield s
    finally:
        await s.close()


async def test_session_idle_and_absolute_timeouts(store: Store) -> None:
    clock = Clock()
    db = PortalStore(store, clock=clock)
    cookie, anon = await db.new_session()
    assert (await db.session(cookie, idle=600, absolute=3600)) is not None
    new_cookie, _signed = await db.sign_in(anon, "pat@example.net")
    # The old cookie died with sign-in (no session fixation).
    assert await db.session(cookie, idle=600, absolute=3600) is None
    for _ in range(5):  # active use keeps it alive ...
        clock.now += 500
        s = await db.session(new_cookie, idle=600, absolute=3600)
        assert s is not None and s.address == "pat@example.net"
    clock.now += 1200  # ... until the absolute limit, however active
    assert await db.session(new_cookie, idle=600, absolute=3600) is None
    cookie2, anon2 = await db.new_session()
    cookie2, _ = await db.sign_in(anon2, "pat@example.net")
    clock.now += 601  # idle too long
    assert await db.session(cookie2, idle=600, absolute=3600) is None
    assert await db.session("", idle=600, absolute=3600) is None
    assert await db.session("x" * 500, idle=600, absolute=3600) is None


async def test_codes_expire_are_single_use_and_count_attempts(store: Store) -> None:
    clock = Clock()
    db = PortalStore(store, clock=clock)
    await store.execute(
        "INSERT INTO portal_recipients (address, created_at) VALUES (?, ?)", ("a@x.example", 0.0)
    )
    _, session = await db.new_session()
    code = await db.new_code(session, "a@x.example", lifetime=600)
    assert len(code) == 6 and code.isdigit()
    rows = await store.fetchall("SELECT code_hash FROM portal_codes")
    assert code.encode() not in bytes(rows[0]["code_hash"])  # stored hashed
    assert await db.check_code(
        session, "a@x.example", "000000" if code != "000000" else "1", 3
    ) in (CodeResult.WRONG,)
    assert await db.check_code(session, "a@x.example", code, 3) == CodeResult.OK
    assert await db.check_code(session, "a@x.example", code, 3) == CodeResult.NONE  # used
    code = await db.new_code(session, "a@x.example", lifetime=600)
    clock.now += 601
    assert await db.check_code(session, "a@x.example", code, 3) == CodeResult.NONE  # expired
    code = await db.new_code(session, "a@x.example", lifetime=600)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    results = [await db.check_code(session, "a@x.example", wrong, 3) for _ in range(3)]
    assert results == [CodeResult.WRONG, CodeResult.WRONG, CodeResult.EXHAUSTED]
    assert await db.check_code(session, "a@x.example", code, 3) == CodeResult.EXHAUSTED
    # A new code replaces the old one in that session.
    first = await db.new_code(session, "a@x.example", lifetime=600)
    second = await db.new_code(session, "a@x.example", lifetime=600)
    if first != second:
        assert await db.check_code(session, "a@x.example", first, 3) == CodeResult.WRONG
    assert await db.check_code(session, "a@x.example", second, 3) == CodeResult.OK


async def test_lockouts_and_rate_counters_expire(store: Store) -> None:
    clock = Clock()
    db = PortalStore(store, clock=clock)
    for _ in range(3):
        await db.hit("addr:a@x.example", "failure")
    assert await db.hits("addr:a@x.example", "failure", window=60) == 3
    clock.now += 61
    assert await db.hits("addr:a@x.example", "failure", window=60) == 0
    await db.lock("addr:a@x.example", 900)
    assert await db.locked("addr:a@x.example")
    clock.now += 901
    assert not await db.locked("addr:a@x.example")
    await db.purge(idle=600, absolute=3600)
    assert await store.fetchall("SELECT * FROM portal_lockouts") == []


def test_sanitiser_keeps_text_and_layout_drops_active_content() -> None:
    html = (
        '<p style="color:red;position:fixed">Grüße <b>Zoë</b></p>'
        "<script>alert(1)</script><img src=x onerror=alert(1)>"
        '<a href="javascript:alert(1)">j</a><a href="https://ok.example/">ok</a>'
        '<img src="https://tracker.example/p.gif"><img src="cid:logo@x">'
        "<iframe src=x></iframe><form><input></form><style>p{}</style>"
    )
    out = mime.safe_html(html, inline={"logo@x": "data:image/png;base64,AA=="}, remote=False)
    assert "Grüße <b>Zoë</b>" in out and 'style="color:red"' in out
    for bad in ("script", "onerror", "javascript:", "tracker.example", "iframe", "form", "input"):
        assert bad not in out
    assert 'href="https://ok.example/"' in out and 'rel="noopener noreferrer nofollow"' in out
    assert 'src="data:image/png;base64,AA=="' in out
    shown = mime.safe_html(html, inline={}, remote=True)
    assert "https://tracker.example/p.gif" in shown and "cid:" not in shown


def test_parse_non_ascii_bodies_and_attachments() -> None:
    view = mime.parse(sample_message(html="<p>診断</p>"))
    assert view.subject == "Lab results \u2013 Zoë Müller"
    assert view.text is not None and "診断: 正常" in view.text
    assert view.html is not None and view.html.strip() == "<p>診断</p>"
    (att,) = view.attachments
    assert att.filename == "Befund-Müller.pdf"
    part = mime.part_bytes(sample_message(html="<p>診断</p>"), att.index)
    assert part is not None and part[0] == b"%PDF-1.4\n\x00\x01binary\xff"
    assert mime.part_bytes(sample_message(), 999) is None
    latin = (
        b"Subject: =?iso-8859-1?q?Gr=FC=DFe?=\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: text/plain; charset="iso-8859-1"\r\n'
        b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe"
    )
    view = mime.parse(latin)
    assert view.subject == "Grüße" and view.text == "Grüße"


def test_broken_messages_do_not_crash_the_parser() -> None:
    for raw in (b"", b"\xff\xfe\x00garbage", b"Content-Type: multipart/mixed\r\n\r\nno boundary"):
        view = mime.parse(raw)
        assert view.subject == "(no subject)"


def test_reply_recipients_are_the_original_participants() -> None:
    raw = sample_message(to="pat@example.net, nurse@clinic.example", cc="Pat@Example.net")
    view = mime.parse(raw)
    assert mime.reply_recipients(view, "pat@example.net", reply_all=False) == [
        "dr.who@clinic.example"
    ]
    assert mime.reply_recipients(view, "pat@example.net", reply_all=True) == [
        "dr.who@clinic.example",
        "nurse@clinic.example",
    ]
    data, message_id = mime.compose_reply(
        view, "pat@example.net", ["dr.who@clinic.example"], "Danke", [], hostname="h", portal_id="p"
    )
    assert message_id.endswith("@h>") and b"In-Reply-To: <orig-1@clinic.example>" in data


def test_passwords_totp_and_helpers() -> None:
    assert credentials.password_problem("short") is not None
    assert credentials.password_problem("aaaaaaaaaaaa") is not None
    assert credentials.password_problem("a long passphrase") is None
    assert mask_address("margaret@example.net") == "m*******@example.net"
    assert mask_address("a@b.example") == "a***@b.example"
    assert _contrast_text("#ffffff") == "#000000" and _contrast_text("#1f5f8b") == "#ffffff"
    assert "frame-ancestors 'none'" in page_csp(None)
    assert "img-src 'self' https://cdn.clinic.example;" in page_csp(
        "https://cdn.clinic.example/logo.png"
    )
    assert "https:" not in frame_csp(False) and "sandbox" in frame_csp(False)


async def test_password_hashes_verify_in_a_thread() -> None:
    stored = await credentials.hash_password("a long passphrase")
    assert stored.startswith("$argon2id$")
    assert await credentials.check_password(stored, "a long passphrase")
    assert not await credentials.check_password(stored, "wrong")
    assert not await credentials.check_password(None, "anything")
