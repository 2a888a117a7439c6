"""``presence-server outbox``: print what the outbox provider would have sent.

It reads ``<engine.data_dir>/outbox.sqlite3`` (from ``--config``, else the
default ``./data``) read-only, so it is safe while a server runs. Newest last,
like a log; ``--json`` prints one JSON array for scripts.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from .carriers.outbox import FILE_NAME, read_entries
from .config import ConfigError, load_config

MAX_LIMIT = 100_000


def _limit(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_LIMIT}")
    return value


def register_outbox_command(sub: Any) -> None:
    """Add the ``outbox`` subcommand to ``presence-server``'s subparsers."""
    outbox = sub.add_parser("outbox", help="print the messages the outbox provider recorded (what would have been sent)")
    outbox.add_argument("--config", help="TOML configuration file (its engine.data_dir; default ./data)")
    outbox.add_argument("--limit", type=_limit, default=50, help="how many of the newest entries (default 50)")
    outbox.add_argument("--json", action="store_true", help="print a JSON array instead of lines")


def _line(entry: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(entry["created"], tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    # json.dumps keeps a body with newlines or control characters on one line.
    text = json.dumps(entry["body"], ensure_ascii=False)
    media = "".join(f"\n    media {url}" for url in entry["media_urls"])
    return f"{when}  {entry['message_sid']}  {entry['from']} -> {entry['to']}  [{entry['provider']}]  {text}{media}"


def run_outbox_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"presence-server: {exc}", file=sys.stderr)
        return 2
    path = Path(config.engine.data_dir) / FILE_NAME
    if not path.exists():
        if args.json:
            print("[]", file=out)
        else:
            print(f"the outbox is empty (no {path} yet: nothing has been sent)", file=out)
        return 0
    try:
        entries = read_entries(path, args.limit)
    except sqlite3.Error as exc:
        print(f"presence-server: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(entries, ensure_ascii=False, indent=2), file=out)
    elif not entries:
        print(f"the outbox is empty ({path})", file=out)
    else:
        for entry in entries:
            print(_line(entry), file=out)
    return 0
