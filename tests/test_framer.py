"""The stream framer: partial reads, many PDUs per read, hostile lengths."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pdu_strategies import pdus
from smppcodecs.exceptions import InvalidCommandLength
from smppcodecs.framer import DEFAULT_MAX_COMMAND_LENGTH, Framer
from smppcodecs.pdu import DeliverSm, EnquireLink, Pdu, SubmitSm, decode


def sample_frames() -> list[bytes]:
    return [
        SubmitSm(sequence_number=1, source_addr="Acme", short_message=b"hello").encode(),
        EnquireLink(sequence_number=2).encode(),
        DeliverSm(sequence_number=3, short_message=b"x" * 200, tlvs={0x0427: 2}).encode(),
    ]


def test_byte_at_a_time() -> None:
    frames = sample_frames()
    stream = b"".join(frames)
    framer = Framer()
    got: list[bytes] = []
    for i in range(len(stream)):
        got.extend(framer.feed(stream[i : i + 1]))
        assert framer.pending == (i + 1) - sum(map(len, got))
    assert got == frames
    assert framer.pending == 0


def test_many_pdus_in_one_chunk_and_a_partial_tail() -> None:
    frames = sample_frames()
    stream = b"".join(frames) + frames[0][:10]
    framer = Framer()
    assert framer.feed(stream) == frames
    assert framer.pending == 10
    assert framer.feed(frames[0][10:]) == [frames[0]]
    assert framer.pending == 0


def test_empty_feed_and_accepted_buffer_types() -> None:
    framer = Framer()
    frame = sample_frames()[1]
    assert framer.feed(b"") == []
    assert framer.feed(bytearray(frame[:5])) == []
    assert framer.feed(memoryview(frame[5:])) == [frame]
    assert all(type(f) is bytes for f in framer.feed(bytearray(frame)))


@settings(max_examples=100, deadline=None)
@given(
    pdu_list=st.lists(pdus(), min_size=1, max_size=8),
    cuts=st.lists(st.integers(1, 300), max_size=30),
)
def test_any_split_gives_the_same_frames(pdu_list: list[Pdu], cuts: list[int]) -> None:
    frames = [p.encode() for p in pdu_list]
    stream = b"".join(frames)
    framer = Framer()
    got: list[bytes] = []
    pos = 0
    for c in cuts:
        got.extend(framer.feed(stream[pos : pos + c]))
        pos += c
    got.extend(framer.feed(stream[pos:]))
    assert got == frames
    assert [decode(f) for f in got] == pdu_list
    assert framer.pending == 0


@pytest.mark.parametrize("length", [0, 1, 15, DEFAULT_MAX_COMMAND_LENGTH + 1, 0xFFFFFFFF])
def test_hostile_length_refused_on_the_fourth_octet(length: int) -> None:
    framer = Framer()
    head = struct.pack(">I", length)
    assert framer.feed(head[:3]) == []
    assert framer.pending == 3
    with pytest.raises(InvalidCommandLength) as info:
        framer.feed(head[3:] + b"\0" * 100_000)
    assert info.value.in_sync is False
    assert info.value.command_id is None
    assert framer.pending == 0  # nothing of the announced body was kept
    with pytest.raises(InvalidCommandLength):  # the stream cannot be re-synchronised
        framer.feed(EnquireLink(sequence_number=1).encode())
    assert framer.pending == 0


def test_hostile_length_reports_the_header_when_readable() -> None:
    framer = Framer(max_command_length=1000)
    good = EnquireLink(sequence_number=5).encode()
    bad = struct.pack(">IIII", 1001, 0x00000004, 0, 77)
    with pytest.raises(InvalidCommandLength) as info:
        framer.feed(good + bad)
    assert (info.value.command_id, info.value.sequence_number) == (4, 77)
    assert info.value.command_status == 0x02
    assert framer.pending == 0


def test_limit_is_inclusive_and_large_pdus_are_buffered() -> None:
    framer = Framer(max_command_length=300)
    pdu = SubmitSm(sequence_number=1, short_message=b"y" * 254).encode()
    assert len(pdu) <= 300
    assert framer.feed(pdu[:100]) == []
    assert framer.pending == 100
    assert framer.feed(pdu[100:]) == [pdu]
    big = struct.pack(">I", 301) + b"\0" * 12
    with pytest.raises(InvalidCommandLength):
        Framer(max_command_length=300).feed(big)
    with pytest.raises(ValueError):
        Framer(max_command_length=15)


def test_a_large_stream_is_linear() -> None:
    # 5,000 PDUs fed in 7-octet pieces: quadratic buffering would make this crawl;
    # here it only has to finish and give every frame back in order.
    frame = SubmitSm(sequence_number=1, short_message=b"z" * 100).encode()
    stream = frame * 5_000
    framer = Framer()
    count = 0
    for i in range(0, len(stream), 7):
        for f in framer.feed(stream[i : i + 7]):
            assert f == frame
            count += 1
    assert count == 5_000
    assert framer.pending == 0
