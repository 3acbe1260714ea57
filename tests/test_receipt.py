"""Delivery receipt parsing over a corpus of real-world shapes, formatting and TLVs."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
import smpplib.smpp
from hypothesis import given, settings
from hypothesis import strategies as st
from receipt_corpus import CORPUS, REQUIRED, Case
from smppcodecs.constants import Tag
from smppcodecs.pdu import DataSm, DeliverSm, decode, encode
from smppcodecs.receipt import (
    Receipt,
    ReceiptParseError,
    build_receipt_pdu,
    decode_network_error_code,
    format_receipt_text,
    is_receipt,
    normalize_stat,
    parse_receipt,
    parse_receipt_fields,
    parse_receipt_text,
    receipt_tlvs,
)

# --- the corpus ------------------------------------------------------------------------


def test_corpus_is_large_and_complete() -> None:
    assert len(CORPUS) >= 30
    names = [case.name for case in CORPUS]
    assert len(set(names)) == len(names)
    for case in CORPUS:
        missing = [key for key in REQUIRED if key not in case.expect]
        assert not missing, f"{case.name} does not state {missing}"
        unknown = set(case.expect) - set(Receipt.__dataclass_fields__)
        assert not unknown, f"{case.name} names unknown fields {unknown}"


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_corpus_receipt_fields(case: Case) -> None:
    receipt = parse_receipt_fields(
        case.short_message, case.esm_class, case.tlvs, data_coding=case.data_coding
    )
    assert receipt is not None
    for key, expected in case.expect.items():
        assert getattr(receipt, key) == expected, f"{case.name}: {key}"


TEXT_ONLY = [c for c in CORPUS if not c.tlvs and c.data_coding == 0 and c.esm_class == 0x04]


@pytest.mark.parametrize("case", TEXT_ONLY, ids=[case.name for case in TEXT_ONLY])
def test_corpus_text_parser_agrees(case: Case) -> None:
    receipt = parse_receipt_text(case.short_message.decode("latin-1"))
    for key, expected in case.expect.items():
        assert getattr(receipt, key) == expected, f"{case.name}: {key}"


@dataclass
class FakePdu:
    short_message: bytes
    esm_class: int
    tlvs: Mapping[int, object] = field(default_factory=dict)
    data_coding: int = 0


def test_parse_receipt_on_a_pdu_like_object() -> None:
    case = next(c for c in CORPUS if c.name == "ucs2_encoded_receipt")
    receipt = parse_receipt(FakePdu(case.short_message, case.esm_class, {}, case.data_coding))
    assert receipt is not None
    assert receipt.text == "Привет"
    assert parse_receipt(FakePdu(b"hello", 0x00)) is None


def test_parse_receipt_on_a_data_sm() -> None:
    data_sm = DataSm(
        sequence_number=3,
        esm_class=0x04,
        tlvs={
            Tag.receipted_message_id: "77AA",
            Tag.message_state: 5,
            Tag.network_error_code: b"\x03\x00\x1f",
            Tag.message_payload: b"id:77AA stat:UNDELIV err:031",
        },
    )
    decoded = decode(encode(data_sm))
    assert isinstance(decoded, DataSm)
    receipt = parse_receipt(decoded)
    assert receipt is not None
    assert (receipt.message_id, receipt.stat, receipt.err) == ("77AA", "UNDELIV", "031")
    assert receipt.network_error_code == (3, 31)


def test_text_id_and_tlv_id_are_both_kept() -> None:
    receipt = parse_receipt_fields(
        b"id:1234567890 stat:DELIVRD err:000",
        0x04,
        {Tag.receipted_message_id: "499602D2"},
    )
    assert receipt is not None
    assert (receipt.message_id, receipt.text_id, receipt.tlv_id) == (
        "499602D2",
        "1234567890",
        "499602D2",
    )


# --- esm_class -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("esm_class", "expected"),
    [
        (0x04, True),
        (0x08, True),
        (0x10, True),
        (0x20, True),
        (0x24, True),
        (0x44, True),
        (0x84, True),
        (0x00, False),
        (0x01, False),
        (0x02, False),
        (0x03, False),
        (0x18, False),
        (0x40, False),
        (0x80, False),
    ],
)
def test_is_receipt(esm_class: int, expected: bool) -> None:
    assert is_receipt(esm_class) is expected


def test_mobile_originated_message_is_not_a_receipt() -> None:
    assert parse_receipt_fields(b"id:1 stat:DELIVRD", 0x00, {}) is None


# --- failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "hello world", "sub:001 dlvrd:001 err:000", "Your code is 1234", "text:id:1 stat:X"],
)
def test_not_a_receipt_text_raises(text: str) -> None:
    with pytest.raises(ReceiptParseError):
        parse_receipt_text(text)


def test_receipt_parse_error_is_a_value_error() -> None:
    assert issubclass(ReceiptParseError, ValueError)


def test_empty_receipt_without_tlvs_raises() -> None:
    with pytest.raises(ReceiptParseError):
        parse_receipt_fields(b"", 0x04, {})
    with pytest.raises(ReceiptParseError):
        parse_receipt_fields(b"garbage", 0x04, {})


def test_unparseable_text_with_tlvs_keeps_the_text() -> None:
    receipt = parse_receipt_fields(
        b"garbage", 0x04, {Tag.receipted_message_id: "77", Tag.message_state: 2}
    )
    assert receipt is not None
    assert receipt.message_id == "77"
    assert receipt.stat == "DELIVRD"
    assert receipt.extra == {"unparsed": "garbage"}


def test_udh_before_receipt_text_is_skipped() -> None:
    udh = bytes([0x05, 0x00, 0x03, 0x2A, 0x01, 0x01])
    receipt = parse_receipt_fields(udh + b"id:5 stat:DELIVRD err:000", 0x44, {})
    assert receipt is not None
    assert receipt.message_id == "5"


# --- stat words ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("DELIVRD", "DELIVRD"),
        ("delivrd", "DELIVRD"),
        ("DELIVERED", "DELIVRD"),
        ("FAILED", "UNDELIV"),
        ("UNDELIVERABLE", "UNDELIV"),
        ("REJECTED", "REJECTD"),
        ("ACKED", "ACCEPTD"),
        ("BUFFRED", "ACCEPTD"),
        ("BUFFERD", "ACCEPTD"),
        ("EXPIRED", "EXPIRED"),
        ("SCHEDULED", "SCHEDULED"),
        ("SKIPPED", "SKIPPED"),
        ("SENT", None),
        ("", None),
    ],
)
def test_normalize_stat(word: str, expected: str | None) -> None:
    assert normalize_stat(word) == expected


# --- network_error_code -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"\x03\x00\x06", (3, 6)),
        (b"\x01\x00\x02", (1, 2)),
        (b"\x08\x01\x00", (8, 256)),
        (b"006", (3, 6)),
        (b"034", (3, 34)),
        ("001", (3, 1)),
        ((3, 27), (3, 27)),
        (b"\x03\x00", None),
        (b"", None),
        (None, None),
        (17, None),
    ],
)
def test_decode_network_error_code(value: object, expected: tuple[int, int] | None) -> None:
    assert decode_network_error_code(value) == expected


# --- formatting -------------------------------------------------------------------------------

SUBMIT = datetime(2025, 1, 15, 10, 30)
DONE = datetime(2025, 1, 15, 10, 31, 45)


def test_format_appendix_b_layout() -> None:
    text = format_receipt_text(
        message_id="0123456789",
        stat="DELIVRD",
        submit_date=SUBMIT,
        done_date=DONE,
        text="Hello there, this is longer than twenty",
    )
    assert text == (
        "id:0123456789 sub:001 dlvrd:001 submit date:2501151030 done date:2501151031"
        " stat:DELIVRD err:000 text:Hello there, this is"
    )


def test_format_defaults_dlvrd_and_pads() -> None:
    text = format_receipt_text(
        message_id="X1", stat="failed", err="6", submit_date=None, done_date=DONE, sub="1"
    )
    assert text == (
        "id:X1 sub:001 dlvrd:000 submit date:0000000000 done date:2501151031"
        " stat:UNDELIV err:006 text:"
    )


def test_format_rejects_unknown_stat() -> None:
    with pytest.raises(ValueError, match="stat"):
        format_receipt_text(message_id="1", stat="SENT", submit_date=None, done_date=None)


def test_receipt_tlvs() -> None:
    assert receipt_tlvs("abc", "UNDELIV", (3, 6)) == {
        Tag.receipted_message_id: "abc",
        Tag.message_state: 5,
        Tag.network_error_code: b"\x03\x00\x06",
    }
    assert receipt_tlvs("abc", "DELIVRD", None) == {
        Tag.receipted_message_id: "abc",
        Tag.message_state: 2,
    }
    with pytest.raises(ValueError):
        receipt_tlvs("abc", "UNDELIV", (3, 70000))


STAT_WORDS = [
    "DELIVRD",
    "EXPIRED",
    "DELETED",
    "UNDELIV",
    "ACCEPTD",
    "UNKNOWN",
    "REJECTD",
    "ENROUTE",
]
ID_CHARS = string.ascii_letters + string.digits + "-"
TEXT_CHARS = string.ascii_letters + string.digits + " :.,!?-"
minute_dates = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2068, 12, 31)).map(
    lambda d: d.replace(second=0, microsecond=0)
)


@settings(max_examples=200, deadline=None)
@given(
    message_id=st.text(ID_CHARS, min_size=1, max_size=40),
    stat=st.sampled_from(STAT_WORDS),
    err=st.from_regex(r"\A[0-9]{3}\Z"),
    submit_date=minute_dates,
    done_date=minute_dates,
    text=st.text(TEXT_CHARS, max_size=40),
)
def test_format_then_parse_round_trip(
    message_id: str, stat: str, err: str, submit_date: datetime, done_date: datetime, text: str
) -> None:
    formatted = format_receipt_text(
        message_id=message_id,
        stat=stat,
        err=err,
        submit_date=submit_date,
        done_date=done_date,
        text=text,
    )
    receipt = parse_receipt_text(formatted)
    assert receipt.message_id == message_id
    assert receipt.stat == stat
    assert receipt.err == err
    assert receipt.submit_date == submit_date
    assert receipt.done_date == done_date
    assert receipt.text == text[:20].strip()
    assert receipt.dlvrd == ("001" if stat == "DELIVRD" else "000")
    assert receipt.extra == {}


LABEL_SOUP = st.lists(
    st.sampled_from(
        [
            *("id:", "ID:", "stat:", "err:", "text:", "sub:", "dlvrd:", "submit date:", "x:"),
            *("DELIVRD", "FAILED", "000", "2501011200", "  ", " ", ":", "\x00", "é", "12ab"),
        ]
    ),
    max_size=20,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=200), LABEL_SOUP))
def test_any_text_parses_or_raises_receipt_parse_error(text: str) -> None:
    try:
        receipt = parse_receipt_text(text)
    except ReceiptParseError:
        return
    assert receipt.message_id is not None or receipt.raw_stat is not None
    assert receipt.stat is None or receipt.message_state is not None


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=120),
    esm_class=st.integers(0, 255),
    data_coding=st.sampled_from([0, 3, 8]),
    state=st.one_of(st.none(), st.integers(0, 255), st.binary(max_size=2)),
    nec=st.one_of(st.none(), st.binary(max_size=4)),
)
def test_any_receipt_fields_parse_or_raise_receipt_parse_error(
    data: bytes, esm_class: int, data_coding: int, state: int | bytes | None, nec: bytes | None
) -> None:
    tlvs: dict[int, int | str | bytes] = {}
    if state is not None:
        tlvs[Tag.message_state] = state
    if nec is not None:
        tlvs[Tag.network_error_code] = nec
    try:
        receipt = parse_receipt_fields(data, esm_class, tlvs, data_coding=data_coding)
    except ReceiptParseError:
        return
    assert (receipt is None) == (not is_receipt(esm_class))


def _general(data: bytes, esm_class: int, tlvs: Mapping[int, object]) -> Receipt | None:
    """What the general parser makes of a receipt: a NUL (which the parser drops)
    keeps the text off the fast path for the standard layout."""
    return parse_receipt_fields(data + b"\x00", esm_class, tlvs)


# The fast path reads default-alphabet texts; the others (UCS-2, TLV-only) are not its.
TEXT_CASES = [case for case in CORPUS if case.data_coding == 0 and case.short_message]


@pytest.mark.parametrize("case", TEXT_CASES, ids=[case.name for case in TEXT_CASES])
def test_corpus_fast_path_agrees_with_the_general_parser(case: Case) -> None:
    fast = parse_receipt_fields(case.short_message, case.esm_class, case.tlvs)
    assert fast == _general(case.short_message, case.esm_class, case.tlvs)


TOKEN = st.text(string.ascii_letters + string.digits + "-_:", min_size=1, max_size=14)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(TOKEN, min_size=7, max_size=7),
    text=st.one_of(st.none(), st.text(TEXT_CHARS + ": ", max_size=30)),
    esm_class=st.sampled_from([0x04, 0x08, 0x24]),
    state=st.one_of(st.none(), st.integers(0, 9)),
    tlv_id=st.one_of(st.none(), st.sampled_from(["", "0", "3F2A9C11"])),
)
def test_standard_layout_fast_path_agrees_with_the_general_parser(
    values: list[str], text: str | None, esm_class: int, state: int | None, tlv_id: str | None
) -> None:
    labels = ("id", "sub", "dlvrd", "submit date", "done date", "stat", "err")
    body = " ".join(f"{label}:{value}" for label, value in zip(labels, values, strict=True))
    if text is not None:
        body += f" text:{text}"
    tlvs: dict[int, int | str | bytes] = {}
    if state is not None:
        tlvs[Tag.message_state] = state
    if tlv_id is not None:
        tlvs[Tag.receipted_message_id] = tlv_id
    data = body.encode("latin-1")
    try:
        fast = parse_receipt_fields(data, esm_class, tlvs)
    except ReceiptParseError:
        with pytest.raises(ReceiptParseError):
            _general(data, esm_class, tlvs)
        return
    assert fast == _general(data, esm_class, tlvs)


def test_build_receipt_pdu_round_trips_through_the_codec() -> None:
    pdu = build_receipt_pdu(
        sequence_number=7,
        source_addr="447700900123",
        source_addr_ton=1,
        source_addr_npi=1,
        destination_addr="Shop",
        dest_addr_ton=5,
        message_id="B0B",
        stat="UNDELIV",
        err="006",
        submit_date=SUBMIT,
        done_date=DONE,
        text="hello",
        network_error_code=(3, 6),
    )
    assert pdu.esm_class == 0x04
    decoded = decode(encode(pdu))
    assert isinstance(decoded, DeliverSm)
    assert (decoded.sequence_number, decoded.source_addr, decoded.destination_addr) == (
        7,
        "447700900123",
        "Shop",
    )
    assert (decoded.source_addr_ton, decoded.source_addr_npi, decoded.dest_addr_ton) == (1, 1, 5)
    receipt = parse_receipt(decoded)
    assert receipt is not None
    assert (receipt.message_id, receipt.text_id, receipt.tlv_id) == ("B0B", "B0B", "B0B")
    assert (receipt.stat, receipt.err, receipt.message_state) == ("UNDELIV", "006", 5)
    assert receipt.network_error_code == (3, 6)
    assert receipt.text == "hello"
    assert receipt.done_date == DONE.replace(second=0)


def test_build_intermediate_receipt_pdu() -> None:
    pdu = build_receipt_pdu(
        sequence_number=8,
        source_addr="447700900123",
        destination_addr="Shop",
        message_id="42",
        stat="ENROUTE",
        submit_date=SUBMIT,
        done_date=None,
        intermediate=True,
    )
    assert pdu.esm_class == 0x20
    decoded = decode(encode(pdu))
    assert isinstance(decoded, DeliverSm)
    receipt = parse_receipt(decoded)
    assert receipt is not None and receipt.intermediate
    assert receipt.tlv_id == "42" and receipt.message_state == 1


class _SequenceSource:
    """The one thing smpplib asks of a client when it parses a PDU."""

    def next_sequence(self) -> int:
        return 1


def test_built_receipt_is_read_by_smpplib() -> None:
    pdu = build_receipt_pdu(
        sequence_number=9,
        source_addr="447700900123",
        destination_addr="Shop",
        message_id="0A1B",
        stat="DELIVRD",
        submit_date=SUBMIT,
        done_date=DONE,
        text="Grüße",
    )
    theirs: Any = smpplib.smpp.parse_pdu(encode(pdu), client=_SequenceSource())
    assert theirs.command == "deliver_sm"
    assert theirs.esm_class == 0x04
    assert theirs.receipted_message_id in (b"0A1B", "0A1B")
    assert theirs.message_state == 2
    assert theirs.short_message.startswith(b"id:0A1B sub:001 dlvrd:001 submit date:2501151030")
    assert theirs.short_message.endswith(b"stat:DELIVRD err:000 text:Gr??e")
