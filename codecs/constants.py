"""SMPP 3.4 numeric constants: command ids, command_status codes, TLV tags and flags.

Everything here is plain data, shared by the codec, the classifier and the proxy.
"""

from __future__ import annotations

import enum
from typing import Final


class CommandId(enum.IntEnum):
    """command_id values of SMPP 3.4 (a response is its request's id | 0x80000000)."""

    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    REPLACE_SM = 0x00000007
    REPLACE_SM_RESP = 0x80000007
    CANCEL_SM = 0x00000008
    CANCEL_SM_RESP = 0x80000008
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    SUBMIT_MULTI = 0x00000021
    SUBMIT_MULTI_RESP = 0x80000021
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


RESP_BIT: Final = 0x80000000


def is_response(command_id: int) -> bool:
    return bool(command_id & RESP_BIT)


class CommandStatus(enum.IntEnum):
    """command_status values defined by SMPP 3.4."""

    ESME_ROK = 0x00000000
    ESME_RINVMSGLEN = 0x00000001
    ESME_RINVCMDLEN = 0x00000002
    ESME_RINVCMDID = 0x00000003
    ESME_RINVBNDSTS = 0x00000004
    ESME_RALYBND = 0x00000005
    ESME_RINVPRTFLG = 0x00000006
    ESME_RINVREGDLVFLG = 0x00000007
    ESME_RSYSERR = 0x00000008
    ESME_RINVSRCADR = 0x0000000A
    ESME_RINVDSTADR = 0x0000000B
    ESME_RINVMSGID = 0x0000000C
    ESME_RBINDFAIL = 0x0000000D
    ESME_RINVPASWD = 0x0000000E
    ESME_RINVSYSID = 0x0000000F
    ESME_RCANCELFAIL = 0x00000011
    ESME_RREPLACEFAIL = 0x00000013
    ESME_RMSGQFUL = 0x00000014
    ESME_RINVSERTYP = 0x00000015
    ESME_RINVNUMDESTS = 0x00000033
    ESME_RINVDLNAME = 0x00000034
    ESME_RINVDESTFLAG = 0x00000040
    ESME_RINVSUBREP = 0x00000042
    ESME_RINVESMCLASS = 0x00000043
    ESME_RCNTSUBDL = 0x00000044
    ESME_RSUBMITFAIL = 0x00000045
    ESME_RINVSRCTON = 0x00000048
    ESME_RINVSRCNPI = 0x00000049
    ESME_RINVDSTTON = 0x00000050
    ESME_RINVDSTNPI = 0x00000051
    ESME_RINVSYSTYP = 0x00000053
    ESME_RINVREPFLAG = 0x00000054
    ESME_RINVNUMMSGS = 0x00000055
    ESME_RTHROTTLED = 0x00000058
    ESME_RINVSCHED = 0x00000061
    ESME_RINVEXPIRY = 0x00000062
    ESME_RINVDFTMSGID = 0x00000063
    ESME_RX_T_APPN = 0x00000064
    ESME_RX_P_APPN = 0x00000065
    ESME_RX_R_APPN = 0x00000066
    ESME_RQUERYFAIL = 0x00000067
    ESME_RINVOPTPARSTREAM = 0x000000C0
    ESME_ROPTPARNOTALLWD = 0x000000C1
    ESME_RINVPARLEN = 0x000000C2
    ESME_RMISSINGOPTPARAM = 0x000000C3
    ESME_RINVOPTPARAMVAL = 0x000000C4
    ESME_RDELIVERYFAILURE = 0x000000FE
    ESME_RUNKNOWNERR = 0x000000FF


STATUS_DESCRIPTIONS: Final[dict[int, str]] = {
    0x00: "No error",
    0x01: "Message length is invalid",
    0x02: "Command length is invalid",
    0x03: "Invalid command ID",
    0x04: "Incorrect bind status for given command",
    0x05: "ESME already in bound state",
    0x06: "Invalid priority flag",
    0x07: "Invalid registered delivery flag",
    0x08: "System error",
    0x0A: "Invalid source address",
    0x0B: "Invalid destination address",
    0x0C: "Message ID is invalid",
    0x0D: "Bind failed",
    0x0E: "Invalid password",
    0x0F: "Invalid system ID",
    0x11: "Cancel SM failed",
    0x13: "Replace SM failed",
    0x14: "Message queue full",
    0x15: "Invalid service type",
    0x33: "Invalid number of destinations",
    0x34: "Invalid distribution list name",
    0x40: "Destination flag is invalid (submit_multi)",
    0x42: "Invalid 'submit with replace' request",
    0x43: "Invalid esm_class field data",
    0x44: "Cannot submit to distribution list",
    0x45: "submit_sm or submit_multi failed",
    0x48: "Invalid source address TON",
    0x49: "Invalid source address NPI",
    0x50: "Invalid destination address TON",
    0x51: "Invalid destination address NPI",
    0x53: "Invalid system_type field",
    0x54: "Invalid replace_if_present flag",
    0x55: "Invalid number of messages",
    0x58: "Throttling error (ESME has exceeded allowed message limits)",
    0x61: "Invalid scheduled delivery time",
    0x62: "Invalid message validity period (expiry time)",
    0x63: "Predefined message invalid or not found",
    0x64: "ESME receiver temporary app error code",
    0x65: "ESME receiver permanent app error code",
    0x66: "ESME receiver reject message error code",
    0x67: "query_sm request failed",
    0xC0: "Error in the optional part of the PDU body",
    0xC1: "Optional parameter not allowed",
    0xC2: "Invalid parameter length",
    0xC3: "Expected optional parameter missing",
    0xC4: "Invalid optional parameter value",
    0xFE: "Delivery failure (used for data_sm_resp)",
    0xFF: "Unknown error",
}


def status_name(status: int) -> str:
    """The ESME_* name of a command_status, or a descriptive name for ranges."""
    try:
        return CommandStatus(status).name
    except ValueError:
        if 0x400 <= status <= 0x4FF:
            return f"VENDOR_0x{status:08X}"
        return f"RESERVED_0x{status:08X}"


def status_description(status: int) -> str:
    desc = STATUS_DESCRIPTIONS.get(status)
    if desc is not None:
        return desc
    if 0x400 <= status <= 0x4FF:
        return "SMSC vendor-specific error"
    return "Reserved error code"


class Tag(enum.IntEnum):
    """Standard optional parameter (TLV) tags of SMPP 3.4."""

    dest_addr_subunit = 0x0005
    dest_network_type = 0x0006
    dest_bearer_type = 0x0007
    dest_telematics_id = 0x0008
    source_addr_subunit = 0x000D
    source_network_type = 0x000E
    source_bearer_type = 0x000F
    source_telematics_id = 0x0010
    qos_time_to_live = 0x0017
    payload_type = 0x0019
    additional_status_info_text = 0x001D
    receipted_message_id = 0x001E
    ms_msg_wait_facilities = 0x0030
    privacy_indicator = 0x0201
    source_subaddress = 0x0202
    dest_subaddress = 0x0203
    user_message_reference = 0x0204
    user_response_code = 0x0205
    source_port = 0x020A
    destination_port = 0x020B
    sar_msg_ref_num = 0x020C
    language_indicator = 0x020D
    sar_total_segments = 0x020E
    sar_segment_seqnum = 0x020F
    sc_interface_version = 0x0210
    callback_num_pres_ind = 0x0302
    callback_num_atag = 0x0303
    number_of_messages = 0x0304
    callback_num = 0x0381
    dpf_result = 0x0420
    set_dpf = 0x0421
    ms_availability_status = 0x0422
    network_error_code = 0x0423
    message_payload = 0x0424
    delivery_failure_reason = 0x0425
    more_messages_to_send = 0x0426
    message_state = 0x0427
    ussd_service_op = 0x0501
    display_time = 0x1201
    sms_signal = 0x1203
    ms_validity = 0x1204
    alert_on_message_delivery = 0x130C
    its_reply_type = 0x1380
    its_session_info = 0x1383


class MessageState(enum.IntEnum):
    """message_state values (query_sm_resp and the message_state TLV)."""

    SCHEDULED = 0  # SMPP 5.0
    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8
    SKIPPED = 9  # SMPP 5.0


# Receipt `stat:` words for each message_state, as Appendix B writes them.
STATE_STAT_WORDS: Final[dict[int, str]] = {
    MessageState.SCHEDULED: "SCHEDULED",
    MessageState.ENROUTE: "ENROUTE",
    MessageState.DELIVERED: "DELIVRD",
    MessageState.EXPIRED: "EXPIRED",
    MessageState.DELETED: "DELETED",
    MessageState.UNDELIVERABLE: "UNDELIV",
    MessageState.ACCEPTED: "ACCEPTD",
    MessageState.UNKNOWN: "UNKNOWN",
    MessageState.REJECTED: "REJECTD",
    MessageState.SKIPPED: "SKIPPED",
}


class DataCoding(enum.IntEnum):
    DEFAULT = 0x00  # SMSC default alphabet, in practice GSM 03.38
    IA5 = 0x01
    BINARY = 0x02
    LATIN1 = 0x03
    BINARY_4 = 0x04
    JIS = 0x05
    CYRILLIC = 0x06
    HEBREW = 0x07
    UCS2 = 0x08


# esm_class bits
ESM_CLASS_MODE_MASK: Final = 0x03
ESM_CLASS_TYPE_MASK: Final = 0x3C
ESM_CLASS_SMSC_RECEIPT: Final = 0x04
ESM_CLASS_SME_ACK: Final = 0x08
ESM_CLASS_SME_MANUAL_ACK: Final = 0x10
ESM_CLASS_INTERMEDIATE: Final = 0x20
ESM_CLASS_UDHI: Final = 0x40
ESM_CLASS_REPLY_PATH: Final = 0x80

# registered_delivery bits
REG_DELIVERY_RECEIPT_MASK: Final = 0x03
REG_DELIVERY_NONE: Final = 0x00
REG_DELIVERY_SUCCESS_FAILURE: Final = 0x01
REG_DELIVERY_FAILURE: Final = 0x02
REG_DELIVERY_INTERMEDIATE: Final = 0x10

# Interface version sent in binds (0x34 = SMPP 3.4).
INTERFACE_VERSION_34: Final = 0x34

HEADER_LENGTH: Final = 16
MAX_SEQUENCE: Final = 0x7FFFFFFF
