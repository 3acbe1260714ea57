"""The message engine's pure decisions, table by table, plus a random-walk state machine.

Every test drives `decide(message, event, policy)` with explicit times, random
numbers and time zones, and checks the new message and the actions against the
behaviour the proxy promises: one final receipt per message, retries bounded by
attempts and the deadline, late receipts handled, quiet hours honoured.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest
from bounceback.core.engine import (
    DEFAULT_SCHEDULES,
    FALLBACK_SCHEDULE,
    LINK_REASONS,
    QUERY_MAX_INTERVAL,
    SUPPRESS_REASONS,
    Action,
    Alert,
    AnswerSender,
    Cancel,
    CancelUpstream,
    Dispatch,
    Due,
    Event,
    Policy,
    Publish,
    QueryUpstream,
    ReceiptIn,
    Schedule,
    SenderReceipt,
    Submit,
    SubmitResult,
    SuppressNumber,
    decide,
    quiet_adjust,
)
from bounceback.core.model import FINAL_STATES, Message, State, Verdict
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z
DAY = 86_400.0
DEADLINE = NOW + 2 * DAY
POLICY = Policy()
PARIS = ZoneInfo("Europe/Paris")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
CARRIER = "alpha"

BASE = Message(
    id="0123456789ABCDEF",
    account="shop",
    source_addr="Shop",
    destination_addr="447700900123",
    pdu=b"",
    registered_delivery=1,
    created_at=NOW,
    deadline=DEADLINE,
    deadline_is_validity=False,
    submit_date=NOW,
)


def make(**changes: Any) -> Message:
    return attrs.evolve(BASE, **changes)


def verdict(kind: str, reason: str, max_retries: int | None = None) -> Verdict:
    return Verdict(
        kind=kind,
        reason=reason,
        description=reason.replace("_", " "),
        code=f"test:{reason}",
        rule=f"rule-{reason}",
        source="default",
        max_retries=max_retries,
    )


def soft(reason: str, max_retries: int | None = None) -> Verdict:
    return verdict("soft", reason, max_retries)


def hard(reason: str) -> Verdict:
    return verdict("hard", reason)


DELIVERED = verdict("delivered", "delivered")
ENROUTE = verdict("pending", "enroute")
ACCEPTD = verdict("pending", "accepted")


def verdict_fields(v: Verdict) -> dict[str, object]:
    return {
        "classification": v.kind,
        "reason": v.reason,
        "description": v.description,
        "code": v.code,
        "rule": v.rule,
        "rule_source": v.source,
    }


def ok(now: float, cid: str, *, waiting: bool = False, carrier: str = CARRIER) -> SubmitResult:
    return SubmitResult(
        now=now,
        carrier=carrier,
        status=0,
        carrier_message_id=cid,
        verdict=None,
        sender_waiting=waiting,
    )


def failed(
    now: float,
    status: int,
    v: Verdict,
    *,
    waiting: bool = False,
    rand: float = 0.5,
    tz: dt.tzinfo | None = None,
) -> SubmitResult:
    return SubmitResult(
        now=now,
        carrier=CARRIER,
        status=status,
        carrier_message_id="",
        verdict=v,
        sender_waiting=waiting,
        rand=rand,
        tz=tz,
    )


def receipt(
    now: float,
    attempt: int,
    v: Verdict,
    *,
    stat: str | None = None,
    err: str = "000",
    rand: float = 0.5,
    tz: dt.tzinfo | None = None,
    flagged: bool = False,
) -> ReceiptIn:
    if stat is None:
        stat = {"delivered": "DELIVRD", "pending": "ENROUTE"}.get(v.kind, "UNDELIV")
    return ReceiptIn(
        now=now, attempt=attempt, verdict=v, stat=stat, err=err, rand=rand, tz=tz, flagged=flagged
    )


def drive(
    msg: Message, events: Sequence[Event], policy: Policy = POLICY
) -> tuple[Message, list[list[Action]]]:
    out: list[list[Action]] = []
    for ev in events:
        msg, actions = decide(msg, ev, policy)
        out.append(actions)
    return msg, out


def final_receipts(actions: Sequence[Action]) -> list[SenderReceipt]:
    return [a for a in actions if isinstance(a, SenderReceipt) and not a.intermediate]


def intermediates(actions: Sequence[Action]) -> list[SenderReceipt]:
    return [a for a in actions if isinstance(a, SenderReceipt) and a.intermediate]


def published(actions: Sequence[Action]) -> list[str]:
    return [a.event for a in actions if isinstance(a, Publish)]


def publish(actions: Sequence[Action], name: str) -> Publish:
    found = [a for a in actions if isinstance(a, Publish) and a.event == name]
    assert len(found) == 1, actions
    return found[0]


def at_attempt(n: int, rd: int = 1, policy: Policy = POLICY, **changes: Any) -> Message:
    """A message whose attempt `n` the carrier accepted as C<n>; earlier ones soft-bounced."""
    msg = make(registered_delivery=rd, **changes)
    now = NOW
    msg, _ = decide(msg, Dispatch(now), policy)
    for k in range(1, n + 1):
        msg, _ = decide(msg, ok(now + 1, f"C{k}"), policy)
        assert msg.state == State.SUBMITTED and msg.attempts == k
        if k == n:
            break
        msg, _ = decide(msg, receipt(now + 10, k, soft("absent_subscriber"), err="001"), policy)
        assert msg.state == State.HELD and msg.next_attempt_at is not None
        now = msg.next_attempt_at
        msg, _ = decide(msg, Due(now), policy)
        assert msg.state == State.SUBMITTING
    return msg


def held_at(n: int, rd: int = 1, **changes: Any) -> Message:
    """Attempt `n` soft-bounced (absent subscriber, err 001) and is held."""
    msg = at_attempt(n, rd, **changes)
    msg, _ = decide(
        msg, receipt(msg.updated_at + 10, n, soft("absent_subscriber"), err="001"), POLICY
    )
    assert msg.state == State.HELD
    return msg


def submitting_at(n: int, rd: int = 1, **changes: Any) -> Message:
    """Attempt `n` was handed upstream and the carrier has not answered yet."""
    msg = held_at(n - 1, rd, **changes)
    assert msg.next_attempt_at is not None
    msg, actions = decide(msg, Due(msg.next_attempt_at), POLICY)
    assert actions == [Submit(n)]
    return msg


def finished(state: State) -> Message:
    """A message already in the final `state` (reached the normal way)."""
    if state == State.DELIVERED:
        msg, _ = decide(at_attempt(1), receipt(NOW + 20, 1, DELIVERED), POLICY)
    elif state == State.FAILED:
        msg, _ = decide(at_attempt(1), receipt(NOW + 20, 1, hard("barred")), POLICY)
    elif state == State.EXPIRED:
        msg = make(deadline=NOW + 5, deadline_is_validity=True)
        msg, _ = decide(msg, Dispatch(NOW + 10), POLICY)
    elif state == State.CANCELLED:
        msg, _ = decide(at_attempt(1), Cancel(NOW + 20), POLICY)
    else:
        msg = make(state=State.SUBMITTING, attempts=1)
        msg, _ = decide(msg, failed(NOW + 1, 0x0B, hard("invalid_address"), waiting=True), POLICY)
    assert msg.state == state
    return msg


# ---------------------------------------------------------------- dispatch


@pytest.mark.parametrize(
    ("state", "attempts"), [(State.ACCEPTED, 0), (State.HELD, 1), (State.HELD, 4)]
)
def test_dispatch_starts_the_next_attempt(state: State, attempts: int) -> None:
    msg = make(state=state, attempts=attempts, next_attempt_at=NOW if state == State.HELD else None)
    new, actions = decide(msg, Dispatch(NOW + 1), POLICY)
    assert new.state == State.SUBMITTING
    assert new.attempts == attempts + 1
    assert new.next_attempt_at is None
    assert new.updated_at == NOW + 1
    assert actions == [Submit(attempts + 1)]


@pytest.mark.parametrize("state", [State.SUBMITTING, State.SUBMITTED, *sorted(FINAL_STATES)])
def test_dispatch_is_ignored_elsewhere(state: State) -> None:
    msg = make(state=state, attempts=1)
    assert decide(msg, Dispatch(NOW), POLICY) == (msg, [])


@pytest.mark.parametrize(
    ("is_validity", "state", "stat"),
    [(True, State.EXPIRED, "EXPIRED"), (False, State.FAILED, "UNDELIV")],
)
def test_dispatch_after_the_deadline_ends_the_message(
    is_validity: bool, state: State, stat: str
) -> None:
    msg = make(deadline=NOW + 60, deadline_is_validity=is_validity)
    new, actions = decide(msg, Dispatch(NOW + 60), POLICY)
    assert new.state == state
    assert new.attempts == 0
    assert not any(isinstance(a, Submit) for a in actions)
    assert final_receipts(actions) == [SenderReceipt(stat, "000", NOW + 60)]
    assert publish(actions, "expired").fields["why"] == ("validity" if is_validity else "age")


# ---------------------------------------------------------------- submit results


@pytest.mark.parametrize(
    ("attempt", "waiting", "name"),
    [
        (1, True, "submitted"),
        (1, False, "submitted"),
        (2, False, "resubmitted"),
        (5, False, "resubmitted"),
    ],
)
def test_submit_accepted(attempt: int, waiting: bool, name: str) -> None:
    msg = make(state=State.SUBMITTING, attempts=attempt, carrier="old", carrier_message_id="OLD")
    new, actions = decide(msg, ok(NOW + 1, "C-77", waiting=waiting, carrier="beta"), POLICY)
    assert new.state == State.SUBMITTED
    assert new.carrier == "beta"
    assert new.carrier_message_id == "C-77"
    assert new.attempts == attempt
    assert new.next_attempt_at == DEADLINE + POLICY.receipt_grace
    expected: list[Action] = [AnswerSender(0)] if waiting else []
    expected.append(
        Publish(name, {"carrier": "beta", "carrier_message_id": "C-77", "attempt": attempt})
    )
    assert actions == expected


@pytest.mark.parametrize(
    ("waiting", "attempt", "rd", "state", "answer", "receipt_expected"),
    [
        (True, 1, 1, State.REJECTED, True, False),
        (True, 1, 2, State.REJECTED, True, False),
        (True, 1, 0, State.REJECTED, True, False),
        (False, 1, 1, State.FAILED, False, True),
        (False, 1, 2, State.FAILED, False, True),
        (False, 1, 0x11, State.FAILED, False, True),
        (False, 1, 0, State.FAILED, False, False),
        (False, 1, 0x10, State.FAILED, False, False),
        (False, 3, 1, State.FAILED, False, True),
        (False, 3, 0, State.FAILED, False, False),
    ],
)
def test_submit_refused_permanently(
    waiting: bool, attempt: int, rd: int, state: State, answer: bool, receipt_expected: bool
) -> None:
    msg = make(state=State.SUBMITTING, attempts=attempt, registered_delivery=rd)
    v = hard("invalid_address")
    new, actions = decide(msg, failed(NOW + 2, 0x0B, v, waiting=waiting), POLICY)
    assert new.state == state
    assert new.final_stat == "REJECTD"
    assert new.final_err == "00B"
    assert new.done_at == NOW + 2
    assert new.next_attempt_at is None
    assert new.verdict == v
    fields = verdict_fields(v) | {"carrier": CARRIER, "attempt": attempt, "status": 0x0B}
    assert publish(actions, "carrier_rejected").fields == fields
    assert [a for a in actions if isinstance(a, AnswerSender)] == (
        [AnswerSender(0x0B)] if answer else []
    )
    assert final_receipts(actions) == (
        [SenderReceipt("REJECTD", "00B", NOW + 2)] if receipt_expected else []
    )
    assert not intermediates(actions)
    assert not any(isinstance(a, Submit | SuppressNumber) for a in actions)


SOFT_SUBMIT = [
    ("throttled", 0x58, "058"),
    ("congestion", 0x14, "014"),
    ("timeout", 0x08, "008"),
    ("not_bound", 0x08, "008"),
    ("system_failure", 0x08, "008"),
]


@pytest.mark.parametrize("waiting", [True, False])
@pytest.mark.parametrize(("reason", "status", "err"), SOFT_SUBMIT)
def test_submit_refused_for_now(reason: str, status: int, err: str, waiting: bool) -> None:
    msg = make(state=State.SUBMITTING, attempts=1)
    v = soft(reason)
    new, actions = decide(msg, failed(NOW, status, v, waiting=waiting), POLICY)
    due = NOW + DEFAULT_SCHEDULES[reason].initial
    assert new.state == State.HELD
    assert new.next_attempt_at == due
    assert new.verdict == v
    assert new.retries_by_reason == ((reason, 1),)
    expected: list[Action] = [AnswerSender(0)] if waiting else []
    expected.append(
        Publish(
            "soft_bounce", verdict_fields(v) | {"attempt": 1, "next_attempt_at": due, "err": err}
        )
    )
    assert actions == expected


def test_throttling_is_retried_within_seconds() -> None:
    msg = make(state=State.SUBMITTING, attempts=1)
    new, _ = decide(msg, failed(NOW, 0x58, soft("throttled")), POLICY)
    assert new.next_attempt_at == NOW + 2.0


def test_soft_submit_failure_sends_an_intermediate_notice_when_asked() -> None:
    msg = make(state=State.SUBMITTING, attempts=1, registered_delivery=0x11)
    _, actions = decide(msg, failed(NOW, 0x14, soft("congestion")), POLICY)
    assert intermediates(actions) == [SenderReceipt("ENROUTE", "014", NOW, intermediate=True)]
    assert not final_receipts(actions)


def test_repeated_link_failures_send_one_intermediate_notice_per_reason() -> None:
    """Link failures repeat until the deadline; the sender is not told of each."""
    msg = make(registered_delivery=0x11)
    now = NOW
    msg, _ = decide(msg, Dispatch(now), POLICY)
    notices: list[SenderReceipt] = []
    for reason in ["timeout", "not_bound", "timeout", "not_bound", "timeout"] * 20:
        msg, actions = decide(msg, failed(now, 0x08, soft(reason)), POLICY)
        notices += intermediates(actions)
        assert msg.next_attempt_at is not None
        now = msg.next_attempt_at
        msg, _ = decide(msg, Due(now), POLICY)
    assert [n.stat for n in notices] == ["ENROUTE", "ENROUTE"]
    msg, actions = decide(msg, ok(now, "C1"), POLICY)
    msg, actions = decide(msg, receipt(now, msg.attempts, soft("absent_subscriber")), POLICY)
    assert len(intermediates(actions)) == 1  # a destination failure is told each time


@pytest.mark.parametrize("state", [State.ACCEPTED, State.SUBMITTED, State.HELD])
def test_submit_result_outside_submitting_is_ignored(state: State) -> None:
    msg = make(state=state, attempts=1, carrier=CARRIER, carrier_message_id="C1")
    assert decide(msg, ok(NOW, "C9"), POLICY) == (msg, [])
    assert decide(msg, failed(NOW, 0x0B, hard("invalid_address")), POLICY) == (msg, [])
    assert decide(msg, failed(NOW, 0x58, soft("throttled")), POLICY) == (msg, [])


# ---------------------------------------------------------------- receipts


@pytest.mark.parametrize(("rd", "count"), [(0, 0), (1, 1), (2, 0), (0x10, 0), (0x11, 1), (0x12, 0)])
def test_delivered_receipt(rd: int, count: int) -> None:
    msg = at_attempt(1, rd)
    new, actions = decide(msg, receipt(NOW + 30, 1, DELIVERED), POLICY)
    assert new.state == State.DELIVERED
    assert new.final_stat == "DELIVRD"
    assert new.final_err == "000"
    assert new.done_at == NOW + 30
    assert final_receipts(actions) == [SenderReceipt("DELIVRD", "000", NOW + 30)] * count
    assert not intermediates(actions)
    fields = publish(actions, "delivered").fields
    assert fields["attempt"] == 1 and fields["attempts"] == 1 and fields["recovered"] is False
    assert not any(isinstance(a, CancelUpstream) for a in actions)


def test_delivered_after_retries_is_marked_recovered() -> None:
    msg = at_attempt(3)
    new, actions = decide(msg, receipt(msg.updated_at + 5, 3, DELIVERED), POLICY)
    assert new.state == State.DELIVERED
    fields = publish(actions, "delivered").fields
    assert fields["recovered"] is True and fields["attempts"] == 3
    assert len(final_receipts(actions)) == 1


HARD_REASONS = [
    ("unknown_subscriber", True),
    ("invalid_address", True),
    ("not_sms_equipped", True),
    ("illegal_subscriber", True),
    ("illegal_equipment", True),
    ("not_provisioned", True),
    ("barred", False),
    ("content", False),
    ("rejected", False),
    ("carrier_permanent", False),
]


def test_suppress_reasons_table_is_complete() -> None:
    assert {r for r, s in HARD_REASONS if s} == set(SUPPRESS_REASONS)


@pytest.mark.parametrize("rd", [0, 1, 2, 0x10, 0x12])
@pytest.mark.parametrize(("reason", "suppress"), HARD_REASONS)
def test_hard_receipt(reason: str, suppress: bool, rd: int) -> None:
    msg = at_attempt(2, rd)
    now = msg.updated_at + 40
    v = hard(reason)
    new, actions = decide(msg, receipt(now, 2, v, err="001"), POLICY)
    assert new.state == State.FAILED
    assert (new.final_stat, new.final_err, new.done_at) == ("UNDELIV", "001", now)
    assert new.verdict == v
    wanted = rd & 3 in (1, 2)
    assert final_receipts(actions) == ([SenderReceipt("UNDELIV", "001", now)] if wanted else [])
    assert not intermediates(actions)
    suppressions = [a for a in actions if isinstance(a, SuppressNumber)]
    assert suppressions == ([SuppressNumber("447700900123", reason)] if suppress else [])
    assert publish(actions, "hard_bounce").fields == verdict_fields(v) | {
        "attempt": 2,
        "err": "001",
    }
    assert not any(isinstance(a, Submit | CancelUpstream) for a in actions)


@pytest.mark.parametrize(
    ("stat", "expected"),
    [
        ("UNDELIV", "UNDELIV"),
        ("REJECTD", "REJECTD"),
        ("DELETED", "DELETED"),
        ("UNKNOWN", "UNDELIV"),
    ],
)
def test_hard_receipt_keeps_a_failure_stat(stat: str, expected: str) -> None:
    new, actions = decide(
        at_attempt(1), receipt(NOW + 50, 1, hard("barred"), stat=stat, err="00D"), POLICY
    )
    assert new.final_stat == expected
    assert final_receipts(actions) == [SenderReceipt(expected, "00D", NOW + 50)]


@pytest.mark.parametrize(
    ("rd", "notice"), [(0, False), (1, False), (2, False), (0x10, True), (0x11, True)]
)
@pytest.mark.parametrize(
    "reason",
    ["absent_subscriber", "memory_full", "network", "subscriber_busy", "expired", "congestion"],
)
def test_soft_receipt_holds(reason: str, rd: int, notice: bool) -> None:
    msg = at_attempt(1, rd)
    now = NOW + 100
    v = soft(reason)
    new, actions = decide(msg, receipt(now, 1, v, err="006"), POLICY)
    due = now + POLICY.schedule(reason).delay(1)
    assert new.state == State.HELD
    assert new.next_attempt_at == due
    assert new.final_err == "006"
    assert new.verdict == v
    assert new.done_at is None
    assert not final_receipts(actions)
    assert intermediates(actions) == (
        [SenderReceipt("ENROUTE", "006", now, intermediate=True)] if notice else []
    )
    fields = publish(actions, "soft_bounce").fields
    assert fields["reason"] == reason
    assert fields["code"] == f"test:{reason}"
    assert fields["next_attempt_at"] == due
    assert fields["attempt"] == 1
    assert fields["err"] == "006"
    assert not any(isinstance(a, Submit | SuppressNumber | CancelUpstream) for a in actions)


@pytest.mark.parametrize("v", [ENROUTE, ACCEPTD])
@pytest.mark.parametrize(("rd", "notice"), [(0, False), (1, False), (2, False), (0x11, True)])
def test_pending_receipt_changes_nothing(v: Verdict, rd: int, notice: bool) -> None:
    msg = at_attempt(1, rd)
    stat = "ENROUTE" if v is ENROUTE else "ACCEPTD"
    new, actions = decide(msg, receipt(NOW + 5, 1, v, stat=stat), POLICY)
    assert new == msg
    assert actions == ([SenderReceipt(stat, "000", NOW + 5, intermediate=True)] if notice else [])


# ---------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    ("schedule", "n", "delay"),
    [
        (Schedule(2, 2, 60), 0, 2.0),
        (Schedule(2, 2, 60), 1, 2.0),
        (Schedule(2, 2, 60), 2, 4.0),
        (Schedule(2, 2, 60), 5, 32.0),
        (Schedule(2, 2, 60), 6, 60.0),
        (Schedule(2, 2, 60), 40, 60.0),
        (Schedule(600, 3, 14400), 3, 5400.0),
        (Schedule(10, 1, 10), 9, 10.0),
    ],
)
def test_schedule_delay(schedule: Schedule, n: int, delay: float) -> None:
    assert schedule.delay(n) == delay


def test_unknown_reason_uses_the_fallback_schedule() -> None:
    assert POLICY.schedule("no_such_reason") == FALLBACK_SCHEDULE
    assert POLICY.schedule("throttled") == DEFAULT_SCHEDULES["throttled"]


@pytest.mark.parametrize(
    ("jitter", "rand", "factor"),
    [
        (0.2, 0.5, 1.0),
        (0.2, 0.0, 0.8),
        (0.2, 0.75, 1.1),
        (0.5, 0.0, 0.5),
        (0.0, 0.0, 1.0),
        (0.0, 0.99, 1.0),
    ],
)
def test_jitter(jitter: float, rand: float, factor: float) -> None:
    policy = Policy(jitter=jitter)
    msg = at_attempt(1, policy=policy)
    new, _ = decide(msg, receipt(NOW, 1, soft("absent_subscriber"), rand=rand), policy)
    assert new.next_attempt_at == pytest.approx(NOW + 600.0 * factor)


@settings(max_examples=100, deadline=None)
@given(
    jitter=st.floats(min_value=0.0, max_value=0.9),
    rand=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_jitter_stays_within_its_fraction(jitter: float, rand: float) -> None:
    policy = Policy(jitter=jitter)
    msg = at_attempt(1, policy=policy)
    new, _ = decide(msg, receipt(NOW, 1, soft("absent_subscriber"), rand=rand), policy)
    assert new.next_attempt_at is not None
    delay = new.next_attempt_at - NOW
    assert 600.0 * (1 - jitter) - 1e-6 <= delay <= 600.0 * (1 + jitter) + 1e-6


def test_backoff_grows_per_reason() -> None:
    msg = make()
    now = NOW
    msg, _ = decide(msg, Dispatch(now), POLICY)
    delays: list[float] = []
    reasons = ["absent_subscriber", "absent_subscriber", "network", "absent_subscriber", "network"]
    for k, reason in enumerate(reasons, start=1):
        msg, _ = decide(msg, ok(now, f"C{k}"), POLICY)
        msg, _ = decide(msg, receipt(now, k, soft(reason)), POLICY)
        assert msg.state == State.HELD and msg.next_attempt_at is not None
        delays.append(msg.next_attempt_at - now)
        now = msg.next_attempt_at
        msg, actions = decide(msg, Due(now), POLICY)
        assert actions == [Submit(k + 1)]
    assert delays == [600.0, 1200.0, 60.0, 2400.0, 120.0]
    assert msg.retries_by_reason == (("absent_subscriber", 3), ("network", 2))


@pytest.mark.parametrize(
    ("is_validity", "state", "stat", "why"),
    [(True, State.EXPIRED, "EXPIRED", "validity"), (False, State.FAILED, "UNDELIV", "age")],
)
def test_held_no_later_than_the_deadline_then_ended(
    is_validity: bool, state: State, stat: str, why: str
) -> None:
    msg = at_attempt(1, deadline=NOW + 300, deadline_is_validity=is_validity)
    msg, actions = decide(msg, receipt(NOW + 100, 1, soft("absent_subscriber"), err="001"), POLICY)
    assert msg.state == State.HELD
    assert msg.next_attempt_at == NOW + 300  # the schedule said +600
    assert publish(actions, "soft_bounce").fields["next_attempt_at"] == NOW + 300
    assert decide(msg, Due(NOW + 299), POLICY) == (msg, [])
    new, actions = decide(msg, Due(NOW + 300), POLICY)
    assert new.state == state
    assert (new.final_stat, new.final_err) == (stat, "001")
    assert final_receipts(actions) == [SenderReceipt(stat, "001", NOW + 300)]
    assert not any(isinstance(a, Submit) for a in actions)
    fields = publish(actions, "expired").fields
    assert (
        fields["why"] == why and fields["attempts"] == 1 and fields["reason"] == "absent_subscriber"
    )


def test_an_expired_verdict_under_max_age_reports_expired() -> None:
    msg = at_attempt(1, deadline=NOW + 300, deadline_is_validity=False)
    msg, _ = decide(msg, receipt(NOW + 100, 1, soft("expired"), stat="EXPIRED", err="000"), POLICY)
    new, actions = decide(msg, Due(NOW + 300), POLICY)
    assert new.state == State.EXPIRED
    assert final_receipts(actions) == [SenderReceipt("EXPIRED", "000", NOW + 300)]


@pytest.mark.parametrize("max_attempts", [1, 2, 4])
def test_max_attempts_for_destination_reasons(max_attempts: int) -> None:
    policy = Policy(max_attempts=max_attempts)
    msg = make()
    now = NOW
    msg, _ = decide(msg, Dispatch(now), policy)
    for k in range(1, max_attempts + 1):
        msg, _ = decide(msg, ok(now, f"C{k}"), policy)
        msg, actions = decide(msg, receipt(now, k, soft("absent_subscriber"), err="001"), policy)
        if k < max_attempts:
            assert msg.state == State.HELD and msg.next_attempt_at is not None
            now = msg.next_attempt_at
            msg, _ = decide(msg, Due(now), policy)
    assert msg.state == State.FAILED
    assert msg.attempts == max_attempts
    assert final_receipts(actions) == [SenderReceipt("UNDELIV", "001", now)]
    assert publish(actions, "expired").fields["why"] == "attempts"
    assert "soft_bounce" not in published(actions)


@pytest.mark.parametrize("reason", sorted(LINK_REASONS))
def test_link_reasons_do_not_count_as_attempts(reason: str) -> None:
    policy = Policy(max_attempts=2)
    msg = make()
    now = NOW
    msg, _ = decide(msg, Dispatch(now), policy)
    for _ in range(20):
        msg, _ = decide(msg, failed(now, 0x58, soft(reason)), policy)
        assert msg.state == State.HELD and msg.next_attempt_at is not None
        now = msg.next_attempt_at
        msg, _ = decide(msg, Due(now), policy)
        assert msg.state == State.SUBMITTING
    assert msg.attempts == 21
    # The destination itself may still be tried max_attempts times.
    msg, _ = decide(msg, ok(now, "C21"), policy)
    msg, _ = decide(msg, receipt(now, 21, soft("absent_subscriber")), policy)
    assert msg.state == State.HELD
    assert msg.next_attempt_at is not None
    now = msg.next_attempt_at
    msg, _ = decide(msg, Due(now), policy)
    msg, _ = decide(msg, ok(now, "C22"), policy)
    msg, actions = decide(msg, receipt(now, 22, soft("absent_subscriber")), policy)
    assert msg.state == State.FAILED
    assert publish(actions, "expired").fields["why"] == "attempts"


@pytest.mark.parametrize(
    ("is_validity", "state", "stat", "why"),
    [(True, State.EXPIRED, "EXPIRED", "validity"), (False, State.FAILED, "UNDELIV", "age")],
)
@pytest.mark.parametrize(
    ("reason", "via"), [(r, "submit") for r in sorted(LINK_REASONS)] + [("congestion", "receipt")]
)
def test_link_failures_never_end_a_message_before_its_deadline(
    reason: str, via: str, is_validity: bool, state: State, stat: str, why: str
) -> None:
    """A carrier that keeps failing (a flapping link) says nothing about the number:
    hundreds of link failures keep the message held, each retry spaced by the reason's
    schedule and none later than the deadline, where it ends as the deadline says."""
    policy = Policy(max_attempts=1, jitter=0.0)
    schedule = policy.schedule(reason)
    deadline = NOW + 600 * schedule.max + 5.0  # room for 500 failures, and more
    msg = make(deadline=deadline, deadline_is_validity=is_validity, registered_delivery=0x11)
    now = NOW
    msg, _ = decide(msg, Dispatch(now), policy)
    failures = 0
    while True:
        if via == "submit":
            msg, actions = decide(msg, failed(now, 0x58, soft(reason)), policy)
        else:
            msg, _ = decide(msg, ok(now, f"C{msg.attempts}"), policy)
            msg, actions = decide(msg, receipt(now, msg.attempts, soft(reason), err="058"), policy)
        failures += 1
        assert msg.state == State.HELD, f"ended after {failures} link failures"
        assert final_receipts(actions) == []
        assert msg.next_attempt_at is not None
        assert msg.next_attempt_at == min(now + schedule.delay(failures), deadline)
        now = msg.next_attempt_at
        if now >= deadline:
            break
        msg, actions = decide(msg, Due(now), policy)
        assert actions == [Submit(msg.attempts)]
    assert failures > 500
    assert msg.retries_for(reason) == failures
    new, actions = decide(msg, Due(deadline), policy)
    assert new.state == state
    assert final_receipts(actions) == [SenderReceipt(stat, "058", deadline)]
    assert publish(actions, "expired").fields["why"] == why


@pytest.mark.parametrize("reason", sorted(LINK_REASONS))
def test_link_failures_back_off_on_their_reasons_schedule(reason: str) -> None:
    policy = Policy(jitter=0.0)
    msg = make()
    now = NOW
    msg, _ = decide(msg, Dispatch(now), policy)
    delays: list[float] = []
    for _ in range(12):
        msg, _ = decide(msg, failed(now, 0x58, soft(reason)), policy)
        assert msg.next_attempt_at is not None
        delays.append(msg.next_attempt_at - now)
        now = msg.next_attempt_at
        msg, _ = decide(msg, Due(now), policy)
    s = DEFAULT_SCHEDULES[reason]
    assert delays == [min(s.initial * s.factor**k, s.max) for k in range(12)]
    assert delays[-1] == s.max


def test_schedule_delay_after_thousands_of_retries_is_the_cap() -> None:
    # factor ** n overflows a float past n = 1024 with factor 2.
    assert Schedule(2.0, 2.0, 60.0).delay(5000) == 60.0
    assert Schedule(2.0, 1.0, 60.0).delay(5000) == 2.0


def test_a_link_failure_after_the_deadline_ends_at_the_next_timer() -> None:
    msg = make(deadline=NOW + 10, deadline_is_validity=True)
    msg, _ = decide(msg, Dispatch(NOW), POLICY)
    msg, actions = decide(msg, failed(NOW + 20, 0x08, soft("not_bound")), POLICY)
    assert msg.state == State.HELD and msg.next_attempt_at == NOW + 10
    new, actions = decide(msg, Due(NOW + 20), POLICY)
    assert new.state == State.EXPIRED
    assert publish(actions, "expired").fields["why"] == "validity"


def test_an_explicit_max_retries_still_caps_a_link_reason() -> None:
    """A classification rule that says `max_retries` is the operator's own bound."""
    msg = make()
    now = NOW
    msg, _ = decide(msg, Dispatch(now), POLICY)
    for _ in range(2):
        msg, _ = decide(msg, failed(now, 0x58, soft("throttled", max_retries=2)), POLICY)
        assert msg.state == State.HELD and msg.next_attempt_at is not None
        now = msg.next_attempt_at
        msg, _ = decide(msg, Due(now), POLICY)
    msg, actions = decide(msg, failed(now, 0x58, soft("throttled", max_retries=2)), POLICY)
    assert msg.state == State.FAILED
    assert final_receipts(actions) == [SenderReceipt("UNDELIV", "058", now)]


@pytest.mark.parametrize("cap", [0, 1, 2])
def test_per_verdict_max_retries(cap: int) -> None:
    msg = make()
    now = NOW
    msg, _ = decide(msg, Dispatch(now), POLICY)
    for k in range(1, cap + 2):
        msg, _ = decide(msg, ok(now, f"C{k}"), POLICY)
        msg, actions = decide(
            msg, receipt(now, k, soft("network", max_retries=cap), err="022"), POLICY
        )
        if k <= cap:
            assert msg.state == State.HELD and msg.next_attempt_at is not None
            now = msg.next_attempt_at
            msg, _ = decide(msg, Due(now), POLICY)
    assert msg.state == State.FAILED
    assert msg.attempts == cap + 1
    assert final_receipts(actions) == [SenderReceipt("UNDELIV", "022", now)]


# ---------------------------------------------------------------- flagged numbers


def test_flagged_number_stops_retries_when_the_policy_says_so() -> None:
    policy = Policy(flag_stops_retries=True)
    msg = at_attempt(1, policy=policy)
    new, actions = decide(
        msg, receipt(NOW + 9, 1, soft("absent_subscriber"), err="001", flagged=True), policy
    )
    assert new.state == State.FAILED
    assert final_receipts(actions) == [SenderReceipt("UNDELIV", "001", NOW + 9)]
    assert publish(actions, "expired").fields["why"] == "flagged"


def test_flagged_number_is_retried_when_the_policy_allows() -> None:
    msg = at_attempt(1)
    new, actions = decide(msg, receipt(NOW + 9, 1, soft("absent_subscriber"), flagged=True), POLICY)
    assert new.state == State.HELD
    assert not final_receipts(actions)


def test_flag_does_not_spoil_a_delivery() -> None:
    policy = Policy(flag_stops_retries=True)
    new, actions = decide(
        at_attempt(1, policy=policy), receipt(NOW + 9, 1, DELIVERED, flagged=True), policy
    )
    assert new.state == State.DELIVERED
    assert final_receipts(actions) == [SenderReceipt("DELIVRD", "000", NOW + 9)]


# ---------------------------------------------------------------- late and duplicate receipts


def test_late_delivery_of_an_old_attempt_cancels_the_one_in_flight() -> None:
    msg = at_attempt(2)
    assert msg.carrier_message_id == "C2"
    now = msg.updated_at + 5
    new, actions = decide(msg, receipt(now, 1, DELIVERED), POLICY)
    assert new.state == State.DELIVERED
    assert [a for a in actions if isinstance(a, CancelUpstream)] == [CancelUpstream(CARRIER, "C2")]
    assert final_receipts(actions) == [SenderReceipt("DELIVRD", "000", now)]
    fields = publish(actions, "delivered").fields
    assert fields["attempt"] == 1 and fields["attempts"] == 2


def test_late_delivery_while_held_ends_delivered_without_cancel() -> None:
    msg = held_at(2)
    new, actions = decide(msg, receipt(msg.updated_at + 5, 1, DELIVERED), POLICY)
    assert new.state == State.DELIVERED
    assert new.next_attempt_at is None
    assert not any(isinstance(a, CancelUpstream | Submit) for a in actions)
    assert len(final_receipts(actions)) == 1


def test_late_delivery_while_the_next_attempt_awaits_the_carrier() -> None:
    """Attempt 1 delivers late while attempt 2 is on its way to the carrier.

    C1 (the attempt that delivered) must not be cancelled; attempt 2 has no
    carrier id yet, so it has to be cancelled once the carrier accepts it.
    """
    msg = submitting_at(2)
    now = msg.updated_at + 1
    msg, actions = decide(msg, receipt(now, 1, DELIVERED), POLICY)
    assert msg.state == State.DELIVERED
    assert final_receipts(actions) == [SenderReceipt("DELIVRD", "000", now)]
    assert [a for a in actions if isinstance(a, CancelUpstream)] == []
    msg2, actions = decide(msg, ok(now + 1, "C2"), POLICY)
    assert msg2 == msg
    assert actions == [CancelUpstream(CARRIER, "C2")]


@pytest.mark.parametrize("v", [soft("absent_subscriber"), hard("unknown_subscriber"), ENROUTE])
@pytest.mark.parametrize("where", ["submitted", "held", "submitting"])
def test_late_failure_or_progress_for_an_old_attempt_changes_nothing(
    v: Verdict, where: str
) -> None:
    msg = {"submitted": at_attempt, "held": held_at, "submitting": submitting_at}[where](3, 0x11)
    assert decide(msg, receipt(msg.updated_at + 1, 2, v), POLICY) == (msg, [])
    assert decide(msg, receipt(msg.updated_at + 1, 1, v), POLICY) == (msg, [])


@pytest.mark.parametrize("v", [soft("absent_subscriber"), hard("unknown_subscriber")])
def test_second_failure_for_the_held_attempt_changes_nothing(v: Verdict) -> None:
    msg = held_at(2)
    assert decide(msg, receipt(msg.updated_at + 1, 2, v), POLICY) == (msg, [])


@pytest.mark.parametrize(
    "v", [DELIVERED, ENROUTE, soft("absent_subscriber"), hard("unknown_subscriber")]
)
@pytest.mark.parametrize("state", sorted(FINAL_STATES))
@pytest.mark.parametrize("attempt", [1, 2])
def test_any_receipt_after_the_end_changes_nothing(v: Verdict, state: State, attempt: int) -> None:
    msg = finished(state)
    assert decide(msg, receipt(NOW + 999, attempt, v), POLICY) == (msg, [])


def test_duplicate_delivery_gives_one_receipt() -> None:
    msg, out = drive(
        at_attempt(1), [receipt(NOW + 5, 1, DELIVERED), receipt(NOW + 6, 1, DELIVERED)]
    )
    assert msg.done_at == NOW + 5
    assert len(final_receipts(out[0])) == 1
    assert out[1] == []


@pytest.mark.parametrize("state", sorted(FINAL_STATES))
@pytest.mark.parametrize("kind", ["dispatch", "due", "alert", "cancel", "submit_fail"])
def test_other_events_after_the_end_change_nothing(state: State, kind: str) -> None:
    msg = finished(state)
    events: dict[str, Event] = {
        "dispatch": Dispatch(NOW + 5 * DAY),
        "due": Due(NOW + 5 * DAY),
        "alert": Alert(NOW + 5 * DAY),
        "cancel": Cancel(NOW + 5 * DAY),
        "submit_fail": failed(NOW + 5 * DAY, 0x58, soft("throttled")),
    }
    assert decide(msg, events[kind], POLICY) == (msg, [])


# ---------------------------------------------------------------- quiet hours

NIGHT = (dt.time(21, 0), dt.time(8, 0))


def local_ts(tz: dt.tzinfo, *fields: int, fold: int = 0) -> float:
    """Epoch seconds of a wall-clock time (year, month, day, hour, minute[, second]) in `tz`."""
    year, month, day, hour, minute, *rest = fields
    second = rest[0] if rest else 0
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=tz, fold=fold).timestamp()


def in_window(ts: float, tz: dt.tzinfo, start: dt.time, end: dt.time) -> bool:
    t = dt.datetime.fromtimestamp(ts, tz).time()
    return (start <= t or t < end) if start > end else (start <= t < end)


@pytest.mark.parametrize(
    ("tz", "start", "end"),
    [(None, *NIGHT), (PARIS, None, NIGHT[1]), (PARIS, NIGHT[0], None), (PARIS, NIGHT[0], NIGHT[0])],
)
def test_quiet_adjust_off(tz: dt.tzinfo | None, start: dt.time | None, end: dt.time | None) -> None:
    when = local_ts(PARIS, 2025, 1, 15, 23, 0)
    assert quiet_adjust(when, tz, start, end) == when


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ((2025, 1, 15, 20, 59, 59), None),
        ((2025, 1, 15, 21, 0, 0), (2025, 1, 16, 8, 0, 0)),
        ((2025, 1, 15, 23, 30, 0), (2025, 1, 16, 8, 0, 0)),
        ((2025, 1, 16, 0, 0, 0), (2025, 1, 16, 8, 0, 0)),
        ((2025, 1, 16, 7, 59, 59), (2025, 1, 16, 8, 0, 0)),
        ((2025, 1, 16, 8, 0, 0), None),
        ((2025, 1, 16, 12, 0, 0), None),
        ((2025, 12, 31, 22, 0, 0), (2026, 1, 1, 8, 0, 0)),
    ],
)
def test_quiet_adjust_wrapping_window(
    local: tuple[int, ...], expected: tuple[int, ...] | None
) -> None:
    when = local_ts(PARIS, *local)
    want = when if expected is None else local_ts(PARIS, *expected)
    assert quiet_adjust(when, PARIS, *NIGHT) == want


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ((2025, 1, 15, 11, 59), None),
        ((2025, 1, 15, 12, 0), (2025, 1, 15, 14, 0)),
        ((2025, 1, 15, 13, 30), (2025, 1, 15, 14, 0)),
        ((2025, 1, 15, 14, 0), None),
        ((2025, 1, 15, 23, 0), None),
    ],
)
def test_quiet_adjust_daytime_window(
    local: tuple[int, ...], expected: tuple[int, ...] | None
) -> None:
    when = local_ts(NEW_YORK, *local)
    want = when if expected is None else local_ts(NEW_YORK, *expected)
    assert quiet_adjust(when, NEW_YORK, dt.time(12, 0), dt.time(14, 0)) == want


@pytest.mark.parametrize(
    ("tz", "night", "morning", "hours"),
    [
        (BERLIN, (2025, 3, 29, 23, 0), (2025, 3, 30, 8, 0), 8.0),  # clocks go forward
        (BERLIN, (2025, 10, 25, 23, 0), (2025, 10, 26, 8, 0), 10.0),  # clocks go back
        (NEW_YORK, (2025, 3, 8, 22, 0), (2025, 3, 9, 8, 0), 9.0),
        (NEW_YORK, (2025, 11, 1, 22, 0), (2025, 11, 2, 8, 0), 11.0),
        (NEW_YORK, (2025, 11, 2, 1, 30), (2025, 11, 2, 8, 0), 7.5),  # first 01:30 (EDT)
    ],
)
def test_quiet_adjust_on_dst_change_days(
    tz: ZoneInfo, night: tuple[int, ...], morning: tuple[int, ...], hours: float
) -> None:
    when = local_ts(tz, *night)
    got = quiet_adjust(when, tz, *NIGHT)
    assert got == local_ts(tz, *morning)
    assert got - when == hours * 3600
    assert dt.datetime.fromtimestamp(got, tz).time() == dt.time(8, 0)


def test_quiet_adjust_second_pass_of_a_repeated_hour() -> None:
    """01:30 EST (the second 01:30 of the fall-back night) is still night: 08:00 EST."""
    when = local_ts(NEW_YORK, 2025, 11, 2, 1, 30, fold=1)
    assert quiet_adjust(when, NEW_YORK, *NIGHT) == local_ts(NEW_YORK, 2025, 11, 2, 8, 0)


def test_quiet_window_ending_in_the_skipped_hour() -> None:
    # Berlin skips 02:00–03:00 on 2025-03-30; a window ending at 02:30 ends at 03:00 at the latest.
    start, end = dt.time(22, 0), dt.time(2, 30)
    when = local_ts(BERLIN, 2025, 3, 30, 1, 30)
    got = quiet_adjust(when, BERLIN, start, end)
    assert got >= when
    assert not in_window(got, BERLIN, start, end)
    assert got <= local_ts(BERLIN, 2025, 3, 30, 3, 30)


def test_quiet_window_ending_in_the_repeated_hour() -> None:
    """Berlin repeats 02:00–03:00 on 2025-10-26. At the second 02:15 (CET) a window
    ending at 02:30 still has a quarter of an hour to run: the retry belongs at
    02:30 CET, not at 02:15 inside the window."""
    start, end = dt.time(22, 0), dt.time(2, 30)
    when = local_ts(BERLIN, 2025, 10, 26, 2, 15, fold=1)
    got = quiet_adjust(when, BERLIN, start, end)
    assert not in_window(got, BERLIN, start, end)
    assert got == local_ts(BERLIN, 2025, 10, 26, 2, 30, fold=1)


QUIET_ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Sao_Paulo",
    "UTC",
]
WINDOWS = [((21, 0), (8, 0)), ((22, 30), (7, 0)), ((12, 0), (14, 0)), ((0, 0), (6, 0))]


@settings(max_examples=400, deadline=None)
@given(
    when=st.floats(min_value=1_704_067_200.0, max_value=1_798_761_600.0),  # 2024–2026
    zone=st.sampled_from(QUIET_ZONES),
    window=st.sampled_from(WINDOWS),
)
def test_quiet_adjust_properties(
    when: float, zone: str, window: tuple[tuple[int, int], tuple[int, int]]
) -> None:
    tz = ZoneInfo(zone)
    start, end = dt.time(*window[0]), dt.time(*window[1])
    got = quiet_adjust(when, tz, start, end)
    assert got >= when
    assert not in_window(got, tz, start, end)
    if not in_window(when, tz, start, end):
        assert got == when
    else:
        assert dt.datetime.fromtimestamp(got, tz).time() == end
    length = (
        dt.datetime.combine(dt.date(2025, 1, 1), end)
        - dt.datetime.combine(dt.date(2025, 1, 1), start)
    ).seconds
    assert got - when <= length + 3600
    assert quiet_adjust(got, tz, start, end) == got


def test_quiet_hours_move_a_night_retry_to_the_morning() -> None:
    policy = Policy(quiet_start=NIGHT[0], quiet_end=NIGHT[1], jitter=0.0)
    night = local_ts(PARIS, 2025, 6, 20, 22, 0)
    msg = at_attempt(1, policy=policy, deadline=night + 3 * DAY)
    new, actions = decide(msg, receipt(night, 1, soft("absent_subscriber"), tz=PARIS), policy)
    assert new.next_attempt_at == local_ts(PARIS, 2025, 6, 21, 8, 0)
    assert publish(actions, "soft_bounce").fields["next_attempt_at"] == new.next_attempt_at
    # No zone known: the schedule alone decides.
    new, _ = decide(msg, receipt(night, 1, soft("absent_subscriber")), policy)
    assert new.next_attempt_at == night + 600


def test_quiet_hours_apply_to_submit_failures_too() -> None:
    policy = Policy(quiet_start=NIGHT[0], quiet_end=NIGHT[1], jitter=0.0)
    evening = local_ts(PARIS, 2025, 6, 20, 20, 59, 59)
    msg = make(state=State.SUBMITTING, attempts=1, deadline=evening + DAY)
    new, _ = decide(msg, failed(evening, 0x58, soft("throttled"), tz=PARIS), policy)
    assert new.next_attempt_at == local_ts(PARIS, 2025, 6, 21, 8, 0)


def test_quiet_hours_never_push_past_the_deadline() -> None:
    policy = Policy(quiet_start=NIGHT[0], quiet_end=NIGHT[1], jitter=0.0)
    night = local_ts(PARIS, 2025, 6, 20, 22, 0)
    msg = at_attempt(1, policy=policy, deadline=night + 3600)
    new, _ = decide(msg, receipt(night, 1, soft("absent_subscriber"), tz=PARIS), policy)
    assert new.state == State.HELD
    assert new.next_attempt_at == night + 3600


# ---------------------------------------------------------------- alert, cancel, due


def test_alert_resubmits_a_held_message_at_once() -> None:
    msg = held_at(1)
    assert msg.next_attempt_at is not None
    now = msg.next_attempt_at - 500
    new, actions = decide(msg, Alert(now), POLICY)
    assert new.state == State.SUBMITTING
    assert new.attempts == 2
    assert new.next_attempt_at is None
    assert actions == [Submit(2)]


def test_alert_after_the_deadline_ends_the_message() -> None:
    msg = held_at(1, deadline=NOW + 200, deadline_is_validity=True)
    new, actions = decide(msg, Alert(NOW + 200), POLICY)
    assert new.state == State.EXPIRED
    assert not any(isinstance(a, Submit) for a in actions)
    assert len(final_receipts(actions)) == 1


@pytest.mark.parametrize("state", [State.ACCEPTED, State.SUBMITTING, State.SUBMITTED])
def test_alert_elsewhere_is_ignored(state: State) -> None:
    msg = make(state=state, attempts=0 if state == State.ACCEPTED else 1)
    assert decide(msg, Alert(NOW), POLICY) == (msg, [])


@pytest.mark.parametrize(
    ("where", "rd", "cancel_upstream", "receipt_expected"),
    [
        ("accepted", 1, None, True),
        ("accepted", 0, None, False),
        ("submitting1", 2, None, True),
        ("submitted", 1, "C1", True),
        ("submitted", 0, "C1", False),
        ("held", 1, None, True),
        ("submitted3", 0x12, "C3", True),
    ],
)
def test_cancel(where: str, rd: int, cancel_upstream: str | None, receipt_expected: bool) -> None:
    msg = {
        "accepted": lambda: make(registered_delivery=rd),
        "submitting1": lambda: make(registered_delivery=rd, state=State.SUBMITTING, attempts=1),
        "submitted": lambda: at_attempt(1, rd),
        "held": lambda: held_at(1, rd),
        "submitted3": lambda: at_attempt(3, rd),
    }[where]()
    now = NOW + 7 * 3600
    new, actions = decide(msg, Cancel(now), POLICY)
    assert new.state == State.CANCELLED
    assert (new.final_stat, new.done_at, new.next_attempt_at) == ("DELETED", now, None)
    cancels = [a for a in actions if isinstance(a, CancelUpstream)]
    assert cancels == ([CancelUpstream(CARRIER, cancel_upstream)] if cancel_upstream else [])
    assert final_receipts(actions) == (
        [SenderReceipt("DELETED", "000", now)] if receipt_expected else []
    )
    assert publish(actions, "cancelled").fields == {"attempts": msg.attempts}


def test_cancel_before_the_carrier_answers_cancels_once_it_does() -> None:
    msg = make(state=State.SUBMITTING, attempts=1)
    msg, actions = decide(msg, Cancel(NOW), POLICY)
    assert not any(isinstance(a, CancelUpstream) for a in actions)
    new, actions = decide(msg, ok(NOW + 1, "C1"), POLICY)
    assert new == msg
    assert actions == [CancelUpstream(CARRIER, "C1")]


def test_cancel_while_a_retry_awaits_the_carrier_names_no_finished_attempt() -> None:
    """Attempt 2 has no carrier id yet; C1 already ended, so there is nothing to cancel now."""
    msg = submitting_at(2)
    msg, actions = decide(msg, Cancel(msg.updated_at + 1), POLICY)
    assert msg.state == State.CANCELLED
    assert [a for a in actions if isinstance(a, CancelUpstream)] == []
    _, actions = decide(msg, ok(msg.updated_at + 2, "C2"), POLICY)
    assert actions == [CancelUpstream(CARRIER, "C2")]


@pytest.mark.parametrize(
    ("is_validity", "state", "stat", "why"),
    [(True, State.EXPIRED, "EXPIRED", "validity"), (False, State.FAILED, "UNDELIV", "age")],
)
def test_due_on_a_submitted_message_without_receipt(
    is_validity: bool, state: State, stat: str, why: str
) -> None:
    msg = at_attempt(1, deadline=NOW + 600, deadline_is_validity=is_validity)
    limit = NOW + 600 + POLICY.receipt_grace
    assert msg.next_attempt_at == limit
    assert decide(msg, Due(limit - 1), POLICY) == (msg, [])
    new, actions = decide(msg, Due(limit), POLICY)
    assert new.state == state
    assert final_receipts(actions) == [SenderReceipt(stat, "000", limit)]
    assert publish(actions, "expired").fields["why"] == why
    assert not any(isinstance(a, Submit | CancelUpstream) for a in actions)


def test_due_before_the_retry_time_waits() -> None:
    msg = held_at(1)
    assert msg.next_attempt_at is not None
    assert decide(msg, Due(msg.next_attempt_at - 0.5), POLICY) == (msg, [])
    new, actions = decide(msg, Due(msg.next_attempt_at), POLICY)
    assert actions == [Submit(2)]
    assert new.state == State.SUBMITTING


def test_due_on_an_accepted_message_dispatches_it() -> None:
    new, actions = decide(make(), Due(NOW), POLICY)
    assert new.state == State.SUBMITTING and actions == [Submit(1)]


def test_due_while_submitting_waits_for_the_carrier() -> None:
    msg = make(state=State.SUBMITTING, attempts=1)
    assert decide(msg, Due(NOW + 10 * DAY), POLICY) == (msg, [])


# ---------------------------------------------------------------- overdue receipts: query_sm

QUERYING = Policy(receipt_query_after={CARRIER: 600.0})


def submitted(policy: Policy = QUERYING, **changes: Any) -> Message:
    """Attempt 1 accepted by CARRIER as C1 at NOW + 1."""
    return at_attempt(1, policy=policy, **changes)


def test_a_submitted_message_is_first_checked_after_receipt_query_after() -> None:
    msg = submitted()
    assert msg.next_attempt_at == NOW + 1 + 600
    # Another carrier, or checks turned off: the message waits for the receipt grace.
    other = at_attempt(1, policy=Policy(receipt_query_after={"other": 600.0}))
    assert other.next_attempt_at == DEADLINE + POLICY.receipt_grace
    off = at_attempt(1, policy=Policy(receipt_query_after={CARRIER: 0.0}))
    assert off.next_attempt_at == DEADLINE + POLICY.receipt_grace


def test_an_overdue_receipt_is_queried_with_waits_that_double() -> None:
    msg = submitted()
    assert msg.next_attempt_at is not None
    assert decide(msg, Due(msg.next_attempt_at - 1), QUERYING) == (msg, [])
    checks: list[float] = []
    while msg.next_attempt_at is not None and msg.next_attempt_at < DEADLINE:
        now = msg.next_attempt_at
        new, actions = decide(msg, Due(now), QUERYING)
        assert actions == [QueryUpstream(CARRIER, "C1", 1)]
        assert new.state == State.SUBMITTED and new.attempts == 1
        assert new.updated_at == msg.updated_at  # a check is not a transition
        assert new.next_attempt_at is not None and new.next_attempt_at > now
        checks.append(now - (NOW + 1))
        msg = new
    assert checks[:6] == [600.0, 1200.0, 2400.0, 4800.0, 9600.0, 19200.0]
    gaps = [b - a for a, b in itertools.pairwise(checks)]
    assert max(gaps) == QUERY_MAX_INTERVAL
    # The checks end at the receipt grace: then the message gives up as before.
    assert msg.next_attempt_at == DEADLINE + QUERYING.receipt_grace
    new, actions = decide(msg, Due(DEADLINE + QUERYING.receipt_grace), QUERYING)
    assert new.state == State.FAILED
    assert final_receipts(actions) == [
        SenderReceipt("UNDELIV", "000", DEADLINE + QUERYING.receipt_grace)
    ]
    assert not any(isinstance(a, QueryUpstream) for a in actions)


def test_a_late_check_waits_for_the_time_since_the_submission() -> None:
    msg = submitted()
    late = NOW + 1 + 5000  # the scheduler was behind
    new, actions = decide(msg, Due(late), QUERYING)
    assert actions == [QueryUpstream(CARRIER, "C1", 1)]
    assert new.next_attempt_at == late + 5000


def test_the_last_check_is_bounded_by_the_receipt_grace() -> None:
    msg = submitted(deadline=NOW + 900)  # the grace ends at NOW + 900 + 3600
    new, actions = decide(msg, Due(NOW + 1 + 2400), QUERYING)
    assert actions == [QueryUpstream(CARRIER, "C1", 1)]
    assert new.next_attempt_at == NOW + 900 + QUERYING.receipt_grace


def test_a_carrier_without_query_sm_falls_back_to_the_receipt_grace() -> None:
    msg = submitted()
    assert msg.next_attempt_at is not None
    due = Due(msg.next_attempt_at, no_query=frozenset({CARRIER}))
    new, actions = decide(msg, due, QUERYING)
    assert actions == []
    assert new.next_attempt_at == DEADLINE + QUERYING.receipt_grace
    assert new.updated_at == msg.updated_at
    # Nothing more to do until then.
    assert decide(new, Due(NOW + DAY, no_query=frozenset({CARRIER})), QUERYING) == (new, [])
    # A carrier left out of no_query is still asked.
    other = Due(msg.next_attempt_at, no_query=frozenset({"other"}))
    assert decide(msg, other, QUERYING)[1] == [QueryUpstream(CARRIER, "C1", 1)]


def test_checks_turned_off_after_the_submission_wait_for_the_grace() -> None:
    msg = submitted()
    assert msg.next_attempt_at is not None
    new, actions = decide(msg, Due(msg.next_attempt_at), POLICY)
    assert actions == [] and new.next_attempt_at == DEADLINE + POLICY.receipt_grace


def test_no_query_for_messages_that_are_not_submitted() -> None:
    held = held_at(1)
    assert held.next_attempt_at is not None
    _, actions = decide(held, Due(held.next_attempt_at), QUERYING)
    assert actions == [Submit(2)]
    for msg in (make(state=State.SUBMITTING, attempts=1), make(state=State.DELIVERED)):
        assert decide(msg, Due(NOW + DAY), QUERYING) == (msg, [])


def queried(now: float, v: Verdict, stat: str, err: str = "000", attempt: int = 1) -> ReceiptIn:
    return ReceiptIn(now=now, attempt=attempt, verdict=v, stat=stat, err=err, queried=True)


def test_a_delivered_answer_finishes_the_message_like_a_receipt() -> None:
    msg = submitted()
    at = NOW + 700
    new, actions = decide(msg, queried(at, DELIVERED, "DELIVRD"), QUERYING)
    by_receipt, receipt_actions = decide(msg, receipt(at, 1, DELIVERED), QUERYING)
    assert new == by_receipt
    assert new.state == State.DELIVERED and new.next_attempt_at is None
    assert final_receipts(actions) == [SenderReceipt("DELIVRD", "000", at)]
    event = publish(actions, "delivered")
    assert event.fields == {**publish(receipt_actions, "delivered").fields, "source": "query_sm"}
    # The receipt turning up after all changes nothing: one final receipt only.
    assert decide(new, receipt(at + 5, 1, DELIVERED), QUERYING) == (new, [])
    assert decide(new, Due(at + DAY), QUERYING) == (new, [])


def test_a_failed_answer_is_classified_like_a_receipt() -> None:
    msg = submitted()
    new, actions = decide(
        msg, queried(NOW + 700, hard("unknown_subscriber"), "UNDELIV", "001"), QUERYING
    )
    assert new.state == State.FAILED
    assert final_receipts(actions) == [SenderReceipt("UNDELIV", "001", NOW + 700)]
    assert publish(actions, "hard_bounce").fields["source"] == "query_sm"
    assert SuppressNumber(msg.destination_addr, "unknown_subscriber") in actions
    # A soft failure is held and retried, as from a receipt.
    new, actions = decide(msg, queried(NOW + 700, soft("absent_subscriber"), "UNDELIV"), QUERYING)
    assert new.state == State.HELD
    assert publish(actions, "soft_bounce").fields["source"] == "query_sm"
    assert final_receipts(actions) == []


def test_an_answer_for_an_earlier_attempt_delivers_but_never_fails() -> None:
    msg = at_attempt(2, policy=QUERYING)
    new, actions = decide(msg, queried(NOW + DAY, hard("barred"), "UNDELIV", attempt=1), QUERYING)
    assert (new, actions) == (msg, [])
    new, actions = decide(msg, queried(NOW + DAY, DELIVERED, "DELIVRD", attempt=1), QUERYING)
    assert new.state == State.DELIVERED
    assert CancelUpstream(CARRIER, "C2") in actions


# ---------------------------------------------------------------- random walks

SOFT_VERDICTS = [
    soft("throttled"),
    soft("congestion"),
    soft("timeout"),
    soft("not_bound"),
    soft("absent_subscriber"),
    soft("memory_full"),
    soft("network", max_retries=1),
    soft("expired"),
]
HARD_VERDICTS = [hard("unknown_subscriber"), hard("barred"), hard("rejected")]
RECEIPT_VERDICTS = [DELIVERED, ENROUTE, ACCEPTD, *SOFT_VERDICTS, *HARD_VERDICTS]
# Mostly short steps so that walks reach retries before the deadline, some long ones.
STEPS = st.one_of(st.integers(0, 120), st.integers(0, 3_000), st.integers(0, 40_000)).map(float)


def _wanted(rd: int, *, success: bool) -> bool:
    mode = rd & 3
    return mode == 1 if success else mode in (1, 2)


class EngineMachine(RuleBasedStateMachine):
    """Drives one message with the events a real shell could produce, in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = POLICY
        self.msg = BASE
        self.now = NOW
        self.tz: dt.tzinfo | None = None
        self.waiting = False  # the sender still waits for its submit_sm_resp
        self.outstanding: int | None = None  # attempt handed upstream, no carrier answer yet
        self.accepted: dict[int, tuple[str, str]] = {}  # attempt -> (carrier, carrier id)
        self.final_receipts: list[SenderReceipt] = []
        self.answers: list[AnswerSender] = []
        self.cancel_owed: int | None = None  # ended while this attempt awaited the carrier
        self.cancelled_upstream: list[CancelUpstream] = []

    @initialize(
        rd=st.sampled_from([0, 1, 2, 0x10, 0x11, 0x12]),
        life=st.sampled_from([600.0, 3600.0, DAY, 3 * DAY]),
        is_validity=st.booleans(),
        max_attempts=st.integers(1, 4),
        jitter=st.sampled_from([0.0, 0.2, 0.5]),
        quiet=st.booleans(),
        zone=st.sampled_from([None, "Europe/Paris", "Asia/Tokyo"]),
        flag_stops=st.booleans(),
        waiting=st.booleans(),
        query_after=st.sampled_from([0.0, 60.0, 600.0]),
    )
    def start(
        self,
        rd: int,
        life: float,
        is_validity: bool,
        max_attempts: int,
        jitter: float,
        quiet: bool,
        zone: str | None,
        flag_stops: bool,
        waiting: bool,
        query_after: float,
    ) -> None:
        self.policy = Policy(
            max_attempts=max_attempts,
            jitter=jitter,
            quiet_start=NIGHT[0] if quiet else None,
            quiet_end=NIGHT[1] if quiet else None,
            flag_stops_retries=flag_stops,
            receipt_grace=1800.0,
            receipt_query_after={"alpha": query_after},  # beta: never asked
        )
        self.msg = make(
            registered_delivery=rd, deadline=NOW + life, deadline_is_validity=is_validity
        )
        self.tz = ZoneInfo(zone) if zone else None
        self.waiting = waiting

    # -- the transition and its per-step checks

    def apply(self, event: Event) -> list[Action]:
        before = self.msg
        new, actions = decide(before, event, self.policy)
        self.msg = new
        cancels = [a for a in actions if isinstance(a, CancelUpstream)]
        self.cancelled_upstream.extend(cancels)

        if before.state.final:
            assert new == before, "a final message never changes"
            if isinstance(event, SubmitResult) and event.status == 0:
                assert all(
                    a == CancelUpstream(event.carrier, event.carrier_message_id) for a in actions
                )
            else:
                assert actions == [], f"action after the end: {actions}"

        receipts = final_receipts(actions)
        self.final_receipts.extend(receipts)
        assert len(self.final_receipts) <= 1, f"more than one final receipt: {self.final_receipts}"
        for r in receipts:
            assert new.state.final, "a final receipt for a message still alive"
            assert (r.stat == "DELIVRD") == (new.state == State.DELIVERED)
            assert _wanted(new.registered_delivery, success=r.stat == "DELIVRD")
        if intermediates(actions):
            assert new.registered_delivery & 0x10

        queries = [a for a in actions if isinstance(a, QueryUpstream)]
        if queries:
            # Only for the live attempt of a submitted message whose timer fired.
            assert isinstance(event, Due) and before.state == State.SUBMITTED
            carrier, cid = self.accepted[before.attempts]
            assert queries == [QueryUpstream(carrier, cid, before.attempts)]
            assert carrier == "alpha" and carrier not in event.no_query
            assert new.state == State.SUBMITTED and new.updated_at == before.updated_at
            assert new.next_attempt_at is not None and new.next_attempt_at > event.now

        answers = [a for a in actions if isinstance(a, AnswerSender)]
        if answers:
            assert self.waiting and len(answers) == 1
            self.waiting = False
            self.answers.extend(answers)
        if isinstance(event, SubmitResult) and self.waiting and not before.state.final:
            raise AssertionError("a waiting sender got no answer to the carrier's answer")

        submits = [a for a in actions if isinstance(a, Submit)]
        if submits:
            assert submits == [Submit(before.attempts + 1)]
            assert new.state == State.SUBMITTING and new.attempts == before.attempts + 1
            assert self.outstanding is None
            self.outstanding = new.attempts
        else:
            assert new.attempts == before.attempts

        # CancelUpstream: only for the live attempt, exactly when it is in flight.
        became_final = new.state.final and not before.state.final
        late_delivery = (
            isinstance(event, ReceiptIn)
            and event.verdict.kind == "delivered"
            and event.attempt < before.attempts
        )
        if (
            became_final
            and before.state == State.SUBMITTED
            and (isinstance(event, Cancel) or late_delivery)
        ):
            assert cancels == [CancelUpstream(*self.accepted[before.attempts])]
        elif not (before.state.final and isinstance(event, SubmitResult)):
            assert cancels == [], f"cancel of an attempt not in flight: {cancels}"
        if (
            became_final
            and before.state == State.SUBMITTING
            and new.state
            in (
                State.DELIVERED,
                State.CANCELLED,
            )
        ):
            self.cancel_owed = before.attempts

        if isinstance(event, ReceiptIn) and not before.state.final:
            if event.verdict.kind == "pending":
                assert new == before
            if event.verdict.kind != "delivered" and event.attempt < before.attempts:
                assert (new, actions) == (before, []), "a late failure changed the message"

        # A link failure never ends a message before its deadline (only a flagged
        # number with flag_stops_retries does), and its retry keeps the reason's
        # backoff: no sooner than the schedule says, no later than the deadline.
        v = new.verdict
        link = v is not None and v.kind == "soft" and v.reason in LINK_REASONS
        if became_final and new.state in (State.FAILED, State.EXPIRED) and link:
            assert v is not None
            flagged = isinstance(event, ReceiptIn) and event.flagged
            assert (
                event.now >= new.deadline
                or (flagged and self.policy.flag_stops_retries)
                or v.max_retries is not None
            ), f"a link failure ({v.reason}) ended the message before its deadline"
        if new.state == State.HELD and before.state != State.HELD and link:
            assert v is not None and new.next_attempt_at is not None
            n = new.retries_for(v.reason)
            soonest = event.now + self.policy.schedule(v.reason).delay(n) * (1 - self.policy.jitter)
            assert new.next_attempt_at >= min(soonest, new.deadline) - 1e-6
        return actions

    # -- rules: each moves the clock forward, then feeds one event

    @rule(step=STEPS)
    def dispatch(self, step: float) -> None:
        self.now += step
        self.apply(Dispatch(self.now))

    @precondition(lambda self: self.outstanding is not None)
    @rule(step=st.integers(0, 30).map(float), carrier=st.sampled_from(["alpha", "beta"]))
    def carrier_accepts(self, step: float, carrier: str) -> None:
        attempt = self.outstanding
        assert attempt is not None
        self.outstanding = None
        self.now += step
        cid = f"C{attempt}"
        self.accepted[attempt] = (carrier, cid)
        was_final = self.msg.state.final
        actions = self.apply(
            SubmitResult(
                now=self.now,
                carrier=carrier,
                status=0,
                carrier_message_id=cid,
                verdict=None,
                sender_waiting=self.waiting,
            )
        )
        if was_final:
            owed = self.cancel_owed == attempt
            assert actions == ([CancelUpstream(carrier, cid)] if owed else [])
        else:
            assert self.msg.state == State.SUBMITTED
            assert self.msg.carrier_message_id == cid

    @precondition(lambda self: self.outstanding is not None)
    @rule(
        step=st.integers(0, 30).map(float),
        v=st.sampled_from(SOFT_VERDICTS + HARD_VERDICTS),
        status=st.sampled_from([0x08, 0x0B, 0x14, 0x58]),
        rand=st.floats(0.0, 1.0, exclude_max=True),
    )
    def carrier_refuses(self, step: float, v: Verdict, status: int, rand: float) -> None:
        self.outstanding = None
        self.now += step
        was_final = self.msg.state.final
        attempts = self.msg.attempts
        waiting = self.waiting
        self.apply(
            SubmitResult(
                now=self.now,
                carrier="alpha",
                status=status,
                carrier_message_id="",
                verdict=v,
                sender_waiting=waiting,
                rand=rand,
                tz=self.tz,
            )
        )
        if was_final:
            return
        if v.kind == "hard":
            expected = State.REJECTED if waiting and attempts == 1 else State.FAILED
            assert self.msg.state == expected
            if expected == State.REJECTED:
                assert self.answers == [AnswerSender(status)]
                assert self.final_receipts == []
        else:
            assert self.msg.state in (State.HELD, State.FAILED, State.EXPIRED)

    @precondition(lambda self: bool(self.accepted))
    @rule(
        step=STEPS,
        pick=st.integers(0, 50),
        v=st.sampled_from(RECEIPT_VERDICTS),
        rand=st.floats(0.0, 1.0, exclude_max=True),
        flagged=st.booleans(),
        queried=st.booleans(),
    )
    def receipt_arrives(
        self, step: float, pick: int, v: Verdict, rand: float, flagged: bool, queried: bool
    ) -> None:
        self.now += step
        attempts = sorted(self.accepted)
        attempt = attempts[pick % len(attempts)]
        stat = {"delivered": "DELIVRD", "pending": "ENROUTE"}.get(v.kind, "UNDELIV")
        self.apply(
            ReceiptIn(
                now=self.now,
                attempt=attempt,
                verdict=v,
                stat=stat,
                err="001",
                rand=rand,
                tz=self.tz,
                flagged=flagged,
                queried=queried and v.kind != "pending",  # only final states come back
            )
        )

    @rule(step=STEPS, on_time=st.booleans(), no_query=st.booleans())
    def timer_fires(self, step: float, on_time: bool, no_query: bool) -> None:
        due = self.msg.next_attempt_at
        if on_time and due is not None:
            self.now = max(self.now, due)
        else:
            self.now += step
        self.apply(Due(self.now, frozenset({"alpha"}) if no_query else frozenset()))

    @rule(step=STEPS)
    def alert(self, step: float) -> None:
        self.now += step
        self.apply(Alert(self.now))

    @rule(step=STEPS, really=st.integers(0, 3))
    def cancel(self, step: float, really: int) -> None:
        self.now += step
        if really == 0:  # rarer than the other events: a cancel ends the walk
            self.apply(Cancel(self.now))

    # -- invariants over the state

    @invariant()
    def attempts_bounded(self) -> None:
        # Only the attempts the destination was tried count; link failures are
        # bounded by the deadline and their spacing (checked in `apply`).
        link = sum(c for r, c in self.msg.retries_by_reason if r in LINK_REASONS)
        assert self.msg.attempts - link <= self.policy.max_attempts

    @invariant()
    def submitted_gives_up_after_the_grace(self) -> None:
        if self.msg.state == State.SUBMITTED:
            assert self.msg.next_attempt_at is not None
            assert self.msg.next_attempt_at <= self.msg.deadline + self.policy.receipt_grace

    @invariant()
    def held_within_deadline(self) -> None:
        if self.msg.state == State.HELD:
            assert self.msg.next_attempt_at is not None
            assert self.msg.next_attempt_at <= self.msg.deadline

    @invariant()
    def one_final_receipt_once_final(self) -> None:
        msg = self.msg
        if not msg.state.final:
            assert self.final_receipts == []
            assert msg.done_at is None
            return
        assert msg.done_at is not None
        if msg.state == State.REJECTED:
            assert self.final_receipts == []
            return
        wanted = _wanted(msg.registered_delivery, success=msg.state == State.DELIVERED)
        assert len(self.final_receipts) == (1 if wanted else 0)
        if self.final_receipts:
            assert self.final_receipts[0].stat == msg.final_stat

    @invariant()
    def delivered_means_delivrd(self) -> None:
        if self.msg.state == State.DELIVERED:
            assert self.msg.final_stat == "DELIVRD"
            assert all(r.stat == "DELIVRD" for r in self.final_receipts)


def test_engine_random_walks() -> None:
    run_state_machine_as_test(
        EngineMachine,
        settings=settings(max_examples=400, stateful_step_count=40, deadline=None),
    )
