from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocol.presence import STATUS_RANK, SessionPresence, Status, merge


def s(sid: str, status: Status = Status.AVAILABLE, priority: int = 0, activity: float = 0.0, text: str = "") -> SessionPresence:
    return SessionPresence(sid, "AC1", "alice", "ND1", status=status, priority=priority, last_activity=activity, text=text)


def test_no_sessions_is_offline_with_last_seen() -> None:
    p = merge("alice", [], last_seen=12.0)
    assert p.status is Status.OFFLINE and p.last_seen == 12.0 and p.sessions == ()


def test_best_status_wins_then_priority_then_recency() -> None:
    assert merge("alice", [s("a", Status.DND, 100), s("b", Status.AWAY)]).status is Status.AWAY
    assert merge("alice", [s("a", Status.BUSY, text="x"), s("b", Status.BUSY, priority=1, text="y")]).text == "y"
    assert merge("alice", [s("a", activity=1, text="old"), s("b", activity=2, text="new")]).text == "new"


def test_available_away_busy_dnd_order() -> None:
    order = sorted([Status.DND, Status.BUSY, Status.AVAILABLE, Status.AWAY], key=STATUS_RANK.__getitem__)
    assert order == [Status.AVAILABLE, Status.AWAY, Status.BUSY, Status.DND]


statuses = st.sampled_from([Status.AVAILABLE, Status.AWAY, Status.BUSY, Status.DND])


@given(st.lists(st.tuples(statuses, st.integers(-128, 127), st.floats(0, 1e6)), min_size=1, max_size=8))
def test_merge_is_order_independent_and_picks_a_best(items: list[tuple[Status, int, float]]) -> None:
    sessions = [s(f"S{i}", st_, pr, act) for i, (st_, pr, act) in enumerate(items)]
    forward = merge("alice", sessions)
    backward = merge("alice", list(reversed(sessions)))
    assert forward.status == backward.status
    assert STATUS_RANK[forward.status] == min(STATUS_RANK[x[0]] for x in items)
    assert forward.last_seen == max(x[2] for x in items)
    assert len(forward.sessions) == len(sessions)


def test_visible_ignores_activity_times() -> None:
    a = merge("alice", [s("a", activity=1)])
    b = merge("alice", [s("a", activity=2)])
    assert a.visible() == b.visible()
    assert a.visible() != merge("alice", [s("a", Status.AWAY)]).visible()
