"""Reading elements: typed attributes, text and children, each refusal naming its place.

Rules shared by every verb (docs/instructions.md repeats them):

* Attribute names are case-sensitive (``timeout``, not ``Timeout``); unknown
  attributes are ignored, as TwiML does, so documents written for newer
  platform features still run.
* Attribute values are stripped; an empty value means "not given" (the default
  applies). Enumerations, methods and booleans are case-insensitive.
* Integers are plain decimal digits. Below the minimum (or not a number) is
  refused; above the maximum is clamped to the maximum, because the platform
  does that and documents in the wild rely on it (``timeout="3600"``).
* Text content is stripped. Text where a verb expects only child elements is
  refused rather than silently dropped: it is almost always a typo.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal, NoReturn, TypeAlias, TypeVar
from ._xml import Element

from ._base import SCHEMA_INVALID, HttpMethod, InstructionError
from .urls import url_problem

__all__ = [
    "CALL_EVENTS",
    "Attributes",
    "CallEvent",
    "child_elements",
    "excerpt",
    "label",
    "refuse",
    "require_empty",
    "text_of",
]

CallEvent: TypeAlias = Literal["initiated", "ringing", "answered", "completed"]
CALL_EVENTS: Final[tuple[CallEvent, ...]] = ("initiated", "ringing", "answered", "completed")

_DIGITS_RE: Final = re.compile(r"[0-9]+")
# Python refuses int() on strings over 4300 digits; anything over nine digits
# is above every maximum here anyway.
_MAX_DIGITS: Final = 9
_EXCERPT_LENGTH: Final = 40

_S = TypeVar("_S", bound=str)


def excerpt(value: str) -> str:
    """A short, quoted rendering of a refused value, safe to put in a log line."""
    if len(value) > _EXCERPT_LENGTH:
        value = value[:_EXCERPT_LENGTH] + "..."
    return repr(value)


def label(element: Element, parent: str = "") -> str:
    """Where an element sits, for messages: ``<Dial><Client>``."""
    tag = element.tag
    if len(tag) > _EXCERPT_LENGTH:  # names come from the document: keep messages short
        tag = tag[:_EXCERPT_LENGTH] + "..."
    return f"{parent}<{tag}>"


def refuse(message: str) -> NoReturn:
    raise InstructionError(SCHEMA_INVALID, message)


def text_of(element: Element) -> str:
    """The element's own leading text, stripped ("" when none)."""
    return (element.text or "").strip()


def child_elements(element: Element, where: str) -> Iterator[Element]:
    """The child elements, refusing text that sits between or after them."""
    for child in element:
        if child.tail is not None and child.tail.strip():
            refuse(f"{where} holds text {excerpt(child.tail.strip())} after {label(child)}")
        yield child


def require_empty(element: Element, where: str, *, text_allowed: bool = False) -> None:
    """Refuse child elements (and, unless allowed, text) inside ``element``."""
    for child in element:
        refuse(f"{where} cannot contain {label(child)}")
    if not text_allowed and text_of(element):
        refuse(f"{where} cannot contain text (got {excerpt(text_of(element))})")


@dataclass(frozen=True)
class Attributes:
    """Typed access to one element's attributes; every refusal names element and attribute."""

    element: Element
    where: str

    def refuse(self, name: str, value: str, why: str) -> NoReturn:
        refuse(f"{self.where} attribute {name}={excerpt(value)}: {why}")

    def raw(self, name: str) -> str | None:
        value = self.element.get(name)
        if value is None:
            return None
        # An empty attribute is "not given": helper libraries and templating
        # engines emit action="" for an unset value.
        return value.strip() or None

    def text(self, name: str, *, max_length: int = 256, pattern: re.Pattern[str] | None = None) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        if len(value) > max_length:
            self.refuse(name, value, f"longer than {max_length} characters")
        if pattern is not None and not pattern.fullmatch(value):
            self.refuse(name, value, "has characters this attribute does not allow")
        return value

    def url(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        problem = url_problem(value)
        if problem is not None:
            self.refuse(name, value, problem)
        return value

    def method(self, name: str = "method") -> HttpMethod:
        value = self.raw(name)
        if value is None:
            return "POST"
        upper = value.upper()
        if upper == "GET":
            return "GET"
        if upper == "POST":
            return "POST"
        self.refuse(name, value, "must be GET or POST")

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered not in ("true", "false"):
            self.refuse(name, value, "must be true or false")
        return lowered == "true"

    def integer(
        self,
        name: str,
        *,
        default: int,
        minimum: int,
        maximum: int | None = None,
        floor: int | None = None,
    ) -> int:
        """An integer attribute: refused below ``minimum``, raised to ``floor``, clamped to ``maximum``."""
        value = self.raw(name)
        if value is None:
            return default
        bounds = f"from {minimum}" + (f" to {maximum}" if maximum is not None else " up")
        if not _DIGITS_RE.fullmatch(value):
            self.refuse(name, value, f"must be a whole number {bounds}")
        digits = value.lstrip("0") or "0"
        if len(digits) > _MAX_DIGITS:
            if maximum is None:
                self.refuse(name, value, "is too large")
            return maximum
        number = int(digits)
        if number < minimum:
            self.refuse(name, value, f"must be a whole number {bounds}")
        if floor is not None and number < floor:
            return floor
        if maximum is not None and number > maximum:
            return maximum
        return number

    def choice(self, name: str, choices: Sequence[_S], default: _S) -> _S:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        for choice in choices:
            if choice == lowered:
                return choice
        self.refuse(name, value, "must be one of " + ", ".join(choices))

    def choices(self, name: str, choices: Sequence[_S], default: tuple[_S, ...]) -> tuple[_S, ...]:
        """A space- (or comma-) separated subset of ``choices``, in ``choices`` order."""
        value = self.raw(name)
        if value is None:
            return default
        given = set(re.split(r"[\s,]+", value.lower())) - {""}
        unknown = given.difference(choices)
        if unknown:
            self.refuse(name, value, f"{', '.join(sorted(unknown))} not in " + ", ".join(choices))
        return tuple(choice for choice in choices if choice in given)

    def keys(self, name: str, default: str, *, single: bool) -> str:
        """DTMF keys (0-9 * #): one key or none (``single``), else a set of keys; "" = none."""
        value = self.element.get(name)
        if value is None:
            return default
        value = value.strip()  # unlike other attributes, "" is meaningful: no finishing key
        if any(key not in "0123456789*#" for key in value):
            self.refuse(name, value, "may hold only the keys 0-9, * and #")
        if single and len(value) > 1:
            self.refuse(name, value, "must be a single key (0-9, * or #) or empty")
        return value if single else "".join(dict.fromkeys(value))
