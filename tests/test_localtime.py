"""The destination's time zone for quiet hours: the numbering plan's zone, the
country's principal zone where a range spans several, configured prefixes first;
and the zone used is on the soft_bounce event."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from bounceback.config.settings import ConfigError, load_config
from bounceback.core.engine import Dispatch, Policy, Publish, ReceiptIn, SubmitResult, decide
from bounceback.core.localtime import PRINCIPAL_ZONES, Zones, destination_tz, zone_name
from bounceback.core.model import Message, State, Verdict
from test_config import BASE


@pytest.mark.parametrize(
    ("number", "zone"),
    [
        # phonenumbers lists every Russian and Kazakh zone for a Moscow mobile,
        # Asia/Almaty first.
        ("79161234567", "Europe/Moscow"),
        # ... and every US zone for toll-free, America/Adak first.
        ("18005551234", "America/New_York"),
        ("61412345678", "Australia/Sydney"),  # an Australian mobile
        ("77012345678", "Asia/Almaty"),  # a Kazakh mobile: the same +7, Kazakhstan's zone
        ("13105551234", "America/Los_Angeles"),  # a range with one zone keeps it
        ("4915112345678", "Europe/Berlin"),
        ("447700900123", "Europe/London"),  # a range phonenumbers cannot place: the country
    ],
)
def test_the_zone_of_a_number(number: str, zone: str) -> None:
    assert zone_name(destination_tz(number)) == zone
    assert zone_name(destination_tz("+" + number)) == zone


def test_every_principal_zone_exists() -> None:
    for region, name in PRINCIPAL_ZONES.items():
        assert ZoneInfo(name).key == name, region


def test_configured_prefixes_win_longest_first() -> None:
    zones = Zones({"7": "Asia/Yekaterinburg", "7916": "Europe/Kaliningrad"})
    assert zone_name(zones("79161234567")) == "Europe/Kaliningrad"
    assert zone_name(zones("79031234567")) == "Asia/Yekaterinburg"
    assert zone_name(zones("18005551234")) == "America/New_York"  # not configured


def test_time_zones_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(BASE + '\n[retry.time_zones]\n"1808" = "Pacific/Honolulu"\n')
    assert load_config(path).retry.time_zones == {"1808": "Pacific/Honolulu"}
    path.write_text(
        BASE + '\n[retry.time_zones]\n"1808" = "Pacific/Honolul"\n"+44" = "Europe/London"\n'
        '"49" = 3\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    shown = [str(p) for p in err.value.problems]
    assert shown == [
        f'{path}: retry.time_zones.1808: unknown time zone "Pacific/Honolul"',
        f'{path}: retry.time_zones."+44": expected a number prefix (digits only)',
        f'{path}: retry.time_zones.49: expected a time zone name such as "Europe/Moscow", got 3',
    ]


def test_the_soft_bounce_event_says_which_zone_quiet_hours_used() -> None:
    now = 1_780_000_000.0
    msg = Message(
        id="0000000000000001",
        account="acme",
        source_addr="Acme",
        destination_addr="79161234567",
        pdu=b"",
        registered_delivery=1,
        created_at=now,
        deadline=now + 86400,
        deadline_is_validity=False,
        submit_date=now,
        updated_at=now,
    )
    policy = Policy(quiet_start=dt.time(21, 0), quiet_end=dt.time(8, 0))
    msg, _ = decide(msg, Dispatch(now), policy)
    msg, _ = decide(
        msg,
        SubmitResult(now=now, carrier="c", status=0, carrier_message_id="X", verdict=None),
        policy,
    )
    absent = Verdict("soft", "absent_subscriber", "absent", "err:006", "map 6", "default")
    tz = destination_tz(msg.destination_addr)
    held, actions = decide(
        msg, ReceiptIn(now=now, attempt=1, verdict=absent, stat="UNDELIV", err="006", tz=tz), policy
    )
    assert held.state == State.HELD
    event = next(a for a in actions if isinstance(a, Publish) and a.event == "soft_bounce")
    assert event.fields["time_zone"] == "Europe/Moscow"
    # Without a zone the field is left out, not guessed.
    _, actions = decide(
        msg, ReceiptIn(now=now, attempt=1, verdict=absent, stat="UNDELIV", err="006"), policy
    )
    event = next(a for a in actions if isinstance(a, Publish) and a.event == "soft_bounce")
    assert "time_zone" not in event.fields
