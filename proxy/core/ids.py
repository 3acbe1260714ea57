"""Bounceback's own message ids.

An id is 16 upper-case hex digits (64 bits): 42 bits of milliseconds since
2024-01-01 UTC, 10 bits of instance number and 12 bits of a per-millisecond
counter. That is unique across restarts (time moves on; the generator never
goes below the last id it handed out, even when the clock steps back) and
across instances (each holds its own instance number), short enough for every
client (SMPP allows 65, the receipt template shows 10 to 20) and printable.
"""

from __future__ import annotations

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
INSTANCE_BITS = 10
COUNTER_BITS = 12
MAX_INSTANCE = (1 << INSTANCE_BITS) - 1


class IdGenerator:
    """Pure id generator: the caller passes the current time in milliseconds."""

    def __init__(self, instance: int, floor: int = 0) -> None:
        if not 0 <= instance <= MAX_INSTANCE:
            raise ValueError(f"instance number must be 0..{MAX_INSTANCE}, got {instance}")
        self.instance = instance
        self._last = floor  # the last id value handed out (or persisted high-water mark)

    def next(self, now_ms: int) -> str:
        ms = max(now_ms - EPOCH_MS, 0)
        value = (ms << (INSTANCE_BITS + COUNTER_BITS)) | (self.instance << COUNTER_BITS)
        last_ms = self._last >> (INSTANCE_BITS + COUNTER_BITS)
        if ms <= last_ms:
            # Same millisecond (or the clock stepped back): continue after the last id.
            counter = (self._last & ((1 << COUNTER_BITS) - 1)) + 1
            if counter >= 1 << COUNTER_BITS:
                last_ms += 1
                counter = 0
            value = (
                (last_ms << (INSTANCE_BITS + COUNTER_BITS))
                | (self.instance << COUNTER_BITS)
                | counter
            )
        self._last = value
        return f"{value:016X}"

    @property
    def last(self) -> int:
        return self._last


def id_time_ms(message_id: str) -> int:
    """The creation time (epoch ms) encoded in one of our ids."""
    return (int(message_id, 16) >> (INSTANCE_BITS + COUNTER_BITS)) + EPOCH_MS
