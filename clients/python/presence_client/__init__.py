"""Python asyncio SDK for the presence server.

    from presence_client import PresenceClient

    async with PresenceClient("ws://127.0.0.1:8080/v1/connect", get_token) as client:
        await client.subscribe("bob")
        async for update in client.presence_updates():
            print(update.identity, update.status)

Calls and in-app messages::

    call = await client.call("client:bob")
    await call.wait_answered()
    await call.send_signal({"type": "offer", "sdp": "..."})

    async for message in client.messages():
        print(message.from_, message.body)

See clients/python/README.md for the whole API, the reconnect and token
renewal rules, and the call and message delivery rules.
"""

from protocol.presence import Status

from .backoff import Backoff
from .calls import Call, CallDirection, CallState, SignalCallback, StateCallback
from .client import ClientState, PresenceClient, TokenSource, UpdateCallback
from .clock import Clock, SystemClock
from .errors import (
    CallError,
    NotConnectedError,
    PresenceConnectionError,
    PresenceError,
    RequestTimeoutError,
    TokenError,
)
from .models import CallMedia, CallWarning, DeviceSession, Disconnect, Message, Presence, PresenceUpdate, SessionInfo
from .stream import ItemStream, PresenceUpdateStream

__all__ = [
    "Backoff",
    "Call",
    "CallDirection",
    "CallError",
    "CallMedia",
    "CallState",
    "CallWarning",
    "ClientState",
    "Clock",
    "DeviceSession",
    "Disconnect",
    "ItemStream",
    "Message",
    "NotConnectedError",
    "Presence",
    "PresenceClient",
    "PresenceConnectionError",
    "PresenceError",
    "PresenceUpdate",
    "PresenceUpdateStream",
    "RequestTimeoutError",
    "SessionInfo",
    "SignalCallback",
    "StateCallback",
    "Status",
    "SystemClock",
    "TokenError",
    "TokenSource",
    "UpdateCallback",
]
