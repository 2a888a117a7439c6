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
OPERATOR_FILE = DEV_DIR / "operator.json"
DEV_NUMBER = "+15550001111"
DEV_IDENTITIES = [
    {"identity": "alice", "phone": "+15550100001"},
    {"identity": "bob", "phone": "+15550100002"},
]


def load_or_create(path: Path = DEV_FILE, *, base_url: str = "http://127.0.0.1:8080") -> dict[str, Any]:
    """The dev account as a config ``[[accounts]]`` entry, created on first use.

    Its application answers calls from this server's own dev instruction
    app at ``base_url``/dev/voice (which the file does not keep: the port
    may change between runs)."""
    if path.exists():
        account: dict[str, Any] = json.loads(path.read_text())
        if "application_sid" not in account:  # a file from before dev mode had an application
            account["application_sid"] = new_sid("AP")
            _write(path, account, replace=True)
    else:
        account = _create(path)
    app_sid = account.pop("application_sid")
    account["applications"] = [{"sid": app_sid, "friendly_name": "dev", "voice_url": f"{base_url}/dev/voice"}]
    # A number for the account, so fallback SMS have a sender and carrier
    # ingress has somewhere to arrive.
    account["phone_numbers"] = [{"number": DEV_NUMBER, "application_sid": app_sid}]
    return account


def application_sid(account: dict[str, Any]) -> str:
    sid: str = account["applications"][0]["sid"]
    return sid


def _create(path: Path) -> dict[str, Any]:
    account = {
        "sid": new_sid("AC"),
        "auth_token": secrets.token_hex(16),
        "friendly_name": "dev",
        "api_keys": [{"sid": new_sid("SK"), "secret": secrets.token_urlsafe(32)}],
        "identities": DEV_IDENTITIES,
        "application_sid": new_sid("AP"),
    }
    _write(path, account)
    return account


def _write(path: Path, account: dict[str, Any] | dict[str, str], replace: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file holds secrets: readable by its owner only.
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(account, f, indent=2)


def operator_credentials(path: Path = OPERATOR_FILE) -> dict[str, str]:
    """Operator credentials for the dashboard in dev mode (used when the
    config names none), created once next to the dev account."""
    if path.exists():
        creds: dict[str, str] = json.loads(path.read_text())
        return creds
    creds = {"username": "operator", "password": secrets.token_urlsafe(18)}
    _write(path, creds)
    return creds
