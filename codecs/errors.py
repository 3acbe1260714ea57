"""Error-code knowledge for sorting bounces into soft and hard, as plain data.

Every table maps a numeric code to an :class:`ErrorInfo`: the code's name, a short
description a person can read, the proposed class (``"soft"``, ``"hard"``,
``"delivered"`` or ``"pending"``), a machine ``reason`` key and an optional retry cap.
The classes are the project's proposals (see the reference notes on SMPP bounces);
SMPP itself defines no soft/hard split. :mod:`smppcodecs.classify` reads these tables;
carriers' own meanings are layered on top with per-carrier overrides.

Tables:

* :data:`SUBMIT_STATUS`: SMPP 3.4 ``command_status`` values, classed as an answer to
  ``submit_sm`` (codes that belong to other PDUs are hard, with a note), plus
  :data:`SMPP50_STATUS` for the 5.0 additions; :func:`submit_status_info` also covers
  the vendor range 0x400-0x4FF and reserved codes (both hard by default).
* :data:`MAP_ERRORS`: GSM MAP error codes (3GPP TS 29.002) seen in receipts.
* :data:`SM_DELIVERY_FAILURE_CAUSES`: the cause carried by MAP error 32.
* :data:`ABSENT_SUBSCRIBER_DIAGNOSTICS`: the optional detail of MAP error 6.
* :data:`TP_STATUS`: 3GPP TS 23.040 status-report values some SMSCs relay.
* :data:`DELIVERY_FAILURE_REASONS`: the ``delivery_failure_reason`` TLV of data_sm_resp.
* :data:`ANSI_ACCESS_DENIED_REASONS` and :data:`ANSI_CAUSE_CODES`: ANSI-41 values
  assumed for ``network_error_code`` types 1 and 2 (and the 5.0 cause-code types).
* :data:`STAT_CLASSES`: the receipt ``stat`` words, keyed by word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "ABSENT_SUBSCRIBER_DIAGNOSTICS",
    "ANSI_ACCESS_DENIED_REASONS",
    "ANSI_CAUSE_CODES",
    "DELIVERY_FAILURE_REASONS",
    "KINDS",
    "MAP_ERRORS",
    "NETWORK_ERROR_TYPES",
    "PENDING_REASONS",
    "REASON_DESCRIPTIONS",
    "SMPP50_STATUS",
    "SM_DELIVERY_FAILURE_CAUSES",
    "SOFT_REASONS",
    "STAT_CLASSES",
    "SUBMIT_STATUS",
    "TP_STATUS",
    "VENDOR_STATUS_RANGE",
    "ErrorInfo",
    "Kind",
    "submit_status_info",
]

Kind = Literal["delivered", "pending", "soft", "hard"]
KINDS: Final[tuple[Kind, ...]] = ("delivered", "pending", "soft", "hard")

# The soft reasons are a fixed vocabulary: the retry scheduler keys its back-off
# schedules on them. Hard reasons are free but stable keys.
SOFT_REASONS: Final[frozenset[str]] = frozenset(
    {
        "throttled",
        "congestion",
        "system_failure",
        "network",
        "routing",
        "absent_subscriber",
        "memory_full",
        "subscriber_busy",
        "unknown_state",
        "expired",
        "not_bound",
        "timeout",
    }
)
PENDING_REASONS: Final[frozenset[str]] = frozenset({"enroute", "accepted"})

# Readable text for reason keys, used when an override names only a reason.
REASON_DESCRIPTIONS: Final[dict[str, str]] = {
    "throttled": "throttled by carrier",
    "congestion": "congestion",
    "system_failure": "system failure",
    "network": "network error",
    "routing": "routing error",
    "absent_subscriber": "absent subscriber",
    "memory_full": "memory capacity exceeded",
    "subscriber_busy": "subscriber busy",
    "unknown_state": "message state unknown",
    "expired": "validity period expired",
    "not_bound": "carrier session not bound",
    "timeout": "no answer from carrier in time",
    "unknown_subscriber": "unknown subscriber",
    "invalid_address": "invalid destination address",
    "invalid_source": "invalid source address",
    "barred": "call barred",
    "not_provisioned": "service not provisioned",
    "illegal_subscriber": "illegal subscriber",
    "illegal_equipment": "illegal equipment",
    "not_sms_equipped": "equipment not SMS-equipped",
    "rejected": "rejected",
    "deleted": "deleted",
    "invalid_parameter": "invalid parameter",
    "protocol_error": "protocol error",
    "content": "message content rejected",
    "carrier_permanent": "permanent carrier error",
    "unknown_error": "unknown error",
    "delivered": "delivered",
    "enroute": "en route",
    "accepted": "accepted",
}


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """One code of one table: what it is called, what it means, how to treat it."""

    code: int
    name: str
    description: str
    kind: Kind
    reason: str
    max_retries: int | None = None
    note: str = ""


def _table(*entries: ErrorInfo) -> dict[int, ErrorInfo]:
    table: dict[int, ErrorInfo] = {}
    for entry in entries:
        if entry.code in table:
            raise ValueError(f"duplicate code {entry.code} in an error table")
        table[entry.code] = entry
    return table


_E = ErrorInfo

# --- SMPP command_status (answer to submit_sm) -------------------------------------

_NA = "not expected on submit_sm_resp (belongs to another PDU)"

SUBMIT_STATUS: Final[dict[int, ErrorInfo]] = _table(
    _E(0x00, "ESME_ROK", "accepted by the carrier", "pending", "accepted"),
    _E(0x01, "ESME_RINVMSGLEN", "message length invalid", "hard", "content"),
    _E(
        0x02,
        "ESME_RINVCMDLEN",
        "command length invalid",
        "hard",
        "protocol_error",
        note="malformed PDU: an encoder bug on our side",
    ),
    _E(0x03, "ESME_RINVCMDID", "invalid command id", "hard", "protocol_error"),
    _E(
        0x04,
        "ESME_RINVBNDSTS",
        "incorrect bind status for the command",
        "soft",
        "not_bound",
        note="rebind, then resubmit; the message is not at fault",
    ),
    _E(0x05, "ESME_RALYBND", "ESME already bound", "hard", "protocol_error", note=_NA),
    _E(0x06, "ESME_RINVPRTFLG", "invalid priority_flag", "hard", "invalid_parameter"),
    _E(0x07, "ESME_RINVREGDLVFLG", "invalid registered_delivery", "hard", "invalid_parameter"),
    _E(0x08, "ESME_RSYSERR", "carrier system error", "soft", "system_failure"),
    _E(0x0A, "ESME_RINVSRCADR", "invalid source address", "hard", "invalid_source"),
    _E(
        0x0B,
        "ESME_RINVDSTADR",
        "invalid destination address",
        "hard",
        "invalid_address",
        note="also used for 'no route to this destination'",
    ),
    _E(0x0C, "ESME_RINVMSGID", "message id invalid", "hard", "protocol_error", note=_NA),
    _E(0x0D, "ESME_RBINDFAIL", "bind failed", "hard", "protocol_error", note=_NA),
    _E(0x0E, "ESME_RINVPASWD", "invalid password", "hard", "protocol_error", note=_NA),
    _E(0x0F, "ESME_RINVSYSID", "invalid system_id", "hard", "protocol_error", note=_NA),
    _E(0x11, "ESME_RCANCELFAIL", "cancel_sm failed", "hard", "protocol_error", note=_NA),
    _E(0x13, "ESME_RREPLACEFAIL", "replace_sm failed", "hard", "protocol_error", note=_NA),
    _E(0x14, "ESME_RMSGQFUL", "carrier message queue full", "soft", "congestion"),
    _E(0x15, "ESME_RINVSERTYP", "invalid service_type", "hard", "invalid_parameter"),
    _E(
        0x33,
        "ESME_RINVNUMDESTS",
        "invalid number of destinations",
        "hard",
        "protocol_error",
        note=_NA,
    ),
    _E(
        0x34,
        "ESME_RINVDLNAME",
        "invalid distribution list name",
        "hard",
        "protocol_error",
        note=_NA,
    ),
    _E(0x40, "ESME_RINVDESTFLAG", "invalid dest_flag", "hard", "protocol_error", note=_NA),
    _E(
        0x42,
        "ESME_RINVSUBREP",
        "invalid 'submit with replace' request",
        "hard",
        "invalid_parameter",
    ),
    _E(0x43, "ESME_RINVESMCLASS", "invalid esm_class", "hard", "invalid_parameter"),
    _E(
        0x44,
        "ESME_RCNTSUBDL",
        "cannot submit to distribution list",
        "hard",
        "protocol_error",
        note=_NA,
    ),
    _E(
        0x45,
        "ESME_RSUBMITFAIL",
        "submit_sm failed",
        "hard",
        "rejected",
        note="generic rejection; some carriers use it for transient faults (override per carrier)",
    ),
    _E(0x48, "ESME_RINVSRCTON", "invalid source TON", "hard", "invalid_source"),
    _E(0x49, "ESME_RINVSRCNPI", "invalid source NPI", "hard", "invalid_source"),
    _E(0x50, "ESME_RINVDSTTON", "invalid destination TON", "hard", "invalid_address"),
    _E(0x51, "ESME_RINVDSTNPI", "invalid destination NPI", "hard", "invalid_address"),
    _E(0x53, "ESME_RINVSYSTYP", "invalid system_type", "hard", "protocol_error", note=_NA),
    _E(0x54, "ESME_RINVREPFLAG", "invalid replace_if_present_flag", "hard", "invalid_parameter"),
    _E(0x55, "ESME_RINVNUMMSGS", "invalid number of messages", "hard", "invalid_parameter"),
    _E(0x58, "ESME_RTHROTTLED", "throttled by carrier", "soft", "throttled"),
    _E(0x61, "ESME_RINVSCHED", "invalid schedule_delivery_time", "hard", "invalid_parameter"),
    _E(0x62, "ESME_RINVEXPIRY", "invalid validity_period", "hard", "invalid_parameter"),
    _E(
        0x63,
        "ESME_RINVDFTMSGID",
        "predefined message invalid or not found",
        "hard",
        "invalid_parameter",
    ),
    _E(0x64, "ESME_RX_T_APPN", "receiver temporary application error", "soft", "system_failure"),
    _E(0x65, "ESME_RX_P_APPN", "receiver permanent application error", "hard", "rejected"),
    _E(0x66, "ESME_RX_R_APPN", "receiver rejected the message", "hard", "rejected"),
    _E(0x67, "ESME_RQUERYFAIL", "query_sm failed", "hard", "protocol_error", note=_NA),
    _E(
        0xC0,
        "ESME_RINVOPTPARSTREAM",
        "error in the optional (TLV) part",
        "hard",
        "invalid_parameter",
    ),
    _E(0xC1, "ESME_ROPTPARNOTALLWD", "optional parameter not allowed", "hard", "invalid_parameter"),
    _E(0xC2, "ESME_RINVPARLEN", "invalid parameter length", "hard", "invalid_parameter"),
    _E(
        0xC3,
        "ESME_RMISSINGOPTPARAM",
        "expected optional parameter missing",
        "hard",
        "invalid_parameter",
    ),
    _E(
        0xC4,
        "ESME_RINVOPTPARAMVAL",
        "invalid optional parameter value",
        "hard",
        "invalid_parameter",
    ),
    _E(
        0xFE,
        "ESME_RDELIVERYFAILURE",
        "delivery failure",
        "hard",
        "carrier_permanent",
        note="data_sm_resp in transaction mode: classify by delivery_failure_reason",
    ),
    _E(
        0xFF,
        "ESME_RUNKNOWNERR",
        "unknown error from carrier",
        "soft",
        "unknown_state",
        max_retries=1,
        note="the carrier gives no information; retry once",
    ),
)

SMPP50_STATUS: Final[dict[int, ErrorInfo]] = _table(
    _E(0x100, "ESME_RSERTYPUNAUTH", "service_type not authorised", "hard", "rejected"),
    _E(0x101, "ESME_RPROHIBITED", "ESME prohibited from using the operation", "hard", "barred"),
    _E(
        0x102,
        "ESME_RSERTYPUNAVAIL",
        "service_type unavailable",
        "soft",
        "system_failure",
        max_retries=2,
        note="the only plausibly temporary 5.0 code",
    ),
    _E(0x103, "ESME_RSERTYPDENIED", "service_type denied", "hard", "rejected"),
    _E(0x104, "ESME_RINVDCS", "invalid data_coding", "hard", "invalid_parameter"),
    _E(
        0x105,
        "ESME_RINVSRCADDRSUBUNIT",
        "invalid source address subunit",
        "hard",
        "invalid_parameter",
    ),
    _E(
        0x106,
        "ESME_RINVDSTADDRSUBUNIT",
        "invalid destination address subunit",
        "hard",
        "invalid_parameter",
    ),
    _E(
        0x107,
        "ESME_RINVBCASTFREQINT",
        "invalid broadcast frequency interval",
        "hard",
        "invalid_parameter",
    ),
    _E(
        0x108,
        "ESME_RINVBCASTALIAS_NAME",
        "invalid broadcast alias name",
        "hard",
        "invalid_parameter",
    ),
    _E(
        0x109, "ESME_RINVBCASTAREAFMT", "invalid broadcast area format", "hard", "invalid_parameter"
    ),
    _E(
        0x10A,
        "ESME_RINVNUMBCAST_AREAS",
        "invalid number of broadcast areas",
        "hard",
        "invalid_parameter",
    ),
    _E(
        0x10B,
        "ESME_RINVBCASTCNTTYPE",
        "invalid broadcast content type",
        "hard",
        "invalid_parameter",
    ),
    _E(
        0x10C,
        "ESME_RINVBCASTMSGCLASS",
        "invalid broadcast message class",
        "hard",
        "invalid_parameter",
    ),
    _E(0x10D, "ESME_RBCASTFAIL", "broadcast_sm failed", "hard", "rejected"),
    _E(0x10E, "ESME_RBCASTQUERYFAIL", "query_broadcast_sm failed", "hard", "rejected"),
    _E(0x10F, "ESME_RBCASTCANCELFAIL", "cancel_broadcast_sm failed", "hard", "rejected"),
    _E(0x110, "ESME_RINVBCAST_REP", "invalid broadcast repetitions", "hard", "invalid_parameter"),
    _E(
        0x111,
        "ESME_RINVBCASTSRVGRP",
        "invalid broadcast service group",
        "hard",
        "invalid_parameter",
    ),
    _E(
        0x112,
        "ESME_RINVBCASTCHANIND",
        "invalid broadcast channel indicator",
        "hard",
        "invalid_parameter",
    ),
)

VENDOR_STATUS_RANGE: Final = range(0x400, 0x500)


def submit_status_info(status: int) -> ErrorInfo:
    """The entry for a ``submit_sm_resp`` command_status; never fails.

    Codes outside the 3.4 and 5.0 tables are hard: the vendor range 0x400-0x4FF
    (meaning depends on the SMSC; map it per carrier) and every reserved code.
    """
    entry = SUBMIT_STATUS.get(status) or SMPP50_STATUS.get(status)
    if entry is not None:
        return entry
    if status in VENDOR_STATUS_RANGE:
        return _E(
            status,
            f"VENDOR_0x{status:08X}",
            "carrier vendor-specific error",
            "hard",
            "carrier_permanent",
            note="vendor range 0x400-0x4FF: hard unless mapped",
        )
    return _E(
        status,
        f"RESERVED_0x{status:08X}",
        "reserved error code",
        "hard",
        "unknown_error",
        note="reserved: hard unless mapped",
    )


# --- GSM MAP (3GPP TS 29.002) ---------------------------------------------------------

MAP_ERRORS: Final[dict[int, ErrorInfo]] = _table(
    _E(
        1,
        "unknownSubscriber",
        "unknown subscriber",
        "hard",
        "unknown_subscriber",
        note="the number is not in the HLR",
    ),
    _E(3, "unknownMSC", "unknown MSC", "soft", "routing"),
    _E(
        5,
        "unidentifiedSubscriber",
        "unidentified subscriber",
        "soft",
        "absent_subscriber",
        max_retries=3,
        note="stale registration in the MSC/VLR",
    ),
    _E(
        6,
        "absentSubscriberSM",
        "absent subscriber",
        "soft",
        "absent_subscriber",
        note="phone off or out of coverage",
    ),
    _E(7, "unknownEquipment", "unknown equipment", "hard", "illegal_equipment"),
    _E(8, "roamingNotAllowed", "roaming not allowed", "hard", "barred"),
    _E(
        9,
        "illegalSubscriber",
        "illegal subscriber",
        "hard",
        "illegal_subscriber",
        note="authentication failed",
    ),
    _E(
        10,
        "bearerServiceNotProvisioned",
        "bearer service not provisioned",
        "hard",
        "not_provisioned",
    ),
    _E(
        11,
        "teleserviceNotProvisioned",
        "teleservice not provisioned",
        "hard",
        "not_provisioned",
        note="no SMS subscription",
    ),
    _E(
        12,
        "illegalEquipment",
        "illegal equipment",
        "hard",
        "illegal_equipment",
        note="IMEI black-listed",
    ),
    _E(13, "callBarred", "call barred", "hard", "barred"),
    _E(15, "cug-Reject", "closed user group reject", "hard", "barred"),
    _E(21, "facilityNotSupported", "facility not supported", "hard", "not_provisioned"),
    _E(27, "absentSubscriber", "absent subscriber", "soft", "absent_subscriber"),
    _E(28, "incompatibleTerminal", "incompatible terminal", "hard", "not_sms_equipped"),
    _E(31, "subscriberBusyForMT-SMS", "subscriber busy for MT-SMS", "soft", "subscriber_busy"),
    _E(
        32,
        "sm-DeliveryFailure",
        "SM delivery failure",
        "soft",
        "network",
        max_retries=3,
        note="the cause (SM_DELIVERY_FAILURE_CAUSES) decides when it is known",
    ),
    _E(33, "messageWaitingListFull", "message waiting list full", "soft", "absent_subscriber"),
    _E(34, "systemFailure", "system failure", "soft", "system_failure"),
    _E(35, "dataMissing", "data missing", "soft", "system_failure", max_retries=2),
    _E(
        36,
        "unexpectedDataValue",
        "unexpected data value",
        "soft",
        "system_failure",
        max_retries=1,
        note="if it repeats, our content or parameters are probably at fault",
    ),
    _E(44, "numberChanged", "number changed", "hard", "unknown_subscriber"),
    _E(45, "busySubscriber", "busy subscriber", "soft", "subscriber_busy"),
    _E(51, "resourceLimitation", "resource limitation", "soft", "congestion"),
)

SM_DELIVERY_FAILURE_CAUSES: Final[dict[int, ErrorInfo]] = _table(
    _E(0, "memoryCapacityExceeded", "memory capacity exceeded", "soft", "memory_full"),
    _E(1, "equipmentProtocolError", "equipment protocol error", "soft", "network", max_retries=3),
    _E(2, "equipmentNotSM-Equipped", "equipment not SMS-equipped", "hard", "not_sms_equipped"),
    _E(
        3,
        "unknownServiceCentre",
        "unknown service centre",
        "hard",
        "carrier_permanent",
        note="a routing or configuration problem on our side: re-route, do not retry as-is",
    ),
    _E(4, "sc-Congestion", "service centre congestion", "soft", "congestion"),
    _E(5, "invalidSME-Address", "invalid SME address", "hard", "invalid_address"),
    _E(
        6,
        "subscriberNotSC-Subscriber",
        "subscriber not a service centre subscriber",
        "hard",
        "barred",
    ),
)

_LONG_ABSENCE = "may last a long time: consider a longer back-off"

ABSENT_SUBSCRIBER_DIAGNOSTICS: Final[dict[int, ErrorInfo]] = _table(
    _E(
        0,
        "noPagingResponseViaTheMSC",
        "no paging response via the MSC",
        "soft",
        "absent_subscriber",
    ),
    _E(1, "imsiDetached", "IMSI detached", "soft", "absent_subscriber"),
    _E(2, "roamingRestriction", "roaming restriction", "soft", "absent_subscriber"),
    _E(
        3,
        "deregisteredInTheHLRForNonGPRS",
        "deregistered in the HLR (non-GPRS)",
        "soft",
        "absent_subscriber",
        note=_LONG_ABSENCE,
    ),
    _E(
        4,
        "msPurgedForNonGPRS",
        "MS purged (non-GPRS)",
        "soft",
        "absent_subscriber",
        note=_LONG_ABSENCE,
    ),
    _E(
        5,
        "noPagingResponseViaTheSGSN",
        "no paging response via the SGSN",
        "soft",
        "absent_subscriber",
    ),
    _E(6, "gprsDetached", "GPRS detached", "soft", "absent_subscriber"),
    _E(
        7,
        "deregisteredInTheHLRForGPRS",
        "deregistered in the HLR (GPRS)",
        "soft",
        "absent_subscriber",
        note=_LONG_ABSENCE,
    ),
    _E(8, "msPurgedForGPRS", "MS purged (GPRS)", "soft", "absent_subscriber", note=_LONG_ABSENCE),
    _E(
        9,
        "unidentifiedSubscriberViaTheMSC",
        "unidentified subscriber via the MSC",
        "soft",
        "absent_subscriber",
    ),
    _E(
        10,
        "unidentifiedSubscriberViaTheSGSN",
        "unidentified subscriber via the SGSN",
        "soft",
        "absent_subscriber",
    ),
    _E(
        11,
        "deregisteredInTheHSS-HLRForIMS",
        "deregistered in the HSS/HLR for IMS",
        "soft",
        "absent_subscriber",
    ),
    _E(12, "noResponseViaTheIP-SM-GW", "no response via the IP-SM-GW", "soft", "absent_subscriber"),
)

# --- TP-Status (3GPP TS 23.040 status report) ----------------------------------------

_STILL_TRYING = "the service centre is still trying"
_STOPPED = "the service centre stopped trying"

TP_STATUS: Final[dict[int, ErrorInfo]] = _table(
    _E(0x00, "receivedBySME", "received by the recipient", "delivered", "delivered"),
    _E(0x01, "forwardedUnconfirmed", "forwarded, delivery not confirmed", "delivered", "delivered"),
    _E(0x02, "replacedBySC", "replaced by the service centre", "delivered", "delivered"),
    _E(0x20, "congestion", "congestion", "soft", "congestion", note=_STILL_TRYING),
    _E(0x21, "smeBusy", "recipient busy", "soft", "subscriber_busy", note=_STILL_TRYING),
    _E(
        0x22,
        "noResponseFromSME",
        "no response from recipient",
        "soft",
        "absent_subscriber",
        note=_STILL_TRYING,
    ),
    _E(0x23, "serviceRejected", "service rejected", "soft", "network", note=_STILL_TRYING),
    _E(
        0x24,
        "qosNotAvailable",
        "quality of service not available",
        "soft",
        "network",
        note=_STILL_TRYING,
    ),
    _E(0x25, "errorInSME", "error in recipient", "soft", "network", note=_STILL_TRYING),
    _E(0x40, "remoteProcedureError", "remote procedure error", "hard", "carrier_permanent"),
    _E(0x41, "incompatibleDestination", "incompatible destination", "hard", "not_sms_equipped"),
    _E(0x42, "connectionRejectedBySME", "connection rejected by recipient", "hard", "rejected"),
    _E(0x43, "notObtainable", "not obtainable", "hard", "carrier_permanent"),
    _E(
        0x44,
        "qosNotAvailablePermanent",
        "quality of service not available",
        "hard",
        "carrier_permanent",
    ),
    _E(0x45, "noInterworkingAvailable", "no interworking available", "hard", "carrier_permanent"),
    _E(
        0x46,
        "validityPeriodExpired",
        "validity period expired",
        "soft",
        "expired",
        note="treated like stat EXPIRED",
    ),
    _E(0x47, "deletedByOriginatingSME", "deleted by the originator", "hard", "deleted"),
    _E(
        0x48,
        "deletedBySCAdministration",
        "deleted by service centre administration",
        "hard",
        "deleted",
    ),
    _E(0x49, "smDoesNotExist", "message does not exist", "hard", "deleted"),
    _E(0x60, "congestionStopped", "congestion", "soft", "congestion", note=_STOPPED),
    _E(0x61, "smeBusyStopped", "recipient busy", "soft", "subscriber_busy", note=_STOPPED),
    _E(
        0x62,
        "noResponseFromSMEStopped",
        "no response from recipient",
        "soft",
        "absent_subscriber",
        note=_STOPPED,
    ),
    _E(0x63, "serviceRejectedStopped", "service rejected", "soft", "network", note=_STOPPED),
    _E(
        0x64,
        "qosNotAvailableStopped",
        "quality of service not available",
        "soft",
        "network",
        note=_STOPPED,
    ),
    _E(0x65, "errorInSMEStopped", "error in recipient", "soft", "network", note=_STOPPED),
)

# --- SMPP TLVs -------------------------------------------------------------------------

DELIVERY_FAILURE_REASONS: Final[dict[int, ErrorInfo]] = _table(
    _E(0, "destinationUnavailable", "destination unavailable", "soft", "absent_subscriber"),
    _E(1, "destinationAddressInvalid", "destination address invalid", "hard", "invalid_address"),
    _E(2, "permanentNetworkError", "permanent network error", "hard", "carrier_permanent"),
    _E(3, "temporaryNetworkError", "temporary network error", "soft", "network"),
)

# network_error_code TLV, first octet.
NETWORK_ERROR_TYPES: Final[dict[int, str]] = {
    1: "ANSI-136 access denied reason",
    2: "IS-95 access denied reason",
    3: "GSM",
    4: "ANSI-136 cause code",
    5: "IS-95 cause code",
    6: "ANSI-41 error",
    7: "SMPP error",
    8: "message centre specific",
}

# --- ANSI-41 (TIA/EIA-41-D), assumed for network_error_code types 1 and 2 -------------

ANSI_ACCESS_DENIED_REASONS: Final[dict[int, ErrorInfo]] = _table(
    _E(1, "Denied", "access denied", "hard", "barred"),
    _E(
        2,
        "Postponed",
        "delivery postponed (not reachable, notification will follow)",
        "soft",
        "absent_subscriber",
    ),
    _E(3, "Unavailable", "subscriber unavailable", "soft", "absent_subscriber"),
    _E(4, "Invalid", "access invalid", "hard", "rejected"),
)

ANSI_CAUSE_CODES: Final[dict[int, ErrorInfo]] = _table(
    _E(0, "AddressVacant", "address vacant", "hard", "unknown_subscriber"),
    _E(1, "AddressTranslationFailure", "address translation failure", "hard", "invalid_address"),
    _E(2, "NetworkResourceShortage", "network resource shortage", "soft", "congestion"),
    _E(3, "NetworkFailure", "network failure", "soft", "network"),
    _E(4, "InvalidTeleserviceID", "invalid teleservice id", "hard", "not_provisioned"),
    _E(5, "OtherNetworkProblem", "other network problem", "soft", "network"),
    _E(
        6,
        "UnsupportedNetworkInterface",
        "unsupported network interface",
        "hard",
        "carrier_permanent",
    ),
    _E(32, "NoPageResponse", "no page response", "soft", "absent_subscriber"),
    _E(33, "DestinationBusy", "destination busy", "soft", "subscriber_busy"),
    _E(34, "NoAcknowledgment", "no acknowledgement", "soft", "absent_subscriber"),
    _E(35, "DestinationResourceShortage", "destination resource shortage", "soft", "memory_full"),
    _E(36, "SMSDeliveryPostponed", "SMS delivery postponed", "soft", "absent_subscriber"),
    _E(37, "DestinationOutOfService", "destination out of service", "soft", "absent_subscriber"),
    _E(
        38,
        "DestinationNoLongerAtThisAddress",
        "destination no longer at this address",
        "hard",
        "unknown_subscriber",
    ),
    _E(39, "OtherTerminalProblem", "other terminal problem", "soft", "network", max_retries=3),
    _E(
        64,
        "RadioInterfaceResourceShortage",
        "radio interface resource shortage",
        "soft",
        "congestion",
    ),
    _E(
        65,
        "RadioInterfaceIncompatibility",
        "radio interface incompatibility",
        "hard",
        "not_sms_equipped",
    ),
    _E(66, "OtherRadioInterfaceProblem", "other radio interface problem", "soft", "network"),
    _E(
        67,
        "UnsupportedBaseStationCapability",
        "unsupported base station capability",
        "hard",
        "not_sms_equipped",
    ),
    _E(96, "EncodingProblem", "encoding problem", "hard", "content"),
    _E(
        97,
        "ServiceOriginationDenied",
        "service origination denied",
        "hard",
        "barred",
        note="a denial may lift, but it is treated as hard",
    ),
    _E(
        98,
        "ServiceTerminationDenied",
        "service termination denied",
        "hard",
        "barred",
        note="a denial may lift, but it is treated as hard",
    ),
    _E(
        99,
        "SupplementaryServiceNotSupported",
        "supplementary service not supported",
        "hard",
        "not_provisioned",
    ),
    _E(100, "ServiceNotSupported", "service not supported", "hard", "not_provisioned"),
    _E(101, "Reserved", "reserved cause code", "hard", "carrier_permanent"),
    _E(102, "MissingExpectedParameter", "missing expected parameter", "hard", "invalid_parameter"),
    _E(
        103, "MissingMandatoryParameter", "missing mandatory parameter", "hard", "invalid_parameter"
    ),
    _E(
        104,
        "UnrecognizedParameterValue",
        "unrecognised parameter value",
        "hard",
        "invalid_parameter",
    ),
    _E(105, "UnexpectedParameterValue", "unexpected parameter value", "hard", "invalid_parameter"),
    _E(106, "UserDataSizeError", "user data size error", "hard", "content"),
    _E(107, "OtherGeneralProblems", "other general problems", "hard", "carrier_permanent"),
    _E(108, "SessionNotActive", "session not active", "soft", "network"),
)

# --- Receipt stat words (message_state in ``code``) -----------------------------------

STAT_CLASSES: Final[dict[str, ErrorInfo]] = {
    "SCHEDULED": _E(0, "SCHEDULED", "scheduled", "pending", "enroute"),
    "ENROUTE": _E(1, "ENROUTE", "en route", "pending", "enroute"),
    "DELIVRD": _E(2, "DELIVRD", "delivered", "delivered", "delivered"),
    "EXPIRED": _E(
        3,
        "EXPIRED",
        "validity period expired",
        "soft",
        "expired",
        note="resubmit only while the sender's own deadline has not passed",
    ),
    "DELETED": _E(4, "DELETED", "deleted", "hard", "deleted"),
    "UNDELIV": _E(
        5,
        "UNDELIV",
        "undeliverable",
        "hard",
        "carrier_permanent",
        note="default when no usable error code came with it",
    ),
    "ACCEPTD": _E(6, "ACCEPTD", "accepted", "pending", "accepted", note="treated as non-final"),
    "UNKNOWN": _E(7, "UNKNOWN", "message state unknown", "soft", "unknown_state", max_retries=1),
    "REJECTD": _E(8, "REJECTD", "rejected", "hard", "rejected"),
    "SKIPPED": _E(9, "SKIPPED", "skipped (accepted but never transmitted)", "hard", "rejected"),
}
