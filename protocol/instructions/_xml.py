"""The instruction parser's one door to XML.

Documents are parsed only by defusedxml (no DTDs, entities or external
references). The standard library supplies nothing but the element *type*
that defusedxml's trees are made of, for annotations and isinstance checks;
every module here takes it from this one place, never from xml.etree.
"""

from xml.etree.ElementTree import Element, ParseError  # types only: document.py parses, with defusedxml

__all__ = ["Element", "ParseError"]
