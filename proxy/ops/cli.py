"""The `bounceback` command line.

Commands:
  run          the proxy
  check        validate and explain a configuration
  simulate     a carrier SMSC with scripted soft/hard outcomes
  demo         the simulator, the proxy and a sample run in one process (no broker,
               no database server)
  stats        bounce patterns from the store: by country, operator, hour and number
  suppression  list, add or remove suppressed numbers
  held         list held messages, or cancel one
  decode       decode one PDU given in hex
  init         write a commented starter configuration
  health       is the proxy a configuration describes alive? (for container health checks)

Exit codes: 0 success; 1 a runtime failure (the demo did not complete, a message or
number was not found, a PDU did not decode); 2 a usage error or an invalid
configuration (the problems are printed, each naming the file, key and reason).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bounceback.analysis.stats import Report
    from bounceback.config.settings import Config
    from bounceback.core.model import Message
    from bounceback.store.sqlite import Store

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

EPILOG_EXIT = "exit codes: 0 ok, 1 runtime failure, 2 usage error or invalid configuration"


class CommandError(Exception):
    """A command cannot go on: print the message (if any) and exit with `code`."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code


def _setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    from bounceback.logs import configure

    configure(level, json_lines)


def _load(path: str) -> Config:
    from bounceback.config.settings import ConfigError, load_config

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise CommandError(EXIT_CONFIG) from None
    _require_extras(cfg)
    return cfg


def _require_extras(cfg: Config, *, summary: bool = False) -> None:
    """A CommandError (exit 2) naming the extra to install when `cfg` needs an optional
    dependency that cannot be imported (see `extras.config_problems`)."""
    from bounceback.config.extras import config_problems

    problems = config_problems(cfg)
    if problems:
        print("\n".join(str(p) for p in problems), file=sys.stderr)
        if summary:
            n = len(problems)
            print(f"configuration is invalid: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        raise CommandError(EXIT_CONFIG)


def store_path(cfg: Config, *, must_exist: bool = True) -> str:
    """The SQLite file (or the PostgreSQL URL) a configuration names; a CommandError
    when it cannot be used."""
    if cfg.store.backend != "sqlite":
        return cfg.store.url
    path = cfg.store.path
    if must_exist and path != ":memory:" and not os.path.exists(path):
        raise CommandError(
            EXIT_FAILURE, f"no store at {path} (has the proxy run with this configuration?)"
        )
    return path


@contextlib.asynccontextmanager
async def open_store(path: str) -> AsyncIterator[Store]:
    """An open store (see `store_path`): SQLite, or PostgreSQL for a URL."""
    from bounceback.store.postgres import PgStore
    from bounceback.store.sqlite import SqliteStore

    store: Store
    if path.startswith(("postgresql://", "postgres://")):
        store = PgStore(path, batch_delay=0.0)
    else:
        store = SqliteStore(path, batch_delay=0.0)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    from bounceback.feed.events import iso

    return iso(ts)


def parse_time(text: str) -> float:
    """An ISO 8601 date or date-time; without a zone it is UTC."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2024-05-01 or 2024-05-01T08:00:00Z)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
        return value

    return parse


# ---------------------------------------------------------------- run / check / simulate


def cmd_check(args: argparse.Namespace) -> int:
    from bounceback.config.settings import ConfigError, explain, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        n = len(exc.problems)
        print(f"configuration is invalid: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return EXIT_CONFIG
    _require_extras(cfg, summary=True)
    from bounceback.ops.term import GOOD, console, explain_text
    from rich.text import Text

    con = console()
    if not con.is_terminal:
        print(explain(cfg))
        print("configuration is valid")
        return EXIT_OK
    # soft_wrap: long lines are wrapped by the terminal, not broken by rich.
    con.print(explain_text(explain(cfg)), soft_wrap=True)
    con.print(Text("configuration is valid", GOOD))
    return EXIT_OK


def loop_runner(cfg: Config) -> Callable[[Coroutine[Any, Any, None]], None]:
    """What runs `run`'s main coroutine, per ``server.event_loop``: `uvloop.run` for
    "uvloop", and for "auto" when uvloop can be imported and the TLS listener is off
    (see `config.EVENT_LOOPS`); else `asyncio.run`. A CommandError when "uvloop" is
    asked for and cannot be imported."""
    choice = cfg.server.event_loop
    if choice == "asyncio" or (choice == "auto" and cfg.server.tls_cert):
        return asyncio.run
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise CommandError(
                EXIT_FAILURE,
                f'cannot start: {cfg.source}: server.event_loop: "uvloop" is set but uvloop '
                f'cannot be imported ({exc}); install uvloop, or set "auto" or "asyncio"',
            ) from None
        return asyncio.run
    return uvloop.run


def tune_gc(threshold: int) -> None:
    """Set up the cyclic garbage collector for a long-running proxy (`[server]
    gc_threshold`; 0 leaves it alone).

    Each message allocates tasks, futures, PDUs and copies of its record; with
    CPython's young-generation threshold of 700 the collector ran thousands of times
    a second under load, and its full passes walked every message held in memory:
    about a sixth of the proxy's time per message (see bench/README.md). Objects made
    at startup (modules, the config, the gateway) are frozen out of every pass.
    Almost everything per message is freed by reference counting; the collector is
    only for cycles, and a larger threshold only lets a few more of them wait."""
    if threshold <= 0:
        return
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(threshold, gen1, gen2)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """The library whose event loop `loop` is: "uvloop" or "asyncio"."""
    return type(loop).__module__.partition(".")[0]


def cmd_run(args: argparse.Namespace) -> int:
    from bounceback.config.settings import gc_text
    from bounceback.gateway.shell import Gateway, StartError

    cfg = _load(args.config)
    _setup_logging(cfg.logging.level, cfg.logging.json)
    run = loop_runner(cfg)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        logging.getLogger("bounceback").info("event loop: %s", loop_name(loop))
        gw = Gateway(cfg)
        try:
            await gw.start()
        except StartError as exc:  # what had started is stopped again
            raise CommandError(EXIT_FAILURE, f"cannot start: {exc}") from None
        tune_gc(cfg.server.gc_threshold)
        logging.getLogger("bounceback").info("%s", gc_text(cfg.server.gc_threshold))
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        reloads: set[asyncio.Task[None]] = set()

        def on_hup() -> None:
            task = loop.create_task(gw.reload_logged())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, on_hup)
        ports = [f"{cfg.server.host}:{gw.port}"] if gw.port else []
        if gw.tls_port:
            ports.append(f"{cfg.server.host}:{gw.tls_port} (TLS)")
        print(f"bounceback listening on {', '.join(ports)}", flush=True)
        await stop.wait()
        logging.getLogger("bounceback").info("shutting down")
        # The stop has begun: SIGTERM again (a supervisor that asks twice) changes
        # nothing, and must not kill the process once the loop has closed and taken
        # its handlers with it (the default action would end it with -15, not 0).
        with contextlib.suppress(NotImplementedError, ValueError):
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        limit = cfg.server.shutdown_grace + 10
        try:
            await asyncio.wait_for(gw.stop(), limit)
        except TimeoutError:  # an OSError: it must not read as "cannot start"
            raise CommandError(
                EXIT_FAILURE, f"the stop did not finish within {limit:.0f} s"
            ) from None

    try:
        run(main())
    except OSError as exc:  # the port is taken, the store cannot be opened, ...
        raise CommandError(EXIT_FAILURE, f"cannot start: {exc}") from None
    return EXIT_OK


def cmd_feed_publisher(args: argparse.Namespace) -> int:
    from bounceback.feed.publisher import run_publisher_process

    cfg = _load(args.config)
    if cfg.feed is None:
        raise CommandError(EXIT_CONFIG, f"{cfg.source}: [feed]: no feed is configured")
    _setup_logging(cfg.logging.level, cfg.logging.json)
    try:
        # The standard event loop: the publisher spends its time reading the outbox
        # and rendering records, with one socket write per batch of events; on uvloop
        # it used as much CPU per message (bench_e2e.py --feed, both ways in turn).
        asyncio.run(run_publisher_process(cfg, args.instance))
    except OSError as exc:  # the store cannot be opened, ...
        raise CommandError(EXIT_FAILURE, f"cannot start: {exc}") from None
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    from bounceback.store.postgres import migrate_main

    return migrate_main(args.config)


def cmd_simulate(args: argparse.Namespace) -> int:
    from bounceback.smpp.simulator import ScenarioError, load_scenario, run_simulator

    if args.scenario is not None:
        try:
            load_scenario(args.scenario)
        except ScenarioError as exc:
            print(f"invalid scenario: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    _setup_logging(args.log_level)
    try:
        asyncio.run(run_simulator(args.host, args.port, args.scenario))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise CommandError(
            EXIT_FAILURE, f"cannot listen on {args.host}:{args.port}: {exc}"
        ) from None
    return EXIT_OK


def cmd_decode(args: argparse.Namespace) -> int:
    from smppcodecs.exceptions import PduError
    from smppcodecs.pdu import decode
    from smppcodecs.receipt import ReceiptParseError, parse_receipt

    try:
        data = bytes.fromhex("".join(args.hex).replace(" ", ""))
    except ValueError as exc:
        print(f"not hex: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        pdu = decode(data)
    except PduError as exc:
        print(f"cannot decode: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(repr(pdu))
    try:
        receipt = parse_receipt(pdu) if hasattr(pdu, "esm_class") else None
    except ReceiptParseError as exc:
        print(f"marked as a receipt but not readable: {exc}")
        return EXIT_OK
    if receipt is not None:
        from smppcodecs.classify import classify_receipt

        print(repr(receipt))
        print(repr(classify_receipt(receipt)))
    return EXIT_OK


# ---------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from bounceback.ops.demo import MAX_MESSAGES, run_demo

    if args.messages > MAX_MESSAGES:
        raise CommandError(EXIT_CONFIG, f"--messages: at most {MAX_MESSAGES}")
    keep: Path | None = args.keep
    if keep is not None and (keep / "demo.db").exists():
        raise CommandError(
            EXIT_CONFIG, f"--keep: {keep / 'demo.db'} exists already; choose an empty folder"
        )
    from bounceback.ops.term import console

    # The live view needs a terminal that moves its cursor (not TERM=dumb).
    con = console()
    live = not args.no_live and con.is_terminal and not con.is_dumb_terminal
    # The proxy's own warnings (a carrier link closing at the end, say) would break
    # the live view; errors still show.
    logger = logging.getLogger("bounceback")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return asyncio.run(
            run_demo(
                args.messages,
                out=sys.stdout,
                live=live,
                keep=keep,
                timeout=args.timeout,
                console=con if live else None,
                console_port=None if args.no_console else args.console_port,
                stay=args.stay,
            )
        )
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        raise CommandError(EXIT_FAILURE, f"cannot run the demo: {exc}") from None
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------- stats

# `stats.SECTIONS`, named here so that the parser does not import the analysis.
STATS_SECTIONS = (
    "totals",
    "by_country",
    "by_operator",
    "by_hour",
    "by_carrier",
    "by_account",
    "by_reason",
    "timeline",
    "soft_bouncing_numbers",
    "numbers_to_remove",
    "recovery_estimates",
)


def cmd_stats(args: argparse.Namespace) -> int:
    from bounceback.analysis.stats import build_report, render_csv, render_text, report_json
    from bounceback.ops.report import render_html

    cfg = _load(args.config)
    now = time.time()
    until: float = args.until if args.until is not None else now
    if args.since is not None:
        since: float = args.since
    else:
        since = until - (args.hours if args.hours is not None else 24.0) * 3600.0
    if since >= until:
        raise CommandError(EXIT_CONFIG, "the time range is empty (--since is not before --until)")

    path = store_path(cfg)

    async def main() -> Report:
        async with open_store(path) as store:
            return await build_report(
                store,
                since,
                until,
                now=now,
                top=args.top,
                local_hours=args.local_hours,
                time_zones=cfg.retry.time_zones,
                bucket=args.bucket,
            )

    report = asyncio.run(main())
    section: str | None = args.section
    if args.format == "json":
        doc = report_json(report)
        print(json.dumps(doc if section is None else doc[section], indent=2))
    elif args.format == "csv":
        sys.stdout.write(render_csv(report, section))
    else:
        from bounceback.ops.stats import print_report
        from bounceback.ops.term import console

        only = None if section is None else {section}
        con = console()
        if con.is_terminal:
            print_report(con, report, only)
        else:
            sys.stdout.write(render_text(report, only))
    if args.html is not None:
        try:
            Path(args.html).write_text(render_html(report), encoding="utf-8")
        except OSError as exc:
            raise CommandError(EXIT_FAILURE, f"cannot write {args.html}: {exc}") from None
        print(f"wrote {args.html}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------- suppression

_NUMBER = re.compile(r"\+?[0-9]{3,21}")


def _print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    align: str,
    footer: str,
    styles: dict[int, str],
) -> None:
    """A table and a line under it: a rich table on a terminal, aligned plain lines
    (`stats.format_table`) when the output is a pipe or a file."""
    from bounceback.analysis.stats import format_table
    from bounceback.ops.term import MUTED, console, print_lines, table
    from rich.text import Text

    con = console()
    if con.is_terminal:
        con.print(table(headers, rows, align, styles=styles))
        con.print(Text(footer, MUTED))
    else:
        print_lines(con, [*format_table(headers, rows, align), footer])


_NOT_RUNNING = (
    "written to the store: a proxy started later applies it (a running one without"
    " [admin] applies it when restarted)"
)


def cmd_suppression(args: argparse.Namespace) -> int:
    from bounceback.store.sqlite import Suppression

    cfg = _load(args.config)
    action: str = args.action
    number: str = getattr(args, "number", "")
    if action in ("add", "remove") and not _NUMBER.fullmatch(number):
        raise CommandError(
            EXIT_CONFIG, f"not a phone number: {number!r} (3 to 21 digits, optional leading +)"
        )

    async def main() -> int:
        if action in ("add", "remove"):
            from bounceback.ops.apiclient import ApiError, running_api

            api = await running_api(cfg)
            if api is not None:
                if action == "add":
                    body = {"number": number, "reason": args.reason}
                    if args.account:
                        body["account"] = args.account
                    s = await api.call("POST", "/v1/suppression", body)
                    print(f"suppressed {number} until {s['expires_at']} (reason: {s['reason']})")
                    print(f"applied at once by the running proxy (as {api.token.name})")
                    return EXIT_OK
                try:
                    await api.call("DELETE", f"/v1/suppression/{number}")
                except ApiError as exc:
                    if exc.status == 404:
                        raise CommandError(
                            EXIT_FAILURE, f"{number} is not on the suppression list"
                        ) from None
                    raise CommandError(EXIT_FAILURE, f"the proxy refused: {exc}") from None
                print(f"removed {number} from the suppression list")
                print(f"applied at once by the running proxy (as {api.token.name})")
                return EXIT_OK
        path = store_path(cfg, must_exist=action != "add")
        now = time.time()
        async with open_store(path) as store:
            if action == "add":
                s = Suppression(
                    number, args.reason, now, now + cfg.retry.suppression_ttl, args.account
                )
                await store.suppression_add(s)
                print(f"suppressed {number} until {_iso(s.expires_at)} (reason: {s.reason})")
                print(_NOT_RUNNING)
                return EXIT_OK
            if action == "remove":
                if not await store.suppression_remove(number):
                    raise CommandError(EXIT_FAILURE, f"{number} is not on the suppression list")
                print(f"removed {number} from the suppression list")
                print(_NOT_RUNNING)
                return EXIT_OK
            entries = await store.suppression_list(now)
            if args.format == "json":
                doc = [
                    {
                        "number": s.number,
                        "reason": s.reason,
                        "account": s.account or None,
                        "added": _iso(s.created_at),
                        "expires": _iso(s.expires_at),
                    }
                    for s in entries
                ]
                print(json.dumps(doc, indent=2))
            elif not entries:
                print("the suppression list is empty")
            else:
                rows = [
                    [s.number, s.reason, s.account or "-", _iso(s.created_at), _iso(s.expires_at)]
                    for s in entries
                ]
                headers = ("number", "reason", "account", "added", "expires")
                _print_table(
                    headers,
                    rows,
                    "lllll",
                    f"{len(entries)} suppressed number{'s' if len(entries) != 1 else ''}",
                    {1: "red"},
                )
            return EXIT_OK

    return asyncio.run(main())


# ---------------------------------------------------------------- held


async def cancel_held(cfg: Config, store: Store, message_id: str, now: float) -> Message:
    """Cancel one held message the way the proxy would: the engine decides, and the new
    state, the ``cancelled`` feed event (when a feed is configured) and the sender's
    DELETED receipt (when it asked for one) are written in one transaction."""
    from bounceback.core import engine
    from bounceback.core.engine import Publish, SenderReceipt
    from bounceback.core.model import State, evolve
    from bounceback.feed.events import build_event
    from bounceback.gateway.path import policy_from_config
    from bounceback.store.sqlite import Change, ReceiptRow, StaleMessage

    msg = await store.get(message_id)
    if msg is None:
        raise CommandError(EXIT_FAILURE, f"no message {message_id}")
    if msg.state != State.HELD:
        raise CommandError(
            EXIT_FAILURE, f"message {message_id} is {msg.state.value}, not held: not cancelled"
        )
    new, actions = engine.decide(msg, engine.Cancel(now), policy_from_config(cfg))
    new = evolve(new, version=msg.version + 1)
    change = Change(message=new)
    feed = cfg.feed
    for a in actions:
        if isinstance(a, Publish) and feed is not None:
            change.events.append(
                build_event(
                    new,
                    a.event,
                    dict(a.fields),
                    now=now,
                    instance=cfg.server.instance_id or "bb-1",
                    prefix=feed.prefix,
                    mask=feed.mask_destinations,
                    mask_keep=feed.mask_keep,
                )
            )
        elif isinstance(a, SenderReceipt):
            change.receipts.append(
                ReceiptRow.for_message(new, a.stat, a.err, a.done_at, a.intermediate)
            )
    try:
        await store.commit(change)
    except StaleMessage:
        raise CommandError(
            EXIT_FAILURE, f"message {message_id} changed while being cancelled: try again"
        ) from None
    return new


def cmd_held(args: argparse.Namespace) -> int:
    from bounceback.core.engine import wants_receipt

    cfg = _load(args.config)

    async def main() -> int:
        if args.action == "cancel":
            from bounceback.ops.apiclient import ApiError, running_api

            api = await running_api(cfg)
            if api is not None:
                mid = args.message_id
                try:
                    before = await api.call("GET", f"/v1/messages/{mid}")
                    if before["state"] != "held":
                        raise CommandError(
                            EXIT_FAILURE,
                            f"message {mid} is {before['state']}, not held: not cancelled",
                        )
                    done = await api.call("POST", f"/v1/messages/{mid}/cancel")
                except ApiError as exc:
                    if exc.status == 404:
                        raise CommandError(EXIT_FAILURE, f"no message {mid}") from None
                    raise CommandError(EXIT_FAILURE, f"the proxy refused: {exc}") from None
                print(
                    f"cancelled {mid} to {done['destination']} after {done['attempts']} attempts"
                    f" (by the running proxy, as {api.token.name})"
                )
                return EXIT_OK
        path = store_path(cfg)
        async with open_store(path) as store:
            if args.action == "cancel":
                new = await cancel_held(cfg, store, args.message_id, time.time())
                print(f"cancelled {new.id} to {new.destination_addr} after {new.attempts} attempts")
                wants = wants_receipt(new.registered_delivery, success=False)
                print(
                    "a DELETED receipt is queued for the sender"
                    if wants
                    else "no receipt: the sender did not ask for one"
                )
                if cfg.feed is not None:
                    print("a 'cancelled' event is queued for the feed")
                return EXIT_OK
            total = (await store.query("SELECT COUNT(*) FROM messages WHERE state = 'held'"))[0][0]
            rows = await store.query(
                "SELECT id, account, destination_addr, attempts, reason, next_attempt_at, data"
                " FROM messages WHERE state = 'held' ORDER BY next_attempt_at, id LIMIT ?",
                (args.limit,),
            )
            items = [
                {
                    "id": r[0],
                    "account": r[1],
                    "destination": r[2],
                    "attempts": int(r[3]),
                    "reason": r[4] or "-",
                    "next_attempt_at": _iso(r[5]),
                    "deadline": _iso(json.loads(r[6]).get("deadline")),
                }
                for r in rows
            ]
            if args.format == "json":
                print(json.dumps({"held": int(total), "messages": items}, indent=2))
                return EXIT_OK
            if not items:
                print("no held messages")
                return EXIT_OK
            headers = ("id", "account", "destination", "attempts", "reason", "next attempt")
            table = [[*(i[k] for k in list(i)[:6]), i["deadline"]] for i in items]
            _print_table(
                (*headers, "deadline"),
                table,
                "lllrllll",
                f"{total} held message{'s' if total != 1 else ''} (showing {len(items)})",
                {4: "yellow"},
            )
            return EXIT_OK

    return asyncio.run(main())


# ---------------------------------------------------------------- init / health / version

STARTER_PASSWORD_LINE = 'password = "app-pw"'


def version() -> str:
    """The installed distribution's version (its metadata), else the package's own."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    from bounceback import __version__

    try:
        return dist_version("bounceback")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return __version__


def starter_config() -> str:
    """The starter configuration with a new random password for its sender."""
    import secrets
    import string

    from bounceback.config.resources import starter_text

    text = starter_text()
    alphabet = string.ascii_letters + string.digits
    password = "".join(secrets.choice(alphabet) for _ in range(8))  # SMPP 3.4: 8 at most
    assert text.count(STARTER_PASSWORD_LINE) == 1
    return text.replace(STARTER_PASSWORD_LINE, f'password = "{password}"')


def cmd_init(args: argparse.Namespace) -> int:
    import shlex

    from bounceback.config.resources import example_text

    out = Path(args.output)
    text = example_text() if args.example else starter_config()
    try:
        # Mode 0600: the file holds passwords. O_EXCL refuses an existing file.
        fd = os.open(
            out,
            os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.force else os.O_EXCL),
            0o600,
        )
    except FileExistsError:
        raise CommandError(
            EXIT_CONFIG, f"{out} exists already: choose another --output, or add --force"
        ) from None
    except OSError as exc:
        raise CommandError(EXIT_FAILURE, f"cannot write {out}: {exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    shown = shlex.quote(str(out))
    if args.example:
        print(f"wrote {out}: the example configuration, with every key and its default")
        print(
            "it reads passwords from ACME_SMPP_PASSWORD, OPS_SMPP_PASSWORD, "
            "CARRIER_A_PASSWORD and MQTT_PASSWORD; set them, or edit the file, then:"
        )
        print(f"  bounceback check --config {shown}")
        return EXIT_OK
    print(f"wrote {out}: a starter configuration (its sender has a new random password)")
    steps = [
        (f"bounceback check --config {shown}", "validate and explain it"),
        ("bounceback simulate", "a carrier simulator to try it on (in another terminal)"),
        (f"bounceback run --config {shown}", "the proxy; senders bind to 127.0.0.1:2775"),
    ]
    width = max(len(command) for command, _ in steps)
    print("next:")
    for command, what in steps:
        print(f"  {command:<{width}}  # {what}")
    print("then put your carrier's SMSC in [[carriers]]; every key: bounceback init --example")
    return EXIT_OK


def health_probe(cfg: Config, timeout: float) -> tuple[bool, str]:
    """(healthy, what was checked and what it answered) for the proxy `cfg` describes.

    With a ``[metrics]`` table: ``GET /healthz`` on its port (200 while the process
    runs and its event loop answers). Without one: an ``enquire_link`` on the plain
    SMPP port, which the proxy answers before any bind. A CommandError (exit 2) when
    there is nothing to check: no ``[metrics]`` and ``plain = false``, or port 0."""
    import socket
    import ssl
    import urllib.error
    import urllib.request

    from bounceback.ops.apiclient import listener_url, local_host
    from smppcodecs.pdu import EnquireLink, EnquireLinkResp, decode, encode

    if cfg.metrics is not None:
        port = cfg.metrics.port
        if port == 0:
            raise CommandError(EXIT_CONFIG, "metrics.port = 0: the port is chosen at start")
        url = listener_url(cfg.metrics) + "/healthz"
        # Whether it answers, not who it is: its certificate may well be self-signed.
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(url, timeout=timeout, context=unverified) as resp:
                status = int(resp.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError) as exc:
            return False, f"{url}: {getattr(exc, 'reason', exc)}"
        return status == 200, f"{url}: HTTP {status}"
    if not cfg.server.plain:
        raise CommandError(
            EXIT_CONFIG,
            "nothing to check: no [metrics] table and no plain SMPP port (server.plain = "
            "false); add a [metrics] table",
        )
    host, port = local_host(cfg.server.host), cfg.server.port
    if port == 0:
        raise CommandError(EXIT_CONFIG, "server.port = 0: the port is chosen at start")
    where = f"SMPP {host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(encode(EnquireLink(sequence_number=1)))
            data = b""
            while len(data) < 16:
                chunk = sock.recv(16 - len(data))
                if not chunk:
                    return False, f"{where}: the connection closed without an answer"
                data += chunk
    except OSError as exc:
        return False, f"{where}: {exc}"
    try:
        answer = decode(data)
    except Exception as exc:
        return False, f"{where}: not an SMPP answer: {exc}"
    if not isinstance(answer, EnquireLinkResp):
        return False, f"{where}: answered {type(answer).__name__}, not enquire_link_resp"
    return True, f"{where}: enquire_link answered"


def cmd_health(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    healthy, detail = health_probe(cfg, args.timeout)
    print(f"{'healthy' if healthy else 'unhealthy'}: {detail}")
    return EXIT_OK if healthy else EXIT_FAILURE


# ---------------------------------------------------------------- parser


def _example(*lines: str) -> str:
    return "\n".join(f"example: {line}" for line in lines) + "\n" + EPILOG_EXIT


def _sub(
    sub: Any, name: str, help: str, description: str, *examples: str
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=_example(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bounceback",
        description="SMPP gateway proxy that resubmits soft-bounced messages.",
        epilog="example: bounceback demo\n" + EPILOG_EXIT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"bounceback {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = _sub(
        sub,
        "run",
        "run the proxy",
        "Run the proxy: listen for senders, bind to carriers.",
        "bounceback run --config configs/example.toml",
    )
    r.add_argument("--config", required=True, help="TOML configuration file")
    r.set_defaults(func=cmd_run)

    fp = _sub(
        sub,
        "feed-publisher",
        "publish the feed outbox to MQTT (started by run)",
        "The MQTT status feed's publisher on its own: drains the store's outbox to the "
        "broker for one instance until its stdin closes or it gets SIGTERM. `run` starts "
        'it as a child process when [feed] publisher = "process" (the default) and '
        "restarts it if it dies; there is no need to start it by hand.",
        "bounceback feed-publisher --config configs/example.toml --instance bb-1",
    )
    fp.add_argument("--config", required=True, help="TOML configuration file")
    fp.add_argument("--instance", required=True, help="the proxy instance's name")
    fp.set_defaults(func=cmd_feed_publisher)

    c = _sub(
        sub,
        "check",
        "validate and explain a configuration",
        "Validate the whole configuration and explain it; every problem names "
        "the file, the key and the reason. Exit 0 only when it is valid.",
        "bounceback check --config configs/example.toml",
    )
    c.add_argument("--config", required=True, help="TOML configuration file")
    c.set_defaults(func=cmd_check)

    m = _sub(
        sub,
        "migrate",
        "create or upgrade the store's schema",
        "Apply the versioned schema migrations to the store the configuration names "
        "(PostgreSQL; for SQLite the schema is created). Safe to run from several "
        "instances at once.",
        "bounceback migrate --config configs/example.toml",
    )
    m.add_argument("--config", required=True)
    m.set_defaults(func=cmd_migrate)

    s = _sub(
        sub,
        "simulate",
        "run a carrier SMSC simulator",
        "A carrier SMSC with scripted soft/hard outcomes per destination.",
        "bounceback simulate --port 2776 --scenario configs/scenarios/demo.toml",
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=2776)
    s.add_argument("--scenario", default=None, help="scenario TOML (default: deliver all)")
    s.add_argument("--log-level", default="INFO")
    s.set_defaults(func=cmd_simulate)

    d = _sub(
        sub,
        "demo",
        "simulator + proxy + a sample run (no broker, no database)",
        "Start a carrier simulator and the proxy in this process (SQLite in a temporary "
        "folder, retries within seconds), send messages through the proxy as a "
        "transceiver and show live progress: most are delivered at once, some soft-bounce "
        "and are recovered by retries, some bounce hard, a few never recover and expire, "
        "and a few receipts the carrier loses are found by asking it with query_sm. "
        "Ends with a summary. Exit 0 when every message reached a final state and every "
        "receipt arrived.",
        "bounceback demo",
        "bounceback demo --messages 1000 --no-live --keep demo-run",
    )
    d.add_argument(
        "--messages", type=_positive(int), default=300, help="messages to send (default 300)"
    )
    d.add_argument(
        "--no-live",
        action="store_true",
        help="plain progress lines instead of a live view (the default when not a terminal)",
    )
    d.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the store and config in DIR (for `bounceback stats`)",
    )
    d.add_argument(
        "--timeout", type=_positive(float), default=120.0, help="give up after SECONDS (120)"
    )
    d.add_argument(
        "--console-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve the web console on 127.0.0.1:PORT (default: a free port; the address"
        " and a token to log in with are printed)",
    )
    d.add_argument("--no-console", action="store_true", help="serve no web console")
    d.add_argument(
        "--stay",
        action="store_true",
        help="keep the proxy and the web console up after the summary, until Ctrl-C",
    )
    d.set_defaults(func=cmd_demo)

    st = _sub(
        sub,
        "stats",
        "bounce patterns by country, operator, carrier, account, reason, hour and time",
        "Bounce rates and recovery by destination country and operator, by hour of day "
        "(UTC, or the destination's local time with --local-hours), by carrier and by "
        "account; each bounce reason with its recovery rate and time to recover; a "
        "timeline (per minute, hour or day: --bucket); the numbers that keep "
        "soft-bouncing, and the hard-bounced numbers to remove, for the messages accepted "
        "in a time range (default: the last 24 hours). Every section is shown; --section "
        "picks one (in CSV: that table alone, with its own columns). Reads the store the "
        "configuration names.",
        "bounceback stats --config configs/example.toml --hours 6",
        "bounceback stats --config configs/example.toml --since 2024-05-01 --format csv",
        "bounceback stats --config configs/example.toml --section by_reason",
        "bounceback stats --config configs/example.toml --hours 2 --bucket minute",
        "bounceback stats --config configs/example.toml --html report.html",
    )
    st.add_argument("--config", required=True, help="TOML configuration file")
    window = st.add_mutually_exclusive_group()
    window.add_argument("--since", type=parse_time, help="start, ISO 8601 (UTC if no zone)")
    window.add_argument("--hours", type=_positive(float), help="the last H hours (default 24)")
    st.add_argument("--until", type=parse_time, help="end, ISO 8601 (default: now)")
    st.add_argument("--top", type=_positive(int), default=10, help="soft-bouncing numbers listed")
    st.add_argument(
        "--local-hours", action="store_true", help="hour of day in the destination's time zone"
    )
    st.add_argument("--format", choices=("table", "json", "csv"), default="table")
    st.add_argument(
        "--section",
        choices=STATS_SECTIONS,
        metavar="SECTION",
        help=f"only this part of the report ({', '.join(STATS_SECTIONS)}); in CSV its own"
        " table, in JSON that part of the document",
    )
    st.add_argument(
        "--bucket",
        choices=("minute", "hour", "day"),
        help="the timeline's buckets (default by the range: up to 3 h minute, up to 3 days"
        " hour, else day; coarsened past 2000 buckets)",
    )
    st.add_argument("--html", metavar="OUT.html", help="also write a self-contained HTML report")
    st.set_defaults(func=cmd_stats)

    su = _sub(
        sub,
        "suppression",
        "list, add or remove suppressed numbers",
        "The suppression list: numbers that hard-bounced (or that you add) are refused "
        "at submission for the configured time. A running proxy reads the list when it "
        "starts.",
        "bounceback suppression list --config configs/example.toml",
        "bounceback suppression add 447700900123 --reason complaint --config FILE",
    )
    su_sub = su.add_subparsers(dest="action", required=True, metavar="ACTION")
    sl = _sub(
        su_sub,
        "list",
        "list the suppressed numbers",
        "List the numbers on the suppression list that have not expired.",
        "bounceback suppression list --config configs/example.toml",
    )
    sl.add_argument("--format", choices=("table", "json"), default="table")
    sa = _sub(
        su_sub,
        "add",
        "suppress a number",
        "Put a number on the suppression list for retry.suppression_ttl seconds.",
        "bounceback suppression add 447700900123 --reason complaint --config FILE",
    )
    sa.add_argument("number")
    sa.add_argument("--reason", default="manual", help="why (default: manual)")
    sa.add_argument("--account", default="", help="the account it concerns (default: all)")
    sr = _sub(
        su_sub,
        "remove",
        "take a number off the list",
        "Take a number off the suppression list. Exit 1 when it was not on it.",
        "bounceback suppression remove 447700900123 --config configs/example.toml",
    )
    sr.add_argument("number")
    for leaf in (sl, sa, sr):
        leaf.add_argument("--config", required=True, help="TOML configuration file")
    su.set_defaults(func=cmd_suppression)

    h = _sub(
        sub,
        "held",
        "list held messages, or cancel one",
        "Messages held for a retry after a soft bounce: list them (next attempt first), "
        "or cancel one. A cancelled message gets a 'cancelled' feed event and, when its "
        "sender asked for receipts, a DELETED receipt.",
        "bounceback held list --limit 20 --config configs/example.toml",
        "bounceback held cancel 0190A1B2C3D4E5F6 --config configs/example.toml",
    )
    h_sub = h.add_subparsers(dest="action", required=True, metavar="ACTION")
    hl = _sub(
        h_sub,
        "list",
        "list held messages",
        "List held messages, the next attempt first.",
        "bounceback held list --limit 20 --config configs/example.toml",
    )
    hl.add_argument("--limit", type=_positive(int), default=50, help="at most N (default 50)")
    hl.add_argument("--format", choices=("table", "json"), default="table")
    hc = _sub(
        h_sub,
        "cancel",
        "cancel a held message",
        "Cancel one held message. Exit 1 when it does not exist or is not held.",
        "bounceback held cancel 0190A1B2C3D4E5F6 --config configs/example.toml",
    )
    hc.add_argument("message_id")
    for leaf in (hl, hc):
        leaf.add_argument("--config", required=True, help="TOML configuration file")
    h.set_defaults(func=cmd_held)

    dc = _sub(
        sub,
        "decode",
        "decode a PDU given in hex",
        "Decode one SMPP PDU given as hex; receipts are parsed and classified.",
        "bounceback decode 0000001000000015000000000000002a",
    )
    dc.add_argument("hex", nargs="+")
    dc.set_defaults(func=cmd_decode)
    _add_setup_commands(sub)
    return p


def _add_setup_commands(sub: Any) -> None:
    """`init` and `health`."""
    i = _sub(
        sub,
        "init",
        "write a commented starter configuration",
        "Write a commented starter configuration: one sender account (with a new random "
        "password), one carrier (the local carrier simulator until you change it), the "
        "SQLite store, metrics and health endpoints. With --example, the example "
        "configuration with every key and its default instead. An existing file is left "
        "alone unless --force is given. The file is created readable by its owner only.",
        "bounceback init",
        "bounceback init --output /etc/bounceback/bounceback.toml",
    )
    i.add_argument(
        "--output", default="bounceback.toml", metavar="FILE", help="(default bounceback.toml)"
    )
    i.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    i.add_argument(
        "--example", action="store_true", help="the example configuration with every key"
    )
    i.set_defaults(func=cmd_init)

    he = _sub(
        sub,
        "health",
        "is the proxy alive? (for container and service health checks)",
        "Check that the proxy the configuration describes is alive, on this machine: with "
        "a [metrics] table, GET /healthz on its port; without one, an enquire_link on the "
        "SMPP port. Prints one line; exit 0 healthy, 1 not, 2 invalid configuration or "
        "nothing to check (no [metrics] and server.plain = false).",
        "bounceback health --config /etc/bounceback/bounceback.toml",
    )
    he.add_argument("--config", required=True, help="TOML configuration file")
    he.add_argument(
        "--timeout", type=_positive(float), default=3.0, help="seconds to wait (default 3)"
    )
    he.set_defaults(func=cmd_health)


def _exit_code(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (see the module documentation)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return _exit_code(exc.code)
    try:
        rc: int = args.func(args)
    except CommandError as exc:
        if str(exc):
            print(f"bounceback {args.command}: {exc}", file=sys.stderr)
        return exc.code
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
