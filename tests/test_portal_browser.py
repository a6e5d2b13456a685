"""The portal in a real browser (headless Chromium) against the real gateway process.

- A PHI message sent through the gateway to a recipient whose mail server has
  no TLS becomes a portal notification; the browser follows the link, reads
  the code from the recipient's mailbox, opens the message, downloads the
  attachment (same bytes), replies, and the reply reaches the sender over
  verified TLS.
- A corpus of XSS payloads in message HTML, subject and file names executes
  nothing in the browser.
- Screenshots of the main pages at desktop and phone widths (copied to
  docs/screenshots/ when SEALGATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import asyncio
import email.policy
import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from gateway.config import StorageConfig
from gateway.portalbox import Deposit, PortalBox
from gateway.sealing import MasterKey
from gateway.store import open_store
from tests.peers.browser import Browser, browser_available
from tests.peers.dns import DnsServer
from tests.peers.gateway import GatewayFactory, GatewayProcess, free_port, write_config
from tests.peers.portal import sample_message
from tests.peers.sink import SinkFactory, SmtpSink

pytestmark = pytest.mark.slow

PORTAL_HOST = "127.0.90.10"
SMTP_HOST = "127.0.90.11"
MX_PATIENT = "127.0.91.20"  # example.net: no STARTTLS
MX_CLINIC = "127.0.91.21"  # clinic.example: STARTTLS with a certificate from the test CA
SENDER = "dr.alice@clinic.example"
PATIENT = "margaret@example.net"
WAIT = 90.0
REPO = Path(__file__).resolve().parents[1]

PHI_BODY = (
    "Dear Ms Thornton,\r\n\r\n"
    "your results for patient Margaret Thornton (DOB 04/12/1958, SSN 219-09-9999, "
    "MRN 00482913) are attached.\r\n"
    "Diagnosis: type 2 diabetes mellitus (E11.9) with essential hypertension (I10).\r\n"
    "Grüße \u2013 Dr Alice\r\n"
)
ATTACHMENT = ("Laborbefund Thornton \u2013 März.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 40)


@pytest.fixture(autouse=True)
def _need_browser() -> None:
    if not browser_available():
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are not installed; .ci/run installs them")
        pytest.skip("chromium and chromium-driver are not installed (bash .ci/run installs them)")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _phi_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Dr Alice <{SENDER}>"
    msg["To"] = PATIENT
    msg["Subject"] = "Your lab results"
    msg["Message-ID"] = "<phi-1@clinic.example>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg.set_content(PHI_BODY)
    name, data = ATTACHMENT
    msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return msg.as_bytes(policy=email.policy.SMTP)


def _parse(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def _text_of(data: bytes) -> str:
    part = _parse(data).get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def _wait_mail(sink: SmtpSink, pattern: str, timeout: float = WAIT) -> tuple[int, str]:
    """The first message in sink whose text matches pattern: (index, match group 1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i, r in enumerate(list(sink.messages)):
            m = re.search(pattern, _text_of(r.data))
            if m:
                return i, m.group(1)
        time.sleep(0.2)
    raise AssertionError(f"no mail matching {pattern!r} in {len(sink.messages)} messages")


def _gateway(
    tmp: Path,
    dns: DnsServer,
    tls_ca_file: Path,
    gateway_factory: GatewayFactory,
    extra: dict[str, Any] | None = None,
) -> tuple[GatewayProcess, str]:
    port = free_port(PORTAL_HOST)
    base = f"http://{PORTAL_HOST}:{port}"
    cfg = write_config(
        tmp,
        nameserver=dns,
        smtp_host=SMTP_HOST,
        extra={
            "portal": {
                "listen": f"{PORTAL_HOST}:{port}",
                "base_url": base,
                "organisation": "Riverside Clinic",
                "colour": "#0b5d50",
                **(extra or {}),
            },
            "delivery": {
                "tls_ca_file": str(tls_ca_file),
                "tls_policy": {"clinic.example": "verify"},
                "retry": {"first": "2s", "max_backoff": "5s"},
            },
        },
    )
    gw = gateway_factory(cfg)
    gw.wait_for_event("listening", WAIT, service="portal")
    return gw, base


def _dns_for_mx(dns: DnsServer) -> None:
    dns.add("example.net", "MX", "10 mx.example.net.")
    dns.add("mx.example.net", "A", MX_PATIENT)
    dns.add("clinic.example", "MX", "10 mx.clinic.example.")
    dns.add("mx.clinic.example", "A", MX_CLINIC)


def _send(gw: GatewayProcess, sender: str, rcpts: list[str], data: bytes) -> None:
    cfg = gw.config_path
    del cfg
    host, port = SMTP_HOST, _smtp_port(gw)
    with smtplib.SMTP(host, port, timeout=60) as s:
        s.sendmail(sender, rcpts, data)


def _smtp_port(gw: GatewayProcess) -> int:
    (event,) = [e for e in gw.events("listening") if e.get("proto") == "smtp"][:1]
    return int(str(event["address"]).rpartition(":")[2])


def _sign_in_with_code(browser: Browser, patient_sink: SmtpSink, seen: int) -> None:
    browser.wait_for("#send-code").click()
    browser.wait_for("#code")
    deadline = time.monotonic() + WAIT
    code = None
    while time.monotonic() < deadline and code is None:
        for r in list(patient_sink.messages)[seen:]:
            m = re.search(r"\b(\d{6})\b", _text_of(r.data))
            if m and "code" in str(_parse(r.data)["Subject"]).lower():
                code = m.group(1)
        time.sleep(0.2)
    assert code is not None, "no code arrived in the recipient's mailbox"
    browser.fill("#code", code)
    browser.click("form button[type=submit]")


def test_phi_message_read_downloaded_and_answered_in_the_browser(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
    tls_ca_file: Path,
) -> None:
    patient_mx = sink_factory(MX_PATIENT, 25)
    clinic_mx = sink_factory(MX_CLINIC, 25, tls=True, cert_names=["mx.clinic.example"])
    _dns_for_mx(dns_server)
    gw, base = _gateway(tmp_path, dns_server, tls_ca_file, gateway_factory)

    _send(gw, SENDER, [PATIENT], _phi_message())
    index, link = _wait_mail(patient_mx, r"(https?://\S+/m/[A-Za-z0-9_-]+)")
    notification = patient_mx.messages[index]
    assert notification.rcpt_tos == [PATIENT]
    # The notification carries no PHI: neither the subject nor the body nor the file name.
    for secret in ("Thornton", "E11.9", "219-09-9999", "lab results", "Laborbefund"):
        assert secret.lower() not in notification.data.decode("utf-8", "replace").lower()
    assert link.startswith(base)

    with Browser(tmp_path / "downloads") as browser:
        browser.get(link)
        assert "You have a secure message" in browser.text()
        _sign_in_with_code(browser, patient_mx, index + 1)
        browser.wait_for("#subject")
        assert browser.find("#subject").text == "Your lab results"
        body = browser.find("#body-text").text
        assert "Margaret Thornton" in body and "Grüße \u2013 Dr Alice" in body

        name, data = ATTACHMENT
        browser.find('a[href*="/parts/"]').click()
        assert browser.downloaded(name) == data

        browser.click("#reply")
        browser.wait_for("#body").send_keys("Thank you \u2013 I will book the follow-up. Grüße!")
        upload = tmp_path / "Fragebogen ausgefüllt.txt"
        upload.write_bytes("Blutdruck: 130/85 \u2013 Müller\n".encode())
        browser.find("#attachments").send_keys(str(upload))
        browser.click("#send")
        browser.wait_for("#sent")
        assert browser.alert_text() is None

    # The sender also gets the gateway's note that the patient was sent a portal link.
    def replies() -> list[Any]:
        return [r for r in clinic_mx.messages if _parse(r.data)["In-Reply-To"]]

    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and not replies():
        time.sleep(0.2)
    assert replies(), f"the reply did not reach the sender\n{gw.log_text()}"
    (reply,) = replies()
    assert reply.rcpt_tos == [SENDER]
    assert reply.tls_info is not None  # delivered over (verified) TLS, as policy requires
    msg = _parse(reply.data)
    assert msg["In-Reply-To"] == "<phi-1@clinic.example>"
    assert "Thank you \u2013 I will book the follow-up. Grüße!" in _text_of(reply.data)
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "Fragebogen ausgefüllt.txt"
    assert att.get_payload(decode=True) == "Blutdruck: 130/85 \u2013 Müller\n".encode()

    wanted = {"portal_code_sent", "portal_login", "portal_viewed", "portal_downloaded",
              "portal_replied"}  # fmt: skip
    assert wanted <= {e.get("event") for e in gw.events()}
    # ... and they are in the audit trail (recorded by the portal process itself).
    deadline = time.monotonic() + WAIT
    recorded: set[str] = set()
    while time.monotonic() < deadline and not wanted <= recorded:
        out = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "audit", "export", "-c", str(gw.config_path)],
            capture_output=True, text=True, timeout=120, check=True, env=_env(),
        )  # fmt: skip
        recorded = {str(r.get("event")) for r in json.loads(out.stdout or "[]")}
        time.sleep(0.5)
    assert wanted <= recorded, sorted(recorded)
    log = gw.log_text()
    token = link.rsplit("/", 1)[1]
    assert token not in log and "219-09-9999" not in log and "Thornton" not in log


# --- attacks -------------------------------------------------------------------------------

XSS_HTML = [
    "<script>alert('script')</script>",
    "<img src=x onerror=\"alert('img')\">",
    "<svg onload=\"alert('svg')\"><circle r=1 /></svg>",
    "<body onload=\"alert('body')\">",
    "<a id=js href=\"javascript:alert('href')\">click me</a>",
    "<iframe srcdoc=\"<script>parent.alert('srcdoc')</script>\"></iframe>",
    "<iframe src=\"javascript:alert('iframe')\"></iframe>",
    "<object data=\"javascript:alert('object')\"></object>",
    "<embed src=\"javascript:alert('embed')\">",
    "<math><mtext><table><mglyph><style><img src=x onerror=\"alert('mxss')\">",
    "<noscript><p title=\"</noscript><img src=x onerror=alert('noscript')>\">",
    "<details open ontoggle=\"alert('details')\">x</details>",
    "<form><button formaction=\"javascript:alert('form')\">go</button></form>",
    '<meta http-equiv="refresh" content="0;url=javascript:alert(\'meta\')">',
    "<style>@import 'http://127.0.91.99/x.css';"
    " body{background:url(javascript:alert('css'))}</style>",
    "<div style=\"background-image:url(javascript:alert('style'))\">styled</div>",
    "<base href=\"javascript:alert('base')//\"><a href=x>rel</a>",
    "<video><source onerror=\"alert('video')\"></video>",
    "<input autofocus onfocus=\"alert('focus')\">",
    "<marquee onstart=\"alert('marquee')\">m</marquee>",
    "<a href=\"&#106;avascript:alert('entity')\">entity</a>",
    '<img src="x" onerror="&#97;lert(\'entity2\')">',
    "<svg><script href=\"data:,alert('svgscript')\"></script></svg>",
    "<scr<script>ipt>alert('nested')</scr</script>ipt>",
    "<a href=\"data:text/html,<script>alert('data')</script>\">data</a>",
    "<template><img src=x onerror=alert('template')></template>",
]


def _xss_message(html: str, n: int) -> bytes:
    return sample_message(
        subject=f"\"><script>alert('subject{n}')</script><img src=x onerror=alert(1)>",
        text="plain <script>alert('text')</script>",
        html=f"<p>Payload {n}</p>{html}<p>end</p>",
        attachment=(f"\"><img src=x onerror=alert('file{n}')>.pdf", b"%PDF-1.4\n"),
        to=PATIENT,
    )


async def _deposit_all(
    cfg_data_dir: Path, messages: list[bytes], *, sealed: bool = False
) -> list[Deposit]:
    store = await open_store(StorageConfig(), cfg_data_dir)
    try:
        box = PortalBox(store, MasterKey.load(cfg_data_dir / "master.key"))
        return [
            await box.deposit(
                f"QXSS{i:03d}", PATIENT, SENDER, raw, expires_in=3600, sealed_link=sealed
            )
            for i, raw in enumerate(messages)
        ]
    finally:
        await store.close()


def test_xss_payloads_in_message_html_execute_nothing(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
    tls_ca_file: Path,
) -> None:
    patient_mx = sink_factory(MX_PATIENT, 25)
    _dns_for_mx(dns_server)
    gw, base = _gateway(tmp_path, dns_server, tls_ca_file, gateway_factory)
    data_dir = Path(str(gw.config_path.parent / "data"))
    deposits = asyncio.run(
        _deposit_all(data_dir, [_xss_message(h, i) for i, h in enumerate(XSS_HTML)])
    )
    with Browser(tmp_path / "downloads") as browser:
        browser.get(f"{base}/m/{deposits[0].token}")
        _sign_in_with_code(browser, patient_mx, 0)
        browser.wait_for("#subject")
        for i, dep in enumerate(deposits):
            browser.get(f"{base}/messages/{dep.message.id}")
            browser.wait_for("#subject")
            assert browser.alert_text() is None, XSS_HTML[i]
            frame = browser.find("iframe.body-frame")
            browser.driver.switch_to.frame(frame)
            try:
                shown = f"Payload {i}"
                browser.wait_until(lambda s=shown: s in browser.text(), 10, "the message HTML")
                # Follow every link the sanitised HTML kept: none may run script.
                for link in browser.find_all("a"):
                    href = link.get_attribute("href") or ""
                    assert not href.lower().startswith(("javascript:", "data:")), href
                assert browser.alert_text() is None, XSS_HTML[i]
                kinds = ("script", "iframe", "object", "embed", "form", "input", "style")
                assert not browser.find_all(", ".join(f"body {k}" for k in kinds))
            finally:
                browser.driver.switch_to.default_content()
            assert browser.alert_text() is None, XSS_HTML[i]
            # The page itself carries the payloads only as text.
            title = browser.find("#subject").text
            assert "<script>" in title
        # The inbox lists them all, the subjects never executed there either.
        browser.get(f"{base}/inbox")
        assert browser.alert_text() is None


def test_sealed_link_opens_with_the_key_from_the_fragment(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
    tls_ca_file: Path,
) -> None:
    patient_mx = sink_factory(MX_PATIENT, 25)
    _dns_for_mx(dns_server)
    gw, base = _gateway(tmp_path, dns_server, tls_ca_file, gateway_factory)
    data_dir = Path(str(gw.config_path.parent / "data"))
    raw = sample_message(subject="Sealed results", text="Only the link opens this.", to=PATIENT)
    (dep,) = asyncio.run(_deposit_all(data_dir, [raw], sealed=True))
    assert dep.key is not None
    with Browser(tmp_path / "downloads") as browser:
        # Without the fragment the page says the link is incomplete and offers nothing.
        browser.get(f"{base}/m/{dep.token}")
        browser.wait_for("#key-missing")
        assert not browser.find("#send-code").is_enabled()
        browser.get(f"{base}/signin")  # else the next visit is only a jump within the page
        browser.get(dep.link(base))
        browser.wait_until(lambda: browser.find("#send-code").is_enabled(), 30, "the key")
        assert "#" not in browser.url  # the key left the address bar (and history)
        _sign_in_with_code(browser, patient_mx, 0)
        browser.wait_for("#subject")
        assert browser.find("#subject").text == "Sealed results"
        assert "Only the link opens this." in browser.find("#body-text").text
    assert dep.key not in gw.log_text()


def test_screenshots_of_the_main_pages(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
    tls_ca_file: Path,
) -> None:
    patient_mx = sink_factory(MX_PATIENT, 25)
    _dns_for_mx(dns_server)
    gw, base = _gateway(tmp_path, dns_server, tls_ca_file, gateway_factory)
    data_dir = Path(str(gw.config_path.parent / "data"))
    raw = sample_message(
        subject="Your lab results",
        text=(
            "Dear Ms Thornton,\n\nyour blood test results from 20 November are attached. "
            "Everything is within the normal range.\n\nPlease call us if you have any "
            "questions.\n\nDr Alice Grant\nRiverside Clinic"
        ),
        attachment=("Lab results 2026-11-20.pdf", b"%PDF-1.4\n" * 400),
        to=PATIENT,
    )
    raw = raw.replace(
        b"Dr Who <dr.who@clinic.example>", b"Dr Alice Grant <dr.alice@clinic.example>"
    )
    (dep,) = asyncio.run(_deposit_all(data_dir, [raw]))
    shots = tmp_path / "shots"
    pages: list[tuple[str, str]] = []
    with Browser(tmp_path / "downloads") as browser:
        browser.get(f"{base}/m/{dep.token}")
        pages.append(("link", browser.url))
        for width, label in ((1280, "desktop"), (390, "phone")):
            browser.screenshot(shots / f"portal-link-{label}.png", width)
        _sign_in_with_code(browser, patient_mx, 0)
        browser.get(f"{base}/m/{dep.token}/code")
        for width, label in ((1280, "desktop"), (390, "phone")):
            browser.screenshot(shots / f"portal-code-{label}.png", width)
        browser.get(f"{base}/messages/{dep.message.id}")
        browser.wait_for("#subject")
        for width, label in ((1280, "desktop"), (390, "phone")):
            browser.screenshot(shots / f"portal-message-{label}.png", width)
        browser.get(f"{base}/messages/{dep.message.id}/reply")
        for width, label in ((1280, "desktop"), (390, "phone")):
            browser.screenshot(shots / f"portal-reply-{label}.png", width)
        browser.get(f"{base}/inbox")
        for width, label in ((1280, "desktop"), (390, "phone")):
            browser.screenshot(shots / f"portal-inbox-{label}.png", width)
        # Keyboard use: the first Tab reaches the skip link.
        from selenium.webdriver.common.keys import Keys

        browser.find("body").send_keys(Keys.TAB)
        active = browser.driver.switch_to.active_element
        assert active.get_attribute("class") == "skip"
    files = sorted(shots.glob("*.png"))
    assert len(files) == 10 and all(f.stat().st_size > 5000 for f in files)
    if os.environ.get("SEALGATE_SCREENSHOTS") == "1":
        target = REPO / "docs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, target / f.name)
