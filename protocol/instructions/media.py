"""Media verbs: <Say>, <Play>, <Gather>, <Record>.

They are parsed and validated like every verb, so a document is accepted or
refused the same way whatever leg it runs on, but all four need an audio path
(``media = True``): the executor skips them with a warning on a leg that lacks
the media capability.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, Self, TypeAlias
from ._xml import Element

from ._base import HttpMethod, Verb, register_verb
from ._elements import Attributes, child_elements, excerpt, label, refuse, require_empty, text_of
from .flow import Pause
from .urls import url_problem

__all__ = ["Gather", "GatherInput", "Play", "Record", "Say"]

SAY_TEXT_MAX: Final = 4096  # characters, the platform's limit for <Say>
LOOP_MAX: Final = 1000  # loop="0" means "until the call ends", capped at this many
GATHER_TIMEOUT_MAX: Final = 600
RECORD_TIMEOUT_MAX: Final = 600
RECORD_MAX_LENGTH_MAX: Final = 14_400  # four hours

# SSML elements the platform accepts inside <Say>. Their text is kept (as the
# words to say); their attributes are not interpreted here.
_SSML_TAGS: Final = frozenset({"break", "emphasis", "lang", "p", "phoneme", "prosody", "s", "say-as", "sub", "w"})
# Bounded so that the text walk below can never exhaust the stack on a
# deliberately deep document (64 KiB holds thousands of nested <s>).
_SSML_MAX_DEPTH: Final = 16
_VOICE_RE: Final = re.compile(r"[A-Za-z0-9._\-]{1,64}")  # man, alice, Polly.Joanna-Neural, Google.en-US-...
_LANGUAGE_RE: Final = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}")  # BCP 47, the common shapes
_DIGITS_RE: Final = re.compile(r"[0-9*#wW]+")

GatherInput: TypeAlias = Literal["dtmf", "speech"]


def _loop(attributes: Attributes) -> int:
    return attributes.integer("loop", default=1, minimum=0, maximum=LOOP_MAX)


def _ssml_text(element: Element, where: str, depth: int) -> list[str]:
    if depth > _SSML_MAX_DEPTH:
        refuse(f"{where} SSML is nested more than {_SSML_MAX_DEPTH} levels deep")
    pieces = [element.text or ""]
    for child in element:
        if child.tag not in _SSML_TAGS:
            refuse(f"{where} cannot contain {label(child)} (only text and SSML elements)")
        pieces.extend(_ssml_text(child, where, depth + 1))
        pieces.append(child.tail or "")
    return pieces


@register_verb("Say")
@dataclass(frozen=True, kw_only=True)
class Say(Verb):
    """Text to speech. ``ssml`` is True when the text came with SSML markup (flattened here)."""

    media = True

    text: str
    voice: str | None = None
    language: str | None = None
    loop: int = 1
    ssml: bool = False

    @classmethod
    def parse(cls, element: Element, *, parent: str = "") -> Self:
        where = label(element, parent)
        ssml = len(element) > 0
        if ssml:
            # Markup splits words ("Hello<break/>world"): join the pieces with
            # single spaces rather than gluing them together.
            text = " ".join(" ".join(_ssml_text(element, where, 0)).split())
        else:
            text = text_of(element)
        if not text:
            refuse(f"{where} has no text to say")
        if len(text) > SAY_TEXT_MAX:
            refuse(f"{where} text is {len(text)} characters; at most {SAY_TEXT_MAX} are allowed")
        attributes = Attributes(element, where)
        return cls(
            text=text,
            voice=attributes.text("voice", max_length=64, pattern=_VOICE_RE),
            language=attributes.text("language", max_length=35, pattern=_LANGUAGE_RE),
            loop=_loop(attributes),
            ssml=ssml,
        )


@register_verb("Play")
@dataclass(frozen=True, kw_only=True)
class Play(Verb):
    """Play the audio at ``url``, or send DTMF ``digits`` (exactly one of the two)."""

    media = True

    url: str | None = None
    digits: str | None = None
    loop: int = 1

    @classmethod
    def parse(cls, element: Element, *, parent: str = "") -> Self:
        where = label(element, parent)
        require_empty(element, where, text_allowed=True)
        attributes = Attributes(element, where)
        url = text_of(element) or None
        digits = attributes.text("digits", max_length=256, pattern=_DIGITS_RE)
        if url is None and digits is None:
            refuse(f"{where} needs a URL (as its text) or a digits attribute")
        if url is not None and digits is not None:
            refuse(f"{where} has both a URL and digits; use two <Play>")
        if url is not None:
            problem = url_problem(url)
            if problem is not None:
                refuse(f"{where} URL {excerpt(url)}: {problem}")
        return cls(url=url, digits=digits, loop=_loop(attributes))


_PROMPTS: Final[dict[str, type[Say] | type[Play] | type[Pause]]] = {"Say": Say, "Play": Play, "Pause": Pause}


@register_verb("Gather")
@dataclass(frozen=True, kw_only=True)
class Gather(Verb):
    """Collect DTMF digits and/or speech while playing ``prompts``; then request ``action``."""

    media = True

    prompts: tuple[Say | Play | Pause, ...] = ()
    input: tuple[GatherInput, ...] = ("dtmf",)
    action: str | None = None
    method: HttpMethod = "POST"
    timeout: int = 5
    num_digits: int | None = None
    finish_on_key: str = "#"

    @classmethod
    def parse(cls, element: Element, *, parent: str = "") -> Self:
        where = label(element, parent)
        if text_of(element):
            refuse(f"{where} cannot contain text (got {excerpt(text_of(element))}); wrap it in <Say>")
        prompts: list[Say | Play | Pause] = []
        for child in child_elements(element, where):
            prompt = _PROMPTS.get(child.tag)
            if prompt is None:
                refuse(f"{where} cannot contain {label(child)} (only <Say>, <Play> and <Pause>)")
            prompts.append(prompt.parse(child, parent=where))
        attributes = Attributes(element, where)
        inputs: tuple[GatherInput, ...] = ("dtmf", "speech")
        num_digits = None
        if attributes.raw("numDigits") is not None:
            num_digits = attributes.integer("numDigits", default=1, minimum=1)
        return cls(
            prompts=tuple(prompts),
            input=attributes.choices("input", inputs, ("dtmf",)) or ("dtmf",),
            action=attributes.url("action"),
            method=attributes.method("method"),
            timeout=attributes.integer("timeout", default=5, minimum=1, maximum=GATHER_TIMEOUT_MAX),
            num_digits=num_digits,
            finish_on_key=attributes.keys("finishOnKey", "#", single=True),
        )


@register_verb("Record")
@dataclass(frozen=True, kw_only=True)
class Record(Verb):
    """Record the caller. ``timeout`` 0 turns silence detection off."""

    media = True

    action: str | None = None
    method: HttpMethod = "POST"
    timeout: int = 5
    max_length: int = 3600
    finish_on_key: str = "1234567890*#"
    play_beep: bool = True

    @classmethod
    def parse(cls, element: Element, *, parent: str = "") -> Self:
        where = label(element, parent)
        require_empty(element, where)
        attributes = Attributes(element, where)
        return cls(
            action=attributes.url("action"),
            method=attributes.method("method"),
            timeout=attributes.integer("timeout", default=5, minimum=0, maximum=RECORD_TIMEOUT_MAX),
            max_length=attributes.integer("maxLength", default=3600, minimum=1, maximum=RECORD_MAX_LENGTH_MAX),
            finish_on_key=attributes.keys("finishOnKey", "1234567890*#", single=False),
            play_beep=attributes.boolean("playBeep", True),
        )
