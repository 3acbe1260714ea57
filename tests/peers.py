"""Independent SMPP peers for end-to-end tests, built on the npm `smpp` package.

`tests/node/sender.js` plays a sending application (an ESME) and
`tests/node/carrier.js` a carrier SMSC. Each runs as a Node.js subprocess that
takes one JSON command per line on stdin and writes one JSON object per line on
stdout. The classes here start those processes and talk to them:

    async with NodeCarrier(hex_ids=True) as carrier, NodeSender() as sender:
        await sender.connect(carrier.port, system_id="acme", password="pw")
        resp = await sender.submit("447700900001", "hello")
        receipt = await sender.wait_for("deliver_sm")

Every line a peer writes is kept in `lines`, in order, and also put on `queue`.
`cmd()` tags a command with a fresh `req` number and returns the reply that
echoes it; `wait_for()` / `wait_count()` look through everything received so
far, then wait for more. A peer that exits early makes waiters fail at once.

Node.js is required: when `node` is missing these helpers raise `PeerError`, so
a test fails rather than being skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

NODE_DIR = Path(__file__).resolve().parent / "node"

Line = dict[str, Any]
Predicate = Callable[[Line], bool]

DEFAULT_TIMEOUT = 10.0
_STREAM_LIMIT = 64 * 1024 * 1024  # one summary line may list many message ids


class PeerError(RuntimeError):
    """A Node peer could not be started, or exited while a test waited on it."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the carrier does for one scripted outcome word.

    `submit_status` is the submit_sm_resp command_status (None: no response at
    all). `stat` is the receipt's stat text (None: no receipt); `err` the
    receipt's err field; `message_state` the message_state TLV;
    `network_error` the network_error_code TLV as (type, code), type 3 = GSM.
    """

    word: str
    submit_status: int | None
    stat: str | None = None
    err: str | None = None
    message_state: int | None = None
    network_error: tuple[int, int] | None = None


def _undeliv(word: str, map_code: int) -> Outcome:
    return Outcome(word, 0x00, "UNDELIV", f"{map_code:03d}", 5, (3, map_code))


#: The carrier's outcome words; kept equal to the table in `carrier.js`.
#: memory_full is MAP sm-DeliveryFailure (32), whose cause
#: (memoryCapacityExceeded) SMPP 3.4 receipts cannot carry.
OUTCOMES: dict[str, Outcome] = {
    o.word: o
    for o in (
        Outcome("deliver", 0x00, "DELIVRD", "000", 2),
        _undeliv("absent", 6),
        _undeliv("unknown", 1),
        _undeliv("memory_full", 32),
        _undeliv("busy", 31),
        _undeliv("barred", 13),
        _undeliv("system_failure", 34),
        Outcome("expire", 0x00, "EXPIRED", "000", 3),
        Outcome("reject", 0x00, "REJECTD", "000", 8),
        Outcome("no_receipt", 0x00),
        Outcome("lost_receipt", 0x00),  # delivered, no receipt: query_sm says DELIVERED
        Outcome("throttle", 0x58),
        Outcome("queue_full", 0x14),
        Outcome("system_error", 0x08),
        Outcome("submit_fail", 0x45),
        Outcome("invalid_dest", 0x0B),
        Outcome("no_response", None),
    )
}


def node_executable() -> str:
    """The path of `node`; raises PeerError when Node.js is not installed."""
    path = shutil.which("node")
    if path is None:
        raise PeerError("Node.js (`node`) is not on PATH; the end-to-end tests need it")
    if not (NODE_DIR / "node_modules" / "smpp").is_dir():
        raise PeerError(
            f"the npm package `smpp` is not installed in {NODE_DIR}; "
            "run `npm ci --prefix tests/node`"
        )
    return path


def is_receipt(line: Line) -> bool:
    """True for a reported deliver_sm that is an SMSC delivery receipt."""
    return line.get("op") == "deliver_sm" and (int(line.get("esm_class", 0)) & 0x3C) == 0x04


class NodePeer:
    """A Node.js SMPP peer driven over stdin/stdout JSON lines."""

    script: ClassVar[str] = ""

    def __init__(self, *args: str, name: str | None = None) -> None:
        self.args: tuple[str, ...] = args
        self.name = name or self.script
        self.lines: list[Line] = []
        self.queue: asyncio.Queue[Line] = asyncio.Queue()
        self.returncode: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stderr: list[str] = []
        self._changed = asyncio.Event()
        self._eof = False
        self._next_req = 0

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Start the Node process and the tasks that read its output."""
        node = node_executable()
        self._proc = await asyncio.create_subprocess_exec(
            node,
            self.script,
            *self.args,
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_STREAM_LIMIT,
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    async def close(self) -> None:
        """Ask the process to exit, kill it if it does not, and reap it."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
                await self._write({"op": "exit"})
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.returncode = proc.returncode
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- I/O -------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        try:
            while raw := await stream.readline():
                text = raw.decode("utf-8", "replace").strip()
                if not text:
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    value = {"op": "invalid_output", "raw": text}
                line: Line = (
                    value if isinstance(value, dict) else {"op": "invalid_output", "raw": text}
                )
                self.lines.append(line)
                self.queue.put_nowait(line)
                self._wake()
        finally:
            self._eof = True
            self._wake()

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while raw := await self._proc.stderr.readline():
            self._stderr.append(raw.decode("utf-8", "replace").rstrip())
            del self._stderr[:-50]

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _write(self, obj: Line) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise PeerError(f"{self.name} is not running")
        proc.stdin.write((json.dumps(obj) + "\n").encode())
        await proc.stdin.drain()

    def _describe(self) -> str:
        recent = "\n  ".join(json.dumps(line) for line in self.lines[-8:]) or "(nothing)"
        errors = "\n  ".join(self._stderr[-10:]) or "(nothing)"
        return f"last lines from {self.name}:\n  {recent}\nstderr:\n  {errors}"

    # -- commands and waiting --------------------------------------------------

    async def send(self, obj: Line) -> int:
        """Send a command without waiting; returns the `req` number it carries."""
        self._next_req += 1
        req = self._next_req
        await self._write({**obj, "req": req})
        return req

    async def cmd(self, obj: Line, timeout: float = DEFAULT_TIMEOUT) -> Line:
        """Send a command and return the reply that echoes its `req`."""
        req = await self.send(obj)
        return await self.wait_for(None, lambda line: line.get("req") == req, timeout)

    async def wait_for(
        self,
        op: str | None,
        predicate: Predicate | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Line:
        """The first line so far (or to come) with this op (None: any) that matches."""
        return (await self.wait_count(op, 1, predicate, timeout))[0]

    async def wait_count(
        self,
        op: str | None,
        count: int,
        predicate: Predicate | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[Line]:
        """The first `count` matching lines, waiting until that many have arrived."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        matches: list[Line] = []
        pos = 0
        while True:
            event = self._changed
            while pos < len(self.lines):
                line = self.lines[pos]
                pos += 1
                if (op is None or line.get("op") == op) and (predicate is None or predicate(line)):
                    matches.append(line)
                    if len(matches) >= count:
                        return matches
            what = f"{count} x op={op!r} (have {len(matches)})"
            if self._eof:
                raise PeerError(f"{self.name} exited while waiting for {what}\n{self._describe()}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out waiting for {what}\n{self._describe()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    def seen(self, op: str, predicate: Predicate | None = None) -> list[Line]:
        """All lines received so far with this op that match."""
        return [
            line
            for line in self.lines
            if line.get("op") == op and (predicate is None or predicate(line))
        ]

    async def next_line(self, timeout: float = DEFAULT_TIMEOUT) -> Line:
        """The next line from `queue`, in arrival order."""
        return await asyncio.wait_for(self.queue.get(), timeout)


class NodeSender(NodePeer):
    """A sending application (ESME) on node-smpp: `tests/node/sender.js`."""

    script: ClassVar[str] = "sender.js"

    async def connect(
        self,
        port: int,
        *,
        system_id: str = "acme",
        password: str = "pw",
        bind: str = "transceiver",
        host: str = "127.0.0.1",
        timeout: float = DEFAULT_TIMEOUT,
        **extra: Any,
    ) -> Line:
        """Connect and bind; the reply is `bound` (with `status`) or `error`."""
        command: Line = {
            "op": "connect",
            "host": host,
            "port": port,
            "system_id": system_id,
            "password": password,
            "bind": bind,
            **extra,
        }
        return await self.cmd(command, timeout)

    async def submit(
        self,
        destination_addr: str,
        short_message: str = "hello",
        *,
        id: str | None = None,
        source_addr: str = "Acme",
        registered_delivery: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        **fields: Any,
    ) -> Line:
        """One submit_sm; returns `submit_resp` (`status`, `message_id`) or `error`.

        Other submit_sm fields and TLVs go by their node-smpp names
        (data_coding, validity_period, esm_class, ...); `short_message_hex`
        sends raw bytes. Without data_coding node-smpp picks one itself
        (GSM-encoded text is then labelled data_coding 1).
        """
        command: Line = {
            "op": "submit",
            "id": id,
            "destination_addr": destination_addr,
            "source_addr": source_addr,
            "registered_delivery": registered_delivery,
            **fields,
        }
        if "short_message_hex" not in fields and "message_payload" not in fields:
            command["short_message"] = short_message
        return await self.cmd(command, timeout)

    async def submit_many(
        self,
        count: int,
        *,
        window: int = 10,
        destination_prefix: str = "4477009",
        timeout: float = 60.0,
        **options: Any,
    ) -> Line:
        """Send `count` messages with up to `window` outstanding; returns the summary."""
        command: Line = {
            "op": "submit_many",
            "count": count,
            "window": window,
            "destination_prefix": destination_prefix,
            **options,
        }
        return await self.cmd(command, timeout)

    async def set_deliver_status(self, status: int, count: int | None = None) -> Line:
        """Answer the next `count` (None: all) deliver_sm with this status."""
        command: Line = {"op": "set_deliver_status", "status": status}
        if count is not None:
            command["count"] = count
        return await self.cmd(command)

    async def drop_deliver(self, count: int | None = None) -> Line:
        """Leave the next `count` (None: all following) deliver_sm unanswered."""
        command: Line = {"op": "drop_deliver"}
        if count is not None:
            command["count"] = count
        return await self.cmd(command)

    async def set_silent(self, silent: bool = True) -> Line:
        """Answer no request at all (a hung application that keeps its socket open)."""
        return await self.cmd({"op": "set_silent", "silent": silent})

    async def query(self, message_id: str) -> Line:
        return await self.cmd({"op": "query", "message_id": message_id})

    async def cancel(self, message_id: str, destination_addr: str = "") -> Line:
        return await self.cmd(
            {"op": "cancel", "message_id": message_id, "destination_addr": destination_addr}
        )

    async def enquire_link(self) -> Line:
        return await self.cmd({"op": "enquire_link"})

    async def unbind(self) -> Line:
        return await self.cmd({"op": "unbind"})

    async def disconnect(self) -> Line:
        """Close the SMPP connection (the process keeps running)."""
        return await self.cmd({"op": "close"})

    async def wait_receipts(
        self, count: int, predicate: Predicate | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> list[Line]:
        """The first `count` delivery receipts received."""

        def match(line: Line) -> bool:
            return is_receipt(line) and (predicate is None or predicate(line))

        return await self.wait_count("deliver_sm", count, match, timeout)

    async def wait_receipt_for(self, message_id: str, timeout: float = DEFAULT_TIMEOUT) -> Line:
        """The first delivery receipt whose receipted_message_id is `message_id`."""
        found = await self.wait_receipts(
            1, lambda line: line.get("receipted_message_id") == message_id, timeout
        )
        return found[0]

    @property
    def receipts(self) -> list[Line]:
        """Delivery receipts received so far."""
        return [line for line in self.lines if is_receipt(line)]


class NodeCarrier(NodePeer):
    """A carrier SMSC on node-smpp: `tests/node/carrier.js`."""

    script: ClassVar[str] = "carrier.js"

    def __init__(
        self,
        *,
        hex_ids: bool = False,
        port: int = 0,
        host: str = "127.0.0.1",
        receipt_delay_ms: int | None = None,
        resp_delay_ms: int | None = None,
        retry_ms: int | None = None,
        id_base: int | None = None,
        password: str | None = None,
        default_outcome: str | None = None,
        receipt_tlvs: bool = True,
        extra_args: Sequence[str] = (),
        name: str | None = None,
    ) -> None:
        args: list[str] = ["--host", host, "--port", str(port)]
        if hex_ids:
            args.append("--hex-ids")
        options = {
            "--receipt-delay-ms": receipt_delay_ms,
            "--resp-delay-ms": resp_delay_ms,
            "--retry-ms": retry_ms,
            "--id-base": id_base,
            "--password": password,
            "--default-outcome": default_outcome,
        }
        for flag, value in options.items():
            if value is not None:
                args += [flag, str(value)]
        if not receipt_tlvs:
            args.append("--no-receipt-tlvs")
        super().__init__(*args, *extra_args, name=name)
        self.host = host
        self.port = 0

    async def start(self) -> None:
        """Start the carrier and wait until it listens; sets `port`."""
        await super().start()
        line = await self.wait_for(None, lambda line: line.get("op") in ("listening", "error"))
        if line["op"] != "listening":
            raise PeerError(f"{self.name} did not start: {line.get('message')}")
        self.port = int(line["port"])

    async def script_outcomes(self, number: str, outcomes: Sequence[str]) -> Line:
        """Script the outcomes of the next submissions to `number`, in order."""
        unknown = [word for word in outcomes if word not in OUTCOMES]
        if unknown:
            raise ValueError(f"unknown outcome words: {unknown}")
        return await self.cmd({"op": "script", "number": number, "outcomes": list(outcomes)})

    async def counts(self) -> dict[str, int]:
        """submit_sm received so far, per destination number."""
        line = await self.cmd({"op": "counts"})
        return {str(k): int(v) for k, v in line["counts"].items()}

    async def kick(self, graceful: bool = False) -> Line:
        """Drop every session, as a carrier restart would."""
        return await self.cmd({"op": "kick", "graceful": graceful})

    async def alert(self, number: str, system_id: str | None = None) -> Line:
        """Send alert_notification for `number` to receiver/transceiver sessions."""
        command: Line = {"op": "alert", "number": number}
        if system_id is not None:
            command["system_id"] = system_id
        return await self.cmd(command)

    async def configure(self, **settings: Any) -> Line:
        """Change settings at run time (receipt_delay_ms, hex_ids, bind_status, ...)."""
        return await self.cmd({"op": "config", **settings})

    async def sessions(self) -> list[Line]:
        line = await self.cmd({"op": "sessions"})
        return list(line["sessions"])

    @property
    def submits(self) -> list[Line]:
        """submit_sm reports received so far."""
        return self.seen("submit")
