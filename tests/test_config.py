"""Configuration loading: defaults, key-path errors, `sealgate check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config
from gateway.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_embedded_default_matches_contract() -> None:
    cfg = config.load(None)
    assert [str(a) for a in cfg.smtp.listen] == ["127.0.0.1:2525"]
    assert str(cfg.portal.listen) == "127.0.0.1:8025"
    assert cfg.data_dir == Path.cwd() / "sealgate-data"
    assert cfg.delivery.retry.first == 300
    assert cfg.delivery.retry.lifetime == 5 * 86400
    assert [str(n) for n in cfg.smtp.connectors[0].networks] == ["127.0.0.0/8", "::1/128"]


def test_every_problem_is_reported_with_path_and_line() -> None:
    text = """\
smtp:
  listen: ["127.0.0.1:99999"]
  bogus: 1
  users:
    - {username: a, password_hash: "plain", allowed_senders: ["nobody"]}
delivery:
  retry: {first: 5x}
"""
    with pytest.raises(config.ConfigError) as err:
        config.parse(text, "t.yaml")
    got = {(p.path, p.line) for p in err.value.problems}
    assert ("smtp.listen[0]", 2) in got
    assert ("smtp.bogus", 3) in got
    assert ("smtp.users[0].password_hash", 5) in got
    assert ("smtp.users[0].allowed_senders[0]", 5) in got
    assert ("delivery.retry.first", 7) in got
    reasons = {p.path: p.reason for p in err.value.problems}
    assert reasons["smtp.bogus"] == "unknown key"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("smtp: {listen: ['[::1]2525']}", "smtp.listen[0]"),
        (
            "smtp: {connectors: [{name: x, networks: ['10.0.0.0/33']}]}",
            "smtp.connectors[0].networks[0]",
        ),
        ("smtp: {connectors: [{name: x, networks: []}]}", "smtp.connectors[0].networks"),
        (
            "smtp: {connectors: [{name: x, networks: ['10.0.0.0/8'], m365_tenant_ids: [nope]}]}",
            "smtp.connectors[0].m365_tenant_ids",
        ),
        ("smtp: {max_message_size: lots}", "smtp.max_message_size"),
        ("delivery: {mx_port: 0}", "delivery.mx_port"),
        ("dkim: [{domain: a.example, selector: 's 1', key: k}]", "dkim[0].selector"),
        ("dkim: [{domain: a.example, selector: s1, key: /does/not/exist}]", "dkim[0].key"),
        ("smtp: {tls: {cert: /nope.pem, key: /nope.key}}", "smtp.tls.cert"),
        ("[1, 2]", ""),
        ("smtp: [", ""),
    ],
)
def test_bad_values_name_their_key(text: str, path: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.parse(text)
    assert path in {p.path for p in err.value.problems}


def test_values_are_parsed() -> None:
    cfg = config.parse(
        """
smtp:
  listen: ["[::1]:2525", "127.0.0.1:587"]
  max_message_size: 10MB
  connectors:
    - name: m365
      networks: ["192.0.2.0/24"]
      m365_tenant_ids: ["0A1B2C3D-0000-0000-0000-000000000001"]
delivery: {relay_host: "smarthost.example", retry: {first: 1m, lifetime: 2d}}
dns: {nameservers: ["127.0.0.53", "127.0.0.1:5353"]}
"""
    )
    assert cfg.smtp.listen[0].host == "::1" and cfg.smtp.listen[0].port == 2525
    assert cfg.smtp.max_message_size == 10 * 1024 * 1024
    assert cfg.smtp.connectors[0].m365_tenant_ids == ["0a1b2c3d-0000-0000-0000-000000000001"]
    assert str(cfg.delivery.relay_host) == "smarthost.example:25"
    assert cfg.delivery.retry.first == 60 and cfg.delivery.retry.lifetime == 2 * 86400
    assert [str(n) for n in cfg.dns.nameservers] == ["127.0.0.53:53", "127.0.0.1:5353"]


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_text("x")
    cfg_file = tmp_path / "sg.yaml"
    cfg_file.write_text("data_dir: state\ndkim: [{domain: a.example, selector: s, key: k.pem}]\n")
    cfg = config.load(cfg_file)
    assert cfg.data_dir == tmp_path / "state"
    assert cfg.dkim[0].key == tmp_path / "k.pem"


def test_portal_certificate_paths_follow_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "p.pem").write_text("x")
    cfg_file = tmp_path / "sg.yaml"
    cfg_file.write_text("portal: {tls: {cert: p.pem, key: missing.pem}}\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(cfg_file)
    assert [p.path for p in err.value.problems] == ["portal.tls.key"]
    (tmp_path / "missing.pem").write_text("x")
    assert config.load(cfg_file).portal.tls.cert == tmp_path / "p.pem"  # type: ignore[union-attr]


def test_example_config_is_valid_apart_from_its_files(tmp_path: Path) -> None:
    text = (REPO / "sealgate.example.yaml").read_text()
    for name in ("fullchain.pem", "privkey.pem", "clinic.example.sg1.key"):
        (tmp_path / name).write_text("x")
    text = text.replace("/etc/sealgate/tls/", f"{tmp_path}/").replace(
        "/var/lib/sealgate/dkim/", f"{tmp_path}/"
    )
    cfg = config.parse(text, "sealgate.example.yaml")
    assert cfg.smtp.connectors[0].name == "m365"


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"data_dir: {tmp_path}/d\n")
    assert main(["check", "-c", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("smtp:\n  lisen: ['127.0.0.1:25']\n")
    assert main(["check", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "smtp.lisen (line 2): unknown key" in err
    assert main(["check", "-c", str(tmp_path / "missing.yaml")]) == 2
