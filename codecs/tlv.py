"""SMPP 3.4 optional parameters (TLVs): the standard tag table, decode and encode.

A PDU keeps its TLVs in a ``dict[int, TlvValue]`` whose insertion order is the wire
order. Known tags (every standard 3.4 tag, see :data:`TLV_SPECS`) decode to typed
values: ``int`` for the integer kinds, ``str`` (Latin-1, lossless) for C-octet strings,
``bytes`` for octet strings and ``b""`` for the value-less ``alert_on_message_delivery``.
Unknown tags (vendor tags included) decode to their raw ``bytes`` and re-encode
byte for byte.

Decoding rules (strict unless stated):

* a TLV header (4 octets) or value that runs past the end of the body, or fewer than 4
  octets left over after the last TLV: ESME_RINVOPTPARSTREAM;
* the same tag twice in one PDU: ESME_RINVOPTPARSTREAM (the dict cannot hold both);
* a known tag whose length its type does not allow (an int1 of 2 octets, a
  network_error_code of 2, a receipted_message_id over 65): ESME_RINVPARLEN;
* C-octet string TLVs are tolerant where SMSCs are sloppy: a value without its
  terminating NUL is taken whole, and NUL padding after the terminator is dropped.
  Anything other than NULs after the terminator is ESME_RINVOPTPARAMVAL. Either way
  the string (without NUL) must fit the maximum, so what decodes also re-encodes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from .constants import CommandStatus, Tag
from .exceptions import TlvError

__all__ = [
    "TLV_SPECS",
    "TlvKind",
    "TlvSpec",
    "TlvValue",
    "decode_tlvs",
    "encode_tlv",
    "encode_tlvs",
    "tlv_name",
]

TlvValue: TypeAlias = int | str | bytes
TlvKind: TypeAlias = Literal["int1", "int2", "int4", "cstr", "str", "octets", "empty"]


@dataclass(frozen=True, slots=True)
class TlvSpec:
    """How a known tag is typed on the wire.

    ``min_length``/``max_length`` bound the value's wire length in octets; for a
    C-octet string (``cstr``) they count the terminating NUL, as the specification
    does. ``str`` is a Latin-1 string without a terminator (no standard 3.4 tag uses
    it; it is here for vendor tables).
    """

    tag: int
    name: str
    kind: TlvKind
    min_length: int
    max_length: int


def _spec(tag: Tag, kind: TlvKind, min_length: int | None = None, max_length: int = 0) -> TlvSpec:
    sizes = {"int1": 1, "int2": 2, "int4": 4, "empty": 0}
    if kind in sizes:
        size = sizes[kind]
        return TlvSpec(int(tag), tag.name, kind, size, size)
    if min_length is None:
        min_length = 1 if kind == "cstr" else 0
    return TlvSpec(int(tag), tag.name, kind, min_length, max_length)


# Types and lengths per SMPP 3.4 section 5.3.2.
TLV_SPECS: Final[dict[int, TlvSpec]] = {
    s.tag: s
    for s in (
        _spec(Tag.dest_addr_subunit, "int1"),
        _spec(Tag.dest_network_type, "int1"),
        _spec(Tag.dest_bearer_type, "int1"),
        _spec(Tag.dest_telematics_id, "int2"),
        _spec(Tag.source_addr_subunit, "int1"),
        _spec(Tag.source_network_type, "int1"),
        _spec(Tag.source_bearer_type, "int1"),
        _spec(Tag.source_telematics_id, "int1"),
        _spec(Tag.qos_time_to_live, "int4"),
        _spec(Tag.payload_type, "int1"),
        _spec(Tag.additional_status_info_text, "cstr", 1, 256),
        _spec(Tag.receipted_message_id, "cstr", 1, 65),
        _spec(Tag.ms_msg_wait_facilities, "int1"),
        _spec(Tag.privacy_indicator, "int1"),
        _spec(Tag.source_subaddress, "octets", 2, 23),
        _spec(Tag.dest_subaddress, "octets", 2, 23),
        _spec(Tag.user_message_reference, "int2"),
        _spec(Tag.user_response_code, "int1"),
        _spec(Tag.source_port, "int2"),
        _spec(Tag.destination_port, "int2"),
        _spec(Tag.sar_msg_ref_num, "int2"),
        _spec(Tag.language_indicator, "int1"),
        _spec(Tag.sar_total_segments, "int1"),
        _spec(Tag.sar_segment_seqnum, "int1"),
        _spec(Tag.sc_interface_version, "int1"),
        _spec(Tag.callback_num_pres_ind, "int1"),
        _spec(Tag.callback_num_atag, "octets", 0, 65),
        _spec(Tag.number_of_messages, "int1"),
        _spec(Tag.callback_num, "octets", 4, 19),
        _spec(Tag.dpf_result, "int1"),
        _spec(Tag.set_dpf, "int1"),
        _spec(Tag.ms_availability_status, "int1"),
        _spec(Tag.network_error_code, "octets", 3, 3),
        _spec(Tag.message_payload, "octets", 0, 0xFFFF),
        _spec(Tag.delivery_failure_reason, "int1"),
        _spec(Tag.more_messages_to_send, "int1"),
        _spec(Tag.message_state, "int1"),
        _spec(Tag.ussd_service_op, "octets", 1, 1),
        _spec(Tag.display_time, "int1"),
        _spec(Tag.sms_signal, "int2"),
        _spec(Tag.ms_validity, "int1"),
        _spec(Tag.alert_on_message_delivery, "empty"),
        _spec(Tag.its_reply_type, "int1"),
        _spec(Tag.its_session_info, "octets", 2, 2),
    )
}

_INT1, _INT2, _INT4, _CSTR, _STR, _OCTETS, _EMPTY = range(7)
_KIND_CODE: Final[dict[str, int]] = {
    "int1": _INT1,
    "int2": _INT2,
    "int4": _INT4,
    "cstr": _CSTR,
    "str": _STR,
    "octets": _OCTETS,
    "empty": _EMPTY,
}
# tag -> (kind code, min length, max length); a flat tuple is cheaper than attributes.
_FAST: Final[dict[int, tuple[int, int, int]]] = {
    tag: (_KIND_CODE[s.kind], s.min_length, s.max_length) for tag, s in TLV_SPECS.items()
}

_HH = struct.Struct(">HH")
_HHB = struct.Struct(">HHB")
_RINVOPTPARSTREAM: Final = CommandStatus.ESME_RINVOPTPARSTREAM
_RINVPARLEN: Final = CommandStatus.ESME_RINVPARLEN
_RINVOPTPARAMVAL: Final = CommandStatus.ESME_RINVOPTPARAMVAL


def tlv_name(tag: int) -> str:
    """``receipted_message_id`` for a known tag, ``0x1401`` for any other."""
    spec = TLV_SPECS.get(tag)
    return spec.name if spec is not None else f"0x{tag:04X}"


def decode_tlvs(
    data: bytes,
    offset: int,
    end: int,
    *,
    command_id: int | None = None,
    sequence_number: int | None = None,
) -> dict[int, TlvValue]:
    """Decode the TLVs in ``data[offset:end]`` (insertion order = wire order).

    ``command_id``/``sequence_number`` only label a raised :class:`TlvError`.
    """
    out: dict[int, TlvValue] = {}
    p = offset
    get = _FAST.get
    while p < end:
        if end - p < 4:
            raise TlvError(
                f"{end - p} octet(s) after the last TLV, too few for a TLV header",
                command_status=_RINVOPTPARSTREAM,
                command_id=command_id,
                sequence_number=sequence_number,
            )
        tag = data[p] << 8 | data[p + 1]
        ln = data[p + 2] << 8 | data[p + 3]
        p += 4
        q = p + ln
        if q > end:
            raise TlvError(
                f"TLV {tlv_name(tag)} declares {ln} octet(s) but only {end - p} remain",
                command_status=_RINVOPTPARSTREAM,
                command_id=command_id,
                sequence_number=sequence_number,
                field=tlv_name(tag),
            )
        if tag in out:
            raise TlvError(
                f"TLV {tlv_name(tag)} occurs more than once",
                command_status=_RINVOPTPARSTREAM,
                command_id=command_id,
                sequence_number=sequence_number,
                field=tlv_name(tag),
            )
        spec = get(tag)
        if spec is None:
            out[tag] = data[p:q]
        else:
            kind, lo, hi = spec
            if kind == _INT1:
                if ln != 1:
                    raise _bad_length(tag, ln, command_id, sequence_number)
                out[tag] = data[p]
            elif kind == _CSTR:
                if ln > hi:
                    raise _bad_length(tag, ln, command_id, sequence_number)
                nul = data.find(0, p, q)
                if nul < 0:
                    # Tolerated: the terminator is missing; the string must still fit.
                    if ln >= hi:
                        raise _bad_length(tag, ln, command_id, sequence_number)
                    nul = q
                elif nul != q - 1 and data.count(0, nul, q) != q - nul:
                    raise TlvError(
                        f"TLV {tlv_name(tag)} has data after its NUL terminator",
                        command_status=_RINVOPTPARAMVAL,
                        command_id=command_id,
                        sequence_number=sequence_number,
                        field=tlv_name(tag),
                    )
                out[tag] = data[p:nul].decode("latin-1")
            elif kind in (_INT2, _INT4):
                if ln != lo:
                    raise _bad_length(tag, ln, command_id, sequence_number)
                out[tag] = int.from_bytes(data[p:q], "big")
            elif kind == _OCTETS:
                if ln < lo or ln > hi:
                    raise _bad_length(tag, ln, command_id, sequence_number)
                out[tag] = data[p:q]
            elif kind == _EMPTY:
                if ln:
                    raise _bad_length(tag, ln, command_id, sequence_number)
                out[tag] = b""
            else:  # _STR
                if ln < lo or ln > hi:
                    raise _bad_length(tag, ln, command_id, sequence_number)
                out[tag] = data[p:q].decode("latin-1")
        p = q
    return out


def _bad_length(tag: int, ln: int, command_id: int | None, seq: int | None) -> TlvError:
    spec = TLV_SPECS[tag]
    if spec.min_length == spec.max_length:
        allowed = f"{spec.max_length}"
    elif spec.kind == "cstr":
        allowed = f"at most {spec.max_length} with the NUL"
    else:
        allowed = f"{spec.min_length}..{spec.max_length}"
    return TlvError(
        f"TLV {spec.name} (0x{tag:04X}) has length {ln}, allowed {allowed}",
        command_status=_RINVPARLEN,
        command_id=command_id,
        sequence_number=seq,
        field=spec.name,
    )


def encode_tlv(tag: int, value: TlvValue) -> bytes:
    """One TLV on the wire. Raises ValueError/TypeError naming the TLV when the value
    does not fit its tag's type."""
    spec = _FAST.get(tag)
    if spec is None:
        if not 0 <= tag <= 0xFFFF:
            raise ValueError(f"TLV tag {tag!r} is outside 0..0xFFFF")
        if not isinstance(value, bytes | bytearray):
            raise TypeError(f"TLV {tlv_name(tag)}: unknown tags carry bytes, got {value!r}")
        raw = bytes(value)
        if len(raw) > 0xFFFF:
            raise ValueError(f"TLV {tlv_name(tag)}: value of {len(raw)} octets exceeds 65535")
        return _HH.pack(tag, len(raw)) + raw
    kind, lo, hi = spec
    name = TLV_SPECS[tag].name
    if kind <= _INT4:
        if not isinstance(value, int):
            raise TypeError(f"TLV {name}: expected an int, got {value!r}")
        try:
            raw = value.to_bytes(lo, "big")
        except OverflowError:
            raise ValueError(
                f"TLV {name}: {value!r} does not fit an unsigned {lo}-octet integer"
            ) from None
    elif kind in (_CSTR, _STR):
        if not isinstance(value, str):
            raise TypeError(f"TLV {name}: expected a str, got {value!r}")
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"TLV {name}: {value!r} is not Latin-1 text") from None
        if kind == _CSTR:
            if 0 in raw:
                raise ValueError(f"TLV {name}: a C-octet string cannot contain NUL")
            raw += b"\0"
        if not lo <= len(raw) <= hi:
            raise ValueError(
                f"TLV {name}: {len(raw)} octets on the wire, allowed {lo}..{hi} ({value!r})"
            )
    else:
        if not isinstance(value, bytes | bytearray):
            raise TypeError(f"TLV {name}: expected bytes, got {value!r}")
        raw = bytes(value)
        if not lo <= len(raw) <= hi:
            raise ValueError(f"TLV {name}: {len(raw)} octets, allowed {lo}..{hi}")
    return _HH.pack(tag, len(raw)) + raw


def encode_tlvs(tlvs: dict[int, TlvValue]) -> bytes:
    """The TLVs in dict order. Raises ValueError/TypeError naming a TLV that does not
    fit its type."""
    if not tlvs:
        return b""
    parts: list[bytes] = []
    append = parts.append
    get = _FAST.get
    pack = _HH.pack
    for tag, value in tlvs.items():
        # Fast paths for well-formed values; anything else goes through encode_tlv,
        # which either encodes it or raises the precise error.
        spec = get(tag)
        try:
            if spec is None:
                if type(value) is bytes and len(value) <= 0xFFFF:
                    append(pack(tag, len(value)))
                    append(value)
                    continue
            else:
                kind, lo, hi = spec
                if kind == _INT1 and type(value) is int:
                    append(_HHB.pack(tag, 1, value))
                    continue
                if kind == _CSTR and type(value) is str:
                    raw = value.encode("latin-1")
                    if len(raw) < hi and 0 not in raw:
                        append(pack(tag, len(raw) + 1))
                        append(raw)
                        append(b"\0")
                        continue
                elif kind == _OCTETS and type(value) is bytes and lo <= len(value) <= hi:
                    append(pack(tag, len(value)))
                    append(value)
                    continue
        except (struct.error, UnicodeEncodeError):
            pass
        append(encode_tlv(tag, value))
    return b"".join(parts)
