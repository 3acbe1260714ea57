"""Cross-check against an independent implementation: python-smpplib.

For every PDU type smpplib supports, bytes smpplib generates decode to the same
fields with our codec, and bytes we generate parse to the same fields with smpplib.
smpplib lacks outbind, submit_multi(_resp), cancel_sm(_resp) and replace_sm(_resp),
caps data_sm and alert_notification addresses at 20 characters (3.4 allows 64) and
types a few TLVs differently from the specification (data_sm_resp's
delivery_failure_reason and network_error_code as text, source_telematics_id as two
octets, source/dest_subaddress as text); TLVs are compared only where smpplib types
them as the specification does. The node-smpp cross-check covers the rest.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import smpplib.command
import smpplib.consts
import smpplib.exceptions
import smpplib.ptypes
import smpplib.smpp
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pdu_strategies import pdu_of
from smppcodecs.constants import RESP_BIT, CommandStatus, Tag
from smppcodecs.pdu import (
    PDU_CLASSES,
    AlertNotification,
    DataSm,
    DeliverSm,
    Pdu,
    QuerySm,
    SubmitSm,
    SubmitSmResp,
    decode,
)
from smppcodecs.tlv import TLV_SPECS

CROSS = settings(max_examples=40, deadline=None)


class _Sequencer:
    """The minimal client smpplib's command classes ask for a sequence number."""

    sequence = 0

    def next_sequence(self) -> int:
        return 0


def smpplib_class(cls: type[Pdu]) -> Any:
    try:
        return type(smpplib.command.factory(cls.command_name, client=_Sequencer()))
    except smpplib.exceptions.UnknownCommandError:
        return None


SUPPORTED = [cls for cls in PDU_CLASSES.values() if smpplib_class(cls) is not None]
INT_SIZES = {"int1": 1, "int2": 2, "int4": 4}


def body_fields(cls: type[Pdu]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)][3:]


def compatible_tags(cls: type[Pdu]) -> list[int]:
    """Tags smpplib's class for ``cls`` knows and types as the specification does."""
    params = smpplib_class(cls).params
    tags = []
    for tag, spec in TLV_SPECS.items():
        param = params.get(spec.name)
        if param is None or spec.name not in smpplib.consts.OPTIONAL_PARAMS:
            continue
        same_int = (
            spec.kind in INT_SIZES
            and param.type is int
            and getattr(param, "size", 0) == INT_SIZES[spec.kind]
        )
        same_octets = spec.kind == "octets" and param.type is smpplib.ptypes.ostr
        same_text = spec.kind == "cstr" and param.type is str
        if same_int or same_octets or same_text:
            tags.append(tag)
    return tags


def ours(cls: type[Pdu], *, unknown: bool) -> st.SearchStrategy[Pdu]:
    # A TLV named like a body field (query_sm_resp's message_state) shares smpplib's
    # attribute with it, so it is left out.
    tags = [t for t in compatible_tags(cls) if TLV_SPECS[t].name not in body_fields(cls)]
    strategy = pdu_of(cls, ascii_only=True, tlv_tags=tags, unknown_tlvs=unknown)
    if cls in (DataSm, AlertNotification):
        # smpplib truncates these addresses at 20 characters.
        strategy = strategy.filter(
            lambda p: all(
                len(getattr(p, f, "")) <= 20
                for f in ("source_addr", "destination_addr", "esme_addr")
            )
        )
    return strategy


def to_smpplib(pdu: Pdu) -> Any:
    """The same PDU as an smpplib command object (attributes set after construction,
    since smpplib's constructors override some, e.g. interface_version)."""
    cmd = smpplib.smpp.make_pdu(pdu.command_name, client=_Sequencer())
    for name in body_fields(type(pdu)):
        setattr(cmd, name, getattr(pdu, name))
    for tag, value in pdu.tlvs.items():
        setattr(cmd, TLV_SPECS[tag].name, value)
    cmd.status = pdu.command_status
    cmd.sequence = pdu.sequence_number
    return cmd


def parse(data: bytes) -> Any:
    return smpplib.smpp.parse_pdu(data, client=_Sequencer(), allow_unknown_opt_params=True)


def smpplib_value(value: Any) -> Any:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def drop_empty_text_tlvs(pdu: Pdu) -> Pdu:
    # smpplib leaves out a string or octet-string TLV whose value is empty, and
    # refuses message_payload beside a non-empty short_message (the specification
    # allows one or the other; our codec leaves that rule to its users).
    pdu.tlvs = {t: v for t, v in pdu.tlvs.items() if v != "" and v != b""}
    if getattr(pdu, "short_message", b""):
        pdu.tlvs.pop(Tag.message_payload, None)
    return pdu


def test_supported_set_is_what_we_expect() -> None:
    names = {cls.command_name for cls in SUPPORTED}
    assert "submit_sm" in names and "deliver_sm" in names and "data_sm" in names
    assert not names & {"outbind", "submit_multi", "replace_sm", "cancel_sm"}
    assert Tag.receipted_message_id in compatible_tags(DeliverSm)
    assert Tag.network_error_code in compatible_tags(DeliverSm)
    assert Tag.message_state in compatible_tags(DeliverSm)


@pytest.mark.parametrize("cls", SUPPORTED, ids=lambda c: c.__name__)
@CROSS
@given(data=st.data())
def test_we_decode_what_smpplib_generates(cls: type[Pdu], data: st.DataObject) -> None:
    pdu = drop_empty_text_tlvs(data.draw(ours(cls, unknown=False)))
    if cls is QuerySm:
        assume(
            isinstance(pdu, QuerySm) and pdu.message_id != ""
        )  # smpplib refuses an empty message_id
    wire = to_smpplib(pdu).generate()
    back = decode(wire)
    assert type(back) is cls
    assert back == pdu


@pytest.mark.parametrize("cls", SUPPORTED, ids=lambda c: c.__name__)
@CROSS
@given(data=st.data())
def test_smpplib_parses_what_we_encode(cls: type[Pdu], data: st.DataObject) -> None:
    pdu = data.draw(ours(cls, unknown=True))
    wire = pdu.encode()
    theirs = parse(wire)
    assert theirs.command == cls.command_name
    assert theirs.sequence == pdu.sequence_number
    assert theirs.status == pdu.command_status
    bare = len(wire) == 16
    defaults = cls(sequence_number=0)
    for name in body_fields(cls):
        got = getattr(theirs, name)
        if bare:
            assert got is None  # nothing was sent
            assert getattr(pdu, name) == getattr(defaults, name)
        elif got is None:
            # smpplib stops at the end of the body before an empty last field.
            assert name == body_fields(cls)[-1]
            assert getattr(pdu, name) == getattr(defaults, name)
        else:
            expected = getattr(pdu, name)
            assert (smpplib_value(got) if isinstance(expected, str) else got) == expected, name
    for tag, value in pdu.tlvs.items():
        if tag in TLV_SPECS:
            got = getattr(theirs, TLV_SPECS[tag].name)
            if TLV_SPECS[tag].kind == "cstr":
                got = smpplib_value(got)
            assert got == value, TLV_SPECS[tag].name


@pytest.mark.parametrize(
    "cls", [c for c in SUPPORTED if c.command_id & RESP_BIT], ids=lambda c: c.__name__
)
def test_smpplib_reads_bare_error_responses(cls: type[Pdu]) -> None:
    wire = cls(sequence_number=99, command_status=CommandStatus.ESME_RTHROTTLED).encode()
    assert len(wire) == 16
    theirs = parse(wire)
    assert (theirs.command, theirs.status, theirs.sequence) == (cls.command_name, 0x58, 99)


def test_smpplib_error_response_with_body_decodes() -> None:
    # smpplib writes the body even on error; we take it.
    cmd = smpplib.smpp.make_pdu("submit_sm_resp", client=_Sequencer(), status=0x45, message_id="")
    cmd.sequence = 7
    wire = cmd.generate()
    assert len(wire) == 17
    assert decode(wire) == SubmitSmResp(sequence_number=7, command_status=0x45)


def test_realistic_submit_and_receipt() -> None:
    cmd = smpplib.smpp.make_pdu(
        "submit_sm",
        client=_Sequencer(),
        source_addr_ton=5,
        source_addr="Acme",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="447911123456",
        registered_delivery=1,
        data_coding=0,
        short_message=b"Your code is 123456",
        sar_msg_ref_num=7,
        sar_total_segments=2,
        sar_segment_seqnum=1,
    )
    cmd.sequence = 1234
    pdu = decode(cmd.generate())
    assert pdu == SubmitSm(
        sequence_number=1234,
        source_addr_ton=5,
        source_addr="Acme",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="447911123456",
        registered_delivery=1,
        short_message=b"Your code is 123456",
        tlvs={Tag.sar_msg_ref_num: 7, Tag.sar_total_segments: 2, Tag.sar_segment_seqnum: 1},
    )
    receipt = DeliverSm(
        sequence_number=5,
        esm_class=0x04,
        source_addr="447911123456",
        destination_addr="Acme",
        short_message=(
            b"id:0123456789 sub:001 dlvrd:000 submit date:2501151030"
            b" done date:2501151031 stat:UNDELIV err:001 text:Your code"
        ),
        tlvs={
            Tag.receipted_message_id: "0123456789",
            Tag.message_state: 5,
            Tag.network_error_code: b"\x03\x00\x01",
        },
    )
    theirs = parse(receipt.encode())
    assert theirs.receipted_message_id == b"0123456789"
    assert theirs.message_state == 5
    assert theirs.network_error_code == b"\x03\x00\x01"
    assert theirs.esm_class == 4
    assert decode(receipt.encode()) == receipt
