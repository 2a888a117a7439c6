"""The docs stay true to the code: every error and close code, every frame type."""

from __future__ import annotations

from pathlib import Path

from protocol.errors import CLOSE_CODES, ErrorCode
from protocol.messages import CLIENT_FRAMES, SERVER_FRAMES

DOCS = Path(__file__).parents[2] / "docs"


def test_protocol_doc_lists_every_error_and_close_code() -> None:
    doc = (DOCS / "protocol.md").read_text()
    for err in ErrorCode:
        assert f"| {err.code} | {err.name} |" in doc, f"docs/protocol.md lacks error {err.code} {err.name}"
    for code in CLOSE_CODES:
        assert f"| {code} |" in doc, f"docs/protocol.md lacks close code {code}"


def test_protocol_doc_names_every_frame_type() -> None:
    doc = (DOCS / "protocol.md").read_text()
    for frame_type in list(CLIENT_FRAMES) + [f.TYPE for f in SERVER_FRAMES]:
        assert f"`{frame_type}`" in doc, f"docs/protocol.md does not describe {frame_type}"


def test_openapi_names_every_route() -> None:
    spec = (DOCS / "api" / "openapi.yaml").read_text()
    for path in ("/healthz", "/readyz", "/v1/Accounts/{AccountSid}/Presence", "/v1/Accounts/{AccountSid}/Presence/{Identity}"):
        assert f"{path}:" in spec


async def test_openapi_describes_every_rest_route_the_server_serves() -> None:
    # Every route of a node with every role, except the pages, their files and
    # the WebSocket (protocol.md), must be a path of the OpenAPI file. Path
    # parameters are compared by position, whatever their names.
    import re

    from presence_server.node import Node
    from tests.helpers.servers import TestAccount, make_config

    spec = (DOCS / "api" / "openapi.yaml").read_text()
    documented = {re.sub(r"\{[^}]+\}", "{}", p) for p in re.findall(r"^  (/[^:\s]+):\s*$", spec, re.M)}
    node = Node(make_config([TestAccount()], operator={"username": "ops", "password": "operator-password-123456"}))
    served = {re.sub(r"\{[^}]+\}", "{}", r.resource.canonical) for r in node.app.router.routes() if r.resource is not None}
    await node.http.close()
    pages = {"/v1/connect", "/sdk/{}", "/dashboard", "/dashboard/", "/dashboard/{}"}
    missing = sorted(served - pages - documented)
    assert not missing, f"docs/api/openapi.yaml does not describe {missing}"
