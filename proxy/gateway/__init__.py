"""The message path: sender sessions, the engine, the store and carrier links composed.

``shell`` holds `Gateway`, which wires the parts together; ``pump`` hands sender
receipts to bound receivers; ``metrics`` counts what passes and serves ``/metrics``,
``/healthz`` and ``/readyz``.
"""
