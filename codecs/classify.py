"""The soft/hard classifier: receipts and command_status values to outcomes.

Pure functions over plain values: :func:`classify_receipt`,
:func:`classify_submit_status` and :func:`classify_data_sm_resp` return an
:class:`Outcome` saying whether the message was delivered, is still pending, bounced
soft (hold and resubmit) or bounced hard (report the failure), with a machine reason
key, a readable description, what was looked at and which rule decided.

Precedence for a receipt:

1. ``stat`` overrides (matched on the word as written, then on the normalised word).
2. A delivered state (``stat:DELIVRD`` or message_state 2) is DELIVERED, whatever
   ``err`` or ``network_error_code`` say: some SMSCs send a non-zero err with
   DELIVRD, and resubmitting would deliver the message twice. A non-final state
   (ENROUTE, ACCEPTD, SCHEDULED, or an intermediate notification) is PENDING.
3. ``network_error_code`` and ``err`` overrides.
4. The ``network_error_code`` TLV: type 3 is a GSM MAP error; types 1 and 2 (and the
   5.0 cause-code types 4 and 5) are read with the ANSI-41 access-denied and cause
   tables; type 7 is an SMPP command_status; type 8 is message-centre specific, so
   the stat decides (``err`` is then not read as a MAP code either).
5. ``err:`` in the carrier's err space: ``"map"`` (a GSM MAP code, the default, as
   Kannel assumes), ``"map40"`` (MAP codes, except 40-46 = 40 + SM delivery failure
   cause) or ``"none"`` (ignore err).
6. The stat's default class: EXPIRED soft ``expired``, UNKNOWN soft ``unknown_state``
   (one retry), UNDELIV hard ``carrier_permanent``, DELETED/REJECTD/SKIPPED hard. A
   receipt with no recognisable state is soft ``unknown_state`` with one retry.

A code that is zero, not numeric or not in a table is not usable and the next step
decides. Nothing but a delivered state can give DELIVERED: codes never do, and code
overrides may not say delivered.

Overrides come from the configuration's ``[classify]`` table (:meth:`Rules.from_mapping`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .constants import STATE_STAT_WORDS, CommandStatus
from .errors import (
    ANSI_ACCESS_DENIED_REASONS,
    ANSI_CAUSE_CODES,
    DELIVERY_FAILURE_REASONS,
    MAP_ERRORS,
    PENDING_REASONS,
    REASON_DESCRIPTIONS,
    SM_DELIVERY_FAILURE_CAUSES,
    SMPP50_STATUS,
    SOFT_REASONS,
    STAT_CLASSES,
    SUBMIT_STATUS,
    VENDOR_STATUS_RANGE,
    ErrorInfo,
    submit_status_info,
)
from .receipt import PENDING_STATS, Receipt, decode_network_error_code

__all__ = [
    "ERR_SPACES",
    "SOFT_REASONS",
    "Outcome",
    "OutcomeKind",
    "Override",
    "Rules",
    "classify_data_sm_resp",
    "classify_network_error_code",
    "classify_receipt",
    "classify_submit_status",
    "err_key",
]

ERR_SPACES: Final[frozenset[str]] = frozenset({"map", "map40", "none"})


class OutcomeKind(enum.Enum):
    DELIVERED = "delivered"
    PENDING = "pending"
    SOFT = "soft"
    HARD = "hard"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a receipt or response means for the message.

    ``reason`` is a machine key (soft reasons are a fixed vocabulary, see
    :data:`SOFT_REASONS`); ``description`` is for people; ``code`` says what was
    looked at (``"stat:UNDELIV err:001"``, ``"network_error_code:3/6"``,
    ``"command_status:0x00000058"``); ``rule`` says which rule matched
    (``"map-error 6"``, ``"stat UNDELIV default"``, ``"override err 5"``); ``source``
    is ``"default"`` or ``"override"``; ``max_retries`` caps resubmissions when set.
    """

    kind: OutcomeKind
    reason: str
    description: str
    code: str
    rule: str
    source: str = "default"
    max_retries: int | None = None


@dataclass(frozen=True, slots=True)
class Override:
    """A configured classification that replaces the built-in one."""

    kind: OutcomeKind
    reason: str
    max_retries: int | None = None
    description: str | None = None


def err_key(err: str) -> str:
    """The comparison form of an ``err`` value: numbers without padding, else upper-case.

    ``"005"``, ``"5"`` and ``"0005"`` all give ``"5"``.
    """
    text = err.strip()
    return str(int(text)) if _is_number(text) else text.upper()


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


@dataclass(frozen=True, slots=True)
class Rules:
    """Classification settings of one carrier (or the defaults).

    ``err_space`` says what ``err:`` holds (:data:`ERR_SPACES`). The override tables
    are keyed by ``err`` (compared as by :func:`err_key`), by ``command_status``, by
    stat word (upper-case) and by ``(network type, code)``. ``carriers`` holds the
    complete rules of named carriers; :meth:`for_carrier` picks one.
    """

    err_space: str = "map"
    err: dict[str, Override] = field(default_factory=dict)
    status: dict[int, Override] = field(default_factory=dict)
    stat: dict[str, Override] = field(default_factory=dict)
    network_error_code: dict[tuple[int, int], Override] = field(default_factory=dict)
    carriers: dict[str, Rules] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.err_space not in ERR_SPACES:
            raise ValueError(
                f"err_space: unknown value {self.err_space!r} (expected map, map40 or none)"
            )
        object.__setattr__(self, "err", {err_key(k): v for k, v in self.err.items()})
        object.__setattr__(self, "stat", {k.strip().upper(): v for k, v in self.stat.items()})

    def for_carrier(self, name: str | None) -> Rules:
        """The rules for carrier ``name``: its own when configured, else these."""
        if name is not None:
            rules = self.carriers.get(name)
            if rules is not None:
                return rules
        return self

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, path: str = "classify") -> Rules:
        """Build rules from the configuration's ``[classify]`` table.

        Layout (every key optional)::

            err_space = "map"                        # map | map40 | none
            [err]                 "005" = "hard:unknown_subscriber"
            [status]              "0x00000045" = "soft:system_failure"
            [stat]                SENT = "pending:enroute"
            [network_error_code]  "3/6" = { kind = "soft", reason = "absent_subscriber",
                                            max_retries = 5 }
            [carriers.NAME]       the same keys, for one carrier

        A value is ``"kind:reason"`` (``"delivered"`` and ``"pending"`` may omit the
        reason) or a table with ``kind``, ``reason`` and optional ``max_retries`` and
        ``description``. Soft reasons must come from :data:`SOFT_REASONS`; only
        ``stat`` overrides may say delivered. A carrier inherits ``err_space`` and
        every override it does not set itself. Errors are ValueErrors naming the key.
        """
        base = _parse_rules(data, path, parent=None)
        carriers_data = data.get("carriers", {})
        if not isinstance(carriers_data, Mapping):
            raise ValueError(f"{path}.carriers: expected a table of carrier names")
        carriers: dict[str, Rules] = {}
        for name, sub in carriers_data.items():
            sub_path = f"{path}.carriers.{name}"
            if not isinstance(sub, Mapping):
                raise ValueError(f"{sub_path}: expected a table")
            if "carriers" in sub:
                raise ValueError(f"{sub_path}.carriers: carriers cannot be nested")
            carriers[str(name)] = _parse_rules(sub, sub_path, parent=base)
        return cls(
            err_space=base.err_space,
            err=base.err,
            status=base.status,
            stat=base.stat,
            network_error_code=base.network_error_code,
            carriers=carriers,
        )


_DEFAULT_RULES: Final = Rules()

_RULE_KEYS: Final = frozenset(
    {"err_space", "err", "status", "stat", "network_error_code", "carriers"}
)
_REASON_RE: Final = re.compile(r"[a-z][a-z0-9_]*\Z")


def _parse_override(value: object, where: str, *, allow_delivered: bool) -> Override:
    kind_text: object
    reason: object
    max_retries: object = None
    description: object = None
    if isinstance(value, str):
        kind_text, _, reason = value.strip().partition(":")
        reason = reason.strip() or None
    elif isinstance(value, Mapping):
        unknown = set(value) - {"kind", "reason", "max_retries", "description"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        kind_text = value.get("kind")
        reason = value.get("reason")
        max_retries = value.get("max_retries")
        description = value.get("description")
    else:
        raise ValueError(f'{where}: expected "kind:reason" or a table, got {value!r}')
    try:
        kind = OutcomeKind(str(kind_text).strip().lower())
    except ValueError:
        raise ValueError(
            f"{where}: unknown kind {kind_text!r} (expected delivered, pending, soft or hard)"
        ) from None
    if kind is OutcomeKind.DELIVERED and not allow_delivered:
        raise ValueError(f"{where}: only stat overrides may say delivered")
    if reason is None:
        if kind is OutcomeKind.DELIVERED:
            reason = "delivered"
        elif kind is OutcomeKind.PENDING:
            reason = "enroute"
        else:
            raise ValueError(f'{where}: a {kind.value} override needs a reason ("{kind.value}:…")')
    if not isinstance(reason, str) or not _REASON_RE.match(reason):
        raise ValueError(f"{where}: reason must be a lower-case key like absent_subscriber")
    if kind is OutcomeKind.SOFT and reason not in SOFT_REASONS:
        raise ValueError(
            f"{where}: unknown soft reason {reason!r} (expected one of "
            f"{', '.join(sorted(SOFT_REASONS))})"
        )
    if kind is OutcomeKind.PENDING and reason not in PENDING_REASONS:
        raise ValueError(f"{where}: pending reason must be enroute or accepted")
    if kind is OutcomeKind.DELIVERED and reason != "delivered":
        raise ValueError(f"{where}: delivered reason must be delivered")
    if max_retries is not None and (
        isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
    ):
        raise ValueError(f"{where}.max_retries: expected a whole number >= 0")
    if description is not None and not isinstance(description, str):
        raise ValueError(f"{where}.description: expected a string")
    return Override(kind, reason, max_retries, description)


def _parse_status_key(key: object, where: str) -> int:
    if isinstance(key, str) and key.strip().upper() in CommandStatus.__members__:
        status = int(CommandStatus[key.strip().upper()])
    else:
        try:
            status = _parse_int(key)
        except ValueError:
            raise ValueError(
                f"{where}: {key!r} is not a command_status (use 0x58, 88 or ESME_RTHROTTLED)"
            ) from None
    if not 0 <= status <= 0xFFFFFFFF:
        raise ValueError(f"{where}: command_status {key!r} out of range")
    return status


def _parse_int(text: object) -> int:
    """A whole number from an int or a decimal / ``0x`` hex string; ValueError otherwise."""
    if isinstance(text, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(text, int):
        return text
    if isinstance(text, str):
        body = text.strip()
        if body.lower().startswith("0x"):
            return int(body[2:], 16)
        return int(body, 10)
    raise ValueError(f"{text!r} is not a number")


def _parse_nec_key(key: object, where: str) -> tuple[int, int]:
    parts: list[object] = []
    if isinstance(key, (tuple, list)):
        parts = list(key)
    elif isinstance(key, str):
        parts = [p.strip() for p in re.split(r"[/:,]", key)]
    try:
        if len(parts) != 2:
            raise ValueError("expected two parts")
        kind, code = _parse_int(parts[0]), _parse_int(parts[1])
    except ValueError:
        raise ValueError(f'{where}: {key!r} is not a network error code (use "3/6")') from None
    if not 0 <= kind <= 0xFF or not 0 <= code <= 0xFFFF:
        raise ValueError(f"{where}: network error code {key!r} out of range")
    return (kind, code)


def _table_items(data: Mapping[str, Any], name: str, path: str) -> list[tuple[Any, Any]]:
    table = data.get(name, {})
    if not isinstance(table, Mapping):
        raise ValueError(f"{path}.{name}: expected a table")
    return list(table.items())


def _parse_rules(data: Mapping[str, Any], path: str, parent: Rules | None) -> Rules:
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a table")
    unknown = set(data) - _RULE_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    err_space = data.get("err_space", parent.err_space if parent else "map")
    if err_space not in ERR_SPACES:
        raise ValueError(f"{path}.err_space: {err_space!r} is not one of map, map40, none")

    err = dict(parent.err) if parent else {}
    for key, value in _table_items(data, "err", path):
        where = f"{path}.err.{key}"
        if isinstance(key, int) and not isinstance(key, bool):
            key = str(key)
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"{where}: err keys must be non-empty strings")
        err[err_key(key)] = _parse_override(value, where, allow_delivered=False)

    status = dict(parent.status) if parent else {}
    for key, value in _table_items(data, "status", path):
        where = f"{path}.status.{key}"
        status[_parse_status_key(key, where)] = _parse_override(value, where, allow_delivered=False)

    stat = dict(parent.stat) if parent else {}
    for key, value in _table_items(data, "stat", path):
        where = f"{path}.stat.{key}"
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"{where}: stat keys must be words")
        stat[key.strip().upper()] = _parse_override(value, where, allow_delivered=True)

    nec = dict(parent.network_error_code) if parent else {}
    for key, value in _table_items(data, "network_error_code", path):
        where = f"{path}.network_error_code.{key}"
        nec[_parse_nec_key(key, where)] = _parse_override(value, where, allow_delivered=False)

    return Rules(err_space=err_space, err=err, status=status, stat=stat, network_error_code=nec)


# --- building outcomes -----------------------------------------------------------------


def _from_info(info: ErrorInfo, code: str, rule: str) -> Outcome:
    return Outcome(
        kind=OutcomeKind(info.kind),
        reason=info.reason,
        description=info.description,
        code=code,
        rule=rule,
        source="default",
        max_retries=info.max_retries,
    )


def _from_override(override: Override, code: str, rule: str) -> Outcome:
    description = override.description or REASON_DESCRIPTIONS.get(
        override.reason, override.reason.replace("_", " ")
    )
    return Outcome(
        kind=override.kind,
        reason=override.reason,
        description=description,
        code=code,
        rule=rule,
        source="override",
        max_retries=override.max_retries,
    )


# Sentinel: the network error code is message-centre specific, the stat decides.
_BY_STAT: Final = "by-stat"


def _nec_lookup(nec: tuple[int, int]) -> tuple[ErrorInfo, str] | str | None:
    kind, code = nec
    # Zero means "no error" for GSM and SMPP codes and "not used" for access-denied
    # reasons; only the ANSI cause codes give it a meaning (address vacant).
    if code == 0 and kind not in (4, 5):
        return None
    if kind == 3:
        info = MAP_ERRORS.get(code)
        return (info, f"map-error {code}") if info else None
    if kind in (1, 2):
        info = ANSI_ACCESS_DENIED_REASONS.get(code)
        if info is not None:
            return info, f"ansi access-denied {code}"
    if kind in (1, 2, 4, 5):
        info = ANSI_CAUSE_CODES.get(code)
        return (info, f"ansi cause-code {code}") if info else None
    if kind == 7:
        info = SUBMIT_STATUS.get(code) or SMPP50_STATUS.get(code)
        return (info, f"smpp-error 0x{code:08X}") if info else None
    if kind == 8:
        return _BY_STAT
    return None


def _nec_code(nec: tuple[int, int]) -> str:
    return f"network_error_code:{nec[0]}/{nec[1]}"


def classify_network_error_code(nec: tuple[int, int]) -> Outcome | None:
    """The built-in outcome of a ``network_error_code`` alone, or None if not usable."""
    found = _nec_lookup(nec)
    if isinstance(found, tuple):
        return _from_info(found[0], _nec_code(nec), found[1])
    return None


def _err_lookup(err: str, err_space: str) -> tuple[ErrorInfo, str] | None:
    text = err.strip()
    if err_space == "none" or not _is_number(text):
        return None
    number = int(text)
    if number == 0:
        return None
    if err_space == "map40" and 40 <= number <= 46:
        cause = number - 40
        return SM_DELIVERY_FAILURE_CAUSES[cause], f"map40 cause {cause}"
    info = MAP_ERRORS.get(number)
    return (info, f"map-error {number}") if info else None


def _err_note(err: str, err_space: str) -> str:
    if err_space == "none":
        return f" (err {err} ignored: err_space none)"
    if not _is_number(err):
        return f" (err {err!r} is not numeric)"
    return f" (err {err} is not a known MAP code)"


def _effective_stat(receipt: Receipt) -> str | None:
    if receipt.stat is not None:
        return receipt.stat
    if receipt.message_state is not None:
        return STATE_STAT_WORDS.get(receipt.message_state)
    return None


def _stat_code(receipt: Receipt, stat: str | None) -> str:
    if receipt.stat is not None:
        head = f"stat:{receipt.stat}"
    elif receipt.message_state is not None:
        head = f"message_state:{receipt.message_state}"
    elif receipt.raw_stat is not None:
        head = f"stat:{receipt.raw_stat}"
    else:
        head = "stat:-"
    return f"{head} err:{receipt.err}" if receipt.err is not None else head


def classify_receipt(receipt: Receipt, rules: Rules | None = None) -> Outcome:
    """Classify a delivery receipt (see the module doc for the precedence)."""
    rules = rules or _DEFAULT_RULES
    stat = _effective_stat(receipt)
    code = _stat_code(receipt, stat)

    for key in (receipt.raw_stat, stat):
        if key is not None:
            override = rules.stat.get(key.strip().upper())
            if override is not None:
                return _from_override(override, code, f"override stat {key.strip().upper()}")

    if stat == "DELIVRD":
        info = STAT_CLASSES["DELIVRD"]
        noted = receipt.err is not None and err_key(receipt.err) not in ("0", "")
        rule = "stat DELIVRD"
        if noted:
            rule += f" (err {receipt.err} ignored: delivered is final)"
        elif receipt.network_error_code is not None:
            rule += " (network_error_code ignored: delivered is final)"
        return _from_info(info, code, rule)
    if stat in PENDING_STATS or receipt.intermediate:
        if stat in PENDING_STATS:
            return _from_info(STAT_CLASSES[stat], code, f"stat {stat}")
        return _from_info(STAT_CLASSES["ENROUTE"], code, "intermediate notification")

    nec = receipt.network_error_code
    if nec is not None and nec in rules.network_error_code:
        return _from_override(
            rules.network_error_code[nec],
            _nec_code(nec),
            f"override network_error_code {nec[0]}/{nec[1]}",
        )
    if receipt.err is not None and receipt.err.strip():
        key = err_key(receipt.err)
        override = rules.err.get(key)
        if override is not None:
            return _from_override(override, code, f"override err {key}")

    skip_err = False
    note = ""
    if nec is not None:
        found = _nec_lookup(nec)
        if isinstance(found, tuple):
            return _from_info(found[0], _nec_code(nec), found[1])
        if found == _BY_STAT:
            skip_err = True
            note = f" (network_error_code {nec[0]}/{nec[1]} is message-centre specific)"
    if not skip_err and receipt.err is not None and receipt.err.strip():
        found_err = _err_lookup(receipt.err, rules.err_space)
        if found_err is not None:
            return _from_info(found_err[0], code, found_err[1])
        if err_key(receipt.err) != "0" and not note:
            note = _err_note(receipt.err.strip(), rules.err_space)

    if stat is None:
        what = f"stat {receipt.raw_stat!r} not recognised" if receipt.raw_stat else "no stat"
        return Outcome(
            kind=OutcomeKind.SOFT,
            reason="unknown_state",
            description="message state unknown",
            code=code,
            rule=what + note,
            max_retries=1,
        )
    # A stat word outside the table is treated as UNKNOWN: never delivered.
    stat_info = STAT_CLASSES.get(stat, STAT_CLASSES["UNKNOWN"])
    return _from_info(stat_info, code, f"stat {stat} default{note}")


def _status_code(status: int) -> str:
    return f"command_status:0x{status:08X}"


def classify_submit_status(command_status: int, rules: Rules | None = None) -> Outcome:
    """Classify a ``submit_sm_resp`` command_status (0 is PENDING ``accepted``)."""
    rules = rules or _DEFAULT_RULES
    code = _status_code(command_status)
    override = rules.status.get(command_status)
    if override is not None:
        return _from_override(override, code, f"override status 0x{command_status:08X}")
    info = submit_status_info(command_status)
    if command_status in SUBMIT_STATUS or command_status in SMPP50_STATUS:
        rule = f"command_status {info.name}"
    elif command_status in VENDOR_STATUS_RANGE:
        rule = "vendor range 0x400-0x4FF default"
    else:
        rule = "reserved command_status default"
    return _from_info(info, code, rule)


def classify_data_sm_resp(
    command_status: int,
    delivery_failure_reason: int | None = None,
    network_error_code: tuple[int, int] | bytes | None = None,
    rules: Rules | None = None,
    *,
    transaction: bool = False,
) -> Outcome:
    """Classify a ``data_sm_resp``.

    ``ESME_ROK`` is DELIVERED in transaction mode (``transaction=True``), else PENDING
    ``accepted``. Otherwise: status override, network_error_code override, the
    network_error_code tables, ``delivery_failure_reason``, then the command_status
    table.
    """
    rules = rules or _DEFAULT_RULES
    code = _status_code(command_status)
    override = rules.status.get(command_status)
    if override is not None:
        return _from_override(override, code, f"override status 0x{command_status:08X}")
    if command_status == 0:
        if transaction:
            return _from_info(STAT_CLASSES["DELIVRD"], code, "data_sm_resp ESME_ROK (transaction)")
        return _from_info(SUBMIT_STATUS[0], code, "command_status ESME_ROK")
    nec = decode_network_error_code(network_error_code)
    if nec is not None:
        nec_override = rules.network_error_code.get(nec)
        if nec_override is not None:
            return _from_override(
                nec_override, _nec_code(nec), f"override network_error_code {nec[0]}/{nec[1]}"
            )
        found = _nec_lookup(nec)
        if isinstance(found, tuple):
            return _from_info(found[0], _nec_code(nec), found[1])
    if delivery_failure_reason is not None:
        info = DELIVERY_FAILURE_REASONS.get(delivery_failure_reason)
        if info is not None:
            return _from_info(
                info,
                f"{code} delivery_failure_reason:{delivery_failure_reason}",
                f"delivery-failure-reason {delivery_failure_reason}",
            )
    return classify_submit_status(command_status, rules)
