"""The signaling node's capacity limit, kept apart so the HTTP error mapping
can name it without importing the whole service."""


class CallLimitReached(Exception):
    """signaling.max_concurrent_calls calls are in progress on this node."""
