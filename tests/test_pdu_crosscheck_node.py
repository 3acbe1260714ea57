"""Cross-check against an independent implementation: the npm ``smpp`` package.

It covers every PDU type, including those python-smpplib lacks or gets wrong
(submit_multi, outbind, replace_sm, cancel_sm, data_sm_resp TLVs, long data_sm and
alert_notification addresses). ``tests/node/codec_peer.js`` runs the package's own
``PDU`` encoder and decoder; every fixture is produced by it at test time.

TLVs are compared where the package types a tag as the specification does; it
differs on source_telematics_id (int16; 3.4: 1 octet), ms_validity (buffer),
ussd_service_op (int8; 3.4: octet string), alert_on_message_delivery (int8; 3.4:
no value) and treats callback_num* as repeatable lists, so those are left out.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pdu_strategies import ALL_CLASSES, UNKNOWN_TAGS, pdu_of
from smppcodecs.constants import RESP_BIT
from smppcodecs.pdu import (
    LAYOUTS,
    PDU_CLASSES,
    DistributionList,
    Pdu,
    SmeAddress,
    SubmitMulti,
    SubmitMultiResp,
    UnsuccessSme,
    decode,
)
from smppcodecs.tlv import TLV_SPECS, TlvValue

pytestmark = pytest.mark.node

PEER = Path(__file__).parent / "node" / "codec_peer.js"
NODE_TYPE_OF_KIND = {
    "int1": "int8",
    "int2": "int16",
    "int4": "int32",
    "cstr": "cstring",
    "octets": "buffer",
}
CROSS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


class NodePeer:
    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("Node.js is required for the node-smpp cross-check (tests/node)")
        self.proc = subprocess.Popen(
            [node, str(PEER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        table = self.call({"op": "describe"})
        self.tlvs: dict[str, dict[str, Any]] = table["tlvs"]
        self.params: dict[str, list[str]] = {
            name: c["params"] for name, c in table["commands"].items()
        }
        self.name_of_tag = {int(v["id"]): k for k, v in self.tlvs.items()}
        self.compatible_tags = sorted(
            tag
            for tag, spec in TLV_SPECS.items()
            if tag in self.name_of_tag
            and not self.tlvs[self.name_of_tag[tag]]["multiple"]
            and self.tlvs[self.name_of_tag[tag]]["type"] == NODE_TYPE_OF_KIND.get(spec.kind)
        )

    def tags_for(self, cls: type[Pdu]) -> list[int]:
        """Compatible tags, less those whose name is also a body field of the class
        (node-smpp keeps both under one property, e.g. query_sm_resp's message_state)."""
        params = set(self.params[cls.command_name])
        return [t for t in self.compatible_tags if self.name_of_tag[t] not in params]

    def call(self, request: dict[str, Any]) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"codec_peer.js exited (status {self.proc.poll()})")
        reply = json.loads(line)
        if isinstance(reply, dict) and "error" in reply:
            raise AssertionError(f"node-smpp: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def peer() -> Iterator[NodePeer]:
    p = NodePeer()
    yield p
    p.close()


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"hex": bytes(value).hex()}
    return value


def node_fields(pdu: Pdu, peer: NodePeer) -> dict[str, Any]:
    """The mandatory fields and TLVs under node-smpp's names, wire values only."""
    out: dict[str, Any] = {}
    for kind, name, _ in LAYOUTS[type(pdu)]:
        value = getattr(pdu, name)
        if kind == "dests":
            out["dest_address"] = [
                {"dl_name": d.dl_name}
                if isinstance(d, DistributionList)
                else {
                    "dest_addr_ton": d.dest_addr_ton,
                    "dest_addr_npi": d.dest_addr_npi,
                    "destination_addr": d.destination_addr,
                }
                for d in value
            ]
        elif kind == "unsucc":
            out["unsuccess_sme"] = [
                {
                    "dest_addr_ton": u.dest_addr_ton,
                    "dest_addr_npi": u.dest_addr_npi,
                    "destination_addr": u.destination_addr,
                    "error_status_code": u.error_status_code,
                }
                for u in value
            ]
        else:
            out[name] = jsonable(value)
    return out


def node_tlvs(tlvs: dict[int, TlvValue]) -> dict[str, Any]:
    return {str(tag): jsonable(value) for tag, value in tlvs.items()}


def strategy(cls: type[Pdu], peer: NodePeer, *, unknown: bool) -> st.SearchStrategy[Pdu]:
    base = pdu_of(cls, ascii_only=True, tlv_tags=peer.tags_for(cls), unknown_tlvs=False)
    if not unknown:
        return base
    known_to_node = set(peer.name_of_tag)
    extra = st.lists(
        st.tuples(UNKNOWN_TAGS.filter(lambda t: t not in known_to_node), st.binary(max_size=30)),
        max_size=2,
        unique_by=lambda kv: kv[0],
    )

    def add(p: Pdu, items: list[tuple[int, bytes]]) -> Pdu:
        for tag, raw in items:
            p.tlvs.setdefault(tag, raw)
        return p

    return st.builds(add, base, extra)


def test_peer_knows_the_standard_tags(peer: NodePeer) -> None:
    # Most standard tags are typed alike; the documented exceptions are the only gaps.
    assert len(peer.compatible_tags) >= 35
    left_out = {TLV_SPECS[t].name for t in TLV_SPECS if t not in peer.compatible_tags}
    assert left_out == {
        "source_telematics_id",
        "ms_validity",
        "ussd_service_op",
        "alert_on_message_delivery",
        "callback_num",
        "callback_num_atag",
        "callback_num_pres_ind",
    }


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@CROSS
@given(data=st.data())
def test_node_decodes_what_we_encode(cls: type[Pdu], peer: NodePeer, data: st.DataObject) -> None:
    pdu = data.draw(strategy(cls, peer, unknown=True))
    wire = pdu.encode()
    got = peer.call({"op": "decode", "hex": wire.hex()})
    assert got["command"] == cls.command_name
    assert got["command_id"] == cls.command_id
    assert got["sequence_number"] == pdu.sequence_number
    assert got["command_status"] == pdu.command_status
    if len(wire) == 16 and LAYOUTS[cls]:
        assert got["fields"] == {}  # an error response sent as a bare header
        assert pdu == cls(sequence_number=pdu.sequence_number, command_status=pdu.command_status)
    else:
        assert got["fields"] == node_fields(pdu, peer)
    assert got["tlvs"] == node_tlvs(pdu.tlvs)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@CROSS
@given(data=st.data())
def test_we_decode_what_node_encodes(cls: type[Pdu], peer: NodePeer, data: st.DataObject) -> None:
    pdu = data.draw(strategy(cls, peer, unknown=False))
    request = node_fields(pdu, peer)
    for tag, value in pdu.tlvs.items():
        request[peer.name_of_tag[tag]] = jsonable(value)
    request["sequence_number"] = pdu.sequence_number
    request["command_status"] = pdu.command_status
    wire = bytes.fromhex(
        peer.call({"op": "encode", "command": cls.command_name, "fields": request})["hex"]
    )
    back = decode(wire)
    if pdu.command_status:
        # node-smpp sends any non-zero-status PDU as a bare header.
        assert len(wire) == 16
        assert back == cls(sequence_number=pdu.sequence_number, command_status=pdu.command_status)
    else:
        assert back == pdu
        assert back.encode() == wire  # same field order, same TLV order: same octets


def test_error_responses_as_bare_headers_are_read_by_node(peer: NodePeer) -> None:
    for cid, cls in PDU_CLASSES.items():
        if not cid & RESP_BIT:
            continue
        wire = cls(sequence_number=321, command_status=0x58).encode()
        assert len(wire) == 16
        got = peer.call({"op": "decode", "hex": wire.hex()})
        assert (got["command"], got["command_status"], got["sequence_number"]) == (
            cls.command_name,
            0x58,
            321,
        )


def test_submit_multi_and_resp_examples(peer: NodePeer) -> None:
    request = {
        "sequence_number": 8,
        "source_addr": "Acme",
        "dest_address": [
            {"dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "447911123456"},
            {"dl_name": "friends"},
        ],
        "short_message": {"hex": b"hello".hex()},
    }
    wire = bytes.fromhex(
        peer.call({"op": "encode", "command": "submit_multi", "fields": request})["hex"]
    )
    pdu = decode(wire)
    assert pdu == SubmitMulti(
        sequence_number=8,
        source_addr="Acme",
        dest_addresses=[SmeAddress(1, 1, "447911123456"), DistributionList("friends")],
        short_message=b"hello",
    )
    resp = SubmitMultiResp(
        sequence_number=8,
        message_id="m1",
        unsuccess_smes=[UnsuccessSme(1, 1, "447911123456", 0x0B)],
    )
    got = peer.call({"op": "decode", "hex": resp.encode().hex()})
    assert got["fields"]["unsuccess_sme"] == [
        {
            "dest_addr_ton": 1,
            "dest_addr_npi": 1,
            "destination_addr": "447911123456",
            "error_status_code": 11,
        }
    ]
