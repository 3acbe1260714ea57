"""The HTTP listener of the admin API, health and metrics: aiohttp in the proxy's loop.

Running in the proxy's own event loop (not a thread, not a second process) lets a
handler ask the gateway directly, with no locking or copying between them; aiohttp's
server is asyncio-native and works on uvloop. It binds where ``[metrics]`` says
(127.0.0.1 by default) and takes its routes from `api.build_app`.
"""

from __future__ import annotations

import logging
import ssl

from aiohttp import web
from bounceback.admin.api import SETTINGS, Control, Health, build_app
from bounceback.config.settings import AdminConfig

__all__ = ["AdminServer"]

log = logging.getLogger("bounceback.admin")


class AdminServer:
    """Serves `build_app` on host:port until `stop`."""

    def __init__(self, control: Control, health: Health, admin: AdminConfig | None) -> None:
        self.app = build_app(control, health, admin)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        """Listen on host:port (port 0: a free one, then in `port`); HTTPS with `tls`."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=tls)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = [a for a in runner.addresses if isinstance(a, tuple)]
        self.port = int(bound[0][1]) if bound else port

    def configure(self, admin: AdminConfig | None) -> None:
        """Answer with `admin` (tokens, open_health) from the next request on."""
        self.app[SETTINGS].admin = admin

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
