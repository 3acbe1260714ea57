"""The sans-I/O core: the message model and every decision about it.

``model`` (the message and its attempts), ``ids`` (our message ids), ``engine``
(`decide`: a carrier's answer or receipt in, the next action out), ``recovery``
(recovery-time estimates) and ``planner`` (the attempt plans made from them), ``localtime``
(a destination's time zone, for quiet hours), ``ratelimit`` (token buckets) and
``access`` (connection limits, failed-bind lockouts). Pure code: no sockets, no clock
reads, no asyncio; the caller passes the time.
"""
