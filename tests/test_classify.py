"""The soft/hard classifier: every row of the reference tables, overrides, properties.

The expected classes below are transcribed from the reference notes on SMPP bounces,
independently of the tables in smppcodecs.errors, so a wrong table row fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smppcodecs import errors
from smppcodecs.classify import (
    SOFT_REASONS,
    Outcome,
    OutcomeKind,
    Override,
    Rules,
    classify_data_sm_resp,
    classify_network_error_code,
    classify_receipt,
    classify_submit_status,
    err_key,
)
from smppcodecs.constants import CommandStatus
from smppcodecs.receipt import Receipt, format_receipt_text, parse_receipt_text

S, H, D, P = OutcomeKind.SOFT, OutcomeKind.HARD, OutcomeKind.DELIVERED, OutcomeKind.PENDING

# --- reference §4.1: GSM MAP error codes ------------------------------------------------

MAP_EXPECTED: dict[int, tuple[OutcomeKind, str]] = {
    1: (H, "unknown_subscriber"),
    3: (S, "routing"),
    5: (S, "absent_subscriber"),
    6: (S, "absent_subscriber"),
    7: (H, "illegal_equipment"),
    8: (H, "barred"),
    9: (H, "illegal_subscriber"),
    10: (H, "not_provisioned"),
    11: (H, "not_provisioned"),
    12: (H, "illegal_equipment"),
    13: (H, "barred"),
    15: (H, "barred"),
    21: (H, "not_provisioned"),
    27: (S, "absent_subscriber"),
    28: (H, "not_sms_equipped"),
    31: (S, "subscriber_busy"),
    32: (S, "network"),
    33: (S, "absent_subscriber"),
    34: (S, "system_failure"),
    35: (S, "system_failure"),
    36: (S, "system_failure"),
    44: (H, "unknown_subscriber"),
    45: (S, "subscriber_busy"),
    51: (S, "congestion"),
}
MAP_CAPS = {5: 3, 32: 3, 35: 2, 36: 1}

# §4.2: SM-EnumeratedDeliveryFailureCause
CAUSE_EXPECTED: dict[int, tuple[OutcomeKind, str]] = {
    0: (S, "memory_full"),
    1: (S, "network"),
    2: (H, "not_sms_equipped"),
    3: (H, "carrier_permanent"),
    4: (S, "congestion"),
    5: (H, "invalid_address"),
    6: (H, "barred"),
}

# §2.1: command_status as an answer to submit_sm ("n/a" rows are hard).
STATUS_EXPECTED: dict[int, tuple[OutcomeKind, str]] = {
    0x00: (P, "accepted"),
    0x01: (H, "content"),
    0x02: (H, "protocol_error"),
    0x03: (H, "protocol_error"),
    0x04: (S, "not_bound"),
    0x05: (H, "protocol_error"),
    0x06: (H, "invalid_parameter"),
    0x07: (H, "invalid_parameter"),
    0x08: (S, "system_failure"),
    0x0A: (H, "invalid_source"),
    0x0B: (H, "invalid_address"),
    0x0C: (H, "protocol_error"),
    0x0D: (H, "protocol_error"),
    0x0E: (H, "protocol_error"),
    0x0F: (H, "protocol_error"),
    0x11: (H, "protocol_error"),
    0x13: (H, "protocol_error"),
    0x14: (S, "congestion"),
    0x15: (H, "invalid_parameter"),
    0x33: (H, "protocol_error"),
    0x34: (H, "protocol_error"),
    0x40: (H, "protocol_error"),
    0x42: (H, "invalid_parameter"),
    0x43: (H, "invalid_parameter"),
    0x44: (H, "protocol_error"),
    0x45: (H, "rejected"),
    0x48: (H, "invalid_source"),
    0x49: (H, "invalid_source"),
    0x50: (H, "invalid_address"),
    0x51: (H, "invalid_address"),
    0x53: (H, "protocol_error"),
    0x54: (H, "invalid_parameter"),
    0x55: (H, "invalid_parameter"),
    0x58: (S, "throttled"),
    0x61: (H, "invalid_parameter"),
    0x62: (H, "invalid_parameter"),
    0x63: (H, "invalid_parameter"),
    0x64: (S, "system_failure"),
    0x65: (H, "rejected"),
    0x66: (H, "rejected"),
    0x67: (H, "protocol_error"),
    0xC0: (H, "invalid_parameter"),
    0xC1: (H, "invalid_parameter"),
    0xC2: (H, "invalid_parameter"),
    0xC3: (H, "invalid_parameter"),
    0xC4: (H, "invalid_parameter"),
    0xFE: (H, "carrier_permanent"),
    0xFF: (S, "unknown_state"),
}

# §3.2: stat words with no usable error code.
STAT_EXPECTED: dict[str, tuple[OutcomeKind, str, int | None]] = {
    "ENROUTE": (P, "enroute", None),
    "DELIVRD": (D, "delivered", None),
    "EXPIRED": (S, "expired", None),
    "DELETED": (H, "deleted", None),
    "UNDELIV": (H, "carrier_permanent", None),
    "ACCEPTD": (P, "accepted", None),
    "UNKNOWN": (S, "unknown_state", 1),
    "REJECTD": (H, "rejected", None),
    "SCHEDULED": (P, "enroute", None),
    "SKIPPED": (H, "rejected", None),
}

# §2.2: delivery_failure_reason
DFR_EXPECTED = {0: S, 1: H, 2: H, 3: S}

# §4.5: ANSI-41 tables
ACCESS_DENIED_EXPECTED = {1: H, 2: S, 3: S, 4: H}
CAUSE_CODE_EXPECTED = {
    **{c: H for c in (0, 1, 4, 6, 38, 65, 67)},
    **{c: S for c in (2, 3, 5, 32, 33, 34, 35, 36, 37, 39, 64, 66, 108)},
    **{c: H for c in range(96, 108)},
}

# §4.4: TP-Status
TP_EXPECTED = {
    **{c: D for c in (0x00, 0x01, 0x02)},
    **{c: S for c in range(0x20, 0x26)},
    **{c: H for c in range(0x40, 0x4A) if c != 0x46},
    0x46: S,
    **{c: S for c in range(0x60, 0x66)},
}


def undeliv(err: str | None = None, nec: tuple[int, int] | None = None) -> Receipt:
    return Receipt(
        message_id="1", stat="UNDELIV", raw_stat="UNDELIV", err=err, network_error_code=nec
    )


# --- the tables themselves ----------------------------------------------------------------


def test_tables_cover_exactly_the_reference_rows() -> None:
    assert set(errors.MAP_ERRORS) == set(MAP_EXPECTED)
    assert set(errors.SM_DELIVERY_FAILURE_CAUSES) == set(CAUSE_EXPECTED)
    assert set(errors.SUBMIT_STATUS) == set(STATUS_EXPECTED)
    assert set(errors.SUBMIT_STATUS) == {int(s) for s in CommandStatus}
    assert set(errors.STAT_CLASSES) == set(STAT_EXPECTED)
    assert set(errors.DELIVERY_FAILURE_REASONS) == set(DFR_EXPECTED)
    assert set(errors.ANSI_ACCESS_DENIED_REASONS) == set(ACCESS_DENIED_EXPECTED)
    assert set(errors.ANSI_CAUSE_CODES) == set(CAUSE_CODE_EXPECTED)
    assert set(errors.TP_STATUS) == set(TP_EXPECTED)
    assert set(errors.ABSENT_SUBSCRIBER_DIAGNOSTICS) == set(range(13))
    assert set(errors.SMPP50_STATUS) == set(range(0x100, 0x113))


ALL_TABLES = {
    "MAP_ERRORS": errors.MAP_ERRORS,
    "SM_DELIVERY_FAILURE_CAUSES": errors.SM_DELIVERY_FAILURE_CAUSES,
    "ABSENT_SUBSCRIBER_DIAGNOSTICS": errors.ABSENT_SUBSCRIBER_DIAGNOSTICS,
    "TP_STATUS": errors.TP_STATUS,
    "DELIVERY_FAILURE_REASONS": errors.DELIVERY_FAILURE_REASONS,
    "ANSI_ACCESS_DENIED_REASONS": errors.ANSI_ACCESS_DENIED_REASONS,
    "ANSI_CAUSE_CODES": errors.ANSI_CAUSE_CODES,
    "SUBMIT_STATUS": errors.SUBMIT_STATUS,
    "SMPP50_STATUS": errors.SMPP50_STATUS,
    "STAT_CLASSES": {e.code: e for e in errors.STAT_CLASSES.values()},
}


@pytest.mark.parametrize("name", sorted(ALL_TABLES))
def test_every_entry_is_well_formed(name: str) -> None:
    for code, entry in ALL_TABLES[name].items():
        where = f"{name}[{code}]"
        assert entry.code == code, where
        assert entry.name and entry.description, where
        assert entry.kind in errors.KINDS, where
        if entry.kind == "soft":
            assert entry.reason in SOFT_REASONS, where
        elif entry.kind == "pending":
            assert entry.reason in errors.PENDING_REASONS, where
        elif entry.kind == "delivered":
            assert entry.reason == "delivered", where
        else:
            assert entry.reason not in SOFT_REASONS, where
        assert entry.max_retries is None or entry.max_retries >= 0, where


def test_absent_subscriber_diagnostics_are_all_soft() -> None:
    for entry in errors.ABSENT_SUBSCRIBER_DIAGNOSTICS.values():
        assert (entry.kind, entry.reason) == ("soft", "absent_subscriber")


@pytest.mark.parametrize(("code", "kind"), sorted(TP_EXPECTED.items()))
def test_tp_status_classes(code: int, kind: OutcomeKind) -> None:
    assert errors.TP_STATUS[code].kind == kind.value


# --- MAP codes through the classifier ------------------------------------------------------


@pytest.mark.parametrize(("code", "expected"), sorted(MAP_EXPECTED.items()))
def test_map_code_in_network_error_code(code: int, expected: tuple[OutcomeKind, str]) -> None:
    outcome = classify_receipt(undeliv(nec=(3, code)))
    assert (outcome.kind, outcome.reason) == expected
    assert outcome.max_retries == MAP_CAPS.get(code)
    assert outcome.code == f"network_error_code:3/{code}"
    assert outcome.rule == f"map-error {code}"
    assert outcome.source == "default"


@pytest.mark.parametrize(("code", "expected"), sorted(MAP_EXPECTED.items()))
def test_map_code_in_err(code: int, expected: tuple[OutcomeKind, str]) -> None:
    outcome = classify_receipt(undeliv(err=f"{code:03d}"))
    assert (outcome.kind, outcome.reason) == expected
    assert outcome.code == f"stat:UNDELIV err:{code:03d}"
    assert outcome.rule == f"map-error {code}"


@pytest.mark.parametrize(("cause", "expected"), sorted(CAUSE_EXPECTED.items()))
def test_map40_err_is_delivery_failure_cause(cause: int, expected: tuple[OutcomeKind, str]) -> None:
    rules = Rules(err_space="map40")
    outcome = classify_receipt(undeliv(err=str(40 + cause)), rules)
    assert (outcome.kind, outcome.reason) == expected
    assert outcome.rule == f"map40 cause {cause}"


def test_map40_keeps_other_map_codes() -> None:
    rules = Rules(err_space="map40")
    assert classify_receipt(undeliv(err="001"), rules).reason == "unknown_subscriber"
    assert classify_receipt(undeliv(err="034"), rules).reason == "system_failure"
    # Under the plain MAP space, 44 is numberChanged (hard); under map40 it is cause 4.
    assert classify_receipt(undeliv(err="044")).kind is H
    assert classify_receipt(undeliv(err="044"), rules).reason == "congestion"


def test_err_space_none_ignores_err() -> None:
    outcome = classify_receipt(undeliv(err="006"), Rules(err_space="none"))
    assert (outcome.kind, outcome.reason) == (H, "carrier_permanent")
    assert outcome.rule.startswith("stat UNDELIV default")


def test_readable_descriptions() -> None:
    assert classify_receipt(undeliv(err="006")).description == "absent subscriber"
    assert classify_receipt(undeliv(err="001")).description == "unknown subscriber"
    memory = classify_receipt(undeliv(err="040"), Rules(err_space="map40"))
    assert memory.description == "memory capacity exceeded"
    assert classify_submit_status(0x58).description == "throttled by carrier"


# --- stat words -------------------------------------------------------------------------


@pytest.mark.parametrize(("stat", "expected"), sorted(STAT_EXPECTED.items()))
def test_stat_default(stat: str, expected: tuple[OutcomeKind, str, int | None]) -> None:
    outcome = classify_receipt(Receipt(message_id="1", stat=stat, err="000"))
    assert (outcome.kind, outcome.reason, outcome.max_retries) == expected


@pytest.mark.parametrize(("stat", "expected"), sorted(STAT_EXPECTED.items()))
def test_message_state_alone(stat: str, expected: tuple[OutcomeKind, str, int | None]) -> None:
    state = errors.STAT_CLASSES[stat].code
    outcome = classify_receipt(Receipt(message_id="1", message_state=state))
    assert (outcome.kind, outcome.reason) == expected[:2]
    assert outcome.code == f"message_state:{state}"


def test_undeliv_default_rule_is_named() -> None:
    outcome = classify_receipt(undeliv(err="000"))
    assert outcome.rule == "stat UNDELIV default"
    assert outcome.code == "stat:UNDELIV err:000"


def test_unknown_map_code_falls_back_to_stat_and_says_why() -> None:
    outcome = classify_receipt(undeliv(err="099"))
    assert (outcome.kind, outcome.reason) == (H, "carrier_permanent")
    assert "099" in outcome.rule and "MAP" in outcome.rule


def test_expired_refined_by_err() -> None:
    expired = Receipt(message_id="1", stat="EXPIRED", err="000")
    assert (classify_receipt(expired).kind, classify_receipt(expired).reason) == (S, "expired")
    expired_unknown = Receipt(message_id="1", stat="EXPIRED", err="001")
    assert classify_receipt(expired_unknown).reason == "unknown_subscriber"


def test_delivered_with_nonzero_err_is_delivered() -> None:
    receipt = parse_receipt_text("id:1 stat:DELIVRD err:001")
    outcome = classify_receipt(receipt)
    assert outcome.kind is D
    assert "err 001 ignored" in outcome.rule
    receipt = Receipt(message_id="1", stat="DELIVRD", network_error_code=(3, 1))
    assert classify_receipt(receipt).kind is D


def test_no_or_unrecognised_stat_is_soft_unknown_once() -> None:
    for receipt in (
        Receipt(message_id="1"),
        parse_receipt_text("id:1 stat:SENT err:000"),
    ):
        outcome = classify_receipt(receipt)
        assert (outcome.kind, outcome.reason, outcome.max_retries) == (S, "unknown_state", 1)
    assert "SENT" in classify_receipt(parse_receipt_text("id:1 stat:SENT")).rule


def test_intermediate_notification_is_pending() -> None:
    receipt = Receipt(message_id="1", stat="UNDELIV", err="006", intermediate=True)
    outcome = classify_receipt(receipt)
    assert (outcome.kind, outcome.reason) == (P, "enroute")
    enroute = parse_receipt_text("id:1 stat:ENROUTE err:006")
    assert classify_receipt(enroute).kind is P


# --- network_error_code types -------------------------------------------------------------


@pytest.mark.parametrize("net_type", [1, 2])
@pytest.mark.parametrize(("code", "kind"), sorted(ACCESS_DENIED_EXPECTED.items()))
def test_ansi_access_denied(net_type: int, code: int, kind: OutcomeKind) -> None:
    outcome = classify_receipt(undeliv(nec=(net_type, code)))
    assert outcome.kind is kind
    assert outcome.rule == f"ansi access-denied {code}"


@pytest.mark.parametrize("net_type", [1, 2, 4, 5])
@pytest.mark.parametrize(("code", "kind"), sorted(CAUSE_CODE_EXPECTED.items()))
def test_ansi_cause_codes(net_type: int, code: int, kind: OutcomeKind) -> None:
    outcome = classify_receipt(undeliv(nec=(net_type, code)))
    if net_type in (1, 2) and code == 0:
        # 0 is "not used" as an access-denied reason: the stat decides.
        assert outcome.rule == "stat UNDELIV default"
        return
    assert outcome.kind is kind
    if net_type in (1, 2) and code in ACCESS_DENIED_EXPECTED:
        assert outcome.rule.startswith("ansi access-denied")
    else:
        assert outcome.rule == f"ansi cause-code {code}"


def test_smpp_error_network_type() -> None:
    outcome = classify_receipt(undeliv(nec=(7, 0x58)))
    assert (outcome.kind, outcome.reason) == (S, "throttled")
    assert outcome.rule == "smpp-error 0x00000058"


def test_message_centre_specific_type_goes_by_stat() -> None:
    # Type 8 codes are the SMSC's own: err is not read as MAP either.
    outcome = classify_receipt(undeliv(err="006", nec=(8, 6)))
    assert (outcome.kind, outcome.reason) == (H, "carrier_permanent")
    assert "message-centre specific" in outcome.rule
    expired = Receipt(message_id="1", stat="EXPIRED", network_error_code=(8, 1234))
    assert classify_receipt(expired).reason == "expired"


def test_network_error_code_beats_err() -> None:
    outcome = classify_receipt(undeliv(err="001", nec=(3, 6)))
    assert outcome.reason == "absent_subscriber"
    assert outcome.code == "network_error_code:3/6"


def test_unusable_network_error_code_falls_through_to_err() -> None:
    for nec in ((3, 0), (3, 999), (9, 6), (6, 6)):
        assert classify_receipt(undeliv(err="006", nec=nec)).reason == "absent_subscriber"


def test_classify_network_error_code_alone() -> None:
    outcome = classify_network_error_code((3, 31))
    assert outcome is not None and outcome.reason == "subscriber_busy"
    assert classify_network_error_code((3, 0)) is None
    assert classify_network_error_code((8, 6)) is None


# --- submit_sm_resp and data_sm_resp -------------------------------------------------------


@pytest.mark.parametrize(("status", "expected"), sorted(STATUS_EXPECTED.items()))
def test_submit_status(status: int, expected: tuple[OutcomeKind, str]) -> None:
    outcome = classify_submit_status(status)
    assert (outcome.kind, outcome.reason) == expected
    assert outcome.code == f"command_status:0x{status:08X}"
    assert outcome.rule == f"command_status {CommandStatus(status).name}"


def test_unknown_error_status_is_retried_once() -> None:
    assert classify_submit_status(0xFF).max_retries == 1


@pytest.mark.parametrize("status", range(0x100, 0x113))
def test_smpp50_status(status: int) -> None:
    outcome = classify_submit_status(status)
    assert outcome.kind is (S if status == 0x102 else H)


@pytest.mark.parametrize("status", [0x400, 0x401, 0x450, 0x4FF])
def test_vendor_range_is_hard_by_default(status: int) -> None:
    outcome = classify_submit_status(status)
    assert (outcome.kind, outcome.reason) == (H, "carrier_permanent")
    assert outcome.rule == "vendor range 0x400-0x4FF default"


@pytest.mark.parametrize("status", [0x09, 0x10, 0x16, 0x99, 0x113, 0x3FF, 0x500, 0xFFFFFFFF])
def test_reserved_status_is_hard(status: int) -> None:
    outcome = classify_submit_status(status)
    assert (outcome.kind, outcome.reason) == (H, "unknown_error")
    assert outcome.rule == "reserved command_status default"


@pytest.mark.parametrize(("reason", "kind"), sorted(DFR_EXPECTED.items()))
def test_data_sm_resp_delivery_failure_reason(reason: int, kind: OutcomeKind) -> None:
    outcome = classify_data_sm_resp(0xFE, reason)
    assert outcome.kind is kind
    assert outcome.rule == f"delivery-failure-reason {reason}"


def test_data_sm_resp_other_paths() -> None:
    assert classify_data_sm_resp(0).kind is P
    assert classify_data_sm_resp(0, transaction=True).kind is D
    assert classify_data_sm_resp(0xFE, 3, b"\x03\x00\x01").reason == "unknown_subscriber"
    assert classify_data_sm_resp(0xFE, 1, (3, 6)).reason == "absent_subscriber"
    assert classify_data_sm_resp(0x58).reason == "throttled"
    assert classify_data_sm_resp(0xFE).kind is H
    rules = Rules(status={0xFE: Override(S, "network")})
    assert classify_data_sm_resp(0xFE, 1, None, rules).reason == "network"


# --- overrides ----------------------------------------------------------------------------------


def test_err_override_beats_tables() -> None:
    rules = Rules(err={"006": Override(H, "barred")})
    outcome = classify_receipt(undeliv(err="6"), rules)
    assert (outcome.kind, outcome.reason, outcome.source) == (H, "barred", "override")
    assert outcome.rule == "override err 6"
    # An err override also beats a network_error_code from the tables.
    assert classify_receipt(undeliv(err="006", nec=(3, 31)), rules).reason == "barred"


def test_network_error_code_override_beats_err_override() -> None:
    rules = Rules(
        err={"6": Override(H, "barred")},
        network_error_code={(3, 6): Override(S, "absent_subscriber", max_retries=9)},
    )
    outcome = classify_receipt(undeliv(err="006", nec=(3, 6)), rules)
    assert (outcome.reason, outcome.max_retries, outcome.source) == (
        "absent_subscriber",
        9,
        "override",
    )
    assert outcome.rule == "override network_error_code 3/6"


def test_stat_override_beats_everything() -> None:
    rules = Rules(
        stat={"FAILED": Override(S, "network")},
        err={"1": Override(H, "barred")},
    )
    receipt = parse_receipt_text("id:1 stat:FAILED err:001")
    outcome = classify_receipt(receipt, rules)
    assert (outcome.kind, outcome.reason) == (S, "network")
    assert outcome.rule == "override stat FAILED"
    # Matched on the raw word first, then the normalised one.
    rules2 = Rules(stat={"undeliv": Override(S, "routing")})
    assert classify_receipt(receipt, rules2).reason == "routing"
    sent = Rules(stat={"SENT": Override(P, "enroute")})
    assert classify_receipt(parse_receipt_text("id:1 stat:SENT"), sent).kind is P


def test_code_overrides_do_not_touch_delivered_receipts() -> None:
    rules = Rules(
        err={"1": Override(H, "barred")}, network_error_code={(3, 1): Override(H, "barred")}
    )
    receipt = Receipt(message_id="1", stat="DELIVRD", err="001", network_error_code=(3, 1))
    assert classify_receipt(receipt, rules).kind is D


def test_status_override() -> None:
    rules = Rules(status={0x45: Override(S, "system_failure", max_retries=2)})
    outcome = classify_submit_status(0x45, rules)
    assert (outcome.kind, outcome.reason, outcome.max_retries) == (S, "system_failure", 2)
    assert (outcome.source, outcome.rule) == ("override", "override status 0x00000045")
    assert classify_submit_status(0x45).kind is H


def test_override_description() -> None:
    rules = Rules(
        err={"7": Override(S, "memory_full")},
        status={0x401: Override(H, "blocked_content", description="spam filter")},
    )
    assert classify_receipt(undeliv(err="7"), rules).description == "memory capacity exceeded"
    assert classify_submit_status(0x401, rules).description == "spam filter"


# --- Rules.from_mapping --------------------------------------------------------------------------


def test_rules_from_mapping() -> None:
    rules = Rules.from_mapping(
        {
            "err_space": "map",
            "err": {
                "005": "hard:unknown_subscriber",
                "099": {"kind": "soft", "reason": "network", "max_retries": 2},
            },
            "status": {
                "0x00000045": "soft:system_failure",
                "ESME_RINVDSTADR": "soft:routing",
                "1031": "soft:throttled",
            },
            "stat": {"sent": "pending", "ok": "delivered"},
            "network_error_code": {"3/6": "soft:absent_subscriber", "8:1": "hard:barred"},
            "carriers": {
                "acme": {"err_space": "map40", "err": {"5": "soft:network"}},
                "beta": {},
            },
        }
    )
    assert rules.err["5"] == Override(H, "unknown_subscriber")
    assert rules.err["99"] == Override(S, "network", max_retries=2)
    assert set(rules.status) == {0x45, 0x0B, 1031}
    assert rules.stat["SENT"] == Override(P, "enroute")
    assert rules.stat["OK"] == Override(D, "delivered")
    assert set(rules.network_error_code) == {(3, 6), (8, 1)}
    acme = rules.for_carrier("acme")
    assert acme.err_space == "map40"
    assert acme.err["5"] == Override(S, "network")
    assert acme.err["99"] == Override(S, "network", max_retries=2)  # inherited
    assert acme.status == rules.status
    assert rules.for_carrier("beta").err_space == "map"
    assert rules.for_carrier("nobody") is rules
    assert rules.for_carrier(None) is rules
    assert classify_receipt(undeliv(err="005"), acme).reason == "network"
    assert classify_receipt(undeliv(err="005"), rules).reason == "unknown_subscriber"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"err_space": "hex"}, "classify.err_space"),
        ({"colour": 1}, "classify: unknown key(s) colour"),
        ({"err": {"005": "sfot:network"}}, "classify.err.005: unknown kind"),
        ({"err": {"005": "soft:holiday"}}, "classify.err.005: unknown soft reason"),
        ({"err": {"005": "soft"}}, "classify.err.005: a soft override needs a reason"),
        ({"err": {"005": "delivered"}}, "classify.err.005: only stat overrides may say delivered"),
        ({"err": {"005": 5}}, "classify.err.005: expected"),
        (
            {"err": {"005": {"kind": "hard", "reason": "x", "why": 1}}},
            "classify.err.005: unknown key(s) why",
        ),
        ({"err": {"005": {"kind": "soft", "reason": "network", "max_retries": -1}}}, "max_retries"),
        ({"err": {"005": "hard:Bad Reason"}}, "classify.err.005: reason"),
        ({"err": []}, "classify.err: expected a table"),
        ({"status": {"0xZZ": "hard:x"}}, "classify.status.0xZZ: "),
        ({"status": {"0x1FFFFFFFF": "hard:x"}}, "out of range"),
        ({"stat": {"X": "pending:soon"}}, "classify.stat.X: pending reason"),
        ({"network_error_code": {"3": "hard:x"}}, "classify.network_error_code.3: "),
        ({"network_error_code": {"3/70000": "hard:x"}}, "out of range"),
        ({"carriers": {"acme": {"err_space": "nope"}}}, "classify.carriers.acme.err_space"),
        ({"carriers": {"acme": {"carriers": {}}}}, "classify.carriers.acme.carriers"),
        ({"carriers": {"acme": 3}}, "classify.carriers.acme: expected a table"),
    ],
)
def test_rules_from_mapping_errors_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        Rules.from_mapping(data)
    assert message in str(info.value)


def test_rules_constructor_validates_err_space() -> None:
    with pytest.raises(ValueError, match="err_space"):
        Rules(err_space="decimal")


def test_err_key() -> None:
    assert err_key("005") == err_key("5") == err_key(" 0005 ") == "5"
    assert err_key("000") == "0"
    assert err_key("abc") == "ABC"
    assert err_key("²") == "²"  # a digit to Unicode, not a number to us


# --- properties ----------------------------------------------------------------------------------

KNOWN_WORDS = [*STAT_EXPECTED, "FAILED", "DELIVERED", "ACKED", "BUFFRED", "SENT", "delivrd"]
stat_words = st.one_of(
    st.sampled_from(KNOWN_WORDS),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=9),
    st.text(max_size=9),
)
err_values = st.one_of(
    st.none(),
    st.from_regex(r"\A[0-9]{1,5}\Z"),
    st.text("0123456789ABCDEFXYZ-", min_size=1, max_size=6),
    st.text(max_size=6),
)
nec_values = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF)),
    st.tuples(st.integers(0, 9), st.integers(0, 120)),
)
states = st.one_of(st.none(), st.integers(0, 255))
err_spaces = st.sampled_from(["map", "map40", "none"])


def says_delivered(receipt: Receipt) -> bool:
    if receipt.stat is not None:
        return receipt.stat == "DELIVRD"
    return receipt.message_state == 2


@settings(max_examples=400, deadline=None)
@given(
    word=stat_words,
    err=err_values,
    nec=nec_values,
    state=states,
    intermediate=st.booleans(),
    err_space=err_spaces,
)
def test_only_a_delivered_state_is_delivered(
    word: str,
    err: str | None,
    nec: tuple[int, int] | None,
    state: int | None,
    intermediate: bool,
    err_space: str,
) -> None:
    from smppcodecs.receipt import normalize_stat

    stat = normalize_stat(word)
    receipt = Receipt(
        message_id="1",
        stat=stat,
        raw_stat=word,
        err=err,
        network_error_code=nec,
        message_state=state if stat is None else None,
        intermediate=intermediate,
    )
    outcome = classify_receipt(receipt, Rules(err_space=err_space))
    assert isinstance(outcome, Outcome)
    assert (outcome.kind is D) == says_delivered(receipt)
    if outcome.kind is S:
        assert outcome.reason in SOFT_REASONS
    assert outcome.code and outcome.rule and outcome.description


@settings(max_examples=200, deadline=None)
@given(
    stat=st.sampled_from([w for w in STAT_EXPECTED]),
    err=st.from_regex(r"\A[0-9]{3}\Z"),
    nec=nec_values,
)
def test_parsed_receipts_never_deliver_unless_the_text_says_so(
    stat: str, err: str, nec: tuple[int, int] | None
) -> None:
    text = format_receipt_text(
        message_id="42", stat=stat, err=err, submit_date=None, done_date=None
    )
    receipt = parse_receipt_text(text)
    if nec is not None:
        receipt = Receipt(
            message_id=receipt.message_id,
            stat=receipt.stat,
            raw_stat=receipt.raw_stat,
            err=receipt.err,
            message_state=receipt.message_state,
            network_error_code=nec,
            intermediate=receipt.intermediate,
        )
    assert (classify_receipt(receipt).kind is D) == (stat == "DELIVRD")


@settings(max_examples=300, deadline=None)
@given(status=st.integers(0, 0xFFFFFFFF))
def test_submit_status_is_never_delivered(status: int) -> None:
    outcome = classify_submit_status(status)
    assert outcome.kind is not D
    assert (outcome.kind is P) == (status == 0)
