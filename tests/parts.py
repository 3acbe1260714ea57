"""The gateway's components on their own: a real store and path, recorded actions.

`parts` opens the SQLite store of a test config and builds the `Context` and the
`MessagePath` the components share; the path's upstream actions and pump wake-ups
are recorded (`Recorded`) instead of reaching carriers and senders, so a test of one
component sees exactly what it asked the others to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
from bounceback.config.settings import load_config
from bounceback.core.engine import QueryUpstream
from bounceback.core.model import Message, State
from bounceback.gateway.context import Context
from bounceback.gateway.path import MessagePath
from bounceback.store.postgres import store_from_config
from bounceback.store.sqlite import Change
from harness import write_config
from smppcodecs.pdu import SubmitSm


@attrs.define
class Recorded:
    """The path's `Upstream` and pump wake-up, recorded."""

    submits: list[tuple[str, int]] = attrs.Factory(list)
    cancels: list[tuple[str, str, str]] = attrs.Factory(list)
    queries: list[tuple[str, QueryUpstream]] = attrs.Factory(list)
    woken: list[str] = attrs.Factory(list)

    def submit(self, mid: str, attempt: int) -> None:
        self.submits.append((mid, attempt))

    def cancel(self, msg: Message, carrier: str, carrier_message_id: str) -> None:
        self.cancels.append((msg.id, carrier, carrier_message_id))

    def query(self, msg: Message, q: QueryUpstream) -> None:
        self.queries.append((msg.id, q))

    def wake(self, account: str) -> None:
        self.woken.append(account)


@attrs.define
class Parts:
    ctx: Context
    path: MessagePath
    recorded: Recorded


@contextlib.asynccontextmanager
async def parts(tmp: Path, carrier_port: int = 1, *, account: str = "") -> AsyncIterator[Parts]:
    cfg = load_config(write_config(tmp, carrier_port, account=account))
    store = store_from_config(cfg.store)
    await store.open()
    ctx = Context(cfg, store)
    path = MessagePath(ctx)
    recorded = Recorded()
    path.upstream = recorded
    path.wake_pump = recorded.wake
    try:
        yield Parts(ctx, path, recorded)
    finally:
        ctx.stopping.set()
        for t in list(ctx.tasks):
            t.cancel()
        await store.close()


def submit_sm(destination: str, **fields: object) -> SubmitSm:
    return SubmitSm(
        sequence_number=1,
        source_addr="Acme",
        destination_addr=destination,
        registered_delivery=1,
        short_message=b"hello",
        **fields,  # type: ignore[arg-type]
    )


async def stored_message(p: Parts, destination: str, **fields: object) -> Message:
    """A new message of account acme, committed as accepted."""
    now = time.time()
    msg = Message(
        id=p.ctx.ids.next(int(now * 1000)),
        account="acme",
        source_addr="Acme",
        destination_addr=destination,
        pdu=submit_sm(destination).encode(),
        registered_delivery=1,
        created_at=now,
        deadline=now + 3600,
        deadline_is_validity=False,
        submit_date=now,
        updated_at=now,
        **fields,  # type: ignore[arg-type]
    )
    await p.ctx.store.commit(Change(message=msg, insert=True))
    return msg


async def reaches(p: Parts, mid: str, state: State, timeout: float = 10.0) -> Message:
    """The stored message once it is in `state` (TimeoutError if it never gets there)."""
    end = time.monotonic() + timeout
    while True:
        msg = await p.ctx.store.get(mid)
        if msg is not None and msg.state == state:
            return msg
        if time.monotonic() > end:
            raise TimeoutError(f"{mid} is {msg.state if msg else None}, not {state}")
        await asyncio.sleep(0.01)
