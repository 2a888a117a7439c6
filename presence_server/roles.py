"""The roles one process can run. One process may run several (the default: all)."""

# gateway: client WebSockets and presence. signaling: incoming requests,
# instructions, ringing, relay and fallback. (messaging joins with its issue.)
ROLES = ("gateway", "signaling")
