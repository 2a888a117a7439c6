"""Configuration: one TOML file plus environment overrides, validated at start.

Every key is documented in docs/configuration.md. Validation is pydantic's
(unknown keys are refused too, since a misspelt key silently ignored is a
setting the operator thinks they made); :class:`ConfigError` turns its report
into lines that name each bad key as a path, such as
``accounts[0].api_keys[1].sid``.

Environment overrides: ``PRESENCE_<SECTION>_<KEY>=value`` sets ``key`` in
``[section]`` for the scalar sections (server, engine, gateway, http, presence,
tokens, logging, security, signaling, messaging, operator). Variables naming another section are
not ours and are ignored; an unknown key of a known section is an error. The value is read as a TOML value when it parses as one
(``8081``, ``true``, ``"x"``), else as a plain string.
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocol.addresses import identity_problem, is_e164, is_sid
from protocol.forwarding import parse_networks
from protocol.tokens import load_public_key

from . import tls
from .secret_refs import resolve_path, resolve_references

ENV_PREFIX = "PRESENCE_"
MIN_SECRET_LENGTH = 16


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


class _Section(BaseModel):
    # TOML has ``inf`` and ``nan`` literals, and a float from the environment may
    # spell them: no duration, rate or share of this file means anything infinite.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _sid_validator(prefix: str) -> Any:
    def check(value: str) -> str:
        if not is_sid(value, prefix):
            raise ValueError(f"must be '{prefix}' followed by 32 lowercase hex digits")
        return value

    return check


def _secret_check(value: str | None) -> str | None:
    if value is not None and len(value) < MIN_SECRET_LENGTH:
        raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters")
    return value


def _url_check(value: str | None) -> str | None:
    if value is not None and not (value.startswith("http://") or value.startswith("https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # The base URL carriers use to reach this server (the http provider tells
    # its carrier where to post delivery reports). Default: http://host:port.
    public_url: str | None = None
    shutdown_grace: float = Field(2.0, ge=0, le=300)
    # How often the node announces itself in the node registry (GET /v1/Nodes);
    # it drops out of the list after three missed announcements.
    node_heartbeat: float = Field(5.0, gt=0, le=300)
    # Peers whose X-Forwarded-For is believed (load balancers, reverse proxies):
    # addresses or CIDR networks. Others' is ignored (protocol/forwarding.py).
    trusted_proxies: list[str] = []
    # Serve https/wss on the port (PEM files; checked at start by tls.py, and
    # reloaded on SIGHUP). Without them: plain http/ws, TLS left to a proxy.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_key_password: str | None = None
    tls_min_version: Literal["1.2", "1.3"] = "1.2"

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return _url_check(value.rstrip("/") if value else value)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # ValueError names the bad entry
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both server.tls_cert and server.tls_key, or neither")
        if self.tls_key_password is not None and self.tls_key is None:
            raise ValueError("server.tls_key_password is set without server.tls_key")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def base_url(self) -> str:
        """This server's URL as others reach it: public_url, else from host and port
        (a wildcard host is reached on loopback; https when it serves TLS)."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


class EngineConfig(_Section):
    kind: Literal["memory", "redis"] = "memory"
    url: str | None = None
    # Where the embedded engine keeps what must survive a restart (SQLite):
    # message records and the outbox.
    data_dir: str = "./data"

    @model_validator(mode="after")
    def _url_for_redis(self) -> EngineConfig:
        if self.kind == "redis":
            if not self.url:
                raise ValueError("engine.url is required when kind = 'redis'")
            # One server (redis://, rediss://, unix://) or a Redis Cluster
            # (redis+cluster://host:port,host:port): the engine's own parser, so a
            # URL accepted here is one the engine can use, and its error names the mistake.
            from .engines.redis.topology import parse

            parse(self.url)
        return self


class GatewayConfig(_Section):
    max_frame_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    rate: float = Field(20.0, gt=0)
    burst: int = Field(60, ge=1)
    register_timeout: float = Field(10.0, gt=0)
    heartbeat: float = Field(25.0, gt=0)
    idle_timeout: float = Field(60.0, gt=0)
    token_warning: float = Field(60.0, ge=0)
    max_subscriptions: int = Field(1000, ge=1)
    max_sessions_per_identity: int = Field(20, ge=1)
    # Frames queued for a client that does not read them; past this the
    # session is closed (4013) rather than held in memory without bound.
    max_pending_frames: int = Field(1024, ge=16)
    # WebSocket connections open at once from one client address (IPv6: one
    # /64), and registered sessions of one account, on this node; 0: no limit.
    # Per node, as what they protect is this node's sockets and memory.
    max_connections_per_address: int = Field(1000, ge=0)
    max_sessions_per_account: int = Field(10000, ge=0)

    @model_validator(mode="after")
    def _idle_after_heartbeat(self) -> GatewayConfig:
        if self.idle_timeout <= self.heartbeat:
            raise ValueError("gateway.idle_timeout must be longer than gateway.heartbeat")
        return self


class HttpConfig(_Section):
    """Limits of the REST API (the WebSocket has [gateway]'s). Buckets are per
    node: see docs/reliability.md#attacks for why."""

    # Requests per second (sustained, and at once) one account may make with
    # its credentials; past them: 429 (20429) with Retry-After.
    rate: float = Field(1000.0, gt=0)
    burst: int = Field(2000, ge=1)
    # Failed authentications (401) one client address may cause, sustained and
    # at once; past them every request from it is answered 429 until a token is back.
    auth_failure_rate: float = Field(1.0, gt=0)
    auth_failure_burst: int = Field(50, ge=1)
    # A connection that has not sent a whole request head this long after it
    # connected (or after its last response) is closed: slowloris clients and
    # idle keep-alive connections alike.
    header_timeout: float = Field(75.0, gt=0, le=3600)


class PresenceConfig(_Section):
    lease_ttl: float = Field(30.0, ge=1)  # a node's sessions vanish this long after it dies
    grace_period: float = Field(5.0, ge=0)  # a dropped client may reconnect this long without a flap
    sweep_interval: float = Field(1.0, gt=0)


class TokensConfig(_Section):
    clock_skew: float = Field(30.0, ge=0, le=300)
    max_ttl: float = Field(86400.0, gt=0, le=86400.0)


class LoggingConfig(_Section):
    format: Literal["console", "json"] | None = None  # default: console in dev mode, json otherwise
    level: Literal["debug", "info", "warning", "error"] = "info"


class ApiKeyConfig(_Section):
    sid: str
    friendly_name: str = Field("", max_length=64)
    secret: str | None = None
    public_key_pem: str | None = None
    revoked: bool = False

    _sid = field_validator("sid")(_sid_validator("SK"))
    _secret = field_validator("secret")(_secret_check)

    @field_validator("public_key_pem")
    @classmethod
    def _pem(cls, value: str | None) -> str | None:
        if value is not None:
            load_public_key(value)  # ValueError names what is wrong with it
        return value

    @model_validator(mode="after")
    def _some_key(self) -> ApiKeyConfig:
        if self.secret is None and self.public_key_pem is None:
            raise ValueError("an API key needs a secret, a public_key_pem, or both")
        return self


class IdentityConfig(_Section):
    identity: str
    phone: str | None = None

    @field_validator("identity")
    @classmethod
    def _identity(cls, value: str) -> str:
        problem = identity_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is not None and not is_e164(value):
            raise ValueError("must be an E.164 number such as +15551230001")
        return value


HttpMethod = Literal["GET", "POST"]


class _Webhooks(_Section):
    """The URLs an application or a number sends its requests to."""

    voice_url: str | None = None
    voice_method: HttpMethod = "POST"
    voice_fallback_url: str | None = None
    voice_fallback_method: HttpMethod = "POST"
    sms_url: str | None = None
    sms_method: HttpMethod = "POST"
    sms_fallback_url: str | None = None
    sms_fallback_method: HttpMethod = "POST"
    status_callback: str | None = None
    status_callback_method: HttpMethod = "POST"

    _urls = field_validator("voice_url", "voice_fallback_url", "sms_url", "sms_fallback_url", "status_callback")(_url_check)


class ApplicationConfig(_Webhooks):
    sid: str
    friendly_name: str = ""

    _sid = field_validator("sid")(_sid_validator("AP"))


class PhoneNumberConfig(_Webhooks):
    number: str
    sid: str | None = None  # 'PN...'; generated from the number when not given
    application_sid: str | None = None  # take the URLs from this application

    @field_validator("number")
    @classmethod
    def _number(cls, value: str) -> str:
        if not is_e164(value):
            raise ValueError("must be an E.164 number such as +15550001111")
        return value

    @field_validator("sid")
    @classmethod
    def _pn(cls, value: str | None) -> str | None:
        return None if value is None else _sid_validator("PN")(value)

    @field_validator("application_sid")
    @classmethod
    def _ap(cls, value: str | None) -> str | None:
        return None if value is None else _sid_validator("AP")(value)


class FallbackConfig(_Section):
    """What happens when a client cannot be reached (absent, rejects, no answer)."""

    # 'sms': text the callee identity's phone; 'none': do nothing beyond the records.
    mode: Literal["sms", "none"] = "sms"
    # The missed-call text. {from} is the caller, {to} the callee identity.
    missed_call_template: str = "Missed call from {from}"
    # The number fallback SMS are sent from (default: the called number, if it is one of the account's).
    from_number: str | None = None

    @field_validator("missed_call_template")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            value.format(**{"from": "x", "to": "y"})
        # AttributeError, TypeError: "{from.x}", "{from[x]}" (found by tests/fuzz).
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
            raise ValueError(f"may use only {{from}} and {{to}}: {exc}") from None
        return value


class ProviderConfig(_Section):
    name: str
    kind: Literal["outbox", "http", "smpp"] = "outbox"
    capabilities: list[Literal["sms", "mms", "voice"]] = ["sms", "mms"]
    # Throughput limit (messages per second, a token bucket shared by the priority
    # classes in [messaging].class_shares); None: no limit.
    mps: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)  # default: max(1, mps)
    # Credentials the carrier uses on /v1/Ingress/{name}/... (HTTP Basic).
    inbound_username: str | None = None
    inbound_password: str | None = None
    # kind = "http": where to POST outgoing messages, and how to authenticate.
    url: str | None = None
    auth_username: str | None = None
    auth_password: str | None = None
    auth_bearer: str | None = None
    timeout: float = Field(10.0, gt=0, le=120)
    # kind = "smpp": an SMPP 3.4 transceiver bind (docs/carriers.md).
    host: str | None = None
    port: int = Field(2775, ge=1, le=65535)
    # SMPP 3.4 field sizes (C-octet strings without the terminating NUL).
    system_id: str | None = Field(None, max_length=15)
    password: str | None = Field(None, max_length=8)
    system_type: str = Field("", max_length=12)
    window: int = Field(10, ge=1, le=1000)  # submits in flight before waiting for responses
    enquire_link_interval: float = Field(30.0, gt=0)
    reconnect_max: float = Field(60.0, gt=0)  # the longest wait between reconnects
    # How the SMSC writes message ids in receipts, compared with submit_sm_resp:
    # 'auto' matches either spelling (hex or decimal) of the same number.
    id_format: Literal["auto", "hex", "decimal", "text"] = "auto"
    source_ton: int = Field(1, ge=0, le=6)
    source_npi: int = Field(1, ge=0, le=18)
    dest_ton: int = Field(1, ge=0, le=6)
    dest_npi: int = Field(1, ge=0, le=18)

    _url = field_validator("url")(_url_check)
    _pw = field_validator("inbound_password")(_secret_check)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", value):
            raise ValueError("must be 1-32 lowercase letters, digits, _ or -")
        return value

    @model_validator(mode="after")
    def _http_needs_url(self) -> ProviderConfig:
        if self.kind == "http" and not self.url:
            raise ValueError("a provider of kind 'http' needs a url")
        if self.kind == "smpp" and not (self.host and self.system_id and self.password is not None):
            raise ValueError("a provider of kind 'smpp' needs host, system_id and password")
        if (self.inbound_username is None) != (self.inbound_password is None):
            raise ValueError("give both inbound_username and inbound_password, or neither")
        return self


class SecurityConfig(_Section):
    # True lets instruction and callback URLs reach loopback and private
    # addresses (dev mode allows loopback on its own).
    allow_private_urls: bool = False
    # Exactly these "address:port" endpoints on a private network may be requested
    # (one app there), while the rest of it stays refused.
    allowed_private_endpoints: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("allowed_private_endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        from .signaling.urlguard import parse_endpoint  # here: config stays importable without aiohttp's client

        for entry in value:
            parse_endpoint(entry)  # ValueError says what is expected
        return value


class SignalingConfig(_Section):
    instruction_max_bytes: int = Field(64 * 1024, ge=1024, le=1024 * 1024)
    max_redirects: int = Field(10, ge=1, le=100)  # <Redirect> hops per call, against loops
    message_ack_timeout: float = Field(10.0, gt=0, le=300)
    max_concurrent_calls: int = Field(10000, ge=1)
    # On SIGTERM, how long calls in progress may go on before they are ended
    # (docs/operations.md, rolling upgrades): past the default <Dial timeout>
    # (30 s), so every call ringing at the stop gets its answer or its timeout.
    drain_timeout: float = Field(60.0, ge=0, le=3600)


class MessagingConfig(_Section):
    """The messaging pipeline (docs/messaging.md)."""

    # Messages queued per sender (From) before the API answers 429 (21611).
    max_queued_per_sender: int = Field(10000, ge=1)
    # Each priority class's guaranteed share of a provider's throughput; what a
    # class does not use, the others may (highest first). Must sum to 1.
    class_shares: dict[Literal["urgent", "normal", "bulk"], float] = {"urgent": 0.6, "normal": 0.3, "bulk": 0.1}
    max_attempts: int = Field(6, ge=1, le=50)  # sends tried per message (retries and failover)
    retry_base: float = Field(2.0, gt=0)  # backoff: base * 2^(attempt-1), jittered, capped
    retry_max: float = Field(300.0, gt=0)
    default_validity: int = Field(36000, ge=1, le=36000)  # seconds, when neither request nor service says
    max_schedule_ahead: float = Field(35 * 86400, gt=0)  # the latest SendAt, from now
    lease: float = Field(30.0, gt=0)  # a claimed send is someone else's after this (a dead worker)
    concurrency: int = Field(200, ge=1)  # sends in flight per process
    claim_batch: int = Field(100, ge=1, le=10000)
    poll_interval: float = Field(0.25, gt=0)  # how often to look for work enqueued elsewhere
    # Base URL of tracked short links (GET /l/{code}); default: server.base_url().
    link_base_url: str | None = None
    stats_window: float = Field(900.0, ge=60)  # adaptive routing looks this far back
    exploration: float = Field(0.05, ge=0, le=1)  # share of sends that try a lower-ranked provider
    max_broadcast_destinations: int = Field(1000, ge=1, le=100000)

    _link = field_validator("link_base_url")(_url_check)

    @field_validator("class_shares")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        if set(value) != {"urgent", "normal", "bulk"}:
            raise ValueError("give a share for each of urgent, normal and bulk")
        # "not v > 0" rather than "v <= 0": a NaN share (TOML has nan) is refused too.
        if any(not v > 0 for v in value.values()) or abs(sum(value.values()) - 1.0) > 1e-6:
            raise ValueError("shares must be positive and sum to 1")
        return value


class OperatorConfig(_Section):
    """Credentials of the operator endpoints (/v1/Routing/Stats, the dashboard):
    HTTP Basic. Without them those endpoints refuse everyone."""

    username: str | None = None
    password: str | None = None

    _pw = field_validator("password")(_secret_check)

    @model_validator(mode="after")
    def _both(self) -> OperatorConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both operator username and password, or neither")
        return self


USECASE_PRIORITY = {
    # Twilio's messaging-service usecases, by the priority class they get.
    "verification": "urgent", "two_factor": "urgent", "fraud_alert": "urgent", "security": "urgent",
    "notifications": "normal", "account_notification": "normal", "delivery_notification": "normal",
    "customer_care": "normal", "mixed": "normal", "undeclared": "normal",
    "marketing": "bulk", "promotional": "bulk", "polling_voting": "bulk", "social": "bulk",
}


def _alphanumeric_sender(value: str) -> bool:
    # An alphanumeric sender id: 1-11 of A-Z a-z 0-9 and space, with at least one letter.
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9 ]{1,11}", value)) and any(c.isalpha() for c in value)


class MessagingServiceConfig(_Section):
    sid: str
    friendly_name: str = ""
    # The sender pool: the account's numbers (E.164) and alphanumeric sender ids.
    senders: list[str] = Field(min_length=1)
    sticky_sender: bool = True  # the same From for the same To
    geomatch: bool = True  # prefer a sender in the To's country (and area code)
    validity_period: int | None = Field(None, ge=1, le=36000)
    status_callback: str | None = None
    usecase: str = "undeclared"

    _sid = field_validator("sid")(_sid_validator("MG"))
    _cb = field_validator("status_callback")(_url_check)

    @field_validator("senders")
    @classmethod
    def _senders(cls, value: list[str]) -> list[str]:
        for sender in value:
            if not (is_e164(sender) or _alphanumeric_sender(sender)):
                raise ValueError(f"{sender!r} is neither an E.164 number nor an alphanumeric sender id (1-11 letters, digits, spaces)")
        if len(value) != len(set(value)):
            raise ValueError("a sender is listed twice")
        return value

    @field_validator("usecase")
    @classmethod
    def _usecase(cls, value: str) -> str:
        if value not in USECASE_PRIORITY:
            raise ValueError(f"must be one of {', '.join(sorted(USECASE_PRIORITY))}")
        return value

    @property
    def priority(self) -> str:
        return USECASE_PRIORITY[self.usecase]


class RouteProviderConfig(_Section):
    name: str
    weight: float = Field(1.0, gt=0)  # the 'weighted' strategy's share
    cost: float = Field(0.0, ge=0)  # per segment, for cost budgets and tie-breaks


class RouteConfig(_Section):
    """A routing address record: which destinations, over which providers, how."""

    name: str
    # What it matches (any of; none given: every destination). Countries are ISO
    # 3166 codes of the number (via phonenumbers); prefixes match the E.164 text;
    # identities match a client:<identity> destination whose SMS goes to its phone.
    countries: list[str] = []
    prefixes: list[str] = []
    identities: list[str] = []
    strategy: Literal["failover", "weighted", "adaptive", "broadcast"] = "failover"
    providers: list[RouteProviderConfig] = Field(min_length=1)

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: list[str]) -> list[str]:
        for c in value:
            if not (len(c) == 2 and c.isascii() and c.isupper()):
                raise ValueError(f"{c!r} is not an ISO 3166 alpha-2 country code such as 'US'")
        return value

    @field_validator("prefixes")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        import re

        for p in value:
            if not re.fullmatch(r"\+[0-9]{1,14}", p):
                raise ValueError(f"{p!r} is not an E.164 prefix such as '+4477'")
        return value


class AccountConfig(_Section):
    sid: str
    auth_token: str
    friendly_name: str = ""
    api_keys: list[ApiKeyConfig] = []
    identities: list[IdentityConfig] = []
    applications: list[ApplicationConfig] = []
    phone_numbers: list[PhoneNumberConfig] = []
    fallback: FallbackConfig = FallbackConfig()
    messaging_services: list[MessagingServiceConfig] = []

    _sid = field_validator("sid")(_sid_validator("AC"))
    _token = field_validator("auth_token")(_secret_check)

    @model_validator(mode="after")
    def _unique(self) -> AccountConfig:
        names = [i.identity for i in self.identities]
        if len(names) != len(set(names)):
            raise ValueError("identities lists an identity twice")
        numbers = {n.number for n in self.phone_numbers}
        for service in self.messaging_services:
            for sender in service.senders:
                if is_e164(sender) and sender not in numbers:
                    raise ValueError(f"messaging service {service.sid} lists {sender}, which is not one of this account's phone_numbers")
        return self


class Config(_Section):
    server: ServerConfig = ServerConfig()
    engine: EngineConfig = EngineConfig()
    gateway: GatewayConfig = GatewayConfig()
    http: HttpConfig = HttpConfig()
    presence: PresenceConfig = PresenceConfig()
    tokens: TokensConfig = TokensConfig()
    logging: LoggingConfig = LoggingConfig()
    security: SecurityConfig = SecurityConfig()
    signaling: SignalingConfig = SignalingConfig()
    messaging: MessagingConfig = MessagingConfig()
    operator: OperatorConfig = OperatorConfig()
    accounts: list[AccountConfig] = []
    providers: list[ProviderConfig] = []
    routes: list[RouteConfig] = []
    dev: bool = False  # set by --dev; not read from the file

    @model_validator(mode="after")
    def _unique_sids(self) -> Config:
        accounts = [a.sid for a in self.accounts]
        if len(accounts) != len(set(accounts)):
            raise ValueError("accounts lists an account sid twice")
        keys = [k.sid for a in self.accounts for k in a.api_keys]
        if len(keys) != len(set(keys)):
            raise ValueError("an API key sid appears twice")
        numbers = [n.number for a in self.accounts for n in a.phone_numbers]
        if len(numbers) != len(set(numbers)):
            raise ValueError("a phone number belongs to two accounts (or is listed twice)")
        names = [p.name for p in self.providers]
        if len(names) != len(set(names)):
            raise ValueError("two providers have the same name")
        known = set(names) or {"outbox"}  # no providers configured: the embedded outbox
        for route in self.routes:
            for entry in route.providers:
                if entry.name not in known:
                    raise ValueError(f"route {route.name!r} names provider {entry.name!r}, which is not configured")
        route_names = [r.name for r in self.routes]
        if len(route_names) != len(set(route_names)):
            raise ValueError("two routes have the same name")
        if "default" in route_names:
            raise ValueError("'default' is the name of the built-in route (every provider, for what no route matches); pick another")
        # A send must end within its job's lease, or another worker takes the job
        # and sends it again (in-app: the ack wait; carriers: the request timeout).
        longest = max([self.signaling.message_ack_timeout, *(p.timeout for p in self.providers)])
        if self.messaging.lease <= 2 * longest:
            raise ValueError(
                f"messaging.lease ({self.messaging.lease:g} s) must be more than twice the longest send "
                f"({longest:g} s: the in-app ack timeout or a provider's timeout)"
            )
        services = [s.sid for a in self.accounts for s in a.messaging_services]
        if len(services) != len(set(services)):
            raise ValueError("a messaging service sid appears twice")
        for account in self.accounts:
            apps = {a.sid for a in account.applications}
            for n in account.phone_numbers:
                if n.application_sid and n.application_sid not in apps:
                    raise ValueError(f"phone number {n.number} names application {n.application_sid}, which its account does not have")
        return self


ENV_SECTIONS = ("server", "engine", "gateway", "http", "presence", "tokens", "logging", "security", "signaling", "messaging", "operator")


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):  # RecursionError: "[[[[..." (tomllib recurses)
        return raw


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay PRESENCE_<SECTION>_<KEY> variables on the file's data."""
    problems = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in ENV_SECTIONS or not key:
            # Not ours (a client's PRESENCE_URL in the same shell, say): left alone.
            continue
        model = Config.model_fields[section].annotation
        if key not in model.model_fields:  # type: ignore[union-attr]
            problems.append(f"{name}: [{section}] has no key '{key}'")
            continue
        table = data.setdefault(section, {})
        if not isinstance(table, dict):  # the file has `server = 5`: nothing to set a key in
            problems.append(f"{name}: '{section}' in the file is not a table, so [{section}] {key} cannot be set")
            continue
        table[key] = _env_value(raw)
    if problems:
        raise ConfigError(problems)
    return data


def parse_config(
    data: Mapping[str, Any], environ: Mapping[str, str] | None = None, *, base_dir: Path | None = None, **overrides: Any
) -> Config:
    """``base_dir``: where relative file names (secret files, TLS files) start;
    the config file's directory (load_config), else the working directory."""
    merged = dict(data)
    if "dev" in merged:
        raise ConfigError(["dev: not a file setting; use 'serve --dev'"])
    # A deep copy: references are resolved in place, and the caller's data stays as given.
    merged = apply_env(copy.deepcopy(merged), environ or {})
    merged.update(copy.deepcopy(overrides))
    # Secrets by reference ({ env = ... } / { file = ... }) become values before
    # validation, so every check applies to what they hold.
    unresolved = resolve_references(merged, environ or {}, base_dir)
    if unresolved:
        raise ConfigError(unresolved)
    server = merged.get("server")
    if isinstance(server, dict):
        for key in ("tls_cert", "tls_key"):
            if isinstance(server.get(key), str):
                server[key] = resolve_path(server[key], base_dir)
    try:
        config = Config.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{_path(err['loc'])}: {msg}")
        raise ConfigError(problems) from None
    # The TLS files are read once the keys are valid on their own: the check
    # needs the password, and reports the files as the keys that name them.
    tls_problems = tls.check(config.server)
    if tls_problems:
        raise ConfigError([str(p) for p in tls_problems])
    return config


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([f"{path}: no such file"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
        except RecursionError:  # tomllib recurses into nested arrays and tables (found by tests/fuzz)
            raise ConfigError([f"{path}: not valid TOML: arrays or tables nested too deeply"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    base_dir = Path(path).resolve().parent if path is not None else None
    return parse_config(data, os.environ if environ is None else environ, base_dir=base_dir, **overrides)
