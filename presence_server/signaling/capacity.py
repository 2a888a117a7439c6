"""The signaling node's refusals of new calls (its capacity limit, its drain),
kept apart so the HTTP error mapping can name them without importing the
whole service."""


class CallLimitReached(Exception):
    """signaling.max_concurrent_calls calls are in progress on this node."""


class Draining(Exception):
    """This node is stopping: it finishes its calls in progress and takes no new one."""
