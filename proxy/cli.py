"""The `bounceback` command line.

Exit codes: 0 success; 1 a runtime failure; 2 a usage error or an invalid
configuration (the problems are printed, each naming the file, key and reason).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

EPILOG_EXIT = "exit codes: 0 ok, 1 runtime failure, 2 usage error or invalid configuration"


def _setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    from .logs import configure

    configure(level, json_lines)


def _load(path: str) -> object:
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


# ---------------------------------------------------------------- commands


def cmd_check(args: argparse.Namespace) -> int:
    from .config import Config, explain

    cfg = _load(args.config)
    assert isinstance(cfg, Config)
    print(explain(cfg))
    print("configuration is valid")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from .config import Config
    from .gateway import Gateway

    cfg = _load(args.config)
    assert isinstance(cfg, Config)
    _setup_logging(cfg.logging.level, cfg.logging.json)

    async def main() -> None:
        gw = Gateway(cfg)
        await gw.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        print(f"bounceback listening on {cfg.server.host}:{gw.port}", flush=True)
        await stop.wait()
        logging.getLogger("bounceback").info("shutting down")
        await asyncio.wait_for(gw.stop(), cfg.server.shutdown_grace + 10)

    asyncio.run(main())
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulator import run_simulator

    _setup_logging(args.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_simulator(args.host, args.port, args.scenario))
    return EXIT_OK


def cmd_decode(args: argparse.Namespace) -> int:
    from smppcodecs.exceptions import PduError
    from smppcodecs.pdu import decode
    from smppcodecs.receipt import parse_receipt

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
    receipt = parse_receipt(pdu) if hasattr(pdu, "esm_class") else None
    if receipt is not None:
        from smppcodecs.classify import classify_receipt

        print(repr(receipt))
        print(repr(classify_receipt(receipt)))
    return EXIT_OK


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bounceback",
        description="SMPP gateway proxy that resubmits soft-bounced messages.",
        epilog=EPILOG_EXIT,
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser(
        "run",
        help="run the proxy",
        description="Run the proxy: listen for senders, bind to carriers.",
        epilog="example: bounceback run --config configs/example.toml\n" + EPILOG_EXIT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--config", required=True, help="TOML configuration file")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser(
        "check",
        help="validate and explain a configuration",
        description="Validate the whole configuration and explain it; every problem names "
        "the file, the key and the reason. Exit 0 only when it is valid.",
        epilog="example: bounceback check --config configs/example.toml\n" + EPILOG_EXIT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("--config", required=True)
    c.set_defaults(func=cmd_check)

    s = sub.add_parser(
        "simulate",
        help="run a carrier SMSC simulator",
        description="A carrier SMSC with scripted soft/hard outcomes per destination.",
        epilog="example: bounceback simulate --port 2776 --scenario configs/scenarios/demo.toml\n"
        + EPILOG_EXIT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=2776)
    s.add_argument("--scenario", default=None, help="scenario TOML (default: deliver all)")
    s.add_argument("--log-level", default="INFO")
    s.set_defaults(func=cmd_simulate)

    d = sub.add_parser(
        "decode",
        help="decode a PDU given in hex",
        description="Decode one SMPP PDU given as hex; receipts are parsed and classified.",
        epilog="example: bounceback decode 0000001000000015000000000000002a\n" + EPILOG_EXIT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("hex", nargs="+")
    d.set_defaults(func=cmd_decode)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
