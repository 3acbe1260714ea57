"""Recovery-time estimates (core/recovery.py) and the learned retry mode of the engine:
censored observations, the fall-back chain, bounded memory, decisions within their
bounds, the soft_bounce event's explanation, and the population reader of
bench/bench_retry.py --population."""

from __future__ import annotations

import datetime as dt
import importlib.util
import itertools
import json
import math
import sys
import zoneinfo
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
from bounceback.config.settings import Schedule, load_config
from bounceback.core import engine, planner, recovery
from bounceback.core.engine import Policy, Publish, ReceiptIn, SubmitResult, decide, observation
from bounceback.core.model import Message, State, Verdict, evolve
from bounceback.core.recovery import (
    BINS,
    EDGES,
    Curve,
    Estimates,
    Observation,
    bin_of,
)
from bounceback.feed.events import build_event
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_750_000_000.0
H = 3600.0
ABSENT = Verdict("soft", "absent_subscriber", "absent", "027", "err:027", "default")
DELIVERED = Verdict("delivered", "delivered", "delivered", "000", "stat:DELIVRD", "default")


def obs(
    lo: float, hi: float, *, recovered: bool, place: tuple[str, str] = ("GB", "A")
) -> Observation:
    first = lo == hi == 0.0  # a message's first soft bounce
    return Observation(place[0], place[1], "absent_subscriber", lo, hi, recovered, T0, first)


# A message's stable fraction that does not draw a probe while its key has seen more
# than a few dozen messages (the probe lottery looks at (u * 9973) mod 1).
NOT_PROBE = 0.99 / 9973.0


def choose_args(e: float) -> dict[str, Any]:
    """The arguments of `Estimates.choose` for a failure `e` seconds after the first
    attempt, with the default [retry] settings, for a message that does not probe."""
    return {
        "created_at": T0,
        "failed_at": T0 + e,
        "deadline": T0 + 48 * H,
        "static_delay": 600.0,
        "static": Policy().static_delays,
        "min_at_risk": 20.0,
        "min_delay": 60.0,
        "max_delay": 86400.0,
        "u": NOT_PROBE,
    }


def choose(est: Estimates, e: float, **kw: Any) -> Any:
    args = choose_args(e)
    args.update(kw)
    place = args.pop("place", ("GB", "A"))
    for _ in range(200):  # the plans are made a little per call (PLAN_BUDGET)
        c = est.choose(place, "absent_subscriber", **args)
        if c.why != "plans being made":
            return c
    raise AssertionError("the plans were never made")


# ---------------------------------------------------------------- bins and counts


def test_bins_are_log_spaced_and_cover_every_time() -> None:
    assert len(EDGES) == BINS + 1 and EDGES[0] == 0.0 and EDGES[1] == 60.0
    assert all(b > a for a, b in itertools.pairwise(EDGES))
    assert EDGES[-1] > 30 * 86400  # a month
    for t in (0.0, 59.9, 60.0, 61.0, 3600.0, 86400.0, EDGES[-1] * 3):
        i = bin_of(t)
        assert EDGES[i] <= t and (i == BINS - 1 or t < EDGES[i + 1])


def test_a_failure_adds_exposure_and_no_event() -> None:
    c = Curve()
    c.add_survival(0.0, 3600.0)
    assert sum(c.events) == 0.0
    assert sum(c.exposure) == pytest.approx(3600.0)
    assert c.failed == 1 and c.recovered == 0
    assert c.survival(3600.0) == 1.0  # no recovery seen: no hazard


def test_a_recovery_is_one_event_inside_its_interval() -> None:
    c = Curve()
    c.add_recovery(600.0, 1800.0)
    assert sum(c.events) == pytest.approx(1.0)
    inside = {i for i in range(BINS) if c.events[i] > 0}
    assert inside and all(EDGES[i + 1] > 600.0 and EDGES[i] < 1800.0 for i in inside)
    # At risk for part of the interval: until the recovery, wherever it was.
    assert 0.0 < sum(c.exposure) <= 1200.0


def test_interval_censored_recoveries_give_their_median() -> None:
    """Messages that all recover between 1 h and 2 h, seen through attempts at 0, 1 h,
    2 h: half of the estimate's recovery mass is between 1 h and 2 h."""
    c = Curve()
    for _ in range(200):
        c.add_survival(0.0, 0.0)
        c.add_survival(0.0, H)
        c.add_recovery(H, 2 * H)
    # The bin that holds 1 h also holds a little time before it: most, not all, of
    # the mass is after 1 h.
    assert c.survival(H) > 0.9
    assert c.survival(2 * H) < 0.2  # a life table's hazard ends the interval smoothly
    t, _ = c.reach(0.0, 0.5, 1.0)
    assert t is not None and H < t < 2 * H


def test_messages_that_never_recover_lower_the_tail() -> None:
    c = Curve()
    for _ in range(100):
        c.add_recovery(0.0, 600.0)
    for _ in range(100):  # never recover: failures until 48 h
        for a, b in ((0.0, 600.0), (600.0, 6 * H), (6 * H, 48 * H)):
            c.add_survival(a, b)
    assert 0.4 < 1.0 - c.survival(600.0) < 0.6
    after = EDGES[bin_of(600.0) + 1]  # the end of the bin the last recoveries fell in
    assert c.survival(48 * H) == pytest.approx(c.survival(after), rel=1e-9)


# ---------------------------------------------------------------- properties

spans = st.tuples(
    st.floats(min_value=0.0, max_value=3 * 86400.0), st.floats(min_value=1.0, max_value=86400.0)
).map(lambda p: (p[0], p[0] + p[1]))
observations = st.lists(st.tuples(spans, st.booleans()), min_size=1, max_size=40)


def curve_of(items: list[tuple[tuple[float, float], bool]]) -> Curve:
    c = Curve()
    for (lo, hi), recovered in items:
        if recovered:
            c.add_recovery(lo, hi)
        else:
            c.add_survival(lo, hi)
    return c


@settings(max_examples=150, deadline=None)
@given(observations, spans, st.floats(min_value=0.0, max_value=86400.0))
def test_a_failure_never_raises_the_chance_of_recovery(
    items: list[tuple[tuple[float, float], bool]], more: tuple[float, float], e: float
) -> None:
    """A right-censored observation (not recovered by its end) adds exposure and no
    event: the conditional probability of recovering in any window never grows."""
    c = curve_of(items)
    before = [c.cum_hazard(e, e + w) for w in (600.0, 3600.0, 86400.0)]
    c.add_survival(*more)
    after = [c.cum_hazard(e, e + w) for w in (600.0, 3600.0, 86400.0)]
    assert all(a <= b + 1e-9 for a, b in zip(after, before, strict=True))


@settings(max_examples=150, deadline=None)
@given(observations, observations, st.floats(min_value=0.0, max_value=86400.0))
def test_more_data_never_shrinks_what_the_estimate_knows(
    items: list[tuple[tuple[float, float], bool]],
    more: list[tuple[tuple[float, float], bool]],
    e: float,
) -> None:
    """The region where the estimate has data (messages seen at risk) only grows: the
    end of the data never moves back, the unknown beyond it never widens."""
    c = curve_of(items)
    _, end_before = c.reach(e, 0.999999, 1.0)
    risk_before = [c.at_risk(i) for i in range(BINS)]
    for (lo, hi), recovered in more:
        if recovered:
            c.add_recovery(lo, hi)
        else:
            c.add_survival(lo, hi)
    _, end_after = c.reach(e, 0.999999, 1.0)
    assert all(c.at_risk(i) >= r - 1e-9 for i, r in enumerate(risk_before))
    assert end_after >= end_before - 1e-6
    assert all(x >= 0 for x in c.events) and all(x >= 0 for x in c.exposure)
    assert sum(c.events) == pytest.approx(c.recovered, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("ABCDEFGHIJ"), st.sampled_from("wxyz"), spans, st.booleans()),
        min_size=1,
        max_size=120,
    ),
    st.integers(min_value=3, max_value=20),
)
def test_memory_stays_bounded(
    items: list[tuple[str, str, tuple[float, float], bool]], cap: int
) -> None:
    est = Estimates(max_keys=cap)
    for country, operator, (lo, hi), recovered in items:
        est.observe(Observation(country, operator, "absent_subscriber", lo, hi, recovered, lo))
    assert len(est.curves) <= cap
    assert all(len(c.events) == BINS and len(c.exposure) == BINS for c in est.curves.values())
    # The reason's own key is the last to go.
    assert ("", "", "absent_subscriber") in est.curves


# ---------------------------------------------------------------- fall-back chain


def fill(est: Estimates, n: int, place: tuple[str, str], recover: float) -> None:
    """`n` messages of `place` tried at 0, then every 10 min, recovering at `recover`."""
    for _ in range(n):
        est.observe(obs(0.0, 0.0, recovered=False, place=place))
        t = 0.0
        while t + 600.0 < recover:
            est.observe(obs(t, t + 600.0, recovered=False, place=place))
            t += 600.0
        est.observe(obs(t, t + 600.0, recovered=True, place=place))


def test_the_fall_back_chain_with_thin_data() -> None:
    est = Estimates()
    assert choose(est, 0.0).source == "prior"  # nothing at all: the static schedule
    assert choose(est, 0.0).at == T0 + 600.0
    fill(est, 100, ("GB", "B"), 1800.0)  # another operator of the same country
    fill(est, 50, ("GB", "A"), 1800.0)  # the operator itself: fewer than min_at_risk
    c = choose(est, 0.0, min_at_risk=60.0)
    assert (c.source, c.level, c.key) == ("learned", "country", ("GB", "", "absent_subscriber"))
    fill(est, 100, ("NG", "C"), 1800.0)
    c = choose(est, 0.0, place=("FR", "D"), min_at_risk=60.0)  # a country never seen
    assert c.why == "probe"  # its first messages probe every time scale
    c = choose(est, 0.0, place=("FR", "D"), min_at_risk=60.0, u=0.5 / 9973.0 + 0.5)
    assert c.why == "probe"
    fill(est, 2000, ("FR", "D"), 1800.0)
    fill(est, 50, ("GB", "A"), 1800.0)  # now enough of the operator itself
    c = choose(est, 0.0, min_at_risk=60.0)
    assert (c.level, c.key) == ("operator", ("GB", "A", "absent_subscriber"))
    assert c.recovered == 100 and c.failed >= 200
    fields = c.fields()
    assert fields["key"] == "GB/A/absent_subscriber" and fields["level"] == "operator"
    # The plan says what it aims at: its target delay and on-time share against static's.
    assert fields["target_delay"] > 0 and 0 <= fields["static_on_time"] <= 1
    assert fields["on_time"] >= fields["static_on_time"] * 0.99


def test_a_new_keys_first_messages_probe() -> None:
    """Probes: a share PROBES / (messages seen) of a key's messages, whose attempts are
    60 s x 4^(k + phase) after the first (every time scale, none planned around)."""
    est = Estimates()
    fill(est, 200, ("GB", "B"), 1800.0)
    shares = [0.001 * i for i in range(1000)]
    probes = [u for u in shares if choose(est, 0.0, place=("GB", "B"), u=u).why == "probe"]
    assert 0.05 < len(probes) / len(shares) < 0.4  # 40 / 201, about
    new = [u for u in shares if choose(est, 0.0, place=("GB", "Z"), u=u).why == "probe"]
    assert len(new) == len(shares)  # a key never seen: every message probes
    for u in shares[:50]:
        c = choose(est, 600.0, place=("GB", "Z"), u=u)
        phase = (u * 7919.0) % 1.0
        times = (60.0 * 4.0 ** (k + phase) for k in range(20))
        probe = next(t for t in times if t > 630.0)
        assert c.at - T0 == pytest.approx(max(probe, 600.0 + 60.0))  # not before min_delay


def test_the_estimate_waits_for_slow_recoveries_and_not_for_fast_ones() -> None:
    est = Estimates()
    fill(est, 400, ("GB", "fast"), 900.0)
    fill(est, 400, ("GB", "slow"), 6 * H)
    fast = choose(est, 0.0, place=("GB", "fast"))
    slow = choose(est, 0.0, place=("GB", "slow"))
    assert fast.level == slow.level == "operator"
    assert fast.at - T0 < 2400.0
    assert slow.at - T0 > 3 * 600.0
    assert slow.at - T0 > 2 * (fast.at - T0)


def test_a_large_table_is_planned_a_little_per_call_to_the_same_decision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A common decision over many keys needs a ladder and a few rungs of each: one
    call does at most PLAN_BUDGET rungs' worth of it (the message's own key may add
    its two rungs), the static schedule decides until the first decision is done,
    and that decision is the one made in one go."""
    solves = [0]
    solve = planner._solve

    def counted(*args: Any) -> Any:
        solves[0] += 1
        return solve(*args)

    monkeypatch.setattr(planner, "_solve", counted)

    def table() -> Estimates:
        est = Estimates()
        for i in range(150):
            fill(est, 45, ("GB", f"op{i}"), 900.0 * (1 + i % 7))
        return est

    args = choose_args(0.0)
    spread = table()
    calls = 0
    while True:
        before = solves[0]
        c = spread.choose(("GB", "op3"), "absent_subscriber", **args)
        calls += 1
        assert solves[0] - before <= recovery.PLAN_BUDGET + 2
        if c.why != "plans being made":
            break
        assert c.source == "prior" and c.at == T0 + 600.0  # the static schedule meanwhile
        assert calls < 1000
    assert calls > 10  # 150 keys are too many for one call
    monkeypatch.setattr(recovery, "PLAN_BUDGET", 10**9)
    whole = table()
    at_once = whole.choose(("GB", "op3"), "absent_subscriber", **args)
    assert at_once.why != "plans being made"
    assert spread.decisions == whole.decisions and not spread.jobs and not whole.jobs
    assert (c.at, c.key, c.on_time) == (at_once.at, at_once.key, at_once.on_time)


def test_a_cleared_table_plans_afresh() -> None:
    """A reset forgets the plans made on the old counts too: refilled, the table
    decides as a new one does (the old ladder and decision looked fresh to counts
    smaller than the ones they were made on)."""
    est = Estimates()
    fill(est, 400, ("GB", "A"), 900.0)
    before = choose(est, 0.0)
    est.clear()
    assert not est.curves and not est.ladders and not est.decisions
    fill(est, 45, ("GB", "A"), 2 * H)
    new = Estimates()
    fill(new, 45, ("GB", "A"), 2 * H)
    after, fresh = choose(est, 0.0), choose(new, 0.0)
    assert (after.at, after.on_time) == (fresh.at, fresh.on_time)
    assert after.at != before.at


def test_history_the_static_schedule_gathered_plans_a_reason() -> None:
    """Under the static schedule the first retry comes 10 min after the first attempt:
    that interval is too wide to count in the bins, so a reason's first minutes have no
    data. The minutes after them must still give the reason a hazard (they once cut it
    off at the first bin without data: zero everywhere, and no plan but the last
    chance)."""
    est = Estimates()
    fill(est, 300, ("", ""), 3 * H)  # messages with no country: the reason decides
    top = est.curves[("", "", "absent_subscriber")]
    assert top.at_risk(0) == 0.0 and top.at_risk(bin_of(1200.0)) >= 300
    hazards = est.hazards(("", "", "absent_subscriber"), 20.0)
    assert hazards[0] == 0.0  # nothing seen there
    assert max(hazards[bin_of(2 * H) : bin_of(4 * H) + 1]) > 0.0
    c = choose(est, 0.0, place=("", ""))
    assert (c.source, c.level) == ("learned", "reason")
    assert c.at < T0 + 24 * H  # a plan, not a wait for the deadline's last chance
    assert c.on_time > 0.3


def test_beyond_the_data_the_wait_doubles() -> None:
    est = Estimates()
    fill(est, 40, ("GB", "A"), 900.0)
    c = choose(est, 5 * H, static_delay=600.0)  # nobody was seen at risk 5 h on
    assert c.source == "learned"
    assert c.at == pytest.approx(T0 + 10 * H)
    assert c.why.startswith("beyond the data")


# ---------------------------------------------------------------- engine decisions


def message(**kw: Any) -> Message:
    m = Message(
        id="00000000000000A1",
        account="acme",
        source_addr="ACME",
        destination_addr="447400123456",
        pdu=b"",
        registered_delivery=1,
        created_at=T0,
        deadline=T0 + 48 * H,
        deadline_is_validity=True,
        submit_date=T0,
    )
    return evolve(m, **kw)


def submitted(at: float, attempt: int = 1, failed_at: float = 0.0) -> Message:
    return message(
        state=State.SUBMITTED,
        attempts=attempt,
        carrier="sim",
        carrier_message_id="c1",
        updated_at=at,
        failed_at=failed_at,
        retries_by_reason=(("absent_subscriber", attempt - 1),) if attempt > 1 else (),
        verdict=ABSENT if attempt > 1 else None,
    )


def bounce(msg: Message, now: float, policy: Policy, **kw: Any) -> tuple[Message, list[Any]]:
    ev = ReceiptIn(now, msg.attempts, ABSENT, "UNDELIV", "027", place=("GB", "A"), **kw)
    return decide(msg, ev, policy)


def test_the_soft_bounce_event_says_what_chose_the_next_attempt() -> None:
    est = Estimates()
    fill(est, 400, ("GB", "A"), 2 * H)
    choose(est, 0.0)  # the first soft bounces make the plans (PLAN_BUDGET)
    policy = Policy(mode="learned", recovery=est, jitter=0.0)
    # Id ...02: a message whose stable fraction draws no probe (engine.stable_fraction).
    assert (engine.stable_fraction("0000000000000002") * 9973.0) % 1.0 > 0.5
    first = evolve(submitted(T0 + 1.0), id="0000000000000002")
    new, actions = bounce(first, T0 + 20.0, policy)
    assert new.state is State.HELD and new.failed_at == T0 + 1.0
    (pub,) = [a for a in actions if isinstance(a, Publish)]
    estimate = pub.fields["estimate"]
    assert isinstance(estimate, dict)
    assert estimate["source"] == "learned" and estimate["level"] == "operator"
    assert estimate["key"] == "GB/A/absent_subscriber"
    assert estimate["recovered"] == 400 and estimate["failed"] >= 400
    assert estimate["target_delay"] > 0
    assert new.next_attempt_at is not None and new.next_attempt_at > T0 + 1800.0
    # The document on the feed (and the timeline step) carries it, valid by the schema.
    _, doc = build_event(
        new,
        "soft_bounce",
        pub.fields,
        now=T0 + 20.0,
        instance="i",
        prefix="bb",
        mask=False,
        mask_keep=4,
    )
    validator = jsonschema.Draft202012Validator(
        json.loads((ROOT / "proxy" / "schema" / "event.schema.json").read_text())
    )
    parsed = json.loads(doc)
    validator.validate(parsed)
    assert parsed["estimate"]["level"] == "operator"
    # Static mode says nothing of estimates and keeps its schedule.
    static, actions = bounce(submitted(T0 + 1.0), T0 + 20.0, Policy(jitter=0.0))
    assert "estimate" not in next(a for a in actions if isinstance(a, Publish)).fields
    assert static.next_attempt_at == T0 + 20.0 + 600.0


def test_observations_from_decisions() -> None:
    first = submitted(T0 + 1.0)
    held, _ = bounce(first, T0 + 20.0, Policy())
    o = observation(first, held, ("GB", "A"))
    assert o is not None and not o.recovered and (o.lo, o.hi) == (0.0, 1.0)
    again = evolve(held, state=State.SUBMITTED, attempts=2, updated_at=T0 + 700.0)
    held2, _ = bounce(again, T0 + 720.0, Policy())
    o = observation(again, held2, ("GB", "A"))
    assert o is not None and (o.lo, o.hi) == (1.0, 700.0) and not o.recovered
    third = evolve(held2, state=State.SUBMITTED, attempts=3, updated_at=T0 + 2000.0)
    done, _ = decide(third, ReceiptIn(T0 + 2005.0, 3, DELIVERED, "DELIVRD", "000"), Policy())
    o = observation(third, done, ("GB", "A"))
    assert o is not None and o.recovered and (o.lo, o.hi) == (700.0, 2000.0)
    assert o.reason == "absent_subscriber"
    # A link failure teaches nothing about the destination.
    throttled = Verdict("soft", "throttled", "throttled", "0x58", "status", "default")
    sub = message(state=State.SUBMITTING, attempts=1, updated_at=T0)
    held3, _ = decide(sub, SubmitResult(T0 + 1, "sim", 0x58, "", throttled), Policy())
    assert held3.state is State.HELD and held3.failed_at == 0.0
    assert observation(sub, held3, ("GB", "A")) is None


QUIET = (dt.time(21, 0), dt.time(8, 0))
LONDON = zoneinfo.ZoneInfo("Europe/London")


@settings(max_examples=200, deadline=None)
@given(
    recover=st.floats(min_value=60.0, max_value=40 * H),
    n=st.integers(min_value=0, max_value=60),
    e=st.floats(min_value=0.0, max_value=47.9 * H),
    rand=st.floats(min_value=0.0, max_value=1.0),
    quiet=st.booleans(),
    validity=st.floats(min_value=1 * H, max_value=72 * H),
)
def test_learned_decisions_stay_within_their_bounds(
    recover: float, n: int, e: float, rand: float, quiet: bool, validity: float
) -> None:
    est = Estimates()
    fill(est, n, ("GB", "A"), recover)
    sched = Schedule(600.0, 2.0, 14400.0, 300.0, 6 * H)
    policy = Policy(
        mode="learned",
        recovery=est,
        schedules={"absent_subscriber": sched},
        quiet_start=QUIET[0] if quiet else None,
        quiet_end=QUIET[1] if quiet else None,
    )
    e = min(e, validity - 120.0)
    msg = evolve(submitted(T0 + e), deadline=T0 + validity)
    now = T0 + e + 15.0
    new, _ = bounce(msg, now, policy, rand=rand, tz=LONDON)
    if new.state is not State.HELD:  # the deadline passed meanwhile
        return
    due = new.next_attempt_at
    assert due is not None
    assert now <= due <= msg.deadline
    last = msg.deadline - policy.last_chance
    if due < last - 1.0:
        # Within the reason's learned bounds (quiet hours may only push it later).
        assert due >= msg.failed_at + sched.learned_min * 0.95 or due >= now
        if not quiet:
            assert due <= T0 + e + sched.learned_max * 1.05 + 1.0
    if quiet:
        local = dt.datetime.fromtimestamp(due, LONDON).time()
        assert not (local >= QUIET[0] or local < QUIET[1]) or due >= msg.deadline - 1.0


def test_the_last_attempt_goes_before_the_deadline() -> None:
    """A message nobody has seen recover still gets an attempt just before its deadline."""
    est = Estimates()
    for _ in range(40):  # never recover
        est.observe(obs(0.0, 0.0, recovered=False))
        est.observe(obs(0.0, 40 * H, recovered=False))
    policy = Policy(mode="learned", recovery=est, jitter=0.0)
    msg = evolve(submitted(T0 + 30 * H, attempt=4, failed_at=T0 + 20 * H), deadline=T0 + 32 * H)
    new, _ = bounce(msg, T0 + 30 * H + 10, policy)
    assert new.next_attempt_at == T0 + 32 * H - policy.last_chance


def test_config_mode_and_learned_bounds(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[accounts]]\nsystem_id = "a"\npassword = "p"\n'
        '[retry]\nmode = "learned"\nlearn_margin = 0.1\nlearn_delay = 900\n'
        "[retry.schedules.absent_subscriber]\nlearned_min = 120\nlearned_max = 7200\n"
        '[[carriers]]\nname = "c"\nhost = "127.0.0.1"\nport = 2776\nsystem_id = "x"\n'
        'password = "y"\n'
    )
    cfg = load_config(path)
    assert cfg.retry.mode == "learned" and cfg.retry.learn_margin == 0.1
    assert cfg.retry.learn_delay == 900.0
    s = cfg.retry.schedules["absent_subscriber"]
    assert (s.learned_min, s.learned_max) == (120.0, 7200.0)
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[retry]\nmode = "smart"\n[retry.schedules.absent_subscriber]\n'
        "learned_min = 600\nlearned_max = 60\n"
    )
    with pytest.raises(Exception) as info:
        load_config(bad)
    text = str(getattr(info.value, "problems", info.value))
    assert "mode" in text and "learned_max" in text


# ---------------------------------------------------------------- the population reader


def bench() -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(
        "retry_population", ROOT / "bench" / "retry_population.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["retry_population"] = mod
    spec.loader.exec_module(mod)
    return mod


GOOD: dict[str, Any] = {
    "name": "t",
    "messages": 300,
    "validity_hours": 12,
    "seed": 1,
    "groups": [
        {
            "share": 1.0,
            "country": "GB",
            "operator": "A",
            "soft": [
                {
                    "share": 0.3,
                    "err": "027",
                    "recover_hours": {"lognormal": {"median": 0.5, "sigma": 1}},
                }
            ],
            "hard": [{"share": 0.05, "err": "001"}],
            "never": 0.05,
        }
    ],
}


def broken(path: list[Any], value: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(GOOD))
    target: Any = doc
    for k in path[:-1]:
        target = target[k]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (broken(["messages"], 0), "messages: must be >= 1, got 0"),
        (broken(["messages"], KeyError), "messages: missing"),
        (broken(["validity_hours"], "48"), 'validity_hours: expected a number, got "48"'),
        (broken(["groups"], []), "groups: expected a non-empty list of groups"),
        (broken(["groups", 0, "share"], 0.5), "groups: the groups' shares add up to 0.5, not 1"),
        (broken(["groups", 0, "country"], "XX"), "groups[0].country: unknown country 'XX'"),
        (
            broken(["groups", 0, "soft", 0, "recover_hours"], {"gamma": {"k": 1}}),
            "groups[0].soft[0].recover_hours.gamma: unknown key",
        ),
        (
            broken(["groups", 0, "soft", 0, "recover_hours", "lognormal", "median"], -1),
            "groups[0].soft[0].recover_hours.lognormal.median: must be > 0, got -1",
        ),
        (
            broken(["groups", 0, "soft", 0, "recover_hours", "lognormal", "sigma"], KeyError),
            "groups[0].soft[0].recover_hours.lognormal.sigma: missing",
        ),
        (
            broken(["groups", 0, "hard", 0, "err"], "abc"),
            "groups[0].hard[0].err: expected a receipt err",
        ),
        (
            broken(["groups", 0, "never"], 0.9),
            "groups[0]: soft, hard and never shares add up to 1.25",
        ),
        (broken(["colour"], "red"), "colour: unknown key"),
    ],
)
def test_a_malformed_population_is_refused_with_file_key_reason(
    tmp_path: Path, doc: dict[str, Any], message: str
) -> None:
    rp = bench()
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(rp.PopulationError) as info:
        rp.read_population(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_not_json_and_missing_files(tmp_path: Path) -> None:
    rp = bench()
    path = tmp_path / "p.json"
    path.write_text("{")
    with pytest.raises(rp.PopulationError, match=r"p\.json: \(line 1, column 2\): not JSON"):
        rp.read_population(path)
    assert rp.population_main(["--population", str(tmp_path / "none.json")]) == 2


def test_the_bench_runs_three_modes_on_a_population(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rp = bench()
    path = tmp_path / "p.json"
    path.write_text(json.dumps(GOOD))
    assert rp.population_main(["--population", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["modes"]) == {"naive", "static", "learned"}
    for row in report["modes"].values():
        assert {"recovered_share", "wasted", "delay_median_s", "delay_p90_s", "submissions"} <= set(
            row
        )
        assert row["recovered_share"] is not None and 0.0 <= row["recovered_share"] <= 1.0
        assert row["submissions"] >= 300 and row["wasted"] >= 0
    # naive retries every 5 minutes: it wastes the most and recovers everything.
    assert report["modes"]["naive"]["wasted"] > report["modes"]["static"]["wasted"]
    assert report["modes"]["naive"]["recovered_share"] == 1.0
    assert report["learned_warm"] is False
    # --warm: learned mode first learns from one run, then reports a second one.
    args = ["--population", str(path), "--json", "--mode", "learned", "--warm"]
    assert rp.population_main(args) == 0
    warm = json.loads(capsys.readouterr().out)
    assert warm["learned_warm"] is True and set(warm["modes"]) == {"learned"}
    assert warm["modes"]["learned"]["submissions"] >= 300
    assert report["learn_margin"] == warm["learn_margin"] == engine.Policy().learn_margin
    # --margin: learned mode at another learn_margin, said in the report; out of range
    # is refused as the config refuses it.
    args = ["--population", str(path), "--json", "--mode", "learned", "--margin", "0.3"]
    assert rp.population_main(args) == 0
    assert json.loads(capsys.readouterr().out)["learn_margin"] == 0.3
    assert rp.policy_for("learned", 3600.0, 0.3).learn_margin == 0.3
    with pytest.raises(SystemExit) as refused:
        rp.population_main(["--population", str(path), "--margin", "1.5"])
    assert refused.value.code == 2
    assert "--margin: between 0 and 1" in capsys.readouterr().err
    # --oracle: the plans on the true distributions meet the on-time share for fewer
    # wasted attempts than the static schedules.
    assert rp.population_main(["--population", str(path), "--oracle"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert 0 < best["wasted_ratio"] < 1 and best["on_time_share"] >= 0.5 - 1e-3
    assert best["target_delay_s"] > 0
    # ... and the same rule through the engine on the true table (no learning): at no
    # margin and at the default one, it recovers everything for fewer wasted attempts.
    assert [row["margin"] for row in best["engine"]] == [0.0, engine.Policy().learn_margin]
    for row in best["engine"]:
        assert row["recovered_share"] >= 0.99 and 0 < row["wasted_ratio"] < 1
        assert row["delay_median_ratio"] is not None and row["delay_median_ratio"] > 0
    items = rp.draw(rp.read_population(path))
    kinds = {it.kind for it in items}
    assert kinds == {"ok", "soft", "hard", "never"}
    assert all(it.destination.startswith("44") for it in items)
    assert not math.isinf(max(it.recover_at for it in items if it.kind == "soft"))


def test_the_true_table_holds_the_populations_distributions(tmp_path: Path) -> None:
    rp = bench()
    path = tmp_path / "p.json"
    path.write_text(json.dumps(GOOD))
    pop = rp.read_population(path)
    table = rp.true_estimates(pop)
    # Every level of the fall-back chain, weighted by its share of the messages.
    keys = {("GB", "A", "absent_subscriber"), ("GB", "", "absent_subscriber")}
    keys.add(("", "", "absent_subscriber"))
    assert set(table.curves) == keys
    curve = table.curves[("GB", "A", "absent_subscriber")]
    assert curve.messages == round(rp._TRUE_MESSAGES * 0.35)
    lognormal = rp.Dist("lognormal", (0.5, 1.0))
    for edge in (EDGES[5], EDGES[15], EDGES[25]):
        # 0.30 of the messages recover as the lognormal, 0.05 never.
        expected = 1.0 - 0.30 * lognormal.cdf(edge / 3600.0) / 0.35
        assert curve.survival(edge) == pytest.approx(expected, rel=1e-6)


def test_the_shipped_populations_read() -> None:
    rp = bench()
    files = sorted((ROOT / "bench" / "populations").glob("*.json"))
    assert len(files) >= 2
    for f in files:
        pop = rp.read_population(f)
        assert pop.messages > 0 and pop.groups


_ = engine  # the module under test, for readers
