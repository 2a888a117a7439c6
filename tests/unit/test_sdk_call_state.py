"""The SDK's call and message pieces without a server: a Call driven by the
frames the reader would hand it, the in-app message inbox (de-duplication,
when acks go out), the item streams, and the argument checks."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Callable

import pytest

from presence_client import CallError, CallState, Message, SessionInfo
from presence_client import _validate
from presence_client._calls import CallDesk
from presence_client._inbox import SEEN_MESSAGES, Inbox
from presence_client.calls import Call
from presence_client.stream import ItemStream
from protocol.frames import JSON_CODEC

# -- fakes ------------------------------------------------------------------------------------


class FakeSocket:
    def __init__(self) -> None:
        self.data: list[str | bytes] = []

    async def send(self, data: str | bytes) -> None:
        self.data.append(data)


class FakeLink:
    """Stands in for a Link: records frames, never answers."""

    def __init__(self, name: str = "link") -> None:
        self.name = name
        self.ended = False
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.sent: list[dict[str, Any]] = []
        self.codec = JSON_CODEC
        self.ws = FakeSocket()
        self.info = SessionInfo("SE" + "0" * 32, "AC" + "0" * 32, "bob", 25, 60, 0, False, 65536)

    async def send(self, frame: dict[str, Any]) -> None:
        self.sent.append(frame)


class FakeCore:
    """The parts of ClientCore the desk and the inbox use."""

    def __init__(self) -> None:
        self.on_invite: Callable[[Call], Any] | None = None
        self.on_message: Callable[[Message], Any] | None = None
        self._closing = False
        self._closed_event = asyncio.Event()
        self._request_timeout = 1.0
        self._ids = itertools.count(1)
        self.acks: list[tuple[str, str]] = []  # (link name, sid)
        self.reported: list[Exception] = []
        self.tasks: list[asyncio.Task[Any]] = []

    def _call(self, fn: Callable[..., Any] | None, *args: Any, then: Callable[[], None] | None = None, **_: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception as exc:
            self.reported.append(exc)
            return
        if then is not None:
            then()

    def _spawn(self, coro: Any) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    async def _link_request(self, link: FakeLink, frame: dict[str, Any], timeout: float | None = None) -> None:
        assert frame["type"] == "ack"
        self.acks.append((link.name, frame["sid"]))

    def _report(self, exc: Exception) -> None:
        self.reported.append(exc)

    async def settle(self) -> None:
        await asyncio.gather(*self.tasks)
        self.tasks.clear()


def incoming_call(desk: CallDesk, link: FakeLink, sid: str = "CA" + "1" * 32) -> Call:
    desk.on_frame(link, {"type": "invite", "call": sid, "parent_call": "CA" + "0" * 32, "from": "client:alice", "to": "client:bob", "params": {"k": "v"}})  # type: ignore[arg-type]
    (call,) = desk.active
    return call


def message_frame(sid: str = "SM" + "a" * 32, body: str = "hi") -> dict[str, Any]:
    return {"type": "message", "sid": sid, "from": "+15557770000", "to": "client:alice", "body": body, "media": []}


# -- calls --------------------------------------------------------------------------------------


async def test_outgoing_call_follows_progress_frames() -> None:
    core, link = FakeCore(), FakeLink()
    desk = CallDesk(core)  # type: ignore[arg-type]
    call = Call(desk, link, sid="CA" + "2" * 32, direction="outgoing", from_="client:alice", to="client:bob", state=CallState.INITIATED)  # type: ignore[arg-type]
    desk._calls[call.sid] = call
    answered = asyncio.ensure_future(call.wait_answered())
    desk.on_frame(link, {"type": "call_progress", "call": call.sid, "status": "ringing"})  # type: ignore[arg-type]
    assert call.state is CallState.RINGING
    desk.on_frame(link, {"type": "call_progress", "call": call.sid, "status": "answered"})  # type: ignore[arg-type]
    await asyncio.wait_for(answered, 1)
    desk.on_frame(link, {"type": "signal", "call": call.sid, "payload": {"sdp": "x"}})  # type: ignore[arg-type]
    desk.on_frame(link, {"type": "call_warning", "call": call.sid, "code": 13000, "message": "<Say> skipped"})  # type: ignore[arg-type]
    assert call.warnings[0].code == 13000
    desk.on_frame(link, {"type": "hangup", "call": call.sid, "reason": "remote_hangup"})  # type: ignore[arg-type]
    assert call.ended and call.end_reason == "remote_hangup" and call.answered and desk.active == ()
    assert [p async for p in call.signals()] == [{"sdp": "x"}]  # queued ones are read, then the stream ends
    await core.settle()
    # The caller's own leg is hung up too, so the instructions stop for it.
    assert link.sent == [{"type": "hangup", "call": call.sid}]
    # Frames about an ended call change nothing.
    desk.on_frame(link, {"type": "call_progress", "call": call.sid, "status": "completed", "reason": "hangup"})  # type: ignore[arg-type]
    assert call.end_reason == "remote_hangup"


async def test_call_that_ends_unanswered() -> None:
    core, link = FakeCore(), FakeLink()
    desk = CallDesk(core)  # type: ignore[arg-type]
    call = Call(desk, link, sid="CA" + "3" * 32, direction="outgoing", from_="client:alice", to="bob", state=CallState.INITIATED)  # type: ignore[arg-type]
    desk._calls[call.sid] = call
    desk.on_frame(link, {"type": "call_progress", "call": call.sid, "status": "completed", "reason": "busy"})  # type: ignore[arg-type]
    with pytest.raises(CallError) as err:
        await call.wait_answered(timeout=1)
    assert err.value.end_reason == "busy" and err.value.call_sid == call.sid
    assert await call.wait_ended(timeout=1) == "busy"
    with pytest.raises(TimeoutError):
        fresh = Call(desk, link, sid="CA" + "4" * 32, direction="outgoing", from_="a", to="b", state=CallState.INITIATED)  # type: ignore[arg-type]
        await fresh.wait_ended(timeout=0.01)


async def test_incoming_call_cancelled_and_lost() -> None:
    core, link = FakeCore(), FakeLink()
    invited: list[Call] = []
    core.on_invite = invited.append
    desk = CallDesk(core)  # type: ignore[arg-type]
    stream = desk.incoming(10)
    call = incoming_call(desk, link)
    assert invited == [call] and stream.pending() == [call]
    assert call.remote == "client:alice" and call.params == {"k": "v"} and call.state is CallState.RINGING
    incoming_call(desk, link)  # a repeated invite: the same call
    assert invited == [call]
    desk.on_frame(link, {"type": "cancel", "call": call.sid, "reason": "answered_elsewhere"})  # type: ignore[arg-type]
    assert call.end_reason == "answered_elsewhere"
    with pytest.raises(CallError, match="answered_elsewhere"):
        await call.accept()

    other = incoming_call(desk, link, "CA" + "5" * 32)
    elsewhere = FakeLink("other")
    desk.on_frame(elsewhere, {"type": "cancel", "call": other.sid, "reason": "timeout"})  # type: ignore[arg-type]
    assert not other.ended  # a frame from another connection is not about this call
    desk.link_lost(link)  # type: ignore[arg-type]
    assert other.end_reason == "connection_lost"


async def test_accept_waiting_for_its_reply_ends_with_the_call() -> None:
    """The server may never answer an accept for a call that was cancelled at
    the same moment; the cancel ends the wait."""
    core, link = FakeCore(), FakeLink()
    desk = CallDesk(core)  # type: ignore[arg-type]
    call = incoming_call(desk, link)
    accepting = asyncio.ensure_future(call.accept())
    await asyncio.sleep(0.01)
    assert not accepting.done() and '"type":"accept"' in str(link.ws.data[0])
    assert len(link.pending) == 1
    desk.on_frame(link, {"type": "cancel", "call": call.sid, "reason": "caller_hangup"})  # type: ignore[arg-type]
    with pytest.raises(CallError) as err:
        await asyncio.wait_for(accepting, 1)
    assert err.value.end_reason == "caller_hangup" and link.pending == {}


async def test_signal_over_the_frame_limit_is_refused_before_sending() -> None:
    core, link = FakeCore(), FakeLink()
    desk = CallDesk(core)  # type: ignore[arg-type]
    call = incoming_call(desk, link)
    call._set_answered()
    with pytest.raises(ValueError, match="at most 65536 bytes"):
        await call.send_signal({"sdp": "x" * 65536})
    assert link.ws.data == []


# -- messages ------------------------------------------------------------------------------------


async def test_message_handed_over_once_and_every_copy_acked() -> None:
    core, link = FakeCore(), FakeLink()
    got: list[Message] = []
    core.on_message = got.append
    inbox = Inbox(core)  # type: ignore[arg-type]
    inbox.on_frame(link, message_frame())  # type: ignore[arg-type]
    inbox.on_frame(link, message_frame())  # type: ignore[arg-type]
    await core.settle()
    assert len(got) == 1 and got[0].from_ == "+15557770000"
    assert core.acks == [("link", "SM" + "a" * 32)] * 2


async def test_stream_acks_when_read_and_early_copies_wait_for_it() -> None:
    core, first, second = FakeCore(), FakeLink("first"), FakeLink("second")
    inbox = Inbox(core)  # type: ignore[arg-type]
    stream = inbox.stream(10)
    inbox.on_frame(first, message_frame())  # type: ignore[arg-type]
    inbox.on_frame(second, message_frame())  # type: ignore[arg-type]  # a copy before the app read the first
    await core.settle()
    assert core.acks == []  # nobody has read it yet
    message = await stream.get(timeout=1)
    await core.settle()
    assert message.body == "hi" and core.acks == [("first", message.sid), ("second", message.sid)]
    assert stream.pending() == []


async def test_no_consumer_no_ack_and_a_later_copy_is_delivered() -> None:
    core, link = FakeCore(), FakeLink()
    inbox = Inbox(core)  # type: ignore[arg-type]
    inbox.on_frame(link, message_frame())  # type: ignore[arg-type]
    await core.settle()
    assert core.acks == []
    got: list[Message] = []
    core.on_message = got.append
    inbox.on_frame(link, message_frame())  # type: ignore[arg-type]
    await core.settle()
    assert len(got) == 1 and len(core.acks) == 1


async def test_failing_callback_does_not_ack_and_malformed_is_reported() -> None:
    core, link = FakeCore(), FakeLink()

    def broken(message: Message) -> None:
        raise RuntimeError("boom")

    core.on_message = broken
    inbox = Inbox(core)  # type: ignore[arg-type]
    inbox.on_frame(link, message_frame())  # type: ignore[arg-type]
    inbox.on_frame(link, {"type": "message", "body": "no sid"})  # type: ignore[arg-type]
    await core.settle()
    assert core.acks == [] and len(core.reported) == 2


async def test_seen_sids_are_bounded() -> None:
    core, link = FakeCore(), FakeLink()
    got: list[Message] = []
    core.on_message = got.append
    inbox = Inbox(core)  # type: ignore[arg-type]
    for i in range(SEEN_MESSAGES + 1):
        inbox.on_frame(link, message_frame(f"SM{i:032x}"))  # type: ignore[arg-type]
    assert len(inbox._seen) == SEEN_MESSAGES
    inbox.on_frame(link, message_frame(f"SM{0:032x}"))  # type: ignore[arg-type]  # forgotten: delivered again
    assert len(got) == SEEN_MESSAGES + 2
    await core.settle()


# -- streams and argument checks ---------------------------------------------------------------------


async def test_item_stream_drops_oldest_and_ends() -> None:
    taken: list[int] = []
    stream: ItemStream[int] = ItemStream(None, 2, taken.append)
    for i in range(3):
        assert stream._put(i)
    assert stream.dropped == 1
    assert await stream.get(timeout=1) == 1
    stream.close()
    assert not stream._put(9)
    assert [i async for i in stream] == [2]
    assert taken == [1, 2]
    with pytest.raises(StopAsyncIteration):
        await stream.get(timeout=1)


@pytest.mark.parametrize(
    ("value", "error"),
    [(None, TypeError), (42, TypeError), ("client:", ValueError), ("client:a b", ValueError), ("+1", ValueError), ("x" * 129, ValueError)],
)
def test_destination_refused(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        _validate.destination(value)


@pytest.mark.parametrize("value", ["client:bob", "bob", "+15551230001", "Client:bob"])
def test_destination_accepted(value: str) -> None:
    assert _validate.destination(value) == value


def test_call_params_and_payload_checks() -> None:
    assert _validate.call_params(None) == {}
    assert _validate.call_params({"a": "b"}) == {"a": "b"}
    with pytest.raises(TypeError):
        _validate.call_params("a=b")
    with pytest.raises(ValueError):
        _validate.call_params({"x" * 65: "v"})
    assert _validate.signal_payload({"sdp": "x"}) == {"sdp": "x"}
    with pytest.raises(TypeError):
        _validate.signal_payload(["sdp"])
