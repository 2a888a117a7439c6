"""<Message>: send a message, by SMS/MMS or in-app to a client identity.

In a messaging document it answers the sender; in a voice document (a Dial's
``action`` falling back) it texts whoever ``to`` names. The body is the text
content or one <Body> child; <Media> children carry MMS attachment URLs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Self
from ._xml import Element

from ..addresses import identity_problem, is_e164
from ._base import HttpMethod, Verb, register_verb
from ._elements import Attributes, child_elements, excerpt, label, refuse, require_empty, text_of
from .urls import url_problem

__all__ = ["MESSAGE_BODY_MAX", "MESSAGE_MAX_MEDIA", "Message"]

MESSAGE_BODY_MAX: Final = 1600  # characters, the platform's limit on a message body
MESSAGE_MAX_MEDIA: Final = 10
_CLIENT_PREFIX: Final = "client:"
# Short codes are 3 to 8 digits depending on the country; an alphanumeric
# sender ID is up to 11 letters, digits and spaces with at least one letter.
_SHORT_CODE_RE: Final = re.compile(r"[0-9]{3,8}")
_ALPHANUMERIC_SENDER_RE: Final = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")


def _is_client_address(value: str) -> bool:
    return value.startswith(_CLIENT_PREFIX) and identity_problem(value[len(_CLIENT_PREFIX) :]) is None


def _recipient(attributes: Attributes) -> str | None:
    value = attributes.raw("to")
    if value is None:
        return None  # reply to the sender of the message being answered
    if is_e164(value) or _is_client_address(value):
        return value
    attributes.refuse("to", value, "must be an E.164 number or client:<identity>")


def _sender(attributes: Attributes) -> str | None:
    value = attributes.raw("from")
    if value is None:
        return None  # the number (or identity) the answered message was sent to
    if (
        is_e164(value)
        or _is_client_address(value)
        or _SHORT_CODE_RE.fullmatch(value)
        or _ALPHANUMERIC_SENDER_RE.fullmatch(value)
    ):
        return value
    attributes.refuse(
        "from", value, "must be an E.164 number, a short code, an alphanumeric sender ID or client:<identity>"
    )


@register_verb("Message")
@dataclass(frozen=True, kw_only=True)
class Message(Verb):
    """One message. ``body`` or ``media_urls`` (or both) is non-empty.

    ``to`` None: reply to the sender. ``from_`` None: send from the address the
    answered message (or call) was for. ``action``: a document requested once
    the message is sent, whose verbs run next.
    """

    body: str | None = None
    media_urls: tuple[str, ...] = ()
    to: str | None = None
    from_: str | None = None
    action: str | None = None
    method: HttpMethod = "POST"
    status_callback: str | None = None

    @classmethod
    def parse(cls, element: Element, *, parent: str = "") -> Self:
        where = label(element, parent)
        bodies: list[str] = []
        media_urls: list[str] = []
        for child in child_elements(element, where):
            child_where = label(child, where)
            if child.tag == "Body":
                require_empty(child, child_where, text_allowed=True)
                bodies.append(text_of(child))
            elif child.tag == "Media":
                require_empty(child, child_where, text_allowed=True)
                media_urls.append(_media_url(text_of(child), child_where))
            else:
                refuse(f"{where} cannot contain {label(child)} (only <Body> and <Media>)")
        if text_of(element):
            bodies.append(text_of(element))
        if len(bodies) > 1:
            refuse(f"{where} has more than one body (text and <Body>, or two <Body>)")
        if len(media_urls) > MESSAGE_MAX_MEDIA:
            refuse(f"{where} has {len(media_urls)} <Media>; at most {MESSAGE_MAX_MEDIA} are allowed")
        body = bodies[0] if bodies and bodies[0] else None
        if body is not None and len(body) > MESSAGE_BODY_MAX:
            refuse(f"{where} body is {len(body)} characters; at most {MESSAGE_BODY_MAX} are allowed")
        if body is None and not media_urls:
            refuse(f"{where} has neither a body nor <Media>")
        attributes = Attributes(element, where)
        return cls(
            body=body,
            media_urls=tuple(media_urls),
            to=_recipient(attributes),
            from_=_sender(attributes),
            action=attributes.url("action"),
            method=attributes.method("method"),
            status_callback=attributes.url("statusCallback"),
        )


def _media_url(url: str, where: str) -> str:
    problem = url_problem(url)
    if problem is not None:
        refuse(f"{where} URL {excerpt(url)}: {problem}")
    return url
