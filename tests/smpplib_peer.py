"""A sending application built on the independent `smpplib` package.

Blocking smpplib runs in a thread; tests call the methods through
`asyncio.to_thread` so the proxy keeps running in the test's event loop.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.smpp


class SmpplibSender:
    def __init__(self, host: str, port: int) -> None:
        self.client = smpplib.client.Client(host, port, timeout=5, allow_unknown_opt_params=True)
        self.client.set_message_sent_handler(self._sent)
        self.client.set_message_received_handler(self._received)
        # Error responses are results to record, not exceptions to raise.
        self.client.set_error_pdu_handler(lambda pdu: None)
        self.client.set_query_resp_handler(self._query)
        self.queries: list[Any] = []
        self._cond = threading.Condition()
        self.resps: dict[int, tuple[int, str]] = {}
        self.delivered: list[Any] = []
        self.deliver_status = 0
        self._thread: threading.Thread | None = None
        self._stop = False

    # handlers run in the listener thread
    def _sent(self, pdu: Any) -> None:
        mid = pdu.message_id
        if isinstance(mid, bytes):
            mid = mid.decode()
        with self._cond:
            self.resps[pdu.sequence] = (int(pdu.status), mid or "")
            self._cond.notify_all()

    def _query(self, pdu: Any) -> None:
        with self._cond:
            self.queries.append(pdu)
            self._cond.notify_all()

    def wait_query(self, timeout: float = 10.0) -> Any:
        end = time.monotonic() + timeout
        with self._cond:
            while not self.queries:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no query_sm_resp")
                self._cond.wait(left)
            return self.queries.pop(0)

    def _received(self, pdu: Any) -> int:
        with self._cond:
            self.delivered.append(pdu)
            self._cond.notify_all()
        return self.deliver_status

    def bind(self, kind: str, system_id: str, password: str) -> int:
        self.client.connect()
        try:
            getattr(self.client, f"bind_{kind}")(system_id=system_id, password=password)
        except smpplib.exceptions.PDUError as exc:
            return int(exc.args[1]) if len(exc.args) > 1 else -1
        return 0

    def listen(self) -> None:
        def loop() -> None:
            while not self._stop:
                try:
                    self.client.read_once(auto_send_enquire_link=True)
                except (OSError, smpplib.exceptions.ConnectionError):
                    return
                except AttributeError:
                    # smpplib drops its socket (None) when another thread disconnects
                    # it in the middle of a read: that read ends the loop too.
                    if self.client._socket is None:
                        return
                    raise
                except smpplib.exceptions.PDUError:
                    continue

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def submit(self, destination: str, text: bytes = b"hello", **kw: Any) -> int:
        kw.setdefault("source_addr", "Acme")
        kw.setdefault("registered_delivery", 1)
        pdu = self.client.send_message(destination_addr=destination, short_message=text, **kw)
        return int(pdu.sequence)

    def wait_resp(self, seq: int, timeout: float = 10.0) -> tuple[int, str]:
        end = time.monotonic() + timeout
        with self._cond:
            while seq not in self.resps:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no submit_sm_resp for sequence {seq}")
                self._cond.wait(left)
            return self.resps[seq]

    def wait_delivered(self, n: int, timeout: float = 10.0) -> list[Any]:
        end = time.monotonic() + timeout
        with self._cond:
            while len(self.delivered) < n:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.delivered)

    def close(self) -> None:
        """Unbind without waiting for unbind_resp (the listener thread owns the socket's
        reads), then disconnect."""
        self._stop = True
        with contextlib.suppress(Exception):
            self.client.send_pdu(smpplib.smpp.make_pdu("unbind", client=self.client))
        with contextlib.suppress(Exception):
            self.client.disconnect()


def receipt_fields(pdu: Any) -> dict[str, str]:
    """The Appendix B fields of a receipt deliver_sm as smpplib hands it over."""
    text = pdu.short_message
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    out: dict[str, str] = {}
    for part in text.split(" "):
        if ":" in part:
            k, v = part.split(":", 1)
            out[k.lower()] = v
    rmid = getattr(pdu, "receipted_message_id", None)
    if isinstance(rmid, bytes):
        rmid = rmid.decode()
    if rmid:
        out["receipted_message_id"] = rmid
    return out
