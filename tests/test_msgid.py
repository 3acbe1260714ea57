"""Message id normalisation and matching between submit_sm_resp and receipts."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from smppcodecs.msgid import id_keys, ids_match, normalize_id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0000000012345678", "12345678"),
        (" 1a2b \x00", "1A2B"),
        ("abc-def", "ABC-DEF"),
        ("0", "0"),
        ("0000", "0"),
        ("", ""),
        ("   ", ""),
        ("007F", "7F"),
    ],
)
def test_normalize_id(raw: str, expected: str) -> None:
    assert normalize_id(raw) == expected


@pytest.mark.parametrize(
    ("mid", "fmt", "keys"),
    [
        ("10", "auto", ["n:10", "i:10", "i:16"]),
        ("10", "dec", ["i:10"]),
        ("10", "hex", ["i:16"]),
        ("10", "opaque", ["n:10"]),
        ("1a2b", "auto", ["n:1A2B", "i:6699"]),
        ("1A2B", "hex", ["i:6699"]),
        # A "decimal" id with hex letters can only be hex (Kannel reads it so too).
        ("1A2B", "dec", ["i:6699"]),
        ("0000000012345678", "dec", ["i:12345678"]),
        ("msg-42", "auto", ["n:MSG-42"]),
        ("msg-42", "hex", ["n:MSG-42"]),
        ("000", "auto", ["n:0", "i:0"]),
        ("000", "hex", ["i:0"]),
        ("id-7", "dec", ["n:ID-7"]),
        ("", "auto", []),
    ],
)
def test_id_keys(mid: str, fmt: str, keys: list[str]) -> None:
    assert id_keys(mid, fmt) == keys


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="format"):
        id_keys("1", "base64")


def test_hex_in_resp_decimal_in_receipt() -> None:
    # The carrier answers submit_sm_resp with hex and sends the receipt in decimal.
    assert ids_match("1A2B", "6699", "hex", "dec")
    assert ids_match("1a2b", "6699")
    assert ids_match("0B00000012345678", str(0x0B00000012345678), "hex", "dec")
    assert not ids_match("1A2B", "6698", "hex", "dec")


def test_decimal_in_resp_hex_in_receipt() -> None:
    assert ids_match("6699", "1a2b", "dec", "hex")
    assert ids_match("6699", "1A2B")
    assert not ids_match("6699", "1A2C", "dec", "hex")


def test_case_and_leading_zeros() -> None:
    assert ids_match("00ab12", "AB12", "opaque", "opaque")
    assert ids_match("0000000012345678", "12345678", "dec", "dec")
    assert ids_match("0000000012345678", "12345678", "opaque", "opaque")


def test_opaque_alphanumeric_ids() -> None:
    a = "b9a4bd2e-5c4b-4d8b-a1f7-5e0cdb3c0a7e"
    assert ids_match(a, a.upper())
    assert not ids_match(a, a[:-1] + "f")
    assert id_keys(a) == ["n:" + a.upper()]


def test_ambiguous_digits_are_settled_by_format() -> None:
    # "10" may be ten or sixteen: under "auto" it matches "16" (hex 10 = 16).
    assert ids_match("10", "16")
    assert ids_match("10", "10")
    # A carrier known to use decimal on both sides: no more confusion.
    assert not ids_match("10", "16", "dec", "dec")
    # A carrier with hex responses and decimal receipts: "10" is sixteen.
    assert ids_match("10", "16", "hex", "dec")
    assert not ids_match("10", "10", "hex", "dec")
    assert not ids_match("10", "16", "hex", "hex")


def test_store_and_lookup_by_keys() -> None:
    # How the proxy uses keys: store the response ids' keys, look up receipts in order.
    store: dict[str, str] = {}
    pairs = (("m1", "1A2B"), ("m2", "00FF"), ("m3", "ABC-1"), ("m4", "10"), ("m5", "A"))
    for message, resp_id in pairs:
        for key in id_keys(resp_id, "hex"):
            store.setdefault(key, message)

    def lookup(receipt_id: str, fmt: str) -> str | None:
        for key in id_keys(receipt_id, fmt):
            if key in store:
                return store[key]
        return None

    assert lookup("6699", "dec") == "m1"
    assert lookup("255", "dec") == "m2"
    assert lookup("ff", "hex") == "m2"
    assert lookup("abc-1", "dec") == "m3"
    assert lookup("256", "dec") is None
    # The same digits are different messages when the bases differ.
    assert lookup("16", "dec") == "m4"
    assert lookup("10", "dec") == "m5"


@settings(max_examples=200, deadline=None)
@given(number=st.integers(min_value=0, max_value=2**64), pad=st.integers(0, 6), lower=st.booleans())
def test_same_number_in_two_bases_matches(number: int, pad: int, lower: bool) -> None:
    hex_id = "0" * pad + format(number, "x" if lower else "X")
    dec_id = "0" * pad + str(number)
    assert ids_match(hex_id, dec_id, "hex", "dec")
    assert ids_match(dec_id, hex_id, "dec", "hex")
    assert ids_match(hex_id, hex_id.swapcase(), "hex", "hex")


@settings(max_examples=200, deadline=None)
@given(a=st.integers(min_value=0, max_value=2**64), b=st.integers(min_value=0, max_value=2**64))
def test_different_numbers_do_not_match_with_known_formats(a: int, b: int) -> None:
    assume(a != b)
    assert not ids_match(format(a, "X"), str(b), "hex", "dec")
    assert not ids_match(str(a), str(b), "dec", "dec")
