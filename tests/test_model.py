"""Fast paths of per-message helpers, each checked against the slow code it replaced:
`bounceback.core.model.evolve` against attrs.evolve, the store's row getters against
attrs.asdict and attrs.astuple, the feed's `iso` and the receipt's date text against
datetime formatting."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pytest
from bounceback.core.engine import SubmitResult
from bounceback.core.model import (
    MAX_STEPS,
    Message,
    State,
    Step,
    Verdict,
    add_step,
    evolve,
    set_version,
)
from bounceback.feed.events import iso
from bounceback.gateway.pump import receipt_date
from bounceback.store.sqlite import ReceiptRow, _receipt_values, verdict_doc
from hypothesis import given
from hypothesis import strategies as st
from smppcodecs.receipt import _date_text

BASE = Message(
    id="0123456789ABCDEF",
    account="acme",
    source_addr="ACME",
    destination_addr="447700900001",
    pdu=b"\x00" * 16,
    registered_delivery=1,
    created_at=1.0e9,
    deadline=1.0e9 + 3600,
    deadline_is_validity=False,
    submit_date=1.0e9,
)

CHANGES: dict[str, st.SearchStrategy[Any]] = {
    "state": st.sampled_from(list(State)),
    "attempts": st.integers(0, 50),
    "carrier": st.text(max_size=8),
    "carrier_message_id": st.text(max_size=12),
    "next_attempt_at": st.none() | st.floats(0, 2e9),
    "retries_by_reason": st.lists(st.tuples(st.text(max_size=6), st.integers(0, 9))).map(tuple),
    "verdict": st.none()
    | st.builds(
        Verdict,
        st.just("soft"),
        st.text(max_size=6),
        st.just(""),
        st.just(""),
        st.just(""),
        st.just("default"),
    ),
    "final_stat": st.sampled_from(["", "DELIVRD", "UNDELIV"]),
    "done_at": st.none() | st.floats(0, 2e9),
    "pdu": st.binary(max_size=40),
}


@given(st.fixed_dictionaries({}, optional=CHANGES))
def test_evolve_equals_attrs_evolve(changes: dict[str, Any]) -> None:
    got = evolve(BASE, **changes)
    assert got == attrs.evolve(BASE, **changes)
    assert type(got) is Message
    assert BASE.state == State.ACCEPTED  # the original is untouched


def test_evolve_other_attrs_classes() -> None:
    ev = SubmitResult(
        now=5.0, carrier="c", status=0, carrier_message_id="x", verdict=None, rand=0.5
    )
    assert evolve(ev, sender_waiting=True) == attrs.evolve(ev, sender_waiting=True)


def test_evolve_unknown_field_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="no field 'colour'"):
        evolve(BASE, colour="red")


@attrs.frozen
class _Hidden:
    a: int
    b: int = attrs.field(init=False, default=7)


@attrs.frozen
class _Private:
    _a: int
    c: int = 0


def test_evolve_falls_back_for_fields_init_does_not_take_by_name() -> None:
    assert evolve(_Hidden(1), a=2) == attrs.evolve(_Hidden(1), a=2)
    assert evolve(_Private(1, 2), c=3) == _Private(1, 3)


def _iso_reference(ts: float) -> str:
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


@given(
    st.floats(0, 4.0e9)
    | st.builds(
        lambda s, f: s + f,
        st.integers(0, 4_000_000_000),
        st.sampled_from([0.0, 0.0000005, 0.0004995, 0.9995, 0.9999995, 0.5]),
    )
)
def test_feed_iso_matches_datetime_formatting(ts: float) -> None:
    assert iso(ts) == _iso_reference(ts)


@given(st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2099, 12, 31)))
def test_receipt_date_text_matches_strftime(d: dt.datetime) -> None:
    assert _date_text(d) == d.strftime("%y%m%d%H%M")


@given(st.floats(0, 4e9))
def test_receipt_date_shows_the_utc_minute(ts: float) -> None:
    utc = dt.datetime.fromtimestamp(ts, dt.UTC)
    got = receipt_date(ts)
    assert got.tzinfo is None
    assert _date_text(got) == utc.strftime("%y%m%d%H%M")
    assert receipt_date(ts) is got  # one object per minute


@given(
    st.builds(
        Verdict,
        st.sampled_from(["soft", "hard", "delivered", "pending"]),
        st.text(max_size=6),
        st.text(max_size=12),
        st.text(max_size=4),
        st.text(max_size=8),
        st.sampled_from(["default", "override"]),
        st.none() | st.integers(0, 99),
    )
)
def test_verdict_doc_equals_attrs_asdict(v: Verdict) -> None:
    assert verdict_doc(v) == attrs.asdict(v)


def test_receipt_row_values_equal_attrs_astuple() -> None:
    row = ReceiptRow.for_message(BASE, "DELIVRD", "000", 1.0e9 + 5, False)
    assert _receipt_values(row) == attrs.astuple(row)


def test_set_version_writes_only_the_version() -> None:
    copy = evolve(BASE, state=State.SUBMITTED)
    set_version(copy, 7)
    assert copy.version == 7
    assert copy == attrs.evolve(BASE, state=State.SUBMITTED, version=7)
    assert BASE.version == 0  # the original is untouched


def test_a_timeline_keeps_its_first_step_and_the_latest() -> None:
    m = evolve(BASE)  # a copy of its own: add_step writes in place
    for i in range(MAX_STEPS + 10):
        add_step(m, Step(float(i), "accepted" if i == 0 else "soft_bounce", {"n": i}))
    assert len(m.history) == MAX_STEPS
    assert m.history[0].event == "accepted"
    assert [s.fields["n"] for s in m.history[1:]] == list(range(11, MAX_STEPS + 10))
    # Remembering more does not make it another message.
    assert evolve(m, history=()) == m
