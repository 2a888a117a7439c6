"""SMPP 3.4 data types on the wire: the header, integers, C-Octet strings, TLVs.

Leniency is one-sided on purpose: writing enforces the specification's field
sizes (an SMSC may reject an overlong field, and it would be our bug),
reading accepts overlong C-strings (SMSCs in the field send them) and only
refuses what cannot be read at all. C-strings are ASCII when written and
read as Latin-1, which never fails.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, TypeAlias

from protocol.smpp.constants import CommandStatus

HEADER: Final = struct.Struct(">IIII")
HEADER_LENGTH: Final = HEADER.size  # 16

Tlv: TypeAlias = tuple[int, bytes]


# -- errors ------------------------------------------------------------------------


class SmppError(Exception):
    """Base of this package's errors."""


class SmppEncodeError(SmppError, ValueError):
    """A PDU whose fields do not fit the wire format (our bug, never the peer's)."""


class SmppDecodeError(SmppError):
    """Bytes that are not a valid PDU. ``status`` is what a reply should carry."""

    def __init__(
        self,
        reason: str,
        *,
        status: CommandStatus = CommandStatus.ESME_RINVCMDLEN,
        command_id: int | None = None,
        sequence_number: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.command_id = command_id
        self.sequence_number = sequence_number


class UnknownCommandError(SmppDecodeError):
    """A well-framed PDU whose command id this codec does not know (answer: generic_nack)."""


# -- header and primitive reading/writing --------------------------------------------


@dataclass(frozen=True)
class Header:
    command_length: int
    command_id: int
    command_status: int
    sequence_number: int


def decode_header(data: bytes) -> Header:
    if len(data) < HEADER_LENGTH:
        raise SmppDecodeError(f"PDU header needs {HEADER_LENGTH} octets, got {len(data)}")
    return Header(*HEADER.unpack_from(data))


class Reader:
    """Reads a PDU body left to right; every failure is an SmppDecodeError."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def _need(self, n: int, name: str) -> None:
        if self.pos + n > len(self.data):
            raise SmppDecodeError(
                f"{self.what}: body ends at octet {len(self.data)} before {name} "
                f"({n} octet(s) at offset {self.pos})"
            )

    def u8(self, name: str) -> int:
        self._need(1, name)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def octets(self, n: int, name: str, status: CommandStatus = CommandStatus.ESME_RINVCMDLEN) -> bytes:
        if self.pos + n > len(self.data):
            raise SmppDecodeError(
                f"{self.what}: {name} declares {n} octet(s) but only "
                f"{len(self.data) - self.pos} remain in the body",
                status=status,
            )
        value = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(value)

    def cstring(self, name: str) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise SmppDecodeError(f"{self.what}: {name} at offset {self.pos} has no NUL terminator")
        value = self.data[self.pos : end].decode("latin-1")
        self.pos = end + 1
        return value

    @property
    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def tlvs(self) -> tuple[Tlv, ...]:
        out: list[Tlv] = []
        while not self.at_end:
            if self.pos + 4 > len(self.data):
                raise SmppDecodeError(
                    f"{self.what}: {len(self.data) - self.pos} trailing octet(s) at offset "
                    f"{self.pos} are too short for a TLV header",
                    status=CommandStatus.ESME_RINVOPTPARSTREAM,
                )
            tag, length = struct.unpack_from(">HH", self.data, self.pos)
            self.pos += 4
            value = self.octets(length, f"TLV 0x{tag:04X}", CommandStatus.ESME_RINVOPTPARSTREAM)
            out.append((tag, value))
        return tuple(out)

    def end(self) -> None:
        if not self.at_end:
            raise SmppDecodeError(
                f"{self.what}: {len(self.data) - self.pos} unexpected octet(s) after the body"
            )


def cstr(value: str, name: str, max_octets: int) -> bytes:
    """A C-Octet String; ``max_octets`` counts the NUL, as the specification's tables do."""
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise SmppEncodeError(f"{name} must be ASCII, got {value!r}") from None
    if b"\x00" in raw:
        raise SmppEncodeError(f"{name} must not contain NUL, got {value!r}")
    if len(raw) + 1 > max_octets:
        raise SmppEncodeError(f"{name} is {len(raw)} characters; at most {max_octets - 1} allowed")
    return raw + b"\x00"


def time_field(value: str, name: str) -> bytes:
    # SMPP 3.4 section 7.1: absolute or relative time, always 16 characters, or empty.
    if value and len(value) != 16:
        raise SmppEncodeError(f"{name} must be empty or 16 characters (YYMMDDhhmmsstnnp), got {value!r}")
    return cstr(value, name, 17)


def u8(value: int, name: str) -> bytes:
    if not 0 <= value <= 0xFF:
        raise SmppEncodeError(f"{name} must be 0..255, got {value}")
    return bytes((value,))


def u32(value: int, name: str) -> int:
    if not 0 <= value <= 0xFFFFFFFF:
        raise SmppEncodeError(f"{name} must be 0..0xFFFFFFFF, got {value}")
    return value


def encode_tlvs(tlvs: tuple[Tlv, ...]) -> bytes:
    out = bytearray()
    for tag, value in tlvs:
        if not 0 <= tag <= 0xFFFF:
            raise SmppEncodeError(f"TLV tag must be 0..0xFFFF, got {tag}")
        if len(value) > 0xFFFF:
            raise SmppEncodeError(f"TLV 0x{tag:04X} value is {len(value)} octets; at most 65535")
        out += struct.pack(">HH", tag, len(value)) + value
    return bytes(out)


def find_tlv(tlvs: tuple[Tlv, ...], tag: int) -> bytes | None:
    """The value of the first TLV with ``tag``, or None."""
    for t, value in tlvs:
        if t == tag:
            return value
    return None
