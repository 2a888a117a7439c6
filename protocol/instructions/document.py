"""From bytes to verbs: the size check, the hardened XML parse, the <Response> walk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final
from ._xml import Element, ParseError

# No stubs ship with defusedxml; ``unused-ignore`` keeps this line valid once
# someone installs types-defusedxml.
from defusedxml import DefusedXmlException  # type: ignore[import-untyped, unused-ignore]
from defusedxml import ElementTree as defused_tree  # type: ignore[import-untyped, unused-ignore]

from ._base import (
    CONTENT_TYPE_INVALID,
    DOCUMENT_TOO_LARGE,
    PARSE_FAILURE,
    ROOT_NOT_RESPONSE,
    SCHEMA_INVALID,
    VERBS,
    InstructionError,
    Verb,
)
from ._elements import child_elements, excerpt, label, text_of

__all__ = [
    "DEFAULT_MAX_BYTES",
    "INSTRUCTION_CONTENT_TYPES",
    "Instructions",
    "check_content_type",
    "parse_instructions",
]

DEFAULT_MAX_BYTES: Final = 64 * 1024  # the platform's limit on a TwiML response body

# The media types the platform reads as an instruction document.
INSTRUCTION_CONTENT_TYPES: Final = frozenset({"text/xml", "application/xml", "text/html"})

# Verbs of the platform this product does not implement: refused as "not
# supported" (a clearer message than "unknown") with the same code.
_UNSUPPORTED_VERBS: Final = frozenset(
    {"Connect", "Echo", "Enqueue", "Leave", "Pay", "Prompt", "Queue", "Refer", "Sms", "Start", "Stop"}
)


@dataclass(frozen=True)
class Instructions:
    """A parsed document: its verbs in document order (possibly none: ``<Response/>``)."""

    verbs: tuple[Verb, ...]

    def __iter__(self) -> Iterator[Verb]:
        return iter(self.verbs)

    def __len__(self) -> int:
        return len(self.verbs)


def _size(document: bytes | str) -> int:
    if isinstance(document, bytes):
        return len(document)
    # Measured as UTF-8, the way it went over the wire (most likely); a lone
    # surrogate cannot be encoded and fails in the parser with 12100.
    return len(document.encode("utf-8", "surrogatepass"))


def _parse_xml(document: bytes | str) -> Element:
    try:
        root = defused_tree.fromstring(document, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        # DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden: an HTML
        # page's <!DOCTYPE html>, billion laughs, XXE all end here.
        raise InstructionError(PARSE_FAILURE, f"document refused: {type(exc).__name__}") from None
    except ParseError as exc:
        raise InstructionError(PARSE_FAILURE, f"document is not well-formed XML ({exc})") from None
    except (ValueError, LookupError) as exc:
        # ValueError: text that cannot be encoded for the parser (lone
        # surrogates); LookupError: an encoding declaration Python does not know.
        raise InstructionError(PARSE_FAILURE, f"document cannot be decoded ({type(exc).__name__})") from None
    if not isinstance(getattr(root, "tag", None), str):  # defusedxml is untyped; keep mypy and -O honest
        raise InstructionError(PARSE_FAILURE, "document did not parse to an element")
    element: Element = root
    return element


def parse_instructions(document: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Instructions:
    """Parse a TwiML-compatible document into verbs, or raise :class:`InstructionError`.

    ``bytes`` are decoded as the XML declaration says (UTF-8 without one);
    ``str`` is taken as already decoded. Codes: 11750 over ``max_bytes``,
    12100 not well-formed or carries a DTD/entities, 12102 root is not
    <Response>, 12200 anything the schema refuses (see docs/instructions.md).
    """
    size = _size(document)
    if size > max_bytes:
        raise InstructionError(DOCUMENT_TOO_LARGE, f"document is {size} bytes; the limit is {max_bytes}")
    root = _parse_xml(document)
    if root.tag != "Response":
        raise InstructionError(ROOT_NOT_RESPONSE, f"the root element must be <Response>, not {label(root)}")
    where = "<Response>"
    if text_of(root):
        raise InstructionError(SCHEMA_INVALID, f"{where} holds text {excerpt(text_of(root))} outside any verb")
    return Instructions(verbs=tuple(_parse_verb(element) for element in child_elements(root, where)))


def _parse_verb(element: Element) -> Verb:
    # Messages name a verb without the <Response> around it: "<Dial> attribute ...".
    verb = VERBS.get(element.tag)
    if verb is not None:
        return verb.parse(element)
    if element.tag in _UNSUPPORTED_VERBS:
        raise InstructionError(SCHEMA_INVALID, f"{label(element)} is not supported")
    raise InstructionError(SCHEMA_INVALID, f"{label(element)} is not a known verb")


def check_content_type(content_type: str | None) -> None:
    """Refuse (12300) a fetched response whose media type is not an XML document type.

    text/xml, application/xml, text/html and any ``+xml`` type are accepted;
    parameters (``charset``) are ignored because the XML declaration decides
    the encoding. text/plain (which the platform would read aloud) and a
    missing Content-Type are refused.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type in INSTRUCTION_CONTENT_TYPES or (media_type.endswith("+xml") and "/" in media_type):
        return
    shown = excerpt(content_type) if content_type else "none"
    raise InstructionError(CONTENT_TYPE_INVALID, f"Content-Type {shown} is not an instruction document type")
