"""The URL guard: which URLs and addresses the server refuses to request, and why.

No network: literal addresses are judged by UrlPolicy.check_url; host names
by GuardedResolver, here over a fake inner resolver.
"""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from presence_server.signaling.fetcher import FetchOverrides, split_fragment
from presence_server.signaling.urlguard import (
    HTTP_BAD_HOST,
    HTTP_RETRIEVAL_FAILURE,
    AddressRefused,
    GuardedResolver,
    UrlPolicy,
    UrlRefused,
    address_category,
    guarded_session,
    parse_endpoint,
    redirect_method,
)

STRICT = UrlPolicy(allow_private=False, allow_loopback=False)
LOOPBACK = UrlPolicy(allow_private=False, allow_loopback=True)
PRIVATE = UrlPolicy(allow_private=True, allow_loopback=False)


def refused(policy: UrlPolicy, url: str) -> UrlRefused:
    with pytest.raises(UrlRefused) as info:
        policy.check_url(url)
    return info.value


# -- literal addresses -------------------------------------------------------------------------

LOOPBACK_URLS = [
    "http://127.0.0.1/",
    "http://127.255.255.254:8080/x",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped, dotted
    "http://[::ffff:7f00:1]/",  # IPv4-mapped, hex
]

PRIVATE_URLS = {
    "http://10.0.0.1/": "private",
    "http://172.16.5.4/": "private",
    "http://172.31.255.255/": "private",
    "http://192.168.1.1/": "private",
    "http://100.64.0.1/": "private",  # carrier-grade NAT
    "http://169.254.169.254/latest/meta-data/": "link-local",  # cloud metadata
    "http://169.254.1.1/": "link-local",
    "http://0.0.0.0/": "unspecified",
    "http://0.1.2.3/": "unspecified",
    "http://224.0.0.1/": "multicast",
    "http://239.255.255.250/": "multicast",
    "http://240.0.0.1/": "reserved",
    "http://255.255.255.255/": "reserved",
    "http://192.0.0.8/": "reserved",
    "http://192.0.2.10/": "reserved",
    "http://198.18.0.1/": "reserved",
    "http://198.51.100.7/": "reserved",
    "http://203.0.113.9/": "reserved",
    "http://[::]/": "unspecified",
    "http://[fc00::1]/": "private",
    "http://[fd12:3456::1]/": "private",
    "http://[fe80::1]/": "link-local",
    "http://[fe80::1%25eth0]/": "link-local",  # with a zone
    "http://[fec0::1]/": "private",  # site-local
    "http://[ff02::1]/": "multicast",
    "http://[2001:db8::1]/": "reserved",
    "http://[2001::1]/": "reserved",  # Teredo
    "http://[100::1]/": "reserved",
    "http://[::ffff:10.0.0.1]/": "private",  # IPv4-mapped private
    "http://[::ffff:169.254.169.254]/": "link-local",  # IPv4-mapped metadata
    "http://[::ffff:0.0.0.0]/": "unspecified",
    "http://[64:ff9b::a00:1]/": "private",  # NAT64 of 10.0.0.1
    "http://[64:ff9b::7f00:1]/": "loopback",  # NAT64 of 127.0.0.1
    "http://[2002:a00:1::1]/": "private",  # 6to4 of 10.0.0.1
    "http://[::7f00:1]/": "reserved",  # deprecated IPv4-compatible
    "http://[4000::1]/": "reserved",  # outside global unicast
}

PUBLIC_URLS = [
    "http://8.8.8.8/",
    "https://1.1.1.1:8443/twiml?x=1",
    "http://93.184.216.34/",
    "http://[2606:4700:4700::1111]/",
    "http://[::ffff:8.8.8.8]/",  # IPv4-mapped public
    "http://[64:ff9b::808:808]/",  # NAT64 of a public address
    "https://example.com/twiml",  # names are judged when they resolve
    "http://localhost:8080/",  # ... this one too (see test_fetcher for its refusal)
]


@pytest.mark.parametrize("url", LOOPBACK_URLS)
def test_loopback_literals_refused_unless_loopback_allowed(url: str) -> None:
    err = refused(STRICT, url)
    assert err.code == HTTP_BAD_HOST
    assert "loopback" in err.message and "private" in err.message
    LOOPBACK.check_url(url)
    PRIVATE.check_url(url)


@pytest.mark.parametrize(("url", "category"), sorted(PRIVATE_URLS.items()))
def test_private_and_special_literals_refused(url: str, category: str) -> None:
    for policy in (STRICT, LOOPBACK):
        err = refused(policy, url)
        assert err.code == HTTP_BAD_HOST
        assert category in err.message
    PRIVATE.check_url(url)  # allow_private admits every address


@pytest.mark.parametrize("url", PUBLIC_URLS)
def test_public_literals_and_names_pass(url: str) -> None:
    STRICT.check_url(url)


def test_metadata_address_is_named_in_the_refusal() -> None:
    err = refused(STRICT, "http://169.254.169.254/latest/meta-data/iam/")
    assert "metadata" in err.message


def test_trailing_dot_does_not_hide_an_address() -> None:
    assert "loopback" in refused(STRICT, "http://127.0.0.1./").message
    assert "private" in refused(STRICT, "http://10.0.0.1./").message


@pytest.mark.parametrize(
    "url",
    ["http://2130706433/", "http://0x7f000001/", "http://0x7f.1/", "http://127.1/", "http://017700000001/", "http://10.1/"],
)
def test_non_canonical_numeric_hosts_refused_even_when_loopback_allowed(url: str) -> None:
    # Resolvers turn these into 127.0.0.1 / 10.0.0.1; nobody should write them.
    for policy in (STRICT, LOOPBACK):
        err = refused(policy, url)
        assert err.code == HTTP_BAD_HOST
        assert "non-canonical" in err.message


# -- schemes and hosts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "file:///etc/passwd", "gopher://example.com/", "ws://example.com/", "wss://example.com/",
     "javascript:alert(1)", "data:text/xml,<Response/>", "example.com/twiml", "//example.com/x"],
)
def test_non_http_schemes_refused(url: str) -> None:
    err = refused(PRIVATE, url)  # even the most permissive policy
    assert err.code == HTTP_RETRIEVAL_FAILURE
    assert "http or https" in err.message


def test_missing_host_refused() -> None:
    assert refused(PRIVATE, "http:///twiml").code == HTTP_BAD_HOST


def test_malformed_url_refused() -> None:
    assert refused(PRIVATE, "http://[::1/").code == HTTP_RETRIEVAL_FAILURE


def test_scheme_is_case_insensitive() -> None:
    STRICT.check_url("HTTPS://Example.COM/x")


def test_credentials_in_url_are_allowed() -> None:
    # user:pass@ becomes HTTP Basic auth (see the fetcher); the host is what is judged.
    STRICT.check_url("https://user:secret@example.com/twiml")
    assert "private" in refused(STRICT, "http://user:secret@10.0.0.1/").message


def test_address_category_table() -> None:
    assert address_category("8.8.8.8") is None
    assert address_category("127.0.0.1") == "loopback"
    assert address_category("::ffff:127.0.0.1") == "loopback"
    assert address_category("fe80::1%eth0") == "link-local"
    with pytest.raises(ValueError):
        address_category("example.com")


def test_policy_address_problem_fails_closed_on_garbage() -> None:
    assert STRICT.address_problem("not-an-address") is not None
    assert PRIVATE.address_problem("not-an-address") is None  # allow_private checks nothing


# -- the resolver -------------------------------------------------------------------------------


class FakeResolver(AbstractResolver):
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            {"hostname": host, "host": address, "port": port,
             "family": socket.AF_INET6 if ":" in address else socket.AF_INET, "proto": 0, "flags": 0}
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        self.closed = True


async def test_resolver_refuses_a_name_that_resolves_to_loopback() -> None:
    resolver = GuardedResolver(STRICT, FakeResolver({"evil.example": ["127.0.0.1", "::1"]}))
    with pytest.raises(AddressRefused) as info:
        await resolver.resolve("evil.example", 80)
    assert info.value.refusal.code == HTTP_BAD_HOST
    assert "evil.example" in info.value.refusal.message and "loopback" in info.value.refusal.message
    assert isinstance(info.value, OSError)  # so aiohttp wraps it as a DNS error, keeping it


async def test_resolver_refuses_metadata_and_private_answers() -> None:
    resolver = GuardedResolver(LOOPBACK, FakeResolver({"meta.example": ["169.254.169.254"], "lan.example": ["10.1.2.3"]}))
    for host in ("meta.example", "lan.example"):
        with pytest.raises(AddressRefused):
            await resolver.resolve(host, 443)


async def test_resolver_keeps_only_allowed_addresses_of_a_mixed_answer() -> None:
    resolver = GuardedResolver(STRICT, FakeResolver({"mixed.example": ["10.0.0.5", "93.184.216.34", "::1"]}))
    results = await resolver.resolve("mixed.example", 80)
    assert [r["host"] for r in results] == ["93.184.216.34"]


async def test_resolver_policies() -> None:
    fake = FakeResolver({"local.example": ["127.0.0.1"], "lan.example": ["192.168.0.2"]})
    assert [r["host"] for r in await GuardedResolver(LOOPBACK, fake).resolve("local.example")] == ["127.0.0.1"]
    with pytest.raises(AddressRefused):
        await GuardedResolver(LOOPBACK, fake).resolve("lan.example")
    assert [r["host"] for r in await GuardedResolver(PRIVATE, fake).resolve("lan.example")] == ["192.168.0.2"]


def test_allowed_endpoints_admit_exactly_their_address_and_port() -> None:
    policy = UrlPolicy(allowed_endpoints=frozenset({parse_endpoint("10.0.0.5:8080"), parse_endpoint("[fd00::5]:443")}))
    policy.check_url("http://10.0.0.5:8080/voice")
    policy.check_url("https://[fd00:0::5]/voice")  # the same address spelt otherwise, on https's default port
    for url in (
        "http://10.0.0.5:8081/", "http://10.0.0.5/", "http://10.0.0.6:8080/", "https://[fd00::6]/",
        "http://[::ffff:10.0.0.5]:8080/",  # the same host reached another way: not what was allowed
        "http://169.254.169.254:8080/",
    ):
        assert refused(policy, url).code == HTTP_BAD_HOST, url


async def test_resolver_honours_allowed_endpoints_by_port() -> None:
    policy = UrlPolicy(allowed_endpoints=frozenset({parse_endpoint("127.0.0.1:8080")}))
    fake = FakeResolver({"app.internal": ["127.0.0.1"]})
    assert [r["host"] for r in await GuardedResolver(policy, fake).resolve("app.internal", 8080)] == ["127.0.0.1"]
    with pytest.raises(AddressRefused):
        await GuardedResolver(policy, fake).resolve("app.internal", 9090)


@pytest.mark.parametrize("text", ["localhost:80", "10.0.0.5", "::1:80", "[::1]:0", "10.0.0.5:70000", "10.0.0.5:http", ":80"])
def test_parse_endpoint_refuses_what_is_not_an_address_and_port(text: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(text)


async def test_resolver_passes_dns_failures_through_and_closes_inner() -> None:
    fake = FakeResolver({})
    resolver = GuardedResolver(STRICT, fake)
    with pytest.raises(socket.gaierror):
        await resolver.resolve("nowhere.example")
    await resolver.close()
    assert fake.closed


async def test_guarded_session_refuses_settings_that_bypass_the_guard() -> None:
    with pytest.raises(TypeError):
        guarded_session(STRICT, trust_env=True)
    session = guarded_session(STRICT)
    try:
        assert session.trust_env is False
    finally:
        await session.close()


# -- redirects ----------------------------------------------------------------------------------


def test_redirect_method() -> None:
    assert [redirect_method(s, "POST") for s in (301, 302, 303, 307, 308)] == ["GET", "GET", "GET", "POST", "POST"]
    assert [redirect_method(s, "GET") for s in (301, 302, 303, 307, 308)] == ["GET"] * 5


# -- connection overrides (pure; tested here with the other URL rules) --------------------------


def test_split_fragment_without_fragment() -> None:
    assert split_fragment("https://example.com/x?a=1") == ("https://example.com/x?a=1", FetchOverrides())


def test_split_fragment_reads_every_override() -> None:
    url, o = split_fragment("https://example.com/x?a=1#ct=1000&rt=2000&tt=5000&rc=3&rp=rt,5xx")
    assert url == "https://example.com/x?a=1"
    assert (o.connect_timeout, o.read_timeout, o.total_timeout, o.retries) == (1.0, 2.0, 5.0, 3)
    assert o.retry_on == frozenset({"rt", "5xx"})


def test_split_fragment_clamps_and_ignores() -> None:
    _, o = split_fragment("http://h/#ct=5&rt=99999&tt=20000&rc=9&rp=bogus&e=frankfurt&sni=y&zz=1")
    assert (o.connect_timeout, o.read_timeout, o.total_timeout, o.retries) == (0.1, 15.0, 15.0, 5)
    assert o.retry_on == FetchOverrides().retry_on  # no recognised word: the default stays
    _, o = split_fragment("http://h/#ct=abc&rc=-1&rp=all")
    assert o.connect_timeout == 5.0 and o.retries == 1
    assert o.retry_on == frozenset({"ct", "rt", "4xx", "5xx"})


def test_split_fragment_strips_a_fragment_that_is_not_overrides() -> None:
    assert split_fragment("https://example.com/page#section-2") == ("https://example.com/page", FetchOverrides())
