"""Matching carrier message ids between ``submit_sm_resp`` and delivery receipts.

SMPP says a message_id is an opaque C string, but carriers do not keep to one form:
some answer ``submit_sm_resp`` with a hex id and put the same number in decimal in
the receipt (or the reverse; SMPP 3.3 ids were hex), change the case of hex digits,
or pad with leading zeros (``0000000012345678``).

The proxy therefore stores, for each message, the *keys* of the id from
``submit_sm_resp`` (:func:`id_keys`), and looks a receipt's id up by its own keys in
order, most specific first; the first key found wins. Keys are:

* ``"n:<normalised>"``: the id stripped of blanks and leading zeros, upper-cased. It
  matches the same id written with another case or padding.
* ``"i:<integer>"``: the id read as a number, written in decimal. Two ids that are
  the same number written in different bases share this key.

Formats (``fmt``), per carrier and per side (response or receipt):

* ``"hex"``: the id is hex. Its only key is ``i:`` with its hex reading (an id that
  is not hex falls back to ``n:``). The string key is left out on purpose: ``"10"``
  in hex and ``"10"`` in decimal are different messages.
* ``"dec"``: the id is decimal; its only key is ``i:`` with its decimal reading. An
  id with hex letters is read as hex (as Kannel does), since it cannot be decimal;
  any other id falls back to ``n:``.
* ``"opaque"``: only ``n:``; no numeric reading.
* ``"auto"`` (default, for carriers not yet known): ``n:`` first, then the decimal
  reading of an all-digit id, then the hex reading of an all-hex id. This is
  ambiguous: ``"10"`` may be ten or sixteen, so ``"10"`` and ``"16"`` match under
  ``auto`` (``16`` decimal is ``10`` hex) and in-flight ids may collide. A
  per-carrier format settles it.

Example: a carrier answers ``submit_sm_resp`` with ``1A2B`` (hex) and receipts with
``6699`` (decimal). With ``hex`` for responses and ``dec`` for receipts, both have
the single key ``i:6699``. The reverse (decimal responses, hex receipts) meets the
same way. Under ``auto`` the keys are ``n:1A2B, i:6699`` and
``n:6699, i:6699, i:26265``, which meet on ``i:6699``.

Upper-casing makes matching case-insensitive, so ids that differ only by case
(base-62 ids, for example) would collide; no carrier is known to rely on case.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ID_FORMATS", "id_keys", "ids_match", "normalize_id"]

ID_FORMATS: Final[frozenset[str]] = frozenset({"auto", "hex", "dec", "opaque"})

_HEX_DIGITS: Final = frozenset("0123456789ABCDEF")
_DEC_DIGITS: Final = frozenset("0123456789")


def normalize_id(mid: str) -> str:
    """Strip blanks and NULs, drop leading zeros (keeping a lone ``"0"``), upper-case."""
    text = mid.strip().strip("\x00").strip().upper()
    if not text:
        return ""
    stripped = text.lstrip("0")
    return stripped or "0"


def id_keys(mid: str, fmt: str = "auto") -> list[str]:
    """Ordered lookup keys of a message id, most specific first (see the module doc)."""
    if fmt not in ID_FORMATS:
        raise ValueError(f"unknown message id format {fmt!r} (expected auto, hex, dec or opaque)")
    norm = normalize_id(mid)
    if not norm:
        return []
    string_key = f"n:{norm}"
    if fmt == "opaque":
        return [string_key]
    chars = set(norm)
    is_dec = chars <= _DEC_DIGITS
    is_hex = chars <= _HEX_DIGITS
    if fmt == "hex":
        return [f"i:{int(norm, 16)}"] if is_hex else [string_key]
    if fmt == "dec":
        if is_dec:
            return [f"i:{int(norm, 10)}"]
        return [f"i:{int(norm, 16)}"] if is_hex else [string_key]
    keys = [string_key]
    if is_dec:
        keys.append(f"i:{int(norm, 10)}")
    if is_hex:
        hex_key = f"i:{int(norm, 16)}"
        if hex_key not in keys:
            keys.append(hex_key)
    return keys


def ids_match(a: str, b: str, fmt_a: str = "auto", fmt_b: str = "auto") -> bool:
    """True when the two ids share a lookup key (the same id, or the same number)."""
    keys_b = set(id_keys(b, fmt_b))
    return any(key in keys_b for key in id_keys(a, fmt_a))
