"""SMPP 3.4 PDUs: one frozen dataclass per PDU an ESME transceiver uses.

Wire format (SMPP 3.4 section 3.2): a 16-octet header of four big-endian
unsigned 32-bit integers - command_length (the whole PDU, header included),
command_id, command_status, sequence_number - then the body: mandatory
parameters in a fixed order, then optional TLVs (tag u16, length u16, value).

Every PDU class has ``encode() -> bytes`` and the classmethod
``decode(data) -> Self`` over one whole PDU; :func:`decode_pdu` picks the
class from the command id. Decoding raises only :class:`SmppDecodeError`
(with the command status a reply should carry); encoding raises only
:class:`SmppEncodeError`. A request decoded with a non-zero command_status
is accepted (the status is meaningless there and some SMSCs fill it).

The numbers (command ids, statuses, tags) live in ``constants.py`` and the
data types in ``wire.py``; both are re-exported here, so this module is the
one import the adapter needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Final, Self, TypeAlias, TypeVar

from protocol.smpp.constants import (
    ESM_TYPE_DELIVERY_ACK,
    ESM_TYPE_DELIVERY_RECEIPT,
    ESM_TYPE_INTERMEDIATE_NOTIFICATION,
    ESM_TYPE_MANUAL_ACK,
    ESM_TYPE_MASK,
    ESM_UDHI,
    INTERFACE_VERSION_34,
    MAX_SHORT_MESSAGE,
    RESPONSE_BIT,
    TRANSIENT_STATUSES,
    CommandId,
    CommandStatus,
    MessageState,
    Tag,
    status_name,
)
from protocol.smpp.wire import (
    HEADER,
    HEADER_LENGTH,
    Header,
    Reader,
    SmppDecodeError,
    SmppEncodeError,
    SmppError,
    Tlv,
    UnknownCommandError,
    cstr,
    decode_header,
    encode_tlvs,
    find_tlv,
    time_field,
    u8,
    u32,
)

__all__ = [
    "ESM_TYPE_DELIVERY_ACK",
    "ESM_TYPE_DELIVERY_RECEIPT",
    "ESM_TYPE_INTERMEDIATE_NOTIFICATION",
    "ESM_TYPE_MANUAL_ACK",
    "ESM_TYPE_MASK",
    "ESM_UDHI",
    "HEADER_LENGTH",
    "INTERFACE_VERSION_34",
    "MAX_SHORT_MESSAGE",
    "PDU_CLASSES",
    "RESPONSE_BIT",
    "TRANSIENT_STATUSES",
    "BindTransceiver",
    "BindTransceiverResp",
    "CommandId",
    "CommandStatus",
    "DeliverSm",
    "DeliverSmResp",
    "EnquireLink",
    "EnquireLinkResp",
    "GenericNack",
    "Header",
    "MessageState",
    "Pdu",
    "SmppDecodeError",
    "SmppEncodeError",
    "SmppError",
    "SubmitSm",
    "SubmitSmResp",
    "Tag",
    "Tlv",
    "Unbind",
    "UnbindResp",
    "UnknownCommandError",
    "decode_header",
    "decode_pdu",
    "find_tlv",
    "is_response",
    "response_for",
    "status_name",
]


# -- PDUs ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Pdu:
    command_id: ClassVar[CommandId]
    sequence_number: int = 0

    @property
    def status(self) -> int:
        return 0

    def _body(self) -> bytes:
        return b""

    def encode(self) -> bytes:
        body = self._body()
        u32(self.sequence_number, "sequence_number")
        u32(self.status, "command_status")
        return HEADER.pack(HEADER_LENGTH + len(body), self.command_id, self.status, self.sequence_number) + body

    @classmethod
    def _from_body(cls, r: Reader, header: Header) -> Self:
        r.end()
        return cls(sequence_number=header.sequence_number)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode one whole PDU of this class (``len(data)`` must be its command_length)."""
        header = _check_frame(data)
        if header.command_id != cls.command_id:
            raise SmppDecodeError(
                f"expected {cls.command_id.name.lower()} (0x{cls.command_id:08X}), "
                f"got command id 0x{header.command_id:08X}",
                status=CommandStatus.ESME_RINVCMDID,
                command_id=header.command_id,
                sequence_number=header.sequence_number,
            )
        return _decode_body(cls, data, header)


@dataclass(frozen=True, kw_only=True)
class _Response(_Pdu):
    command_status: int = CommandStatus.ESME_ROK

    @property
    def status(self) -> int:
        return self.command_status

    @property
    def ok(self) -> bool:
        return self.command_status == CommandStatus.ESME_ROK

    @classmethod
    def _from_body(cls, r: Reader, header: Header) -> Self:
        r.end()
        return cls(sequence_number=header.sequence_number, command_status=header.command_status)


@dataclass(frozen=True, kw_only=True)
class GenericNack(_Response):
    command_id: ClassVar[CommandId] = CommandId.GENERIC_NACK


@dataclass(frozen=True, kw_only=True)
class EnquireLinkResp(_Response):
    command_id: ClassVar[CommandId] = CommandId.ENQUIRE_LINK_RESP


@dataclass(frozen=True, kw_only=True)
class EnquireLink(_Pdu):
    command_id: ClassVar[CommandId] = CommandId.ENQUIRE_LINK

    def response(self, status: int = CommandStatus.ESME_ROK) -> EnquireLinkResp:
        return EnquireLinkResp(sequence_number=self.sequence_number, command_status=status)


@dataclass(frozen=True, kw_only=True)
class UnbindResp(_Response):
    command_id: ClassVar[CommandId] = CommandId.UNBIND_RESP


@dataclass(frozen=True, kw_only=True)
class Unbind(_Pdu):
    command_id: ClassVar[CommandId] = CommandId.UNBIND

    def response(self, status: int = CommandStatus.ESME_ROK) -> UnbindResp:
        return UnbindResp(sequence_number=self.sequence_number, command_status=status)


@dataclass(frozen=True, kw_only=True)
class BindTransceiverResp(_Response):
    command_id: ClassVar[CommandId] = CommandId.BIND_TRANSCEIVER_RESP
    system_id: str = ""  # the SMSC's
    tlvs: tuple[Tlv, ...] = ()  # sc_interface_version (0x0210) when the SMSC supports TLVs

    def _body(self) -> bytes:
        return cstr(self.system_id, "system_id", 16) + encode_tlvs(self.tlvs)

    @classmethod
    def _from_body(cls, r: Reader, header: Header) -> Self:
        # An SMSC refusing the bind may send the header alone.
        if r.at_end:
            return cls(sequence_number=header.sequence_number, command_status=header.command_status)
        system_id = r.cstring("system_id")
        return cls(
            sequence_number=header.sequence_number,
            command_status=header.command_status,
            system_id=system_id,
            tlvs=r.tlvs(),
        )


@dataclass(frozen=True, kw_only=True)
class BindTransceiver(_Pdu):
    command_id: ClassVar[CommandId] = CommandId.BIND_TRANSCEIVER
    system_id: str
    password: str
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION_34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""

    def __repr__(self) -> str:
        # Never put the bind password in a log line.
        return (
            f"BindTransceiver(sequence_number={self.sequence_number}, system_id={self.system_id!r}, "
            f"password='***', system_type={self.system_type!r}, "
            f"interface_version=0x{self.interface_version:02X})"
        )

    def _body(self) -> bytes:
        return b"".join(
            (
                cstr(self.system_id, "system_id", 16),
                cstr(self.password, "password", 9),
                cstr(self.system_type, "system_type", 13),
                u8(self.interface_version, "interface_version"),
                u8(self.addr_ton, "addr_ton"),
                u8(self.addr_npi, "addr_npi"),
                cstr(self.address_range, "address_range", 41),
            )
        )

    @classmethod
    def _from_body(cls, r: Reader, header: Header) -> Self:
        pdu = cls(
            sequence_number=header.sequence_number,
            system_id=r.cstring("system_id"),
            password=r.cstring("password"),
            system_type=r.cstring("system_type"),
            interface_version=r.u8("interface_version"),
            addr_ton=r.u8("addr_ton"),
            addr_npi=r.u8("addr_npi"),
            address_range=r.cstring("address_range"),
        )
        r.end()
        return pdu

    def response(self, status: int = CommandStatus.ESME_ROK, system_id: str = "") -> BindTransceiverResp:
        return BindTransceiverResp(sequence_number=self.sequence_number, command_status=status, system_id=system_id)


@dataclass(frozen=True, kw_only=True)
class _MessageIdResp(_Response):
    message_id: str = ""

    def _body(self) -> bytes:
        return cstr(self.message_id, "message_id", 65)

    @classmethod
    def _from_body(cls, r: Reader, header: Header) -> Self:
        # Error responses often come as a bare header (SMPP 3.4 section 4.4.2
        # says the body is not returned when command_status is not 0).
        if r.at_end:
            return cls(sequence_number=header.sequence_number, command_status=header.command_status)
        message_id = r.cstring("message_id")
        # Some SMSCs append TLVs to submit_sm_resp (SMPP 5.0 habits): read and drop them.
        r.tlvs()
        return cls(sequence_number=header.sequence_number, command_status=header.command_status, message_id=message_id)


@dataclass(frozen=True, kw_only=True)
class SubmitSmResp(_MessageIdResp):
    command_id: ClassVar[CommandId] = CommandId.SUBMIT_SM_RESP


@dataclass(frozen=True, kw_only=True)
class DeliverSmResp(_MessageIdResp):
    command_id: ClassVar[CommandId] = CommandId.DELIVER_SM_RESP


@dataclass(frozen=True, kw_only=True)
class _ShortMessage(_Pdu):
    """The mandatory parameters shared by submit_sm and deliver_sm (same order on the wire)."""

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: tuple[Tlv, ...] = field(default=())

    def tlv(self, tag: int) -> bytes | None:
        return find_tlv(self.tlvs, tag)

    @property
    def payload(self) -> bytes:
        """The message octets: short_message, or the message_payload TLV when that carries them."""
        if self.short_message:
            return self.short_message
        return self.tlv(Tag.MESSAGE_PAYLOAD) or b""

    def _body(self) -> bytes:
        if len(self.short_message) > MAX_SHORT_MESSAGE:
            raise SmppEncodeError(
                f"short_message is {len(self.short_message)} octets; at most {MAX_SHORT_MESSAGE} "
                "(longer text goes in concatenated segments or the message_payload TLV)"
            )
        if self.short_message and self.tlv(Tag.MESSAGE_PAYLOAD) is not None:
            raise SmppEncodeError("short_message and the message_payload TLV must not both carry the message")
        return b"".join(
            (
                cstr(self.service_type, "service_type", 6),
                u8(self.source_addr_ton, "source_addr_ton"),
                u8(self.source_addr_npi, "source_addr_npi"),
                cstr(self.source_addr, "source_addr", 21),
                u8(self.dest_addr_ton, "dest_addr_ton"),
                u8(self.dest_addr_npi, "dest_addr_npi"),
                cstr(self.destination_addr, "destination_addr", 21),
                u8(self.esm_class, "esm_class"),
                u8(self.protocol_id, "protocol_id"),
                u8(self.priority_flag, "priority_flag"),
                time_field(self.schedule_delivery_time, "schedule_delivery_time"),
                time_field(self.validity_period, "validity_period"),
                u8(self.registered_delivery, "registered_delivery"),
                u8(self.replace_if_present_flag, "replace_if_present_flag"),
                u8(self.data_coding, "data_coding"),
                u8(self.sm_default_msg_id, "sm_default_msg_id"),
                bytes((len(self.short_message),)),
                self.short_message,
                encode_tlvs(self.tlvs),
            )
        )

    @classmethod
    def _from_body(cls, r: Reader, header: Header) -> Self:
        service_type = r.cstring("service_type")
        source_addr_ton = r.u8("source_addr_ton")
        source_addr_npi = r.u8("source_addr_npi")
        source_addr = r.cstring("source_addr")
        dest_addr_ton = r.u8("dest_addr_ton")
        dest_addr_npi = r.u8("dest_addr_npi")
        destination_addr = r.cstring("destination_addr")
        esm_class = r.u8("esm_class")
        protocol_id = r.u8("protocol_id")
        priority_flag = r.u8("priority_flag")
        schedule_delivery_time = r.cstring("schedule_delivery_time")
        validity_period = r.cstring("validity_period")
        registered_delivery = r.u8("registered_delivery")
        replace_if_present_flag = r.u8("replace_if_present_flag")
        data_coding = r.u8("data_coding")
        sm_default_msg_id = r.u8("sm_default_msg_id")
        sm_length = r.u8("sm_length")
        short_message = r.octets(sm_length, "sm_length", CommandStatus.ESME_RINVMSGLEN)
        return cls(
            sequence_number=header.sequence_number,
            service_type=service_type,
            source_addr_ton=source_addr_ton,
            source_addr_npi=source_addr_npi,
            source_addr=source_addr,
            dest_addr_ton=dest_addr_ton,
            dest_addr_npi=dest_addr_npi,
            destination_addr=destination_addr,
            esm_class=esm_class,
            protocol_id=protocol_id,
            priority_flag=priority_flag,
            schedule_delivery_time=schedule_delivery_time,
            validity_period=validity_period,
            registered_delivery=registered_delivery,
            replace_if_present_flag=replace_if_present_flag,
            data_coding=data_coding,
            sm_default_msg_id=sm_default_msg_id,
            short_message=short_message,
            tlvs=r.tlvs(),
        )


@dataclass(frozen=True, kw_only=True)
class SubmitSm(_ShortMessage):
    command_id: ClassVar[CommandId] = CommandId.SUBMIT_SM

    def response(self, status: int = CommandStatus.ESME_ROK, message_id: str = "") -> SubmitSmResp:
        return SubmitSmResp(sequence_number=self.sequence_number, command_status=status, message_id=message_id)


@dataclass(frozen=True, kw_only=True)
class DeliverSm(_ShortMessage):
    command_id: ClassVar[CommandId] = CommandId.DELIVER_SM

    @property
    def is_receipt(self) -> bool:
        """A delivery receipt or notification rather than a mobile-originated message."""
        kind = self.esm_class & ESM_TYPE_MASK
        return kind in (
            ESM_TYPE_DELIVERY_RECEIPT,
            ESM_TYPE_DELIVERY_ACK,
            ESM_TYPE_MANUAL_ACK,
            ESM_TYPE_INTERMEDIATE_NOTIFICATION,
        ) or (self.tlv(Tag.RECEIPTED_MESSAGE_ID) is not None)

    def response(self, status: int = CommandStatus.ESME_ROK) -> DeliverSmResp:
        return DeliverSmResp(sequence_number=self.sequence_number, command_status=status)


Pdu: TypeAlias = (
    BindTransceiver
    | BindTransceiverResp
    | Unbind
    | UnbindResp
    | SubmitSm
    | SubmitSmResp
    | DeliverSm
    | DeliverSmResp
    | EnquireLink
    | EnquireLinkResp
    | GenericNack
)

PDU_CLASSES: Final[dict[int, type[Pdu]]] = {
    cls.command_id: cls
    for cls in (
        BindTransceiver,
        BindTransceiverResp,
        Unbind,
        UnbindResp,
        SubmitSm,
        SubmitSmResp,
        DeliverSm,
        DeliverSmResp,
        EnquireLink,
        EnquireLinkResp,
        GenericNack,
    )
}


def is_response(command_id: int) -> bool:
    return bool(command_id & RESPONSE_BIT)


def _check_frame(data: bytes) -> Header:
    header = decode_header(data)
    if header.command_length != len(data):
        raise SmppDecodeError(
            f"command_length says {header.command_length} octets, the PDU has {len(data)}",
            command_id=header.command_id,
            sequence_number=header.sequence_number,
        )
    return header


_P = TypeVar("_P", bound=_Pdu)


def _decode_body(cls: type[_P], data: bytes, header: Header) -> _P:
    reader = Reader(data[HEADER_LENGTH:], cls.command_id.name.lower())
    try:
        return cls._from_body(reader, header)
    except SmppDecodeError as exc:
        exc.command_id = header.command_id
        exc.sequence_number = header.sequence_number
        raise


def decode_pdu(data: bytes) -> Pdu:
    """Decode one whole PDU; ``len(data)`` must equal its command_length."""
    header = _check_frame(data)
    cls = PDU_CLASSES.get(header.command_id)
    if cls is None:
        raise UnknownCommandError(
            f"unknown command id 0x{header.command_id:08X}",
            status=CommandStatus.ESME_RINVCMDID,
            command_id=header.command_id,
            sequence_number=header.sequence_number,
        )
    return _decode_body(cls, data, header)


def response_for(command_id: int, sequence_number: int, status: int) -> Pdu | None:
    """The response PDU answering a request with ``command_id``, or None for a response."""
    if is_response(command_id):
        return None
    cls = _RESPONSE_CLASSES.get(command_id | RESPONSE_BIT, GenericNack)
    return cls(sequence_number=sequence_number, command_status=status)


_ResponsePdu: TypeAlias = (
    BindTransceiverResp | UnbindResp | SubmitSmResp | DeliverSmResp | EnquireLinkResp | GenericNack
)
_RESPONSE_CLASSES: Final[dict[int, type[_ResponsePdu]]] = {
    cls.command_id: cls
    for cls in (BindTransceiverResp, UnbindResp, SubmitSmResp, DeliverSmResp, EnquireLinkResp)
}

