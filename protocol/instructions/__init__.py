"""Instruction documents: TwiML-compatible XML parsed into frozen verb objects.

The signaling node fetches a document from the instruction URL configured for
a number or application and executes its verbs in order. This package only
*parses*: no I/O, no asyncio, nothing from ``presence_server``.

    >>> doc = parse_instructions(b"<Response><Dial><Client>alice</Client></Dial></Response>")
    >>> doc.verbs[0].nouns[0].identity
    'alice'

Verbs are frozen dataclasses under :class:`Verb`, each registered in
:data:`VERBS` by the ``register_verb`` decorator of the module that defines
it, so a new verb is one class in one file (imported below so it registers).

Error codes (``InstructionError.error_code``), numbered like the platform's
debugger so that app developers recognise them:

    11200  HTTP retrieval failure - raised by the fetcher, never by this package
    11750  document larger than ``max_bytes`` (64 KiB by default), refused unread
    12100  document parse failure: not well-formed XML, empty, an HTML page,
           a DTD, entity declarations or external references (all forbidden)
    12102  well-formed, but the root element is not <Response>
    12200  schema validation: an unknown or unsupported verb or noun, a known
           attribute with a bad value, a missing required part, a limit passed
    12300  invalid Content-Type (:func:`check_content_type`, for the fetcher)

docs/instructions.md is the user-facing reference of everything accepted.
"""

from __future__ import annotations

from . import dial, flow, media, messaging  # noqa: F401  (importing registers the verbs)
from ._base import (
    CONTENT_TYPE_INVALID,
    DOCUMENT_TOO_LARGE,
    HTTP_RETRIEVAL_FAILURE,
    PARSE_FAILURE,
    ROOT_NOT_RESPONSE,
    SCHEMA_INVALID,
    VERBS,
    HttpMethod,
    InstructionError,
    Verb,
    register_verb,
)
from ._elements import CALL_EVENTS, CallEvent
from .dial import Client, Dial, DialNoun, Number, Parameter
from .document import (
    DEFAULT_MAX_BYTES,
    INSTRUCTION_CONTENT_TYPES,
    Instructions,
    check_content_type,
    parse_instructions,
)
from .flow import Hangup, Pause, Redirect, Reject, RejectReason
from .media import Gather, GatherInput, Play, Record, Say
from .messaging import Message
from .urls import resolve_url, url_problem

__all__ = [
    "CALL_EVENTS",
    "CONTENT_TYPE_INVALID",
    "DEFAULT_MAX_BYTES",
    "DOCUMENT_TOO_LARGE",
    "HTTP_RETRIEVAL_FAILURE",
    "INSTRUCTION_CONTENT_TYPES",
    "PARSE_FAILURE",
    "ROOT_NOT_RESPONSE",
    "SCHEMA_INVALID",
    "VERBS",
    "CallEvent",
    "Client",
    "Dial",
    "DialNoun",
    "Gather",
    "GatherInput",
    "Hangup",
    "HttpMethod",
    "InstructionError",
    "Instructions",
    "Message",
    "Number",
    "Parameter",
    "Pause",
    "Play",
    "Record",
    "Redirect",
    "Reject",
    "RejectReason",
    "Say",
    "Verb",
    "check_content_type",
    "parse_instructions",
    "register_verb",
    "resolve_url",
    "url_problem",
]
