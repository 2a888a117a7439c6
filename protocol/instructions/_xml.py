"""The instruction parser's one door to XML.

Documents are parsed only by defusedxml (no DTDs, entities or external
references), in document.py. The rest of the parser needs just this much of
an element, written down as a structural type so that nothing here depends
on (or could parse with) the standard library's XML modules.
"""

from __future__ import annotations

from typing import Iterator, Protocol

from defusedxml.ElementTree import ParseError  # type: ignore[import-untyped, unused-ignore]


class Element(Protocol):
    """What the parser reads of an XML element (a static type only: the C
    element iterates through the sequence protocol, so isinstance() against
    this would not hold; document.py checks the parsed root's shape instead)."""

    tag: str
    text: str | None
    tail: str | None

    def get(self, key: str, default: None = None) -> str | None: ...

    def __iter__(self) -> Iterator[Element]: ...

    def __len__(self) -> int: ...


__all__ = ["Element", "ParseError"]
