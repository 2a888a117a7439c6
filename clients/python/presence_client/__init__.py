"""Python asyncio SDK for the presence server.

    from presence_client import PresenceClient

    async with PresenceClient("ws://127.0.0.1:8080/v1/connect", get_token) as client:
        await client.subscribe("bob")
        async for update in client.presence_updates():
            print(update.identity, update.status)

See clients/python/README.md for the whole API and the reconnect and token
renewal rules.
"""

from protocol.presence import Status

from .backoff import Backoff
from .client import ClientState, PresenceClient, TokenSource, UpdateCallback
from .clock import Clock, SystemClock
from .errors import (
    NotConnectedError,
    PresenceConnectionError,
    PresenceError,
    RequestTimeoutError,
    TokenError,
)
from .models import DeviceSession, Disconnect, Presence, PresenceUpdate, SessionInfo
from .stream import PresenceUpdateStream

__all__ = [
    "Backoff",
    "ClientState",
    "Clock",
    "DeviceSession",
    "Disconnect",
    "NotConnectedError",
    "Presence",
    "PresenceClient",
    "PresenceConnectionError",
    "PresenceError",
    "PresenceUpdate",
    "PresenceUpdateStream",
    "RequestTimeoutError",
    "SessionInfo",
    "Status",
    "SystemClock",
    "TokenError",
    "TokenSource",
    "UpdateCallback",
]
