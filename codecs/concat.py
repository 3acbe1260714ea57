"""Concatenated SMS: splitting into parts, reading part headers, joining parts back.

Three ways of marking the parts of one message (reference §7.4):

* ``"udh8"``: a User Data Header at the start of ``short_message``,
  ``05 00 03 RR TT SS`` (IEI 0x00, 8-bit reference), with esm_class UDHI (0x40).
* ``"udh16"``: ``06 08 04 RRRR TT SS`` (IEI 0x08, 16-bit reference), with UDHI.
* ``"sar"``: no header in the body; the TLVs sar_msg_ref_num (0x020C),
  sar_total_segments (0x020E) and sar_segment_seqnum (0x020F) on each PDU. The SMSC
  writes the over-the-air header itself, so SAR parts are sized like ``"udh8"``
  parts when the reference fits 8 bits and like ``"udh16"`` parts otherwise.

Everything here is pure: the reference number is chosen by the caller and the
`Reassembler` takes the time as an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from .constants import ESM_CLASS_UDHI, Tag
from .text import choose_data_coding, chunk_encoded, encode_text, part_limits

__all__ = [
    "MAX_PARTS",
    "ConcatInfo",
    "InformationElement",
    "PartialMessage",
    "Reassembler",
    "Segment",
    "Udh",
    "concat_info",
    "parse_udh",
    "split_bytes",
    "split_text",
]

Method = Literal["udh8", "udh16", "sar"]
MAX_PARTS: Final = 255
IEI_CONCAT_8: Final = 0x00
IEI_CONCAT_16: Final = 0x08


@dataclass(slots=True, frozen=True)
class Segment:
    """One part of a message, ready to go into a submit_sm."""

    short_message: bytes
    esm_class_bits: int  # 0x40 (UDHI) when short_message starts with a UDH, else 0
    tlvs: dict[int, int]  # the SAR TLVs when that method is used, else empty
    data_coding: int
    seq: int  # 1-based
    total: int


def _check_reference(method: str, reference: int) -> None:
    if method == "udh8":
        if not 0 <= reference <= 0xFF:
            raise ValueError(f"reference {reference} does not fit 8 bits (method udh8)")
    elif method in ("udh16", "sar"):
        if not 0 <= reference <= 0xFFFF:
            raise ValueError(f"reference {reference} does not fit 16 bits (method {method})")
    else:
        raise ValueError(f"unknown concatenation method {method!r}: use udh8, udh16 or sar")


def _split(data: bytes, data_coding: int, method: str, reference: int) -> list[Segment]:
    _check_reference(method, reference)
    single, per8, per16 = part_limits(data_coding)
    if len(data) <= single:
        return [Segment(data, 0, {}, data_coding, 1, 1)]
    ref16 = method == "udh16" or (method == "sar" and reference > 0xFF)
    chunks = chunk_encoded(data, data_coding, per16 if ref16 else per8)
    total = len(chunks)
    if total > MAX_PARTS:
        raise ValueError(f"message needs {total} parts; at most {MAX_PARTS} are allowed")
    segments: list[Segment] = []
    for seq, chunk in enumerate(chunks, start=1):
        if method == "udh8":
            udh = bytes((5, IEI_CONCAT_8, 3, reference, total, seq))
            segments.append(Segment(udh + chunk, ESM_CLASS_UDHI, {}, data_coding, seq, total))
        elif method == "udh16":
            udh = bytes((6, IEI_CONCAT_16, 4, reference >> 8, reference & 0xFF, total, seq))
            segments.append(Segment(udh + chunk, ESM_CLASS_UDHI, {}, data_coding, seq, total))
        else:
            tlvs = {
                int(Tag.sar_msg_ref_num): reference,
                int(Tag.sar_total_segments): total,
                int(Tag.sar_segment_seqnum): seq,
            }
            segments.append(Segment(chunk, 0, tlvs, data_coding, seq, total))
    return segments


def split_text(
    text: str,
    *,
    data_coding: int | None = None,
    method: Method | str = "udh8",
    reference: int,
) -> list[Segment]:
    """Encode ``text`` and split it into as many parts as it needs.

    ``data_coding`` None picks one with `choose_data_coding` (GSM, else UCS-2). A
    text that fits one message gives one Segment without UDH or TLVs. Parts never
    split a GSM escape pair or a UTF-16 surrogate pair. Raises `ValueError` for a
    text the coding cannot carry, a reference too wide for the method, an unknown
    method, or a text needing more than 255 parts.
    """
    dc = choose_data_coding(text) if data_coding is None else data_coding
    return _split(encode_text(text, dc), dc, method, reference)


def split_bytes(
    payload: bytes,
    *,
    data_coding: int = 0x04,
    method: Method | str = "udh8",
    reference: int,
) -> list[Segment]:
    """Split an already-encoded payload (8-bit binary by default; any coding works,
    and GSM escape pairs and UTF-16 surrogate pairs are kept whole) into parts."""
    return _split(payload, data_coding, method, reference)


# ---------------------------------------------------------------- reading parts


@dataclass(slots=True, frozen=True)
class InformationElement:
    iei: int
    data: bytes


@dataclass(slots=True, frozen=True)
class Udh:
    """A parsed User Data Header.

    ``ref``/``total``/``seq`` come from the last concatenation element (IEI 0x00 or
    0x08). As 3GPP 23.040 asks, an element whose total is 0 or whose sequence number
    is 0 or above the total is ignored: it stays in ``elements`` and the fields stay
    None.
    """

    raw: bytes  # the header as it appeared, length octet included
    elements: tuple[InformationElement, ...]
    ref: int | None = None
    total: int | None = None
    seq: int | None = None
    ref16: bool = False


def parse_udh(short_message: bytes) -> tuple[Udh | None, bytes]:
    """Parse the UDH at the start of ``short_message`` (call it when esm_class has UDHI).

    Returns the header and the user data after it; (None, b"") for an empty message.
    Raises `ValueError` for a malformed header: a length running past the data, a
    truncated element, or a concatenation element of the wrong length.
    """
    if not short_message:
        return None, b""
    udhl = short_message[0]
    end = 1 + udhl
    if end > len(short_message):
        raise ValueError(
            f"UDH length {udhl} runs past the {len(short_message) - 1} octets that follow it"
        )
    elements: list[InformationElement] = []
    ref: int | None = None
    total: int | None = None
    seq: int | None = None
    ref16 = False
    pos = 1
    while pos < end:
        if pos + 2 > end:
            raise ValueError(f"UDH element at offset {pos} is truncated")
        iei = short_message[pos]
        iedl = short_message[pos + 1]
        start = pos + 2
        if start + iedl > end:
            raise ValueError(
                f"UDH element 0x{iei:02X} at offset {pos} has length {iedl}, "
                f"past the header's end at {end}"
            )
        data = short_message[start : start + iedl]
        elements.append(InformationElement(iei, data))
        if iei in (IEI_CONCAT_8, IEI_CONCAT_16):
            want = 3 if iei == IEI_CONCAT_8 else 4
            if iedl != want:
                raise ValueError(f"concatenation element 0x{iei:02X} has length {iedl}, not {want}")
            r = data[0] if iei == IEI_CONCAT_8 else int.from_bytes(data[:2], "big")
            t, s = data[-2], data[-1]
            if t >= 1 and 1 <= s <= t:
                ref, total, seq, ref16 = r, t, s, iei == IEI_CONCAT_16
        pos = start + iedl
    udh = Udh(short_message[:end], tuple(elements), ref, total, seq, ref16)
    return udh, short_message[end:]


@dataclass(slots=True, frozen=True)
class ConcatInfo:
    """Where a PDU sits in a concatenated message."""

    ref: int
    total: int
    seq: int
    method: Method
    payload: bytes  # the user data without the UDH
    udh: Udh | None  # the header when the body had one


def _tlv_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | bytearray) and 1 <= len(value) <= 4:
        return int.from_bytes(value, "big")
    return None


def concat_info(
    short_message: bytes, esm_class: int, tlvs: Mapping[int, object]
) -> ConcatInfo | None:
    """The concatenation data of a PDU, or None when it is not a part of a longer message.

    The body is ``short_message``, or the message_payload TLV when short_message is
    empty. With esm_class UDHI (0x40) the body's UDH is read first (a malformed one
    raises `ValueError`); failing a concatenation element there, the SAR TLVs are
    read (integers, or big-endian octets as they arrive undecoded). SAR values out of
    range (total 0, a sequence number 0 or above the total) count as absent.
    """
    body = short_message
    if not body:
        mp = tlvs.get(int(Tag.message_payload))
        if isinstance(mp, bytes | bytearray):
            body = bytes(mp)
    udh: Udh | None = None
    payload = body
    if esm_class & ESM_CLASS_UDHI:
        udh, payload = parse_udh(body)
        if udh is not None and udh.ref is not None and udh.total is not None and udh.seq:
            method: Method = "udh16" if udh.ref16 else "udh8"
            return ConcatInfo(udh.ref, udh.total, udh.seq, method, payload, udh)
    ref = _tlv_int(tlvs.get(int(Tag.sar_msg_ref_num)))
    total = _tlv_int(tlvs.get(int(Tag.sar_total_segments)))
    seq = _tlv_int(tlvs.get(int(Tag.sar_segment_seqnum)))
    if ref is None or total is None or seq is None:
        return None
    if not (0 <= ref <= 0xFFFF and 1 <= total <= MAX_PARTS and 1 <= seq <= total):
        return None
    return ConcatInfo(ref, total, seq, "sar", payload, udh)


# ---------------------------------------------------------------- reassembly


@dataclass(slots=True, frozen=True)
class PartialMessage:
    """The parts received so far of a message that was expired or evicted."""

    key: Hashable
    ref: int
    total: int
    started: float  # the time its first part arrived
    parts: dict[int, bytes] = field(default_factory=dict)  # seq -> payload

    @property
    def missing(self) -> tuple[int, ...]:
        return tuple(s for s in range(1, self.total + 1) if s not in self.parts)


@dataclass(slots=True)
class _Group:
    started: float
    parts: dict[int, bytes]
    size: int = 0


class Reassembler:
    """Joins the parts of concatenated messages, in any order, ignoring duplicates.

    Parts belong together when they share ``key`` (the caller's choice, e.g. the
    session and the originating address), ``ref`` and ``total``. Memory is bounded:
    at most ``max_groups`` incomplete messages and ``max_bytes`` octets of held
    parts; past either bound the oldest incomplete message is dropped, counted in
    ``evicted`` and handed to ``on_evict`` when given. Time is only what the caller
    passes in.
    """

    __slots__ = ("_bytes", "_groups", "evicted", "max_bytes", "max_groups", "on_evict")

    def __init__(
        self,
        *,
        max_groups: int = 10_000,
        max_bytes: int = 16 * 1024 * 1024,
        on_evict: Callable[[PartialMessage], None] | None = None,
    ) -> None:
        if max_groups < 1:
            raise ValueError("max_groups must be at least 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.max_groups = max_groups
        self.max_bytes = max_bytes
        self.on_evict = on_evict
        self.evicted = 0
        self._groups: dict[tuple[Hashable, int, int], _Group] = {}
        self._bytes = 0

    def __len__(self) -> int:
        """Incomplete messages held."""
        return len(self._groups)

    @property
    def pending_bytes(self) -> int:
        """Octets of payload held in incomplete messages."""
        return self._bytes

    def add(
        self, key: Hashable, ref: int, seq: int, total: int, payload: bytes, now: float
    ) -> bytes | None:
        """Add one part; returns the whole payload when this part completes the message.

        Raises `ValueError` when total is outside 1..255 or seq outside 1..total.
        """
        if not 1 <= total <= MAX_PARTS:
            raise ValueError(f"total {total} is outside 1..{MAX_PARTS}")
        if not 1 <= seq <= total:
            raise ValueError(f"part number {seq} is outside 1..{total}")
        if total == 1:
            return payload
        gid = (key, ref, total)
        group = self._groups.get(gid)
        if group is None:
            group = _Group(now, {})
            self._groups[gid] = group
        if seq in group.parts:
            return None
        group.parts[seq] = payload
        group.size += len(payload)
        self._bytes += len(payload)
        if len(group.parts) == total:
            del self._groups[gid]
            self._bytes -= group.size
            return b"".join(group.parts[s] for s in range(1, total + 1))
        while len(self._groups) > self.max_groups or self._bytes > self.max_bytes:
            self._evict_oldest()
        return None

    def _drop(self, gid: tuple[Hashable, int, int]) -> PartialMessage:
        group = self._groups.pop(gid)
        self._bytes -= group.size
        return PartialMessage(gid[0], gid[1], gid[2], group.started, group.parts)

    def _evict_oldest(self) -> None:
        partial = self._drop(next(iter(self._groups)))
        self.evicted += 1
        if self.on_evict is not None:
            self.on_evict(partial)

    def expire(self, now: float, max_age: float) -> list[PartialMessage]:
        """Drop and return the incomplete messages whose first part is older than max_age."""
        stale = [gid for gid, g in self._groups.items() if now - g.started > max_age]
        return [self._drop(gid) for gid in stale]
