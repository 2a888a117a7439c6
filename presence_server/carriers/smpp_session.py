"""One SMPP connection of the ``smpp`` provider: the socket, the bind, the read
loop, requests matched to their responses, and enquire_link.

The session owns no policy: it does not reconnect, retry or map statuses (the
provider in ``smpp.py`` does). It turns the socket into calls on the sans-I/O
codec (``protocol.smpp.stream.PduStream``) and back:

* :meth:`SmppSession.request` sends a request and waits for the response with
  the same sequence number (or raises :class:`ConnectionLost`, TimeoutError,
  :class:`MalformedResponse`);
* every deliver_sm goes to the ``on_deliver`` callback in its own task, and
  its deliver_sm_resp carries the status the callback returns - always, even
  for content the callback could not use;
* the SMSC's enquire_link and unbind are answered here; an unbind, EOF, a
  broken frame (StreamError) or an unanswered enquire_link ends the session:
  :meth:`wait_closed` then returns why.

Nothing the peer sends makes the read loop raise: malformed PDUs and unknown
commands are answered (generic_nack) and the connection goes on.

:class:`Reassembly` puts concatenated mobile-originated messages back together.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Coroutine

from protocol import sms
from protocol.smpp.content import ContentError, decode_text
from protocol.smpp.pdu import (
    ESM_UDHI,
    BindTransceiver,
    BindTransceiverResp,
    CommandStatus,
    DeliverSm,
    EnquireLink,
    GenericNack,
    Pdu,
    Tag,
    Unbind,
    is_response,
    status_name,
)
from protocol.smpp.stream import MalformedPdu, PduStream, StreamError, UnknownCommand

from ..clock import Clock

READ_SIZE = 64 * 1024

DeliverHandler = Callable[[DeliverSm], Awaitable[int]]


class ConnectionLost(Exception):
    """The session is over (EOF, reset, framing lost, unbind, enquire_link unanswered)."""


class BindRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"bind_transceiver refused: {status_name(status)}")
        self.status = status


class MalformedResponse(Exception):
    """The SMSC answered a request with a response that does not decode."""


class SmppSession:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        timeout: float,
        enquire_link_interval: float,
        on_deliver: DeliverHandler,
        clock: Clock,
        log: Any,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = timeout
        self._interval = enquire_link_interval
        self._on_deliver = on_deliver
        self._clock = clock
        self._log = log
        self.stream = PduStream()
        self.bound = False
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        self._lost: ConnectionLost | None = None
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()  # the read and enquire_link loops
        self._deliveries: set[asyncio.Task[Any]] = set()  # deliver_sm being handled
        self._spawn(self._read_loop(), self._tasks)

    @classmethod
    async def open(cls, host: str, port: int, *, timeout: float, **kwargs: Any) -> SmppSession:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, timeout=timeout, **kwargs)

    # -- lifecycle ---------------------------------------------------------------------

    async def bind(self, system_id: str, password: str, system_type: str) -> str:
        """Bind as a transceiver; the SMSC's system_id. Raises BindRefused, ConnectionLost, TimeoutError."""
        resp = await self.request(BindTransceiver(system_id=system_id, password=password, system_type=system_type))
        if not isinstance(resp, BindTransceiverResp) or not resp.ok:
            raise BindRefused(resp.status if resp.status else CommandStatus.ESME_RBINDFAIL)
        self.bound = True
        self._spawn(self._enquire_link_loop(), self._tasks)
        return resp.system_id

    async def wait_closed(self) -> ConnectionLost:
        await self._closed.wait()
        assert self._lost is not None
        return self._lost

    async def unbind(self, timeout: float) -> None:
        """Say goodbye (unbind, wait up to ``timeout`` for unbind_resp), then close."""
        if self.bound and self._lost is None:
            self.bound = False
            with contextlib.suppress(Exception):
                await self.request(Unbind(), timeout=timeout)
        await self.close("unbound by us")

    async def close(self, reason: str = "closed by us", *, grace: float = 1.0) -> None:
        """Close the socket and stop the loops; deliver_sm handlers get ``grace``
        seconds to finish (their answers go nowhere now: the SMSC delivers again)."""
        self._lose(ConnectionLost(reason))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(grace):
                await self._writer.wait_closed()
        current = asyncio.current_task()
        loops = [t for t in self._tasks if t is not current]
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        deliveries = [t for t in self._deliveries if t is not current]
        if deliveries:
            _, late = await asyncio.wait(deliveries, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def _lose(self, exc: ConnectionLost) -> None:
        if self._lost is not None:
            return
        self._lost = exc
        self.bound = False
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(str(exc)))
        self._pending.clear()
        with contextlib.suppress(Exception):
            self._writer.close()
        self._closed.set()

    # -- requests ----------------------------------------------------------------------

    async def request(self, pdu: Pdu, *, timeout: float | None = None) -> Pdu:
        """Send a request; its response (or generic_nack). Raises ConnectionLost,
        TimeoutError (after ``timeout``, default the session's), MalformedResponse."""
        if self._lost is not None:
            raise ConnectionLost(str(self._lost))
        pdu = self.stream.assign(pdu)
        fut: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self._pending[pdu.sequence_number] = fut
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
            # The write is inside it too: an SMSC that stops reading blocks drain().
            async with asyncio.timeout(self._timeout if timeout is None else timeout):
                self._write(pdu)
                try:
                    await self._writer.drain()
                except (OSError, RuntimeError) as exc:
                    self._lose(ConnectionLost(f"write failed ({type(exc).__name__})"))
                return await fut
        finally:
            self._pending.pop(pdu.sequence_number, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved, whether or not we got to await it

    def _write(self, pdu: Pdu) -> None:
        if self._lost is not None:
            return
        data = self.stream.send(pdu)  # SmppEncodeError: our bug, for the caller
        try:
            self._writer.write(data)
        except (OSError, RuntimeError) as exc:
            self._lose(ConnectionLost(f"write failed ({type(exc).__name__})"))

    # -- incoming ----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while self._lost is None:
                data = await self._reader.read(READ_SIZE)
                if not data:
                    raise ConnectionLost("the SMSC closed the connection")
                self.stream.receive_data(data)
                for event in self.stream.events():
                    self._dispatch(event)
        except ConnectionLost as exc:
            self._lose(exc)
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._lose(ConnectionLost(f"read failed ({type(exc).__name__})"))
        except asyncio.CancelledError:
            self._lose(ConnectionLost("closed by us"))
            raise
        except Exception as exc:  # a bug here must not leave the provider hanging
            self._log.exception("smpp read loop failed")
            self._lose(ConnectionLost(f"read loop failed ({type(exc).__name__})"))

    def _dispatch(self, event: Pdu | MalformedPdu | UnknownCommand | StreamError) -> None:
        if isinstance(event, StreamError):
            nack = event.reply()
            if nack is not None:
                self._write(nack)
            self._log.warning("smpp framing lost; dropping the connection", reason=event.reason)
            raise ConnectionLost(f"framing lost: {event.reason}")
        if isinstance(event, UnknownCommand):
            self._log.warning("smpp unknown command from the SMSC; answered generic_nack", command_id=f"0x{event.command_id:08X}")
            self._write(event.reply())
            return
        if isinstance(event, MalformedPdu):
            self._log.warning("smpp malformed PDU from the SMSC", command_id=f"0x{event.command_id:08X}", reason=event.reason)
            reply = event.reply()
            if reply is not None:
                self._write(reply)
            elif is_response(event.command_id):
                fut = self._pending.get(event.sequence_number)
                if fut is not None and not fut.done():
                    fut.set_exception(MalformedResponse(event.reason))
            return
        if is_response(event.command_id):
            fut = self._pending.get(event.sequence_number)
            if fut is not None and not fut.done():
                fut.set_result(event)
            elif isinstance(event, GenericNack):
                self._log.warning("smpp generic_nack from the SMSC", status=status_name(event.command_status), sequence_number=event.sequence_number)
            else:
                self._log.info("smpp response to no pending request", command=type(event).__name__, sequence_number=event.sequence_number)
            return
        if isinstance(event, DeliverSm):
            self._spawn(self._deliver(event), self._deliveries)
        elif isinstance(event, EnquireLink):
            self._write(event.response())
        elif isinstance(event, Unbind):
            self._write(event.response())
            self._log.info("smpp SMSC unbound us")
            raise ConnectionLost("the SMSC unbound")
        else:  # a request only an SMSC may receive (bind, submit_sm)
            self._write(GenericNack(sequence_number=event.sequence_number, command_status=CommandStatus.ESME_RINVCMDID))

    async def _deliver(self, pdu: DeliverSm) -> None:
        status: int = CommandStatus.ESME_RX_T_APPN
        try:
            status = await self._on_deliver(pdu)
        except Exception:  # the handler catches its own; belt and braces
            self._log.exception("smpp deliver_sm handler failed")
        finally:
            # Always answered (after handling, so that a crash makes the SMSC deliver it again).
            self._write(pdu.response(status))

    async def _enquire_link_loop(self) -> None:
        while self._lost is None:
            await self._clock.sleep(self._interval)
            try:
                await self.request(EnquireLink())
            except TimeoutError:
                self._log.warning("smpp enquire_link unanswered; dropping the connection")
                self._lose(ConnectionLost("enquire_link unanswered"))
            except (ConnectionLost, MalformedResponse):
                return

    @staticmethod
    def _spawn(coro: Coroutine[Any, Any, None], tasks: set[asyncio.Task[Any]]) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)


# -- concatenated mobile-originated messages ---------------------------------------------

MAX_PENDING_MO = 10000  # incomplete messages kept at most (the oldest go first)


@dataclass
class _Parts:
    started: float
    data_coding: int
    parts: dict[int, bytes] = field(default_factory=dict)


class Reassembly:
    """Parts of concatenated messages (UDH, or the sar_* TLVs) wait for their
    siblings by (source, destination, reference, total) up to ``timeout``
    seconds; an incomplete message is then dropped and logged."""

    def __init__(self, timeout: float, log: Any) -> None:
        self.timeout = timeout
        self._log = log
        self._pending: dict[tuple[str, str, int, int], _Parts] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, pdu: DeliverSm, now: float) -> str | None:
        """The whole message's text once every part is in; None until then.
        Raises sms.UdhError or ContentError for content that cannot be read."""
        payload, concat = pdu.payload, None
        if pdu.esm_class & ESM_UDHI:
            elements, payload = sms.parse_udh(payload)
            info = sms.concat_info(elements)
            concat = (info.ref, info.total, info.seq) if info else None
        else:
            ref, total, seq = (pdu.tlv(t) for t in (Tag.SAR_MSG_REF_NUM, Tag.SAR_TOTAL_SEGMENTS, Tag.SAR_SEGMENT_SEQNUM))
            if ref and total and seq:
                concat = (int.from_bytes(ref, "big"), total[0], seq[0])
        for key in [k for k, v in self._pending.items() if now - v.started > self.timeout]:
            self._log.warning("smpp incomplete inbound message dropped", parts=len(self._pending.pop(key).parts), total=key[3])
        if concat is None or concat[1] <= 1:
            return decode_text(pdu.data_coding, payload)
        ref_num, total_parts, seq_num = concat
        if not 1 <= seq_num <= total_parts:
            raise ContentError(f"segment {seq_num} of {total_parts}")
        key = (pdu.source_addr, pdu.destination_addr, ref_num, total_parts)
        group = self._pending.setdefault(key, _Parts(now, pdu.data_coding))
        group.parts[seq_num] = payload
        if len(self._pending) > MAX_PENDING_MO:
            del self._pending[next(iter(self._pending))]
        if len(group.parts) < total_parts:
            return None
        del self._pending[key]
        return decode_text(group.data_coding, b"".join(group.parts[i] for i in range(1, total_parts + 1)))
