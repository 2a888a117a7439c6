"""The ``smpp`` provider: an SMPP 3.4 transceiver bind to a carrier's SMSC.

Built on our own sans-I/O codec (``protocol/smpp``), not on ``aiosmpplib``:
that library's ESME owns its socket and its send path (messages go into its
broker queue, results come back through hooks) and keeps its own persistence
model for matching receipts (a correlator with its own files). A provider
behind :class:`~.base.Provider` needs the opposite: ``send()`` awaits one
message's outcome, and receipts are matched by the messaging pipeline's own
submission store. The session (socket, bind, read loop) is in
``smpp_session.py``; this module is the policy.

Connection: :meth:`start` launches a task that connects, binds and rebinds
after a drop, a refused bind or an unbind from the SMSC, with jittered
exponential backoff capped at ``reconnect_max``. :meth:`send` waits up to
``timeout`` for a bind. Every submit_sm (one per segment; long texts are
concatenated with a UDH) asks for a receipt, waits up to ``timeout`` for its
response, and holds one slot of a ``window`` shared by all sends. Segments of
one message go one after another: the first refused segment ends the send.
:meth:`close` unbinds (waiting briefly for unbind_resp). SMPP carries no
media: the ``mms`` capability is never claimed.

submit_sm_resp -> :class:`SendResult` (codes are Twilio's messaging codes):

=================================================  =========  =====
answer                                             temporary  code
=================================================  =========  =====
ESME_ROK (every segment)                           accepted
ESME_RTHROTTLED, ESME_RMSGQFUL: new submits pause  yes        30001
  and the segment is retried; after that
ESME_RSYSERR, ESME_RX_T_APPN, ESME_RINVBNDSTS      yes        30008
no bind within ``timeout``, connection lost while  yes        30008
  waiting, no submit_sm_resp within ``timeout``
ESME_RINVDSTADR, ESME_RINVDSTTON/NPI               no         30005
ESME_RINVSRCADR/TON/NPI, ESME_RX_P/R_APPN          no         30007
ESME_RINVPASWD, ESME_RINVSYSID, ESME_RBINDFAIL     no         30002
any other status (vendor codes too), a garbled     no         30008
  response, an accepted segment without an id
=================================================  =========  =====

Receipts -> :class:`DeliveryReport` (timestamp: when the receipt arrived; the
receipt's own dates are in the SMSC's unstated time zone):

==================  ===========  =====
state (stat / TLV)  status       code
==================  ===========  =====
DELIVRD             delivered
ACCEPTD, ENROUTE    sent
EXPIRED, UNDELIV    undelivered  30003
DELETED             undelivered  30008
REJECTD             failed       30007
UNKNOWN             undelivered  30008
==================  ===========  =====

Message ids (``id_format``): ids are stored and reported normalized
(``protocol.smpp.receipts.normalize_message_id``). ``text``: opaque, trimmed.
``hex``: hex numbers everywhere, canonical lowercase hex without zeros.
``decimal``: hex in submit_sm_resp, decimal in the receipt text. ``auto``
(default): canonical hex for every numeric id (opaque ids stay opaque); a
digits-only id in a receipt's text is ambiguous, so the reading that names a
recently submitted id wins, and without one the reading that won last time
(same spelling at first). The receipted_message_id TLV is the submit id
verbatim.

Mobile-originated messages: concatenated parts (UDH, or the sar_* TLVs) wait
for their siblings by (source, destination, reference) up to
``reassembly_timeout``; an incomplete message is then dropped and logged.
deliver_sm is always answered once handled: ESME_ROK, also for content that
cannot be used (logged and dropped), and ESME_RX_T_APPN when the pipeline
raised, so that the SMSC delivers it again.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from typing import Any

import structlog

from protocol import sms
from protocol.smpp.content import ContentError, build_submits
from protocol.smpp.pdu import (
    CommandStatus,
    DeliverSm,
    MessageState,
    SmppEncodeError,
    SubmitSm,
    Tag,
    status_name,
)
from protocol.smpp.receipts import ReceiptError, normalize_message_id, parse_receipt

from ..clock import Clock, SystemClock
from ..config import ProviderConfig
from .base import (
    ACCOUNT_SUSPENDED,
    FILTERED,
    QUEUE_OVERFLOW,
    UNKNOWN_DESTINATION,
    UNKNOWN_ERROR,
    UNREACHABLE,
    CarrierEvents,
    DeliveryReport,
    InboundMessage,
    OutboundMessage,
    SendResult,
    capability_refusal,
)
from .smpp_session import BindRefused, ConnectionLost, MalformedResponse, Reassembly, SmppSession

log = structlog.get_logger(__name__)

S = CommandStatus
_THROTTLING = frozenset({S.ESME_RTHROTTLED, S.ESME_RMSGQFUL})
_TEMPORARY = frozenset({S.ESME_RSYSERR, S.ESME_RX_T_APPN, S.ESME_RINVBNDSTS})
_PERMANENT_CODES: dict[int, int] = {
    S.ESME_RINVDSTADR: UNKNOWN_DESTINATION,
    S.ESME_RINVDSTTON: UNKNOWN_DESTINATION,
    S.ESME_RINVDSTNPI: UNKNOWN_DESTINATION,
    S.ESME_RINVSRCADR: FILTERED,
    S.ESME_RINVSRCTON: FILTERED,
    S.ESME_RINVSRCNPI: FILTERED,
    S.ESME_RX_P_APPN: FILTERED,
    S.ESME_RX_R_APPN: FILTERED,
    S.ESME_RINVPASWD: ACCOUNT_SUSPENDED,
    S.ESME_RINVSYSID: ACCOUNT_SUSPENDED,
    S.ESME_RBINDFAIL: ACCOUNT_SUSPENDED,
}
# The status of a receipt is the codec's (receipts.STATE_STATUS); these are the
# Twilio error codes a failed one carries.
RECEIPT_ERRORS: dict[MessageState, int] = {
    MessageState.EXPIRED: UNREACHABLE,
    MessageState.UNDELIVERABLE: UNREACHABLE,
    MessageState.DELETED: UNKNOWN_ERROR,
    MessageState.REJECTED: FILTERED,
    MessageState.UNKNOWN: UNKNOWN_ERROR,
}
THROTTLE_ATTEMPTS = 5  # tries of one segment the SMSC throttles
RECENT_IDS = 65536  # submit ids remembered to resolve ambiguous receipt ids ('auto')
_DIGITS = re.compile(r"[0-9]{1,20}")


def _check_field(config: ProviderConfig, name: str, value: str, max_chars: int) -> None:
    # The bind fields have fixed sizes on the wire; say so at start-up, not at every bind.
    # (The value is never part of the message: it may be the password.)
    if not value.isascii() or "\x00" in value or len(value) > max_chars:
        raise ValueError(f"provider {config.name!r}: {name} must be at most {max_chars} ASCII characters")


class SmppProvider:
    kind = "smpp"

    def __init__(
        self,
        config: ProviderConfig,
        *,
        events: CarrierEvents | None = None,
        clock: Clock | None = None,
        reconnect_base: float = 1.0,
        throttle_delay: float = 0.2,
        reassembly_timeout: float = 600.0,
    ) -> None:
        if not config.host or not config.system_id or config.password is None:
            raise ValueError(f"provider {config.name!r}: a provider of kind 'smpp' needs host, system_id and password")
        _check_field(config, "system_id", config.system_id, 15)
        _check_field(config, "password", config.password, 8)
        _check_field(config, "system_type", config.system_type, 12)
        self.config = config
        self.name = config.name
        self.capabilities: frozenset[str] = frozenset(config.capabilities) - {"mms"}  # SMPP carries no media
        self.events = events
        self._clock: Clock = clock or SystemClock()
        self._reconnect_base = min(reconnect_base, config.reconnect_max)
        self._throttle_delay = throttle_delay
        self._window = asyncio.Semaphore(config.window)
        self._session: SmppSession | None = None  # bound: sends use it
        self._current: SmppSession | None = None  # the connection task's, bound or not
        self._ready = asyncio.Event()  # set while bound, and once closed
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_error = "not connected yet"
        self._paused_until = 0.0  # monotonic; new submits wait while the SMSC throttles us
        self._refs = itertools.count(random.randrange(256))
        self._recent: dict[str, None] = {}  # normalized submit ids, oldest first
        self._decimal_receipts = False  # 'auto': what the last ambiguous receipt id turned out to be
        self._log = log.bind(provider=self.name)
        self._mo = Reassembly(reassembly_timeout, self._log)

    # -- connection ---------------------------------------------------------------------

    @property
    def bound(self) -> bool:
        """True while a bind to the SMSC is up."""
        return self._session is not None

    async def start(self) -> None:
        """Start connecting; returns at once (sends wait for the bind)."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._connect_loop(), name=f"smpp-{self.name}")
            self._log.info("smpp provider started", host=self.config.host, port=self.config.port)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ready.set()  # wakes sends waiting for a bind: they fail, temporarily
        self._session = None
        if self._current is not None:  # (also ends the task if a cancellation gets lost)
            await self._current.unbind(timeout=min(1.0, self.config.timeout))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._log.info("smpp provider closed")

    def _backoff(self, attempt: int) -> float:
        delay = min(self.config.reconnect_max, self._reconnect_base * 2.0 ** min(attempt, 30))
        return delay * random.uniform(0.5, 1.0)

    async def _connect_loop(self) -> None:
        attempt = 0
        while not self._closed:
            session: SmppSession | None = None
            try:
                session = self._current = await SmppSession.open(
                    self.config.host or "", self.config.port, timeout=self.config.timeout,
                    enquire_link_interval=self.config.enquire_link_interval,
                    on_deliver=self._on_deliver, clock=self._clock, log=self._log,
                )
                smsc = await session.bind(self.config.system_id or "", self.config.password or "", self.config.system_type)
                if self._closed:
                    await session.unbind(timeout=min(1.0, self.config.timeout))
                    break
                attempt = 0
                self._session = session
                self._ready.set()
                self._log.info("smpp bound", smsc_system_id=smsc)
                lost = await session.wait_closed()
                self._last_error = f"connection lost ({lost})"
                if not self._closed:
                    self._log.warning("smpp connection lost", reason=str(lost))
            except asyncio.CancelledError:
                raise
            except BindRefused as exc:
                self._last_error = f"bind refused ({status_name(exc.status)})"
                self._log.warning("smpp bind refused", status=status_name(exc.status))
            except (OSError, TimeoutError, ConnectionLost, MalformedResponse) as exc:
                self._last_error = f"could not connect and bind ({type(exc).__name__})"
                self._log.warning("smpp connect or bind failed", error=type(exc).__name__, detail=str(exc))
            except Exception as exc:  # never let the connection task die
                self._last_error = f"connection failed ({type(exc).__name__})"
                self._log.exception("smpp connection failed unexpectedly")
            finally:
                if self._session is session:
                    self._session = None
                if self._current is session:
                    self._current = None
                if not self._closed:
                    self._ready.clear()
                if session is not None:
                    await session.close()
            if self._closed:
                break
            delay = self._backoff(attempt)
            attempt += 1
            self._log.info("smpp reconnecting", delay=round(delay, 3), attempt=attempt)
            await self._clock.sleep(delay)

    async def _bound_session(self) -> SmppSession | None:
        if self._task is None and not self._closed:
            await self.start()
        if not self._ready.is_set():
            try:
                async with asyncio.timeout(self.config.timeout):
                    await self._ready.wait()
            except TimeoutError:
                return None
        return None if self._closed else self._session

    # -- sending ------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendResult:
        refusal = capability_refusal(self, message)
        if refusal is not None:
            return refusal
        bound = self._log.bind(message_sid=message.message_sid, account_sid=message.account_sid)
        try:
            result = await self._send(message, bound)
        except Exception as exc:  # never raise for carrier trouble; a bug here is logged loudly
            bound.exception("smpp provider failed unexpectedly")
            result = _temporary(UNKNOWN_ERROR, f"provider failed ({type(exc).__name__})")
        if result.accepted:
            bound.info("message accepted by SMSC", provider_message_id=result.provider_message_id, parts=len(result.ids))
        else:
            bound.warning("message refused by SMSC", error_code=result.error_code, reason=result.error_message, temporary=result.temporary)
        return result

    async def _send(self, message: OutboundMessage, bound: Any) -> SendResult:
        if self._closed:
            return _temporary(UNKNOWN_ERROR, f"provider {self.name!r} is closed")
        dest = message.to.removeprefix("+")
        if not _DIGITS.fullmatch(dest):
            return SendResult(False, error_code=UNKNOWN_DESTINATION, error_message="the destination is not a phone number SMPP can address")
        source = message.from_.removeprefix("+")
        alphanumeric = not _DIGITS.fullmatch(source)
        if alphanumeric:  # a sender name ("Acme"): TON alphanumeric, NPI unknown
            source = message.from_
        template = SubmitSm(
            source_addr_ton=5 if alphanumeric else self.config.source_ton,
            source_addr_npi=0 if alphanumeric else self.config.source_npi,
            source_addr=source,
            dest_addr_ton=self.config.dest_ton,
            dest_addr_npi=self.config.dest_npi,
            destination_addr=dest,
            registered_delivery=1,
        )
        try:
            submits = build_submits(message.body, template, ref=next(self._refs) % 256)
            for pdu in submits:
                pdu.encode()  # fail here, not halfway through the segments
        except (ContentError, SmppEncodeError) as exc:
            return SendResult(False, error_code=UNKNOWN_ERROR, error_message=f"the message cannot be sent over SMPP: {exc}")
        ids: list[str] = []
        for index, pdu in enumerate(submits, 1):
            outcome = await self._submit(pdu)
            if isinstance(outcome, SendResult):
                if ids:
                    bound.warning("smpp long message failed after some segments were accepted", accepted=len(ids), parts=len(submits))
                return outcome
            ids.append(outcome)
            bound.debug("smpp segment accepted", part=index, parts=len(submits), provider_message_id=outcome)
        return SendResult(True, provider_message_id=ids[0], status="sent", part_ids=tuple(ids))

    async def _submit(self, pdu: SubmitSm) -> str | SendResult:
        """One segment: its normalized message id, or the failure to return."""
        status: int = S.ESME_ROK
        for attempt in range(THROTTLE_ATTEMPTS):
            if self._session is None and await self._bound_session() is None:
                return _temporary(UNKNOWN_ERROR, f"not bound to the SMSC within {self.config.timeout:g} s ({self._last_error})")
            async with self._window:
                pause = self._paused_until - self._clock.monotonic()
                if pause > 0:
                    await self._clock.sleep(pause)
                session = self._session
                if session is None:
                    continue
                try:
                    resp = await session.request(pdu)
                except TimeoutError:
                    return _temporary(UNKNOWN_ERROR, f"no submit_sm_resp within {self.config.timeout:g} s")
                except ConnectionLost:
                    return _temporary(UNKNOWN_ERROR, "the SMPP connection was lost while waiting for submit_sm_resp")
                except MalformedResponse:
                    return SendResult(False, error_code=UNKNOWN_ERROR, error_message="the SMSC answered with a garbled submit_sm_resp; the message may or may not have been sent")
            status = resp.status
            if status == S.ESME_ROK:
                message_id = getattr(resp, "message_id", "")
                if not message_id.strip():
                    return SendResult(False, error_code=UNKNOWN_ERROR, error_message="the SMSC accepted the message without a message id")
                return self._remember(normalize_message_id(message_id, hex_ids=self.config.id_format != "text"))
            if status not in _THROTTLING:
                return _status_result(status)
            delay = self._throttle_delay * 2.0**attempt
            self._paused_until = max(self._paused_until, self._clock.monotonic() + delay)
            self._log.info("smpp throttled by the SMSC; pausing submits", status=status_name(status), delay=delay)
        return _temporary(QUEUE_OVERFLOW, f"the SMSC kept throttling ({status_name(status)})")

    def _remember(self, message_id: str) -> str:
        self._recent[message_id] = None
        if len(self._recent) > RECENT_IDS:
            del self._recent[next(iter(self._recent))]
        return message_id

    # -- receiving ----------------------------------------------------------------------

    async def _on_deliver(self, pdu: DeliverSm) -> int:
        """Handle one deliver_sm; the status its deliver_sm_resp carries."""
        try:
            if pdu.is_receipt:
                await self._on_receipt(pdu)
            else:
                await self._on_mo(pdu)
        except Exception:
            self._log.exception("smpp could not hand a deliver_sm to the pipeline")
            return S.ESME_RX_T_APPN
        return S.ESME_ROK

    def _receipt_id(self, pdu: DeliverSm, raw: str, normalized: str) -> str:
        tlv = pdu.tlv(Tag.RECEIPTED_MESSAGE_ID)
        if self.config.id_format != "auto" or (tlv and tlv.strip(b"\x00 ")) or not raw.strip().isdigit():
            return normalized  # the TLV is the submit id verbatim; a hex letter is unambiguous
        as_decimal = normalize_message_id(raw, hex_ids=True, decimal=True)
        as_hex_known, as_decimal_known = normalized in self._recent, as_decimal in self._recent
        if as_hex_known != as_decimal_known:
            self._decimal_receipts = as_decimal_known
        return as_decimal if self._decimal_receipts else normalized

    async def _on_receipt(self, pdu: DeliverSm) -> None:
        fmt = self.config.id_format
        try:
            receipt = parse_receipt(pdu, hex_ids=fmt != "text", decimal_receipt_ids=fmt == "decimal")
        except ReceiptError as exc:
            self._log.warning("smpp receipt dropped", reason=str(exc))
            return
        if receipt is None:
            return
        if receipt.state is None:
            self._log.warning("smpp receipt without a usable state dropped", stat=receipt.stat, raw_message_id=receipt.raw_message_id)
            return
        message_id = self._receipt_id(pdu, receipt.raw_message_id, receipt.message_id)
        status, code = receipt.status or "sent", RECEIPT_ERRORS.get(receipt.state)
        report = DeliveryReport(provider=self.name, provider_message_id=message_id, status=status, error_code=code, timestamp=self._clock.time())
        if self.events is None:
            self._log.warning("smpp receipt dropped: no events sink", provider_message_id=message_id, status=status)
            return
        self._log.info("smpp receipt", provider_message_id=message_id, status=status, stat=receipt.stat, err=receipt.error)
        await self.events.report(report)

    async def _on_mo(self, pdu: DeliverSm) -> None:
        try:
            body = self._mo.add(pdu, self._clock.monotonic())
        except (sms.UdhError, ContentError) as exc:
            self._log.warning("smpp inbound message dropped: unreadable content", reason=str(exc))
            return
        if body is None:
            return
        message = InboundMessage(provider=self.name, from_=_e164(pdu.source_addr, pdu.source_addr_ton), to=_e164(pdu.destination_addr, pdu.dest_addr_ton), body=body)
        if self.events is None:
            self._log.warning("smpp inbound message dropped: no events sink")
            return
        self._log.info("smpp inbound message", chars=len(body))
        await self.events.inbound(message)


def _e164(address: str, ton: int) -> str:
    return f"+{address}" if ton == 1 and address.isdigit() else address


def _temporary(code: int, message: str) -> SendResult:
    return SendResult(False, error_code=code, error_message=message, temporary=True)


def _status_result(status: int) -> SendResult:
    text = f"the SMSC refused the message ({status_name(status)})"
    if status in _TEMPORARY:
        return _temporary(UNKNOWN_ERROR, text)
    return SendResult(False, error_code=_PERMANENT_CODES.get(status, UNKNOWN_ERROR), error_message=text)

