"""The baselines and helper servers the scenarios start as their own processes:

    python -m bench._baselines KIND PORT [ARGS]

* ``ws-aiohttp`` - a bare aiohttp WebSocket server at ``/v1/connect``: what
  this machine does with no product. It answers ``register`` with
  ``registered`` and ``ping`` with ``pong`` (no token, no state beyond a dict
  of identities), relays ``presence`` to every connection that sent
  ``subscribe`` (the fan-out floor), and takes ``POST /ingress`` like a carrier
  ingress: fetch the instruction URL (ARGS[0]), find the ``<Client>``, send
  that identity's connection an ``invite`` (the signaling floor).
* ``ws-websockets`` - the same register/ping answers with the ``websockets``
  library (its asyncio server), for idle memory and the handshake rate.
* ``hello`` - an aiohttp hello world answering the REST presence query's path
  with a JSON body of the same shape (Basic auth header required, not checked).
* ``instructions`` - the instruction server for the signaling scenario: every
  POST answers ``<Dial><Client>callee-K</Client></Dial>`` where K is the
  request's ``From`` (its digits) modulo ARGS[0].

Every kind answers ``GET /healthz``, runs on uvloop, logs nothing per request.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
import time
from typing import Any

REGISTERED = json.dumps({"type": "registered", "session": "SE" + "0" * 32}, separators=(",", ":"))


def _install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass


def serve_ws_aiohttp(port: int, instruction_url: str | None) -> None:
    import aiohttp
    from aiohttp import WSMsgType, web

    subscribers: set[web.WebSocketResponse] = set()
    by_identity: dict[str, web.WebSocketResponse] = {}
    client_re = re.compile(r"<Client>([^<]+)</Client>")
    http: dict[str, aiohttp.ClientSession] = {}

    async def connect(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("presence.v1.json",))
        await ws.prepare(request)
        identity = None
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                kind = frame.get("type")
                if kind == "register":
                    identity = frame.get("identity")
                    if identity:
                        by_identity[identity] = ws
                    await ws.send_str(REGISTERED)
                elif kind == "ping":
                    await ws.send_str('{"type":"pong"}')
                elif kind == "subscribe":
                    subscribers.add(ws)
                    await ws.send_str(json.dumps({"type": "subscribed", "id": frame.get("id"), "presences": []}))
                elif kind == "presence":
                    update = json.dumps({
                        "type": "presence_update", "identity": identity, "status": frame.get("status"), "text": frame.get("text", ""),
                        "last_seen": time.time(), "sessions": [], "version": frame.get("id"),
                    })
                    for sub in list(subscribers):
                        if not sub.closed:
                            await sub.send_str(update)
                    await ws.send_str(json.dumps({"type": "ok", "id": frame.get("id")}))
                elif kind == "reject":
                    pass
        finally:
            subscribers.discard(ws)
            if identity and by_identity.get(identity) is ws:
                del by_identity[identity]
        return ws

    async def ring(form: dict[str, str], call_sid: str) -> None:
        async with http["s"].post(instruction_url, data=form) as resp:  # type: ignore[arg-type]
            document = await resp.text()
        found = client_re.search(document)
        ws = by_identity.get(found.group(1)) if found else None
        if ws is not None and not ws.closed:
            await ws.send_str(json.dumps({
                "type": "invite", "call": call_sid, "parent_call": call_sid, "from": form["From"], "to": f"client:{found.group(1)}",  # type: ignore[union-attr]
                "params": {},
            }))

    tasks: set[asyncio.Task[None]] = set()

    async def ingress(request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        sid = "CA" + secrets.token_hex(16)
        task = asyncio.get_running_loop().create_task(ring(form, sid))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return web.json_response({"sid": sid, "status": "queued"}, status=201)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def client_session(app: web.Application) -> Any:
        http["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        yield
        await http["s"].close()

    app = web.Application()
    app.cleanup_ctx.append(client_session)
    app.router.add_get("/v1/connect", connect)
    app.router.add_post("/ingress", ingress)
    app.router.add_get("/healthz", health)
    _install_uvloop()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_ws_websockets(port: int) -> None:
    from http import HTTPStatus

    from websockets.asyncio.server import serve

    async def handler(ws: Any) -> None:
        async for data in ws:
            frame = json.loads(data)
            kind = frame.get("type")
            if kind == "register":
                await ws.send(REGISTERED)
            elif kind == "ping":
                await ws.send('{"type":"pong"}')

    def health(connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return None

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, subprotocols=["presence.v1.json"], process_request=health, compression=None):
            await asyncio.get_running_loop().create_future()

    _install_uvloop()
    asyncio.run(main())


def serve_hello(port: int) -> None:
    from aiohttp import web

    async def presence(request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Basic "):
            return web.json_response({"code": 20003}, status=401)
        now = time.time()
        return web.json_response({
            "identity": request.match_info["identity"], "status": "available", "text": "", "last_seen": now, "version": 1,
            "sessions": [{"session": "SE" + "0" * 32, "status": "available", "text": "", "priority": 0, "capabilities": [],
                          "connected_at": now, "last_activity": now}],
        })

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/v1/Accounts/{account_sid}/Presence/{identity}", presence)
    app.router.add_get("/healthz", health)
    _install_uvloop()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_instructions(port: int, callees: int) -> None:
    from aiohttp import web

    digits = re.compile(r"\d+")

    async def voice(request: web.Request) -> web.Response:
        form = await request.post()
        found = digits.search(str(form.get("From", "")))
        k = int(found.group(0)) % callees if found else 0
        document = f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Client>callee-{k}</Client></Dial></Response>'
        return web.Response(text=document, content_type="application/xml")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/voice", voice)
    app.router.add_get("/healthz", health)
    _install_uvloop()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def main(argv: list[str]) -> int:
    kind, port, rest = argv[0], int(argv[1]), argv[2:]
    if kind == "ws-aiohttp":
        serve_ws_aiohttp(port, rest[0] if rest else None)
    elif kind == "ws-websockets":
        serve_ws_websockets(port)
    elif kind == "hello":
        serve_hello(port)
    elif kind == "instructions":
        serve_instructions(port, int(rest[0]) if rest else 1)
    else:
        print(f"unknown kind {kind!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
