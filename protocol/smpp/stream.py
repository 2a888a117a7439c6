"""Framing for one SMPP connection: bytes in, events out; PDUs in, bytes out.

The adapter owns the socket and the timers. It calls ``receive_data`` with
whatever the socket gave it (half a PDU, three PDUs and a bit), then takes
``events()``: decoded PDUs, or one of the events below for input that did not
decode. Nothing the peer sends makes this class raise.

* :class:`MalformedPdu` - the frame was fine (sane command_length, known
  command id) but the body was not. The stream goes on; ``reply()`` is the
  answer to send, if any.
* :class:`UnknownCommand` - a well-framed PDU with a command id we do not
  implement. The stream goes on; answer ``reply()`` (generic_nack with
  ESME_RINVCMDID).
* :class:`StreamError` - the framing itself is broken (command_length below
  16 or above the maximum): nothing after it can be trusted. The stream stops;
  send ``reply()`` if there is one, then unbind/close.

Outgoing: ``send(pdu)`` encodes a PDU, first giving a request that has no
sequence number yet (0) the next one, 1..0x7FFFFFFF and round again. Use
``assign(pdu)`` first when the sequence number must be known (to match the
response to a pending submit_sm), then ``send`` the result.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Final, TypeAlias, TypeVar

from protocol.smpp.pdu import (
    HEADER_LENGTH,
    CommandStatus,
    GenericNack,
    Pdu,
    SmppDecodeError,
    SmppEncodeError,
    UnknownCommandError,
    decode_pdu,
    is_response,
    response_for,
)

MAX_SEQUENCE_NUMBER: Final = 0x7FFFFFFF
DEFAULT_MAX_COMMAND_LENGTH: Final = 65536


@dataclass(frozen=True)
class MalformedPdu:
    command_id: int
    sequence_number: int
    status: CommandStatus  # what the answer carries
    reason: str

    def reply(self) -> Pdu | None:
        """The response a request deserves; None for a response (never answer one).

        A broken length is what generic_nack exists for; any other body error
        is answered with the request's own response type, as the
        specification asks (e.g. submit_sm_resp with ESME_RINVMSGLEN).
        """
        if is_response(self.command_id):
            return None
        if self.status == CommandStatus.ESME_RINVCMDLEN:
            return GenericNack(sequence_number=self.sequence_number, command_status=self.status)
        return response_for(self.command_id, self.sequence_number, self.status)


@dataclass(frozen=True)
class UnknownCommand:
    command_id: int
    sequence_number: int

    def reply(self) -> GenericNack:
        return GenericNack(sequence_number=self.sequence_number, command_status=CommandStatus.ESME_RINVCMDID)


@dataclass(frozen=True)
class StreamError:
    """Fatal: the byte stream cannot be framed any more."""

    reason: str
    sequence_number: int | None  # when the header was there to read it

    def reply(self) -> GenericNack | None:
        if self.sequence_number is None:
            return None
        return GenericNack(sequence_number=self.sequence_number, command_status=CommandStatus.ESME_RINVCMDLEN)


Event: TypeAlias = Pdu | MalformedPdu | UnknownCommand | StreamError

_P = TypeVar("_P", bound=Pdu)

_LENGTH: Final = struct.Struct(">I")


class PduStream:
    """One connection's SMPP framing and sequence numbers (no I/O)."""

    def __init__(
        self,
        *,
        max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH,
        first_sequence_number: int = 1,
    ) -> None:
        if max_command_length < HEADER_LENGTH:
            raise ValueError(f"max_command_length must be >= {HEADER_LENGTH}, got {max_command_length}")
        if not 1 <= first_sequence_number <= MAX_SEQUENCE_NUMBER:
            raise ValueError(f"first_sequence_number must be 1..0x7FFFFFFF, got {first_sequence_number}")
        self.max_command_length = max_command_length
        self._next_sequence = first_sequence_number
        self._buffer = bytearray()
        self._failed = False

    # -- incoming ------------------------------------------------------------

    @property
    def failed(self) -> bool:
        """True once a StreamError was produced; the stream then ignores all input."""
        return self._failed

    @property
    def buffered(self) -> int:
        """Octets received but not yet part of a whole PDU."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        if not self._failed:
            self._buffer += data

    def events(self) -> list[Event]:
        """Every event the buffered bytes make; a partial PDU stays buffered."""
        out: list[Event] = []
        buf = self._buffer
        pos = 0
        while not self._failed and len(buf) - pos >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buf, pos)
            if length < HEADER_LENGTH or length > self.max_command_length:
                seq = None
                if len(buf) - pos >= HEADER_LENGTH:
                    seq = int.from_bytes(buf[pos + 12 : pos + 16], "big")
                bound = f"below {HEADER_LENGTH}" if length < HEADER_LENGTH else f"above {self.max_command_length}"
                out.append(StreamError(f"command_length {length} is {bound}", seq))
                self._failed = True
                break
            if len(buf) - pos < length:
                break
            frame = bytes(buf[pos : pos + length])
            pos += length
            out.append(_decode_frame(frame))
        if self._failed:
            self._buffer = bytearray()
        else:
            del buf[:pos]
        return out

    # -- outgoing ------------------------------------------------------------

    def next_sequence_number(self) -> int:
        seq = self._next_sequence
        self._next_sequence = 1 if seq >= MAX_SEQUENCE_NUMBER else seq + 1
        return seq

    def assign(self, pdu: _P) -> _P:
        """``pdu`` with a sequence number: a request without one (0) gets the next.

        Responses keep theirs: it must echo the request's.
        """
        if is_response(pdu.command_id) or pdu.sequence_number != 0:
            return pdu
        return dataclasses.replace(pdu, sequence_number=self.next_sequence_number())

    def send(self, pdu: Pdu) -> bytes:
        """The bytes to write for ``pdu`` (after :meth:`assign`). Raises SmppEncodeError."""
        pdu = self.assign(pdu)
        data = pdu.encode()
        if len(data) > self.max_command_length:
            raise SmppEncodeError(f"PDU is {len(data)} octets; the limit is {self.max_command_length}")
        return data


def _decode_frame(frame: bytes) -> Event:
    try:
        return decode_pdu(frame)
    except UnknownCommandError as exc:
        return UnknownCommand(_int(exc.command_id), _int(exc.sequence_number))
    except SmppDecodeError as exc:
        return MalformedPdu(_int(exc.command_id), _int(exc.sequence_number), exc.status, exc.reason)


def _int(value: int | None) -> int:
    # A whole frame always has a header, so decode errors carry both numbers.
    return 0 if value is None else value
