"""Delivery receipts in the shapes carriers and gateways send them, with expected fields.

Each case is a deliver_sm's receipt-bearing fields (short_message, esm_class, TLVs)
and the fields the parser must produce. Every case states at least the fields in
REQUIRED; the others are checked when given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from smppcodecs.constants import Tag

REQUIRED: Final = (
    "message_id",
    "stat",
    "raw_stat",
    "err",
    "submit_date",
    "done_date",
    "text",
    "intermediate",
)


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    short_message: bytes
    expect: dict[str, object]
    esm_class: int = 0x04
    tlvs: dict[int, int | str | bytes] = field(default_factory=dict)
    data_coding: int = 0


def _d(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S")


CORPUS: Final[list[Case]] = [
    Case(
        "appendix_b_standard",
        b"id:0123456789 sub:001 dlvrd:001 submit date:2501151030 done date:2501151031"
        b" stat:DELIVRD err:000 Text:Hello world",
        {
            "message_id": "0123456789",
            "text_id": "0123456789",
            "tlv_id": None,
            "sub": "001",
            "dlvrd": "001",
            "submit_date": _d("2025-01-15 10:30:00"),
            "done_date": _d("2025-01-15 10:31:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "Hello world",
            "message_state": 2,
            "extra": {},
            "intermediate": False,
        },
    ),
    Case(
        "appendix_b_undeliv_leap_day",
        b"id:7220154392 sub:001 dlvrd:000 submit date:2402290815 done date:2402290816"
        b" stat:UNDELIV err:001 Text:Your code is 4821",
        {
            "message_id": "7220154392",
            "sub": "001",
            "dlvrd": "000",
            "submit_date": _d("2024-02-29 08:15:00"),
            "done_date": _d("2024-02-29 08:16:00"),
            "stat": "UNDELIV",
            "raw_stat": "UNDELIV",
            "err": "001",
            "text": "Your code is 4821",
            "message_state": 5,
            "intermediate": False,
        },
    ),
    Case(
        "kannel_style_empty_text",
        b"id:46b35b1c sub:001 dlvrd:001 submit date:2503041200 done date:2503041201"
        b" stat:DELIVRD err:000 text:",
        {
            "message_id": "46b35b1c",
            "submit_date": _d("2025-03-04 12:00:00"),
            "done_date": _d("2025-03-04 12:01:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "",
            "intermediate": False,
        },
    ),
    Case(
        "jasmin_accepted_no_sub_dlvrd_text",
        b"id:b9a4bd2e-5c4b-4d8b-a1f7-5e0cdb3c0a7e submit date:2503041200"
        b" done date:2503041200 stat:ACCEPTD err:000",
        {
            "message_id": "b9a4bd2e-5c4b-4d8b-a1f7-5e0cdb3c0a7e",
            "sub": None,
            "dlvrd": None,
            "submit_date": _d("2025-03-04 12:00:00"),
            "done_date": _d("2025-03-04 12:00:00"),
            "stat": "ACCEPTD",
            "raw_stat": "ACCEPTD",
            "err": "000",
            "text": None,
            "message_state": 6,
            "intermediate": True,
        },
    ),
    Case(
        "jasmin_upstream_submit_failed",
        b"id:0d3c41a6-88f1-4b0c-9a3e-2f4b8c6d7e10 submit date:2503041205"
        b" done date:2503041205 stat:UNDELIV err:099",
        {
            "message_id": "0d3c41a6-88f1-4b0c-9a3e-2f4b8c6d7e10",
            "submit_date": _d("2025-03-04 12:05:00"),
            "done_date": _d("2025-03-04 12:05:00"),
            "stat": "UNDELIV",
            "raw_stat": "UNDELIV",
            "err": "099",
            "text": None,
            "intermediate": False,
        },
    ),
    Case(
        "vonage_padded_decimal_text_none",
        b"id:0000000012345678 sub:001 dlvrd:001 submit date:1101010000"
        b" done date:1101010000 stat:DELIVRD err:000 text:none",
        {
            "message_id": "0000000012345678",
            "sub": "001",
            "dlvrd": "001",
            "submit_date": _d("2011-01-01 00:00:00"),
            "done_date": _d("2011-01-01 00:00:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "none",
            "intermediate": False,
        },
    ),
    Case(
        "vonage_absent_own_numbering",
        b"id:1803212345678901 sub:001 dlvrd:000 submit date:2301120930"
        b" done date:2301120945 stat:UNDELIV err:002 text:none",
        {
            "message_id": "1803212345678901",
            "submit_date": _d("2023-01-12 09:30:00"),
            "done_date": _d("2023-01-12 09:45:00"),
            "stat": "UNDELIV",
            "raw_stat": "UNDELIV",
            "err": "002",
            "text": "none",
            "intermediate": False,
        },
    ),
    Case(
        "cloudhopper_lower_case_text_padded_id",
        b"id:0000012345 sub:001 dlvrd:001 submit date:1006020051 done date:1006021051"
        b" stat:DELIVRD err:000 text:This is a sample mes",
        {
            "message_id": "0000012345",
            "submit_date": _d("2010-06-02 00:51:00"),
            "done_date": _d("2010-06-02 10:51:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "This is a sample mes",
            "intermediate": False,
        },
    ),
    Case(
        "uppercase_keys",
        b"ID:A1B2C3D4 SUB:001 DLVRD:001 SUBMIT DATE:2406011200 DONE DATE:2406011202"
        b" STAT:DELIVRD ERR:000 TEXT:Hi",
        {
            "message_id": "A1B2C3D4",
            "sub": "001",
            "dlvrd": "001",
            "submit_date": _d("2024-06-01 12:00:00"),
            "done_date": _d("2024-06-01 12:02:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "Hi",
            "intermediate": False,
        },
    ),
    Case(
        "seconds_in_dates_12_digits",
        b"id:9876543210 sub:001 dlvrd:001 submit date:190608165232"
        b" done date:190608165240 stat:DELIVRD err:000 text:test",
        {
            "message_id": "9876543210",
            "submit_date": _d("2019-06-08 16:52:32"),
            "done_date": _d("2019-06-08 16:52:40"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "test",
            "intermediate": False,
        },
    ),
    Case(
        "fourteen_digit_dates",
        b"id:5551234 sub:001 dlvrd:001 submit date:20240317084512"
        b" done date:20240317084530 stat:DELIVRD err:000 text:x",
        {
            "message_id": "5551234",
            "submit_date": _d("2024-03-17 08:45:12"),
            "done_date": _d("2024-03-17 08:45:30"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "x",
            "intermediate": False,
        },
    ),
    Case(
        "hex_id_upper",
        b"id:7F3A2B1C9D sub:001 dlvrd:000 submit date:2412241800 done date:2412241830"
        b" stat:EXPIRED err:000 text:Merry",
        {
            "message_id": "7F3A2B1C9D",
            "submit_date": _d("2024-12-24 18:00:00"),
            "done_date": _d("2024-12-24 18:30:00"),
            "stat": "EXPIRED",
            "raw_stat": "EXPIRED",
            "err": "000",
            "text": "Merry",
            "message_state": 3,
            "intermediate": False,
        },
    ),
    Case(
        "hex_id_lower",
        b"id:4e2f9a0b sub:001 dlvrd:001 submit date:2401020304 done date:2401020305"
        b" stat:DELIVRD err:000 text:ok",
        {
            "message_id": "4e2f9a0b",
            "submit_date": _d("2024-01-02 03:04:00"),
            "done_date": _d("2024-01-02 03:05:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "ok",
            "intermediate": False,
        },
    ),
    Case(
        "text_with_colons",
        b"id:31337 sub:001 dlvrd:001 submit date:2405051000 done date:2405051001"
        b" stat:DELIVRD err:000 Text:Meeting at 10:30: bring ID:1234 stat:FAKE",
        {
            "message_id": "31337",
            "submit_date": _d("2024-05-05 10:00:00"),
            "done_date": _d("2024-05-05 10:01:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "Meeting at 10:30: bring ID:1234 stat:FAKE",
            "extra": {},
            "intermediate": False,
        },
    ),
    Case(
        "extra_fields_mcc_mnc_imsi",
        b"id:100200300 sub:001 dlvrd:001 submit date:2402011000 done date:2402011001"
        b" stat:DELIVRD err:000 mcc:234 mnc:15 imsi:234150123456789 text:Hi there",
        {
            "message_id": "100200300",
            "submit_date": _d("2024-02-01 10:00:00"),
            "done_date": _d("2024-02-01 10:01:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "Hi there",
            "extra": {"mcc": "234", "mnc": "15", "imsi": "234150123456789"},
            "intermediate": False,
        },
    ),
    Case(
        "stat_failed",
        b"id:88001 sub:001 dlvrd:000 submit date:2407071200 done date:2407071201"
        b" stat:FAILED err:005 text:",
        {
            "message_id": "88001",
            "submit_date": _d("2024-07-07 12:00:00"),
            "done_date": _d("2024-07-07 12:01:00"),
            "stat": "UNDELIV",
            "raw_stat": "FAILED",
            "err": "005",
            "text": "",
            "message_state": 5,
            "intermediate": False,
        },
    ),
    Case(
        "stat_delivered_long_word",
        b"id:88002 sub:001 dlvrd:001 submit date:2407071200 done date:2407071202"
        b" stat:DELIVERED err:000 text:",
        {
            "message_id": "88002",
            "submit_date": _d("2024-07-07 12:00:00"),
            "done_date": _d("2024-07-07 12:02:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVERED",
            "err": "000",
            "text": "",
            "message_state": 2,
            "intermediate": False,
        },
    ),
    Case(
        "stat_acked_is_intermediate",
        b"id:88003 sub:001 dlvrd:000 submit date:2407071200 done date:2407071200"
        b" stat:ACKED err:000 text:",
        {
            "message_id": "88003",
            "submit_date": _d("2024-07-07 12:00:00"),
            "done_date": _d("2024-07-07 12:00:00"),
            "stat": "ACCEPTD",
            "raw_stat": "ACKED",
            "err": "000",
            "text": "",
            "intermediate": True,
        },
    ),
    Case(
        "stat_buffred_is_intermediate",
        b"id:88004 sub:001 dlvrd:000 submit date:2407071200 done date:2407071205"
        b" stat:BUFFRED err:000 text:",
        {
            "message_id": "88004",
            "submit_date": _d("2024-07-07 12:00:00"),
            "done_date": _d("2024-07-07 12:05:00"),
            "stat": "ACCEPTD",
            "raw_stat": "BUFFRED",
            "err": "000",
            "text": "",
            "intermediate": True,
        },
    ),
    Case(
        "delivrd_with_nonzero_err",
        b"id:4410092 sub:001 dlvrd:001 submit date:2408151423 done date:2408151424"
        b" stat:DELIVRD err:001 text:Promo",
        {
            "message_id": "4410092",
            "submit_date": _d("2024-08-15 14:23:00"),
            "done_date": _d("2024-08-15 14:24:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "001",
            "text": "Promo",
            "intermediate": False,
        },
    ),
    Case(
        "long_err",
        b"id:77123 sub:001 dlvrd:000 submit date:2409010000 done date:2409010010"
        b" stat:UNDELIV err:10034 text:abc",
        {
            "message_id": "77123",
            "submit_date": _d("2024-09-01 00:00:00"),
            "done_date": _d("2024-09-01 00:10:00"),
            "stat": "UNDELIV",
            "raw_stat": "UNDELIV",
            "err": "10034",
            "text": "abc",
            "intermediate": False,
        },
    ),
    Case(
        "missing_done_date",
        b"id:42 sub:001 dlvrd:000 submit date:2501010000 stat:EXPIRED err:000 text:",
        {
            "message_id": "42",
            "submit_date": _d("2025-01-01 00:00:00"),
            "done_date": None,
            "stat": "EXPIRED",
            "raw_stat": "EXPIRED",
            "err": "000",
            "text": "",
            "intermediate": False,
        },
    ),
    Case(
        "shuffled_order_extra_spaces",
        b"stat:REJECTD   err:013   id: 12345   done date:2501011212"
        b"  submit date:2501011200 sub:001 dlvrd:000",
        {
            "message_id": "12345",
            "sub": "001",
            "dlvrd": "000",
            "submit_date": _d("2025-01-01 12:00:00"),
            "done_date": _d("2025-01-01 12:12:00"),
            "stat": "REJECTD",
            "raw_stat": "REJECTD",
            "err": "013",
            "text": None,
            "message_state": 8,
            "intermediate": False,
        },
    ),
    Case(
        "dlvd_key",
        b"id:77 sub:001 dlvd:001 submit date:2502020202 done date:2502020203"
        b" stat:DELIVRD err:000 text:hey",
        {
            "message_id": "77",
            "dlvrd": "001",
            "submit_date": _d("2025-02-02 02:02:00"),
            "done_date": _d("2025-02-02 02:03:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "hey",
            "intermediate": False,
        },
    ),
    Case(
        "tlv_only_delivered",
        b"",
        {
            "message_id": "A1B2",
            "text_id": None,
            "tlv_id": "A1B2",
            "submit_date": None,
            "done_date": None,
            "stat": "DELIVRD",
            "raw_stat": None,
            "err": None,
            "text": None,
            "message_state": 2,
            "network_error_code": None,
            "intermediate": False,
        },
        tlvs={Tag.receipted_message_id: "A1B2", Tag.message_state: 2},
    ),
    Case(
        "tlv_only_undeliverable_with_network_error",
        b"",
        {
            "message_id": "99887766",
            "submit_date": None,
            "done_date": None,
            "stat": "UNDELIV",
            "raw_stat": None,
            "err": None,
            "text": None,
            "message_state": 5,
            "network_error_code": (3, 6),
            "intermediate": False,
        },
        tlvs={
            Tag.receipted_message_id: "99887766",
            Tag.message_state: 5,
            Tag.network_error_code: b"\x03\x00\x06",
        },
    ),
    Case(
        "receipt_in_message_payload",
        b"",
        {
            "message_id": "5F3E2D1C",
            "submit_date": _d("2025-04-01 09:00:00"),
            "done_date": _d("2025-04-01 09:00:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "payload receipt",
            "intermediate": False,
        },
        tlvs={
            Tag.message_payload: b"id:5F3E2D1C sub:001 dlvrd:001 submit date:2504010900"
            b" done date:2504010900 stat:DELIVRD err:000 text:payload receipt",
        },
    ),
    Case(
        "tlv_id_hex_text_id_decimal",
        b"id:1234567890 sub:001 dlvrd:001 submit date:2503030303 done date:2503030304"
        b" stat:DELIVRD err:000 text:",
        {
            "message_id": "499602D2",
            "text_id": "1234567890",
            "tlv_id": "499602D2",
            "submit_date": _d("2025-03-03 03:03:00"),
            "done_date": _d("2025-03-03 03:04:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "",
            "message_state": 2,
            "intermediate": False,
        },
        tlvs={Tag.receipted_message_id: "499602D2", Tag.message_state: 2},
    ),
    Case(
        "network_error_code_as_ascii_digits",
        b"id:600600 sub:001 dlvrd:000 submit date:2503101000 done date:2503101003"
        b" stat:UNDELIV err:006 text:",
        {
            "message_id": "600600",
            "submit_date": _d("2025-03-10 10:00:00"),
            "done_date": _d("2025-03-10 10:03:00"),
            "stat": "UNDELIV",
            "raw_stat": "UNDELIV",
            "err": "006",
            "text": "",
            "network_error_code": (3, 6),
            "intermediate": False,
        },
        tlvs={Tag.network_error_code: b"006"},
    ),
    Case(
        "esm_class_0x44",
        b"id:440044 sub:001 dlvrd:001 submit date:2503111111 done date:2503111112"
        b" stat:DELIVRD err:000 text:udhi flag",
        {
            "message_id": "440044",
            "submit_date": _d("2025-03-11 11:11:00"),
            "done_date": _d("2025-03-11 11:12:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "udhi flag",
            "intermediate": False,
        },
        esm_class=0x44,
    ),
    Case(
        "intermediate_esm_class_enroute",
        b"id:202020 sub:001 dlvrd:000 submit date:2503121200 done date:2503121230"
        b" stat:ENROUTE err:006 text:",
        {
            "message_id": "202020",
            "submit_date": _d("2025-03-12 12:00:00"),
            "done_date": _d("2025-03-12 12:30:00"),
            "stat": "ENROUTE",
            "raw_stat": "ENROUTE",
            "err": "006",
            "text": "",
            "message_state": 1,
            "intermediate": True,
        },
        esm_class=0x20,
    ),
    Case(
        "message_state_tlv_overrides_text_stat",
        b"id:303030 sub:001 dlvrd:000 submit date:2503131300 done date:2503141300"
        b" stat:UNDELIV err:000 text:",
        {
            "message_id": "303030",
            "submit_date": _d("2025-03-13 13:00:00"),
            "done_date": _d("2025-03-14 13:00:00"),
            "stat": "EXPIRED",
            "raw_stat": "UNDELIV",
            "err": "000",
            "text": "",
            "message_state": 3,
            "intermediate": False,
        },
        tlvs={Tag.message_state: 3},
    ),
    Case(
        "deleted",
        b"id:404040 sub:001 dlvrd:000 submit date:2503150000 done date:2503150100"
        b" stat:DELETED err:000 text:cancelled",
        {
            "message_id": "404040",
            "submit_date": _d("2025-03-15 00:00:00"),
            "done_date": _d("2025-03-15 01:00:00"),
            "stat": "DELETED",
            "raw_stat": "DELETED",
            "err": "000",
            "text": "cancelled",
            "message_state": 4,
            "intermediate": False,
        },
    ),
    Case(
        "unknown_state",
        b"id:505050 sub:001 dlvrd:000 submit date:2503160000 done date:2503160005"
        b" stat:UNKNOWN err:000 text:",
        {
            "message_id": "505050",
            "submit_date": _d("2025-03-16 00:00:00"),
            "done_date": _d("2025-03-16 00:05:00"),
            "stat": "UNKNOWN",
            "raw_stat": "UNKNOWN",
            "err": "000",
            "text": "",
            "message_state": 7,
            "intermediate": False,
        },
    ),
    Case(
        "unrecognised_stat_word",
        b"id:606060 sub:001 dlvrd:000 submit date:2503170000 done date:2503170000"
        b" stat:SENT err:000 text:",
        {
            "message_id": "606060",
            "submit_date": _d("2025-03-17 00:00:00"),
            "done_date": _d("2025-03-17 00:00:00"),
            "stat": None,
            "raw_stat": "SENT",
            "err": "000",
            "text": "",
            "message_state": None,
            "intermediate": False,
        },
    ),
    Case(
        "data_sm_style_delivery_failure_reason",
        b"",
        {
            "message_id": "ABCDEF01",
            "submit_date": None,
            "done_date": None,
            "stat": "UNDELIV",
            "raw_stat": None,
            "err": None,
            "text": None,
            "delivery_failure_reason": 3,
            "network_error_code": (3, 34),
            "intermediate": False,
        },
        tlvs={
            Tag.receipted_message_id: b"ABCDEF01\x00",
            Tag.message_state: b"\x05",
            Tag.delivery_failure_reason: 3,
            Tag.network_error_code: b"\x03\x00\x22",
        },
    ),
    Case(
        "ucs2_encoded_receipt",
        "id:707070 sub:001 dlvrd:001 submit date:2503180000 done date:2503180001"
        " stat:DELIVRD err:000 text:Привет".encode("utf-16-be"),
        {
            "message_id": "707070",
            "submit_date": _d("2025-03-18 00:00:00"),
            "done_date": _d("2025-03-18 00:01:00"),
            "stat": "DELIVRD",
            "raw_stat": "DELIVRD",
            "err": "000",
            "text": "Привет",
            "intermediate": False,
        },
        data_coding=0x08,
    ),
    Case(
        "trailing_nul_and_lower_stat",
        b"id:808080 sub:001 dlvrd:001 submit date:2503190000 done date:2503190001"
        b" stat:delivrd err:0 text:\x00",
        {
            "message_id": "808080",
            "submit_date": _d("2025-03-19 00:00:00"),
            "done_date": _d("2025-03-19 00:01:00"),
            "stat": "DELIVRD",
            "raw_stat": "delivrd",
            "err": "0",
            "text": "",
            "intermediate": False,
        },
    ),
    Case(
        "unreadable_date_kept_in_extra",
        b"id:909090 sub:001 dlvrd:000 submit date:2513990000 done date:25-03-20"
        b" stat:UNDELIV err:034 text:",
        {
            "message_id": "909090",
            "submit_date": None,
            "done_date": None,
            "stat": "UNDELIV",
            "raw_stat": "UNDELIV",
            "err": "034",
            "text": "",
            "extra": {"submit date": "2513990000", "done date": "25-03-20"},
            "intermediate": False,
        },
    ),
    Case(
        "underscore_date_keys_and_space_before_colon",
        b"id :111222 submit_date:2503211000 done_date:2503211005 stat : EXPIRED err:000",
        {
            "message_id": "111222",
            "submit_date": _d("2025-03-21 10:00:00"),
            "done_date": _d("2025-03-21 10:05:00"),
            "stat": "EXPIRED",
            "raw_stat": "EXPIRED",
            "err": "000",
            "text": None,
            "intermediate": False,
        },
    ),
    Case(
        "no_text_label_trailing_words",
        b"id:121212 sub:001 dlvrd:000 submit date:2503221000 done date:2503221001"
        b" stat:UNDELIV err:027 Absent subscriber",
        {
            "message_id": "121212",
            "submit_date": _d("2025-03-22 10:00:00"),
            "done_date": _d("2025-03-22 10:01:00"),
            "stat": "UNDELIV",
            "raw_stat": "UNDELIV",
            "err": "027",
            "text": None,
            "extra": {"unlabelled": "Absent subscriber"},
            "intermediate": False,
        },
    ),
    Case(
        "all_zero_dates_are_unknown",
        b"id:131313 sub:001 dlvrd:000 submit date:0000000000 done date:0000000000"
        b" stat:REJECTD err:000 text:",
        {
            "message_id": "131313",
            "submit_date": None,
            "done_date": None,
            "stat": "REJECTD",
            "raw_stat": "REJECTD",
            "err": "000",
            "text": "",
            "extra": {},
            "intermediate": False,
        },
    ),
]
