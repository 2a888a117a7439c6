"""The roles one process can run. One process may run several (the default: all)."""

# gateway: client WebSockets and presence. signaling: incoming requests,
# instructions, ringing, relay and fallback. messaging: the send loop of the
# messaging pipeline (every node accepts messages; these send them).
ROLES = ("gateway", "signaling", "messaging")
