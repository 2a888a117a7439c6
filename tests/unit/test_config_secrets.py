"""Secrets by reference ({ env = ... } / { file = ... }) and the TLS keys of
[server]: what resolves, and the precise errors of what does not; no error
ever prints a secret."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from presence_server.config import ConfigError, load_config, parse_config
from presence_server.secret_refs import SECRET_KEYS, MAX_SECRET_FILE_BYTES
from tests.helpers.tls import TestCA

AC = "AC" + "a" * 32
SK = "SK" + "b" * 32
TOKEN = "auth-token-3f9a1c27e5b84d60"
KEY_SECRET = "key-secret-8d1e4b7a2c9f6053"
OPS = "operator-password-51c0ae93"


def account(auth_token: object = TOKEN, secret: object = KEY_SECRET) -> dict:
    return {"sid": AC, "auth_token": auth_token, "api_keys": [{"sid": SK, "secret": secret}]}


def problems(data: dict, env: dict[str, str] | None = None, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ=env or {}, base_dir=base_dir)
    for secret in (TOKEN, KEY_SECRET, OPS):
        assert secret not in str(info.value), "an error printed a secret"
    return info.value.problems


# -- what resolves --------------------------------------------------------------------------------


def test_env_and_file_references_resolve(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")  # `echo secret > file` leaves a newline: stripped
    (tmp_path / "ops").write_text(OPS + "\r\n")
    data = {
        "accounts": [account({"file": str(tmp_path / "token")}, {"env": "KEY_SECRET"})],
        "operator": {"username": "ops", "password": {"file": "ops"}},
        "engine": {"kind": "redis", "url": {"env": "REDIS_URL"}},
    }
    config = parse_config(data, environ={"KEY_SECRET": KEY_SECRET, "REDIS_URL": "redis://:pw@127.0.0.1:6379/0"}, base_dir=tmp_path)
    assert config.accounts[0].auth_token == TOKEN
    assert config.accounts[0].api_keys[0].secret == KEY_SECRET
    assert config.operator.password == OPS  # a relative name is read next to the config file
    assert config.engine.url == "redis://:pw@127.0.0.1:6379/0"
    assert data["accounts"][0]["auth_token"] == {"file": str(tmp_path / "token")}  # the caller's data is left as given


def test_every_secret_key_takes_a_reference(tmp_path: Path) -> None:
    """Provider credentials (http and smpp), inbound passwords, the PEM of a
    public key: each of the SECRET_KEYS, through a file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "pub.pem").write_bytes(pem)
    for name, value in {"inbound": "inbound-password-123456", "basic": "carrier-basic-pw", "bearer": "bearer-token-xyz", "smpp": "smpppw"}.items():
        (tmp_path / name).write_text(value + "\n")
    data = {
        "accounts": [{"sid": AC, "auth_token": TOKEN, "api_keys": [{"sid": SK, "public_key_pem": {"file": "pub.pem"}}]}],
        "providers": [
            {"name": "carrier", "kind": "http", "url": "https://carrier.example/send", "auth_username": "u",
             "auth_password": {"file": "basic"}, "auth_bearer": {"file": "bearer"},
             "inbound_username": "c", "inbound_password": {"file": "inbound"}},
            {"name": "smsc", "kind": "smpp", "host": "smsc.example", "system_id": "me", "password": {"file": "smpp"}},
        ],
    }
    config = parse_config(data, environ={}, base_dir=tmp_path)
    http, smpp = config.providers
    assert (http.auth_password, http.auth_bearer, http.inbound_password) == ("carrier-basic-pw", "bearer-token-xyz", "inbound-password-123456")
    assert smpp.password == "smpppw"
    assert config.accounts[0].api_keys[0].public_key_pem == pem.decode().rstrip("\n")
    covered = {tuple(p) for p in SECRET_KEYS}
    assert ("server", "tls_key_password") in covered and ("operator", "password") in covered


def test_an_environment_override_may_hold_a_reference(tmp_path: Path) -> None:
    """PRESENCE_OPERATOR_PASSWORD='{ file = "..." }' (a TOML inline table), so
    a deployment that sets overrides can point them at its secret files."""
    (tmp_path / "ops").write_text(OPS)
    env = {"PRESENCE_OPERATOR_USERNAME": "ops", "PRESENCE_OPERATOR_PASSWORD": f'{{ file = "{tmp_path / "ops"}" }}'}
    assert parse_config({}, environ=env).operator.password == OPS


def test_load_config_reads_relative_files_next_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "auth-token").write_text(TOKEN + "\n")
    (conf / "presence.toml").write_text(
        f'[[accounts]]\nsid = "{AC}"\nauth_token = {{ file = "auth-token" }}\n'
        f'[[accounts.api_keys]]\nsid = "{SK}"\nsecret = {{ env = "KEY_SECRET" }}\n'
    )
    monkeypatch.chdir(tmp_path)  # not the config file's directory
    config = load_config(conf / "presence.toml", environ={"KEY_SECRET": KEY_SECRET})
    assert config.accounts[0].auth_token == TOKEN and config.accounts[0].api_keys[0].secret == KEY_SECRET


# -- what does not, and what the errors say -------------------------------------------------------


def test_reference_errors_name_the_key_and_the_cause(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00secret")
    (tmp_path / "huge").write_bytes(b"x" * (MAX_SECRET_FILE_BYTES + 1))
    cases = [
        (account({"env": "NOPE"}), {}, "accounts[0].auth_token: environment variable NOPE is not set"),
        (account({"env": "BLANK"}), {"BLANK": ""}, "accounts[0].auth_token: environment variable BLANK is empty"),
        (account(secret={"file": str(tmp_path / "missing")}), {}, f"accounts[0].api_keys[0].secret: secret file {tmp_path / 'missing'}: no such file"),
        (account({"file": str(tmp_path)}), {}, f"accounts[0].auth_token: secret file {tmp_path}: is a directory"),
        (account({"file": "empty"}), {}, f"accounts[0].auth_token: secret file {tmp_path / 'empty'}: is empty"),
        (account({"file": "binary"}), {}, "not UTF-8 text"),
        (account({"file": "huge"}), {}, f"larger than {MAX_SECRET_FILE_BYTES} bytes"),
        (account({"env": "A", "file": "b"}), {}, "accounts[0].auth_token: a reference takes exactly one of env or file"),
        (account({"env": ""}), {}, "accounts[0].auth_token: env must be a non-empty string"),
        (account({"path": "x"}), {}, "accounts[0].auth_token: must be a string, or a reference"),
    ]
    for acc, env, expected in cases:
        found = problems({"accounts": [acc]}, env, base_dir=tmp_path)
        assert any(p.startswith(expected) or expected in p for p in found), (expected, found)


def test_a_reference_where_no_secret_is_kept_is_refused() -> None:
    found = problems({"server": {"public_url": {"env": "URL"}}}, {"URL": "https://x.example"})
    assert found == [
        "server.public_url: a reference ({ env = ... } or { file = ... }) is accepted only for keys that hold secrets "
        "(docs/configuration.md, 'Secrets by reference')"
    ]


def test_a_resolved_secret_is_still_validated_without_being_printed(tmp_path: Path) -> None:
    (tmp_path / "short").write_text("short-secret\n")  # under 16 characters
    found = problems({"operator": {"username": "ops", "password": {"file": "short"}}}, base_dir=tmp_path)
    assert found == ["operator.password: must be at least 16 characters"]
    assert not any("short-secret" in p for p in found)


def test_check_config_resolves_references(tmp_path: Path) -> None:
    (tmp_path / "presence.toml").write_text(f'[[accounts]]\nsid = "{AC}"\nauth_token = {{ env = "PS_TEST_TOKEN_UNSET" }}\n')
    out = subprocess.run(
        [sys.executable, "-m", "presence_server.cli", "check-config", str(tmp_path / "presence.toml")],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd=Path(__file__).parents[2],
    )
    assert out.returncode == 2, out
    assert "accounts[0].auth_token: environment variable PS_TEST_TOKEN_UNSET is not set" in out.stderr


# -- [server] TLS keys ------------------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


def tls_problems(server: dict, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"server": server}, environ=env or {})
    return info.value.problems


def test_a_good_pair_serves_https_by_default(ca: TestCA) -> None:
    pair = ca.issue()
    config = parse_config({"server": {"tls_cert": str(pair.cert_path), "tls_key": str(pair.key_path), "port": 8443}}, environ={})
    assert config.server.tls and config.server.base_url() == "https://127.0.0.1:8443"
    assert parse_config({}, environ={}).server.base_url() == "http://127.0.0.1:8080"


def test_an_encrypted_key_needs_its_password_which_may_be_a_reference(ca: TestCA, tmp_path: Path) -> None:
    pair = ca.issue(password="key-password-9e1f")
    server = {"tls_cert": str(pair.cert_path), "tls_key": str(pair.key_path)}
    assert tls_problems(server) == [f"server.tls_key: {pair.key_path}: the key is encrypted; set server.tls_key_password"]
    assert tls_problems({**server, "tls_key_password": "wrong-password"}) == [f"server.tls_key_password: does not decrypt {pair.key_path}"]
    config = parse_config({"server": {**server, "tls_key_password": {"env": "TLS_PW"}}}, environ={"TLS_PW": "key-password-9e1f"})
    assert config.server.tls_key_password == "key-password-9e1f"
    plain = ca.issue("plain")
    assert tls_problems({"tls_cert": str(plain.cert_path), "tls_key": str(plain.key_path), "tls_key_password": "x"}) == [
        f"server.tls_key_password: is set, but {plain.key_path} is not encrypted; remove it"
    ]


def test_bad_tls_files_give_precise_errors(ca: TestCA, tmp_path: Path) -> None:
    pair, other = ca.issue("one"), ca.issue("two")
    now = datetime.now(timezone.utc)
    expired = ca.issue("expired", not_before=now - timedelta(days=100), not_after=now - timedelta(days=10))
    future = ca.issue("future", not_before=now + timedelta(days=2), not_after=now + timedelta(days=90))
    cert, key = str(pair.cert_path), str(pair.key_path)
    missing = str(tmp_path / "missing.pem")
    cases = [
        ({"tls_cert": cert}, "server: give both server.tls_cert and server.tls_key, or neither"),
        ({"tls_key_password": "p"}, "server: server.tls_key_password is set without server.tls_key"),
        ({"tls_cert": missing, "tls_key": key}, f"server.tls_cert: {missing}: no such file"),
        ({"tls_cert": cert, "tls_key": missing}, f"server.tls_key: {missing}: no such file"),
        ({"tls_cert": str(tmp_path), "tls_key": key}, f"server.tls_cert: {tmp_path}: is a directory, not a PEM file"),
        ({"tls_cert": key, "tls_key": key}, f"server.tls_cert: {key}: no PEM certificate in it (it holds a private key: is it tls_key's file?)"),
        ({"tls_cert": cert, "tls_key": cert}, f"server.tls_key: {cert}: not a PEM private key (it holds a certificate: is it tls_cert's file?)"),
        ({"tls_cert": cert, "tls_key": str(other.key_path)}, f"server.tls_key: {other.key_path}: this key does not match the certificate (the first one in {cert})"),
        ({"tls_cert": str(expired.cert_path), "tls_key": str(expired.key_path)}, f"server.tls_cert: {expired.cert_path}: the certificate expired on "),
        ({"tls_cert": str(future.cert_path), "tls_key": str(future.key_path)}, f"server.tls_cert: {future.cert_path}: the certificate is not valid before "),
        ({"tls_cert": cert, "tls_key": key, "tls_min_version": "1.1"}, "server.tls_min_version"),
    ]
    for server, expected in cases:
        found = tls_problems(server)
        assert len(found) == 1 and found[0].startswith(expected), (expected, found)


def test_tls_paths_are_relative_to_the_config_file(ca: TestCA, tmp_path: Path) -> None:
    pair = ca.issue()
    (tmp_path / "presence.toml").write_text(f'[server]\ntls_cert = "{pair.cert_path.name}"\ntls_key = "{pair.key_path.name}"\n')
    config = load_config(tmp_path / "presence.toml", environ={})
    assert config.server.tls_cert == str(pair.cert_path) and config.server.tls_key == str(pair.key_path)
