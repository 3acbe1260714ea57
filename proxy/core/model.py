"""The message record and its states: plain data shared by the engine, the stores and the feed."""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import attrs

T = TypeVar("T", bound=attrs.AttrsInstance)

# Per class: a getter of every field (one C call) and each field's position.
_SPECS: dict[type, tuple[Callable[[Any], tuple[Any, ...]], dict[str, int]] | None] = {}


def evolve(obj: T, **changes: Any) -> T:
    """`attrs.evolve` for the per-message path: a copy of `obj` with `changes`.

    attrs.evolve looks up the class's fields and builds keyword arguments on every
    call; this reads all fields with one `operator.attrgetter` and calls the class
    positionally, several times faster. Classes with fields that `__init__` does not
    take by position (init=False, an alias) go through attrs.evolve. An unknown
    field name raises TypeError, as attrs.evolve does.
    """
    cls = type(obj)
    if cls not in _SPECS:
        fields = attrs.fields(cls)
        plain = all(f.init and f.alias == f.name for f in fields) and len(fields) > 1
        names = [f.name for f in fields]
        _SPECS[cls] = (
            (operator.attrgetter(*names), {n: i for i, n in enumerate(names)}) if plain else None
        )
    spec = _SPECS[cls]
    if spec is None:
        result: T = attrs.evolve(cast(Any, obj), **changes)
        return result
    get, index = spec
    values = list(get(obj))
    for name, value in changes.items():
        i = index.get(name)
        if i is None:
            raise TypeError(f"{cls.__name__} has no field {name!r}")
        values[i] = value
    return cls(*values)


def add_step(fresh: Message, step: Step) -> None:
    """Append `step` to the timeline of a copy that nothing else refers to yet (like
    `set_version`): the message about to be written with the event it records."""
    steps = (*fresh.history, step)
    if len(steps) > MAX_STEPS:
        steps = (steps[0], *steps[len(steps) - MAX_STEPS + 1 :])
    object.__setattr__(fresh, "history", steps)


def set_version(fresh: Message, version: int) -> None:
    """Set the `version` of a copy that was made for the decision at hand and that
    nothing else refers to yet (what `engine.decide` returns when it is not the
    message it was given): a field write instead of one more copy per decision."""
    object.__setattr__(fresh, "version", version)


class State(enum.StrEnum):
    """Where a message is in its life.

    accepted → submitting → submitted → delivered
                          ↘ held → submitting … → failed | expired
    rejected: the carrier refused it permanently while the sender still waited
    for its submit_sm_resp (the sender got the error, not a receipt).
    """

    ACCEPTED = "accepted"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    HELD = "held"
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {State.DELIVERED, State.FAILED, State.EXPIRED, State.CANCELLED, State.REJECTED}
)


@attrs.frozen
class Verdict:
    """What the classifier said about the latest carrier answer, kept on the message."""

    kind: str  # delivered | pending | soft | hard
    reason: str
    description: str
    code: str
    rule: str
    source: str  # default | override
    max_retries: int | None = None


@attrs.frozen
class Step:
    """One entry of a message's timeline: a feed event's name, when, and its fields
    (attempt, carrier, the verdict's reason, code and rule, the next attempt, ...)."""

    at: float
    event: str
    fields: Mapping[str, object] = attrs.field(factory=dict)


# A timeline keeps its first step (accepted) and the latest ones: a message retried
# for days does not grow without bound.
MAX_STEPS = 40


@attrs.frozen
class Message:
    """One tracked short message (one destination, one part).

    Times are seconds since the epoch (UTC); the engine never reads a clock,
    the shell passes `now` in every event.
    """

    id: str
    account: str
    source_addr: str
    destination_addr: str
    pdu: bytes  # the sender's original submit_sm (or data_sm), as received
    registered_delivery: int  # what the sender asked for
    created_at: float
    deadline: float  # validity (sender's or default) capped by max_age
    deadline_is_validity: bool  # True: the sender's own validity set the deadline
    submit_date: float  # what the sender's receipts show as the submit date
    state: State = State.ACCEPTED
    attempts: int = 0
    carrier: str = ""
    carrier_message_id: str = ""
    next_attempt_at: float | None = None
    retries_by_reason: tuple[tuple[str, int], ...] = ()
    verdict: Verdict | None = None
    final_stat: str = ""
    final_err: str = ""
    done_at: float | None = None
    text_head: str = ""  # first characters of the text for the receipt's text: field
    parts_ref: str = ""  # concatenation group (ref/seq/total) when the message is a part
    updated_at: float = 0.0
    # When the latest attempt that soft-bounced (not a link failure) was made: the
    # start of the interval a recovery estimate learns from (core/recovery.py); 0: none.
    failed_at: float = 0.0
    # Writes of this message so far. A store writes version v only over version v - 1
    # (optimistic concurrency): a decision taken on a copy that another instance or
    # process changed meanwhile is refused, and taken again on the stored message.
    version: int = 0
    # What happened to it, oldest first (see `Step`). Not part of equality: two copies
    # of one message in the same state are the same message, whatever they remember.
    history: tuple[Step, ...] = attrs.field(default=(), eq=False)

    def retries_for(self, reason: str) -> int:
        for name, count in self.retries_by_reason:
            if name == reason:
                return count
        return 0

    def with_retry(self, reason: str) -> tuple[tuple[str, int], ...]:
        counts = dict(self.retries_by_reason)
        counts[reason] = counts.get(reason, 0) + 1
        return tuple(sorted(counts.items()))
