"""A carrier SMSC simulator (``bounceback simulate``).

It accepts binds (transmitter, receiver, transceiver), answers ``submit_sm``,
``data_sm`` and ``submit_multi`` with its own message ids, and sends delivery
receipts (``deliver_sm``, esm_class 0x04, Appendix B text plus the TLVs
``receipted_message_id``, ``message_state`` and ``network_error_code``) to a bound
receiver or transceiver session of the same system_id. It answers ``query_sm``,
``cancel_sm``, ``replace_sm`` and ``enquire_link``. What happens to each message is
scripted per destination number by a small TOML scenario::

    id_format = "hex"              # ids in submit_sm_resp: "hex" or "dec"
    receipt_id_format = "dec"      # ids in receipts: "same", "hex" or "dec"
    receipt_delay = 0.05           # seconds from submission to receipt
    receipt_style = "text+tlv"     # "text+tlv", "text" or "tlv"
    default = ["deliver"]          # outcomes for numbers no rule matches
    throughput = 0                 # submissions per second per system_id (0 = no limit)
    window = 10                    # outstanding deliver_sm per session
    receipt_session = "any"        # "any" receiver, the "same" as submitted or an "other"
    system_id = "SIMSMSC"          # what bind responses call the SMSC
    max_records = 100000           # submissions and messages kept in memory

    [credentials]                  # optional; without it any system_id/password binds
    bounceback = "sim-pw"

    [[rules]]
    number = "447700900001"        # exact number, or `prefix = "4477009"`
    outcomes = ["absent", "absent", "deliver"]
    alert_after = 2.0              # optional: alert_notification after an "absent"

An outcome list is consumed one entry per submission to that number (counting every
system_id); its last entry repeats. ``default`` is consumed the same way for each
number that no rule matches. The outcome words are in :data:`OUTCOMES`:

=================  ===================================================================
``deliver``        receipt ``stat:DELIVRD err:000``
``absent``         ``UNDELIV``, err 006, network_error_code GSM 6 (absent subscriber, soft)
``memory_full``    ``UNDELIV``, err 040 and no network_error_code: the "40 + SM delivery
                   failure cause" convention (cause 0, memory capacity exceeded), which a
                   GSM network_error_code (MAP 32 only) cannot carry. The proxy reads it
                   as memory full with ``err_space = "map40"`` for this carrier, as
                   configs/demo.toml sets.
``busy``           ``UNDELIV``, err 031, GSM 31 (subscriber busy for MT-SMS, soft)
``system_failure`` ``UNDELIV``, err 034, GSM 34 (system failure, soft)
``unknown``        ``UNDELIV``, err 001, GSM 1 (unknown subscriber, hard)
``barred``         ``UNDELIV``, err 013, GSM 13 (call barred, hard)
``expire``         ``EXPIRED``
``reject``         ``REJECTD``
``enroute``        an intermediate ``ENROUTE`` receipt (esm_class 0x20), then ``DELIVRD``
                   one ``receipt_delay`` later
``throttle``       submit_sm_resp ``ESME_RTHROTTLED``, no receipt
``queue_full``     submit_sm_resp ``ESME_RMSGQFUL``
``submit_fail``    submit_sm_resp ``ESME_RSUBMITFAIL`` (permanent)
``invalid_dest``   submit_sm_resp ``ESME_RINVDSTADR``
``no_receipt``     accepted, never a receipt (query_sm keeps saying ENROUTE)
``lost_receipt``   delivered one ``receipt_delay`` after the submission, but the receipt
                   is never sent (lost on the way): query_sm then says DELIVERED
``no_response``    the submit_sm is never answered
``receipt_first``  the ``DELIVRD`` receipt is written before the submit_sm_resp
=================  ===================================================================

Receipts follow ``registered_delivery`` as an SMSC does: none for 0, every final
state for 1, failures only for 2. The intermediate ``ENROUTE`` receipt is sent
whenever a receipt is asked for (bit 0x10 is not required), so that a scenario can
exercise intermediate notifications. Each ``deliver_sm`` waits for its
``deliver_sm_resp`` within the session's window; a receipt that finds no receiver
bound, or whose session drops before answering, waits for the next receiver bind of
that system_id; an error response is retried a few times, one second apart.
Receipts go to the receivers of a system_id in turn; with ``receipt_session =
"same"`` to the session that submitted the message while it can take them, with
``"other"`` never to it while another one is bound (as a carrier may do to several
proxy instances sharing one account).
Submissions over ``throughput`` are answered ``ESME_RTHROTTLED`` before any outcome
is consumed (they are counted in :attr:`CarrierSimulator.rate_limited`, not in
:attr:`CarrierSimulator.submissions`).

Receipt dates (``submit date``, ``done date``) are the simulator's local time, as an
SMSC writes them; ``query_sm_resp`` gives ``final_date`` in UTC.

The message loop is cheap: no task per message. Receipts wait in one FIFO driven by
a single timer (every receipt has the same delay), and each ``deliver_sm_resp`` is
matched through the session's table of outstanding requests.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import tomllib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import attrs
from bounceback.smpp.session import SmppSession
from smppcodecs.constants import (
    ESM_CLASS_INTERMEDIATE,
    ESM_CLASS_SMSC_RECEIPT,
    REG_DELIVERY_FAILURE,
    REG_DELIVERY_RECEIPT_MASK,
    REG_DELIVERY_SUCCESS_FAILURE,
    CommandId,
    CommandStatus,
    MessageState,
    Tag,
)
from smppcodecs.pdu import (
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    DataSm,
    DeliverSm,
    DistributionList,
    Pdu,
    QuerySm,
    ReplaceSm,
    SubmitMulti,
    SubmitSm,
    UnsuccessSme,
)
from smppcodecs.receipt import format_receipt_text, receipt_tlvs
from smppcodecs.smpptime import format_absolute
from smppcodecs.text import decode_text

__all__ = [
    "OUTCOMES",
    "CarrierSimulator",
    "OutcomePlan",
    "ReceiptStep",
    "Rule",
    "Scenario",
    "ScenarioError",
    "SimulatorSession",
    "SubmissionRecord",
    "load_scenario",
    "run_simulator",
]

log = logging.getLogger("bounceback.simulator")

# The first message id handed out. In hex it starts with a letter, so a hex id can
# never be mistaken for a decimal one.
ID_START: Final = 0xA0000000
# A receipt whose deliver_sm fails (error response, timeout, dropped session) this
# many times is given up.
MAX_RECEIPT_ATTEMPTS: Final = 5
RECEIPT_RETRY_DELAY: Final = 1.0
# Receipts waiting for a receiver, per system_id.
MAX_BACKLOG: Final = 100_000


# ---------------------------------------------------------------------------- outcomes


@attrs.frozen
class ReceiptStep:
    """One receipt of an outcome: its stat word, err, network_error_code and state."""

    stat: str
    state: int
    err: str = "000"
    network_error_code: tuple[int, int] | None = None
    intermediate: bool = False

    @property
    def failed(self) -> bool:
        return self.state != MessageState.DELIVERED and not self.intermediate


@attrs.frozen
class OutcomePlan:
    """What the simulator does with one submission."""

    status: int = CommandStatus.ESME_ROK  # command_status of the submit_sm_resp
    respond: bool = True  # False: never answer the submission
    receipt_first: bool = False  # write the receipt before the response
    receipts: tuple[ReceiptStep, ...] = ()
    lost: bool = False  # the receipts settle the message's state but are never sent


def _undeliv(map_code: int) -> tuple[ReceiptStep, ...]:
    return (
        ReceiptStep("UNDELIV", MessageState.UNDELIVERABLE, f"{map_code:03d}", (3, map_code), False),
    )


_DELIVRD: Final = (ReceiptStep("DELIVRD", MessageState.DELIVERED),)

OUTCOMES: Final[dict[str, OutcomePlan]] = {
    "deliver": OutcomePlan(receipts=_DELIVRD),
    "absent": OutcomePlan(receipts=_undeliv(6)),
    "memory_full": OutcomePlan(
        receipts=(ReceiptStep("UNDELIV", MessageState.UNDELIVERABLE, "040", None, False),)
    ),
    "busy": OutcomePlan(receipts=_undeliv(31)),
    "system_failure": OutcomePlan(receipts=_undeliv(34)),
    "unknown": OutcomePlan(receipts=_undeliv(1)),
    "barred": OutcomePlan(receipts=_undeliv(13)),
    "expire": OutcomePlan(receipts=(ReceiptStep("EXPIRED", MessageState.EXPIRED),)),
    "reject": OutcomePlan(receipts=(ReceiptStep("REJECTD", MessageState.REJECTED),)),
    "enroute": OutcomePlan(
        receipts=(
            ReceiptStep("ENROUTE", MessageState.ENROUTE, intermediate=True),
            *_DELIVRD,
        )
    ),
    "throttle": OutcomePlan(status=CommandStatus.ESME_RTHROTTLED),
    "queue_full": OutcomePlan(status=CommandStatus.ESME_RMSGQFUL),
    "submit_fail": OutcomePlan(status=CommandStatus.ESME_RSUBMITFAIL),
    "invalid_dest": OutcomePlan(status=CommandStatus.ESME_RINVDSTADR),
    "no_receipt": OutcomePlan(),
    "lost_receipt": OutcomePlan(receipts=_DELIVRD, lost=True),
    "no_response": OutcomePlan(respond=False),
    "receipt_first": OutcomePlan(receipt_first=True, receipts=_DELIVRD),
}
_ABSENT: Final = OUTCOMES["absent"]


# ---------------------------------------------------------------------------- scenario


class ScenarioError(ValueError):
    """A scenario is invalid. ``key`` names the offending key (e.g. ``rules[1].outcomes``)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _check_outcomes(_inst: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if not value:
        raise ScenarioError(f"{attribute.name}: needs at least one outcome", attribute.name)
    for word in value:
        if word not in OUTCOMES:
            raise ScenarioError(f"{attribute.name}: unknown outcome {word!r}", attribute.name)


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Rule:
    """Outcomes for one number (``number``, exact) or a range (``prefix``)."""

    outcomes: tuple[str, ...] = attrs.field(converter=_str_tuple, validator=_check_outcomes)
    number: str | None = None
    prefix: str | None = None
    alert_after: float | None = None

    def __attrs_post_init__(self) -> None:
        if (self.number is None) == (self.prefix is None):
            raise ScenarioError("a rule needs exactly one of 'number' and 'prefix'")


def _rule_tuple(value: Iterable[Rule]) -> tuple[Rule, ...]:
    return tuple(value)


_ID_FORMATS: Final = ("hex", "dec")
_RECEIPT_ID_FORMATS: Final = ("same", "hex", "dec")
_RECEIPT_STYLES: Final = ("text+tlv", "text", "tlv")
_RECEIPT_SESSIONS: Final = ("any", "other", "same")


@attrs.frozen(kw_only=True)
class Scenario:
    """How the simulated carrier behaves (see the module documentation)."""

    id_format: str = attrs.field(default="hex", validator=attrs.validators.in_(_ID_FORMATS))
    receipt_id_format: str = attrs.field(
        default="same", validator=attrs.validators.in_(_RECEIPT_ID_FORMATS)
    )
    receipt_delay: float = attrs.field(default=0.05, validator=attrs.validators.ge(0))
    receipt_style: str = attrs.field(
        default="text+tlv", validator=attrs.validators.in_(_RECEIPT_STYLES)
    )
    default: tuple[str, ...] = attrs.field(
        default=("deliver",), converter=_str_tuple, validator=_check_outcomes
    )
    rules: tuple[Rule, ...] = attrs.field(default=(), converter=_rule_tuple)
    throughput: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    window: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    receipt_session: str = attrs.field(
        default="any", validator=attrs.validators.in_(_RECEIPT_SESSIONS)
    )
    credentials: Mapping[str, str] | None = attrs.field(default=None, hash=False)
    system_id: str = "SIMSMSC"
    max_records: int = attrs.field(default=100_000, validator=attrs.validators.ge(1))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Scenario:
        """Build a scenario from parsed TOML. Errors are :class:`ScenarioError` naming
        the key."""
        return _scenario_from_mapping(data)


_SCENARIO_KEYS: Final = (
    "id_format",
    "receipt_id_format",
    "receipt_delay",
    "receipt_style",
    "default",
    "rules",
    "throughput",
    "window",
    "receipt_session",
    "credentials",
    "system_id",
    "max_records",
)
_RULE_KEYS: Final = ("number", "prefix", "outcomes", "alert_after")


def _fail(key: str, message: str) -> ScenarioError:
    return ScenarioError(f"{key}: {message}", key)


def _unknown_keys(data: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in allowed:
            name = f"{where}.{key}" if where else str(key)
            raise _fail(name, f"unknown key (expected one of: {', '.join(allowed)})")


def _choice(data: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = data.get(key, default)
    if value not in choices:
        raise _fail(key, f"must be one of {', '.join(map(repr, choices))}, not {value!r}")
    return str(value)


def _number(key: str, value: object, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, f"must be a number, not {value!r}")
    if value < minimum:
        raise _fail(key, f"must be at least {minimum:g}, not {value!r}")
    return float(value)


def _integer(key: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, f"must be an integer, not {value!r}")
    if value < minimum:
        raise _fail(key, f"must be at least {minimum}, not {value!r}")
    return value


def _string(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        hint = " (quote numbers)" if isinstance(value, int) else ""
        raise _fail(key, f"must be a non-empty string{hint}, not {value!r}")
    return value


def _outcome_list(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _fail(key, f"must be a non-empty list of outcomes, not {value!r}")
    words: list[str] = []
    for index, word in enumerate(value):
        if word not in OUTCOMES:
            raise _fail(
                f"{key}[{index}]",
                f"unknown outcome {word!r} (expected one of: {', '.join(OUTCOMES)})",
            )
        words.append(word)
    return tuple(words)


def _rule_from_mapping(index: int, data: object) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(data, Mapping):
        raise _fail(where, f"must be a table, not {data!r}")
    _unknown_keys(data, _RULE_KEYS, where)
    has_number = "number" in data
    if has_number == ("prefix" in data):
        raise _fail(where, "needs exactly one of 'number' and 'prefix'")
    field = "number" if has_number else "prefix"
    match = _string(f"{where}.{field}", data[field])
    if "outcomes" not in data:
        raise _fail(f"{where}.outcomes", "is missing")
    outcomes = _outcome_list(f"{where}.outcomes", data["outcomes"])
    alert_after = None
    if "alert_after" in data:
        alert_after = _number(f"{where}.alert_after", data["alert_after"])
    return Rule(
        outcomes=outcomes,
        number=match if has_number else None,
        prefix=None if has_number else match,
        alert_after=alert_after,
    )


def _scenario_from_mapping(data: Mapping[str, Any]) -> Scenario:
    _unknown_keys(data, _SCENARIO_KEYS, "")
    credentials: dict[str, str] | None = None
    if "credentials" in data:
        table = data["credentials"]
        if not isinstance(table, Mapping):
            raise _fail("credentials", f"must be a table of system_id = password, not {table!r}")
        credentials = {}
        for system_id, password in table.items():
            if not isinstance(password, str):
                raise _fail(f"credentials.{system_id}", f"must be a string, not {password!r}")
            credentials[str(system_id)] = password
    rules_data = data.get("rules", [])
    if not isinstance(rules_data, list):
        raise _fail("rules", "must be an array of tables ([[rules]])")
    return Scenario(
        id_format=_choice(data, "id_format", _ID_FORMATS, "hex"),
        receipt_id_format=_choice(data, "receipt_id_format", _RECEIPT_ID_FORMATS, "same"),
        receipt_delay=_number("receipt_delay", data.get("receipt_delay", 0.05)),
        receipt_style=_choice(data, "receipt_style", _RECEIPT_STYLES, "text+tlv"),
        default=_outcome_list("default", data.get("default", ["deliver"])),
        rules=tuple(_rule_from_mapping(i, rule) for i, rule in enumerate(rules_data)),
        throughput=_number("throughput", data.get("throughput", 0)),
        window=_integer("window", data.get("window", 10), minimum=1),
        receipt_session=_choice(data, "receipt_session", _RECEIPT_SESSIONS, "any"),
        credentials=credentials,
        system_id=_string("system_id", data.get("system_id", "SIMSMSC")),
        max_records=_integer("max_records", data.get("max_records", 100_000), minimum=1),
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario TOML file. Errors are :class:`ScenarioError` naming the file and
    the key."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: invalid TOML: {exc}") from None
    try:
        return Scenario.from_mapping(data)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}", exc.key) from None


# ---------------------------------------------------------------------------- records


@attrs.define
class SubmissionRecord:
    """One submission to one number, as the simulator handled it.

    ``time`` is the wall-clock time (epoch seconds); ``attempt`` counts submissions to
    ``destination`` (1 for the first); ``message_id`` is the id in the response (None
    when the outcome refused the message); ``command`` is submit_sm, data_sm or
    submit_multi.
    """

    time: float
    system_id: str
    destination: str
    message_id: str | None
    attempt: int
    outcome: str
    command: str = "submit_sm"
    source: str = ""


class _Message:
    """A message the simulator accepted (kept for receipts, query, cancel, replace)."""

    __slots__ = (
        "alert_after",
        "cancelled",
        "data_coding",
        "dest_npi",
        "dest_ton",
        "destination",
        "error_code",
        "final_date",
        "message_id",
        "plan",
        "receipt_id",
        "registered_delivery",
        "session",
        "short_message",
        "source",
        "source_npi",
        "source_ton",
        "state",
        "submit_date",
        "system_id",
    )

    def __init__(
        self,
        *,
        message_id: str,
        receipt_id: str,
        system_id: str,
        source_ton: int,
        source_npi: int,
        source: str,
        dest_ton: int,
        dest_npi: int,
        destination: str,
        registered_delivery: int,
        data_coding: int,
        short_message: bytes,
        plan: OutcomePlan,
        alert_after: float | None,
    ) -> None:
        self.message_id = message_id
        self.receipt_id = receipt_id
        self.system_id = system_id
        self.source_ton = source_ton
        self.source_npi = source_npi
        self.source = source
        self.dest_ton = dest_ton
        self.dest_npi = dest_npi
        self.destination = destination
        self.registered_delivery = registered_delivery
        self.data_coding = data_coding
        self.short_message = short_message
        self.plan = plan
        self.alert_after = alert_after
        self.state: int = MessageState.ENROUTE
        self.error_code = 0
        self.submit_date = datetime.now()
        self.final_date: datetime | None = None
        self.cancelled = False
        self.session: SimulatorSession | None = None  # the session that submitted it


class _Job:
    """One receipt (step ``step`` of the message's plan) on its way out."""

    __slots__ = ("attempts", "message", "step")

    def __init__(self, message: _Message, step: int) -> None:
        self.message = message
        self.step = step
        self.attempts = 0


class _DelayQueue:
    """Items due a fixed delay after they were pushed, driven by a single timer.

    Every item has the same delay, so due times only grow and a FIFO is enough.
    """

    __slots__ = ("_fire", "_handle", "_items", "_loop", "delay")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, delay: float, fire: Callable[[_Job], None]
    ) -> None:
        self._loop = loop
        self.delay = delay
        self._fire = fire
        self._items: deque[tuple[float, _Job]] = deque()
        self._handle: asyncio.TimerHandle | None = None

    def push(self, job: _Job) -> None:
        due = self._loop.time() + self.delay
        self._items.append((due, job))
        if self._handle is None:
            self._handle = self._loop.call_at(due, self._run)

    def _run(self) -> None:
        self._handle = None
        items = self._items
        # The loop may wake a timer up to its clock resolution early.
        now = self._loop.time() + 0.001
        fire = self._fire
        while items and items[0][0] <= now:
            fire(items.popleft()[1])
        if items and self._handle is None:
            self._handle = self._loop.call_at(items[0][0], self._run)

    def clear(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class _Bucket:
    """A token bucket: ``rate`` per second, bursts up to ``rate`` (at least 1)."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self.stamp = now

    def take(self, now: float) -> bool:
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False


# ASCII for the receipt's text: field, as SMSCs write it.
_BINARY_CODINGS: Final = frozenset({0x02, 0x04})


def _receipt_text(short_message: bytes, data_coding: int) -> str:
    if not short_message or data_coding in _BINARY_CODINGS:
        return ""
    cut = 40 if data_coding == 0x08 else 20
    text = decode_text(short_message[:cut], data_coding)[:20]
    return text.encode("ascii", "replace").decode("ascii")


def _message_text(pdu: DataSm) -> bytes:
    payload = pdu.tlvs.get(Tag.message_payload, b"")
    if isinstance(payload, str):
        return payload.encode("latin-1", "replace")
    return payload if isinstance(payload, bytes) else b""


# ---------------------------------------------------------------------------- session

_BIND_RESPONSES: Final[
    dict[int, type[BindTransmitterResp] | type[BindReceiverResp] | type[BindTransceiverResp]]
] = {
    CommandId.BIND_TRANSMITTER: BindTransmitterResp,
    CommandId.BIND_RECEIVER: BindReceiverResp,
    CommandId.BIND_TRANSCEIVER: BindTransceiverResp,
}
_TRANSMIT_COMMANDS: Final = frozenset(
    {
        CommandId.SUBMIT_SM,
        CommandId.DATA_SM,
        CommandId.SUBMIT_MULTI,
        CommandId.QUERY_SM,
        CommandId.CANCEL_SM,
        CommandId.REPLACE_SM,
    }
)


class SimulatorSession(SmppSession):
    """The SMSC side of one ESME connection."""

    def __init__(
        self,
        simulator: CarrierSimulator,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        super().__init__(
            reader,
            writer,
            name=f"simulator<{where}>",
            window=simulator.scenario.window,
        )
        self.simulator = simulator
        self.system_id: str | None = None
        self.can_transmit = False
        self.can_receive = False
        self._loop = asyncio.get_running_loop()
        # sequence_number -> (receipt job, time sent) for deliver_sm awaiting a response
        self._inflight: dict[int, tuple[_Job, float]] = {}

    def is_bound(self) -> bool:
        return self.system_id is not None

    @property
    def has_room(self) -> bool:
        """Bound as a receiver, open, and with room in the window for a deliver_sm."""
        return self.can_receive and not self.closed.is_set() and len(self._inflight) < self.window

    @property
    def inflight(self) -> int:
        """deliver_sm sent and not answered yet."""
        return len(self._inflight)

    # ------------------------------------------------------------ requests
    def handle_request(self, pdu: Pdu) -> None:
        cid = pdu.command_id
        if cid in _BIND_RESPONSES:
            self._bind(pdu)
            return
        if cid not in _TRANSMIT_COMMANDS:
            super().handle_request(pdu)
            return
        if not self.can_transmit or self.system_id is None:
            self.send(pdu.response(command_status=CommandStatus.ESME_RINVBNDSTS))
            return
        sim = self.simulator
        if isinstance(pdu, SubmitSm):
            sim._on_submit_sm(self, self.system_id, pdu)
        elif isinstance(pdu, DataSm):
            sim._on_data_sm(self, self.system_id, pdu)
        elif isinstance(pdu, SubmitMulti):
            sim._on_submit_multi(self, self.system_id, pdu)
        elif isinstance(pdu, QuerySm):
            self.send(sim._on_query_sm(pdu))
        elif isinstance(pdu, CancelSm):
            self.send(sim._on_cancel_sm(pdu))
        elif isinstance(pdu, ReplaceSm):
            self.send(sim._on_replace_sm(pdu))
        else:  # pragma: no cover - _TRANSMIT_COMMANDS lists the cases above
            super().handle_request(pdu)

    def _bind(self, pdu: Pdu) -> None:
        assert isinstance(pdu, BindTransmitter | BindReceiver | BindTransceiver)
        sim = self.simulator
        resp_cls = _BIND_RESPONSES[pdu.command_id]
        seq = pdu.sequence_number
        if self.system_id is not None:
            self.send(resp_cls(sequence_number=seq, command_status=CommandStatus.ESME_RALYBND))
            return
        status = sim._check_credentials(pdu.system_id, pdu.password)
        if status != CommandStatus.ESME_ROK:
            log.info("%s: bind refused for %r: 0x%08X", self.name, pdu.system_id, status)
            self.send(resp_cls(sequence_number=seq, command_status=status))
            return
        self.system_id = pdu.system_id
        self.can_transmit = not isinstance(pdu, BindReceiver)
        self.can_receive = not isinstance(pdu, BindTransmitter)
        self.send(
            resp_cls(
                sequence_number=seq,
                system_id=sim.scenario.system_id,
                tlvs={Tag.sc_interface_version: 0x34},
            )
        )
        log.info("%s: bound as %s (%s)", self.name, pdu.command_name, pdu.system_id)
        if self.can_receive:
            sim._receiver_bound(self)

    # ------------------------------------------------------------ receipts out
    def send_receipt(self, pdu: DeliverSm, job: _Job) -> None:
        """Write a receipt and track its deliver_sm_resp (no task, no await): the base
        class answers the callback when the response arrives, when
        ``response_timeout`` passes without one, or when the connection ends."""
        if not self.request_cb(
            pdu,
            functools.partial(self._receipt_answered, job),
            self.response_timeout,
            use_window=False,  # counted here, in _inflight
        ):
            return  # closed: the job went back with the session
        self._inflight[pdu.sequence_number] = (job, self._loop.time())

    def _receipt_answered(self, job: _Job, result: Pdu | Exception) -> None:
        seq = result.sequence_number if isinstance(result, Pdu) else None
        entry = None
        if seq is not None:
            entry = self._inflight.pop(seq, None)
        else:
            for key, (j, _sent) in self._inflight.items():
                if j is job:
                    entry = self._inflight.pop(key)
                    break
        if entry is None:
            return
        if isinstance(result, TimeoutError):
            log.warning("%s: deliver_sm not answered; will resend", self.name)
        status = result.command_status if isinstance(result, Pdu) else None
        self.simulator._receipt_done(self, job, status)

    def on_closed(self) -> None:
        self.simulator._session_closed(self)


# ---------------------------------------------------------------------------- simulator


def _format_id(value: int, fmt: str) -> str:
    return f"{value:X}" if fmt == "hex" else str(value)


class CarrierSimulator:
    """A simulated carrier SMSC driven by a :class:`Scenario`.

    ``submissions`` lists what was submitted (the oldest are dropped beyond the
    scenario's ``max_records``); ``count_for(number)`` counts every scripted
    submission to a number; ``receipts_sent`` counts deliver_sm receipts written
    (a retried receipt counts again); ``alerts_sent`` and ``rate_limited`` count
    alert_notifications and submissions refused for throughput.
    """

    def __init__(
        self, scenario: Scenario | None = None, *, log_path: str | Path | None = None
    ) -> None:
        self.scenario = scenario if scenario is not None else Scenario()
        self.submissions: list[SubmissionRecord] = []
        self.receipts_sent = 0
        self.alerts_sent = 0
        self.rate_limited = 0
        self.port: int | None = None
        self.log_path = Path(log_path) if log_path is not None else None
        self._log_file: IO[str] | None = None
        self._server: asyncio.Server | None = None
        self._sessions: set[SimulatorSession] = set()
        self._conn_tasks: set[asyncio.Task[Any]] = set()
        self._receivers: dict[str, list[SimulatorSession]] = {}
        self._rr: dict[str, int] = {}
        self._backlog: dict[str, deque[_Job]] = {}
        # Insertion-ordered, so the oldest go first beyond max_records.
        self._messages: OrderedDict[str, list[_Message]] = OrderedDict()
        self._counts: dict[str, int] = {}
        # number -> {system_id: (source ton, npi, address)} of who submitted to it
        self._senders: dict[str, dict[str, tuple[int, int, str]]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._queue: _DelayQueue | None = None
        self._next_id = ID_START
        self._stopping = False
        rules = self.scenario.rules
        self._exact: dict[str, Rule] = {}
        for rule in rules:
            if rule.number is not None:
                self._exact.setdefault(rule.number, rule)
        self._prefixes = sorted(
            (rule for rule in rules if rule.prefix is not None),
            key=lambda rule: -len(rule.prefix or ""),
        )

    # ------------------------------------------------------------ lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen for ESMEs; returns the bound port."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        loop = asyncio.get_running_loop()
        self._stopping = False
        self._queue = _DelayQueue(loop, self.scenario.receipt_delay, self._due)
        self._open_log()
        self._server = await asyncio.start_server(self._on_connect, host, port)
        sockets = self._server.sockets
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        log.info("carrier simulator listening on %s:%d", host, self.port)
        return self.port

    def _open_log(self) -> None:
        if self.log_path is not None and self._log_file is None:
            # Line-buffered, so a person can follow it as it grows.
            self._log_file = open(self.log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    async def stop(self) -> None:
        """Close every session and stop listening."""
        self._stopping = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self.disconnect_all()
        if self._queue is not None:
            self._queue.clear()
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self._backlog.clear()
        if server is not None:
            await server.wait_closed()
        tasks = [t for t in self._conn_tasks if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def disconnect_all(self) -> None:
        """Close every session at once (a carrier restart). Receipts in flight wait for
        the next receiver bind."""
        sessions = list(self._sessions)
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:
            writer.close()
            return
        session = SimulatorSession(self, reader, writer)
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        self._sessions.add(session)
        log.info("%s: connected", session.name)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            if task is not None:
                self._conn_tasks.discard(task)

    @property
    def sessions(self) -> list[SimulatorSession]:
        return list(self._sessions)

    def bound_receivers(self, system_id: str) -> int:
        return sum(1 for s in self._receivers.get(system_id, ()) if not s.closed.is_set())

    def count_for(self, number: str) -> int:
        """How many submissions to ``number`` consumed a scripted outcome."""
        return self._counts.get(number, 0)

    def backlog(self, system_id: str) -> int:
        """Receipts waiting for a receiver of ``system_id``."""
        queue = self._backlog.get(system_id)
        return len(queue) if queue is not None else 0

    # ------------------------------------------------------------ binds
    def _check_credentials(self, system_id: str, password: str) -> int:
        creds = self.scenario.credentials
        if creds is None:
            return CommandStatus.ESME_ROK
        expected = creds.get(system_id)
        if expected is None:
            return CommandStatus.ESME_RINVSYSID
        if expected != password:
            return CommandStatus.ESME_RINVPASWD
        return CommandStatus.ESME_ROK

    def _receiver_bound(self, session: SimulatorSession) -> None:
        assert session.system_id is not None
        self._receivers.setdefault(session.system_id, []).append(session)
        self._pump(session.system_id)

    def _session_closed(self, session: SimulatorSession) -> None:
        self._sessions.discard(session)
        if session.system_id is not None:
            receivers = self._receivers.get(session.system_id)
            if receivers is not None and session in receivers:
                receivers.remove(session)
        log.info("%s: closed", session.name)

    # ------------------------------------------------------------ routing
    def _route(self, number: str) -> tuple[str, float | None, int]:
        """The outcome word, the alert delay and the attempt number for one submission."""
        attempt = self._counts.get(number, 0) + 1
        self._counts[number] = attempt
        rule = self._exact.get(number) if self._exact else None
        if rule is None and self._prefixes:
            for candidate in self._prefixes:
                if number.startswith(candidate.prefix or ""):
                    rule = candidate
                    break
        outcomes = rule.outcomes if rule is not None else self.scenario.default
        word = outcomes[attempt - 1] if attempt <= len(outcomes) else outcomes[-1]
        return word, (rule.alert_after if rule is not None else None), attempt

    def _admit(self, system_id: str) -> bool:
        rate = self.scenario.throughput
        if rate <= 0:
            return True
        now = time.monotonic()
        bucket = self._buckets.get(system_id)
        if bucket is None:
            bucket = self._buckets[system_id] = _Bucket(rate, now)
        if bucket.take(now):
            return True
        self.rate_limited += 1
        log.info("throughput limit for %s: answered ESME_RTHROTTLED", system_id)
        return False

    def _new_ids(self) -> tuple[str, str]:
        value = self._next_id
        self._next_id = value + 1
        scenario = self.scenario
        message_id = _format_id(value, scenario.id_format)
        fmt = scenario.receipt_id_format
        receipt_id = message_id if fmt == "same" else _format_id(value, fmt)
        return message_id, receipt_id

    def _record(
        self,
        system_id: str,
        command: str,
        source: str,
        destination: str,
        message_id: str | None,
        attempt: int,
        outcome: str,
    ) -> None:
        record = SubmissionRecord(
            time.time(), system_id, destination, message_id, attempt, outcome, command, source
        )
        records = self.submissions
        records.append(record)
        limit = self.scenario.max_records
        if len(records) > limit:
            del records[: max(len(records) - limit, limit // 10)]
        log.info(
            "%s from %s to %s: attempt %d, outcome %s, id %s",
            command,
            system_id,
            destination,
            attempt,
            outcome,
            message_id,
        )
        if self._log_file is not None:
            self._log_file.write(json.dumps(attrs.asdict(record)) + "\n")

    def _accept(
        self,
        system_id: str,
        command: str,
        *,
        source_ton: int,
        source_npi: int,
        source: str,
        dest_ton: int,
        dest_npi: int,
        destination: str,
        registered_delivery: int,
        data_coding: int,
        short_message: bytes,
        message_ids: tuple[str, str] | None = None,
    ) -> tuple[OutcomePlan, _Message | None, str]:
        """Route one destination: record it and, when accepted, keep the message."""
        word, alert_after, attempt = self._route(destination)
        plan = OUTCOMES[word]
        message: _Message | None = None
        message_id: str | None = None
        if plan.status == CommandStatus.ESME_ROK:
            if message_ids is None:
                message_ids = self._new_ids()
            message_id = message_ids[0]
            message = _Message(
                message_id=message_id,
                receipt_id=message_ids[1],
                system_id=system_id,
                source_ton=source_ton,
                source_npi=source_npi,
                source=source,
                dest_ton=dest_ton,
                dest_npi=dest_npi,
                destination=destination,
                registered_delivery=registered_delivery,
                data_coding=data_coding,
                short_message=short_message,
                plan=plan,
                alert_after=alert_after,
            )
            self._keep(message)
        senders = self._senders.get(destination)
        if senders is None:
            senders = self._senders[destination] = {}
        senders[system_id] = (source_ton, source_npi, source)
        self._record(system_id, command, source, destination, message_id, attempt, word)
        return plan, message, word

    def _keep(self, message: _Message) -> None:
        messages = self._messages
        same = messages.get(message.message_id)
        if same is None:
            messages[message.message_id] = [message]
            if len(messages) > self.scenario.max_records:
                messages.popitem(last=False)
        else:
            same.append(message)

    def _start_receipts(self, message: _Message) -> None:
        """Schedule the first receipt step, or run it now for receipt_first."""
        plan = message.plan
        if not plan.receipts:
            return
        job = _Job(message, 0)
        if plan.receipt_first:
            self._due(job)
        else:
            assert self._queue is not None
            self._queue.push(job)

    # ------------------------------------------------------------ submissions
    def _on_submit_sm(self, session: SimulatorSession, system_id: str, pdu: SubmitSm) -> None:
        self._on_message(session, system_id, pdu, "submit_sm", pdu.short_message)

    def _on_data_sm(self, session: SimulatorSession, system_id: str, pdu: DataSm) -> None:
        self._on_message(session, system_id, pdu, "data_sm", _message_text(pdu))

    def _on_message(
        self,
        session: SimulatorSession,
        system_id: str,
        pdu: SubmitSm | DataSm,
        command: str,
        short_message: bytes,
    ) -> None:
        if not self._admit(system_id):
            session.send(pdu.response(command_status=CommandStatus.ESME_RTHROTTLED))
            return
        plan, message, _word = self._accept(
            system_id,
            command,
            source_ton=pdu.source_addr_ton,
            source_npi=pdu.source_addr_npi,
            source=pdu.source_addr,
            dest_ton=pdu.dest_addr_ton,
            dest_npi=pdu.dest_addr_npi,
            destination=pdu.destination_addr,
            registered_delivery=pdu.registered_delivery,
            data_coding=pdu.data_coding,
            short_message=short_message,
        )
        if message is not None:
            message.session = session
        self._answer(session, pdu, plan, message)

    def _answer(
        self,
        session: SimulatorSession,
        pdu: SubmitSm | DataSm,
        plan: OutcomePlan,
        message: _Message | None,
    ) -> None:
        if not plan.respond:
            return
        if message is None:
            session.send(pdu.response(command_status=plan.status))
            return
        if plan.receipt_first:
            self._start_receipts(message)
            session.send(pdu.response(message_id=message.message_id))
        else:
            session.send(pdu.response(message_id=message.message_id))
            self._start_receipts(message)

    def _on_submit_multi(self, session: SimulatorSession, system_id: str, pdu: SubmitMulti) -> None:
        if not self._admit(system_id):
            session.send(pdu.response(command_status=CommandStatus.ESME_RTHROTTLED))
            return
        ids = self._new_ids()
        unsuccess: list[UnsuccessSme] = []
        accepted: list[_Message] = []
        respond = True
        for dest in pdu.dest_addresses:
            if isinstance(dest, DistributionList):
                unsuccess.append(
                    UnsuccessSme(
                        destination_addr=dest.dl_name[:20],
                        error_status_code=CommandStatus.ESME_RCNTSUBDL,
                    )
                )
                continue
            plan, message, _word = self._accept(
                system_id,
                "submit_multi",
                source_ton=pdu.source_addr_ton,
                source_npi=pdu.source_addr_npi,
                source=pdu.source_addr,
                dest_ton=dest.dest_addr_ton,
                dest_npi=dest.dest_addr_npi,
                destination=dest.destination_addr,
                registered_delivery=pdu.registered_delivery,
                data_coding=pdu.data_coding,
                short_message=pdu.short_message,
                message_ids=ids,
            )
            respond = respond and plan.respond
            if message is None:
                unsuccess.append(
                    UnsuccessSme(
                        dest_addr_ton=dest.dest_addr_ton,
                        dest_addr_npi=dest.dest_addr_npi,
                        destination_addr=dest.destination_addr,
                        error_status_code=plan.status,
                    )
                )
            else:
                accepted.append(message)
        if not respond:
            return
        for message in accepted:
            if message.plan.receipt_first:
                self._start_receipts(message)
        session.send(pdu.response(message_id=ids[0], unsuccess_smes=unsuccess))
        for message in accepted:
            if not message.plan.receipt_first:
                self._start_receipts(message)

    # ------------------------------------------------------------ query, cancel, replace
    def _find(self, message_id: str) -> list[_Message]:
        found = self._messages.get(message_id)
        if found is not None:
            return found
        text = message_id.strip()
        try:
            value = int(text, 16 if self.scenario.id_format == "hex" else 10)
        except ValueError:
            return []
        return self._messages.get(_format_id(value, self.scenario.id_format), [])

    def _on_query_sm(self, pdu: QuerySm) -> Pdu:
        found = self._find(pdu.message_id)
        if not found:
            return pdu.response(command_status=CommandStatus.ESME_RINVMSGID)
        message = found[0]
        final_date = ""
        if message.final_date is not None:
            final_date = format_absolute(message.final_date.astimezone(UTC))
        return pdu.response(
            message_id=pdu.message_id,
            final_date=final_date,
            message_state=message.state,
            error_code=message.error_code & 0xFF,
        )

    def _on_cancel_sm(self, pdu: CancelSm) -> Pdu:
        if pdu.message_id:
            candidates = self._find(pdu.message_id)
            if not candidates:
                return pdu.response(command_status=CommandStatus.ESME_RINVMSGID)
        else:
            candidates = [
                m
                for group in self._messages.values()
                for m in group
                if m.destination == pdu.destination_addr
                and (not pdu.source_addr or m.source == pdu.source_addr)
            ]
        pending = [m for m in candidates if m.final_date is None and not m.cancelled]
        if not pending:
            return pdu.response(command_status=CommandStatus.ESME_RCANCELFAIL)
        now = datetime.now()
        for message in pending:
            message.cancelled = True
            message.state = MessageState.DELETED
            message.final_date = now
        return pdu.response()

    def _on_replace_sm(self, pdu: ReplaceSm) -> Pdu:
        found = self._find(pdu.message_id)
        if not found:
            return pdu.response(command_status=CommandStatus.ESME_RINVMSGID)
        pending = [m for m in found if m.final_date is None and not m.cancelled]
        if not pending:
            return pdu.response(command_status=CommandStatus.ESME_RREPLACEFAIL)
        for message in pending:
            message.short_message = pdu.short_message
            if pdu.registered_delivery:
                message.registered_delivery = pdu.registered_delivery
        return pdu.response()

    # ------------------------------------------------------------ receipts
    def _due(self, job: _Job) -> None:
        """A receipt step is due: settle the message's state and send if asked."""
        message = job.message
        if message.cancelled or self._stopping:
            return
        plan = message.plan
        step = plan.receipts[job.step]
        if not step.intermediate:
            message.state = step.state
            message.final_date = datetime.now()
            code = step.network_error_code
            message.error_code = code[1] if code is not None else 0
        wanted = message.registered_delivery & REG_DELIVERY_RECEIPT_MASK
        if not plan.lost and (
            wanted == REG_DELIVERY_SUCCESS_FAILURE
            or (wanted == REG_DELIVERY_FAILURE and step.failed)
        ):
            self._deliver(job)
        if job.step + 1 < len(plan.receipts):
            assert self._queue is not None
            self._queue.push(_Job(message, job.step + 1))
        elif message.alert_after is not None and plan is _ABSENT:
            self._later(message.alert_after, self._alert_for, message)

    def _later(self, delay: float, fn: Callable[[Any], None], arg: Any) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def run() -> None:
            self._timers.discard(handle)
            fn(arg)

        handle = loop.call_later(delay, run)
        self._timers.add(handle)

    def _deliver(self, job: _Job) -> None:
        """Send a receipt on a receiver session of the message's system_id, or keep it
        in that system_id's backlog."""
        system_id = job.message.system_id
        backlog = self._backlog.get(system_id)
        if backlog:  # keep the order: older receipts first
            self._push_backlog(system_id, job)
            self._pump(system_id)
            return
        mode = self.scenario.receipt_session
        origin = job.message.session
        session: SimulatorSession | None = None
        if mode == "same" and origin in self._receivers.get(system_id, ()):
            session = origin if origin is not None and origin.has_room else None
        if session is None:
            session = self._pick(system_id, origin if mode == "other" else None)
        if session is None:
            self._push_backlog(system_id, job)
            return
        self._send_receipt(session, job)

    def _push_backlog(self, system_id: str, job: _Job, *, front: bool = False) -> None:
        backlog = self._backlog.get(system_id)
        if backlog is None:
            backlog = self._backlog[system_id] = deque()
        if len(backlog) >= MAX_BACKLOG:
            dropped = backlog.popleft()
            log.warning(
                "receipt backlog of %s full: dropped one for %s",
                system_id,
                dropped.message.message_id,
            )
        if front:
            backlog.appendleft(job)
        else:
            backlog.append(job)

    def _pick(
        self, system_id: str, avoid: SimulatorSession | None = None
    ) -> SimulatorSession | None:
        """A receiver of `system_id` with room, in turn; not `avoid` while another one
        is bound."""
        receivers = self._receivers.get(system_id)
        if not receivers:
            return None
        count = len(receivers)
        start = self._rr.get(system_id, 0)
        for offset in range(count):
            session = receivers[(start + offset) % count]
            if session is avoid and count > 1:
                continue
            if session.has_room:
                self._rr[system_id] = (start + offset + 1) % count
                return session
        return None

    def _pump(self, system_id: str) -> None:
        backlog = self._backlog.get(system_id)
        while backlog:
            session = self._pick(system_id)
            if session is None:
                return
            self._send_receipt(session, backlog.popleft())

    def _send_receipt(self, session: SimulatorSession, job: _Job) -> None:
        try:
            pdu = self._build_receipt(job)
        except ValueError as exc:
            log.warning("cannot build receipt for %s: %s", job.message.message_id, exc)
            return
        session.send_receipt(pdu, job)
        self.receipts_sent += 1

    def _build_receipt(self, job: _Job) -> DeliverSm:
        message = job.message
        step = message.plan.receipts[job.step]
        style = self.scenario.receipt_style
        receipt_id = message.receipt_id
        text = b""
        if style != "tlv":
            text = format_receipt_text(
                message_id=receipt_id,
                stat=step.stat,
                err=step.err,
                submit_date=message.submit_date,
                done_date=message.final_date or datetime.now(),
                text=_receipt_text(message.short_message, message.data_coding),
            ).encode("ascii", "replace")
        tlvs = (
            receipt_tlvs(receipt_id, step.stat, step.network_error_code) if style != "text" else {}
        )
        return DeliverSm(
            sequence_number=0,
            source_addr_ton=message.dest_ton,
            source_addr_npi=message.dest_npi,
            source_addr=message.destination,
            dest_addr_ton=message.source_ton,
            dest_addr_npi=message.source_npi,
            destination_addr=message.source,
            esm_class=ESM_CLASS_INTERMEDIATE if step.intermediate else ESM_CLASS_SMSC_RECEIPT,
            short_message=text,
            tlvs=tlvs,
        )

    def _receipt_done(self, session: SimulatorSession, job: _Job, status: int | None) -> None:
        """The deliver_sm of ``job`` was answered (``status``) or lost (None)."""
        system_id = job.message.system_id
        if status == CommandStatus.ESME_ROK or self._stopping:
            if self._backlog.get(system_id):
                self._pump(system_id)
            return
        job.attempts += 1
        if job.attempts >= MAX_RECEIPT_ATTEMPTS:
            log.warning(
                "receipt for %s given up after %d attempts", job.message.message_id, job.attempts
            )
        elif status is None and session.closed.is_set():
            self._push_backlog(system_id, job, front=True)
        else:
            self._later(RECEIPT_RETRY_DELAY, self._deliver, job)
        self._pump(system_id)

    # ------------------------------------------------------------ alerts
    def _alert_for(self, message: _Message) -> None:
        self._send_alerts(message.destination, {message.system_id})

    async def send_alert(self, number: str) -> int:
        """Send an alert_notification (``number`` is available again) to a bound
        receiver of every system_id that submitted to it, or of every system_id when
        none did. Returns how many were sent."""
        return self._send_alerts(number, None)

    def _send_alerts(self, number: str, system_ids: set[str] | None) -> int:
        senders = self._senders.get(number, {})
        targets = system_ids if system_ids is not None else (set(senders) or set(self._receivers))
        sent = 0
        for system_id in sorted(targets):
            receivers = [s for s in self._receivers.get(system_id, ()) if not s.closed.is_set()]
            if not receivers:
                continue
            ton, npi, esme_addr = senders.get(system_id, (0, 0, ""))
            receivers[0].send(
                AlertNotification(
                    sequence_number=receivers[0].next_sequence(),
                    source_addr=number,
                    esme_addr_ton=ton,
                    esme_addr_npi=npi,
                    esme_addr=esme_addr,
                    tlvs={Tag.ms_availability_status: 0},
                )
            )
            sent += 1
            log.info("alert_notification for %s to %s", number, system_id)
        self.alerts_sent += sent
        return sent


async def run_simulator(
    host: str, port: int, scenario_path: str | Path | None, *, log_path: str | Path | None = None
) -> None:
    """Run a simulator until cancelled (the ``bounceback simulate`` command)."""
    scenario = load_scenario(scenario_path) if scenario_path is not None else Scenario()
    simulator = CarrierSimulator(scenario, log_path=log_path)
    await simulator.start(host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
