"""Typed application state (aiohttp ``AppKey``s) shared by the HTTP handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..accounts import AccountRegistry
from ..presence.service import PresenceService

if TYPE_CHECKING:
    from ..engines.calls import CallStore
    from ..node import Node

ACCOUNTS = web.AppKey("accounts", AccountRegistry)
PRESENCE = web.AppKey("presence", PresenceService)
NODE: web.AppKey["Node"] = web.AppKey("node")
CALLS: web.AppKey["CallStore"] = web.AppKey("calls")

# Message records and carrier providers (http/messages.py, http/ingress_carrier.py).
if TYPE_CHECKING:
    from ..carriers.base import Provider
    from ..engines.ports import MessageStore

MESSAGES: web.AppKey["MessageStore"] = web.AppKey("messages")
PROVIDERS: web.AppKey["dict[str, Provider]"] = web.AppKey("providers")
