"""GSM 03.38, IA5, Latin-1 and UCS-2 text coding, and message length arithmetic."""

from __future__ import annotations

import pytest
import smpplib.gsm
from hypothesis import given, settings
from hypothesis import strategies as st
from smppcodecs.text import (
    GSM_BASIC,
    GSM_EXTENSION,
    Alphabet,
    UnencodableError,
    alphabet_of,
    choose_data_coding,
    chunk_encoded,
    decode_text,
    encode_text,
    gsm_decode,
    gsm_encode,
    gsm_pack,
    gsm_septets,
    gsm_unpack,
    is_gsm,
    segments_needed,
    units,
)

ESC = 0x1B
BASIC_CHARS = [ch for i, ch in enumerate(GSM_BASIC) if i != ESC]
EXT_CHARS = list(GSM_EXTENSION.values())
GSM_CHARS = BASIC_CHARS + EXT_CHARS

gsm_text = st.text(alphabet=st.sampled_from(GSM_CHARS), max_size=400)
latin1_text = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=300)
ascii_text = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=300)
# Any code point but lone surrogates, weighted towards astral characters.
any_text = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=["Cs"]),
        st.characters(min_codepoint=0x1F600, max_codepoint=0x1F64F),
    ),
    max_size=200,
)


# ---------------------------------------------------------------- GSM tables


def test_basic_table_shape() -> None:
    assert len(GSM_BASIC) == 128
    assert len(set(GSM_BASIC)) == 128
    assert GSM_BASIC[0x00] == "@"
    assert GSM_BASIC[0x09] == "Ç"
    assert GSM_BASIC[0x5F] == "§"
    assert GSM_BASIC[0x60] == "¿"
    assert GSM_BASIC[0x7F] == "à"
    assert GSM_EXTENSION[0x0A] == "\x0c"
    assert GSM_EXTENSION[0x65] == "€"


@pytest.mark.parametrize("code", [i for i in range(128) if i != ESC])
def test_every_basic_character_round_trips(code: int) -> None:
    ch = GSM_BASIC[code]
    assert gsm_encode(ch) == bytes([code])
    assert gsm_decode(bytes([code])) == ch
    assert gsm_septets(ch) == 1
    assert is_gsm(ch)


@pytest.mark.parametrize(("code", "ch"), sorted(GSM_EXTENSION.items()))
def test_every_extension_character_round_trips(code: int, ch: str) -> None:
    assert gsm_encode(ch) == bytes([ESC, code])
    assert gsm_decode(bytes([ESC, code])) == ch
    assert gsm_septets(ch) == 2
    assert gsm_septets("a" + ch + "b") == 4
    assert is_gsm(ch)


def test_agrees_with_smpplib_table() -> None:
    """smpplib.gsm writes '`' where it has no character; elsewhere it must agree with us."""
    table = smpplib.gsm.GSM_CHARACTER_TABLE
    ours_basic = {i: ch for i, ch in enumerate(GSM_BASIC) if i != ESC}
    theirs_basic = {i: ch for i, ch in enumerate(table[:128]) if ch != "`" and i != ESC}
    theirs_ext = {i - 128: ch for i, ch in enumerate(table[128:], start=128) if ch != "`"}
    # smpplib leaves out § (0x5F) and form feed (extension 0x0A); we have both.
    assert set(ours_basic) - set(theirs_basic) == {0x5F}
    assert set(GSM_EXTENSION) - set(theirs_ext) == {0x0A}
    assert set(theirs_basic) <= set(ours_basic)
    assert set(theirs_ext) <= set(GSM_EXTENSION)
    for code, ch in theirs_basic.items():
        assert ours_basic[code] == ch
        assert gsm_encode(ch) == smpplib.gsm.gsm_encode(ch)
    for code, ch in theirs_ext.items():
        assert GSM_EXTENSION[code] == ch
        assert gsm_encode(ch) == smpplib.gsm.gsm_encode(ch)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from([c for c in GSM_CHARS if c not in "§\x0c"])))
def test_encoding_matches_smpplib(text: str) -> None:
    assert gsm_encode(text) == smpplib.gsm.gsm_encode(text)


def test_unencodable_names_first_bad_character() -> None:
    with pytest.raises(UnencodableError) as info:
        gsm_encode("abç`d")
    assert isinstance(info.value, ValueError)
    assert info.value.char == "ç"
    assert info.value.position == 2
    assert "U+00E7" in str(info.value)
    assert "GSM" in str(info.value)
    with pytest.raises(UnencodableError):
        gsm_encode("\x1b")  # the escape code is not a character
    with pytest.raises(UnencodableError):
        gsm_septets("`")
    with pytest.raises(UnencodableError) as info2:
        encode_text("añ€", 0x03)
    assert info2.value.char == "€" and info2.value.position == 2
    with pytest.raises(UnencodableError) as info3:
        encode_text("abc\udc00", 0x08)
    assert info3.value.position == 3


def test_gsm_decode_is_tolerant() -> None:
    assert gsm_decode(b"\x1bA") == "A"  # unknown escape: the basic table's character
    assert gsm_decode(b"\x1b\x0d") == "\r"
    assert gsm_decode(b"a\x1b\x1bb") == "a b"  # reserved double escape: a space
    assert gsm_decode(b"ab\x1b") == "ab "  # lone escape at the end: a space
    assert gsm_decode(b"a\x80\xff") == "a\ufffd\ufffd"
    assert gsm_decode(b"\x1b\x80") == "\ufffd"
    assert gsm_decode(b"") == ""


@settings(max_examples=200, deadline=None)
@given(gsm_text)
def test_gsm_round_trip(text: str) -> None:
    data = gsm_encode(text)
    assert gsm_decode(data) == text
    assert len(data) == gsm_septets(text) == units(text, 0x00)
    assert all(b < 0x80 for b in data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 255))
def test_decode_never_raises(data: bytes, data_coding: int) -> None:
    assert isinstance(decode_text(data, data_coding), str)


# ---------------------------------------------------------------- 7-bit packing


def test_pack_known_vector() -> None:
    assert gsm_pack(gsm_encode("hellohello")).hex() == "e8329bfd4697d9ec37"
    assert gsm_unpack(bytes.fromhex("e8329bfd4697d9ec37"), 10) == b"hellohello"


def test_pack_pads_seven_spare_bits_with_cr() -> None:
    packed = gsm_pack(b"1234567")
    assert len(packed) == 7
    assert packed[-1] >> 1 == 0x0D
    assert gsm_unpack(packed) == b"1234567"
    assert gsm_unpack(packed, 7) == b"1234567"
    assert gsm_unpack(packed, 8) == b"1234567\r"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200).map(lambda b: bytes(x & 0x7F for x in b)), st.integers(0, 6))
def test_pack_round_trip(septets: bytes, fill: int) -> None:
    packed = gsm_pack(septets, fill_bits=fill)
    assert len(packed) == (fill + 7 * len(septets) + 7) // 8
    assert gsm_unpack(packed, len(septets), fill_bits=fill) == septets
    if not septets.endswith(b"\r"):
        assert gsm_unpack(packed, fill_bits=fill) == septets


def test_pack_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        gsm_pack(b"\x80")
    with pytest.raises(ValueError):
        gsm_pack(b"a", fill_bits=7)
    with pytest.raises(ValueError):
        gsm_unpack(b"\x00", 2)


# ---------------------------------------------------------------- other codings


@settings(max_examples=150, deadline=None)
@given(any_text)
def test_ucs2_is_utf16be(text: str) -> None:
    data = encode_text(text, 0x08)
    assert data == text.encode("utf-16-be")
    assert decode_text(data, 0x08) == text
    assert units(text, 0x08) == len(data) // 2
    assert decode_text(data, 0xE0) == text  # 23.038 UCS-2 message-waiting group


def test_ucs2_surrogates() -> None:
    assert encode_text("😀", 0x08) == b"\xd8\x3d\xde\x00"
    assert units("a😀", 0x08) == 3
    assert decode_text(b"\xd8\x3d\xde\x00", 0x08) == "😀"
    assert decode_text(b"\xd8\x3d\x00\x41", 0x08) == "\ufffdA"  # lone high surrogate
    assert decode_text(b"\x00\x41\xde\x00", 0x08) == "A\ufffd"  # lone low surrogate
    assert decode_text(b"\x00\x41\x00", 0x08) == "A\ufffd"  # odd trailing octet


@settings(max_examples=100, deadline=None)
@given(latin1_text)
def test_latin1_round_trip(text: str) -> None:
    assert encode_text(text, 0x03) == text.encode("latin-1")
    assert decode_text(encode_text(text, 0x03), 0x03) == text
    assert units(text, 0x03) == len(text)


@settings(max_examples=100, deadline=None)
@given(ascii_text)
def test_ia5_round_trip(text: str) -> None:
    assert decode_text(encode_text(text, 0x01), 0x01) == text


def test_ia5_rejects_and_replaces_high_octets() -> None:
    with pytest.raises(UnencodableError):
        encode_text("é", 0x01)
    assert decode_text(b"a\xe9", 0x01) == "a\ufffd"


def test_cyrillic_and_hebrew() -> None:
    assert decode_text(encode_text("Привет", 0x06), 0x06) == "Привет"
    assert encode_text("Привет", 0x06) == "Привет".encode("iso8859_5")
    assert decode_text(encode_text("שלום", 0x07), 0x07) == "שלום"


@pytest.mark.parametrize(
    ("dc", "alphabet"),
    [
        (0x00, Alphabet.GSM),
        (0x01, Alphabet.IA5),
        (0x02, Alphabet.BINARY),
        (0x03, Alphabet.LATIN1),
        (0x04, Alphabet.BINARY),
        (0x05, Alphabet.UNSUPPORTED),
        (0x08, Alphabet.UCS2),
        (0x10, Alphabet.UNSUPPORTED),
        (0xC0, Alphabet.GSM),
        (0xCB, Alphabet.GSM),
        (0xD3, Alphabet.GSM),
        (0xE2, Alphabet.UCS2),
        (0xF0, Alphabet.GSM),
        (0xF3, Alphabet.GSM),
        (0xF4, Alphabet.BINARY),
        (0xF7, Alphabet.BINARY),
        (0xFB, Alphabet.GSM),
    ],
)
def test_alphabet_of(dc: int, alphabet: Alphabet) -> None:
    assert alphabet_of(dc) is alphabet


def test_message_class_and_mwi_groups_code_text() -> None:
    assert encode_text("€x", 0xF1) == b"\x1bex"
    assert decode_text(b"\x1bex", 0xD0) == "€x"
    assert encode_text("€", 0xE8) == b"\x20\xac"


@pytest.mark.parametrize("dc", [0x02, 0x04, 0xF4, 0x05, 0x0E, 0x42])
def test_binary_and_unsupported_codings(dc: int) -> None:
    with pytest.raises(ValueError):
        encode_text("abc", dc)
    data = bytes(range(256))
    assert decode_text(data, dc) == data.decode("latin-1")
    assert decode_text(data, dc).encode("latin-1") == data


def test_data_coding_out_of_range() -> None:
    with pytest.raises(ValueError):
        alphabet_of(256)
    with pytest.raises(ValueError):
        encode_text("a", -1)


# ---------------------------------------------------------------- choosing and counting


@pytest.mark.parametrize(
    ("text", "strict", "latin1"),
    [
        ("Hello, world!", 0x00, 0x00),
        ("", 0x00, 0x00),
        ("Price: 5€ [promo] {x}", 0x00, 0x00),  # extension table
        ("Ça va", 0x00, 0x00),  # Ç is in GSM 03.38
        ("ça va", 0x08, 0x03),  # ç is not
        ("naïve `quote`", 0x08, 0x03),
        ("Привет", 0x08, 0x08),
        ("ok 😀", 0x08, 0x08),
        ("€ and ç", 0x08, 0x08),  # € is GSM but not Latin-1, ç is Latin-1 but not GSM
    ],
)
def test_choose_data_coding(text: str, strict: int, latin1: int) -> None:
    assert choose_data_coding(text) == strict
    assert choose_data_coding(text, allow_latin1=True) == latin1
    assert decode_text(encode_text(text, strict), strict) == text


def test_emoji_in_ucs2_uses_surrogates() -> None:
    dc = choose_data_coding("😀")
    assert dc == 0x08
    assert encode_text("😀", dc) == "😀".encode("utf-16-be")
    assert units("😀", dc) == 2


@pytest.mark.parametrize(
    ("text", "dc", "ref16", "expected"),
    [
        ("", 0x00, False, 1),
        ("a" * 160, 0x00, False, 1),
        ("a" * 161, 0x00, False, 2),
        ("a" * 306, 0x00, False, 2),
        ("a" * 307, 0x00, False, 3),
        ("a" * 304, 0x00, True, 2),
        ("a" * 305, 0x00, True, 3),
        ("€" * 80, 0x00, False, 1),  # 160 septets
        ("€" * 81, 0x00, False, 2),
        ("a" + "€" * 76, 0x00, False, 1),  # 153 septets
        # 306 septets would fit two parts of 153, but an escape pair cannot straddle them
        ("a" + "€" * 152 + "a", 0x00, False, 2),  # 153 + 153 septets
        ("€" * 153, 0x00, False, 3),
        ("é" * 140, 0x03, False, 1),
        ("é" * 141, 0x03, False, 2),
        ("é" * 268, 0x03, False, 2),
        ("é" * 269, 0x03, False, 3),
        ("é" * 266, 0x03, True, 2),
        ("é" * 267, 0x03, True, 3),
        ("ж" * 70, 0x08, False, 1),
        ("ж" * 71, 0x08, False, 2),
        ("ж" * 134, 0x08, False, 2),
        ("ж" * 135, 0x08, False, 3),
        ("ж" * 132, 0x08, True, 2),
        ("ж" * 133, 0x08, True, 3),
        ("😀" * 35, 0x08, False, 1),  # 70 code units
        ("😀" * 67, 0x08, False, 3),  # 134 units, but 67 units per part would split a pair
    ],
)
def test_segments_needed(text: str, dc: int, ref16: bool, expected: int) -> None:
    assert segments_needed(text, dc, ref16=ref16) == expected


def test_units() -> None:
    assert units("a€", 0x00) == 3
    assert units("a€", 0x08) == 2
    assert units("aé", 0x03) == 2
    with pytest.raises(UnencodableError):
        units("ç", 0x00)
    with pytest.raises(ValueError):
        units("a", 0x04)


def test_chunk_encoded_keeps_pairs_whole() -> None:
    data = gsm_encode("ab€")  # 61 62 1B 65
    assert chunk_encoded(data, 0x00, 3) == [b"ab", b"\x1be"]
    assert chunk_encoded(gsm_encode("abc€"), 0x00, 3) == [b"abc", b"\x1be"]
    ucs = encode_text("ab😀", 0x08)
    assert chunk_encoded(ucs, 0x08, 6) == [ucs[:4], ucs[4:]]
    assert chunk_encoded(ucs, 0x08, 7) == [ucs[:4], ucs[4:]]  # never half a code unit
    assert chunk_encoded(b"", 0x04, 10) == [b""]
    assert chunk_encoded(b"abcde", 0x04, 2) == [b"ab", b"cd", b"e"]
