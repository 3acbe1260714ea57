"""The configuration: one TOML file, its model, its loader and its validator.

`load_config(path)` reads the file and returns a frozen `Config`. Every problem found
is collected first and then raised together as one `ConfigError`, each problem naming
the file, the dotted key (with array indexes, e.g. ``carriers[1].port``) and what is
wrong, so a person can fix a whole file in one pass.

Secrets (account, carrier and feed passwords, credentials in a PostgreSQL URL) are
resolved at load time and never appear in a problem message, a repr or `explain()`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
import urllib.parse
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import attrs
from smppcodecs.constants import CommandStatus
from smppcodecs.errors import SOFT_REASONS as _CODEC_SOFT_REASONS

__all__ = [
    "ACK_MODES",
    "ADMIN_SCOPES",
    "BIND_MODES",
    "BIND_TYPES",
    "DEFAULT_SCHEDULES",
    "ERR_SPACES",
    "EVENT_LOOPS",
    "FIELD_DOCS",
    "ID_FORMATS",
    "LIVE_SECTIONS",
    "LOG_LEVELS",
    "MQTT_PROTOCOLS",
    "RESTART_SECTIONS",
    "SOFT_REASONS",
    "SUPPRESSION_MODES",
    "Account",
    "AdminConfig",
    "AdminToken",
    "Carrier",
    "ClassifyConfig",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "FeedConfig",
    "LoggingConfig",
    "MetricsConfig",
    "RetryConfig",
    "Route",
    "Schedule",
    "ServerConfig",
    "StoreConfig",
    "explain",
    "load_config",
    "parse_config",
    "reloaded",
]

# ---------------------------------------------------------------- vocabularies

# The classifier's fixed vocabulary of soft reasons (the schedules key on them).
SOFT_REASONS: Final[tuple[str, ...]] = tuple(sorted(_CODEC_SOFT_REASONS))
BIND_TYPES: Final[tuple[str, ...]] = ("transmitter", "receiver", "transceiver")
ACK_MODES: Final[tuple[str, ...]] = ("carrier", "stored")
SUPPRESSION_MODES: Final[tuple[str, ...]] = ("reject", "pass")
BIND_MODES: Final[tuple[str, ...]] = ("transceiver", "transmitter_receiver")
ID_FORMATS: Final[tuple[str, ...]] = ("auto", "hex", "dec", "opaque")
ERR_SPACES: Final[tuple[str, ...]] = ("map", "map40", "none")
MQTT_PROTOCOLS: Final[tuple[str, ...]] = ("5", "3.1.1")
# Where the feed's MQTT publisher runs: a child process (its own core) or the proxy's loop.
FEED_PUBLISHERS: Final[tuple[str, ...]] = ("process", "inline")
FEED_CLIENTS: Final[tuple[str, ...]] = ("builtin", "aiomqtt")
# [retry] mode: the static schedules, or the next attempt from recovery estimates.
RETRY_MODES: Final[tuple[str, ...]] = ("static", "learned")
LOG_LEVELS: Final[tuple[str, ...]] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# `bounceback run`'s event loop: "auto" is uvloop when it can be imported and the TLS
# listener is off, else asyncio. uvloop starts reading a connection even when its
# protocol pauses it in connection_made, so a held TLS connection could lose its
# ClientHello before start_tls: the TLS listener runs on asyncio only.
EVENT_LOOPS: Final[tuple[str, ...]] = ("auto", "uvloop", "asyncio")

# The four rule tables of a classification entry, in the order they are explained.
RULE_TABLES: Final[tuple[str, ...]] = ("err", "status", "stat", "network_error_code")


# ---------------------------------------------------------------- model


@attrs.frozen
class Schedule:
    """Per-reason backoff: ``initial * factor ** (n - 1)`` seconds, capped at `max`."""

    initial: float
    factor: float
    max: float
    # [retry] mode = "learned": the bounds of the delay a recovery estimate chooses.
    learned_min: float = 60.0
    learned_max: float = 86400.0

    def delay(self, attempt: int) -> float:
        """The delay before retry number `attempt` (1 = the first retry), without jitter."""
        try:
            grown = self.initial * self.factor ** max(attempt - 1, 0)
        except OverflowError:  # thousands of retries (link failures until the deadline)
            return float(self.max)
        return float(min(grown, self.max))


DEFAULT_SCHEDULES: Final[Mapping[str, Schedule]] = MappingProxyType(
    {
        "throttled": Schedule(2.0, 2.0, 60.0),
        "congestion": Schedule(10.0, 2.0, 300.0),
        "system_failure": Schedule(30.0, 2.0, 600.0),
        "network": Schedule(60.0, 2.0, 1800.0),
        "routing": Schedule(60.0, 2.0, 1800.0),
        "timeout": Schedule(30.0, 2.0, 600.0),
        "not_bound": Schedule(5.0, 2.0, 60.0),
        "subscriber_busy": Schedule(60.0, 2.0, 900.0),
        "absent_subscriber": Schedule(600.0, 2.0, 14400.0),
        "memory_full": Schedule(3600.0, 2.0, 21600.0),
        "unknown_state": Schedule(300.0, 2.0, 3600.0),
        "expired": Schedule(1800.0, 2.0, 14400.0),
    }
)


@attrs.frozen
class ServerConfig:
    """The ESME-facing listener (``[server]``). Durations are in seconds."""

    host: str = "127.0.0.1"
    port: int = 2775
    instance_id: str = ""  # empty: derived at start
    enquire_link_interval: float = 30.0  # idle time before we send enquire_link
    response_timeout: float = 10.0
    inactivity_timeout: float = 120.0  # a session silent this long is closed
    bind_timeout: float = 10.0  # a connection not bound by then is closed
    max_pdu_size: int = 65536 + 1024
    submit_wait: float = 5.0  # bounded wait for the carrier's submit_sm_resp (ack="carrier")
    max_connections: int = 1000
    max_connections_per_ip: int = 50
    shutdown_grace: float = 10.0
    event_loop: str = "auto"  # "auto" (uvloop when installed and no TLS) | "uvloop" | "asyncio"
    # Young-generation threshold of Python's cyclic garbage collector in `run`
    # (CPython's default is 700); 0 leaves the collector as Python set it.
    gc_threshold: int = 20000
    tls_port: int = 3550  # the TLS listener (IANA "ssmpp"), on when tls_cert is set
    tls_cert: str = ""  # PEM certificate chain of the TLS listener
    tls_key: str = ""  # its private key ("" = inside tls_cert)
    tls_client_ca: str = ""  # set: senders must present a certificate issued by this CA
    plain: bool = True  # listen on plain TCP `port` as well
    failed_bind_limit: int = 5  # failed binds from one address within the window ...
    failed_bind_window: float = 60.0
    lockout_seconds: float = 300.0  # ... lock it out this long


@attrs.frozen
class Account:
    """A sender allowed to bind (``[[accounts]]``)."""

    system_id: str
    password: str = attrs.field(default="", repr=False)
    password_env: str = ""  # the variable the password came from, "" when inline
    bind_types: tuple[str, ...] = BIND_TYPES
    max_binds: int = 8
    throughput: float = 0.0  # messages per second; 0 = unlimited
    window: int = 10
    ack: str = "carrier"  # "carrier" | "stored"
    suppression: str = "reject"  # "reject" | "pass"
    allowed_ips: tuple[str, ...] = ()  # CIDR networks; empty = any address
    mask_destinations: bool = False
    allow_empty_password: bool = False  # password = "" is a mistake unless this says so

    def allows_ip(self, address: str) -> bool:
        """Whether a connection from `address` may bind as this account."""
        if not self.allowed_ips:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in ipaddress.ip_network(net, strict=False) for net in self.allowed_ips)

    def allows_bind(self, bind_type: str) -> bool:
        """Whether this account may bind as `bind_type` ("transmitter", "receiver", ...)."""
        return bind_type in self.bind_types


@attrs.frozen
class Carrier:
    """An upstream SMSC we bind to as an ESME (``[[carriers]]``)."""

    name: str
    host: str
    system_id: str
    port: int = 2775
    password: str = attrs.field(default="", repr=False)
    password_env: str = ""
    system_type: str = ""
    bind_mode: str = "transceiver"  # "transceiver" | "transmitter_receiver"
    window: int = 10
    throughput: float = 0.0  # messages per second; 0 = unlimited
    enquire_link_interval: float = 30.0
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    # A bind lost sooner than this is short-lived: binds that keep being short-lived
    # mark the carrier as flapping and keep growing the reconnect delay.
    stable_after: float = 30.0
    submit_timeout: float = 10.0
    id_format: str = "auto"  # form of the ids in its submit_sm_resp
    receipt_id_format: str = "auto"  # form of the ids in its receipts
    # Seconds a submitted message waits for its receipt before the carrier is asked
    # with query_sm (then again with doubling waits); 0 = never ask.
    receipt_query_after: float = 600.0
    mo_account: str = ""  # account receiving its mobile-originated messages; "" = none
    mo_routes: dict[str, str] = attrs.field(factory=dict)  # destination -> account
    tls: bool = False
    tls_ca: str = ""
    tls_verify: bool = True
    allow_empty_password: bool = False  # password = "" is a mistake unless this says so

    def mo_account_for(self, destination: str) -> str:
        """The account that gets a mobile-originated message sent to `destination`."""
        return self.mo_routes.get(destination, self.mo_account)


@attrs.frozen
class Route:
    """Which carriers serve a destination prefix, in fallback order (``[[routes]]``)."""

    carriers: tuple[str, ...]
    prefix: str = ""  # digits; "" matches every destination
    accounts: tuple[str, ...] = ()  # empty = every account

    def matches(self, system_id: str, destination: str) -> bool:
        if self.accounts and system_id not in self.accounts:
            return False
        return destination.lstrip("+").startswith(self.prefix)


@attrs.frozen
class RetryConfig:
    """How soft bounces are retried and when numbers are flagged (``[retry]``)."""

    max_attempts: int = 16
    max_age: float = 172800.0
    jitter: float = 0.2  # fraction of each delay
    default_validity: float = 172800.0  # when the sender gave no validity period
    alternate_carrier: bool = False
    quiet_hours_start: str = ""  # "HH:MM", destination local time
    quiet_hours_end: str = ""
    flag_threshold: int = 5  # soft bounces within flag_window that flag a number
    flag_window: float = 86400.0
    flag_stops_retries: bool = False
    suppression_ttl: float = 7776000.0
    schedules: dict[str, Schedule] = attrs.field(factory=lambda: dict(DEFAULT_SCHEDULES))
    # number prefix -> IANA time zone, before what the numbering plan says
    time_zones: dict[str, str] = attrs.field(factory=dict)
    mode: str = "static"  # RETRY_MODES
    learn_margin: float = 0.1  # on-time share above the static schedules'
    learn_delay: float = 0.0  # target delay; 0: the static schedules' median delay
    learn_min_at_risk: float = 20.0
    learn_max_keys: int = 5000
    learn_flush: float = 15.0

    def schedule(self, reason: str) -> Schedule:
        """The schedule for a soft reason (the unknown_state one for a reason not listed)."""
        found = self.schedules.get(reason)
        if found is not None:
            return found
        return self.schedules.get("unknown_state", DEFAULT_SCHEDULES["unknown_state"])

    def quiet_hours(self) -> tuple[dt.time, dt.time] | None:
        """(start, end) local times, or None when quiet hours are off."""
        if not self.quiet_hours_start or not self.quiet_hours_end:
            return None
        return (
            dt.time.fromisoformat(self.quiet_hours_start),
            dt.time.fromisoformat(self.quiet_hours_end),
        )


def _empty_entry(err_space: str | None = "map") -> dict[str, Any]:
    entry: dict[str, Any] = {} if err_space is None else {"err_space": err_space}
    for name in RULE_TABLES:
        entry[name] = {}
    return entry


@attrs.frozen
class ClassifyConfig:
    """Classification overrides (``[classify]``), kept as plain data.

    `defaults` is a complete entry: ``{"err_space": str, "err": {...}, "status": {...},
    "stat": {...}, "network_error_code": {...}}`` whose rule tables map a key (an err
    string as written, a command_status as ``"0x45"``, an upper-case stat word, a
    ``"type/code"`` pair) to ``"soft:<reason>"``, ``"hard:<reason>"``, ``"pending"``,
    ``"pending:<reason>"``, ``"delivered"`` (stat tables only) or a table with ``kind``,
    ``reason`` and optional ``max_retries`` and ``description``. `carriers` holds each
    carrier's own entry, where ``err_space`` is present only when the carrier sets it.
    The rules engine (``smppcodecs.classify.Rules.from_mapping``) reads `for_carrier()`.
    """

    defaults: dict[str, Any] = attrs.field(factory=_empty_entry)
    carriers: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def for_carrier(self, name: str) -> dict[str, Any]:
        """The defaults with the carrier's own entry merged over them (a fresh copy)."""
        merged = _empty_entry()
        _merge_entry(merged, self.defaults)
        own = self.carriers.get(name)
        if own is not None:
            _merge_entry(merged, own)
        return merged


@attrs.frozen
class StoreConfig:
    """Where message state lives (``[store]``): SQLite by default, PostgreSQL with `url`."""

    path: str = "bounceback.db"  # resolved against the config file's folder at load
    url: str = attrs.field(default="", repr=lambda url: repr(_mask_url(url)))
    retention_days: float = 30.0
    batch_max: int = 512
    # Group commit: the longest a write waits for more writes, only while writes are
    # queuing (a write to an idle store goes at once), seconds.
    batch_delay: float = 0.002
    lease_seconds: float = 30.0
    # SQLite: how long a write waits for a database another process holds locked.
    write_timeout: float = 2.0

    @property
    def backend(self) -> str:
        """The backend: "postgresql" when a URL is set, else "sqlite"."""
        return "postgresql" if self.url else "sqlite"


@attrs.frozen
class FeedConfig:
    """The MQTT status feed (``[feed]``)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = attrs.field(default="", repr=False)
    password_env: str = ""
    tls: bool = False
    tls_ca: str = ""
    client_id: str = ""
    protocol: str = "3.1.1"  # "3.1.1" | "5" (the feed uses no MQTT 5 feature)
    prefix: str = "bounceback/v1"
    qos: int = 1
    mask_destinations: bool = True
    mask_keep: int = 4  # digits kept at the end of a masked destination
    stats_interval: float = 5.0
    outbox_max: int = 1_000_000
    keepalive: int = 30
    publisher: str = "process"  # FEED_PUBLISHERS
    client: str = "builtin"  # FEED_CLIENTS: the feed's own MQTT client, or aiomqtt


@attrs.frozen
class MetricsConfig:
    """The Prometheus endpoint (``[metrics]``)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9102
    tls_cert: str = ""  # PEM certificate chain: the listener speaks HTTPS when set
    tls_key: str = ""  # its private key ("" = inside tls_cert)


ADMIN_SCOPES: Final = ("read", "admin")


@attrs.frozen
class AdminToken:
    """One bearer token of the admin API (``[[admin.tokens]]``): `name` is what logs
    and the feed say made a change; `scope` ``read`` may look, ``admin`` may also act."""

    name: str
    scope: str = "read"
    token: str = attrs.field(default="", repr=False)
    token_env: str = ""  # the variable the token came from, "" when inline


@attrs.frozen
class AdminConfig:
    """The admin API (``[admin]``), served on the ``[metrics]`` listener under ``/v1``."""

    open_health: bool = True
    tokens: tuple[AdminToken, ...] = ()


@attrs.frozen
class LoggingConfig:
    """``[logging]``."""

    level: str = "INFO"
    json: bool = False
    mask_destinations: bool = True


@attrs.frozen
class Config:
    """The whole configuration. `source` is the file it came from (for messages)."""

    source: str = "<config>"
    server: ServerConfig = attrs.field(factory=ServerConfig)
    accounts: tuple[Account, ...] = ()
    carriers: tuple[Carrier, ...] = ()
    routes: tuple[Route, ...] = ()
    retry: RetryConfig = attrs.field(factory=RetryConfig)
    classify: ClassifyConfig = attrs.field(factory=ClassifyConfig)
    store: StoreConfig = attrs.field(factory=StoreConfig)
    feed: FeedConfig | None = None
    metrics: MetricsConfig | None = None
    admin: AdminConfig | None = None
    logging: LoggingConfig = attrs.field(factory=LoggingConfig)

    def account(self, system_id: str) -> Account | None:
        for account in self.accounts:
            if account.system_id == system_id:
                return account
        return None

    def carrier(self, name: str) -> Carrier | None:
        for carrier in self.carriers:
            if carrier.name == name:
                return carrier
        return None

    def route_for(self, system_id: str, destination: str) -> Route | None:
        """The route for a message: the longest matching prefix wins; at equal length a
        route naming the account beats one for every account, then the earlier one."""
        best: Route | None = None
        best_rank = (-1, -1)
        for route in self.routes:
            if not route.matches(system_id, destination):
                continue
            rank = (len(route.prefix), 1 if route.accounts else 0)
            if rank > best_rank:
                best, best_rank = route, rank
        return best

    def carriers_for(self, system_id: str, destination: str) -> tuple[Carrier, ...]:
        """The carriers to try, in order; every carrier (config order) when no route matches."""
        route = self.route_for(system_id, destination)
        if route is None:
            return self.carriers
        found = (self.carrier(name) for name in route.carriers)
        return tuple(carrier for carrier in found if carrier is not None)


# ---------------------------------------------------------------- reload

# What a reload (SIGHUP, POST /v1/reload) applies to the running proxy, and what only a
# restart can: listeners, carrier links, the store, the feed and the HTTP listener are
# set up once at start.
LIVE_SECTIONS: Final = ("accounts", "routes", "retry", "classify", "logging", "admin")
RESTART_SECTIONS: Final = ("server", "carriers", "store", "feed", "metrics")


def reloaded(running: Config, new: Config) -> tuple[Config, list[str], list[str]]:
    """The configuration to run with after reading `new`: its live sections over the
    running one's restart-only sections; then the live sections that changed and the
    restart-only ones that differ (they wait for a restart)."""
    changed = [s for s in LIVE_SECTIONS if getattr(running, s) != getattr(new, s)]
    waiting = [s for s in RESTART_SECTIONS if getattr(running, s) != getattr(new, s)]
    kept: dict[str, Any] = {s: getattr(running, s) for s in RESTART_SECTIONS}
    return attrs.evolve(new, **kept), changed, waiting


# ---------------------------------------------------------------- problems


@attrs.frozen
class ConfigProblem:
    """One thing wrong with a config: renders as ``FILE: KEY: message``."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        if self.key:
            return f"{self.file}: {self.key}: {self.message}"
        return f"{self.file}: {self.message}"


class ConfigError(Exception):
    """Every problem found in a config, one per line in `str()`."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems: list[ConfigProblem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


# ---------------------------------------------------------------- value rendering

_MISSING: Final = object()
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class _Indexed(str):
    """A key already rendered with an array index, e.g. ``carriers[1]``."""

    __slots__ = ()


def _item(name: str, index: int) -> str:
    return _Indexed(f"{_join('', name)}[{index}]")


def _join(path: str, key: str) -> str:
    bare = isinstance(key, _Indexed) or _BARE_KEY.fullmatch(key)
    part = key if bare else json.dumps(key, ensure_ascii=False)
    return f"{path}.{part}" if path else part


def _num(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _show(value: object, secret: bool = False) -> str:
    """A value as the message shows it; for a secret only its kind."""
    if isinstance(value, bool):
        kind, text = "a boolean", "true" if value else "false"
    elif isinstance(value, int):
        kind, text = "an integer", str(value)
    elif isinstance(value, float):
        kind, text = "a number", _num(value)
    elif isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        kind, text = "a string", json.dumps(shown, ensure_ascii=False)
    elif isinstance(value, list):
        return "an array"
    elif isinstance(value, dict):
        return "a table"
    elif isinstance(value, dt.date | dt.time):
        return "a date/time value"
    else:
        return f"a value of type {type(value).__name__}"
    return kind if secret else text


def _suggest(name: str, known: Sequence[str]) -> str | None:
    """The known name closest to a misspelt one, or None."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return close[0]
    starting = [k for k in known if k.startswith(name) or name.startswith(k)]
    return starting[0] if len(starting) == 1 else None


def _choices(values: Iterable[str]) -> str:
    quoted = [json.dumps(v) for v in values]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _names(values: Iterable[str], what: str) -> str:
    items = sorted(values)
    if not items:
        return f"no {what} are defined"
    if len(items) > 12:
        return "known: " + ", ".join(items[:12]) + f" and {len(items) - 12} more"
    return "known: " + ", ".join(items)


def _range(noun: str, lo: float | None, hi: float | None, above: bool) -> str:
    if lo is not None and hi is not None:
        return f"{noun} from {_num(lo)} to {_num(hi)}"
    if lo is not None:
        return f"{noun} greater than {_num(lo)}" if above else f"{noun} of at least {_num(lo)}"
    if hi is not None:
        return f"{noun} of at most {_num(hi)}"
    return noun


def _mask_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    if not url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return "<unparsable URL>"
    if not has_password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


# ---------------------------------------------------------------- table reader


class _Table:
    """Typed, recorded access to one TOML table; unread keys are reported as unknown."""

    __slots__ = ("_seen", "data", "file", "path", "sink")

    def __init__(
        self, sink: list[ConfigProblem], file: str, path: str, data: Mapping[str, Any]
    ) -> None:
        self.sink = sink
        self.file = file
        self.path = path
        self.data = data
        self._seen: set[str] = set()

    def key(self, name: str | None) -> str:
        return self.path if name is None else _join(self.path, name)

    def problem(self, name: str | None, message: str) -> None:
        self.sink.append(ConfigProblem(self.file, self.key(name), message))

    def known(self, *names: str) -> None:
        self._seen.update(names)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> Any:
        self._seen.add(name)
        return self.data.get(name, _MISSING)

    def child(self, name: str, data: Mapping[str, Any]) -> _Table:
        return _Table(self.sink, self.file, self.key(name), data)

    def finish(self) -> None:
        known = sorted(self._seen)
        for name in self.data:
            if name in self._seen:
                continue
            close = _suggest(name, known)
            hint = f' (did you mean "{close}"?)' if close else ""
            self.problem(name, "unknown key" + hint)

    # -- scalars

    def string(
        self,
        name: str,
        default: str = "",
        *,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        what: str = "a string",
        secret: bool = False,
    ) -> str:
        value = self.raw(name)
        if value is _MISSING:
            if required:
                self.problem(name, "missing required key")
            return default
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            self.problem(name, f"expected {what}, got {_show(value, secret)}")
            return default
        return value

    def choice(self, name: str, default: str, choices: Sequence[str], *, fold: bool = False) -> str:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if isinstance(value, str):
            candidate = value.upper() if fold else value
            if candidate in choices:
                return candidate
        self.problem(name, f"expected {_choices(choices)}, got {_show(value)}")
        return default

    def integer(
        self, name: str, default: int, *, lo: int | None = None, hi: int | None = None
    ) -> int:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or (lo is not None and value < lo)
            or (hi is not None and value > hi)
        ):
            self.problem(
                name, f"expected {_range('an integer', lo, hi, False)}, got {_show(value)}"
            )
            return default
        return value

    def number(
        self,
        name: str,
        default: float,
        *,
        lo: float | None = None,
        hi: float | None = None,
        above: bool = False,
    ) -> float:
        """A float (integers accepted); `above` makes `lo` exclusive."""
        value = self.raw(name)
        if value is _MISSING:
            return default
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            number = float(value)
            ok = math.isfinite(number)
            if ok and lo is not None:
                ok = number > lo if above else number >= lo
            if ok and hi is not None:
                ok = number <= hi
            if ok:
                return number
        self.problem(name, f"expected {_range('a number', lo, hi, above)}, got {_show(value)}")
        return default

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(name, f"expected true or false, got {_show(value)}")
            return default
        return value

    def port(self, name: str, default: int, *, listen: bool = False) -> int:
        # A listening port may be 0: the system picks a free one (tests, several instances).
        return self.integer(name, default, lo=0 if listen else 1, hi=65535)

    # -- compound

    def strings(
        self,
        name: str,
        default: Sequence[str] = (),
        *,
        required: bool = False,
        nonempty: bool = False,
        choices: Sequence[str] | None = None,
        what: str = "an array of strings",
    ) -> tuple[str, ...]:
        """An array of distinct strings; bad items are reported by index and dropped."""
        value = self.raw(name)
        if value is _MISSING:
            if required:
                self.problem(name, "missing required key")
            return tuple(default)
        if not isinstance(value, list):
            self.problem(name, f"expected {what}, got {_show(value)}")
            return tuple(default)
        if nonempty and not value:
            self.problem(name, f"expected a non-empty {what.removeprefix('an ')}, got []")
        out: list[str] = []
        for index, item in enumerate(value):
            where = _item(name, index)
            if not isinstance(item, str):
                self.problem(where, f"expected a string, got {_show(item)}")
            elif choices is not None and item not in choices:
                self.problem(where, f"expected {_choices(choices)}, got {_show(item)}")
            elif item in out:
                self.problem(where, f"{_show(item)} is listed twice")
            else:
                out.append(item)
        return tuple(out)

    def table(self, name: str) -> _Table | None:
        value = self.raw(name)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.problem(name, f"expected a table, got {_show(value)}")
            return None
        return self.child(name, value)

    def section(self, name: str) -> _Table:
        """A table that may be absent: absent (or malformed) reads as empty."""
        found = self.table(name)
        return found if found is not None else self.child(name, {})

    def tables(self, name: str) -> list[_Table]:
        """An array of tables (``[[name]]``)."""
        value = self.raw(name)
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            self.problem(name, f"expected an array of tables ([[{name}]]), got {_show(value)}")
            return []
        out: list[_Table] = []
        for index, item in enumerate(value):
            where = _item(name, index)
            if isinstance(item, dict):
                out.append(self.child(where, item))
            else:
                self.problem(where, f"expected a table, got {_show(item)}")
        return out


# ---------------------------------------------------------------- patterns

_SYSTEM_ID = re.compile(r"[!-~]{1,15}")
_SYSTEM_TYPE = re.compile(r"[!-~]{0,12}")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{0,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST = re.compile(r"\S+")
_DIGITS = re.compile(r"\+?[0-9]*")
_MO_KEY = re.compile(r"\+?[0-9A-Za-z]{1,21}")
_HHMM = re.compile(r"(?:(?:[01][0-9]|2[0-3]):[0-5][0-9])?")
_TOPIC_PREFIX = re.compile(r"[^/+#\x00]+(?:/[^/+#\x00]+)*")
_ERR_KEY = re.compile(r"[A-Za-z0-9]{1,10}")
_STATUS_KEY = re.compile(r"(?:0[xX]([0-9A-Fa-f]{1,8})|([0-9]{1,10}))")
_STAT_KEY = re.compile(r"[A-Za-z]{1,16}")
_NEC_KEY = re.compile(r"([0-9]{1,3})/([0-9]{1,5})")
_HARD_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")
_TOML_POSITION = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", re.DOTALL)


# ---------------------------------------------------------------- loading


class _Loader:
    """Holds what every section parser needs: the problem sink, folder and environment."""

    def __init__(
        self, sink: list[ConfigProblem], base_dir: Path, environ: Mapping[str, str]
    ) -> None:
        self.sink = sink
        self.base_dir = base_dir
        self.environ = environ

    def path(self, value: str) -> Path:
        return self.base_dir / value

    def file_option(self, table: _Table, name: str) -> str:
        """A path option resolved against the config's folder; it must exist if set."""
        value = table.string(name, "")
        if not value:
            return ""
        target = self.path(value)
        if not target.is_file():
            table.problem(name, f"file not found: {target}")
            return ""
        return os.path.abspath(target)

    def secret(
        self,
        table: _Table,
        *,
        required: bool,
        resolve_env: bool = True,
        smpp: bool = True,
        key: str = "password",
    ) -> tuple[str, str]:
        """(secret, variable name) from `key` (``password``) or `key`_env (exactly one)."""
        env_key = f"{key}_env"
        has_inline, has_env = table.has(key), table.has(env_key)
        value = table.string(key, "", secret=True)
        if "\x00" in value:
            table.problem(key, "must not contain NUL characters")
            value = ""
        elif smpp and len(value) > 8:
            # SMPP 3.4 carries at most 8 characters (9 octets with the NUL).
            table.problem(key, "longer than the 8 characters SMPP 3.4 allows")
            value = ""
        env_name = table.string(env_key, "", pattern=_ENV_NAME, what="an environment variable name")
        if has_inline and has_env:
            table.problem(env_key, f"set either {key} or {env_key}, not both")
        elif required and not has_inline and not has_env:
            table.problem(key, f"missing required key (or set {env_key})")
        if env_name and resolve_env and not has_inline:
            found = self.environ.get(env_name)
            if found is None:
                table.problem(env_key, f"environment variable {env_name} is not set")
            elif not found:
                table.problem(env_key, f"environment variable {env_name} is empty")
            else:
                value = found
        return value, env_name


def _read_toml(display: str, path: Path) -> tuple[dict[str, Any] | None, ConfigProblem | None]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, ConfigProblem(display, "", "file not found")
    except IsADirectoryError:
        return None, ConfigProblem(display, "", "is a directory, not a file")
    except OSError as exc:
        return None, ConfigProblem(display, "", f"cannot read the file: {exc.strerror or exc}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, ConfigProblem(display, "", f"not valid UTF-8 (at byte {exc.start})")
    try:
        return tomllib.loads(text), None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_POSITION.match(message)
        if found is None:
            return None, ConfigProblem(display, "", f"invalid TOML: {message}")
        what, line, column = found.groups()
        return None, ConfigProblem(
            display, f"line {line}, column {column}", f"invalid TOML: {what}"
        )


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read, validate and return the config at `path`; raise `ConfigError` listing every
    problem. Relative paths inside it are resolved against the file's folder;
    ``password_env`` variables are looked up in `environ` (default: the process's)."""
    source = os.fspath(path)
    data, problem = _read_toml(source, Path(source))
    if problem is not None or data is None:
        raise ConfigError([problem] if problem is not None else [])
    return parse_config(data, source=source, base_dir=Path(source).parent, environ=environ)


def parse_config(
    data: Mapping[str, Any],
    *,
    source: str,
    base_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate already-parsed TOML data (see `load_config`)."""
    sink: list[ConfigProblem] = []
    loader = _Loader(sink, Path(base_dir), os.environ if environ is None else environ)
    top = _Table(sink, source, "", data)

    server = _parse_server(top.section("server"), loader)

    account_tables = top.tables("accounts")
    account_ids = _raw_names(account_tables, "system_id")
    accounts = tuple(_parse_account(t, loader) for t in account_tables)
    _check_unique(account_tables, "system_id", "system_id")
    if data.get("accounts", []) == []:
        top.problem("accounts", "at least one [[accounts]] entry is required")

    carrier_tables = top.tables("carriers")
    carrier_names = _raw_names(carrier_tables, "name")
    carriers = tuple(_parse_carrier(t, loader, account_ids) for t in carrier_tables)
    _check_unique(carrier_tables, "name", "carrier name")
    if data.get("carriers", []) == []:
        top.problem("carriers", "at least one [[carriers]] entry is required")

    routes = _parse_routes(top.tables("routes"), account_ids, carrier_names)
    retry = _parse_retry(top.section("retry"))
    classify = _parse_classify(top.section("classify"), loader, carrier_names)
    store = _parse_store(top.section("store"), loader)
    feed = _parse_feed(top.table("feed"), loader)
    metrics = _parse_metrics(top.table("metrics"), loader)
    if metrics is not None:
        _check_metrics_port(sink, source, server, metrics)
    admin = _parse_admin(top.table("admin"), loader, metrics)
    logging = _parse_logging(top.section("logging"))
    top.finish()

    if sink:
        raise ConfigError(sink)
    return Config(
        source=source,
        server=server,
        accounts=accounts,
        carriers=carriers,
        routes=routes,
        retry=retry,
        classify=classify,
        store=store,
        feed=feed,
        metrics=metrics,
        admin=admin,
        logging=logging,
    )


def _check_metrics_port(
    sink: list[ConfigProblem], source: str, server: ServerConfig, metrics: MetricsConfig
) -> None:
    """The metrics endpoint cannot share a port with an SMPP listener (0: chosen at start)."""
    if metrics.port == 0:
        return
    if server.plain and metrics.port == server.port:
        message = f"the same as server.port ({server.port}): the SMPP listener's port"
        sink.append(ConfigProblem(source, "metrics.port", message))
    elif server.tls_cert and metrics.port == server.tls_port:
        message = f"the same as server.tls_port ({server.tls_port}): the TLS listener's port"
        sink.append(ConfigProblem(source, "metrics.port", message))


def _raw_names(tables: Sequence[_Table], key: str) -> set[str]:
    """Names as written, even in otherwise broken entries (to avoid cascading errors)."""
    return {t.data[key] for t in tables if isinstance(t.data.get(key), str) and t.data[key]}


def _check_unique(tables: Sequence[_Table], key: str, what: str) -> None:
    first: dict[str, str] = {}
    for table in tables:
        value = table.data.get(key)
        if not isinstance(value, str) or not value:
            continue
        if value in first:
            table.problem(key, f"duplicate {what} {_show(value)} (also in {first[value]})")
        else:
            first[value] = table.path


# ---------------------------------------------------------------- sections


def _parse_server(t: _Table, loader: _Loader) -> ServerConfig:
    d = ServerConfig()
    server = ServerConfig(
        host=t.string("host", d.host, pattern=_HOST, what="a host name or address"),
        port=t.port("port", d.port, listen=True),
        instance_id=t.string(
            "instance_id",
            d.instance_id,
            pattern=_INSTANCE_ID,
            what='up to 64 letters, digits, ".", "_" or "-"',
        ),
        enquire_link_interval=t.number(
            "enquire_link_interval", d.enquire_link_interval, lo=0, above=True
        ),
        response_timeout=t.number("response_timeout", d.response_timeout, lo=0, above=True),
        inactivity_timeout=t.number("inactivity_timeout", d.inactivity_timeout, lo=0, above=True),
        bind_timeout=t.number("bind_timeout", d.bind_timeout, lo=0, above=True),
        max_pdu_size=t.integer("max_pdu_size", d.max_pdu_size, lo=1024, hi=16 * 1024 * 1024),
        submit_wait=t.number("submit_wait", d.submit_wait, lo=0, above=True),
        max_connections=t.integer("max_connections", d.max_connections, lo=1),
        max_connections_per_ip=t.integer("max_connections_per_ip", d.max_connections_per_ip, lo=1),
        shutdown_grace=t.number("shutdown_grace", d.shutdown_grace, lo=0),
        event_loop=t.choice("event_loop", d.event_loop, EVENT_LOOPS),
        gc_threshold=t.integer("gc_threshold", d.gc_threshold, lo=0, hi=10_000_000),
        tls_port=t.port("tls_port", d.tls_port, listen=True),
        tls_cert=loader.file_option(t, "tls_cert"),
        tls_key=loader.file_option(t, "tls_key"),
        tls_client_ca=loader.file_option(t, "tls_client_ca"),
        plain=t.boolean("plain", d.plain),
        failed_bind_limit=t.integer("failed_bind_limit", d.failed_bind_limit, lo=1),
        failed_bind_window=t.number("failed_bind_window", d.failed_bind_window, lo=0, above=True),
        lockout_seconds=t.number("lockout_seconds", d.lockout_seconds, lo=0, above=True),
    )
    tls_set = t.has("tls_cert") and t.data["tls_cert"] != ""
    for name in ("tls_key", "tls_client_ca"):
        if t.has(name) and t.data[name] != "" and not tls_set:
            t.problem(name, "needs tls_cert (the TLS listener is off without it)")
    if not server.plain and not tls_set:
        t.problem("plain", "false leaves no listener: set tls_cert, or plain = true")
    if server.plain and tls_set and server.port == server.tls_port != 0:
        t.problem("tls_port", f"must differ from port ({server.port})")
    if server.event_loop == "uvloop" and tls_set:
        t.problem(
            "event_loop",
            '"uvloop" cannot serve the TLS listener (tls_cert is set): it may read a '
            'connection before its TLS handshake starts; set "auto" or "asyncio"',
        )
    if server.tls_cert:
        from bounceback.config.certs import cert_chain_problem

        chain = cert_chain_problem(server.tls_cert, server.tls_key)
        if chain is not None:
            t.problem(*chain)
    _check_ca_file(t, "tls_client_ca", server.tls_client_ca)
    t.finish()
    return server


def _check_ca_file(t: _Table, name: str, path: str) -> None:
    """A CA file that exists must also hold certificates (`run` would fail on it)."""
    if path:
        from bounceback.config.certs import ca_file_problem

        problem = ca_file_problem(path)
        if problem is not None:
            t.problem(name, problem)


def _parse_account(t: _Table, loader: _Loader) -> Account:
    system_id = t.string(
        "system_id",
        required=True,
        pattern=_SYSTEM_ID,
        what="1 to 15 printable ASCII characters without spaces",
    )
    password, password_env = loader.secret(t, required=True)
    allowed: list[str] = []
    for index, item in enumerate(t.strings("allowed_ips", ())):
        try:
            allowed.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            t.problem(
                _item("allowed_ips", index),
                f"expected an IP address or CIDR network, got {_show(item)}",
            )
    account = Account(
        system_id=system_id,
        password=password,
        password_env=password_env,
        bind_types=t.strings("bind_types", BIND_TYPES, nonempty=True, choices=BIND_TYPES),
        max_binds=t.integer("max_binds", 8, lo=1),
        throughput=t.number("throughput", 0.0, lo=0),
        window=t.integer("window", 10, lo=1),
        ack=t.choice("ack", "carrier", ACK_MODES),
        suppression=t.choice("suppression", "reject", SUPPRESSION_MODES),
        allowed_ips=tuple(allowed),
        mask_destinations=t.boolean("mask_destinations", False),
        allow_empty_password=_empty_password_check(t),
    )
    t.finish()
    return account


def _empty_password_check(t: _Table) -> bool:
    """``allow_empty_password``; without it an inline ``password = ""`` is a problem."""
    allowed = t.boolean("allow_empty_password", False)
    if t.data.get("password") == "" and not allowed:
        t.problem(
            "password",
            "empty: set the password (or password_env), or allow_empty_password = true "
            "when the peer really has none",
        )
    return allowed


def _account_ref(t: _Table, name: str, value: object, accounts: set[str]) -> str:
    if not isinstance(value, str):
        t.problem(name, f"expected an account system_id, got {_show(value)}")
        return ""
    if value not in accounts:
        t.problem(name, f"unknown account {_show(value)} ({_names(accounts, 'accounts')})")
        return ""
    return value


def _parse_carrier(t: _Table, loader: _Loader, accounts: set[str]) -> Carrier:
    d = Carrier(name="", host="", system_id="")
    name = t.string(
        "name", required=True, pattern=_NAME, what='a name of letters, digits, ".", "_" or "-"'
    )
    host = t.string("host", required=True, pattern=_HOST, what="a host name or address")
    system_id = t.string(
        "system_id",
        required=True,
        pattern=_SYSTEM_ID,
        what="1 to 15 printable ASCII characters without spaces",
    )
    password, password_env = loader.secret(t, required=True)
    mo_account = ""
    raw_mo = t.raw("mo_account")
    if raw_mo is not _MISSING and raw_mo != "":
        mo_account = _account_ref(t, "mo_account", raw_mo, accounts)
    mo_routes: dict[str, str] = {}
    routes_table = t.table("mo_routes")
    if routes_table is not None:
        for key, value in routes_table.data.items():
            routes_table.known(key)
            if not _MO_KEY.fullmatch(key):
                routes_table.problem(
                    key, f"expected a short code or number as the key, got {_show(key)}"
                )
                continue
            target = _account_ref(routes_table, key, value, accounts)
            if target:
                mo_routes[key.lstrip("+")] = target
    reconnect_min = t.number("reconnect_min", d.reconnect_min, lo=0, above=True)
    reconnect_max = t.number("reconnect_max", d.reconnect_max, lo=0, above=True)
    if reconnect_max < reconnect_min:
        t.problem("reconnect_max", f"must be at least reconnect_min ({_num(reconnect_min)})")
    carrier = Carrier(
        name=name,
        host=host,
        system_id=system_id,
        port=t.port("port", d.port),
        password=password,
        password_env=password_env,
        system_type=t.string(
            "system_type", "", pattern=_SYSTEM_TYPE, what="up to 12 printable ASCII characters"
        ),
        bind_mode=t.choice("bind_mode", d.bind_mode, BIND_MODES),
        window=t.integer("window", d.window, lo=1),
        throughput=t.number("throughput", d.throughput, lo=0),
        enquire_link_interval=t.number(
            "enquire_link_interval", d.enquire_link_interval, lo=0, above=True
        ),
        reconnect_min=reconnect_min,
        reconnect_max=reconnect_max,
        stable_after=t.number("stable_after", d.stable_after, lo=0, above=True),
        submit_timeout=t.number("submit_timeout", d.submit_timeout, lo=0, above=True),
        id_format=t.choice("id_format", d.id_format, ID_FORMATS),
        receipt_id_format=t.choice("receipt_id_format", d.receipt_id_format, ID_FORMATS),
        receipt_query_after=t.number("receipt_query_after", d.receipt_query_after, lo=0),
        mo_account=mo_account,
        mo_routes=mo_routes,
        tls=t.boolean("tls", d.tls),
        tls_ca=loader.file_option(t, "tls_ca"),
        tls_verify=t.boolean("tls_verify", d.tls_verify),
        allow_empty_password=_empty_password_check(t),
    )
    _check_ca_file(t, "tls_ca", carrier.tls_ca)
    t.finish()
    return carrier


def _parse_routes(
    tables: Sequence[_Table], accounts: set[str], carriers: set[str]
) -> tuple[Route, ...]:
    routes: list[Route] = []
    seen: dict[tuple[str, frozenset[str]], str] = {}
    for t in tables:
        prefix = t.string("prefix", "", pattern=_DIGITS, what="a destination prefix of digits")
        prefix = prefix.lstrip("+")
        route_accounts = t.strings("accounts", ())
        for index, name in enumerate(route_accounts):
            if name not in accounts:
                t.problem(
                    _item("accounts", index),
                    f"unknown account {_show(name)} ({_names(accounts, 'accounts')})",
                )
        route_carriers = t.strings(
            "carriers", (), required=True, nonempty=True, what="an array of carrier names"
        )
        for index, name in enumerate(route_carriers):
            if name not in carriers:
                t.problem(
                    _item("carriers", index),
                    f"unknown carrier {_show(name)} ({_names(carriers, 'carriers')})",
                )
        identity = (prefix, frozenset(route_accounts))
        if identity in seen:
            t.problem(None, f"duplicate route: same prefix and accounts as {seen[identity]}")
        else:
            seen[identity] = t.path
        routes.append(Route(carriers=route_carriers, prefix=prefix, accounts=route_accounts))
        t.finish()
    return tuple(routes)


def _parse_retry(t: _Table) -> RetryConfig:
    d = RetryConfig()
    max_age = t.number("max_age", d.max_age, lo=0, above=True)
    before = len(t.sink)
    start = t.string("quiet_hours_start", "", pattern=_HHMM, what='a local time "HH:MM"')
    end = t.string("quiet_hours_end", "", pattern=_HHMM, what='a local time "HH:MM"')
    if len(t.sink) != before:
        start = end = ""
    elif bool(start) != bool(end):
        missing = "quiet_hours_end" if start else "quiet_hours_start"
        t.problem(missing, "set both quiet_hours_start and quiet_hours_end, or neither")
        start = end = ""
    elif start and start == end:
        t.problem("quiet_hours_end", "must differ from quiet_hours_start")
        start = end = ""

    schedules = dict(DEFAULT_SCHEDULES)
    written: set[str] = set()
    table = t.table("schedules")
    if table is not None:
        for reason, value in table.data.items():
            table.known(reason)
            if reason not in SOFT_REASONS:
                close = _suggest(reason, SOFT_REASONS)
                hint = f'did you mean "{close}"? ' if close else ""
                table.problem(
                    reason,
                    f"unknown reason {_show(reason)} ({hint}valid: {', '.join(SOFT_REASONS)})",
                )
                continue
            if not isinstance(value, dict):
                table.problem(reason, f"expected a table, got {_show(value)}")
                continue
            schedules[reason] = _parse_schedule(
                table.child(reason, value), schedules[reason], max_age
            )
            written.add(reason)
    for reason in SOFT_REASONS:
        if reason not in written and schedules[reason].initial > max_age:
            t.problem(
                "max_age",
                f"retry schedule longer than the maximum age: {reason} waits "
                f"{_num(schedules[reason].initial)} s before its first retry "
                f"(set [retry.schedules.{reason}])",
            )
    time_zones: dict[str, str] = {}
    ztable = t.table("time_zones")
    if ztable is not None:
        for prefix, name in ztable.data.items():
            ztable.known(prefix)
            if not prefix.isdigit():
                ztable.problem(prefix, "expected a number prefix (digits only)")
            elif not isinstance(name, str):
                ztable.problem(
                    prefix, f'expected a time zone name such as "Europe/Moscow", got {_show(name)}'
                )
            else:
                try:
                    zoneinfo.ZoneInfo(name)
                except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
                    ztable.problem(prefix, f"unknown time zone {_show(name)}")
                else:
                    time_zones[prefix] = name
    retry = RetryConfig(
        max_attempts=t.integer("max_attempts", d.max_attempts, lo=1),
        max_age=max_age,
        jitter=t.number("jitter", d.jitter, lo=0, hi=1),
        default_validity=t.number("default_validity", d.default_validity, lo=0, above=True),
        alternate_carrier=t.boolean("alternate_carrier", d.alternate_carrier),
        quiet_hours_start=start,
        quiet_hours_end=end,
        flag_threshold=t.integer("flag_threshold", d.flag_threshold, lo=1),
        flag_window=t.number("flag_window", d.flag_window, lo=0, above=True),
        flag_stops_retries=t.boolean("flag_stops_retries", d.flag_stops_retries),
        suppression_ttl=t.number("suppression_ttl", d.suppression_ttl, lo=0, above=True),
        schedules=schedules,
        time_zones=time_zones,
        mode=t.choice("mode", d.mode, RETRY_MODES),
        learn_margin=t.number("learn_margin", d.learn_margin, lo=0, hi=1),
        learn_delay=t.number("learn_delay", d.learn_delay, lo=0),
        learn_min_at_risk=t.number("learn_min_at_risk", d.learn_min_at_risk, lo=1),
        learn_max_keys=t.integer("learn_max_keys", d.learn_max_keys, lo=16),
        learn_flush=t.number("learn_flush", d.learn_flush, lo=0, above=True),
    )
    t.finish()
    return retry


def _parse_schedule(t: _Table, default: Schedule, max_age: float) -> Schedule:
    initial = t.number("initial", default.initial, lo=0, above=True)
    factor = t.number("factor", default.factor, lo=1)
    cap = t.number("max", default.max, lo=0, above=True)
    if cap < initial:
        t.problem("max", f"must be at least initial ({_num(initial)})")
    if initial > max_age:
        t.problem(
            "initial",
            f"retry schedule longer than the maximum age ({_num(initial)} s > "
            f"retry.max_age {_num(max_age)} s)",
        )
    lmin = t.number("learned_min", default.learned_min, lo=0, above=True)
    lmax = t.number("learned_max", default.learned_max, lo=0, above=True)
    if lmax < lmin:
        t.problem("learned_max", f"must be at least learned_min ({_num(lmin)})")
    t.finish()
    return Schedule(initial, factor, cap, lmin, lmax)


# ---------------------------------------------------------------- classify


def _err_identity(key: str) -> str:
    return str(int(key)) if key.isdigit() else key.upper()


def _merge_entry(base: dict[str, Any], part: Mapping[str, Any]) -> None:
    if "err_space" in part:
        base["err_space"] = part["err_space"]
    for name in RULE_TABLES:
        rules: dict[str, Any] = base.setdefault(name, {})
        for key, outcome in part.get(name, {}).items():
            if name == "err":
                identity = _err_identity(key)
                for old in [k for k in rules if _err_identity(k) == identity]:
                    del rules[old]
            rules[key] = dict(outcome) if isinstance(outcome, dict) else outcome


_KINDS: Final[tuple[str, ...]] = ("delivered", "pending", "soft", "hard")
_PENDING_REASONS: Final[tuple[str, ...]] = ("enroute", "accepted")


def _outcome_forms(rules: str) -> str:
    forms = '"pending", "soft:<reason>", "hard:<reason>" or a table'
    return '"delivered", ' + forms if rules == "stat" else forms


def _kind_problem(kind: str, reason: str, rules: str) -> str | None:
    """What is wrong with an outcome's kind and reason, or None."""
    if kind == "delivered":
        if rules != "stat":
            return "only stat rules may say delivered"
        if reason not in ("", "delivered"):
            return f"a delivered outcome takes no reason, got {_show(reason)}"
        return None
    if kind == "pending":
        if reason not in ("", *_PENDING_REASONS):
            return f"unknown pending reason {_show(reason)} (valid: {', '.join(_PENDING_REASONS)})"
        return None
    if not reason:
        return f'a {kind} outcome needs a reason ("{kind}:<reason>")'
    if kind == "soft" and reason not in SOFT_REASONS:
        return f"unknown soft reason {_show(reason)} (valid: {', '.join(SOFT_REASONS)})"
    if kind == "hard" and not _HARD_REASON.fullmatch(reason):
        return f'expected a hard reason of lower-case letters, digits and "_", got {_show(reason)}'
    return None


def _outcome(table: _Table, key: str, value: object, rules: str) -> object | None:
    """A rule's outcome, validated: ``"kind:reason"`` or a table with ``kind``, ``reason``
    and optional ``max_retries`` and ``description``. None when it is not valid."""
    if isinstance(value, dict):
        sub = table.child(key, value)
        before = len(sub.sink)
        kind = sub.choice("kind", "", _KINDS)
        if not sub.has("kind"):
            sub.problem("kind", "missing required key")
        reason = sub.string("reason", "", pattern=_HARD_REASON, what="a lower-case reason")
        out: dict[str, object] = {"kind": kind}
        if reason:
            out["reason"] = reason
        if sub.has("max_retries"):
            out["max_retries"] = sub.integer("max_retries", 0, lo=0)
        else:
            sub.known("max_retries")
        if sub.has("description"):
            out["description"] = sub.string("description", "")
        else:
            sub.known("description")
        sub.finish()
        if len(sub.sink) != before:
            return None
        problem = _kind_problem(kind, reason, rules)
        if problem is not None:
            table.problem(key, problem)
            return None
        return out
    if isinstance(value, str):
        kind, _, reason = value.partition(":")
        if kind in _KINDS:
            problem = _kind_problem(kind, reason, rules)
            if problem is not None:
                table.problem(key, problem)
                return None
            return value
    table.problem(key, f"expected {_outcome_forms(rules)}, got {_show(value)}")
    return None


def _rule_key(table: str, key: str) -> tuple[str, str] | str:
    """(stored key, identity) for a rule key, or the problem message."""
    if table == "err":
        if _ERR_KEY.fullmatch(key):
            return key, _err_identity(key)
        return f"expected an err value of 1 to 10 letters or digits, got {_show(key)}"
    if table == "status":
        if key.upper() in CommandStatus.__members__:
            norm = f"0x{int(CommandStatus[key.upper()]):02x}"
            return norm, norm
        found = _STATUS_KEY.fullmatch(key)
        if found is not None:
            hex_digits, dec_digits = found.groups()
            code = int(hex_digits, 16) if hex_digits is not None else int(dec_digits)
            if code <= 0xFFFFFFFF:
                norm = f"0x{code:02x}"
                return norm, norm
        return (
            f'expected a command_status such as "0x58", "88" or "ESME_RTHROTTLED", got {_show(key)}'
        )
    if table == "stat":
        if _STAT_KEY.fullmatch(key):
            return key.upper(), key.upper()
        return f'expected a receipt stat word such as "UNDELIV", got {_show(key)}'
    found = _NEC_KEY.fullmatch(key)
    if found is not None:
        net_type, code = int(found.group(1)), int(found.group(2))
        if 1 <= net_type <= 255 and code <= 0xFFFF:
            norm = f"{net_type}/{code}"
            return norm, norm
    return f'expected a network error code "type/code" such as "3/6", got {_show(key)}'


def _parse_entry(t: _Table, loader: _Loader, *, nested: bool) -> dict[str, Any]:
    """One classification entry (defaults, a carrier, or an included style file)."""
    entry = _empty_entry(None)
    if nested:
        if t.has("include"):
            t.known("include")
            t.problem("include", "include is not allowed in an included file")
    else:
        for index, name in enumerate(t.strings("include", ())):
            included = _include(t, _item("include", index), name, loader)
            if included is not None:
                _merge_entry(entry, _parse_entry(included, loader, nested=True))
    own = _empty_entry(None)
    if t.has("err_space"):
        own["err_space"] = t.choice("err_space", "map", ERR_SPACES)
    else:
        t.known("err_space")
    for name in RULE_TABLES:
        table = t.table(name)
        if table is None:
            continue
        seen: dict[str, str] = {}
        for key, value in table.data.items():
            table.known(key)
            parsed = _rule_key(name, key)
            if isinstance(parsed, str):
                table.problem(key, parsed)
                continue
            stored, identity = parsed
            if identity in seen:
                table.problem(key, f"same {name} as {_show(seen[identity])}")
                continue
            seen[identity] = key
            outcome = _outcome(table, key, value, name)
            if outcome is not None:
                own[name][stored] = outcome
    _merge_entry(entry, own)
    t.finish()
    return entry


def _include(t: _Table, name: str, value: str, loader: _Loader) -> _Table | None:
    from bounceback.config.resources import PRESET_PREFIX, preset_names, preset_path

    if value.startswith(PRESET_PREFIX):  # a preset shipped in the package
        preset = preset_path(value.removeprefix(PRESET_PREFIX))
        if preset is None:
            names = ", ".join(PRESET_PREFIX + n for n in preset_names())
            t.problem(name, f"unknown preset {_show(value)} (the presets: {names})")
            return None
        target = preset
    else:
        target = loader.path(value)
    data, problem = _read_toml(str(target), target)
    if problem is not None and problem.key == "" and problem.message == "file not found":
        t.problem(name, f"file not found: {target}")
        return None
    if problem is not None:
        loader.sink.append(problem)
    if data is None:
        return None
    return _Table(loader.sink, str(target), "", data)


def _parse_classify_body(
    t: _Table,
    loader: _Loader,
    carriers: set[str],
    defaults: dict[str, Any],
    per_carrier: dict[str, dict[str, Any]],
    *,
    nested: bool,
) -> None:
    if nested:
        if t.has("include"):
            t.known("include")
            t.problem("include", "include is not allowed in an included file")
    else:
        for index, name in enumerate(t.strings("include", ())):
            included = _include(t, _item("include", index), name, loader)
            if included is not None:
                _parse_classify_body(included, loader, carriers, defaults, per_carrier, nested=True)
    table = t.table("defaults")
    if table is not None:
        _merge_entry(defaults, _parse_entry(table, loader, nested=nested))
    table = t.table("carriers")
    if table is not None:
        for name, value in table.data.items():
            table.known(name)
            if name not in carriers:
                table.problem(
                    name, f"unknown carrier {_show(name)} ({_names(carriers, 'carriers')})"
                )
            if not isinstance(value, dict):
                table.problem(name, f"expected a table, got {_show(value)}")
                continue
            entry = _parse_entry(table.child(name, value), loader, nested=nested)
            _merge_entry(per_carrier.setdefault(name, _empty_entry(None)), entry)
    t.finish()


def _parse_classify(t: _Table, loader: _Loader, carriers: set[str]) -> ClassifyConfig:
    defaults = _empty_entry("map")
    per_carrier: dict[str, dict[str, Any]] = {}
    _parse_classify_body(t, loader, carriers, defaults, per_carrier, nested=False)
    return ClassifyConfig(defaults=defaults, carriers=per_carrier)


# ---------------------------------------------------------------- store, feed, metrics, logging


def _parse_store(t: _Table, loader: _Loader) -> StoreConfig:
    d = StoreConfig()
    path = t.string("path", d.path, pattern=re.compile(r".+", re.DOTALL), what="a file path")
    if path != ":memory:":
        path = os.path.abspath(loader.path(path))
    url = t.string("url", "", secret=True)
    if url and not url.startswith(("postgresql://", "postgres://")):
        t.problem("url", 'expected a URL starting with "postgresql://" or "postgres://"')
        url = ""
    store = StoreConfig(
        path=path,
        url=url,
        retention_days=t.number("retention_days", d.retention_days, lo=0, above=True),
        batch_max=t.integer("batch_max", d.batch_max, lo=1),
        batch_delay=t.number("batch_delay", d.batch_delay, lo=0),
        lease_seconds=t.number("lease_seconds", d.lease_seconds, lo=0, above=True),
        write_timeout=t.number("write_timeout", d.write_timeout, lo=0, above=True),
    )
    t.finish()
    return store


def _parse_feed(t: _Table | None, loader: _Loader) -> FeedConfig | None:
    if t is None:
        return None
    d = FeedConfig()
    enabled = t.boolean("enabled", True)
    password, password_env = loader.secret(t, required=False, resolve_env=enabled, smpp=False)
    feed = FeedConfig(
        enabled=enabled,
        host=t.string("host", d.host, pattern=_HOST, what="a host name or address"),
        port=t.port("port", d.port),
        username=t.string("username", ""),
        password=password,
        password_env=password_env,
        tls=t.boolean("tls", d.tls),
        tls_ca=loader.file_option(t, "tls_ca"),
        client_id=t.string("client_id", ""),
        protocol=t.choice("protocol", d.protocol, MQTT_PROTOCOLS),
        prefix=t.string(
            "prefix",
            d.prefix,
            pattern=_TOPIC_PREFIX,
            what='an MQTT topic prefix without wildcards or empty levels, such as "bounceback/v1"',
        ),
        qos=t.integer("qos", d.qos, lo=0, hi=2),
        mask_destinations=t.boolean("mask_destinations", d.mask_destinations),
        mask_keep=t.integer("mask_keep", d.mask_keep, lo=0, hi=15),
        stats_interval=t.number("stats_interval", d.stats_interval, lo=0, above=True),
        outbox_max=t.integer("outbox_max", d.outbox_max, lo=1),
        keepalive=t.integer("keepalive", d.keepalive, lo=0, hi=65535),
        publisher=t.choice("publisher", d.publisher, FEED_PUBLISHERS),
        client=t.choice("client", d.client, FEED_CLIENTS),
    )
    _check_ca_file(t, "tls_ca", feed.tls_ca)
    t.finish()
    return feed if enabled else None


def _parse_metrics(t: _Table | None, loader: _Loader) -> MetricsConfig | None:
    if t is None:
        return None
    d = MetricsConfig()
    metrics = MetricsConfig(
        enabled=t.boolean("enabled", True),
        host=t.string("host", d.host, pattern=_HOST, what="a host name or address"),
        port=t.port("port", d.port, listen=True),
        tls_cert=loader.file_option(t, "tls_cert"),
        tls_key=loader.file_option(t, "tls_key"),
    )
    if metrics.tls_key and not metrics.tls_cert:
        t.problem("tls_key", "needs tls_cert (the listener speaks plain HTTP without it)")
    elif metrics.tls_cert:
        from bounceback.config.certs import cert_chain_problem

        chain = cert_chain_problem(metrics.tls_cert, metrics.tls_key)
        if chain is not None:
            t.problem(*chain)
    t.finish()
    return metrics if metrics.enabled else None


_ADMIN_TOKEN_MIN: Final = 16


def _parse_admin(
    t: _Table | None, loader: _Loader, metrics: MetricsConfig | None
) -> AdminConfig | None:
    if t is None:
        return None
    tokens: list[AdminToken] = []
    tables = t.tables("tokens")
    for tt in tables:
        name = tt.string("name", required=True, pattern=_NAME, what="a name (letters, digits, -_.)")
        scope = tt.choice("scope", "read", ADMIN_SCOPES)
        token, env_name = loader.secret(tt, required=True, smpp=False, key="token")
        if token and len(token) < _ADMIN_TOKEN_MIN:
            where = "token_env" if env_name else "token"
            tt.problem(where, f"too short: a token needs at least {_ADMIN_TOKEN_MIN} characters")
        tt.finish()
        tokens.append(AdminToken(name, scope, token, env_name))
    _check_unique(tables, "name", "token name")
    d = AdminConfig()
    admin = AdminConfig(open_health=t.boolean("open_health", d.open_health), tokens=tuple(tokens))
    t.finish()
    if metrics is None:
        t.problem(None, "the admin API is served on the [metrics] listener: add [metrics]")
    elif not admin.tokens:
        t.problem("tokens", "at least one [[admin.tokens]] entry is required")
    return admin


def _parse_logging(t: _Table) -> LoggingConfig:
    d = LoggingConfig()
    logging = LoggingConfig(
        level=t.choice("level", d.level, LOG_LEVELS, fold=True),
        json=t.boolean("json", d.json),
        mask_destinations=t.boolean("mask_destinations", d.mask_destinations),
    )
    t.finish()
    return logging


# ---------------------------------------------------------------- field documentation

# One line per key of the file: what it means. The README's configuration reference is
# generated from these and the model's defaults (`bounceback.config.reference`); a field with
# no line here fails the documentation test, so a new key is documented where it is
# added. Keyed by the TOML table, then the field name.
FIELD_DOCS: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "server": {
            "host": "address the sender-facing listener binds to",
            "port": "its port (`0`: a free port, chosen at start)",
            "instance_id": "this instance's name (feed topics, leases); empty: derived at start",
            "enquire_link_interval": "idle time before we send enquire_link",
            "response_timeout": "wait for a response to a PDU we sent",
            "inactivity_timeout": "a silent session is closed",
            "bind_timeout": "a connection that has not bound is closed",
            "max_pdu_size": "larger command_length → generic_nack and close",
            "submit_wait": 'bounded wait for the carrier in `ack = "carrier"` mode',
            "max_connections": "connections at once",
            "max_connections_per_ip": "connections at once from one address",
            "shutdown_grace": "graceful shutdown deadline",
            "event_loop": "the event loop of `run`: `auto` (uvloop when it can be imported "
            "and the TLS listener is off, else asyncio), `uvloop` (refuses to start without "
            "it; not allowed with `tls_cert`) or `asyncio`; logged at start",
            "gc_threshold": "young-generation threshold of Python's cyclic garbage collector "
            "in `run` (CPython's own, 700, costs about a sixth of the proxy's time under "
            "load); startup objects are frozen out of collections; `0` leaves the collector "
            "as Python sets it",
            "tls_port": "the TLS listener's port (on when `tls_cert` is set)",
            "tls_cert": "PEM certificate chain of the TLS listener; empty: no TLS listener",
            "tls_key": "its private key; empty: inside `tls_cert`",
            "tls_client_ca": "senders must present a certificate issued by this CA",
            "plain": "also listen on plain TCP `port`; `false`: TLS only",
            "failed_bind_limit": "failed binds from one address within `failed_bind_window` "
            "that lock it out",
            "failed_bind_window": "the window of `failed_bind_limit`",
            "lockout_seconds": "how long a locked-out address is refused",
        },
        "accounts": {
            "system_id": "the sender's system_id (at most 15 characters)",
            "password": "its password (at most 8 characters); or `password_env`",
            "password_env": "the environment variable holding the password (it must be set)",
            "bind_types": "allowed of transmitter, receiver, transceiver",
            "max_binds": "simultaneous binds",
            "throughput": "msg/s (0 = unlimited; over it → `ESME_RTHROTTLED`)",
            "window": "unacknowledged PDUs we send it",
            "ack": "`carrier` (answer submit_sm after the carrier does) or `stored`",
            "suppression": "`reject` (→ `ESME_RINVDSTADR`) or `pass` for suppressed numbers",
            "allowed_ips": "CIDR allowlist; empty: any address",
            "mask_destinations": "mask this sender's numbers in logs and on the feed",
            "allow_empty_password": '`password = ""` is refused unless this is `true`',
        },
        "carriers": {
            "name": "unique; used by routes, classify, metrics and the feed",
            "host": "the upstream SMSC",
            "system_id": "our system_id at the carrier",
            "port": "its port",
            "password": "our password there; or `password_env`",
            "password_env": "the environment variable holding the password (it must be set)",
            "system_type": "system_type of our bind (at most 12 characters)",
            "bind_mode": "`transceiver` or `transmitter_receiver` (a pair of binds)",
            "window": "our unanswered submits in flight",
            "throughput": "the carrier's rate limit, msg/s (0 = unlimited)",
            "enquire_link_interval": "idle time before we send enquire_link",
            "reconnect_min": "first reconnect delay (exponential backoff with jitter)",
            "reconnect_max": "longest reconnect delay",
            "stable_after": "a bind lost sooner is short-lived and does not reset the "
            "reconnect delay; two in a row mark the carrier as flapping (the delay keeps "
            "doubling up to `reconnect_max`, routes prefer other carriers) until a bind "
            "stays up this long",
            "submit_timeout": "no submit_sm_resp by then: a soft `timeout` bounce",
            "id_format": "ids in its submit_sm_resp: `auto`, `hex`, `dec`, `opaque` "
            "(settles a real ambiguity only)",
            "receipt_id_format": "ids in its receipts: the same choices",
            "receipt_query_after": "a submitted message with no receipt this long is looked "
            "up with `query_sm` (again after 2×, 4×, … that time, at most 6 h apart, until "
            "the receipt grace); a final answer ends it as a receipt would; `0`: never (see "
            "docs/operations.md, Overdue receipts)",
            "mo_account": "the account that gets its mobile-originated messages; empty: none",
            "mo_routes": "mobile-originated messages by destination (short code) → account",
            "tls": "TLS to the carrier",
            "tls_ca": "CA bundle file; empty: the system's CAs",
            "tls_verify": "verify the carrier's certificate and host name",
            "allow_empty_password": '`password = ""` is refused unless this is `true`',
        },
        "routes": {
            "prefix": "destination digits; empty matches every destination; the longest "
            "matching prefix wins",
            "accounts": "the accounts it applies to; empty: every account",
            "carriers": "carriers in fallback order",
        },
        "retry": {
            "max_attempts": "submissions per message, the first included (16 reach the 48 h "
            "validity at the 4 h cap of absent_subscriber; see `bench/bench_retry.py`)",
            "max_age": "give up this long after acceptance",
            "jitter": "each delay is randomised by up to this fraction",
            "default_validity": "validity when the sender gave none",
            "alternate_carrier": "routing/network soft bounces try the next carrier",
            "quiet_hours_start": '`"HH:MM"` in the destination\'s local time: no retries '
            "from then …",
            "quiet_hours_end": "… until then (both empty: off)",
            "flag_threshold": "soft bounces within `flag_window` that flag a number",
            "flag_window": "the window of `flag_threshold`",
            "flag_stops_retries": "a flagged number gets no more retries",
            "suppression_ttl": "how long a hard-bounced number stays suppressed",
            "schedules": "backoff per soft reason: `[retry.schedules.REASON]` below",
            "time_zones": "`[retry.time_zones]`: number prefix = IANA zone for quiet hours "
            "(and `bounceback stats --local-hours`), "
            "before the numbering plan's (longest prefix first); without one, a range that "
            "spans several zones gets its country's principal zone (Europe/Moscow for a "
            "Russian mobile, America/New_York for US toll-free); the zone used is on the "
            "`soft_bounce` event (`time_zone`)",
            "mode": '`"static"`: the schedules below; `"learned"`: the next attempt from '
            "recovery-time estimates learned per (country/operator, reason), the schedules "
            "being their prior while data is thin (see `bench/bench_retry.py --population`)",
            "learn_margin": "learned mode: the plans deliver this much more of the recovered "
            "messages within the target delay than the static schedules would (0.1 = 10 %)",
            "learn_delay": "learned mode: the target delay in seconds (0: the median delay "
            "the static schedules would give, from the estimates)",
            "learn_min_at_risk": "learned mode: messages a key has seen before its own plan "
            "decides (else the coarser key; before its reason has as many, the schedule)",
            "learn_max_keys": "recovery estimates kept (the least recently updated go first)",
            "learn_flush": "seconds between writes of the counted observations to the store",
        },
        "retry.schedules.REASON": {
            "initial": "first delay for one soft reason (throttled, congestion, "
            "system_failure, network, routing, timeout, not_bound, subscriber_busy, "
            "absent_subscriber, memory_full, unknown_state, expired)",
            "factor": "each further delay is this times the one before …",
            "max": "… up to this",
            "learned_min": "learned mode: the shortest delay an estimate may choose",
            "learned_max": "learned mode: the longest (the last attempt still goes just "
            "before the deadline)",
        },
        "classify": {
            "include": "files shaped like this table, or the presets shipped in the "
            'package: `"preset:map40-style"`, `"preset:twilio-style"`, '
            '`"preset:vonage-style"` (`configs/classify/`); paths are relative to the config',
            "defaults": "one entry for every carrier: `include`, `err_space` (`map`, "
            "`map40`, `none`) and rule tables `err`, `status`, `stat`, `network_error_code` "
            'mapping to `"soft:REASON"`, `"hard:REASON"`, `"pending"`, `"delivered"` (stat '
            "only) or a table",
            "carriers": "`carriers.NAME`: an entry for one carrier, merged over the defaults",
        },
        "store": {
            "path": "SQLite file (relative to the config)",
            "url": "`postgresql://…` selects the shared PostgreSQL store (needs "
            "`bounceback[postgres]`)",
            "retention_days": "finished messages (with their carrier ids) and bounce history "
            "older than this are deleted",
            "batch_max": "writes per group commit",
            "batch_delay": "the longest a write waits for more writes to share its "
            "transaction, seconds; only while writes are queuing (a write to an idle store "
            "goes at once); 0: never waits",
            "lease_seconds": "PostgreSQL: how long an instance owns a due message",
            "write_timeout": "SQLite: how long a write waits (without stopping the proxy) for "
            "a database another process holds locked; then the store counts as failing (see "
            "docs/operations.md, Faults)",
        },
        "feed": {
            "enabled": "`false` turns the feed off (so does leaving out `[feed]`: off by default)",
            "host": "the MQTT broker",
            "port": "its port",
            "username": "empty: anonymous",
            "password": "the broker password; or `password_env`; both optional",
            "password_env": "the environment variable holding it",
            "tls": "TLS to the broker",
            "tls_ca": "CA bundle file; empty: the system's CAs",
            "client_id": "MQTT client id; empty: derived from the instance id",
            "protocol": "`3.1.1` or `5`",
            "prefix": "topic prefix",
            "qos": "0, 1 or 2",
            "mask_destinations": "publish masked numbers (phone numbers are personal data)",
            "mask_keep": "digits kept at the end of a masked number",
            "stats_interval": "retained stats published this often",
            "outbox_max": "events kept while the broker is unreachable",
            "keepalive": "MQTT keepalive, seconds",
            "publisher": "`process`: the MQTT publisher runs in a child process "
            "(`bounceback feed-publisher`, started, restarted and stopped by `run`) on its "
            "own core; `inline`: in the proxy's event loop",
            "client": "`builtin`: the feed's own MQTT client (`proxy/feed/mqtt.py`, "
            "`proxy/feed/client.py`); `aiomqtt`: aiomqtt over paho, about eight times the CPU "
            "per event (needs `bounceback[aiomqtt]`)",
        },
        "metrics": {
            "enabled": "`false` turns the endpoint off (so does leaving out `[metrics]`: "
            "off by default)",
            "host": "address of the Prometheus endpoint (`/metrics`, `/healthz`, `/readyz`)",
            "port": "its port (not an SMPP listener's)",
            "tls_cert": "PEM certificate chain: the listener (metrics, health, admin API) "
            "speaks HTTPS only; empty: plain HTTP",
            "tls_key": "its private key; empty: inside `tls_cert`",
        },
        "admin": {
            "open_health": "`/healthz`, `/readyz` and `/metrics` answer without a token "
            "(`false`: they need a `read` token too)",
            "tokens": "the API's bearer tokens, `[[admin.tokens]]` (below)",
        },
        "admin.tokens": {
            "name": "who the token is: logs and the feed name it for every change it makes",
            "scope": "`read` (look) or `admin` (also act: retry, cancel, block, unblock)",
            "token": "the secret (at least 16 characters); or `token_env`",
            "token_env": "the environment variable holding the secret (it must be set)",
        },
        "logging": {
            "level": "DEBUG, INFO, WARNING, ERROR or CRITICAL",
            "json": "one JSON object per line",
            "mask_destinations": "mask phone numbers in logs",
        },
    }
)

# ---------------------------------------------------------------- explain


def _dur(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{_num(seconds / 86400)} d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{_num(seconds / 3600)} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{_num(seconds / 60)} min"
    return f"{_num(seconds)} s"


def _rate(per_second: float) -> str:
    return "unlimited" if per_second <= 0 else f"{_num(per_second)} msg/s"


def _query(after: float) -> str:
    return "receipts never queried" if after <= 0 else f"receipts queried after {_num(after)} s"


def _password_source(password_env: str, password: str) -> str:
    if password_env:
        return f"password from ${password_env}"
    return "password inline" if password else "no password"


def gc_text(threshold: int) -> str:
    """How `run` sets up the garbage collector, in words (`check`, the start log)."""
    if threshold == 0:
        return "garbage collector as Python sets it"
    return f"garbage collector threshold {threshold}, startup objects frozen"


def explain(config: Config) -> str:
    """A human summary of a valid config, for ``bounceback check``. Never shows secrets."""
    s = config.server
    lines = [f"Config {config.source}: valid"]
    instance = s.instance_id or "derived at start"
    lines.append(
        f"Listener: {s.host}:{s.port} (instance {instance}; up to {s.max_connections} "
        f"connections, {s.max_connections_per_ip} per IP; PDUs up to {s.max_pdu_size} octets; "
        f"event loop {s.event_loop}; {gc_text(s.gc_threshold)})"
    )
    lines.append(
        f"  timeouts: bind {_dur(s.bind_timeout)}, response {_dur(s.response_timeout)}, "
        f"inactivity {_dur(s.inactivity_timeout)}, enquire_link after "
        f"{_dur(s.enquire_link_interval)} idle, carrier answer wait {_dur(s.submit_wait)}, "
        f"shutdown grace {_dur(s.shutdown_grace)}"
    )
    tls = f"port {s.tls_port}" if s.tls_cert else "off"
    if s.tls_cert and s.tls_client_ca:
        tls += ", client certificates required"
    lines.append(
        f"  TLS listener: {tls}; plain TCP {'on' if s.plain else 'off'}; failed binds: "
        f"{s.failed_bind_limit} within {_dur(s.failed_bind_window)} lock an address out "
        f"for {_dur(s.lockout_seconds)}"
    )
    lines.append(f"Accounts ({len(config.accounts)}):")
    for a in config.accounts:
        ips = ", ".join(a.allowed_ips) if a.allowed_ips else "any address"
        lines.append(
            f"  {a.system_id}: binds {'/'.join(a.bind_types)}, up to {a.max_binds} binds, "
            f"window {a.window}, {_rate(a.throughput)}, ack {a.ack}, suppressed numbers "
            f"{'rejected' if a.suppression == 'reject' else 'passed'}, from {ips}"
            f"{', destinations masked' if a.mask_destinations else ''}; "
            f"{_password_source(a.password_env, a.password)}"
        )
    lines.append(f"Carriers ({len(config.carriers)}):")
    for c in config.carriers:
        tls = "off"
        if c.tls:
            tls = (
                "on"
                + ("" if c.tls_verify else " (unverified)")
                + (f", CA {c.tls_ca}" if c.tls_ca else "")
            )
        mo = c.mo_account or "nobody"
        if c.mo_routes:
            mo += " (" + ", ".join(f"{k} -> {v}" for k, v in sorted(c.mo_routes.items())) + ")"
        lines.append(
            f"  {c.name}: {c.host}:{c.port} as {c.system_id}"
            f"{f' ({c.system_type})' if c.system_type else ''}, {c.bind_mode}, window {c.window}, "
            f"{_rate(c.throughput)}, ids {c.id_format}/{c.receipt_id_format}, "
            f"{_query(c.receipt_query_after)}, TLS {tls}, "
            f"mobile-originated to {mo}; {_password_source(c.password_env, c.password)}"
        )
    every = ", ".join(c.name for c in config.carriers)
    lines.append("Routes:")
    for r in sorted(config.routes, key=lambda r: (-len(r.prefix), not r.accounts)):
        who = ", ".join(r.accounts) if r.accounts else "every account"
        lines.append(f"  {r.prefix or '(any)'} for {who}: {' -> '.join(r.carriers)}")
    lines.append(f"  otherwise: {every or '(no carriers)'}")
    rt = config.retry
    quiet = (
        f"quiet hours {rt.quiet_hours_start}-{rt.quiet_hours_end} destination time"
        if rt.quiet_hours_start
        else "no quiet hours"
    )
    lines.append(
        f"Retry: up to {rt.max_attempts} attempts within {_dur(rt.max_age)}, jitter "
        f"{_num(round(rt.jitter * 100, 2))}%, default validity {_dur(rt.default_validity)}, "
        f"{'alternate carriers' if rt.alternate_carrier else 'same route order'}, {quiet}"
    )
    lines.append(
        f"  flag a number after {rt.flag_threshold} soft bounces in {_dur(rt.flag_window)}"
        f"{' (stops its retries)' if rt.flag_stops_retries else ''}; suppression kept "
        f"{_dur(rt.suppression_ttl)}"
    )
    for reason in SOFT_REASONS:
        sc = rt.schedule(reason)
        lines.append(f"  {reason}: {_dur(sc.initial)} x{_num(sc.factor)} up to {_dur(sc.max)}")
    cl = config.classify
    lines.append(
        f"Classification: defaults err space {cl.defaults.get('err_space', 'map')}, "
        f"{_rule_count(cl.defaults)} rules"
    )
    for name in sorted(cl.carriers):
        entry = cl.for_carrier(name)
        lines.append(f"  {name}: err space {entry['err_space']}, {_rule_count(entry)} rules")
    st = config.store
    where = f"PostgreSQL {_mask_url(st.url)}" if st.url else f"SQLite {st.path}"
    lines.append(
        f"Store: {where} (kept {_num(st.retention_days)} days, batches of up to "
        f"{st.batch_max}, waiting up to {_num(st.batch_delay * 1000)} ms while writes queue, "
        f"lease {_dur(st.lease_seconds)})"
    )
    f = config.feed
    if f is None:
        lines.append("Feed: off")
    else:
        auth = f"user {f.username}" if f.username else "anonymous"
        masked = (
            f"destinations masked to the last {f.mask_keep} digits"
            if f.mask_destinations
            else "destinations in clear"
        )
        lines.append(
            f"Feed: MQTT {f.protocol} at {f.host}:{f.port} "
            f"({auth}, TLS {'on' if f.tls else 'off'}), "
            f"topics {f.prefix}/..., QoS {f.qos}, {masked}, stats every {_dur(f.stats_interval)}, "
            f"outbox up to {f.outbox_max}, publisher "
            + ("in its own process" if f.publisher == "process" else "in the proxy's loop")
        )
    m = config.metrics
    lines.append("Metrics: off" if m is None else f"Metrics: http://{m.host}:{m.port}/metrics")
    lg = config.logging
    lines.append(
        f"Logging: {lg.level}, {'JSON' if lg.json else 'text'}, destinations "
        f"{'masked' if lg.mask_destinations else 'in clear'}"
    )
    return "\n".join(lines)


def _rule_count(entry: Mapping[str, Any]) -> int:
    return sum(len(entry.get(name, {})) for name in RULE_TABLES)
