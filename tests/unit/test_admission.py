"""The pure rules under the edge limits: the client address behind trusted
proxies, per-address grouping, bounded bucket tables, and their config keys."""

from __future__ import annotations

import pytest

from presence_server.config import ConfigError, parse_config
from protocol.forwarding import client_address, limit_key, parse_networks
from protocol.ratelimit import BucketTable

PROXIES = parse_networks(["10.0.0.0/8", "127.0.0.1", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("198.51.100.4", ["203.0.113.9"], "198.51.100.4"),  # not a proxy of ours: its header is ignored
        ("10.1.2.3", [], "10.1.2.3"),  # a proxy that says nothing
        ("10.1.2.3", ["203.0.113.9"], "203.0.113.9"),
        ("10.1.2.3", ["198.51.100.1, 203.0.113.9"], "203.0.113.9"),  # the left part is the client's own words
        ("10.1.2.3", ["203.0.113.9, 10.4.4.4"], "203.0.113.9"),  # two proxies of ours in a row
        ("10.1.2.3", ["198.51.100.1", "203.0.113.9, 10.4.4.4"], "203.0.113.9"),  # several header lines
        ("10.1.2.3", ["10.9.9.9, 10.4.4.4"], "10.9.9.9"),  # only proxies: the leftmost
        ("10.1.2.3", ["garbage, 10.4.4.4"], "10.4.4.4"),  # unreadable: stop at the last hop read
        ("10.1.2.3", ["203.0.113.9:4711"], "203.0.113.9"),  # a port some proxies add
        ("10.1.2.3", ["[2001:db8::1]:4711"], "2001:db8::1"),
        ("::ffff:10.1.2.3", ["203.0.113.9"], "203.0.113.9"),  # a dual-stack socket's mapped address
        ("fd00::1", ["2001:db8::7"], "2001:db8::7"),
        (None, ["203.0.113.9"], "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded: list[str], expected: str) -> None:
    assert client_address(peer, forwarded, PROXIES) == expected


def test_no_trusted_proxies_means_the_peer() -> None:
    assert client_address("10.1.2.3", ["203.0.113.9"], ()) == "10.1.2.3"


def test_limit_key_groups_ipv6_by_64() -> None:
    assert limit_key("203.0.113.9") == "203.0.113.9"
    assert limit_key("2001:db8:1:2::a") == limit_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::a") != limit_key("2001:db8:1:2::a")
    assert limit_key("unknown") == "unknown"


def test_parse_networks_names_the_bad_entry() -> None:
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not an IP address or CIDR network"):
        parse_networks(["10.0.0.0/8", "10.0.0.0/33"])


def test_bucket_table_limits_each_key_and_forgets_the_least_recent() -> None:
    table = BucketTable(rate=1.0, burst=2, max_keys=2)
    assert [table.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 1.0]  # the third waits a second
    assert table.take("b", 0.0) == 0.0
    assert table.wait("a", 0.5) == pytest.approx(0.5)
    table.take("c", 0.5)  # a third key: "b", the least recently used, is forgotten
    assert len(table) == 2 and table.wait("b", 0.5) == 0.0
    assert table.wait("a", 1.0) == 0.0  # refilled one


def test_bucket_table_charge_counts_without_going_below_empty() -> None:
    table = BucketTable(rate=0.1, burst=2)
    for _ in range(5):
        table.charge("x", 0.0)
    assert table.wait("x", 0.0) == pytest.approx(10.0)  # one token away, not four


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"server": {"trusted_proxies": ["10.0.0.0/8", "proxy.local"]}}, "server.trusted_proxies: 'proxy.local' is not an IP address"),
        ({"gateway": {"max_connections_per_address": -1}}, "gateway.max_connections_per_address: Input should be greater than or equal to 0"),
        ({"gateway": {"max_sessions_per_account": -5}}, "gateway.max_sessions_per_account: Input should be greater than or equal to 0"),
        ({"http": {"rate": 0}}, "http.rate: Input should be greater than 0"),
        ({"http": {"burst": 0}}, "http.burst: Input should be greater than or equal to 1"),
        ({"http": {"auth_failure_rate": -1}}, "http.auth_failure_rate: Input should be greater than 0"),
        ({"http": {"header_timeout": 0}}, "http.header_timeout: Input should be greater than 0"),
        ({"http": {"header_timeot": 5}}, "http.header_timeot: unknown key"),
    ],
)
def test_limit_keys_are_validated_with_precise_errors(data: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, environ={})
    assert any(p.startswith(problem) for p in exc.value.problems), exc.value.problems


def test_limit_keys_from_the_environment() -> None:
    config = parse_config({}, environ={"PRESENCE_HTTP_RATE": "50", "PRESENCE_SERVER_TRUSTED_PROXIES": '["10.0.0.0/8"]'})
    assert config.http.rate == 50.0 and config.server.trusted_proxies == ["10.0.0.0/8"]
    defaults = parse_config({}, environ={})
    assert (defaults.gateway.max_connections_per_address, defaults.gateway.max_sessions_per_account) == (1000, 10000)
    assert (defaults.http.rate, defaults.http.burst, defaults.http.header_timeout) == (1000.0, 2000, 75.0)
