"""Per-destination channel choice: the app when its user is there, else SMS or MMS.

A message for a person can reach them two ways: over IP to an app session of
their client identity, or over a carrier to their phone number. Which one is
decided per destination, at send time, from facts the caller has gathered
(presence, configured numbers, route capabilities), and the decision carries
a reason code so a message's history can say *why* it went by SMS.

The rule, in short: walk the account's preferred ``order``; the app is usable
when the identity has a present session that has not already failed this
message; SMS is usable when there is a phone number to send to; media go as
MMS where a route carries MMS and as links in the text where none does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

ORDER_CHANNELS: Final = ("app", "sms")
DEFAULT_ORDER: Final = ("app", "sms")

REASONS: Final[dict[str, str]] = {
    "app-present": "The recipient's app has a present session that accepts messages.",
    "app-not-acked": "The message was sent to the app but not acknowledged in time, so it falls back to SMS.",
    "app-absent": "The recipient has no present app session, so the message goes by SMS.",
    "no-app": "The destination is a phone number no client identity owns, so it goes by SMS.",
    "sms-preferred": "The channel order puts SMS before the app (or leaves the app out).",
    "no-phone": "The app cannot be used and the recipient has no phone number to fall back to.",
    "app-only": "The app cannot be used and the channel order does not allow SMS.",
}


@dataclass(frozen=True)
class ChannelChoice:
    channel: str  # "app" | "sms" | "mms" | "none"
    reason: str  # a key of REASONS
    to: str  # "client:<identity>" for app, the E.164 phone for sms/mms, the original for none
    media_as_links: bool = False  # sms only: append the media URLs to the text


def choose_channel(
    *,
    order: Sequence[str],
    to: str,
    identity: str | None,
    phone: str | None,
    app_present: bool,
    app_failed: str | None = None,
    has_media: bool = False,
    send_as_mms: bool = False,
    mms_capable: bool = False,
) -> ChannelChoice:
    """The channel to send a message for ``to`` on, and why.

    ``send_as_mms`` asks for MMS even without media (long text as one
    message); like media, it is honoured only where a route carries MMS.
    """
    order = tuple(order) or DEFAULT_ORDER
    unknown = [name for name in order if name not in ORDER_CHANNELS]
    if unknown:
        raise ValueError(f"unknown channel {unknown[0]!r} in order: expected app and/or sms")

    app_usable = identity is not None and app_present and app_failed is None
    for name in order:
        if name == "app" and app_usable:
            return ChannelChoice("app", "app-present", f"client:{identity}")
        if name == "sms" and phone is not None:
            reason = _sms_reason(order, identity, app_present, app_failed)
            if (has_media or send_as_mms) and mms_capable:
                return ChannelChoice("mms", reason, phone)
            return ChannelChoice("sms", reason, phone, media_as_links=has_media)
    return ChannelChoice("none", "no-phone" if "sms" in order else "app-only", to)


def _sms_reason(order: tuple[str, ...], identity: str | None, app_present: bool, app_failed: str | None) -> str:
    # Called only when SMS won, so the app either was not usable or came later.
    if identity is None:
        return "no-app"
    if app_failed is not None:
        return "app-not-acked"
    if "app" in order and not app_present:
        return "app-absent"
    return "sms-preferred"
