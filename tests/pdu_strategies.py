"""Hypothesis strategies for every SMPP PDU class and for TLV dicts.

``pdus()`` draws any PDU; ``pdu_of(cls)`` one class. ``ascii_only=True`` keeps every
string printable ASCII (for peers that read strings as ASCII), ``tlv_tags`` limits
the known tags drawn, ``unknown_tlvs`` adds tags outside the standard table.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from smppcodecs.constants import RESP_BIT
from smppcodecs.pdu import (
    LAYOUTS,
    DistributionList,
    Pdu,
    SmeAddress,
    UnsuccessSme,
)
from smppcodecs.tlv import TLV_SPECS, TlvValue

ALL_CLASSES: list[type[Pdu]] = list(LAYOUTS)
UNKNOWN_TAGS = st.integers(0, 0xFFFF).filter(lambda t: t not in TLV_SPECS)


def cstring(max_chars: int, *, ascii_only: bool = False) -> st.SearchStrategy[str]:
    """A C-octet string value (no NUL) of at most ``max_chars`` characters."""
    if ascii_only:
        chars = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    else:
        chars = st.characters(min_codepoint=1, max_codepoint=0xFF)
    return st.text(alphabet=chars, max_size=max_chars)


def time_string(*, ascii_only: bool = False) -> st.SearchStrategy[str]:
    """An SMPP time field: empty, or 16 characters (absolute or relative form)."""
    absolute = st.builds(
        lambda y, mo, d, h, mi, s, t, nn, sign: (
            f"{y:02d}{mo:02d}{d:02d}{h:02d}{mi:02d}{s:02d}{t}{nn:02d}{sign}"
        ),
        st.integers(0, 99),
        st.integers(1, 12),
        st.integers(1, 28),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
        st.integers(0, 9),
        st.integers(0, 48),
        st.sampled_from("+-"),
    )
    relative = st.integers(0, 999_999_999_999).map(lambda v: f"{v:012d}000R")
    choices = [st.just(""), absolute, relative]
    if not ascii_only:
        choices.append(
            st.text(
                alphabet=st.characters(min_codepoint=1, max_codepoint=0xFF),
                min_size=16,
                max_size=16,
            )
        )
    return st.one_of(choices)


u8 = st.integers(0, 255)
u32 = st.integers(0, 0xFFFFFFFF)


def tlv_value(
    tag: int, *, ascii_only: bool = False, max_payload: int = 300
) -> st.SearchStrategy[TlvValue]:
    """A value that fits the known tag's type."""
    spec = TLV_SPECS[tag]
    if spec.kind == "int1":
        return u8
    if spec.kind == "int2":
        return st.integers(0, 0xFFFF)
    if spec.kind == "int4":
        return u32
    if spec.kind == "cstr":
        return cstring(spec.max_length - 1, ascii_only=ascii_only)
    if spec.kind == "str":
        return cstring(spec.max_length, ascii_only=ascii_only)
    if spec.kind == "empty":
        return st.just(b"")
    return st.binary(min_size=spec.min_length, max_size=min(spec.max_length, max_payload))


def tlv_dicts(
    *,
    tags: list[int] | None = None,
    unknown: bool = True,
    ascii_only: bool = False,
    max_size: int = 5,
) -> st.SearchStrategy[dict[int, TlvValue]]:
    """A TLV dict (insertion order = wire order) of known and unknown tags."""
    known = sorted(TLV_SPECS) if tags is None else tags
    items: list[st.SearchStrategy[tuple[int, TlvValue]]] = []
    if known:
        items.append(
            st.sampled_from(known).flatmap(
                lambda t: tlv_value(t, ascii_only=ascii_only).map(lambda v: (t, v))
            )
        )
    if unknown:
        items.append(st.tuples(UNKNOWN_TAGS, st.binary(max_size=40)))
    if not items:
        return st.just({})
    return st.lists(st.one_of(items), unique_by=lambda kv: kv[0], max_size=max_size).map(dict)


def sme_addresses(*, ascii_only: bool = False) -> st.SearchStrategy[SmeAddress | DistributionList]:
    return st.one_of(
        st.builds(SmeAddress, u8, u8, cstring(20, ascii_only=ascii_only)),
        st.builds(DistributionList, cstring(20, ascii_only=ascii_only)),
    )


def unsuccess_smes(*, ascii_only: bool = False) -> st.SearchStrategy[UnsuccessSme]:
    return st.builds(UnsuccessSme, u8, u8, cstring(20, ascii_only=ascii_only), u32)


def field_value(kind: str, maximum: int, *, ascii_only: bool = False) -> st.SearchStrategy[Any]:
    if kind == "i1":
        return u8
    if kind == "cs":
        return cstring(maximum - 1, ascii_only=ascii_only)
    if kind == "tm":
        return time_string(ascii_only=ascii_only)
    if kind == "sm":
        return st.binary(max_size=254)
    if kind == "dests":
        return st.lists(sme_addresses(ascii_only=ascii_only), max_size=6)
    if kind == "unsucc":
        return st.lists(unsuccess_smes(ascii_only=ascii_only), max_size=6)
    raise AssertionError(kind)


def pdu_of(
    cls: type[Pdu],
    *,
    ascii_only: bool = False,
    tlv_tags: list[int] | None = None,
    unknown_tlvs: bool = True,
    statuses: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[Pdu]:
    """Any instance of ``cls`` whose fields fit SMPP 3.4's limits."""
    fields = {
        name: field_value(kind, maximum, ascii_only=ascii_only)
        for kind, name, maximum in LAYOUTS[cls]
    }
    if statuses is None:
        statuses = (
            st.one_of(st.just(0), st.sampled_from([0x08, 0x0B, 0x14, 0x58, 0xFE, 0x400]), u32)
            if cls.command_id & RESP_BIT
            else st.just(0)
        )
    return st.builds(
        cls,
        sequence_number=u32,
        command_status=statuses,
        tlvs=tlv_dicts(tags=tlv_tags, unknown=unknown_tlvs, ascii_only=ascii_only),
        **fields,
    )


def pdus(**kwargs: Any) -> st.SearchStrategy[Pdu]:
    """Any PDU of any class."""
    return st.one_of([pdu_of(cls, **kwargs) for cls in ALL_CLASSES])
