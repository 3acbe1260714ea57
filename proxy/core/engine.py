"""The message engine: pure decisions over a message and an event.

`decide(message, event, policy)` returns the new message and the actions the
asyncio shell must carry out. Nothing here reads a clock, draws a random
number or touches a socket: time (`now`), randomness (`rand`) and the
destination's time zone arrive inside the events, so every decision can be
replayed and tested exhaustively.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Mapping
from typing import TypeAlias

import attrs
from bounceback.config.settings import DEFAULT_SCHEDULES as DEFAULT_SCHEDULES
from bounceback.config.settings import Schedule as Schedule
from bounceback.core.model import Message, State, Verdict, evolve
from bounceback.core.recovery import Choice, Estimates, Observation
from smppcodecs.constants import (
    REG_DELIVERY_FAILURE,
    REG_DELIVERY_INTERMEDIATE,
    REG_DELIVERY_RECEIPT_MASK,
    REG_DELIVERY_SUCCESS_FAILURE,
)

# Hard reasons that put the number on the suppression list: the number itself is bad.
SUPPRESS_REASONS = frozenset(
    {
        "unknown_subscriber",
        "invalid_address",
        "not_sms_equipped",
        "illegal_subscriber",
        "illegal_equipment",
        "not_provisioned",
    }
)


FALLBACK_SCHEDULE = Schedule(300.0, 2.0, 3600.0)

# Reasons that say nothing about the destination: the carrier or the link was at
# fault. They never count as an attempt against the number and no count ends them:
# a message held for one is retried on its reason's schedule (exponential backoff
# up to the schedule's max) until its deadline (validity or retry.max_age), then
# ends as the deadline says. Only an explicit per-rule `max_retries` caps them.
LINK_REASONS = frozenset({"throttled", "not_bound", "congestion", "timeout"})

# The longest wait between two query_sm checks of one overdue receipt (they double).
QUERY_MAX_INTERVAL = 6 * 3600.0


@attrs.frozen
class Policy:
    max_attempts: int = 16
    jitter: float = 0.2
    schedules: Mapping[str, Schedule] = attrs.field(factory=lambda: dict(DEFAULT_SCHEDULES))
    quiet_start: dt.time | None = None  # destination local time
    quiet_end: dt.time | None = None
    receipt_grace: float = 3600.0  # how long after the deadline a missing receipt is given up
    flag_stops_retries: bool = False
    # Per carrier: how long a submitted message waits for its receipt before the carrier
    # is asked with query_sm ([[carriers]] receipt_query_after); absent or 0: never.
    receipt_query_after: Mapping[str, float] = attrs.field(factory=dict)
    # [retry] mode: "static" (the schedules) or "learned" (the next attempt from the
    # recovery estimates the shell keeps in `recovery`; the schedules are its prior).
    mode: str = "static"
    recovery: Estimates | None = attrs.field(default=None, eq=False)
    # The next attempt from the key's plan (core/planner.py): as large a share of
    # the recovered messages delivered within the target delay as the static schedule
    # would deliver on the same estimate, times (1 + learn_margin), with the fewest
    # failed attempts; learn_delay 0: the target is the median delay the static
    # schedules would give all the traffic seen.
    learn_margin: float = 0.1
    learn_delay: float = 0.0
    learn_min_at_risk: float = 20.0  # messages seen at risk before a key decides
    # Learned mode: the last attempt goes this long before the deadline at the latest.
    last_chance: float = 60.0

    def schedule(self, reason: str) -> Schedule:
        return self.schedules.get(reason, FALLBACK_SCHEDULE)

    def static_delays(self, reason: str) -> list[float]:
        """The static schedule's delays (no jitter) for as many retries as it allows."""
        s = self.schedule(reason)
        return [s.delay(n) for n in range(1, self.max_attempts)]

    def query_after(self, carrier: str) -> float:
        return self.receipt_query_after.get(carrier, 0.0)


# ---------------------------------------------------------------- events


@attrs.frozen
class Dispatch:
    """Send the message now (first attempt, or a held message that is due)."""

    now: float


@attrs.frozen
class SubmitResult:
    """The carrier answered the submit (or did not: timeout, no carrier bound)."""

    now: float
    carrier: str
    status: int  # command_status; 0 = accepted
    carrier_message_id: str
    verdict: Verdict | None  # None when status == 0
    sender_waiting: bool = False
    rand: float = 0.5
    tz: dt.tzinfo | None = None
    place: tuple[str, str] = ("", "")  # the destination's (country, operator)


@attrs.frozen
class ReceiptIn:
    """A carrier receipt matched to this message and one of its attempts."""

    now: float
    attempt: int
    verdict: Verdict
    stat: str
    err: str
    rand: float = 0.5
    tz: dt.tzinfo | None = None
    flagged: bool = False  # the number is over the soft-bounce threshold
    # True: not a deliver_sm but the carrier's answer to our query_sm (a final
    # message_state and its error_code, classified as a receipt with that stat and err).
    queried: bool = False
    place: tuple[str, str] = ("", "")  # the destination's (country, operator)


@attrs.frozen
class Due:
    """The message's timer fired (retry due, deadline reached, receipt overdue)."""

    now: float
    # Carriers known not to answer query_sm: their overdue messages wait for the receipt.
    no_query: frozenset[str] = frozenset()


@attrs.frozen
class Alert:
    """alert_notification: the destination is reachable again."""

    now: float


@attrs.frozen
class Cancel:
    now: float


Event: TypeAlias = Dispatch | SubmitResult | ReceiptIn | Due | Alert | Cancel

# ---------------------------------------------------------------- actions


@attrs.frozen
class Submit:
    """Send attempt number `attempt` upstream (the shell routes it)."""

    attempt: int


@attrs.frozen
class AnswerSender:
    """Answer the sender's pending submit_sm with this status."""

    status: int


@attrs.frozen
class SenderReceipt:
    """Queue a delivery receipt (or intermediate notification) for the sender."""

    stat: str
    err: str
    done_at: float
    intermediate: bool = False


@attrs.frozen
class Publish:
    """Write a feed event (to the outbox, in the same transaction as the state)."""

    event: str
    fields: Mapping[str, object] = attrs.field(factory=dict)


@attrs.frozen
class CancelUpstream:
    carrier: str
    carrier_message_id: str


@attrs.frozen
class SuppressNumber:
    number: str
    reason: str


@attrs.frozen
class QueryUpstream:
    """The receipt of `attempt` is overdue: ask its carrier with query_sm. A final
    answer comes back as a ReceiptIn with queried=True; any other answer, or none,
    needs nothing: the next check is already scheduled."""

    carrier: str
    carrier_message_id: str
    attempt: int


Action: TypeAlias = (
    Submit
    | AnswerSender
    | SenderReceipt
    | Publish
    | CancelUpstream
    | SuppressNumber
    | QueryUpstream
)


# ---------------------------------------------------------------- helpers


def wants_receipt(registered_delivery: int, *, success: bool) -> bool:
    mode = registered_delivery & REG_DELIVERY_RECEIPT_MASK
    if mode == REG_DELIVERY_SUCCESS_FAILURE:
        return True
    return mode == REG_DELIVERY_FAILURE and not success


def wants_intermediate(registered_delivery: int) -> bool:
    return bool(registered_delivery & REG_DELIVERY_INTERMEDIATE)


def _verdict_fields(v: Verdict) -> dict[str, object]:
    return {
        "classification": v.kind,
        "reason": v.reason,
        "description": v.description,
        "code": v.code,
        "rule": v.rule,
        "rule_source": v.source,
    }


def quiet_adjust(
    when: float, tz: dt.tzinfo | None, start: dt.time | None, end: dt.time | None
) -> float:
    """Move `when` out of the quiet window [start, end) in the destination's zone.

    The window may wrap midnight (21:00–08:00). Returns `when` unchanged when
    quiet hours are off or the zone is unknown.
    """
    if tz is None or start is None or end is None or start == end:
        return when
    local = dt.datetime.fromtimestamp(when, tz)
    t = local.time().replace(tzinfo=None)
    wraps = start > end
    inside = (start <= t or t < end) if wraps else (start <= t < end)
    if not inside:
        return when
    end_day = local.date()
    if wraps and t >= start:
        end_day = end_day + dt.timedelta(days=1)
    morning = dt.datetime.combine(end_day, end, tzinfo=tz)
    # On a fall-back night the end time can occur twice: the window ends at the later one.
    return max(when, morning.timestamp(), morning.replace(fold=1).timestamp())


def _final(
    msg: Message,
    state: State,
    stat: str,
    err: str,
    now: float,
    event: str,
    fields: Mapping[str, object],
    *,
    success: bool = False,
    verdict: Verdict | None = None,
) -> tuple[Message, list[Action]]:
    """The message ends in `state` (with `verdict`, when given, in the same copy)."""
    new = evolve(
        msg,
        state=state,
        final_stat=stat,
        final_err=err,
        done_at=now,
        next_attempt_at=None,
        updated_at=now,
        verdict=verdict if verdict is not None else msg.verdict,
    )
    actions: list[Action] = [Publish(event, dict(fields))]
    if wants_receipt(msg.registered_delivery, success=success):
        actions.append(SenderReceipt(stat, err, now))
    return new, actions


def _last_failure(msg: Message) -> tuple[str, str]:
    v = msg.verdict
    stat = "UNDELIV"
    if v is not None and v.reason == "expired":
        stat = "EXPIRED"
    return stat, msg.final_err or "000"


def _run_out(msg: Message, now: float, why: str) -> tuple[Message, list[Action]]:
    """Attempts, validity or age ran out: the last failure (EXPIRED for validity)."""
    stat, err = _last_failure(msg)
    if why == "validity":
        stat = "EXPIRED"
    fields: dict[str, object] = {"attempts": msg.attempts, "why": why}
    if msg.verdict is not None:
        fields.update(_verdict_fields(msg.verdict))
    return _final(
        msg, State.EXPIRED if stat == "EXPIRED" else State.FAILED, stat, err, now, "expired", fields
    )


def _hold(
    msg: Message,
    verdict: Verdict,
    err: str,
    now: float,
    rand: float,
    tz: dt.tzinfo | None,
    policy: Policy,
    *,
    flagged: bool = False,
    place: tuple[str, str] = ("", ""),
) -> tuple[Message, list[Action]]:
    reason = verdict.reason
    n = msg.retries_for(reason) + 1
    link = reason in LINK_REASONS
    # When the attempt that bounced was made (its submission): the engine's last write.
    attempt_at = msg.updated_at if msg.updated_at > 0 else now
    msg = evolve(
        msg,
        verdict=verdict,
        final_err=err,
        retries_by_reason=msg.with_retry(reason),
        failed_at=msg.failed_at if link else attempt_at,
    )
    counted = msg.attempts - _link_retries(msg)  # attempts the destination was tried
    if flagged and policy.flag_stops_retries:
        return _run_out(msg, now, "flagged")
    # A link failure is bounded by the deadline alone (see LINK_REASONS): the retry
    # below is never later than the deadline, where the message ends.
    if not link and counted >= policy.max_attempts:
        return _run_out(msg, now, "attempts")
    if verdict.max_retries is not None and n > verdict.max_retries:
        return _run_out(msg, now, "attempts")
    schedule = policy.schedule(reason)
    delay = schedule.delay(n)
    delay *= 1.0 + policy.jitter * (2.0 * rand - 1.0)
    choice: Choice | None = None
    if policy.mode == "learned" and policy.recovery is not None and not link:
        choice = policy.recovery.choose(
            place,
            reason,
            created_at=msg.created_at,
            failed_at=attempt_at,
            deadline=msg.deadline,
            static_delay=schedule.delay(n),
            static=policy.static_delays,
            min_at_risk=policy.learn_min_at_risk,
            min_delay=schedule.learned_min,
            max_delay=schedule.learned_max,
            margin=policy.learn_margin,
            target_delay=policy.learn_delay,
            u=stable_fraction(msg.id),
        )
        due = _learned_due(msg, choice, now, rand, tz, policy, delay, schedule)
        if counted == policy.max_attempts - 1:
            # The last attempt allowed: the last chance before the deadline, so that a
            # destination that comes back late is still found.
            due = max(
                min(due, msg.deadline),
                latest_open(
                    msg.deadline - policy.last_chance, tz, policy.quiet_start, policy.quiet_end
                ),
                now,
            )
            due = min(due, msg.deadline)
    else:
        due = quiet_adjust(now + max(delay, 0.0), tz, policy.quiet_start, policy.quiet_end)
        due = min(due, msg.deadline)
    new = evolve(msg, state=State.HELD, next_attempt_at=due, updated_at=now)
    fields: dict[str, object] = _verdict_fields(verdict)
    fields.update({"attempt": msg.attempts, "next_attempt_at": due, "err": err})
    if choice is not None:  # which estimate, at which key level, on how much data
        fields["estimate"] = choice.fields()
    zone_key = getattr(tz, "key", None)
    if zone_key:  # the zone quiet hours are kept in for this destination
        fields["time_zone"] = zone_key
    actions: list[Action] = [Publish("soft_bounce", fields)]
    if wants_intermediate(msg.registered_delivery) and (not link or n == 1):
        # Link failures repeat until the deadline: the sender hears of each reason once.
        actions.append(SenderReceipt("ENROUTE", err, now, intermediate=True))
    return new, actions


def _learned_due(
    msg: Message,
    choice: Choice,
    now: float,
    rand: float,
    tz: dt.tzinfo | None,
    policy: Policy,
    static_delay: float,
    schedule: Schedule,
) -> float:
    """The next attempt in learned mode: the estimate's choice (a quarter of the
    jitter, within the reason's learned_min/learned_max), or the static delay when
    the estimate had too little data; out of quiet hours; and never later than
    `last_chance` before the deadline, so a destination that recovers late still
    gets an attempt within its validity."""
    if choice.source == "learned":
        gap = (choice.at - msg.failed_at) * (1.0 + policy.jitter / 4.0 * (2.0 * rand - 1.0))
        gap = min(max(gap, schedule.learned_min), schedule.learned_max)
        due = max(msg.failed_at + gap, now)
    else:
        due = now + max(static_delay, 0.0)
    due = quiet_adjust(due, tz, policy.quiet_start, policy.quiet_end)
    last = msg.deadline - policy.last_chance
    if due < last and last - due < (due - now) / 2.0:
        # So close to the last chance that one attempt more would hardly tell more.
        due = last
    if due >= last:
        latest = latest_open(last, tz, policy.quiet_start, policy.quiet_end)
        if latest > now:
            due = latest
    return min(due, msg.deadline)


def stable_fraction(message_id: str) -> float:
    """A fraction in [0, 1) that is the same for a message wherever it is decided."""
    return zlib.crc32(message_id.encode()) / 4294967296.0


def latest_open(
    when: float, tz: dt.tzinfo | None, start: dt.time | None, end: dt.time | None
) -> float:
    """The latest time at or before `when` outside the quiet window [start, end)."""
    if quiet_adjust(when, tz, start, end) == when or tz is None or start is None:
        return when
    local = dt.datetime.fromtimestamp(when, tz)
    t = local.time().replace(tzinfo=None)
    day = local.date()
    if end is not None and start > end and t < end:
        day = day - dt.timedelta(days=1)
    began = dt.datetime.combine(day, start, tzinfo=tz)
    return min(began.timestamp(), began.replace(fold=1).timestamp()) - 1.0


def _link_retries(msg: Message) -> int:
    return sum(c for r, c in msg.retries_by_reason if r in LINK_REASONS)


def _start_attempt(msg: Message, now: float) -> tuple[Message, list[Action]]:
    if now >= msg.deadline:
        return _run_out(msg, now, "validity" if msg.deadline_is_validity else "age")
    attempt = msg.attempts + 1
    new = evolve(
        msg, state=State.SUBMITTING, attempts=attempt, next_attempt_at=None, updated_at=now
    )
    return new, [Submit(attempt)]


# ---------------------------------------------------------------- decide


def decide(msg: Message, event: Event, policy: Policy) -> tuple[Message, list[Action]]:
    """The whole behaviour of one message, one event at a time."""
    if isinstance(event, Cancel):
        return _on_cancel(msg, event)
    if isinstance(event, ReceiptIn):
        return _on_receipt(msg, event, policy)
    if msg.state.final:
        if (
            isinstance(event, SubmitResult)
            and event.status == 0
            and msg.state in (State.CANCELLED, State.DELIVERED)
            and event.carrier_message_id != msg.carrier_message_id
        ):
            # The carrier took an attempt after the message ended (cancelled, or an
            # earlier attempt delivered meanwhile): cancel it there.
            return msg, [CancelUpstream(event.carrier, event.carrier_message_id)]
        return msg, []
    if isinstance(event, Dispatch):
        if msg.state in (State.ACCEPTED, State.HELD):
            return _start_attempt(msg, event.now)
        return msg, []
    if isinstance(event, Due):
        return _on_due(msg, event, policy)
    if isinstance(event, Alert):
        if msg.state == State.HELD:
            return _start_attempt(msg, event.now)
        return msg, []
    return _on_submit_result(msg, event, policy)


def _on_due(msg: Message, event: Due, policy: Policy) -> tuple[Message, list[Action]]:
    if msg.state == State.HELD:
        if msg.next_attempt_at is not None and event.now < msg.next_attempt_at:
            return msg, []
        return _start_attempt(msg, event.now)
    if msg.state == State.SUBMITTED and event.now >= msg.deadline + policy.receipt_grace:
        # The carrier never reported a final state.
        why = "validity" if msg.deadline_is_validity else "age"
        return _run_out(evolve(msg, final_err=msg.final_err or "000"), event.now, why)
    if msg.state == State.SUBMITTED:
        return _receipt_overdue(msg, event, policy)
    if msg.state == State.ACCEPTED:
        return _start_attempt(msg, event.now)
    return msg, []


def _first_check(msg: Message, carrier: str, now: float, policy: Policy) -> float:
    """When a message just submitted through `carrier` is next looked at: the first
    query_sm check, or (no checks for this carrier) the end of the receipt grace."""
    give_up = msg.deadline + policy.receipt_grace
    after = policy.query_after(carrier)
    return min(now + after, give_up) if after > 0 else give_up


def _receipt_overdue(msg: Message, event: Due, policy: Policy) -> tuple[Message, list[Action]]:
    """A submitted message's receipt is overdue: ask the carrier (query_sm), and look
    again later, each wait twice the one before (the time since the submission), at
    most QUERY_MAX_INTERVAL and never past the receipt grace, when the message gives up.

    `updated_at` stays the time of the submission: a check is not a transition."""
    now = event.now
    if msg.next_attempt_at is not None and now < msg.next_attempt_at:
        return msg, []
    give_up = msg.deadline + policy.receipt_grace
    after = policy.query_after(msg.carrier)
    if after <= 0 or not msg.carrier_message_id or msg.carrier in event.no_query:
        # No checks for this carrier (off, or it does not answer query_sm): wait.
        if msg.next_attempt_at == give_up:
            return msg, []
        return evolve(msg, next_attempt_at=give_up), []
    wait = min(max(after, now - msg.updated_at), QUERY_MAX_INTERVAL)
    new = evolve(msg, next_attempt_at=min(now + wait, give_up))
    return new, [QueryUpstream(msg.carrier, msg.carrier_message_id, msg.attempts)]


def _on_submit_result(
    msg: Message, ev: SubmitResult, policy: Policy
) -> tuple[Message, list[Action]]:
    if msg.state != State.SUBMITTING:
        return msg, []
    if ev.status == 0:
        new = evolve(
            msg,
            state=State.SUBMITTED,
            carrier=ev.carrier,
            carrier_message_id=ev.carrier_message_id,
            next_attempt_at=_first_check(msg, ev.carrier, ev.now, policy),
            updated_at=ev.now,
        )
        actions: list[Action] = []
        if ev.sender_waiting:
            actions.append(AnswerSender(0))
        name = "submitted" if msg.attempts == 1 else "resubmitted"
        actions.append(
            Publish(
                name,
                {
                    "carrier": ev.carrier,
                    "carrier_message_id": ev.carrier_message_id,
                    "attempt": msg.attempts,
                },
            )
        )
        return new, actions
    verdict = ev.verdict
    assert verdict is not None, "a failed submit carries a verdict"
    err = f"{ev.status & 0xFFF:03X}" if ev.status > 0 else "000"
    msg = evolve(msg, carrier=ev.carrier or msg.carrier, verdict=verdict)
    if verdict.kind == "soft":
        pre: list[Action] = [AnswerSender(0)] if ev.sender_waiting else []
        new, actions = _hold(msg, verdict, err, ev.now, ev.rand, ev.tz, policy, place=ev.place)
        return new, pre + actions
    fields: dict[str, object] = _verdict_fields(verdict)
    fields.update({"carrier": ev.carrier, "attempt": msg.attempts, "status": ev.status})
    if ev.sender_waiting and msg.attempts == 1:
        new = evolve(
            msg,
            state=State.REJECTED,
            final_stat="REJECTD",
            final_err=err,
            done_at=ev.now,
            next_attempt_at=None,
            updated_at=ev.now,
        )
        return new, [AnswerSender(ev.status), Publish("carrier_rejected", fields)]
    new, actions = _final(msg, State.FAILED, "REJECTD", err, ev.now, "carrier_rejected", fields)
    return new, actions


def _on_receipt(msg: Message, ev: ReceiptIn, policy: Policy) -> tuple[Message, list[Action]]:
    new, actions = _receipt(msg, ev, policy)
    if ev.queried:
        # The feed says where the verdict came from.
        actions = [
            Publish(a.event, {**a.fields, "source": "query_sm"}) if isinstance(a, Publish) else a
            for a in actions
        ]
    return new, actions


def _receipt(msg: Message, ev: ReceiptIn, policy: Policy) -> tuple[Message, list[Action]]:
    v = ev.verdict
    if msg.state.final:
        return msg, []  # duplicate or late receipt after the end: nothing twice
    current = ev.attempt >= msg.attempts
    if v.kind == "delivered":
        actions: list[Action] = []
        if not current and msg.state == State.SUBMITTED and msg.carrier and msg.carrier_message_id:
            # A late DELIVRD for an earlier attempt: stop the one in flight.
            actions.append(CancelUpstream(msg.carrier, msg.carrier_message_id))
        fields: dict[str, object] = _verdict_fields(v)
        fields.update(
            {
                "attempt": ev.attempt,
                "attempts": msg.attempts,
                "recovered": msg.attempts > 1 or msg.retries_by_reason != (),
            }
        )
        new, fin = _final(
            msg,
            State.DELIVERED,
            "DELIVRD",
            "000",
            ev.now,
            "delivered",
            fields,
            success=True,
            verdict=v,
        )
        return new, actions + fin
    if not current or msg.state != State.SUBMITTED:
        # A failure or progress report for an attempt that is no longer the live one.
        return msg, []
    if v.kind == "pending":
        if wants_intermediate(msg.registered_delivery):
            return msg, [SenderReceipt(ev.stat or "ENROUTE", ev.err, ev.now, intermediate=True)]
        return msg, []
    if v.kind == "hard":
        fields = _verdict_fields(v)
        fields.update({"attempt": ev.attempt, "err": ev.err})
        stat = ev.stat if ev.stat in ("UNDELIV", "REJECTD", "DELETED") else "UNDELIV"
        new, actions = _final(
            msg, State.FAILED, stat, ev.err or "000", ev.now, "hard_bounce", fields, verdict=v
        )
        if v.reason in SUPPRESS_REASONS:
            actions.append(SuppressNumber(msg.destination_addr, v.reason))
        return new, actions
    return _hold(
        msg,
        v,
        ev.err or "000",
        ev.now,
        ev.rand,
        ev.tz,
        policy,
        flagged=ev.flagged,
        place=ev.place,
    )


def _on_cancel(msg: Message, ev: Cancel) -> tuple[Message, list[Action]]:
    if msg.state.final:
        return msg, []
    actions: list[Action] = []
    if msg.state == State.SUBMITTED and msg.carrier_message_id:
        actions.append(CancelUpstream(msg.carrier, msg.carrier_message_id))
    new, fin = _final(
        msg, State.CANCELLED, "DELETED", "000", ev.now, "cancelled", {"attempts": msg.attempts}
    )
    return new, actions + fin


# ---------------------------------------------------------------- learning


def observation(old: Message, new: Message, place: tuple[str, str]) -> Observation | None:
    """What one decision taught about its destination's recovery time, if anything:
    a soft bounce (not of the link) of the live attempt says the destination had not
    recovered between the last failed attempt and this one; a delivery of the live
    attempt after a soft bounce says it recovered in between (core/recovery.py)."""
    if old.state != State.SUBMITTED or new.state == old.state:
        return None
    attempt_at = old.updated_at
    if new.state == State.HELD and new.verdict is not None and new.failed_at != old.failed_at:
        lo = old.failed_at - old.created_at if old.failed_at > 0 else 0.0
        hi = attempt_at - old.created_at
        recovered = False
        reason = new.verdict.reason
    elif new.state == State.DELIVERED and old.failed_at > 0 and old.verdict is not None:
        if old.verdict.kind != "soft" or old.verdict.reason in LINK_REASONS:
            return None
        lo = old.failed_at - old.created_at
        hi = attempt_at - old.created_at
        recovered = True
        reason = old.verdict.reason
    else:
        return None
    if hi < lo:
        return None
    first = not recovered and old.failed_at <= 0
    return Observation(place[0], place[1], reason, lo, hi, recovered, new.updated_at, first)
