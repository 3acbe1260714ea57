"""The config loader and validator: good files load, bad ones say FILE: KEY: what."""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
from bounceback.config.settings import (
    DEFAULT_SCHEDULES,
    SOFT_REASONS,
    Account,
    Carrier,
    ClassifyConfig,
    Config,
    ConfigError,
    ConfigProblem,
    FeedConfig,
    LoggingConfig,
    MetricsConfig,
    RetryConfig,
    Route,
    Schedule,
    ServerConfig,
    StoreConfig,
    explain,
    load_config,
    parse_config,
)
from harness import CONFIGS, EXAMPLE_ENV, self_signed
from hypothesis import given, settings
from hypothesis import strategies as st
from smppcodecs.classify import Rules

ACCOUNT = """
[[accounts]]
system_id = "acme"
password = "acme-pw"
"""
CARRIER = """
[[carriers]]
name = "a"
host = "127.0.0.1"
system_id = "gw"
password = "a-pw"
"""
BASE = ACCOUNT + CARRIER


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in a temporary folder so problems name the file as "c.toml"."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load(text: str, environ: dict[str, str] | None = None, name: str = "c.toml") -> Config:
    Path(name).write_text(text, encoding="utf-8")
    return load_config(name, environ={} if environ is None else environ)


def problems(text: str, environ: dict[str, str] | None = None, name: str = "c.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, environ, name)
    return [str(p) for p in info.value.problems]


# ---------------------------------------------------------------- good configs


def test_example_loads_with_every_section(here: Path) -> None:
    config = load_config(CONFIGS / "example.toml", environ=EXAMPLE_ENV)
    assert config.server.host == "0.0.0.0"
    assert config.server.instance_id == "gw-1"
    assert [a.system_id for a in config.accounts] == ["acme", "ops", "test"]
    acme = config.account("acme")
    assert acme is not None
    assert acme.password == "acme-env-secret"
    assert acme.password_env == "ACME_SMPP_PASSWORD"
    assert acme.allowed_ips == ("10.0.0.0/8", "192.0.2.15/32")
    assert acme.allows_ip("10.1.2.3") and acme.allows_ip("::ffff:10.1.2.3")
    assert not acme.allows_ip("192.0.2.16") and not acme.allows_ip("junk")
    ops = config.account("ops")
    assert ops is not None and ops.ack == "stored" and ops.bind_types == ("transceiver",)
    assert ops.allows_bind("transceiver") and not ops.allows_bind("receiver")
    assert config.account("nobody") is None

    a = config.carrier("carrierA")
    assert a is not None
    assert a.password == "carrier-a-env-secret"
    assert a.tls is True and a.tls_ca == ""
    assert a.mo_routes == {"55555": "ops", "12345": "acme"}
    assert a.mo_account_for("55555") == "ops"
    assert a.mo_account_for("99999") == "acme"
    b = config.carrier("carrierB")
    assert b is not None and (b.id_format, b.receipt_id_format) == ("hex", "dec")
    assert b.bind_mode == "transmitter_receiver"

    assert config.retry.quiet_hours() == (dt.time(21, 0), dt.time(8, 0))
    assert config.retry.schedules["absent_subscriber"] == Schedule(600.0, 2.0, 14400.0)
    assert config.store.path == str(CONFIGS / "bounceback.db")
    assert config.store.backend == "sqlite"
    assert config.feed is not None and config.feed.password == "mqtt-env-secret"
    assert config.metrics == MetricsConfig(enabled=True, host="127.0.0.1", port=9102)
    assert config.logging == LoggingConfig()


def test_example_covers_every_key() -> None:
    raw = tomllib.loads((CONFIGS / "example.toml").read_text(encoding="utf-8"))

    def fields(cls: type[Any]) -> set[str]:
        return {f.name for f in attrs.fields(cls)}

    def union(entries: list[dict[str, Any]]) -> set[str]:
        return set().union(*(entry.keys() for entry in entries))

    assert set(raw) == fields(Config) - {"source"}
    assert set(raw["server"]) == fields(ServerConfig)
    assert union(raw["accounts"]) == fields(Account)
    assert union(raw["carriers"]) == fields(Carrier)
    assert union(raw["routes"]) == fields(Route)
    assert set(raw["retry"]) == fields(RetryConfig)
    assert all(set(s) == fields(Schedule) for s in raw["retry"]["schedules"].values())
    assert set(raw["classify"]) == {"include", "defaults", "carriers"}
    entry_keys = {"include", "err_space", "err", "status", "stat", "network_error_code"}
    assert set(raw["classify"]["defaults"]) == entry_keys
    assert set(raw["store"]) == fields(StoreConfig)
    # password and password_env exclude each other: the example shows one in a comment.
    assert set(raw["feed"]) == fields(FeedConfig) - {"password"}
    assert 'or password = "..."' in (CONFIGS / "example.toml").read_text(encoding="utf-8")
    assert set(raw["metrics"]) == fields(MetricsConfig)
    assert set(raw["logging"]) == fields(LoggingConfig)


def test_example_classification_merges_the_style_file() -> None:
    config = load_config(CONFIGS / "example.toml", environ=EXAMPLE_ENV)
    rules = config.classify.for_carrier("carrierB")
    assert rules["err_space"] == "none"  # from classify/vonage-style.toml
    assert rules["err"]["2"] == "soft:absent_subscriber"  # included
    assert rules["err"]["12"] == "soft:routing"  # the carrier's own table wins
    assert rules["err"]["99"] == "hard:rejected_upstream"  # from the defaults
    assert rules["status"] == {"0x58": "soft:throttled", "0x14": "soft:congestion"}
    plain = config.classify.for_carrier("carrierA")
    assert plain["err_space"] == "map"
    assert "2" not in plain["err"]
    rules["err"]["2"] = "changed"
    assert config.classify.for_carrier("carrierB")["err"]["2"] == "soft:absent_subscriber"


def test_demo_loads_without_environment() -> None:
    config = load_config(CONFIGS / "demo.toml", environ={})
    assert (config.server.host, config.server.port) == ("127.0.0.1", 2775)
    assert config.account("demo") == Account(system_id="demo", password="demo-pw")
    sim = config.carrier("sim")
    assert sim is not None and (sim.host, sim.port) == ("127.0.0.1", 2776)
    assert config.store.path == str(CONFIGS / "bounceback-demo.db")
    assert config.store.url == ""
    assert config.feed is None
    for reason in SOFT_REASONS:
        assert config.retry.schedule(reason).initial <= config.retry.max_age


@pytest.mark.parametrize("style", ["vonage-style", "twilio-style", "map40-style"])
def test_style_files_load_as_carrier_overrides(here: Path, style: str) -> None:
    text = BASE + f'[classify.carriers.a]\ninclude = ["{CONFIGS / "classify" / style}.toml"]\n'
    rules = load(text).classify.for_carrier("a")
    expected_space = "map40" if style == "map40-style" else "none"
    assert rules["err_space"] == expected_space
    if style == "vonage-style":
        assert rules["err"]["3"].startswith("hard:") and rules["err"]["7"] == "soft:subscriber_busy"
    if style == "twilio-style":
        assert rules["err"]["001"] == "soft:absent_subscriber"
        assert rules["err"]["005"] == "hard:unknown_subscriber"


def test_defaults_apply_to_a_minimal_config(here: Path) -> None:
    config = load(BASE)
    assert config.source == "c.toml"
    assert config.server == ServerConfig()
    assert config.server.max_pdu_size == 65536 + 1024
    assert config.accounts == (Account(system_id="acme", password="acme-pw"),)
    assert config.carriers == (
        Carrier(name="a", host="127.0.0.1", system_id="gw", password="a-pw"),
    )
    assert config.routes == ()
    assert config.retry == RetryConfig()
    assert config.retry.schedules == dict(DEFAULT_SCHEDULES)
    assert config.retry.quiet_hours() is None
    assert config.classify == ClassifyConfig()
    assert config.store == StoreConfig(path=str(here / "bounceback.db"))
    assert config.feed is None and config.metrics is None
    assert config.logging == LoggingConfig()


def test_floats_accept_integers_and_enabled_false_means_off(here: Path) -> None:
    text = BASE + "[server]\nresponse_timeout = 5\n[feed]\nenabled = false\n"
    text += '[metrics]\nenabled = false\n[logging]\nlevel = "debug"\n'
    config = load(text)
    assert config.server.response_timeout == 5.0
    assert isinstance(config.server.response_timeout, float)
    assert config.feed is None and config.metrics is None
    assert config.logging.level == "DEBUG"


def test_feed_table_without_enabled_is_on_and_partial_schedule_keeps_defaults(here: Path) -> None:
    text = BASE + '[feed]\nhost = "broker"\n[retry.schedules.memory_full]\ninitial = 1800\n'
    config = load(text)
    assert config.feed == FeedConfig(host="broker")
    assert config.retry.schedules["memory_full"] == Schedule(1800.0, 2.0, 21600.0)
    assert config.retry.schedule("memory_full").delay(1) == 1800.0
    assert config.retry.schedule("memory_full").delay(3) == 7200.0
    assert config.retry.schedule("memory_full").delay(10) == 21600.0


@pytest.mark.parametrize("value", ["auto", "uvloop", "asyncio"])
def test_event_loop_choices(here: Path, value: str) -> None:
    config = load(BASE + f'[server]\nevent_loop = "{value}"\n')
    assert config.server.event_loop == value
    assert f"event loop {value}; garbage collector threshold 20000" in explain(config)


def test_event_loop_defaults_to_auto_and_refuses_anything_else(here: Path) -> None:
    assert load(BASE).server.event_loop == "auto"
    expected = 'c.toml: server.event_loop: expected "auto", "uvloop" or "asyncio", got '
    assert problems(BASE + '[server]\nevent_loop = "trio"\n') == [expected + '"trio"']
    assert problems(BASE + '[server]\nevent_loop = "UVLOOP"\n') == [expected + '"UVLOOP"']
    assert problems(BASE + "[server]\nevent_loop = true\n") == [expected + "true"]
    assert problems(BASE + '[server]\nevent_loop = "trio"\n', name="gw.toml") == [
        expected.replace("c.toml", "gw.toml") + '"trio"'
    ]


def test_gc_threshold(here: Path) -> None:
    assert load(BASE).server.gc_threshold == 20000
    off = load(BASE + "[server]\ngc_threshold = 0\n")
    assert off.server.gc_threshold == 0
    assert "garbage collector as Python sets it)" in explain(off)
    assert load(BASE + "[server]\ngc_threshold = 50000\n").server.gc_threshold == 50000
    for bad in ("-1", '"big"', "1.5", "true", "20000000"):
        (problem,) = problems(BASE + f"[server]\ngc_threshold = {bad}\n")
        assert problem.startswith("c.toml: server.gc_threshold: "), problem
        assert problem.endswith(f"got {bad}"), problem


def test_event_loop_uvloop_is_refused_with_the_tls_listener(here: Path) -> None:
    self_signed(here, "cert")
    tls = '[server]\ntls_cert = "cert.pem"\ntls_key = "cert.key"\n'
    assert load(BASE + tls).server.event_loop == "auto"
    assert load(BASE + tls + 'event_loop = "asyncio"\n').server.event_loop == "asyncio"
    assert problems(BASE + tls + 'event_loop = "uvloop"\n') == [
        'c.toml: server.event_loop: "uvloop" cannot serve the TLS listener (tls_cert is set): '
        'it may read a connection before its TLS handshake starts; set "auto" or "asyncio"'
    ]


def test_metrics_port_must_differ_from_the_smpp_ports(here: Path) -> None:
    assert load(BASE + "[metrics]\nport = 9102\n").metrics is not None
    assert problems(BASE + "[metrics]\nport = 2775\n") == [
        "c.toml: metrics.port: the same as server.port (2775): the SMPP listener's port"
    ]
    text = BASE + "[server]\nport = 2800\n[metrics]\nport = 2800\n"
    assert problems(text) == [
        "c.toml: metrics.port: the same as server.port (2800): the SMPP listener's port"
    ]
    # Port 0 is chosen at start; without TLS the TLS port is not listened on.
    assert load(BASE + "[server]\nport = 0\n[metrics]\nport = 0\n").metrics is not None
    assert load(BASE + "[metrics]\nport = 3550\n").metrics is not None
    self_signed(here, "cert")
    tls = '[server]\ntls_cert = "cert.pem"\ntls_key = "cert.key"\n'
    assert problems(BASE + tls + "[metrics]\nport = 3550\n") == [
        "c.toml: metrics.port: the same as server.tls_port (3550): the TLS listener's port"
    ]
    # A disabled metrics table has no port to clash.
    assert load(BASE + "[metrics]\nenabled = false\nport = 2775\n").metrics is None


EMPTY = (
    "empty: set the password (or password_env), or allow_empty_password = true "
    "when the peer really has none"
)


def test_an_empty_password_needs_allow_empty_password(here: Path) -> None:
    account = ACCOUNT.replace('password = "acme-pw"', 'password = ""')
    carrier = CARRIER.replace('password = "a-pw"', 'password = ""')
    assert problems(account + carrier) == [
        f"c.toml: accounts[0].password: {EMPTY}",
        f"c.toml: carriers[0].password: {EMPTY}",
    ]
    allowed = account + "allow_empty_password = true\n" + carrier
    assert problems(allowed) == [f"c.toml: carriers[0].password: {EMPTY}"]
    config = load(allowed + "allow_empty_password = true\n")
    assert config.accounts[0].password == "" and config.accounts[0].allow_empty_password
    assert config.carriers[0].password == "" and config.carriers[0].allow_empty_password
    assert "no password" in explain(config)
    # A password that is set needs no permission; the key must be a boolean.
    assert not load(BASE + "allow_empty_password = false\n").carriers[0].allow_empty_password
    assert problems(BASE + 'allow_empty_password = "yes"\n') == [
        'c.toml: carriers[0].allow_empty_password: expected true or false, got "yes"'
    ]


def test_store_url_selects_postgresql_and_is_masked(here: Path) -> None:
    config = load(BASE + '[store]\nurl = "postgresql://bb:pg-secret-77@db/bounce"\n')
    assert config.store.backend == "postgresql"
    assert config.store.url == "postgresql://bb:pg-secret-77@db/bounce"
    assert "pg-secret-77" not in repr(config)
    assert "pg-secret-77" not in explain(config)
    assert "postgresql://bb:***@db/bounce" in explain(config)


def test_parse_config_from_a_mapping(tmp_path: Path) -> None:
    data = {
        "accounts": [{"system_id": "x", "password_env": "X_PW"}],
        "carriers": [
            {
                "name": "c",
                "host": "h",
                "system_id": "s",
                "password": "",
                "allow_empty_password": True,
            }
        ],
        "store": {"path": ":memory:"},
    }
    config = parse_config(data, source="inline", base_dir=tmp_path, environ={"X_PW": "pw"})
    assert config.account("x") == Account(system_id="x", password="pw", password_env="X_PW")
    assert config.store.path == ":memory:"
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="inline", base_dir=tmp_path, environ={})
    assert [str(p) for p in info.value.problems] == [
        "inline: accounts[0].password_env: environment variable X_PW is not set"
    ]


# ---------------------------------------------------------------- routes


def test_routes_longest_prefix_then_account_then_fallback(here: Path) -> None:
    text = ACCOUNT + '[[accounts]]\nsystem_id = "ops"\npassword = "o"\n'
    for name in ("a", "b", "c"):
        text += f'[[carriers]]\nname = "{name}"\nhost = "h"\nsystem_id = "s"\npassword = "p"\n'
    text += '[[routes]]\nprefix = "+44"\ncarriers = ["b", "a"]\n'
    text += '[[routes]]\nprefix = "447"\ncarriers = ["c"]\n'
    text += '[[routes]]\nprefix = "447"\naccounts = ["ops"]\ncarriers = ["a"]\n'
    config = load(text)
    assert config.routes[0].prefix == "44"

    def names(system_id: str, destination: str) -> list[str]:
        return [c.name for c in config.carriers_for(system_id, destination)]

    assert names("acme", "441234") == ["b", "a"]
    assert names("acme", "+447700") == ["c"]
    assert names("ops", "447700") == ["a"]
    assert names("ops", "331234") == ["a", "b", "c"]


# ---------------------------------------------------------------- bad configs


def test_wrong_type(here: Path) -> None:
    text = ACCOUNT + CARRIER + CARRIER.replace('"a"', '"b"') + 'port = "abc"\n'
    assert problems(text) == [
        'c.toml: carriers[1].port: expected an integer from 1 to 65535, got "abc"'
    ]


def test_bool_is_not_an_integer_and_tables_are_not_values(here: Path) -> None:
    text = BASE + "[server]\nmax_connections = true\nhost = []\n[[retry]]\n"
    assert problems(text) == [
        "c.toml: server.host: expected a host name or address, got an array",
        "c.toml: server.max_connections: expected an integer of at least 1, got true",
        "c.toml: retry: expected a table, got an array",
    ]


def test_unknown_key_with_suggestion(here: Path) -> None:
    text = BASE + '[server]\nprot = 2776\nzzz = 1\n[loging]\nlevel = "INFO"\n'
    assert problems(text) == [
        'c.toml: server.prot: unknown key (did you mean "port"?)',
        "c.toml: server.zzz: unknown key",
        'c.toml: loging: unknown key (did you mean "logging"?)',
    ]


def test_missing_required_keys(here: Path) -> None:
    text = ACCOUNT + '[[carriers]]\nname = "a"\npassword = "p"\n[[routes]]\nprefix = "1"\n'
    assert problems(text) == [
        "c.toml: carriers[0].host: missing required key",
        "c.toml: carriers[0].system_id: missing required key",
        "c.toml: routes[0].carriers: missing required key",
    ]
    assert problems("") == [
        "c.toml: accounts: at least one [[accounts]] entry is required",
        "c.toml: carriers: at least one [[carriers]] entry is required",
    ]


def test_array_of_tables_written_as_a_table(here: Path) -> None:
    assert problems(CARRIER + '[accounts]\nsystem_id = "x"\n') == [
        "c.toml: accounts: expected an array of tables ([[accounts]]), got a table",
    ]


def test_bad_enumerations(here: Path) -> None:
    text = ACCOUNT + 'ack = "later"\nbind_types = ["transmitter", "sender"]\n' + CARRIER
    text += 'bind_mode = "duplex"\n[feed]\nprotocol = 5\n[logging]\nlevel = "LOUD"\n'
    assert problems(text) == [
        'c.toml: accounts[0].bind_types[1]: expected "transmitter", "receiver" or '
        '"transceiver", got "sender"',
        'c.toml: accounts[0].ack: expected "carrier" or "stored", got "later"',
        'c.toml: carriers[0].bind_mode: expected "transceiver" or "transmitter_receiver", '
        'got "duplex"',
        'c.toml: feed.protocol: expected "5" or "3.1.1", got 5',
        'c.toml: logging.level: expected "DEBUG", "INFO", "WARNING", "ERROR" or "CRITICAL", '
        'got "LOUD"',
    ]


def test_out_of_range(here: Path) -> None:
    text = ACCOUNT + "window = 0\nthroughput = -1\n" + CARRIER + "port = 70000\n"
    text += "[retry]\njitter = 1.5\nmax_age = nan\n[feed]\nqos = 3\n"
    text += "[store]\nbatch_delay = -0.5\n"
    assert problems(text) == [
        "c.toml: accounts[0].throughput: expected a number of at least 0, got -1",
        "c.toml: accounts[0].window: expected an integer of at least 1, got 0",
        "c.toml: carriers[0].port: expected an integer from 1 to 65535, got 70000",
        "c.toml: retry.max_age: expected a number greater than 0, got nan",
        "c.toml: retry.jitter: expected a number from 0 to 1, got 1.5",
        "c.toml: store.batch_delay: expected a number of at least 0, got -0.5",
        "c.toml: feed.qos: expected an integer from 0 to 2, got 3",
    ]


def test_reconnect_max_below_min(here: Path) -> None:
    text = BASE + "reconnect_min = 10\nreconnect_max = 5\n"
    assert problems(text) == [
        "c.toml: carriers[0].reconnect_max: must be at least reconnect_min (10)"
    ]


def test_stable_after(here: Path) -> None:
    assert load(BASE).carriers[0].stable_after == 30.0
    assert load(BASE + "stable_after = 2.5\n").carriers[0].stable_after == 2.5
    for bad in ("0", "-1", '"soon"', "nan"):
        assert problems(BASE + f"stable_after = {bad}\n") == [
            f"c.toml: carriers[0].stable_after: expected a number greater than 0, got {bad}"
        ]


def test_receipt_query_after(here: Path) -> None:
    config = load(BASE)
    assert config.carriers[0].receipt_query_after == 600.0
    assert "receipts queried after 600 s" in explain(config)
    off = load(BASE + "receipt_query_after = 0\n")
    assert off.carriers[0].receipt_query_after == 0.0
    assert "receipts never queried" in explain(off)
    assert load(BASE + "receipt_query_after = 0.5\n").carriers[0].receipt_query_after == 0.5
    for bad in ("-1", '"10m"', "true", "nan"):
        assert problems(BASE + f"receipt_query_after = {bad}\n") == [
            f"c.toml: carriers[0].receipt_query_after: expected a number of at least 0, got {bad}"
        ]


def test_unknown_names_in_routes(here: Path) -> None:
    text = BASE + CARRIER.replace('"a"', '"b"')
    text += (
        '[[routes]]\nprefix = "44"\naccounts = ["acme", "nobody"]\ncarriers = ["a", "carrierZ"]\n'
    )
    text += '[[routes]]\nprefix = "4x"\ncarriers = []\n'
    assert problems(text) == [
        'c.toml: routes[0].accounts[1]: unknown account "nobody" (known: acme)',
        'c.toml: routes[0].carriers[1]: unknown carrier "carrierZ" (known: a, b)',
        'c.toml: routes[1].prefix: expected a destination prefix of digits, got "4x"',
        "c.toml: routes[1].carriers: expected a non-empty array of carrier names, got []",
    ]


def test_duplicate_route(here: Path) -> None:
    text = BASE + '[[routes]]\nprefix = "44"\ncarriers = ["a"]\n'
    text += '[[routes]]\nprefix = "+44"\ncarriers = ["a"]\n'
    assert problems(text) == [
        "c.toml: routes[1]: duplicate route: same prefix and accounts as routes[0]"
    ]


def test_unknown_account_in_mo_routes_and_mo_account(here: Path) -> None:
    text = BASE + 'mo_account = "acme2"\n[carriers.mo_routes]\n"12345" = "acme"\n'
    text += '"55555" = "ghost"\n"bad key" = "acme"\n'
    assert problems(text) == [
        'c.toml: carriers[0].mo_account: unknown account "acme2" (known: acme)',
        'c.toml: carriers[0].mo_routes.55555: unknown account "ghost" (known: acme)',
        'c.toml: carriers[0].mo_routes."bad key": expected a short code or number as the key, '
        'got "bad key"',
    ]


def test_password_from_environment(here: Path) -> None:
    text = '[[accounts]]\nsystem_id = "acme"\npassword_env = "ACME_PW"\n' + CARRIER
    config = load(text, environ={"ACME_PW": "from-env"})
    assert config.accounts[0].password == "from-env"
    assert problems(text) == [
        "c.toml: accounts[0].password_env: environment variable ACME_PW is not set"
    ]
    assert problems(text, environ={"ACME_PW": ""}) == [
        "c.toml: accounts[0].password_env: environment variable ACME_PW is empty"
    ]


def test_password_both_neither_and_bad_env_name(here: Path) -> None:
    text = '[[accounts]]\nsystem_id = "acme"\npassword = "x"\npassword_env = "ACME_PW"\n'
    text += '[[accounts]]\nsystem_id = "ops"\n'
    text += '[[accounts]]\nsystem_id = "sam"\npassword_env = "1-bad"\n' + CARRIER
    assert problems(text, environ={"ACME_PW": "y"}) == [
        "c.toml: accounts[0].password_env: set either password or password_env, not both",
        "c.toml: accounts[1].password: missing required key (or set password_env)",
        'c.toml: accounts[2].password_env: expected an environment variable name, got "1-bad"',
    ]


def test_disabled_feed_does_not_need_its_environment_variable(here: Path) -> None:
    assert load(BASE + '[feed]\nenabled = false\npassword_env = "MQ_PW"\n').feed is None
    assert problems(BASE + '[feed]\npassword_env = "MQ_PW"\n') == [
        "c.toml: feed.password_env: environment variable MQ_PW is not set"
    ]


def test_duplicate_names(here: Path) -> None:
    text = BASE + ACCOUNT + CARRIER
    assert problems(text) == [
        'c.toml: accounts[1].system_id: duplicate system_id "acme" (also in accounts[0])',
        'c.toml: carriers[1].name: duplicate carrier name "a" (also in carriers[0])',
    ]


def test_bad_names_and_lengths(here: Path) -> None:
    text = '[[accounts]]\nsystem_id = "sixteen-chars-xx"\npassword = "p"\n'
    text += '[[carriers]]\nname = "a b"\nhost = "h"\nsystem_id = "s"\npassword = "p"\n'
    text += 'system_type = "thirteen-char"\n'
    assert problems(text) == [
        "c.toml: accounts[0].system_id: expected 1 to 15 printable ASCII characters without "
        'spaces, got "sixteen-chars-xx"',
        'c.toml: carriers[0].name: expected a name of letters, digits, ".", "_" or "-", got "a b"',
        "c.toml: carriers[0].system_type: expected up to 12 printable ASCII characters, "
        'got "thirteen-char"',
    ]


def test_bad_allowed_ips_and_missing_tls_ca(here: Path) -> None:
    text = ACCOUNT + 'allowed_ips = ["10.0.0.0/8", "10.0.0.300/8"]\n' + CARRIER
    text += 'tls = true\ntls_ca = "certs/none.pem"\n'
    assert problems(text) == [
        "c.toml: accounts[0].allowed_ips[1]: expected an IP address or CIDR network, "
        'got "10.0.0.300/8"',
        f"c.toml: carriers[0].tls_ca: file not found: {Path('certs/none.pem')}",
    ]
    (here / "ca.pem").write_text("x", encoding="utf-8")  # there, but no certificate in it
    fixed = text.replace("certs/none.pem", "ca.pem").replace("10.0.0.300/8", "::1")
    assert problems(fixed) == ["c.toml: carriers[0].tls_ca: no PEM certificate in the file"]
    self_signed(here, "ca")
    config = load(fixed)
    assert config.carriers[0].tls_ca == str(here / "ca.pem")
    assert config.accounts[0].allowed_ips == ("10.0.0.0/8", "::1/128")


def test_schedule_longer_than_max_age(here: Path) -> None:
    text = BASE + "[retry]\nmax_age = 3000\n[retry.schedules.absent_subscriber]\ninitial = 4000\n"
    text += "max = 8000\n"
    assert problems(text) == [
        "c.toml: retry.schedules.absent_subscriber.initial: retry schedule longer than the "
        "maximum age (4000 s > retry.max_age 3000 s)",
        "c.toml: retry.max_age: retry schedule longer than the maximum age: memory_full waits "
        "3600 s before its first retry (set [retry.schedules.memory_full])",
    ]


def test_bad_schedules(here: Path) -> None:
    text = BASE + "[retry.schedules.absent]\ninitial = 1\n"
    text += "[retry.schedules.network]\ninitial = 100\nmax = 50\nfactor = 0.5\nmaximum = 1\n"
    text += "[retry.schedules]\ntimeout = 5\n"
    valid = ", ".join(SOFT_REASONS)
    assert problems(text) == [
        f'c.toml: retry.schedules.absent: unknown reason "absent" (did you mean '
        f'"absent_subscriber"? valid: {valid})',
        "c.toml: retry.schedules.network.factor: expected a number of at least 1, got 0.5",
        "c.toml: retry.schedules.network.max: must be at least initial (100)",
        'c.toml: retry.schedules.network.maximum: unknown key (did you mean "max"?)',
        "c.toml: retry.schedules.timeout: expected a table, got 5",
    ]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            'quiet_hours_start = "22:00"',
            "retry.quiet_hours_end: set both quiet_hours_start and quiet_hours_end, or neither",
        ),
        (
            'quiet_hours_end = "07:00"',
            "retry.quiet_hours_start: set both quiet_hours_start and quiet_hours_end, or neither",
        ),
        (
            'quiet_hours_start = "24:00"\nquiet_hours_end = "07:00"',
            'retry.quiet_hours_start: expected a local time "HH:MM", got "24:00"',
        ),
        (
            'quiet_hours_start = "7:00"\nquiet_hours_end = "07:00"',
            'retry.quiet_hours_start: expected a local time "HH:MM", got "7:00"',
        ),
        (
            'quiet_hours_start = "07:00"\nquiet_hours_end = "07:00"',
            "retry.quiet_hours_end: must differ from quiet_hours_start",
        ),
    ],
)
def test_bad_quiet_hours(here: Path, lines: str, expected: str) -> None:
    assert problems(BASE + f"[retry]\n{lines}\n") == [f"c.toml: {expected}"]


def test_empty_quiet_hours_mean_off(here: Path) -> None:
    config = load(BASE + '[retry]\nquiet_hours_start = ""\nquiet_hours_end = ""\n')
    assert config.retry.quiet_hours() is None


def test_bad_classify_strings(here: Path) -> None:
    text = BASE + '[classify.defaults]\nerr_space = "bogus"\n'
    text += '[classify.defaults.err]\n"1" = "soft:sleepy"\n"2" = "maybe"\n'
    text += '"03" = "hard:Bad Reason"\n"003" = "hard:x"\n"a b" = "hard:x"\n"4" = "delivered"\n'
    text += '"5" = "hard"\n"6" = "pending:later"\n'
    text += '"7" = { kind = "soft", reason = "network", max_retries = -1 }\n'
    text += '"8" = { reason = "network", retries = 2 }\n'
    text += '[classify.defaults.status]\n"0xZZ" = "soft:throttled"\n"69" = "hard:x"\n'
    text += '"0x45" = "hard:y"\n'
    text += "[classify.defaults.stat]\nundeliv = 5\n"
    text += '[classify.defaults.network_error_code]\n"3-6" = "soft:network"\n"0/1" = "hard:x"\n'
    text += '[classify.carriers.simm.err]\n"1" = "hard:x"\n'
    valid = ", ".join(SOFT_REASONS)
    forms = '"pending", "soft:<reason>", "hard:<reason>" or a table'
    assert problems(text) == [
        'c.toml: classify.defaults.err_space: expected "map", "map40" or "none", got "bogus"',
        f'c.toml: classify.defaults.err.1: unknown soft reason "sleepy" (valid: {valid})',
        f'c.toml: classify.defaults.err.2: expected {forms}, got "maybe"',
        "c.toml: classify.defaults.err.03: expected a hard reason of lower-case letters, "
        'digits and "_", got "Bad Reason"',
        'c.toml: classify.defaults.err.003: same err as "03"',
        'c.toml: classify.defaults.err."a b": expected an err value of 1 to 10 letters or '
        'digits, got "a b"',
        "c.toml: classify.defaults.err.4: only stat rules may say delivered",
        'c.toml: classify.defaults.err.5: a hard outcome needs a reason ("hard:<reason>")',
        'c.toml: classify.defaults.err.6: unknown pending reason "later" (valid: enroute, '
        "accepted)",
        "c.toml: classify.defaults.err.7.max_retries: expected an integer of at least 0, got -1",
        "c.toml: classify.defaults.err.8.kind: missing required key",
        'c.toml: classify.defaults.err.8.retries: unknown key (did you mean "max_retries"?)',
        'c.toml: classify.defaults.status.0xZZ: expected a command_status such as "0x58", '
        '"88" or "ESME_RTHROTTLED", got "0xZZ"',
        'c.toml: classify.defaults.status.0x45: same status as "69"',
        f'c.toml: classify.defaults.stat.undeliv: expected "delivered", {forms}, got 5',
        "c.toml: classify.defaults.network_error_code.3-6: expected a network error code "
        '"type/code" such as "3/6", got "3-6"',
        'c.toml: classify.defaults.network_error_code."0/1": expected a network error code '
        '"type/code" such as "3/6", got "0/1"',
        'c.toml: classify.carriers.simm: unknown carrier "simm" (known: a)',
    ]


def test_classify_keys_are_normalised(here: Path) -> None:
    text = BASE + '[classify.defaults.status]\n"69" = "hard:x"\n"0X58" = "soft:throttled"\n'
    text += 'esme_rsyserr = { kind = "soft", reason = "system_failure", max_retries = 2 }\n'
    text += '[classify.defaults.stat]\nundeliv = "hard:undeliverable"\n'
    text += '[classify.defaults.network_error_code]\n"003/006" = "soft:absent_subscriber"\n'
    text += '[classify.defaults.err]\n"1" = "hard:unknown_subscriber"\n'
    text += '[classify.carriers.a.err]\n"001" = "soft:absent_subscriber"\n'
    classify = load(text).classify
    assert classify.defaults == {
        "err_space": "map",
        "err": {"1": "hard:unknown_subscriber"},
        "status": {
            "0x45": "hard:x",
            "0x58": "soft:throttled",
            "0x08": {"kind": "soft", "reason": "system_failure", "max_retries": 2},
        },
        "stat": {"UNDELIV": "hard:undeliverable"},
        "network_error_code": {"3/6": "soft:absent_subscriber"},
    }
    # A carrier's "001" replaces the defaults' "1": they are the same err.
    assert classify.for_carrier("a")["err"] == {"001": "soft:absent_subscriber"}


def test_rules_engine_accepts_the_shipped_configs() -> None:
    for name in ("example.toml", "demo.toml"):
        config = load_config(CONFIGS / name, environ=EXAMPLE_ENV)
        for carrier in ("", *(c.name for c in config.carriers)):
            rules = Rules.from_mapping(config.classify.for_carrier(carrier))
            assert rules.err_space == config.classify.for_carrier(carrier)["err_space"]
    example = load_config(CONFIGS / "example.toml", environ=EXAMPLE_ENV)
    rules = Rules.from_mapping(example.classify.for_carrier("carrierB"))
    assert set(rules.err) >= {str(n) for n in range(1, 15)} | {"99", "36"}
    assert rules.status.keys() == {0x58, 0x14}


# Rule keys: distinct ones (no two name the same code), equivalent spellings, invalid.
_RULE_KEYS = {
    "err": (["1", "005", "XY", "99"], ["01", "5"], ["a b", ""]),
    "status": (["0x45", "ESME_RTHROTTLED", "esme_rsyserr", "20"], ["69", "0x14"], ["0xZZ"]),
    "stat": (["UNDELIV", "delivrd", "BUFFRED"], ["undeliv"], ["EN ROUTE"]),
    "network_error_code": (["3/6", "1/65535", "8/0"], ["003/006"], ["0/1", "3-6", "256/1"]),
}
_GOOD_VALUES: list[object] = [
    "pending",
    "pending:accepted",
    "soft:network",
    "hard:x",
    {"kind": "soft", "reason": "network"},
    {"kind": "soft", "reason": "network", "max_retries": 1, "description": "d"},
    {"kind": "pending"},
]
_BAD_VALUES: list[object] = [
    "delivered",  # valid in stat tables only
    {"kind": "delivered"},
    "pending:later",
    "soft:sleepy",
    "hard",
    "hard:Bad",
    "maybe",
    5,
    {"kind": "hard"},
    {"kind": "soft", "reason": "network", "extra": 1},
]


def _entries(valid: bool) -> st.SearchStrategy[dict[str, object]]:
    """Classification entries: all valid, or with equivalent and invalid keys and values."""
    tables: dict[str, st.SearchStrategy[dict[str, object]]] = {}
    for name, (good, same, bad) in _RULE_KEYS.items():
        values = _GOOD_VALUES + (["delivered", {"kind": "delivered"}] if name == "stat" else [])
        if valid:
            keys, outcomes = st.sampled_from(good), st.sampled_from(values)
        else:
            keys = st.sampled_from(good + same + bad)
            outcomes = st.sampled_from(values + _BAD_VALUES)
        tables[name] = st.dictionaries(keys, outcomes, max_size=4)
    space = ["map", "map40", "none"] + ([] if valid else ["bogus"])
    return st.fixed_dictionaries({}, optional={"err_space": st.sampled_from(space), **tables})


def _with_classify(defaults: dict[str, object], own: dict[str, object]) -> dict[str, object]:
    return {
        "accounts": [{"system_id": "x", "password": "p"}],
        "carriers": [{"name": "a", "host": "h", "system_id": "s", "password": "p"}],
        "classify": {"defaults": defaults, "carriers": {"a": own}},
    }


def _check_engine_agrees(config: Config) -> None:
    for carrier in ("a", ""):
        merged = config.classify.for_carrier(carrier)
        rules = Rules.from_mapping(merged)
        assert rules.err_space == merged["err_space"]
        assert len(rules.err) == len(merged["err"])
        assert len(rules.status) == len(merged["status"])
        assert len(rules.stat) == len(merged["stat"])
        assert len(rules.network_error_code) == len(merged["network_error_code"])


@settings(max_examples=100, deadline=None)
@given(defaults=_entries(valid=True), own=_entries(valid=True))
def test_valid_classification_loads_and_the_rules_engine_takes_it(
    defaults: dict[str, object], own: dict[str, object]
) -> None:
    config = parse_config(_with_classify(defaults, own), source="t", base_dir=Path("."))
    _check_engine_agrees(config)


@settings(max_examples=200, deadline=None)
@given(defaults=_entries(valid=False), own=_entries(valid=False))
def test_what_the_loader_accepts_the_rules_engine_accepts(
    defaults: dict[str, object], own: dict[str, object]
) -> None:
    try:
        config = parse_config(_with_classify(defaults, own), source="t", base_dir=Path("."))
    except ConfigError as exc:
        assert all(p.key.startswith("classify.") for p in exc.problems), str(exc)
        return
    _check_engine_agrees(config)


def test_classify_includes(here: Path) -> None:
    (here / "styles").mkdir()
    (here / "styles" / "top.toml").write_text(
        '[defaults.err]\n"5" = "hard:unknown_subscriber"\n[carriers.a]\nerr_space = "map40"\n',
        encoding="utf-8",
    )
    (here / "styles" / "nested.toml").write_text(
        'include = ["top.toml"]\nerr_space = "none"\n', encoding="utf-8"
    )
    (here / "styles" / "broken.toml").write_text("err_space = \n", encoding="utf-8")
    good = BASE + '[classify]\ninclude = ["styles/top.toml"]\n'
    rules = load(good).classify.for_carrier("a")
    assert rules["err_space"] == "map40"
    assert rules["err"] == {"5": "hard:unknown_subscriber"}

    text = BASE + '[classify.carriers.a]\ninclude = ["styles/nested.toml", "styles/none.toml", '
    text += '"styles/broken.toml"]\n'
    assert problems(text) == [
        f"{Path('styles/nested.toml')}: include: include is not allowed in an included file",
        f"c.toml: classify.carriers.a.include[1]: file not found: {Path('styles/none.toml')}",
        f"{Path('styles/broken.toml')}: line 1, column 13: invalid TOML: Invalid value",
    ]


def test_toml_syntax_error(here: Path) -> None:
    assert problems(BASE + "[server]\nport = \n") == [
        "c.toml: line 12, column 8: invalid TOML: Invalid value"
    ]


def test_missing_file_and_directory(here: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("nope.toml")
    assert str(info.value) == "nope.toml: file not found"
    (here / "folder").mkdir()
    with pytest.raises(ConfigError) as info:
        load_config("folder")
    assert str(info.value) == "folder: is a directory, not a file"


def test_several_problems_at_once(here: Path) -> None:
    text = '[[accounts]]\nsystem_id = "acme"\npassword_env = "NOPE"\nwindow = "ten"\n'
    text += '[[carriers]]\nname = "a"\nhost = "h"\nsystem_id = "s"\npassword = "p"\nport = 0\n'
    text += '[[routes]]\ncarriers = ["zz"]\n[server]\nprot = 1\n[feed]\nqos = -1\n'
    lines = problems(text)
    assert lines == [
        'c.toml: server.prot: unknown key (did you mean "port"?)',
        "c.toml: accounts[0].password_env: environment variable NOPE is not set",
        'c.toml: accounts[0].window: expected an integer of at least 1, got "ten"',
        "c.toml: carriers[0].port: expected an integer from 1 to 65535, got 0",
        'c.toml: routes[0].carriers[0]: unknown carrier "zz" (known: a)',
        "c.toml: feed.qos: expected an integer from 0 to 2, got -1",
    ]
    with pytest.raises(ConfigError) as info:
        load(text)
    assert str(info.value) == "\n".join(lines)


def test_problem_rendering() -> None:
    assert str(ConfigProblem("f.toml", "a.b[1]", "bad")) == "f.toml: a.b[1]: bad"
    assert str(ConfigProblem("f.toml", "", "file not found")) == "f.toml: file not found"


# ---------------------------------------------------------------- secrets


SECRETS = ("AcS3cr!t", "CaS3cr!t", "Feed-S3cret", "Env-S3cret", "87654321")


def test_passwords_never_shown(here: Path) -> None:
    text = '[[accounts]]\nsystem_id = "acme"\npassword = "AcS3cr!t"\n'
    text += '[[accounts]]\nsystem_id = "ops"\npassword_env = "OPS_PW"\n'
    text += '[[carriers]]\nname = "a"\nhost = "h"\nsystem_id = "s"\npassword = "CaS3cr!t"\n'
    text += '[feed]\nusername = "u"\npassword = "Feed-S3cret"\n'
    config = load(text, environ={"OPS_PW": "Env-S3cret"})
    assert config.account("ops") is not None
    shown = [repr(config), str(config), explain(config)]
    shown += [repr(a) for a in config.accounts] + [repr(config.carriers[0]), repr(config.feed)]
    for secret in SECRETS:
        assert not any(secret in text for text in shown), secret
    assert "password inline" in explain(config)
    assert "password from $OPS_PW" in explain(config)

    # Broken configs: wrong-typed and misplaced passwords are not echoed either.
    bad = text.replace('password = "AcS3cr!t"', "password = 87654321")
    bad = bad.replace('password = "Feed-S3cret"', 'password = "Feed-S3cret"\npassword_env = "X"')
    bad += "[server]\nport = 0\n"
    with pytest.raises(ConfigError) as info:
        load(bad, environ={"OPS_PW": "Env-S3cret", "X": "y"})
    message = str(info.value)
    assert "accounts[0].password: expected a string, got an integer" in message
    assert "feed.password_env: set either password or password_env, not both" in message
    for secret in SECRETS:
        assert secret not in message, secret


def test_explain_summarises_everything() -> None:
    config = load_config(CONFIGS / "example.toml", environ=EXAMPLE_ENV)
    text = explain(config)
    for expected in (
        "Listener: 0.0.0.0:2775",
        "PDUs up to 66560 octets; event loop auto; garbage collector threshold 20000, startup"
        " objects frozen)",
        "acme: binds transmitter/receiver/transceiver, up to 8 binds",
        "carrierA: smsc.carrier-a.example:2775 as bounceback",
        "447 for ops: carrierB",
        "44 for every account: carrierA -> carrierB",
        "otherwise: carrierA, carrierB",
        "absent_subscriber: 10 min x2 up to 4 h",
        "quiet hours 21:00-08:00",
        "carrierB: err space none",
        f"Store: SQLite {CONFIGS / 'bounceback.db'}",
        "Feed: MQTT 3.1.1 at 127.0.0.1:1883",
        "Metrics: http://127.0.0.1:9102/metrics",
        "Logging: INFO",
    ):
        assert expected in text, expected
    for secret in EXAMPLE_ENV.values():
        assert secret not in text
    assert "b-secret" not in text and "t3st-pw" not in text


def test_environment_defaults_to_the_process(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BB_TEST_ACCOUNT_PW", "proc-env")
    Path("c.toml").write_text(
        '[[accounts]]\nsystem_id = "acme"\npassword_env = "BB_TEST_ACCOUNT_PW"\n' + CARRIER,
        encoding="utf-8",
    )
    assert load_config(os.fspath("c.toml")).accounts[0].password == "proc-env"


def test_smpp_passwords_longer_than_eight_characters_are_refused(here: Path) -> None:
    text = '[[accounts]]\nsystem_id = "acme"\npassword = "ok"\n'
    text += '[[carriers]]\nname = "a"\nhost = "h"\nsystem_id = "s"\npassword = "nine-char"\n'
    text += '[feed]\npassword = "a-long-mqtt-password-is-fine"\n'
    with pytest.raises(ConfigError) as err:
        load(text)
    problems = [str(p) for p in err.value.problems]
    assert len(problems) == 1
    assert "carriers[0].password: longer than the 8 characters SMPP 3.4 allows" in problems[0]
    assert "nine-char" not in str(err.value)


@pytest.mark.parametrize("value", ["process", "inline"])
def test_feed_publisher_choices(here: Path, value: str) -> None:
    config = load(BASE + f'[feed]\npublisher = "{value}"\n')
    assert config.feed is not None and config.feed.publisher == value


def test_feed_publisher_defaults_to_its_own_process(here: Path) -> None:
    config = load(BASE + "[feed]\n")
    assert config.feed is not None and config.feed.publisher == "process"


@pytest.mark.parametrize(("text", "value"), [("", "builtin"), ('client = "aiomqtt"\n', "aiomqtt")])
def test_feed_client_choices(here: Path, text: str, value: str) -> None:
    config = load(BASE + "[feed]\n" + text)
    assert config.feed is not None and config.feed.client == value
    assert problems(BASE + '[feed]\nclient = "paho"\n') == [
        'c.toml: feed.client: expected "builtin" or "aiomqtt", got "paho"'
    ]


def test_feed_publisher_rejects_other_values(here: Path) -> None:
    assert problems(BASE + '[feed]\npublisher = "thread"\n') == [
        'c.toml: feed.publisher: expected "process" or "inline", got "thread"'
    ]
