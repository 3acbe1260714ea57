"""Live configuration changes: SIGHUP to a real `bounceback run`, POST /v1/reload to a
running gateway, and the pure merge of a new file over the running configuration."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import attrs
from bounceback.config.settings import load_config, reloaded
from bounceback.gateway.shell import Gateway
from harness import (
    ProxyProcess,
    free_port,
    simulator,
    wait_until,
    write_config,
)
from smppcodecs.constants import CommandStatus as S
from smpplib_peer import SmpplibSender

ADMIN = "admin-token-0123456789"
ADMIN_TOML = f"""
[metrics]
port = 0

[admin]
[[admin.tokens]]
name = "oncall"
scope = "admin"
token = "{ADMIN}"
"""


def test_reloaded_keeps_what_needs_a_restart(tmp_path: Path) -> None:
    old = load_config(write_config(tmp_path, 2776, port=2775, name="old.toml"))
    text = (tmp_path / "old.toml").read_text()
    text = text.replace('password = "acme-pw"', 'password = "new-pw"')
    text = text.replace("port = 2775", "port = 2785").replace("port = 2776", "port = 2786")
    text = text.replace('level = "INFO"', 'level = "DEBUG"')
    (tmp_path / "new.toml").write_text(text + '\n[logging]\nlevel = "DEBUG"\n')
    new = load_config(tmp_path / "new.toml")
    cfg, changed, waiting = reloaded(old, new)
    assert changed == ["accounts", "logging"]
    assert waiting == ["server", "carriers"]
    acme = cfg.account("acme")
    assert acme is not None and acme.password == "new-pw"  # live
    assert cfg.server.port == 2775 and cfg.carriers[0].port == 2776  # kept until a restart
    assert cfg.logging.level == "DEBUG"
    same, nothing, none = reloaded(cfg, attrs.evolve(cfg))
    assert same == cfg and nothing == [] and none == []


async def bind(port: int, password: str) -> tuple[SmpplibSender, int]:
    s = SmpplibSender("127.0.0.1", port)
    status = await asyncio.to_thread(s.bind, "transceiver", "acme", password)
    if status == 0:
        s.listen()
    return s, status


async def submit(s: SmpplibSender, number: str) -> int:
    seq = await asyncio.to_thread(s.submit, number)
    return (await asyncio.to_thread(s.wait_resp, seq))[0]


async def test_sighup_changes_a_password_without_dropping_binds(tmp_path: Path) -> None:
    async with simulator() as sim:
        port = free_port()
        config = write_config(tmp_path, sim.port or 0, port=port)
        proxy = ProxyProcess(config)
        await asyncio.to_thread(proxy.start)
        try:
            first, status = await bind(port, "acme-pw")
            assert status == 0
            try:
                config.write_text(
                    config.read_text().replace('password = "acme-pw"', 'password = "acme-pw2"')
                )
                assert proxy.proc is not None
                os.kill(proxy.proc.pid, signal.SIGHUP)
                await wait_until(lambda: "reloaded " in proxy.output(), timeout=20)
                assert "changed accounts" in proxy.output()
                # The bind made with the old password is still up and working.
                assert await submit(first, "447700950001") == 0
                # New binds need the new password.
                old, status = await bind(port, "acme-pw")
                assert status == S.ESME_RINVPASWD
                await asyncio.to_thread(old.close)
                second, status = await bind(port, "acme-pw2")
                assert status == 0
                assert await submit(second, "447700950002") == 0
                await asyncio.to_thread(second.close)

                # A file that does not validate changes nothing, and says why.
                good = config.read_text()
                config.write_text(good.replace("submit_wait = 3.0", "submit_wait = -1"))
                os.kill(proxy.proc.pid, signal.SIGHUP)
                await wait_until(lambda: "the running configuration stays" in proxy.output())
                assert f"reload refused: {config}: server.submit_wait: " in proxy.output()
                third, status = await bind(port, "acme-pw2")
                assert status == 0
                await asyncio.to_thread(third.close)

                # A restart-only change is named, not applied.
                config.write_text(good.replace(f"port = {port}", f"port = {free_port()}"))
                os.kill(proxy.proc.pid, signal.SIGHUP)
                await wait_until(lambda: "server differ and wait for a restart" in proxy.output())
                assert await submit(first, "447700950003") == 0  # same listener, same bind
            finally:
                await asyncio.to_thread(first.close)
        finally:
            assert proxy.terminate() == 0


async def test_reload_through_the_api(tmp_path: Path) -> None:
    """POST /v1/reload applies a new retry schedule and unbinds the senders of an
    account the file no longer has; a broken file answers 422 with every problem."""
    async with simulator() as sim:
        two = (
            '\n[[accounts]]\nsystem_id = "beta"\npassword = "beta-pw"\n'
            "[retry.schedules.memory_full]\ninitial = 60.0\nfactor = 2.0\nmax = 600.0\n"
        )
        config = write_config(tmp_path, sim.port or 0, extra=ADMIN_TOML, account="", retry="")
        base = config.read_text()
        config.write_text(base + two)
        gw = Gateway(load_config(config))
        await gw.start()
        try:
            await wait_until(lambda: all(link.bound for link in gw.links.values()))
            url = f"http://127.0.0.1:{gw.admin_port}/v1/reload"
            auth = {"Authorization": f"Bearer {ADMIN}"}
            beta = SmpplibSender("127.0.0.1", gw.port)
            assert await asyncio.to_thread(beta.bind, "transceiver", "beta", "beta-pw") == 0
            beta.listen()
            await wait_until(lambda: bool(gw.sessions.get("beta")))
            before = gw.path.policy
            config.write_text(
                base + "[retry.schedules.memory_full]\ninitial = 30.0\nfactor = 2.0\nmax = 600.0\n"
            )
            async with aiohttp.ClientSession() as http:
                async with http.post(url, headers=auth) as r:
                    assert r.status == 200
                    assert await r.json() == {
                        "changed": ["accounts", "retry"],
                        "restart_needed": [],
                    }
                assert gw.path.policy != before
                assert gw.cfg.account("beta") is None
                await wait_until(lambda: not gw.sessions.get("beta"), timeout=10)

                config.write_text(base.replace("[[accounts]]", "[[acounts]]"))
                async with http.post(url, headers=auth) as r:
                    assert r.status == 422
                    err = (await r.json())["error"]
                assert err["code"] == "invalid_config"
                assert {p["key"] for p in err["problems"]} >= {"acounts"}
                assert gw.cfg.account("acme") is not None  # unchanged
        finally:
            await gw.stop()
            await asyncio.to_thread(beta.close)
