"""The destination's local time zone: quiet hours are kept in it, and `bounceback stats
--hours local` counts in it.

phonenumbers lists the time zones a number range may be in, in alphabetical order:
a Moscow mobile (+7 916 …) lists every zone of Russia and Kazakhstan, Asia/Almaty
first, and a US toll-free number every US zone, America/Adak first. Taking the
first would put quiet hours hours off. So:

1. a prefix the configuration names (`[retry.time_zones]`, longest prefix first);
2. the one zone phonenumbers lists for the number's range;
3. for a range it lists several zones for, the country's principal zone (the one most
   of its people live in: `PRINCIPAL_ZONES`) when the range may be in it, else the
   range's first zone;
4. for a range it cannot place, the country's principal zone, else the zone of the
   country's example number.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping

# The zone most of a multi-zone country's people live in (its capital's, as a rule).
PRINCIPAL_ZONES: dict[str, str] = {
    "AR": "America/Argentina/Buenos_Aires",
    "AU": "Australia/Sydney",
    "BR": "America/Sao_Paulo",
    "CA": "America/Toronto",
    "CD": "Africa/Kinshasa",
    "CL": "America/Santiago",
    "CN": "Asia/Shanghai",
    "EC": "America/Guayaquil",
    "ES": "Europe/Madrid",
    "FM": "Pacific/Pohnpei",
    "GL": "America/Nuuk",
    "ID": "Asia/Jakarta",
    "KI": "Pacific/Tarawa",
    "KZ": "Asia/Almaty",
    "MN": "Asia/Ulaanbaatar",
    "MX": "America/Mexico_City",
    "MY": "Asia/Kuala_Lumpur",
    "NZ": "Pacific/Auckland",
    "PF": "Pacific/Tahiti",
    "PG": "Pacific/Port_Moresby",
    "PT": "Europe/Lisbon",
    "RU": "Europe/Moscow",
    "UA": "Europe/Kyiv",
    "US": "America/New_York",
}

UNKNOWN = "Etc/Unknown"


def zone(name: str) -> dt.tzinfo:
    """The zone of that IANA name (ValueError when there is none)."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _range_zone(number: str) -> str | None:
    """The zone name for `number` by rules 2 to 4 of the module's docstring."""
    try:
        import phonenumbers
        from phonenumbers import timezone as pn_tz

        parsed = phonenumbers.parse("+" + number.lstrip("+"), None)
    except Exception:
        return None
    listed = [z for z in pn_tz.time_zones_for_number(parsed) if z != UNKNOWN]
    if len(listed) == 1:
        return str(listed[0])
    region = phonenumbers.region_code_for_number(parsed) or (
        phonenumbers.region_code_for_country_code(parsed.country_code or 0)
    )
    principal = PRINCIPAL_ZONES.get(region or "")
    if listed:
        return principal if principal in listed else str(listed[0])
    if principal is not None:
        return principal
    example = phonenumbers.example_number(region) if region else None
    if example is None:
        return None
    zones = [z for z in pn_tz.time_zones_for_number(example) if z != UNKNOWN]
    return str(zones[0]) if zones else None


class Zones:
    """Number → local time zone, with the configuration's prefixes first (see the
    module docstring). Ranges are looked up once: the answer is kept per 7-digit
    prefix (phonenumbers' zone data is no finer than that)."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self._overrides = sorted(
            ((p, zone(name)) for p, name in (overrides or {}).items()),
            key=lambda item: -len(item[0]),
        )
        self._cache: dict[str, dt.tzinfo | None] = {}

    def __call__(self, number: str) -> dt.tzinfo | None:
        digits = number.lstrip("+")
        for prefix, chosen in self._overrides:
            if digits.startswith(prefix):
                return chosen
        key = digits[:7]
        if key in self._cache:
            return self._cache[key]
        name = _range_zone(digits)
        tz: dt.tzinfo | None = None
        if name is not None:
            try:
                tz = zone(name)
            except ValueError:  # a zone phonenumbers knows and this system does not
                tz = None
        if len(self._cache) >= 100_000:
            self._cache.clear()
        self._cache[key] = tz
        return tz


_DEFAULT = Zones()


def destination_tz(number: str) -> dt.tzinfo | None:
    """The destination's time zone, without configured prefixes."""
    return _DEFAULT(number)


def zone_name(tz: dt.tzinfo | None) -> str | None:
    """The IANA name of a zone from this module (None for none)."""
    key = getattr(tz, "key", None)
    return str(key) if key else None
