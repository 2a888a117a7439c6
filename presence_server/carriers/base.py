"""The carrier provider interface, its data, and the registry of provider kinds.

A provider sends SMS/MMS through one carrier connection and turns what the
carrier reports back into :class:`DeliveryReport`. Everything above this
package (signaling fallback, the messaging pipeline, the ingress webhooks) sees
only :class:`Provider`; no carrier detail leaks past its adapter.

Adding a kind: write its module (one class meeting :class:`Provider`), and
here one small factory function and its entry in :data:`PROVIDER_KINDS`
(plus the name in ``ProviderConfig.kind``).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from protocol.errors import ErrorCode

from ..config import ProviderConfig
from ..http.auth import basic_credentials
from ..http.errors import ApiError

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web

    from ..clock import Clock


# -- Error codes ----------------------------------------------------------------------
# The Twilio messaging codes app developers already switch on (docs/carriers.md):
QUEUE_OVERFLOW = 30001  # the carrier is overloaded or rate-limits us (429, 503): try again later
ACCOUNT_SUSPENDED = 30002  # the carrier refuses our credentials (401, 403)
UNREACHABLE = 30003  # the destination handset is unreachable
MESSAGE_BLOCKED = 30004
UNKNOWN_DESTINATION = 30005
LANDLINE = 30006  # landline or unreachable carrier
FILTERED = 30007  # the carrier refused the message (any other 4xx): carrier violation / filtered
UNKNOWN_ERROR = 30008  # anything else: 5xx, timeouts, connection failures, garbage answers


@dataclass(frozen=True)
class OutboundMessage:
    message_sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    media_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class SendResult:
    """What came of one send. ``accepted=False`` with ``temporary=True`` means
    "try again later (maybe elsewhere)"; with ``temporary=False``, "do not"."""

    accepted: bool
    provider_message_id: str | None = None
    status: str = "sent"
    error_code: int | None = None
    error_message: str | None = None
    temporary: bool = False
    # Every id the carrier gave, one per part when it was split (SMPP concatenated
    # SMS), first part first; () means just (provider_message_id,). Delivery
    # reports may name any of them.
    part_ids: tuple[str, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        if self.part_ids:
            return self.part_ids
        return (self.provider_message_id,) if self.provider_message_id else ()


DELIVERY_STATUSES = frozenset({"delivered", "undelivered", "failed", "sent"})


@dataclass(frozen=True)
class DeliveryReport:
    provider: str
    provider_message_id: str
    status: str  # delivered | undelivered | failed | sent
    error_code: int | None = None
    timestamp: float | None = None

    def __post_init__(self) -> None:
        if self.status not in DELIVERY_STATUSES:
            raise ValueError(f"delivery status {self.status!r} is not one of {sorted(DELIVERY_STATUSES)}")


@dataclass(frozen=True)
class InboundMessage:
    """A message a carrier received for one of our numbers (MO)."""

    provider: str
    from_: str
    to: str
    body: str
    media_urls: tuple[str, ...] = ()
    provider_message_id: str | None = None


class CarrierEvents(Protocol):
    """Where a provider that hears from its carrier on its own connection (SMPP)
    hands what it hears: delivery reports and inbound messages. (The http
    provider's carrier calls our ingress webhooks instead.) Neither raises for a
    report or message it cannot place: it logs and drops it."""

    async def report(self, report: DeliveryReport) -> None: ...

    async def inbound(self, message: InboundMessage) -> None: ...


class Provider(Protocol):
    name: str
    kind: str
    capabilities: frozenset[str]
    config: ProviderConfig  # for authenticate_ingress (inbound credentials)

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, message: OutboundMessage) -> SendResult:
        """Hand the message to the carrier. Never raises for carrier trouble:
        returns ``accepted=False`` with an error code (and ``temporary``)."""


def capability_refusal(provider: Provider, message: OutboundMessage) -> SendResult | None:
    """A permanent refusal when the provider cannot carry this message (media
    without 'mms'); None when it can. Callers should pick a capable provider;
    this guards against sending an MMS as a bare SMS without its media."""
    if message.media_urls and "mms" not in provider.capabilities:
        return SendResult(False, error_code=UNKNOWN_ERROR, error_message=f"provider {provider.name!r} cannot send media (no 'mms' capability)")
    if not message.media_urls and "sms" not in provider.capabilities:
        return SendResult(False, error_code=UNKNOWN_ERROR, error_message=f"provider {provider.name!r} cannot send SMS (no 'sms' capability)")
    return None


# -- The registry of kinds ---------------------------------------------------------------

ProviderFactory = Callable[..., Provider]


def _outbox(config: ProviderConfig, *, data_dir: str, session: aiohttp.ClientSession | None, clock: Clock | None, public_url: str | None, events: CarrierEvents | None) -> Provider:
    from .outbox import OutboxProvider  # imported on use: outbox.py imports this module

    return OutboxProvider(config, data_dir=data_dir, clock=clock)


def _http(config: ProviderConfig, *, data_dir: str, session: aiohttp.ClientSession | None, clock: Clock | None, public_url: str | None, events: CarrierEvents | None) -> Provider:
    from .http import HttpProvider  # imported on use: http.py imports this module

    return HttpProvider(config, session=session, public_url=public_url)


def _smpp(config: ProviderConfig, *, data_dir: str, session: aiohttp.ClientSession | None, clock: Clock | None, public_url: str | None, events: CarrierEvents | None) -> Provider:
    from .smpp import SmppProvider  # imported on use: smpp.py imports this module

    return SmppProvider(config, events=events, clock=clock)


PROVIDER_KINDS: dict[str, ProviderFactory] = {
    "outbox": _outbox,
    "http": _http,
    "smpp": _smpp,
}


def build_provider(
    config: ProviderConfig,
    *,
    data_dir: str,
    session: aiohttp.ClientSession | None = None,
    clock: Clock | None = None,
    public_url: str | None = None,
    events: CarrierEvents | None = None,
) -> Provider:
    """The provider for one ``[[providers]]`` entry.

    ``session``: a shared HTTP client session (the provider makes and closes
    its own when None). ``public_url``: this server's base URL as carriers
    reach it, for the status callback URL the http provider announces.
    ``events``: where a provider with its own carrier connection (smpp) hands
    delivery reports and inbound messages.
    """
    try:
        factory = PROVIDER_KINDS[config.kind]
    except KeyError:
        raise ValueError(f"provider {config.name!r}: unknown kind {config.kind!r} (known: {', '.join(sorted(PROVIDER_KINDS))})") from None
    return factory(config, data_dir=data_dir, session=session, clock=clock, public_url=public_url, events=events)


def default_provider_configs(configured: list[ProviderConfig]) -> list[ProviderConfig]:
    """The configured providers, or - when none is - the embedded outbox, so that
    a fresh install records what it would have sent instead of losing it."""
    return list(configured) or [ProviderConfig.model_validate({"name": "outbox", "kind": "outbox"})]


# -- Carrier ingress authentication --------------------------------------------------------

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="presence-server carrier ingress"'}


def authenticate_ingress(request: web.Request, provider: Provider | ProviderConfig) -> None:
    """Require the provider's inbound credentials (HTTP Basic) on a carrier webhook.

    A provider without inbound credentials accepts no webhooks at all: an open
    ingress would let anyone forge delivery reports and inbound messages.
    Raises ApiError 401 (20003).
    """
    config = provider if isinstance(provider, ProviderConfig) else provider.config
    if config.inbound_username is None or config.inbound_password is None:
        raise ApiError(
            ErrorCode.AUTHENTICATION_FAILED,
            f"provider {config.name!r} has no inbound credentials configured, so its ingress is closed",
            headers=_CHALLENGE,
        )
    creds = basic_credentials(request)
    if creds is None:
        raise ApiError(ErrorCode.AUTHENTICATION_FAILED, "HTTP Basic credentials are required", headers=_CHALLENGE)
    user, password = creds
    # Both compared, always, in constant time: no early exit tells which half was wrong.
    user_ok = hmac.compare_digest(user.encode(), config.inbound_username.encode())
    password_ok = hmac.compare_digest(password.encode(), config.inbound_password.encode())
    if not (user_ok and password_ok):
        raise ApiError(ErrorCode.AUTHENTICATION_FAILED, headers=_CHALLENGE)
