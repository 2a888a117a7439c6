"""SMPP 3.4, sans-I/O, for an ESME bound as a transceiver.

    pdu.py      one frozen dataclass per PDU (encode/decode); re-exports the two below
    constants.py command ids, command statuses, TLV tags, message states
    wire.py     header, integers, C-Octet strings, TLVs; the codec's exceptions
    stream.py   bytes in -> PDU events out, PDUs in -> bytes out (framing, sequence numbers)
    receipts.py delivery receipts (the receipt text and the receipt TLVs)
    content.py  message text <-> short_message bytes, long messages as concatenated submit_sm

Nothing here opens a socket or knows about asyncio: the smpp carrier adapter
feeds the stream the bytes it reads and writes the bytes the stream gives it.
"""
