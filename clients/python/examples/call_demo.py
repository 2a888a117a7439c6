#!/usr/bin/env python3
"""Place a call or answer one, print its progress and exchange a signal payload.

With the dev server (in another terminal: ``presence-server serve --dev``),
start bob, who answers::

    export DEMO_TOKEN=$(presence-server token --identity bob)
    python clients/python/examples/call_demo.py answer

then, in a third terminal, alice calls him::

    export DEMO_TOKEN=$(presence-server token --identity alice)
    python clients/python/examples/call_demo.py call client:bob

The dev server's own instruction application dials ``client:<name>``, so
alice's call rings every device bob is connected on; the first to accept
gets it. Once answered, alice sends an SDP-like offer, bob answers it, and
alice hangs up after ``--seconds``. (The payloads are what a WebRTC app would
exchange; this demo has no media.) ``answer`` also prints in-app messages it
receives. ``DEMO_URL`` overrides the default URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sys
from typing import Any, Awaitable, Callable

from presence_client import Call, CallError, Message, PresenceClient, PresenceError, TokenSource


def command_token(command: str) -> Callable[[], Awaitable[str]]:
    """A token callable that runs a command (e.g. `presence-server token ...`)."""

    async def fetch() -> str:
        proc = await asyncio.create_subprocess_exec(
            *shlex.split(command), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{command!r} failed: {err.decode().strip()}")
        return out.decode().strip()

    return fetch


def show_state(call: Call) -> None:
    ended = f" ({call.end_reason})" if call.end_reason else ""
    print(f"* call {call.sid} {call.direction} {call.remote}: {call.state.value}{ended}", flush=True)


def show_signal(payload: dict[str, Any]) -> None:
    print(f"< signal {payload}", flush=True)


async def place(client: PresenceClient, args: argparse.Namespace) -> int:
    params = dict(p.split("=", 1) for p in args.param)
    call = await client.call(args.to, params, on_state=show_state, on_signal=show_signal)
    print(f"* placed {call.sid} to {call.remote}", flush=True)
    try:
        await call.wait_answered(timeout=args.ring_timeout)
    except CallError as exc:
        print(f"* not answered: {exc.end_reason}")
        return 1
    except TimeoutError:
        print(f"* no answer within {args.ring_timeout:g} s; hanging up")
        await call.hangup()
        return 1
    offer = {"type": "offer", "sdp": f"v=0 (demo offer from {client.identity})"}
    print(f"> signal {offer}", flush=True)
    await call.send_signal(offer)
    with contextlib.suppress(TimeoutError, StopAsyncIteration):
        await call.signals().get(timeout=10)  # the answer (on_signal printed it)
    try:
        reason = await call.wait_ended(timeout=args.seconds)
        print(f"* the call ended: {reason}")
    except TimeoutError:
        await call.hangup()
        print("* hung up")
    return 0


async def answer(client: PresenceClient, args: argparse.Namespace) -> int:
    print(f"* {client.identity} waits for calls (Ctrl-C to stop)", flush=True)
    async for call in client.incoming_calls():
        call.on_state = show_state
        print(f"* incoming call {call.sid} from {call.remote} (params {dict(call.params)})", flush=True)
        await call.ringing()
        await asyncio.sleep(args.answer_after)
        if args.reject:
            await call.reject(busy=True)
            continue
        try:
            await call.accept()
        except CallError as exc:
            print(f"* could not accept: {exc.end_reason or exc}")
            continue
        async for payload in call.signals():  # ends when the call ends
            show_signal(payload)
            if payload.get("type") == "offer":
                reply = {"type": "answer", "sdp": f"v=0 (demo answer from {client.identity})"}
                print(f"> signal {reply}", flush=True)
                await call.send_signal(reply)
        print(f"* the call ended: {call.end_reason}")
        if args.once:
            return 0
    return 0


async def run(args: argparse.Namespace) -> int:
    token: TokenSource
    if args.token_command:
        token = command_token(args.token_command)
    elif args.token:
        token = args.token
    else:
        print("give a token: --token, $DEMO_TOKEN, or --token-command", file=sys.stderr)
        return 2

    def on_message(message: Message) -> None:  # acked once this returns
        print(f"< message {message.sid} from {message.from_}: {message.body}", flush=True)

    client = PresenceClient(
        args.url, token, on_message=on_message, on_error=lambda exc: print(f"! {exc}", file=sys.stderr)
    )
    try:
        await client.connect()
    except PresenceError as exc:
        print(f"could not register: {exc}", file=sys.stderr)
        return 1
    work = asyncio.ensure_future(place(client, args) if args.command == "call" else answer(client, args))
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' loop
        loop.add_signal_handler(signal.SIGINT, work.cancel)
        loop.add_signal_handler(signal.SIGTERM, work.cancel)
    try:
        return await work
    except asyncio.CancelledError:
        return 0
    except PresenceError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()  # hangs up a call still in progress


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("DEMO_URL", "ws://127.0.0.1:8080/v1/connect"))
    parser.add_argument("--token", default=os.environ.get("DEMO_TOKEN"), help="access token (default: $DEMO_TOKEN)")
    parser.add_argument("--token-command", help="command printing a fresh token; used for renewal too")
    sub = parser.add_subparsers(dest="command", required=True)
    call = sub.add_parser("call", help="place a call")
    call.add_argument("to", help="client:<identity>, an identity, or an E.164 number")
    call.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="custom call parameter")
    call.add_argument("--ring-timeout", type=float, default=30.0, help="give up after this many seconds unanswered")
    call.add_argument("--seconds", type=float, default=3.0, help="hang up after this long connected")
    ans = sub.add_parser("answer", help="answer incoming calls")
    ans.add_argument("--answer-after", type=float, default=1.0, help="ring this long before answering")
    ans.add_argument("--reject", action="store_true", help="decline (busy) instead of answering")
    ans.add_argument("--once", action="store_true", help="exit after the first answered call")
    args = parser.parse_args()
    if args.command == "call" and any("=" not in p for p in args.param):
        parser.error("--param takes NAME=VALUE")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
