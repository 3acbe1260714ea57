"""SMPP 3.4 PDUs: typed classes, ``decode(frame) -> Pdu`` and ``encode(pdu) -> bytes``.

Each PDU type is a mutable, slotted dataclass. Its fields are the specification's
mandatory body fields under the specification's names, with defaults (0, ``""``,
``b""``), so every class can be built from keywords alone::

    SubmitSm(sequence_number=1, source_addr="Acme", destination_addr="447911123456",
             short_message=b"hi", registered_delivery=1)

Common to all: ``sequence_number``, ``command_status`` (default 0) and ``tlvs``
(optional parameters, ``dict[int, TlvValue]`` in wire order; see :mod:`.tlv`).
C-octet string fields are ``str`` and travel as Latin-1, which is lossless for any
octet other than NUL. Length fields that only describe other fields (``sm_length``,
``number_of_dests``, ``no_unsuccess``) are never stored: they are derived on encode.

Field limits follow SMPP 3.4 (lengths in characters, without the NUL): system_id 15,
password 8, system_type 12, address_range 40, service_type 5, message_id 64,
source_addr/destination_addr 20 (64 in data_sm and alert_notification, whose
esme_addr is 64 too), dl_name 20, short_message 254 octets, and the time fields
schedule_delivery_time/validity_period/final_date empty or exactly 16 characters.
``encode`` refuses values that break them with a ``ValueError`` (``TypeError`` for a
value of the wrong type) naming the field; ``decode`` raises the typed
:class:`~.exceptions.PduError` subclasses.

Decoding is strict for requests and tolerant for responses, where SMSCs are sloppy:

* A ``*_resp`` body may stop at any field boundary; the missing fields take their
  defaults. This covers the bare 16-octet header that SMPP 3.4 prescribes for a
  response with a non-zero command_status and the 17-octet form with a single NUL
  ``message_id`` (SMPP 3.3 habit) alike.
* In a ``*_resp``, a last C-octet string that runs to the end of the PDU without its
  NUL is accepted as if the NUL were there (within the field's maximum length).
* Anything else malformed (a request's missing NUL, an over-long field, a body cut
  short, an ``sm_length`` pointing past the end) raises :class:`FieldError` with the
  status of the field, and the TLV part raises :class:`TlvError`.

Encoding a response: SMPP 3.4 writes of submit_sm_resp that "the PDU Body is not
returned if the command_status field contains a non-zero value", and implementations
apply the same rule to every response. So a response whose command_status is
non-zero, whose body fields all hold their defaults and which has no TLVs is encoded
as the bare 16-octet header; smpplib and node-smpp both read that form (the
cross-check tests prove it). A response that carries something (an error
``data_sm_resp`` with a delivery_failure_reason TLV, say) is encoded in full, so
nothing is ever dropped, and a successful response always has its body.

Speed: the per-class decoders and encoders are generated from the field tables at
import time (straight-line code, one Latin-1 decode per PDU, one ``str.index`` per
C-octet string, attributes stored without calling ``__init__``). When a fast decoder
meets anything unusual it hands the frame to the generic field-by-field decoder,
which gives the precise error or applies the tolerance rules above; both agree on
every input (the property tests check it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Final, Self

from .constants import HEADER_LENGTH, RESP_BIT, CommandId, status_name
from .exceptions import FieldError, InvalidCommandId, InvalidCommandLength
from .tlv import TlvValue, decode_tlvs, encode_tlvs, tlv_name

__all__ = [
    "PDU_CLASSES",
    "AlertNotification",
    "BindReceiver",
    "BindReceiverResp",
    "BindTransceiver",
    "BindTransceiverResp",
    "BindTransmitter",
    "BindTransmitterResp",
    "CancelSm",
    "CancelSmResp",
    "DataSm",
    "DataSmResp",
    "DeliverSm",
    "DeliverSmResp",
    "DistributionList",
    "EnquireLink",
    "EnquireLinkResp",
    "GenericNack",
    "Outbind",
    "Pdu",
    "QuerySm",
    "QuerySmResp",
    "ReplaceSm",
    "ReplaceSmResp",
    "SmeAddress",
    "SubmitMulti",
    "SubmitMultiResp",
    "SubmitSm",
    "SubmitSmResp",
    "Unbind",
    "UnbindResp",
    "UnsuccessSme",
    "decode",
    "encode",
    "generic_nack",
]

MAX_SHORT_MESSAGE: Final = 254
MAX_DESTS: Final = 254
_HDR = struct.Struct(">IIII")
_U32_MAX: Final = 0xFFFFFFFF


# --------------------------------------------------------------------------- classes


@dataclass(slots=True)
class SmeAddress:
    """A submit_multi destination that is an SME address (dest_flag 1)."""

    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""


@dataclass(slots=True)
class DistributionList:
    """A submit_multi destination that is a distribution list name (dest_flag 2)."""

    dl_name: str = ""


@dataclass(slots=True)
class UnsuccessSme:
    """One failed destination in a submit_multi_resp."""

    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    error_status_code: int = 0


@dataclass(slots=True, kw_only=True, repr=False)
class Pdu:
    """Base of every PDU class: the header fields and the TLVs."""

    command_id: ClassVar[int]
    command_name: ClassVar[str]

    sequence_number: int
    command_status: int = 0
    tlvs: dict[int, TlvValue] = field(default_factory=dict)

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESP_BIT)

    def encode(self) -> bytes:
        """The PDU on the wire, header included."""
        return _ENCODERS[self.command_id](self)

    def copy(self, **changes: Any) -> Self:
        """A copy with some fields changed (like ``dataclasses.replace``). The TLV dict
        and destination lists are copied too, so changing the copy leaves the
        original alone."""
        new: Self = _COPIERS[self.command_id](self)
        if changes:
            allowed = _FIELD_NAMES[self.command_id]
            for name, value in changes.items():
                if name not in allowed:
                    raise TypeError(f"{type(self).__name__} has no field {name!r}")
                setattr(new, name, value)
        return new

    def response(self, **fields: Any) -> Pdu:
        """The matching response with the same sequence_number (``command_status=``
        keyword, default 0, and any body fields). Only requests have one."""
        resp_cls = _RESPONSE_CLASS.get(self.command_id)
        if resp_cls is None:
            raise TypeError(f"{type(self).__name__} has no response PDU")
        return resp_cls(sequence_number=self.sequence_number, **fields)

    def __repr__(self) -> str:
        parts = [f"sequence_number={self.sequence_number!r}"]
        status = self.command_status
        if status:
            shown = status_name(status) if isinstance(status, int) else repr(status)
            parts.append(f"command_status={shown}")
        for name, default in _REPR_DEFAULTS[self.command_id]:
            value = getattr(self, name)
            if value != default:
                parts.append(f"{name}={value!r}")
        if self.tlvs:
            shown_tlvs = ", ".join(
                f"{tlv_name(t) if isinstance(t, int) else repr(t)}: {v!r}"
                for t, v in self.tlvs.items()
            )
            parts.append(f"tlvs={{{shown_tlvs}}}")
        return f"{type(self).__name__}({', '.join(parts)})"


@dataclass(slots=True, kw_only=True, repr=False)
class GenericNack(Pdu):
    """generic_nack: the answer to a PDU that could not be parsed or is unknown."""

    command_id: ClassVar[int] = CommandId.GENERIC_NACK
    command_name: ClassVar[str] = "generic_nack"


@dataclass(slots=True, kw_only=True, repr=False)
class _BindRequest(Pdu):
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""


@dataclass(slots=True, kw_only=True, repr=False)
class _BindResponse(Pdu):
    system_id: str = ""


@dataclass(slots=True, kw_only=True, repr=False)
class BindTransmitterResp(_BindResponse):
    """bind_transmitter_resp: system_id; the SMSC may add an sc_interface_version TLV."""

    command_id: ClassVar[int] = CommandId.BIND_TRANSMITTER_RESP
    command_name: ClassVar[str] = "bind_transmitter_resp"


@dataclass(slots=True, kw_only=True, repr=False)
class BindTransmitter(_BindRequest):
    """bind_transmitter."""

    command_id: ClassVar[int] = CommandId.BIND_TRANSMITTER
    command_name: ClassVar[str] = "bind_transmitter"

    def response(self, **fields: Any) -> BindTransmitterResp:
        return BindTransmitterResp(sequence_number=self.sequence_number, **fields)


@dataclass(slots=True, kw_only=True, repr=False)
class BindReceiverResp(_BindResponse):
    """bind_receiver_resp."""

    command_id: ClassVar[int] = CommandId.BIND_RECEIVER_RESP
    command_name: ClassVar[str] = "bind_receiver_resp"


@dataclass(slots=True, kw_only=True, repr=False)
class BindReceiver(_BindRequest):
    """bind_receiver."""

    command_id: ClassVar[int] = CommandId.BIND_RECEIVER
    command_name: ClassVar[str] = "bind_receiver"

    def response(self, **fields: Any) -> BindReceiverResp:
        return BindReceiverResp(sequence_number=self.sequence_number, **fields)


@dataclass(slots=True, kw_only=True, repr=False)
class BindTransceiverResp(_BindResponse):
    """bind_transceiver_resp."""

    command_id: ClassVar[int] = CommandId.BIND_TRANSCEIVER_RESP
    command_name: ClassVar[str] = "bind_transceiver_resp"


@dataclass(slots=True, kw_only=True, repr=False)
class BindTransceiver(_BindRequest):
    """bind_transceiver."""

    command_id: ClassVar[int] = CommandId.BIND_TRANSCEIVER
    command_name: ClassVar[str] = "bind_transceiver"

    def response(self, **fields: Any) -> BindTransceiverResp:
        return BindTransceiverResp(sequence_number=self.sequence_number, **fields)


@dataclass(slots=True, kw_only=True, repr=False)
class Outbind(Pdu):
    """outbind (SMSC to ESME; no response PDU)."""

    command_id: ClassVar[int] = CommandId.OUTBIND
    command_name: ClassVar[str] = "outbind"

    system_id: str = ""
    password: str = ""


@dataclass(slots=True, kw_only=True, repr=False)
class UnbindResp(Pdu):
    """unbind_resp."""

    command_id: ClassVar[int] = CommandId.UNBIND_RESP
    command_name: ClassVar[str] = "unbind_resp"


@dataclass(slots=True, kw_only=True, repr=False)
class Unbind(Pdu):
    """unbind."""

    command_id: ClassVar[int] = CommandId.UNBIND
    command_name: ClassVar[str] = "unbind"

    def response(self, **fields: Any) -> UnbindResp:
        return UnbindResp(sequence_number=self.sequence_number, **fields)


@dataclass(slots=True, kw_only=True, repr=False)
class _ShortMessageFields(Pdu):
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""


@dataclass(slots=True, kw_only=True, repr=False)
class _MessageIdResponse(Pdu):
    message_id: str = ""


@dataclass(slots=True, kw_only=True, repr=False)
class SubmitSmResp(_MessageIdResponse):
    """submit_sm_resp."""

    command_id: ClassVar[int] = CommandId.SUBMIT_SM_RESP
    command_name: ClassVar[str] = "submit_sm_resp"


@dataclass(slots=True, kw_only=True, repr=False)
class SubmitSm(_ShortMessageFields):
    """submit_sm. ``sm_length`` is derived from ``short_message`` on encode."""

    command_id: ClassVar[int] = CommandId.SUBMIT_SM
    command_name: ClassVar[str] = "submit_sm"

    def response(self, **fields: Any) -> SubmitSmResp:
        return SubmitSmResp(sequence_number=self.sequence_number, **fields)


@dataclass(slots=True, kw_only=True, repr=False)
class DeliverSmResp(_MessageIdResponse):
    """deliver_sm_resp (message_id is unused in 3.4 and normally empty)."""

    command_id: ClassVar[int] = CommandId.DELIVER_SM_RESP
    command_name: ClassVar[str] = "deliver_sm_resp"


@dataclass(slots=True, kw_only=True, repr=False)
class DeliverSm(_ShortMessageFields):
    """deliver_sm: mobile-originated messages and delivery receipts."""

    command_id: ClassVar[int] = CommandId.DELIVER_SM
    command_name: ClassVar[str] = "deliver_sm"

    def response(self, **fields: Any) -> DeliverSmResp:
        return DeliverSmResp(sequence_number=self.sequence_number, **fields)


@dataclass(slots=True, kw_only=True, repr=False)
class SubmitMultiResp(Pdu):
    """submit_multi_resp. ``no_unsuccess`` is derived from ``unsuccess_smes``."""

    command_id: ClassVar[int] = CommandId.SUBMIT_MULTI_RESP
    command_name: ClassVar[str] = "submit_multi_resp"

    message_id: str = ""
    unsuccess_smes: list[UnsuccessSme] = field(default_factory=list)


@dataclass(slots=True, kw_only=True, repr=False)
class SubmitMulti(Pdu):
    """submit_multi. ``number_of_dests`` is derived from ``dest_addresses`` on encode."""

    command_id: ClassVar[int] = CommandId.SUBMIT_MULTI
    command_name: ClassVar[str] = "submit_multi"

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addresses: list[SmeAddress | DistributionList] = field(default_factory=list)
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""

    def response(self, **fields: Any) -> SubmitMultiResp:
        return SubmitMultiResp(sequence_number=self.sequence_number, **fields)


@dataclass(slots=True, kw_only=True, repr=False)
class DataSmResp(_MessageIdResponse):
    """data_sm_resp (may carry delivery_failure_reason, network_error_code,
    additional_status_info_text and dpf_result TLVs)."""

    command_id: ClassVar[int] = CommandId.DATA_SM_RESP
    command_name: ClassVar[str] = "data_sm_resp"


@dataclass(slots=True, kw_only=True, repr=False)
class DataSm(Pdu):
    """data_sm: the message itself travels in the message_payload TLV."""

    command_id: ClassVar[int] = CommandId.DATA_SM
    command_name: ClassVar[str] = "data_sm"

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0

    def response(self, **fields: Any) -> DataSmResp:
        return DataSmResp(sequence_number=self.sequence_number, **fields)


@dataclass(slots=True, kw_only=True, repr=False)
class QuerySmResp(Pdu):
    """query_sm_resp."""

    command_id: ClassVar[int] = CommandId.QUERY_SM_RESP
    command_name: ClassVar[str] = "query_sm_resp"

    message_id: str = ""
    final_date: str = ""
    message_state: int = 0
    error_code: int = 0


@dataclass(slots=True, kw_only=True, repr=False)
class QuerySm(Pdu):
    """query_sm."""

    command_id: ClassVar[int] = CommandId.QUERY_SM
    command_name: ClassVar[str] = "query_sm"

    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""

    def response(self, **fields: Any) -> QuerySmResp:
        return QuerySmResp(sequence_number=self.sequence_number, **fields)


@dataclass(slots=True, kw_only=True, repr=False)
class CancelSmResp(Pdu):
    """cancel_sm_resp."""

    command_id: ClassVar[int] = CommandId.CANCEL_SM_RESP
    command_name: ClassVar[str] = "cancel_sm_resp"


@dataclass(slots=True, kw_only=True, repr=False)
class CancelSm(Pdu):
    """cancel_sm."""

    command_id: ClassVar[int] = CommandId.CANCEL_SM
    command_name: ClassVar[str] = "cancel_sm"

    service_type: str = ""
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""

    def response(self, **fields: Any) -> CancelSmResp:
        return CancelSmResp(sequence_number=self.sequence_number, **fields)


@dataclass(slots=True, kw_only=True, repr=False)
class ReplaceSmResp(Pdu):
    """replace_sm_resp."""

    command_id: ClassVar[int] = CommandId.REPLACE_SM_RESP
    command_name: ClassVar[str] = "replace_sm_resp"


@dataclass(slots=True, kw_only=True, repr=False)
class ReplaceSm(Pdu):
    """replace_sm. ``sm_length`` is derived from ``short_message`` on encode."""

    command_id: ClassVar[int] = CommandId.REPLACE_SM
    command_name: ClassVar[str] = "replace_sm"

    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""

    def response(self, **fields: Any) -> ReplaceSmResp:
        return ReplaceSmResp(sequence_number=self.sequence_number, **fields)


@dataclass(slots=True, kw_only=True, repr=False)
class EnquireLinkResp(Pdu):
    """enquire_link_resp."""

    command_id: ClassVar[int] = CommandId.ENQUIRE_LINK_RESP
    command_name: ClassVar[str] = "enquire_link_resp"


@dataclass(slots=True, kw_only=True, repr=False)
class EnquireLink(Pdu):
    """enquire_link."""

    command_id: ClassVar[int] = CommandId.ENQUIRE_LINK
    command_name: ClassVar[str] = "enquire_link"

    def response(self, **fields: Any) -> EnquireLinkResp:
        return EnquireLinkResp(sequence_number=self.sequence_number, **fields)


@dataclass(slots=True, kw_only=True, repr=False)
class AlertNotification(Pdu):
    """alert_notification (SMSC to ESME; no response PDU)."""

    command_id: ClassVar[int] = CommandId.ALERT_NOTIFICATION
    command_name: ClassVar[str] = "alert_notification"

    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    esme_addr_ton: int = 0
    esme_addr_npi: int = 0
    esme_addr: str = ""


def generic_nack(sequence_number: int, command_status: int) -> GenericNack:
    """A generic_nack answering ``sequence_number`` with ``command_status``."""
    return GenericNack(sequence_number=sequence_number, command_status=command_status)


# ---------------------------------------------------------------------- field tables

# Field kinds: I1 one-octet integer; CS C-octet string (max length counts the NUL);
# TM time string (empty or 16 characters); SM sm_length + short_message;
# DESTS number_of_dests + dest_address list; UNSUCC no_unsuccess + unsuccess_sme list.
I1, CS, TM, SM, DESTS, UNSUCC = "i1", "cs", "tm", "sm", "dests", "unsucc"
_Field = tuple[str, str, int]  # (kind, name, maximum octets on the wire)

_BIND: Final[tuple[_Field, ...]] = (
    (CS, "system_id", 16),
    (CS, "password", 9),
    (CS, "system_type", 13),
    (I1, "interface_version", 1),
    (I1, "addr_ton", 1),
    (I1, "addr_npi", 1),
    (CS, "address_range", 41),
)
_SHORT_MESSAGE: Final[tuple[_Field, ...]] = (
    (CS, "service_type", 6),
    (I1, "source_addr_ton", 1),
    (I1, "source_addr_npi", 1),
    (CS, "source_addr", 21),
    (I1, "dest_addr_ton", 1),
    (I1, "dest_addr_npi", 1),
    (CS, "destination_addr", 21),
    (I1, "esm_class", 1),
    (I1, "protocol_id", 1),
    (I1, "priority_flag", 1),
    (TM, "schedule_delivery_time", 17),
    (TM, "validity_period", 17),
    (I1, "registered_delivery", 1),
    (I1, "replace_if_present_flag", 1),
    (I1, "data_coding", 1),
    (I1, "sm_default_msg_id", 1),
    (SM, "short_message", 255),
)
_MESSAGE_ID: Final[tuple[_Field, ...]] = ((CS, "message_id", 65),)

LAYOUTS: Final[dict[type[Pdu], tuple[_Field, ...]]] = {
    GenericNack: (),
    BindTransmitter: _BIND,
    BindReceiver: _BIND,
    BindTransceiver: _BIND,
    BindTransmitterResp: ((CS, "system_id", 16),),
    BindReceiverResp: ((CS, "system_id", 16),),
    BindTransceiverResp: ((CS, "system_id", 16),),
    Outbind: ((CS, "system_id", 16), (CS, "password", 9)),
    Unbind: (),
    UnbindResp: (),
    SubmitSm: _SHORT_MESSAGE,
    SubmitSmResp: _MESSAGE_ID,
    DeliverSm: _SHORT_MESSAGE,
    DeliverSmResp: _MESSAGE_ID,
    SubmitMulti: (
        (CS, "service_type", 6),
        (I1, "source_addr_ton", 1),
        (I1, "source_addr_npi", 1),
        (CS, "source_addr", 21),
        (DESTS, "dest_addresses", 1 + MAX_DESTS * 24),
        *_SHORT_MESSAGE[7:],
    ),
    SubmitMultiResp: ((CS, "message_id", 65), (UNSUCC, "unsuccess_smes", 1 + 255 * 28)),
    DataSm: (
        (CS, "service_type", 6),
        (I1, "source_addr_ton", 1),
        (I1, "source_addr_npi", 1),
        (CS, "source_addr", 65),
        (I1, "dest_addr_ton", 1),
        (I1, "dest_addr_npi", 1),
        (CS, "destination_addr", 65),
        (I1, "esm_class", 1),
        (I1, "registered_delivery", 1),
        (I1, "data_coding", 1),
    ),
    DataSmResp: _MESSAGE_ID,
    QuerySm: (
        (CS, "message_id", 65),
        (I1, "source_addr_ton", 1),
        (I1, "source_addr_npi", 1),
        (CS, "source_addr", 21),
    ),
    QuerySmResp: (
        (CS, "message_id", 65),
        (TM, "final_date", 17),
        (I1, "message_state", 1),
        (I1, "error_code", 1),
    ),
    CancelSm: (
        (CS, "service_type", 6),
        (CS, "message_id", 65),
        (I1, "source_addr_ton", 1),
        (I1, "source_addr_npi", 1),
        (CS, "source_addr", 21),
        (I1, "dest_addr_ton", 1),
        (I1, "dest_addr_npi", 1),
        (CS, "destination_addr", 21),
    ),
    CancelSmResp: (),
    ReplaceSm: (
        (CS, "message_id", 65),
        (I1, "source_addr_ton", 1),
        (I1, "source_addr_npi", 1),
        (CS, "source_addr", 21),
        (TM, "schedule_delivery_time", 17),
        (TM, "validity_period", 17),
        (I1, "registered_delivery", 1),
        (I1, "sm_default_msg_id", 1),
        (SM, "short_message", 255),
    ),
    ReplaceSmResp: (),
    EnquireLink: (),
    EnquireLinkResp: (),
    AlertNotification: (
        (I1, "source_addr_ton", 1),
        (I1, "source_addr_npi", 1),
        (CS, "source_addr", 65),
        (I1, "esme_addr_ton", 1),
        (I1, "esme_addr_npi", 1),
        (CS, "esme_addr", 65),
    ),
}

PDU_CLASSES: Final[dict[int, type[Pdu]]] = {cls.command_id: cls for cls in LAYOUTS}

_RESPONSE_CLASS: Final[dict[int, type[Pdu]]] = {
    cid: PDU_CLASSES[cid | RESP_BIT]
    for cid in PDU_CLASSES
    if not cid & RESP_BIT and cid | RESP_BIT in PDU_CLASSES
}
_LAYOUT_BY_ID: Final[dict[int, tuple[_Field, ...]]] = {
    cls.command_id: layout for cls, layout in LAYOUTS.items()
}
_FIELD_NAMES: Final[dict[int, frozenset[str]]] = {
    cls.command_id: frozenset(f.name for f in fields(cls)) for cls in LAYOUTS
}
_REPR_DEFAULTS: Final[dict[int, tuple[tuple[str, object], ...]]] = {}


def _check_tables() -> None:
    """The layout tables and the dataclasses must name the same fields in order."""
    for cls, layout in LAYOUTS.items():
        names = [f.name for f in fields(cls)][3:]
        if names != [f[1] for f in layout]:
            raise AssertionError(f"{cls.__name__}: layout {layout} does not match {names}")
        defaults: list[tuple[str, object]] = []
        probe = cls(sequence_number=0)
        for name in names:
            defaults.append((name, getattr(probe, name)))
        _REPR_DEFAULTS[cls.command_id] = tuple(defaults)


_check_tables()


# ---------------------------------------------------------------- the generic decoder


class _Slow(Exception):
    """Internal: the fast path met something unusual; take the generic path."""


def _cstring(
    b: bytes, p: int, n: int, name: str, maximum: int, cid: int, seq: int, tolerant: bool
) -> tuple[str, int]:
    """Read a C-octet string at ``p``; return (value, position after the NUL)."""
    if p >= n:
        raise FieldError(
            f"body ends before {name}", field=name, command_id=cid, sequence_number=seq
        )
    i = b.find(0, p, n)
    if i < 0:
        if not tolerant:
            raise FieldError(
                f"{name} has no NUL terminator",
                field=name,
                command_id=cid,
                sequence_number=seq,
            )
        i = n  # a response's last string may run to the end without its NUL
    if i - p > maximum - 1:
        raise FieldError(
            f"{name} is {i - p} octets long, the maximum is {maximum - 1}",
            field=name,
            command_id=cid,
            sequence_number=seq,
        )
    return b[p:i].decode("latin-1"), i + 1


def _u8(b: bytes, p: int, n: int, name: str, cid: int, seq: int) -> int:
    if p >= n:
        raise FieldError(
            f"body ends before {name}", field=name, command_id=cid, sequence_number=seq
        )
    return b[p]


def _dec_dests(
    b: bytes, p: int, n: int, cid: int, seq: int
) -> tuple[list[SmeAddress | DistributionList], int]:
    count = _u8(b, p, n, "number_of_dests", cid, seq)
    if count > MAX_DESTS:
        raise FieldError(
            f"number_of_dests is {count}, the maximum is {MAX_DESTS}",
            field="number_of_dests",
            command_id=cid,
            sequence_number=seq,
        )
    p += 1
    out: list[SmeAddress | DistributionList] = []
    for _ in range(count):
        flag = _u8(b, p, n, "dest_flag", cid, seq)
        p += 1
        if flag == 1:
            ton = _u8(b, p, n, "dest_addr_ton", cid, seq)
            npi = _u8(b, p + 1, n, "dest_addr_npi", cid, seq)
            addr, p = _cstring(b, p + 2, n, "destination_addr", 21, cid, seq, False)
            out.append(SmeAddress(ton, npi, addr))
        elif flag == 2:
            name, p = _cstring(b, p, n, "dl_name", 21, cid, seq, False)
            out.append(DistributionList(name))
        else:
            raise FieldError(
                f"dest_flag is {flag}, expected 1 (SME address) or 2 (distribution list)",
                field="dest_flag",
                command_id=cid,
                sequence_number=seq,
            )
    return out, p


def _dec_unsuccess(b: bytes, p: int, n: int, cid: int, seq: int) -> tuple[list[UnsuccessSme], int]:
    count = _u8(b, p, n, "no_unsuccess", cid, seq)
    p += 1
    out: list[UnsuccessSme] = []
    for _ in range(count):
        ton = _u8(b, p, n, "dest_addr_ton", cid, seq)
        npi = _u8(b, p + 1, n, "dest_addr_npi", cid, seq)
        addr, p = _cstring(b, p + 2, n, "destination_addr", 21, cid, seq, False)
        if p + 4 > n:
            raise FieldError(
                "body ends inside error_status_code",
                field="error_status_code",
                command_id=cid,
                sequence_number=seq,
            )
        out.append(UnsuccessSme(ton, npi, addr, int.from_bytes(b[p : p + 4], "big")))
        p += 4
    return out, p


def _slow_decode(cls: type[Pdu], b: bytes, status: int, seq: int) -> Pdu:
    """Field-by-field decoder: the reference semantics (errors and tolerance)."""
    cid = cls.command_id
    n = len(b)
    is_resp = bool(cid & RESP_BIT)
    values: dict[str, Any] = {}
    p = HEADER_LENGTH
    for kind, name, maximum in _LAYOUT_BY_ID[cid]:
        if is_resp and p >= n:
            break  # a response body may stop at any field boundary
        if kind == I1:
            values[name] = _u8(b, p, n, name, cid, seq)
            p += 1
        elif kind == CS:
            values[name], p = _cstring(b, p, n, name, maximum, cid, seq, is_resp)
        elif kind == TM:
            value, p = _cstring(b, p, n, name, maximum, cid, seq, is_resp)
            if value and len(value) != 16:
                raise FieldError(
                    f"{name} must be empty or 16 characters, got {value!r}",
                    field=name,
                    command_id=cid,
                    sequence_number=seq,
                )
            values[name] = value
        elif kind == SM:
            k = _u8(b, p, n, "sm_length", cid, seq)
            if k > MAX_SHORT_MESSAGE:
                raise FieldError(
                    f"sm_length is {k}, the maximum is {MAX_SHORT_MESSAGE}",
                    field="sm_length",
                    command_id=cid,
                    sequence_number=seq,
                )
            p += 1
            if p + k > n:
                raise FieldError(
                    f"sm_length is {k} but only {n - p} octet(s) remain",
                    field="short_message",
                    command_id=cid,
                    sequence_number=seq,
                )
            values[name] = b[p : p + k]
            p += k
        elif kind == DESTS:
            values[name], p = _dec_dests(b, p, n, cid, seq)
        else:  # UNSUCC
            values[name], p = _dec_unsuccess(b, p, n, cid, seq)
    tlvs = decode_tlvs(b, p, n, command_id=cid, sequence_number=seq) if p < n else {}
    return cls(sequence_number=seq, command_status=status, tlvs=tlvs, **values)


# ------------------------------------------------------------ generated fast paths


def _default_literal(kind: str) -> str:
    return {I1: "0", CS: "''", TM: "''", SM: "b''", DESTS: "[]", UNSUCC: "[]"}[kind]


def _gen_decoder(cls: type[Pdu], layout: tuple[_Field, ...]) -> str:
    name = cls.__name__
    cid = cls.command_id
    is_resp = bool(cid & RESP_BIT)
    out = [f"def _d_{name}(b, status, seq):", "    n = len(b)"]

    def construct(indent: str, values: dict[str, str]) -> None:
        out.append(f"{indent}o = _new(_cls_{name})")
        out.append(f"{indent}o.sequence_number = seq")
        out.append(f"{indent}o.command_status = status")
        out.append(f"{indent}o.tlvs = tlvs")
        for _, fname, _ in layout:
            out.append(f"{indent}o.{fname} = {values[fname]}")
        out.append(f"{indent}return o")

    tlv_call = f"_decode_tlvs(b, p, n, command_id={cid}, sequence_number=seq) if p < n else {{}}"
    if not layout:
        out.append("    p = 16")
        out.append(f"    tlvs = {tlv_call}")
        construct("    ", {})
        return "\n".join(out)
    if is_resp:
        out.append("    if n == 16:")
        out.append("        tlvs = {}")
        construct("        ", {f[1]: _default_literal(f[0]) for f in layout})
    # C-octet strings before the first list are read from one Latin-1 decode of the
    # frame's prefix; later ones (after a variable list) are read from the bytes.
    prefix = 16
    for kind, _, maximum in layout:
        if kind in (DESTS, UNSUCC):
            break
        prefix += maximum
    uses_s = any(k in (CS, TM) for k, _, _ in layout)
    out.append("    try:")
    if uses_s:
        out.append(f"        s = b[:{prefix}].decode('latin-1')")
    out.append("        p = 16")
    off = 0  # static offset of the cursor from p
    in_prefix = True

    def at(o: int) -> str:
        return f"p + {o}" if o else "p"

    for kind, fname, maximum in layout:
        var = f"f_{fname}"
        if kind == I1:
            out.append(f"        {var} = b[{at(off)}]")
            off += 1
        elif kind in (CS, TM):
            src, zero = ("s", "'\\0'") if in_prefix else ("b", "0")
            out.append(f"        i = {src}.index({zero}, {at(off)})")
            if off:
                out.append(f"        p += {off}")
                off = 0
            if kind == CS:
                out.append(f"        if i - p > {maximum - 1}: raise _Slow")
            else:
                out.append("        if i != p and i - p != 16: raise _Slow")
            if in_prefix:
                out.append(f"        {var} = s[p:i]")
            else:
                out.append(f"        {var} = b[p:i].decode('latin-1')")
            out.append("        p = i + 1")
        elif kind == SM:
            out.append(f"        k = b[{at(off)}]")
            out.append(f"        p += {off + 1}")
            off = 0
            out.append("        q = p + k")
            out.append(f"        if k > {MAX_SHORT_MESSAGE} or q > n: raise _Slow")
            out.append(f"        {var} = b[p:q]")
            out.append("        p = q")
        else:
            if off:
                out.append(f"        p += {off}")
                off = 0
            out.append("        if p >= n: raise _Slow")
            helper = "_dec_dests" if kind == DESTS else "_dec_unsuccess"
            out.append(f"        {var}, p = {helper}(b, p, n, {cid}, seq)")
            in_prefix = False
    if off:
        out.append(f"        p += {off}")
        out.append("        if p > n: raise _Slow")
    out.append("    except (ValueError, IndexError, _Slow):")
    out.append(f"        return _slow_decode(_cls_{name}, b, status, seq)")
    out.append(f"    tlvs = {tlv_call}")
    construct("    ", {f[1]: f"f_{f[1]}" for f in layout})
    return "\n".join(out)


def _gen_encoder(cls: type[Pdu], layout: tuple[_Field, ...]) -> str:
    name = cls.__name__
    cid = cls.command_id
    is_resp = bool(cid & RESP_BIT)
    out = [
        f"def _e_{name}(o):",
        "    tl = o.tlvs",
        "    tb = _encode_tlvs(tl) if tl else b''",
        "    try:",
    ]
    if not layout:
        out.append(
            f"        return _pack(16 + len(tb), {cid}, o.command_status, o.sequence_number) + tb"
        )
    else:
        for _, fname, _ in layout:
            out.append(f"        v_{fname} = o.{fname}")
        if is_resp:
            defaults = " and ".join(
                f"not v_{f}" if k in (DESTS, UNSUCC) else f"v_{f} == {_default_literal(k)}"
                for k, f, _ in layout
            )
            out.append(f"        if o.command_status and not tl and {defaults}:")
            out.append(f"            return _pack(16, {cid}, o.command_status, o.sequence_number)")
        checks = []
        strings = []
        for kind, fname, maximum in layout:
            if kind == CS:
                checks.append(f"len(v_{fname}) > {maximum - 1}")
                strings.append(f"v_{fname}")
            elif kind == TM:
                checks.append(f"(v_{fname} and len(v_{fname}) != 16)")
                strings.append(f"v_{fname}")
            elif kind == SM:
                checks.append(f"len(v_{fname}) > {MAX_SHORT_MESSAGE}")
        if checks:
            out.append(f"        if {' or '.join(checks)}: raise _Slow")
        if strings:
            out.append(f"        if '\\0' in ('' + {' + '.join(strings)}): raise _Slow")
        pieces = []
        sm_var = None
        for kind, fname, _ in layout:
            if kind == I1:
                pieces.append(f"{{_chr(v_{fname})}}")
            elif kind in (CS, TM):
                pieces.append(f"{{v_{fname}}}\\0")
            elif kind == SM:
                pieces.append(f"{{_chr(len(v_{fname}))}}")
                sm_var = f"v_{fname}"
            elif kind == DESTS:
                pieces.append(f"{{_enc_dests(v_{fname})}}")
            else:
                pieces.append(f"{{_enc_unsuccess(v_{fname})}}")
        out.append(f"        body = f\"{''.join(pieces)}\".encode('latin-1')")
        if sm_var is not None:
            out.append(
                f"        return _join((_pack(16 + len(body) + len({sm_var}) + len(tb), {cid}, "
                f"o.command_status, o.sequence_number), body, {sm_var}, tb))"
            )
        else:
            out.append(
                f"        return _join((_pack(16 + len(body) + len(tb), {cid}, "
                "o.command_status, o.sequence_number), body, tb))"
            )
    out.append("    except (ValueError, TypeError, OverflowError, _StructError, _Slow) as e:")
    out.append("        raise _encode_error(o, e) from None")
    return "\n".join(out)


def _gen_copier(cls: type[Pdu], layout: tuple[_Field, ...]) -> str:
    name = cls.__name__
    out = [
        f"def _c_{name}(o):",
        f"    n = _new(_cls_{name})",
        "    n.sequence_number = o.sequence_number",
        "    n.command_status = o.command_status",
        "    n.tlvs = dict(o.tlvs)",
    ]
    for kind, fname, _ in layout:
        if kind in (DESTS, UNSUCC):
            out.append(f"    n.{fname} = [_copy(x) for x in o.{fname}]")
        else:
            out.append(f"    n.{fname} = o.{fname}")
    out.append("    return n")
    return "\n".join(out)


# ------------------------------------------------------------- encode helpers/errors


def _check_cstring(where: str, value: object, maximum: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a str, got {value!r}")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: {value!r} is not Latin-1 text") from None
    if "\0" in value:
        raise ValueError(f"{where}: a C-octet string cannot contain NUL ({value!r})")
    if len(value) > maximum - 1:
        raise ValueError(
            f"{where}: {value!r} is {len(value)} characters, the maximum is {maximum - 1}"
        )
    return value


def _check_int(where: str, value: object, maximum: int) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{where} must be an int, got {value!r}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{where}: {value!r} is outside 0..{maximum}")
    return value


def _enc_dests(dests: list[SmeAddress | DistributionList]) -> str:
    if not isinstance(dests, list):
        raise TypeError(f"dest_addresses must be a list, got {dests!r}")
    if len(dests) > MAX_DESTS:
        raise ValueError(f"dest_addresses: {len(dests)} destinations, the maximum is {MAX_DESTS}")
    parts = [chr(len(dests))]
    for i, d in enumerate(dests):
        where = f"dest_addresses[{i}]"
        if isinstance(d, SmeAddress):
            ton = _check_int(f"{where}.dest_addr_ton", d.dest_addr_ton, 255)
            npi = _check_int(f"{where}.dest_addr_npi", d.dest_addr_npi, 255)
            addr = _check_cstring(f"{where}.destination_addr", d.destination_addr, 21)
            parts.append(f"\x01{chr(ton)}{chr(npi)}{addr}\0")
        elif isinstance(d, DistributionList):
            parts.append(f"\x02{_check_cstring(f'{where}.dl_name', d.dl_name, 21)}\0")
        else:
            raise TypeError(f"{where} must be a SmeAddress or DistributionList, got {d!r}")
    return "".join(parts)


def _enc_unsuccess(smes: list[UnsuccessSme]) -> str:
    if not isinstance(smes, list):
        raise TypeError(f"unsuccess_smes must be a list, got {smes!r}")
    if len(smes) > 255:
        raise ValueError(f"unsuccess_smes: {len(smes)} entries, the maximum is 255")
    parts = [chr(len(smes))]
    for i, u in enumerate(smes):
        where = f"unsuccess_smes[{i}]"
        if not isinstance(u, UnsuccessSme):
            raise TypeError(f"{where} must be an UnsuccessSme, got {u!r}")
        ton = _check_int(f"{where}.dest_addr_ton", u.dest_addr_ton, 255)
        npi = _check_int(f"{where}.dest_addr_npi", u.dest_addr_npi, 255)
        addr = _check_cstring(f"{where}.destination_addr", u.destination_addr, 21)
        code = _check_int(f"{where}.error_status_code", u.error_status_code, _U32_MAX)
        parts.append(f"{chr(ton)}{chr(npi)}{addr}\0{code.to_bytes(4, 'big').decode('latin-1')}")
    return "".join(parts)


def _encode_error(o: Pdu, exc: BaseException) -> Exception:
    """Find the field that made the fast encoder fail; return the error to raise."""
    cls = type(o).__name__
    try:
        _check_int(f"{cls}.sequence_number", o.sequence_number, _U32_MAX)
        _check_int(f"{cls}.command_status", o.command_status, _U32_MAX)
        for kind, name, maximum in _LAYOUT_BY_ID[o.command_id]:
            where = f"{cls}.{name}"
            value = getattr(o, name)
            if kind == I1:
                _check_int(where, value, 255)
            elif kind == CS:
                _check_cstring(where, value, maximum)
            elif kind == TM:
                _check_cstring(where, value, maximum)
                if value and len(value) != 16:
                    raise ValueError(f"{where} must be empty or 16 characters, got {value!r}")
            elif kind == SM:
                if not isinstance(value, bytes | bytearray | memoryview):
                    raise TypeError(f"{where} must be bytes, got {value!r}")
                if len(value) > MAX_SHORT_MESSAGE:
                    raise ValueError(
                        f"{where} is {len(value)} octets, the maximum is {MAX_SHORT_MESSAGE}"
                    )
            elif kind == DESTS:
                _enc_dests(value)
            else:
                _enc_unsuccess(value)
    except (ValueError, TypeError) as found:
        if not str(found).startswith(cls):
            return type(found)(f"{cls}.{found}")
        return found
    if isinstance(exc, ValueError | TypeError):
        return exc
    return ValueError(f"cannot encode {cls}: {exc}")


# ------------------------------------------------------------------ build the codecs

_DECODERS: Final[dict[int, Callable[[bytes, int, int], Pdu]]] = {}
_ENCODERS: Final[dict[int, Callable[[Pdu], bytes]]] = {}
_COPIERS: Final[dict[int, Callable[[Any], Any]]] = {}
GENERATED_SOURCE: Final[dict[str, str]] = {}


def _build() -> None:
    namespace: dict[str, Any] = {
        "_new": object.__new__,
        "_Slow": _Slow,
        "_slow_decode": _slow_decode,
        "_decode_tlvs": decode_tlvs,
        "_encode_tlvs": encode_tlvs,
        "_dec_dests": _dec_dests,
        "_dec_unsuccess": _dec_unsuccess,
        "_enc_dests": _enc_dests,
        "_enc_unsuccess": _enc_unsuccess,
        "_encode_error": _encode_error,
        "_pack": _HDR.pack,
        "_join": b"".join,
        "_chr": chr,
        "_StructError": struct.error,
        "_copy": _copy_entry,
    }
    for cls, layout in LAYOUTS.items():
        namespace[f"_cls_{cls.__name__}"] = cls
        source = "\n\n".join(
            (_gen_decoder(cls, layout), _gen_encoder(cls, layout), _gen_copier(cls, layout))
        )
        GENERATED_SOURCE[cls.__name__] = source
        exec(compile(source, f"<smppcodecs.pdu {cls.__name__}>", "exec"), namespace)
        _DECODERS[cls.command_id] = namespace[f"_d_{cls.__name__}"]
        _ENCODERS[cls.command_id] = namespace[f"_e_{cls.__name__}"]
        _COPIERS[cls.command_id] = namespace[f"_c_{cls.__name__}"]


def _copy_entry(x: Any) -> Any:
    if isinstance(x, SmeAddress):
        return SmeAddress(x.dest_addr_ton, x.dest_addr_npi, x.destination_addr)
    if isinstance(x, DistributionList):
        return DistributionList(x.dl_name)
    if isinstance(x, UnsuccessSme):
        return UnsuccessSme(
            x.dest_addr_ton, x.dest_addr_npi, x.destination_addr, x.error_status_code
        )
    return x


_build()


# ---------------------------------------------------------------------- public API


def decode(frame: bytes | bytearray | memoryview) -> Pdu:
    """Decode one whole PDU (header included), as cut out by the :class:`Framer`.

    Raises only :class:`~.exceptions.PduError` subclasses: InvalidCommandLength
    (the frame is shorter than 16 octets or disagrees with its command_length;
    ``in_sync=False``), InvalidCommandId, FieldError or TlvError.
    """
    b = frame if type(frame) is bytes else bytes(frame)
    n = len(b)
    if n < HEADER_LENGTH:
        raise InvalidCommandLength(
            f"a PDU needs at least {HEADER_LENGTH} octets, got {n}",
            command_id=int.from_bytes(b[4:8], "big") if n >= 8 else None,
        )
    length, cid, status, seq = _HDR.unpack_from(b)
    if length != n:
        raise InvalidCommandLength(
            f"command_length is {length} but the frame has {n} octets",
            command_id=cid,
            sequence_number=seq,
        )
    decoder = _DECODERS.get(cid)
    if decoder is None:
        raise InvalidCommandId(
            f"unknown command_id 0x{cid:08X}", command_id=cid, sequence_number=seq
        )
    return decoder(b, status, seq)


def encode(pdu: Pdu) -> bytes:
    """Encode a PDU (header included). Raises ValueError/TypeError naming the field
    that breaks a limit of SMPP 3.4."""
    return _ENCODERS[pdu.command_id](pdu)


def decode_slow(frame: bytes) -> Pdu:
    """Decode with the generic field-by-field decoder only (the reference the fast
    generated decoders must agree with; for tests)."""
    b = bytes(frame)
    if len(b) < HEADER_LENGTH:
        raise InvalidCommandLength(f"a PDU needs at least {HEADER_LENGTH} octets")
    length, cid, status, seq = _HDR.unpack_from(b)
    if length != len(b):
        raise InvalidCommandLength("command_length disagrees with the frame")
    cls = PDU_CLASSES.get(cid)
    if cls is None:
        raise InvalidCommandId(f"unknown command_id 0x{cid:08X}", command_id=cid)
    return _slow_decode(cls, b, status, seq)
