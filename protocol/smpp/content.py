"""Message text <-> short_message octets, and long messages as concatenated submit_sm.

data_coding: 0x00 (the SMSC's default alphabet) for GSM-7 and 0x08 for UCS-2.
GSM-7 goes over SMPP *unpacked*, one septet per octet (an extension
character is the two octets 0x1B, code): the SMSC packs septets for the air
interface. That data_coding 0 means GSM-7 is the near-universal SMSC
default; a provider whose default alphabet is something else (Latin-1,
ASCII) needs its own setting in the adapter, not a guess here.

A long text is split by :func:`protocol.sms.split` (escape sequences and
surrogate pairs never straddle two segments) and every segment carries a
user data header with the concatenation element (esm_class UDHI bit 0x40).
UDH rather than the sar_* TLVs because every handset understands UDH while
SMSC support for the TLVs varies.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from protocol import sms
from protocol.smpp.pdu import ESM_UDHI, SubmitSm

DATA_CODING_DEFAULT: Final = 0x00
DATA_CODING_IA5: Final = 0x01
DATA_CODING_LATIN1: Final = 0x03
DATA_CODING_UCS2: Final = 0x08
MAX_SEGMENTS: Final = 255  # the concatenation element counts parts in one octet


class ContentError(ValueError):
    """Text that cannot be sent as asked, or octets that cannot be read as text."""


def encode_text(text: str) -> tuple[int, bytes]:
    """(data_coding, octets) for ``text`` in its cheapest encoding (no segmenting)."""
    if sms.is_gsm7(text):
        return DATA_CODING_DEFAULT, sms.gsm7_encode(text)
    return DATA_CODING_UCS2, sms.ucs2_encode(text)


def decode_text(data_coding: int, data: bytes) -> str:
    """The text of a short_message (without its user data header)."""
    try:
        if data_coding == DATA_CODING_DEFAULT or 0xF0 <= data_coding <= 0xF3:
            # 0xF0-0xF3: GSM 03.38 data coding group "message class, default alphabet".
            return sms.gsm7_decode(data)
        if data_coding == DATA_CODING_IA5:
            return data.decode("ascii")
        if data_coding == DATA_CODING_LATIN1:
            return data.decode("latin-1")
        if data_coding == DATA_CODING_UCS2:
            return sms.ucs2_decode(data)
    except (sms.SmsEncodingError, UnicodeDecodeError) as exc:
        raise ContentError(f"short_message is not valid for data_coding 0x{data_coding:02X}: {exc}") from None
    raise ContentError(f"data_coding 0x{data_coding:02X} is not a text encoding this codec reads")


def build_submits(text: str, template: SubmitSm, *, ref: int, ref16: bool = False) -> tuple[SubmitSm, ...]:
    """The submit_sm PDUs that send ``text``: one, or one per concatenated segment.

    ``template`` carries everything but the content (addresses,
    registered_delivery, validity, ...); its short_message and data_coding
    are replaced, and the UDHI bit is added to its esm_class when there is
    more than one segment. ``ref`` is the concatenation reference, the same
    in every segment of this message and different from other recent long
    messages to the same destination (0..255, or 0..65535 with ``ref16``).
    Sequence numbers are left to the stream.
    """
    parts = sms.split(text, ref16=ref16)
    if len(parts) > MAX_SEGMENTS:
        raise ContentError(
            f"text needs {len(parts)} segments; at most {MAX_SEGMENTS} can be concatenated"
        )
    data_coding, payload = encode_text(text)
    if len(parts) == 1:
        return (dataclasses.replace(template, data_coding=data_coding, short_message=payload),)
    encode = sms.gsm7_encode if data_coding == DATA_CODING_DEFAULT else sms.ucs2_encode
    total = len(parts)
    try:
        headers = [sms.udh_concat(ref, total, seq, ref16=ref16) for seq in range(1, total + 1)]
    except sms.UdhError as exc:
        raise ContentError(str(exc)) from None
    return tuple(
        dataclasses.replace(
            template,
            esm_class=template.esm_class | ESM_UDHI,
            data_coding=data_coding,
            short_message=header + encode(part),
        )
        for header, part in zip(headers, parts, strict=True)
    )
