"""Settings for the whole suite.

Hypothesis: no per-example deadline and no "too slow" health check. Both are
wall-clock limits, and on a shared machine a slow second says nothing about the
code; what a property test asserts is its property.

`rabbitmq`: the session's RabbitMQ node, a second MQTT broker for the feed tests.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from mqtt_broker import RabbitMQBroker

settings.register_profile("bounceback", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("bounceback")


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQBroker]:
    """One throwaway RabbitMQ node (MQTT plugin) for the whole session: it takes
    seconds to start. Skipped only where RabbitMQ is not installed; a node that does
    not start is an error."""
    from mqtt_broker import RabbitMQBroker, rabbitmq_scripts

    scripts = rabbitmq_scripts()
    if scripts is None:
        pytest.skip("RabbitMQ is not installed (rabbitmq-server; .ci/run installs it)")
    node = RabbitMQBroker(tmp_path_factory.mktemp("rabbitmq"), scripts)
    try:
        took = node.boot()
        sys.stderr.write(f"\nRabbitMQ node {node.node} up in {took:.1f} s\n")
        yield node
    finally:
        node.shutdown()
