"""Per-message locks and the bounded caches of the message path.

`MessageLocks` serialises the events of one message (decide and commit one at a
time); `LRU` bounds the in-memory copies of messages and carrier ids.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from typing import Any


class LRU(OrderedDict[Any, Any]):
    """A dict that forgets its oldest entries beyond `maxsize`."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


class MessageLocks:
    """One lock per message id, held while an event for that message is decided and
    committed. asyncio.Lock per message cost an object, two coroutines and a dict
    entry per event; here the uncontended case (nearly every event) is a dict insert
    and delete, and waiters queue in order."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        # key -> waiters (None while held by one with nobody waiting)
        self._held: dict[str, deque[asyncio.Future[None]] | None] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._held

    def __len__(self) -> int:
        return len(self._held)

    def try_acquire(self, key: str) -> bool:
        if key in self._held:
            return False
        self._held[key] = None
        return True

    async def acquire(self, key: str) -> None:
        if key not in self._held:
            self._held[key] = None
            return
        waiters = self._held[key]
        if waiters is None:
            waiters = self._held[key] = deque()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        try:
            await fut  # release() hands the lock over
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(key)  # it came with the cancellation: pass it on
            else:
                with contextlib.suppress(ValueError):
                    waiters.remove(fut)
            raise

    def release(self, key: str) -> None:
        waiters = self._held.get(key)
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        del self._held[key]

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        await self.acquire(key)
        try:
            yield
        finally:
            self.release(key)
