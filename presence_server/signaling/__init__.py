"""Signaling: calls, dial forking, instruction fetching and execution, fallback."""
