"""XML attacks on instruction documents, through the real path: a carrier call
whose instruction URL answers the attack. Entity expansion (billion laughs,
quadratic blowup), external entities (a file, an http URL), DTD and parameter
entity retrieval, the same hidden in UTF-16, XInclude, a stylesheet
processing instruction, and a gzip bomb.

Each is refused with its documented code (docs/webhooks.md#error-codes: 12100
for DTDs and entities, 12200 for what parses but is not an instruction,
11750 for a body over the limit); the loopback listener every external
reference points at counts 0 requests; and parsing each document costs
bounded memory (measured with tracemalloc on the parser the server uses).
"""

from __future__ import annotations

import asyncio
import gzip
import time
import tracemalloc
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from protocol.instructions import DEFAULT_MAX_BYTES, InstructionError, parse_instructions
from tests.helpers.instructions import InstructionServer
from tests.helpers.listener import PrivateListener
from tests.helpers.servers import RunningServer, TestAccount, start_server
from tests.helpers.signaling_env import INGRESS, carrier_call

PARSE_FAILURE, SCHEMA_INVALID, TOO_LARGE = 12100, 12200, 11750
PEAK_LIMIT = 4 * 1024 * 1024  # bytes a refused document may cost the parser at most


def billion_laughs() -> str:
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
    )
    return f'<?xml version="1.0"?><!DOCTYPE Response [{entities}]><Response><Say>&lol9;</Say></Response>'


def quadratic_blowup() -> str:
    # One 30 kB entity referenced 1 000 times: 30 MB once expanded, from a 34 kB document.
    refs = "&a;" * 1000
    return f'<?xml version="1.0"?><!DOCTYPE Response [<!ENTITY a "{"A" * 30000}">]><Response><Say>{refs}</Say></Response>'


def attacks(listener: str) -> dict[str, tuple[bytes, int, dict[str, str]]]:
    """name -> (body, the code it must be refused with, extra response headers)."""
    xml = {
        "billion laughs": (billion_laughs(), PARSE_FAILURE),
        "quadratic blowup": (quadratic_blowup(), PARSE_FAILURE),
        "external entity: file": (
            '<?xml version="1.0"?><!DOCTYPE Response [<!ENTITY x SYSTEM "file:///etc/passwd">]><Response><Say>&x;</Say></Response>',
            PARSE_FAILURE,
        ),
        "external entity: http": (
            f'<?xml version="1.0"?><!DOCTYPE Response [<!ENTITY x SYSTEM "{listener}/xxe">]><Response><Say>&x;</Say></Response>',
            PARSE_FAILURE,
        ),
        "external DTD": (f'<?xml version="1.0"?><!DOCTYPE Response SYSTEM "{listener}/evil.dtd"><Response/>', PARSE_FAILURE),
        "public external DTD": (
            f'<!DOCTYPE Response PUBLIC "-//EVIL//DTD//EN" "{listener}/public.dtd"><Response><Hangup/></Response>', PARSE_FAILURE,
        ),
        "parameter entity": (
            f'<?xml version="1.0"?><!DOCTYPE Response [<!ENTITY % p SYSTEM "{listener}/param.dtd"> %p;]><Response/>', PARSE_FAILURE,
        ),
        "XInclude": (
            f'<Response xmlns:xi="http://www.w3.org/2001/XInclude"><Say><xi:include href="{listener}/xi" parse="text"/></Say></Response>',
            SCHEMA_INVALID,
        ),
    }
    cases: dict[str, tuple[bytes, int, dict[str, str]]] = {name: (doc.encode(), code, {}) for name, (doc, code) in xml.items()}
    # The same bomb in UTF-16, where a byte-level filter for "<!ENTITY" would see nothing.
    cases["billion laughs in UTF-16"] = (
        billion_laughs().replace('encoding="UTF-8"', "").replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16"),
        PARSE_FAILURE,
        {},
    )
    # 20 MB of XML that compresses to a few kB: read as it inflates, refused at the limit.
    bomb = b"<Response><Say>" + b" " * (20 * 1024 * 1024) + b"</Say></Response>"
    cases["gzip bomb"] = (gzip.compress(bomb, 9), TOO_LARGE, {"Content-Encoding": "gzip"})
    return cases


class Env:
    def __init__(self, server: RunningServer, listener: PrivateListener, numbers: dict[str, str], cases: dict[str, Any]) -> None:
        self.server, self.listener, self.numbers, self.cases = server, listener, numbers, cases


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    listener = PrivateListener()
    await listener.start()
    first_hop = InstructionServer(auth_token="")
    await first_hop.start()
    cases = attacks(f"http://127.0.0.1:{listener.port}")
    numbers, phone_numbers = {}, []
    for i, (name, (body, _, headers)) in enumerate(cases.items()):
        numbers[name] = f"+1555060{i:04d}"
        phone_numbers.append({"number": numbers[name], "voice_url": first_hop.url(f"/attack/{i}")})
        first_hop.on(
            f"/attack/{i}",
            lambda params, b=body, h=headers: web.Response(body=b, headers={"Content-Type": "text/xml", **h}),
        )
    # Control: a stylesheet processing instruction is not followed, and the
    # document runs (the call completes) - the parser is not just refusing everything.
    numbers["stylesheet PI"] = "+15550609999"
    phone_numbers.append({"number": numbers["stylesheet PI"], "voice_url": first_hop.url("/pi")})
    first_hop.on("/pi", f'<?xml-stylesheet type="text/xsl" href="http://127.0.0.1:{listener.port}/x.xsl"?><Response><Hangup/></Response>')
    account = TestAccount(extra={"phone_numbers": phone_numbers})
    first_hop.auth_token = account.auth_token
    server = await start_server(
        [account],
        security={"allowed_private_endpoints": [f"127.0.0.1:{first_hop.port}"]},
        providers=[{"name": "outbox", "kind": "outbox", "inbound_username": INGRESS[0], "inbound_password": INGRESS[1]}],
    )
    try:
        yield Env(server, listener, numbers, cases)
    finally:
        await server.node.stop()
        await first_hop.stop()
        await listener.stop()


async def test_xml_attacks_are_refused_with_their_codes_and_reach_nothing(env: Env) -> None:
    names = [name for name in env.cases if name != "gzip bomb"]
    started = time.perf_counter()
    records = await asyncio.gather(*(carrier_call(env.server, env.numbers[name]) for name in names))
    elapsed = time.perf_counter() - started
    for name, record in zip(names, records):
        expected = env.cases[name][1]
        assert record["status"] == "failed" and record["error_code"] == expected, (name, record)
    # The gzip bomb alone, with the whole process's allocations traced: the
    # fetcher stops reading at the limit, so 20 MB are never inflated.
    tracemalloc.start()
    try:
        bombed = await carrier_call(env.server, env.numbers["gzip bomb"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert bombed["status"] == "failed" and bombed["error_code"] == TOO_LARGE
    assert peak < PEAK_LIMIT, peak
    print(f"gzip bomb (20 MB inflated, {len(env.cases['gzip bomb'][0])} bytes sent): process peak {peak / 1024:.0f} KiB")
    control = await carrier_call(env.server, env.numbers["stylesheet PI"])
    assert control["status"] == "completed" and control["error_code"] is None
    assert env.listener.hits == []
    print(f"{len(names)} XML attacks refused in {elapsed * 1000:.0f} ms, listener hits: {len(env.listener.hits)}")


def test_refusing_each_attack_costs_bounded_memory() -> None:
    # The parser the server runs on every fetched document, measured alone.
    for name, (body, code, headers) in attacks("http://127.0.0.1:9").items():
        document = gzip.decompress(body)[: DEFAULT_MAX_BYTES + 1] if headers else body
        tracemalloc.start()
        try:
            with pytest.raises(InstructionError) as info:
                parse_instructions(document)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert info.value.error_code == code, (name, info.value)
        assert peak < PEAK_LIMIT, (name, peak)
        print(f"{name}: {len(document)} bytes, refused {code}, parser peak {peak / 1024:.0f} KiB")
