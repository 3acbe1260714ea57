"""The MQTT status feed: every message's life, published from a durable outbox.

``events`` (the event payloads and topics), ``publisher`` (the outbox publisher and
its process), ``mqtt`` (the MQTT packet codec, sans I/O), ``client`` (the feed's own
asyncio MQTT client) and ``aiomqtt_client`` (the same on aiomqtt, an option).
"""
