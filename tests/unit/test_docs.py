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
