"""The fault suite's figures as Markdown, and their place in docs/reliability.md
(the ``faults`` section, between its markers; nothing else is touched)."""

from __future__ import annotations

import collections
import platform
import statistics
from pathlib import Path

from .scenario import END_BOUND, FAULTS, SETTINGS, SLACK, Figures

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN, END = "<!-- section: faults -->", "<!-- end: faults -->"


def render(f: Figures, command: str, date: str) -> str:
    lines = [
        "## 5. Fault suite",
        "",
        "Real processes on a real Redis, faults injected by the test (`tests/chaos/scenario.py`): two",
        "gateways, one signaling and one messaging process (`presence-server serve --roles …`, the redis",
        "engine), `redis-server` with AOF (`appendfsync always`) reached only through a TCP proxy the test",
        "controls (`tests/helpers/faultproxy.py`), an instruction server, and the `http` carrier provider",
        "against a real carrier HTTP server that honours `Idempotency-Key`. Ten clients over both",
        "gateways, a message accepted over REST every 50 ms by whichever process is up, and three",
        "answered calls before each fault (across the gateways both ways, and within one).",
        "",
        "Each round injects, in turn: `SIGKILL` of a gateway (alternating), of the signaling node",
        "mid-call and of the messaging worker mid-burst (each restarted after); Redis stopped and",
        "started again; Redis slowed (150 ms per chunk each way through the proxy); every Redis",
        "connection dropped and new ones refused for 1 s; the instruction server hanging (the call's",
        "URL allows 1.5 s); the carrier refusing every send (503) for about 2 s. After each fault the",
        "suite asserts: sessions not on a killed node stayed connected (no close frame; they answer a",
        "ping); presence lists exactly the live clients' sessions again within one lease",
        f"({SETTINGS.lease:g} s, plus a {SETTINGS.sweep:g} s sweep and {SLACK:g} s of slack); every call in flight",
        "either survived (signals relayed both ways, then a clean hangup) or ended for its surviving",
        f"party with a documented frame within {END_BOUND:g} s; at the end, every accepted message reached",
        "the carrier exactly once.",
        "",
        f"Command: `{command}` — {date}, {platform.machine()}, Python {platform.python_version()},",
        f"2 CPUs shared with other work; {f.rounds} round(s), {f.wall:.0f} s.",
        "",
        "| faults injected | count |",
        "|---|---|",
        *[f"| {kind} | {f.faults[kind]} |" for kind in FAULTS],
        f"| **total** | **{sum(f.faults.values())}** |",
        "",
        "| messages | count |",
        "|---|---|",
        f"| accepted (`201`) | {f.accepted} |",
        f"| delivered to the carrier | {f.delivered} |",
        f"| **lost** | **{f.lost}** |",
        f"| **duplicated** (delivered twice) | **{f.duplicated}** |",
        f"| sent again with the same idempotency key (after a kill or a timeout; the carrier kept one) | {f.resent_same_key} |",
        f"| send attempts the carrier refused while failing (retried later) | {f.carrier_refusals} |",
        f"| refused with an error while a fault lasted (not accepted, so not owed) | {f.refused} |",
        f"| unanswered (the process died with the request; delivered at most once, none counted above) | {f.unknown} |",
        "",
        "Calls in flight at each fault, and how they ended (seconds from the fault to the surviving",
        "party's end frame):",
        "",
        "| fault | outcome | calls | seconds (median / max) |",
        "|---|---|---|---|",
    ]
    by: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for fault, outcome, seconds in f.calls:
        by[(fault, outcome)].append(seconds)
    for (fault, outcome), values in sorted(by.items(), key=lambda kv: (FAULTS.index(kv[0][0]), kv[0][1])):
        timing = f"{statistics.median(values):.2f} / {max(values):.2f}" if any(values) else "—"
        lines.append(f"| {fault} | {outcome} | {len(values)} | {timing} |")
    lines += [
        "",
        "Time until presence was right again (every live session listed, no ghost), from the kill or",
        "from the moment the fault ended:",
        "",
        "| fault | checks | seconds (median / max) |",
        "|---|---|---|",
    ]
    pres: dict[str, list[float]] = collections.defaultdict(list)
    for fault, seconds in f.presence:
        pres[fault].append(seconds)
    for fault in FAULTS:
        if pres[fault]:
            lines.append(f"| {fault} | {len(pres[fault])} | {statistics.median(pres[fault]):.2f} / {max(pres[fault]):.2f} |")
    lines += [
        "",
        "What the suite found and what was fixed: calls whose signaling node was killed never ended",
        "for either party, and calls with a party on a killed gateway ended for the other party only",
        "at the Dial's `timeLimit`. Nodes now probe the mailboxes of the nodes they share calls with",
        "once per heartbeat (`presence_server/peers.py`) and end the calls of a node silent for",
        "`2 × node_heartbeat` (at least 2 s): the gateways send `signaling_lost`, the signaling node",
        "treats a dead gateway's legs as dropped connections ([protocol.md](protocol.md)); regression",
        "tests in `tests/integration/test_dead_peers.py`.",
        "",
        "`make test` runs one round (`CHAOS_ROUNDS`, default 1) without writing this section.",
    ]
    return "\n".join(lines)


def write(section: str, doc: Path = DOC) -> None:
    text = doc.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    doc.write_text(text[:start] + "\n" + section + "\n" + text[end:])
