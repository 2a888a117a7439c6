"""<Dial> and its nouns <Client> and <Number>.

``<Dial><Client>alice</Client></Dial>`` rings alice's present sessions (first
to accept wins); ``<Number>`` (or a bare number as the Dial's text) calls a
phone number. Nouns ring in parallel, or one after the other with
``sequential="true"``. ``<Sip>``, ``<Conference>``, ``<Queue>`` and the
platform's other nouns are refused as not supported, so a document that needs
them fails loudly instead of silently connecting nobody.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Self, TypedDict
from ._xml import Element

from ..addresses import identity_problem, is_e164
from ._base import HttpMethod, Verb, register_verb
from ._elements import (
    CALL_EVENTS,
    Attributes,
    CallEvent,
    child_elements,
    excerpt,
    label,
    refuse,
    require_empty,
    text_of,
)

__all__ = [
    "DIAL_MAX_NOUNS",
    "Client",
    "Dial",
    "DialNoun",
    "Number",
    "Parameter",
]

DIAL_MAX_NOUNS: Final = 10
DIAL_TIMEOUT_MIN: Final = 5
DIAL_TIMEOUT_MAX: Final = 600
DIAL_TIME_LIMIT_MAX: Final = 86_400  # the platform's 24-hour cap on a call
PARAMETER_NAME_MAX: Final = 256
PARAMETER_VALUE_MAX: Final = 4096

# Nouns the platform knows and this product does not implement.
_UNSUPPORTED_NOUNS: Final = frozenset({"Sip", "Conference", "Queue", "Application", "WhatsApp"})
_DEFAULT_EVENTS: Final[tuple[CallEvent, ...]] = ("completed",)
_SEND_DIGITS_RE: Final = re.compile(r"[0-9*#wW]+")  # w: wait half a second
_CLIENT_PREFIX: Final = "client:"


class _NounOptions(TypedDict):
    url: str | None
    method: HttpMethod
    status_callback: str | None
    status_callback_event: tuple[CallEvent, ...]
    status_callback_method: HttpMethod


def _noun_options(attributes: Attributes) -> _NounOptions:
    return _NounOptions(
        url=attributes.url("url"),
        method=attributes.method("method"),
        status_callback=attributes.url("statusCallback"),
        status_callback_event=attributes.choices("statusCallbackEvent", CALL_EVENTS, _DEFAULT_EVENTS),
        status_callback_method=attributes.method("statusCallbackMethod"),
    )


@dataclass(frozen=True, kw_only=True)
class DialNoun:
    """What every dialled party shares.

    ``url``: a document run on the called party once it answers, before the
    parties are connected (a "whisper"). ``status_callback_event`` only matters
    when ``status_callback`` is set; by default only ``completed`` is reported.
    """

    url: str | None = None
    method: HttpMethod = "POST"
    status_callback: str | None = None
    status_callback_event: tuple[CallEvent, ...] = _DEFAULT_EVENTS
    status_callback_method: HttpMethod = "POST"


@dataclass(frozen=True)
class Parameter:
    """A custom parameter handed to the called client app with the invite."""

    name: str
    value: str


def _parse_parameter(element: Element, where: str) -> Parameter:
    require_empty(element, where)
    attributes = Attributes(element, where)
    name = attributes.text("name", max_length=PARAMETER_NAME_MAX)
    if name is None:
        refuse(f"{where} needs a name attribute")
    value = attributes.text("value", max_length=PARAMETER_VALUE_MAX)
    return Parameter(name=name, value=value or "")


@dataclass(frozen=True, kw_only=True)
class Client(DialNoun):
    """A client identity of the account, rung on every session where it is present."""

    identity: str
    parameters: tuple[Parameter, ...] = ()

    @classmethod
    def parse(cls, element: Element, *, parent: str = "") -> Self:
        where = label(element, parent)
        identities: list[str] = []
        parameters: list[Parameter] = []
        for child in child_elements(element, where):
            if child.tag == "Identity":
                require_empty(child, label(child, where), text_allowed=True)
                identities.append(text_of(child))
            elif child.tag == "Parameter":
                parameters.append(_parse_parameter(child, label(child, where)))
            else:
                refuse(f"{where} cannot contain {label(child)} (only <Identity> and <Parameter>)")
        if text_of(element):
            identities.append(text_of(element))
        if len(identities) > 1:
            refuse(f"{where} names more than one identity (text and <Identity>, or two <Identity>)")
        if not identities:
            refuse(f"{where} has no identity")
        identity = identities[0]
        problem = identity_problem(identity)
        if problem is not None:
            refuse(f"{where} identity {excerpt(identity)}: {problem}")
        return cls(
            identity=identity,
            parameters=tuple(parameters),
            **_noun_options(Attributes(element, where)),
        )


@dataclass(frozen=True, kw_only=True)
class Number(DialNoun):
    """A phone number (E.164), called through a carrier.

    ``send_digits``: DTMF sent once the call is answered (``w`` waits half a second).
    """

    number: str
    send_digits: str | None = None

    @classmethod
    def parse(cls, element: Element, *, parent: str = "") -> Self:
        where = label(element, parent)
        require_empty(element, where, text_allowed=True)
        attributes = Attributes(element, where)
        return cls(
            number=_e164(text_of(element), where),
            send_digits=attributes.text("sendDigits", max_length=256, pattern=_SEND_DIGITS_RE),
            **_noun_options(attributes),
        )


def _e164(value: str, where: str) -> str:
    if not is_e164(value):
        refuse(f"{where} number {excerpt(value)} is not in E.164 form (+ and 2 to 15 digits)")
    return value


_NOUNS: Final[dict[str, type[Client] | type[Number]]] = {"Client": Client, "Number": Number}


@register_verb("Dial")
@dataclass(frozen=True, kw_only=True)
class Dial(Verb):
    """Connect the caller to one of ``nouns``: the first to answer wins.

    ``action``: the document to continue with once the dialled call ends (it
    decides the fallback, e.g. an SMS when nobody answered); without it the
    document goes on with the next verb.
    """

    nouns: tuple[Client | Number, ...]
    action: str | None = None
    method: HttpMethod = "POST"
    timeout: int = 30
    caller_id: str | None = None
    sequential: bool = False
    answer_on_bridge: bool = False
    hangup_on_star: bool = False
    time_limit: int = 14_400

    @classmethod
    def parse(cls, element: Element, *, parent: str = "") -> Self:
        where = label(element, parent)
        attributes = Attributes(element, where)
        return cls(
            nouns=_parse_nouns(element, where),
            action=attributes.url("action"),
            method=attributes.method("method"),
            timeout=attributes.integer(
                "timeout", default=30, minimum=1, floor=DIAL_TIMEOUT_MIN, maximum=DIAL_TIMEOUT_MAX
            ),
            caller_id=_caller_id(attributes),
            sequential=attributes.boolean("sequential", False),
            answer_on_bridge=attributes.boolean("answerOnBridge", False),
            hangup_on_star=attributes.boolean("hangupOnStar", False),
            time_limit=attributes.integer("timeLimit", default=14_400, minimum=1, maximum=DIAL_TIME_LIMIT_MAX),
            # ``record`` (and its recording* companions) are accepted and ignored:
            # recording is not a feature of this product.
        )


def _parse_nouns(element: Element, where: str) -> tuple[Client | Number, ...]:
    text = text_of(element)
    children = list(child_elements(element, where))
    if text and children:
        refuse(f"{where} mixes a number in its text with nouns; use <Number> for every number")
    if text:
        return (Number(number=_e164(text, where)),)
    if not children:
        refuse(f"{where} has nothing to dial (no <Client>, no <Number>, no number)")
    if len(children) > DIAL_MAX_NOUNS:
        refuse(f"{where} has {len(children)} nouns; at most {DIAL_MAX_NOUNS} are allowed")
    nouns: list[Client | Number] = []
    for child in children:
        noun = _NOUNS.get(child.tag)
        if noun is not None:
            nouns.append(noun.parse(child, parent=where))
        elif child.tag in _UNSUPPORTED_NOUNS:
            refuse(f"{label(child, where)} is not supported (only <Client> and <Number>)")
        else:
            refuse(f"{label(child, where)} is not a known noun (only <Client> and <Number>)")
    return tuple(nouns)


def _caller_id(attributes: Attributes) -> str | None:
    value = attributes.raw("callerId")
    if value is None:
        return None
    if is_e164(value):
        return value
    # A client app calling out shows up as client:<identity> at the far end.
    if value.startswith(_CLIENT_PREFIX) and identity_problem(value[len(_CLIENT_PREFIX) :]) is None:
        return value
    attributes.refuse("callerId", value, "must be an E.164 number or client:<identity>")
