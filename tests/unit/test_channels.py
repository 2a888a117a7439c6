"""protocol/channels.py: choosing app, SMS or MMS per destination."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.channels import REASONS, ChannelChoice, choose_channel

PHONE = "+14155550100"

# (facts, expected choice). Unlisted facts take these defaults:
BASE: dict[str, Any] = {"order": (), "to": "client:alice", "identity": "alice", "phone": PHONE, "app_present": True}

CASES: list[tuple[str, dict[str, Any], ChannelChoice]] = [
    ("app present", {}, ChannelChoice("app", "app-present", "client:alice")),
    ("app absent", {"app_present": False}, ChannelChoice("sms", "app-absent", PHONE)),
    ("app not acked", {"app_failed": "not-acked"}, ChannelChoice("sms", "app-not-acked", PHONE)),
    ("sms first", {"order": ("sms", "app")}, ChannelChoice("sms", "sms-preferred", PHONE)),
    ("sms only, app present", {"order": ("sms",)}, ChannelChoice("sms", "sms-preferred", PHONE)),
    ("sms first, app absent", {"order": ("sms", "app"), "app_present": False}, ChannelChoice("sms", "app-absent", PHONE)),
    (
        "plain number nobody owns",
        {"to": PHONE, "identity": None, "app_present": False},
        ChannelChoice("sms", "no-app", PHONE),
    ),
    ("no phone", {"app_present": False, "phone": None}, ChannelChoice("none", "no-phone", "client:alice")),
    ("app only, absent", {"order": ("app",), "app_present": False}, ChannelChoice("none", "app-only", "client:alice")),
    ("app only, present", {"order": ("app",)}, ChannelChoice("app", "app-present", "client:alice")),
    (
        "media, mms route",
        {"app_present": False, "has_media": True, "mms_capable": True},
        ChannelChoice("mms", "app-absent", PHONE),
    ),
    (
        "media, no mms route",
        {"app_present": False, "has_media": True},
        ChannelChoice("sms", "app-absent", PHONE, media_as_links=True),
    ),
    (
        "send_as_mms, mms route",
        {"app_present": False, "send_as_mms": True, "mms_capable": True},
        ChannelChoice("mms", "app-absent", PHONE),
    ),
    ("send_as_mms, no mms route", {"app_present": False, "send_as_mms": True}, ChannelChoice("sms", "app-absent", PHONE)),
    ("media over the app", {"has_media": True, "mms_capable": True}, ChannelChoice("app", "app-present", "client:alice")),
    (
        "owned number, app present",
        {"to": PHONE, "identity": "alice"},
        ChannelChoice("app", "app-present", "client:alice"),
    ),
]


@pytest.mark.parametrize(("facts", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_choice_table(facts: dict[str, Any], expected: ChannelChoice) -> None:
    assert choose_channel(**{**BASE, **facts}) == expected


def test_unknown_order_entry() -> None:
    with pytest.raises(ValueError, match="'email'"):
        choose_channel(**{**BASE, "order": ("app", "email")})


def test_every_reason_is_explained() -> None:
    assert all(expected.reason in REASONS for _, _, expected in CASES)
    assert all(text and "\n" not in text for text in REASONS.values())


@given(
    order=st.lists(st.sampled_from(["app", "sms"]), max_size=3),
    identity=st.none() | st.just("alice"),
    phone=st.none() | st.just(PHONE),
    app_present=st.booleans(),
    app_failed=st.none() | st.just("not-acked"),
    has_media=st.booleans(),
    send_as_mms=st.booleans(),
    mms_capable=st.booleans(),
)
def test_choice_is_always_consistent(
    order: list[str],
    identity: str | None,
    phone: str | None,
    app_present: bool,
    app_failed: str | None,
    has_media: bool,
    send_as_mms: bool,
    mms_capable: bool,
) -> None:
    to = "client:alice" if identity else "+15005550006"
    choice = choose_channel(
        order=order, to=to, identity=identity, phone=phone, app_present=app_present, app_failed=app_failed,
        has_media=has_media, send_as_mms=send_as_mms, mms_capable=mms_capable,
    )  # fmt: skip
    effective = order or ["app", "sms"]
    app_ok = "app" in effective and identity is not None and app_present and app_failed is None
    sms_ok = "sms" in effective and phone is not None
    assert choice.reason in REASONS
    if choice.channel == "app":
        assert app_ok and choice.to == f"client:{identity}"
    elif choice.channel in ("sms", "mms"):
        assert sms_ok and choice.to == phone
        # The app is skipped only if it is not usable or comes after SMS.
        assert not app_ok or effective.index("sms") < effective.index("app")
    else:
        assert choice.channel == "none" and not app_ok and not sms_ok and choice.to == to
    assert choice.channel != "mms" or mms_capable
    assert not choice.media_as_links or (choice.channel == "sms" and has_media)
    if choice.channel == "sms" and has_media:
        assert choice.media_as_links
