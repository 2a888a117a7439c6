"""The seed corpus and libFuzzer dictionaries of the atheris harnesses.

    python -m tests.fuzz.seeds      # rewrites tests/fuzz/corpus/<parser>/ and tests/fuzz/dicts/

Seeds are small valid and near-valid inputs, already in each harness's byte
layout (tests/fuzz/targets.py ``bytes_*``), so the fuzzer starts past the
decoders (JSON, msgpack and XML are C code it gets no coverage feedback from)
instead of spending its time rediscovering their syntax. The files are
committed; this script is how they were made. ``corpus/config/full.toml`` is
written by hand (the config tests read it) and left alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgpack

from protocol.smpp.constants import Tag
from protocol.smpp.pdu import (
    ESM_TYPE_DELIVERY_RECEIPT,
    ESM_UDHI,
    BindTransceiver,
    BindTransceiverResp,
    DeliverSm,
    EnquireLink,
    GenericNack,
    SubmitSm,
    SubmitSmResp,
    Unbind,
)
from protocol import sms
from protocol.tokens import mint_token
from tests.fuzz.targets import (
    ACCOUNT_SID,
    ED_KID,
    ED_PRIVATE_PEM,
    ES_KID,
    ES_PRIVATE_PEM,
    HS_KID,
    HS_SECRET,
    OTHER_KID,
    REVOKED_KID,
    TOKEN_NOW,
    VALID_FRAMES,
)

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"
DICTS = HERE / "dicts"


def frames_json() -> list[bytes]:
    seeds = [json.dumps(f).encode() for f in VALID_FRAMES]
    return seeds + [b'{"type":"ping","id":"' + b"x" * 65 + b'"}', b"[]", b'{"type":1}', b'{"type":"nope"}']


def frames_msgpack() -> list[bytes]:
    return [msgpack.packb(f, use_bin_type=True) for f in VALID_FRAMES] + [b"\x90", b"\x81\xa4type\x01"]


def tokens() -> list[bytes]:
    raw = [
        mint_token(key_sid=HS_KID, account_sid=ACCOUNT_SID, identity="alice", secret=HS_SECRET, now=TOKEN_NOW),
        mint_token(key_sid=ES_KID, account_sid=ACCOUNT_SID, identity="bob", private_key_pem=ES_PRIVATE_PEM, algorithm="ES256", now=TOKEN_NOW),
        mint_token(key_sid=ED_KID, account_sid=ACCOUNT_SID, identity="carol", private_key_pem=ED_PRIVATE_PEM, algorithm="EdDSA", now=TOKEN_NOW),
        mint_token(key_sid=REVOKED_KID, account_sid=ACCOUNT_SID, identity="alice", secret=HS_SECRET, now=TOKEN_NOW),
    ]
    header = {"typ": "JWT", "alg": "HS256", "cty": "twilio-fpa;v=1"}
    grants = {"identity": "alice", "presence": {"publish": True, "subscribe": ["team-*", "bob"]},
              "voice": {"incoming": {"allow": True}, "outgoing": {"application_sid": "AP" + "0" * 32, "params": {"a": "b"}}}}
    payloads = [
        {"jti": "j", "iss": HS_KID, "sub": ACCOUNT_SID, "nbf": TOKEN_NOW, "exp": TOKEN_NOW + 3600, "grants": grants},
        {"jti": "j", "iss": HS_KID, "sub": ACCOUNT_SID, "iat": TOKEN_NOW - 10, "exp": TOKEN_NOW + 60, "grants": {"identity": "x"}},
        {"jti": "j", "iss": OTHER_KID, "sub": ACCOUNT_SID, "exp": TOKEN_NOW + 60, "grants": {"identity": "x"}},
        {"jti": "j", "iss": HS_KID, "sub": ACCOUNT_SID, "exp": TOKEN_NOW - 600, "grants": {"identity": "x"}},
    ]
    signed = [b"\x01" + json.dumps(header).encode() + b"\n" + json.dumps(p).encode() for p in payloads]
    return [b"\x00" + t.encode() for t in raw] + signed


INSTRUCTIONS = [
    "<Response/>",
    '<?xml version="1.0" encoding="UTF-8"?><Response><Dial timeout="20" action="/next" method="GET" callerId="+15550001111">'
    '<Client statusCallback="https://example.com/s" statusCallbackEvent="ringing answered">alice<Parameter name="k" value="v"/></Client>'
    "<Number sendDigits=\"12w#\">+15550100001</Number></Dial></Response>",
    '<Response><Dial sequential="true" answerOnBridge="true" timeLimit="600" hangupOnStar="false">+15550100002</Dial></Response>',
    '<Response><Say voice="alice" language="en-US" loop="2">Hello</Say><Play loop="1">https://example.com/a.mp3</Play><Pause length="2"/></Response>',
    '<Response><Gather input="dtmf speech" numDigits="4" finishOnKey="#" timeout="5" action="/gather"><Say>Press</Say></Gather></Response>',
    '<Response><Record maxLength="30" playBeep="true" action="/rec"/><Hangup/></Response>',
    '<Response><Reject reason="busy"/></Response>',
    '<Response><Redirect method="POST">/other</Redirect></Response>',
    '<Response><Message to="+15550100001" from="+15550001111" action="/m">Hi there</Message></Response>',
    "<Response><Sms>old</Sms></Response>",
    "<Response><Dial><Sip>sip:x@y</Sip></Dial></Response>",
    '<!DOCTYPE r [<!ENTITY a "x">]><Response>&a;</Response>',
]


def smpp() -> list[bytes]:
    receipt = DeliverSm(sequence_number=7, esm_class=ESM_TYPE_DELIVERY_RECEIPT, short_message=(
        b"id:0x1a2b sub:001 dlvrd:001 submit date:2601011200 done date:260101120105 stat:DELIVRD err:000 text:hello"))
    receipt_tlv = DeliverSm(sequence_number=8, esm_class=ESM_TYPE_DELIVERY_RECEIPT,
                            tlvs=((Tag.RECEIPTED_MESSAGE_ID, b"1a2b\x00"), (Tag.MESSAGE_STATE, b"\x02"), (Tag.NETWORK_ERROR_CODE, b"\x03\x00\x01")))
    parts = sms.split("hello " * 40)
    mo = [DeliverSm(sequence_number=10 + i, source_addr="15550100001", source_addr_ton=1, esm_class=ESM_UDHI,
                    short_message=sms.udh_concat(9, len(parts), i) + sms.gsm7_encode(part)) for i, part in enumerate(parts, start=1)]
    mo_ucs2 = DeliverSm(sequence_number=20, data_coding=8, short_message="héllo ☃".encode("utf-16-be"))
    mo_sar = DeliverSm(sequence_number=21, short_message=b"part", tlvs=((Tag.SAR_MSG_REF_NUM, b"\x00\x07"), (Tag.SAR_TOTAL_SEGMENTS, b"\x02"), (Tag.SAR_SEGMENT_SEQNUM, b"\x01")))
    pdus = [
        BindTransceiver(sequence_number=1, system_id="esme", password="secret"),
        BindTransceiverResp(sequence_number=1, system_id="smsc", tlvs=((Tag.SC_INTERFACE_VERSION, b"\x34"),)),
        SubmitSm(sequence_number=2, source_addr="15550001111", destination_addr="15550100001", registered_delivery=1, short_message=b"hi"),
        SubmitSmResp(sequence_number=2, message_id="1a2b"),
        EnquireLink(sequence_number=3), Unbind(sequence_number=4), GenericNack(sequence_number=5, command_status=3),
        receipt, receipt_tlv, mo_ucs2, mo_sar,
    ]
    seeds = [b"\x00" + p.encode() for p in pdus]
    seeds.append(b"\x00" + b"".join(p.encode() for p in mo))
    seeds.append(b"\x05" + receipt.encode() + EnquireLink(sequence_number=9).encode())  # split every 5 octets
    return seeds


def webhooks() -> list[bytes]:
    # Byte 0: route (Status, Messages, Voice) + 3 * content type (json, urlencoded, multipart, text); byte 1: auth mode.
    json_ct, form_ct, multipart_ct = 0, 3, 6
    return [
        bytes((0 + json_ct, 0)) + b'{"id": "OB-1", "status": "delivered", "error_code": 30003, "timestamp": 1800000000}',
        bytes((0 + form_ct, 0)) + b"id=OB-1&status=undelivered&error_code=30005&timestamp=1800000000.5",
        bytes((0 + multipart_ct, 0)) + b'--fuzzboundary\r\nContent-Disposition: form-data; name="id"\r\n\r\nOB-1\r\n'
        b'--fuzzboundary\r\nContent-Disposition: form-data; name="status"\r\n\r\nsent\r\n--fuzzboundary--\r\n',
        bytes((1 + form_ct, 0)) + b"From=%2B15550100001&To=%2B15550001111&Body=hello&MediaUrl0=https%3A%2F%2Fexample.com%2Fa.png",
        bytes((2 + form_ct, 0)) + b"From=%2B15550100001&To=%2B15550001111&Sdp=v%3D0",
        bytes((0 + json_ct, 3)) + b"Basic Y2FycmllcjpmdXp6LWluZ3Jlc3MtcGFzc3dvcmQtMDEyMw==\n" + b'{"id": "x", "status": "sent"}',
        bytes((0 + json_ct, 1)) + b"{}",
    ]


def carrier_answer() -> list[bytes]:
    def status(code: int) -> bytes:
        return (code - 200).to_bytes(2, "big")

    return [
        status(200) + b'{"id": "c-1"}', status(201) + b'{"message_id": 12345}', status(202) + b"not json",
        status(429) + b'{"error_code": 30001}', status(400) + b'{"error_code": "30005"}', status(503) + b"", status(500) + b"[]",
    ]


def config() -> list[bytes]:
    return [b"", b'[server]\nport = 8081\n[engine]\nkind = "redis"\nurl = "redis://localhost:6379/0"\n',
            b'[[accounts]]\nsid = "AC' + b"0" * 32 + b'"\nauth_token = "0123456789abcdef"\n']


SEEDS = {
    "frames_json": frames_json,
    "frames_msgpack": frames_msgpack,
    "tokens": tokens,
    "instructions": lambda: [d.encode() for d in INSTRUCTIONS],
    "smpp": smpp,
    "webhooks": webhooks,
    "carrier_answer": carrier_answer,
    "config": config,
}

# Words libFuzzer splices into inputs (-dict=): the grammar the C decoders know and we cannot instrument.
DICTIONARIES = {
    "frames_json": ['"type"', '"id"', '"token"', '"status"', '"identities"', '"call"', '"payload"', '"register"', '"presence"',
                    '"subscribe"', '"signal"', '"ack"', "{", "}", "[", "]", ":", ",", "null", "true", "false", "NaN", "1e999", '"CA'],
    "frames_msgpack": ["\xa4type", "\xa2id", "\xa5token", "\xa4ping", "\xa8register", "\x81", "\x82", "\x91", "\xc0", "\xc3", "\xcb", "\xcf"],
    "tokens": ['"alg"', '"HS256"', '"ES256"', '"EdDSA"', '"none"', '"typ"', '"cty"', '"crit"', '"kid"', '"iss"', '"sub"', '"jti"',
               '"exp"', '"nbf"', '"iat"', '"grants"', '"identity"', '"presence"', '"voice"', '"subscribe"', "1e999", "eyJ", "."],
    "instructions": ["<Response>", "</Response>", "<Dial>", "</Dial>", "<Client>", "<Number>", "<Say>", "<Gather>", "<Play>",
                     "<Record/>", "<Hangup/>", "<Redirect>", "<Message>", "<Parameter", "<Pause", "<Reject", ' timeout="',
                     ' action="', ' method="', ' url="', ' statusCallback="', "<!DOCTYPE", "<!ENTITY", "&", "<?xml", "encoding="],
    "smpp": ["\x00\x00\x00\x05", "\x00\x00\x00\x04", "\x80\x00\x00\x04", "\x00\x00\x00\x09", "\x00\x00\x00\x15", "\x00\x1e",
             "\x04\x27", "\x04\x24", "\x02\x0c", "id:", "stat:DELIVRD", "submit date:", "\x05\x00\x03", "\x06\x08\x04"],
    "webhooks": ['"id"', '"status"', '"error_code"', '"timestamp"', "delivered", "undelivered", "From=", "To=", "Body=",
                 "MediaUrl0=", "%2B1555", "Content-Disposition: form-data; name=", "--fuzzboundary", "Basic "],
    "carrier_answer": ['"id"', '"message_id"', '"error_code"', "30005", "{", "}", "[", "]"],
    "config": ["[server]", "[engine]", "[[accounts]]", "[[accounts.api_keys]]", "[[providers]]", "[[routes]]", "[messaging]",
               "sid = ", "kind = ", "missed_call_template = ", "class_shares = ", "{ env = ", "{ file = ", "nan", "inf",
               "1979-05-27T07:32:00Z", '"""', "'''"],
}


def _dict_line(word: str) -> str:
    escaped = "".join(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\' else f"\\x{ord(ch):02x}" for ch in word)
    return f'"{escaped}"'


def main() -> None:
    for parser, make in SEEDS.items():
        folder = CORPUS / parser
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        for seed in make():
            (folder / f"seed-{hashlib.sha1(seed).hexdigest()[:12]}").write_bytes(seed)
    DICTS.mkdir(exist_ok=True)
    for parser, words in DICTIONARIES.items():
        (DICTS / f"{parser}.dict").write_text("# libFuzzer dictionary, written by python -m tests.fuzz.seeds\n"
                                              + "\n".join(_dict_line(w) for w in words) + "\n")


if __name__ == "__main__":
    main()
