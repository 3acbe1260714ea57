"""Splitting long messages into parts, reading UDH/SAR, and joining parts back."""

from __future__ import annotations

import pytest
import smpplib.consts
import smpplib.gsm
from hypothesis import given, settings
from hypothesis import strategies as st
from smppcodecs.concat import (
    ConcatInfo,
    PartialMessage,
    Reassembler,
    Segment,
    concat_info,
    parse_udh,
    split_bytes,
    split_text,
)
from smppcodecs.text import GSM_BASIC, GSM_EXTENSION, decode_text, is_gsm

SAR_REF, SAR_TOTAL, SAR_SEQ = 0x020C, 0x020E, 0x020F
MESSAGE_PAYLOAD = 0x0424
UDHI = 0x40

GSM_CHARS = [ch for i, ch in enumerate(GSM_BASIC) if i != 0x1B] + list(GSM_EXTENSION.values())
# Weighted towards the characters that make boundaries interesting.
gsm_text = st.text(
    alphabet=st.one_of(st.sampled_from(GSM_CHARS), st.sampled_from(list(GSM_EXTENSION.values()))),
    max_size=700,
)
latin1_text = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=600)
ucs2_text = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=["Cs"]),
        st.characters(min_codepoint=0x1F300, max_codepoint=0x1F6FF),
    ),
    max_size=300,
)


def payload_of(seg: Segment) -> bytes:
    info = concat_info(seg.short_message, seg.esm_class_bits, seg.tlvs)
    if seg.total == 1:
        assert info is None
        return seg.short_message
    assert info is not None
    return info.payload


def reassemble(segments: list[Segment], order: list[int] | None = None) -> bytes:
    """Feed the parts through concat_info and a Reassembler, in the given order."""
    r = Reassembler()
    result: bytes | None = None
    for n, i in enumerate(order if order is not None else range(len(segments))):
        seg = segments[i]
        info = concat_info(seg.short_message, seg.esm_class_bits, seg.tlvs)
        if info is None:
            assert len(segments) == 1
            return seg.short_message
        assert (info.seq, info.total) == (seg.seq, seg.total)
        out = r.add("sender", info.ref, info.seq, info.total, info.payload, float(n))
        if n < len(segments) - 1:
            assert out is None
        else:
            result = out
    assert result is not None
    assert len(r) == 0 and r.pending_bytes == 0
    return result


# ---------------------------------------------------------------- splitting


def test_single_message_has_no_header() -> None:
    [seg] = split_text("a" * 160, reference=9)
    assert seg == Segment(b"a" * 160, 0, {}, 0x00, 1, 1)
    [seg] = split_text("ж" * 70, method="sar", reference=9)
    assert seg.data_coding == 0x08
    assert len(seg.short_message) == 140
    assert seg.tlvs == {} and seg.esm_class_bits == 0
    [seg] = split_text("", reference=0)
    assert seg.short_message == b""


def test_udh8_bytes() -> None:
    parts = split_text("a" * 307, reference=0xAB)
    assert [p.short_message[:6] for p in parts] == [
        bytes.fromhex("050003AB0301"),
        bytes.fromhex("050003AB0302"),
        bytes.fromhex("050003AB0303"),
    ]
    assert [len(p.short_message) - 6 for p in parts] == [153, 153, 1]
    assert all(p.esm_class_bits == UDHI and p.tlvs == {} for p in parts)
    assert [(p.seq, p.total) for p in parts] == [(1, 3), (2, 3), (3, 3)]


def test_udh16_bytes() -> None:
    parts = split_text("a" * 305, method="udh16", reference=0x1234)
    assert [p.short_message[:7] for p in parts] == [
        bytes.fromhex("06080412340301"),
        bytes.fromhex("06080412340302"),
        bytes.fromhex("06080412340303"),
    ]
    assert [len(p.short_message) - 7 for p in parts] == [152, 152, 1]


def test_sar_tlvs() -> None:
    parts = split_text("a" * 307, method="sar", reference=0x00FE)
    assert [p.tlvs for p in parts] == [
        {SAR_REF: 0xFE, SAR_TOTAL: 3, SAR_SEQ: 1},
        {SAR_REF: 0xFE, SAR_TOTAL: 3, SAR_SEQ: 2},
        {SAR_REF: 0xFE, SAR_TOTAL: 3, SAR_SEQ: 3},
    ]
    assert [len(p.short_message) for p in parts] == [153, 153, 1]
    assert all(p.esm_class_bits == 0 for p in parts)
    # A reference over 8 bits may become a 16-bit UDH over the air: parts leave room for it.
    wide = split_text("a" * 305, method="sar", reference=0x1234)
    assert [len(p.short_message) for p in wide] == [152, 152, 1]


@pytest.mark.parametrize(
    ("text", "dc", "method", "sizes"),
    [
        ("a" * 306, 0x00, "udh8", [153, 153]),
        ("a" * 304, 0x00, "udh16", [152, 152]),
        ("é" * 268, 0x03, "udh8", [134, 134]),
        ("é" * 269, 0x03, "udh8", [134, 134, 1]),
        ("é" * 266, 0x03, "udh16", [133, 133]),
        ("ж" * 134, 0x08, "udh8", [134, 134]),
        ("ж" * 135, 0x08, "udh8", [134, 134, 2]),
        ("ж" * 132, 0x08, "udh16", [132, 132]),
        ("ж" * 133, 0x08, "udh16", [132, 132, 2]),
        ("ж" * 134, 0x08, "sar", [134, 134]),
    ],
)
def test_part_sizes_at_boundaries(text: str, dc: int, method: str, sizes: list[int]) -> None:
    parts = split_text(text, data_coding=dc, method=method, reference=1)
    assert [len(payload_of(p)) for p in parts] == sizes
    assert decode_text(reassemble(parts), dc) == text


def test_escape_pair_not_split() -> None:
    text = "a" * 152 + "€" + "b" * 10
    parts = split_text(text, reference=3)
    first, second = payload_of(parts[0]), payload_of(parts[1])
    assert first == b"a" * 152  # 153 octets would end with a lone ESC
    assert second == b"\x1be" + b"b" * 10
    assert decode_text(reassemble(parts), 0x00) == text


def test_surrogate_pair_not_split() -> None:
    text = "ж" * 66 + "😀" + "ж" * 10
    parts = split_text(text, reference=3)
    assert parts[0].data_coding == 0x08
    first, second = payload_of(parts[0]), payload_of(parts[1])
    assert len(first) == 132
    assert second[:4] == "😀".encode("utf-16-be")
    assert decode_text(first, 0x08) == "ж" * 66  # every part decodes on its own
    assert decode_text(reassemble(parts), 0x08) == text


def test_part_limit() -> None:
    assert len(split_text("a" * 153 * 255, reference=1)) == 255
    with pytest.raises(ValueError, match="255"):
        split_text("a" * (153 * 255 + 1), reference=1)
    with pytest.raises(ValueError):
        split_bytes(b"x" * (134 * 255 + 1), reference=1)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        split_text("a", reference=256)
    with pytest.raises(ValueError):
        split_text("a", method="udh16", reference=0x10000)
    with pytest.raises(ValueError):
        split_text("a", method="sar", reference=-1)
    with pytest.raises(ValueError):
        split_text("a", method="udh", reference=1)
    with pytest.raises(ValueError):
        split_text("ç", data_coding=0x00, reference=1)
    with pytest.raises(ValueError):
        split_text("a", data_coding=0x04, reference=1)


def test_split_bytes_binary() -> None:
    payload = bytes(range(256)) * 2
    parts = split_bytes(payload, reference=5)
    assert [len(payload_of(p)) for p in parts] == [134, 134, 134, 110]
    assert all(p.data_coding == 0x04 for p in parts)
    assert reassemble(parts) == payload
    [single] = split_bytes(b"\x00" * 140, data_coding=0xF6, reference=5)
    assert single.short_message == b"\x00" * 140 and single.data_coding == 0xF6


def test_split_bytes_keeps_gsm_pairs() -> None:
    payload = b"a" * 152 + b"\x1be" + b"b" * 10
    parts = split_bytes(payload, data_coding=0x00, reference=5)
    assert payload_of(parts[0]) == b"a" * 152


@pytest.mark.parametrize("method", ["udh8", "udh16", "sar"])
@settings(max_examples=60, deadline=None)
@given(text=gsm_text, reference=st.integers(0, 255), data=st.data())
def test_round_trip_gsm(method: str, text: str, reference: int, data: st.DataObject) -> None:
    parts = split_text(text, data_coding=0x00, method=method, reference=reference)
    check_parts(parts, method)
    order = data.draw(st.permutations(range(len(parts))))
    assert decode_text(reassemble(parts, order), 0x00) == text


@pytest.mark.parametrize("method", ["udh8", "udh16", "sar"])
@settings(max_examples=60, deadline=None)
@given(text=latin1_text, reference=st.integers(0, 255), data=st.data())
def test_round_trip_latin1(method: str, text: str, reference: int, data: st.DataObject) -> None:
    parts = split_text(text, data_coding=0x03, method=method, reference=reference)
    check_parts(parts, method)
    order = data.draw(st.permutations(range(len(parts))))
    assert decode_text(reassemble(parts, order), 0x03) == text


@pytest.mark.parametrize("method", ["udh8", "udh16", "sar"])
@settings(max_examples=60, deadline=None)
@given(text=ucs2_text, reference=st.integers(0, 0xFFFF), data=st.data())
def test_round_trip_ucs2(method: str, text: str, reference: int, data: st.DataObject) -> None:
    if method == "udh8":
        reference &= 0xFF
    parts = split_text(text, data_coding=0x08, method=method, reference=reference)
    check_parts(parts, method)
    order = data.draw(st.permutations(range(len(parts))))
    assert decode_text(reassemble(parts, order), 0x08) == text
    for p in parts:  # no part ends in half a surrogate pair
        assert "\ufffd" not in decode_text(payload_of(p), 0x08) or "\ufffd" in text


def check_parts(parts: list[Segment], method: str) -> None:
    assert 1 <= len(parts) <= 255
    if len(parts) == 1:
        assert parts[0].esm_class_bits == 0 and parts[0].tlvs == {}
        return
    for p in parts:
        assert len(p.short_message) <= 254
        if method == "sar":
            assert p.esm_class_bits == 0 and set(p.tlvs) == {SAR_REF, SAR_TOTAL, SAR_SEQ}
        else:
            assert p.esm_class_bits == UDHI and p.tlvs == {}
            assert p.short_message[0] == (5 if method == "udh8" else 6)


# ---------------------------------------------------------------- smpplib as a peer


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from([c for c in GSM_CHARS if c not in "§\x0c"]), max_size=600))
def test_smpplib_gsm_parts_reassemble(text: str) -> None:
    parts, encoding, esm_class = smpplib.gsm.make_parts(text)
    assert encoding == smpplib.consts.SMPP_ENCODING_DEFAULT
    if len(parts) == 1:
        assert decode_text(parts[0], 0x00) == text
        return
    assert esm_class & UDHI
    r = Reassembler()
    out: bytes | None = None
    for part in reversed(parts):
        udh, user_data = parse_udh(part)
        assert udh is not None and udh.ref is not None and udh.seq and udh.total
        out = r.add(("peer", 1), udh.ref, udh.seq, udh.total, user_data, 0.0)
    assert out is not None
    assert decode_text(out, 0x00) == text


@settings(max_examples=60, deadline=None)
@given(
    st.text(
        alphabet=st.characters(min_codepoint=0x100, max_codepoint=0xD7FF).filter(
            lambda c: not is_gsm(c)
        ),
        min_size=1,
        max_size=300,
    )
)
def test_smpplib_ucs2_parts_match_ours(text: str) -> None:
    parts, encoding, _ = smpplib.gsm.make_parts(text)
    assert encoding == smpplib.consts.SMPP_ENCODING_ISO10646
    infos = [concat_info(p, UDHI, {}) for p in parts] if len(parts) > 1 else []
    ref = infos[0].ref if infos and infos[0] is not None else 0
    # Without surrogate pairs both libraries cut at the same places, so the bytes agree.
    ours = split_text(text, reference=ref)
    assert [s.short_message for s in ours] == parts
    if infos:
        joined = b"".join(i.payload for i in infos if i is not None)
        assert decode_text(joined, 0x08) == text


def test_smpplib_ascii_parts_match_ours() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 12
    parts, _, _ = smpplib.gsm.make_parts(text)
    udh, _ = parse_udh(parts[0])
    assert udh is not None and udh.ref is not None
    ours = split_text(text, reference=udh.ref)
    assert [s.short_message for s in ours] == parts


# ---------------------------------------------------------------- parse_udh / concat_info


def test_parse_udh_concat8() -> None:
    udh, rest = parse_udh(bytes.fromhex("0500037F0302") + b"hi")
    assert udh is not None
    assert (udh.ref, udh.total, udh.seq, udh.ref16) == (0x7F, 3, 2, False)
    assert udh.raw == bytes.fromhex("0500037F0302")
    assert [(e.iei, e.data) for e in udh.elements] == [(0x00, bytes.fromhex("7F0302"))]
    assert rest == b"hi"


def test_parse_udh_concat16_with_port_element() -> None:
    sm = bytes.fromhex("0C" + "0504" + "0B841234" + "0804BEEF0201") + b"data"
    udh, rest = parse_udh(sm)
    assert udh is not None
    assert (udh.ref, udh.total, udh.seq, udh.ref16) == (0xBEEF, 2, 1, True)
    assert [e.iei for e in udh.elements] == [0x05, 0x08]
    assert udh.elements[0].data == bytes.fromhex("0B841234")
    assert rest == b"data"


def test_parse_udh_without_concat_or_with_invalid_concat() -> None:
    udh, rest = parse_udh(bytes.fromhex("00") + b"x")
    assert udh is not None and udh.elements == () and udh.ref is None and rest == b"x"
    for bad in ("050003010300", "050003010304", "050003010000"):  # seq 0, seq > total, total 0
        udh, _ = parse_udh(bytes.fromhex(bad))
        assert udh is not None and udh.ref is None and udh.total is None and udh.seq is None
        assert len(udh.elements) == 1
    assert parse_udh(b"") == (None, b"")


@pytest.mark.parametrize(
    "hexdata",
    [
        "05000301",  # UDH length past the data
        "0300030102",  # element length past the header
        "0100",  # element header cut short
        "0400020102",  # concatenation element of the wrong length
        "050804010203",  # 16-bit concatenation element of the wrong length
        "ff",
    ],
)
def test_parse_udh_malformed(hexdata: str) -> None:
    with pytest.raises(ValueError):
        parse_udh(bytes.fromhex(hexdata))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_parse_udh_never_raises_other_errors(data: bytes) -> None:
    try:
        udh, rest = parse_udh(data)
    except ValueError:
        return
    if udh is not None:
        assert udh.raw + rest == data
        assert sum(2 + len(e.data) for e in udh.elements) == len(udh.raw) - 1


def test_concat_info_udh_needs_udhi() -> None:
    sm = bytes.fromhex("050003110201") + b"abc"
    info = concat_info(sm, UDHI, {})
    assert info == ConcatInfo(0x11, 2, 1, "udh8", b"abc", parse_udh(sm)[0])
    assert concat_info(sm, 0x00, {}) is None  # without UDHI those octets are text
    with pytest.raises(ValueError):
        concat_info(bytes.fromhex("050003"), UDHI, {})


def test_concat_info_sar() -> None:
    info = concat_info(b"abc", 0, {SAR_REF: 0x1234, SAR_TOTAL: 3, SAR_SEQ: 2})
    assert info is not None
    assert (info.ref, info.total, info.seq, info.method, info.payload) == (
        0x1234,
        3,
        2,
        "sar",
        b"abc",
    )
    raw = concat_info(b"abc", 0, {SAR_REF: b"\x12\x34", SAR_TOTAL: b"\x03", SAR_SEQ: b"\x02"})
    assert raw == info
    assert concat_info(b"abc", 0, {SAR_REF: 1, SAR_TOTAL: 3}) is None
    assert concat_info(b"abc", 0, {SAR_REF: 1, SAR_TOTAL: 3, SAR_SEQ: 4}) is None
    assert concat_info(b"abc", 0, {SAR_REF: 1, SAR_TOTAL: 0, SAR_SEQ: 0}) is None
    assert concat_info(b"abc", 0, {SAR_REF: "x", SAR_TOTAL: 3, SAR_SEQ: 1}) is None
    assert concat_info(b"abc", 0, {}) is None


def test_concat_info_message_payload_and_udh_without_concat() -> None:
    body = bytes.fromhex("050003220202") + b"tail"
    info = concat_info(b"", UDHI, {MESSAGE_PAYLOAD: body})
    assert info is not None and (info.ref, info.seq, info.payload) == (0x22, 2, b"tail")
    # UDHI with a port-only header: concatenation comes from SAR, payload skips the UDH.
    sm = bytes.fromhex("0605040B841234") + b"xyz"
    info = concat_info(sm, UDHI, {SAR_REF: 7, SAR_TOTAL: 2, SAR_SEQ: 2})
    assert info is not None and info.method == "sar" and info.payload == b"xyz"
    assert info.udh is not None and info.udh.elements[0].iei == 0x05


# ---------------------------------------------------------------- Reassembler


def test_reassembler_out_of_order_and_duplicates() -> None:
    r = Reassembler()
    assert r.add("k", 1, 3, 3, b"C", 0.0) is None
    assert r.add("k", 1, 1, 3, b"A", 1.0) is None
    assert r.add("k", 1, 1, 3, b"X", 2.0) is None  # duplicate: the first copy stays
    assert len(r) == 1 and r.pending_bytes == 2
    assert r.add("k", 1, 2, 3, b"B", 3.0) == b"ABC"
    assert len(r) == 0 and r.pending_bytes == 0
    # The reference can be used again once its message is complete.
    assert r.add("k", 1, 2, 2, b"2", 4.0) is None
    assert r.add("k", 1, 1, 2, b"1", 4.0) == b"12"


def test_reassembler_keeps_messages_apart() -> None:
    r = Reassembler()
    assert r.add("alice", 5, 1, 2, b"a1", 0.0) is None
    assert r.add("bob", 5, 1, 2, b"b1", 0.0) is None
    assert r.add("alice", 6, 2, 2, b"x2", 0.0) is None
    assert r.add("alice", 5, 1, 3, b"other-total", 0.0) is None
    assert r.add("bob", 5, 2, 2, b"b2", 0.0) == b"b1b2"
    assert r.add("alice", 5, 2, 2, b"a2", 0.0) == b"a1a2"
    assert len(r) == 2


def test_reassembler_single_part_and_validation() -> None:
    r = Reassembler()
    assert r.add("k", 9, 1, 1, b"whole", 0.0) == b"whole"
    assert len(r) == 0
    for seq, total in ((0, 2), (3, 2), (1, 0), (1, 256)):
        with pytest.raises(ValueError):
            r.add("k", 9, seq, total, b"", 0.0)


def test_reassembler_expire() -> None:
    r = Reassembler()
    r.add("k", 1, 1, 3, b"A", 10.0)
    r.add("k", 1, 3, 3, b"C", 50.0)
    r.add("k", 2, 1, 2, b"Z", 40.0)
    assert r.expire(now=60.0, max_age=60.0) == []
    expired = r.expire(now=71.0, max_age=60.0)
    assert expired == [PartialMessage("k", 1, 3, 10.0, {1: b"A", 3: b"C"})]
    assert expired[0].missing == (2,)
    assert len(r) == 1 and r.pending_bytes == 1
    # A late part starts a new message instead of completing the expired one.
    assert r.add("k", 1, 2, 3, b"B", 72.0) is None
    assert r.add("k", 2, 2, 2, b"Y", 72.0) == b"ZY"


def test_reassembler_bounded_groups() -> None:
    evicted: list[PartialMessage] = []
    r = Reassembler(max_groups=3, on_evict=evicted.append)
    for ref in range(10):
        assert r.add("k", ref, 1, 2, b"p", float(ref)) is None
        assert len(r) <= 3
    assert len(r) == 3
    assert r.evicted == 7
    assert [p.ref for p in evicted] == list(range(7))
    assert r.add("k", 0, 2, 2, b"q", 11.0) is None  # its first part was evicted
    assert r.add("k", 9, 2, 2, b"q", 11.0) == b"pq"


def test_reassembler_bounded_bytes() -> None:
    r = Reassembler(max_bytes=100)
    for ref in range(50):
        r.add("k", ref, 1, 2, b"x" * 30, 0.0)
        assert r.pending_bytes <= 100
    assert len(r) == 3 and r.evicted == 47
    big = Reassembler(max_bytes=10)
    assert big.add("k", 1, 1, 2, b"y" * 11, 0.0) is None
    assert len(big) == 0 and big.pending_bytes == 0 and big.evicted == 1


def test_reassembler_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        Reassembler(max_groups=0)
    with pytest.raises(ValueError):
        Reassembler(max_bytes=0)
