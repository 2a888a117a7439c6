"""The soak's flatness rule (bench/soak.py): a flat series with noise passes,
a steady leak of a descriptor per churned session or of memory per call
fails, and the section it writes replaces only its own part of
docs/reliability.md. No server here: the soak itself is never pass/fail of
the suite."""

from __future__ import annotations

import random
from pathlib import Path

from bench import soak

DURATION, WARMUP, INTERVAL = 600.0, 120.0, 5.0


def series(rss_kib: callable, fds: callable, seed: int = 1) -> list[soak.Sample]:  # type: ignore[valid-type]
    rng = random.Random(seed)
    out = []
    t = 0.0
    while t <= DURATION:
        out.append(soak.Sample(t, int(rss_kib(t) + rng.uniform(-300, 300)), int(fds(t) + rng.randint(-3, 3)), 300))
        t += INTERVAL
    return out


def verdicts(samples: list[soak.Sample]) -> dict[str, soak.Verdict]:
    return {m: soak.judge(samples, m, WARMUP, DURATION) for m in ("rss", "fds")}


def test_a_flat_run_after_a_warm_up_passes() -> None:
    # Memory climbs during the warm-up (caches filling), then stays; descriptors hold.
    samples = series(lambda t: 80_000 + min(t, 100) * 100, lambda t: 325)
    v = verdicts(samples)
    assert v["rss"].passed and v["fds"].passed, v


def test_a_descriptor_leak_per_churned_session_fails() -> None:
    # 5 sessions churned per second, one descriptor left behind for each.
    v = verdicts(series(lambda t: 80_000, lambda t: 325 + 5 * t))
    assert v["rss"].passed and not v["fds"].passed
    assert v["fds"].trend > 2500  # per ten minutes


def test_a_slow_memory_leak_fails() -> None:
    # 1 KiB per call at 5 calls per second: 3 MiB per ten minutes on a base of 80 MiB
    # (under 4 %: the last sample alone would not tell; the trend does).
    v = verdicts(series(lambda t: 80_000 + 5 * t, lambda t: 325))
    assert not v["rss"].passed and v["fds"].passed
    assert abs(v["rss"].last - v["rss"].baseline) <= v["rss"].last_limit


def test_a_step_after_the_warm_up_fails_on_the_last_sample() -> None:
    # Memory that jumps by 12 MiB in the first half and then holds: a flat second half.
    v = verdicts(series(lambda t: 80_000 + (12_000 if t > 200 else 0), lambda t: 325))
    assert v["rss"].trend <= v["rss"].trend_limit and not v["rss"].passed


def test_the_slope_is_a_least_squares_fit() -> None:
    assert soak.fit_slope([(0, 1), (1, 3), (2, 5)]) == 2.0
    assert soak.fit_slope([(0, 7)]) == 0.0


def test_write_section_replaces_only_its_own_section(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text("intro\n<!-- section: soak -->\nold\n<!-- end: soak -->\n<!-- section: tls -->\nkeep\n<!-- end: tls -->\n")
    soak.write_section("## 6. Soak\n\nnew figures", doc)
    assert doc.read_text() == (
        "intro\n<!-- section: soak -->\n## 6. Soak\n\nnew figures\n<!-- end: soak -->\n<!-- section: tls -->\nkeep\n<!-- end: tls -->\n"
    )
