"""The CLI's way to a running proxy: its admin API, when the configuration has one.

`bounceback suppression add/remove` and `bounceback held cancel` change what a
running proxy acts on. Written straight into the store they would be unseen by a
proxy that keeps the suppression list in memory until it restarts, and a cancel
could race the proxy's own decision. So when the configuration has an ``[admin]``
table with an ``admin`` token and the proxy answers on its listener, the command asks
the API (the change applies at once, as the proxy's own decision); only when nothing
answers there does it write to the store itself.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from bounceback.config.settings import AdminToken, Config, MetricsConfig

__all__ = ["ApiError", "ProxyApi", "admin_token", "listener_url", "local_host", "running_api"]

CONNECT_TIMEOUT = 2.0
REQUEST_TIMEOUT = 30.0


class ApiError(Exception):
    """The API answered with an error (its status, code and message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def admin_token(cfg: Config) -> AdminToken | None:
    """The first token of the configuration that may act (scope ``admin``)."""
    if cfg.admin is None:
        return None
    return next((t for t in cfg.admin.tokens if t.scope == "admin" and t.token), None)


class ProxyApi:
    """A few calls of the admin API with one token."""

    def __init__(self, base: str, token: AdminToken) -> None:
        self.base = base
        self.token = token
        # The proxy's own listener on this machine, often with a self-signed
        # certificate: encrypted, not verified.
        self.ssl = not base.startswith("https:")

    async def alive(self) -> bool:
        """Whether the proxy answers ``/healthz`` (within the connect timeout)."""
        timeout = aiohttp.ClientTimeout(total=CONNECT_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(self.base + "/healthz", ssl=self.ssl) as r,
            ):
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)
        headers = {"Authorization": f"Bearer {self.token.token}"}
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.request(method, self.base + path, json=body, headers=headers, ssl=self.ssl) as r,
        ):
            if r.status == 204:
                return None
            doc = await r.json(content_type=None)
            if r.status >= 400:
                err = doc.get("error", {}) if isinstance(doc, dict) else {}
                raise ApiError(r.status, str(err.get("code", "")), str(err.get("message", "")))
            return doc


def local_host(host: str) -> str:
    """Where this machine reaches a listener bound to `host`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def listener_url(metrics: MetricsConfig) -> str:
    """Where this machine reaches the HTTP listener `metrics` describes (a wildcard
    address: its loopback), http or https as it speaks."""
    host = local_host(metrics.host)
    scheme = "https" if metrics.tls_cert else "http"
    return f"{scheme}://{host if ':' not in host else f'[{host}]'}:{metrics.port}"


async def running_api(cfg: Config) -> ProxyApi | None:
    """The running proxy's API (None: no admin token configured, or nothing answers)."""
    token = admin_token(cfg)
    if token is None or cfg.metrics is None or cfg.metrics.port == 0:
        return None
    api = ProxyApi(listener_url(cfg.metrics), token)
    return api if await api.alive() else None
