"""SMPP 3.4 numbers: command ids, command statuses, TLV tags, message states, esm_class bits."""

from __future__ import annotations

import enum
from typing import Final

RESPONSE_BIT: Final = 0x80000000
INTERFACE_VERSION_34: Final = 0x34
MAX_SHORT_MESSAGE: Final = 254  # sm_length is one octet and 255 is reserved


class CommandId(enum.IntEnum):
    """The command ids this codec understands (SMPP 3.4 section 5.1.2.1)."""

    GENERIC_NACK = 0x80000000
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015


class CommandStatus(enum.IntEnum):
    """SMPP 3.4 error codes (section 5.1.3). SMSCs also send vendor codes
    (0x400-0x4FF), so PDUs hold the status as a plain int: see :func:`status_name`."""

    ESME_ROK = 0x00
    ESME_RINVMSGLEN = 0x01
    ESME_RINVCMDLEN = 0x02
    ESME_RINVCMDID = 0x03
    ESME_RINVBNDSTS = 0x04
    ESME_RALYBND = 0x05
    ESME_RINVPRTFLG = 0x06
    ESME_RINVREGDLVFLG = 0x07
    ESME_RSYSERR = 0x08
    ESME_RINVSRCADR = 0x0A
    ESME_RINVDSTADR = 0x0B
    ESME_RINVMSGID = 0x0C
    ESME_RBINDFAIL = 0x0D
    ESME_RINVPASWD = 0x0E
    ESME_RINVSYSID = 0x0F
    ESME_RCANCELFAIL = 0x11
    ESME_RREPLACEFAIL = 0x13
    ESME_RMSGQFUL = 0x14
    ESME_RINVSERTYP = 0x15
    ESME_RINVNUMDESTS = 0x33
    ESME_RINVDLNAME = 0x34
    ESME_RINVDESTFLAG = 0x40
    ESME_RINVSUBREP = 0x42
    ESME_RINVESMCLASS = 0x43
    ESME_RCNTSUBDL = 0x44
    ESME_RSUBMITFAIL = 0x45
    ESME_RINVSRCTON = 0x48
    ESME_RINVSRCNPI = 0x49
    ESME_RINVDSTTON = 0x50
    ESME_RINVDSTNPI = 0x51
    ESME_RINVSYSTYP = 0x53
    ESME_RINVREPFLAG = 0x54
    ESME_RINVNUMMSGS = 0x55
    ESME_RTHROTTLED = 0x58
    ESME_RINVSCHED = 0x61
    ESME_RINVEXPIRY = 0x62
    ESME_RINVDFTMSGID = 0x63
    ESME_RX_T_APPN = 0x64
    ESME_RX_P_APPN = 0x65
    ESME_RX_R_APPN = 0x66
    ESME_RQUERYFAIL = 0x67
    ESME_RINVOPTPARSTREAM = 0xC0
    ESME_ROPTPARNOTALLWD = 0xC1
    ESME_RINVPARLEN = 0xC2
    ESME_RMISSINGOPTPARAM = 0xC3
    ESME_RINVOPTPARAMVAL = 0xC4
    ESME_RDELIVERYFAILURE = 0xFE
    ESME_RUNKNOWNERR = 0xFF


# Statuses that say "not now" rather than "never": the same submit_sm may be
# retried later (after backing off) on this or another bind.
TRANSIENT_STATUSES: Final = frozenset(
    {
        CommandStatus.ESME_RTHROTTLED,
        CommandStatus.ESME_RMSGQFUL,
        CommandStatus.ESME_RX_T_APPN,
        CommandStatus.ESME_RSYSERR,
    }
)


def status_name(status: int) -> str:
    """``ESME_RTHROTTLED`` for a known status, ``0x00000401`` for a vendor one."""
    try:
        return CommandStatus(status).name
    except ValueError:
        return f"0x{status:08X}"


class Tag(enum.IntEnum):
    """TLV tags the messaging pipeline reads or writes (SMPP 3.4 section 5.3.2)."""

    DEST_ADDR_SUBUNIT = 0x0005
    SOURCE_PORT = 0x020A
    DESTINATION_PORT = 0x020B
    SAR_MSG_REF_NUM = 0x020C
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    USER_MESSAGE_REFERENCE = 0x0204
    SC_INTERFACE_VERSION = 0x0210
    RECEIPTED_MESSAGE_ID = 0x001E
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    MESSAGE_STATE = 0x0427


class MessageState(enum.IntEnum):
    """Values of the message_state TLV (SMPP 3.4 section 5.2.28)."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


# esm_class bits (SMPP 3.4 section 5.2.12).
ESM_UDHI: Final = 0x40  # short_message starts with a user data header
ESM_TYPE_MASK: Final = 0x3C
ESM_TYPE_DELIVERY_RECEIPT: Final = 0x04
ESM_TYPE_DELIVERY_ACK: Final = 0x08
ESM_TYPE_MANUAL_ACK: Final = 0x10
ESM_TYPE_INTERMEDIATE_NOTIFICATION: Final = 0x20
