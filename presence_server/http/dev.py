"""Dev mode's own instruction application, so `make run` can connect two
clients with nothing else set up: a call to ``client:<name>`` dials that
client, a call to a number dials the number. It checks each request's
signature like any customer's application should. Never served outside dev mode."""

from __future__ import annotations

from xml.sax.saxutils import escape

from aiohttp import web

from protocol.addresses import is_e164
from protocol.messages import destination_problem
from protocol.signing import SIGNATURE_HEADER, validate_signature

from .app_keys import ACCOUNTS


def _twiml(body: str) -> web.Response:
    return web.Response(text=f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>', content_type="application/xml")


async def voice(request: web.Request) -> web.Response:
    form = await request.post()
    params = {k: str(v) for k, v in form.items()}
    account = request.app[ACCOUNTS].account(params.get("AccountSid", ""))
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if account is None or not validate_signature(account.auth_token, str(request.url), params, signature):
        return web.Response(status=403, text="bad signature")
    to = params.get("To", "")
    if to.lower().startswith("client:") and destination_problem(to) is None:
        return _twiml(f"<Dial><Client>{escape(to[7:])}</Client></Dial>")
    if is_e164(to):
        return _twiml(f"<Dial><Number>{escape(to)}</Number></Dial>")
    return _twiml('<Reject reason="rejected"/>')


def add_routes(app: web.Application) -> None:
    app.router.add_post("/dev/voice", voice)
