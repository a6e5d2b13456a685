"""The test peers themselves behave like the real servers they stand for."""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path

import aiosmtplib
import dns.asyncresolver
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest

from tests.peers.dns import DnsServer
from tests.peers.gateway import GatewayError, GatewayFactory, write_config
from tests.peers.postfix import PostfixFactory, durable_relay, null_client
from tests.peers.sink import SinkFactory

MESSAGE = b"From: a@clinic.example\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nhello\r\n"


def _resolver(server: DnsServer) -> dns.asyncresolver.Resolver:
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = [server.address]
    r.port = server.port
    r.lifetime = 10
    return r


# --- DNS ------------------------------------------------------------------------


async def test_dns_answers_each_record_type(dns_server: DnsServer) -> None:
    dns_server.add("example.net", "MX", "10 mx1.example.net.")
    dns_server.add("example.net", "MX", "20 mx2.example.net.")
    dns_server.add("mx1.example.net", "A", "127.0.0.2")
    dns_server.add("mx1.example.net", "AAAA", "::1")
    dns_server.add("_25._tcp.mx1.example.net", "TLSA", "3 1 1 " + "ab" * 32)
    dns_server.add("alias.example.net", "CNAME", "mx1.example.net.")
    r = _resolver(dns_server)

    mx = await r.resolve("example.net", "MX")
    assert sorted((x.preference, str(x.exchange)) for x in mx) == [
        (10, "mx1.example.net."),
        (20, "mx2.example.net."),
    ]
    assert [x.address for x in await r.resolve("mx1.example.net", "A")] == ["127.0.0.2"]
    assert [x.address for x in await r.resolve("mx1.example.net", "AAAA")] == ["::1"]
    tlsa = await r.resolve("_25._tcp.mx1.example.net", "TLSA")
    assert [(x.usage, x.selector, x.mtype, x.cert.hex()) for x in tlsa] == [(3, 1, 1, "ab" * 32)]
    alias = await r.resolve("alias.example.net", "A")
    assert [x.address for x in alias] == ["127.0.0.2"]
    assert alias.canonical_name.to_text() == "mx1.example.net."


async def test_dns_negative_answers(dns_server: DnsServer) -> None:
    dns_server.add("s1._domainkey.clinic.example", "TXT", "v=DKIM1; p=")
    dns_server.add("mx1.example.net", "A", "127.0.0.2")
    dns_server.fail("broken.example.net")
    r = _resolver(dns_server)

    with pytest.raises(dns.resolver.NXDOMAIN):
        await r.resolve("nowhere.example.net", "A")
    with pytest.raises(dns.resolver.NoAnswer):  # NODATA: the name exists, the type does not
        await r.resolve("mx1.example.net", "AAAA")
    with pytest.raises(dns.resolver.NoAnswer):  # an empty non-terminal is not NXDOMAIN
        await r.resolve("_domainkey.clinic.example", "TXT")
    with pytest.raises(dns.resolver.NoNameservers):  # SERVFAIL from the only server
        await r.resolve("broken.example.net", "A")


async def test_dns_long_txt_is_chunked_and_served_over_tcp(dns_server: DnsServer) -> None:
    value = "v=DKIM1; k=rsa; p=" + "A" * 800
    dns_server.add("big._domainkey.clinic.example", "TXT", value)
    q = dns.message.make_query("big._domainkey.clinic.example", "TXT")

    udp = await dns.asyncquery.udp(q, dns_server.address, port=dns_server.port, timeout=10)
    assert udp.flags & dns.flags.TC  # too big for 512 bytes: the client must retry over TCP
    tcp = await dns.asyncquery.tcp(q, dns_server.address, port=dns_server.port, timeout=10)
    (rrset,) = tcp.answer
    (txt,) = list(rrset)
    assert all(len(s) <= 255 for s in txt.strings)
    assert b"".join(txt.strings).decode() == value

    answer = await _resolver(dns_server).resolve("big._domainkey.clinic.example", "TXT")
    assert b"".join(next(iter(answer)).strings).decode() == value
    assert ("big._domainkey.clinic.example.", "TXT", "tcp") in {
        (x.name, x.rtype, x.protocol) for x in dns_server.queries
    }


async def test_dns_edns_lets_large_answers_fit_in_udp(dns_server: DnsServer) -> None:
    dns_server.add("mid.example.net", "TXT", "x" * 700)
    q = dns.message.make_query("mid.example.net", "TXT", use_edns=0, payload=1232)
    reply = await dns.asyncquery.udp(q, dns_server.address, port=dns_server.port, timeout=10)
    assert not reply.flags & dns.flags.TC
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA


async def test_dns_drop_remove_and_clear(dns_server: DnsServer) -> None:
    dns_server.add("a.example.net", "A", "127.0.0.2")
    dns_server.add("a.example.net", "TXT", "hello")
    dns_server.drop("slow.example.net")
    r = _resolver(dns_server)
    r.lifetime = 1
    with pytest.raises(dns.resolver.LifetimeTimeout):
        await r.resolve("slow.example.net", "A")
    dns_server.remove("a.example.net", "TXT")
    assert [x.address for x in await r.resolve("a.example.net", "A")] == ["127.0.0.2"]
    with pytest.raises(dns.resolver.NoAnswer):
        await r.resolve("a.example.net", "TXT")
    dns_server.clear()
    assert dns_server.queries == []
    with pytest.raises(dns.resolver.NXDOMAIN):
        await r.resolve("a.example.net", "A")


def test_dns_server_on_any_port() -> None:
    with DnsServer("127.0.0.1", 0) as server:
        assert server.port != 0
        server.add("a.example", "A", "127.0.0.9")
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [server.address]
        r.port = server.port
        r.lifetime = 10
        assert [x.address for x in r.resolve("a.example", "A")] == ["127.0.0.9"]


# --- SMTP sink ------------------------------------------------------------------


def test_sink_records_plain_message(sink_factory: SinkFactory) -> None:
    sink = sink_factory("127.0.0.2")
    with smtplib.SMTP(sink.host, sink.port, local_hostname="client.test", timeout=30) as s:
        s.sendmail("a@clinic.example", ["b@example.net", "c@example.net"], MESSAGE)
    (msg,) = sink.wait_for(1, timeout=30)
    mail_from, rcpt_tos, data, tls_info = msg
    assert (mail_from, rcpt_tos, data, tls_info) == (
        "a@clinic.example",
        ["b@example.net", "c@example.net"],
        MESSAGE,
        None,
    )
    assert msg.peer[0] == "127.0.0.1"
    assert msg.helo == "client.test"
    assert sink.connections == 1


async def test_sink_starttls_with_test_ca(sink_factory: SinkFactory, tls_ca_file: Path) -> None:
    sink = sink_factory("127.0.0.3", tls=True)
    ctx = ssl.create_default_context(cafile=str(tls_ca_file))
    async with aiosmtplib.SMTP(
        hostname=sink.host, port=sink.port, start_tls=False, timeout=30
    ) as client:
        await client.starttls(tls_context=ctx, server_hostname="mx1.example.net")
        await client.sendmail("a@clinic.example", ["b@example.net"], MESSAGE)
    (msg,) = await sink.wait_for_async(1, timeout=30)
    assert msg.tls_info is not None
    assert msg.tls_info.version.startswith("TLSv1.")
    assert msg.tls_info.cipher
    assert msg.tls_info.sni == "mx1.example.net"


def test_sink_scripted_replies(sink_factory: SinkFactory) -> None:
    sink = sink_factory("127.0.0.4")
    sink.reply_rcpt["later@example.net"] = "450 4.2.0 try later"
    sink.reply_rcpt["gone@example.net"] = "550 5.1.1 no such user"
    sink.reply_data = ["451 4.3.0 later", None]
    with smtplib.SMTP(sink.host, sink.port, timeout=30) as s:
        s.ehlo()
        assert s.mail("a@clinic.example")[0] == 250
        assert s.rcpt("later@example.net") == (450, b"4.2.0 try later")
        assert s.rcpt("gone@example.net") == (550, b"5.1.1 no such user")
        assert s.rcpt("ok@example.net")[0] == 250
        assert s.data(MESSAGE) == (451, b"4.3.0 later")
        s.rset()
        s.sendmail("a@clinic.example", ["ok@example.net"], MESSAGE)
    (msg,) = sink.wait_for(1, timeout=30)
    assert msg.rcpt_tos == ["ok@example.net"]


def test_many_sinks_on_port_25_at_once(sink_factory: SinkFactory) -> None:
    sinks = [sink_factory(f"127.0.0.{i}") for i in range(2, 21)]
    for sink in sinks:
        with smtplib.SMTP(sink.host, 25, timeout=30) as s:
            s.sendmail("a@clinic.example", [f"x@{sink.host}.example"], MESSAGE)
    for sink in sinks:
        assert [m.rcpt_tos for m in sink.wait_for(1, timeout=30)] == [[f"x@{sink.host}.example"]]


def test_sink_stops_and_frees_its_address(sink_factory: SinkFactory) -> None:
    first = sink_factory("127.0.0.5")
    first.stop()
    second = sink_factory("127.0.0.5")
    with smtplib.SMTP(second.host, second.port, timeout=30) as s:
        assert s.noop()[0] == 250


def test_sink_auth_after_starttls(sink_factory: SinkFactory, tls_ca_file: Path) -> None:
    sink = sink_factory("127.0.0.6", tls=True, auth={"relayuser": "s3cret"})
    with smtplib.SMTP(sink.host, sink.port, timeout=30) as s:
        s.starttls(context=ssl.create_default_context(cafile=str(tls_ca_file)))
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("relayuser", "wrong")
        s.login("relayuser", "s3cret")
        s.sendmail("a@clinic.example", ["b@example.net"], MESSAGE)
    (msg,) = sink.wait_for(1, timeout=30)
    assert msg.auth_login == "relayuser"


def test_wait_for_times_out_with_a_clear_error(sink_factory: SinkFactory) -> None:
    sink = sink_factory("127.0.0.7")
    with pytest.raises(TimeoutError, match="got 0 message"):
        sink.wait_for(1, timeout=0.1)


# --- Postfix --------------------------------------------------------------------


@pytest.mark.slow
def test_postfix_null_client_relays_with_starttls_and_auth(
    postfix_factory: PostfixFactory, sink_factory: SinkFactory, tls_ca_file: Path
) -> None:
    smarthost = sink_factory("127.0.0.1", 0, tls=True, auth={"tenant": "pw-123"})
    upstream = postfix_factory.start(
        null_client(
            f"[{smarthost.host}]:{smarthost.port}",
            listen="127.0.0.40",
            port=2526,
            tls="verify",
            ca_file=tls_ca_file,
            sasl=("tenant", "pw-123"),
            settings={"smtp_tls_verify_cert_match": "localhost"},
        )
    )
    with smtplib.SMTP(upstream.listen, upstream.port, timeout=30) as s:
        s.sendmail("a@clinic.example", ["b@example.net"], MESSAGE)

    (msg,) = smarthost.wait_for(1, timeout=120)
    assert msg.mail_from == "a@clinic.example"
    assert msg.rcpt_tos == ["b@example.net"]
    assert msg.auth_login == "tenant"
    assert msg.tls_info is not None
    assert b"\r\nhello\r\n" in msg.data
    assert b"Received: from " in msg.data  # Postfix really handled it
    assert upstream.queue() == []
    assert "status=sent" in upstream.log()


@pytest.mark.slow
def test_postfix_null_client_retries_a_deferral(
    postfix_factory: PostfixFactory, sink_factory: SinkFactory
) -> None:
    smarthost = sink_factory("127.0.0.1", 0)
    smarthost.reply_data = ["451 4.3.0 try again"]
    upstream = postfix_factory.start(
        null_client(f"[{smarthost.host}]:{smarthost.port}", listen="127.0.0.40", port=2527)
    )
    with smtplib.SMTP(upstream.listen, upstream.port, timeout=30) as s:
        s.sendmail("a@clinic.example", ["b@example.net"], MESSAGE)
    (msg,) = smarthost.wait_for(1, timeout=120)
    assert msg.rcpt_tos == ["b@example.net"]
    assert "status=deferred" in upstream.log()


@pytest.mark.slow
def test_postfix_durable_relay_to_fixed_next_hop(
    postfix_factory: PostfixFactory, sink_factory: SinkFactory
) -> None:
    sink = sink_factory("127.0.0.8")
    relay = postfix_factory.start(durable_relay(f"[{sink.host}]:25", listen="127.0.0.41", port=25))
    for i in range(5):
        with smtplib.SMTP(relay.listen, relay.port, timeout=30) as s:
            s.sendmail("bench@clinic.example", [f"r{i}@example.net"], MESSAGE)
    got = sink.wait_for(5, timeout=120)
    assert sorted(r for m in got for r in m.rcpt_tos) == [f"r{i}@example.net" for i in range(5)]
    assert not got[0].tls_info


# --- the gateway process ----------------------------------------------------------


def test_gateway_process_reports_why_it_did_not_start(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, extra={"smtp": {"bogus_key": 1}})
    with pytest.raises(GatewayError, match=r"exited \(2\)") as err:
        gateway_factory(cfg)
    assert "smtp.bogus_key" in str(err.value)


@pytest.mark.slow
def test_gateway_process_relays_to_an_mx_sink(
    gateway_factory: GatewayFactory,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    tmp_path: Path,
) -> None:
    mx = sink_factory("127.0.0.9")
    dns_server.add("example.net", "MX", "10 mx.example.net.")
    dns_server.add("mx.example.net", "A", mx.host)
    cfg = write_config(tmp_path, nameserver=dns_server.nameserver)
    gw = gateway_factory(cfg)
    assert {e["address"] for e in gw.events("listening")} >= {cfg.smtp_address}

    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=60) as s:
        s.sendmail("a@clinic.example", ["b@example.net"], MESSAGE)
    (msg,) = mx.wait_for(1, timeout=120)
    assert (msg.mail_from, msg.rcpt_tos) == ("a@clinic.example", ["b@example.net"])
    assert b"\r\nhello\r\n" in msg.data
    assert gw.stop() == 0
