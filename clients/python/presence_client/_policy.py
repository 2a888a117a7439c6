"""The client's decisions, as pure functions: which losses to retry, when to
renew a token. Kept apart from the I/O so each rule is tested on its own
(tests/unit/test_sdk_backoff.py) and read in one place."""

from __future__ import annotations

from protocol.errors import (
    CLOSE_FRAME_TOO_LARGE,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SESSION_REPLACED,
)

from .errors import AUTH_CLOSE_CODES, PresenceError

CLOSE_MESSAGE_TOO_BIG = 1009  # the WebSocket standard's: the transport refused a huge frame

# Closes after which reconnecting would only repeat the failure or fight
# another client (docs/protocol.md, "Close codes"): a normal close we did not
# ask for, frames the server judged broken or too big, or another connection
# that took the session over. (1000 after our own bye is not a loss at all.)
FINAL_CLOSE_CODES = frozenset(
    {CLOSE_NORMAL, CLOSE_MESSAGE_TOO_BIG, CLOSE_PROTOCOL_ERROR, CLOSE_FRAME_TOO_LARGE, CLOSE_SESSION_REPLACED}
)


def is_auth_loss(close_code: int | None, error: PresenceError | None) -> bool:
    """The server refused the token (4001), found it expired (4002) or lacking
    a grant (4003): the same token would be refused again."""
    return close_code in AUTH_CLOSE_CODES or (error is not None and error.is_auth_refusal)


def loss_is_final(close_code: int | None, error: PresenceError | None, *, reconnect: bool, renewable_token: bool) -> bool:
    """Whether a lost connection ends the client rather than being retried.

    An auth loss is retried only when a token callable can supply a new token
    (and then only once: see :func:`attempt_refused_for_good`).
    """
    if not reconnect or close_code in FINAL_CLOSE_CODES:
        return True
    return is_auth_loss(close_code, error) and not renewable_token


def attempt_refused_for_good(error: PresenceError, *, renewable_token: bool, fresh_token_tried: bool) -> bool:
    """Whether a failed reconnect attempt ends the client.

    Network trouble and overload are retried without limit. A refused token
    gets one more attempt with a fresh token from the callable; refused again,
    the backend is handing out tokens the server will not take, and retrying
    would only hammer both.
    """
    if error.is_auth_refusal:
        return fresh_token_tried or not renewable_token
    return error.close_code in FINAL_CLOSE_CODES


def renewal_delay(remaining: float, renew_before: float) -> float | None:
    """Seconds until a token with ``remaining`` seconds of life should be
    renewed: ``renew_before`` ahead of its expiry, but never sooner than half
    its remaining life - else a backend handing out tokens barely longer than
    ``renew_before`` would be asked for one every few moments. None: the token
    has expired by this machine's clock (which must then be ahead of the
    server's, since the server just accepted it): no timer; the server's
    warning still comes."""
    if remaining <= 0:
        return None
    return max(remaining - renew_before, remaining / 2)


def warning_deferral(seconds_left: float, token_age: float | None) -> float | None:
    """How long to put off answering a ``token_expiring`` warning; None: renew now.

    A warning about a token fetched less than half the time left ago means
    the backend's tokens live shorter than the server's warning period: the
    server would warn again right after every renewal, and answering each at
    once would spin. Such a warning is answered at half the time left.
    """
    if token_age is None or token_age >= seconds_left / 2:
        return None
    return seconds_left / 2 - token_age
