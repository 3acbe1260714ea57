"""Fuzzing the framer, the decoder and a live session with mutated real PDUs.

The corpus is real traffic: PDUs built by our encoder and by smpplib (an independent
encoder), receipts included. Hypothesis mutates streams of them (bit flips, inserted
and deleted octets, rewritten command_length fields, truncation), cuts them into
random chunks and checks:

* the framer and decoder raise nothing but `PduError`, the framer never holds more
  than ``max_command_length`` octets, and every PDU that decodes re-encodes to a PDU
  that decodes the same;
* a session fed the stream ends, answers only with responses, at most one per frame.

The quick tests run a bounded number of examples in CI. The ``slow`` test fuzzes for
longer: with atheris (coverage-guided) when it is installed, else with hypothesis;
run it with ``pytest -m slow tests/test_fuzz.py`` (``BOUNCEBACK_FUZZ_SECONDS`` sets
its budget, 60 s by default). This file is also atheris's entry point::

    python tests/test_fuzz.py -max_total_time=300
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smppcodecs.constants import RESP_BIT, CommandId
from smppcodecs.exceptions import PduError
from smppcodecs.framer import Framer
from smppcodecs.pdu import (
    AlertNotification,
    BindTransceiver,
    BindTransceiverResp,
    CancelSm,
    DataSm,
    DeliverSmResp,
    EnquireLink,
    GenericNack,
    Outbind,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    SmeAddress,
    SubmitMulti,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    decode,
)
from smppcodecs.receipt import build_receipt_pdu

MAX_LENGTH = 4096  # a small framer limit, so that mutated lengths hit it often


def _ours() -> list[bytes]:
    when = dt.datetime(2025, 1, 15, 10, 30)
    pdus = [
        BindTransceiver(sequence_number=1, system_id="acme", password="pw", interface_version=0x34),
        BindTransceiverResp(sequence_number=1, system_id="bounceback"),
        SubmitSm(
            sequence_number=2,
            source_addr="Acme",
            destination_addr="447700900123",
            esm_class=0x40,
            registered_delivery=1,
            data_coding=8,
            validity_period="000002120000000R",
            short_message=b"\x05\x00\x03\x2a\x02\x01" + "héllo".encode("utf-16-be"),
            tlvs={0x020C: 42, 0x020E: 2, 0x020F: 1},
        ),
        SubmitSmResp(sequence_number=2, message_id="0000019C2F3A0001"),
        DataSm(
            sequence_number=3,
            source_addr="Acme",
            destination_addr="447700900124",
            registered_delivery=1,
            tlvs={0x0424: b"x" * 300},
        ),
        SubmitMulti(
            sequence_number=4,
            source_addr="Acme",
            dest_addresses=[
                SmeAddress(dest_addr_ton=1, dest_addr_npi=1, destination_addr="447700900125"),
                SmeAddress(dest_addr_ton=1, dest_addr_npi=1, destination_addr="447700900126"),
            ],
            short_message=b"to many",
        ),
        build_receipt_pdu(
            sequence_number=5,
            source_addr="447700900123",
            destination_addr="Acme",
            message_id="0000019C2F3A0001",
            stat="UNDELIV",
            err="006",
            submit_date=when,
            done_date=when,
            text="héllo",
            network_error_code=(3, 6),
        ),
        DeliverSmResp(sequence_number=5),
        QuerySm(sequence_number=6, message_id="0000019C2F3A0001", source_addr="Acme"),
        QuerySmResp(sequence_number=6, message_id="0000019C2F3A0001", message_state=2),
        CancelSm(sequence_number=7, message_id="0000019C2F3A0001", destination_addr="447"),
        ReplaceSm(sequence_number=8, message_id="0000019C2F3A0001", short_message=b"new"),
        AlertNotification(
            sequence_number=9, source_addr="447700900123", esme_addr="Acme", tlvs={0x0422: 0}
        ),
        Outbind(sequence_number=10, system_id="smsc", password="pw"),
        EnquireLink(sequence_number=11),
        GenericNack(sequence_number=12, command_status=3),
        Unbind(sequence_number=13),
    ]
    return [p.encode() for p in pdus]


def _smpplib() -> list[bytes]:
    import smpplib.client
    import smpplib.smpp

    c = smpplib.client.Client("127.0.0.1", 2775, allow_unknown_opt_params=True)
    made = [
        smpplib.smpp.make_pdu("bind_transmitter", client=c, system_id="acme", password="pw"),
        smpplib.smpp.make_pdu(
            "submit_sm",
            client=c,
            source_addr="Acme",
            destination_addr="447700900127",
            short_message=b"from smpplib",
            registered_delivery=1,
        ),
        smpplib.smpp.make_pdu("enquire_link", client=c),
        smpplib.smpp.make_pdu("unbind", client=c),
    ]
    return [bytes(p.generate()) for p in made]


CORPUS: list[bytes] = _ours() + _smpplib()


# ---------------------------------------------------------------- mutations


def mutate(stream: bytes, ops: list[tuple[int, int, int, bytes]]) -> bytes:
    """Apply (kind, position, amount, octets) operations to a byte stream."""
    data = bytearray(stream)
    for kind, pos, amount, octets in ops:
        if not data:
            data += octets
            continue
        at = pos % len(data)
        if kind == 0:  # flip bits
            data[at] ^= (amount % 255) + 1
        elif kind == 1:  # insert
            data[at:at] = octets
        elif kind == 2:  # delete
            del data[at : at + amount % 32 + 1]
        elif kind == 3:  # rewrite a 32-bit field (often a command_length)
            data[at : at + 4] = (amount * 2654435761 % (1 << 32)).to_bytes(4, "big")
        elif kind == 4:  # nudge a length by a little
            if at + 4 <= len(data):
                value = (int.from_bytes(data[at : at + 4], "big") + amount % 9 - 4) % (1 << 32)
                data[at : at + 4] = value.to_bytes(4, "big")
        else:  # truncate
            del data[at:]
    return bytes(data)


op = st.tuples(
    st.integers(0, 5),
    st.integers(0, 1 << 16),
    st.integers(0, 1 << 16),
    st.binary(max_size=24),
)
streams = st.builds(
    mutate,
    st.lists(st.sampled_from(CORPUS), min_size=1, max_size=8).map(b"".join),
    st.lists(op, max_size=6),
)
chunkings = st.lists(st.integers(1, 700), min_size=1, max_size=12)


def chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out.append(data[pos : pos + n])
        pos += n
        i += 1
    return out


# ---------------------------------------------------------------- the properties


def check_stream(data: bytes, sizes: list[int]) -> int:
    """Frame and decode `data` in chunks; returns the number of frames cut."""
    framer = Framer(max_command_length=MAX_LENGTH)
    frames = 0
    failed = False
    for part in chunks(data, sizes):
        try:
            got = framer.feed(part)
        except PduError as exc:
            assert not exc.in_sync
            failed = True
            break
        assert framer.pending <= MAX_LENGTH
        for frame in got:
            frames += 1
            assert 16 <= len(frame) <= MAX_LENGTH
            try:
                pdu = decode(frame)
            except PduError as exc:
                assert exc.command_status != 0
                continue
            again = decode(pdu.encode())
            assert again == pdu, (frame.hex(), pdu)
    if failed:  # the framer's failure is final
        with pytest.raises(PduError):
            framer.feed(b"\x00" * 16)
    return frames


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams, chunkings)
def test_framer_and_decoder_take_mutated_streams(data: bytes, sizes: list[int]) -> None:
    check_stream(data, sizes)


def test_unmutated_corpus_decodes() -> None:
    assert check_stream(b"".join(CORPUS), [1, 7, 300]) == len(CORPUS)
    for frame in CORPUS:
        decode(frame)


# ---------------------------------------------------------------- a live session


class _Transport:
    def __init__(self) -> None:
        self.size = 0

    def get_write_buffer_size(self) -> int:
        return self.size


class _Writer:
    """Just enough of asyncio.StreamWriter for a session: collects what it writes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closing = False
        self.transport = _Transport()

    def write(self, data: bytes) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    async def wait_closed(self) -> None:
        return None

    async def drain(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.1", 40000) if name == "peername" else default


async def run_session(data: bytes, sizes: list[int]) -> bytes:
    """Feed `data` in chunks to a plain session until EOF; returns what it wrote."""
    from bounceback.smpp.session import SmppSession

    reader = asyncio.StreamReader()
    writer = _Writer()
    session = SmppSession(
        reader,
        writer,  # type: ignore[arg-type]
        name="fuzz",
        max_pdu_size=MAX_LENGTH,
        enquire_link_interval=3600.0,
        inactivity_timeout=3600.0,
    )
    for part in chunks(data, sizes):
        reader.feed_data(part)
    reader.feed_eof()
    await asyncio.wait_for(session.run(), 10.0)
    return bytes(writer.out)


def frames_before_failure(data: bytes, sizes: list[int]) -> tuple[list[bytes], bool]:
    """The frames a session's framer yields, and whether framing was lost after them."""
    framer = Framer(max_command_length=MAX_LENGTH)
    frames: list[bytes] = []
    for part in chunks(data, sizes):
        try:
            frames.extend(framer.feed(part))
        except PduError:
            return frames, True
    return frames, False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams, chunkings)
def test_session_answers_mutated_streams(data: bytes, sizes: list[int]) -> None:
    out = asyncio.run(run_session(data, sizes))
    frames, lost = frames_before_failure(data, sizes)
    answers = Framer(max_command_length=1 << 20).feed(out)
    assert b"".join(answers) == out  # whole PDUs only
    for frame in answers:
        pdu = decode(frame)
        assert pdu.command_id & RESP_BIT  # a plain session only ever answers
        if pdu.command_id == CommandId.GENERIC_NACK:
            assert pdu.command_status != 0
    assert len(answers) <= len(frames) + (1 if lost else 0)
    unbound = any(f[4:8] == b"\x00\x00\x00\x06" for f in frames)  # an unbind ends it early
    if lost and not unbound:
        last = decode(answers[-1])
        assert last.command_id == CommandId.GENERIC_NACK
        assert last.command_status == 0x02  # ESME_RINVCMDLEN, then the session closed


# ---------------------------------------------------------------- longer runs


@settings(max_examples=500, deadline=None, database=None)
@given(streams, chunkings)
def run_examples(data: bytes, sizes: list[int]) -> None:
    check_stream(data, sizes)


def _budget(config: pytest.Config) -> float:
    """Seconds for the slow fuzz: long when `-m slow` asked for it, else a short run."""
    asked = "slow" in (config.option.markexpr or "")
    return float(os.environ.get("BOUNCEBACK_FUZZ_SECONDS", "60")) if asked else 3.0


@pytest.mark.slow
def test_fuzz_for_longer(request: pytest.FixtureRequest) -> None:
    budget = _budget(request.config)
    try:
        importlib.import_module("atheris")
    except ImportError:
        end = time.monotonic() + budget
        rounds = 0
        while time.monotonic() < end:
            run_examples()
            rounds += 1
        assert rounds >= 1
        return
    cache = request.config.cache
    corpus_dir = Path(str(cache.mkdir("fuzz-corpus"))) if cache is not None else None
    args = [sys.executable, __file__, f"-max_total_time={max(int(budget), 1)}", "-timeout=10"]
    if corpus_dir is not None:
        for i, frame in enumerate(CORPUS):
            (corpus_dir / f"seed-{i:02d}").write_bytes(frame)
        args.append(str(corpus_dir))
    run = subprocess.run(args, capture_output=True, text=True, timeout=budget + 120)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Done" in run.stderr  # libFuzzer's summary line: it ran to the end


def _atheris_input(data: bytes) -> None:
    if not data:
        return
    sizes = [b % 64 + 1 for b in data[:4]] or [1]
    check_stream(data[4:], sizes)


def main() -> None:
    """atheris's entry point: the codec is imported again, instrumented for coverage."""
    atheris: Any = importlib.import_module("atheris")
    for name in [m for m in sys.modules if m.split(".")[0] == "smppcodecs"]:
        del sys.modules[name]
    with atheris.instrument_imports(include=["smppcodecs"]):
        framer = importlib.import_module("smppcodecs.framer")
        pdu = importlib.import_module("smppcodecs.pdu")
        errors = importlib.import_module("smppcodecs.exceptions")
    globals().update(Framer=framer.Framer, decode=pdu.decode, PduError=errors.PduError)
    setup: Callable[..., Any] = atheris.Setup
    setup(sys.argv, _atheris_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
