"""The feed's client on aiomqtt (paho underneath), for ``[feed] client = "aiomqtt"``.

It offers what `FeedPublisher` uses of `client.MqttClient` (``async with``,
`publish`, `publish_many`, `check`, `connected`) and raises the same `MqttError`.
A batch is handed to paho in one go and then waited for as a whole: aiomqtt's own
`publish` costs a coroutine, a future and a wait per message. The default client
(``"builtin"``) uses about an eighth of the CPU per event (``bench/bench_feed.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Sequence

from bounceback.config.extras import MissingExtra

try:
    import aiomqtt
except ImportError as exc:  # the [aiomqtt] extra is not installed
    raise MissingExtra("aiomqtt", "the aiomqtt client") from exc

from bounceback.feed.client import MqttError
from bounceback.feed.mqtt import Will


class AiomqttClient:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        protocol: str = "3.1.1",
        keepalive: int = 30,
        username: str = "",
        password: str = "",
        will: Will | None = None,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        qos: int = 1,
    ) -> None:
        self.refused = 0
        self.too_large = 0
        self._client = aiomqtt.Client(
            host,
            port,
            username=username or None,
            password=password or None,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5
            if protocol == "5"
            else aiomqtt.ProtocolVersion.V311,
            will=aiomqtt.Will(will.topic, will.payload, qos=will.qos, retain=will.retain)
            if will is not None
            else None,
            keepalive=keepalive,
            tls_context=tls,
            timeout=timeout,
            # MQTT 3.1.1 has no flow control: a whole drained batch goes at once (paho's
            # default of 20 in flight makes it walk its queue on every PUBACK). Not for
            # QoS 2, which Mosquitto drops beyond its in-flight quota, nor on MQTT 5,
            # whose Receive Maximum paho does not read. (paho takes it before connecting.)
            max_inflight_messages=0 if protocol == "3.1.1" and qos < 2 else None,
        )
        # A drained batch is up to 500 publishes in flight on purpose: no warning.
        self._client.pending_calls_threshold = 1000

    async def __aenter__(self) -> AiomqttClient:
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as exc:
            self._close_abandoned()
            raise MqttError(str(exc)) from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self._client.__aexit__(None, None, None)
        self._close_abandoned()

    def _close_abandoned(self) -> None:
        """Close the socket of a connection that never got its CONNACK: aiomqtt leaves
        it open when the wait times out, one socket per attempt."""
        with contextlib.suppress(Exception):
            self._client._client.disconnect()

    @property
    def connected(self) -> bool:
        gone = getattr(self._client, "_disconnected", None)
        return gone is None or not gone.done()

    def check(self) -> None:
        if not self.connected:
            raise MqttError("connection lost")

    async def publish(
        self, topic: str, payload: str | bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        try:
            await self._client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            raise MqttError(str(exc)) from exc

    async def publish_many(
        self, items: Sequence[tuple[str, bytes]], *, qos: int = 1, timeout: float = 10.0
    ) -> None:
        """Hand the batch to paho in order, then wait until every message is
        acknowledged (or written, at QoS 0)."""
        paho = self._client._client  # the MQTT client that aiomqtt drives on our loop
        infos = []
        for topic, payload in items:
            info = paho.publish(topic, payload, qos=qos)
            if info.rc != 0:
                raise MqttError(f"could not publish (paho error {info.rc})")
            infos.append(info)
        deadline = time.monotonic() + timeout
        done = 0  # acknowledgements come (nearly always) in order: check from the oldest
        while True:
            while done < len(infos) and infos[done].is_published():
                done += 1
            if done == len(infos):
                return
            if not self.connected:
                raise MqttError(f"connection lost with {len(infos) - done} unacknowledged")
            if time.monotonic() > deadline:
                raise MqttError(
                    f"{len(infos) - done} of {len(infos)} publishes not acknowledged "
                    f"within {timeout:.0f} s"
                )
            await asyncio.sleep(0.002)
