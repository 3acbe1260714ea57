"""Delivery receipts: recognise, parse (tolerantly), format and build them.

A receipt arrives in a ``deliver_sm`` (or ``data_sm``) whose esm_class says so. Its
content is the SMPP 3.4 Appendix B text in ``short_message`` (or in the
``message_payload`` TLV when ``short_message`` is empty), TLVs, or both::

    id:IIIIIIIIII sub:001 dlvrd:001 submit date:YYMMDDhhmm done date:YYMMDDhhmm
    stat:DELIVRD err:000 text:first 20 characters

The layout is only "typical"; SMSCs vary it. The parser takes fields by label
position, not by spaces: keys in any case and order, extra spaces, missing fields,
extra fields (kept in :attr:`Receipt.extra`), ``dlvd`` for ``dlvrd``, dates of 10, 12
or 14 digits, ``err`` of any length, non-standard stat words, and a final ``text:``
whose value is free text (it may hold spaces and colons). TLVs
``receipted_message_id``, ``message_state``, ``network_error_code`` and
``delivery_failure_reason`` take precedence over the text.

The dates carry no time zone: they are returned as naive datetimes in the SMSC's
local time. A date that cannot be read is None and its text goes to ``extra`` (an
all-zero date, as written for an unknown date, is simply None). The standard fields
hold one token each; words after the token that no label claims are kept in
``extra["unlabelled"]``.

Most receipts are in the standard layout exactly: :func:`parse_receipt_fields` reads
those with one regular-expression match and builds their :class:`Receipt` in one go
(dates from a cache, since receipts arriving together share them); every other shape
goes through the general parser, with the same result for the same text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final, Protocol

from .constants import (
    ESM_CLASS_INTERMEDIATE,
    ESM_CLASS_SMSC_RECEIPT,
    ESM_CLASS_TYPE_MASK,
    ESM_CLASS_UDHI,
    STATE_STAT_WORDS,
    DataCoding,
    Tag,
)

if TYPE_CHECKING:
    from .pdu import DeliverSm

__all__ = [
    "PENDING_STATS",
    "RECEIPT_ESM_TYPES",
    "STAT_ALIASES",
    "Receipt",
    "ReceiptParseError",
    "build_receipt_pdu",
    "decode_network_error_code",
    "format_receipt_text",
    "is_receipt",
    "normalize_stat",
    "parse_receipt",
    "parse_receipt_fields",
    "parse_receipt_text",
    "receipt_tlvs",
]


class ReceiptParseError(ValueError):
    """The content is not a delivery receipt: it has neither an id nor a state."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery receipt, merged from its text and its TLVs.

    ``message_id`` is the id to match (``receipted_message_id`` when present, else
    the text's ``id:``); ``text_id`` and ``tlv_id`` keep both. ``stat`` is the
    normalised Appendix B word (DELIVRD, EXPIRED, DELETED, UNDELIV, ACCEPTD, UNKNOWN,
    REJECTD, ENROUTE, SCHEDULED, SKIPPED) or None when absent or not recognised;
    ``raw_stat`` is the word as written. ``err`` is the raw ``err:`` string.
    ``network_error_code`` is (network type, error code). ``extra`` holds unknown
    keys (lower-cased) and dates that could not be read. ``intermediate`` is True for
    an intermediate notification or a non-final state (ENROUTE, ACCEPTD, SCHEDULED).
    """

    message_id: str | None = None
    text_id: str | None = None
    tlv_id: str | None = None
    sub: str | None = None
    dlvrd: str | None = None
    submit_date: datetime | None = None
    done_date: datetime | None = None
    stat: str | None = None
    raw_stat: str | None = None
    err: str | None = None
    text: str | None = None
    message_state: int | None = None
    network_error_code: tuple[int, int] | None = None
    delivery_failure_reason: int | None = None
    extra: dict[str, str] = field(default_factory=dict)
    intermediate: bool = False


# esm_class message types (bits 2-5) that carry a receipt or acknowledgement. 0x24 is
# not defined by 3.4 but some SMSCs use 0x20 as a flag on top of 0x04.
RECEIPT_ESM_TYPES: Final[frozenset[int]] = frozenset({0x04, 0x08, 0x10, 0x20, 0x24})

# Non-final states: the SMSC is still working on the message.
PENDING_STATS: Final[frozenset[str]] = frozenset({"ENROUTE", "ACCEPTD", "SCHEDULED"})

_WORD_STATE: Final[dict[str, int]] = {word: int(state) for state, word in STATE_STAT_WORDS.items()}

# Stat words seen in the wild, mapped to the Appendix B word.
STAT_ALIASES: Final[dict[str, str]] = {
    "DELIVERED": "DELIVRD",
    "DELIVERD": "DELIVRD",
    "FAILED": "UNDELIV",
    "FAIL": "UNDELIV",
    "UNDELIVERED": "UNDELIV",
    "UNDELIVERABLE": "UNDELIV",
    "UNDELIVRD": "UNDELIV",
    "EXPIRD": "EXPIRED",
    "DELETD": "DELETED",
    "REJECTED": "REJECTD",
    "ACCEPTED": "ACCEPTD",
    # Kannel reads these as "buffered", i.e. intermediate.
    "ACKED": "ACCEPTD",
    "BUFFRED": "ACCEPTD",
    "BUFFERD": "ACCEPTD",
    "BUFFERED": "ACCEPTD",
}


def normalize_stat(word: str) -> str | None:
    """The Appendix B stat word for ``word`` (any case, known aliases), or None."""
    if word in _WORD_STATE:
        return word
    upper = word.strip().upper()
    if upper in _WORD_STATE:
        return upper
    return STAT_ALIASES.get(upper)


def is_receipt(esm_class: int) -> bool:
    """True when a deliver_sm/data_sm esm_class marks a receipt or acknowledgement.

    Bits 2-5 are compared (mask 0x3C), so 0x44 (receipt + UDHI) is a receipt.
    """
    return (esm_class & ESM_CLASS_TYPE_MASK) in RECEIPT_ESM_TYPES


# --- text parsing ------------------------------------------------------------------

# A label is a word (or "submit date"/"done date") followed by a colon, at the start
# or after a blank. Values run up to the next label.
_LABEL_RE: Final = re.compile(
    r"(?:^|(?<=\s))(submit[ _]?date|done[ _]?date|[A-Za-z][A-Za-z0-9_\-]*)[ \t]*:",
    re.IGNORECASE,
)

_KEYS: Final[dict[str, str]] = {
    "id": "id",
    "sub": "sub",
    "dlvrd": "dlvrd",
    "dlvd": "dlvrd",
    "submit date": "submit date",
    "submit_date": "submit date",
    "submitdate": "submit date",
    "done date": "done date",
    "done_date": "done date",
    "donedate": "done date",
    "stat": "stat",
    "err": "err",
    "text": "text",
}


_STANDARD_KEYS: Final = ("id", "sub", "dlvrd", "submit date", "done date", "stat", "err", "text")


@functools.lru_cache(maxsize=4096)  # receipts arriving together share their dates
def _parse_date(value: str) -> datetime | None:
    """A YYMMDDhhmm, YYMMDDhhmmss or YYYYMMDDhhmmss date, or None."""
    size = len(value)
    if size not in (10, 12, 14) or not (value.isascii() and value.isdigit()):
        return None
    if size == 14:
        year, rest = int(value[:4]), value[4:]
    else:
        short = int(value[:2])
        year = 2000 + short if short < 69 else 1900 + short  # as strptime's %y
        rest = value[2:]
    second = int(rest[8:10]) if len(rest) >= 10 else 0
    try:
        return datetime(
            year, int(rest[0:2]), int(rest[2:4]), int(rest[4:6]), int(rest[6:8]), second
        )
    except ValueError:
        return None


# The Appendix B layout exactly as most SMSCs write it: one match instead of a scan
# label by label (the general parser below handles every other shape).
_STANDARD_RE: Final = re.compile(
    r"id:(\S+) sub:(\S+) dlvrd:(\S+) submit date:(\S+) done date:(\S+)"
    r" stat:(\S+) err:(\S+)(?: [Tt]ext:(.*))?",
    re.DOTALL,
)


# The same layout with no colon inside the seven one-token values: what the fast path
# of `parse_receipt_fields` takes as is (anything else goes through the parser above).
_FAST_RE: Final = re.compile(
    r"id:([^\s:]+) sub:([^\s:]+) dlvrd:([^\s:]+) submit date:([^\s:]+)"
    r" done date:([^\s:]+) stat:([^\s:]+) err:([^\s:]+)(?: [Tt]ext:(.*))?",
    re.DOTALL,
)


def _split_fields(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Known fields (by canonical key) and unknown ones (lower-cased key)."""
    m = _STANDARD_RE.fullmatch(text)
    if m is not None and ":" not in "".join(m.groups("")[:7]):
        known = dict(zip(_STANDARD_KEYS, m.groups(""), strict=True))
        known["text"] = known["text"].strip()
        if m.group(8) is None:
            del known["text"]
        return known, {}
    known = {}
    extra: dict[str, str] = {}
    matches = list(_LABEL_RE.finditer(text))
    for index, match in enumerate(matches):
        raw_key = " ".join(match.group(1).lower().split())
        key = _KEYS.get(raw_key)
        if key == "text":
            known.setdefault("text", text[match.end() :].strip())
            break
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        value = text[match.end() : end].strip()
        if key is None:
            extra.setdefault(raw_key, value)
            continue
        # Known fields hold one token; words after it (unlabelled trailing text)
        # are kept aside rather than glued to the value.
        parts = value.split(None, 1)
        if len(parts) == 2:
            before = extra.get("unlabelled")
            extra["unlabelled"] = f"{before} {parts[1]}" if before else parts[1]
        known.setdefault(key, parts[0] if parts else "")
    return known, extra


def parse_receipt_text(text: str) -> Receipt:
    """Parse a receipt text (see the module doc for what is tolerated).

    Raises :class:`ReceiptParseError` when the text has neither an ``id:`` nor a
    ``stat:`` value.
    """
    known, extra = _split_fields(text.replace("\x00", ""))
    text_id = known.get("id") or None
    raw_stat = known.get("stat") or None
    if text_id is None and raw_stat is None:
        raise ReceiptParseError(f"not a delivery receipt (no id and no stat): {text[:80]!r}")
    stat = normalize_stat(raw_stat) if raw_stat is not None else None
    dates: dict[str, datetime | None] = {}
    for key in ("submit date", "done date"):
        value = known.get(key)
        dates[key] = _parse_date(value) if value else None
        if value and dates[key] is None and value.strip("0"):
            extra.setdefault(key, value)
    return Receipt(
        message_id=text_id,
        text_id=text_id,
        sub=known.get("sub") or None,
        dlvrd=known.get("dlvrd") or None,
        submit_date=dates["submit date"],
        done_date=dates["done date"],
        stat=stat,
        raw_stat=raw_stat,
        err=known.get("err") or None,
        text=known.get("text"),
        message_state=_WORD_STATE.get(stat) if stat is not None else None,
        extra=extra,
        intermediate=stat in PENDING_STATS,
    )


# --- TLV values ------------------------------------------------------------------------


def decode_network_error_code(value: object) -> tuple[int, int] | None:
    """(network type, error code) from a ``network_error_code`` TLV value.

    Takes the 3-octet wire form (type, then a big-endian code), a (type, code) pair,
    or 3 ASCII digits, which some SMSCs send instead; like Kannel, those are read as
    a decimal GSM code (type 3). Anything else gives None.
    """
    if isinstance(value, tuple) and len(value) == 2:
        kind, code = value
        if isinstance(kind, int) and isinstance(code, int):
            return (kind, code)
        return None
    if isinstance(value, str):
        value = value.encode("latin-1", errors="replace")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        return None
    raw = bytes(value)
    if len(raw) != 3:
        return None
    if raw.isdigit():
        return (3, int(raw.decode("ascii")))
    return (raw[0], int.from_bytes(raw[1:3], "big"))


def _tlv_int(value: object) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, bytearray)) and 1 <= len(value) <= 4:
        return int.from_bytes(value, "big")
    return None


def _tlv_str(value: object) -> str | None:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("latin-1")
    if not isinstance(value, str):
        return None
    text = value.replace("\x00", "").strip()
    return text or None


def _decode_text(data: bytes, esm_class: int, data_coding: int) -> str:
    if esm_class & ESM_CLASS_UDHI and data and data[0] < 0x20 and data[0] + 1 <= len(data):
        data = data[data[0] + 1 :]
    if data_coding == DataCoding.UCS2:
        return data.decode("utf-16-be", errors="replace")
    return data.decode("latin-1")


def parse_receipt_fields(
    short_message: bytes,
    esm_class: int,
    tlvs: Mapping[int, object],
    *,
    data_coding: int = 0,
) -> Receipt | None:
    """Parse a receipt from a deliver_sm's or data_sm's fields.

    Returns None when ``esm_class`` does not mark a receipt. The text comes from
    ``short_message``, or from ``message_payload`` when ``short_message`` is empty;
    a receipt with TLVs only (empty text) is fine. TLVs override the text. Raises
    :class:`ReceiptParseError` when neither the text nor the TLVs give an id or a
    state.
    """
    if (esm_class & ESM_CLASS_TYPE_MASK) not in RECEIPT_ESM_TYPES:
        return None
    data = short_message if type(short_message) is bytes else bytes(short_message)
    if not data:
        payload = tlvs.get(Tag.message_payload)
        if isinstance(payload, str):
            payload = payload.encode("latin-1", errors="replace")
        if isinstance(payload, (bytes, bytearray)):
            data = bytes(payload)
    if esm_class & ESM_CLASS_UDHI or data_coding == DataCoding.UCS2:
        text = _decode_text(data, esm_class, data_coding)
    else:
        text = data.decode("latin-1")

    if tlvs:
        value = tlvs.get(Tag.receipted_message_id)
        tlv_id = _tlv_str(value) if value is not None else None
        value = tlvs.get(Tag.message_state)
        state = _tlv_int(value) if value is not None else None
        value = tlvs.get(Tag.network_error_code)
        nec = decode_network_error_code(value) if value is not None else None
        value = tlvs.get(Tag.delivery_failure_reason)
        dfr = _tlv_int(value) if value is not None else None
    else:
        tlv_id = state = nec = dfr = None

    match = _FAST_RE.fullmatch(text) if "\x00" not in text else None
    if match is not None:
        return _standard_receipt(match, esm_class, tlv_id, state, nec, dfr)

    base: Receipt
    try:
        base = parse_receipt_text(text) if text.strip("\x00 \t\r\n") else Receipt()
    except ReceiptParseError:
        if tlv_id is None and state is None:
            raise
        base = Receipt(extra={"unparsed": text.strip()})

    stat = base.stat
    if state is not None:
        stat = STATE_STAT_WORDS.get(state, stat)
    message_state = state if state is not None else base.message_state
    message_id = tlv_id or base.text_id
    if message_id is None and stat is None and base.raw_stat is None:
        raise ReceiptParseError("delivery receipt without an id or a state")
    intermediate = bool(esm_class & ESM_CLASS_INTERMEDIATE) or stat in PENDING_STATS
    return Receipt(
        message_id=message_id,
        text_id=base.text_id,
        tlv_id=tlv_id,
        sub=base.sub,
        dlvrd=base.dlvrd,
        submit_date=base.submit_date,
        done_date=base.done_date,
        stat=stat,
        raw_stat=base.raw_stat,
        err=base.err,
        text=base.text,
        message_state=message_state,
        network_error_code=nec,
        delivery_failure_reason=dfr,
        extra=base.extra,
        intermediate=intermediate,
    )


def _standard_receipt(
    match: re.Match[str],
    esm_class: int,
    tlv_id: str | None,
    state: int | None,
    nec: tuple[int, int] | None,
    dfr: int | None,
) -> Receipt:
    """The receipt of a text in the standard layout (one match of `_FAST_RE`) merged
    with its TLVs, built in one go: what `parse_receipt_text` and the merge in
    `parse_receipt_fields` give for such a text, without the intermediate Receipt."""
    text_id, sub, dlvrd, submit, done, raw_stat, err, free_text = match.groups()
    stat = raw_stat if raw_stat in _WORD_STATE else normalize_stat(raw_stat)
    submit_date = _parse_date(submit)
    done_date = _parse_date(done)
    extra: dict[str, str] = {}
    if submit_date is None and submit.strip("0"):
        extra["submit date"] = submit
    if done_date is None and done.strip("0"):
        extra["done date"] = done
    if state is not None:
        stat = STATE_STAT_WORDS.get(state, stat)
        message_state: int | None = state
    else:
        message_state = _WORD_STATE.get(stat) if stat is not None else None
    return Receipt(
        message_id=tlv_id or text_id,
        text_id=text_id,
        tlv_id=tlv_id,
        sub=sub,
        dlvrd=dlvrd,
        submit_date=submit_date,
        done_date=done_date,
        stat=stat,
        raw_stat=raw_stat,
        err=err,
        text=free_text.strip() if free_text is not None else None,
        message_state=message_state,
        network_error_code=nec,
        delivery_failure_reason=dfr,
        extra=extra,
        intermediate=bool(esm_class & ESM_CLASS_INTERMEDIATE) or stat in PENDING_STATS,
    )


class _ReceiptPdu(Protocol):
    @property
    def esm_class(self) -> int: ...

    @property
    def tlvs(self) -> Mapping[int, object]: ...


def parse_receipt(pdu: _ReceiptPdu) -> Receipt | None:
    """:func:`parse_receipt_fields` on a decoded deliver_sm or data_sm.

    Any object with ``esm_class`` and ``tlvs`` will do; ``short_message`` (absent
    from data_sm, whose text travels in ``message_payload``) and ``data_coding`` are
    read when present.
    """
    short_message = getattr(pdu, "short_message", b"")
    data_coding = getattr(pdu, "data_coding", 0)
    return parse_receipt_fields(
        bytes(short_message) if isinstance(short_message, (bytes, bytearray)) else b"",
        pdu.esm_class,
        pdu.tlvs,
        data_coding=data_coding if isinstance(data_coding, int) else 0,
    )


# --- formatting and building ----------------------------------------------------------


def _stat_word(stat: str) -> str:
    if stat in _WORD_STATE:
        return stat
    word = normalize_stat(stat)
    if word is None:
        raise ValueError(f"unknown receipt stat {stat!r}")
    return word


_DATE_TEXTS: dict[datetime, str] = {}  # receipts sent together share their dates


def _date_text(value: datetime | None) -> str:
    """YYMMDDhhmm (as strftime's %y%m%d%H%M, without its cost)."""
    if value is None:
        return "0000000000"
    text = _DATE_TEXTS.get(value)
    if text is None:
        text = (
            f"{value.year % 100:02d}{value.month:02d}{value.day:02d}"
            f"{value.hour:02d}{value.minute:02d}"
        )
        if len(_DATE_TEXTS) >= 4096:
            _DATE_TEXTS.clear()
        _DATE_TEXTS[value] = text
    return text


def _pad3(value: str) -> str:
    return value.zfill(3) if value.isdigit() else value


def format_receipt_text(
    *,
    message_id: str,
    stat: str,
    err: str = "000",
    submit_date: datetime | None,
    done_date: datetime | None,
    sub: str = "001",
    dlvrd: str | None = None,
    text: str = "",
) -> str:
    """The Appendix B receipt text.

    ``stat`` is normalised to its Appendix B word (ValueError if unknown); ``dlvrd``
    defaults to 001 for DELIVRD and 000 otherwise; numeric ``sub``, ``dlvrd`` and
    ``err`` are zero-padded to 3 digits; ``text`` is cut to 20 characters. A missing
    date is written as ten zeros so that strict parsers still find the field.
    """
    word = _stat_word(stat)
    if dlvrd is None:
        dlvrd = "001" if word == "DELIVRD" else "000"
    return (
        f"id:{message_id} sub:{_pad3(sub)} dlvrd:{_pad3(dlvrd)}"
        f" submit date:{_date_text(submit_date)} done date:{_date_text(done_date)}"
        f" stat:{word} err:{_pad3(err)} text:{text[:20]}"
    )


def receipt_tlvs(
    message_id: str,
    stat: str,
    network_error_code: tuple[int, int] | None = None,
) -> dict[int, int | str | bytes]:
    """The receipt TLVs: receipted_message_id, message_state, network_error_code."""
    tlvs: dict[int, int | str | bytes] = {
        Tag.receipted_message_id: message_id,
        Tag.message_state: _WORD_STATE[_stat_word(stat)],
    }
    if network_error_code is not None:
        kind, code = network_error_code
        if not 0 <= kind <= 0xFF or not 0 <= code <= 0xFFFF:
            raise ValueError(f"network_error_code out of range: {network_error_code!r}")
        tlvs[Tag.network_error_code] = bytes([kind]) + code.to_bytes(2, "big")
    return tlvs


def build_receipt_pdu(
    *,
    sequence_number: int,
    source_addr: str,
    destination_addr: str,
    message_id: str,
    stat: str,
    err: str = "000",
    submit_date: datetime | None,
    done_date: datetime | None,
    text: str = "",
    network_error_code: tuple[int, int] | None = None,
    intermediate: bool = False,
    source_addr_ton: int = 0,
    source_addr_npi: int = 0,
    dest_addr_ton: int = 0,
    dest_addr_npi: int = 0,
    sub: str = "001",
    dlvrd: str | None = None,
) -> DeliverSm:
    """A receipt ``deliver_sm``: Appendix B text plus the receipt TLVs.

    A receipt travels back the way the message came, so its ``source_addr`` is the
    original message's destination (the handset) and its ``destination_addr`` the
    original source (the sender); the caller passes them already swapped, with their
    TON/NPI. esm_class is 0x04 (SMSC delivery receipt), or 0x20 for an intermediate
    notification. The text is ASCII (anything else becomes ``?``) with data_coding 0,
    as SMSCs send receipts.
    """
    from .pdu import DeliverSm

    body = format_receipt_text(
        message_id=message_id,
        stat=stat,
        err=err,
        submit_date=submit_date,
        done_date=done_date,
        sub=sub,
        dlvrd=dlvrd,
        text=text,
    )
    return DeliverSm(
        sequence_number=sequence_number,
        source_addr_ton=source_addr_ton,
        source_addr_npi=source_addr_npi,
        source_addr=source_addr,
        dest_addr_ton=dest_addr_ton,
        dest_addr_npi=dest_addr_npi,
        destination_addr=destination_addr,
        esm_class=ESM_CLASS_INTERMEDIATE if intermediate else ESM_CLASS_SMSC_RECEIPT,
        data_coding=0,
        short_message=body.encode("ascii", errors="replace"),
        tlvs=receipt_tlvs(message_id, stat, network_error_code),
    )
