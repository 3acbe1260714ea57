"""SMS text encodings: GSM 03.38, IA5, Latin-1, UCS-2, and message length arithmetic.

GSM 03.38 text is handled UNPACKED, one septet per octet, as SMPP carries it;
`gsm_pack` / `gsm_unpack` convert to and from the 7-bit packed form for the
carriers that want it.

Which alphabet a ``data_coding`` value selects (`alphabet_of`):

* 0x00 SMSC default alphabet: GSM 03.38.
* 0x01 IA5 / ASCII; 0x03 Latin-1; 0x06 ISO-8859-5 (Cyrillic); 0x07 ISO-8859-8 (Hebrew).
* 0x08 UCS-2. Encoded as UTF-16BE, so characters outside the Basic Multilingual
  Plane become surrogate pairs (what handsets and SMSCs do in practice).
* 0x02 and 0x04 8-bit binary.
* 0xC0-0xDF (3GPP 23.038 message-waiting groups "discard" and "store"): GSM 03.38.
* 0xE0-0xEF (23.038 message-waiting group "store", UCS-2): UCS-2.
* 0xF0-0xFF (23.038 message class group): bit 2 clear is GSM 03.38, bit 2 set is 8-bit data.
* Everything else (0x05 JIS, 0x09 pictogram, 0x0A ISO-2022-JP, 0x0D, 0x0E and the
  reserved values): unsupported.

`encode_text` raises `ValueError` for binary and unsupported codings (binary
payloads are bytes already: see `smppcodecs.concat.split_bytes`).
`decode_text` never raises: binary and unsupported codings decode as Latin-1, one
character per octet, so the text is lossless (``text.encode("latin-1")`` gives the
octets back) and readable where the payload happens to be ASCII.
"""

from __future__ import annotations

import enum
import re
from typing import Final

__all__ = [
    "GSM_BASIC",
    "GSM_EXTENSION",
    "Alphabet",
    "UnencodableError",
    "alphabet_of",
    "choose_data_coding",
    "chunk_encoded",
    "decode_text",
    "encode_text",
    "gsm_decode",
    "gsm_encode",
    "gsm_pack",
    "gsm_septets",
    "gsm_unpack",
    "is_gsm",
    "part_limits",
    "segments_needed",
    "units",
]

ESC: Final = 0x1B
REPLACEMENT: Final = "\ufffd"

# GSM 03.38 default alphabet, code 0x00 to 0x7F. Position 0x1B is the escape to
# the extension table and is never produced by encoding a character.
GSM_BASIC: Final[str] = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)

# Extension table: ESC 0x1B followed by the code. Each such character costs two septets.
GSM_EXTENSION: Final[dict[int, str]] = {
    0x0A: "\x0c",  # form feed (page break)
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_ENCODE_BASIC: Final[dict[str, int]] = {ch: i for i, ch in enumerate(GSM_BASIC) if i != ESC}
_ENCODE_EXT: Final[dict[str, int]] = {ch: code for code, ch in GSM_EXTENSION.items()}
_GSM_CHARS: Final[frozenset[str]] = frozenset(_ENCODE_BASIC) | frozenset(_ENCODE_EXT)

# str.translate tables: text -> septets written as Latin-1 characters, and back.
_ENCODE_TRANSLATE: Final[dict[int, str]] = {
    **{ord(ch): chr(code) for ch, code in _ENCODE_BASIC.items()},
    **{ord(ch): chr(ESC) + chr(code) for ch, code in _ENCODE_EXT.items()},
}
_DECODE_TRANSLATE: Final[dict[int, str]] = {
    **{i: GSM_BASIC[i] for i in range(0x80)},
    **{i: REPLACEMENT for i in range(0x80, 0x100)},
}
_NOT_GSM: Final[re.Pattern[str]] = re.compile(
    "[^" + "".join(re.escape(ch) for ch in sorted(_GSM_CHARS)) + "]"
)
_NOT_GSM_BASIC: Final[re.Pattern[str]] = re.compile(
    "[^" + "".join(re.escape(ch) for ch in sorted(_ENCODE_BASIC)) + "]"
)


class UnencodableError(ValueError):
    """A character of the text has no code in the requested alphabet."""

    def __init__(self, char: str, position: int, alphabet: str) -> None:
        self.char = char
        self.position = position
        self.alphabet = alphabet
        super().__init__(
            f"character {char!r} (U+{ord(char):04X}) at position {position} "
            f"cannot be encoded in {alphabet}"
        )


class Alphabet(enum.Enum):
    """The character repertoire a data_coding value selects."""

    GSM = "GSM 03.38"
    IA5 = "IA5/ASCII"
    LATIN1 = "Latin-1"
    CYRILLIC = "ISO-8859-5"
    HEBREW = "ISO-8859-8"
    UCS2 = "UCS-2"
    BINARY = "8-bit binary"
    UNSUPPORTED = "unsupported"


# Python codec names of the single-octet character sets.
_OCTET_CODECS: Final[dict[Alphabet, str]] = {
    Alphabet.IA5: "ascii",
    Alphabet.LATIN1: "latin-1",
    Alphabet.CYRILLIC: "iso8859_5",
    Alphabet.HEBREW: "iso8859_8",
}

_SIMPLE_CODINGS: Final[dict[int, Alphabet]] = {
    0x00: Alphabet.GSM,
    0x01: Alphabet.IA5,
    0x02: Alphabet.BINARY,
    0x03: Alphabet.LATIN1,
    0x04: Alphabet.BINARY,
    0x06: Alphabet.CYRILLIC,
    0x07: Alphabet.HEBREW,
    0x08: Alphabet.UCS2,
}


def alphabet_of(data_coding: int) -> Alphabet:
    """The alphabet selected by ``data_coding`` (see the module docstring)."""
    if not 0 <= data_coding <= 0xFF:
        raise ValueError(f"data_coding {data_coding} is outside 0..255")
    simple = _SIMPLE_CODINGS.get(data_coding)
    if simple is not None:
        return simple
    group = data_coding & 0xF0
    if group in (0xC0, 0xD0):
        return Alphabet.GSM
    if group == 0xE0:
        return Alphabet.UCS2
    if group == 0xF0:
        return Alphabet.BINARY if data_coding & 0x04 else Alphabet.GSM
    return Alphabet.UNSUPPORTED


# ---------------------------------------------------------------- GSM 03.38


def is_gsm(text: str) -> bool:
    """True when every character of ``text`` is in the GSM 03.38 basic or extension table."""
    return _NOT_GSM.search(text) is None


def _first_non_gsm(text: str) -> UnencodableError | None:
    bad = _NOT_GSM.search(text)
    if bad is None:
        return None
    return UnencodableError(bad.group(), bad.start(), Alphabet.GSM.value)


def gsm_encode(text: str) -> bytes:
    """Encode ``text`` as unpacked GSM 03.38 septets (extension characters as ESC + code).

    Raises `UnencodableError` naming the first character that has no GSM code.
    """
    err = _first_non_gsm(text)
    if err is not None:
        raise err
    return text.translate(_ENCODE_TRANSLATE).encode("latin-1")


def gsm_septets(text: str) -> int:
    """Septets ``text`` takes in GSM 03.38: one per character, two per extension character."""
    err = _first_non_gsm(text)
    if err is not None:
        raise err
    if _NOT_GSM_BASIC.search(text) is None:
        return len(text)
    return len(text) + sum(1 for ch in text if ch in _ENCODE_EXT)


def gsm_decode(data: bytes) -> str:
    """Decode unpacked GSM 03.38 septets; never raises.

    Tolerant as 3GPP 23.038 asks of a receiving entity: ESC followed by a code that
    is not in the extension table gives the basic table's character for that code;
    ESC ESC (reserved for a further extension table) and a lone ESC at the end give
    a space. Octets 0x80-0xFF are not septets and give U+FFFD.
    """
    if ESC not in data:
        return data.decode("latin-1").translate(_DECODE_TRANSLATE)
    out: list[str] = []
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        if b != ESC:
            out.append(_DECODE_TRANSLATE[b])
            i += 1
            continue
        if i + 1 >= n:
            out.append(" ")
            break
        code = data[i + 1]
        ext = GSM_EXTENSION.get(code)
        if ext is not None:
            out.append(ext)
        elif code == ESC:
            out.append(" ")
        else:
            out.append(_DECODE_TRANSLATE[code])
        i += 2
    return "".join(out)


_CR: Final = 0x0D


def gsm_pack(septets: bytes, *, fill_bits: int = 0) -> bytes:
    """Pack unpacked septets into 7-bit packed octets (3GPP 23.038 §6.1.2.1).

    ``fill_bits`` (0-6) zero bits are put first, as after a UDH that does not end on
    a septet boundary. When the last octet would carry 7 spare bits, they hold CR
    rather than zeros, as 23.038 asks, so a reader without the septet count does not
    see a trailing '@'.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, not {fill_bits}")
    acc = 0
    nbits = fill_bits
    out = bytearray()
    for s in septets:
        if s > 0x7F:
            raise ValueError(f"octet 0x{s:02X} is not a septet")
        acc |= s << nbits
        nbits += 7
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        if nbits == 1:
            acc |= _CR << 1
        out.append(acc & 0xFF)
    return bytes(out)


def gsm_unpack(packed: bytes, count: int | None = None, *, fill_bits: int = 0) -> bytes:
    """Unpack 7-bit packed octets into one septet per octet.

    ``count`` is the number of septets when known (an SMS TPDU's user data length).
    Without it every whole septet is returned, except that a final CR filling the 7
    spare bits of the last octet is dropped (the padding `gsm_pack` writes).
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, not {fill_bits}")
    available = (len(packed) * 8 - fill_bits) // 7 if packed else 0
    if count is None:
        want = available
    elif count > available:
        raise ValueError(f"{len(packed)} packed octets hold {available} septets, not {count}")
    else:
        want = count
    out = bytearray()
    acc = 0
    nbits = 0
    it = iter(packed)
    skip = fill_bits
    while len(out) < want:
        while nbits < 7 + skip:
            acc |= next(it) << nbits
            nbits += 8
        acc >>= skip
        nbits -= skip
        skip = 0
        out.append(acc & 0x7F)
        acc >>= 7
        nbits -= 7
    if count is None and out and out[-1] == _CR and (len(packed) * 8 - fill_bits) % 7 == 0:
        del out[-1]
    return bytes(out)


# ---------------------------------------------------------------- all codings


def _encode_octets(text: str, alphabet: Alphabet) -> bytes:
    try:
        return text.encode(_OCTET_CODECS[alphabet])
    except UnicodeEncodeError as exc:
        raise UnencodableError(text[exc.start], exc.start, alphabet.value) from None


def _encode_ucs2(text: str) -> bytes:
    try:
        return text.encode("utf-16-be")
    except UnicodeEncodeError as exc:  # a lone surrogate in the str
        raise UnencodableError(text[exc.start], exc.start, Alphabet.UCS2.value) from None


def encode_text(text: str, data_coding: int) -> bytes:
    """Encode ``text`` for ``data_coding``.

    Raises `UnencodableError` (a `ValueError`) for a character the alphabet lacks,
    and `ValueError` for binary and unsupported codings.
    """
    alphabet = alphabet_of(data_coding)
    if alphabet is Alphabet.GSM:
        return gsm_encode(text)
    if alphabet is Alphabet.UCS2:
        return _encode_ucs2(text)
    if alphabet in _OCTET_CODECS:
        return _encode_octets(text, alphabet)
    if alphabet is Alphabet.BINARY:
        raise ValueError(f"data_coding 0x{data_coding:02X} is binary: send bytes, not text")
    raise ValueError(f"data_coding 0x{data_coding:02X} is not supported for text")


def decode_text(data: bytes, data_coding: int) -> str:
    """Decode ``data`` sent with ``data_coding``; never raises for any octets.

    Invalid input gives U+FFFD (an octet over 0x7F in GSM or IA5, an odd trailing
    octet or a lone surrogate in UCS-2, an unassigned ISO-8859-8 octet). Binary and
    unsupported codings decode as Latin-1, one character per octet.
    """
    alphabet = alphabet_of(data_coding)
    if alphabet is Alphabet.GSM:
        return gsm_decode(data)
    if alphabet is Alphabet.UCS2:
        return data.decode("utf-16-be", errors="replace")
    codec = _OCTET_CODECS.get(alphabet, "latin-1")
    return data.decode(codec, errors="replace")


def choose_data_coding(text: str, *, allow_latin1: bool = False) -> int:
    """0x00 (GSM) when every character fits GSM 03.38; else 0x03 (Latin-1) when allowed
    and the text fits it; else 0x08 (UCS-2)."""
    if is_gsm(text):
        return 0x00
    if allow_latin1:
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            pass
        else:
            return 0x03
    return 0x08


def units(text: str, data_coding: int) -> int:
    """Length of ``text`` in the units SMS limits count: septets for GSM, UTF-16 code
    units for UCS-2, octets for the 8-bit character sets.

    Raises like `encode_text` when the text cannot be sent with ``data_coding``.
    """
    alphabet = alphabet_of(data_coding)
    if alphabet is Alphabet.GSM:
        return gsm_septets(text)
    if alphabet is Alphabet.UCS2:
        return len(_encode_ucs2(text)) // 2
    return len(encode_text(text, data_coding))


# Octets of short_message per alphabet: (single message, part with an 8-bit-reference
# UDH, part with a 16-bit-reference UDH). Unpacked GSM counts one octet per septet;
# UCS-2 parts hold whole code units (66 units = 132 octets beside a 7-octet UDH).
_LIMITS: Final[dict[Alphabet, tuple[int, int, int]]] = {
    Alphabet.GSM: (160, 153, 152),
    Alphabet.UCS2: (140, 134, 132),
}
_OCTET_LIMITS: Final = (140, 134, 133)


def part_limits(data_coding: int) -> tuple[int, int, int]:
    """Octets of user data (one septet per octet for GSM) for data_coding: a single
    message, a part beside an 8-bit-reference UDH, a part beside a 16-bit one."""
    return _LIMITS.get(alphabet_of(data_coding), _OCTET_LIMITS)


def chunk_encoded(data: bytes, data_coding: int, max_octets: int) -> list[bytes]:
    """Cut encoded ``data`` into pieces of at most ``max_octets``, never between the two
    octets of a GSM escape pair nor between the code units of a UTF-16 surrogate pair
    (nor inside a UCS-2 code unit). Empty data gives one empty piece."""
    if not data:
        return [b""]
    alphabet = alphabet_of(data_coding)
    if alphabet is Alphabet.GSM:
        if max_octets < 2:
            raise ValueError("GSM parts need room for an escape pair")
        return _chunk_gsm(data, max_octets)
    if alphabet is Alphabet.UCS2:
        if max_octets < 4:
            raise ValueError("UCS-2 parts need room for a surrogate pair")
        return _chunk_ucs2(data, max_octets - max_octets % 2)
    if max_octets < 1:
        raise ValueError("parts need room for one octet")
    return [data[i : i + max_octets] for i in range(0, len(data), max_octets)]


def _chunk_gsm(data: bytes, limit: int) -> list[bytes]:
    if ESC not in data:
        return [data[i : i + limit] for i in range(0, len(data), limit)]
    chunks: list[bytes] = []
    start = 0
    i = 0
    n = len(data)
    while i < n:
        width = 2 if data[i] == ESC and i + 1 < n else 1
        if i + width - start > limit:
            chunks.append(data[start:i])
            start = i
        i += width
    chunks.append(data[start:])
    return chunks


def _chunk_ucs2(data: bytes, limit: int) -> list[bytes]:
    chunks: list[bytes] = []
    start = 0
    n = len(data)
    while n - start > limit:
        end = start + limit
        if 0xD8 <= data[end - 2] <= 0xDB and 0xDC <= data[end] <= 0xDF:
            end -= 2
        chunks.append(data[start:end])
        start = end
    chunks.append(data[start:])
    return chunks


def segments_needed(text: str, data_coding: int, *, ref16: bool = False) -> int:
    """How many SMS ``text`` takes with ``data_coding``: 1 up to 160 GSM septets / 140
    octets / 70 UCS-2 code units, else parts of 153/134/67 (152/133/66 with a 16-bit
    reference), never splitting an escape or surrogate pair. Empty text takes one.
    The count can exceed 255, the most a concatenated message may have."""
    data = encode_text(text, data_coding)
    single, per8, per16 = part_limits(data_coding)
    if len(data) <= single:
        return 1
    return len(chunk_encoded(data, data_coding, per16 if ref16 else per8))
