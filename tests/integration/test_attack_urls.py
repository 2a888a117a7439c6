"""SSRF attacks through the real paths: an incoming carrier call whose instruction
URL redirects to private addresses, instruction and status-callback URLs whose
host is a loopback name or a disguised loopback address, and a document that
sends the call to one.

The guard runs in its default (non-dev) mode. The only private address the
server may reach is the test's first-hop instruction server, admitted by
``[security] allowed_private_endpoints`` as exactly its address and port. A
second listener - the "private service" - is bound on loopback (IPv4 and
IPv6, one port) and counts every request that reaches it: it must count 0,
and each refusal must carry the documented code (11210, docs/webhooks.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from tests.helpers.instructions import InstructionServer
from tests.helpers.listener import PrivateListener
from tests.helpers.messaging import NUMBER, account_with_number, send, wait_status
from tests.helpers.servers import RunningServer, TestAccount, start_server
from tests.helpers.signaling_env import carrier_call, eventually_async

INGRESS = ("carrier", "ingress-password-0123456789")
HTTP_BAD_HOST = 11210


def loopback_names() -> list[str]:
    """localhost and every other name /etc/hosts maps to a loopback address."""
    names = {"localhost"}
    for line in Path("/etc/hosts").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and ipaddress.ip_address(fields[0]).is_loopback:
            names.update(fields[1:])
    for name in names:  # they do resolve to loopback here, so the guard is what stops them
        assert all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(name, 80))
    return sorted(names)


def private_targets(port: int) -> list[str]:
    """Every spelling of 'this host' or 'the metadata service' an attacker would try."""
    return [
        f"http://127.0.0.1:{port}/",
        f"http://127.0.0.2:{port}/",  # all of 127/8 is loopback
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        f"http://[::1]:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",  # IPv4-mapped IPv6
        f"http://[0:0:0:0:0:ffff:7f00:1]:{port}/",  # the same, spelt out
        f"http://2130706433:{port}/",  # decimal
        f"http://0x7f000001:{port}/",  # hex
        f"http://0x7f.0.0.1:{port}/",  # hex, dotted
        f"http://017700000001:{port}/",  # octal
        f"http://0177.0.0.1:{port}/",  # octal, dotted
        f"http://127.1:{port}/",  # short form
        f"http://0.0.0.0:{port}/",  # "this host" on Linux
        f"http://127.0.0.1.:{port}/",  # trailing dot
        *(f"http://{name}:{port}/" for name in loopback_names()),
    ]


class Setup:
    def __init__(self, server: RunningServer, first_hop: InstructionServer, private: PrivateListener, numbers: dict[str, str]) -> None:
        self.server, self.first_hop, self.private, self.numbers = server, first_hop, private, numbers

    async def incoming_call(self, number: str) -> dict[str, Any]:
        return await carrier_call(self.server, number, INGRESS)


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    private = PrivateListener()
    await private.start()
    first_hop = InstructionServer(auth_token="")
    await first_hop.start()
    targets = private_targets(private.port)
    # One number per attack, each with its own first-hop path.
    numbers: dict[str, str] = {}
    phone_numbers = []
    for i, target in enumerate(targets):
        number = f"+1555020{i:04d}"
        numbers[target] = number
        phone_numbers.append({"number": number, "voice_url": first_hop.url(f"/redirect/{i}")})
        first_hop.on(f"/redirect/{i}", lambda params, t=target: web.Response(status=302, headers={"Location": t}))
    for i, target in enumerate(targets):  # the instruction URL itself private: no redirect needed
        number = f"+1555030{i:04d}"
        numbers["direct " + target] = number
        phone_numbers.append({"number": number, "voice_url": target})
    account = TestAccount(extra={"phone_numbers": phone_numbers})
    first_hop.auth_token = account.auth_token
    server = await start_server(
        [account],
        security={"allowed_private_endpoints": [f"127.0.0.1:{first_hop.port}"]},
        providers=[{"name": "outbox", "kind": "outbox", "inbound_username": INGRESS[0], "inbound_password": INGRESS[1]}],
    )
    assert not server.node.config.dev and not server.node.config.security.allow_private_urls
    try:
        yield Setup(server, first_hop, private, numbers)
    finally:
        await server.node.stop()
        await first_hop.stop()
        await private.stop()


async def test_the_private_listener_counts_what_reaches_it(setup: Setup) -> None:
    # The counter works: a plain client reaches it on both addresses.
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for host in ("127.0.0.1", "[::1]"):
            async with http.get(f"http://{host}:{setup.private.port}/probe") as resp:
                assert resp.status == 200
    assert len(setup.private.hits) == 2


async def test_instruction_redirects_to_private_addresses_are_refused(setup: Setup) -> None:
    targets = private_targets(setup.private.port)
    records = await asyncio.gather(*(setup.incoming_call(setup.numbers[t]) for t in targets))
    for target, record in zip(targets, records):
        assert record["status"] == "failed" and record["error_code"] == HTTP_BAD_HOST, (target, record)
    assert len([r for r in setup.first_hop.received if r.path.startswith("/redirect/")]) == len(targets)
    assert setup.private.hits == []
    print(f"{len(targets)} redirect targets refused (11210), private listener hits: {len(setup.private.hits)}")


async def test_private_instruction_urls_are_refused_without_a_request(setup: Setup) -> None:
    targets = private_targets(setup.private.port)
    records = await asyncio.gather(*(setup.incoming_call(setup.numbers["direct " + t]) for t in targets))
    for target, record in zip(targets, records):
        assert record["status"] == "failed" and record["error_code"] == HTTP_BAD_HOST, (target, record)
    assert setup.private.hits == []


async def test_a_document_that_redirects_the_call_to_a_private_address_is_refused(tmp_path: Any) -> None:
    private = PrivateListener()
    await private.start()
    first_hop = InstructionServer(auth_token="")
    await first_hop.start()
    account = TestAccount(extra={"phone_numbers": [{"number": NUMBER, "voice_url": first_hop.url("/inbound")}]})
    first_hop.auth_token = account.auth_token
    first_hop.on("/inbound", f"<Response><Redirect>http://[::1]:{private.port}/next</Redirect></Response>")
    server = await start_server(
        [account], security={"allowed_private_endpoints": [f"127.0.0.1:{first_hop.port}"]},
        providers=[{"name": "outbox", "kind": "outbox", "inbound_username": INGRESS[0], "inbound_password": INGRESS[1]}],
    )
    try:
        record = await Setup(server, first_hop, private, {}).incoming_call(NUMBER)
        assert record["status"] == "failed" and record["error_code"] == HTTP_BAD_HOST
        assert private.hits == []
    finally:
        await server.node.stop()
        await first_hop.stop()
        await private.stop()


async def test_status_callbacks_to_private_addresses_are_refused_and_logged() -> None:
    private = PrivateListener()
    await private.start()
    first_hop = InstructionServer(auth_token="")
    await first_hop.start()
    names = loopback_names()
    callbacks = [
        f"http://{names[0]}:{private.port}/call-status",
        f"http://[::1]:{private.port}/call-status",
        f"http://[::ffff:127.0.0.1]:{private.port}/call-status",
        f"http://2130706433:{private.port}/call-status",
        *(f"http://{name}:{private.port}/call-status" for name in names[1:]),
    ]
    phone_numbers = [
        {"number": f"+1555040{i:04d}", "voice_url": first_hop.url("/hangup"), "status_callback": url} for i, url in enumerate(callbacks)
    ]
    account = account_with_number()
    account.extra["phone_numbers"] = [*account.extra.get("phone_numbers", []), *phone_numbers]
    first_hop.auth_token = account.auth_token
    first_hop.on("/hangup", "<Response><Hangup/></Response>")
    server = await start_server(
        [account], security={"allowed_private_endpoints": [f"127.0.0.1:{first_hop.port}"]},
        providers=[{"name": "outbox", "kind": "outbox", "inbound_username": INGRESS[0], "inbound_password": INGRESS[1]}],
    )
    setup = Setup(server, first_hop, private, {})
    try:
        with capture_logs() as logs:
            for entry in phone_numbers:
                record = await setup.incoming_call(entry["number"])
                assert record["status"] == "completed"  # the call itself was fine
            # A message's StatusCallback, given over the REST API.
            message_hooks = [f"http://[::1]:{private.port}/msg-status", f"http://0x7f.1:{private.port}/msg-status"]
            for hook in message_hooks:
                status, body = await send(server, To="+15557770001", From=NUMBER, Body="hello", StatusCallback=hook)
                assert status == 201, body
                await wait_status(server, body["sid"], "sent")

            def failed() -> list[dict[str, Any]]:
                return [e for e in logs if e["event"] == "webhook failed"]

            async def all_failed() -> bool:
                return len(failed()) == len(callbacks) + len(message_hooks)

            await eventually_async(all_failed)
        assert {e["code"] for e in failed()} == {HTTP_BAD_HOST}
        assert all(e["attempts"] == 1 for e in failed())  # a refused address is not retried
        assert private.hits == []
    finally:
        await server.node.stop()
        await first_hop.stop()
        await private.stop()
