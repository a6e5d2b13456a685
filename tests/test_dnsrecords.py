"""`sealgate keys dkim generate`, `dns records` and `dns check`, through the real CLI."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from gateway import dkim
from gateway.cli import main
from gateway.dnsrecords import txt_strings, zone_line
from tests.peers.dns import DnsServer

DOMAIN = "clinic.example"
HOST = "gw.clinic.example"


def write_config(tmp_path: Path, dns_server: DnsServer | None, keys: list[Path]) -> Path:
    lines = [f"data_dir: {tmp_path / 'data'}", f"hostname: {HOST}"]
    if dns_server is not None:
        lines += ["dns:", f'  nameservers: ["{dns_server.nameserver}"]', "  timeout: 10s"]
    if keys:
        lines.append("dkim:")
        for path in keys:
            domain, selector = path.name.removesuffix(".key").rsplit(".", 1)
            lines.append(f"  - {{domain: {domain}, selector: {selector}, key: {path}}}")
    cfg = tmp_path / "sealgate.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- keys dkim generate -----------------------------------------------------------


def test_keys_dkim_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, None, [])
    code, out, err = run(
        capsys, "-c", str(cfg), "keys", "dkim", "generate", "--domain", DOMAIN, "--selector", "sg1"
    )
    assert code == 0, err
    path = tmp_path / "data" / "dkim" / "clinic.example.sg1.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in out
    value = dkim.dns_txt_value(dkim.load_private_key(path))
    assert value.startswith("v=DKIM1; k=rsa; p=") and value in out
    # The zone-file line: TXT split into quoted strings of at most 255 characters.
    zone = next(line for line in out.splitlines() if line.startswith("sg1._domainkey."))
    assert zone.startswith("sg1._domainkey.clinic.example.\t")
    strings = re.findall(r'"([^"]*)"', zone)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert "".join(strings) == value
    # The configuration snippet to paste.
    assert "dkim:" in out and f'key: "{path}"' in out

    # The key is never silently replaced; -c may also follow the subcommand.
    again = ["keys", "dkim", "generate", "-c", str(cfg), "--domain", DOMAIN, "--selector", "sg1"]
    code, out, err = run(capsys, *again)
    assert code == 1 and "already exists" in err and "--force" in err
    before = path.read_bytes()
    code, out, err = run(capsys, *again, "--force", "--algorithm", "ed25519", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["path"] == str(path) and path.read_bytes() != before
    assert result["name"] == "sg1._domainkey.clinic.example"
    assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", result["value"])


def test_keys_dkim_generate_rejects_bad_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, None, [])
    code, _, err = run(
        capsys, "-c", str(cfg), "keys", "dkim", "generate", "--domain", "../x", "--selector", "s"
    )
    assert code == 1 and "not a domain name" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["-c", str(cfg), "keys", "dkim", "generate", "--domain", DOMAIN])
    assert exit_info.value.code == 2  # argparse: --selector is required


# --- dns records ---------------------------------------------------------------------


@pytest.fixture
def keyfiles(tmp_path: Path) -> list[Path]:
    data = tmp_path / "data"
    rsa_path, _ = dkim.generate_key(data, DOMAIN, "sg1", "rsa2048")
    ed_path, _ = dkim.generate_key(data, DOMAIN, "sg2", "ed25519")
    return [rsa_path, ed_path]


def expected_dkim(path: Path) -> str:
    return dkim.dns_txt_value(dkim.load_private_key(path))


def test_dns_records_text(
    tmp_path: Path, keyfiles: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, None, keyfiles)
    code, out, err = run(capsys, "-c", str(cfg), "dns", "records", "--domain", DOMAIN)
    assert code == 0, err
    assert f"v=spf1 a:{HOST} ~all" in out
    assert "only ONE" in out and "-all" in out  # merge advice and the -all step
    for path in keyfiles:
        assert expected_dkim(path) in out
    assert "sg1._domainkey.clinic.example" in out and "sg2._domainkey.clinic.example" in out
    assert "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@clinic.example; adkim=s" in out
    assert re.search(r"v=STSv1; id=\d{14}", out)
    assert "v=TLSRPTv1; rua=mailto:tls-reports@clinic.example" in out
    assert "https://mta-sts.clinic.example/.well-known/mta-sts.txt" in out
    assert "version: STSv1" in out and "mode: testing" in out
    assert "mx: YOUR-MX-HOST\n" in out and "replace YOUR-MX-HOST" in out


def test_dns_records_zone_and_json(
    tmp_path: Path, keyfiles: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, None, keyfiles)
    base = ["-c", str(cfg), "dns", "records", "--domain", DOMAIN, "--ip", "192.0.2.10"]
    code, out, err = run(
        capsys, *base, "--ip", "2001:db8::25", "--mx", "mx1.clinic.example", "--format", "zone"
    )
    assert code == 0, err
    data = json.loads(run(capsys, *base, "--json")[1])
    zone = [line for line in out.splitlines() if line and not line.startswith(";")]
    # Every line outside comments is a complete zone-file record.
    for line in zone:
        assert re.fullmatch(r'\S+\.\t3600\tIN\tTXT\t("[^"]{0,255}" ?)+', line), line
    assert f'{DOMAIN}.\t3600\tIN\tTXT\t"v=spf1 ip4:192.0.2.10 ip6:2001:db8::25 ~all"' in zone
    assert zone_line("sg1._domainkey.clinic.example", "TXT", expected_dkim(keyfiles[0])) in zone
    assert ";   mx: mx1.clinic.example" in out

    assert data["domain"] == DOMAIN
    by_name = {r["name"]: r for r in data["records"]}
    assert by_name[DOMAIN]["value"] == "v=spf1 ip4:192.0.2.10 ~all"
    assert by_name["sg2._domainkey.clinic.example"]["value"] == expected_dkim(keyfiles[1])
    assert by_name["_dmarc.clinic.example"]["required"] is True
    assert by_name["_mta-sts.clinic.example"]["required"] is False
    assert data["mta_sts_policy"]["content"].startswith("version: STSv1\nmode: testing\n")


def test_dns_records_without_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, None, [])
    code, out, _ = run(capsys, "-c", str(cfg), "dns", "records", "--domain", "other.example")
    assert code == 0
    assert "No DKIM key is configured for other.example" in out
    assert "_domainkey" not in out.replace("keys dkim", "")


def test_txt_strings_split_at_255_bytes() -> None:
    value = "v=DKIM1; k=rsa; p=" + "A" * 600
    parts = txt_strings(value)
    assert [len(p) for p in parts] == [255, 255, 108]
    assert "".join(parts) == value


# --- dns check ------------------------------------------------------------------------


def publish_all(dns_server: DnsServer, keyfiles: list[Path]) -> None:
    dns_server.add(DOMAIN, "TXT", "v=spf1 mx a:gw.clinic.example include:spf.other.example -all")
    dns_server.add(DOMAIN, "TXT", "google-site-verification=abc")
    for path in keyfiles:
        selector = path.name.removesuffix(".key").rsplit(".", 1)[1]
        dns_server.add(f"{selector}._domainkey.{DOMAIN}", "TXT", expected_dkim(path))
    dns_server.add(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=reject; rua=mailto:d@clinic.example")
    dns_server.add(f"_mta-sts.{DOMAIN}", "TXT", "v=STSv1; id=20240101000000")
    dns_server.add(f"_smtp._tls.{DOMAIN}", "TXT", "v=TLSRPTv1; rua=mailto:t@clinic.example")


def check(
    capsys: pytest.CaptureFixture[str], cfg: Path, *extra: str
) -> tuple[int, dict[str, dict[str, object]], str]:
    code, out, err = run(capsys, "-c", str(cfg), "dns", "check", "--domain", DOMAIN, *extra)
    assert not err, err
    data = json.loads(
        run(capsys, "-c", str(cfg), "dns", "check", "--domain", DOMAIN, "--json", *extra)[1]
    )
    assert data["ok"] is (code == 0)
    return code, {r["name"]: r for r in data["results"]}, out


def test_dns_check_all_published(
    tmp_path: Path,
    keyfiles: list[Path],
    dns_server: DnsServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = write_config(tmp_path, dns_server, keyfiles)
    publish_all(dns_server, keyfiles)
    code, results, out = check(capsys, cfg)
    assert code == 0, out
    assert {name: r["status"] for name, r in results.items()} == {
        DOMAIN: "OK",
        "sg1._domainkey.clinic.example": "OK",
        "sg2._domainkey.clinic.example": "OK",
        "_dmarc.clinic.example": "OK",
        "_mta-sts.clinic.example": "OK",
        "_smtp._tls.clinic.example": "OK",
    }
    assert "All required records are published." in out
    assert re.search(r"^OK\s+SPF\s+clinic\.example\s", out, re.MULTILINE)


def test_dns_check_reports_missing_and_mismatched(
    tmp_path: Path,
    keyfiles: list[Path],
    dns_server: DnsServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = write_config(tmp_path, dns_server, keyfiles)
    # Nothing published at all.
    code, results, out = check(capsys, cfg)
    assert code == 1
    assert {r["status"] for r in results.values()} == {"MISSING"}
    assert "To fix, publish:" in out
    assert (
        zone_line("_dmarc.clinic.example", "TXT", str(results["_dmarc.clinic.example"]["expected"]))
        in out
    )

    # An SPF record without the gateway, a stale DKIM key, DMARC that only monitors.
    other = dkim.dns_txt_value(
        dkim.load_private_key(dkim.generate_key(tmp_path / "o", DOMAIN, "x", "rsa2048")[0])
    )
    dns_server.add(DOMAIN, "TXT", "v=spf1 include:spf.protection.outlook.com -all")
    dns_server.add(f"sg1._domainkey.{DOMAIN}", "TXT", other)
    dns_server.add(f"sg2._domainkey.{DOMAIN}", "TXT", expected_dkim(keyfiles[1]))
    dns_server.add(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=none; rua=mailto:d@clinic.example")
    code, results, out = check(capsys, cfg)
    assert code == 1
    assert results[DOMAIN]["status"] == "MISMATCH"
    assert f"a:{HOST}" in str(results[DOMAIN]["detail"])
    # The fix keeps what the domain already authorises.
    merged = f"v=spf1 include:spf.protection.outlook.com a:{HOST} -all"
    assert results[DOMAIN]["expected"] == merged
    assert results["sg1._domainkey.clinic.example"]["status"] == "MISMATCH"
    assert "differs" in str(results["sg1._domainkey.clinic.example"]["detail"])
    assert results["sg2._domainkey.clinic.example"]["status"] == "OK"
    assert results["_dmarc.clinic.example"]["status"] == "MISMATCH"
    assert "p=none" in str(results["_dmarc.clinic.example"]["detail"])
    # Optional records missing are reported but do not fail the check.
    assert results["_mta-sts.clinic.example"]["status"] == "MISSING"
    assert results["_mta-sts.clinic.example"]["required"] is False


def test_dns_check_follows_spf_includes_and_addresses(
    tmp_path: Path,
    keyfiles: list[Path],
    dns_server: DnsServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = write_config(tmp_path, dns_server, keyfiles[:1])
    publish_all(dns_server, keyfiles[:1])
    dns_server.remove(DOMAIN, "TXT")
    dns_server.add(DOMAIN, "TXT", "v=spf1 include:_spf.clinic.example ~all")
    dns_server.add("_spf.clinic.example", "TXT", "v=spf1 ip4:198.51.100.0/24 -all")
    dns_server.add(HOST, "A", "198.51.100.25")
    code, results, out = check(capsys, cfg)
    assert code == 0, out
    assert "ip4:198.51.100.0/24" in str(results[DOMAIN]["detail"])
    # The gateway's address given explicitly is what counts.
    code, results, _ = check(capsys, cfg, "--ip", "203.0.113.9")
    assert code == 1 and results[DOMAIN]["status"] == "MISMATCH"


@pytest.mark.parametrize(
    ("records", "status"),
    [
        (["v=spf1 a:gw.clinic.example ~all", "v=spf1 -all"], "MISMATCH"),  # two SPF records
        (["v=spf1 a:gw.clinic.example +all"], "MISMATCH"),  # anyone may send
        (["v=spf1 -all a:gw.clinic.example"], "MISMATCH"),  # nothing after all counts
        (["v=spf1 -a:gw.clinic.example ~all"], "MISMATCH"),  # the gateway is refused
        (["V=SPF1 A:GW.Clinic.Example -ALL"], "OK"),
    ],
)
def test_dns_check_spf_errors(
    tmp_path: Path,
    keyfiles: list[Path],
    dns_server: DnsServer,
    capsys: pytest.CaptureFixture[str],
    records: list[str],
    status: str,
) -> None:
    cfg = write_config(tmp_path, dns_server, keyfiles)
    publish_all(dns_server, keyfiles)
    dns_server.remove(DOMAIN, "TXT")
    for value in records:
        dns_server.add(DOMAIN, "TXT", value)
    code, results, _ = check(capsys, cfg)
    assert results[DOMAIN]["status"] == status
    assert code == (0 if status == "OK" else 1)


def test_dns_check_dmarc_inherited_from_parent(
    tmp_path: Path, dns_server: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, dns_server, [])
    sub = "lab.clinic.example"
    dns_server.add(sub, "TXT", "v=spf1 a:gw.clinic.example -all")
    dns_server.add("_dmarc.clinic.example", "TXT", "v=DMARC1; p=none; sp=quarantine")
    code, out, _ = run(capsys, "-c", str(cfg), "dns", "check", "--domain", sub)
    assert code == 0, out
    assert "inherited from clinic.example" in out


def test_dns_check_dns_failure_is_an_error(
    tmp_path: Path,
    keyfiles: list[Path],
    dns_server: DnsServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = write_config(tmp_path, dns_server, keyfiles)
    publish_all(dns_server, keyfiles)
    dns_server.fail(f"_dmarc.{DOMAIN}")
    code, results, _ = check(capsys, cfg)
    assert code == 1
    assert results["_dmarc.clinic.example"]["status"] == "ERROR"
    assert "SERVFAIL" in str(results["_dmarc.clinic.example"]["detail"])
