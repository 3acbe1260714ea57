"""Codec benchmark: our PDU decode/encode against python-smpplib's, same PDUs, same run.

Also the receipt path of the proxy (ours only): parsing a decoded receipt deliver_sm
(``parse_receipt``: standard text plus TLVs) and building the receipt for the sender
(``build_receipt_pdu``) and encoding it.

Prints PDUs per second on one core for submit_sm, submit_sm_resp, a delivery-receipt
deliver_sm (receipted_message_id, message_state and network_error_code TLVs) and
deliver_sm_resp, and the ratio to smpplib:

* decode: ours ``smppcodecs.pdu.decode(frame)``; smpplib ``smpplib.smpp.parse_pdu``.
* encode: ours ``pdu.encode()`` of a built object; smpplib ``command.generate()``.
* build+encode: constructing the PDU object from its fields and encoding it.

Usage: ``python bench/bench_codec.py [--quick] [--profile]``. ``--profile`` runs
cProfile over our submit_sm decode and encode and prints the hottest functions.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import smpplib.command
import smpplib.smpp
from smppcodecs.constants import Tag
from smppcodecs.framer import Framer
from smppcodecs.pdu import DeliverSm, DeliverSmResp, Pdu, SubmitSm, SubmitSmResp, decode
from smppcodecs.receipt import build_receipt_pdu, parse_receipt


class _Sequencer:
    """The minimal client smpplib's command classes ask for a sequence number."""

    sequence = 0

    def next_sequence(self) -> int:
        return 0


SEQUENCER = _Sequencer()

SUBMIT_FIELDS: dict[str, Any] = {
    "service_type": "",
    "source_addr_ton": 5,
    "source_addr_npi": 0,
    "source_addr": "AcmeBank",
    "dest_addr_ton": 1,
    "dest_addr_npi": 1,
    "destination_addr": "447911123456",
    "esm_class": 0,
    "protocol_id": 0,
    "priority_flag": 0,
    "schedule_delivery_time": "",
    "validity_period": "000001000000000R",
    "registered_delivery": 1,
    "replace_if_present_flag": 0,
    "data_coding": 0,
    "sm_default_msg_id": 0,
    "short_message": b"Your AcmeBank code is 482913. It expires in 10 minutes. Never share it.",
}
RECEIPT_TEXT = (
    b"id:3F2A9C11 sub:001 dlvrd:000 submit date:2501151030 done date:2501151031"
    b" stat:UNDELIV err:027 text:Your AcmeBank code"
)
DELIVER_FIELDS: dict[str, Any] = {
    **SUBMIT_FIELDS,
    "source_addr_ton": 1,
    "source_addr_npi": 1,
    "source_addr": "447911123456",
    "dest_addr_ton": 5,
    "dest_addr_npi": 0,
    "destination_addr": "AcmeBank",
    "esm_class": 0x04,
    "validity_period": "",
    "registered_delivery": 0,
    "short_message": RECEIPT_TEXT,
}
RECEIPT_TLVS: dict[str, Any] = {
    "receipted_message_id": "3F2A9C11",
    "message_state": 5,
    "network_error_code": b"\x03\x00\x1b",
}


def our_submit() -> Pdu:
    return SubmitSm(sequence_number=1234, **SUBMIT_FIELDS)


def our_submit_resp() -> Pdu:
    return SubmitSmResp(sequence_number=1234, message_id="3F2A9C11")


def our_deliver() -> Pdu:
    return DeliverSm(
        sequence_number=77,
        tlvs={
            Tag.receipted_message_id: "3F2A9C11",
            Tag.message_state: 5,
            Tag.network_error_code: b"\x03\x00\x1b",
        },
        **DELIVER_FIELDS,
    )


def our_deliver_resp() -> Pdu:
    return DeliverSmResp(sequence_number=77)


def _theirs(command: type[Any], name: str, sequence: int, **fields: Any) -> Any:
    cmd = command(name, client=SEQUENCER, **fields)
    # smpplib's constructors override some values (e.g. the sequence); set them again.
    for key, value in fields.items():
        setattr(cmd, key, value)
    cmd.sequence = sequence
    return cmd


def their_submit() -> Any:
    return _theirs(smpplib.command.SubmitSM, "submit_sm", 1234, **SUBMIT_FIELDS)


def their_submit_resp() -> Any:
    return _theirs(smpplib.command.SubmitSMResp, "submit_sm_resp", 1234, message_id="3F2A9C11")


def their_deliver() -> Any:
    return _theirs(smpplib.command.DeliverSM, "deliver_sm", 77, **DELIVER_FIELDS, **RECEIPT_TLVS)


def their_deliver_resp() -> Any:
    return _theirs(smpplib.command.DeliverSMResp, "deliver_sm_resp", 77, message_id="")


def their_parse(frame: bytes) -> Any:
    return smpplib.smpp.parse_pdu(frame, client=SEQUENCER)


@dataclass
class Case:
    name: str
    ours: Callable[[], Pdu]
    theirs: Callable[[], Any]


CASES = [
    Case("submit_sm", our_submit, their_submit),
    Case("submit_sm_resp", our_submit_resp, their_submit_resp),
    Case("deliver_sm (receipt)", our_deliver, their_deliver),
    Case("deliver_sm_resp", our_deliver_resp, their_deliver_resp),
]


def build_ours(case: Case) -> bytes:
    return case.ours().encode()


def build_theirs(case: Case) -> bytes:
    data: bytes = case.theirs().generate()
    return data


def rate(fn: Callable[[], object], budget: float) -> float:
    """Operations per second: best of five runs of about ``budget`` seconds each."""
    timer = timeit.Timer(fn)
    number, elapsed = timer.autorange()
    number = max(1, int(number * budget / max(elapsed, 1e-9)))
    best = min(timer.repeat(repeat=5, number=number))
    return number / best


def check_same_wire(case: Case) -> bytes:
    """Both libraries must produce PDUs that the other reads back identically."""
    ours = case.ours().encode()
    theirs = case.theirs().generate()
    assert decode(theirs) == decode(ours), case.name
    parsed = their_parse(ours)
    assert parsed.sequence == case.ours().sequence_number, case.name
    return ours


def run(budget: float) -> int:
    print(f"Python {sys.version.split()[0]}; PDUs per second on one core (best of 5)\n")
    header = f"{'PDU':<22}{'operation':<14}{'ours':>12}{'smpplib':>12}{'ratio':>9}"
    print(header)
    print("-" * len(header))
    submit_ratio = 0.0
    submit_decode = 0.0
    for case in CASES:
        frame = check_same_wire(case)
        pdu = case.ours()
        cmd = case.theirs()
        rows = [
            (
                "decode",
                rate(functools.partial(decode, frame), budget),
                rate(functools.partial(their_parse, frame), budget),
            ),
            ("encode", rate(pdu.encode, budget), rate(cmd.generate, budget)),
            (
                "build+encode",
                rate(functools.partial(build_ours, case), budget),
                rate(functools.partial(build_theirs, case), budget),
            ),
        ]
        for op, ours, theirs in rows:
            print(f"{case.name:<22}{op:<14}{ours:>12,.0f}{theirs:>12,.0f}{ours / theirs:>8.1f}x")
        if case.name == "submit_sm":
            submit_decode = rows[0][1]
            ours_time = 1 / rows[0][1] + 1 / rows[1][1]
            theirs_time = 1 / rows[0][2] + 1 / rows[1][2]
            submit_ratio = theirs_time / ours_time
    stream = b"".join(c.ours().encode() for c in CASES) * 250
    framer = Framer()

    def frame_and_decode() -> None:
        for chunk_start in range(0, len(stream), 4096):
            for f in framer.feed(stream[chunk_start : chunk_start + 4096]):
                decode(f)

    receipt = decode(our_deliver().encode())
    assert isinstance(receipt, DeliverSm)
    date = datetime(2025, 1, 15, 10, 31)

    def build_receipt() -> bytes:
        return build_receipt_pdu(
            sequence_number=0,
            source_addr="447911123456",
            destination_addr="AcmeBank",
            message_id="0f8e4a7c-2b1d-4e5f-9a6b-3c2d1e0f9a8b",
            stat="UNDELIV",
            err="027",
            submit_date=date,
            done_date=date,
            text="Your AcmeBank code",
        ).encode()

    parses = rate(lambda: parse_receipt(receipt), budget)
    print(f"\nreceipt parse (text + TLVs): {parses:>10,.0f}/s")
    print(f"receipt build + encode:      {rate(build_receipt, budget):>10,.0f}/s")
    per_stream = rate(frame_and_decode, budget) * 1000
    print(f"\nFramer + decode of a mixed stream in 4 KiB reads: {per_stream:,.0f} PDUs/s")
    print(f"submit_sm decode+encode vs smpplib: {submit_ratio:.1f}x (goal >= 5x)")
    print(f"submit_sm decodes: {submit_decode:,.0f}/s (goal >= 150,000/s)")
    return 0


def profile() -> None:
    frame = our_submit().encode()
    pdu = our_submit()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(200_000):
        decode(frame)
        pdu.encode()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier)")
    parser.add_argument("--profile", action="store_true", help="cProfile our submit_sm path")
    args = parser.parse_args(argv)
    if args.profile:
        profile()
        return 0
    return run(0.05 if args.quick else 0.3)


if __name__ == "__main__":
    raise SystemExit(main())
