"""One server process: the engine, the services and the HTTP/WebSocket front,
with the background loops that keep presence true (timers, leases, sweeping)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from datetime import datetime, timezone
from typing import Any, Coroutine

import structlog
from aiohttp import web

from protocol.addresses import new_sid

from . import VERSION, logs, tls
from .accounts import AccountRegistry
from .carriers import Provider, build_provider, default_provider_configs
from .carriers.base import CarrierEvents, DeliveryReport, InboundMessage
from .clock import Clock, SystemClock
from .config import Config, ServerConfig
from .engines.memory import MemoryEngine
from .engines.redis import RedisEngine
from .engines.ports import Engine, NodeInfo
from .gateway.gateway import Gateway
from .mailbox import Mailbox
from .peers import PeerWatch
from .messaging.service import MessagingService, inbound_adapter
from .api_keys import ApiKeyService
from .roles import ROLES
from .signaling.fetcher import InstructionFetcher
from .signaling.lost import finish_lost_calls
from .signaling.service import SignalingService
from .signaling.urlguard import UrlPolicy, guarded_session, parse_endpoint
from .tasks import cancel_and_wait
from .webhooks import WebhookSender
from .http.app import build_app
from .presence.service import PresenceService
from .presence.subscriptions import SubscriptionHub

log = structlog.get_logger(__name__)

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def build_engine(config: Config) -> Engine:
    if config.engine.kind == "memory":
        return MemoryEngine(data_dir=config.engine.data_dir)
    assert config.engine.url is not None  # validated
    return RedisEngine(config.engine.url, data_dir=config.engine.data_dir)


class CarrierEventsProxy:
    """Hands carrier events to the messaging pipeline once it exists (providers
    are made first, as the pipeline routes over them)."""

    target: CarrierEvents | None = None

    async def report(self, report: DeliveryReport) -> None:
        if self.target is not None:
            await self.target.report(report)

    async def inbound(self, message: InboundMessage) -> None:
        if self.target is not None:
            await self.target.inbound(message)


class Node:
    def __init__(
        self, config: Config, *, clock: Clock | None = None, engine: Engine | None = None, roles: tuple[str, ...] = ROLES
    ) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown or not roles:
            raise ValueError(f"roles must be among {', '.join(ROLES)}; got {', '.join(sorted(roles)) or 'none'}")
        self.config = config
        self.roles = roles
        self.clock = clock or SystemClock()
        self.node_id = new_sid("ND")
        self._signaling_nodes: list[str] = []  # live signaling nodes, for a node without that role (or draining)
        self._leaving = False  # stopping: no more announcements, so the registry forgets it at once
        self.engine = engine or build_engine(config)
        self.mailbox = Mailbox(self.engine.bus, self.node_id)
        self.peer_watch = PeerWatch(self.mailbox, self.clock, dead_after=2 * config.server.node_heartbeat)
        # Carrier providers (by name): started after the engine, closed before it.
        # With none configured, the embedded outbox records what would be sent.
        # Reports and inbound messages from a provider's own connection (SMPP) go
        # to the messaging pipeline, made below: the proxy is filled in then.
        self.carrier_events = CarrierEventsProxy()
        self.providers: dict[str, Provider] = {
            p.name: build_provider(
                p,
                data_dir=config.engine.data_dir,
                clock=self.clock,
                public_url=config.server.base_url(),
                events=self.carrier_events,
            )
            for p in default_provider_configs(config.providers)
        }
        self.accounts = AccountRegistry(config)
        self.presence = PresenceService(self.engine, self.clock, config.presence)
        self.hub = SubscriptionHub(self.engine.bus)
        self.gateway = Gateway(
            config=config,
            accounts=self.accounts,
            presence=self.presence,
            hub=self.hub,
            clock=self.clock,
            node_id=self.node_id,
            mailbox=self.mailbox,
            # Client-placed calls go to this node's signaling role, else to a live
            # signaling node from the registry (signaling_node, below).
            signaling_node=self.signaling_node,
            signaling_gone=self.signaling_gone,
        )
        # API keys revoked over REST: shared through the engine, applied to this
        # node's registry, and the gateway's sessions signed by them ended at once.
        self.api_keys = ApiKeyService(self.engine, self.accounts, self.clock, self.gateway.end_sessions_signed_by)
        # Requests to customers' URLs go through the SSRF guard; dev mode may
        # reach loopback (the demo's instruction app), nothing else private.
        self.http = guarded_session(
            UrlPolicy(
                allow_private=config.security.allow_private_urls,
                allow_loopback=config.dev,
                allowed_endpoints=frozenset(parse_endpoint(e) for e in config.security.allowed_private_endpoints),
            )
        )
        self.webhooks = WebhookSender(self.http, self.clock)
        # Every node accepts messages and takes delivery reports; only a node with
        # the messaging role sends them.
        self.messaging = MessagingService(
            config=config, engine=self.engine, accounts=self.accounts, presence=self.presence, mailbox=self.mailbox,
            providers=self.providers, webhooks=self.webhooks, clock=self.clock, worker=self.node_id,
            dispatch="messaging" in roles,
        )
        self.carrier_events.target = self.messaging.reports
        self.signaling: SignalingService | None = None
        if "signaling" in roles:
            self.signaling = SignalingService(
                config=config,
                accounts=self.accounts,
                presence=self.presence,
                calls=self.engine.calls,
                messages=self.engine.messages,
                mailbox=self.mailbox,
                fetcher=InstructionFetcher(self.http, max_bytes=config.signaling.instruction_max_bytes),
                webhooks=self.webhooks,
                messaging=self.messaging,
                clock=self.clock,
            )
            self.messaging.set_inbound(inbound_adapter(self.accounts, self.signaling.ingress_message))
        self.app = build_app(self)
        self._runner: web.AppRunner | None = None
        self.ssl_context: ssl.SSLContext | None = None  # kept: SIGHUP loads a renewed certificate into it
        self._tasks: list[asyncio.Task[None]] = []
        self.port: int | None = None
        self.host = config.server.host  # the address bound, once started

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Start serving; returns the bound port (useful with port 0)."""
        await self.engine.start()
        await self.mailbox.start()
        await self.api_keys.start()
        # Only a process that sends opens its providers' connections: an SMPP
        # bind from every gateway and signaling process would multiply the binds
        # a carrier sees (they limit them per system_id). The others still parse
        # the providers' webhooks (ingress), which needs no connection.
        if "messaging" in self.roles:
            for provider in self.providers.values():
                await provider.start()
        await self.messaging.start()
        logs.quiet_malformed_requests()  # a client's malformed request is not our error
        self._runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=self.config.server.shutdown_grace,
            # aiohttp closes a connection that has not sent a whole request head this
            # long after it connected or was last answered: the slowloris defence.
            keepalive_timeout=self.config.http.header_timeout,
        )
        await self._runner.setup()
        self.host = host or self.config.server.host
        if self.config.server.tls:
            self.ssl_context, cert = tls.server_context(self.config.server)
            self._log_certificate("serving TLS", cert)
        site = web.TCPSite(
            self._runner, self.host, self.config.server.port if port is None else port, ssl_context=self.ssl_context
        )
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.started = self.clock.time()
        for loop in (
            self.gateway.timer_loop(), self.gateway.lease_loop(), self._sweep_loop(), self._announce_loop(),
            self.api_keys.sync_loop(self.config.server.node_heartbeat),
        ):
            self._spawn(loop)
        log.info("node started", node_id=self.node_id, port=self.port, engine=self.config.engine.kind, tls=self.config.server.tls)
        return self.port

    def _log_certificate(self, event: str, cert: tls.CertificateInfo) -> None:
        log.info(event, subject=cert.subject, not_after=cert.not_after.isoformat(), sha256=cert.sha256, chain=cert.chain_length)
        left = cert.not_after - datetime.now(timezone.utc)
        if left < tls.EXPIRY_WARNING:
            log.warning("TLS certificate expires soon; renew it and send SIGHUP", not_after=cert.not_after.isoformat(), days_left=left.days)

    def reload_tls(self, server: ServerConfig) -> bool:
        """SIGHUP: serve the renewed certificate and key named by ``server`` on
        new connections; open sessions keep theirs. A bad pair is logged and
        the old one kept (True: reloaded)."""
        if self.ssl_context is None:
            log.warning("SIGHUP: nothing to reload; this node serves no TLS (TLS cannot be turned on without a restart)")
            return False
        if not server.tls:
            log.warning("SIGHUP: the configuration no longer names a certificate; TLS stays on until a restart")
            return False
        try:
            cert = tls.reload(self.ssl_context, server)
        except (ValueError, OSError) as exc:  # TlsConfigError names the key; ssl.SSLError is an OSError
            log.error("TLS reload failed; still serving the previous certificate", problem=str(exc))
            return False
        self._log_certificate("TLS certificate reloaded", cert)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def _sweep_loop(self) -> None:
        while True:
            await self.clock.sleep(self.config.presence.sweep_interval)
            try:
                await self.presence.sweep()
            except Exception:
                log.warning("presence sweep failed; retrying next round", exc_info=True)

    def announcement(self) -> NodeInfo:
        host = self.host
        if host in WILDCARD_HOSTS:
            # Bound to every interface: "0.0.0.0:8080" would tell an operator
            # nothing. The host name is what they find the process by (a
            # Kubernetes pod's name, a machine's name).
            host = socket.gethostname()
        return NodeInfo(
            node_id=self.node_id,
            roles=tuple(self.roles),
            version=VERSION,
            address=f"{host}:{self.port}",
            sessions=len(self.gateway.sessions) if "gateway" in self.roles else 0,
            started=self.started,
            heartbeat=self.clock.time(),
        )

    def signaling_node(self) -> str | None:
        """Where a call placed by a client on this node goes: this node when it
        runs signaling, else a live signaling node from the registry (spread
        at random), else None (the client is told 10016)."""
        if "signaling" in self.roles and not self.draining:
            return self.node_id
        others = [n for n in self._signaling_nodes if n != self.node_id]
        return random.choice(others) if others else None

    @property
    def draining(self) -> bool:
        """This node's signaling role is draining its calls (a graceful stop)."""
        return self.signaling is not None and self.signaling.draining

    def signaling_gone(self, node_id: str) -> None:
        """Nobody listens at this signaling node's address (it died since the
        registry listed it): leave it out until the next registry read says
        otherwise."""
        self._signaling_nodes = [n for n in self._signaling_nodes if n != node_id]

    async def _announce_loop(self) -> None:
        """Announce this node, and learn the live signaling nodes (for a node
        without that role), once per heartbeat."""
        interval = self.config.server.node_heartbeat
        while True:
            try:
                if not self._leaving:  # a stopping node left the registry: announcing would put it back
                    await self.engine.nodes.heartbeat(self.announcement(), ttl=3 * interval)
                if "signaling" not in self.roles or self.draining:
                    await self._learn_signaling_nodes()
            except Exception:
                log.warning("node announcement failed; retrying next round", exc_info=True)
            try:
                await self.watch_peers()
            except Exception:
                log.warning("peer check failed; retrying next round", exc_info=True)
            await self.clock.sleep(interval)

    async def _learn_signaling_nodes(self) -> None:
        live = await self.engine.nodes.live(self.clock.time())
        self._signaling_nodes = [n.node_id for n in live if "signaling" in n.roles and n.node_id != self.node_id]

    async def watch_peers(self) -> list[str]:
        """Probe the nodes this one shares calls with; end the calls of those
        judged dead (peers.py). Returns the dead ones."""
        peers = self.gateway.call_peers()
        if self.signaling is not None:
            peers |= self.signaling.call_peers()
        dead = await self.peer_watch.check(peers)
        for node in dead:
            self.signaling_gone(node)
            lost = self.gateway.calls_of(node)  # before peer_gone forgets them
            legs = self.gateway.peer_gone(node) + (self.signaling.peer_gone(node) if self.signaling is not None else 0)
            log.warning("peer node gone; its calls ended", peer_node_id=node, legs=legs)
            if lost:
                # Nobody else will: the records of a dead signaling node's calls would
                # keep their last status for ever. Several gateways may finish the
                # same call; the store's conditional update lets one of them.
                try:
                    finished = await finish_lost_calls(self.engine.calls, self.clock, lost)
                    log.info("records of a dead signaling node's calls finished", peer_node_id=node, calls=finished)
                except Exception:
                    log.warning("could not finish the records of a dead signaling node's calls", peer_node_id=node, exc_info=True)
        return dead

    async def stop(self) -> None:
        """Graceful: new sessions and calls go elsewhere, the calls in progress
        here get up to ``[signaling] drain_timeout`` to end (the signaling role),
        then clients are told to reconnect, then everything closes.

        The drain comes before the gateway's shutdown: on a node with both
        roles, the parties of the calls being drained are often this gateway's
        own sessions, and telling them to reconnect would end those calls."""
        self._leaving = True
        with contextlib.suppress(Exception):  # the registry forgets it anyway after three missed heartbeats
            await self.engine.nodes.leave(self.node_id)
        self.gateway.accepting = False  # new sessions go elsewhere; /readyz answers 503 from now
        if self.signaling is not None:
            with contextlib.suppress(Exception):  # where this node's clients' new calls go meanwhile
                await self._learn_signaling_nodes()
            await self.signaling.drain(self.config.signaling.drain_timeout)
        await self.gateway.shutdown(self.config.server.shutdown_grace)
        await cancel_and_wait(self._tasks)  # again if a loop lost its cancellation (see there)
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.signaling is not None:
            await self.signaling.close()
        await self.messaging.close()
        await self.webhooks.close()
        await self.http.close()
        await self.hub.close()
        await self.api_keys.close()
        await self.mailbox.close()
        for provider in self.providers.values():
            await provider.close()
        await self.engine.close()
        log.info("node stopped", node_id=self.node_id)
