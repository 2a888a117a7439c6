from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from presence_server.config import Config, ConfigError, load_config, parse_config

AC = "AC" + "a" * 32
SK = "SK" + "b" * 32
GOOD = {"accounts": [{"sid": AC, "auth_token": "t" * 32, "api_keys": [{"sid": SK, "secret": "s" * 32}]}]}


def problems(data: dict, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ=env or {})
    return info.value.problems


def test_defaults() -> None:
    cfg = parse_config({}, environ={})
    assert cfg.server.port == 8080 and cfg.server.host == "127.0.0.1" and cfg.engine.kind == "memory"
    assert cfg.accounts == []


def test_good_config() -> None:
    cfg = parse_config(GOOD, environ={})
    assert cfg.accounts[0].api_keys[0].sid == SK


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"prot": 1}}, "server.prot: unknown key"),
        ({"engine": {"kind": "postgres"}}, "engine.kind"),
        ({"engine": {"kind": "redis"}}, "engine.url is required"),
        ({"engine": {"kind": "redis", "url": "http://x"}}, "scheme 'http' is not supported: use one of redis://"),
        ({"accounts": [{"sid": AC, "auth_token": "t" * 32, "api_keys": [{"sid": SK, "public_key_pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}]}]}, "accounts[0].api_keys[0].public_key_pem"),
        ({"accounts": [{"sid": "AC1", "auth_token": "t" * 32}]}, "accounts[0].sid: must be 'AC'"),
        ({"accounts": [{"sid": AC, "auth_token": "short"}]}, "accounts[0].auth_token: must be at least 16"),
        ({"accounts": [{"sid": AC, "auth_token": "t" * 32, "api_keys": [{"sid": SK}]}]}, "accounts[0].api_keys[0]: an API key needs"),
        ({"accounts": [{"sid": AC, "auth_token": "t" * 32, "api_keys": [{"sid": "SKx", "secret": "s" * 32}]}]}, "accounts[0].api_keys[0].sid"),
        ({"accounts": [{"sid": AC, "auth_token": "t" * 32, "identities": [{"identity": "a b"}]}]}, "accounts[0].identities[0].identity"),
        ({"accounts": [{"sid": AC, "auth_token": "t" * 32, "identities": [{"identity": "a", "phone": "555"}]}]}, "accounts[0].identities[0].phone"),
        ({"accounts": [GOOD["accounts"][0], GOOD["accounts"][0]]}, "account sid twice"),
        ({"gateway": {"heartbeat": 60, "idle_timeout": 30}}, "idle_timeout must be longer"),
        ({"dev": True}, "dev: not a file setting"),
        # The messaging pipeline's sections.
        ({"messaging": {"class_shares": {"urgent": 0.5, "normal": 0.5}}}, "give a share for each"),
        ({"messaging": {"class_shares": {"urgent": 0.5, "normal": 0.4, "bulk": 0.2}}}, "sum to 1"),
        ({"messaging": {"lease": 15}}, "must be more than twice the longest send"),
        ({"operator": {"username": "ops"}}, "give both operator username and password"),
        ({"operator": {"username": "ops", "password": "short"}}, "operator.password: must be at least 16"),
        ({"routes": [{"name": "r", "providers": [{"name": "nope"}]}]}, "names provider 'nope'"),
        ({"routes": [{"name": "default", "providers": [{"name": "outbox"}]}]}, "built-in route"),
        ({"routes": [{"name": "r", "countries": ["usa"], "providers": [{"name": "outbox"}]}]}, "routes[0].countries"),
        ({"routes": [{"name": "r", "prefixes": ["44"], "providers": [{"name": "outbox"}]}]}, "routes[0].prefixes"),
        ({"routes": [{"name": "r", "providers": []}]}, "routes[0].providers"),
        ({"providers": [{"name": "s", "kind": "smpp"}]}, "needs host, system_id and password"),
        ({"providers": [{"name": "s", "kind": "smpp", "host": "h", "system_id": "x" * 16, "password": "p"}]}, "providers[0].system_id"),
        ({"providers": [{"name": "o", "mps": 0}]}, "providers[0].mps"),
        ({"accounts": [{"sid": AC, "auth_token": "t" * 32, "messaging_services": [{"sid": "MGx", "senders": ["+15550001111"]}]}]}, "messaging_services[0].sid"),
        ({"accounts": [{"sid": AC, "auth_token": "t" * 32, "messaging_services": [{"sid": "MG" + "0" * 32, "senders": ["+15550001111"]}]}]}, "not one of this account's phone_numbers"),
        ({"accounts": [{"sid": AC, "auth_token": "t" * 32, "messaging_services": [{"sid": "MG" + "0" * 32, "senders": ["Way Too Long Sender"]}]}]}, "neither an E.164 number nor an alphanumeric"),
        ({"accounts": [{"sid": AC, "auth_token": "t" * 32, "messaging_services": [{"sid": "MG" + "0" * 32, "senders": ["Acme"], "usecase": "spam"}]}]}, "must be one of"),
    ],
)
def test_bad_keys_are_named(data: dict, expected: str) -> None:
    found = problems(data)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_numbers_are_refused(value: float) -> None:
    # TOML spells them ``inf`` and ``nan``; a heartbeat or a rate of inf would pass ``gt=0``.
    assert problems({"gateway": {"heartbeat": value}}) == ["gateway.heartbeat: Input should be a finite number"]
    assert problems({"http": {"rate": value}}) == ["http.rate: Input should be a finite number"]


def test_non_finite_numbers_are_refused_from_toml_and_env(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[messaging]\nretry_max = inf\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.problems == ["messaging.retry_max: Input should be a finite number"]
    assert problems({}, {"PRESENCE_PRESENCE_LEASE_TTL": "nan"}) == ["presence.lease_ttl: Input should be a finite number"]


def test_env_overrides() -> None:
    cfg = parse_config(GOOD, environ={"PRESENCE_SERVER_PORT": "9001", "PRESENCE_GATEWAY_MAX_FRAME_BYTES": "2048", "PRESENCE_SERVER_HOST": "::1"})
    assert cfg.server.port == 9001 and cfg.gateway.max_frame_bytes == 2048 and cfg.server.host == "::1"


def test_bad_env_names_the_variable() -> None:
    assert problems({}, {"PRESENCE_SERVER_PROT": "1"}) == ["PRESENCE_SERVER_PROT: [server] has no key 'prot'"]
    parse_config({}, environ={"PRESENCE_URL": "ws://x", "PRESENCE_TOKEN": "t"})  # a client's variables: not ours
    assert "server.port" in problems({}, {"PRESENCE_SERVER_PORT": "eighty"})[0]


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})


def test_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "deploy" / "config.example.toml"
    cfg = load_config(example, environ={})
    assert isinstance(cfg, Config) and cfg.accounts


def test_check_config_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nport = "x"\n')
    out = subprocess.run([sys.executable, "-m", "presence_server.cli", "check-config", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "server.port" in out.stderr


def test_docs_name_every_key() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    for section_name, section in Config.model_fields.items():
        if section_name == "dev":
            continue
        model = section.annotation
        if hasattr(model, "model_fields"):
            for key in model.model_fields:
                assert f"{key}" in doc, f"docs/configuration.md does not mention [{section_name}] {key}"
