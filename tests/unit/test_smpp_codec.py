"""protocol/smpp: PDU codec, stream framing, delivery receipts, long messages."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import sms
from protocol.smpp.content import (
    DATA_CODING_UCS2,
    ContentError,
    build_submits,
    decode_text,
    encode_text,
)
from protocol.smpp.pdu import (
    PDU_CLASSES,
    BindTransceiver,
    BindTransceiverResp,
    CommandId,
    CommandStatus,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    MessageState,
    Pdu,
    SmppDecodeError,
    SmppEncodeError,
    SubmitSm,
    SubmitSmResp,
    Tag,
    Unbind,
    UnbindResp,
    UnknownCommandError,
    decode_header,
    decode_pdu,
    response_for,
    status_name,
)
from protocol.smpp.receipts import (
    ReceiptError,
    normalize_message_id,
    parse_receipt,
    parse_receipt_text,
)
from protocol.smpp.stream import (
    MalformedPdu,
    PduStream,
    StreamError,
    UnknownCommand,
)

# -- known vectors -------------------------------------------------------------------

ENQUIRE_LINK_1 = bytes.fromhex("00000010 00000015 00000000 00000001")

# bind_transceiver: system_id "test", password "secret", system_type "",
# interface_version 0x34, addr_ton 0, addr_npi 0, address_range "", sequence 2.
BIND_TRX = bytes.fromhex(
    "00000021 00000009 00000000 00000002"  # header: 33 octets, bind_transceiver, OK, seq 2
    "7465737400"  # system_id "test\0"
    "73656372657400"  # password "secret\0"
    "00"  # system_type ""
    "34 00 00"  # interface_version, addr_ton, addr_npi
    "00"  # address_range ""
)

# A deliver_sm captured from another SMPP implementation (Latin-1 text, data_coding 3).
DELIVER_SM_CAPTURED = bytes.fromhex(
    "0000004d00000005000000009f88f12441575342440001013136353035353531323334000101313737"
    "333535353430373000000000000000000300117468657265206973206e6f2073706f6f6e"
)


def test_enquire_link_vector() -> None:
    assert EnquireLink(sequence_number=1).encode() == ENQUIRE_LINK_1
    assert decode_pdu(ENQUIRE_LINK_1) == EnquireLink(sequence_number=1)
    assert EnquireLink(sequence_number=1).response().encode() == bytes.fromhex("00000010 80000015 00000000 00000001")


def test_bind_transceiver_vector() -> None:
    pdu = BindTransceiver(sequence_number=2, system_id="test", password="secret")
    assert pdu.encode() == BIND_TRX
    assert decode_pdu(BIND_TRX) == pdu
    assert BindTransceiver.decode(BIND_TRX) == pdu


def test_bind_transceiver_repr_hides_password() -> None:
    assert "secret" not in repr(BindTransceiver(system_id="test", password="secret"))


def test_bind_transceiver_resp_with_interface_version_tlv() -> None:
    data = bytes.fromhex("00000025 80000009 00000000 7737D140") + b"Rome is the cap\x00" + bytes.fromhex("0210 0001 34")
    pdu = decode_pdu(data)
    assert pdu == BindTransceiverResp(
        sequence_number=2000146752, system_id="Rome is the cap", tlvs=((Tag.SC_INTERFACE_VERSION, b"\x34"),)
    )
    assert pdu.encode() == data


def test_bind_refused_with_bare_header() -> None:
    data = bytes.fromhex("00000010 80000009 0000000E 00000001")
    pdu = decode_pdu(data)
    assert pdu == BindTransceiverResp(sequence_number=1, command_status=CommandStatus.ESME_RINVPASWD)
    assert isinstance(pdu, BindTransceiverResp) and not pdu.ok


def test_deliver_sm_captured_vector() -> None:
    pdu = decode_pdu(DELIVER_SM_CAPTURED)
    assert isinstance(pdu, DeliverSm)
    assert pdu.sequence_number == 0x9F88F124
    assert (pdu.service_type, pdu.source_addr, pdu.destination_addr) == ("AWSBD", "16505551234", "17735554070")
    assert (pdu.source_addr_ton, pdu.source_addr_npi, pdu.dest_addr_ton, pdu.dest_addr_npi) == (1, 1, 1, 1)
    assert pdu.data_coding == 3
    assert decode_text(pdu.data_coding, pdu.short_message) == "there is no spoon"
    assert not pdu.is_receipt
    assert pdu.encode() == DELIVER_SM_CAPTURED


def test_generic_nack_vector() -> None:
    data = bytes.fromhex("00000010 80000000 00000003 00000007")
    assert decode_pdu(data) == GenericNack(sequence_number=7, command_status=CommandStatus.ESME_RINVCMDID)
    assert GenericNack(sequence_number=7, command_status=3).encode() == data


def test_submit_sm_resp_forms() -> None:
    ok = bytes.fromhex("00000019 80000004 00000000 00000005") + b"abc123ef\x00"
    assert decode_pdu(ok) == SubmitSmResp(sequence_number=5, message_id="abc123ef")
    # Error responses may omit the body.
    throttled = bytes.fromhex("00000010 80000004 00000058 00000006")
    resp = decode_pdu(throttled)
    assert resp == SubmitSmResp(sequence_number=6, command_status=CommandStatus.ESME_RTHROTTLED)
    assert status_name(resp.command_status) == "ESME_RTHROTTLED"


def test_submit_sm_known_layout() -> None:
    pdu = SubmitSm(
        sequence_number=3,
        source_addr_ton=5,
        source_addr="Acme",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="15551234567",
        registered_delivery=1,
        short_message=b"hi",
        tlvs=((Tag.USER_MESSAGE_REFERENCE, b"\x00\x07"),),
    )
    body = (
        b"\x00"  # service_type
        + b"\x05\x00Acme\x00"
        + b"\x01\x0115551234567\x00"
        + b"\x00\x00\x00"  # esm_class, protocol_id, priority_flag
        + b"\x00\x00"  # schedule_delivery_time, validity_period
        + b"\x01\x00\x00\x00"  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
        + b"\x02hi"
        + bytes.fromhex("0204 0002 0007")
    )
    expected = (16 + len(body)).to_bytes(4, "big") + bytes.fromhex("00000004 00000000 00000003") + body
    assert pdu.encode() == expected
    assert decode_pdu(expected) == pdu


def test_command_ids_and_statuses() -> None:
    assert int(CommandId.ENQUIRE_LINK) == 0x15
    assert int(CommandId.GENERIC_NACK) == 0x80000000
    assert int(CommandStatus.ESME_RTHROTTLED) == 0x58
    assert int(CommandStatus.ESME_RMSGQFUL) == 0x14
    assert int(CommandStatus.ESME_RINVMSGLEN) == 0x01
    assert int(CommandStatus.ESME_RSYSERR) == 0x08
    assert int(CommandStatus.ESME_RINVCMDID) == 0x03
    assert status_name(0x0401) == "0x00000401"  # vendor-specific codes survive
    assert set(PDU_CLASSES) == set(CommandId)


def test_responses_echo_the_sequence_number() -> None:
    assert SubmitSm(sequence_number=9).response(message_id="m1") == SubmitSmResp(sequence_number=9, message_id="m1")
    assert DeliverSm(sequence_number=4).response() == DeliverSmResp(sequence_number=4)
    assert Unbind(sequence_number=2).response() == UnbindResp(sequence_number=2)
    assert response_for(CommandId.SUBMIT_SM, 8, CommandStatus.ESME_RSYSERR) == SubmitSmResp(
        sequence_number=8, command_status=CommandStatus.ESME_RSYSERR
    )
    assert response_for(CommandId.SUBMIT_SM_RESP, 8, 0) is None


# -- encode errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pdu", "message"),
    [
        (BindTransceiver(system_id="x" * 16, password=""), "system_id is 16 characters; at most 15"),
        (BindTransceiver(system_id="a", password="123456789"), "password is 9 characters; at most 8"),
        (BindTransceiver(system_id="é", password=""), "system_id must be ASCII"),
        (BindTransceiver(system_id="a\x00b", password=""), "must not contain NUL"),
        (BindTransceiver(system_id="a", password="", addr_ton=256), "addr_ton must be 0..255"),
        (SubmitSm(short_message=b"x" * 255), "short_message is 255 octets; at most 254"),
        (SubmitSm(destination_addr="1" * 21), "destination_addr is 21 characters; at most 20"),
        (SubmitSm(validity_period="000001"), "validity_period must be empty or 16 characters"),
        (
            SubmitSm(short_message=b"x", tlvs=((Tag.MESSAGE_PAYLOAD, b"y"),)),
            "must not both carry the message",
        ),
        (SubmitSm(tlvs=((0x10000, b""),)), "TLV tag must be 0..0xFFFF"),
        (SubmitSm(tlvs=((0x1400, b"x" * 65536),)), "at most 65535"),
        (EnquireLink(sequence_number=-1), "sequence_number must be"),
        (SubmitSmResp(command_status=1 << 32), "command_status must be"),
        (SubmitSmResp(message_id="m" * 65), "message_id is 65 characters; at most 64"),
    ],
)
def test_encode_errors(pdu: Pdu, message: str) -> None:
    with pytest.raises(SmppEncodeError, match=message):
        pdu.encode()


# -- decode errors ---------------------------------------------------------------------


def _frame(command_id: int, body: bytes, seq: int = 1, status: int = 0) -> bytes:
    return (16 + len(body)).to_bytes(4, "big") + command_id.to_bytes(4, "big") + status.to_bytes(
        4, "big"
    ) + seq.to_bytes(4, "big") + body


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"\x00\x00\x00\x10\x00\x00", CommandStatus.ESME_RINVCMDLEN, "header needs 16 octets, got 6"),
        (ENQUIRE_LINK_1 + b"\x00", CommandStatus.ESME_RINVCMDLEN, "command_length says 16 octets, the PDU has 17"),
        (_frame(CommandId.ENQUIRE_LINK, b"\x00\x00\x00\x00"), CommandStatus.ESME_RINVCMDLEN, "4 unexpected octet"),
        (_frame(CommandId.BIND_TRANSCEIVER, b"test"), CommandStatus.ESME_RINVCMDLEN, "system_id at offset 0 has no NUL"),
        (
            _frame(CommandId.BIND_TRANSCEIVER, b"a\x00b\x00\x00"),
            CommandStatus.ESME_RINVCMDLEN,
            "before interface_version",
        ),
        (
            _frame(CommandId.SUBMIT_SM, b"\x00\x00\x00a\x00\x00\x00b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0ahi"),
            CommandStatus.ESME_RINVMSGLEN,
            "sm_length declares 10 octet",
        ),
        (
            _frame(CommandId.SUBMIT_SM, b"\x00\x00\x00a\x00\x00\x00b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x04"),
            CommandStatus.ESME_RINVOPTPARSTREAM,
            "too short for a TLV header",
        ),
        (
            _frame(CommandId.DELIVER_SM, b"\x00\x00\x00a\x00\x00\x00b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x04\x27\x00\x05\x01"),
            CommandStatus.ESME_RINVOPTPARSTREAM,
            "TLV 0x0427 declares 5 octet",
        ),
    ],
)
def test_decode_errors(data: bytes, status: CommandStatus, message: str) -> None:
    with pytest.raises(SmppDecodeError, match=message) as info:
        decode_pdu(data)
    assert info.value.status == status


def test_decode_unknown_command() -> None:
    with pytest.raises(UnknownCommandError) as info:
        decode_pdu(_frame(0x00000103, b"", seq=77))  # data_sm: not implemented
    assert info.value.status == CommandStatus.ESME_RINVCMDID
    assert (info.value.command_id, info.value.sequence_number) == (0x103, 77)


def test_class_decode_checks_the_command_id() -> None:
    with pytest.raises(SmppDecodeError, match="expected submit_sm"):
        SubmitSm.decode(ENQUIRE_LINK_1)


def test_decode_is_lenient_where_smscs_are_sloppy() -> None:
    # Overlong C-string and a non-zero status on a request both decode.
    long_id = "s" * 30
    bind = _frame(CommandId.BIND_TRANSCEIVER, long_id.encode() + b"\x00p\x00\x00\x34\x00\x00\x00", status=5)
    pdu = decode_pdu(bind)
    assert isinstance(pdu, BindTransceiver) and pdu.system_id == long_id
    # submit_sm_resp with trailing TLVs: the TLVs are read and dropped.
    resp = decode_pdu(_frame(CommandId.SUBMIT_SM_RESP, b"id1\x00" + bytes.fromhex("0425 0001 01")))
    assert resp == SubmitSmResp(sequence_number=1, message_id="id1")


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_decode_random_bytes_raises_only_decode_errors(data: bytes) -> None:
    try:
        decode_pdu(data)
    except SmppDecodeError:
        pass


@given(st.sampled_from(sorted(PDU_CLASSES)), st.binary(max_size=200), st.integers(0, 0xFFFFFFFF))
@settings(max_examples=500)
def test_decode_random_bodies_raises_only_decode_errors(command_id: int, body: bytes, seq: int) -> None:
    try:
        pdu = decode_pdu(_frame(command_id, body, seq=seq))
    except SmppDecodeError as exc:
        assert exc.sequence_number == seq
        assert exc.command_id == command_id
    else:
        assert pdu.sequence_number == seq


# -- round trips ---------------------------------------------------------------------------

seqs = st.integers(0, 0x7FFFFFFF)
octet = st.integers(0, 255)
statuses = st.one_of(st.sampled_from(list(CommandStatus)), st.integers(0, 0xFFFFFFFF))
printable = "".join(chr(c) for c in range(0x20, 0x7F))


def cstr(max_chars: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=printable, max_size=max_chars)


time_field = st.one_of(st.just(""), st.text(alphabet="0123456789", min_size=12, max_size=12).map(lambda s: s + "000+"))
tlvs = st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=4).map(tuple)


def short_message_pdus(cls: type[SubmitSm] | type[DeliverSm]) -> st.SearchStrategy[SubmitSm | DeliverSm]:
    return st.builds(
        cls,
        sequence_number=seqs,
        service_type=cstr(5),
        source_addr_ton=octet,
        source_addr_npi=octet,
        source_addr=cstr(20),
        dest_addr_ton=octet,
        dest_addr_npi=octet,
        destination_addr=cstr(20),
        esm_class=octet,
        protocol_id=octet,
        priority_flag=octet,
        schedule_delivery_time=time_field,
        validity_period=time_field,
        registered_delivery=octet,
        replace_if_present_flag=octet,
        data_coding=octet,
        sm_default_msg_id=octet,
        short_message=st.binary(max_size=254),
        tlvs=tlvs.map(lambda ts: tuple(t for t in ts if t[0] != Tag.MESSAGE_PAYLOAD)),
    )


any_pdu: st.SearchStrategy[Pdu] = st.one_of(
    st.builds(
        BindTransceiver,
        sequence_number=seqs,
        system_id=cstr(15),
        password=cstr(8),
        system_type=cstr(12),
        interface_version=octet,
        addr_ton=octet,
        addr_npi=octet,
        address_range=cstr(40),
    ),
    st.builds(
        BindTransceiverResp,
        sequence_number=seqs,
        command_status=statuses,
        system_id=cstr(15),
        tlvs=tlvs,
    ),
    st.builds(Unbind, sequence_number=seqs),
    st.builds(UnbindResp, sequence_number=seqs, command_status=statuses),
    st.builds(EnquireLink, sequence_number=seqs),
    st.builds(EnquireLinkResp, sequence_number=seqs, command_status=statuses),
    st.builds(GenericNack, sequence_number=seqs, command_status=statuses),
    st.builds(SubmitSmResp, sequence_number=seqs, command_status=statuses, message_id=cstr(64)),
    st.builds(DeliverSmResp, sequence_number=seqs, command_status=statuses, message_id=cstr(64)),
    short_message_pdus(SubmitSm),
    short_message_pdus(DeliverSm),
)


@given(any_pdu)
@settings(max_examples=500)
def test_encode_decode_round_trip(pdu: Pdu) -> None:
    data = pdu.encode()
    header = decode_header(data)
    assert header.command_length == len(data)
    assert header.command_id == pdu.command_id
    assert header.sequence_number == pdu.sequence_number
    assert decode_pdu(data) == pdu
    assert type(pdu).decode(data) == pdu


# -- the stream ------------------------------------------------------------------------------


def _pdus_strategy() -> st.SearchStrategy[list[Pdu]]:
    return st.lists(any_pdu, min_size=1, max_size=6)


@given(_pdus_strategy(), st.data())
@settings(max_examples=300)
def test_stream_arbitrary_chunking(pdus: list[Pdu], data: st.DataObject) -> None:
    wire = b"".join(p.encode() for p in pdus)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    stream = PduStream()
    events: list[object] = []
    start = 0
    for cut in [*cuts, len(wire)]:
        stream.receive_data(wire[start:cut])
        events.extend(stream.events())
        start = cut
    assert events == pdus
    assert stream.buffered == 0


def test_stream_byte_by_byte_and_many_in_one_chunk() -> None:
    pdus: list[Pdu] = [EnquireLink(sequence_number=1), BindTransceiver(sequence_number=2, system_id="a", password="b")]
    wire = b"".join(p.encode() for p in pdus)
    stream = PduStream()
    seen = []
    for i in range(len(wire)):
        stream.receive_data(wire[i : i + 1])
        seen.extend(stream.events())
    assert seen == pdus
    stream.receive_data(wire * 3)
    assert stream.events() == pdus * 3


def test_stream_partial_pdu_stays_buffered() -> None:
    stream = PduStream()
    stream.receive_data(BIND_TRX[:20])
    assert stream.events() == []
    assert stream.buffered == 20
    stream.receive_data(BIND_TRX[20:])
    assert stream.events() == [decode_pdu(BIND_TRX)]


def test_stream_length_too_small_is_fatal() -> None:
    stream = PduStream()
    stream.receive_data(bytes.fromhex("00000008 00000015 00000000 0000002A"))
    (event,) = stream.events()
    assert event == StreamError("command_length 8 is below 16", 42)
    assert event.reply() == GenericNack(sequence_number=42, command_status=CommandStatus.ESME_RINVCMDLEN)
    assert stream.failed
    stream.receive_data(ENQUIRE_LINK_1)  # ignored from now on
    assert stream.events() == []


def test_stream_length_above_max_is_fatal_without_waiting_for_the_body() -> None:
    stream = PduStream()
    stream.receive_data(ENQUIRE_LINK_1 + bytes.fromhex("00010001 00000004 00000000 00000003"))
    events = stream.events()
    assert events == [EnquireLink(sequence_number=1), StreamError("command_length 65537 is above 65536", 3)]
    assert stream.failed and stream.buffered == 0


def test_stream_fatal_before_a_whole_header() -> None:
    stream = PduStream(max_command_length=1024)
    stream.receive_data(bytes.fromhex("7fffffff"))
    (event,) = stream.events()
    assert isinstance(event, StreamError) and event.sequence_number is None
    assert event.reply() is None


def test_stream_malformed_body_is_recoverable() -> None:
    stream = PduStream()
    bad_length = _frame(CommandId.ENQUIRE_LINK, b"\x00\x00\x00\x00", seq=5)
    bad_cstring = _frame(CommandId.BIND_TRANSCEIVER, b"no-nul", seq=6)
    bad_sm_length = _frame(
        CommandId.SUBMIT_SM, b"\x00\x00\x00a\x00\x00\x00b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x09hi", seq=7
    )
    bad_response = _frame(CommandId.SUBMIT_SM_RESP, b"abc", seq=8)
    stream.receive_data(bad_length + bad_cstring + bad_sm_length + bad_response + ENQUIRE_LINK_1)
    events = stream.events()
    assert len(events) == 5
    e5, e6, e7, e8, ok = events
    assert isinstance(e5, MalformedPdu) and e5.sequence_number == 5
    assert e5.reply() == GenericNack(sequence_number=5, command_status=CommandStatus.ESME_RINVCMDLEN)
    assert isinstance(e6, MalformedPdu) and "no NUL terminator" in e6.reason
    assert e6.reply() == GenericNack(sequence_number=6, command_status=CommandStatus.ESME_RINVCMDLEN)
    assert isinstance(e7, MalformedPdu) and e7.status == CommandStatus.ESME_RINVMSGLEN
    assert e7.reply() == SubmitSmResp(sequence_number=7, command_status=CommandStatus.ESME_RINVMSGLEN)
    assert isinstance(e8, MalformedPdu) and e8.command_id == CommandId.SUBMIT_SM_RESP
    assert e8.reply() is None  # never answer a response; the caller fails request 8
    assert ok == EnquireLink(sequence_number=1)
    assert not stream.failed


def test_stream_unknown_command_is_nacked_and_skipped() -> None:
    stream = PduStream()
    stream.receive_data(_frame(0x00000103, b"\x00" * 30, seq=11) + ENQUIRE_LINK_1)
    unknown, ok = stream.events()
    assert unknown == UnknownCommand(0x103, 11)
    assert unknown.reply() == GenericNack(sequence_number=11, command_status=CommandStatus.ESME_RINVCMDID)
    assert ok == EnquireLink(sequence_number=1)


@given(st.lists(st.binary(max_size=80), max_size=8))
@settings(max_examples=500)
def test_stream_never_raises_on_garbage(chunks: list[bytes]) -> None:
    stream = PduStream(max_command_length=4096)
    for chunk in chunks:
        stream.receive_data(chunk)
        for event in stream.events():
            assert isinstance(event, (MalformedPdu, UnknownCommand, StreamError, *PDU_CLASSES.values()))


@given(_pdus_strategy(), st.binary(min_size=1, max_size=40))
def test_stream_garbage_after_good_pdus(pdus: list[Pdu], junk: bytes) -> None:
    stream = PduStream()
    stream.receive_data(b"".join(p.encode() for p in pdus) + junk)
    events = stream.events()
    assert events[: len(pdus)] == pdus


def test_send_assigns_sequence_numbers() -> None:
    stream = PduStream()
    assert stream.send(EnquireLink()) == ENQUIRE_LINK_1
    second = stream.assign(SubmitSm(destination_addr="1"))
    assert second.sequence_number == 2
    assert decode_header(stream.send(second)).sequence_number == 2  # not re-assigned
    assert decode_header(stream.send(Unbind())).sequence_number == 3
    # Responses keep the request's number, even 0.
    assert decode_header(stream.send(DeliverSmResp(sequence_number=99))).sequence_number == 99
    assert decode_header(stream.send(GenericNack())).sequence_number == 0
    assert stream.next_sequence_number() == 4


def test_sequence_numbers_wrap() -> None:
    stream = PduStream(first_sequence_number=0x7FFFFFFE)
    numbers = [decode_header(stream.send(EnquireLink())).sequence_number for _ in range(4)]
    assert numbers == [0x7FFFFFFE, 0x7FFFFFFF, 1, 2]


def test_stream_configuration_errors() -> None:
    with pytest.raises(ValueError, match="max_command_length"):
        PduStream(max_command_length=8)
    with pytest.raises(ValueError, match="first_sequence_number"):
        PduStream(first_sequence_number=0)


def test_send_refuses_pdus_over_the_limit() -> None:
    stream = PduStream(max_command_length=64)
    with pytest.raises(SmppEncodeError, match="the limit is 64"):
        stream.send(SubmitSm(short_message=b"x" * 100))


# -- receipts ------------------------------------------------------------------------------

STANDARD = (
    "id:0123456789 sub:001 dlvrd:001 submit date:2401311200 done date:2401311201 "
    "stat:DELIVRD err:000 text:Hello world: the first 20"
)


def receipt_pdu(text: str | bytes, *, esm_class: int = 0x04, tlvs: tuple[tuple[int, bytes], ...] = (), dc: int = 0) -> DeliverSm:
    raw = text.encode("latin-1") if isinstance(text, str) else text
    return DeliverSm(esm_class=esm_class, short_message=raw, tlvs=tlvs, data_coding=dc)


def test_receipt_text_standard() -> None:
    fields = parse_receipt_text(STANDARD)
    assert fields.id == "0123456789"
    assert (fields.sub, fields.dlvrd) == ("001", "001")
    assert (fields.submit_date, fields.done_date) == ("2401311200", "2401311201")
    assert (fields.stat, fields.err) == ("DELIVRD", "000")
    assert fields.text == "Hello world: the first 20"


def test_receipt_standard() -> None:
    r = parse_receipt(receipt_pdu(STANDARD))
    assert r is not None
    assert (r.message_id, r.raw_message_id) == ("0123456789", "0123456789")
    assert (r.state, r.status, r.final) == (MessageState.DELIVERED, "delivered", True)
    assert (r.submitted, r.delivered, r.error) == (1, 1, "000")
    assert r.submit_date == datetime(2024, 1, 31, 12, 0)
    assert r.done_date == datetime(2024, 1, 31, 12, 1)


@pytest.mark.parametrize(
    "text",
    [
        "ID:abc SUB:001 DLVRD:001 SUBMIT DATE:2401311200 DONE DATE:2401311201 STAT:DELIVRD ERR:000 TEXT:x",
        "id:abc submit_date:2401311200 done_date:2401311201 stat:delivrd",
        "id:abc stat:DELIVRD",
        "  id: abc   stat: DELIVRD  ",
        "id:abc sub:001 dlvrd:001 submit date:240131120059 done date:240131120100 stat:DELIVERED err:0 Text:",
    ],
)
def test_receipt_text_variants(text: str) -> None:
    r = parse_receipt(receipt_pdu(text))
    assert r is not None
    assert r.message_id == "abc"
    assert r.status == "delivered"


def test_receipt_dates_with_seconds_and_garbage() -> None:
    r = parse_receipt(receipt_pdu("id:1 submit date:240131120059 done date:2413991200 stat:DELIVRD"))
    assert r is not None
    assert r.submit_date == datetime(2024, 1, 31, 12, 0, 59)
    assert r.done_date is None  # month 13: unreadable, not an error


def test_receipt_text_after_text_key_is_not_parsed() -> None:
    fields = parse_receipt_text("id:1 stat:UNDELIV text:stat:DELIVRD id:2")
    assert (fields.id, fields.stat, fields.text) == ("1", "UNDELIV", "stat:DELIVRD id:2")


def test_receipt_text_ignores_keys_inside_words() -> None:
    assert parse_receipt_text("msgid:9 id:1").id == "1"


@pytest.mark.parametrize(
    ("stat", "state", "status", "final"),
    [
        ("DELIVRD", MessageState.DELIVERED, "delivered", True),
        ("UNDELIV", MessageState.UNDELIVERABLE, "undelivered", True),
        ("EXPIRED", MessageState.EXPIRED, "undelivered", True),
        ("DELETED", MessageState.DELETED, "undelivered", True),
        ("REJECTD", MessageState.REJECTED, "failed", True),
        ("ACCEPTD", MessageState.ACCEPTED, "sent", True),
        ("UNKNOWN", MessageState.UNKNOWN, "undelivered", True),
        ("ENROUTE", MessageState.ENROUTE, "sent", False),
        ("BOGUS", None, None, False),
    ],
)
def test_receipt_stat_mapping(stat: str, state: MessageState | None, status: str | None, final: bool) -> None:
    r = parse_receipt(receipt_pdu(f"id:7 stat:{stat} err:001"))
    assert r is not None
    assert (r.state, r.status, r.final, r.stat) == (state, status, final, stat)


def test_receipt_tlvs_win_over_text() -> None:
    pdu = receipt_pdu(
        STANDARD,
        tlvs=(
            (Tag.RECEIPTED_MESSAGE_ID, b"ABC-42\x00"),
            (Tag.MESSAGE_STATE, bytes((MessageState.UNDELIVERABLE,))),
            (Tag.NETWORK_ERROR_CODE, bytes.fromhex("030001")),
        ),
    )
    r = parse_receipt(pdu)
    assert r is not None
    assert r.message_id == "ABC-42"
    assert (r.state, r.status) == (MessageState.UNDELIVERABLE, "undelivered")
    assert r.stat == "DELIVRD"  # what the text said, kept for the log
    assert r.network_error == (3, 1)


def test_receipt_tlvs_alone() -> None:
    pdu = DeliverSm(
        esm_class=0x04,
        tlvs=((Tag.RECEIPTED_MESSAGE_ID, b"77\x00"), (Tag.MESSAGE_STATE, bytes((MessageState.DELIVERED,)))),
    )
    r = parse_receipt(pdu)
    assert r is not None and (r.message_id, r.status) == ("77", "delivered")


def test_receipt_bad_state_tlv_falls_back_to_text() -> None:
    r = parse_receipt(receipt_pdu("id:1 stat:EXPIRED", tlvs=((Tag.MESSAGE_STATE, b"\x09"),)))
    assert r is not None and r.state == MessageState.EXPIRED


def test_receipt_recognized_by_tlv_without_esm_class() -> None:
    r = parse_receipt(receipt_pdu("stat:DELIVRD", esm_class=0, tlvs=((Tag.RECEIPTED_MESSAGE_ID, b"x1\x00"),)))
    assert r is not None and r.message_id == "x1"


def test_receipt_in_ucs2_and_in_message_payload() -> None:
    r = parse_receipt(receipt_pdu(sms.ucs2_encode("id:5 stat:REJECTD"), dc=0x08))
    assert r is not None and (r.message_id, r.status) == ("5", "failed")
    pdu = DeliverSm(esm_class=0x04, tlvs=((Tag.MESSAGE_PAYLOAD, b"id:6 stat:DELIVRD"),))
    r = parse_receipt(pdu)
    assert r is not None and (r.message_id, r.status) == ("6", "delivered")


def test_mobile_originated_message_is_not_a_receipt() -> None:
    assert parse_receipt(DeliverSm(esm_class=0, short_message=b"id:1 stat:DELIVRD")) is None


def test_receipt_without_an_id() -> None:
    with pytest.raises(ReceiptError, match="names no message"):
        parse_receipt(receipt_pdu("stat:DELIVRD err:000"))


@pytest.mark.parametrize(
    ("raw", "kwargs", "canonical"),
    [
        ("0x1a2b", {"hex_ids": True}, "1a2b"),
        ("1A2B", {"hex_ids": True}, "1a2b"),
        ("00001a2b", {"hex_ids": True}, "1a2b"),
        ("6699", {"hex_ids": True, "decimal": True}, "1a2b"),
        ("0000006699", {"hex_ids": True, "decimal": True}, "1a2b"),
        ("0x1A2B", {"hex_ids": True, "decimal": True}, "1a2b"),  # a prefix means hex whatever
        ("1a2b", {"hex_ids": True, "decimal": True}, "1a2b"),  # so does a hex letter
        ("0", {"hex_ids": True}, "0"),
        ("not-hex", {"hex_ids": True}, "not-hex"),  # stays opaque rather than failing
        (" Msg-42\x00", {}, "Msg-42"),  # opaque: trimmed only, case kept
        ("0x1a2b", {}, "0x1a2b"),
        ("", {"hex_ids": True}, ""),
    ],
)
def test_normalize_message_id(raw: str, kwargs: dict[str, bool], canonical: str) -> None:
    assert normalize_message_id(raw, **kwargs) == canonical


def test_hex_provider_matches_decimal_receipts() -> None:
    submitted = normalize_message_id("1A2B", hex_ids=True)  # from submit_sm_resp
    r = parse_receipt(receipt_pdu("id:6699 stat:DELIVRD"), hex_ids=True, decimal_receipt_ids=True)
    assert r is not None and r.message_id == submitted
    # The TLV is the submit_sm_resp id verbatim: read as hex even when receipt text is decimal.
    r = parse_receipt(
        receipt_pdu("id:6699 stat:DELIVRD", tlvs=((Tag.RECEIPTED_MESSAGE_ID, b"1A2B\x00"),)),
        hex_ids=True,
        decimal_receipt_ids=True,
    )
    assert r is not None and r.message_id == submitted


@given(st.integers(0, 2**64))
def test_normalize_hex_and_decimal_agree(n: int) -> None:
    forms = [
        normalize_message_id(f"{n:X}", hex_ids=True),
        normalize_message_id(f"0x{n:x}", hex_ids=True),
        normalize_message_id(f"{n:012x}", hex_ids=True),
        normalize_message_id(str(n), hex_ids=True, decimal=True),
    ]
    assert len(set(forms)) == 1


@given(st.text(max_size=200))
def test_receipt_text_parser_never_raises(text: str) -> None:
    parse_receipt_text(text)


# -- long messages ---------------------------------------------------------------------------

TEMPLATE = SubmitSm(
    source_addr_ton=1,
    source_addr_npi=1,
    source_addr="15550001111",
    dest_addr_ton=1,
    dest_addr_npi=1,
    destination_addr="15552223333",
    registered_delivery=1,
)


def reassemble(submits: tuple[SubmitSm, ...]) -> str:
    if len(submits) == 1:
        assert not submits[0].esm_class & 0x40
        return decode_text(submits[0].data_coding, submits[0].short_message)
    parts: dict[int, bytes] = {}
    refs = set()
    for pdu in submits:
        assert pdu.esm_class & 0x40
        elements, payload = sms.parse_udh(pdu.short_message)
        info = sms.concat_info(elements)
        assert info is not None and info.total == len(submits)
        refs.add(info.ref)
        parts[info.seq] = payload
    assert len(refs) == 1 and sorted(parts) == list(range(1, len(submits) + 1))
    data_coding = submits[0].data_coding
    if data_coding == DATA_CODING_UCS2:
        # Decode each part alone: no surrogate pair may have been split.
        return "".join(sms.ucs2_decode(parts[i]) for i in sorted(parts))
    return "".join(sms.gsm7_decode(parts[i]) for i in sorted(parts))


def test_single_segment_submit() -> None:
    (pdu,) = build_submits("hello", TEMPLATE, ref=1)
    assert pdu.short_message == b"hello"
    assert (pdu.data_coding, pdu.esm_class) == (0, 0)
    assert pdu.destination_addr == TEMPLATE.destination_addr
    (pdu,) = build_submits("Привет", TEMPLATE, ref=1)
    assert (pdu.data_coding, pdu.short_message) == (0x08, sms.ucs2_encode("Привет"))


def test_gsm7_long_message_layout() -> None:
    text = "a" * 200 + "€"
    submits = build_submits(text, TEMPLATE, ref=0x42)
    assert len(submits) == 2
    first, second = submits
    assert first.short_message[:6] == bytes.fromhex("050003420201")
    assert first.short_message[6:] == b"a" * 153  # unpacked septets, one per octet
    assert second.short_message == bytes.fromhex("050003420202") + b"a" * 47 + bytes((0x1B, 0x65))
    assert all(p.esm_class == 0x40 and p.data_coding == 0 and p.registered_delivery == 1 for p in submits)


def test_ucs2_long_message_layout_ref16() -> None:
    submits = build_submits("Ж" * 140, TEMPLATE, ref=0x1234, ref16=True)
    assert [len(p.short_message) for p in submits] == [7 + 132, 7 + 132, 7 + 16]
    assert submits[0].short_message[:7] == bytes.fromhex("06080412340301")
    assert {p.data_coding for p in submits} == {0x08}


def test_too_many_segments() -> None:
    with pytest.raises(ContentError, match="needs 256 segments; at most 255"):
        build_submits("a" * (153 * 256), TEMPLATE, ref=1)


def test_bad_reference() -> None:
    with pytest.raises(ContentError, match="reference must be 0..255"):
        build_submits("a" * 200, TEMPLATE, ref=300)


def test_existing_esm_class_bits_are_kept() -> None:
    template = dataclasses.replace(TEMPLATE, esm_class=0x03)  # store and forward mode
    assert {p.esm_class for p in build_submits("a" * 200, template, ref=1)} == {0x43}


long_texts = st.one_of(
    st.text(max_size=400),
    st.lists(st.text(sorted(sms.GSM7_CHARS), min_size=10, max_size=80), min_size=1, max_size=10).map("".join),
    st.lists(st.sampled_from(["a", "€", "Ж", "😀", " ", "{"]), max_size=400).map("".join),
)


@given(long_texts, st.integers(0, 0xFFFF), st.booleans())
@settings(max_examples=300)
def test_long_message_submits_reassemble(text: str, ref: int, ref16: bool) -> None:
    ref = ref if ref16 else ref & 0xFF
    submits = build_submits(text, TEMPLATE, ref=ref, ref16=ref16)
    assert len(submits) == sms.segments(text, ref16=ref16).num_segments
    assert reassemble(submits) == text
    for pdu in submits:
        assert len(pdu.short_message) <= 160 if pdu.data_coding == 0 else len(pdu.short_message) <= 140
        assert decode_pdu(PduStream().send(pdu)) == dataclasses.replace(pdu, sequence_number=1)


def test_encode_text_and_decode_text() -> None:
    assert encode_text("a€") == (0, b"a\x1b\x65")
    assert encode_text("Ж") == (8, b"\x04\x16")
    assert decode_text(0x01, b"abc") == "abc"
    assert decode_text(0x03, b"caf\xe9") == "café"
    assert decode_text(0xF1, b"a\x00") == "a@"
    with pytest.raises(ContentError, match="data_coding 0x04 is not a text encoding"):
        decode_text(0x04, b"\x00")
    with pytest.raises(ContentError, match="not valid for data_coding 0x00"):
        decode_text(0x00, b"\xff")
    with pytest.raises(ContentError, match="not valid for data_coding 0x08"):
        decode_text(0x08, b"\x00")
