"""Dev mode: a ready-made account, kept in a git-ignored file so its keys
survive restarts (a token minted yesterday still verifies today)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from protocol.addresses import new_sid

DEV_DIR = Path(".presence-dev")
DEV_FILE = DEV_DIR / "account.json"
DEV_IDENTITIES = [
    {"identity": "alice", "phone": "+15550100001"},
    {"identity": "bob", "phone": "+15550100002"},
]


def load_or_create(path: Path = DEV_FILE) -> dict[str, Any]:
    """The dev account as a config ``[[accounts]]`` entry, created on first use."""
    if path.exists():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    account = {
        "sid": new_sid("AC"),
        "auth_token": secrets.token_hex(16),
        "friendly_name": "dev",
        "api_keys": [{"sid": new_sid("SK"), "secret": secrets.token_urlsafe(32)}],
        "identities": DEV_IDENTITIES,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file holds secrets: readable by its owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(account, f, indent=2)
    return account
