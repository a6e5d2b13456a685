"""The recipient portal over real HTTP on loopback: sign-in, reading, replies, attacks.

Each test runs the portal (uvicorn, SQLite store, master key) on 127.0.90.x and
an SMTP sink on 127.0.91.x that receives what the portal submits: the code a
recipient types in is read from that mailbox.
"""

from __future__ import annotations

import email.policy
import re
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import httpx
import pyotp
import pytest
import trustme

from gateway.portalbox import KeyRequiredError
from gateway.sealing import SealError
from tests.peers.portal import PortalEnv, csrf_of, postgres_on, running_portal, sample_message
from tests.peers.postgres import PostgresServer
from tests.peers.sink import SinkFactory

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def env(tmp_path: Path, sink_factory: SinkFactory):  # type: ignore[no-untyped-def]
    async with running_portal(tmp_path, sink_factory) as e:
        yield e


def _parse(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


async def test_code_sign_in_read_download_reply(env: PortalEnv) -> None:
    raw = sample_message(html="<p>Grüße <b>Zoë</b></p><p>診断: 正常</p>")
    dep = await env.deposit(raw)
    async with env.client() as c:
        landing = await c.get(f"/m/{dep.token}")
        assert landing.status_code == 200
        # The landing page names neither the subject nor the content, and masks the address.
        assert "Lab results" not in landing.text and "HbA1c" not in landing.text
        assert "p***@example.net" in landing.text
        where = await env.sign_in_by_link(c, dep, 1)
        assert where == f"/messages/{dep.message.id}"

        code_mail = (await env.mails(1))[0]
        assert code_mail["To"] == "pat@example.net"
        assert "Riverside Clinic" in str(code_mail["Subject"])

        page = await c.get(where)
        assert page.status_code == 200
        assert "Lab results \u2013 Zoë Müller" in page.text
        assert "Befund-Müller.pdf" in page.text
        frame = await c.get(f"{where}/html")
        assert "Grüße <b>Zoë</b>" in frame.text and "診断: 正常" in frame.text
        assert "sandbox" in frame.headers["content-security-policy"]

        index = int(re.search(r"/parts/(\d+)", page.text).group(1))  # type: ignore[union-attr]
        download = await c.get(f"{where}/parts/{index}")
        assert download.status_code == 200
        assert download.content == b"%PDF-1.4\n\x00\x01binary\xff"
        assert download.headers["content-type"] == "application/octet-stream"
        disposition = download.headers["content-disposition"]
        assert disposition.startswith("attachment;")
        assert "filename*=UTF-8''Befund-M%C3%BCller.pdf" in disposition

        inbox = await c.get("/inbox")
        assert f"/messages/{dep.message.id}" in inbox.text

        form = await c.get(f"{where}/reply")
        assert "dr.who@clinic.example" in form.text
        sent = await c.post(
            f"{where}/reply",
            data={
                "csrf": csrf_of(form.text),
                "body": "Danke, Frau Doktor \u2013 alles klar.",
                "all": "0",
                # A forged field cannot add recipients: the server decides who gets it.
                "to": "attacker@evil.example",
            },
            files={"attachments": ("Antwort ä.txt", b"reply bytes \x00\xff", "text/plain")},
        )
        assert sent.status_code == 200, sent.text
    received = await env.sink.wait_for_async(2)
    reply = received[1]
    assert reply.mail_from == "pat@example.net"
    assert reply.rcpt_tos == ["dr.who@clinic.example"]
    msg = _parse(reply.data)
    assert msg["In-Reply-To"] == "<orig-1@clinic.example>"
    assert msg["Sensitivity"] == "Company-Confidential"
    assert str(msg["Subject"]) == "Re: Lab results \u2013 Zoë Müller"
    body = msg.get_body(("plain",))
    assert body is not None and "Danke, Frau Doktor \u2013 alles klar." in body.get_content()
    atts = list(msg.iter_attachments())
    assert [a.get_filename() for a in atts] == ["Antwort ä.txt"]
    assert atts[0].get_payload(decode=True) == b"reply bytes \x00\xff"


async def test_reply_all_goes_to_original_participants_only(env: PortalEnv) -> None:
    raw = sample_message(to="pat@example.net, nurse@clinic.example", cc="billing@clinic.example")
    dep = await env.deposit(raw)
    async with env.client() as c:
        where = await env.sign_in_by_link(c, dep, 1)
        form = await c.get(f"{where}/reply?all=1")
        sent = await c.post(
            f"{where}/reply",
            data={"csrf": csrf_of(form.text), "body": "to all", "all": "1"},
        )
        assert sent.status_code == 200
    reply = (await env.sink.wait_for_async(2))[1]
    assert sorted(reply.rcpt_tos) == [
        "billing@clinic.example",
        "dr.who@clinic.example",
        "nurse@clinic.example",
    ]


async def test_security_headers_and_cookie_flags(tmp_path: Path, sink_factory: SinkFactory) -> None:
    async with running_portal(tmp_path, sink_factory, secure_cookies=True) as env:
        dep = await env.deposit(sample_message())
        async with env.client() as c:
            r = await c.get(f"/m/{dep.token}")
        h = r.headers
        assert h["strict-transport-security"].startswith("max-age=")
        assert h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"
        assert h["x-frame-options"] == "DENY"
        csp = h["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert h["cache-control"] == "no-store"
        cookie = h["set-cookie"]
        assert cookie.startswith("__Host-sg_session=")
        flags = {p.strip().lower() for p in cookie.split(";")}
        assert {"secure", "httponly", "samesite=strict", "path=/"} <= flags
        assert not any(f.startswith(("expires", "max-age", "domain")) for f in flags)


async def test_form_posts_without_csrf_token_are_rejected(env: PortalEnv) -> None:
    dep = await env.deposit(sample_message())
    async with env.client() as c:
        page = await c.get(f"/m/{dep.token}")
        assert (await c.post(f"/m/{dep.token}/send", data={})).status_code == 403
        wrong = await c.post(f"/m/{dep.token}/send", data={"csrf": "x" * 43})
        assert wrong.status_code == 403
        ok = await c.post(f"/m/{dep.token}/send", data={"csrf": csrf_of(page.text)})
        assert ok.status_code == 303
    # Only the request with the token sent a code.
    await env.sink.wait_for_async(1)
    assert len(env.sink.messages) == 1
    # Another browser (no session) cannot reuse the token either.
    async with env.client() as other:
        r = await other.post(f"/m/{dep.token}/send", data={"csrf": csrf_of(page.text)})
        assert r.status_code == 403


async def test_code_brute_force_locks_out(tmp_path: Path, sink_factory: SinkFactory) -> None:
    async with running_portal(tmp_path, sink_factory, code_attempts=3, lockout_failures=5) as env:
        dep = await env.deposit(sample_message())
        async with env.client() as c:
            page = await c.get(f"/m/{dep.token}")
            await c.post(f"/m/{dep.token}/send", data={"csrf": csrf_of(page.text)})
            code = await env.last_code(1)
            wrong = f"{(int(code) + 1) % 10**6:06d}"
            form = await c.get(f"/m/{dep.token}/code")
            csrf = csrf_of(form.text)
            statuses = []
            for _ in range(5):
                r = await c.post(f"/m/{dep.token}/verify", data={"csrf": csrf, "code": wrong})
                statuses.append(r.status_code)
            assert statuses[:4] == [400, 400, 400, 400]
            assert statuses[4] == 429
            # The right code no longer helps: the code is void and the address locked.
            r = await c.post(f"/m/{dep.token}/verify", data={"csrf": csrf, "code": code})
            assert r.status_code == 429 and "Too many attempts" in r.text
            # A new code cannot be requested while locked, from this or another browser.
            r = await c.post(f"/m/{dep.token}/send", data={"csrf": csrf})
            assert r.status_code == 429
        async with env.client() as c2:
            page = await c2.get(f"/m/{dep.token}")
            r = await c2.post(f"/m/{dep.token}/send", data={"csrf": csrf_of(page.text)})
            assert r.status_code == 429
        row = await env.store.fetchone(
            "SELECT locked_until FROM portal_lockouts WHERE subject = ?", ("addr:pat@example.net",)
        )
        assert row is not None


async def test_code_is_single_use_and_bound_to_its_session(env: PortalEnv) -> None:
    dep = await env.deposit(sample_message())
    async with env.client() as c:
        await env.sign_in_by_link(c, dep, 1)
    code = await env.last_code(1)
    async with env.client() as thief:
        page = await thief.get(f"/m/{dep.token}/code")
        r = await thief.post(
            f"/m/{dep.token}/verify", data={"csrf": csrf_of(page.text), "code": code}
        )
        assert r.status_code == 400
        assert (await thief.get(f"/messages/{dep.message.id}")).status_code == 303


async def test_forged_expired_revoked_and_foreign_messages_are_refused(env: PortalEnv) -> None:
    mine = await env.deposit(sample_message(), "pat@example.net", queue_id="QMINE")
    theirs = await env.deposit(sample_message(), "other@example.org", queue_id="QTHEIRS")
    gone = await env.deposit(sample_message(), "pat@example.net", queue_id="QOLD", expires_in=0.01)
    withdrawn = await env.deposit(sample_message(), "pat@example.net", queue_id="QREV")
    await env.box.revoke("QREV", "admin")
    async with env.client() as c:
        forged = await c.get("/m/" + "A" * 43)
        assert forged.status_code == 404 and "This link does not work" in forged.text
        assert (await c.get("/m/not-a-token")).status_code == 404
        assert (await c.get(f"/m/{gone.token}")).status_code == 410
        revoked = await c.get(f"/m/{withdrawn.token}")
        assert revoked.status_code == 410 and "withdrawn" in revoked.text
        await env.sign_in_by_link(c, mine, 1)
        assert (await c.get(f"/messages/{mine.message.id}")).status_code == 200
        # Another recipient's message answers exactly like one that does not exist.
        foreign = await c.get(f"/messages/{theirs.message.id}")
        missing = await c.get("/messages/" + "0" * 32)
        assert foreign.status_code == missing.status_code == 404
        assert foreign.text == missing.text
        for suffix in ("/html", "/parts/1", "/reply"):
            assert (await c.get(f"/messages/{theirs.message.id}{suffix}")).status_code == 404
        assert (await c.get(f"/messages/{withdrawn.message.id}")).status_code == 410
        inbox = await c.get("/inbox")
        assert mine.message.id in inbox.text
        assert withdrawn.message.id not in inbox.text and theirs.message.id not in inbox.text


async def test_sealed_link_key_only_in_the_link(env: PortalEnv) -> None:
    raw = sample_message(text="Sealed: diagnosis E11.9")
    dep = await env.deposit(raw, sealed=True)
    assert dep.key is not None
    # The stored data alone cannot be read: not with the master key, not without the link's key.
    row = await env.store.fetchone(
        "SELECT body FROM portal_messages WHERE id = ?", (dep.message.id,)
    )
    assert row is not None and b"E11.9" not in bytes(row["body"])
    with pytest.raises(SealError):
        env.master.unseal(bytes(row["body"]), b"sealgate portal v1\n" + b"anything")
    with pytest.raises(KeyRequiredError):
        await env.box.read_body(dep.message)
    async with env.client() as c:
        page = await c.get(f"/m/{dep.token}")
        assert 'data-sealed="1"' in page.text
        # Signed in but without the key: the message cannot be opened.
        where = await env.sign_in_by_link(c, dep, 1)
        blocked = await c.get(where)
        assert blocked.status_code == 409
        page = await c.get(f"/m/{dep.token}")
        bad = await c.post(f"/m/{dep.token}/key", data={"csrf": csrf_of(page.text), "key": "x"})
        assert bad.status_code == 400
        r = await c.post(f"/m/{dep.token}/key", data={"csrf": csrf_of(page.text), "key": dep.key})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"]
        assert f"Path=/messages/{dep.message.id}" in cookie and "HttpOnly" in cookie
        opened = await c.get(where)
        assert opened.status_code == 200 and "E11.9" in opened.text
    # Nothing on the server side kept the key.
    for table in ("portal_sessions", "portal_codes", "portal_messages", "portal_recipients"):
        rows = await env.store.fetchall(f"SELECT * FROM {table}")  # noqa: S608
        assert dep.key not in repr(rows)


async def test_password_and_totp(env: PortalEnv) -> None:
    dep = await env.deposit(sample_message())
    async with env.client() as c:
        await env.sign_in_by_link(c, dep, 1)
        acct = await c.get("/account")
        short = await c.post(
            "/account/password",
            data={"csrf": csrf_of(acct.text), "password": "short", "confirm": "short"},
        )
        assert short.status_code == 400
        pw = "correct horse battery"
        ok = await c.post(
            "/account/password", data={"csrf": csrf_of(acct.text), "password": pw, "confirm": pw}
        )
        assert ok.status_code == 200 and "password is set" in ok.text
        start = await c.post("/account/totp", data={"csrf": csrf_of(acct.text), "action": "start"})
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', start.text).group(1)  # type: ignore[union-attr]
        on = await c.post(
            "/account/totp",
            data={
                "csrf": csrf_of(acct.text),
                "action": "confirm",
                "code": pyotp.TOTP(secret).now(),
            },
        )
        assert on.status_code == 200 and "app is on" in on.text
        stored = await env.store.fetchone(
            "SELECT password_hash, totp_secret FROM portal_recipients WHERE address = ?",
            ("pat@example.net",),
        )
        assert stored is not None and stored["password_hash"].startswith("$argon2id$")
        assert secret.encode() not in bytes(stored["totp_secret"])  # sealed at rest
        await c.post("/signout", data={"csrf": csrf_of(on.text)})
        assert (await c.get("/inbox")).status_code == 303

        page = await c.get("/signin")
        bad = await c.post(
            "/signin/password",
            data={"csrf": csrf_of(page.text), "address": "pat@example.net", "password": "nope"},
        )
        assert bad.status_code == 400
        step = await c.post(
            "/signin/password",
            data={"csrf": csrf_of(page.text), "address": "Pat@Example.net", "password": pw},
        )
        assert step.status_code == 303 and step.headers["location"].startswith("/signin/totp")
        # Half signed in: nothing readable before the second factor.
        assert (await c.get("/inbox")).status_code == 303
        totp_page = await c.get(step.headers["location"])
        wrong = await c.post(
            "/signin/totp", data={"csrf": csrf_of(totp_page.text), "code": "000000"}
        )
        assert wrong.status_code == 400
        done = await c.post(
            "/signin/totp",
            data={
                "csrf": csrf_of(totp_page.text),
                "code": pyotp.TOTP(secret).now(),
                "next": "/inbox",
            },
        )
        assert done.status_code == 303
        inbox = await c.get("/inbox")
        assert inbox.status_code == 200 and dep.message.id in inbox.text
    async with env.client() as c:
        # Asking for a mailed code does not open the TOTP step: TOTP alone never signs in.
        page = await c.get("/signin")
        await c.post(
            "/signin/send", data={"csrf": csrf_of(page.text), "address": "pat@example.net"}
        )
        assert (await c.get("/signin/totp")).headers["location"] == "/signin"
        r = await c.post(
            "/signin/totp", data={"csrf": csrf_of(page.text), "code": pyotp.TOTP(secret).now()}
        )
        assert r.status_code == 303 and r.headers["location"] == "/signin"
        assert (await c.get("/inbox")).status_code == 303


async def test_returning_recipient_signs_in_with_code_and_sees_all_messages(env: PortalEnv) -> None:
    one = await env.deposit(sample_message(subject="first"), queue_id="Q1")
    two = await env.deposit(sample_message(subject="second"), queue_id="Q2")
    async with env.client() as c:
        page = await c.get("/signin")
        r = await c.post(
            "/signin/send", data={"csrf": csrf_of(page.text), "address": "pat@example.net"}
        )
        assert r.status_code == 303
        form = await c.get("/signin/code")
        code = await env.last_code(1)
        done = await c.post("/signin/verify", data={"csrf": csrf_of(form.text), "code": code})
        assert done.status_code == 303 and done.headers["location"] == "/inbox"
        inbox = await c.get("/inbox")
        assert one.message.id in inbox.text and two.message.id in inbox.text
    async with env.client() as c:
        # An address without messages gets the same answer, and no mail.
        page = await c.get("/signin")
        r = await c.post(
            "/signin/send", data={"csrf": csrf_of(page.text), "address": "nobody@x.example"}
        )
        assert r.status_code == 303 and r.headers["location"] == "/signin/code"
    assert len(env.sink.messages) == 1


async def test_codes_per_hour_are_limited(tmp_path: Path, sink_factory: SinkFactory) -> None:
    async with running_portal(tmp_path, sink_factory, codes_per_hour=2) as env:
        dep = await env.deposit(sample_message())
        async with env.client() as c:
            page = await c.get(f"/m/{dep.token}")
            csrf = csrf_of(page.text)
            codes = [await c.post(f"/m/{dep.token}/send", data={"csrf": csrf}) for _ in range(3)]
        assert [r.status_code for r in codes] == [303, 303, 429]


async def test_read_notification_once(env: PortalEnv) -> None:
    raw = sample_message(extra_headers={"X-Sealgate-Read-Notice": "yes"})
    dep = await env.deposit(raw)
    async with env.client() as c:
        where = await env.sign_in_by_link(c, dep, 1)
        assert (await c.get(where)).status_code == 200
        assert (await c.get(where)).status_code == 200
    got = await env.sink.wait_for_async(2)
    notice = got[1]
    assert notice.rcpt_tos == ["dr.who@clinic.example"]
    text = _parse(notice.data).get_body(("plain",))
    assert text is not None
    content = text.get_content()
    assert "pat@example.net opened" in content and "Lab results" not in content
    row = await env.store.fetchone(
        "SELECT read_notified_at FROM portal_messages WHERE id = ?", (dep.message.id,)
    )
    assert row is not None and row["read_notified_at"] is not None
    assert len(env.sink.messages) == 2


async def test_oversized_upload_is_refused(tmp_path: Path, sink_factory: SinkFactory) -> None:
    async with running_portal(tmp_path, sink_factory, max_reply_size="64k") as env:
        dep = await env.deposit(sample_message())
        async with env.client() as c:
            where = await env.sign_in_by_link(c, dep, 1)
            form = await c.get(f"{where}/reply")
            r = await c.post(
                f"{where}/reply",
                data={"csrf": csrf_of(form.text), "body": "x"},
                files={
                    "attachments": ("big.bin", b"\0" * (512 * 1024), "application/octet-stream")
                },
            )
            assert r.status_code == 413
    assert len(env.sink.messages) == 1  # the code only: no reply went out


async def test_unknown_pages_and_methods_never_show_tracebacks(env: PortalEnv) -> None:
    async with env.client() as c:
        for path in ("/nope", "/messages/../../etc/passwd", "/m/%00", "/static/../app.py"):
            r = await c.get(path)
            assert r.status_code in (404, 303), path
            assert "Traceback" not in r.text
        r = await c.put("/inbox")
        assert r.status_code == 405 and "Traceback" not in r.text
        r = await c.get("/messages/" + "0" * 32 + "/parts/99999999999999999999")
        assert r.status_code in (303, 404)


def _session_cookie(client: httpx.AsyncClient, response: httpx.Response | None = None) -> str:
    """The session cookie a response set, or the one the client holds."""
    if response is not None and "sg_session" in response.cookies:
        return str(response.cookies["sg_session"])
    (value,) = [c.value for c in client.cookies.jar if c.name == "sg_session"]
    assert value is not None
    return value


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL shared by portal nodes (fails rather than skips in CI)."""
    yield from postgres_on("127.0.91.51")


async def test_two_nodes_share_sessions_codes_and_lockouts(
    tmp_path: Path, sink_factory: SinkFactory, pg_server: PostgresServer
) -> None:
    url = pg_server.create_database()
    async with (
        running_portal(tmp_path, sink_factory, "127.0.90.2", storage_url=url) as a,
        running_portal(tmp_path, sink_factory, "127.0.90.3", storage_url=url, sink=a.sink) as b,
    ):
        dep = await a.deposit(sample_message())
        async with a.client() as on_a:
            page = await on_a.get(f"/m/{dep.token}")
            await on_a.post(f"/m/{dep.token}/send", data={"csrf": csrf_of(page.text)})
            code = await a.last_code(1)
            # The load balancer sends the next request to node b: same cookie, same session.
            async with b.client() as on_b:
                on_b.cookies.set("sg_session", _session_cookie(on_a))
                form = await on_b.get(f"/m/{dep.token}/code")
                done = await on_b.post(
                    f"/m/{dep.token}/verify", data={"csrf": csrf_of(form.text), "code": code}
                )
                assert done.status_code == 303
                signed_in = _session_cookie(on_b, done)
            on_a.cookies.clear()
            on_a.cookies.set("sg_session", signed_in)
            assert (await on_a.get(f"/messages/{dep.message.id}")).status_code == 200
        # A lock-out earned on one node holds on the other.
        async with b.client() as c:
            page = await c.get(f"/m/{dep.token}")
            csrf = csrf_of(page.text)
            await c.post(f"/m/{dep.token}/send", data={"csrf": csrf})
            form = await c.get(f"/m/{dep.token}/code")
            for _ in range(10):
                r = await c.post(
                    f"/m/{dep.token}/verify", data={"csrf": csrf_of(form.text), "code": "x"}
                )
        assert r.status_code == 429
        async with a.client() as c:
            page = await c.get(f"/m/{dep.token}")
            r = await c.post(f"/m/{dep.token}/send", data={"csrf": csrf_of(page.text)})
            assert r.status_code == 429


async def test_portal_serves_https_itself(
    tmp_path: Path, sink_factory: SinkFactory, tls_ca: trustme.CA, tls_ca_file: Path
) -> None:
    leaf = tls_ca.issue_cert("127.0.90.4")
    cert, key = tmp_path / "portal.pem", tmp_path / "portal.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    async with running_portal(
        tmp_path, sink_factory, "127.0.90.4", tls={"cert": str(cert), "key": str(key)}
    ) as env:
        assert env.base.startswith("https://")
        dep = await env.deposit(sample_message())
        async with env.client(verify=ssl.create_default_context(cafile=tls_ca_file)) as c:
            r = await c.get(f"/m/{dep.token}")
            assert r.status_code == 200 and r.http_version == "HTTP/1.1"
            # Over HTTPS (base_url https://) cookies are Secure and __Host- prefixed by default.
            assert r.headers["set-cookie"].startswith("__Host-sg_session=")
            assert "secure" in r.headers["set-cookie"].lower()
            assert (await c.get("/healthz")).text == "ok"


async def test_password_guessing_locks_out(tmp_path: Path, sink_factory: SinkFactory) -> None:
    async with running_portal(tmp_path, sink_factory, lockout_failures=3) as env:
        await env.deposit(sample_message())
        async with env.client() as c:
            page = await c.get("/signin")
            csrf = csrf_of(page.text)
            statuses = []
            for guess in ("123456", "password", "letmein123", "correct horse"):
                r = await c.post(
                    "/signin/password",
                    data={"csrf": csrf, "address": "pat@example.net", "password": guess},
                )
                statuses.append(r.status_code)
        # No password was ever set: the answers look the same as for a wrong one.
        assert statuses == [400, 400, 429, 429]
