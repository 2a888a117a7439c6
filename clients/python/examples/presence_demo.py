#!/usr/bin/env python3
"""Register presence and watch other identities' presence, live.

With the dev server (in another terminal: ``presence-server serve --dev``)::

    export DEMO_TOKEN=$(presence-server token --identity alice)
    python clients/python/examples/presence_demo.py bob carol

or let the demo fetch (and renew) tokens itself::

    python clients/python/examples/presence_demo.py \\
        --token-command "presence-server token --identity alice --ttl 300" bob

Run a second copy as bob (``--status away --text lunch``) to see alice's
side report it. Ctrl-C says bye and exits. ``DEMO_URL`` overrides the default
URL. (The variables are not named ``PRESENCE_*``: presence-server reads every
``PRESENCE_*`` variable as its own setting and refuses ones it does not know.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sys
from datetime import datetime
from typing import Awaitable, Callable

from presence_client import Disconnect, PresenceClient, PresenceError, PresenceUpdate, SessionInfo, TokenSource


def _clock(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else "-"


def describe(update: PresenceUpdate) -> str:
    p = update.presence
    sessions = ", ".join(f"{s.session_id[:8]}… {s.status.value} p{s.priority}" for s in p.sessions) or "no sessions"
    text = f" “{p.text}”" if p.text else ""
    was = f" (was {update.previous.status.value})" if update.previous else ""
    tag = " [while disconnected]" if update.resync else ""
    return f"{p.identity}: {p.status.value}{text}{was}{tag} - {sessions}, last seen {_clock(p.last_seen)}"


def command_token(command: str) -> Callable[[], Awaitable[str]]:
    """A token callable that runs a command (e.g. `presence-server token ...`)
    and reads the token from its output: a new token on every call."""

    async def fetch() -> str:
        proc = await asyncio.create_subprocess_exec(
            *shlex.split(command), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{command!r} failed: {err.decode().strip()}")
        return out.decode().strip()

    return fetch


async def run(args: argparse.Namespace) -> int:
    token: TokenSource
    if args.token_command:
        token = command_token(args.token_command)
    elif args.token:
        token = args.token
    else:
        print("give a token: --token, $DEMO_TOKEN, or --token-command", file=sys.stderr)
        return 2

    def on_connect(info: SessionInfo) -> None:
        how = "resumed" if info.resumed else "registered"
        print(f"* {how} as {info.identity} (session {info.session_id}), token expires {_clock(info.expires)}")

    def on_disconnect(info: Disconnect) -> None:
        if info.code == 1000 and not info.will_reconnect:
            return  # our own close (bye)
        then = "reconnecting" if info.will_reconnect else "not reconnecting"
        print(f"* connection lost (code {info.code}: {info.reason or 'no reason'}); {then}")

    def on_error(exc: Exception) -> None:
        print(f"! {exc}", file=sys.stderr)

    client = PresenceClient(
        args.url,
        token,
        encoding=args.encoding,
        status=args.status,
        text=args.text,
        on_connect=on_connect,
        on_disconnect=on_disconnect,
        on_error=on_error,
    )
    try:
        await client.connect()
    except PresenceError as exc:
        print(f"could not register: {exc}", file=sys.stderr)
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' loop
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    if args.seconds:
        loop.call_later(args.seconds, stop.set)

    try:
        updates = client.presence_updates()  # created before subscribing: nothing is missed
        if args.identities:
            snapshot = await client.subscribe(*args.identities)
            for presence in snapshot.values():
                print(describe(PresenceUpdate(presence)))

        async def show() -> None:
            async for update in updates:
                print(describe(update), flush=True)
            stop.set()  # the stream ends when the client stops for good

        printer = asyncio.ensure_future(show())
        await stop.wait()
        printer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await printer
    finally:
        await client.close()
    if client.close_error is not None:
        print(f"stopped: {client.close_error}", file=sys.stderr)
        return 1
    print("* bye")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("identities", nargs="*", help="identities to watch")
    parser.add_argument("--url", default=os.environ.get("DEMO_URL", "ws://127.0.0.1:8080/v1/connect"))
    parser.add_argument("--token", default=os.environ.get("DEMO_TOKEN"), help="access token (default: $DEMO_TOKEN)")
    parser.add_argument("--token-command", help="command printing a fresh token; used for renewal too")
    parser.add_argument("--encoding", choices=("json", "msgpack"), default="json")
    parser.add_argument("--status", default="available", choices=("available", "away", "busy", "dnd"))
    parser.add_argument("--text", default="")
    parser.add_argument("--seconds", type=float, help="exit after this long (default: until Ctrl-C)")
    args = parser.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
