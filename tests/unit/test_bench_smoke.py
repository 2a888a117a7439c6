"""The benchmarks' pure helpers: percentiles, the load client's framing, the
profile parser, and the rendering of docs/benchmarks.md sections. No server,
no timing asserts (the scenarios themselves are never part of pass/fail)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bench import _common as c
from bench import fanout, idle, query, signaling, storm
from bench._httpload import Load
from bench._wsload import encode_frame, mask, parse_frames


@pytest.fixture(autouse=True)
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(c, "plot", lambda name, draw, **kw: None)


ENV = {"CPU": "2 CPUs", "OS": "Linux", "Python": "CPython 3.11"}


def test_percentile_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert c.percentile(values, 0.5) == 51.0
    assert c.percentile(values, 0.99) == 100.0
    assert c.percentile(values, 0.0) == 1.0
    assert c.percentile([3.0], 0.99) == 3.0
    assert c.percentile([], 0.5) != c.percentile([], 0.5)  # NaN


def test_ms_formats() -> None:
    assert c.ms(0.0005) == "500 µs"
    assert c.ms(0.0123) == "12.3 ms"
    assert c.ms(float("nan")) == "n/a"


def test_frames_round_trip_through_the_mask() -> None:
    key = b"\x01\x02\x03\x04"
    assert mask(mask(b"hello world", key), key) == b"hello world"
    for size in (0, 5, 125, 126, 70000):
        payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        buf = bytearray(encode_frame(payload, key=key) + b"\x81")  # plus the start of another frame
        frames = parse_frames(buf)
        assert frames == [(True, 1, payload)]
        assert buf == bytearray(b"\x81")


def test_unmasked_server_frames_parse() -> None:
    body = json.dumps({"type": "registered"}).encode()
    buf = bytearray(bytes([0x81, len(body)]) + body + bytes([0x88, 2, 0x03, 0xE8]))
    assert parse_frames(buf) == [(True, 1, body), (True, 8, b"\x03\xe8")]


def test_parse_collapsed_profile() -> None:
    text = "\n".join([
        "main (presence_server/cli.py:10);Runner.run (asyncio/runners.py:118) 5",
        "main (presence_server/cli.py:10);Connection.run (presence_server/gateway/connection.py:63);decode (json/decoder.py:337) 3",
        "main (presence_server/cli.py:10);verify_token (protocol/tokens.py:300);_b64 (jwt/api_jws.py:1) 2",
    ])
    prof = c.parse_collapsed(text)
    assert prof.samples == 10
    assert prof.self_top[0] == ("event loop: uvloop C code, syscalls", 5)
    names = dict(prof.product_top)
    assert names["Connection.run (presence_server/gateway/connection.py)"] == 3
    assert names["verify_token (protocol/tokens.py)"] == 2
    assert not any("cli.py" in n for n in names)
    assert "| `event loop" in prof.markdown()


def test_write_section_replaces_only_its_own_and_rebuilds_targets(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    c.write_section("a", c.section("a", "## A\nfirst-version\n" + c.target_line("a", "t-a", "1", True)), ENV, doc)
    c.write_section("b", c.section("b", "## B\n" + c.target_line("b", "t-b", "2", False)), ENV, doc)
    c.write_section("a", c.section("a", "## A\nsecond-version\n" + c.target_line("a", "t-a", "3", None)), ENV, doc)
    c.write_section("a-profile", c.section("a-profile", "#### profile"), ENV, doc, after="a")
    text = doc.read_text()
    assert text.startswith("# Benchmarks")
    assert "first-version" not in text and "second-version" in text
    assert text.index("bench:targets:start") < text.index("bench:a:start") < text.index("bench:a-profile:start") < text.index("bench:b:start")
    assert "| t-a | 3 | not measured | [a](#a) |" in text
    assert "| t-b | 2 | **not met** | [b](#b) |" in text


def test_renderers_produce_sections_with_targets() -> None:
    args = argparse.Namespace(n=100, hold=1.0, section="idle", load="0.1 0.1 0.1", rounds=1, concurrency=10, ks=[1, 1000], connections=4, present=3,
                              rates=[25, 200], seconds=1.0, reps=3, callees=5, split=False, redis_version="7")
    # idle
    runs = []
    for label, per in (("product", 19), ("aiohttp", 15), ("websockets", 16)):
        r = idle.IdleRun(label, 1000)
        r.points = [(0, 1000), (50, 1000 + 50 * per), (100, 1000 + 100 * per)]
        r.rss_held = 1000 + 100 * per
        from bench._wsload import Opened

        r.opened = Opened()
        runs.append(r)
    text = idle.render(ENV, args, runs)
    assert "bench:idle:start" in text and '"met": true' in text
    # storm
    targets = []
    for label, rate in (("product", 500.0), ("aiohttp", 1500.0), ("websockets", 1400.0), ("Prosody", 100.0)):
        s = storm.Storm(10, [0.01] * 10, 0.0, 10 / rate, {}, 0.01, 0.001)
        targets.append(storm.Target(label, [s]))
    text = storm.render(ENV, args, targets)
    assert "bench:storm:start" in text and text.count("<!-- target ") == 2
    targets[-1] = storm.Target("Prosody", unavailable="prosody is not installed")
    assert "could not run here: prosody is not installed" in storm.render(ENV, args, targets)
    # fanout
    prod = [fanout.FanoutRun(k, 2, [0.001 * k] * k, [0.001 * k] * 2) for k in (1, 1000)]
    base = [fanout.FanoutRun(k, 2, [0.0005 * k] * k, [0.0005 * k] * 2) for k in (1, 1000)]
    text = fanout.render(ENV, args, prod, base)
    assert '"met": false' in text  # 1 s at K = 1000
    # query
    loads = [Load(3, [0.001, 0.002, 0.003], t0=0.0, t1=1.0)]
    assert "bench:query:start" in query.render(ENV, args, loads, 1e-4, loads, 5e-5)
    # signaling
    ramps = []
    for label, lat in (("embedded", 0.002), ("redis", 0.02), ("bare", 0.001)):
        steps = [
            signaling.RateResult(rate, [signaling.Step(rate, 1.0, sent=rate, created=rate, wall=1.0, latencies=[lat] * rate, answer_latencies=[lat] * rate)] * 3)
            for rate in (25, 200)
        ]
        ramps.append(signaling.Ramp(label, steps))
    text = signaling.render(ENV, args, ramps)
    assert text.count("<!-- target ") == 2 and '"met": true' in text and '"met": false' in text


def test_redis_engine_sections_sit_beside_the_embedded_ones() -> None:
    args = argparse.Namespace(n=100, load="0.1 0.1 0.1", rounds=1, concurrency=10, ks=[1, 1000], connections=4, present=3, engine="redis")
    prod = [fanout.FanoutRun(k, 2, [0.00001 * k] * k, [0.00001 * k] * 2) for k in (1, 1000)]
    text = fanout.render(ENV, args, prod, prod)
    assert "bench:fanout-redis:start" in text and "(Redis engine)" in text and "--engine redis" in text
    (line,) = [x for x in text.splitlines() if x.startswith("<!-- target ")]
    assert '"scenario": "fanout-redis"' in line and "(redis)" in line and '"met": true' in line
    loads = [Load(3, [0.001, 0.002, 0.003], t0=0.0, t1=1.0)]
    text = query.render(ENV, args, loads, 1e-4, loads, 5e-5)
    assert "bench:query-redis:start" in text and "redis engine on a local" in text


def test_a_before_tree_gets_only_the_config_it_knows(tmp_path: Path) -> None:
    (tmp_path / "presence_server").mkdir()
    (tmp_path / "presence_server" / "config.py").write_text(
        "class ServerConfig:\n    host: str\n    port: int\nclass GatewayConfig:\n    rate: float\nclass Config:\n    server: ServerConfig\n    gateway: GatewayConfig\n    accounts: list\n"
    )
    text = '[server]\nhost = "h"\nport = 1\nshutdown_grace = 0.5\n\n[gateway]\nrate = 2.0\nmax_connections_per_address = 0\n\n[http]\nrate = 5.0\n\n[[accounts]]\n'
    kept = c.config_for_tree(text, tmp_path)
    assert kept.split("\n") == ["[server]", 'host = "h"', "port = 1", "", "[gateway]", "rate = 2.0", "", "[[accounts]]", ""]
    with pytest.raises(argparse.ArgumentTypeError):
        c.before_tree(str(tmp_path))  # no presence_server/cli.py there
