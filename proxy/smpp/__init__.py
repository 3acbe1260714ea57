"""SMPP on asyncio: the sessions on both sides of the proxy.

``session`` (one SMPP connection: framing, sequence numbers, windows, enquire_link),
``server`` (the listener senders bind to), ``carrier`` (the links the proxy binds to
carriers with), ``client`` (a small sender, for the demo and tools) and
``simulator`` (the built-in carrier SMSC). They move PDUs; what to do with a PDU is
the gateway's business.
"""
