"""The messaging pipeline over the smpp provider, against the SMSC simulator
(tests/helpers/smsc.py) over real sockets: REST send -> submit_sm -> receipt
-> the message's status and the routing statistics; long messages, early
receipts, failures, throttling, and a mobile-originated message whose
<Message> reply goes back out through the pipeline to the SMSC.

The node runs on a ManualClock (the provider's enquire_link and reconnect
backoff, the throttle pause use it); sends and receipts happen in real time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Callable

import pytest

from presence_server.engines.ports import MessageRecord
from protocol.smpp.pdu import ESM_TYPE_DELIVERY_RECEIPT, CommandStatus, DeliverSm
from tests.helpers.instructions import InstructionServer
from tests.helpers.messaging import NUMBER, account_with_number, call, send, wait_status
from presence_server.clock import ManualClock
from presence_server.node import Node
from tests.helpers.servers import RunningServer, TestAccount, make_config, start_server
from tests.helpers.smsc import SmscSimulator, SubmittedPart

SYSTEM_ID, PASSWORD = "presence", "s3cret"
DEST = "+15557770001"
REMOTE = "+15557770000"  # a handset texting the account's number


def smpp_provider(sim: SmscSimulator, **extra: Any) -> dict[str, Any]:
    return {
        "name": "smsc", "kind": "smpp", "host": "127.0.0.1", "port": sim.port, "system_id": SYSTEM_ID, "password": PASSWORD,
        "timeout": 2, "enquire_link_interval": 30.0, "reconnect_max": 0.2, **extra,
    }


async def start(sim: SmscSimulator, account: TestAccount | None = None, **sections: Any) -> RunningServer:
    """A node whose only provider is the simulator, once the provider is bound."""
    server = await start_server([account or account_with_number()], providers=[smpp_provider(sim)], **sections)
    try:
        await sim.wait_for_bind()
    except BaseException:
        await server.node.stop()
        raise
    return server


@pytest.fixture
async def sim() -> AsyncIterator[SmscSimulator]:
    smsc = SmscSimulator(system_id=SYSTEM_ID, password=PASSWORD)
    await smsc.start()
    try:
        yield smsc
    finally:
        await smsc.close()


@pytest.fixture
async def server(sim: SmscSimulator) -> AsyncIterator[RunningServer]:
    srv = await start(sim)
    try:
        yield srv
    finally:
        await srv.node.stop()


def receipt(part: SubmittedPart, stat: str) -> DeliverSm:
    """The delivery receipt the SMSC sends for ``part`` (the same format as the simulator's own)."""
    stamp = time.strftime("%y%m%d%H%M")
    dlvrd, err = ("001", "000") if stat == "DELIVRD" else ("000", "001")
    text = f"id:{part.message_id} sub:001 dlvrd:{dlvrd} submit date:{stamp} done date:{stamp} stat:{stat} err:{err} text:{part.text[:20]}"
    return DeliverSm(
        source_addr_ton=1, source_addr_npi=1, source_addr=part.dest, dest_addr_ton=1, dest_addr_npi=1, destination_addr=part.source,
        esm_class=ESM_TYPE_DELIVERY_RECEIPT, short_message=text.encode("latin-1"),
    )


async def deliver_receipt(sim: SmscSimulator, part: SubmittedPart, stat: str) -> None:
    """Send a receipt and wait for its deliver_sm_resp: the pipeline has applied it by then."""
    assert await sim.send_deliver_sm(receipt(part, stat)) == CommandStatus.ESME_ROK


async def stats(server: RunningServer) -> dict[str, dict[str, Any]]:
    status, body, _ = await call(server, "GET", f"/v1/Accounts/{server.account.sid}/Routing/Stats")
    assert status == 200, body
    return {s["provider"]: s for s in body["totals"]}


async def eventually(check: Callable[[], Any], timeout: float = 2.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(0.01)
        return result


async def sent_and_submitted(server: RunningServer, sim: SmscSimulator, sid: str, n: int = 1) -> MessageRecord:
    await sim.wait_for_submits(n)
    return await wait_status(server, sid, "sent", "delivered", "undelivered", "failed", timeout=2.0)


# -- sending ------------------------------------------------------------------------------------


async def test_send_reaches_the_smsc_and_the_receipt_delivers_it(server: RunningServer, sim: SmscSimulator) -> None:
    status, body = await send(server, To=DEST, From=NUMBER, Body="hello over SMPP")
    assert status == 201, body
    (submitted,) = await sim.wait_for_submits(1)
    assert (submitted.source, submitted.dest, submitted.text) == (NUMBER[1:], DEST[1:], "hello over SMPP")
    record = await wait_status(server, body["sid"], "delivered", timeout=2.0)
    assert record.provider == "smsc" and record.channel == "sms" and record.num_segments == 1
    assert record.provider_message_id is not None and record.error_code is None and record.date_sent is not None
    smsc = (await eventually(lambda: _stats_with(server, "smsc", delivered=1)))["smsc"]
    assert smsc["submitted"] == 1 and smsc["delivered"] == 1 and smsc["undelivered"] == smsc["failed"] == smsc["rejected"] == 0
    assert smsc["delivered_ratio"] == 1.0


async def _stats_with(server: RunningServer, provider: str, **counts: int) -> dict[str, dict[str, Any]] | None:
    current = await stats(server)
    row = current.get(provider)
    return current if row is not None and all(row[k] == v for k, v in counts.items()) else None


async def test_three_segments_are_delivered_only_after_all_three_receipts(server: RunningServer, sim: SmscSimulator) -> None:
    sim.set_receipt_state(lambda part: None)  # this test sends the receipts itself
    text = "".join(f"word{i} " for i in range(80))[:400]
    _, body = await send(server, To=DEST, From=NUMBER, Body=text)
    assert body["num_segments"] == "3"
    record = await sent_and_submitted(server, sim, body["sid"])
    (submitted,) = sim.submitted
    assert submitted.text == text and [p.seq for p in submitted.parts] == [1, 2, 3] and len(sim.parts) == 3
    assert record.status == "sent" and record.num_segments == 3
    first, second, third = submitted.parts
    await deliver_receipt(sim, third, "DELIVRD")  # out of order
    await deliver_receipt(sim, first, "DELIVRD")
    record = await server.node.engine.messages.get(server.account.sid, body["sid"])
    assert record is not None and record.status == "sent", "delivered before every part's receipt came"
    await deliver_receipt(sim, first, "DELIVRD")  # a duplicate changes nothing
    record = await server.node.engine.messages.get(server.account.sid, body["sid"])
    assert record is not None and record.status == "sent"
    await deliver_receipt(sim, second, "DELIVRD")
    await wait_status(server, body["sid"], "delivered", timeout=1.0)
    smsc = (await stats(server))["smsc"]
    assert smsc["submitted"] == 1
    assert smsc["delivered"] == 1, (
        f"routing stats count one 3-part message as {smsc['delivered']} deliveries: outcomes should be per message, "
        "like 'submitted' (messaging/reports.py observes every part's receipt)"
    )


async def test_one_undelivered_part_makes_the_message_undelivered_once(server: RunningServer, sim: SmscSimulator) -> None:
    sim.set_receipt_state(lambda part: None)
    _, body = await send(server, To=DEST, From=NUMBER, Body="".join(f"word{i} " for i in range(80))[:400])
    await sent_and_submitted(server, sim, body["sid"])
    first, second, third = sim.submitted[0].parts
    await deliver_receipt(sim, first, "DELIVRD")
    await deliver_receipt(sim, second, "UNDELIV")
    record = await wait_status(server, body["sid"], "undelivered", timeout=1.0)
    assert record.error_code == 30003
    await deliver_receipt(sim, third, "DELIVRD")  # too late to save it
    record = await wait_status(server, body["sid"], "undelivered", timeout=1.0)
    smsc = (await stats(server))["smsc"]
    assert (smsc["submitted"], smsc["delivered"], smsc["undelivered"]) == (1, 0, 1), (
        f"routing stats should count the message once, as undelivered: {smsc}"
    )


async def test_a_receipt_before_the_submit_response_still_delivers() -> None:
    async with SmscSimulator(system_id=SYSTEM_ID, password=PASSWORD, receipt_first=True) as sim:
        server = await start(sim)
        try:
            _, body = await send(server, To=DEST, From=NUMBER, Body="fast receipt")
            await sim.wait_for_submits(1)
            record = await wait_status(server, body["sid"], "delivered", timeout=2.0)
            assert record.provider == "smsc" and record.error_code is None
            await eventually(lambda: _stats_with(server, "smsc", submitted=1, delivered=1))
        finally:
            await server.node.stop()


async def test_an_early_receipt_for_a_long_message_is_parked_too() -> None:
    async with SmscSimulator(system_id=SYSTEM_ID, password=PASSWORD, receipt_first=True) as sim:
        server = await start(sim)
        try:
            _, body = await send(server, To=DEST, From=NUMBER, Body="z" * 300)  # 2 segments, each receipted first
            await sim.wait_for_submits(1)
            assert len(sim.parts) == 2
            await wait_status(server, body["sid"], "delivered", timeout=2.0)
        finally:
            await server.node.stop()


async def test_undeliv_receipt_makes_it_undelivered_with_an_error_code(server: RunningServer, sim: SmscSimulator) -> None:
    sim.set_receipt_state(lambda part: "UNDELIV")
    _, body = await send(server, To=DEST, From=NUMBER, Body="nobody home")
    record = await wait_status(server, body["sid"], "undelivered", timeout=2.0)
    assert record.error_code == 30003 and record.error_message and record.provider == "smsc"
    status, shown, _ = await call(server, "GET", f"/2010-04-01/Accounts/{server.account.sid}/Messages/{body['sid']}.json")
    assert status == 200 and shown["status"] == "undelivered" and shown["error_code"] == 30003
    await eventually(lambda: _stats_with(server, "smsc", undelivered=1, delivered=0))


async def test_rejected_submit_fails_the_message(server: RunningServer, sim: SmscSimulator) -> None:
    sim.fail_next(1, CommandStatus.ESME_RINVDSTADR)
    _, body = await send(server, To=DEST, From=NUMBER, Body="bad address")
    record = await wait_status(server, body["sid"], "failed", timeout=2.0)
    assert record.error_code == 30005 and sim.parts == []
    await eventually(lambda: _stats_with(server, "smsc", rejected=1))


async def test_throttled_submits_still_end_sent(server: RunningServer, sim: SmscSimulator) -> None:
    sim.set_receipt_state(lambda part: None)
    sim.throttle_next(2)
    _, body = await send(server, To=DEST, From=NUMBER, Body="after a pause")
    loop = asyncio.get_running_loop()
    end = loop.time() + 2.0
    record = None
    # The provider pauses its submits on the node's clock (0.2 s, then 0.4 s): move it on.
    while loop.time() < end:
        record = await server.node.engine.messages.get(server.account.sid, body["sid"])
        if record is not None and record.status == "sent":
            break
        await server.advance(0.1)
        await asyncio.sleep(0.005)
    assert record is not None and record.status == "sent", record
    assert len(sim.submitted) == 1 and sim.submitted[0].text == "after a pause"
    assert record.attempts == 1 and record.error_code is None  # the pauses are the provider's, not retries


# -- mobile-originated --------------------------------------------------------------------------


async def test_mobile_originated_message_is_answered_through_the_pipeline(sim: SmscSimulator) -> None:
    ins = InstructionServer(auth_token="")
    await ins.start()
    account = account_with_number(phone_numbers=[{"number": NUMBER, "sms_url": ins.url("/sms")}])
    ins.auth_token = account.auth_token
    ins.on("/sms", "<Response><Message>thanks</Message></Response>")
    server = await start(sim, account, security={"allow_private_urls": True})
    try:
        assert await sim.send_mo("hello from a handset", source=REMOTE[1:], dest=NUMBER[1:]) == [CommandStatus.ESME_ROK]
        (request,) = await ins.wait_for("/sms", timeout=2.0)
        assert request.signature_valid
        assert request.params["Body"] == "hello from a handset"
        assert request.params["From"] == REMOTE and request.params["To"] == NUMBER
        inbound_sid = request.params["MessageSid"]
        inbound = await server.node.engine.messages.get(account.sid, inbound_sid)
        assert inbound is not None and inbound.direction == "inbound" and inbound.status == "received"
        # The <Message> reply goes out over the same SMSC, from the number to the handset.
        (reply,) = await sim.wait_for_submits(1)
        assert (reply.source, reply.dest, reply.text) == (NUMBER[1:], REMOTE[1:], "thanks")
        replies = await eventually(lambda: _replies(server, account))
        (record,) = replies
        record = await wait_status(server, record.sid, "delivered", account=account, timeout=2.0)
        assert record.to == REMOTE and record.from_ == NUMBER and record.provider == "smsc"
    finally:
        await server.node.stop()
        await ins.stop()


async def _replies(server: RunningServer, account: TestAccount) -> list[MessageRecord]:
    return [r for r in await server.node.engine.messages.list(account.sid) if r.direction == "outbound-reply"]


async def test_only_a_process_with_the_messaging_role_binds_to_the_smsc(sim: SmscSimulator) -> None:
    """A gateway or signaling process never sends, so it must not take one of the
    carrier's binds (operators get a fixed number per system_id)."""
    config = make_config([account_with_number()], providers=[smpp_provider(sim)])
    others = Node(config, clock=ManualClock(), roles=("gateway", "signaling"))
    await others.start("127.0.0.1", 0)  # first: its bind, if it made one, would come first
    sender = Node(config, clock=ManualClock(), roles=("messaging",))
    try:
        await sender.start("127.0.0.1", 0)
        await sim.wait_for_bind()
        # One round trip on a fresh connection after the bind: a second bind started
        # before it would have reached the simulator by then.
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        writer.close()
        await writer.wait_closed()
        assert [system_id for _, system_id, accepted in sim.binds if accepted] == [SYSTEM_ID]
    finally:
        await sender.stop()
        await others.stop()
