"""``presence-server``: serve, mint a token, check a config file."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import structlog

from protocol.tokens import default_grants, mint_token

from . import dev
from .clock import SystemClock
from .config import Config, ConfigError, load_config
from .gc_tuning import settle_after_start
from .logs import configure_logging
from .roles import ROLES
from .outbox_cli import register_outbox_command, run_outbox_command


def _config_with_dev(path: str | None, is_dev: bool, host: str | None = None, port: int | None = None) -> Config:
    overrides: dict[str, Any] = {}
    config = load_config(path)
    if host or port is not None:
        server = config.server.model_dump()
        server.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
        overrides["server"] = server
        config = load_config(path, **overrides)
    if not is_dev:
        return config
    # Dev mode always has the dev account (after any configured ones), so the
    # banner and `token` have a key to sign with.
    scheme = "https" if config.server.tls else "http"
    dev_account = dev.load_or_create(base_url=f"{scheme}://{config.server.host}:{config.server.port}")
    accounts = [a.model_dump() for a in config.accounts if a.sid != dev_account["sid"]]
    if config.operator.username is None:  # so the dashboard opens with nothing configured
        overrides["operator"] = dev.operator_credentials()
    return load_config(path, **{**overrides, "dev": True, "accounts": accounts + [dev_account]})


def _pick_key(config: Config, account_sid: str | None, key_sid: str | None) -> tuple[str, str, str]:
    for account in config.accounts:
        if account_sid and account.sid != account_sid:
            continue
        for key in account.api_keys:
            if key.secret and not key.revoked and (key_sid is None or key.sid == key_sid):
                return account.sid, key.sid, key.secret
    raise ConfigError(["no account has an unrevoked API key with a secret to sign with (matching --account/--key)"])


async def _serve(config: Config, roles: tuple[str, ...], reread: Callable[[], Config] | None = None) -> None:
    from .node import Node

    node = Node(config, clock=SystemClock(), roles=roles)
    port = await node.start()
    settle_after_start()  # gc: start-up objects out of every collection's way (gc_tuning.py)
    if config.dev:
        _print_dev_banner(config, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if reread is not None:
        # SIGHUP (systemctl reload, after a certificate renewal) re-reads the
        # file; its default action would end the process.
        loop.add_signal_handler(signal.SIGHUP, _reload, node, config, reread)
    await stop.wait()
    await node.stop()


def _reload(node: Any, running: Config, reread: Callable[[], Config]) -> None:
    """Re-read the configuration (secret references resolved again) and load
    the TLS certificate and key it names. Only TLS is applied while running;
    a change elsewhere is logged as waiting for a restart."""
    log = structlog.get_logger("presence_server.cli")
    try:
        fresh = reread()
    except ConfigError as exc:
        log.error("SIGHUP: the configuration is invalid; nothing reloaded", problems=exc.problems)
        return
    node.reload_tls(fresh.server)
    tls_keys = {"tls_cert", "tls_key", "tls_key_password", "tls_min_version"}
    changed = sorted(
        name for name in type(running).model_fields
        if name != "server" and getattr(running, name) != getattr(fresh, name)
    )
    if running.server.model_dump(exclude=tls_keys) != fresh.server.model_dump(exclude=tls_keys):
        changed.insert(0, "server")
    if changed:
        log.warning("SIGHUP: settings changed that apply only after a restart", sections=changed)


def _print_dev_banner(config: Config, port: int) -> None:
    account = config.accounts[-1]  # the dev account
    key = account.api_keys[0]
    host = config.server.host
    scheme = "https" if config.server.tls else "http"
    exe = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "presence-server"
    print(
        f"""
presence-server (dev mode) on {scheme}://{host}:{port}
  account    {account.sid}
  auth token {account.auth_token}
  API key    {key.sid}
  identities {", ".join(i.identity for i in account.identities)}

Mint a token for a client:
  .venv/bin/{exe} token --identity alice

See alice's presence:
  curl -u {account.sid}:{account.auth_token} {scheme}://{host}:{port}/v1/Accounts/{account.sid}/Presence/alice

The operator dashboard (user {config.operator.username}, password {config.operator.password}):
  {scheme}://{host}:{port}/dashboard

Open {scheme}://{host}:{port}/demo in two tabs and call yourself.
""",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="presence-server", description="Presence and signaling server")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--config", help="TOML configuration file")
    serve.add_argument("--dev", action="store_true", help="dev mode: a ready-made account, console logs")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--roles", default=",".join(ROLES), help=f"comma list of roles this process runs (default: all: {','.join(ROLES)})"
    )

    token = sub.add_parser("token", help="mint an access token (HS256) for a client identity")
    token.add_argument("--identity", required=True)
    token.add_argument("--ttl", type=int, default=3600, help="seconds (at most 86400)")
    token.add_argument("--config", help="TOML configuration file (default: the dev account)")
    token.add_argument("--account", help="account sid (default: the first)")
    token.add_argument("--key", help="API key sid (default: the account's first with a secret)")
    token.add_argument(
        "--application", help="AP sid for grants.voice.outgoing, so the client can place calls (dev mode: the dev application)"
    )

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("path")
    register_outbox_command(sub)

    args = parser.parse_args(argv)
    if args.command == "outbox":
        return run_outbox_command(args)
    try:
        if args.command == "check-config":
            config = load_config(args.path)
            keys = sum(len(a.api_keys) for a in config.accounts)
            print(f"{args.path}: ok ({len(config.accounts)} accounts, {keys} API keys, engine {config.engine.kind})")
            return 0
        if args.command == "token":
            config = _config_with_dev(args.config, args.config is None)
            if not 0 < args.ttl <= 86400:
                raise ConfigError(["--ttl must be between 1 and 86400 seconds"])
            account_sid, key_sid, secret = _pick_key(config, args.account, args.key)
            grants = default_grants(args.identity)
            application = args.application
            if application is None and args.config is None:
                application = config.accounts[-1].applications[0].sid  # the dev application
            if application is not None:
                grants["voice"]["outgoing"] = {"application_sid": application}
            print(
                mint_token(
                    key_sid=key_sid,
                    account_sid=account_sid,
                    identity=args.identity,
                    secret=secret,
                    ttl=args.ttl,
                    now=SystemClock().time(),
                    grants=grants,
                )
            )
            return 0
        config = _config_with_dev(args.config, args.dev, args.host, args.port)
        roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
        if not roles or set(roles) - set(ROLES):
            raise ConfigError([f"--roles: each role must be one of {', '.join(ROLES)}"])
        configure_logging(config.logging.format or ("console" if config.dev else "json"), config.logging.level)
        run = asyncio.run
        try:
            import uvloop

            run = uvloop.run
        except ImportError:  # pragma: no cover - uvloop is not on every platform
            pass
        run(_serve(config, roles, reread=lambda: _config_with_dev(args.config, args.dev, args.host, args.port)))
        return 0
    except (ConfigError, ValueError) as exc:  # ValueError: mint_token's refusal (bad identity, ...)
        print(f"presence-server: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
