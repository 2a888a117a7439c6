"""Control-flow verbs: <Redirect>, <Reject>, <Hangup>, <Pause>.

None of them needs media: the executor acts on all four on any leg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self, TypeAlias
from ._xml import Element

from ._base import HttpMethod, Verb, register_verb
from ._elements import Attributes, excerpt, label, refuse, require_empty, text_of
from .urls import url_problem

__all__ = ["Hangup", "Pause", "Redirect", "Reject", "RejectReason"]

RejectReason: TypeAlias = Literal["rejected", "busy"]


@register_verb("Redirect")
@dataclass(frozen=True, kw_only=True)
class Redirect(Verb):
    """Continue with the document at ``url`` (relative to the current document's URL)."""

    url: str
    method: HttpMethod = "POST"

    @classmethod
    def parse(cls, element: Element, *, parent: str = "") -> Self:
        where = label(element, parent)
        require_empty(element, where, text_allowed=True)
        url = text_of(element)
        problem = url_problem(url)
        if problem is not None:
            refuse(f"{where} URL {excerpt(url)}: {problem}")
        return cls(url=url, method=Attributes(element, where).method())


@register_verb("Reject")
@dataclass(frozen=True, kw_only=True)
class Reject(Verb):
    """Refuse an incoming call without answering it; ``reason`` picks the signal sent back."""

    reason: RejectReason = "rejected"

    @classmethod
    def parse(cls, element: Element, *, parent: str = "") -> Self:
        where = label(element, parent)
        require_empty(element, where)
        reasons: tuple[RejectReason, ...] = ("rejected", "busy")
        return cls(reason=Attributes(element, where).choice("reason", reasons, "rejected"))


@register_verb("Hangup")
@dataclass(frozen=True, kw_only=True)
class Hangup(Verb):
    """End the call (or, in a messaging document, stop)."""

    @classmethod
    def parse(cls, element: Element, *, parent: str = "") -> Self:
        require_empty(element, label(element, parent))
        return cls()


PAUSE_MAX_SECONDS = 600


@register_verb("Pause")
@dataclass(frozen=True, kw_only=True)
class Pause(Verb):
    """Wait ``length`` seconds. Not a media verb: waiting needs no audio path."""

    length: int = 1

    @classmethod
    def parse(cls, element: Element, *, parent: str = "") -> Self:
        where = label(element, parent)
        require_empty(element, where)
        length = Attributes(element, where).integer("length", default=1, minimum=1, maximum=PAUSE_MAX_SECONDS)
        return cls(length=length)
