"""Carrier ingress: inbound calls and messages a carrier (or a SIP trunk
connector) hands over, authenticated with that provider's credentials."""

from __future__ import annotations

from aiohttp import web

from protocol.addresses import is_e164
from protocol.errors import ErrorCode

from . import forms
from .app_keys import ACCOUNTS
from .ingress_carrier import ingress_provider
from .calls import _signaling
from .errors import ApiError

MAX_MEDIA = 10


async def _addresses(request: web.Request):  # type: ignore[no-untyped-def]
    form = await forms.read(request)
    sender = forms.text(form, "From", required=True, max_len=128)
    to = forms.text(form, "To", required=True, max_len=32)
    assert to is not None
    if not is_e164(to):
        raise forms.bad("To", "must be an E.164 number")
    account = request.app[ACCOUNTS].owner_of_number(to)
    if account is None:
        raise ApiError(ErrorCode.NUMBER_UNKNOWN, f"no account owns {to}")
    return form, sender, to, account


async def voice(request: web.Request) -> web.Response:
    ingress_provider(request)
    form, sender, to, account = await _addresses(request)
    if account.voice_webhook(to) is None:
        raise ApiError(ErrorCode.NUMBER_HAS_NO_URL, f"{to} has no voice_url")
    sdp = forms.text(form, "Sdp", max_len=64 * 1024)
    record = await _signaling(request).ingress_call(account, sender, to, sdp)
    return web.json_response(record.to_api(), status=201)


async def messages(request: web.Request) -> web.Response:
    ingress_provider(request)
    form, sender, to, account = await _addresses(request)
    body = forms.text(form, "Body", max_len=1600) or ""
    media = tuple(url for i in range(MAX_MEDIA + 1) if (url := forms.url(form, f"MediaUrl{i}")) is not None)
    if len(media) > MAX_MEDIA:
        raise forms.bad("MediaUrl", f"at most {MAX_MEDIA} media URLs")
    if not body and not media:
        raise forms.bad("Body", "or a MediaUrl0 is required")
    record = await _signaling(request).ingress_message(account, sender or "", to, body, media)
    return web.json_response(record.to_api(), status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/Ingress/{provider}/Voice", voice)
    app.router.add_post("/v1/Ingress/{provider}/Messages", messages)
