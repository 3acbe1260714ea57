"""Who may connect and how often a bind may fail: pure bookkeeping with explicit time.

Two parts, both free of I/O and of clocks (every call takes ``now``), so they are
unit-testable and the listener only asks and obeys:

* `ConnectionLimits`: at most ``max_total`` connections open at once and at most
  ``max_per_address`` from one address. A connection over either limit is closed at
  accept, before a byte is read.
* `FailedBinds`: failed binds (wrong password, unknown system_id, an address the
  account does not allow) are counted per address within a sliding window. The first
  ``slow_after`` failures are answered at once; each later one is answered after a
  delay that doubles (``delay_base``, ``2 * delay_base`` ... up to ``delay_max``);
  the failure that reaches ``limit`` within ``window`` seconds locks the address out
  for ``lockout`` seconds, during which every bind from it, even a correct one, is
  answered ESME_RBINDFAIL and the connection closed. A successful bind clears the
  address's failures.

Addresses are keyed by `address_key`: an IPv4 address as itself (also when it
arrives IPv4-mapped in IPv6), an IPv6 address by its /64 network, since one host
commonly holds a whole /64. The failure table is bounded (``max_tracked`` keys): when
it is full, expired entries are dropped first, then the least recently touched (a
locked-out address that keeps trying counts as touched).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from bounceback.config.settings import ServerConfig

__all__ = [
    "Access",
    "ConnectionLimits",
    "FailedBinds",
    "Failure",
    "address_key",
]

IPV6_PREFIX: Final = 64


def address_key(address: str) -> str:
    """The key limits and failures are counted under (see the module docstring)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # not an IP (a Unix socket path, a test double): as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


class ConnectionLimits:
    """Open connections, overall and per address."""

    __slots__ = ("_open", "max_per_address", "max_total", "total")

    def __init__(self, max_total: int, max_per_address: int) -> None:
        if max_total < 1 or max_per_address < 1:
            raise ValueError("connection limits must be at least 1")
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        self._open: dict[str, int] = {}

    def open(self, address: str) -> str | None:
        """Count a new connection from `address`. Returns None when it may proceed,
        else why it is refused ("total" or "per_address"); a refused connection is
        not counted and needs no `close`."""
        key = address_key(address)
        if self.total >= self.max_total:
            return "total"
        n = self._open.get(key, 0)
        if n >= self.max_per_address:
            return "per_address"
        self._open[key] = n + 1
        self.total += 1
        return None

    def close(self, address: str) -> None:
        """A connection `open` admitted has ended."""
        key = address_key(address)
        n = self._open.get(key, 0)
        if n <= 0:
            return
        if n == 1:
            del self._open[key]
        else:
            self._open[key] = n - 1
        self.total -= 1

    def count(self, address: str) -> int:
        """Connections open from `address` (its key) now."""
        return self._open.get(address_key(address), 0)


@dataclass(slots=True, frozen=True)
class Failure:
    """What a failed bind leads to.

    Attributes:
        delay: seconds to wait before answering this bind (0 = at once).
        failures: failures counted for the address within the window, this one included.
        locked_for: seconds the address is now locked out (0 = not locked).
        lockout_started: True when this failure started the lockout (log it once).
    """

    delay: float
    failures: int
    locked_for: float = 0.0
    lockout_started: bool = False


@dataclass(slots=True)
class _Record:
    times: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class FailedBinds:
    """Failed binds per address: slow down, then lock out (see the module docstring)."""

    __slots__ = (
        "_records",
        "delay_base",
        "delay_max",
        "limit",
        "lockout",
        "max_tracked",
        "slow_after",
        "window",
    )

    def __init__(
        self,
        limit: int = 5,
        window: float = 60.0,
        lockout: float = 300.0,
        *,
        slow_after: int = 2,
        delay_base: float = 1.0,
        delay_max: float = 4.0,
        max_tracked: int = 65536,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if window <= 0 or lockout <= 0:
            raise ValueError("window and lockout must be positive")
        if max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")
        self.limit = limit
        self.window = window
        self.lockout = lockout
        self.slow_after = max(slow_after, 0)
        self.delay_base = max(delay_base, 0.0)
        self.delay_max = max(delay_max, 0.0)
        self.max_tracked = max_tracked
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        """Addresses tracked now (bounded by ``max_tracked``)."""
        return len(self._records)

    def locked(self, address: str, now: float) -> float:
        """Seconds left of the address's lockout (0.0 when it may try to bind)."""
        key = address_key(address)
        rec = self._records.get(key)
        if rec is None or rec.locked_until <= now:
            return 0.0
        self._records.move_to_end(key)  # an address still knocking stays tracked
        return rec.locked_until - now

    def delay_for(self, failures: int) -> float:
        """The answer delay after `failures` failures within the window."""
        over = failures - self.slow_after
        if over <= 0:
            return 0.0
        return float(min(self.delay_base * 2.0 ** (over - 1), self.delay_max))

    def failed(self, address: str, now: float) -> Failure:
        """Record a failed bind from `address` at `now`."""
        key = address_key(address)
        rec = self._records.get(key)
        if rec is None:
            self._make_room(now)
            rec = self._records[key] = _Record()
        else:
            self._records.move_to_end(key)
        if rec.locked_until > now:
            return Failure(0.0, self.limit, rec.locked_until - now, False)
        times = rec.times
        horizon = now - self.window
        while times and times[0] <= horizon:
            times.popleft()
        times.append(now)
        n = len(times)
        delay = self.delay_for(n)
        if n >= self.limit:
            rec.locked_until = now + self.lockout
            times.clear()
            return Failure(delay, n, self.lockout, True)
        return Failure(delay, n)

    def succeeded(self, address: str) -> None:
        """A bind from `address` succeeded: forget its failures."""
        self._records.pop(address_key(address), None)

    def prune(self, now: float) -> int:
        """Drop addresses with neither a lockout nor a failure inside the window."""
        horizon = now - self.window
        stale = [
            key
            for key, rec in self._records.items()
            if rec.locked_until <= now and (not rec.times or rec.times[-1] <= horizon)
        ]
        for key in stale:
            del self._records[key]
        return len(stale)

    def _make_room(self, now: float) -> None:
        if len(self._records) < self.max_tracked:
            return
        self.prune(now)
        while len(self._records) >= self.max_tracked:
            self._records.popitem(last=False)


class Access:
    """The listener's access state: connection limits and failed binds."""

    __slots__ = ("binds", "connections")

    def __init__(self, connections: ConnectionLimits, binds: FailedBinds) -> None:
        self.connections = connections
        self.binds = binds

    @classmethod
    def from_config(cls, server: ServerConfig) -> Access:
        """Limits from ``[server]``: max_connections, max_connections_per_ip,
        failed_bind_limit, failed_bind_window and lockout_seconds."""
        return cls(
            ConnectionLimits(server.max_connections, server.max_connections_per_ip),
            FailedBinds(
                server.failed_bind_limit, server.failed_bind_window, server.lockout_seconds
            ),
        )
