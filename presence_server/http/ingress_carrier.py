"""Carrier webhooks: ``POST /v1/Ingress/{provider}/Status`` (delivery reports).

A carrier reports what became of a message it accepted; the report names the
message by the carrier's own id (``provider_message_id``), so it is matched by
provider and id - a report can only ever touch the messages its own provider
sent. The request is authenticated with the provider's inbound credentials.
The messaging pipeline applies it (messaging/reports.py): idempotent (the same
report twice answers 200 and changes nothing; a late ``sent`` never undoes a
final status), and counted in the routing statistics.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from aiohttp import web

from protocol.errors import ErrorCode

from ..carriers.base import DELIVERY_STATUSES, DeliveryReport, Provider, authenticate_ingress
from . import forms
from .app_keys import NODE, PROVIDERS
from .errors import ApiError

MAX_ID_LENGTH = 256


def _bad(message: str) -> ApiError:
    return ApiError(ErrorCode.PARAMETER_INVALID, message)


async def _fields(request: web.Request) -> Mapping[str, Any]:
    if request.content_type == "application/json":
        try:
            data = json.loads(await request.read())
        # RecursionError: "[[[[..." deeper than the decoder's limit (found by tests/fuzz).
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _bad("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise _bad("the body must be a JSON object")
        return data
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await forms.read(request)
        if any(not isinstance(v, str) for v in form.values()):
            raise _bad("a delivery report carries no files")
        return form
    raise _bad("send the report as application/json or as a form (application/x-www-form-urlencoded)")


def parse_report(provider: str, data: Mapping[str, Any]) -> DeliveryReport:
    """A carrier's report, or ApiError 400 naming what is wrong with it."""
    raw_id = data.get("id", data.get("message_id"))
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)
    # Printable ASCII: every carrier's ids are, and anything else in a report is garbage.
    if not isinstance(raw_id, str) or not raw_id or len(raw_id) > MAX_ID_LENGTH or not (raw_id.isascii() and raw_id.isprintable()):
        raise _bad(f"'id' must be the provider's message id, a string of 1 to {MAX_ID_LENGTH} printable ASCII characters")
    status = data.get("status")
    if not isinstance(status, str) or status.strip().lower() not in DELIVERY_STATUSES:
        raise _bad(f"'status' must be one of {', '.join(sorted(DELIVERY_STATUSES))}")
    error_code = data.get("error_code")
    if isinstance(error_code, str) and error_code.isascii() and error_code.isdigit() and len(error_code) <= 9:
        error_code = int(error_code)  # forms carry numbers as text
    elif error_code == "":
        error_code = None
    if error_code is not None and (isinstance(error_code, bool) or not isinstance(error_code, int) or not 0 <= error_code <= 99999):
        raise _bad("'error_code' must be an integer from 0 to 99999")
    timestamp = data.get("timestamp")
    if isinstance(timestamp, str) and timestamp:
        try:
            timestamp = float(timestamp)
        except ValueError:
            raise _bad("'timestamp' must be epoch seconds") from None
    elif timestamp == "":
        timestamp = None
    if timestamp is not None and (isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not 0 <= timestamp < 1e11):
        raise _bad("'timestamp' must be epoch seconds")
    return DeliveryReport(
        provider=provider,
        provider_message_id=raw_id,
        status=status.strip().lower(),
        error_code=error_code,
        timestamp=None if timestamp is None else float(timestamp),
    )


def ingress_provider(request: web.Request) -> Provider:
    """The provider named in an ingress path, once its credentials check out."""
    name = request.match_info["provider"]
    provider = request.app[PROVIDERS].get(name)
    if provider is None:
        raise ApiError(ErrorCode.PROVIDER_UNKNOWN, f"no carrier provider named {name[:40]!r}")
    authenticate_ingress(request, provider)
    return provider


async def status_report(request: web.Request) -> web.Response:
    provider = ingress_provider(request)
    report = parse_report(provider.name, await _fields(request))
    reports = request.app[NODE].messaging.reports
    result = await reports.apply(report)
    if result.outcome == "unknown":
        # It may be about a send whose answer is not stored yet: kept a while and
        # applied if it turns up. The carrier is told 404 either way (and may retry).
        reports.park(report)
        raise ApiError(ErrorCode.NOT_FOUND, f"provider {provider.name!r} sent no message with id {report.provider_message_id[:64]!r}")
    record = result.record
    assert record is not None
    return web.json_response({"message_sid": record.sid, "status": record.status, "changed": result.outcome == "applied"})


def add_routes(app: web.Application) -> None:
    app[PROVIDERS] = app[NODE].providers
    app.router.add_post("/v1/Ingress/{provider}/Status", status_report)
