"""`core.recent.Recent`: what happened lately, bounded in time and count."""

from __future__ import annotations

from bounceback.core.recent import Recent


def test_the_summary_covers_the_window_asked_for() -> None:
    r = Recent(keep=3600.0, count=1000)
    for i in range(100):  # one a second, round trips 0.01 .. 1.00 s
        r.add("sim", 1000.0 + i, (i + 1) / 100)
    last = r.summary("sim", 1099.0, 10.0)  # the last ten seconds: t >= 1089
    assert last["count"] == 11
    assert last["per_second"] == 1.1
    assert last["max"] == 1.0
    assert last["p50"] == 0.95
    every = r.summary("sim", 1099.0, 3600.0)
    assert every["count"] == 100 and every["p95"] == 0.96
    assert r.summary("other", 1099.0, 60.0) == {
        "count": 0,
        "per_second": 0.0,
        "p50": None,
        "p95": None,
        "max": None,
    }


def test_old_and_surplus_observations_are_dropped() -> None:
    r = Recent(keep=60.0, count=5)
    for i in range(10):
        r.add("sim", float(i), 1.0)
    assert r.summary("sim", 9.0, 3600.0)["count"] == 5  # the count bound
    r.add("sim", 1000.0, 2.0)  # everything else is older than `keep`
    assert r.summary("sim", 1000.0, 3600.0)["count"] == 1
