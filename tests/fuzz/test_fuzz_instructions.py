"""Instruction documents: random verbs, attributes, nesting and text (tests/fuzz/targets.py)."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol.instructions import Dial, parse_instructions
from tests.fuzz.targets import Refused, feed_instructions


def examples(n: int) -> settings:
    """The suite's ``fuzz`` profile (conftest.py) with this test's share of the time budget."""
    return settings(settings.get_profile("fuzz"), max_examples=n)


VERBS = ["Dial", "Say", "Play", "Pause", "Gather", "Record", "Hangup", "Reject", "Redirect", "Message",
         "Sms", "Connect", "Enqueue"]  # the last three: known to the platform, not supported here
NOUNS = ["Client", "Number", "Parameter", "Identity", "Sip", "Conference", "Say", "Play", "Pause", "Body", "Media"]
ATTRIBUTES = ["action", "answerOnBridge", "callerId", "digits", "finishOnKey", "from", "hangupOnStar", "input", "language",
              "length", "loop", "maxLength", "method", "name", "numDigits", "playBeep", "reason", "sendDigits", "sequential",
              "statusCallback", "statusCallbackEvent", "statusCallbackMethod", "timeLimit", "timeout", "to", "url", "value",
              "voice", "Timeout"]
ATTRIBUTE_VALUES = ["", " ", "true", "FALSE", "GET", "post", "PUT", "0", "5", "007", "99999999999", "-1", "1.5", "#", "*#",
                    "12w#", "dtmf speech", "initiated ringing answered completed", "bogus", "busy", "rejected",
                    "https://example.com/next", "/relative", "javascript:alert(1)", "file:///etc/passwd", "http://[::1",
                    "http://", "a\tb", "alice", "+15550100001", "client:alice"]
TEXTS = ["", " ", "alice", "client:alice", "+15550100001", "hello world", "https://example.com/a.mp3", "bad identity!"]


@dataclass(frozen=True)
class Node:
    tag: str
    attributes: tuple[tuple[str, str], ...]
    text: str
    children: tuple[Node, ...]
    tail: str

    def xml(self) -> str:
        attrs = "".join(f" {name}={quoteattr(value)}" for name, value in self.attributes)
        inner = escape(self.text) + "".join(child.xml() for child in self.children)
        return f"<{self.tag}{attrs}>{inner}</{self.tag}>{escape(self.tail)}"


tag_names = st.text(alphabet="abcdefxyzABCDEFXYZ_", min_size=1, max_size=8)
texts = st.sampled_from(TEXTS) | st.text(max_size=12)
attributes = st.lists(
    st.tuples(st.sampled_from(ATTRIBUTES) | tag_names, st.sampled_from(ATTRIBUTE_VALUES) | st.text(max_size=12)),
    max_size=3, unique_by=lambda pair: pair[0],
).map(tuple)


def nodes(tags: st.SearchStrategy[str], depth: int) -> st.SearchStrategy[Node]:
    children = st.lists(nodes(st.sampled_from(NOUNS) | tag_names, depth - 1), max_size=2).map(tuple) if depth else st.just(())
    tails = st.just("") | texts
    return st.builds(Node, tags, attributes, texts, children, tails)


documents = st.lists(nodes(st.sampled_from(VERBS) | tag_names, 2), max_size=3).map(
    lambda verbs: "<Response>" + "".join(v.xml() for v in verbs) + "</Response>"
)


@examples(200)
@given(documents, st.sampled_from(["", '<?xml version="1.0" encoding="UTF-8"?>', '<?xml version="1.0"?>\n']))
def test_random_verbs_attributes_and_nesting_parse_or_are_refused_with_a_code(body: str, declaration: str) -> None:
    feed_instructions((declaration + body).encode())


@examples(250)
@given(st.binary(max_size=300) | st.text(max_size=300))
@example(b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><Response>&b;</Response>')
@example(b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Response><Say>&x;</Say></Response>')
@example(b"<!DOCTYPE html><html><body>Not Found</body></html>")
@example(b'<?xml version="1.0" encoding="x-no-such-codec"?><Response/>')
@example(b'<?xml version="1.0" encoding="utf-16"?><Response/>')
@example("<Response><Say>\ud800</Say></Response>")  # a lone surrogate in a str document
@example(b"<Response>" + b"<Gather>" * 5000 + b"</Gather>" * 5000 + b"</Response>")
@example(b"<Response/>" + b" " * 70_000)  # over the size limit
def test_raw_documents_parse_or_are_refused_with_a_code(document: bytes | str) -> None:
    feed_instructions(document)


@examples(80)
@given(documents, st.integers(0, 400), st.binary(max_size=8))
def test_documents_cut_or_spliced_anywhere(body: str, at: int, splice: bytes) -> None:
    raw = body.encode()
    at = min(at, len(raw))
    feed_instructions(raw[:at] + splice + raw[at:])
    feed_instructions(raw[:at])


@examples(100)
@given(st.lists(st.text(alphabet="abcXYZ019_.@+-", max_size=20).map(lambda s: "a" + s), min_size=1, max_size=10))
def test_dial_of_clients_parses_to_those_identities(identities: list[str]) -> None:
    # The encoder here is the document writer above: what is written is what is read.
    clients = "".join(f"<Client>{escape(i)}</Client>" for i in identities)
    document = f"<Response><Dial>{clients}</Dial></Response>".encode()
    assert feed_instructions(document) == "accepted"
    (dial,) = parse_instructions(document).verbs
    assert isinstance(dial, Dial)
    assert [noun.identity for noun in dial.nouns] == identities  # type: ignore[attr-defined]


def test_size_limit_is_a_refusal_with_its_code() -> None:
    assert feed_instructions(b"<Response/>" + b" " * 70_000) == Refused(11750, "document is 70011 bytes; the limit is 65536")
