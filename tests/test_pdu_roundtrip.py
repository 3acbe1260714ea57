"""Round trips, construction, copy/response helpers and encode-side validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pdu_strategies import ALL_CLASSES, pdu_of, tlv_dicts
from smppcodecs.constants import CommandId, CommandStatus, Tag
from smppcodecs.pdu import (
    PDU_CLASSES,
    BindTransceiver,
    BindTransceiverResp,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    DistributionList,
    GenericNack,
    Outbind,
    Pdu,
    QuerySmResp,
    SmeAddress,
    SubmitMulti,
    SubmitMultiResp,
    SubmitSm,
    SubmitSmResp,
    UnsuccessSme,
    decode,
    decode_slow,
    encode,
    generic_nack,
)
from smppcodecs.tlv import TLV_SPECS, TlvValue, decode_tlvs, encode_tlvs

ROUND_TRIP = settings(max_examples=60, deadline=None)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@ROUND_TRIP
@given(data=st.data())
def test_round_trip_every_class(cls: type[Pdu], data: st.DataObject) -> None:
    pdu = data.draw(pdu_of(cls))
    wire = encode(pdu)
    assert int.from_bytes(wire[:4], "big") == len(wire)
    assert int.from_bytes(wire[4:8], "big") == cls.command_id
    back = decode(wire)
    assert type(back) is cls
    assert back == pdu
    assert list(back.tlvs) == list(pdu.tlvs)  # wire order kept
    assert encode(back) == wire
    assert pdu.encode() == wire
    # The generated fast decoder and the generic decoder agree.
    assert decode_slow(wire) == back


@settings(max_examples=200, deadline=None)
@given(tlvs=tlv_dicts(max_size=8))
def test_tlv_round_trip(tlvs: dict[int, TlvValue]) -> None:
    wire = encode_tlvs(tlvs)
    back = decode_tlvs(b"junk" + wire, 4, 4 + len(wire))
    assert back == tlvs
    assert list(back) == list(tlvs)
    assert encode_tlvs(back) == wire


def test_every_constants_tag_has_a_spec() -> None:
    assert set(TLV_SPECS) == {int(t) for t in Tag}
    assert TLV_SPECS[Tag.receipted_message_id].kind == "cstr"
    assert TLV_SPECS[Tag.receipted_message_id].max_length == 65
    assert TLV_SPECS[Tag.network_error_code].kind == "octets"
    assert (
        TLV_SPECS[Tag.network_error_code].min_length,
        TLV_SPECS[Tag.network_error_code].max_length,
    ) == (3, 3)
    assert TLV_SPECS[Tag.message_state].kind == "int1"
    assert TLV_SPECS[Tag.sar_msg_ref_num].kind == "int2"
    assert TLV_SPECS[Tag.qos_time_to_live].kind == "int4"
    assert TLV_SPECS[Tag.alert_on_message_delivery].kind == "empty"


def test_pdu_classes_cover_every_command_id() -> None:
    assert set(PDU_CLASSES) == {int(c) for c in CommandId}
    for cid, cls in PDU_CLASSES.items():
        assert cls.command_id == cid


def test_known_wire_image_of_submit_sm() -> None:
    pdu = SubmitSm(
        sequence_number=1,
        source_addr="Acme",
        destination_addr="4479",
        short_message=b"hi",
        registered_delivery=1,
    )
    body = (
        b"\0"  # service_type
        + b"\0\0Acme\0"
        + b"\0\x004479\0"
        + b"\0\0\0"  # esm_class, protocol_id, priority_flag
        + b"\0\0"  # schedule_delivery_time, validity_period
        + b"\x01\0\0\0"  # registered_delivery, replace_if_present, data_coding, sm_default
        + b"\x02hi"
    )
    header = (16 + len(body)).to_bytes(4, "big") + bytes.fromhex("00000004 00000000 00000001")
    assert pdu.encode() == header + body


def test_receipt_tlvs_decode_typed_and_unknown_tags_raw() -> None:
    pdu = DeliverSm(
        sequence_number=9,
        esm_class=0x04,
        short_message=b"id:42 stat:UNDELIV err:001",
        tlvs={
            Tag.receipted_message_id: "42",
            Tag.message_state: 5,
            Tag.network_error_code: b"\x03\x00\x01",
            0x1401: b"\x00\xffvendor",
        },
    )
    back = decode(pdu.encode())
    assert back.tlvs[Tag.receipted_message_id] == "42"
    assert back.tlvs[Tag.message_state] == 5
    assert back.tlvs[Tag.network_error_code] == b"\x03\x00\x01"
    assert back.tlvs[0x1401] == b"\x00\xffvendor"
    assert isinstance(back, DeliverSm)


def test_unknown_tlv_bytes_reencode_unchanged() -> None:
    raw = (
        bytes.fromhex("1401 0005 0001020304")
        + bytes.fromhex("3fff 0000")
        + bytes.fromhex("0427 0001 02")
    )
    tlvs = decode_tlvs(raw, 0, len(raw))
    assert tlvs == {0x1401: b"\x00\x01\x02\x03\x04", 0x3FFF: b"", Tag.message_state: 2}
    assert encode_tlvs(tlvs) == raw


def test_latin1_fields_are_lossless() -> None:
    every_octet = "".join(chr(c) for c in range(1, 256))
    pdu = DeliverSmResp(sequence_number=1, message_id=every_octet[:64])
    assert decode(pdu.encode()) == pdu
    wire = pdu.encode()
    assert wire[16:80] == bytes(range(1, 65))


def test_keyword_construction_and_defaults() -> None:
    pdu = SubmitSm(sequence_number=5, source_addr="Acme", short_message=b"x")
    assert pdu.command_status == 0
    assert pdu.tlvs == {}
    assert pdu.service_type == ""
    assert pdu.data_coding == 0
    other = SubmitSm(sequence_number=6)
    other.tlvs[Tag.source_port] = 1
    assert pdu.tlvs == {}  # no shared default dict
    assert BindTransceiver(sequence_number=1).interface_version == 0x34
    assert SubmitMulti(sequence_number=1).dest_addresses == []
    with pytest.raises(TypeError):
        SubmitSm(1, 0)  # type: ignore[call-arg]


def test_mutable_with_slots() -> None:
    pdu = SubmitSm(sequence_number=1)
    pdu.destination_addr = "123"
    assert pdu.destination_addr == "123"
    with pytest.raises(AttributeError):
        pdu.no_such_field = 1  # type: ignore[attr-defined]
    assert not hasattr(pdu, "__dict__")


def test_copy_changes_fields_and_detaches_containers() -> None:
    pdu = SubmitMulti(
        sequence_number=3,
        dest_addresses=[SmeAddress(1, 1, "447911"), DistributionList("friends")],
        tlvs={Tag.source_port: 80},
    )
    twin = pdu.copy(sequence_number=4, registered_delivery=1)
    assert isinstance(twin, SubmitMulti)
    assert (twin.sequence_number, twin.registered_delivery) == (4, 1)
    assert twin.dest_addresses == pdu.dest_addresses
    twin.tlvs[Tag.destination_port] = 81
    first = twin.dest_addresses[0]
    assert isinstance(first, SmeAddress)
    first.destination_addr = "changed"
    assert pdu.tlvs == {Tag.source_port: 80}
    assert pdu.dest_addresses[0] == SmeAddress(1, 1, "447911")
    assert pdu.copy() == pdu
    with pytest.raises(TypeError, match="no_such"):
        pdu.copy(no_such=1)


def test_response_matches_sequence_and_type() -> None:
    req = SubmitSm(sequence_number=77)
    ok = req.response(message_id="abc")
    assert isinstance(ok, SubmitSmResp)
    assert (ok.sequence_number, ok.command_status, ok.message_id) == (77, 0, "abc")
    err = req.response(command_status=CommandStatus.ESME_RTHROTTLED)
    assert err.command_status == 0x58 and err.sequence_number == 77
    for cid, cls in PDU_CLASSES.items():
        pdu = cls(sequence_number=12)
        resp_cls = PDU_CLASSES.get(cid | 0x80000000)
        if cid & 0x80000000 or resp_cls is None:
            with pytest.raises(TypeError):
                pdu.response()
        else:
            resp = pdu.response()
            assert type(resp) is resp_cls
            assert resp.sequence_number == 12


def test_generic_nack_helper() -> None:
    nack = generic_nack(44, CommandStatus.ESME_RINVCMDID)
    assert isinstance(nack, GenericNack)
    assert nack.encode() == bytes.fromhex("00000010 80000000 00000003 0000002c")


def test_repr_names_fields_status_and_tlvs() -> None:
    pdu = DeliverSm(
        sequence_number=3,
        source_addr="447911",
        tlvs={Tag.message_state: 2, 0x1401: b"\x01"},
    )
    text = repr(pdu)
    assert text.startswith("DeliverSm(sequence_number=3")
    assert "source_addr='447911'" in text
    assert "message_state: 2" in text and "0x1401: b'\\x01'" in text
    assert "ESME_RTHROTTLED" in repr(SubmitSmResp(sequence_number=1, command_status=0x58))


@pytest.mark.parametrize(
    "resp",
    [
        SubmitSmResp(sequence_number=9, command_status=0x58),
        DeliverSmResp(sequence_number=9, command_status=0x64),
        DataSmResp(sequence_number=9, command_status=0xFE),
        BindTransceiverResp(sequence_number=9, command_status=0x0E),
        SubmitMultiResp(sequence_number=9, command_status=0x45),
        QuerySmResp(sequence_number=9, command_status=0x67),
    ],
    ids=lambda p: type(p).__name__,
)
def test_error_response_without_values_is_a_bare_header(resp: Pdu) -> None:
    wire = resp.encode()
    assert len(wire) == 16
    assert decode(wire) == resp


def test_error_response_keeps_a_body_that_carries_something() -> None:
    resp = DataSmResp(
        sequence_number=9,
        command_status=CommandStatus.ESME_RDELIVERYFAILURE,
        tlvs={Tag.delivery_failure_reason: 3},
    )
    wire = resp.encode()
    assert wire[16:17] == b"\0"  # message_id, then the TLV
    assert decode(wire) == resp
    ok = SubmitSmResp(sequence_number=9)
    assert len(ok.encode()) == 17  # success: the (empty) message_id is sent


@pytest.mark.parametrize(
    ("pdu", "field"),
    [
        (SubmitSm(sequence_number=1, source_addr="x" * 21), "source_addr"),
        (SubmitSm(sequence_number=1, destination_addr="x" * 21), "destination_addr"),
        (SubmitSm(sequence_number=1, service_type="x" * 6), "service_type"),
        (SubmitSm(sequence_number=1, short_message=b"x" * 255), "short_message"),
        (SubmitSm(sequence_number=1, validity_period="0001"), "validity_period"),
        (SubmitSm(sequence_number=1, schedule_delivery_time="x" * 17), "schedule_delivery_time"),
        (SubmitSm(sequence_number=1, esm_class=256), "esm_class"),
        (SubmitSm(sequence_number=1, data_coding=-1), "data_coding"),
        (SubmitSm(sequence_number=1, source_addr="a\0b"), "source_addr"),
        (SubmitSm(sequence_number=1, source_addr="€uro"), "source_addr"),
        (SubmitSm(sequence_number=-1), "sequence_number"),
        (SubmitSm(sequence_number=2**32), "sequence_number"),
        (SubmitSmResp(sequence_number=1, command_status=2**32), "command_status"),
        (BindTransceiver(sequence_number=1, system_id="x" * 16), "system_id"),
        (BindTransceiver(sequence_number=1, password="x" * 9), "password"),
        (BindTransceiver(sequence_number=1, system_type="x" * 13), "system_type"),
        (BindTransceiver(sequence_number=1, address_range="x" * 41), "address_range"),
        (SubmitSmResp(sequence_number=1, message_id="x" * 65), "message_id"),
        (Outbind(sequence_number=1, password="x" * 9), "password"),
        (
            SubmitMulti(sequence_number=1, dest_addresses=[SmeAddress(1, 1, "x" * 21)]),
            "dest_addresses[0].destination_addr",
        ),
        (
            SubmitMulti(sequence_number=1, dest_addresses=[DistributionList("x" * 21)]),
            "dest_addresses[0].dl_name",
        ),
        (
            SubmitMulti(sequence_number=1, dest_addresses=[SmeAddress()] * 255),
            "dest_addresses",
        ),
        (
            SubmitMultiResp(
                sequence_number=1, unsuccess_smes=[UnsuccessSme(error_status_code=2**32)]
            ),
            "unsuccess_smes[0].error_status_code",
        ),
    ],
)
def test_encode_refuses_values_beyond_the_limits(pdu: Pdu, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        pdu.encode()


@pytest.mark.parametrize(
    ("pdu", "field"),
    [
        (SubmitSm(sequence_number=1, source_addr=b"Acme"), "source_addr"),  # type: ignore[arg-type]
        (SubmitSm(sequence_number=1, short_message="text"), "short_message"),  # type: ignore[arg-type]
        (SubmitSm(sequence_number=1, esm_class="4"), "esm_class"),  # type: ignore[arg-type]
        (SubmitSm(sequence_number=1, esm_class=1.5), "esm_class"),  # type: ignore[arg-type]
        (SubmitSmResp(sequence_number=1, message_id=None), "message_id"),  # type: ignore[arg-type]
        (SubmitMulti(sequence_number=1, dest_addresses=["447911"]), "dest_addresses[0]"),  # type: ignore[list-item]
    ],
)
def test_encode_refuses_wrong_types(pdu: Pdu, field: str) -> None:
    with pytest.raises(TypeError, match=field.replace("[", r"\[").replace("]", r"\]")):
        pdu.encode()


@pytest.mark.parametrize(
    ("tlvs", "error", "name"),
    [
        ({Tag.message_state: 256}, ValueError, "message_state"),
        ({Tag.message_state: "2"}, TypeError, "message_state"),
        ({Tag.network_error_code: b"\x03\x00"}, ValueError, "network_error_code"),
        ({Tag.receipted_message_id: "x" * 65}, ValueError, "receipted_message_id"),
        ({Tag.receipted_message_id: b"42"}, TypeError, "receipted_message_id"),
        ({Tag.receipted_message_id: "4\x002"}, ValueError, "receipted_message_id"),
        ({Tag.alert_on_message_delivery: b"\x01"}, ValueError, "alert_on_message_delivery"),
        ({Tag.callback_num: b"123"}, ValueError, "callback_num"),
        ({Tag.message_payload: b"x" * 65536}, ValueError, "message_payload"),
        ({0x1401: "text"}, TypeError, "0x1401"),
        ({0x10000: b""}, ValueError, "tag"),
    ],
)
def test_encode_refuses_bad_tlvs(
    tlvs: dict[int, TlvValue], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        SubmitSm(sequence_number=1, tlvs=tlvs).encode()


def test_maximum_sizes_encode_and_decode() -> None:
    pdu = SubmitSm(
        sequence_number=0x7FFFFFFF,
        service_type="x" * 5,
        source_addr="s" * 20,
        destination_addr="d" * 20,
        schedule_delivery_time="000001000000000R",
        validity_period="250115103000004+",
        short_message=bytes(range(254)),
        tlvs={Tag.message_payload: b"p" * 0xFFFF},
    )
    assert decode(pdu.encode()) == pdu
