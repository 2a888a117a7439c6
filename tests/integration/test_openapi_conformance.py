"""The REST API against its OpenAPI file (docs/api/openapi.yaml), with schemathesis.

A real server process with two accounts, numbers, an application, the outbox
provider (with ingress credentials) and operator credentials; a client of
account A online, a call, messages, a broadcast and a tracked link made first,
so that schemathesis's requests reach the handlers' real work and not only
their 404s. Then schemathesis (its CLI: the phases it has - the file's
examples, coverage of boundaries and of invalid values, random fuzzing, and
stateful chains built from the file's links) runs every operation of the file
with valid and invalid data, with every check it has: no 5xx, the status code
documented, the content type and body matching the schema, the documented
headers, invalid data refused, valid data accepted, authentication enforced
(it removes and spoils the credentials on each success).

It runs twice: as account A (the account's auth token, the operator's and the
carrier's credentials for their endpoints), and with no credentials at all.
The figures (operations, test cases, failures) are printed; docs/reliability.md
section "openapi" records them.

Bounded for `make test`: a few examples per operation (``MAX_EXAMPLES``) in
deterministic mode, so every run sends the same requests.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from protocol.addresses import new_sid
from protocol.tokens import default_grants, mint_token
from tests.helpers.messaging import basic
from tests.helpers.process import ROOT, ServerProcess, free_port
from tests.helpers.wsclient import RawClient

SPEC = ROOT / "docs" / "api" / "openapi.yaml"
# Examples per operation and phase; the unauthenticated run only meets 401s, so fewer.
MAX_EXAMPLES = {"authenticated": 10, "unauthenticated": 5}
CLI_TIMEOUT = 240.0

A_SID, B_SID = new_sid("AC"), new_sid("AC")
A_TOKEN, B_TOKEN = "auth-token-of-a-0123456789", "auth-token-of-b-0123456789"
A_KEY, A_KEY_SECRET = new_sid("SK"), "key-secret-of-a-0123456789-0123456789"
A_SPARE_KEY = new_sid("SK")  # revoked by schemathesis, at most once (DELETE .../Keys)
B_KEY = new_sid("SK")
APP_SID = new_sid("AP")
A_NUMBERS = ("+15550001111", "+15550002222")
OPERATOR = ("ops", "operator-password-0123456789")
CARRIER = ("carrier", "carrier-password-0123456789")
# Instruction URLs the SSRF guard refuses at once: calls fail fast, without DNS.
INSTRUCTIONS = "http://127.0.0.1:9/instructions"


def server_config(port: int, data_dir: Path) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = {port}
shutdown_grace = 0.5

[engine]
kind = "memory"
data_dir = "{data_dir}"

[logging]
level = "warning"

# The per-address limit on failed authentications would answer 429 to this
# run's thousands of deliberately unauthenticated requests; it is tested on its
# own (test_attack_*). The per-account rate too.
[http]
auth_failure_burst = 1000000
auth_failure_rate = 100000
burst = 1000000
rate = 100000

[operator]
username = "{OPERATOR[0]}"
password = "{OPERATOR[1]}"

[[accounts]]
sid = "{A_SID}"
auth_token = "{A_TOKEN}"
[[accounts.api_keys]]
sid = "{A_KEY}"
secret = "{A_KEY_SECRET}"
[[accounts.api_keys]]
sid = "{A_SPARE_KEY}"
secret = "spare-key-secret-0123456789"
[[accounts.identities]]
identity = "alice"
phone = "+15550100001"
[[accounts.identities]]
identity = "bob"
phone = "+15550100002"
[[accounts.applications]]
sid = "{APP_SID}"
voice_url = "{INSTRUCTIONS}"
sms_url = "{INSTRUCTIONS}"
[[accounts.phone_numbers]]
number = "{A_NUMBERS[0]}"
application_sid = "{APP_SID}"
[[accounts.phone_numbers]]
number = "{A_NUMBERS[1]}"

[[accounts]]
sid = "{B_SID}"
auth_token = "{B_TOKEN}"
[[accounts.api_keys]]
sid = "{B_KEY}"
secret = "key-secret-of-b-0123456789"
[[accounts.phone_numbers]]
number = "+15550003333"

[[providers]]
name = "outbox"
kind = "outbox"
inbound_username = "{CARRIER[0]}"
inbound_password = "{CARRIER[1]}"
"""


def _toml(value: Any) -> str:
    return json.dumps(value)  # a JSON string or list of strings is valid TOML


def schemathesis_config(base_url: str, seeded: dict[str, list[str]], *, authenticated: bool, max_examples: int) -> str:
    """schemathesis.toml: where the server is, who to be, and the existing
    things to name (dictionaries, drawn for the parameters they are bound to)."""
    lines = [
        f"base-url = {_toml(base_url)}",
        # Deterministic generation (the seed is then unused): CI sends the same requests every run.
        "[generation]",
        f"max-examples = {max_examples}",
        "deterministic = true",
        # Every check schemathesis has (max_response_time is off: it needs a limit).
        "[checks]",
        "enabled = true",
        "[dictionaries]",
        *(f"{name} = {{ values = {_toml(values)} }}" for name, values in seeded.items()),
        "[parameters]",
        f'"path.AccountSid" = {_toml(A_SID)}',
        '"path.Provider" = "outbox"',
        '"path.Identity" = { dictionary = "identities", probability = 0.7 }',
        '"path.CallSid" = { dictionary = "calls", probability = 0.5 }',
        '"path.code" = { dictionary = "links", probability = 0.5 }',
        '"path.KeySid" = { dictionary = "keys", probability = 0.3 }',
    ]
    if not authenticated:
        # Without credentials every answer is a 401: the random (fuzzing) and
        # the file's examples phases show it for valid and invalid data alike;
        # the coverage phase's thousand boundary values would only repeat it.
        lines += ["[phases.coverage]", "enabled = false"]
    if authenticated:
        lines += [
            "[auth.openapi.basicAuth]",
            f"username = {_toml(A_SID)}",
            f"password = {_toml(A_TOKEN)}",
            "[auth.openapi.operatorBasic]",
            f"username = {_toml(OPERATOR[0])}",
            f"password = {_toml(OPERATOR[1])}",
            "[auth.openapi.providerBasic]",
            f"username = {_toml(CARRIER[0])}",
            f"password = {_toml(CARRIER[1])}",
        ]
    per_operation = {
        "getMessage": {'"path.Sid"': '{ dictionary = "messages", probability = 0.5 }'},
        "cancelMessage": {'"path.Sid"': '{ dictionary = "messages", probability = 0.5 }'},
        "getBroadcast": {'"path.Sid"': '{ dictionary = "broadcasts", probability = 0.5 }'},
        # The account's own sender, so that more requests get past 21606 to the pipeline.
        "createMessage": {'"body.From"': '{ dictionary = "numbers", probability = 0.9 }'},
        "createBroadcast": {'"body.from"': '{ dictionary = "numbers", probability = 0.9 }'},
        "ingressVoice": {'"body.To"': '{ dictionary = "numbers", probability = 0.8 }'},
        "ingressMessage": {'"body.To"': '{ dictionary = "numbers", probability = 0.8 }'},
    }
    for operation_id, params in per_operation.items():
        lines += ["[[operations]]", f"include-operation-id = {_toml(operation_id)}", "[operations.parameters]"]
        lines += [f"{key} = {value}" for key, value in params.items()]
    # Three operations take values whose form the schema states but whose
    # meaning it cannot: a `From` that is this account's (21606 otherwise), an
    # `ApplicationSid` of this account (400), a `SendAt`/`send_at`/`deadline` in
    # the future (35111). Generated values have the form, rarely the meaning, and
    # the server refuses them with 400 as the platform it mirrors does. For these
    # three, "valid data is accepted" is checked with the file's own examples
    # (the examples phase, which must succeed) and by seed() above; every other
    # check, the refusal of invalid data included, runs in every phase.
    for operation_id in ("createMessage", "createBroadcast", "createCall"):
        for phase in ("coverage", "fuzzing", "stateful"):
            lines += [
                "[[operations]]",
                f"include-operation-id = {_toml(operation_id)}",
                f"[operations.phases.{phase}.checks.positive_data_acceptance]",
                "enabled = false",
            ]
    # An HTTP client cannot complete a WebSocket upgrade (the upgrade is tested
    # with real WebSocket clients, tests/integration/test_gateway.py): every
    # request schemathesis sends here is answered 400, as documented. Only the
    # check that valid requests succeed is off, for this operation alone.
    lines += [
        "[[operations]]",
        'include-operation-id = "connectWebSocket"',
        "[operations.checks.positive_data_acceptance]",
        "enabled = false",
    ]
    return "\n".join(lines) + "\n"


async def seed(http: aiohttp.ClientSession, base: str, ws_url: str) -> tuple[dict[str, list[str]], RawClient]:
    """Real things in account A for the requests to find: alice online, a
    call ringing her, a message with a tracked link, a scheduled message (to
    cancel), a broadcast."""
    now = time.time()
    token = mint_token(
        key_sid=A_KEY, account_sid=A_SID, identity="alice", secret=A_KEY_SECRET, ttl=3600, now=now, grants=default_grants("alice")
    )
    alice = await RawClient.open(ws_url)
    welcome = await alice.register(token, capabilities=["voice", "video"])
    assert welcome["type"] == "registered", welcome
    auth = basic(A_SID, A_TOKEN)
    api = f"{base}/2010-04-01/Accounts/{A_SID}"

    async def post(path: str, data: Any = None, json_body: Any = None) -> dict[str, Any]:
        async with http.post(path, data=data, json=json_body, headers=auth) as resp:
            body = await resp.json()
            assert resp.status == 201, body
            return body  # type: ignore[no-any-return]

    call = await post(f"{api}/Calls.json", {"To": "client:alice", "From": A_NUMBERS[0], "Url": INSTRUCTIONS})
    message = await post(
        f"{api}/Messages.json",
        {"To": "+15557770001", "From": A_NUMBERS[0], "Body": "see https://example.com/offer", "ShortenUrls": "true"},
    )
    send_at = datetime.fromtimestamp(now + 7200, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    scheduled = await post(
        f"{api}/Messages.json",
        {"To": "+15557770002", "From": A_NUMBERS[0], "Body": "later", "ScheduleType": "fixed", "SendAt": send_at},
    )
    broadcast = await post(
        f"{base}/v1/Accounts/{A_SID}/Broadcasts",
        json_body={"destinations": ["client:bob", "+15557770003"], "from": A_NUMBERS[0], "content": {"text": "hello"}},
    )
    links = re.findall(r"/l/([A-Za-z0-9]+)", message["body"])
    assert links, message["body"]
    seeded = {
        "identities": ["alice", "bob"],
        "calls": [call["sid"]],
        "messages": [message["sid"], scheduled["sid"]],
        "broadcasts": [broadcast["sid"]],
        "links": links,
        "numbers": list(A_NUMBERS),
        "applications": [APP_SID],
        "keys": [A_SPARE_KEY],
    }
    return seeded, alice


def read_events(path: Path) -> dict[str, Any]:
    """Figures from schemathesis's NDJSON report: operations, test cases, failures."""
    operations: set[str] = set()
    cases = 0
    failures = 0
    for line in path.read_text().splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished.get("recorder", {})
        label = recorder.get("label")
        if label and finished.get("phase") != "stateful":
            operations.add(label)
        cases += len(recorder.get("cases", {}))
        failures += sum(
            1 for checks in recorder.get("checks", {}).values() for check in checks if check.get("status") == "failure"
        )
    return {"operations": len(operations), "test_cases": cases, "failed_checks": failures}


async def run_schemathesis(tmp: Path, name: str, config: str) -> tuple[int, str, dict[str, Any]]:
    config_path = tmp / f"{name}.toml"
    config_path.write_text(config)
    events = tmp / f"{name}.ndjson"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(config_path),
        "run", str(SPEC), "--mode", "all",
        "--report", "ndjson", "--report-ndjson-path", str(events),
        cwd=tmp, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    output = out.decode(errors="replace")
    assert proc.returncode is not None and events.exists(), output[-5000:]
    return proc.returncode, output, read_events(events)


async def test_rest_api_conforms_to_its_openapi_file(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "data").mkdir()
    config = tmp_path / "server.toml"
    config.write_text(server_config(port, tmp_path / "data"))
    argv = [sys.executable, "-m", "presence_server.cli", "serve", "--config", str(config)]
    server = ServerProcess(argv, port, tmp_path / "server.log", tmp_path)
    await server.start()
    alice = None
    try:
        async with aiohttp.ClientSession() as http:
            seeded, alice = await seed(http, server.url, f"ws://127.0.0.1:{port}/v1/connect")
        started = time.monotonic()
        results = {}
        for name, authenticated in (("authenticated", True), ("unauthenticated", False)):
            run_started = time.monotonic()
            code, output, figures = await run_schemathesis(
                tmp_path, name, schemathesis_config(server.url, seeded, authenticated=authenticated, max_examples=MAX_EXAMPLES[name])
            )
            results[name] = {**figures, "seconds": round(time.monotonic() - run_started, 1)}
            assert code == 0, f"schemathesis ({name}) found the API and its OpenAPI file disagree:\n{output[-20000:]}"
        elapsed = time.monotonic() - started
        print(f"openapi conformance: {json.dumps(results)}; {elapsed:.1f} s")
        for figures in results.values():
            # Every operation of the file was run, and each with several cases.
            assert figures["operations"] >= 25 and figures["test_cases"] >= 3 * figures["operations"], figures
        # A 5xx also leaves a traceback in the log (the error middleware logs every
        # unexpected exception): none may be there, whatever the checks said.
        log = (tmp_path / "server.log").read_text(errors="replace")
        assert "request failed" not in log, server.log_tail(60)
        assert server.proc is not None and server.proc.poll() is None, "the server died during the run"
    finally:
        if alice is not None:
            await alice.close()
        server.stop()


# -- regressions: what schemathesis found, each pinned by a fast test of its own --------------


# aiohttp warns about the part header it cannot parse, which is the point of the test.
@pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionHeader")
async def test_bodies_aiohttp_cannot_parse_are_400_not_500() -> None:
    from tests.helpers.messaging import account_with_number, call
    from tests.helpers.servers import start_server

    account = account_with_number()
    server = await start_server(
        [account], providers=[{"name": "outbox", "kind": "outbox", "inbound_username": CARRIER[0], "inbound_password": CARRIER[1]}]
    )
    try:
        api = f"/2010-04-01/Accounts/{account.sid}"
        no_boundary = {"Content-Type": "multipart/form-data"}
        bad_part = b'--xx\r\nContent-Disposition: form-data; name="a;b;c"\r\n\r\nv\r\n--xx--\r\n'
        for path, creds in (
            (f"{api}/Messages.json", basic(account.sid, account.auth_token)),
            (f"{api}/Messages/{new_sid('SM')}.json", basic(account.sid, account.auth_token)),
            (f"{api}/Calls.json", basic(account.sid, account.auth_token)),
            ("/v1/Ingress/outbox/Voice", basic(*CARRIER)),
            ("/v1/Ingress/outbox/Messages", basic(*CARRIER)),
            ("/v1/Ingress/outbox/Status", basic(*CARRIER)),
        ):
            status, body, _ = await call(server, "POST", path, headers={**creds, **no_boundary}, data=b"To=x")
            assert status == 400 and body["code"] == 40001 and "not a valid form" in body["message"], (path, body)
            headers = {**creds, "Content-Type": "multipart/form-data; boundary=xx"}
            status, body, _ = await call(server, "POST", path, headers=headers, data=bad_part)
            assert status == 400 and body["code"] == 40001, (path, body)
    finally:
        await server.node.stop()


async def test_request_checks_schemathesis_found_missing() -> None:
    from tests.helpers.messaging import NUMBER, account_with_number, call
    from tests.helpers.servers import start_server

    account = account_with_number()
    server = await start_server(
        [account], providers=[{"name": "outbox", "kind": "outbox", "inbound_username": CARRIER[0], "inbound_password": CARRIER[1]}]
    )
    try:
        # A broadcast's SMS variant without its text was accepted when the variant was empty ({}).
        status, body, _ = await call(
            server, "POST", f"/v1/Accounts/{account.sid}/Broadcasts",
            json={"destinations": ["+15557770001"], "from": NUMBER, "content": {"text": "x", "variants": {"sms": {}}}},
        )
        assert status == 400 and body["message"] == "content.variants.sms.text is required", body
        # A call status filter that is no status matched nothing, silently.
        status, body, _ = await call(server, "GET", f"/2010-04-01/Accounts/{account.sid}/Calls.json?Status=in_progress")
        assert status == 400 and body["message"].startswith("Status must be one of queued, initiated"), body
        status, body, _ = await call(server, "GET", f"/2010-04-01/Accounts/{account.sid}/Calls.json?Status=in-progress")
        assert status == 200 and body["calls"] == [], body
        # A delivery report's id is printable ASCII, as documented.
        status, body, _ = await call(
            server, "POST", "/v1/Ingress/outbox/Status", headers=basic(*CARRIER), json={"id": "caf\u00e9", "status": "delivered"}
        )
        assert status == 400 and "printable ASCII" in body["message"], body
    finally:
        await server.node.stop()
