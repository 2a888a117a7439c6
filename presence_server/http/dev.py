"""Dev mode's own instruction application, so `make run` can connect two
clients with nothing else set up: a call to ``client:<name>`` dials that
client, a call to a number dials the number. It checks each request's
signature like any customer's application should. Never served outside dev mode."""

from __future__ import annotations

from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from aiohttp import web

from protocol.addresses import is_e164
from protocol.messages import destination_problem
from protocol.signing import SIGNATURE_HEADER, validate_signature

from ..config import AccountConfig, ApiKeyConfig, ApplicationConfig, Config
from .app_keys import ACCOUNTS

VOICE_PATH = "/dev/voice"


def dev_account(config: Config) -> tuple[AccountConfig, ApiKeyConfig, ApplicationConfig] | None:
    """The dev account, with the API key to sign its tokens and the application
    whose calls come to :func:`voice`; None outside dev mode.

    Dev mode appends it after any configured accounts (cli.py), so it is looked
    for from the end - by what makes it the dev account (an application that
    answers at this server's /dev/voice, a key with a secret) rather than by
    its position or name, which a configuration file could imitate or shift."""
    if not config.dev:
        return None
    for account in reversed(config.accounts):
        key = next((k for k in account.api_keys if k.secret and not k.revoked), None)
        app = next((a for a in account.applications if a.voice_url and urlsplit(a.voice_url).path == VOICE_PATH), None)
        if key is not None and app is not None:
            return account, key, app
    return None


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
    app.router.add_post(VOICE_PATH, voice)
