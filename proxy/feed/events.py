"""Feed events: one JSON document per message transition (schema bounceback.event/1).

Built here from the engine's `Publish` actions and written to the outbox in the
same transaction as the state change (as compact records); the MQTT publisher drains
the outbox and renders each record into its document.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

import orjson
from bounceback.core.model import Message

SCHEMA = "bounceback.event/1"

EVENT_NAMES = (
    "accepted",
    "submitted",
    "carrier_rejected",
    "soft_bounce",
    "resubmitted",
    "delivered",
    "hard_bounce",
    "expired",
    "cancelled",
    "suppressed",
    "number_flagged",
)


_SECONDS: dict[int, str] = {}  # whole second -> "YYYY-MM-DDThh:mm:ss."


def _encode(doc: Mapping[str, object]) -> str:
    """Compact JSON (UTF-8 text, not \\u escapes): orjson, several times faster than
    the json module on the per-event path."""
    return orjson.dumps(doc).decode()


def iso(ts: float) -> str:
    """UTC ISO 8601 with milliseconds and a Z.

    The same text as formatting ``datetime.fromtimestamp(ts, UTC)`` (microseconds
    rounded half to even, then cut to milliseconds), with the date part formatted
    once per second: several events share each second."""
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)
    sec = int(whole)
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    elif us < 0:
        sec, us = sec - 1, us + 1_000_000
    head = _SECONDS.get(sec)
    if head is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        head = _SECONDS[sec] = dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
    return f"{head}{us // 1000:03d}Z"


def mask_number(number: str, keep: int) -> str:
    """Mask all but the last `keep` digits: 447700900123 → ********0123."""
    if keep <= 0:
        return "*" * len(number)
    if len(number) <= keep:
        return number
    return "*" * (len(number) - keep) + number[-keep:]


_BLOCKS: dict[tuple[int, str], tuple[str, str]] = {}
_BLOCKS_MAX = 200_000


def number_info(number: str) -> tuple[str, str]:
    """(ISO country, operator) of an international number; the calling code's main
    country when phonenumbers does not know the number's range; ("", "") when unknown.

    Numbers are allocated to operators in blocks of at least a thousand, so the answer
    is kept per block (the number without its last three digits, and its length): a
    phonenumbers lookup for every message would cost more than the rest of an event."""
    digits = number.lstrip("+")
    key = (len(digits), digits[:-3] if len(digits) > 7 else digits)
    found = _BLOCKS.get(key)
    if found is None:
        found = _lookup(digits)
        if len(_BLOCKS) >= _BLOCKS_MAX:
            _BLOCKS.clear()
        _BLOCKS[key] = found
    return found


def _lookup(digits: str) -> tuple[str, str]:
    import phonenumbers
    from phonenumbers import carrier as pn_carrier

    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return "", ""
    region = phonenumbers.region_code_for_number(parsed) or ""
    operator = pn_carrier.name_for_number(parsed, "en") or ""
    if not region:
        region = phonenumbers.region_code_for_country_code(parsed.country_code or 0)
        region = "" if region == "ZZ" else region
    return region, operator


def topic_for(prefix: str, account: str, message_id: str, event: str) -> str:
    return f"{prefix}/events/{account}/{message_id}/{event}"


# The outbox keeps an event as a compact record, a JSON array (`event_record`): less to
# build and to write in the proxy's transaction than the whole document, which the
# publisher renders from it (`render`) just before publishing. A payload that is
# already a JSON object (written by an earlier version) is published as it is.
_RECORD = 1  # the record layout's version, its first element


def event_record(
    msg: Message,
    event: str,
    fields: Mapping[str, object],
    *,
    now: float,
    instance: str,
    prefix: str,
    mask: bool,
    mask_keep: int,
) -> tuple[str, str]:
    """(topic, compact record) for one transition of `msg`; `render` makes the
    document."""
    country, operator = number_info(msg.destination_addr)
    shown = mask_number(msg.destination_addr, mask_keep) if mask else msg.destination_addr
    record = (
        _RECORD,
        event,
        now,
        instance,
        msg.account,
        msg.id,
        msg.carrier,
        msg.carrier_message_id,
        msg.source_addr,
        shown,
        country,
        operator,
        msg.attempts,
        msg.state.value,
        fields,
    )
    return topic_for(prefix, msg.account, msg.id, event), orjson.dumps(record).decode()


ADMIN_SCHEMA = "bounceback.admin/1"


def admin_document(
    action: str,
    by: str,
    target: str,
    details: Mapping[str, object],
    *,
    now: float,
    instance: str,
    prefix: str,
) -> tuple[str, str]:
    """(topic, document) of a change made through the admin API: who, what, on what."""
    doc = {
        "schema": ADMIN_SCHEMA,
        "action": action,
        "by": by,
        "target": target,
        "details": dict(details),
        "instance": instance,
        "at": iso(now),
    }
    return f"{prefix}/admin/{action}", orjson.dumps(doc).decode()


def render(payload: str) -> str:
    """The event document (JSON) of an outbox payload: a compact record rendered, a
    document as it is."""
    if not payload.startswith("["):
        return payload
    (
        layout,
        event,
        now,
        instance,
        account,
        message_id,
        carrier,
        carrier_message_id,
        source_addr,
        destination,
        country,
        operator,
        attempt,
        state,
        fields,
    ) = orjson.loads(payload)
    if layout != _RECORD:
        raise ValueError(f"unknown event record layout {layout!r}")
    doc: dict[str, object] = {
        "schema": SCHEMA,
        # Deterministic: one event of a kind per attempt, so a consumer can
        # de-duplicate QoS 1 redeliveries by event_id.
        "event_id": f"{message_id}:{attempt}:{event}",
        "event": event,
        "at": iso(now),
        "instance": instance,
        "account": account,
        "message_id": message_id,
        "carrier": carrier or None,
        "carrier_message_id": carrier_message_id or None,
        "source_addr": source_addr,
        "destination": destination,
        "country": country or None,
        "operator": operator or None,
        "attempt": attempt,
        "state": state,
    }
    for key, value in fields.items():
        if key == "next_attempt_at" and isinstance(value, float):
            doc[key] = iso(value)
        else:
            doc[key] = value
    return _encode(doc)


def build_event(
    msg: Message,
    event: str,
    fields: Mapping[str, object],
    *,
    now: float,
    instance: str,
    prefix: str,
    mask: bool,
    mask_keep: int,
) -> tuple[str, str]:
    """(topic, JSON document) for one transition of `msg`."""
    topic, record = event_record(
        msg,
        event,
        fields,
        now=now,
        instance=instance,
        prefix=prefix,
        mask=mask,
        mask_keep=mask_keep,
    )
    return topic, render(record)
