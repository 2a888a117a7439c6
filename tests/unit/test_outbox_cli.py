"""``presence-server outbox``: reads the outbox file the provider writes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from presence_server.carriers import OutboundMessage
from presence_server.carriers.outbox import OutboxProvider
from presence_server.cli import main
from presence_server.config import ProviderConfig
from protocol.addresses import new_sid


def write_config(tmp_path: Path, data_dir: Path) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(f'[engine]\ndata_dir = "{data_dir}"\n')
    return path


async def fill(data_dir: Path, bodies: list[str], *, media: tuple[str, ...] = ()) -> list[str]:
    provider = OutboxProvider(ProviderConfig(name="outbox"), data_dir=str(data_dir))
    await provider.start()
    sids = []
    try:
        for body in bodies:
            sid = new_sid("SM")
            sids.append(sid)
            result = await provider.send(OutboundMessage(sid, new_sid("AC"), "+15550100001", "+15550199999", body, media))
            assert result.accepted
    finally:
        await provider.close()
    return sids


async def test_prints_newest_last_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sids = await fill(tmp_path / "data", ["first", "second\nhas two lines", "third"])
    config = write_config(tmp_path, tmp_path / "data")
    capsys.readouterr()  # unconfigured structlog prints the provider's logs to stdout
    assert main(["outbox", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert sids[0] in lines[0] and '"first"' in lines[0]
    assert '"second\\nhas two lines"' in lines[1]
    assert sids[2] in lines[2] and "+15550199999 -> +15550100001" in lines[2] and "[outbox]" in lines[2]


async def test_limit_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sids = await fill(tmp_path / "data", [f"m{i}" for i in range(5)], media=("https://example.com/a.png",))
    config = write_config(tmp_path, tmp_path / "data")
    capsys.readouterr()  # unconfigured structlog prints the provider's logs to stdout
    assert main(["outbox", "--config", str(config), "--limit", "2", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["message_sid"] for e in entries] == sids[-2:]
    assert entries[0]["body"] == "m3" and entries[0]["media_urls"] == ["https://example.com/a.png"]
    assert entries[0]["provider_message_id"].startswith("OB") and entries[0]["status"] == "sent"
    assert main(["outbox", "--config", str(config), "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert sids[-1] in out and "media https://example.com/a.png" in out


def test_no_outbox_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, tmp_path / "nothing-here")
    assert main(["outbox", "--config", str(config)]) == 0
    assert "empty" in capsys.readouterr().out
    assert main(["outbox", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert not (tmp_path / "nothing-here").exists()  # reading never creates anything


@pytest.mark.parametrize("limit", ["0", "-3", "many", "1000001"])
def test_bad_limit_is_a_usage_error(tmp_path: Path, limit: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["outbox", "--limit", limit])
    assert exc.value.code == 2
    assert "--limit" in capsys.readouterr().err


def test_bad_config_and_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["outbox", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
    data = tmp_path / "data"
    data.mkdir()
    (data / "outbox.sqlite3").write_bytes(b"this is not a database" * 100)
    assert main(["outbox", "--config", str(write_config(tmp_path, data))]) == 1
    assert "cannot read" in capsys.readouterr().err


async def test_the_real_command_reads_while_a_provider_holds_the_file(tmp_path: Path) -> None:
    """As a process, with the default ./data, while the writer still has the file open."""
    provider = OutboxProvider(ProviderConfig(name="outbox"), data_dir=str(tmp_path / "data"))
    await provider.start()
    try:
        sid = new_sid("SM")
        await provider.send(OutboundMessage(sid, new_sid("AC"), "+15550100001", "+15550199999", "while running"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCE_")}
        env["PYTHONPATH"] = str(Path(__file__).parents[2])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "presence_server.cli", "outbox", "--json",
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await provider.close()
    assert proc.returncode == 0, err.decode()
    (entry,) = json.loads(out)
    assert entry["message_sid"] == sid and entry["body"] == "while running"
