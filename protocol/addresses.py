"""Identifiers and addresses: SIDs, client identities, phone numbers.

SIDs look like the ones app developers know: two capital letters and 32
lowercase hex digits. Prefixes in use (also listed in docs/protocol.md):

    AC account   SK API key   AP application   PN phone number
    CA call      SM/MM message (SMS / MMS)      SE gateway session
    ND node      BC broadcast   MG messaging service
"""

from __future__ import annotations

import re
import secrets

SID_PREFIXES = {
    "AC": "account",
    "SK": "API key",
    "AP": "application",
    "PN": "phone number",
    "CA": "call",
    "SM": "message (SMS)",
    "MM": "message (MMS)",
    "SE": "gateway session",
    "ND": "node",
    "BC": "broadcast",
    "MG": "messaging service",
}

_SID_RE = re.compile(r"^[A-Z]{2}[0-9a-f]{32}$")

# An identity is what a client app is known by inside its account ("alice",
# "user_42", "support@example.com"). The syntax is deliberately a little
# narrower than the widely used SDKs allow (they accept almost anything):
# printable ASCII letters, digits and  _ - . @ + : ,  up to 121 characters,
# not starting with a separator, so that an identity is safe in URLs, logs,
# Redis keys and the `client:<identity>` address form without escaping
# surprises. "client:" is not allowed as a prefix, because it is the address
# form itself.
IDENTITY_MAX_LENGTH = 121
_IDENTITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+:,\-]{0,120}$")

_E164_RE = re.compile(r"^\+[1-9][0-9]{1,14}$")


def new_sid(prefix: str) -> str:
    if prefix not in SID_PREFIXES:
        raise ValueError(f"unknown SID prefix {prefix!r}")
    return prefix + secrets.token_hex(16)


def is_sid(value: object, prefix: str | None = None) -> bool:
    if not isinstance(value, str) or not _SID_RE.fullmatch(value):
        return False
    return prefix is None or value.startswith(prefix)


def is_identity(value: object) -> bool:
    return (
        isinstance(value, str)
        and _IDENTITY_RE.fullmatch(value) is not None
        and not value.lower().startswith("client:")
    )


def identity_problem(value: object) -> str | None:
    """Why ``value`` is not a valid identity, or None when it is."""
    if not isinstance(value, str):
        return "identity must be a string"
    if not value:
        return "identity is empty"
    if len(value) > IDENTITY_MAX_LENGTH:
        return f"identity is longer than {IDENTITY_MAX_LENGTH} characters"
    if value.lower().startswith("client:"):
        return "identity must not start with 'client:'"
    if not _IDENTITY_RE.fullmatch(value):
        return "identity may hold only letters, digits and _ - . @ + : , and must start with a letter or digit"
    return None


def is_e164(value: object) -> bool:
    return isinstance(value, str) and _E164_RE.fullmatch(value) is not None


def identity_matches(pattern: str, identity: str) -> bool:
    """Grant patterns: an exact identity, or a prefix ending in '*' ("team-*"); "*" matches all."""
    if pattern.endswith("*"):
        return identity.startswith(pattern[:-1])
    return pattern == identity
