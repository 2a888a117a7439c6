"""An SMSC simulator for tests and benchmarks: SMPP 3.4 over real sockets, on
the same sans-I/O codec the provider uses (``protocol/smpp``).

    smsc = SmscSimulator(system_id="test", password="secret")
    await smsc.start()                      # 127.0.0.1, a free port: smsc.port
    ...                                     # point an smpp provider at it
    await smsc.wait_for_submits(1)
    smsc.submitted[0].text                  # reassembled, with .parts, .source, .dest, .ids
    await smsc.close()

It accepts bind_transceiver (wrong credentials: ``bind_failure_status``, and
the connection is closed), answers submit_sm with message ids (``id_format``:
"decimal" or "hex"; ``receipt_id_format`` spells them in the receipt text,
"same" by default), and sends a delivery receipt per segment after
``receipt_delay`` with the state :meth:`set_receipt_state` decides (None: no
receipt). Knobs: ``receipt_first`` (the receipt goes out before the
submit_sm_resp), ``receipt_tlvs`` (receipted_message_id and message_state
TLVs too), ``response_delay`` (submit_sm_resp after a while, so that several
submits are in flight; ``max_in_flight`` records the most), :meth:`hold_responses`,
:meth:`throttle_next`, :meth:`fail_next`, :meth:`drop_connections`,
:meth:`send_mo`, :meth:`send_garbage`, :meth:`send_unknown_command`,
:meth:`send_broken_frame`, :meth:`send_enquire_link`, :meth:`send_unbind`,
and ``enquire_link_interval`` (the SMSC's own keep-alive).

What the ESME sent is recorded: ``binds`` (time, system_id, ok), ``parts``
(every accepted segment), ``submitted`` (whole messages), ``nacks``
(generic_nack received), ``unbinds``, ``enquire_links``,
``deliver_responses`` (sequence number -> status).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from protocol import sms
from protocol.smpp.content import build_submits, decode_text
from protocol.smpp.pdu import (
    ESM_TYPE_DELIVERY_RECEIPT,
    ESM_UDHI,
    BindTransceiver,
    CommandStatus,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    MessageState,
    Pdu,
    SubmitSm,
    Tag,
    Unbind,
    UnbindResp,
)
from protocol.smpp.stream import MalformedPdu, PduStream, StreamError, UnknownCommand
from protocol.smpp.wire import HEADER

IdFormat = Literal["decimal", "hex"]
FIRST_ID = 0xA0000000  # hex ids then have letters: "A0000001" is 2684354561


@dataclass(frozen=True)
class SubmittedPart:
    message_id: str  # as submit_sm_resp spelled it
    number: int  # the id as a number
    source: str
    dest: str
    text: str  # this segment's text, without the UDH
    ref: int | None  # concatenation reference; None for a single-part message
    seq: int
    total: int
    pdu: SubmitSm


@dataclass
class SubmittedMessage:
    source: str
    dest: str
    parts: list[SubmittedPart]

    @property
    def text(self) -> str:
        return "".join(p.text for p in sorted(self.parts, key=lambda p: p.seq))

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.message_id for p in sorted(self.parts, key=lambda p: p.seq))


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    stream: PduStream = field(default_factory=PduStream)
    bound: bool = False
    in_flight: int = 0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def send(self, pdu: Pdu) -> int:
        pdu = self.stream.assign(pdu)
        if not self.writer.is_closing():
            self.writer.write(self.stream.send(pdu))
        return pdu.sequence_number

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class SmscSimulator:
    def __init__(
        self,
        *,
        system_id: str = "test",
        password: str = "secret",
        id_format: IdFormat = "decimal",
        receipt_id_format: Literal["same", "decimal", "hex"] = "same",
        receipt_delay: float = 0.0,
        receipt_first: bool = False,
        receipt_tlvs: bool = False,
        response_delay: float = 0.0,
        enquire_link_interval: float | None = None,
        bind_failure_status: int = CommandStatus.ESME_RBINDFAIL,
    ) -> None:
        self.system_id = system_id
        self.password = password
        self.id_format = id_format
        self.receipt_id_format = receipt_id_format
        self.receipt_delay = receipt_delay
        self.receipt_first = receipt_first
        self.receipt_tlvs = receipt_tlvs
        self.response_delay = response_delay
        self.enquire_link_interval = enquire_link_interval
        self.bind_failure_status = bind_failure_status
        self.port = 0
        self.binds: list[tuple[float, str, bool]] = []  # (monotonic time, system_id, accepted)
        self.parts: list[SubmittedPart] = []
        self.submitted: list[SubmittedMessage] = []
        self.nacks: list[GenericNack] = []
        self.unbinds = 0
        self.enquire_links = 0  # enquire_link received (answered while answer_enquire_link)
        self.enquire_link_answers = 0  # enquire_link_resp received
        self.answer_enquire_link = True
        self.deliver_responses: dict[int, int] = {}
        self.max_in_flight = 0
        self._receipt_state: Callable[[SubmittedPart], str | None] = lambda part: "DELIVRD"
        self._throttle = 0
        self._throttle_status: int = CommandStatus.ESME_RTHROTTLED
        self._fail = 0
        self._fail_status: int = CommandStatus.ESME_RSUBMITFAIL
        self._held: list[tuple[_Connection, SubmitSm, SubmittedPart]] | None = None
        self._ids = itertools.count(FIRST_ID)
        self._mo_refs = itertools.count(1)
        self._seq_bases = itertools.count(1, 1_000_000)
        self._concat: dict[tuple[str, str, int], list[SubmittedPart]] = {}
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        for conn in list(self._connections):
            for task in list(conn.tasks):
                task.cancel()
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SmscSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- knobs ------------------------------------------------------------------------

    def set_receipt_state(self, fn: Callable[[SubmittedPart], str | None]) -> None:
        """Which stat word each segment's receipt carries (DELIVRD, UNDELIV, ...); None: no receipt."""
        self._receipt_state = fn

    def throttle_next(self, n: int, status: int = CommandStatus.ESME_RTHROTTLED) -> None:
        self._throttle, self._throttle_status = n, status

    def fail_next(self, n: int, status: int) -> None:
        self._fail, self._fail_status = n, status

    def hold_responses(self) -> None:
        """Accept submits but answer none until :meth:`release_responses`."""
        self._held = []

    def release_responses(self) -> None:
        held, self._held = self._held or [], None
        for conn, pdu, part in held:
            if conn in self._connections:
                self._answer(conn, pdu, part)

    def drop_connections(self) -> None:
        for conn in list(self._connections):
            conn.writer.close()

    @property
    def bound_connections(self) -> int:
        return sum(1 for c in self._connections if c.bound)

    def _bound(self) -> _Connection:
        for conn in self._connections:
            if conn.bound and not conn.writer.is_closing():
                return conn
        raise RuntimeError("no bound ESME connection")

    # -- waiting ----------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    async def wait_for_submits(self, n: int, timeout: float = 2.0) -> list[SubmittedMessage]:
        await self.wait_for(lambda: len(self.submitted) >= n, timeout)
        return self.submitted

    async def wait_for_bind(self, timeout: float = 2.0) -> None:
        await self.wait_for(lambda: self.bound_connections > 0, timeout)

    # -- sending to the ESME ----------------------------------------------------------

    async def send_deliver_sm(self, pdu: DeliverSm, timeout: float = 2.0) -> int | None:
        """Any deliver_sm; the status of its deliver_sm_resp (None: not answered in time)."""
        seq = self._bound().send(pdu)
        try:
            await self.wait_for(lambda: seq in self.deliver_responses, timeout)
        except TimeoutError:
            return None
        return self.deliver_responses[seq]

    async def send_mo(self, text: str, *, source: str = "15550100001", dest: str = "15550199999", ton: int = 1, reverse: bool = False, timeout: float = 2.0) -> list[int | None]:
        """A mobile-originated message (long text: concatenated parts, UDH; ``reverse``:
        last part first). The deliver_sm_resp statuses (None: not answered in time)."""
        template = SubmitSm(source_addr_ton=ton, source_addr_npi=1, source_addr=source, dest_addr_ton=ton, dest_addr_npi=1, destination_addr=dest)
        pdus = [DeliverSm(**{f.name: getattr(p, f.name) for f in dataclasses.fields(p)}) for p in build_submits(text, template, ref=next(self._mo_refs) % 256)]
        return [await self.send_deliver_sm(pdu, timeout) for pdu in (reversed(pdus) if reverse else pdus)]

    def _raw(self, command_id: int, body: bytes, length: int | None = None) -> int:
        conn = self._bound()
        seq = conn.stream.next_sequence_number()
        conn.writer.write(HEADER.pack(length if length is not None else 16 + len(body), command_id, 0, seq) + body)
        return seq

    def send_garbage(self) -> int:
        """A deliver_sm whose body ends inside source_addr (no NUL): the ESME should
        answer generic_nack (ESME_RINVCMDLEN) and stay bound. Its sequence number."""
        return self._raw(0x00000005, b"\x00\x01\x0115550")

    def send_unknown_command(self) -> int:
        """A well-framed PDU with a command id SMPP 3.4 ESMEs do not know. Its sequence number."""
        return self._raw(0x00000103, b"\x00" * 12)

    def send_broken_frame(self) -> None:
        """A header whose command_length is below 16: framing is lost, the ESME should reconnect."""
        self._raw(0x00000015, b"", length=8)

    async def send_enquire_link(self, timeout: float = 2.0) -> bool:
        conn = self._bound()
        before = self.enquire_link_answers
        conn.send(EnquireLink())
        try:
            await self.wait_for(lambda: self.enquire_link_answers > before, timeout)
        except TimeoutError:
            return False
        return True

    def send_unbind(self) -> None:
        self._bound().send(Unbind())

    # -- serving ----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Sequence numbers unique across connections, so deliver_responses needs no connection key.
        conn = _Connection(reader, writer, PduStream(first_sequence_number=next(self._seq_bases)))
        self._connections.add(conn)
        if self.enquire_link_interval:
            conn.spawn(self._keepalive(conn, self.enquire_link_interval))
        try:
            while not writer.is_closing():
                data = await reader.read(65536)
                if not data:
                    break
                conn.stream.receive_data(data)
                for event in conn.stream.events():
                    self._handle(conn, event)
                self._notify()
        except ConnectionError:
            pass
        finally:
            conn.bound = False
            self._connections.discard(conn)
            for task in list(conn.tasks):
                if task is not asyncio.current_task():
                    task.cancel()
            writer.close()
            self._notify()

    async def _keepalive(self, conn: _Connection, interval: float) -> None:
        while not conn.writer.is_closing():
            await asyncio.sleep(interval)
            if conn.bound:
                conn.send(EnquireLink())

    def _handle(self, conn: _Connection, event: Any) -> None:
        if isinstance(event, (MalformedPdu, UnknownCommand, StreamError)):
            reply = event.reply()
            if reply is not None:
                conn.send(reply)
            if isinstance(event, StreamError):
                conn.writer.close()
        elif isinstance(event, BindTransceiver):
            ok = event.system_id == self.system_id and event.password == self.password and not conn.bound
            self.binds.append((time.monotonic(), event.system_id, ok))
            conn.send(event.response(CommandStatus.ESME_ROK if ok else self.bind_failure_status, system_id="simsmsc"))
            conn.bound = conn.bound or ok
            if not ok:
                conn.writer.close()
        elif isinstance(event, SubmitSm):
            self._submit(conn, event)
        elif isinstance(event, EnquireLink):
            self.enquire_links += 1
            if self.answer_enquire_link:
                conn.send(event.response())
        elif isinstance(event, EnquireLinkResp):
            self.enquire_link_answers += 1
        elif isinstance(event, Unbind):
            self.unbinds += 1
            conn.send(event.response())
            conn.bound = False
            conn.writer.close()
        elif isinstance(event, DeliverSmResp):
            self.deliver_responses[event.sequence_number] = event.command_status
        elif isinstance(event, GenericNack):
            self.nacks.append(event)
            self.deliver_responses.setdefault(event.sequence_number, event.command_status)
        elif isinstance(event, UnbindResp):
            conn.bound = False
            conn.writer.close()

    def _submit(self, conn: _Connection, pdu: SubmitSm) -> None:
        if not conn.bound:
            conn.send(pdu.response(CommandStatus.ESME_RINVBNDSTS))
            return
        if self._throttle > 0:
            self._throttle -= 1
            conn.send(pdu.response(self._throttle_status))
            return
        if self._fail > 0:
            self._fail -= 1
            conn.send(pdu.response(self._fail_status))
            return
        part = self._record(pdu)
        conn.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, conn.in_flight)
        if self._held is not None:
            self._held.append((conn, pdu, part))
        elif self.response_delay > 0:
            conn.spawn(self._answer_later(conn, pdu, part))
        else:
            self._answer(conn, pdu, part)

    async def _answer_later(self, conn: _Connection, pdu: SubmitSm, part: SubmittedPart) -> None:
        await asyncio.sleep(self.response_delay)
        self._answer(conn, pdu, part)

    def _answer(self, conn: _Connection, pdu: SubmitSm, part: SubmittedPart) -> None:
        conn.in_flight -= 1
        stat = self._receipt_state(part) if pdu.registered_delivery & 0x03 else None
        if stat is not None and self.receipt_first:
            self._send_receipt(conn, part, stat)
        conn.send(pdu.response(message_id=part.message_id))
        if stat is not None and not self.receipt_first:
            if self.receipt_delay > 0:
                conn.spawn(self._receipt_later(conn, part, stat))
            else:
                self._send_receipt(conn, part, stat)
        self._notify()

    async def _receipt_later(self, conn: _Connection, part: SubmittedPart, stat: str) -> None:
        await asyncio.sleep(self.receipt_delay)
        if conn.writer.is_closing():  # a real SMSC delivers it on another bind
            try:
                conn = self._bound()
            except RuntimeError:
                return
        self._send_receipt(conn, part, stat)

    def _send_receipt(self, conn: _Connection, part: SubmittedPart, stat: str) -> None:
        fmt = self.id_format if self.receipt_id_format == "same" else self.receipt_id_format
        rid = str(part.number) if fmt == "decimal" else f"{part.number:X}"
        stamp = time.strftime("%y%m%d%H%M")
        dlvrd = "001" if stat == "DELIVRD" else "000"
        err = "000" if stat == "DELIVRD" else "001"
        text = f"id:{rid} sub:001 dlvrd:{dlvrd} submit date:{stamp} done date:{stamp} stat:{stat} err:{err} text:{part.text[:20]}"
        tlvs: tuple[tuple[int, bytes], ...] = ()
        if self.receipt_tlvs:
            state = {"DELIVRD": MessageState.DELIVERED, "UNDELIV": MessageState.UNDELIVERABLE, "EXPIRED": MessageState.EXPIRED,
                     "DELETED": MessageState.DELETED, "REJECTD": MessageState.REJECTED, "ACCEPTD": MessageState.ACCEPTED,
                     "ENROUTE": MessageState.ENROUTE}.get(stat, MessageState.UNKNOWN)
            tlvs = ((Tag.RECEIPTED_MESSAGE_ID, part.message_id.encode() + b"\x00"), (Tag.MESSAGE_STATE, bytes((state,))))
        conn.send(DeliverSm(
            source_addr_ton=part.pdu.dest_addr_ton, source_addr_npi=part.pdu.dest_addr_npi, source_addr=part.dest,
            dest_addr_ton=part.pdu.source_addr_ton, dest_addr_npi=part.pdu.source_addr_npi, destination_addr=part.source,
            esm_class=ESM_TYPE_DELIVERY_RECEIPT, short_message=text.encode("latin-1", "replace"), tlvs=tlvs,
        ))

    def _record(self, pdu: SubmitSm) -> SubmittedPart:
        number = next(self._ids)
        message_id = str(number) if self.id_format == "decimal" else f"{number:010X}"
        payload, ref, seq, total = pdu.short_message, None, 1, 1
        if pdu.esm_class & ESM_UDHI:
            elements, payload = sms.parse_udh(payload)
            info = sms.concat_info(elements)
            if info is not None:
                ref, seq, total = info.ref, info.seq, info.total
        part = SubmittedPart(message_id, number, pdu.source_addr, pdu.destination_addr, decode_text(pdu.data_coding, payload), ref, seq, total, pdu)
        self.parts.append(part)
        if ref is None:
            self.submitted.append(SubmittedMessage(part.source, part.dest, [part]))
        else:
            group = self._concat.setdefault((part.source, part.dest, ref), [])
            group.append(part)
            if len(group) == total:
                del self._concat[(part.source, part.dest, ref)]
                self.submitted.append(SubmittedMessage(part.source, part.dest, group))
        return part
