"""Settings for the whole suite.

Hypothesis: no per-example deadline and no "too slow" health check. Both are
wall-clock limits, and on a shared machine a slow second says nothing about the
code; what a property test asserts is its property.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("bounceback", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("bounceback")
