"""`sealgate dns records|check`: the DNS records a domain needs, and whether they are published.

The records: SPF authorising the gateway, DKIM for each configured key, DMARC,
and MTA-STS with TLS-RPT. `records` works offline from the configuration;
`check` looks the records up and says OK, MISSING or MISMATCH for each.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import ipaddress
import json
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gateway import dkim
from gateway.config import Config
from gateway.resolver import DnsTemporaryError, Resolver

if TYPE_CHECKING:
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
Kind = Literal["spf", "dkim", "dmarc", "mta-sts", "tls-rpt"]
Status = Literal["OK", "MISSING", "MISMATCH", "ERROR"]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ZONE_TTL = 3600
# RFC 7208 §4.6.4: at most 10 terms that cause DNS lookups per SPF evaluation.
_SPF_LOOKUP_LIMIT = 10
_MTA_STS_MAX_AGE = 604800


# --- what to publish -----------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One record to publish: what it is for, where it goes, its value and why."""

    kind: Kind
    name: str  # owner name, no trailing dot
    type: str
    value: str
    required: bool
    note: str


@dataclass(frozen=True)
class Plan:
    """Everything a domain should publish for mail sent through this gateway."""

    domain: str
    hostname: str
    records: list[Record]
    mta_sts_url: str
    mta_sts_policy: str
    notes: list[str] = field(default_factory=list)

    def find(self, kind: Kind) -> list[Record]:
        """The records of one kind."""
        return [r for r in self.records if r.kind == kind]


def spf_value(hostname: str, ips: Sequence[IpAddress]) -> str:
    """An SPF record authorising the gateway by address (when known) or by host name."""
    if ips:
        terms = [f"ip{ip.version}:{ip}" for ip in ips]
    else:
        terms = [f"a:{hostname}"]
    return "v=spf1 " + " ".join(terms) + " ~all"


def merge_spf(existing: str, terms: Sequence[str]) -> str:
    """existing SPF record with terms added before its final all/redirect= (kept as is)."""
    words = existing.split()
    end = next(
        (
            i
            for i, w in enumerate(words)
            if w.lower().lstrip("+-~?") == "all" or w.lower().startswith("redirect=")
        ),
        len(words),
    )
    missing = [t for t in terms if t.lower() not in {w.lower() for w in words}]
    return " ".join(words[:end] + missing + words[end:])


def plan_records(
    cfg: Config,
    domain: str,
    *,
    ips: Sequence[IpAddress] = (),
    mx_hosts: Sequence[str] = (),
    dmarc_rua: str | None = None,
    tlsrpt_rua: str | None = None,
    now: float | None = None,
) -> Plan:
    """The records for domain; DkimKeyError when a configured key cannot be read."""
    domain = dkim.ascii_domain(domain)
    hostname = dkim.ascii_domain(cfg.hostname)
    notes: list[str] = []
    if "." not in hostname:
        notes.append(
            f"hostname {hostname!r} is not a public DNS name: set `hostname` in the "
            "configuration to the gateway's public name, or pass --ip."
        )
    else:
        notes.append(
            f"{hostname} needs an A/AAAA record for the address the gateway sends from, "
            "and that address a PTR record back to it: receivers distrust mismatches."
        )
    records = [
        Record(
            "spf",
            domain,
            "TXT",
            spf_value(hostname, ips),
            True,
            f"Authorises the gateway to send for {domain}. A domain may publish only ONE "
            "SPF record: merge these terms into your existing v=spf1 record (keep "
            "include:spf.protection.outlook.com or include:_spf.google.com if that "
            "platform still sends some mail directly). Keep ~all (soft fail) while you "
            "roll out; change it to -all once DMARC reports show every legitimate "
            "sender passing.",
        )
    ]
    keys = [k for k in cfg.dkim if dkim.ascii_domain(k.domain) == domain]
    for k in keys:
        value = dkim.dns_txt_value(dkim.load_private_key(k.key))
        records.append(
            Record(
                "dkim",
                f"{k.selector}._domainkey.{domain}",
                "TXT",
                value,
                True,
                f"Public half of {k.key}: receivers check the gateway's signatures with it.",
            )
        )
    if not keys:
        notes.append(
            f"No DKIM key is configured for {domain}: create one with `sealgate keys dkim "
            f"generate --domain {domain} --selector sg1`, add it under `dkim:` and run "
            "this command again."
        )
    rua = dmarc_rua or f"dmarc-reports@{domain}"
    records.append(
        Record(
            "dmarc",
            f"_dmarc.{domain}",
            "TXT",
            f"v=DMARC1; p=quarantine; rua=mailto:{rua}; adkim=s; aspf=r",
            True,
            "Tells receivers to quarantine mail claiming to be from "
            f"{domain} that fails both SPF and DKIM alignment, and to send daily "
            f"reports to {rua}. adkim=s: the gateway signs with exactly the From: "
            "domain; aspf=r: bounce addresses at subdomains still align. If other "
            "services send as this domain and are not yet verified, start with p=none, "
            "read the reports for two weeks, then publish p=quarantine (later p=reject).",
        )
    )
    sts_id = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
    records.append(
        Record(
            "mta-sts",
            f"_mta-sts.{domain}",
            "TXT",
            f"v=STSv1; id={sts_id}",
            False,
            "Asks senders to require verified TLS when delivering to your MX hosts. "
            f"Serve the policy below over HTTPS at mta-sts.{domain} (A/CNAME record "
            "and a publicly trusted certificate) and change id= whenever the policy "
            "changes.",
        )
    )
    tls_rua = tlsrpt_rua or f"tls-reports@{domain}"
    records.append(
        Record(
            "tls-rpt",
            f"_smtp._tls.{domain}",
            "TXT",
            f"v=TLSRPTv1; rua=mailto:{tls_rua}",
            False,
            f"Where senders report TLS failures delivering to {domain} (RFC 8460).",
        )
    )
    mx_lines = [f"mx: {h.rstrip('.').lower()}" for h in mx_hosts]
    if not mx_lines:
        # The policy format has no comments, so the placeholder is explained in a note.
        mx_lines = ["mx: YOUR-MX-HOST"]
        notes.append(
            "In the MTA-STS policy, replace YOUR-MX-HOST with one line per MX host of "
            f"{domain} (see `dig MX {domain}`; wildcards like *.mail.example.net are "
            "allowed), or pass --mx HOST for each."
        )
    policy = "\n".join(
        ["version: STSv1", "mode: testing", *mx_lines, f"max_age: {_MTA_STS_MAX_AGE}", ""]
    )
    notes.append(
        "MTA-STS starts in mode: testing; switch to mode: enforce (and change the id) "
        "once TLS-RPT reports show no failures."
    )
    return Plan(
        domain=domain,
        hostname=hostname,
        records=records,
        mta_sts_url=f"https://mta-sts.{domain}/.well-known/mta-sts.txt",
        mta_sts_policy=policy,
        notes=notes,
    )


# --- rendering ---------------------------------------------------------------


def txt_strings(value: str) -> list[str]:
    """Split a TXT value into character-strings of at most 255 bytes (RFC 1035 §3.3.14)."""
    raw = value.encode("utf-8")
    return [raw[i : i + 255].decode("utf-8", "replace") for i in range(0, len(raw), 255)] or [""]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def zone_line(name: str, rtype: str, value: str, ttl: int = ZONE_TTL) -> str:
    """A BIND zone-file line; TXT values are split into quoted strings of <= 255 bytes."""
    owner = name.rstrip(".") + "."
    if rtype == "TXT":
        data = " ".join(_quote(s) for s in txt_strings(value))
    else:
        data = value
    return f"{owner}\t{ttl}\tIN\t{rtype}\t{data}"


_TITLES: dict[Kind, str] = {
    "spf": "SPF",
    "dkim": "DKIM",
    "dmarc": "DMARC",
    "mta-sts": "MTA-STS",
    "tls-rpt": "TLS-RPT",
}


def render_text(plan: Plan) -> str:
    """For people: each record, where it goes and why."""
    out = [f"DNS records for {plan.domain} (mail sent through {plan.hostname})", ""]
    for r in plan.records:
        need = "required" if r.required else "recommended"
        out.append(f"{_TITLES[r.kind]} ({need}): {r.type} record at {r.name}")
        out.append(f"  {r.value}")
        out.extend(_wrap(r.note, "  "))
        out.append("")
    out.append(f"MTA-STS policy file, served at {plan.mta_sts_url}:")
    out.extend("  " + line for line in plan.mta_sts_policy.splitlines())
    out.append("")
    if plan.notes:
        out.append("Notes:")
        for note in plan.notes:
            out.extend(_wrap(note, "  - ", "    "))
    return "\n".join(out)


def render_zone(plan: Plan) -> str:
    """BIND zone-file lines, with the explanations as comments."""
    out = [f"; DNS records for {plan.domain} (mail sent through {plan.hostname})"]
    for r in plan.records:
        out.append("")
        out.extend(_wrap(f"{_TITLES[r.kind]}: {r.note}", "; "))
        out.append(zone_line(r.name, r.type, r.value))
    out.append("")
    out.append(f"; MTA-STS policy file, served at {plan.mta_sts_url}:")
    out.extend(";   " + line for line in plan.mta_sts_policy.splitlines())
    for note in plan.notes:
        out.append("")
        out.extend(_wrap(note, "; "))
    return "\n".join(out)


def render_json(plan: Plan) -> str:
    """One JSON object for scripts."""
    return json.dumps(
        {
            "domain": plan.domain,
            "hostname": plan.hostname,
            "records": [asdict(r) for r in plan.records],
            "mta_sts_policy": {"url": plan.mta_sts_url, "content": plan.mta_sts_policy},
            "notes": plan.notes,
        },
        indent=2,
    )


def _wrap(text: str, first: str, rest: str | None = None, width: int = 88) -> list[str]:
    return textwrap.wrap(
        text,
        width,
        initial_indent=first,
        subsequent_indent=first if rest is None else rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


# --- checking what is published ----------------------------------------------


class Lookups(Protocol):
    """The DNS questions `check` asks (gateway.resolver.Resolver answers them)."""

    async def txt(self, name: str) -> list[str]:
        """Each TXT record of name as one string."""
        ...

    async def addresses(self, host: str) -> list[str]:
        """The IPv4 and IPv6 addresses of host."""
        ...


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one published record."""

    kind: Kind
    name: str
    status: Status
    required: bool
    detail: str
    found: list[str] = field(default_factory=list)
    expected: str = ""


def _tags(value: str) -> dict[str, str] | None:
    """A DKIM/DMARC/MTA-STS tag=value list (RFC 6376 §3.2), or None when malformed."""
    tags: dict[str, str] = {}
    for spec in value.split(";"):
        if not spec.strip():
            continue
        key, sep, val = spec.partition("=")
        key = key.strip().lower()
        if not sep or not key or key in tags:
            return None
        tags[key] = val.strip()
    return tags


def _starts(value: str, version: str) -> bool:
    """Whether a TXT value opens with a version tag such as v=DMARC1 (case-insensitive)."""
    if version == "spf1":
        # RFC 7208 §4.5: "v=spf1" then a space or the end; terms are space-separated.
        words = value.strip().lower().split(maxsplit=1)
        return bool(words) and words[0] == "v=spf1"
    head = value.strip().split(";", 1)[0].replace(" ", "").lower()
    return head == f"v={version.lower()}"


def _public_key_matches(tags: dict[str, str], private: dkim.PrivateKey) -> str | None:
    """None when p= and k= publish private's public half; otherwise what is wrong."""
    p = "".join(tags.get("p", "").split())
    if not p:
        return "the key is revoked (empty p=)"
    k = tags.get("k", "rsa").lower()
    try:
        raw = base64.b64decode(p, validate=True)
    except binascii.Error:
        return "p= is not valid base64"
    if isinstance(private, ed25519.Ed25519PrivateKey):
        if k != "ed25519":
            return f"k={k}, but the configured key is Ed25519"
        ours = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return None if raw == ours else "p= differs from the configured key"
    if k != "rsa":
        return f"k={k}, but the configured key is RSA"
    try:
        # Accepts SubjectPublicKeyInfo and the PKCS#1 form some tools publish.
        published = serialization.load_der_public_key(raw)
    except (ValueError, TypeError):
        return "p= is not an RSA public key"
    if not isinstance(published, rsa.RSAPublicKey):
        return "p= is not an RSA public key"
    same = published.public_numbers() == private.public_key().public_numbers()
    return None if same else "p= differs from the configured key"


class _Checker:
    """Runs the checks for one plan against live DNS."""

    def __init__(
        self,
        dns: Lookups,
        plan: Plan,
        keys: list[tuple[str, Path, dkim.PrivateKey]],
        ips: Sequence[IpAddress],
    ) -> None:
        self.dns = dns
        self.plan = plan
        self.keys = keys
        self.ips = list(ips)

    async def run(self) -> list[CheckResult]:
        checks = [
            self.spf(),
            *(self.dkim(selector, path, key) for selector, path, key in self.keys),
            self.dmarc(),
            self.sts(),
            self.tlsrpt(),
        ]
        return list(await asyncio.gather(*checks))

    async def _txt(self, name: str, version: str) -> list[str]:
        return [v for v in await self.dns.txt(name) if _starts(v, version)]

    # SPF ---------------------------------------------------------------

    async def spf(self) -> CheckResult:
        rec = self.plan.find("spf")[0]
        try:
            found = await self._txt(rec.name, "spf1")
        except DnsTemporaryError as exc:
            return self._error(rec, exc)
        if not found:
            return CheckResult("spf", rec.name, "MISSING", True, "no v=spf1 record", [], rec.value)
        if len(found) > 1:
            return CheckResult(
                "spf",
                rec.name,
                "MISMATCH",
                True,
                f"{len(found)} SPF records: receivers treat that as an error (RFC 7208 "
                "§4.5); merge them into one",
                found,
                rec.value,
            )
        gateway_ips = list(self.ips)
        if not gateway_ips and "." in self.plan.hostname:
            try:
                gateway_ips = [
                    ipaddress.ip_address(a) for a in await self.dns.addresses(self.plan.hostname)
                ]
            except DnsTemporaryError:
                gateway_ips = []
        try:
            how = await self._spf_authorises(found[0], gateway_ips, [0])
        except DnsTemporaryError as exc:
            return self._error(rec, exc, found)
        ours = rec.value.split()[1:-1]
        if how is None:
            who = ", ".join(str(ip) for ip in gateway_ips) or self.plan.hostname
            return CheckResult(
                "spf",
                rec.name,
                "MISMATCH",
                True,
                f"the record does not authorise the gateway ({who}); add {' '.join(ours)}",
                found,
                merge_spf(found[0], ours),
            )
        detail = f"authorises the gateway ({how})"
        all_term = next((t for t in found[0].split() if t.lower().lstrip("+-~?") == "all"), "")
        if all_term in ("all", "+all"):
            return CheckResult(
                "spf",
                rec.name,
                "MISMATCH",
                True,
                f"{all_term} lets any host on the internet send as {self.plan.domain}; "
                "use ~all or -all",
                found,
                " ".join("~all" if t == all_term else t for t in found[0].split()),
            )
        if all_term == "~all":
            detail += "; ~all: change to -all once DMARC reports are clean"
        return CheckResult("spf", rec.name, "OK", True, detail, found, rec.value)

    async def _spf_authorises(
        self, record: str, ips: list[IpAddress], lookups: list[int]
    ) -> str | None:
        """The term through which record passes the gateway, if it does.

        Terms are taken left to right as receivers do (RFC 7208 §4.6.2): the
        first that matches the gateway decides, and nothing after `all` counts.
        Mechanisms that need the sending address in context (mx, bare a, ptr,
        exists) are not evaluated; a record relying on them is reported as not
        authorising the gateway, with the terms to add.
        """
        redirect = None
        for term in record.split()[1:]:
            qualifier = term[0] if term[0] in "+-~?" else ""
            mech = term[len(qualifier) :]
            lower = mech.lower()
            if lower.startswith("redirect="):
                redirect = mech.split("=", 1)[1]
                continue
            if lower == "all":
                return None
            matched: str | None = None
            if lower.startswith("a:"):
                if dkim.ascii_domain(mech[2:].split("/")[0]) == self.plan.hostname:
                    matched = term
            elif lower.startswith(("ip4:", "ip6:")):
                try:
                    net = ipaddress.ip_network(mech[4:], strict=False)
                except ValueError:
                    continue
                if any(ip.version == net.version and ip in net for ip in ips):
                    matched = term
            elif lower.startswith("include:"):
                inner = await self._spf_follow(mech.split(":", 1)[1], ips, lookups)
                if inner:
                    matched = f"{term} -> {inner}"
            if matched:
                return matched if qualifier in ("", "+") else None
        if redirect:
            found = await self._spf_follow(redirect, ips, lookups)
            if found:
                return f"redirect={redirect} -> {found}"
        return None

    async def _spf_follow(self, name: str, ips: list[IpAddress], lookups: list[int]) -> str | None:
        lookups[0] += 1
        if lookups[0] > _SPF_LOOKUP_LIMIT:
            return None
        records = await self._txt(name, "spf1")
        if len(records) != 1:
            return None
        return await self._spf_authorises(records[0], ips, lookups)

    # DKIM --------------------------------------------------------------

    async def dkim(self, selector: str, path: Path, private: dkim.PrivateKey) -> CheckResult:
        name = f"{selector}._domainkey.{self.plan.domain}"
        expected = next((r.value for r in self.plan.find("dkim") if r.name == name), "")
        try:
            found = [v for v in await self.dns.txt(name) if "p=" in v]
        except DnsTemporaryError as exc:
            return CheckResult("dkim", name, "ERROR", True, str(exc), [], expected)
        if not found:
            return CheckResult("dkim", name, "MISSING", True, "no DKIM key record", [], expected)
        if len(found) > 1:
            return CheckResult(
                "dkim",
                name,
                "MISMATCH",
                True,
                f"{len(found)} key records at one selector: verifiers may pick either",
                found,
                expected,
            )
        tags = _tags(found[0])
        if tags is None or ("v" in tags and tags["v"] != "DKIM1"):
            return CheckResult(
                "dkim", name, "MISMATCH", True, "not a valid DKIM key record", found, expected
            )
        problem = _public_key_matches(tags, private)
        if problem:
            return CheckResult(
                "dkim", name, "MISMATCH", True, f"{problem} ({path})", found, expected
            )
        return CheckResult("dkim", name, "OK", True, "matches the configured key", found, expected)

    # DMARC -------------------------------------------------------------

    async def dmarc(self) -> CheckResult:
        rec = self.plan.find("dmarc")[0]
        domain = self.plan.domain
        try:
            found = await self._txt(f"_dmarc.{domain}", "DMARC1")
            inherited = ""
            # RFC 7489 §6.6.3: without its own record a domain falls under its
            # organisational domain's; walk up short of the top-level domain.
            labels = domain.split(".")
            for i in range(1, len(labels) - 1):
                if found:
                    break
                parent = ".".join(labels[i:])
                found = await self._txt(f"_dmarc.{parent}", "DMARC1")
                inherited = parent if found else ""
        except DnsTemporaryError as exc:
            return self._error(rec, exc)
        if not found:
            return CheckResult("dmarc", rec.name, "MISSING", True, "no DMARC record", [], rec.value)
        if len(found) > 1:
            return CheckResult(
                "dmarc",
                rec.name,
                "MISMATCH",
                True,
                f"{len(found)} DMARC records: receivers then apply none (RFC 7489 §6.6.3)",
                found,
                rec.value,
            )
        tags = _tags(found[0]) or {}
        policy = (tags.get("sp") if inherited else None) or tags.get("p", "")
        policy = policy.lower()
        where = f" (inherited from {inherited})" if inherited else ""
        if policy not in ("quarantine", "reject"):
            what = (
                "p=none only monitors: spoofed mail is still delivered"
                if policy == "none"
                else (f"invalid policy p={policy or '(missing)'}")
            )
            return CheckResult(
                "dmarc",
                rec.name,
                "MISMATCH",
                True,
                f"{what}{where}; publish p=quarantine or p=reject",
                found,
                rec.value,
            )
        detail = f"policy {policy}{where}"
        pct = tags.get("pct", "100")
        if pct != "100":
            detail += f"; applied to {pct}% of failing mail only"
        if "rua" not in tags:
            detail += "; no rua=: you receive no aggregate reports"
        return CheckResult("dmarc", rec.name, "OK", True, detail, found, rec.value)

    # MTA-STS and TLS-RPT ------------------------------------------------

    async def sts(self) -> CheckResult:
        rec = self.plan.find("mta-sts")[0]
        try:
            found = await self._txt(rec.name, "STSv1")
        except DnsTemporaryError as exc:
            return self._error(rec, exc)
        if not found:
            return CheckResult(
                "mta-sts", rec.name, "MISSING", False, "no MTA-STS record", [], rec.value
            )
        tags = _tags(found[0]) or {}
        if len(found) > 1 or not tags.get("id"):
            why = "several records" if len(found) > 1 else "no id="
            return CheckResult(
                "mta-sts", rec.name, "MISMATCH", False, f"{why} (RFC 8461 §3.1)", found, rec.value
            )
        return CheckResult(
            "mta-sts",
            rec.name,
            "OK",
            False,
            f"id={tags['id']}; the policy itself is served at {self.plan.mta_sts_url}",
            found,
            rec.value,
        )

    async def tlsrpt(self) -> CheckResult:
        rec = self.plan.find("tls-rpt")[0]
        try:
            found = await self._txt(rec.name, "TLSRPTv1")
        except DnsTemporaryError as exc:
            return self._error(rec, exc)
        if not found:
            return CheckResult(
                "tls-rpt", rec.name, "MISSING", False, "no TLS-RPT record", [], rec.value
            )
        tags = _tags(found[0]) or {}
        if len(found) > 1 or not tags.get("rua"):
            why = "several records" if len(found) > 1 else "no rua="
            return CheckResult(
                "tls-rpt", rec.name, "MISMATCH", False, f"{why} (RFC 8460 §3)", found, rec.value
            )
        return CheckResult("tls-rpt", rec.name, "OK", False, f"reports to {tags['rua']}", found)

    def _error(self, rec: Record, exc: Exception, found: list[str] | None = None) -> CheckResult:
        return CheckResult(
            rec.kind, rec.name, "ERROR", rec.required, str(exc), found or [], rec.value
        )


async def check_domain(
    dns: Lookups, cfg: Config, plan: Plan, ips: Sequence[IpAddress] = ()
) -> list[CheckResult]:
    """Look up every record of plan and judge it."""
    keys = [
        (k.selector, k.key, dkim.load_private_key(k.key))
        for k in cfg.dkim
        if dkim.ascii_domain(k.domain) == plan.domain
    ]
    return await _Checker(dns, plan, keys, ips).run()


def all_required_ok(results: Sequence[CheckResult]) -> bool:
    """True when every required record is published as it should be."""
    return all(r.status == "OK" for r in results if r.required)


def render_check(results: Sequence[CheckResult]) -> str:
    """One line per record, then what to publish for anything not OK."""
    width = max(len(r.name) for r in results)
    out = []
    for r in results:
        need = "" if r.required else " (recommended)"
        out.append(f"{r.status:<9}{_TITLES[r.kind]:<8}{r.name:<{width + 2}}{r.detail}{need}")
    fixes = [r for r in results if r.status in ("MISSING", "MISMATCH") and r.expected]
    if fixes:
        out.append("")
        out.append("To fix, publish:")
        for r in fixes:
            out.append(zone_line(r.name, "TXT", r.expected))
    out.append("")
    if all_required_ok(results):
        out.append("All required records are published.")
    else:
        bad = sum(1 for r in results if r.required and r.status != "OK")
        out.append(f"{bad} required record(s) need attention.")
    return "\n".join(out)


# --- commands ----------------------------------------------------------------


def _ip(text: str) -> IpAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def add_commands(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    """Register `dns records` and `dns check`."""
    group = sub.add_parser(
        "dns",
        parents=[common],
        help="the DNS records to publish, and whether they are published",
        description="The DNS records a sender domain needs (SPF, DKIM, DMARC, MTA-STS).",
    )
    dns_sub = group.add_subparsers(dest="dns_command", metavar="ACTION", required=True)

    records = dns_sub.add_parser(
        "records",
        parents=[common],
        help="print the records to publish for a domain",
        description="Print the SPF, DKIM, DMARC, MTA-STS and TLS-RPT records for a domain.",
    )
    check = dns_sub.add_parser(
        "check",
        parents=[common],
        help="look up what a domain publishes and compare",
        description=(
            "Look up the records of a domain and report each as OK, MISSING or MISMATCH. "
            "Exit 0 when SPF, DMARC and the DKIM record of every configured key are OK."
        ),
    )
    for p in (records, check):
        p.add_argument("--domain", required=True, help="the sender domain, e.g. clinic.example")
        p.add_argument(
            "--ip",
            type=_ip,
            action="append",
            default=[],
            metavar="ADDRESS",
            help="an address the gateway sends from (repeat for several); "
            "default: SPF names the configured hostname",
        )
        p.add_argument("--dmarc-rua", metavar="ADDRESS", help="DMARC report mailbox")
        p.add_argument("--tlsrpt-rua", metavar="ADDRESS", help="TLS-RPT report mailbox")
        p.add_argument("--mx", action="append", default=[], metavar="HOST", help="an MX host")
    records.add_argument(
        "--format", choices=("text", "zone", "json"), default="text", help="output format"
    )
    records.add_argument(
        "--json", dest="format", action="store_const", const="json", help="same as --format json"
    )
    records.set_defaults(func=_records_command)
    check.add_argument("--json", action="store_true", help="print the results as JSON")
    check.set_defaults(func=_check_command)


def _plan(cfg: Config, args: argparse.Namespace) -> Plan:
    return plan_records(
        cfg,
        args.domain,
        ips=args.ip,
        mx_hosts=args.mx,
        dmarc_rua=args.dmarc_rua,
        tlsrpt_rua=args.tlsrpt_rua,
    )


def _records_command(cfg: Config, args: argparse.Namespace) -> int:
    """`dns records`."""
    try:
        plan = _plan(cfg, args)
    except dkim.DkimKeyError as exc:
        print(f"sealgate: {exc}", file=sys.stderr)
        return 1
    render = {"text": render_text, "zone": render_zone, "json": render_json}[args.format]
    print(render(plan))
    return 0


def _check_command(cfg: Config, args: argparse.Namespace) -> int:
    """`dns check`: 0 when every required record is OK, 1 otherwise."""
    try:
        plan = _plan(cfg, args)
        resolver = Resolver(cfg.dns)  # ValueError: a name server that is not an address
    except (dkim.DkimKeyError, ValueError) as exc:
        print(f"sealgate: {exc}", file=sys.stderr)
        return 1
    results = asyncio.run(check_domain(resolver, cfg, plan, args.ip))
    ok = all_required_ok(results)
    if args.json:
        print(
            json.dumps(
                {"domain": plan.domain, "ok": ok, "results": [asdict(r) for r in results]},
                indent=2,
            )
        )
    else:
        print(render_check(results))
    return 0 if ok else 1
