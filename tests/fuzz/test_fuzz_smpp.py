"""SMPP 3.4 PDUs: random lengths and fields, receipts, concatenated MO (tests/fuzz/targets.py)."""

from __future__ import annotations

import struct

from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol import sms
from protocol.smpp.pdu import (
    ESM_TYPE_DELIVERY_RECEIPT,
    ESM_UDHI,
    BindTransceiver,
    BindTransceiverResp,
    CommandId,
    CommandStatus,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Tag,
    Unbind,
    UnbindResp,
    decode_pdu,
)
from tests.fuzz.targets import Refused, decode_one_pdu, feed_smpp


def examples(n: int) -> settings:
    """The suite's ``fuzz`` profile (conftest.py) with this test's share of the time budget."""
    return settings(settings.get_profile("fuzz"), max_examples=n)


def cstrings(max_chars: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127), max_size=max_chars)


octet = st.integers(0, 255)
seq = st.integers(0, 0x7FFFFFFF)
status = st.sampled_from(list(CommandStatus)) | st.integers(0, 0xFFFFFFFF)
tlv_tags = st.sampled_from(list(Tag)) | st.integers(0, 0xFFFF)
tlvs = st.lists(st.tuples(tlv_tags, st.binary(max_size=40)), max_size=4).map(tuple)
times = st.just("") | st.text(alphabet="0123456789+-R", min_size=16, max_size=16)


def short_messages(cls: type[SubmitSm] | type[DeliverSm]) -> st.SearchStrategy[Pdu]:
    return st.builds(
        cls, sequence_number=seq, service_type=cstrings(5), source_addr_ton=octet, source_addr_npi=octet, source_addr=cstrings(20),
        dest_addr_ton=octet, dest_addr_npi=octet, destination_addr=cstrings(20), esm_class=octet, protocol_id=octet,
        priority_flag=octet, schedule_delivery_time=times, validity_period=times, registered_delivery=octet,
        replace_if_present_flag=octet, data_coding=octet, sm_default_msg_id=octet, short_message=st.binary(max_size=254),
        tlvs=tlvs.filter(lambda t: all(tag != Tag.MESSAGE_PAYLOAD for tag, _ in t)),
    )


pdus = st.one_of(
    short_messages(SubmitSm), short_messages(DeliverSm),
    st.builds(BindTransceiver, sequence_number=seq, system_id=cstrings(15), password=cstrings(8), system_type=cstrings(12),
              interface_version=octet, addr_ton=octet, addr_npi=octet, address_range=cstrings(40)),
    st.builds(BindTransceiverResp, sequence_number=seq, command_status=status, system_id=cstrings(15), tlvs=tlvs),
    st.builds(SubmitSmResp, sequence_number=seq, command_status=status, message_id=cstrings(64)),
    st.builds(DeliverSmResp, sequence_number=seq, command_status=status, message_id=cstrings(64)),
    *(st.builds(cls, sequence_number=seq) for cls in (EnquireLink, Unbind)),
    *(st.builds(cls, sequence_number=seq, command_status=status) for cls in (EnquireLinkResp, UnbindResp, GenericNack)),
)


@examples(300)
@given(pdus)
def test_every_pdu_round_trips(pdu: Pdu) -> None:
    assert decode_pdu(pdu.encode()) == pdu


@examples(150)
@given(st.lists(pdus, min_size=1, max_size=4), st.integers(1, 40))
def test_how_the_socket_splits_the_stream_does_not_matter(batch: list[Pdu], step: int) -> None:
    data = b"".join(p.encode() for p in batch)
    whole = feed_smpp([data])
    assert feed_smpp([data[i : i + step] for i in range(0, len(data), step)]) == whole
    assert len(whole) == len(batch)


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    """Valid PDUs with a length, a field or a few bytes changed, cut or spliced."""
    data = bytearray(b"".join(p.encode() for p in draw(st.lists(pdus, min_size=1, max_size=3))))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["length", "command", "flip", "cut", "insert"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "length" and len(data) >= 4:
            struct.pack_into(">I", data, 0, draw(st.sampled_from([0, 1, 15, 16, 17, len(data) - 1, len(data) + 1, 65536, 65537, 0xFFFFFFFF]) | st.integers(0, 0xFFFFFFFF)))
        elif kind == "command" and len(data) >= 8:
            struct.pack_into(">I", data, 4, draw(st.sampled_from(list(CommandId)) | st.integers(0, 0xFFFFFFFF)))
        elif kind == "flip" and data:
            data[at] = draw(octet)
        elif kind == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@examples(400)
@given(mutated_streams(), st.integers(0, 30))
def test_mutated_pdus_are_decoded_or_answered(data: bytes, step: int) -> None:
    feed_smpp([data] if step == 0 else [data[i : i + step] for i in range(0, len(data), step)])
    decode_one_pdu(data)


@examples(200)
@given(st.binary(max_size=300))
@example(b"\x00\x00\x00\x10\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x01")  # deliver_sm without a body
@example(b"\x00\x00\x00\x0f" + b"\x00" * 12)  # command_length below the header
@example(b"\xff\xff\xff\xff" + b"\x00" * 12)
def test_raw_bytes_are_decoded_or_answered(data: bytes) -> None:
    feed_smpp([data])
    assert isinstance(decode_one_pdu(data), (Refused, *pdus_types()))


def pdus_types() -> tuple[type, ...]:
    return (SubmitSm, DeliverSm, BindTransceiver, BindTransceiverResp, SubmitSmResp, DeliverSmResp, EnquireLink, Unbind, EnquireLinkResp, UnbindResp, GenericNack)


# -- what the adapter does with a deliver_sm: receipts and (concatenated) MO messages --------

receipt_words = st.sampled_from(["id:", "ID:", "sub:", "dlvrd:", "submit date:", "submit_date:", "done date:", "stat:", "err:",
                                 "text:", "0x1a2b", "1A2B", "6699", "DELIVRD", "UNDELIV", "REJECTD", "2601011200", "260101120000",
                                 "9913321299", "001", "abc", " ", ""])
receipt_texts = st.lists(receipt_words | st.text(max_size=8), max_size=16).map(" ".join)


@examples(250)
@given(
    receipt_texts, st.sampled_from([0, 1, 3, 8]) | octet,
    st.lists(st.tuples(st.sampled_from([Tag.RECEIPTED_MESSAGE_ID, Tag.MESSAGE_STATE, Tag.NETWORK_ERROR_CODE]),
                       st.binary(max_size=12)), max_size=3).map(tuple),
    st.booleans(),
)
@example("id:1a2b sub:\u00b9 dlvrd:\u00b2 stat:DELIVRD", 0, (), False)  # Latin-1 superscripts: isdigit() but not int()
def test_delivery_receipts_parse_or_are_refused(text: str, data_coding: int, receipt_tlvs: tuple, as_payload: bool) -> None:
    body = text.encode("utf-16-be" if data_coding == 8 else "latin-1", "replace")[:254]
    pdu = DeliverSm(sequence_number=1, esm_class=ESM_TYPE_DELIVERY_RECEIPT, data_coding=data_coding,
                    short_message=b"" if as_payload else body, tlvs=receipt_tlvs + (((Tag.MESSAGE_PAYLOAD, body),) if as_payload else ()))
    feed_smpp([pdu.encode()])


@st.composite
def user_data_headers(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        ref16 = draw(st.booleans())
        total = draw(st.integers(0, 4))
        sequence = draw(st.integers(0, 5))
        iei, body = (0x08, bytes((draw(octet), draw(octet), total, sequence))) if ref16 else (0x00, bytes((draw(octet), total, sequence)))
        elements = bytes((iei, len(body))) + body
    else:
        elements = draw(st.binary(max_size=12))
    length = draw(st.just(len(elements)) | octet)
    return bytes((length,)) + elements


@examples(250)
@given(
    st.lists(st.tuples(user_data_headers() | st.just(b""), st.binary(max_size=30)), min_size=1, max_size=5),
    st.sampled_from([0, 1, 3, 8, 0xF0]) | octet,
    st.booleans(),
)
def test_mobile_originated_parts_are_reassembled_or_refused(parts: list[tuple[bytes, bytes]], data_coding: int, sar: bool) -> None:
    pdus = []
    for i, (udh, payload) in enumerate(parts):
        if sar:  # the sar_* TLVs instead of a user data header
            extra = ((Tag.SAR_MSG_REF_NUM, b"\x00\x07"), (Tag.SAR_TOTAL_SEGMENTS, bytes((len(parts),))), (Tag.SAR_SEGMENT_SEQNUM, bytes((i,))))
            pdus.append(DeliverSm(sequence_number=i + 1, data_coding=data_coding, short_message=payload, tlvs=extra))
        else:
            pdus.append(DeliverSm(sequence_number=i + 1, esm_class=ESM_UDHI if udh else 0, data_coding=data_coding, short_message=(udh + payload)[:254]))
    feed_smpp([b"".join(p.encode() for p in pdus)])


def test_concatenated_gsm7_message_is_reassembled_in_any_order() -> None:
    text = "hello " * 40
    parts = sms.split(text)
    pdus = [DeliverSm(sequence_number=i, esm_class=ESM_UDHI, short_message=sms.udh_concat(9, len(parts), i) + sms.gsm7_encode(part))
            for i, part in enumerate(parts, start=1)]
    outcomes = feed_smpp([b"".join(p.encode() for p in reversed(pdus))])
    assert outcomes == ["accepted"] * len(parts)
