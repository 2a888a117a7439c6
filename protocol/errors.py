"""Every error the product answers, in one table.

An error has a stable integer ``code`` (what clients switch on), a short
``name`` (what logs and docs use), a default message, an HTTP status for the
REST API, and - for the wire protocol - the WebSocket close code used when the
error is fatal to the session (``None``: the session goes on).

The split follows h11: a :class:`RemoteProtocolError` is the peer's fault
(bad frame, bad token) and carries what to answer; a local error is our bug
and is never sent to the peer as-is.

Numbering: 10xxx wire frames and session rules, 20xxx authentication, tokens
and permissions (close to the numbers app developers know from the widely used
access-token SDKs), 30xxx presence, 40xxx REST requests. ``docs/protocol.md``
lists the whole table; a test keeps the two in step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorSpec:
    code: int
    message: str
    http_status: int = 400
    close_code: int | None = None  # WebSocket close code when fatal to the session


# WebSocket close codes (4000-4999 are the application's own range).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 4000
CLOSE_UNAUTHORIZED = 4001
CLOSE_TOKEN_EXPIRED = 4002
CLOSE_FORBIDDEN = 4003
CLOSE_REGISTER_TIMEOUT = 4004
CLOSE_IDLE_TIMEOUT = 4005
CLOSE_RATE_LIMITED = 4008
CLOSE_FRAME_TOO_LARGE = 4009
CLOSE_SESSION_REPLACED = 4010
CLOSE_SERVER_RESTART = 4012
CLOSE_TRY_AGAIN_LATER = 4013

CLOSE_CODES: dict[int, str] = {
    CLOSE_NORMAL: "normal closure (after bye, or the server's answer to a client close)",
    CLOSE_GOING_AWAY: "the server is going away",
    CLOSE_PROTOCOL_ERROR: "protocol violation: a frame that breaks the session rules",
    CLOSE_UNAUTHORIZED: "the token was refused; get a new token before reconnecting",
    CLOSE_TOKEN_EXPIRED: "the token expired and was not renewed in time",
    CLOSE_FORBIDDEN: "the token lacks the grant the session needs, or its key was revoked",
    CLOSE_REGISTER_TIMEOUT: "no register frame arrived in time",
    CLOSE_IDLE_TIMEOUT: "no frame (not even a ping) arrived within the idle timeout",
    CLOSE_RATE_LIMITED: "the client kept sending over its rate limit",
    CLOSE_FRAME_TOO_LARGE: "a frame was over the size limit",
    CLOSE_SESSION_REPLACED: "another connection resumed this session",
    CLOSE_SERVER_RESTART: "the server is restarting; reconnect (with backoff) to another node",
    CLOSE_TRY_AGAIN_LATER: "the server is overloaded or its engine is unavailable; reconnect later",
}


class ErrorCode(enum.Enum):
    """The table of errors. ``ErrorCode.X.code`` is the integer on the wire."""

    # -- 10xxx: frames and session rules --------------------------------------
    FRAME_UNDECODABLE = ErrorSpec(10001, "frame is not valid JSON or msgpack")
    FRAME_NOT_OBJECT = ErrorSpec(10002, "frame is not an object")
    FRAME_MISSING_TYPE = ErrorSpec(10003, "frame has no string 'type' field")
    FRAME_UNKNOWN_TYPE = ErrorSpec(10004, "unknown frame type")
    FRAME_INVALID_FIELD = ErrorSpec(10005, "a field is missing or has the wrong type or value")
    FRAME_TOO_LARGE = ErrorSpec(10006, "frame is over the size limit", 413, CLOSE_FRAME_TOO_LARGE)
    NOT_REGISTERED = ErrorSpec(10007, "send register first", 400, CLOSE_PROTOCOL_ERROR)
    ALREADY_REGISTERED = ErrorSpec(10008, "this session is already registered")
    RATE_LIMITED = ErrorSpec(10009, "too many frames; slow down", 429)
    RATE_LIMIT_CLOSE = ErrorSpec(10010, "kept sending over the rate limit", 429, CLOSE_RATE_LIMITED)
    REGISTER_TIMEOUT = ErrorSpec(10011, "no register frame in time", 408, CLOSE_REGISTER_TIMEOUT)
    IDLE_TIMEOUT = ErrorSpec(10012, "no frame within the idle timeout", 408, CLOSE_IDLE_TIMEOUT)
    WRONG_FRAME_KIND = ErrorSpec(10013, "text frame on a binary subprotocol or the reverse")
    SERVER_SHUTTING_DOWN = ErrorSpec(10014, "the server is shutting down; reconnect", 503, CLOSE_SERVER_RESTART)
    SESSION_REPLACED = ErrorSpec(10015, "another connection resumed this session", 409, CLOSE_SESSION_REPLACED)
    ENGINE_UNAVAILABLE = ErrorSpec(10016, "temporarily unavailable; try again", 503)
    # Answered to the upgrade request (HTTP 429, before any WebSocket exists).
    TOO_MANY_CONNECTIONS = ErrorSpec(10017, "too many connections from this address", 429)

    # -- 20xxx: authentication, tokens and permissions ----------------------------
    AUTHENTICATION_FAILED = ErrorSpec(20003, "authentication failed", 401)
    TOKEN_MALFORMED = ErrorSpec(20101, "access token is not a well-formed JWT", 401, CLOSE_UNAUTHORIZED)
    TOKEN_HEADER_INVALID = ErrorSpec(20102, "access token header is invalid", 401, CLOSE_UNAUTHORIZED)
    TOKEN_ISSUER_INVALID = ErrorSpec(20103, "access token issuer or subject is invalid", 401, CLOSE_UNAUTHORIZED)
    TOKEN_EXPIRED = ErrorSpec(20104, "access token expired", 401, CLOSE_TOKEN_EXPIRED)
    TOKEN_NOT_YET_VALID = ErrorSpec(20105, "access token is not valid yet", 401, CLOSE_UNAUTHORIZED)
    TOKEN_GRANTS_INVALID = ErrorSpec(20106, "access token grants are invalid", 401, CLOSE_UNAUTHORIZED)
    TOKEN_SIGNATURE_INVALID = ErrorSpec(20107, "access token signature is invalid", 401, CLOSE_UNAUTHORIZED)
    TOKEN_ALGORITHM_REFUSED = ErrorSpec(20108, "access token algorithm is refused for this key", 401, CLOSE_UNAUTHORIZED)
    TOKEN_KEY_UNKNOWN = ErrorSpec(20109, "access token signing key is unknown", 401, CLOSE_UNAUTHORIZED)
    TOKEN_KEY_REVOKED = ErrorSpec(20110, "access token signing key was revoked", 401, CLOSE_FORBIDDEN)
    TOKEN_KEY_ACCOUNT_MISMATCH = ErrorSpec(20111, "signing key does not belong to the token's account", 401, CLOSE_UNAUTHORIZED)
    TOKEN_TTL_TOO_LONG = ErrorSpec(20112, "access token lifetime exceeds 24 hours", 401, CLOSE_UNAUTHORIZED)
    TOKEN_CLAIM_MISSING = ErrorSpec(20113, "access token lacks a required claim", 401, CLOSE_UNAUTHORIZED)
    TOKEN_IDENTITY_INVALID = ErrorSpec(20114, "access token identity is missing or invalid", 401, CLOSE_UNAUTHORIZED)
    TOKEN_IDENTITY_CHANGED = ErrorSpec(20115, "a renewed token must keep the account and identity", 401, CLOSE_UNAUTHORIZED)
    GRANT_MISSING = ErrorSpec(20150, "the access token does not grant this", 403)
    # REST: right credentials, but of a kind that may not do this (an API key managing API keys).
    FORBIDDEN = ErrorSpec(20403, "these credentials may not do this", 403)
    GRANT_MISSING_FATAL = ErrorSpec(20151, "the access token does not grant presence registration", 403, CLOSE_FORBIDDEN)

    # -- 30xxx: presence ------------------------------------------------------------
    IDENTITY_INVALID = ErrorSpec(30001, "identity is invalid")
    TOO_MANY_SUBSCRIPTIONS = ErrorSpec(30002, "too many presence subscriptions for this session")
    STATUS_INVALID = ErrorSpec(30003, "status must be one of available, away, busy, dnd")
    TOO_MANY_SESSIONS = ErrorSpec(30004, "this identity has too many sessions", 429, CLOSE_TRY_AGAIN_LATER)
    TOO_MANY_ACCOUNT_SESSIONS = ErrorSpec(30005, "this account has too many sessions on this node", 429, CLOSE_TRY_AGAIN_LATER)

    # -- 31xxx: calls and in-app messages ---------------------------------------------
    CALL_NOT_FOUND = ErrorSpec(31001, "no such call for this session", 404)
    CALL_ANSWERED_ELSEWHERE = ErrorSpec(31002, "the call was answered on another device", 409)
    CALL_STATE_INVALID = ErrorSpec(31003, "the call is not in a state that allows this", 409)
    CALL_DESTINATION_INVALID = ErrorSpec(31004, "the call's destination is invalid")
    CALL_LIMIT = ErrorSpec(31005, "too many calls in progress", 429)
    MESSAGE_NOT_FOUND = ErrorSpec(31010, "no such message awaits an ack from this session", 404)

    # -- 40xxx: REST requests ---------------------------------------------------------
    NOT_FOUND = ErrorSpec(20404, "the requested resource was not found", 404)
    # Twilio's code for the same answer, which its helper libraries know.
    TOO_MANY_REQUESTS = ErrorSpec(20429, "too many requests; retry after the seconds in Retry-After", 429)
    REQUEST_TOO_LARGE = ErrorSpec(40017, "the request body is over the size limit", 413)
    API_KEY_LIMIT = ErrorSpec(40018, "the account has as many API keys created over REST as allowed", 409)
    METHOD_NOT_ALLOWED = ErrorSpec(40005, "method not allowed", 405)
    PARAMETER_INVALID = ErrorSpec(40001, "a request parameter is missing or invalid", 400)
    INTERNAL = ErrorSpec(40500, "internal server error", 500)
    NUMBER_UNKNOWN = ErrorSpec(40010, "no account owns this number", 404)
    NUMBER_HAS_NO_URL = ErrorSpec(40011, "the number has no URL for this kind of request", 404)
    PROVIDER_UNKNOWN = ErrorSpec(40012, "no provider of that name", 404)
    SIGNALING_UNAVAILABLE = ErrorSpec(40013, "this node does not run the signaling role", 503)
    OPERATOR_ONLY = ErrorSpec(40014, "operator credentials are required", 401)

    # -- 21xxx / 35xxx: the Messages API (Twilio's own codes, which its helper libraries know) --
    MESSAGE_TO_INVALID = ErrorSpec(21211, "the 'To' number is not a valid phone number or client address")
    MESSAGE_FROM_INVALID = ErrorSpec(21212, "the 'From' number is not a valid phone number or sender id")
    MESSAGE_BODY_REQUIRED = ErrorSpec(21602, "a message needs a 'Body' or a 'MediaUrl'")
    MESSAGE_FROM_REQUIRED = ErrorSpec(21603, "a message needs a 'From' or a 'MessagingServiceSid'")
    MESSAGE_TO_REQUIRED = ErrorSpec(21604, "a message needs a 'To'")
    MESSAGE_FROM_NOT_OWNED = ErrorSpec(21606, "the 'From' is not one of this account's numbers or sender ids")
    MESSAGE_BODY_TOO_LONG = ErrorSpec(21617, "the message body exceeds 1600 characters")
    MESSAGE_MEDIA_INVALID = ErrorSpec(21620, "a media URL is invalid, or there are more than 10")
    MESSAGING_SERVICE_UNKNOWN = ErrorSpec(21701, "no such messaging service in this account", 404)
    MESSAGE_SCHEDULE_INVALID = ErrorSpec(35111, "SendAt must be in the future and within the scheduling window")
    MESSAGE_QUEUE_FULL = ErrorSpec(21611, "the sender has too many queued messages; try again later", 429)
    # (our own: no Twilio code says these)
    MESSAGE_NOT_CANCELABLE = ErrorSpec(40016, "only a scheduled or queued message can be canceled", 409)
    MESSAGE_BUDGET_EXCEEDED = ErrorSpec(40015, "the message exceeds the request's segment or cost budget")

    @property
    def code(self) -> int:
        return self.value.code

    @property
    def message(self) -> str:
        return self.value.message

    @property
    def http_status(self) -> int:
        return self.value.http_status

    @property
    def close_code(self) -> int | None:
        return self.value.close_code

    @property
    def fatal(self) -> bool:
        return self.value.close_code is not None


class ProtocolError(Exception):
    """Base for errors with a code from the table."""

    def __init__(self, error: ErrorCode, detail: str | None = None) -> None:
        self.error = error
        self.detail = detail
        super().__init__(f"{error.name} ({error.code}): {detail or error.message}")

    @property
    def message(self) -> str:
        return self.detail or self.error.message


class RemoteProtocolError(ProtocolError):
    """The peer sent something we refuse. Carries what to answer."""


class LocalProtocolError(ProtocolError):
    """We (or the code driving us) misused the protocol: a bug, never the peer's fault."""
