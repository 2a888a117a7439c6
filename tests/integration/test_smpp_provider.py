"""The smpp provider against the SMSC simulator (tests/helpers/smsc.py), over real sockets."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import structlog
import structlog.testing

from presence_server.carriers import OutboundMessage, build_provider
from presence_server.carriers.base import DeliveryReport, InboundMessage
from presence_server.carriers.smpp import SmppProvider
from presence_server.config import ProviderConfig
from protocol.addresses import new_sid
from protocol.smpp.pdu import CommandStatus, DeliverSm
from protocol.smpp.receipts import normalize_message_id
from tests.helpers.smsc import SmscSimulator, SubmittedPart


class Events:
    """A CarrierEvents that keeps what it is given."""

    def __init__(self) -> None:
        self.reports: list[DeliveryReport] = []
        self.messages: list[InboundMessage] = []
        self.fail = False
        self._changed = asyncio.Event()

    async def report(self, report: DeliveryReport) -> None:
        if self.fail:
            raise RuntimeError("the pipeline is down")
        self.reports.append(report)
        self._changed.set()

    async def inbound(self, message: InboundMessage) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait(self, predicate: Callable[[], bool], timeout: float = 1.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


def message(body: str = "Missed call from client:bob", **fields: Any) -> OutboundMessage:
    data: dict[str, Any] = {"message_sid": new_sid("SM"), "account_sid": new_sid("AC"), "to": "+15550100001", "from_": "+15550199999", "body": body}
    data.update(fields)
    return OutboundMessage(**data)


def canonical(part: SubmittedPart) -> str:
    """The id as the provider stores it ('auto', 'hex', 'decimal': read as hex, lowercase, no leading zeros)."""
    return normalize_message_id(part.message_id, hex_ids=True)


def provider_config(smsc: SmscSimulator, **fields: Any) -> ProviderConfig:
    data: dict[str, Any] = {
        "name": "smsc",
        "kind": "smpp",
        "host": "127.0.0.1",
        "port": smsc.port,
        "system_id": "test",
        "password": "secret",
        "timeout": 0.5,
        "enquire_link_interval": 10.0,
        "reconnect_max": 0.2,
        "window": 10,
    }
    data.update(fields)
    return ProviderConfig.model_validate(data)


MakeSmsc = Callable[..., Awaitable[SmscSimulator]]
MakeProvider = Callable[..., Awaitable[SmppProvider]]


@pytest.fixture
async def make_smsc() -> AsyncIterator[MakeSmsc]:
    started: list[SmscSimulator] = []

    async def make(**options: Any) -> SmscSimulator:
        smsc = SmscSimulator(**options)
        await smsc.start()
        started.append(smsc)
        return smsc

    yield make
    for smsc in started:
        await smsc.close()


@pytest.fixture
async def smsc(make_smsc: MakeSmsc) -> SmscSimulator:
    return await make_smsc()


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def make_provider(events: Events) -> AsyncIterator[MakeProvider]:
    started: list[SmppProvider] = []

    async def make(smsc: SmscSimulator, *, bound: bool = True, sink: Any = events, **fields: Any) -> SmppProvider:
        knobs = {k: fields.pop(k) for k in ("reconnect_base", "throttle_delay", "reassembly_timeout") if k in fields}
        knobs.setdefault("reconnect_base", 0.02)
        knobs.setdefault("throttle_delay", 0.01)
        provider = SmppProvider(provider_config(smsc, **fields), events=sink, **knobs)
        started.append(provider)
        await provider.start()
        if bound:
            async with asyncio.timeout(1.0):
                while not provider.bound:
                    await asyncio.sleep(0.005)
        return provider

    yield make
    for provider in started:
        await provider.close()


# -- sending ------------------------------------------------------------------------------


async def test_bind_send_and_delivery_receipt(smsc: SmscSimulator, make_provider: MakeProvider, events: Events) -> None:
    provider = await make_provider(smsc, bound=False)  # send() waits for the bind
    result = await provider.send(message("hello"))
    assert result.accepted and result.status == "sent" and not result.error_code
    (submitted,) = await smsc.wait_for_submits(1)
    assert (submitted.text, submitted.source, submitted.dest) == ("hello", "15550199999", "15550100001")
    part = submitted.parts[0]
    assert part.pdu.registered_delivery == 1 and part.pdu.source_addr_ton == 1 and part.pdu.dest_addr_ton == 1
    assert part.message_id == "2684354560"  # decimal ids: digits stay as they are
    assert result.provider_message_id == canonical(part)
    assert result.ids == (result.provider_message_id,)
    await events.wait(lambda: len(events.reports) == 1)
    (report,) = events.reports
    assert (report.provider, report.provider_message_id, report.status, report.error_code) == ("smsc", result.provider_message_id, "delivered", None)
    assert report.timestamp is not None and abs(report.timestamp - time.time()) < 5


async def test_long_message_is_concatenated(smsc: SmscSimulator, make_provider: MakeProvider, events: Events) -> None:
    provider = await make_provider(smsc)
    body = "".join(f"word{i} " for i in range(60))[:400]
    result = await provider.send(message(body))
    assert result.accepted
    assert len(result.part_ids) == 3 and result.provider_message_id == result.part_ids[0]
    (submitted,) = await smsc.wait_for_submits(1)
    assert submitted.text == body
    assert [p.seq for p in submitted.parts] == [1, 2, 3] and len({p.ref for p in submitted.parts}) == 1
    assert all(p.pdu.esm_class & 0x40 and p.pdu.registered_delivery == 1 for p in submitted.parts)
    assert result.part_ids == tuple(canonical(p) for p in submitted.parts)
    await events.wait(lambda: len(events.reports) == 3)
    assert {r.provider_message_id for r in events.reports} == set(result.part_ids)


async def test_alphanumeric_sender(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    provider = await make_provider(smsc)
    assert (await provider.send(message(from_="Acme"))).accepted
    (submitted,) = await smsc.wait_for_submits(1)
    assert (submitted.source, submitted.parts[0].pdu.source_addr_ton, submitted.parts[0].pdu.source_addr_npi) == ("Acme", 5, 0)


async def test_media_is_refused(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    provider = await make_provider(smsc)
    result = await provider.send(message(media_urls=("https://example.com/cat.png",)))
    assert (result.accepted, result.temporary) == (False, False) and smsc.parts == []


async def test_window_keeps_several_submits_in_flight(make_smsc: MakeSmsc, make_provider: MakeProvider) -> None:
    smsc = await make_smsc(response_delay=0.02)
    provider = await make_provider(smsc, window=5)
    results = await asyncio.gather(*(provider.send(message(f"message {i}")) for i in range(50)))
    assert all(r.accepted for r in results)
    assert len({r.provider_message_id for r in results}) == 50
    assert len(smsc.submitted) == 50
    assert 2 <= smsc.max_in_flight <= 5  # pipelined, and never over the window


async def test_throttling_backs_off_and_succeeds(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    provider = await make_provider(smsc)
    smsc.throttle_next(3)
    started = time.monotonic()
    result = await provider.send(message())
    assert result.accepted
    assert time.monotonic() - started >= 0.01 + 0.02 + 0.04 - 0.005  # paused between the tries
    assert len(smsc.submitted) == 1


@pytest.mark.parametrize("status", [CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL])
async def test_persistent_throttling_is_a_temporary_failure(smsc: SmscSimulator, make_provider: MakeProvider, status: int) -> None:
    provider = await make_provider(smsc)
    smsc.throttle_next(100, status)
    result = await provider.send(message())
    assert (result.accepted, result.temporary, result.error_code) == (False, True, 30001)
    assert result.error_message is not None and CommandStatus(status).name in result.error_message
    smsc.throttle_next(0)
    assert (await provider.send(message())).accepted  # the pause does not outlive the throttling


@pytest.mark.parametrize(
    ("status", "code", "temporary"),
    [
        (CommandStatus.ESME_RINVDSTADR, 30005, False),
        (CommandStatus.ESME_RINVSRCADR, 30007, False),
        (CommandStatus.ESME_RSUBMITFAIL, 30008, False),
        (0x0401, 30008, False),  # vendor-specific
        (CommandStatus.ESME_RSYSERR, 30008, True),
    ],
)
async def test_refusals(smsc: SmscSimulator, make_provider: MakeProvider, status: int, code: int, temporary: bool) -> None:
    provider = await make_provider(smsc)
    smsc.fail_next(1, status)
    result = await provider.send(message())
    assert (result.accepted, result.error_code, result.temporary) == (False, code, temporary)
    assert result.error_message is not None
    assert (CommandStatus(status).name if status in CommandStatus._value2member_map_ else "0x00000401") in result.error_message


async def test_long_message_stops_at_the_first_refused_segment(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    provider = await make_provider(smsc)
    smsc.fail_next(1, CommandStatus.ESME_RINVDSTADR)
    result = await provider.send(message("x" * 400))
    assert (result.accepted, result.error_code) == (False, 30005)
    assert smsc.parts == []


async def test_unaddressable_destination(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    provider = await make_provider(smsc)
    result = await provider.send(message(to="client:bob"))
    assert (result.accepted, result.error_code, result.temporary) == (False, 30005, False)
    assert smsc.parts == []


# -- the connection ---------------------------------------------------------------------------


async def test_dropped_connection(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    provider = await make_provider(smsc)
    smsc.hold_responses()
    waiting = asyncio.create_task(provider.send(message("first")))
    await smsc.wait_for(lambda: len(smsc.parts) == 1)
    smsc.drop_connections()
    result = await asyncio.wait_for(waiting, 0.4)  # not a hang, not the submit timeout either
    assert (result.accepted, result.temporary, result.error_code) == (False, True, 30008)
    assert result.error_message is not None and "connection was lost" in result.error_message
    smsc.release_responses()
    result = await provider.send(message("after"))  # waits for the new bind
    assert result.accepted
    assert [ok for _, _, ok in smsc.binds] == [True, True]


async def test_unanswered_submit_times_out(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    provider = await make_provider(smsc, timeout=0.2)
    smsc.hold_responses()
    result = await provider.send(message())
    assert (result.accepted, result.temporary, result.error_code) == (False, True, 30008)
    assert result.error_message is not None and "no submit_sm_resp" in result.error_message


async def test_wrong_password_retries_the_bind_with_backoff(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    with structlog.testing.capture_logs() as logs:
        provider = await make_provider(smsc, bound=False, password="pw-9x7q", timeout=0.3, reconnect_base=0.05, reconnect_max=0.4)
        result = await provider.send(message())
    assert (result.accepted, result.temporary, result.error_code) == (False, True, 30008)
    assert result.error_message is not None and "ESME_RBINDFAIL" in result.error_message
    await asyncio.sleep(0.9)
    times = [t for t, _, ok in smsc.binds if not ok]
    assert not any(ok for _, _, ok in smsc.binds)
    assert 3 <= len(times) <= 10  # retried, and no tight loop
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[-1] > gaps[0]  # backing off
    assert any(entry["event"] == "smpp bind refused" for entry in logs)
    assert "pw-9x7q" not in repr(logs)  # never the password


async def test_server_not_there(make_provider: MakeProvider, make_smsc: MakeSmsc) -> None:
    smsc = await make_smsc()
    await smsc.close()  # nobody listens on its port now
    provider = await make_provider(smsc, bound=False, timeout=0.2)
    result = await provider.send(message())
    assert (result.accepted, result.temporary, result.error_code) == (False, True, 30008)


async def test_enquire_link_both_ways(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    await make_provider(smsc, enquire_link_interval=0.05)
    await smsc.wait_for(lambda: smsc.enquire_links >= 2)
    assert await smsc.send_enquire_link()


async def test_unanswered_enquire_link_reconnects(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    provider = await make_provider(smsc, enquire_link_interval=0.05, timeout=0.1)
    smsc.answer_enquire_link = False
    await smsc.wait_for(lambda: len(smsc.binds) >= 2)
    smsc.answer_enquire_link = True
    assert (await provider.send(message())).accepted


async def test_smsc_unbind_is_answered_and_rebound(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    provider = await make_provider(smsc)
    smsc.send_unbind()
    await smsc.wait_for(lambda: len(smsc.binds) == 2 and smsc.bound_connections == 1)
    assert (await provider.send(message())).accepted


async def test_malformed_pdu_and_unknown_command_are_nacked(smsc: SmscSimulator, make_provider: MakeProvider, events: Events) -> None:
    provider = await make_provider(smsc)
    garbage = smsc.send_garbage()
    unknown = smsc.send_unknown_command()
    await smsc.wait_for(lambda: len(smsc.nacks) == 2)
    assert {(n.sequence_number, n.command_status) for n in smsc.nacks} == {
        (garbage, CommandStatus.ESME_RINVCMDLEN),
        (unknown, CommandStatus.ESME_RINVCMDID),
    }
    assert (await provider.send(message())).accepted
    assert len(smsc.binds) == 1  # the same connection throughout
    await events.wait(lambda: len(events.reports) == 1)


async def test_broken_framing_reconnects(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    provider = await make_provider(smsc)
    smsc.send_broken_frame()
    await smsc.wait_for(lambda: len(smsc.binds) == 2 and smsc.bound_connections == 1)
    assert (await provider.send(message())).accepted


async def test_close_unbinds(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    provider = await make_provider(smsc)
    await provider.close()
    assert smsc.unbinds == 1
    result = await provider.send(message())
    assert (result.accepted, result.temporary) == (False, True)
    await asyncio.sleep(0.1)
    assert len(smsc.binds) == 1  # no reconnect after close


async def test_close_wakes_sends_waiting_for_a_bind(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    provider = await make_provider(smsc, bound=False, password="wrong", timeout=5.0)
    waiting = asyncio.create_task(provider.send(message()))
    await asyncio.sleep(0.05)
    await provider.close()
    result = await asyncio.wait_for(waiting, 0.5)
    assert (result.accepted, result.temporary) == (False, True)


def test_factory_builds_it(tmp_path: Any) -> None:
    config = ProviderConfig.model_validate({"name": "smsc", "kind": "smpp", "host": "127.0.0.1", "system_id": "test", "password": "secret"})
    provider = build_provider(config, data_dir=str(tmp_path), events=Events())
    assert isinstance(provider, SmppProvider) and provider.kind == "smpp" and provider.capabilities == {"sms"}
    with pytest.raises(ValueError, match="password must be at most 8 ASCII characters"):
        SmppProvider(config.model_copy(update={"password": "much-too-long"}))


# -- receipts ----------------------------------------------------------------------------------


async def test_receipt_states(smsc: SmscSimulator, make_provider: MakeProvider, events: Events) -> None:
    stats = {"15550100001": "DELIVRD", "15550100002": "UNDELIV", "15550100003": "EXPIRED", "15550100004": "REJECTD",
             "15550100005": "DELETED", "15550100006": "UNKNOWN", "15550100007": "ACCEPTD", "15550100008": "BOGUS"}

    def stat(part: SubmittedPart) -> str | None:
        return stats[part.dest]

    smsc.set_receipt_state(stat)
    provider = await make_provider(smsc)
    ids = {}
    for dest in stats:
        result = await provider.send(message(to="+" + dest))
        ids[result.provider_message_id] = dest
    await events.wait(lambda: len(events.reports) == 7)
    got = {ids[r.provider_message_id]: (r.status, r.error_code) for r in events.reports}
    assert got == {
        "15550100001": ("delivered", None),
        "15550100002": ("undelivered", 30003),
        "15550100003": ("undelivered", 30003),
        "15550100004": ("failed", 30007),
        "15550100005": ("undelivered", 30008),
        "15550100006": ("undelivered", 30008),  # the codec's reading: it started, did not arrive
        "15550100007": ("sent", None),
    }  # BOGUS: dropped


async def test_receipt_before_submit_response(make_smsc: MakeSmsc, make_provider: MakeProvider, events: Events) -> None:
    smsc = await make_smsc(receipt_first=True)
    provider = await make_provider(smsc)
    result = await provider.send(message())
    assert result.accepted
    await events.wait(lambda: len(events.reports) == 1)
    assert events.reports[0].provider_message_id == result.provider_message_id == canonical(smsc.parts[0])


@pytest.mark.parametrize(
    ("id_format", "receipt_id_format", "tlvs", "provider_id_format"),
    [
        ("hex", "decimal", False, "auto"),  # "00A0000000" in submit_sm_resp, "2684354560" in the receipt
        ("hex", "decimal", False, "decimal"),
        ("hex", "decimal", True, "auto"),
        ("hex", "same", False, "auto"),
        ("hex", "same", False, "hex"),
        ("decimal", "same", False, "auto"),
        ("decimal", "same", False, "text"),
    ],
)
async def test_message_ids_normalize_alike(
    make_smsc: MakeSmsc, make_provider: MakeProvider, events: Events, id_format: str, receipt_id_format: str, tlvs: bool, provider_id_format: str
) -> None:
    smsc = await make_smsc(id_format=id_format, receipt_id_format=receipt_id_format, receipt_tlvs=tlvs)
    provider = await make_provider(smsc, id_format=provider_id_format)
    results = [await provider.send(message(f"m{i}")) for i in range(3)]
    await events.wait(lambda: len(events.reports) == 3)
    assert [r.provider_message_id for r in events.reports] == [r.provider_message_id for r in results]
    if id_format == "hex":  # "00A0000000" and "2684354560" both become "a0000000"
        assert [r.provider_message_id for r in results] == [format(p.number, "x") for p in smsc.parts]


async def test_auto_ids_learn_decimal_receipts(make_smsc: MakeSmsc, make_provider: MakeProvider, events: Events) -> None:
    # A receipt for an id this process did not submit (another node, a restart) is read
    # the way the last resolvable one was: here decimal.
    smsc = await make_smsc(id_format="hex", receipt_id_format="decimal", receipt_delay=0.05)
    provider = await make_provider(smsc)
    first = await provider.send(message())
    await events.wait(lambda: len(events.reports) == 1)
    second = await provider.send(message())
    provider._recent.pop(second.provider_message_id or "")  # forgotten
    await events.wait(lambda: len(events.reports) == 2)
    assert [r.provider_message_id for r in events.reports] == [first.provider_message_id, second.provider_message_id]


# -- inbound -----------------------------------------------------------------------------------


async def test_mobile_originated_message(smsc: SmscSimulator, make_provider: MakeProvider, events: Events) -> None:
    await make_provider(smsc)
    assert await smsc.send_mo("Yes, call me", source="15550100001", dest="15550199999") == [CommandStatus.ESME_ROK]
    await events.wait(lambda: len(events.messages) == 1)
    (mo,) = events.messages
    assert (mo.provider, mo.from_, mo.to, mo.body) == ("smsc", "+15550100001", "+15550199999", "Yes, call me")
    assert events.reports == []


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("text", ["€ and more " * 40, "Привет, мир! " * 20])
async def test_concatenated_mobile_originated_message(smsc: SmscSimulator, make_provider: MakeProvider, events: Events, text: str, reverse: bool) -> None:
    await make_provider(smsc)
    statuses = await smsc.send_mo(text, reverse=reverse)
    assert len(statuses) >= 3 and set(statuses) == {CommandStatus.ESME_ROK}
    await events.wait(lambda: len(events.messages) == 1)
    assert events.messages[0].body == text


async def test_incomplete_concatenated_message_expires(smsc: SmscSimulator, make_provider: MakeProvider, events: Events) -> None:
    provider = await make_provider(smsc, reassembly_timeout=0.05)
    udh = bytes((5, 0, 3, 77, 2, 1))
    assert await smsc.send_deliver_sm(DeliverSm(esm_class=0x40, source_addr="1555", short_message=udh + b"part one")) == 0
    assert len(provider._mo) == 1  # waiting for part 2
    await asyncio.sleep(0.1)
    assert await smsc.send_mo("next") == [0]
    await events.wait(lambda: len(events.messages) == 1)
    assert len(provider._mo) == 0 and events.messages[0].body == "next"


async def test_unusable_deliver_sm_is_answered_and_dropped(smsc: SmscSimulator, make_provider: MakeProvider, events: Events) -> None:
    provider = await make_provider(smsc)
    unreadable = [
        DeliverSm(data_coding=0x04, short_message=b"\x00\xff"),  # binary
        DeliverSm(data_coding=0x00, short_message=b"\xff"),  # not GSM-7
        DeliverSm(esm_class=0x40, short_message=b"\x09\x00"),  # UDH longer than the message
        DeliverSm(esm_class=0x04, short_message=b"stat:DELIVRD"),  # a receipt naming no message
    ]
    for pdu in unreadable:
        assert await smsc.send_deliver_sm(pdu) == CommandStatus.ESME_ROK
    assert (events.messages, events.reports) == ([], [])
    assert (await provider.send(message())).accepted


async def test_without_an_events_sink(smsc: SmscSimulator, make_provider: MakeProvider) -> None:
    provider = await make_provider(smsc, sink=None)
    assert (await provider.send(message())).accepted
    assert await smsc.send_mo("hello") == [CommandStatus.ESME_ROK]


async def test_a_failing_pipeline_makes_the_smsc_deliver_again(smsc: SmscSimulator, make_provider: MakeProvider, events: Events) -> None:
    provider = await make_provider(smsc)
    smsc.set_receipt_state(lambda part: None)
    result = await provider.send(message())
    events.fail = True
    receipt = DeliverSm(esm_class=0x04, short_message=f"id:{smsc.parts[0].message_id} stat:DELIVRD".encode())
    assert await smsc.send_deliver_sm(receipt) == CommandStatus.ESME_RX_T_APPN
    events.fail = False
    assert await smsc.send_deliver_sm(receipt) == CommandStatus.ESME_ROK
    assert [r.provider_message_id for r in events.reports] == [result.provider_message_id]
    assert len(smsc.binds) == 1
