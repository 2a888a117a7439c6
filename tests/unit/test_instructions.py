"""Instruction documents: every verb, every refusal, and documents from the official library."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from xml.etree.ElementTree import Element

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import Dial, Gather, Say, VoiceResponse

from protocol.instructions import (
    DEFAULT_MAX_BYTES,
    VERBS,
    Client,
    InstructionError,
    Instructions,
    Message,
    Number,
    Parameter,
    Pause,
    Play,
    Record,
    Redirect,
    Reject,
    Verb,
    check_content_type,
    parse_instructions,
    register_verb,
    resolve_url,
)
from protocol.instructions import Dial as DialVerb
from protocol.instructions import Gather as GatherVerb
from protocol.instructions import Hangup as HangupVerb
from protocol.instructions import Say as SayVerb

DOCS = Path(__file__).parents[2] / "docs"


def parse(body: str) -> Instructions:
    return parse_instructions(f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>')


def one(body: str) -> Verb:
    (verb,) = parse(body).verbs
    return verb


def refused(document: str | bytes, code: int, *fragments: str, **kwargs: int) -> InstructionError:
    with pytest.raises(InstructionError) as info:
        parse_instructions(document, **kwargs)
    assert info.value.error_code == code, info.value
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    return info.value


def refused_body(body: str, *fragments: str) -> InstructionError:
    return refused(f"<Response>{body}</Response>", 12200, *fragments)


# -- every verb, well-formed ---------------------------------------------------------------


def test_empty_response_is_no_verbs() -> None:
    assert parse("").verbs == ()
    assert parse_instructions(b"<Response/>").verbs == ()
    assert len(parse_instructions("<Response>\n  <!-- nothing -->\n</Response>")) == 0


def test_dial_client_with_every_attribute() -> None:
    verb = one(
        '<Dial action="/after" method="get" timeout="20" callerId="+15550001111" sequential="true"'
        ' answerOnBridge="TRUE" record="record-from-answer" hangupOnStar="false" timeLimit="600">'
        '  <Client url="https://app.example/whisper" method="GET" statusCallback="/cb"'
        '          statusCallbackEvent="answered initiated" statusCallbackMethod="GET">alice</Client>'
        "  <Client><Identity>bob</Identity>"
        '    <Parameter name="ticket" value="42"/><Parameter name="empty" value=""/></Client>'
        "</Dial>"
    )
    assert verb == DialVerb(
        nouns=(
            Client(
                identity="alice",
                url="https://app.example/whisper",
                method="GET",
                status_callback="/cb",
                status_callback_event=("initiated", "answered"),
                status_callback_method="GET",
            ),
            Client(identity="bob", parameters=(Parameter("ticket", "42"), Parameter("empty", ""))),
        ),
        action="/after",
        method="GET",
        timeout=20,
        caller_id="+15550001111",
        sequential=True,
        answer_on_bridge=True,
        hangup_on_star=False,
        time_limit=600,
    )
    assert verb.media is False


def test_dial_defaults() -> None:
    verb = one("<Dial><Client>alice</Client></Dial>")
    assert verb == DialVerb(nouns=(Client(identity="alice"),))
    assert isinstance(verb, DialVerb)
    assert (verb.method, verb.timeout, verb.time_limit, verb.sequential) == ("POST", 30, 14_400, False)
    assert verb.nouns[0].status_callback_event == ("completed",)


def test_dial_number_noun_and_bare_number() -> None:
    verb = one(
        '<Dial><Number sendDigits="ww1234#" url="/w" statusCallbackEvent="ringing,completed">+15551234567</Number>'
        "<Client>alice</Client></Dial>"
    )
    assert isinstance(verb, DialVerb)
    assert verb.nouns == (
        Number(number="+15551234567", send_digits="ww1234#", url="/w", status_callback_event=("ringing", "completed")),
        Client(identity="alice"),
    )
    assert one("<Dial>\n  +15551234567\n</Dial>") == DialVerb(nouns=(Number(number="+15551234567"),))


def test_dial_client_caller_id() -> None:
    verb = one('<Dial callerId="client:alice"><Client>bob</Client></Dial>')
    assert isinstance(verb, DialVerb) and verb.caller_id == "client:alice"


def test_dial_ten_nouns_is_the_limit() -> None:
    verb = one("<Dial>" + "".join(f"<Client>u{i}</Client>" for i in range(10)) + "</Dial>")
    assert isinstance(verb, DialVerb) and len(verb.nouns) == 10


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [("1", 5), ("4", 5), ("5", 5), ("600", 600), ("3600", 600), ("99999999999999999999", 600), ("007", 7)],
)
def test_dial_timeout_is_clamped(attribute: str, expected: int) -> None:
    verb = one(f'<Dial timeout="{attribute}">+15551234567</Dial>')
    assert isinstance(verb, DialVerb) and verb.timeout == expected


def test_dial_time_limit_is_clamped_to_a_day() -> None:
    verb = one('<Dial timeLimit="100000">+15551234567</Dial>')
    assert isinstance(verb, DialVerb) and verb.time_limit == 86_400


def test_message_forms() -> None:
    assert one("<Message>  Hello\nthere  </Message>") == Message(body="Hello\nthere")
    assert one(
        '<Message to="client:alice" from="+15550001111" action="/sent" method="GET" statusCallback="https://a.example/s">'
        "<Body>Hi</Body><Media>https://a.example/cat.jpg</Media><Media>/dog.png</Media></Message>"
    ) == Message(
        body="Hi",
        media_urls=("https://a.example/cat.jpg", "/dog.png"),
        to="client:alice",
        from_="+15550001111",
        action="/sent",
        method="GET",
        status_callback="https://a.example/s",
    )
    assert one("<Message><Media>https://a.example/a.gif</Media></Message>") == Message(
        media_urls=("https://a.example/a.gif",)
    )
    assert one('<Message to="" from="">Reply</Message>') == Message(body="Reply")
    assert one('<Message to="+15551234567">x</Message>') == Message(body="x", to="+15551234567")


@pytest.mark.parametrize("sender", ["+15550001111", "client:bob", "12345", "ACME Corp", "Shop24"])
def test_message_senders(sender: str) -> None:
    verb = one(f'<Message from="{sender}">x</Message>')
    assert isinstance(verb, Message) and verb.from_ == sender


def test_message_body_of_1600_characters() -> None:
    verb = one(f"<Message>{'é' * 1600}</Message>")
    assert isinstance(verb, Message) and verb.body == "é" * 1600


def test_flow_verbs() -> None:
    assert parse(
        '<Redirect method="GET"> https://app.example/next </Redirect>'
        "<Redirect>../relative?x=1</Redirect>"
        '<Reject reason="Busy"/><Reject/>'
        "<Hangup/>"
        '<Pause length="3"/><Pause/><Pause length="86400"/>'
    ).verbs == (
        Redirect(url="https://app.example/next", method="GET"),
        Redirect(url="../relative?x=1"),
        Reject(reason="busy"),
        Reject(reason="rejected"),
        HangupVerb(),
        Pause(length=3),
        Pause(length=1),
        Pause(length=600),
    )


def test_media_verbs() -> None:
    verbs = parse(
        '<Say voice="Polly.Joanna-Neural" language="en-US" loop="2">  Hello   world </Say>'
        '<Play loop="0">https://cdn.example/tone.mp3</Play>'
        '<Play digits="ww12#"/>'
        '<Gather input="speech dtmf" action="/g" method="GET" timeout="3" numDigits="4" finishOnKey="">'
        '  <Say>Press</Say><Pause length="2"/><Play>/beep.wav</Play></Gather>'
        "<Gather/>"
        '<Record action="/r" timeout="0" maxLength="99999" finishOnKey="##*1" playBeep="false"/>'
        "<Record/>"
    ).verbs
    assert verbs == (
        SayVerb(text="Hello   world", voice="Polly.Joanna-Neural", language="en-US", loop=2),
        Play(url="https://cdn.example/tone.mp3", loop=0),
        Play(digits="ww12#"),
        GatherVerb(
            prompts=(SayVerb(text="Press"), Pause(length=2), Play(url="/beep.wav")),
            input=("dtmf", "speech"),
            action="/g",
            method="GET",
            timeout=3,
            num_digits=4,
            finish_on_key="",
        ),
        GatherVerb(),
        Record(action="/r", timeout=0, max_length=14_400, finish_on_key="#*1", play_beep=False),
        Record(),
    )
    assert [verb.media for verb in verbs] == [True] * 7
    assert GatherVerb().finish_on_key == "#" and Record().finish_on_key == "1234567890*#"


def test_say_with_ssml_is_flattened() -> None:
    verb = one(
        '<Say>Hello<break time="1s"/><emphasis level="strong">dear <w>friend</w></emphasis>'
        '<say-as interpret-as="digits">123</say-as></Say>'
    )
    assert verb == SayVerb(text="Hello dear friend 123", ssml=True)


def test_media_flags() -> None:
    media = {name for name, verb in VERBS.items() if verb.media}
    assert media == {"Say", "Play", "Gather", "Record"}
    assert {"Dial", "Message", "Redirect", "Reject", "Hangup", "Pause"} <= set(VERBS)


def test_unknown_attributes_are_ignored_and_empty_ones_mean_default() -> None:
    verb = one('<Dial ringTone="us" trim="trim-silence" referUrl="/r" timeout="" method=" ">+15551234567</Dial>')
    assert verb == DialVerb(nouns=(Number(number="+15551234567"),))


def test_comments_and_processing_instructions_are_ignored() -> None:
    verbs = parse("<!-- a --><Hangup/><?php echo 1 ?>").verbs
    assert verbs == (HangupVerb(),)


def test_instructions_is_frozen_and_iterable() -> None:
    doc = parse("<Hangup/><Pause/>")
    assert list(doc) == [HangupVerb(), Pause()]
    with pytest.raises(AttributeError):
        doc.verbs = ()  # type: ignore[misc]


def test_bytes_with_declared_encoding() -> None:
    doc = '<?xml version="1.0" encoding="ISO-8859-1"?><Response><Say>café</Say></Response>'.encode("latin-1")
    assert parse_instructions(doc).verbs == (SayVerb(text="café"),)
    doc16 = '<?xml version="1.0" encoding="UTF-16"?><Response><Say>ok</Say></Response>'.encode("utf-16")
    assert parse_instructions(doc16).verbs == (SayVerb(text="ok"),)


# -- documents written by the official helper library ------------------------------------------


def test_voice_response_from_official_library() -> None:
    response = VoiceResponse()
    dial = Dial(caller_id="+15550001111", timeout=20, answer_on_bridge=True, action="/dial-done", method="POST")
    client = dial.client(status_callback_event="ringing answered", status_callback="https://app.example/cb")
    client.identity("alice")
    client.parameter(name="ticket", value="T-1")
    dial.number("+15551234567", send_digits="1w2")
    response.append(dial)
    say = Say("Hi", voice="Polly.Joanna", language="en-US")
    say.break_(time="1s")
    say.emphasis("there", level="strong")
    response.append(say)
    gather = Gather(input="dtmf speech", num_digits=1, timeout=4, action="/menu")
    gather.say("Press one")
    gather.pause(length=1)
    gather.play("https://cdn.example/menu.mp3")
    response.append(gather)
    response.play(digits="1234")
    response.record(max_length=30, play_beep=True, finish_on_key="#")
    response.pause(length=2)
    response.redirect("/next", method="GET")
    response.reject(reason="busy")
    response.hangup()
    response.dial("+15557654321")
    response.say("bye", loop=3)

    verbs = parse_instructions(response.to_xml()).verbs
    assert verbs[0] == DialVerb(
        nouns=(
            Client(
                identity="alice",
                parameters=(Parameter("ticket", "T-1"),),
                status_callback="https://app.example/cb",
                status_callback_event=("ringing", "answered"),
            ),
            Number(number="+15551234567", send_digits="1w2"),
        ),
        action="/dial-done",
        timeout=20,
        caller_id="+15550001111",
        answer_on_bridge=True,
    )
    assert verbs[1] == SayVerb(text="Hi there", voice="Polly.Joanna", language="en-US", ssml=True)
    assert verbs[2] == GatherVerb(
        prompts=(SayVerb(text="Press one"), Pause(length=1), Play(url="https://cdn.example/menu.mp3")),
        input=("dtmf", "speech"),
        action="/menu",
        timeout=4,
        num_digits=1,
    )
    assert verbs[3:] == (
        Play(digits="1234"),
        Record(max_length=30, finish_on_key="#"),
        Pause(length=2),
        Redirect(url="/next", method="GET"),
        Reject(reason="busy"),
        HangupVerb(),
        DialVerb(nouns=(Number(number="+15557654321"),)),
        SayVerb(text="bye", loop=3),
    )


def test_messaging_response_from_official_library() -> None:
    response = MessagingResponse()
    response.message("Thanks!", to="client:alice", from_="+15550001111", status_callback="/status")
    message = response.message()
    message.body("See attached")
    message.media("https://cdn.example/a.png")
    response.redirect("https://app.example/more", method="POST")
    assert parse_instructions(str(response)).verbs == (
        Message(body="Thanks!", to="client:alice", from_="+15550001111", status_callback="/status"),
        Message(body="See attached", media_urls=("https://cdn.example/a.png",)),
        Redirect(url="https://app.example/more"),
    )


# -- refusals: the document as a whole ----------------------------------------------------------


@pytest.mark.parametrize("document", [b"", "", "   \n", b"\xef\xbb\xbf"])
def test_empty_document(document: str | bytes) -> None:
    refused(document, 12100, "not well-formed")


@pytest.mark.parametrize(
    "document",
    [
        "Hello, world",
        "<Response><Say>unclosed</Response>",
        "<Response><Say>a & b</Say></Response>",
        '<Response><Say voice=alice>x</Say></Response>',
        "<Response></Response><Response></Response>",
        "<Response><say>x</Say></Response>",
        '{"json": true}',
        "<Response><Say>&undefined;</Say></Response>",
        "<Response><x:Say>hi</x:Say></Response>",
        b"<Response><Say>\xff</Say></Response>",
    ],
)
def test_not_xml(document: str | bytes) -> None:
    refused(document, 12100)


def test_html_page_is_refused() -> None:
    page = "<!DOCTYPE html>\n<html><head><title>500</title></head><body><h1>Oops</h1></body></html>"
    refused(page, 12100, "DTDForbidden")
    refused("<html><body><p>Oops</p></body></html>", 12102, "<html>")


def test_bad_root() -> None:
    refused("<response><Say>x</Say></response>", 12102, "must be <Response>", "<response>")
    refused("<Say>x</Say>", 12102, "<Say>")


def test_external_entity_is_refused() -> None:
    xxe = (
        '<?xml version="1.0"?><!DOCTYPE Response [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<Response><Say>&x;</Say></Response>"
    )
    refused(xxe, 12100, "DTDForbidden")
    refused('<!DOCTYPE Response SYSTEM "http://evil.example/x.dtd"><Response/>', 12100)
    refused('<!DOCTYPE Response PUBLIC "-//X//Y" "http://evil.example/x.dtd"><Response/>', 12100)


def test_billion_laughs_is_refused() -> None:
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
    )
    bomb = f'<?xml version="1.0"?><!DOCTYPE lolz [{entities}]><Response><Say>&lol9;</Say></Response>'
    refused(bomb, 12100)
    refused(bomb.encode(), 12100)


def test_size_limit() -> None:
    filler = "<!--" + "x" * (50 * 1024) + "-->"
    document = f"<Response>{filler}<Hangup/></Response>"
    assert parse_instructions(document).verbs == (HangupVerb(),)  # 50 KB is under the default 64 KiB
    refused(document, 11750, "limit is 40000", max_bytes=40_000)
    big = f"<Response>{'<Pause/>' * (DEFAULT_MAX_BYTES // 8 + 1)}</Response>"
    error = refused(big, 11750)
    assert str(DEFAULT_MAX_BYTES) in error.message
    # Counted in encoded bytes, not characters.
    refused("<Response><Say>" + "é" * 600 + "</Say></Response>", 11750, max_bytes=1000)


def test_lone_surrogate_is_a_parse_failure() -> None:
    refused("<Response><Say>\ud800</Say></Response>", 12100)


def test_text_outside_verbs() -> None:
    refused_body("hello<Hangup/>", "<Response>", "outside any verb")
    refused_body("<Hangup/>trailing", "after <Hangup>")


# -- refusals: verbs and nouns ----------------------------------------------------------------


def test_unknown_verb_is_named() -> None:
    refused_body("<Speak>hi</Speak>", "<Speak>", "not a known verb")
    refused_body("<Hangup/><Dance/>", "<Dance>")


@pytest.mark.parametrize("verb", ["Connect", "Enqueue", "Leave", "Sms", "Start", "Pay", "Echo"])
def test_platform_verbs_not_supported(verb: str) -> None:
    refused_body(f"<{verb}/>", f"<{verb}>", "not supported")


def test_unknown_noun_is_named() -> None:
    refused_body("<Dial><Phone>+15551234567</Phone></Dial>", "<Dial><Phone>", "not a known noun")


@pytest.mark.parametrize(
    "noun",
    [
        "<Sip>sip:alice@example.com</Sip>",
        "<Conference>room</Conference>",
        "<Queue>support</Queue>",
        "<Application>AP123</Application>",
    ],
)
def test_unsupported_nouns(noun: str) -> None:
    name = noun[1 : noun.index(">")]
    refused_body(f"<Dial>{noun}</Dial>", f"<Dial><{name}>", "not supported")


def test_eleven_nouns_are_refused() -> None:
    nouns = "".join(f"<Client>u{i}</Client>" for i in range(11))
    refused_body(f"<Dial>{nouns}</Dial>", "<Dial>", "11 nouns", "at most 10")


def test_dial_with_nothing_to_dial() -> None:
    refused_body("<Dial/>", "<Dial>", "nothing to dial")
    refused_body("<Dial>   </Dial>", "nothing to dial")


def test_dial_mixing_text_and_nouns() -> None:
    refused_body("<Dial>+15551234567<Client>alice</Client></Dial>", "mixes")
    refused_body("<Dial><Client>alice</Client>+15551234567</Dial>", "text")


@pytest.mark.parametrize("value", ["-1", "0", "ten", "5.5", "1e3", "+5", "0x10", "٣"])
def test_dial_bad_timeout(value: str) -> None:
    refused_body(f'<Dial timeout="{value}">+15551234567</Dial>', "<Dial> attribute timeout=", repr(value))


@pytest.mark.parametrize(
    ("attribute", "fragment"),
    [
        ('method="PUT"', "method='PUT': must be GET or POST"),
        ('sequential="yes"', "sequential='yes': must be true or false"),
        ('answerOnBridge="1"', "answerOnBridge"),
        ('hangupOnStar="on"', "hangupOnStar"),
        ('timeLimit="0"', "timeLimit"),
        ('timeLimit="-5"', "timeLimit"),
        ('callerId="alice"', "callerId='alice'"),
        ('callerId="5551234567"', "callerId"),
        ('callerId="client:bad identity"', "callerId"),
        ('action="javascript:alert(1)"', "action="),
        ('action="ftp://x.example/a"', "action="),
    ],
)
def test_dial_bad_attribute(attribute: str, fragment: str) -> None:
    refused_body(f"<Dial {attribute}>+15551234567</Dial>", "<Dial> attribute", fragment)


@pytest.mark.parametrize(
    "identity",
    ["bad identity", "", "client:alice", "-alice", "a" * 122, "al/ice", "<b>", "ali\u00e9"],
)
def test_bad_identity_in_client(identity: str) -> None:
    escaped = identity.replace("<", "&lt;")
    error = refused_body(f"<Dial><Client>{escaped}</Client></Dial>", "<Dial><Client>")
    assert "identity" in error.message


def test_client_identity_rules() -> None:
    refused_body("<Dial><Client><Identity>bad one</Identity></Client></Dial>", "<Dial><Client>", "identity")
    refused_body("<Dial><Client>alice<Identity>bob</Identity></Client></Dial>", "more than one identity")
    refused_body("<Dial><Client><Identity>a</Identity><Identity>b</Identity></Client></Dial>", "more than one")
    refused_body("<Dial><Client><Parameter name='x' value='y'/></Client></Dial>", "has no identity")
    refused_body("<Dial><Client><Identity>a</Identity><Parameter value='y'/></Client></Dial>", "<Parameter>", "name")
    refused_body("<Dial><Client><Name>a</Name></Client></Dial>", "<Dial><Client> cannot contain <Name>")
    refused_body("<Dial><Client><Identity><b/>a</Identity></Client></Dial>", "<Identity> cannot contain <b>")


@pytest.mark.parametrize(
    ("attribute", "fragment"),
    [
        ('statusCallbackEvent="initiated hungup"', "hungup not in"),
        ('statusCallbackMethod="DELETE"', "statusCallbackMethod"),
        ('method="HEAD"', "method="),
        ('url="file:///etc/passwd"', "url="),
        ('statusCallback="mailto:a@b.example"', "statusCallback="),
    ],
)
def test_client_bad_attribute(attribute: str, fragment: str) -> None:
    refused_body(f"<Dial><Client {attribute}>alice</Client></Dial>", "<Dial><Client> attribute", fragment)


@pytest.mark.parametrize("number", ["5551234567", "+0123456", "+1555123456789012", "+1 555 123 4567", "+1-555", "+", ""])
def test_bad_e164_in_number(number: str) -> None:
    refused_body(f"<Dial><Number>{number}</Number></Dial>", "<Dial><Number>", "E.164")


def test_bad_number_noun_attributes() -> None:
    refused_body('<Dial><Number sendDigits="12x">+15551234567</Number></Dial>', "sendDigits")
    refused_body("<Dial><Number><Client>a</Client></Number></Dial>", "<Dial><Number> cannot contain <Client>")


def test_bad_bare_number_in_dial() -> None:
    refused_body("<Dial>555-1234</Dial>", "<Dial>", "E.164")
    refused_body("<Dial>client:alice</Dial>", "E.164")


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "file:///etc/passwd", "ftp://files.example/t.xml", "data:text/xml,x", "http:/x", ""],
)
def test_non_http_url_in_redirect(url: str) -> None:
    refused_body(f"<Redirect>{url}</Redirect>", "<Redirect>", "URL")


def test_redirect_bad_method_and_content() -> None:
    refused_body('<Redirect method="PATCH">/x</Redirect>', "<Redirect> attribute method=")
    refused_body("<Redirect><Say>x</Say></Redirect>", "<Redirect> cannot contain <Say>")
    refused_body("<Redirect>http://x.example/a\tb</Redirect>", "control character")
    refused_body("<Redirect>http://[::1/x</Redirect>", "malformed")
    refused_body(f"<Redirect>/{'a' * 5000}</Redirect>", "longer than 4096")


def test_reject_and_hangup_refusals() -> None:
    refused_body('<Reject reason="declined"/>', "<Reject> attribute reason='declined'", "rejected, busy")
    refused_body("<Hangup>now</Hangup>", "<Hangup> cannot contain text")
    refused_body("<Hangup><Say>x</Say></Hangup>", "<Hangup> cannot contain <Say>")


@pytest.mark.parametrize("length", ["0", "-1", "1.5", "one"])
def test_pause_bad_length(length: str) -> None:
    refused_body(f'<Pause length="{length}"/>', "<Pause> attribute length=")


def test_pause_with_text() -> None:
    refused_body("<Pause>5</Pause>", "<Pause> cannot contain text")


def test_message_refusals() -> None:
    refused_body("<Message/>", "<Message> has neither a body nor <Media>")
    refused_body("<Message><Body>  </Body></Message>", "neither")
    refused_body(f"<Message>{'x' * 1601}</Message>", "1601 characters", "1600")
    refused_body("<Message>a<Body>b</Body></Message>", "more than one body")
    refused_body("<Message><Body>a</Body><Body>b</Body></Message>", "more than one body")
    media = "".join(f"<Media>https://a.example/{i}.png</Media>" for i in range(11))
    refused_body(f"<Message>{media}</Message>", "11 <Media>", "at most 10")
    refused_body("<Message><Media>file:///x.png</Media></Message>", "<Message><Media>", "URL")
    refused_body("<Message><Subject>x</Subject></Message>", "<Message> cannot contain <Subject>")
    refused_body("<Message><Body><b>x</b></Body></Message>", "<Message><Body> cannot contain <b>")
    refused_body('<Message to="alice">x</Message>', "<Message> attribute to='alice'")
    refused_body('<Message to="client:">x</Message>', "attribute to=")
    refused_body('<Message from="TooLongSender12">x</Message>', "attribute from=")
    refused_body('<Message from="12">x</Message>', "attribute from=")
    refused_body('<Message method="put">x</Message>', "attribute method=")
    refused_body('<Message statusCallback="gopher://x.example">x</Message>', "attribute statusCallback=")


def test_media_verb_refusals() -> None:
    refused_body("<Say/>", "<Say> has no text")
    refused_body(f"<Say>{'a' * 4097}</Say>", "4097 characters")
    refused_body('<Say loop="-1">x</Say>', "<Say> attribute loop=")
    refused_body('<Say voice="alice; rm">x</Say>', "<Say> attribute voice=")
    refused_body('<Say language="english please">x</Say>', "<Say> attribute language=")
    refused_body("<Say><Play>x</Play></Say>", "<Say> cannot contain <Play>")
    deep = "<s>" * 40 + "x" + "</s>" * 40
    refused_body(f"<Say>{deep}</Say>", "nested more than")
    refused_body("<Play/>", "<Play> needs a URL")
    refused_body('<Play digits="12">/a.mp3</Play>', "both")
    refused_body('<Play digits="12a"/>', "<Play> attribute digits=")
    refused_body("<Play>javascript:x</Play>", "<Play> URL")
    refused_body("<Gather>Press 1</Gather>", "<Gather> cannot contain text", "<Say>")
    refused_body("<Gather><Dial>+15551234567</Dial></Gather>", "<Gather> cannot contain <Dial>")
    refused_body("<Gather><Say>a</Say>b</Gather>", "after <Say>")
    refused_body('<Gather><Say loop="x">a</Say></Gather>', "<Gather><Say> attribute loop=")
    refused_body('<Gather input="touch"/>', "<Gather> attribute input=")
    refused_body('<Gather numDigits="0"/>', "numDigits")
    refused_body('<Gather finishOnKey="##"/>', "finishOnKey", "single key")
    refused_body('<Gather finishOnKey="a"/>', "finishOnKey")
    refused_body('<Gather timeout="-3"/>', "timeout")
    refused_body('<Record maxLength="0"/>', "<Record> attribute maxLength=")
    refused_body('<Record playBeep="maybe"/>', "playBeep")
    refused_body('<Record finishOnKey="x"/>', "finishOnKey")
    refused_body("<Record>x</Record>", "<Record> cannot contain text")


def test_deep_nesting_is_refused_not_a_crash() -> None:
    depth = 5000
    refused(f"<Response>{'<Dial>' * depth}{'</Dial>' * depth}</Response>", 12200)
    refused(f"<Response><Say>{'<s>' * depth}x{'</s>' * depth}</Say></Response>", 12200, "nested more than")


def test_refused_values_are_shortened_in_messages() -> None:
    error = refused_body(f'<Dial timeout="{"x" * 10_000}">+15551234567</Dial>', "timeout=")
    assert len(error.message) <= 300
    error = refused_body(f"<{'V' * 10_000}/>", "not a known verb")
    assert len(error.message) <= 300
    assert str(error).startswith("12200: ")


# -- helpers ----------------------------------------------------------------------------------------


def test_resolve_url() -> None:
    base = "https://app.example/voice/start?x=1"
    assert resolve_url(base, "next") == "https://app.example/voice/next"
    assert resolve_url(base, "/menu?y=2") == "https://app.example/menu?y=2"
    assert resolve_url(base, "//other.example/a") == "https://other.example/a"
    assert resolve_url(base, "http://plain.example/b") == "http://plain.example/b"
    assert resolve_url(base, "HTTPS://UP.example/c") == "https://UP.example/c"


@pytest.mark.parametrize(
    ("base", "relative"),
    [
        ("https://app.example/a", "javascript:alert(1)"),
        ("https://app.example/a", "file:///etc/passwd"),
        ("https://app.example/a", ""),
        ("file:///srv/doc.xml", "next.xml"),
        ("", "relative/only"),
        ("https://app.example/a", "http://[::1/x"),
    ],
)
def test_resolve_url_refuses(base: str, relative: str) -> None:
    with pytest.raises(InstructionError) as info:
        resolve_url(base, relative)
    assert info.value.error_code == 12200


@pytest.mark.parametrize(
    "content_type",
    ["text/xml", "application/xml; charset=utf-8", "TEXT/HTML;charset=ISO-8859-1", "application/twiml+xml"],
)
def test_content_type_accepted(content_type: str) -> None:
    check_content_type(content_type)


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/json", "audio/mpeg", "+xml"])
def test_content_type_refused(content_type: str | None) -> None:
    with pytest.raises(InstructionError) as info:
        check_content_type(content_type)
    assert info.value.error_code == 12300


def test_registry_adds_a_verb_in_one_place() -> None:
    @register_verb("Beep")
    @dataclass(frozen=True, kw_only=True)
    class Beep(Verb):
        @classmethod
        def parse(cls, element: Element, *, parent: str = "") -> Self:
            return cls()

    try:
        assert VERBS["Beep"] is Beep and Beep.tag == "Beep"
        assert parse_instructions("<Response><Beep/></Response>").verbs == (Beep(),)
        with pytest.raises(RuntimeError, match="registered twice"):
            register_verb("Beep")(Beep)
    finally:
        del VERBS["Beep"]


def test_docs_describe_every_verb_and_code() -> None:
    doc = (DOCS / "instructions.md").read_text()
    for tag in VERBS:
        assert f"<{tag}>" in doc, f"docs/instructions.md does not describe <{tag}>"
    for code in (11200, 11750, 12100, 12102, 12200, 12300):
        assert str(code) in doc, f"docs/instructions.md lacks code {code}"
    for noun in ("Client", "Number", "Identity", "Parameter", "Body", "Media", "Sip", "Conference", "Queue"):
        assert f"<{noun}>" in doc


# -- property: nothing but InstructionError escapes ----------------------------------------------

_TAGS = [*VERBS, "Response", "Client", "Number", "Identity", "Parameter", "Body", "Media", "Sip", "break", "s", "x"]
_ATTRIBUTES = [
    "action", "method", "timeout", "callerId", "sequential", "answerOnBridge", "timeLimit", "url",
    "statusCallback", "statusCallbackEvent", "statusCallbackMethod", "sendDigits", "name", "value",
    "to", "from", "reason", "length", "voice", "language", "loop", "digits", "input", "numDigits",
    "finishOnKey", "maxLength", "playBeep",
]  # fmt: skip
_VALUES = st.one_of(
    st.sampled_from(["", "0", "-1", "5", "601", "true", "FALSE", "GET", "post", "busy", "+15551234567", "client:a",
                     "https://a.example/x", "javascript:x", "dtmf speech", "#", "1w2", "en-US", "99999999999"]),
    st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=8),  # characters XML allows
)  # fmt: skip


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


@st.composite
def _elements(draw: st.DrawFn, depth: int = 0) -> str:
    tag = draw(st.sampled_from(_TAGS))
    attributes = draw(st.dictionaries(st.sampled_from(_ATTRIBUTES), _VALUES, max_size=3))
    rendered = "".join(f' {name}="{_escape(value)}"' for name, value in attributes.items())
    parts = [draw(st.sampled_from(["", " ", "+15551234567", "alice", "/next", "hi"]))]
    if depth < 3:
        for _ in range(draw(st.integers(0, 3))):
            parts.append(draw(_elements(depth + 1)))
    return f"<{tag}{rendered}>{''.join(parts)}</{tag}>"


@settings(max_examples=500)
@given(st.lists(_elements(), max_size=4))
def test_generated_documents_parse_or_raise_instruction_error(children: list[str]) -> None:
    try:
        parse_instructions("<Response>" + "".join(children) + "</Response>")
    except InstructionError as error:
        assert error.error_code in (12100, 12102, 12200)
        assert re.match(r"^1\d{4}: ", str(error))


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_instruction_error(document: bytes) -> None:
    try:
        parse_instructions(document)
    except InstructionError:
        pass


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_arbitrary_text_only_raises_instruction_error(document: str) -> None:
    try:
        parse_instructions(document)
    except InstructionError:
        pass


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_arbitrary_text_inside_a_verb_only_raises_instruction_error(text: str) -> None:
    for template in ("<Response><Say>{}</Say></Response>", "<Response><Dial>{}</Dial></Response>",
                     "<Response><Message>{}</Message></Response>", "<Response>{}</Response>"):  # fmt: skip
        try:
            parse_instructions(template.format(text), max_bytes=4096)
        except InstructionError:
            pass
