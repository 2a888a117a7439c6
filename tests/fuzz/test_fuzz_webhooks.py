"""Carrier webhooks and carrier answers, through a real server and a real carrier API
(tests/fuzz/webhooks.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import Refused
from tests.fuzz.webhooks import (
    CONTENT_TYPES,
    INGRESS_PASSWORD,
    INGRESS_USER,
    ROUTES,
    VALID_AUTH,
    WebhookRequest,
    WebhookRig,
    basic,
)
from tests.helpers.messaging import NUMBER, OTHER_NUMBER


def examples(n: int) -> settings:
    """The suite's ``fuzz`` profile (conftest.py) with this test's share of the time budget."""
    return settings(settings.get_profile("fuzz"), max_examples=n)


@pytest.fixture(scope="module")
def rig() -> Iterator[WebhookRig]:
    # Synchronous on purpose: Hypothesis drives one request at a time on the rig's own loop.
    rig = WebhookRig().start()
    try:
        yield rig
    finally:
        rig.close()


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
statuses = st.sampled_from(["delivered", "undelivered", "failed", "sent", "DELIVERED", " sent ", "queued", ""])
SENT = "<the id of the message the rig sent>"  # replaced by the rig's real provider id


def report_fields() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "id": st.sampled_from([SENT, "OB-unknown", "", "x" * 300, "a\x00b"]) | values,
            "message_id": st.just(SENT) | values,
            "status": statuses | values,
            "error_code": st.sampled_from([30003, "30005", "", "1e3", "99999999999", -1, True]) | values,
            "timestamp": st.sampled_from([1.8e9, "1800000000", "", "nan", "inf", "1e400", -5, 1e12]) | values,
        },
    )


def message_fields() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "From": st.sampled_from([OTHER_NUMBER, "+1", "client:alice", ""]) | st.text(max_size=140),
            "To": st.sampled_from([NUMBER, OTHER_NUMBER, "+15559999999", "15550001111", ""]) | st.text(max_size=40),
            "Body": st.text(max_size=40) | st.just("x" * 1601),
            "MediaUrl0": st.sampled_from(["https://example.com/a.png", "ftp://x", ""]) | st.text(max_size=20),
            "MediaUrl11": st.just("https://example.com/b.png"),
            "Sdp": st.text(max_size=40),
        },
    )


def _real_id(rig: WebhookRig, fields: dict[str, Any]) -> dict[str, Any]:
    return {k: rig.sent_id if v == SENT else v for k, v in fields.items()}


def encode_body(fields: dict[str, Any], content_type: str) -> bytes:
    if content_type == "application/json":
        return json.dumps(fields).encode()
    flat = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
    if content_type.startswith("multipart/"):
        parts = [f'--fuzzboundary\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in flat.items()]
        return ("".join(parts) + "--fuzzboundary--\r\n").encode("utf-8", "surrogatepass")
    return urlencode(flat, encoding="utf-8", errors="surrogatepass").encode()


authorizations = st.sampled_from([VALID_AUTH, None, basic(INGRESS_USER, "wrong-password-123"), "Basic", "Basic !!!", "Bearer x",
                                  "basic " + VALID_AUTH[6:], "Basic " + "QQ==" * 10]) | st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=40)


@examples(250)
@given(st.data(), st.sampled_from(ROUTES), st.sampled_from(CONTENT_TYPES[:3]), authorizations)
def test_structured_webhooks_are_accepted_or_refused_with_the_json_error(rig: WebhookRig, data: st.DataObject, route: str, content_type: str, authorization: str | None) -> None:
    fields = _real_id(rig, data.draw(report_fields() if route == "Status" else message_fields()))
    rig.feed(WebhookRequest(route, content_type, encode_body(fields, content_type), authorization))


@examples(120)
@given(st.sampled_from(ROUTES), st.sampled_from(CONTENT_TYPES), st.binary(max_size=200), st.sampled_from(["carrier", "nobody", "x" * 300]))
@example("Status", "application/json", b"[" * 100_000, "carrier")
@example("Status", "application/json", b'{"id": "x", "status": "sent", "timestamp": 1e999}', "carrier")
@example("Messages", "multipart/form-data; boundary=fuzzboundary",
         b'--fuzzboundary\r\nContent-Disposition: form-data; name="Body"; filename="a.txt"\r\n\r\nhi\r\n--fuzzboundary--\r\n', "carrier")
@example("Status", "application/x-www-form-urlencoded", b"id=%FF%FE&status=sent", "carrier")
def test_raw_webhook_bodies_are_refused_with_the_json_error(rig: WebhookRig, route: str, content_type: str, body: bytes, provider: str) -> None:
    rig.feed(WebhookRequest(route, content_type, body, VALID_AUTH, provider))


@pytest.mark.parametrize("authorization", ["Basic \u00e9", "Basic Y2Fycmll\u00e2_3MtcGFz", "basic \u00ff\u00ff"])
def test_non_ascii_credentials_are_refused_not_a_server_error(rig: WebhookRig, authorization: str) -> None:
    # Found by atheris: base64 refuses non-ASCII text with a ValueError that
    # basic_credentials did not catch, a 500 on every authenticated route.
    body = json.dumps({"id": rig.sent_id, "status": "sent"}).encode()
    outcome = rig.feed(WebhookRequest("Status", "application/json", body, authorization))
    assert isinstance(outcome, Refused) and outcome.code == 20003


def test_a_report_about_a_sent_message_is_accepted(rig: WebhookRig) -> None:
    body = json.dumps({"id": rig.sent_id, "status": "sent"}).encode()
    assert rig.feed(WebhookRequest("Status", "application/json", body)) == "accepted"
    refused = rig.feed(WebhookRequest("Status", "application/json", body, authorization=None))
    assert isinstance(refused, Refused) and refused.code == 20003


# -- what a carrier's API answers the http provider ---------------------------------------------

answer_ids = st.sampled_from(["c-1", "", "x" * 300, "a\nb", 7, True, None, 1e300]) | values


@examples(150)
@given(
    st.sampled_from([200, 201, 202, 204, 400, 401, 403, 404, 429, 500, 503]) | st.integers(200, 599),
    st.fixed_dictionaries({}, optional={"id": answer_ids, "message_id": answer_ids, "error_code": st.sampled_from([30005, "30007", 29999, "x"]) | values}).map(
        lambda d: json.dumps(d).encode()) | st.binary(max_size=100),
)
@example(200, b"[" * 60_000)  # nested deeper than json's recursion limit, within the 64 KiB cap
@example(200, b'{"id": "ok"}' + b" " * 70_000)  # over the cap
def test_carrier_answers_become_send_results(rig: WebhookRig, status: int, body: bytes) -> None:
    rig.answer(status, body)
