"""gateway.config: good and bad TOML; every error names the key at fault."""

from __future__ import annotations

import ipaddress
import stat
import tomllib
from pathlib import Path

import pytest

from mailmoat import limits
from mailmoat.errors import ConfigError
from mailmoat.gateway.config import default_config, default_listeners, load_config, parse_config
from mailmoat.net.tls import ServerTLS, load_certificate_names

MX = '[[listener]]\nport = 25\nmode = "plain"\nrole = "mx"\n'
CERT = '[tls]\ncertificates = [{ cert = "c.pem", key = "k.pem" }]\n'


def bad(text: str, tmp_path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir=tmp_path)
    return info.value


def test_full_example(tmp_path: Path) -> None:
    text = """
[server]
hostname = "MX.Example.ORG."
data_dir = "data"
workers = 3

[[listener]]
address = "127.0.0.1"
port = 465
mode = "implicit-tls"
role = "submission"

[[listener]]
address = "::1"
port = 25
mode = "starttls"
role = "mx"
require_tls = true

[[listener]]
port = 2525
mode = "plain"
role = "mx"

[tls]
min_version = "1.3"
certificates = [
  { cert = "tls/a.pem", key = "tls/a.key", names = ["mx.example.org", "*.Example.NET"] },
  { cert = "/etc/b.pem", key = "/etc/b.key" },
]

[limits]
max_message_size = 1048576
max_recipients = 200
max_connections = 10
max_connections_per_ip = 2
idle_timeout = 30
[limits.timeouts]
data_init = 60

[smtp]
bare_newline = "normalize"

[relay]
local_domains = ["Example.org", "bücher.example"]
trusted_networks = ["10.0.0.0/8", "2001:db8::/32"]

[auth]
users_file = "u.jsonl"

[spool]
dir = "/srv/spool"
fsync = false
"""
    config = parse_config(text, base_dir=tmp_path)
    data = (tmp_path / "data").resolve()
    assert config.server.hostname == "mx.example.org"
    assert config.server.data_dir == data
    assert config.server.workers == 3
    sub, mx, plain = config.listener
    assert (sub.address, sub.port, sub.mode, sub.role, sub.tls_required) == (
        "127.0.0.1", 465, "implicit-tls", "submission", True)
    assert (mx.address, mx.tls_required) == ("::1", True)
    assert (plain.address, plain.tls_required) == ("0.0.0.0", False)
    assert config.offers_starttls(plain)
    assert config.offers_starttls(mx)
    assert not config.offers_starttls(sub)
    assert config.tls.min_version == "1.3"
    a, b = config.tls.specs()
    assert (a.cert, a.key) == (data / "tls/a.pem", data / "tls/a.key")
    assert a.names == ("mx.example.org", "*.example.net")
    assert (b.cert, b.names) == (Path("/etc/b.pem"), ())
    assert config.limits.max_message_size == 1048576
    assert config.limits.timeouts.data_init == 60
    # RFC 5321 §4.5.3.2 defaults where unset: DATA termination 10 minutes, MAIL 5 minutes.
    assert config.limits.timeouts.data_term == 600
    assert config.limits.timeouts.mail == 300
    assert config.smtp.bare_newline == "normalize"
    # IDNA2008 A-label of "bücher" (RFC 5891 example, punycode per RFC 3492).
    assert config.relay.local_domains == ("example.org", "xn--bcher-kva.example")
    assert config.relay.trusted_networks == (
        ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    assert config.users_file == data / "u.jsonl"
    assert config.spool_dir == Path("/srv/spool")
    assert config.spool.fsync is False


def test_minimal_defaults(tmp_path: Path) -> None:
    config = parse_config(MX, base_dir=tmp_path)
    assert config.server.data_dir == tmp_path.resolve()
    assert config.users_file == tmp_path.resolve() / "users.jsonl"
    assert config.spool_dir == tmp_path.resolve() / "spool"
    assert config.limits.timeouts.greeting == 300  # RFC 5321 §4.5.3.2.1: 5 minutes
    assert config.limits.timeouts.data_block == 180  # §4.5.3.2.5: 3 minutes
    assert config.limits.timeouts.data_init == 120  # §4.5.3.2.4: 2 minutes
    assert config.smtp.bare_newline == "reject"
    assert not config.offers_starttls(config.listener[0])  # plain, no certificate


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ('[[listener]]\nport = 25\nmode = "bogus"\nrole = "mx"\n', "listener[0].mode", "implicit-tls"),
        (MX + '[[listener]]\nport = 26\nmode = "plain"\nrole = "relay"\n', "listener[1].role", "submission"),
        (MX + "[limits.timeouts]\ndata_init = -1\n", "limits.timeouts.data_init", "greater than 0"),
        (MX + "[limits]\nmax_recipient = 5\n", "limits.max_recipient", "unknown setting"),
        (MX + "[limits]\nmax_recipients = 5\n", "limits.max_recipients", "100"),
        (MX + "[limits]\nmax_message_size = \"big\"\n", "limits.max_message_size", "integer"),
        (MX + MX, "listener[1].port", "already used by listener[0]"),
        (MX + '[relay]\ntrusted_networks = ["10.0.0.1/8"]\n', "relay.trusted_networks", "10.0.0.1/8"),
        (MX + '[relay]\nlocal_domains = ["a..b"]\n', "relay.local_domains", "a..b"),
        (MX + '[smtp]\nbare_newline = "accept"\n', "smtp.bare_newline", "normalize"),
        (MX + '[tls]\nmin_version = "1.1"\n', "tls.min_version", "1.2"),
        (MX + '[tls]\ncertificates = [{ cert = "c.pem" }]\n', "tls.certificates[0].key", "missing"),
        (MX + '[spool]\nfsync = "sometimes"\n', "spool.fsync", "bool"),
        (MX + "[server]\nworkers = 0\n", "server.workers", "greater than or equal to 1"),
        ('[[listener]]\nport = 99999\nmode = "plain"\nrole = "mx"\n', "listener[0].port", "65535"),
        ('[[listener]]\naddress = "localhost"\nport = 25\nmode = "plain"\nrole = "mx"\n',
         "listener[0].address", "not an IP address"),
        ('[[listener]]\nport = 25\nmode = "starttls"\nrole = "mx"\n', "listener[0].mode", "certificate"),
        ('[[listener]]\nport = 587\nmode = "plain"\nrole = "submission"\n', "listener[0].role", "no certificate"),
        ('[[listener]]\nport = 25\nmode = "plain"\nrole = "mx"\nrequire_tls = true\n',
         "listener[0].require_tls", "no certificate"),
        (CERT + '[[listener]]\nport = 587\nmode = "starttls"\nrole = "submission"\nrequire_tls = false\n',
         "listener[0].require_tls", "always require TLS"),
        ("[server]\nhostname = 'x'\n", "listener", "missing"),
        ("listener = []\n[server]\nhostname = 'x'\n", "listener", "at least 1"),
        ("[server]\nhostname = 'x'\nlistener = []\n", "server.listener", "unknown setting"),
        (MX + "[bogus]\n", "bogus", "unknown setting"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    error = bad(text, tmp_path)
    assert error.key == key
    assert str(error).startswith(f"{key}: ")
    assert fragment in str(error)


def test_several_errors_listed(tmp_path: Path) -> None:
    error = bad(MX + "[limits]\nmax_recipients = 5\nidle_timeout = 0\n", tmp_path)
    assert error.key == "limits.max_recipients"
    assert "limits.idle_timeout" in str(error)


def test_toml_syntax_error(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text("[server\nhostname = 1\n")
    with pytest.raises(ConfigError, match=f"{file}: not valid TOML.*line 1"):
        load_config(file)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml")


def test_load_relative_to_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    file = tmp_path / "etc" / "mailmoat.toml"
    file.write_text('[server]\ndata_dir = "../var"\n' + MX)
    config = load_config(file)
    assert config.server.data_dir == (tmp_path / "var").resolve()
    assert config.spool_dir == (tmp_path / "var" / "spool").resolve()


@pytest.mark.parametrize("is_root", [False, True])
def test_default_config_first_run(tmp_path: Path, is_root: bool) -> None:
    data = tmp_path / "data"
    config, file = default_config(data, hostname="mx.example.org", is_root=is_root, ipv6=False)
    assert file == data.resolve() / "config.toml"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    # The file written is plain TOML (independent parser) and reloads to the same config.
    raw = tomllib.loads(file.read_text())
    assert raw["server"]["hostname"] == "mx.example.org"
    assert load_config(file) == config
    ports = {(listener.port, listener.mode, listener.role) for listener in config.listener}
    if is_root:
        assert ports == {(465, "implicit-tls", "submission"), (587, "starttls", "submission"),
                         (25, "starttls", "mx"), (2525, "starttls", "mx")}
    else:
        assert ports == {(2465, "implicit-tls", "submission"), (2587, "starttls", "submission"),
                         (2525, "starttls", "mx")}
        assert all(listener.port >= 1024 for listener in config.listener)
    (spec,) = config.tls.specs()
    assert load_certificate_names(spec.cert) == ("mx.example.org", "localhost")
    assert stat.S_IMODE(spec.key.stat().st_mode) == 0o600
    ServerTLS(list(config.tls.specs()))  # loads: the key matches the certificate
    assert config.relay.local_domains == ("mx.example.org",)
    assert config.users_file.exists()
    assert stat.S_IMODE(config.users_file.stat().st_mode) == 0o600


def test_default_config_keeps_existing(tmp_path: Path) -> None:
    _, file = default_config(tmp_path, hostname="mx.example.org", is_root=False, ipv6=False)
    file.write_text(file.read_text().replace("fsync = true", "fsync = false"))
    cert = (tmp_path / "tls" / "cert.pem").read_bytes()
    config, _ = default_config(tmp_path, hostname="other.example", is_root=False)
    assert config.spool.fsync is False
    assert config.server.hostname == "mx.example.org"
    assert (tmp_path / "tls" / "cert.pem").read_bytes() == cert


def test_default_listeners_ipv6() -> None:
    listeners = default_listeners(is_root=False, ipv6=True)
    assert {item["address"] for item in listeners} == {"0.0.0.0", "::"}


def test_limit_defaults_match_constants(tmp_path: Path) -> None:
    config = parse_config(MX, base_dir=tmp_path)
    assert config.limits.max_connections_per_ip == limits.SERVER_MAX_CONNECTIONS_PER_IP
    assert config.limits.idle_timeout == limits.SERVER_IDLE_TIMEOUT


def test_dns_resolvers_key_is_validated_and_named(tmp_path: Path) -> None:
    base = '[[listener]]\naddress = "127.0.0.1"\nport = 2525\nmode = "plain"\nrole = "mx"\n'
    good = parse_config(base + '[dns]\nresolvers = ["127.0.0.1:5353", "[::1]:53"]\n',
                        base_dir=tmp_path, source=None)
    assert good.dns.resolvers == ("127.0.0.1:5353", "[::1]:53")
    assert good.dns.trust_ad is False
    with pytest.raises(ConfigError) as info:
        parse_config(base + '[dns]\nresolvers = ["not a server:99999"]\n',
                     base_dir=tmp_path, source=None)
    assert info.value.key is not None
    assert info.value.key.startswith("dns.resolvers")


def test_first_run_signs_submitted_mail_with_a_new_dkim_key(tmp_path: Path) -> None:
    import dkim as dkimpy
    from cryptography.hazmat.primitives.asymmetric import rsa

    from mailmoat.auth.dkim import key_record
    from mailmoat.clock import SYSTEM_CLOCK
    from mailmoat.gateway.pipeline import signing_keys_from_config, submission_from_config

    config, _ = default_config(tmp_path, hostname="mx.example.org", is_root=False, ipv6=False)
    (key,) = signing_keys_from_config(config)
    assert (key.domain, key.selector) == ("mx.example.org", "mm1")
    assert isinstance(key.key, rsa.RSAPrivateKey)
    assert key.key.key_size == 2048  # RFC 8301 §3.2
    path = tmp_path / "dkim" / "mx.example.org" / "mm1.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    message = (b"From: alice@mx.example.org\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\n"
               b"hello\r\n")
    signer = submission_from_config(config, clock=SYSTEM_CLOCK)
    signed = signer.prepare_sync(message, user=None).message
    record = key_record(key.key).encode()
    assert dkimpy.verify(signed, dnsfunc=lambda name, timeout=5: record)
    # A second start keeps the key (receivers have its record).
    again, _ = default_config(tmp_path, hostname="mx.example.org", is_root=False)
    (same,) = signing_keys_from_config(again)
    assert key_record(same.key) == key_record(key.key)


def test_serve_prints_the_dkim_record_to_publish(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from mailmoat.cli.serve import _print_dkim_records

    config, _ = default_config(tmp_path, hostname="mx.example.org", is_root=False, ipv6=False)
    _print_dkim_records(config)
    out = capsys.readouterr().out
    assert "mm1._domainkey.mx.example.org. IN TXT (" in out
    assert '"v=DKIM1; k=rsa; p=' in out
