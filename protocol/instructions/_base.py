"""The pieces every verb module shares: the error, the verb base class, the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final, Literal, Self, TypeAlias, TypeVar
from ._xml import Element

__all__ = [
    "CONTENT_TYPE_INVALID",
    "DOCUMENT_TOO_LARGE",
    "HTTP_RETRIEVAL_FAILURE",
    "PARSE_FAILURE",
    "ROOT_NOT_RESPONSE",
    "SCHEMA_INVALID",
    "VERBS",
    "HttpMethod",
    "InstructionError",
    "Verb",
    "register_verb",
]

# Numbers app developers already know from the debugger of the widely used
# platform, so a log line or a status callback means the same thing here.
HTTP_RETRIEVAL_FAILURE: Final = 11200  # the fetcher's (the document could not be fetched)
DOCUMENT_TOO_LARGE: Final = 11750  # over the size limit; refused before parsing
PARSE_FAILURE: Final = 12100  # not well-formed XML, or DTD / entity / external reference
ROOT_NOT_RESPONSE: Final = 12102  # well-formed, but the root element is not <Response>
SCHEMA_INVALID: Final = 12200  # unknown verb or noun, bad attribute value, wrong nesting
CONTENT_TYPE_INVALID: Final = 12300  # the response's Content-Type is not an XML type

HttpMethod: TypeAlias = Literal["GET", "POST"]

_MESSAGE_MAX: Final = 300


class InstructionError(Exception):
    """An instruction document was refused. ``error_code`` is one of the numbers above.

    The message names the element (and attribute) at fault, so that it can go
    to the account's debugger log as-is; it never holds more than a short
    excerpt of a refused value.
    """

    def __init__(self, error_code: int, message: str) -> None:
        if len(message) > _MESSAGE_MAX:  # element names come from the document: bound them
            message = message[: _MESSAGE_MAX - 3] + "..."
        self.error_code = error_code
        self.message = message
        super().__init__(f"{error_code}: {message}")


@dataclass(frozen=True, kw_only=True)
class Verb:
    """One instruction of a document, in document order.

    ``tag`` is the element name (set by :func:`register_verb`). ``media`` is
    True for verbs that need an audio path on the caller's leg (TTS, playback,
    DTMF or speech input, recording): the executor skips them, with a warning,
    on a leg without the media capability, instead of failing the call.
    """

    tag: ClassVar[str] = ""
    media: ClassVar[bool] = False

    @classmethod
    def parse(cls, element: Element, *, parent: str = "") -> Self:
        """Build the verb from its element; ``parent`` prefixes error messages ("<Gather>")."""
        raise NotImplementedError


VERBS: dict[str, type[Verb]] = {}

_V = TypeVar("_V", bound=type[Verb])


def register_verb(tag: str) -> Callable[[_V], _V]:
    """Class decorator: make ``tag`` a verb the parser accepts at the top of <Response>."""

    def register(cls: _V) -> _V:
        if tag in VERBS:
            raise RuntimeError(f"verb <{tag}> is registered twice")
        cls.tag = tag
        VERBS[tag] = cls
        return cls

    return register
