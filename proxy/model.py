"""The message record and its states: plain data shared by the engine, the stores and the feed."""

from __future__ import annotations

import enum

import attrs


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

    def retries_for(self, reason: str) -> int:
        for name, count in self.retries_by_reason:
            if name == reason:
                return count
        return 0

    def with_retry(self, reason: str) -> tuple[tuple[str, int], ...]:
        counts = dict(self.retries_by_reason)
        counts[reason] = counts.get(reason, 0) + 1
        return tuple(sorted(counts.items()))
