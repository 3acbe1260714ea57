"""Malformed input: each case gives the documented error class and status, and no
input at all makes the decoder or the framer raise anything but PduError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pdu_strategies import pdus
from smppcodecs.constants import CommandId, CommandStatus, Tag
from smppcodecs.exceptions import (
    FieldError,
    InvalidCommandId,
    InvalidCommandLength,
    PduError,
    TlvError,
)
from smppcodecs.framer import Framer
from smppcodecs.pdu import (
    PDU_CLASSES,
    BindTransceiverResp,
    DeliverSm,
    Pdu,
    QuerySmResp,
    SubmitMultiResp,
    SubmitSm,
    SubmitSmResp,
    decode,
    decode_slow,
)

S = CommandStatus


def frame(command_id: int, body: bytes, *, status: int = 0, seq: int = 42) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, status, seq) + body


def submit_body(
    *,
    service_type: bytes = b"\0",
    source: bytes = b"Acme\0",
    dest: bytes = b"447911123456\0",
    sched: bytes = b"\0",
    validity: bytes = b"\0",
    sm: bytes = b"\x02hi",
) -> bytes:
    return (
        service_type
        + b"\x05\x00"
        + source
        + b"\x01\x01"
        + dest
        + b"\0\0\0"
        + sched
        + validity
        + b"\x01\0\0\0"
        + sm
    )


def expect(data: bytes, error: type[PduError], status: int, field: str | None = None) -> PduError:
    with pytest.raises(error) as info:
        decode(data)
    exc = info.value
    assert exc.command_status == status, exc
    if field is not None:
        assert exc.field == field
    # The generic decoder reports the very same thing.
    with pytest.raises(error) as slow_info:
        decode_slow(data)
    assert slow_info.value.command_status == status
    assert slow_info.value.field == exc.field
    return exc


# ------------------------------------------------------------------ header problems


def test_frame_shorter_than_a_header() -> None:
    with pytest.raises(InvalidCommandLength) as info:
        decode(bytes.fromhex("00000010 00000004 0000"))
    assert info.value.in_sync is False
    assert info.value.command_status == S.ESME_RINVCMDLEN
    assert info.value.command_id == 4


def test_command_length_that_lies_about_the_frame() -> None:
    data = bytearray(frame(CommandId.SUBMIT_SM, submit_body()))
    data[3] += 1
    with pytest.raises(InvalidCommandLength) as info:
        decode(bytes(data))
    assert info.value.in_sync is False
    assert (info.value.command_id, info.value.sequence_number) == (4, 42)


@pytest.mark.parametrize("cid", [0x00000111, 0x12345678, 0x80000102, 0x0000000A, 0x8000000B])
def test_unknown_command_id(cid: int) -> None:
    exc = expect_unknown(frame(cid, b""))
    assert exc.command_id == cid
    assert exc.sequence_number == 42
    assert exc.in_sync is True


def expect_unknown(data: bytes) -> PduError:
    with pytest.raises(InvalidCommandId) as info:
        decode(data)
    assert info.value.command_status == S.ESME_RINVCMDID
    return info.value


# -------------------------------------------------------------- mandatory fields


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        (b"", "service_type", S.ESME_RINVSERTYP),
        (submit_body(service_type=b"CMTXYZ\0"), "service_type", S.ESME_RINVSERTYP),
        (submit_body(source=b"x" * 21 + b"\0"), "source_addr", S.ESME_RINVSRCADR),
        (submit_body(dest=b"9" * 21 + b"\0"), "destination_addr", S.ESME_RINVDSTADR),
        (submit_body(sched=b"2501151030\0"), "schedule_delivery_time", S.ESME_RINVSCHED),
        (submit_body(validity=b"000001000000000R0\0"), "validity_period", S.ESME_RINVEXPIRY),
        (submit_body(sm=b"\x09hi"), "short_message", S.ESME_RINVMSGLEN),
        (submit_body(sm=b"\xff" + b"x" * 255), "sm_length", S.ESME_RINVMSGLEN),
        (submit_body(sm=b""), "sm_length", S.ESME_RINVMSGLEN),
        (submit_body()[:23], "esm_class", S.ESME_RINVCMDLEN),
        (b"\0\x05\x00Acme-no-terminator", "source_addr", S.ESME_RINVSRCADR),
    ],
)
def test_submit_sm_field_errors(body: bytes, field: str, status: int) -> None:
    exc = expect(frame(CommandId.SUBMIT_SM, body), FieldError, status, field)
    assert exc.in_sync is True
    assert (exc.command_id, exc.sequence_number) == (CommandId.SUBMIT_SM, 42)


def test_submit_sm_that_parses() -> None:
    pdu = decode(frame(CommandId.SUBMIT_SM, submit_body()))
    assert isinstance(pdu, SubmitSm)
    assert (pdu.source_addr, pdu.destination_addr, pdu.short_message) == (
        "Acme",
        "447911123456",
        b"hi",
    )


@pytest.mark.parametrize(
    ("cid", "body", "field", "status"),
    [
        (
            CommandId.BIND_TRANSCEIVER,
            b"x" * 16 + b"\0pw\0\0\x34\0\0\0",
            "system_id",
            S.ESME_RINVSYSID,
        ),
        (
            CommandId.BIND_TRANSMITTER,
            b"sys\0" + b"p" * 9 + b"\0\0\x34\0\0\0",
            "password",
            S.ESME_RINVPASWD,
        ),
        (
            CommandId.BIND_RECEIVER,
            b"sys\0pw\0" + b"t" * 13 + b"\0\x34\0\0\0",
            "system_type",
            S.ESME_RINVSYSTYP,
        ),
        (
            CommandId.BIND_RECEIVER,
            b"sys\0pw\0\0\x34\0\0" + b"r" * 41 + b"\0",
            "address_range",
            S.ESME_RINVCMDLEN,
        ),
        (CommandId.BIND_RECEIVER, b"sys\0pw\0\0\x34\0\0", "address_range", S.ESME_RINVCMDLEN),
        (CommandId.QUERY_SM, b"m" * 65 + b"\0\0\0\0", "message_id", S.ESME_RINVMSGID),
        (CommandId.CANCEL_SM, b"\0id", "message_id", S.ESME_RINVMSGID),
        (CommandId.OUTBIND, b"sys\0pw", "password", S.ESME_RINVPASWD),
        (
            CommandId.DATA_SM,
            b"\0\0\0" + b"s" * 65 + b"\0\0\0d\0\0\0\0",
            "source_addr",
            S.ESME_RINVSRCADR,
        ),
        (
            CommandId.ALERT_NOTIFICATION,
            b"\0\0src\0\0\0" + b"e" * 65 + b"\0",
            "esme_addr",
            S.ESME_RINVCMDLEN,
        ),
        (CommandId.REPLACE_SM, b"id\0\0\0src\0\0\0\0\0\x05abc", "short_message", S.ESME_RINVMSGLEN),
        (CommandId.SUBMIT_MULTI, b"\0\0\0src\0\xff", "number_of_dests", S.ESME_RINVNUMDESTS),
        (CommandId.SUBMIT_MULTI, b"\0\0\0src\0\x01\x03", "dest_flag", S.ESME_RINVDESTFLAG),
        (
            CommandId.SUBMIT_MULTI,
            b"\0\0\0src\0\x01\x02" + b"d" * 21 + b"\0",
            "dl_name",
            S.ESME_RINVDLNAME,
        ),
        (
            CommandId.SUBMIT_MULTI,
            b"\0\0\0src\0\x01\x01\x01\x01" + b"9" * 21 + b"\0",
            "destination_addr",
            S.ESME_RINVDSTADR,
        ),
        (
            CommandId.SUBMIT_MULTI,
            b"\0\0\0src\0\x02\x01\x01\x01447\0",
            "dest_flag",
            S.ESME_RINVDESTFLAG,
        ),
    ],
)
def test_other_field_errors(cid: int, body: bytes, field: str, status: int) -> None:
    expect(frame(cid, body), FieldError, status, field)


# ------------------------------------------------------- tolerated response forms


@pytest.mark.parametrize(
    ("body", "message_id"),
    [(b"", ""), (b"\0", ""), (b"abc123\0", "abc123"), (b"abc123", "abc123")],
    ids=["bare-header", "single-nul", "normal", "nul-less-last-string"],
)
def test_submit_sm_resp_forms(body: bytes, message_id: str) -> None:
    for status in (0, S.ESME_RTHROTTLED):
        pdu = decode(frame(CommandId.SUBMIT_SM_RESP, body, status=status))
        assert pdu == SubmitSmResp(sequence_number=42, command_status=status, message_id=message_id)
        assert decode_slow(frame(CommandId.SUBMIT_SM_RESP, body, status=status)) == pdu


def test_other_tolerated_responses() -> None:
    assert decode(frame(CommandId.BIND_TRANSCEIVER_RESP, b"SMSC")) == BindTransceiverResp(
        sequence_number=42, system_id="SMSC"
    )
    assert decode(frame(CommandId.QUERY_SM_RESP, b"id\0")) == QuerySmResp(
        sequence_number=42, message_id="id"
    )
    assert decode(frame(CommandId.QUERY_SM_RESP, b"id\0\0\x02")) == QuerySmResp(
        sequence_number=42, message_id="id", message_state=2
    )
    assert decode(frame(CommandId.SUBMIT_MULTI_RESP, b"id\0")) == SubmitMultiResp(
        sequence_number=42, message_id="id"
    )


def test_response_strictness_that_remains() -> None:
    # Tolerance stops at the field's maximum length and inside lists.
    expect(frame(CommandId.SUBMIT_SM_RESP, b"m" * 65), FieldError, S.ESME_RINVMSGID, "message_id")
    expect(
        frame(CommandId.QUERY_SM_RESP, b"id\0" + b"1234\0"),
        FieldError,
        S.ESME_RINVCMDLEN,
        "final_date",
    )
    expect(
        frame(CommandId.SUBMIT_MULTI_RESP, b"id\0\x02\x01\x01447\0\0\0\0\x0b"),
        FieldError,
        S.ESME_RINVCMDLEN,
        "dest_addr_ton",
    )


# ---------------------------------------------------------------------------- TLVs


def deliver(tlv_bytes: bytes) -> bytes:
    return frame(CommandId.DELIVER_SM, submit_body(sm=b"\0") + tlv_bytes)


@pytest.mark.parametrize(
    ("tlv_bytes", "status", "field"),
    [
        (bytes.fromhex("0427 0005 02"), S.ESME_RINVOPTPARSTREAM, "message_state"),
        (bytes.fromhex("0427"), S.ESME_RINVOPTPARSTREAM, None),
        (bytes.fromhex("0427 0001 02 00"), S.ESME_RINVOPTPARSTREAM, None),
        (bytes.fromhex("0427 0001 02 0427 0001 03"), S.ESME_RINVOPTPARSTREAM, "message_state"),
        (bytes.fromhex("1401 0009 00"), S.ESME_RINVOPTPARSTREAM, "0x1401"),
        (bytes.fromhex("0427 0002 0002"), S.ESME_RINVPARLEN, "message_state"),
        (bytes.fromhex("0427 0000"), S.ESME_RINVPARLEN, "message_state"),
        (bytes.fromhex("0423 0002 0300"), S.ESME_RINVPARLEN, "network_error_code"),
        (bytes.fromhex("020c 0001 01"), S.ESME_RINVPARLEN, "sar_msg_ref_num"),
        (bytes.fromhex("0017 0002 0001"), S.ESME_RINVPARLEN, "qos_time_to_live"),
        (bytes.fromhex("0381 0003 010203"), S.ESME_RINVPARLEN, "callback_num"),
        (bytes.fromhex("130c 0001 01"), S.ESME_RINVPARLEN, "alert_on_message_delivery"),
        (b"\x00\x1e\x00\x42" + b"m" * 65 + b"\0", S.ESME_RINVPARLEN, "receipted_message_id"),
        (b"\x00\x1e\x00\x41" + b"m" * 65, S.ESME_RINVPARLEN, "receipted_message_id"),
        (b"\x00\x1e\x00\x05" + b"ab\0cd", S.ESME_RINVOPTPARAMVAL, "receipted_message_id"),
    ],
)
def test_tlv_errors(tlv_bytes: bytes, status: int, field: str | None) -> None:
    exc = expect(deliver(tlv_bytes), TlvError, status, field)
    assert exc.in_sync is True
    assert (exc.command_id, exc.sequence_number) == (CommandId.DELIVER_SM, 42)


def test_tolerated_c_string_tlvs() -> None:
    no_nul = decode(deliver(b"\x00\x1e\x00\x04" + b"ab12"))
    padded = decode(deliver(b"\x00\x1e\x00\x06" + b"ab12\0\0"))
    assert isinstance(no_nul, DeliverSm) and isinstance(padded, DeliverSm)
    assert no_nul.tlvs == padded.tlvs == {Tag.receipted_message_id: "ab12"}
    # Both re-encode in the standard form.
    assert no_nul.encode().endswith(b"\x00\x1e\x00\x05ab12\0")
    empty = decode(deliver(b"\x00\x1e\x00\x00"))
    assert empty.tlvs == {Tag.receipted_message_id: ""}


def test_tlvs_allowed_on_bodyless_pdus() -> None:
    pdu = decode(frame(CommandId.ENQUIRE_LINK, bytes.fromhex("1401 0001 ff")))
    assert pdu.tlvs == {0x1401: b"\xff"}
    expect(frame(CommandId.ENQUIRE_LINK, b"\0"), TlvError, S.ESME_RINVOPTPARSTREAM)


# ------------------------------------------------------------------ fuzzing


def assert_only_pdu_errors(data: bytes) -> Pdu | None:
    try:
        fast: Pdu | None = decode(data)
    except PduError as exc:
        fast_error: PduError | None = exc
        fast = None
    else:
        fast_error = None
    try:
        slow: Pdu | None = decode_slow(data)
    except PduError as exc:
        assert fast_error is not None, (
            f"fast decoder accepted what the generic one refuses: {exc!r}"
        )
        assert type(exc) is type(fast_error)
        assert (exc.command_status, exc.field) == (fast_error.command_status, fast_error.field)
        return None
    assert fast_error is None, f"fast decoder refused what the generic one accepts: {fast_error!r}"
    assert fast == slow
    assert fast is not None
    # Whatever decodes must encode again (normalised), and decode to the same PDU.
    again = decode(fast.encode())
    assert again == fast
    return fast


FUZZ = settings(max_examples=400, deadline=None)
KNOWN_IDS = sorted(PDU_CLASSES)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_pdu_errors(data: bytes) -> None:
    assert_only_pdu_errors(data)


@FUZZ
@given(
    cid=st.sampled_from(KNOWN_IDS), status=st.sampled_from([0, 0x58]), body=st.binary(max_size=200)
)
def test_random_bodies_raise_only_pdu_errors(cid: int, status: int, body: bytes) -> None:
    assert_only_pdu_errors(frame(cid, body, status=status))


mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just(0)),
)


def mutate(data: bytes, ops: list[tuple[str, int, int]], fix_length: bool) -> bytes:
    buf = bytearray(data)
    for op, where, value in ops:
        if not buf:
            break
        i = where % len(buf)
        if op == "set":
            buf[i] = value
        elif op == "cut":
            del buf[i:]
        elif op == "insert":
            buf.insert(i, value)
        else:
            del buf[i]
    if fix_length and len(buf) >= 4:
        buf[:4] = len(buf).to_bytes(4, "big")
    return bytes(buf)


@settings(max_examples=600, deadline=None)
@given(
    pdu=pdus(),
    ops=st.lists(mutation, min_size=1, max_size=4),
    fix_length=st.booleans(),
)
def test_mutated_pdus_raise_only_pdu_errors(
    pdu: Pdu, ops: list[tuple[str, int, int]], fix_length: bool
) -> None:
    assert_only_pdu_errors(mutate(pdu.encode(), ops, fix_length))


@settings(max_examples=200, deadline=None)
@given(
    stream=st.lists(
        st.one_of(pdus().map(lambda p: p.encode()), st.binary(max_size=40)), max_size=6
    ),
    cuts=st.lists(st.integers(1, 64), max_size=20),
)
def test_framer_over_garbage_raises_only_pdu_errors(stream: list[bytes], cuts: list[int]) -> None:
    data = b"".join(stream)
    framer = Framer(max_command_length=4096)
    pos = 0
    chunks = []
    for c in cuts:
        chunks.append(data[pos : pos + c])
        pos += c
    chunks.append(data[pos:])
    try:
        for chunk in chunks:
            for f in framer.feed(chunk):
                assert 16 <= len(f) <= 4096
                assert_only_pdu_errors(f)
    except InvalidCommandLength as exc:
        assert exc.in_sync is False
        assert framer.pending == 0


# -------------------------------------------------------------- a bad command_length


def test_a_length_below_the_header_reports_no_header() -> None:
    """By its own length nothing after it belongs to the PDU: the octets that would be
    its command_id and sequence_number are not reported as such (the session's
    generic_nack then carries sequence_number 0)."""
    with pytest.raises(InvalidCommandLength) as info:
        Framer().feed(struct.pack(">IIII", 3, CommandId.SUBMIT_SM, 0, 42))
    assert info.value.in_sync is False
    assert info.value.command_status == S.ESME_RINVCMDLEN
    assert (info.value.command_id, info.value.sequence_number) == (None, None)


def test_a_length_above_the_maximum_reports_the_header() -> None:
    """The rest of the header is read as sent: the generic_nack echoes its
    sequence_number, so the peer can tell which request was refused."""
    with pytest.raises(InvalidCommandLength) as info:
        Framer(max_command_length=4096).feed(struct.pack(">IIII", 5000, CommandId.DATA_SM, 0, 42))
    assert info.value.in_sync is False
    assert (info.value.command_id, info.value.sequence_number) == (CommandId.DATA_SM, 42)
