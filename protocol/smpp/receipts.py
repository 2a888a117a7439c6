"""Delivery receipts: what a deliver_sm with a receipt says about a message we sent.

Two sources, and the TLVs win when both are there because they are typed and
the text is free-form:

* the receipted_message_id (0x001E) and message_state (0x0427) TLVs (SMPP
  3.4 section 5.3.2), plus network_error_code (0x0423);
* the receipt text in short_message, SMPP 3.4 appendix B, which is only a
  convention: ``id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm
  done date:YYMMDDhhmm stat:DDDDDDD err:E text: ...``. SMSCs vary the case
  of the keys, leave fields out, write ``submit_date``, add seconds to the
  dates, and render the id in hex or decimal - the parser takes all of it.

Message ids and :func:`normalize_message_id`: the id a receipt names must be
matched to the id submit_sm_resp returned. Many SMSCs use one opaque string
for both (the default: ids are compared as they are, trimmed). Some allocate
numeric ids and return them in hex in submit_sm_resp ("1A2B", "0x1a2b",
"00001a2b") but print the *decimal* form ("6699") in the receipt text.
Configure such a provider with ``hex_ids=True`` (and
``decimal_receipt_ids=True`` when its receipt text is decimal): every form
then normalizes to lowercase hex without prefix or leading zeros ("1a2b").
A digits-only id is ambiguous ("6699" is valid hex too), which is why the
caller says which field it came from instead of this module guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from protocol.sms import SmsEncodingError, ucs2_decode
from protocol.smpp.pdu import DeliverSm, MessageState, Tag

ReceiptStatus = Literal["delivered", "undelivered", "failed", "sent"]


class ReceiptError(ValueError):
    """A deliver_sm that claims to be a receipt but cannot be used as one."""


# -- message ids -------------------------------------------------------------------

_HEX_RE: Final = re.compile(r"[0-9a-fA-F]+")


def normalize_message_id(message_id: str, *, hex_ids: bool = False, decimal: bool = False) -> str:
    """The canonical form of a message id, to match receipts to submissions.

    ``hex_ids=False``: ids are opaque; only surrounding whitespace and NULs go.
    ``hex_ids=True``: ids are hex numbers; "0x1a2b", "1A2B" and "00001a2b"
    all give "1a2b". ``decimal=True`` says this particular id was written in
    decimal (a receipt text of a provider whose receipts are decimal), so
    "6699" also gives "1a2b"; an id with a 0x prefix or a hex letter is read
    as hex whatever ``decimal`` says. An id that is not a number in the
    expected base stays opaque rather than failing: a receipt we cannot
    match is logged by the caller, not an exception here.
    """
    value = message_id.strip().strip("\x00").strip()
    if not hex_ids or not value:
        return value
    prefixed = value[:2] in ("0x", "0X")
    digits = value[2:] if prefixed else value
    if not _HEX_RE.fullmatch(digits):
        return value
    base = 10 if decimal and not prefixed and digits.isdigit() else 16
    return format(int(digits, base), "x")


# -- the receipt text --------------------------------------------------------------

# Keys, case-insensitive, with the spellings seen in the field. "text" must
# come last in the text: everything after it is the start of the message.
_KEY_RE: Final = re.compile(
    r"(?<![A-Za-z0-9_])(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat|err|text)\s*:",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ReceiptText:
    """The fields of a receipt text, as written (None when absent)."""

    id: str | None = None
    sub: str | None = None
    dlvrd: str | None = None
    submit_date: str | None = None
    done_date: str | None = None
    stat: str | None = None
    err: str | None = None
    text: str | None = None


def parse_receipt_text(text: str) -> ReceiptText:
    """Parse the appendix B receipt text; unknown words are skipped, nothing raises."""
    fields: dict[str, str] = {}
    matches = list(_KEY_RE.finditer(text))
    for i, m in enumerate(matches):
        key = re.sub(r"[ _]", "", m.group(1).lower())
        key = {"submitdate": "submit_date", "donedate": "done_date"}.get(key, key)
        if key == "text":
            fields.setdefault("text", text[m.end() :].strip())
            break
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = text[m.end() : end].strip()
        # The value is the first word: some SMSCs put other words in between.
        fields.setdefault(key, value.split()[0] if value else "")
    return ReceiptText(**fields)


def _parse_date(value: str | None) -> datetime | None:
    """YYMMDDhhmm or YYMMDDhhmmss, in the SMSC's (unstated) time zone, so naive."""
    if not value or not value.isdigit() or len(value) not in (10, 12):
        return None
    try:
        return datetime(
            2000 + int(value[0:2]),
            int(value[2:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[8:10]),
            int(value[10:12]) if len(value) == 12 else 0,
        )
    except ValueError:
        return None


def _parse_int(value: str | None) -> int | None:
    # isascii too: str.isdigit() is true for "¹" and other digits int() refuses (found by tests/fuzz).
    return int(value) if value and value.isascii() and value.isdigit() else None


# -- states ------------------------------------------------------------------------

# stat word (and the long forms some SMSCs write) -> message state.
_STAT_WORDS: Final[dict[str, MessageState]] = {
    "ENROUTE": MessageState.ENROUTE,
    "DELIVRD": MessageState.DELIVERED,
    "DELIVERED": MessageState.DELIVERED,
    "EXPIRED": MessageState.EXPIRED,
    "DELETED": MessageState.DELETED,
    "UNDELIV": MessageState.UNDELIVERABLE,
    "UNDELIVERABLE": MessageState.UNDELIVERABLE,
    "ACCEPTD": MessageState.ACCEPTED,
    "ACCEPTED": MessageState.ACCEPTED,
    "UNKNOWN": MessageState.UNKNOWN,
    "REJECTD": MessageState.REJECTED,
    "REJECTED": MessageState.REJECTED,
}

# message state -> what the messaging pipeline reports, and whether more
# receipts may follow. "failed" is kept for REJECTD: the network refused the
# message, it never started towards the handset. Expired, deleted, unknown
# and undeliverable messages did start and did not arrive: "undelivered".
# ACCEPTD (read by the operator's staff on the subscriber's behalf) is final
# in SMPP but is no proof of delivery, hence "sent".
STATE_STATUS: Final[dict[MessageState, tuple[ReceiptStatus, bool]]] = {
    MessageState.ENROUTE: ("sent", False),
    MessageState.DELIVERED: ("delivered", True),
    MessageState.EXPIRED: ("undelivered", True),
    MessageState.DELETED: ("undelivered", True),
    MessageState.UNDELIVERABLE: ("undelivered", True),
    MessageState.ACCEPTED: ("sent", True),
    MessageState.UNKNOWN: ("undelivered", True),
    MessageState.REJECTED: ("failed", True),
}


@dataclass(frozen=True)
class DeliveryReceipt:
    message_id: str  # normalized (see normalize_message_id)
    raw_message_id: str  # as the receipt wrote it
    state: MessageState | None  # None: no usable stat and no message_state TLV
    status: ReceiptStatus | None
    final: bool
    stat: str | None = None  # the stat word of the text, as written
    error: str | None = None  # the err field of the text
    network_error: tuple[int, int] | None = None  # (network type, error code) from the TLV
    submitted: int | None = None
    delivered: int | None = None
    submit_date: datetime | None = None
    done_date: datetime | None = None
    text: str | None = None


def receipt_text_of(pdu: DeliverSm) -> str:
    """The receipt text: ASCII in practice, UCS-2 only when data_coding says so."""
    payload = pdu.payload
    if pdu.data_coding == 0x08:
        try:
            return ucs2_decode(payload)
        except SmsEncodingError:
            pass
    # Latin-1 never fails and leaves the ASCII of the keys and values intact.
    return payload.decode("latin-1")


def parse_receipt(
    pdu: DeliverSm,
    *,
    hex_ids: bool = False,
    decimal_receipt_ids: bool = False,
) -> DeliveryReceipt | None:
    """The receipt ``pdu`` carries; None when it is a mobile-originated message.

    Raises ReceiptError for a receipt that names no message.
    """
    if not pdu.is_receipt:
        return None
    fields = parse_receipt_text(receipt_text_of(pdu))

    raw_tlv_id = pdu.tlv(Tag.RECEIPTED_MESSAGE_ID)
    if raw_tlv_id is not None and raw_tlv_id.strip(b"\x00 "):
        # The TLV carries the id exactly as submit_sm_resp returned it.
        raw_id = raw_tlv_id.split(b"\x00", 1)[0].decode("latin-1")
        message_id = normalize_message_id(raw_id, hex_ids=hex_ids)
    elif fields.id:
        raw_id = fields.id
        message_id = normalize_message_id(raw_id, hex_ids=hex_ids, decimal=decimal_receipt_ids)
    else:
        raise ReceiptError("delivery receipt names no message: no receipted_message_id TLV and no id: field")

    state = _tlv_state(pdu)
    if state is None and fields.stat:
        state = _STAT_WORDS.get(fields.stat.upper())
    status, final = STATE_STATUS[state] if state is not None else (None, False)

    return DeliveryReceipt(
        message_id=message_id,
        raw_message_id=raw_id,
        state=state,
        status=status,
        final=final,
        stat=fields.stat,
        error=fields.err,
        network_error=_tlv_network_error(pdu),
        submitted=_parse_int(fields.sub),
        delivered=_parse_int(fields.dlvrd),
        submit_date=_parse_date(fields.submit_date),
        done_date=_parse_date(fields.done_date),
        text=fields.text,
    )


def _tlv_state(pdu: DeliverSm) -> MessageState | None:
    value = pdu.tlv(Tag.MESSAGE_STATE)
    if value is None or len(value) != 1:
        return None
    try:
        return MessageState(value[0])
    except ValueError:
        return None  # out of range: fall back to the text


def _tlv_network_error(pdu: DeliverSm) -> tuple[int, int] | None:
    value = pdu.tlv(Tag.NETWORK_ERROR_CODE)
    if value is None or len(value) != 3:
        return None
    return value[0], int.from_bytes(value[1:3], "big")
